//! Reading image classification datasets from parquet files in the Hugging Face layout
//! (an Image struct column with encoded bytes, an integer label column).
//!
//! Every file is opened and its schema checked before any image is decoded, so a wrong
//! column name in the config fails in milliseconds rather than after minutes of decoding.

use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rayon::prelude::*;

use crate::columns::{
    IMAGE_TYPE_EXPECTED, ImageColumn, LABEL_TYPE_EXPECTED, is_image_type, is_label_type,
    labels_as_i128,
};
use crate::dataset::ImageDataset;
use crate::decode::{ColorMode, DecodeSpec, DecodedImage, ResizeMode, decode_image};
use crate::error::{ColumnRole, DataError};
use crate::hf_metadata::{HF_METADATA_KEY, class_names_from_hf_metadata};

/// Rows per record batch: small enough that a batch of encoded images stays a few MB,
/// large enough to amortise per-batch overhead (and, later, to feed a parallel decode).
const BATCH_ROWS: usize = 256;

/// Per-row skip warnings kept; beyond this a single summary line counts the rest, so a
/// badly broken shard cannot flood the log. `ImageDataset::skipped` always has the total.
const MAX_ROW_WARNINGS: usize = 100;

/// Which columns hold the image and the label. Config, not code: datasets differ
/// (`label` vs `labels`, `image` vs `img`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ColumnNames {
    pub image: String,
    pub label: String,
}

impl ColumnNames {
    pub fn new(image: impl Into<String>, label: impl Into<String>) -> Self {
        ColumnNames {
            image: image.into(),
            label: label.into(),
        }
    }
}

/// `image` and `label`: the names most Hugging Face image classification datasets use.
impl Default for ColumnNames {
    fn default() -> Self {
        ColumnNames::new("image", "label")
    }
}

/// Reads the images and labels of `paths`, in file order then row order.
///
/// - `decode.color`: images are converted to 1 (luma) or 3 (RGB) channels, whatever they
///   were stored as.
/// - `decode.size`: `Some((height, width))` fits every image that differs (triangle
///   filter) by `decode.resize`; `None` keeps decoded sizes, which must then all equal the
///   first image's.
///
/// Images are decoded in parallel (rayon), a record batch at a time.
///
/// Rows whose image cannot be decoded (null, zero bytes, truncated, corrupt) are skipped
/// and counted in `skipped`, with a warning each (up to a limit). Everything else wrong
/// with the input — missing file, not parquet, missing or mistyped column, null or
/// negative label, mixed sizes, no decodable image at all — is an error naming the file.
///
/// Class names come from the `huggingface` metadata (the label column's `ClassLabel`
/// names) when any file has them, else they are `"0"..="k-1"` with `k` = max label + 1.
pub fn read_parquet_images(
    paths: &[PathBuf],
    columns: &ColumnNames,
    decode: DecodeSpec,
) -> Result<ImageDataset, DataError> {
    if paths.is_empty() {
        return Err(DataError::NoFiles);
    }
    let color = decode.color;
    let target = decode.size.map(checked_size).transpose()?;

    let files = paths
        .iter()
        .map(|p| ShardReader::open(p, columns))
        .collect::<Result<Vec<_>, _>>()?;
    let mut metadata_warnings = Vec::new();
    let class_names = agreed_class_names(&files, &columns.label, &mut metadata_warnings)?;
    let mut acc = Accumulator::new(color, files.iter().map(|f| f.num_rows).sum());
    for file in files {
        file.read_into(
            &mut acc,
            columns,
            (color, target, decode.resize),
            class_names.as_deref(),
        )?;
    }
    acc.finish(paths, class_names, metadata_warnings)
}

/// Validates a requested (height, width) and converts it to `image`'s u32 sides.
fn checked_size((height, width): (usize, usize)) -> Result<(u32, u32), DataError> {
    let invalid = || DataError::InvalidSize { height, width };
    let h = u32::try_from(height).map_err(|_| invalid())?;
    let w = u32::try_from(width).map_err(|_| invalid())?;
    if h == 0 || w == 0 {
        return Err(invalid());
    }
    Ok((h, w))
}

