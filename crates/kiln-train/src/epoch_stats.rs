//! What one epoch of training measured, as the loop reports it, checkpoints keep it and the
//! report lists it.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    pub epoch: usize,
    pub loss: f64,
    pub accuracy: f64,
    /// Accuracy on the validation split, when there is one.
    pub val_accuracy: Option<f64>,
    /// Mean cross-entropy on the validation split (label smoothing as in training).
    #[serde(default)]
    pub val_loss: Option<f64>,
    pub learning_rate: f64,
    pub seconds: f64,
    /// Of `seconds`, the time spent assembling batches (copy, augmentation, tensor upload):
    /// how close the data path comes to starving training.
    pub data_seconds: f64,
    /// The pruning schedule's sparsity at the epoch's end, when pruning (set by the
    /// pruning hook).
    #[serde(default)]
    pub target_sparsity: Option<f64>,
    /// Every optimizer step of the epoch, in order (for per-step logs such as TensorBoard's).
    /// Not checkpointed: a resumed run's earlier steps were logged when they ran.
    #[serde(skip)]
    pub steps: Vec<StepStats>,
}

/// One optimizer step: its batch's mean loss and the learning rate it stepped with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    pub loss: f32,
    pub learning_rate: f64,
}
