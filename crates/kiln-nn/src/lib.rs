//! Burn models and their lowering to the TFLite IR. Each architecture lives in its own file and
//! owns its lowering and its `[model]` keys; `registry` lists them (one line each); `lowering`
//! holds the shared graph builder and per-layer conversions.

mod architecture;
mod classifier;
mod efficientnet_lite;
mod hooked_layers;
pub mod lowering;
mod quant_hooks;
mod registry;
mod small_cnn;

pub use architecture::Architecture;
pub use classifier::{Classifier, QuantizableClassifier};
pub use efficientnet_lite::{
    BlockActivation, EfficientNetLite, EfficientNetLiteConfig, EfficientNetLiteOptions, StageSpec,
};
pub use lowering::LowerError;
pub use quant_hooks::{BatchNormMode, FloatForward, LayerCall, LayerKind, QuantHooks};
pub use registry::{AnyClassifier, ModelConfig};
pub use small_cnn::{SmallCnn, SmallCnnConfig, SmallCnnOptions};