/// One opened, schema-checked parquet file.
struct ShardReader {
    path: PathBuf,
    builder: ParquetRecordBatchReaderBuilder<File>,
    projection: ProjectionMask,
    num_rows: usize,
    /// Class names from this file's metadata; `Err` if the metadata was malformed.
    class_names: Result<Option<Vec<String>>, String>,
}

impl ShardReader {
    fn open(path: &Path, columns: &ColumnNames) -> Result<Self, DataError> {
        let file = File::open(path).map_err(|source| match source.kind() {
            ErrorKind::NotFound => DataError::FileMissing {
                path: path.to_owned(),
            },
            _ => DataError::Open {
                path: path.to_owned(),
                source,
            },
        })?;
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| DataError::NotParquet {
                path: path.to_owned(),
                source: e.into(),
            })?;

        let schema = builder.schema();
        let find = |role: ColumnRole, name: &str| {
            schema.index_of(name).map_err(|_| DataError::MissingColumn {
                path: path.to_owned(),
                role,
                name: name.to_owned(),
                available: schema.fields().iter().map(|f| f.name().clone()).collect(),
            })
        };
        let image_idx = find(ColumnRole::Image, &columns.image)?;
        let label_idx = find(ColumnRole::Label, &columns.label)?;
        let check = |role, idx: usize, ok: fn(&arrow_schema::DataType) -> bool, expected| {
            let field = schema.field(idx);
            if ok(field.data_type()) {
                Ok(())
            } else {
                Err(DataError::WrongColumnType {
                    path: path.to_owned(),
                    role,
                    column: field.name().clone(),
                    expected,
                    found: field.data_type().to_string(),
                })
            }
        };
        check(
            ColumnRole::Image,
            image_idx,
            is_image_type,
            IMAGE_TYPE_EXPECTED,
        )?;
        check(
            ColumnRole::Label,
            label_idx,
            is_label_type,
            LABEL_TYPE_EXPECTED,
        )?;

        // Arrow's top-level fields are the parquet schema's root columns, in order; reading
        // only these two skips every other column's pages.
        let projection = ProjectionMask::roots(builder.parquet_schema(), [image_idx, label_idx]);
        let file_meta = builder.metadata().file_metadata();
        let num_rows = usize::try_from(file_meta.num_rows()).unwrap_or(0);
        let class_names = file_meta
            .key_value_metadata()
            .and_then(|kvs| kvs.iter().find(|kv| kv.key == HF_METADATA_KEY))
            .and_then(|kv| kv.value.as_deref())
            .map_or(Ok(None), |json| {
                class_names_from_hf_metadata(json, &columns.label)
            });
        Ok(ShardReader {
            path: path.to_owned(),
            builder,
            projection,
            num_rows,
            class_names,
        })
    }

    /// Streams the file's rows through `decode_image` into `acc`.
    fn read_into(
        self,
        acc: &mut Accumulator,
        columns: &ColumnNames,
        (color, target, resize): (ColorMode, Option<(u32, u32)>, ResizeMode),
        class_names: Option<&[String]>,
    ) -> Result<(), DataError> {
        let read_error = |source: Box<dyn std::error::Error + Send + Sync>| DataError::Read {
            path: self.path.clone(),
            source,
        };
        let reader = self
            .builder
            .with_projection(self.projection)
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|e| read_error(e.into()))?;
        let mut first_row = 0;
        for batch in reader {
            let batch = batch.map_err(|e| read_error(e.into()))?;
            let rows = batch_rows(&batch, &self.path, columns, first_row, class_names)?;
            // Each row decodes independently: this map is where rayon's par_iter goes.
            let decoded: Vec<Result<DecodedImage, String>> = rows
                .par_iter()
                .map(|r| match r.bytes {
                    Some(bytes) => decode_image(bytes, color, target, resize),
                    None => Err("image is null".to_owned()),
                })
                .collect();
            for (row, image) in rows.iter().zip(decoded) {
                acc.push(&self.path, row, image)?;
            }
            first_row += batch.num_rows();
        }
        Ok(())
    }
}

