//! Training hooks: what a compression method adds to the training loop without the loop
//! knowing about it. Pruning, sparsity preservation, weight clustering and distillation are
//! hooks; a new method
//! is one file implementing [`TrainHook`] and passed to [`train_with_hooks`](crate::train_with_hooks).
//!
//! The loop calls, in the order the hooks are given:
//! 1. [`TrainHook::start`] once, after parameters are materialised and a checkpoint (if any)
//!    is restored;
//! 2. [`TrainHook::loss`] on every batch, to add terms to the cross-entropy;
//! 3. [`TrainHook::after_step`] after every optimizer step;
//! 4. [`TrainHook::epoch_end`] after every epoch, before it is checkpointed.

mod magnitude_pruning;
mod sparsity_preservation;
mod weight_clustering;

pub use magnitude_pruning::MagnitudePruning;
pub use sparsity_preservation::SparsityPreservation;
pub use weight_clustering::WeightClustering;

use burn::prelude::*;
use kiln_nn::Classifier;

use crate::TrainError;
use crate::epoch_stats::EpochStats;

pub trait TrainHook<M: Classifier> {
    /// Checks the hook's settings before training starts.
    fn validate(&self) -> Result<(), TrainError> {
        Ok(())
    }

    /// Called once before the first step; `completed_steps` is 0 for a fresh run and the
    /// steps of the restored epochs for a resumed one (so the hook can rebuild its state).
    fn start(&mut self, model: M, completed_steps: usize) -> Result<M, TrainError> {
        let _ = completed_steps;
        Ok(model)
    }

    /// The batch's loss, given the loss so far, the model's logits and the batch's images.
    fn loss(&self, loss: Tensor<1>, logits: &Tensor<2>, images: &Tensor<4>) -> Tensor<1> {
        let _ = (logits, images);
        loss
    }

    /// After the optimizer step `step` (counted from this run's first step).
    fn after_step(&mut self, model: M, step: usize) -> M {
        let _ = step;
        model
    }

    /// At an epoch's end, whose last step was `last_step`: the hook may add to its stats.
    fn epoch_end(&mut self, stats: &mut EpochStats, last_step: usize) {
        let _ = (stats, last_step);
    }
}

/// The hooks of one training run, in call order.
pub type TrainHooks<'a, M> = Vec<Box<dyn TrainHook<M> + 'a>>;
