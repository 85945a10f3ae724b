//! Burn models and their lowering to the TFLite IR. Each architecture lives in its own file and
//! owns its lowering; `lowering` holds the shared graph builder and per-layer conversions.

mod classifier;
mod efficientnet_lite;
pub mod lowering;
mod small_cnn;

pub use classifier::Classifier;
pub use efficientnet_lite::{BlockActivation, EfficientNetLite, EfficientNetLiteConfig, StageSpec};
pub use lowering::LowerError;
pub use small_cnn::{SmallCnn, SmallCnnConfig};
