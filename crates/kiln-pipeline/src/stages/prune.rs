//! The `prune` stage: fine-tunes a model with magnitude pruning on the recipe's schedule
//! (TF-MOT's `prune_low_magnitude`), leaving exact zeros in the pruned weights; its variants
//! are exported next to the dense ones as `pruned<percent>_<variant>`.

use anyhow::{Context, Result};
use kiln_train::{
    EpochStats, LayerSparsity, MagnitudePruning, PruningScope, PruningSettings, SparsityPattern,
    SparsitySchedule, TrainHook, layer_sparsity,
};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::config::Variant;
use crate::context::{ReferenceLogits, RunContext, StageModel, independent_copy};
use crate::report::ReportSection;
use crate::report::plots::{Axis, LineChart, Panel, Plot, Series, render};
use crate::stage::{Stage, StageKind, StageTable, parse_stage};
use crate::stages::fine_tune::{FineTune, steps_per_epoch, test_logits};

pub const KIND: StageKind = StageKind {
    name: "prune",
    table: StageTable::Required {
        keys: "final_sparsity, epochs, end_epoch, learning_rate",
    },
    makes_source: true,
    needs: &[],
    parse: |table| parse_stage(table, PruneStage::validate),
};

/// `[prune]`: fine-tuning with magnitude pruning (TF-MOT's `prune_low_magnitude` schedule).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PruneStage {
    /// The stage whose model to prune, e.g. "train" or "distill" (default: the latest model
    /// made before `prune`).
    #[serde(default)]
    pub from: Option<String>,
    /// Fraction of each prunable layer's weights that are zero at the end.
    pub final_sparsity: f64,
    #[serde(default)]
    pub initial_sparsity: f64,
    /// Fine-tuning epochs.
    pub epochs: usize,
    /// Epoch (of the fine-tuning, 0-based) where pruning starts.
    #[serde(default)]
    pub begin_epoch: usize,
    /// Epoch by whose end the final sparsity is reached (≤ epochs).
    pub end_epoch: usize,
    #[serde(default = "default_power")]
    pub power: f64,
    /// Steps between mask updates.
    #[serde(default = "default_frequency")]
    pub frequency: usize,
    #[serde(default)]
    pub schedule: SparsitySchedule,
    #[serde(default)]
    pub scope: PruningScope,
    /// Layer-name patterns to prune (`*` wildcard; empty = every conv and dense layer).
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Fine-tuning learning rate, decayed along a half cosine to zero.
    pub learning_rate: f64,
    /// Prune blocks of `[outputs, inputs]` of each exported weight together, ranked by mean
    /// |w| (a dense layer's TFLite [out, in]; a convolution's [out, kh·kw·in]): `[1, 16]` is
    /// what LiteRT's int8 sparse FULLY_CONNECTED reads (`[1, 4]` its float32 one), so the
    /// exported file stores the layer in blocks. Depthwise and single-channel convolutions
    /// stay value by value.
    #[serde(default)]
    pub block: Option<[usize; 2]>,
    /// Keep the `m` largest of every `n` consecutive inputs, e.g. `[2, 4]` (TF-MOT's
    /// `sparsity_m_by_n`); `final_sparsity` must then be 1 − m/n.
    #[serde(default)]
    pub m_by_n: Option<[usize; 2]>,
    /// Variants of the pruned model to export, named pruned<percent>_<variant>.
    #[serde(default = "default_variants")]
    pub variants: Vec<Variant>,
}

fn default_power() -> f64 {
    3.0
}

fn default_frequency() -> usize {
    10
}

fn default_variants() -> Vec<Variant> {
    vec![Variant::Int8]
}

impl PruneStage {
    /// The kiln-train settings for `steps_per_epoch` steps per epoch.
    pub fn settings(&self, steps_per_epoch: usize) -> PruningSettings {
        PruningSettings {
            schedule: self.schedule,
            initial_sparsity: self.initial_sparsity,
            final_sparsity: self.final_sparsity,
            begin_step: self.begin_epoch * steps_per_epoch,
            end_step: (self.end_epoch * steps_per_epoch).max(1) - 1,
            power: self.power,
            frequency: self.frequency,
            scope: self.scope,
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            pattern: self.pattern(),
        }
    }

