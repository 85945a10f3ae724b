//! Burn models and their lowering to the TFLite IR. Each architecture lives in its own file and
//! owns its lowering; `lowering` holds the shared graph builder and per-layer conversions.

mod any_classifier;
mod classifier;
mod efficientnet_lite;
mod hooked_layers;
pub mod lowering;
mod quant_hooks;
mod small_cnn;

pub use any_classifier::AnyClassifier;
pub use classifier::{Classifier, QuantizableClassifier};
pub use efficientnet_lite::{BlockActivation, EfficientNetLite, EfficientNetLiteConfig, StageSpec};
pub use lowering::LowerError;
pub use quant_hooks::{BatchNormMode, FloatForward, LayerCall, LayerKind, QuantHooks};
pub use small_cnn::{SmallCnn, SmallCnnConfig};
