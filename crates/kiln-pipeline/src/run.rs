//! `pipeline run`: config → data → the recipe's stages (train → distill → prune → qat) →
//! export every model the stages made, with its variants → verify → report, in a run
//! directory.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::prelude::Device;
use kiln_nn::{AnyClassifier, Classifier};
use kiln_train::{Augment, TrainSettings, predict, train};
use tracing::{info, warn};

use crate::config::{self, LoadedConfig, Variant};
use crate::data::{Splits, load_data};
use crate::distill_stage::{Teacher, distill};
use crate::export::{Int8Ranges, export_variants};
use crate::model_build::build_model;
use crate::prune_stage::prune;
use crate::qat_stage::{quantization_aware_training, tensor_ranges};
use crate::recipe::{self, Source, Stage};
use crate::report::{self, DatasetReport, Parity, QatReport, Report, VariantReport};
use crate::verify::verify_variant;

/// Runs `config_path`'s pipeline into `out` (default `artifacts/<name>`). `seeds` overrides
/// the distill stage's number of seeds.
pub fn run(
    config_path: &Path,
    out: Option<PathBuf>,
    overrides: &[String],
    resume: bool,
    seeds: Option<usize>,
) -> Result<PathBuf> {
    let loaded = config::load(config_path, overrides)?;
    let config = &loaded.config;
    let recipe_path = loaded.resolve(&config.pipeline);
    let mut recipe = recipe::load(&recipe_path)?;
    if recipe.stages.contains(&Stage::Verify) && !recipe.stages.contains(&Stage::Export) {
        bail!(
            "{}: `verify` needs `export` before it",
            recipe_path.display()
        );
    }
    if let Some(seeds) = seeds {
        match recipe.distill.as_mut() {
            Some(distill) if seeds > 0 => distill.seeds = seeds,
            Some(_) => bail!("--seeds must be at least 1"),
            None => bail!(
                "--seeds N repeats the distill stage's student comparison over N seeds, but the recipe {} has no distill stage (see pipelines/distill-prune-qat.toml)",
                recipe_path.display()
            ),
        }
    }
    let run_dir = out.unwrap_or_else(|| PathBuf::from("artifacts").join(&config.name));
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create run directory {}", run_dir.display()))?;
    kiln_tflite::write_atomically(
        &run_dir.join("config.toml"),
        loaded.effective_toml.as_bytes(),
    )
    .with_context(|| format!("cannot write {}", run_dir.join("config.toml").display()))?;
    let stage_names: Vec<&str> = recipe.stages.iter().map(|s| s.name()).collect();
    info!(run_dir = %run_dir.display(), stages = ?stage_names, "starting run '{}'", config.name);
    if let Some(description) = &recipe.description {
        info!("recipe {}: {description}", recipe_path.display());
    }

    let started = Instant::now();
    let splits = load_data(&loaded)?;
    let train_set = &splits.train;
    info!(
        train = train_set.len(),
        validation = splits.validation.len(),
        test = splits.test.len(),
        classes = train_set.class_names.len(),
        skipped = splits.provenance.skipped.values().sum::<usize>(),
        "data loaded ({}×{}×{})",
        train_set.height,
        train_set.width,
        train_set.channels
    );

    let device = config.train.backend.device()?;
    device.seed(config.seed);
    let autodiff = device.clone().autodiff();
    let input = [train_set.height, train_set.width, train_set.channels];
    let model = build_model(&config.model, input, train_set.class_names.len(), &autodiff)?;
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
    run.continue_with(model)?;
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

/// The train stage's result.
struct Trained {
    /// On the autodiff device.
    model: AnyClassifier,
    test_logits: Vec<f32>,
    report: report::TrainingReport,
}

/// A model a stage made, to export.
struct Candidate {
    /// The stage that made it, for later stages' `from` (QAT's model is not a source).
    source: Option<Source>,
    /// Its variants are named `<prefix>_<variant>` (none for the trained model).
    prefix: String,
    /// On the autodiff device.
    model: AnyClassifier,
    /// The stages that made it, in order.
    stages: Vec<String>,
    sparsity: Option<f64>,
    variants: Vec<Variant>,
    /// QAT's wrapped model: its ranges quantize the int8 file.
    qat: Option<kiln_train::Qat<AnyClassifier>>,
    /// The Burn model's logits on the test split (for QAT: with fake-quant), which its
    /// files are verified against, and what to call that model in the report.
    reference: (Vec<f32>, &'static str),
}

impl Candidate {
    fn derived_prefix(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}_{name}", self.prefix)
        }
    }
}

