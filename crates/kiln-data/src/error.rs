//! Errors raised while loading a dataset.
//!
//! Every message names the file (and row, where one is to blame) and says how to fix the
//! problem, because the person reading it is usually editing a config, not this code.

use std::fmt;
use std::path::PathBuf;

/// Boxed cause of a low-level read failure (parquet or arrow): kept as the `source` so the
/// full chain stays available, without leaking either crate's error type into our API.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Which configured column an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnRole {
    /// The column holding encoded image bytes.
    Image,
    /// The column holding integer class labels.
    Label,
}

impl fmt::Display for ColumnRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ColumnRole::Image => "image",
            ColumnRole::Label => "label",
        })
    }
}

/// Failure to load an image dataset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The Hugging Face Hub could not provide a dataset (the message says why and the fix).
    #[error("{0}")]
    Hub(String),

    /// An image folder is missing, unreadable or not in the root/<class>/<image> layout.
    #[error("{0}")]
    Folder(String),

    /// A transform (resize, normalisation, augmentation) is misconfigured.
    #[error("{0}")]
    Transform(String),

    #[error(
        "no parquet files were given: pass at least one file (check the dataset's split and file list)"
    )]
    NoFiles,

    #[error(
        "invalid image size {height}x{width} (height x width): both sides must be between 1 and {}; \
         fix the image size in the config",
        u32::MAX
    )]
    InvalidSize { height: usize, width: usize },

    #[error(
        "parquet file {} does not exist: check the path, or download the dataset again",
        path.display()
    )]
    FileMissing { path: PathBuf },

    #[error("cannot open {}: {source}; check that the file is readable", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{} is not a readable parquet file ({source}); if it was downloaded, it may be truncated, \
         a Git LFS pointer or an HTML error page: delete it and download it again",
        path.display()
    )]
    NotParquet {
        path: PathBuf,
        #[source]
        source: BoxError,
    },

    #[error(
        "failed to read {} ({source}); the file may be truncated or corrupt: delete it and \
         download it again",
        path.display()
    )]
    Read {
        path: PathBuf,
        #[source]
        source: BoxError,
    },

    #[error(
        "{}: there is no {role} column named `{name}`; the file's columns are: {}. \
         Set the {role} column name in the dataset config to one of these",
        path.display(),
        available.join(", ")
    )]
    MissingColumn {
        path: PathBuf,
        role: ColumnRole,
        name: String,
        available: Vec<String>,
    },

    #[error(
        "{}: {role} column `{column}` has type {found}, expected {expected}; set the {role} \
         column name in the dataset config to a column of the expected type",
        path.display()
    )]
    WrongColumnType {
        path: PathBuf,
        role: ColumnRole,
        column: String,
        expected: &'static str,
        found: String,
    },

    #[error(
        "{}, row {row}: label column `{column}` is null; every row needs a label \
         (use a labelled split, or drop unlabelled rows)",
        path.display()
    )]
    NullLabel {
        path: PathBuf,
        row: usize,
        column: String,
    },

    #[error(
        "{}, row {row}: label column `{column}` holds {value}; labels must be class indices \
         0..k-1 (a -1 usually marks an unlabelled test split: use a labelled split)",
        path.display()
    )]
    NegativeLabel {
        path: PathBuf,
        row: usize,
        column: String,
        value: i64,
    },

    #[error(
        "{}, row {row}: label {value} in column `{column}` is not a class index: {limit}; \
         check that the label column is the class label",
        path.display()
    )]
    LabelOutOfRange {
        path: PathBuf,
        row: usize,
        column: String,
        value: u64,
        /// Why the value is out of range (the number of class names, or the u32 limit).
        limit: String,
    },

    #[error(
        "{} and {} list different class names for label column `{column}`: the files seem to \
         come from different datasets; read them separately",
        first.display(),
        path.display()
    )]
    ClassNamesMismatch {
        first: PathBuf,
        path: PathBuf,
        column: String,
    },

    #[error(
        "{}, row {row}: image is {}x{} (height x width) but earlier images are {}x{}; \
         set an image size in the config so that images are resized to one size",
        path.display(),
        found.0,
        found.1,
        expected.0,
        expected.1
    )]
    ImageSizeMismatch {
        path: PathBuf,
        row: usize,
        /// (height, width) of the first decoded image.
        expected: (usize, usize),
        /// (height, width) of the offending image.
        found: (usize, usize),
    },

    #[error(
        "no decodable images in {}: {rows} rows read, {skipped} skipped{}; check that the image \
         column holds PNG or JPEG bytes",
        files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        first_warning.as_ref().map(|w| format!(" (first: {w})")).unwrap_or_default()
    )]
    NoImages {
        files: Vec<PathBuf>,
        rows: usize,
        skipped: usize,
        first_warning: Option<String>,
    },
}
