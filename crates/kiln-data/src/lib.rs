//! Kiln's datasets: image classification data from local parquet files, the Hugging Face
//! Hub (via `hf-hub`, into the standard cache) or an image folder, decoded in parallel,
//! fitted to a size, cached decoded on disk, split (stratified) and normalised, held in
//! memory as NHWC `f32` tensors with labels and class names.
//!
//! Framework-free on purpose (no Burn): the trainer, the exporter's calibration and the
//! verifier all consume [`ImageDataset`] without pulling in a training stack.

mod cache;
mod columns;
mod dataset;
mod decode;
mod decode_bench;
mod error;
mod folder;
mod hf_metadata;
mod hub;
mod hub_model;
mod normalize;
mod parquet_images;
mod resize;
mod source;
mod split;

pub use cache::{DecodedCache, cache_key};
pub use dataset::ImageDataset;
pub use decode::{ColorMode, DecodeSpec, ResizeMode};
pub use decode_bench::{decode_throughput, synthetic_photo_jpeg};
pub use error::{BoxError, ColumnRole, DataError};
pub use folder::{FolderListing, list_image_folder, read_image_folder};
pub use hf_metadata::{HF_METADATA_KEY, class_names_from_hf_metadata};
pub use hub::{HubDataset, HubSettings, SplitFiles, fetch_split, split_files};
pub use hub_model::{HubModel, ModelFile, WEIGHTS_FILES, fetch_model_weights};
pub use normalize::Normalization;
pub use parquet_images::{ColumnNames, read_parquet_images};
pub use source::{LoadedSplit, SplitSource, load_split};
pub use split::stratified_split;
