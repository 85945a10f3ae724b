//! What the training loop needs from a model, whatever its architecture.

use burn::module::ParamId;
use burn::prelude::*;
use kiln_tflite::Model;

use std::path::Path;

use crate::LowerError;
use crate::pretrained::{ClassifierWeights, LoadedWeights, PretrainedError};
use crate::quant_hooks::QuantHooks;

/// How a pretrained backbone takes part in training.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackboneMode {
    /// No gradients; BatchNorm on its running statistics (training the head alone).
    Frozen,
    /// Weights train; BatchNorm stays on the running statistics the weights came with and
    /// does not update them (Keras' advice for fine-tuning after a frozen phase: batch
    /// statistics of a new domain, at small batches, would shift every feature the head
    /// learnt on).
    FineTuned,
    /// Everything trains, BatchNorm on batch statistics (the default state).
    Trainable,
}

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

    /// The backbone in `mode` (networks without one ignore it).
    fn with_backbone(self, mode: BackboneMode) -> Self {
        let _ = mode;
        self
    }

    /// The backbone's parameters (empty for networks without one).
    fn backbone_params(&self) -> Vec<ParamId> {
        Vec::new()
    }

    /// Dense layers whose exported weight orders its inputs otherwise than Burn's (a dense
    /// layer after a flatten: Burn flattens NCHW in (c, h, w) order, the TFLite graph NHWC in
    /// (h, w, c)): each layer's path and, per Burn input index, the exported input index.
    /// Structured pruning makes its blocks of exported inputs with it.
    fn exported_input_orders(&self) -> Vec<(String, Vec<usize>)> {
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
