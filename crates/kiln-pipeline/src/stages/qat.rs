//! The `qat` stage: quantization-aware fine-tuning of a trained (or distilled, or pruned)
//! model; its int8 file is exported with the activation ranges training learned instead of
//! a calibration pass, as `qat_int8` (`pruned80_qat_int8` from a pruned model, …).

use anyhow::{Context, Result};
use burn::module::Module;
use kiln_export::TensorRanges;
use kiln_nn::{AnyClassifier, Classifier};
use kiln_tflite::Model;
use kiln_train::{
    EpochStats, Qat, QatSettings, SparsityPreservation, TrainHook,
};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::config::Variant;
use crate::context::{ReferenceLogits, RunContext, StageModel, independent_copy};
use crate::report::ReportSection;
use crate::stage::{Stage, StageKind, StageTable, parse_stage};
use crate::stages::fine_tune::{FineTune, steps_per_epoch, test_logits};

pub const KIND: StageKind = StageKind {
    name: "qat",
    table: StageTable::Required {
        keys: "epochs, learning_rate",
    },
    // Its model is fake-quantized: later stages start from the float model before it.
    makes_source: false,
    needs: &[],
    parse: |table| parse_stage(table, QatStage::validate),
};

/// `[qat]`: quantization-aware training (TF-MOT's `quantize_model` + fit).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QatStage {
    /// The stage whose model to fine-tune, e.g. "train", "distill" or "prune" (default: the
    /// latest model made before `qat`).
    #[serde(default)]
    pub from: Option<String>,
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
    fn validate(&self) -> std::result::Result<(), String> {
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

#[derive(Serialize)]
pub struct QatReport {
    pub settings: QatStage,
    /// The stage whose model QAT fine-tuned.
    pub from: String,
    /// The Burn model with fake-quant, which the int8 file is verified against.
    pub burn_fake_quant_test_accuracy: f64,
    /// The activation ranges QAT learned, which the int8 file's parameters come from.
    pub ranges: Vec<TensorRange>,
    pub epochs: Vec<EpochStats>,
}

#[derive(Serialize)]
pub struct TensorRange {
    pub tensor: String,
    pub min: f32,
    pub max: f32,
}

impl Stage for QatStage {
    fn name(&self) -> &'static str {
        KIND.name
    }

    fn from(&self) -> Option<&str> {
        self.from.as_deref()
    }

    /// Fine-tunes the source model through fake-quant. A pruned model keeps its zeros.
    fn run(&self, run: &mut RunContext<'_>) -> Result<Option<ReportSection>> {
        let base = run.source_model(self.from.as_deref())?;
        let from = base.source.unwrap_or("train");
        let name = base.derived_prefix("qat");
        let model = independent_copy(&base.model);
        ensure_int8_exportable(&model)?;
        let qat = Qat::new(
            model,
            self.settings(steps_per_epoch(run)),
            run.input_shape(),
            run.device,
        )
        .context("preparing quantization-aware training")?;
        let fine_tune = FineTune {
            name: &name,
            parameters: self,
            epochs: self.epochs,
            learning_rate: self.learning_rate,
        };
        let mut hooks: Vec<Box<dyn TrainHook<_>>> = Vec::new();
        if base.sparsity.is_some() {
            hooks.push(Box::new(SparsityPreservation::default()));
        }
        let outcome = fine_tune
            .train(run, qat, hooks, |e| {
                info!(
                    "{name} epoch {}/{}: loss {:.4}, train accuracy {:.2}% (fake-quant)",
                    e.epoch,
                    self.epochs,
                    e.loss,
                    100.0 * e.accuracy,
                )
            })
        .context("quantization-aware training failed")?;
        let qat = outcome.model;
        let (logits, fake_quant_accuracy) = test_logits(run, &qat, "the fake-quant Burn model")?;
        info!(
            "QAT: the fake-quant Burn model scores {:.2}% on the test split",
            100.0 * fake_quant_accuracy
        );
        let mut stages = base.stages.clone();
        stages.push(format!("qat {} epochs", self.epochs));
        // A pruned model's zeros are masked through QAT, so its sparsity carries over.
        let (sparsity, pattern) = (base.sparsity, base.pattern.clone());
        let report = QatReport {
            settings: self.clone(),
            from: from.into(),
            burn_fake_quant_test_accuracy: fake_quant_accuracy,
            ranges: qat
                .ranges()
                .into_iter()
                .map(|(tensor, r)| TensorRange {
                    tensor,
                    min: r.min,
                    max: r.max,
                })
                .collect(),
            epochs: outcome.history,
        };
        run.models.push(StageModel {
            source: None,
            prefix: name,
            model: qat.model.clone(),
            stages,
            sparsity,
            pattern,
            // Fine-tuning moves the weights off the shared values.
            clusters: None,
            variants: vec![Variant::Int8],
            qat: Some(qat),
            reference: ReferenceLogits {
                logits,
                model: "burn (fake-quant)",
            },
        });
        Ok(Some(ReportSection::new("qat", markdown(&report), report)))
    }
}

fn markdown(q: &QatReport) -> String {
    let s = &q.settings;
    let mut md = format!(
        "## Quantization-aware training\n\nFrom the `{}` model: {} epochs at learning rate {} (cosine), fake-quant from epoch {}{}{}, range EMA decay {}. \
         The fake-quant Burn model scores {:.2}%; its int8 file takes these activation ranges:\n\n| tensor | min | max |\n|---|---:|---:|\n",
        q.from,
        s.epochs,
        s.learning_rate,
        s.quant_delay_epochs,
        s.freeze_observers_epoch
            .map_or(String::new(), |e| format!(", ranges frozen from epoch {e}")),
        s.freeze_batch_norm_epoch.map_or(String::new(), |e| format!(
            ", BatchNorm frozen from epoch {e}"
        )),
        s.ema_decay,
        100.0 * q.burn_fake_quant_test_accuracy
    );
    for r in &q.ranges {
        md += &format!("| `{}` | {:.4} | {:.4} |\n", r.tensor, r.min, r.max);
    }
    md
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
