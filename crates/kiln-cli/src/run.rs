//! `pipeline run`: config → data → train → export (fp32 and its variants) → verify → report,
//! in a run directory.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::prelude::Device;
use kiln_nn::{BlockActivation, Classifier, EfficientNetLiteConfig, SmallCnnConfig};
use kiln_train::{Augment, TrainSettings, predict, train};
use tracing::{info, warn};

use crate::config::{self, ActivationConfig, Architecture, LoadedConfig};
use crate::data::{Splits, load_data};
use crate::export::{export_one, export_variants};
use crate::prune_stage::prune;
use crate::recipe::{self, Stage};
use crate::report::{self, DatasetReport, Parity, Report, VariantReport};
use crate::verify::verify_variant;

pub fn run(
    config_path: &Path,
    out: Option<PathBuf>,
    overrides: &[String],
    resume: bool,
) -> Result<PathBuf> {
    let loaded = config::load(config_path, overrides)?;
    let config = &loaded.config;
    let recipe_path = loaded.resolve(&config.pipeline);
    let recipe = recipe::load(&recipe_path)?;
    if recipe.stages.contains(&Stage::Verify) && !recipe.stages.contains(&Stage::Export) {
        bail!(
            "{}: `verify` needs `export` before it",
            recipe_path.display()
        );
    }
    let run_dir = out.unwrap_or_else(|| PathBuf::from("artifacts").join(&config.name));
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create run directory {}", run_dir.display()))?;
    kiln_tflite::write_atomically(
        &run_dir.join("config.toml"),
        loaded.effective_toml.as_bytes(),
    )
    .with_context(|| format!("cannot write {}", run_dir.join("config.toml").display()))?;
    info!(run_dir = %run_dir.display(), stages = ?recipe.stages, "starting run '{}'", config.name);
    if let Some(description) = &recipe.description {
        info!("recipe {}: {description}", recipe_path.display());
    }

    let started = Instant::now();
    let splits = load_data(&loaded)?;
    let (train_set, validation_set, test_set) = (&splits.train, &splits.validation, &splits.test);
    info!(
        train = train_set.len(),
        validation = validation_set.len(),
        test = test_set.len(),
        classes = train_set.class_names.len(),
        skipped = splits.provenance.skipped.values().sum::<usize>(),
        "data loaded ({}×{}×{})",
        train_set.height,
        train_set.width,
        train_set.channels
    );

    // Train (always first: the recipe checks it).
    let device = config.train.backend.device()?;
    device.seed(config.seed);
    let autodiff = device.clone().autodiff();
    let run = Run {
        loaded: &loaded,
        config_path,
        run_dir: &run_dir,
        recipe: &recipe,
        splits: &splits,
        device: &device,
        autodiff: &autodiff,
        resume,
        started,
    };
    match config.model.architecture {
        Architecture::SmallCnn => {
            let mut c = SmallCnnConfig::new(
                [train_set.height, train_set.width, train_set.channels],
                train_set.class_names.len(),
            );
            if let Some(filters) = &config.model.conv_filters {
                c.conv_filters = filters.clone();
            }
            c.dense_units = config.model.dense_units.unwrap_or(c.dense_units);
            let model = c.init(&autodiff).context("cannot build the model")?;
            run.continue_with(model)?;
        }
        Architecture::EfficientnetLite => {
            let m = &config.model;
            let mut c = EfficientNetLiteConfig::new(
                [train_set.height, train_set.width, train_set.channels],
                train_set.class_names.len(),
            );
            c.width_multiplier = m.width_multiplier.unwrap_or(c.width_multiplier);
            c.depth_multiplier = m.depth_multiplier.unwrap_or(c.depth_multiplier);
            c.se_ratio = m.se_ratio.or(c.se_ratio);
            c.dropout = m.dropout.unwrap_or(c.dropout);
            if let Some(activation) = m.activation {
                c.activation = match activation {
                    ActivationConfig::Relu6 => BlockActivation::Relu6,
                    ActivationConfig::Swish => BlockActivation::Swish,
                    ActivationConfig::HardSwish => BlockActivation::HardSwish,
                };
            }
            let model = c.init(&autodiff).context("cannot build the model")?;
            run.continue_with(model)?;
        }
    }
    Ok(run_dir)
}

/// Everything a run has settled before its model exists.
struct Run<'a> {
    loaded: &'a LoadedConfig,
    config_path: &'a Path,
    run_dir: &'a Path,
    recipe: &'a recipe::Recipe,
    splits: &'a Splits,
    device: &'a Device,
    autodiff: &'a Device,
    resume: bool,
    started: Instant,
}

