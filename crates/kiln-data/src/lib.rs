//! Kiln's datasets: reading image classification data into memory as normalized NHWC
//! `f32` tensors with labels and class names.
//!
//! Framework-free on purpose (no Burn): the trainer, the exporter's calibration and the
//! verifier all consume [`ImageDataset`] without pulling in a training stack.

mod columns;
mod dataset;
mod decode;
mod error;
mod hf_metadata;
mod parquet_images;

pub use dataset::ImageDataset;
pub use decode::ColorMode;
pub use error::{BoxError, ColumnRole, DataError};
pub use hf_metadata::{HF_METADATA_KEY, class_names_from_hf_metadata};
pub use parquet_images::{ColumnNames, read_parquet_images};
