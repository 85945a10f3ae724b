//! One type for every architecture, so a pipeline's stages (training, distillation into a
//! student of another architecture, pruning, QAT) pass models along without being generic
//! over each combination.

use burn::prelude::*;
use kiln_tflite::Model;

use crate::{
    Classifier, EfficientNetLite, LowerError, QuantHooks, QuantizableClassifier, SmallCnn,
};

// Moved a handful of times per run; boxing would cost Burn's Module derive its support.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum AnyClassifier {
    SmallCnn(SmallCnn),
    EfficientNetLite(EfficientNetLite),
}

impl AnyClassifier {
    /// The architecture's name, for model descriptions.
    pub fn architecture(&self) -> &'static str {
        match self {
            Self::SmallCnn(_) => "SmallCnn",
            Self::EfficientNetLite(_) => "EfficientNet-lite",
        }
    }
}

impl From<SmallCnn> for AnyClassifier {
    fn from(model: SmallCnn) -> Self {
        Self::SmallCnn(model)
    }
}

impl From<EfficientNetLite> for AnyClassifier {
    fn from(model: EfficientNetLite) -> Self {
        Self::EfficientNetLite(model)
    }
}

impl Classifier for AnyClassifier {
    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            Self::SmallCnn(m) => m.forward(images),
            Self::EfficientNetLite(m) => m.forward(images),
        }
    }

    fn lower(&self, description: &str) -> Result<Model, LowerError> {
        match self {
            Self::SmallCnn(m) => m.lower(description),
            Self::EfficientNetLite(m) => m.lower(description),
        }
    }
}

impl QuantizableClassifier for AnyClassifier {
    fn forward_with<H: QuantHooks>(&self, images: Tensor<4>, hooks: &H) -> Tensor<2> {
        match self {
            Self::SmallCnn(m) => m.forward_with(images, hooks),
            Self::EfficientNetLite(m) => m.forward_with(images, hooks),
        }
    }
}
