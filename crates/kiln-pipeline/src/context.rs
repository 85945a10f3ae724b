//! What a run has so far, handed from stage to stage: the config, the data, the devices, the
//! models earlier stages made, the files the export stage wrote, and the report sections.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use burn::prelude::Device;
use kiln_data::ImageDataset;
use kiln_nn::AnyClassifier;
use kiln_train::{Qat, TrainSettings};

use crate::config::{Config, LoadedConfig, Variant};
use crate::data::Splits;
use crate::pretrained::PretrainedSource;
use crate::report::{ReportSection, VariantReport};

pub struct RunContext<'a> {
    pub loaded: &'a LoadedConfig,
    pub config_path: &'a Path,
    pub run_dir: &'a Path,
    pub splits: &'a Splits,
    /// The plain device: evaluation, teachers.
    pub device: &'a Device,
    /// The autodiff device models train on.
    pub autodiff: &'a Device,
    /// `--resume`: stages continue from their checkpoints.
    pub resume: bool,
    pub started: Instant,
    /// The recipe's stages, in order.
    pub stages: Vec<&'static str>,
    /// The `[train]` table as training settings; fine-tuning stages derive theirs from it.
    pub train_settings: TrainSettings,
    /// Models the stages made, in order.
    pub models: Vec<StageModel>,
    /// Files the export stage wrote, in order.
    pub exported: Vec<ExportedVariant>,
    /// Report sections of the stages that ran, in order.
    pub sections: Vec<ReportSection>,
    /// The published weights the train stage started from, for the manifest.
    pub pretrained: Option<PretrainedSource>,
}

/// A model a stage made, to export and to start later stages from.
pub struct StageModel {
    /// The stage that made it, when later stages may start from it (`from = "…"`; QAT's
    /// model is not such a source).
    pub source: Option<&'static str>,
    /// Its variants are named `<prefix>_<variant>` (no prefix for the trained model).
    pub prefix: String,
    /// On the autodiff device.
    pub model: AnyClassifier,
    /// The stages that made it, in order, as the report lists them.
    pub stages: Vec<String>,
    /// Zeros over its pruned layers' weights, when pruned.
    pub sparsity: Option<f64>,
    /// How it was pruned (`1x16 blocks`, `2:4`, `unstructured`), when pruned.
    pub pattern: Option<String>,
    /// Shared values per layer, when its weights are clustered.
    pub clusters: Option<usize>,
    pub variants: Vec<Variant>,
    /// QAT's wrapped model: its ranges quantize the int8 file instead of calibration.
    pub qat: Option<Qat<AnyClassifier>>,
    /// What its files are verified against.
    pub reference: ReferenceLogits,
}

/// The Burn model's logits on the test split (for QAT: with fake-quant).
pub struct ReferenceLogits {
    pub logits: Vec<f32>,
    /// What to call that model in the report (`burn`, `burn (fake-quant)`, …).
    pub model: &'static str,
}

impl StageModel {
    /// The prefix of a model a later stage derives from this one (`pruned80`,
    /// `student_pruned80`, …).
    pub fn derived_prefix(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}_{name}", self.prefix)
        }
    }
}

/// A file the export stage wrote.
pub struct ExportedVariant {
    pub path: PathBuf,
    /// Its row of the report (verification fills in accuracy, latency and parity).
    pub report: VariantReport,
    /// Index of the model in [`RunContext::models`] it came from.
    pub model: usize,
}

impl RunContext<'_> {
    pub fn config(&self) -> &Config {
        &self.loaded.config
    }

    pub fn has_stage(&self, name: &str) -> bool {
        self.stages.contains(&name)
    }

    /// The validation split, when the config holds one out.
    pub fn validation(&self) -> Option<&ImageDataset> {
        (!self.splits.validation.is_empty()).then_some(&self.splits.validation)
    }

    /// [height, width, channels] of the run's images.
    pub fn input_shape(&self) -> [usize; 3] {
        let train = &self.splits.train;
        [train.height, train.width, train.channels]
    }

    pub fn classes(&self) -> usize {
        self.splits.train.class_names.len()
    }

    /// The model a stage starts from: the latest one `from` made, else the latest one any
    /// source stage made.
    pub fn source_model(&self, from: Option<&str>) -> Result<&StageModel> {
        let model = self
            .models
            .iter()
            .rev()
            .find(|m| m.source.is_some() && from.is_none_or(|from| m.source == Some(from)));
        match from {
            Some(from) => model.with_context(|| format!("no model from the `{from}` stage")),
            None => model.context("no stage before this one made a model"),
        }
    }
}

/// A copy of `model` to train further that shares nothing with it: a clone would share
/// BatchNorm's running statistics, which the next stage's training updates.
pub fn independent_copy(model: &AnyClassifier) -> AnyClassifier {
    use burn::module::Module;
    model.valid().train()
}
