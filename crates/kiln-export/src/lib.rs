//! kiln-export: the deployable variants of a float32 TFLite model, each a transform of the
//! owned IR (`kiln_tflite::Model`) that writes what TF 2.21's TFLite converter writes for the
//! same optimisation, so that LiteRT, kiln-runtime and any other TFLite runtime accept it:
//!
//! - [`to_float16`]: float32 constants stored as FLOAT16, each dequantized by a DEQUANTIZE op;
//! - [`to_dynamic_range`]: conv / depthwise / fully-connected weights int8 (per channel),
//!   activations float, run by hybrid kernels;
//! - [`quantize_int8`]: full-integer int8 from activation ranges that [`Calibrator`] records
//!   by running the float model in kiln-runtime over a representative set (or that QAT
//!   supplies as [`TensorRanges`]);
//! - [`to_sparse`]: pruned weights stored sparse (block-sparse FULLY_CONNECTED weights, or
//!   CSR behind DENSIFY), for the float32 and int8 variants.
//!
//! The int8 arithmetic the exporter shares with the runtime's kernels and with QAT (activation
//! grids from ranges, symmetric weights) is `kiln_tflite::quant`.
//!
//! This crate depends on `kiln-tflite` and `kiln-runtime` only, never on Burn.

mod compact;
mod dynamic_range;
mod error;
mod float16;
mod graph;
mod int8;
mod metadata;
mod min_runtime_version;
mod sparse;
mod versions;

#[cfg(test)]
mod test_model;

pub use dynamic_range::{MIN_ELEMENTS_FOR_WEIGHTS, to_dynamic_range};
pub use error::ExportError;
pub use float16::to_float16;
pub use int8::{
    Calibrator, Int8Options, IoType, Range, TensorRanges, quantize_bias, quantize_int8,
};
pub use metadata::{LABELS_FILE, ModelCard, attach_metadata, to_bytes_with_metadata};
pub use min_runtime_version::min_runtime_version;
pub use sparse::{MIN_SPARSITY, SparseLayout, SparseWeight, to_sparse};