/// The inputs of one row, borrowed from its record batch.
struct RowInput<'a> {
    /// Row index within the file, for messages.
    row: usize,
    label: u32,
    bytes: Option<&'a [u8]>,
    /// The image's original file name, if the dataset recorded one.
    source_name: Option<&'a str>,
}

/// Extracts and validates every row of `batch`; labels are checked here (before decode) so
/// that a bad label is an error even on a row whose image is also bad.
fn batch_rows<'a>(
    batch: &'a RecordBatch,
    path: &Path,
    columns: &ColumnNames,
    first_row: usize,
    class_names: Option<&[String]>,
) -> Result<Vec<RowInput<'a>>, DataError> {
    let column = |name: &str| batch.column_by_name(name).map(|c| c.as_ref());
    // The schema was checked on open, so these only fail if the reader disagrees with it.
    let wrong_type = |role, name: &str, expected| DataError::WrongColumnType {
        path: path.to_owned(),
        role,
        column: name.to_owned(),
        expected,
        found: column(name).map_or("nothing".to_owned(), |c| c.data_type().to_string()),
    };
    let images = column(&columns.image)
        .and_then(ImageColumn::from_array)
        .ok_or_else(|| wrong_type(ColumnRole::Image, &columns.image, IMAGE_TYPE_EXPECTED))?;
    let labels = column(&columns.label)
        .and_then(labels_as_i128)
        .ok_or_else(|| wrong_type(ColumnRole::Label, &columns.label, LABEL_TYPE_EXPECTED))?;

    labels
        .into_iter()
        .enumerate()
        .map(|(i, label)| {
            let row = first_row + i;
            Ok(RowInput {
                row,
                label: checked_label(label, path, row, &columns.label, class_names)?,
                bytes: images.bytes(i),
                source_name: images.path(i),
            })
        })
        .collect()
}

/// A label as a class index: present, non-negative, within the class names if known.
fn checked_label(
    label: Option<i128>,
    path: &Path,
    row: usize,
    column: &str,
    class_names: Option<&[String]>,
) -> Result<u32, DataError> {
    let path = || path.to_owned();
    let column = || column.to_owned();
    let value = label.ok_or_else(|| DataError::NullLabel {
        path: path(),
        row,
        column: column(),
    })?;
    if value < 0 {
        return Err(DataError::NegativeLabel {
            path: path(),
            row,
            column: column(),
            value: i64::try_from(value).unwrap_or(i64::MIN),
        });
    }
    let out_of_range = |limit: String| DataError::LabelOutOfRange {
        path: path(),
        row,
        column: column(),
        value: u64::try_from(value).unwrap_or(u64::MAX),
        limit,
    };
    let label = u32::try_from(value)
        .map_err(|_| out_of_range(format!("labels must fit in 32 bits (max {})", u32::MAX)))?;
    if let Some(names) = class_names
        && label as usize >= names.len()
    {
        return Err(out_of_range(format!(
            "the dataset metadata lists {} class names, so labels must be below {}",
            names.len(),
            names.len()
        )));
    }
    Ok(label)
}

