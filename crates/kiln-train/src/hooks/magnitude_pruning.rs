//! Magnitude pruning on a schedule as a training hook: the masks are recomputed at the
//! schedule's update steps and applied after every optimizer step, so pruned weights stay
//! exact zeros.

use kiln_nn::Classifier;

use crate::TrainError;
use crate::epoch_stats::EpochStats;
use crate::hooks::TrainHook;
use crate::pruning::{Pruner, PruningSettings};

pub struct MagnitudePruning {
    settings: PruningSettings,
    pruner: Pruner,
}

impl MagnitudePruning {
    /// Steps in `settings` count from the training run's first step.
    pub fn new(settings: PruningSettings) -> Self {
        Self {
            settings,
            pruner: Pruner::default(),
        }
    }
}

impl<M: Classifier> TrainHook<M> for MagnitudePruning {
    fn validate(&self) -> Result<(), TrainError> {
        self.settings.validate()
    }

    fn start(&mut self, model: M, completed_steps: usize) -> Result<M, TrainError> {
        // Blocks and m-of-n groups are made of the inputs as the exported weight orders them.
        self.pruner = Pruner::with_input_orders(model.exported_input_orders());
        // A resumed run rebuilds the masks the interrupted one had: the pruned weights are
        // the zeros, the smallest magnitudes there are.
        let settings = &self.settings;
        if completed_steps > 0 && completed_steps >= settings.begin_step {
            self.pruner
                .update(&model, settings, settings.sparsity_at(completed_steps));
            return Ok(self.pruner.apply(model));
        }
        Ok(model)
    }

    fn after_step(&mut self, model: M, step: usize) -> M {
        if let Some(sparsity) = self.settings.update_at(step) {
            self.pruner.update(&model, &self.settings, sparsity);
        }
        self.pruner.apply(model)
    }

    fn epoch_end(&mut self, stats: &mut EpochStats, last_step: usize) {
        stats.target_sparsity = Some(self.settings.sparsity_at(last_step));
    }
}
