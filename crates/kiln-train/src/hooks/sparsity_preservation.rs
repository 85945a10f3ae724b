//! Fine-tuning a pruned model without losing its sparsity (TF-MOT's pruning-preserving QAT):
//! every prunable weight that is exactly zero when training starts is kept at zero.

use kiln_nn::Classifier;

use crate::TrainError;
use crate::hooks::TrainHook;
use crate::pruning::Pruner;

#[derive(Default)]
pub struct SparsityPreservation {
    pruner: Pruner,
}

impl<M: Classifier> TrainHook<M> for SparsityPreservation {
    fn start(&mut self, model: M, _completed_steps: usize) -> Result<M, TrainError> {
        self.pruner = Pruner::keeping_zeros(&model);
        Ok(self.pruner.apply(model))
    }

    fn after_step(&mut self, model: M, _step: usize) -> M {
        self.pruner.apply(model)
    }
}