    fn pattern(&self) -> SparsityPattern {
        match (self.block, self.m_by_n) {
            (Some([rows, cols]), _) => SparsityPattern::Block { rows, cols },
            (None, Some([m, n])) => SparsityPattern::MByN { m, n },
            (None, None) => SparsityPattern::Unstructured,
        }
    }

    /// `pruned80` for a final sparsity of 0.8.
    pub fn variant_prefix(&self) -> String {
        format!("pruned{:.0}", 100.0 * self.final_sparsity)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.epochs == 0
            || self.end_epoch > self.epochs
            || self.begin_epoch >= self.end_epoch.max(1)
        {
            return Err(format!(
                "epochs = {}, begin_epoch = {}, end_epoch = {}: need begin_epoch < end_epoch ≤ epochs",
                self.epochs, self.begin_epoch, self.end_epoch
            ));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(format!(
                "learning_rate = {} must be positive",
                self.learning_rate
            ));
        }
        if self.block.is_some() && self.m_by_n.is_some() {
            return Err("block and m_by_n are two patterns: set one of them".into());
        }
        if let Some([m, n]) = self.m_by_n
            && n > 0
            && (self.final_sparsity - (1.0 - m as f64 / n as f64)).abs() > 1e-9
        {
            return Err(format!(
                "m_by_n = [{m}, {n}] keeps {m} of every {n}, a sparsity of {}: set final_sparsity = {} (it is {})",
                1.0 - m as f64 / n as f64,
                1.0 - m as f64 / n as f64,
                self.final_sparsity
            ));
        }
        // The real step counts depend on the data; any epoch length checks the rest.
        self.settings(1000).validate().map_err(|e| e.to_string())
    }
}

#[derive(Serialize)]
pub struct PruningReport {
    pub settings: PruneStage,
    /// Zeros over all pruned layers' weights.
    pub sparsity: f64,
    pub burn_test_accuracy: f64,
    pub layers: Vec<LayerSparsity>,
    pub epochs: Vec<EpochStats>,
}

impl Stage for PruneStage {
    fn name(&self) -> &'static str {
        KIND.name
    }

    fn from(&self) -> Option<&str> {
        self.from.as_deref()
    }

    fn run(&self, run: &mut RunContext<'_>) -> Result<Option<ReportSection>> {
        let base = run.source_model(self.from.as_deref())?;
        let pruning = self.settings(steps_per_epoch(run));
        let fine_tune = FineTune {
            name: "prune",
            parameters: self,
            epochs: self.epochs,
            learning_rate: self.learning_rate,
        };
        let hooks: Vec<Box<dyn TrainHook<_>>> =
            vec![Box::new(MagnitudePruning::new(pruning.clone()))];
        let outcome = fine_tune
            .train(run, independent_copy(&base.model), hooks, |e| {
                info!(
                    "prune epoch {}/{}: loss {:.4}, train accuracy {:.2}%, target sparsity {:.1}%",
                    e.epoch,
                    self.epochs,
                    e.loss,
                    100.0 * e.accuracy,
                    100.0 * e.target_sparsity.unwrap_or(0.0)
                )
            })
        .context("pruning fine-tune failed")?;
        let model = outcome.model;
        let layers = layer_sparsity(&model);
        let (zeros, weights) = layers
            .iter()
            .filter(|l| pruning.selects_layer(&l.layer))
            .fold((0, 0), |(z, w), l| (z + l.zeros, w + l.weights));
        let sparsity = zeros as f64 / weights.max(1) as f64;
        info!(
            "pruned to {:.2}% sparsity over the pruned layers",
            100.0 * sparsity
        );
        let (logits, burn_test_accuracy) = test_logits(run, &model, "the pruned Burn model")?;
        let mut stages = base.stages.clone();
        stages.push(format!("prune {:.0}%", 100.0 * self.final_sparsity));
        let prefix = base.derived_prefix(&self.variant_prefix());
        run.models.push(StageModel {
            source: Some(KIND.name),
            prefix,
            model,
            stages,
            sparsity: Some(sparsity),
            pattern: Some(self.pattern().to_string()),
            clusters: None,
            variants: self.variants.clone(),
            qat: None,
            reference: ReferenceLogits {
                logits,
                model: "burn (this stage's model)",
            },
        });
        let report = PruningReport {
            settings: self.clone(),
            sparsity,
            burn_test_accuracy,
            layers,
            epochs: outcome.history,
        };
        let plots = vec![chart(&report.epochs)?];
        let mut section = ReportSection::new("pruning", markdown(&report), report);
        section.plots = plots;
        Ok(Some(section))
    }
}

