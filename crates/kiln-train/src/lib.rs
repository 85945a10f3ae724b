//! The training loop: seeded shuffling and augmentation; Adam, AdamW or SGD; warmup and
//! constant/cosine/step learning-rate schedules; label smoothing; validation, best-epoch
//! selection and early stopping; crash-safe checkpoints with exact resume; Ctrl-C handling.

mod backend;
mod batch;
mod checkpoint;
mod clustering;
mod distillation;
mod epoch_stats;
mod error;
mod evaluate;
mod fused_adam;
mod hooks;
mod optimizer;
mod pruning;
mod qat;
mod schedule;
#[cfg(test)]
mod test_support;
mod throughput;
mod train_loop;
mod transfer;

pub use backend::BackendKind;
pub use batch::{Augment, images_nchw};
pub use clustering::{CentroidInit, Clusterer, ClusteringSettings, layer_clusters};
pub use distillation::Distillation;
pub use epoch_stats::{EpochStats, StepStats};
pub use error::TrainError;
pub use evaluate::{accuracy, argmax_rows, cross_entropy, predict};
pub use hooks::{MagnitudePruning, SparsityPreservation, TrainHook, TrainHooks, WeightClustering};
pub use optimizer::{OptimizerKind, OptimizerSettings};
pub use pruning::{
    LayerSparsity, Pruner, PruningScope, PruningSettings, SparsityPattern, SparsitySchedule,
    layer_sparsity,
};
pub use qat::{Qat, QatSettings, TracedActivation};
pub use schedule::{LrPlan, LrSchedule};
pub use throughput::{Throughput, measure_throughput};
pub use train_loop::{TrainData, TrainOutcome, TrainSettings, train, train_with_hooks};
pub use transfer::TransferSettings;
