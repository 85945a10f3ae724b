//! One training run: epochs of shuffled mini-batches, Adam, cosine learning-rate decay.

use std::path::PathBuf;
use std::time::Instant;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};
use kiln_data::ImageDataset;
use kiln_nn::Classifier;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::batch::{Augment, image_tensor, images_nchw, label_tensor};
use crate::error::TrainError;
use crate::evaluate::argmax_rows;

#[derive(Clone, Debug)]
pub struct TrainSettings {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    /// Decay the learning rate to zero along a half cosine over the run (else constant).
    pub cosine_decay: bool,
    /// Random augmentation of training images.
    pub augment: Augment,
    pub seed: u64,
    /// Where the model is saved (Burn record, `model.bpk`) after every epoch.
    pub checkpoint_dir: Option<PathBuf>,
    pub progress: bool,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct EpochStats {
    pub epoch: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub learning_rate: f64,
    pub seconds: f64,
    /// Of `seconds`, the time spent assembling batches (copy, augmentation, tensor upload):
    /// how close the data path comes to starving training.
    pub data_seconds: f64,
}

/// Trains `model` (whose parameters live on the autodiff `device`) and returns it with the
/// per-epoch statistics. `on_epoch` sees each epoch's statistics as soon as it ends.
pub fn train<M: Classifier>(
    mut model: M,
    data: &ImageDataset,
    settings: &TrainSettings,
    device: &Device,
    mut on_epoch: impl FnMut(&EpochStats),
) -> Result<(M, Vec<EpochStats>), TrainError> {
    if data.is_empty() {
        return Err(TrainError::EmptyDataset);
    }
    if settings.batch_size == 0 || settings.epochs == 0 {
        return Err(TrainError::InvalidConfig(
            "epochs and batch_size must be at least 1".into(),
        ));
    }
    let classes = data.class_names.len().max(1);
    let mut optimizer = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let steps_per_epoch = data.len().div_ceil(settings.batch_size);
    let total_steps = (steps_per_epoch * settings.epochs) as f64;
    let mut indices: Vec<usize> = (0..data.len()).collect();
    let mut history = Vec::with_capacity(settings.epochs);

    for epoch in 1..=settings.epochs {
        let started = Instant::now();
        // One RNG per epoch, derived from the seed, so a resumed run reproduces later epochs.
        let mut rng = StdRng::seed_from_u64(
            settings
                .seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(epoch as u64),
        );
        indices.shuffle(&mut rng);
        let bar = progress_bar(settings.progress, steps_per_epoch, epoch, settings.epochs);
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        let mut data_seconds = 0.0f64;
        let mut learning_rate = settings.learning_rate;
        for (step, batch) in indices.chunks(settings.batch_size).enumerate() {
            let global_step = ((epoch - 1) * steps_per_epoch + step) as f64;
            learning_rate = if settings.cosine_decay {
                settings.learning_rate
                    * 0.5
                    * (1.0 + (std::f64::consts::PI * global_step / total_steps).cos())
            } else {
                settings.learning_rate
            };
            let batch_started = Instant::now();
            let pixels = images_nchw(data, batch, settings.augment, Some(&mut rng));
            let images = image_tensor(data, pixels, batch.len(), device);
            let labels = label_tensor(data, batch, device);
            data_seconds += batch_started.elapsed().as_secs_f64();
            let logits = model.forward(images);
            let loss = loss_fn.forward(logits.clone(), labels);

            let logits = logits.into_data();
            let logits = logits
                .as_slice::<f32>()
                .map_err(|e| TrainError::Backend(format!("reading logits: {e:?}")))?;
            let predictions = argmax_rows(logits, classes);
            correct += batch
                .iter()
                .zip(&predictions)
                .filter(|&(&row, &p)| data.labels[row] as usize == p)
                .count();
            seen += batch.len();
            let loss_value = f64::from(loss.clone().into_scalar::<f32>());
            if !loss_value.is_finite() {
                return Err(TrainError::Backend(format!(
                    "the loss became {loss_value} at epoch {epoch}; lower the learning rate"
                )));
            }
            loss_sum += loss_value * batch.len() as f64;

            let gradients = GradientsParams::from_grads(loss.backward(), &model);
            model = optimizer.step(learning_rate, model, gradients);
            bar.set_message(format!(
                "loss {:.4} acc {:.2}%",
                loss_sum / seen as f64,
                100.0 * correct as f64 / seen as f64
            ));
            bar.inc(1);
        }
        bar.finish_and_clear();
        let stats = EpochStats {
            epoch,
            loss: loss_sum / seen as f64,
            accuracy: correct as f64 / seen as f64,
            learning_rate,
            seconds: started.elapsed().as_secs_f64(),
            data_seconds,
        };
        if let Some(dir) = &settings.checkpoint_dir {
            let path = dir.join("model.bpk");
            model
                .clone()
                .save_file(&path)
                .map_err(|e| TrainError::Checkpoint {
                    path: path.display().to_string(),
                    reason: format!("{e:?}"),
                })?;
        }
        on_epoch(&stats);
        history.push(stats);
    }
    Ok((model, history))
}

fn progress_bar(enabled: bool, steps: usize, epoch: usize, epochs: usize) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps as u64);
    if let Ok(style) =
        ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(format!("{epoch}/{epochs}"));
    bar
}
