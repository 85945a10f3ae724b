//! One training run: epochs of seeded, shuffled, augmented mini-batches; Adam, AdamW or SGD;
//! a warmup + constant/cosine/step learning-rate plan; label smoothing; validation accuracy
//! every epoch with best-epoch selection and early stopping; a crash-safe checkpoint after
//! every epoch that `resume` continues from, reproducing the uninterrupted run exactly.
//!
//! Exact resumption rests on three things: every epoch's randomness (shuffle, augmentation,
//! the backend's RNG for dropout) is derived from the seed and the epoch number alone; the
//! learning rate is a pure function of the step; and the optimizer state is checkpointed
//! with the parameters.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};
use kiln_data::ImageDataset;
use kiln_nn::Classifier;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::batch::{Augment, image_tensor, images_nchw, label_tensor};
use crate::checkpoint::{CheckpointState, Checkpoints};
use crate::epoch_stats::{EpochStats, StepStats};
use crate::error::TrainError;
use crate::evaluate::{accuracy, argmax_rows, cross_entropy, predict};
use crate::hooks::TrainHooks;
use crate::optimizer::OptimizerSettings;
use crate::schedule::{LrPlan, LrSchedule};
use crate::transfer::{FeatureCache, TransferSettings, split_gradients};
use kiln_nn::BackboneMode;

#[derive(Clone, Debug)]
pub struct TrainSettings {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub schedule: LrSchedule,
    /// Epochs of linear learning-rate warmup (0 = none).
    pub warmup_epochs: usize,
    pub optimizer: OptimizerSettings,
    /// Label smoothing ε for the cross-entropy (0 = none; 0.1 is common).
    pub label_smoothing: f64,
    /// Stop after this many epochs without a better validation accuracy (needs validation
    /// data); the best epoch's model is returned either way when there is validation data.
    pub early_stopping_patience: Option<usize>,
    /// Random augmentation of training images.
    pub augment: Augment,
    /// Frozen-backbone epochs and the backbone's learning-rate scale (pretrained networks).
    pub transfer: TransferSettings,
    pub seed: u64,
    /// Where checkpoints go (`state.json` + per-epoch files); `None` = no checkpoints.
    pub checkpoint_dir: Option<PathBuf>,
    /// Continue from the checkpoint in `checkpoint_dir`.
    pub resume: bool,
    /// Identifies everything that shapes the run (config hash): a checkpoint made with other
    /// settings is not resumed.
    pub fingerprint: String,
    pub progress: bool,
    /// When set (Ctrl-C), training stops after the current step, keeping the last complete
    /// epoch's checkpoint.
    pub interrupt: Option<Arc<AtomicBool>>,
}

impl TrainSettings {
    /// The learning-rate plan these settings follow at `steps_per_epoch` steps per epoch.
    pub fn lr_plan(&self, steps_per_epoch: usize) -> LrPlan {
        LrPlan {
            base: self.learning_rate,
            schedule: self.schedule,
            warmup_steps: self.warmup_epochs * steps_per_epoch,
            steps_per_epoch,
            total_steps: steps_per_epoch * self.epochs,
        }
    }
}

/// A finished training run.
pub struct TrainOutcome<M> {
    /// The best validation epoch's model when there is validation data, else the last.
    pub model: M,
    pub history: Vec<EpochStats>,
    /// The epoch `model` comes from.
    pub selected_epoch: usize,
    pub stopped_early: bool,
    /// The checkpointed epoch this run continued from.
    pub resumed_from: Option<usize>,
}

/// Trains `model` (whose parameters live on the autodiff `device`) on `data`, evaluating on
/// `validation` (on the plain `eval_device`) after every epoch. `on_epoch` sees each epoch's
/// statistics as soon as it ends.
pub fn train<M: Classifier>(
    model: M,
    data: &ImageDataset,
    validation: Option<&ImageDataset>,
    settings: &TrainSettings,
    device: &Device,
    eval_device: &Device,
    on_epoch: impl FnMut(&EpochStats),
) -> Result<TrainOutcome<M>, TrainError> {
    train_with_hooks(
        model,
        TrainData {
            train: data,
            validation,
        },
        settings,
        Vec::new(),
        device,
        eval_device,
        on_epoch,
    )
}

