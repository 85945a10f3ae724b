//! The decoded-image cache: a split decoded and resized once is stored on disk as raw 8-bit
//! pixels, keyed by what produced it (source identity — a Hub commit, or files' sizes and
//! modification times — plus the decode settings), so later runs skip JPEG decoding entirely.
//!
//! One file per entry: magic, a JSON header (shape, labels' class names, skip count and
//! warnings), then `u32` labels and `u8` pixels. Written to a temporary file and renamed, so
//! an interrupted run never leaves a truncated entry; an unreadable entry is a miss.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::ImageDataset;

const MAGIC: &[u8; 8] = b"KILNDS1\n";
/// Bumped whenever decoding changes what it produces for the same input.
const FORMAT: &str = "decode-v1";

/// A directory of decoded splits.
#[derive(Clone, Debug)]
pub struct DecodedCache {
    dir: PathBuf,
}

impl DecodedCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `$KILN_CACHE_DIR/decoded`, else `$XDG_CACHE_HOME/kiln/decoded`, else
    /// `~/.cache/kiln/decoded`.
    pub fn default_location() -> Self {
        let base = std::env::var_os("KILN_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("kiln")))
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kiln")))
            .unwrap_or_else(|| std::env::temp_dir().join("kiln-cache"));
        Self::new(base.join("decoded"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.kds"))
    }

    /// The entry for `key`, or `None` when absent or unreadable.
    pub fn load(&self, key: &str) -> Option<ImageDataset> {
        let mut file = std::fs::File::open(self.path(key)).ok()?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).ok()?;
        decode_entry(&bytes)
    }

    /// Stores `dataset` (pixel values in [0, 1], i.e. not yet normalised) under `key`.
    pub fn store(&self, key: &str, dataset: &ImageDataset) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let header = json!({
            "len": dataset.len(),
            "height": dataset.height,
            "width": dataset.width,
            "channels": dataset.channels,
            "class_names": dataset.class_names,
            "skipped": dataset.skipped,
            "warnings": dataset.warnings,
        })
        .to_string();
        let final_path = self.path(key);
        let temp = self.dir.join(format!(".{key}.{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut out = std::io::BufWriter::new(std::fs::File::create(&temp)?);
            out.write_all(MAGIC)?;
            out.write_all(&(header.len() as u64).to_le_bytes())?;
            out.write_all(header.as_bytes())?;
            for label in &dataset.labels {
                out.write_all(&label.to_le_bytes())?;
            }
            out.write_all(&dataset.images)?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&temp, &final_path)
        };
        write().inspect_err(|_| {
            let _ = std::fs::remove_file(&temp);
        })
    }
}

fn decode_entry(bytes: &[u8]) -> Option<ImageDataset> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let header_len = usize::try_from(u64::from_le_bytes(rest.get(..8)?.try_into().ok()?)).ok()?;
    let rest = &rest[8..];
    let header: serde_json::Value = serde_json::from_slice(rest.get(..header_len)?).ok()?;
    let rest = &rest[header_len..];
    let field = |name: &str| header[name].as_u64().and_then(|v| usize::try_from(v).ok());
    let (len, height, width, channels) = (
        field("len")?,
        field("height")?,
        field("width")?,
        field("channels")?,
    );
    let strings = |name: &str| -> Option<Vec<String>> {
        header[name]
            .as_array()?
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    let label_bytes = len.checked_mul(4)?;
    let pixel_count = len
        .checked_mul(height)?
        .checked_mul(width)?
        .checked_mul(channels)?;
    if rest.len() != label_bytes.checked_add(pixel_count)? {
        return None;
    }
    let labels: Vec<u32> = rest[..label_bytes]
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let class_names = strings("class_names")?;
    if labels.iter().any(|&l| l as usize >= class_names.len()) {
        return None;
    }
    let images = rest[label_bytes..].to_vec();
    Some(ImageDataset {
        images,
        labels,
        height,
        width,
        channels,
        class_names,
        skipped: field("skipped")?,
        warnings: strings("warnings")?,
        normalization: crate::Normalization::identity(),
    })
}

/// A cache key: the SHA-256 of the decode format version and `parts` (each a line).
pub fn cache_key(parts: &[String]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(FORMAT.as_bytes());
    for part in parts {
        hasher.update(b"\n");
        hasher.update(part.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A local file's identity for a cache key: canonical path, size and modification time
/// (hashing gigabytes of parquet on every run would cost more than decoding some of it).
pub fn file_identity(path: &Path) -> std::io::Result<String> {
    let meta = std::fs::metadata(path)?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    Ok(format!("{} {} {modified}", canonical.display(), meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ImageDataset {
        ImageDataset {
            images: vec![0, 255, 128, 3],
            labels: vec![1, 0],
            height: 1,
            width: 2,
            channels: 1,
            class_names: vec!["cat".into(), "dog".into()],
            skipped: 3,
            warnings: vec!["row 7: cannot decode".into()],
            normalization: crate::Normalization::identity(),
        }
    }

    #[test]
    fn entries_round_trip_exactly_and_damage_is_a_miss() {
        let dir = std::env::temp_dir().join(format!("kiln-cache-test-{}", std::process::id()));
        let cache = DecodedCache::new(&dir);
        let key = cache_key(&["a".into()]);
        assert!(cache.load(&key).is_none());
        cache.store(&key, &sample()).unwrap();
        assert_eq!(cache.load(&key).unwrap(), sample());

        let path = cache.path(&key);
        let bytes = std::fs::read(&path).unwrap();
        for cut in [0, 5, 20, bytes.len() - 1] {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            assert!(cache.load(&key).is_none(), "cut at {cut}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keys_depend_on_every_part() {
        let a = cache_key(&["x".into(), "y".into()]);
        assert_eq!(a, cache_key(&["x".into(), "y".into()]));
        assert_ne!(a, cache_key(&["x".into(), "z".into()]));
        assert_ne!(a, cache_key(&["xy".into()]));
        assert_eq!(a.len(), 64);
    }
}