/// The class names all files agree on, if any file has them.
fn agreed_class_names(
    files: &[ShardReader],
    column: &str,
    warnings: &mut Vec<String>,
) -> Result<Option<Vec<String>>, DataError> {
    let mut agreed: Option<(&Path, &Vec<String>)> = None;
    for file in files {
        match (&file.class_names, agreed) {
            (Err(msg), _) => warnings.push(format!(
                "{}: ignoring class names: {msg}",
                file.path.display()
            )),
            (Ok(Some(names)), None) => agreed = Some((&file.path, names)),
            (Ok(Some(names)), Some((first, seen))) if names != seen => {
                return Err(DataError::ClassNamesMismatch {
                    first: first.to_owned(),
                    path: file.path.clone(),
                    column: column.to_owned(),
                });
            }
            _ => {}
        }
    }
    Ok(agreed.map(|(_, names)| names.clone()))
}

/// Decoded rows gathered across files, in order.
struct Accumulator {
    channels: usize,
    images: Vec<u8>,
    labels: Vec<u32>,
    /// (height, width) of the first decoded image; every later one must match.
    dims: Option<(usize, usize)>,
    /// Rows in all files, known from metadata: used to allocate the pixel buffer once.
    expected_rows: usize,
    rows: usize,
    skipped: usize,
    /// Skip warnings, at most `MAX_ROW_WARNINGS`.
    warnings: Vec<String>,
}

impl Accumulator {
    fn new(color: ColorMode, expected_rows: usize) -> Self {
        Accumulator {
            channels: color.channels(),
            images: Vec::new(),
            labels: Vec::new(),
            dims: None,
            expected_rows,
            rows: 0,
            skipped: 0,
            warnings: Vec::new(),
        }
    }

    fn push(
        &mut self,
        path: &Path,
        row: &RowInput<'_>,
        image: Result<DecodedImage, String>,
    ) -> Result<(), DataError> {
        self.rows += 1;
        let image = match image {
            Ok(image) => image,
            Err(why) => {
                self.skipped += 1;
                if self.warnings.len() < MAX_ROW_WARNINGS {
                    let name = row
                        .source_name
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default();
                    self.warnings.push(format!(
                        "{}, row {}{name}: skipped: {why}",
                        path.display(),
                        row.row
                    ));
                }
                return Ok(());
            }
        };
        let found = (image.height, image.width);
        match self.dims {
            None => {
                self.dims = Some(found);
                // Best effort: one allocation for the whole dataset instead of doubling
                // (which would briefly need up to twice the final size). If it fails, the
                // vector still grows on demand.
                let total = self
                    .expected_rows
                    .saturating_mul(image.pixels.len())
                    .min(isize::MAX as usize / size_of::<f32>());
                let _ = self.images.try_reserve_exact(total);
            }
            Some(expected) if expected != found => {
                return Err(DataError::ImageSizeMismatch {
                    path: path.to_owned(),
                    row: row.row,
                    expected,
                    found,
                });
            }
            Some(_) => {}
        }
        self.images.extend_from_slice(&image.pixels);
        self.labels.push(row.label);
        Ok(())
    }

    fn finish(
        self,
        paths: &[PathBuf],
        class_names: Option<Vec<String>>,
        mut warnings: Vec<String>,
    ) -> Result<ImageDataset, DataError> {
        let Some((height, width)) = self.dims else {
            return Err(DataError::NoImages {
                files: paths.to_vec(),
                rows: self.rows,
                skipped: self.skipped,
                first_warning: self.warnings.into_iter().next(),
            });
        };
        let unreported = self.skipped - self.warnings.len();
        warnings.extend(self.warnings);
        if unreported > 0 {
            warnings.push(format!(
                "{unreported} more rows skipped for undecodable images (not listed)"
            ));
        }
        let class_names = class_names.unwrap_or_else(|| {
            let k = self.labels.iter().max().map_or(0, |&m| m as usize + 1);
            (0..k).map(|c| c.to_string()).collect()
        });
        let mut images = self.images;
        images.shrink_to_fit();
        Ok(ImageDataset {
            images,
            labels: self.labels,
            height,
            width,
            channels: self.channels,
            class_names,
            skipped: self.skipped,
            warnings,
            normalization: crate::Normalization::identity(),
        })
    }
}

#[cfg(test)]
mod tests;
