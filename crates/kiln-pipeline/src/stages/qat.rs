//! The `qat` stage: quantization-aware fine-tuning of a trained (or distilled, or pruned)
//! model; its int8 file is exported with the activation ranges training learned instead of
//! a calibration pass, as `qat_int8` (`pruned80_qat_int8` from a pruned model, …).

use std::path::Path;

use anyhow::{Context, Result};
use burn::module::Module;
use burn::prelude::Device;
use kiln_data::ImageDataset;
use kiln_export::TensorRanges;
use kiln_nn::{AnyClassifier, Classifier};
use kiln_tflite::Model;
use kiln_train::{EpochStats, Qat, QatSettings, TrainSettings, train};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::fine_tune::fine_tune_settings;
use crate::recipe::Source;

/// `[qat]`: quantization-aware training (TF-MOT's `quantize_model` + fit).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QatStage {
    /// The model to fine-tune: "train", "distill" or "prune" (default: the latest before).
    #[serde(default)]
    pub from: Option<Source>,
    /// Fine-tuning epochs.
    pub epochs: usize,
    /// Fine-tuning learning rate, decayed along a half cosine to zero.
    pub learning_rate: f64,
    /// Epochs that only observe activation ranges before fake-quant starts.
    #[serde(default)]
    pub quant_delay_epochs: usize,
    /// Epoch (0-based) from which the activation ranges stop moving.
    #[serde(default)]
    pub freeze_observers_epoch: Option<usize>,
    /// Epoch (0-based) from which BatchNorm uses (and keeps) its running statistics.
    #[serde(default)]
    pub freeze_batch_norm_epoch: Option<usize>,
    /// Weight of the old range in each moving-average update of an activation range.
    #[serde(default = "default_ema_decay")]
    pub ema_decay: f64,
}

fn default_ema_decay() -> f64 {
    QatSettings::default().ema_decay
}

impl QatStage {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.epochs == 0 {
            return Err("epochs must be at least 1".into());
        }
        if self.quant_delay_epochs >= self.epochs {
            return Err(format!(
                "quant_delay_epochs = {} must be fewer than epochs = {} (the model must train quantized)",
                self.quant_delay_epochs, self.epochs
            ));
        }
        for (key, epoch) in [
            ("freeze_observers_epoch", self.freeze_observers_epoch),
            ("freeze_batch_norm_epoch", self.freeze_batch_norm_epoch),
        ] {
            if let Some(epoch) = epoch
                && epoch >= self.epochs
            {
                return Err(format!(
                    "{key} = {epoch} must be below epochs = {}",
                    self.epochs
                ));
            }
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(format!(
                "learning_rate = {} must be positive",
                self.learning_rate
            ));
        }
        self.settings(1).validate().map_err(|e| e.to_string())
    }

    /// The kiln-train settings for `steps_per_epoch` steps per epoch.
    pub fn settings(&self, steps_per_epoch: usize) -> QatSettings {
        QatSettings {
            ema_decay: self.ema_decay,
            quant_delay: self.quant_delay_epochs * steps_per_epoch,
            freeze_observers: self.freeze_observers_epoch.map(|e| e * steps_per_epoch),
            freeze_batch_norm: self.freeze_batch_norm_epoch.map(|e| e * steps_per_epoch),
        }
    }
}

pub struct QatOutcome {
    /// The fine-tuned model with its observers, on the autodiff device.
    pub qat: Qat<AnyClassifier>,
    pub history: Vec<EpochStats>,
}

/// Fine-tunes `model` (on the autodiff device) through fake-quant. A pruned model keeps its
/// zeros (`preserve_sparsity`).
pub fn quantization_aware_training(
    model: AnyClassifier,
    stage: &QatStage,
    base: &TrainSettings,
    (train_set, run_dir, resume): (&ImageDataset, &Path, bool),
    (autodiff, device): (&Device, &Device),
    (name, preserve_sparsity): (&str, bool),
) -> Result<QatOutcome> {
    ensure_int8_exportable(&model)?;
    let steps_per_epoch = train_set.len().div_ceil(base.batch_size.max(1));
    let input = [train_set.height, train_set.width, train_set.channels];
    let qat = Qat::new(model, stage.settings(steps_per_epoch), input, device)
        .context("preparing quantization-aware training")?;
    let settings = TrainSettings {
        preserve_sparsity,
        ..fine_tune_settings(
            base,
            (name, stage),
            (stage.epochs, stage.learning_rate),
            (run_dir, resume),
        )
    };
    let outcome = train(qat, train_set, None, &settings, autodiff, device, |e| {
        info!(
            "{name} epoch {}/{}: loss {:.4}, train accuracy {:.2}% (fake-quant)",
            e.epoch,
            settings.epochs,
            e.loss,
            100.0 * e.accuracy,
        )
    })
    .context("quantization-aware training failed")?;
    Ok(QatOutcome {
        qat: outcome.model,
        history: outcome.history,
    })
}

/// Fails before any training when the model has operators full-integer export does not
/// support (e.g. swish's MUL): QAT's only product is an int8 file.
fn ensure_int8_exportable(model: &AnyClassifier) -> Result<()> {
    let lowered = model
        .valid()
        .lower("int8 check")
        .context("lowering the model QAT would train")?;
    let tensors = lowered.subgraphs.first().map_or(0, |g| g.tensors.len());
    let mut ranges = TensorRanges::new(tensors);
    for t in 0..tensors {
        ranges.set(
            t,
            kiln_export::Range {
                min: -1.0,
                max: 1.0,
            },
        );
    }
    kiln_export::quantize_int8(&lowered, &ranges, &kiln_export::Int8Options::default())
        .map(drop)
        .context("the qat stage exports full int8, which this model cannot be")
}

/// The QAT ranges as kiln-export wants them: by tensor index of `lowered`'s subgraph.
pub fn tensor_ranges(qat: &Qat<AnyClassifier>, lowered: &Model) -> Result<TensorRanges> {
    let tensors = &lowered
        .subgraphs
        .first()
        .context("the lowered model has no subgraph")?
        .tensors;
    let mut ranges = TensorRanges::new(tensors.len());
    for (name, range) in qat.ranges() {
        let index = tensors
            .iter()
            .position(|t| t.name == name)
            .with_context(|| format!("QAT observed '{name}', which the lowered graph lacks"))?;
        ranges.set(index, range);
    }
    Ok(ranges)
}
