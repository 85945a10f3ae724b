//! The training loop: seeded shuffling and augmentation, Adam with a cosine learning-rate
//! schedule, per-epoch metrics and checkpoints, a progress bar.

mod backend;
mod batch;
mod error;
mod evaluate;
mod train_loop;

pub use backend::BackendKind;
pub use batch::Augment;
pub use error::TrainError;
pub use evaluate::{accuracy, argmax_rows, predict};
pub use train_loop::{EpochStats, TrainSettings, train};
