//! NumPy `.npy` arrays and `.npz` archives, the field's numeric I/O: inputs for a model and
//! its outputs, as NumPy and LiteRT's Python API read and write them. Little-endian, C order.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use kiln_tflite::TensorType;

/// A `.npy` or `.npz` that cannot be read or written; each names the file or entry at fault.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    InFile { path: PathBuf, reason: String },
}

type Result<T> = std::result::Result<T, NpyError>;

fn invalid<T>(reason: impl Into<String>) -> Result<T> {
    Err(NpyError::Invalid(reason.into()))
}

fn in_file(path: &Path, reason: impl std::fmt::Display) -> NpyError {
    NpyError::InFile {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

const MAGIC: &[u8] = b"\x93NUMPY";

#[derive(Clone, Debug, PartialEq)]
pub struct NpyArray {
    pub dtype: TensorType,
    pub shape: Vec<usize>,
    /// Little-endian element bytes in C order.
    pub data: Vec<u8>,
}

/// Each element type NumPy and TFLite share, with NumPy's `descr` for it.
const DESCRS: [(TensorType, &str); 9] = [
    (TensorType::Float32, "<f4"),
    (TensorType::Float16, "<f2"),
    (TensorType::Float64, "<f8"),
    (TensorType::Int8, "|i1"),
    (TensorType::UInt8, "|u1"),
    (TensorType::Int16, "<i2"),
    (TensorType::Int32, "<i4"),
    (TensorType::Int64, "<i8"),
    (TensorType::Bool, "|b1"),
];

fn descr(dtype: TensorType) -> Option<&'static str> {
    DESCRS.iter().find(|(t, _)| *t == dtype).map(|&(_, d)| d)
}

fn dtype_of(text: &str) -> Option<TensorType> {
    // '=' (native) is little-endian on every platform Kiln targets; single bytes have no order.
    let normalized = text
        .replace('=', "<")
        .replace("<i1", "|i1")
        .replace("<u1", "|u1")
        .replace("<b1", "|b1");
    DESCRS
        .iter()
        .find(|(_, d)| *d == normalized)
        .map(|&(t, _)| t)
}

impl NpyArray {
    pub fn new(dtype: TensorType, shape: Vec<usize>, data: Vec<u8>) -> Self {
        Self { dtype, shape, data }
    }

    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Self {
        Self::new(
            TensorType::Float32,
            shape,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        )
    }

    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if !(bytes.len() >= 10 && &bytes[..6] == MAGIC) {
            return invalid("not a NumPy .npy file (bad magic)");
        }
        let (header_len, header_start): (usize, usize) = match bytes[6] {
            1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
            2 | 3 => {
                if bytes.len() < 12 {
                    return invalid("truncated .npy header");
                }
                (
                    u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                    12,
                )
            }
            v => return invalid(format!(".npy format version {v} is not supported")),
        };
        let missing = |what: &str| NpyError::Invalid(format!(".npy header has no '{what}'"));
        let header = header_start
            .checked_add(header_len)
            .and_then(|end| bytes.get(header_start..end))
            .ok_or_else(|| NpyError::Invalid("truncated .npy header".into()))?;
        let header = std::str::from_utf8(header)
            .map_err(|_| NpyError::Invalid(".npy header is not text".into()))?;
        let descr = dict_value(header, "descr").ok_or_else(|| missing("descr"))?;
        let descr = descr.trim_matches(|c| c == '\'' || c == '"');
        let dtype = dtype_of(descr)
            .ok_or_else(|| NpyError::Invalid(format!("unsupported .npy dtype '{descr}'")))?;
        let fortran =
            dict_value(header, "fortran_order").ok_or_else(|| missing("fortran_order"))?;
        if fortran.trim() != "False" {
            return invalid(
                "Fortran-ordered arrays are not supported; save with np.ascontiguousarray",
            );
        }
        let shape = dict_value(header, "shape").ok_or_else(|| missing("shape"))?;
        let shape: Vec<usize> = shape
            .trim_matches(|c| c == '(' || c == ')')
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|d| {
                d.trim_end_matches('L')
                    .parse::<usize>()
                    .map_err(|_| NpyError::Invalid(format!("bad dimension '{d}' in .npy shape")))
            })
            .collect::<Result<_>>()?;
        let size = shape
            .iter()
            .try_fold(dtype.element_size().unwrap_or(1), |acc, &d| {
                acc.checked_mul(d)
            })
            .ok_or_else(|| NpyError::Invalid(".npy shape overflows".into()))?;
        let data = &bytes[header_start + header_len..];
        if data.len() != size {
            return invalid(format!(
                ".npy data is {} bytes but shape {:?} of {} needs {size}",
                data.len(),
                shape,
                dtype
            ));
        }
        Ok(Self {
            dtype,
            shape,
            data: data.to_vec(),
        })
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let descr = descr(self.dtype).ok_or_else(|| {
            NpyError::Invalid(format!("{} cannot be written to .npy", self.dtype))
        })?;
        let shape = match self.shape.len() {
            1 => format!("({},)", self.shape[0]),
            _ => format!(
                "({})",
                self.shape
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        // Pad with spaces so the data starts on a 64-byte boundary, ending with a newline.
        let unpadded = 10 + header.len() + 1;
        header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
        header.push('\n');
        let mut out = Vec::with_capacity(10 + header.len() + self.data.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&self.data);
        Ok(out)
    }
}

/// The raw text of `key`'s value in a Python dict literal (values here never nest dicts).
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let start = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?
        + key.len()
        + 2;
    let rest = header[start..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}'])?
    };
    Some(&rest[..end])
}

