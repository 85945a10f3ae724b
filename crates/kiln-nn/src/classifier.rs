//! What the training loop needs from a model, whatever its architecture.

use burn::module::ParamId;
use burn::prelude::*;
use kiln_tflite::Model;

use std::path::Path;

use crate::LowerError;
use crate::pretrained::{ClassifierWeights, LoadedWeights, PretrainedError};
use crate::quant_hooks::QuantHooks;

pub trait Classifier: Module + Clone {
    /// NCHW images → logits [batch, classes].
    fn forward(&self, images: Tensor<4>) -> Tensor<2>;

    /// The float32 TFLite model of this network (batch 1, NHWC input).
    fn lower(&self, description: &str) -> Result<Model, LowerError>;

    /// For networks with a pretrained backbone: its pooled features [batch, features] of
    /// NCHW images (what a frozen backbone computes once per image); `None` for networks
    /// trained whole.
    fn backbone_features(&self, images: Tensor<4>) -> Option<Tensor<2>> {
        let _ = images;
        None
    }

    /// Logits from [`Classifier::backbone_features`] (the head and classifier alone).
    fn classify_features(&self, features: Tensor<2>) -> Option<Tensor<2>> {
        let _ = features;
        None
    }

    /// The backbone frozen (no gradients, BatchNorm on its running statistics) or trainable.
    fn with_backbone_frozen(self, frozen: bool) -> Self {
        let _ = frozen;
        self
    }

    /// The backbone's parameters (empty for networks without one).
    fn backbone_params(&self) -> Vec<ParamId> {
        Vec::new()
    }

    /// Loads published weights from `path` (see [`crate::pretrained`]); `architecture` names
    /// the network in errors. Architectures without published weights refuse.
    fn load_pretrained(
        &mut self,
        architecture: &str,
        path: &Path,
        classifier: ClassifierWeights,
    ) -> Result<LoadedWeights, PretrainedError> {
        let _ = (path, classifier);
        Err(PretrainedError::Unsupported {
            architecture: architecture.to_owned(),
        })
    }
}

/// A classifier whose forward pass takes quantization hooks (quantization-aware training).
pub trait QuantizableClassifier: Classifier {
    /// The forward pass with `hooks` on every weight and every activation the int8 graph
    /// quantizes; with [`FloatForward`](crate::FloatForward) it is [`Classifier::forward`].
    fn forward_with<H: QuantHooks>(&self, images: Tensor<4>, hooks: &H) -> Tensor<2>;
}
