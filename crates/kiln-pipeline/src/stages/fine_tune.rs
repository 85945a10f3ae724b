//! What the fine-tuning stages (prune, qat) share: the run's training settings, with the
//! stage's epochs and learning rate and a checkpoint directory of its own.

use std::io::IsTerminal;
use std::path::Path;

use kiln_train::{LrSchedule, TrainSettings};
use serde::Serialize;

/// `base` for a stage named `name` that fine-tunes for `epochs` at `learning_rate`, decayed
/// along a half cosine to zero (so the last epochs settle the weights), without warmup or
/// early stopping. Checkpoints go to `run_dir/checkpoint-<name>`, fingerprinted with the
/// stage's parameters (`stage`), and `--resume` continues them when one exists.
pub fn fine_tune_settings(
    base: &TrainSettings,
    (name, stage): (&str, &impl Serialize),
    (epochs, learning_rate): (usize, f64),
    (run_dir, resume): (&Path, bool),
) -> TrainSettings {
    let checkpoint_dir = run_dir.join(format!("checkpoint-{name}"));
    TrainSettings {
        epochs,
        learning_rate,
        schedule: LrSchedule::Cosine,
        warmup_epochs: 0,
        early_stopping_patience: None,
        resume: resume && checkpoint_dir.join("state.json").exists(),
        checkpoint_dir: Some(checkpoint_dir),
        fingerprint: format!(
            "{}+{name}{}",
            base.fingerprint,
            serde_json::to_string(stage).unwrap_or_default()
        ),
        progress: std::io::stderr().is_terminal(),
        pruning: None,
        preserve_sparsity: false,
        distillation: None,
        ..base.clone()
    }
}