fn markdown(p: &PruningReport) -> String {
    let mut md = format!(
        "## Pruning\n\nMagnitude pruning to {:.0}% ({} pattern, {:?} schedule, power {}, {:?}), {} fine-tuning epochs at learning rate {}: {:.2}% of the pruned layers' weights are zero; the pruned Burn model scores {:.2}%.\n\n| layer | weights | zeros | sparsity | pattern |\n|---|---:|---:|---:|---|\n",
        100.0 * p.settings.final_sparsity,
        p.settings.pattern(),
        p.settings.schedule,
        p.settings.power,
        p.settings.scope,
        p.settings.epochs,
        p.settings.learning_rate,
        100.0 * p.sparsity,
        100.0 * p.burn_test_accuracy
    );
    let pattern = p.settings.pattern();
    for l in &p.layers {
        let pruned = p.settings.settings(1).selects_layer(&l.layer);
        md += &format!(
            "| `{}` | {} | {} | {:.2}% | {} |\n",
            l.layer,
            l.weights,
            l.zeros,
            100.0 * l.sparsity,
            if pruned {
                pattern.for_weight(&l.shape).to_string()
            } else {
                "not pruned".into()
            }
        );
    }
    md += "\n![sparsity schedule](sparsity.svg)\n";
    md
}

/// Target sparsity and train accuracy per fine-tuning epoch.
fn chart(epochs: &[EpochStats]) -> Result<Plot> {
    let sparsity: Vec<(f64, f64)> = epochs
        .iter()
        .filter_map(|e| e.target_sparsity.map(|s| (e.epoch as f64, s)))
        .collect();
    let accuracy: Vec<(f64, f64)> = epochs
        .iter()
        .map(|e| (e.epoch as f64, e.accuracy))
        .collect();
    let panel = |title: &str, y_label: &str, series: Series| Panel {
        title: title.into(),
        x_label: "fine-tuning epoch".into(),
        y_label: y_label.into(),
        x_axis: Axis::Count,
        y_axis: Axis::Percent,
        series: vec![series],
    };
    let chart = LineChart {
        panels: vec![
            panel(
                "Pruning schedule: target sparsity at each epoch's end",
                "sparsity",
                Series::new("target sparsity", 3, sparsity),
            ),
            panel(
                "Train accuracy while pruning",
                "accuracy",
                Series::new("train accuracy", 0, accuracy),
            ),
        ],
    };
    render("sparsity", &chart)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prune_table_loads_with_defaults() {
        let table: toml::Value = toml::from_str(
            "final_sparsity = 0.8\nepochs = 4\nend_epoch = 3\nlearning_rate = 0.0005\n",
        )
        .unwrap();
        let prune: PruneStage = crate::stage::parse_table(Some(table)).unwrap();
        assert_eq!((prune.power, prune.frequency), (3.0, 10));
        assert_eq!(prune.variant_prefix(), "pruned80");
        let settings = prune.settings(100);
        assert_eq!((settings.begin_step, settings.end_step), (0, 299));
    }
}