/// What a training run reads: the training split and, for best-epoch selection and early
/// stopping, a validation split.
#[derive(Clone, Copy)]
pub struct TrainData<'a> {
    pub train: &'a ImageDataset,
    pub validation: Option<&'a ImageDataset>,
}

/// [`train`] with `hooks` (pruning, distillation, …) called at their points of the loop.
pub fn train_with_hooks<M: Classifier>(
    mut model: M,
    data: TrainData<'_>,
    settings: &TrainSettings,
    mut hooks: TrainHooks<'_, M>,
    device: &Device,
    eval_device: &Device,
    mut on_epoch: impl FnMut(&EpochStats),
) -> Result<TrainOutcome<M>, TrainError> {
    let TrainData {
        train: data,
        validation,
    } = data;
    validate(data, validation, settings)?;
    // Late epochs' tiny gradients and moments would otherwise be denormal, each one a
    // microcode assist (the quickstart's last epochs ran 40–60% slower without it).
    let _flush_to_zero = kiln_kernels::FlushToZero::new();
    let transfer = settings.transfer;
    transfer.validate(&model, settings.epochs)?;
    let backbone: std::collections::HashSet<_> = model.backbone_params().into_iter().collect();
    let transfer_learning = !backbone.is_empty() && transfer.is_active();
    let mut features: Option<FeatureCache> = None;
    for hook in &hooks {
        hook.validate()?;
    }
    let validation = validation.filter(|v| !v.is_empty());
    let classes = data.class_names.len().max(1);
    let mut optimizer = settings.optimizer.build()?;
    let smoothing = (settings.label_smoothing > 0.0).then_some(settings.label_smoothing as f32);
    let loss_fn = CrossEntropyLossConfig::new()
        .with_smoothing(smoothing)
        .init(device);
    let steps_per_epoch = data.len().div_ceil(settings.batch_size);
    let plan = settings.lr_plan(steps_per_epoch);
    let checkpoints = settings.checkpoint_dir.as_ref().map(Checkpoints::new);

    let mut state = CheckpointState::new(settings.fingerprint.clone());
    let mut best_model: Option<M> = None;
    let mut resumed_from = None;
    if settings.resume {
        let checkpoints = checkpoints.as_ref().ok_or_else(|| {
            TrainError::InvalidConfig("resuming needs a checkpoint directory".into())
        })?;
        let saved = checkpoints.state()?.ok_or_else(|| TrainError::Checkpoint {
            path: checkpoints.dir().display().to_string(),
            reason: "there is no checkpoint to resume from; run without --resume".into(),
        })?;
        if saved.fingerprint != settings.fingerprint {
            return Err(TrainError::Checkpoint {
                path: checkpoints.dir().display().to_string(),
                reason: "the checkpoint was made with a different config (data, model, training settings or seed); resuming would not reproduce that run — run without --resume, or restore the config".into(),
            });
        }
        model = checkpoints.load_model(model, &saved.model_file)?;
        optimizer = checkpoints.load_optimizer(optimizer, &saved.optimizer_file)?;
        if let Some(best) = &saved.best_model_file {
            best_model = Some(checkpoints.load_model(model.clone(), best)?);
        }
        resumed_from = Some(saved.epoch);
        state = saved;
    }

    let epoch_seed = |epoch: usize| {
        settings
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(epoch as u64)
    };
    // Each epoch shuffles the previous epoch's order; a resumed run replays the shuffles of
    // the epochs it skips so its order matches the uninterrupted run's.
    // Burn initialises parameters lazily, on first use: draw them now, from the RNG state the
    // caller seeded, before the per-epoch reseeding below would change what they become.
    model.visit(&mut Materialize);
    for hook in &mut hooks {
        model = hook.start(model, state.epoch * steps_per_epoch)?;
    }
    let mut indices: Vec<usize> = (0..data.len()).collect();
    for epoch in 1..=state.epoch {
        indices.shuffle(&mut StdRng::seed_from_u64(epoch_seed(epoch)));
    }
    let first_epoch = state.epoch + 1;
    for epoch in first_epoch..=settings.epochs {
        if state.finished {
            break;
        }
        let started = Instant::now();
        let frozen = transfer.frozen(epoch);
        if transfer_learning {
            model = model.with_backbone(if frozen {
                BackboneMode::Frozen
            } else {
                BackboneMode::FineTuned
            });
        }
        // Unaugmented images through a frozen backbone: the same features every epoch.
        let augmented = settings.augment != Augment::default();
        if frozen && !augmented && hooks.is_empty() && features.is_none() {
            features = Some(FeatureCache::build(&model, data, 256, eval_device)?);
        }
        let cached = features.as_ref().filter(|_| frozen);
        // Per-epoch randomness from (seed, epoch) only: a resumed run replays it exactly.
        let mut rng = StdRng::seed_from_u64(epoch_seed(epoch));
        device.seed(epoch_seed(epoch));
        indices.shuffle(&mut rng);
        let bar = progress_bar(settings.progress, steps_per_epoch, epoch, settings.epochs);
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        let mut data_seconds = 0.0f64;
        let mut learning_rate = settings.learning_rate;
        let mut steps = Vec::with_capacity(steps_per_epoch);
        for (step, batch) in indices.chunks(settings.batch_size).enumerate() {
            if settings
                .interrupt
                .as_ref()
                .is_some_and(|flag| flag.load(Ordering::SeqCst))
            {
                bar.finish_and_clear();
                return Err(TrainError::Interrupted {
                    last_epoch: state.epoch,
                    checkpoint_dir: settings
                        .checkpoint_dir
                        .as_ref()
                        .map(|d| d.display().to_string()),
                });
            }
            learning_rate = plan.rate((epoch - 1) * steps_per_epoch + step);
            let batch_started = Instant::now();
            let labels = label_tensor(data, batch, device);
            let (logits, images) = match cached {
                Some(cache) => {
                    let features = cache.batch(batch, device);
                    data_seconds += batch_started.elapsed().as_secs_f64();
                    let logits = model.classify_features(features).ok_or_else(|| {
                        TrainError::InvalidConfig("the network has no head to train alone".into())
                    })?;
                    (logits, None)
                }
                None => {
                    let pixels = images_nchw(data, batch, settings.augment, Some(&mut rng));
                    let images = image_tensor(data, pixels, batch.len(), device);
                    data_seconds += batch_started.elapsed().as_secs_f64();
                    (model.forward(images.clone()), Some(images))
                }
            };
            let mut loss = loss_fn.forward(logits.clone(), labels);
            if let Some(images) = &images {
                for hook in &hooks {
                    loss = hook.loss(loss, &logits, images);
                }
            }

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
            steps.push(StepStats {
                loss: loss_value as f32,
                learning_rate,
            });

            let gradients = GradientsParams::from_grads(loss.backward(), &model);
            if frozen || transfer.backbone_lr_scale == 1.0 {
                model = optimizer.step(learning_rate, model, gradients);
            } else {
                let (backbone_grads, head_grads) = split_gradients(gradients, &model, &backbone);
                let backbone_rate = learning_rate * transfer.backbone_lr_scale;
                model = optimizer.step(backbone_rate, model, backbone_grads);
                model = optimizer.step(learning_rate, model, head_grads);
            }
            for hook in &mut hooks {
                model = hook.after_step(model, (epoch - 1) * steps_per_epoch + step);
            }
            bar.set_message(format!(
                "loss {:.4} acc {:.2}%",
                loss_sum / seen as f64,
                100.0 * correct as f64 / seen as f64
            ));
            bar.inc(1);
        }
        bar.finish_and_clear();
        let (val_accuracy, val_loss) = match validation {
            Some(val) => {
                let logits = predict(&model, val, eval_device)?;
                let smoothing = settings.label_smoothing;
                (
                    Some(accuracy(&logits, &val.labels, classes)),
                    Some(cross_entropy(&logits, &val.labels, classes, smoothing)),
                )
            }
            None => (None, None),
        };
        let mut stats = EpochStats {
            epoch,
            loss: loss_sum / seen as f64,
            accuracy: correct as f64 / seen as f64,
            val_accuracy,
            val_loss,
            learning_rate,
            seconds: started.elapsed().as_secs_f64(),
            data_seconds,
            target_sparsity: None,
            steps,
        };
        for hook in &mut hooks {
            hook.epoch_end(&mut stats, epoch * steps_per_epoch - 1);
        }
        let mut new_best = None;
        if let Some(acc) = val_accuracy {
            if state.best.is_none_or(|(_, best)| acc > best) {
                state.best = Some((epoch, acc));
                state.epochs_without_improvement = 0;
                // Not a clone: that would share BatchNorm's running statistics, which the
                // next epochs go on updating.
                best_model = Some(model.valid().train());
                new_best = best_model.as_ref();
            } else {
                state.epochs_without_improvement += 1;
            }
        }
        let patience_spent = settings
            .early_stopping_patience
            .is_some_and(|p| state.epochs_without_improvement >= p);
        state.epoch = epoch;
        state.history.push(stats.clone());
        state.finished = epoch == settings.epochs || patience_spent;
        if let Some(checkpoints) = &checkpoints {
            checkpoints.commit(&mut state, &model, &optimizer, new_best)?;
        }
        on_epoch(&stats);
    }

    let stopped_early = state.epoch < settings.epochs;
    let (model, selected_epoch) = match (best_model, state.best) {
        (Some(best), Some((epoch, _))) => (best, epoch),
        _ => (model, state.epoch),
    };
    // Later stages (pruning, QAT, distillation) fine-tune the whole network.
    let model = if transfer_learning {
        model.with_backbone(BackboneMode::Trainable)
    } else {
        model
    };
    Ok(TrainOutcome {
        model,
        history: state.history,
        selected_epoch,
        stopped_early,
        resumed_from,
    })
}

