//! One training run's TensorBoard log: Keras' tags in a `train` and a `validation` run.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kiln_train::EpochStats;

use super::EventFile;

/// Logs each epoch as training reports it: `batch_loss` and `batch_learning_rate` at every
/// optimizer step, `epoch_loss`, `epoch_accuracy`, `epoch_learning_rate` (and
/// `epoch_target_sparsity` when pruning) per epoch in `train/`, `epoch_accuracy` and
/// `epoch_loss` in `validation/`. Epoch scalars are logged at the epoch's number (1, 2, …), batch scalars at
/// the step's number counted from the run's first step.
pub struct TrainingLog {
    dir: PathBuf,
    train: Option<EventFile>,
    validation: Option<EventFile>,
    /// The first write error: training goes on, and the stage reports it when it ends.
    error: Option<anyhow::Error>,
}

impl TrainingLog {
    /// The log of `run_dir/tensorboard/<name>` (`name` may nest: `distill/seed42-baseline`).
    /// A fresh run clears what an earlier run left there; a resumed one adds a new file next
    /// to the events its interrupted run logged (TensorBoard reads a run's files together).
    pub fn open(run_dir: &Path, name: &str, resume: bool) -> Result<Self> {
        let dir = run_dir.join("tensorboard").join(name);
        if !resume && dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| {
                format!("cannot clear the old TensorBoard log {}", dir.display())
            })?;
        }
        Ok(Self {
            dir,
            train: None,
            validation: None,
            error: None,
        })
    }

    /// Logs one epoch and flushes, so TensorBoard shows it at once.
    pub fn record(&mut self, stats: &EpochStats) {
        if self.error.is_none()
            && let Err(e) = self.try_record(stats)
        {
            self.error = Some(e);
        }
    }

    /// Ends the log: the first error any epoch's write met.
    pub fn finish(self) -> Result<()> {
        self.error.map_or(Ok(()), Err)
    }

    fn try_record(&mut self, stats: &EpochStats) -> Result<()> {
        let epoch = stats.epoch as i64;
        let first_step = (stats.epoch as i64 - 1) * stats.steps.len() as i64;
        let train = open(&mut self.train, &self.dir.join("train"))?;
        let write = |file: &mut EventFile, tag: &str, step: i64, value: f64| {
            file.scalar(tag, step, value as f32)
                .with_context(|| format!("cannot write {}", file.path().display()))
        };
        for (i, step) in stats.steps.iter().enumerate() {
            let at = first_step + i as i64;
            write(train, "batch_loss", at, f64::from(step.loss))?;
            write(train, "batch_learning_rate", at, step.learning_rate)?;
        }
        write(train, "epoch_loss", epoch, stats.loss)?;
        write(train, "epoch_accuracy", epoch, stats.accuracy)?;
        write(train, "epoch_learning_rate", epoch, stats.learning_rate)?;
        if let Some(sparsity) = stats.target_sparsity {
            write(train, "epoch_target_sparsity", epoch, sparsity)?;
        }
        train.flush()?;
        if let Some(accuracy) = stats.val_accuracy {
            let validation = open(&mut self.validation, &self.dir.join("validation"))?;
            write(validation, "epoch_accuracy", epoch, accuracy)?;
            if let Some(loss) = stats.val_loss {
                write(validation, "epoch_loss", epoch, loss)?;
            }
            validation.flush()?;
        }
        Ok(())
    }
}

/// The event file in `slot`, created in `dir` on first use.
fn open<'a>(slot: &'a mut Option<EventFile>, dir: &Path) -> Result<&'a mut EventFile> {
    let file = match slot.take() {
        Some(file) => file,
        None => EventFile::create(dir).with_context(|| {
            format!(
                "cannot create a TensorBoard event file in {}",
                dir.display()
            )
        })?,
    };
    Ok(slot.insert(file))
}
