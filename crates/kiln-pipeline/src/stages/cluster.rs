//! The `cluster` stage: fine-tunes a model with clustered weights (TF-MOT's
//! `cluster_weights`): each selected layer's weights share `clusters` trained centroids, so
//! the exported file holds at most that many distinct values per layer and gzip shrinks it.
//! After pruning (`from = "prune"`) the zeros stay zero (sparsity-preserving clustering).
//! Its variants are exported as `clustered<k>_<variant>`.

use anyhow::{Context, Result};
use kiln_train::{
    CentroidInit, ClusteringSettings, TrainHook, WeightClustering, layer_clusters,
    layer_sparsity,
};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::config::Variant;
use crate::context::{ReferenceLogits, RunContext, StageModel, independent_copy};
use crate::report::ReportSection;
use crate::stage::{Stage, StageKind, StageTable, parse_stage};
use crate::stages::fine_tune::{FineTune, test_logits};

pub const KIND: StageKind = StageKind {
    name: "cluster",
    table: StageTable::Required {
        keys: "epochs, learning_rate",
    },
    makes_source: true,
    needs: &[],
    parse: |table| parse_stage(table, ClusterStage::validate),
};

/// `[cluster]`: fine-tuning with clustered weights.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterStage {
    /// The stage whose model to cluster, e.g. "train" or "prune" (default: the latest model
    /// made before `cluster`).
    #[serde(default)]
    pub from: Option<String>,
    /// Shared values per layer.
    #[serde(default = "default_clusters")]
    pub clusters: usize,
    /// "linear" (evenly spaced, TF-MOT's default) or "kmeans_plus_plus".
    #[serde(default)]
    pub init: CentroidInit,
    /// Keep exact zeros (a pruned model's) at zero, outside the clusters.
    #[serde(default = "default_true")]
    pub preserve_sparsity: bool,
    /// Layer-name patterns to cluster (`*` wildcard; empty = every conv and dense layer).
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Fine-tuning epochs.
    pub epochs: usize,
    /// Fine-tuning learning rate, decayed along a half cosine to zero.
    pub learning_rate: f64,
    /// Variants of the clustered model to export, named clustered<k>_<variant>.
    #[serde(default = "default_variants")]
    pub variants: Vec<Variant>,
}

fn default_clusters() -> usize {
    16
}

fn default_true() -> bool {
    true
}

fn default_variants() -> Vec<Variant> {
    vec![Variant::Int8]
}

impl ClusterStage {
    fn settings(&self, seed: u64) -> ClusteringSettings {
        ClusteringSettings {
            clusters: self.clusters,
            init: self.init,
            preserve_sparsity: self.preserve_sparsity,
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            seed,
        }
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.epochs == 0 {
            return Err("epochs must be at least 1".into());
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(format!(
                "learning_rate = {} must be positive",
                self.learning_rate
            ));
        }
        self.settings(0).validate().map_err(|e| e.to_string())
    }
}

#[derive(Serialize)]
pub struct ClusteringReport {
    pub settings: ClusterStage,
    pub burn_test_accuracy: f64,
    /// Per layer: its distinct non-zero values after fine-tuning, and whether it was
    /// clustered.
    pub layers: Vec<ClusteredLayer>,
}

#[derive(Serialize)]
pub struct ClusteredLayer {
    pub layer: String,
    pub weights: usize,
    pub distinct_values: usize,
    pub sparsity: f64,
    pub clustered: bool,
}

impl Stage for ClusterStage {
    fn name(&self) -> &'static str {
        KIND.name
    }

    fn from(&self) -> Option<&str> {
        self.from.as_deref()
    }

    fn run(&self, run: &mut RunContext<'_>) -> Result<Option<ReportSection>> {
        let base = run.source_model(self.from.as_deref())?;
        let settings = self.settings(run.config().seed);
        let fine_tune = FineTune {
            name: "cluster",
            parameters: self,
            epochs: self.epochs,
            learning_rate: self.learning_rate,
        };
        let hooks: Vec<Box<dyn TrainHook<_>>> =
            vec![Box::new(WeightClustering::new(settings.clone()))];
        let outcome = fine_tune
            .train(run, independent_copy(&base.model), hooks, |e| {
                info!(
                    "cluster epoch {}/{}: loss {:.4}, train accuracy {:.2}%",
                    e.epoch,
                    self.epochs,
                    e.loss,
                    100.0 * e.accuracy
                )
            })
            .context("clustering fine-tune failed")?;
        let model = outcome.model;
        let sparsity = layer_sparsity(&model);
        let layers: Vec<ClusteredLayer> = layer_clusters(&model)
            .into_iter()
            .zip(&sparsity)
            .map(|((layer, distinct_values), s)| ClusteredLayer {
                clustered: settings.selects_layer(&layer),
                layer,
                weights: s.weights,
                distinct_values,
                sparsity: s.sparsity,
            })
            .collect();
        let (logits, burn_test_accuracy) = test_logits(run, &model, "the clustered Burn model")?;
        info!(
            "clustered to at most {} values per layer; the Burn model scores {:.2}%",
            self.clusters,
            100.0 * burn_test_accuracy
        );
        let mut stages = base.stages.clone();
        stages.push(format!("cluster {}", self.clusters));
        let prefix = base.derived_prefix(&format!("clustered{}", self.clusters));
        run.models.push(StageModel {
            source: Some(KIND.name),
            prefix,
            model,
            stages,
            sparsity: base.sparsity,
            pattern: base.pattern.clone(),
            clusters: Some(self.clusters),
            variants: self.variants.clone(),
            qat: None,
            reference: ReferenceLogits {
                logits,
                model: "burn (this stage's model)",
            },
        });
        let report = ClusteringReport {
            settings: self.clone(),
            burn_test_accuracy,
            layers,
        };
        Ok(Some(ReportSection::new(
            "clustering",
            markdown(&report),
            report,
        )))
    }
}

fn markdown(c: &ClusteringReport) -> String {
    let mut md = format!(
        "## Clustering\n\n{} clusters per layer ({:?} initialisation{}), {} fine-tuning epochs at learning rate {}: the clustered Burn model scores {:.2}%.\n\n| layer | weights | distinct non-zero values | sparsity | clustered |\n|---|---:|---:|---:|---|\n",
        c.settings.clusters,
        c.settings.init,
        if c.settings.preserve_sparsity {
            ", zeros preserved"
        } else {
            ""
        },
        c.settings.epochs,
        c.settings.learning_rate,
        100.0 * c.burn_test_accuracy
    );
    for l in &c.layers {
        md += &format!(
            "| `{}` | {} | {} | {:.2}% | {} |\n",
            l.layer,
            l.weights,
            l.distinct_values,
            100.0 * l.sparsity,
            if l.clustered { "yes" } else { "no" }
        );
    }
    md
}