/// A copy of `model` to train further that shares nothing with it: a clone would share
/// BatchNorm's running statistics, which the next stage's training updates.
fn independent_copy(model: &AnyClassifier) -> AnyClassifier {
    model.valid().train()
}

fn candidate(candidates: &[Candidate], source: Source) -> Result<&Candidate> {
    candidates
        .iter()
        .rev()
        .find(|c| c.source == Some(source))
        .with_context(|| format!("no model from the `{}` stage", source.stage().name()))
}

impl Run<'_> {
    fn train_settings(&self) -> Result<TrainSettings> {
        let config = &self.loaded.config;
        Ok(TrainSettings {
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
            checkpoint_dir: Some(self.run_dir.join("checkpoint")),
            resume: self.resume,
            fingerprint: config.training_fingerprint()?,
            progress: std::io::stderr().is_terminal(),
            interrupt: Some(interrupt_flag()),
            pruning: None,
            preserve_sparsity: false,
            distillation: None,
        })
    }

    /// Train → distill → prune → qat → export → verify → report.
    fn continue_with(&self, model: AnyClassifier) -> Result<()> {
        let config = &self.loaded.config;
        let recipe = self.recipe;
        let run_dir = self.run_dir;
        let (train_set, validation_set, test_set) = (
            &self.splits.train,
            &self.splits.validation,
            &self.splits.test,
        );
        let device = self.device;
        let settings = self.train_settings()?;
        let has = |stage| recipe.stages.contains(&stage);
        let validation = (!validation_set.is_empty()).then_some(validation_set);
        let classes = test_set.class_names.len();
        let trained = if has(Stage::Train) {
            Some(self.train_stage(model, &settings)?)
        } else {
            None
        };
        let mut candidates = Vec::new();
        let mut training_report = None;
        if let Some(trained) = trained {
            candidates.push(Candidate {
                source: Some(Source::Train),
                prefix: String::new(),
                model: trained.model,
                stages: vec!["train".into()],
                sparsity: None,
                variants: config.export.variants.clone(),
                qat: None,
                reference: (trained.test_logits, "burn"),
            });
            training_report = Some(trained.report);
        }

        let distillation = match (&recipe.distill, has(Stage::Distill)) {
            (Some(stage), true) => {
                let trained = candidate(&candidates, Source::Train).ok();
                let teacher = match (&stage.teacher_run, trained) {
                    (Some(dir), _) => Teacher::Run(dir.clone()),
                    (None, Some(trained)) => Teacher::ThisRun(Box::new(trained.model.valid())),
                    (None, None) => bail!(
                        "the distill stage needs a teacher: a train stage before it, or teacher_run"
                    ),
                };
                let distilled = distill(
                    teacher,
                    stage,
                    &settings,
                    (train_set, validation, test_set),
                    (run_dir, self.resume),
                    (self.autodiff, device),
                )?;
                candidates.push(Candidate {
                    source: Some(Source::Distill),
                    prefix: "student".into(),
                    model: distilled.student,
                    stages: vec![
                        "train (teacher)".into(),
                        format!("distill T={} α={}", stage.temperature, stage.alpha),
                    ],
                    sparsity: None,
                    variants: stage.variants.clone(),
                    qat: None,
                    reference: (distilled.test_logits, "burn (this stage's model)"),
                });
                Some(distilled.report)
            }
            _ => None,
        };

        let pruning = match (&recipe.prune, has(Stage::Prune)) {
            (Some(stage), true) => {
                let base = candidate(&candidates, recipe.source_of(Stage::Prune, stage.from))?;
                let pruned = prune(
                    independent_copy(&base.model),
                    stage,
                    &settings,
                    (train_set, run_dir, self.resume),
                    (self.autodiff, device),
                )?;
                let logits = predict(&pruned.model, test_set, device)
                    .context("evaluating the pruned Burn model")?;
                let burn_test_accuracy = kiln_train::accuracy(&logits, &test_set.labels, classes);
                let mut stages = base.stages.clone();
                stages.push(format!("prune {:.0}%", 100.0 * stage.final_sparsity));
                candidates.push(Candidate {
                    source: Some(Source::Prune),
                    prefix: base.derived_prefix(&stage.variant_prefix()),
                    model: pruned.model,
                    stages,
                    sparsity: Some(pruned.sparsity),
                    variants: stage.variants.clone(),
                    qat: None,
                    reference: (logits, "burn (this stage's model)"),
                });
                Some(report::PruningReport {
                    settings: stage.clone(),
                    sparsity: pruned.sparsity,
                    burn_test_accuracy,
                    layers: pruned.layers,
                    epochs: pruned.history,
                })
            }
            _ => None,
        };

        let qat = match (&recipe.qat, has(Stage::Qat)) {
            (Some(stage), true) => {
                let from = recipe.source_of(Stage::Qat, stage.from);
                let base = candidate(&candidates, from)?;
                let name = base.derived_prefix("qat");
                let outcome = quantization_aware_training(
                    independent_copy(&base.model),
                    stage,
                    &settings,
                    (train_set, run_dir, self.resume),
                    (self.autodiff, device),
                    (&name, base.sparsity.is_some()),
                )?;
                let logits = predict(&outcome.qat, test_set, device)
                    .context("evaluating the fake-quant Burn model")?;
                let fake_quant_accuracy = kiln_train::accuracy(&logits, &test_set.labels, classes);
                info!(
                    "QAT: the fake-quant Burn model scores {:.2}% on the test split",
                    100.0 * fake_quant_accuracy
                );
                let mut stages = base.stages.clone();
                stages.push(format!("qat {} epochs", stage.epochs));
                // A pruned model's zeros are masked through QAT, so its sparsity carries over.
                let sparsity = base.sparsity;
                let report = QatReport {
                    settings: stage.clone(),
                    from: from.stage().name().into(),
                    burn_fake_quant_test_accuracy: fake_quant_accuracy,
                    ranges: outcome
                        .qat
                        .ranges()
                        .into_iter()
                        .map(|(tensor, r)| report::TensorRange {
                            tensor,
                            min: r.min,
                            max: r.max,
                        })
                        .collect(),
                    epochs: outcome.history,
                };
                candidates.push(Candidate {
                    source: None,
                    prefix: name,
                    model: outcome.qat.model.clone(),
                    stages,
                    sparsity,
                    variants: vec![Variant::Int8],
                    qat: Some(outcome.qat),
                    reference: (logits, "burn (fake-quant)"),
                });
                Some(report)
            }
            _ => None,
        };

        let mut variants = Vec::new();
        if has(Stage::Export) {
            for candidate in &candidates {
                variants.extend(self.export_candidate(candidate)?);
            }
            report::compare_with_fp32(&mut variants);
        }

        if has(Stage::Report) {
            let report = Report {
                name: config.name.clone(),
                config_file: std::path::absolute(self.config_path)
                    .unwrap_or_else(|_| self.config_path.to_path_buf())
                    .display()
                    .to_string(),
                config_sha256: report::sha256_hex(self.loaded.effective_toml.as_bytes()),
                seed: config.seed,
                backend: config.train.backend.name().into(),
                stages: recipe.stages.iter().map(|s| s.name().to_owned()).collect(),
                dataset: DatasetReport::new(self.splits, &config.data.normalization())?,
                training: training_report,
                variants,
                distillation,
                pruning,
                qat,
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

    /// Trains the config's model and saves it as `model.bpk`.
    fn train_stage(&self, model: AnyClassifier, settings: &TrainSettings) -> Result<Trained> {
        let config = &self.loaded.config;
        let run_dir = self.run_dir;
        let (train_set, test_set) = (&self.splits.train, &self.splits.test);
        let validation = (!self.splits.validation.is_empty()).then_some(&self.splits.validation);
        let device = self.device;
        let train_started = Instant::now();
        let outcome = train(
            model,
            train_set,
            validation,
            settings,
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
        let trained = outcome.model;
        let model_file = run_dir.join("model.bpk");
        let record = trained
            .valid()
            .into_record()
            .into_bytes()
            .map_err(|e| anyhow::anyhow!("cannot serialise the trained model: {e}"))?;
        kiln_tflite::write_atomically(&model_file, &record)
            .with_context(|| format!("cannot save {}", model_file.display()))?;

        let burn_logits =
            predict(&trained, test_set, device).context("evaluating the Burn model")?;
        let classes = test_set.class_names.len();
        let burn_accuracy = kiln_train::accuracy(&burn_logits, &test_set.labels, classes);
        info!(
            "Burn model (epoch {selected_epoch}) test accuracy {:.2}%",
            100.0 * burn_accuracy
        );
        let validation_accuracy = outcome
            .history
            .iter()
            .find(|e| e.epoch == selected_epoch)
            .and_then(|e| e.val_accuracy);
        Ok(Trained {
            model: trained,
            test_logits: burn_logits,
            report: report::TrainingReport {
                seconds: train_seconds,
                burn_test_accuracy: burn_accuracy,
                burn_validation_accuracy: validation_accuracy,
                selected_epoch,
                resumed_from: outcome.resumed_from,
                stopped_early: outcome.stopped_early,
                epochs: outcome.history,
            },
        })
    }

    /// Lowers `candidate`, writes its variants and verifies each against its Burn model.
    fn export_candidate(&self, candidate: &Candidate) -> Result<Vec<VariantReport>> {
        let config = &self.loaded.config;
        let (train_set, test_set) = (&self.splits.train, &self.splits.test);
        // A student may be another architecture than the config's [model].
        let architecture = candidate.model.architecture();
        let description = format!("Kiln {} ({architecture})", config.name);
        let what = if candidate.prefix.is_empty() {
            "the model".to_owned()
        } else {
            format!("the {} model", candidate.prefix)
        };
        let tflite = candidate
            .model
            .valid()
            .lower(&description)
            .with_context(|| format!("lowering {what} to TFLite"))?;
        let card = kiln_export::ModelCard {
            name: config.name.clone(),
            // Short on purpose: metadata bytes count against the int8 size budget.
            description: format!(
                "{architecture} classifier, {} classes, by Kiln",
                train_set.class_names.len()
            ),
            version: format!("seed {}", config.seed),
            author: "Kiln".into(),
            labels: train_set.class_names.clone(),
            mean: config.data.mean.clone(),
            std: config.data.std.clone(),
        };
        let int8 = match &candidate.qat {
            Some(qat) => Int8Ranges::Given(tensor_ranges(qat, &tflite)?),
            None => Int8Ranges::Calibrate {
                train: train_set,
                seed: config.seed,
            },
        };
        let verify = self.recipe.stages.contains(&Stage::Verify);
        let exported = export_variants(
            &tflite,
            &card,
            (&candidate.prefix, &candidate.variants),
            self.run_dir,
            &config.export,
            &int8,
        )?;
        let mut reports = Vec::with_capacity(exported.len());
        for file in exported {
            let mut variant = VariantReport::for_file(&file.name, self.run_dir, &file.file)?;
            variant.sparsity = candidate.sparsity;
            variant.stages = candidate.stages.clone();
            variant.stages.push(match (&candidate.qat, file.variant) {
                (Some(_), Variant::Int8) => "export int8 (QAT ranges)".into(),
                (None, Variant::Int8) => "export int8 (calibrated)".into(),
                (_, kind) => format!("export {}", kind.name()),
            });
            if verify {
                verify_into(
                    &mut variant,
                    &file.path,
                    test_set,
                    (&candidate.reference.0, candidate.reference.1),
                    config.verify.latency_runs,
                )?;
            }
            reports.push(variant);
        }
        Ok(reports)
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
