//! Burn models and their lowering to the TFLite IR. Each architecture lives in its own file
//! under `architectures/` and owns its lowering and its `[model]` keys; `architectures/mod.rs`
//! registers them (one line each); `lowering` holds the shared graph builder and per-layer
//! conversions.

mod architecture;
pub mod architectures;
mod classifier;
pub mod head;
mod hooked_layers;
pub mod lowering;
pub mod mbconv;
pub mod ops;
pub mod pretrained;
mod quant_hooks;
#[cfg(test)]
mod test_support;

pub use architecture::Architecture;
pub use architectures::efficientnet_lite::{
    EfficientNetLite, EfficientNetLiteConfig, EfficientNetLiteOptions, StageSpec,
};
pub use architectures::small_cnn::{SmallCnn, SmallCnnConfig, SmallCnnOptions};
pub use architectures::{AnyClassifier, ModelConfig};
pub use classifier::{BackboneMode, Classifier, QuantizableClassifier};
pub use lowering::LowerError;
pub use mbconv::{BlockActivation, MbConvNet, WeightStyle};
pub use pretrained::{ClassifierWeights, LoadedWeights, PretrainedError};
pub use quant_hooks::{BatchNormMode, FloatForward, LayerCall, LayerKind, QuantHooks};
