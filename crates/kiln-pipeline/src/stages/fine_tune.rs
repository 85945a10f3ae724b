//! What the fine-tuning stages (prune, qat) share: the run's training settings, with the
//! stage's epochs and learning rate and a checkpoint directory of its own.

use std::io::IsTerminal;

use kiln_train::{LrSchedule, TrainSettings};
use serde::Serialize;

use crate::context::RunContext;

/// A stage's fine-tuning run.
pub struct FineTune<'a, P> {
    /// Names the checkpoint directory (`checkpoint-<name>`), e.g. `prune` or `pruned80_qat`.
    pub name: &'a str,
    /// The stage's parameters: a checkpoint made with others is not resumed.
    pub parameters: &'a P,
    pub epochs: usize,
    pub learning_rate: f64,
}

/// The run's training settings for `fine_tune`: its epochs at its learning rate, decayed
/// along a half cosine to zero (so the last epochs settle the weights), without warmup or
/// early stopping. Checkpoints go to `run_dir/checkpoint-<name>`, fingerprinted with the
/// stage's parameters, and `--resume` continues them when one exists.
pub fn fine_tune_settings<P: Serialize>(
    run: &RunContext<'_>,
    fine_tune: &FineTune<'_, P>,
) -> TrainSettings {
    let base = &run.train_settings;
    let name = fine_tune.name;
    let checkpoint_dir = run.run_dir.join(format!("checkpoint-{name}"));
    TrainSettings {
        epochs: fine_tune.epochs,
        learning_rate: fine_tune.learning_rate,
        schedule: LrSchedule::Cosine,
        warmup_epochs: 0,
        early_stopping_patience: None,
        resume: run.resume && checkpoint_dir.join("state.json").exists(),
        checkpoint_dir: Some(checkpoint_dir),
        fingerprint: format!(
            "{}+{name}{}",
            base.fingerprint,
            serde_json::to_string(fine_tune.parameters).unwrap_or_default()
        ),
        progress: std::io::stderr().is_terminal(),
        ..base.clone()
    }
}
