//! What the training loop needs from a model, whatever its architecture.

use burn::prelude::*;
use kiln_tflite::Model;

use crate::LowerError;
use crate::quant_hooks::QuantHooks;

pub trait Classifier: Module + Clone {
    /// NCHW images → logits [batch, classes].
    fn forward(&self, images: Tensor<4>) -> Tensor<2>;

    /// The float32 TFLite model of this network (batch 1, NHWC input).
    fn lower(&self, description: &str) -> Result<Model, LowerError>;
}

/// A classifier whose forward pass takes quantization hooks (quantization-aware training).
pub trait QuantizableClassifier: Classifier {
    /// The forward pass with `hooks` on every weight and every activation the int8 graph
    /// quantizes; with [`FloatForward`](crate::FloatForward) it is [`Classifier::forward`].
    fn forward_with<H: QuantHooks>(&self, images: Tensor<4>, hooks: &H) -> Tensor<2>;
}
