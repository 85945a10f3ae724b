//! Checkpoints that survive `kill -9`: after every epoch the model and optimizer state are
//! written under epoch-stamped names, then `state.json` — the commit point — is atomically
//! replaced to name them; files of older epochs are removed only after that. Whatever instant
//! a run dies at, `state.json` names a complete, consistent epoch.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::epoch_stats::EpochStats;

/// Bumped when the state layout changes; older checkpoints are then refused by name.
const FORMAT: u32 = 1;
const STATE_FILE: &str = "state.json";

/// What `state.json` records.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CheckpointState {
    pub format: u32,
    /// Identifies the settings that produced the checkpoint; a resume with other settings
    /// would not reproduce the run and is refused.
    pub fingerprint: String,
    /// Last complete epoch (1-based).
    pub epoch: usize,
    pub history: Vec<EpochStats>,
    /// Best validation accuracy so far and its epoch, when there is a validation split.
    pub best: Option<(usize, f64)>,
    /// Epochs since the best one (early stopping's counter).
    pub epochs_without_improvement: usize,
    /// Training ended (all epochs, or stopped early).
    pub finished: bool,
    pub model_file: String,
    pub optimizer_file: String,
    pub best_model_file: Option<String>,
}

/// A run's checkpoint directory.
pub struct Checkpoints {
    dir: PathBuf,
}

impl Checkpoints {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn error(&self, reason: impl std::fmt::Display) -> TrainError {
        TrainError::Checkpoint {
            path: self.dir.display().to_string(),
            reason: reason.to_string(),
        }
    }

    /// The committed state, if any.
    pub fn state(&self) -> Result<Option<CheckpointState>, TrainError> {
        let path = self.dir.join(STATE_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.error(format!("cannot read {}: {e}", path.display()))),
        };
        let state: CheckpointState = serde_json::from_slice(&bytes).map_err(|e| {
            self.error(format!(
                "{} is corrupt ({e}); delete the checkpoint directory to start over",
                path.display()
            ))
        })?;
        if state.format != FORMAT {
            return Err(self.error(format!(
                "checkpoint format {} is not {FORMAT} (written by another Kiln version); start the run over",
                state.format
            )));
        }
        Ok(Some(state))
    }

    /// Writes the epoch's files, then commits `state` naming them; then removes files no
    /// longer named.
    pub fn commit<M: Module>(
        &self,
        state: &mut CheckpointState,
        model: &M,
        optimizer: &ModuleOptimizer,
        new_best: Option<&M>,
    ) -> Result<(), TrainError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| self.error(e))?;
        let previous = self.state().ok().flatten();
        let epoch = state.epoch;
        state.model_file = format!("model-e{epoch}.bpk");
        state.optimizer_file = format!("optimizer-e{epoch}.bpk");
        self.write(
            &state.model_file,
            &model_bytes(model).map_err(|e| self.error(e))?,
        )?;
        let optimizer_bytes = optimizer
            .into_bytes()
            .map_err(|e| self.error(format!("cannot serialise the optimizer state: {e}")))?;
        self.write(&state.optimizer_file, &optimizer_bytes)?;
        if let Some(best) = new_best {
            let name = format!("best-e{epoch}.bpk");
            self.write(&name, &model_bytes(best).map_err(|e| self.error(e))?)?;
            state.best_model_file = Some(name);
        }
        let json = serde_json::to_vec_pretty(state).map_err(|e| self.error(e))?;
        self.write(STATE_FILE, &json)?;
        if let Some(previous) = previous {
            let keep = [
                Some(&state.model_file),
                Some(&state.optimizer_file),
                state.best_model_file.as_ref(),
            ];
            for old in [
                Some(previous.model_file),
                Some(previous.optimizer_file),
                previous.best_model_file,
            ]
            .into_iter()
            .flatten()
            {
                if !keep.contains(&Some(&old)) {
                    let _ = std::fs::remove_file(self.dir.join(old));
                }
            }
        }
        Ok(())
    }

    /// Temp file + fsync + rename: a file is either wholly there or not at all.
    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), TrainError> {
        use std::io::Write;
        let path = self.dir.join(name);
        let temp = self.dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let result = (|| {
            let mut file = std::fs::File::create(&temp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            std::fs::rename(&temp, &path)
        })();
        result.map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            self.error(format!("cannot write {}: {e}", path.display()))
        })
    }

    /// `model` with the parameters of checkpoint file `name`.
    pub fn load_model<M: Module>(&self, model: M, name: &str) -> Result<M, TrainError> {
        let path = self.dir.join(name);
        let bytes = std::fs::read(&path)
            .map_err(|e| self.error(format!("cannot read {}: {e}", path.display())))?;
        let record = burn::store::ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
            .map_err(|e| self.error(format!("{} is corrupt: {e}", path.display())))?;
        model.try_load_record(record).map_err(|e| {
            self.error(format!(
                "{} does not fit this model ({e}); was the architecture changed?",
                path.display()
            ))
        })
    }

    /// `optimizer` with the state of checkpoint file `name`.
    pub fn load_optimizer(
        &self,
        optimizer: ModuleOptimizer,
        name: &str,
    ) -> Result<ModuleOptimizer, TrainError> {
        let path = self.dir.join(name);
        let bytes = std::fs::read(&path)
            .map_err(|e| self.error(format!("cannot read {}: {e}", path.display())))?;
        optimizer
            .from_bytes(Bytes::from_bytes_vec(bytes))
            .map_err(|e| self.error(format!("{} is corrupt: {e}", path.display())))
    }
}

fn model_bytes<M: Module>(model: &M) -> Result<Bytes, String> {
    // A running state (BatchNorm's statistics, QAT's observers) keeps each thread's latest
    // update aside until something syncs it, and a record reads the synced value: without
    // this, the checkpoint would hold the state of one step before. `valid()` syncs every
    // running state in place (the copy it returns is dropped).
    drop(model.valid());
    model
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| format!("cannot serialise the model: {e}"))
}

impl CheckpointState {
    pub fn new(fingerprint: String) -> Self {
        Self {
            format: FORMAT,
            fingerprint,
            epoch: 0,
            history: Vec::new(),
            best: None,
            epochs_without_improvement: 0,
            finished: false,
            model_file: String::new(),
            optimizer_file: String::new(),
            best_model_file: None,
        }
    }
}