pub fn read_npy(path: &Path) -> Result<NpyArray> {
    let bytes = std::fs::read(path).map_err(|source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    NpyArray::parse(&bytes).map_err(|e| in_file(path, format!("not a readable .npy array: {e}")))
}

/// Arrays of an `.npz` archive (plain or compressed, as `np.savez` and `np.savez_compressed`
/// write them) in archive order, named without the `.npy` suffix.
pub fn read_npz(path: &Path) -> Result<Vec<(String, NpyArray)>> {
    let file = std::fs::File::open(path).map_err(|source| NpyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut archive = zip::ZipArchive::new(file)
        .map_err(|e| in_file(path, format!("not an .npz (zip) archive: {e}")))?;
    let mut arrays = Vec::with_capacity(archive.len());
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| in_file(path, format!("cannot read entry {i}: {e}")))?;
        let name = entry
            .name()
            .map_err(|e| in_file(path, format!("entry {i} has an unreadable name: {e}")))?
            .trim_end_matches(".npy")
            .to_owned();
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| in_file(path, format!("cannot read '{name}': {e}")))?;
        let array =
            NpyArray::parse(&bytes).map_err(|e| in_file(path, format!("entry '{name}': {e}")))?;
        arrays.push((name, array));
    }
    Ok(arrays)
}

/// An uncompressed `.npz` archive of `arrays` (what `np.savez` writes).
pub fn npz_bytes(arrays: &[(String, NpyArray)]) -> Result<Vec<u8>> {
    let zip_error = |e: zip::result::ZipError| NpyError::Invalid(format!("writing .npz: {e}"));
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, array) in arrays {
        writer
            .start_file(format!("{name}.npy"), options)
            .map_err(zip_error)?;
        writer
            .write_all(&array.to_bytes()?)
            .map_err(|e| NpyError::Invalid(format!("writing .npz: {e}")))?;
    }
    Ok(writer.finish().map_err(zip_error)?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trip_and_alignment() {
        let array = NpyArray::from_f32(vec![2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let bytes = array.to_bytes().unwrap();
        assert_eq!((bytes.len() - 24) % 64, 0);
        assert_eq!(NpyArray::parse(&bytes).unwrap(), array);
        let vector = NpyArray::new(TensorType::Int8, vec![3], vec![1, 2, 255]);
        assert_eq!(
            NpyArray::parse(&vector.to_bytes().unwrap()).unwrap(),
            vector
        );
    }

    #[test]
    fn parses_numpy_written_header() {
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2), }";
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[1, 0]);
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&[0; 8]);
        let array = NpyArray::parse(&bytes).unwrap();
        assert_eq!(array.shape, vec![1, 2]);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(NpyArray::parse(b"hello").is_err());
        let mut bytes = NpyArray::from_f32(vec![4], &[0.0; 4]).to_bytes().unwrap();
        bytes.truncate(bytes.len() - 1);
        assert!(
            NpyArray::parse(&bytes)
                .unwrap_err()
                .to_string()
                .contains("needs 16")
        );
    }

    #[test]
    fn npz_round_trip() {
        let arrays = vec![
            ("a".to_string(), NpyArray::from_f32(vec![1], &[1.5])),
            (
                "b".to_string(),
                NpyArray::new(TensorType::UInt8, vec![2], vec![7, 8]),
            ),
        ];
        let dir = std::env::temp_dir().join(format!("kiln-npz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.npz");
        std::fs::write(&path, npz_bytes(&arrays).unwrap()).unwrap();
        assert_eq!(read_npz(&path).unwrap(), arrays);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