/// Reads every parameter once, which runs any pending lazy initialisation.
struct Materialize;

impl burn::module::ModuleVisitor for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
        let _ = param.val();
    }
}

fn validate(
    data: &ImageDataset,
    validation: Option<&ImageDataset>,
    settings: &TrainSettings,
) -> Result<(), TrainError> {
    if data.is_empty() {
        return Err(TrainError::EmptyDataset);
    }
    let invalid = |m: String| Err(TrainError::InvalidConfig(m));
    if settings.batch_size == 0 || settings.epochs == 0 {
        return invalid("epochs and batch_size must be at least 1".into());
    }
    if !(settings.learning_rate > 0.0 && settings.learning_rate.is_finite()) {
        return invalid(format!(
            "learning_rate = {} must be positive",
            settings.learning_rate
        ));
    }
    if !(0.0..1.0).contains(&settings.label_smoothing) {
        return invalid(format!(
            "label_smoothing = {} must be in [0, 1)",
            settings.label_smoothing
        ));
    }
    if settings.warmup_epochs >= settings.epochs && settings.warmup_epochs > 0 {
        return invalid(format!(
            "warmup_epochs = {} must be fewer than epochs = {}",
            settings.warmup_epochs, settings.epochs
        ));
    }
    if let LrSchedule::Step {
        every_epochs,
        gamma,
    } = settings.schedule
        && (every_epochs == 0 || !(gamma > 0.0 && gamma <= 1.0))
    {
        return invalid(format!(
            "step schedule: step_epochs = {every_epochs} must be ≥ 1 and step_gamma = {gamma} in (0, 1]"
        ));
    }
    if settings.early_stopping_patience.is_some() && validation.is_none_or(ImageDataset::is_empty) {
        return invalid(
            "early stopping watches validation accuracy, but there is no validation split: set [data] split (e.g. [0.8, 0.1, 0.1]) or validation_fraction".into(),
        );
    }
    Ok(())
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
