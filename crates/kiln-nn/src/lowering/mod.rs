//! Lowering Burn modules to the TFLite IR. `GraphBuilder` owns the bookkeeping (tensors,
//! buffers, operator codes, shapes); `layers` turns each Burn layer into operators,
//! transposing Burn's layouts (NCHW activations, OIHW filters, [in, out] dense weights) into
//! TFLite's (NHWC, OHWI, [out, in]).

mod builder;
mod layers;
mod layout;

pub use builder::{GraphBuilder, TensorId};
pub use layers::{lower_conv2d, lower_linear, param_values};
pub use layout::{nchw_flatten_to_nhwc_rows, oihw_to_ohwi, transpose_2d};

/// Why a module could not be lowered.
#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    #[error("layer '{layer}': {reason}")]
    Unsupported { layer: String, reason: String },
    #[error("layer '{layer}': cannot read its weights ({reason})")]
    Weights { layer: String, reason: String },
}
