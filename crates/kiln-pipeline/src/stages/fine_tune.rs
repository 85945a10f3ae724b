//! What the fine-tuning stages (prune, cluster, qat) share: the run's training settings, with
//! the stage's epochs and learning rate and a checkpoint directory of its own; and the fine-
//! tuned Burn model's evaluation on the test split.

use std::io::IsTerminal;

use anyhow::Context;
use kiln_nn::Classifier;
use kiln_train::{
    EpochStats, LrSchedule, TrainData, TrainHooks, TrainOutcome, TrainSettings, predict,
    train_with_hooks,
};
use serde::Serialize;

use crate::context::RunContext;
use crate::tensorboard::TrainingLog;

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
fn fine_tune_settings<P: Serialize>(
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
        // The whole network: its backbone was frozen, if at all, only in the train stage.
        transfer: kiln_train::TransferSettings::default(),
        ..base.clone()
    }
}

impl<P: Serialize> FineTune<'_, P> {
    /// Fine-tunes `model` (on the autodiff device) on the training split with `hooks`, under
    /// [`fine_tune_settings`]; `on_epoch` sees each epoch's statistics, which also go to
    /// the TensorBoard log `tensorboard/<name>`.
    pub fn train<M: Classifier>(
        &self,
        run: &RunContext<'_>,
        model: M,
        hooks: TrainHooks<'_, M>,
        mut on_epoch: impl FnMut(&EpochStats),
    ) -> anyhow::Result<TrainOutcome<M>> {
        let data = TrainData {
            train: &run.splits.train,
            validation: None,
        };
        let settings = fine_tune_settings(run, self);
        let mut log = TrainingLog::open(run.run_dir, self.name, settings.resume)?;
        let outcome = train_with_hooks(
            model,
            data,
            &settings,
            hooks,
            run.autodiff,
            run.device,
            |stats| {
                log.record(stats);
                on_epoch(stats);
            },
        )?;
        log.finish()?;
        Ok(outcome)
    }
}

/// Optimizer steps per epoch over the training split at the run's batch size (schedules in
/// epochs become steps with it).
pub fn steps_per_epoch(run: &RunContext<'_>) -> usize {
    run.splits
        .train
        .len()
        .div_ceil(run.train_settings.batch_size.max(1))
}

/// The Burn model's logits on the test split and their accuracy (`what` names the model in
/// errors, e.g. "the pruned Burn model").
pub fn test_logits<M: Classifier>(
    run: &RunContext<'_>,
    model: &M,
    what: &str,
) -> anyhow::Result<(Vec<f32>, f64)> {
    let test_set = &run.splits.test;
    let logits =
        predict(model, test_set, run.device).with_context(|| format!("evaluating {what}"))?;
    let accuracy = kiln_train::accuracy(&logits, &test_set.labels, run.classes());
    Ok((logits, accuracy))
}