impl Run<'_> {
    /// Train → evaluate → export → verify → report, for any architecture.
    fn continue_with<M: Classifier>(&self, model: M) -> Result<()> {
        let config = &self.loaded.config;
        let recipe = self.recipe;
        let run_dir = self.run_dir;
        let (train_set, validation_set, test_set) = (
            &self.splits.train,
            &self.splits.validation,
            &self.splits.test,
        );
        let device = self.device;
        let interrupt = interrupt_flag();
        let settings = TrainSettings {
            epochs: config.train.epochs,
            batch_size: config.train.batch_size,
            learning_rate: config.train.learning_rate,
            schedule: config.train.lr_schedule(),
            warmup_epochs: config.train.warmup_epochs,
            optimizer: config.train.optimizer_settings(),
            label_smoothing: config.train.label_smoothing,
            early_stopping_patience: config.train.early_stopping_patience,
            augment: Augment {
                shift: config.train.augment_shift,
                horizontal_flip: config.train.augment_flip,
            },
            seed: config.seed,
            checkpoint_dir: Some(run_dir.join("checkpoint")),
            resume: self.resume,
            fingerprint: config.training_fingerprint()?,
            progress: std::io::stderr().is_terminal(),
            interrupt: Some(interrupt),
            pruning: None,
            preserve_sparsity: false,
            distillation: None,
        };
        let train_started = Instant::now();
        let validation = (!validation_set.is_empty()).then_some(validation_set);
        let outcome = train(
            model,
            train_set,
            validation,
            &settings,
            self.autodiff,
            device,
            |e| {
                info!(
                    "epoch {}/{}: loss {:.4}, train accuracy {:.2}%{}, lr {:.2e}, {:.1}s ({:.1}% in the data path)",
                    e.epoch,
                    settings.epochs,
                    e.loss,
                    100.0 * e.accuracy,
                    e.val_accuracy
                        .map_or(String::new(), |v| format!(", validation {:.2}%", 100.0 * v)),
                    e.learning_rate,
                    e.seconds,
                    100.0 * e.data_seconds / e.seconds.max(1e-9)
                )
            },
        )
        .context("training failed")?;
        let train_seconds = train_started.elapsed().as_secs_f64();
        if let Some(epoch) = outcome.resumed_from {
            info!(
                "resumed after epoch {epoch} from {}",
                run_dir.join("checkpoint").display()
            );
        }
        if outcome.stopped_early {
            info!(
                "early stopping after epoch {}: no better validation accuracy for {} epochs",
                outcome.history.len(),
                config.train.early_stopping_patience.unwrap_or(0)
            );
        }
        let selected_epoch = outcome.selected_epoch;
        let (outcome_resumed_from, stopped_early) = (outcome.resumed_from, outcome.stopped_early);
        let history = outcome.history;
        let trained = outcome.model;
        let model = trained.clone().valid();
        model
            .clone()
            .save_file(run_dir.join("model.bpk"))
            .map_err(|e| {
                anyhow::anyhow!("cannot save {}: {e}", run_dir.join("model.bpk").display())
            })?;

        let burn_logits = predict(&model, test_set, device).context("evaluating the Burn model")?;
        let classes = test_set.class_names.len();
        let burn_accuracy = kiln_train::accuracy(&burn_logits, &test_set.labels, classes);
        info!(
            "Burn model (epoch {selected_epoch}) test accuracy {:.2}%",
            100.0 * burn_accuracy
        );
        let validation_accuracy = history
            .iter()
            .find(|e| e.epoch == selected_epoch)
            .and_then(|e| e.val_accuracy);
        let pruned = match (&recipe.prune, recipe.stages.contains(&Stage::Prune)) {
            (Some(stage), true) => {
                let pruned = prune(
                    trained,
                    stage,
                    &settings,
                    (train_set, run_dir, self.resume),
                    (self.autodiff, device),
                )?;
                let logits = predict(&pruned.model, test_set, device)
                    .context("evaluating the pruned Burn model")?;
                Some((stage, pruned, logits))
            }
            _ => None,
        };
        let mut variants = Vec::new();
        if recipe.stages.contains(&Stage::Export) {
            let description = format!(
                "Kiln {} ({})",
                config.name,
                config.model.architecture.display_name()
            );
            let tflite = model
                .lower(&description)
                .context("lowering the model to TFLite")?;
            let card = kiln_export::ModelCard {
                name: config.name.clone(),
                // Short on purpose: metadata bytes count against the int8 size budget.
                description: format!(
                    "{} classifier, {} classes, by Kiln",
                    config.model.architecture.display_name(),
                    train_set.class_names.len()
                ),
                version: format!("seed {}", config.seed),
                author: "Kiln".into(),
                labels: train_set.class_names.clone(),
                mean: config.data.mean.clone(),
                std: config.data.std.clone(),
            };
            let exported = export_variants(
                &tflite,
                &card,
                run_dir,
                &config.export,
                train_set,
                config.seed,
            )?;
            for file in &exported {
                let name = file.variant.name();
                let mut variant = VariantReport::for_file(name, run_dir, &file.file)?;
                if recipe.stages.contains(&Stage::Verify) {
                    verify_into(
                        &mut variant,
                        &file.path,
                        test_set,
                        (&burn_logits, "burn"),
                        config.verify.latency_runs,
                    )?;
                }
                variants.push(variant);
            }
            if let Some((stage, pruned, pruned_logits)) = &pruned {
                let tflite = pruned
                    .model
                    .lower(&description)
                    .context("lowering the pruned model to TFLite")?;
                for &kind in &stage.variants {
                    let name = format!("{}_{}", stage.variant_prefix(), kind.name());
                    let file = export_one(
                        &tflite,
                        &card,
                        kind,
                        &format!("model_{name}.tflite"),
                        run_dir,
                        &config.export,
                        train_set,
                        config.seed,
                    )?;
                    let mut variant = VariantReport::for_file(&name, run_dir, &file.file)?;
                    variant.sparsity = Some(pruned.sparsity);
                    variant.stages = vec![
                        "train".into(),
                        format!("prune {:.0}%", 100.0 * stage.final_sparsity),
                        format!("export {}", kind.name()),
                    ];
                    if recipe.stages.contains(&Stage::Verify) {
                        verify_into(
                            &mut variant,
                            &file.path,
                            test_set,
                            (pruned_logits, "burn (pruned)"),
                            config.verify.latency_runs,
                        )?;
                    }
                    variants.push(variant);
                }
            }
            report::compare_with_fp32(&mut variants);
        }

        if recipe.stages.contains(&Stage::Report) {
            let report = Report {
                name: config.name.clone(),
                config_file: std::path::absolute(self.config_path)
                    .unwrap_or_else(|_| self.config_path.to_path_buf())
                    .display()
                    .to_string(),
                config_sha256: report::sha256_hex(self.loaded.effective_toml.as_bytes()),
                seed: config.seed,
                backend: config.train.backend.name().into(),
                stages: recipe
                    .stages
                    .iter()
                    .map(|s| format!("{s:?}").to_lowercase())
                    .collect(),
                dataset: DatasetReport::new(self.splits, &config.data.normalization())?,
                training: report::TrainingReport {
                    seconds: train_seconds,
                    burn_test_accuracy: burn_accuracy,
                    burn_validation_accuracy: validation_accuracy,
                    selected_epoch,
                    resumed_from: outcome_resumed_from,
                    stopped_early,
                    epochs: history,
                },
                variants,
                pruning: pruned
                    .as_ref()
                    .map(|(stage, pruned, logits)| report::PruningReport {
                        settings: (*stage).clone(),
                        sparsity: pruned.sparsity,
                        burn_test_accuracy: kiln_train::accuracy(logits, &test_set.labels, classes),
                        layers: pruned.layers.clone(),
                        epochs: pruned.history.clone(),
                    }),
                total_seconds: self.started.elapsed().as_secs_f64(),
            };
            report.write(run_dir)?;
            info!(
                "wrote {} and {}",
                run_dir.join("report.json").display(),
                run_dir.join("report.md").display()
            );
        }
        Ok(())
    }
}

