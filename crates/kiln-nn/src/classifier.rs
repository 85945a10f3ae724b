//! What the training loop needs from a model, whatever its architecture.

use burn::prelude::*;
use kiln_tflite::Model;

use crate::LowerError;

pub trait Classifier: Module + Clone {
    /// NCHW images → logits [batch, classes].
    fn forward(&self, images: Tensor<4>) -> Tensor<2>;

    /// The float32 TFLite model of this network (batch 1, NHWC input).
    fn lower(&self, description: &str) -> Result<Model, LowerError>;
}
