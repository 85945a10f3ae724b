//! Lowering Burn modules to the TFLite IR. `GraphBuilder` owns the bookkeeping (tensors,
//! buffers, operator codes, shapes); `layers` turns each Burn layer into operators,
//! transposing Burn's layouts (NCHW activations, OIHW filters, [in, out] dense weights) into
//! TFLite's (NHWC, OHWI, [out, in]). `folded_conv` lowers a convolution with its BatchNorm
//! folded in (`batch_norm`) and its padding resolved (`padding`); `ops` adds the element-wise,
//! reduction and padding operators to the builder.

mod batch_norm;
mod builder;
mod folded_conv;
mod layers;
mod layout;
mod ops;
pub(crate) mod padding;

pub use batch_norm::{FoldedConv, fold_batch_norm};
pub use builder::{GraphBuilder, TensorId};
pub use folded_conv::lower_conv_bn;
pub use layers::{lower_conv2d, lower_linear, param_values};
pub use layout::{
    chw_to_hwc, depthwise_oihw_to_1hwo, nchw_flatten_to_nhwc_rows, oihw_to_ohwi, transpose_2d,
};
pub use padding::lower_padding;

/// Why a module could not be lowered.
#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    #[error("layer '{layer}': {reason}")]
    Unsupported { layer: String, reason: String },
    #[error("layer '{layer}': cannot read its weights ({reason})")]
    Weights { layer: String, reason: String },
}
