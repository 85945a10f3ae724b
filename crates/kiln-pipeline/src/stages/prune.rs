//! The `prune` stage: fine-tune the trained model with magnitude pruning on the recipe's
//! schedule, leaving exact zeros in the pruned weights; its variants are exported next to the
//! dense ones as `pruned<percent>_<variant>`.

use std::path::Path;

use anyhow::{Context, Result};
use burn::prelude::Device;
use kiln_data::ImageDataset;
use kiln_nn::Classifier;
use kiln_train::{EpochStats, LayerSparsity, TrainSettings, layer_sparsity, train};
use tracing::info;

use crate::fine_tune::fine_tune_settings;
use crate::recipe::PruneStage;

pub struct Pruned<M> {
    /// The pruned model, on the autodiff device (QAT may fine-tune it further).
    pub model: M,
    pub history: Vec<EpochStats>,
    pub layers: Vec<LayerSparsity>,
    /// Zeros over all pruned layers' weights (layers the recipe excludes are not counted).
    pub sparsity: f64,
}

/// Fine-tunes `trained` (on the autodiff device) under `stage`'s pruning schedule, reusing
/// the run's training settings for everything the stage does not set.
pub fn prune<M: Classifier>(
    trained: M,
    stage: &PruneStage,
    base: &TrainSettings,
    (train_set, run_dir, resume): (&ImageDataset, &Path, bool),
    (autodiff, device): (&Device, &Device),
) -> Result<Pruned<M>> {
    let steps_per_epoch = train_set.len().div_ceil(base.batch_size.max(1));
    let pruning = stage.settings(steps_per_epoch);
    let settings = TrainSettings {
        pruning: Some(pruning.clone()),
        ..fine_tune_settings(
            base,
            ("prune", stage),
            (stage.epochs, stage.learning_rate),
            (run_dir, resume),
        )
    };
    let outcome = train(trained, train_set, None, &settings, autodiff, device, |e| {
        info!(
            "prune epoch {}/{}: loss {:.4}, train accuracy {:.2}%, target sparsity {:.1}%",
            e.epoch,
            settings.epochs,
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
    Ok(Pruned {
        model,
        history: outcome.history,
        layers,
        sparsity,
    })
}