/// Runs `file` over the test split in kiln-runtime and records its accuracy, latency and
/// parity with `reference` (logits of the Burn model it came from) in `variant`.
fn verify_into(
    variant: &mut VariantReport,
    file: &Path,
    test_set: &kiln_data::ImageDataset,
    (reference, reference_name): (&[f32], &str),
    latency_runs: usize,
) -> Result<()> {
    let verified = verify_variant(file, test_set, reference, latency_runs)
        .with_context(|| format!("verifying {}", file.display()))?;
    info!(
        "{} verified: accuracy {:.2}%, max |{reference_name} − kiln-runtime| {:.3e}, argmax agreement {:.2}%, p50 {:.3} ms",
        variant.name,
        100.0 * verified.accuracy,
        verified.max_abs_diff,
        100.0 * verified.argmax_agreement,
        verified.latency_ms_p50
    );
    variant.accuracy = Some(verified.accuracy);
    variant.latency_ms_p50 = Some(verified.latency_ms_p50);
    variant.parity = Some(Parity {
        reference: reference_name.into(),
        max_abs_diff: verified.max_abs_diff,
        argmax_agreement: verified.argmax_agreement,
    });
    Ok(())
}

/// A flag Ctrl-C sets: training stops after the current step and keeps the last complete
/// epoch's checkpoint. A second Ctrl-C exits at once.
fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let handler_flag = Arc::clone(&flag);
    let installed = ctrlc::set_handler(move || {
        if handler_flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: stopping after this step (Ctrl-C again to quit at once)");
    });
    if let Err(e) = installed {
        warn!("Ctrl-C will stop the process without saving: {e}");
    }
    flag
}
