//! `pipeline run`: config → data → the recipe's stages, one after another, each reading what
//! the earlier ones left in the run context (models, exported files, report sections).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use kiln_train::{Augment, TrainSettings, TransferSettings};
use tracing::{info, warn};

use crate::config::{self, LoadedConfig};
use crate::context::RunContext;
use crate::data::load_data;
use crate::recipe::{self, Recipe};

/// How to run a config, besides the config itself.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Run directory (default `artifacts/<name>`).
    pub out: Option<PathBuf>,
    /// `key=value` overrides of config values (`--set`).
    pub overrides: Vec<String>,
    /// Continue every stage from its checkpoint (after a crash, kill or Ctrl-C).
    pub resume: bool,
    /// Overrides the distill stage's number of seeds.
    pub seeds: Option<usize>,
    /// Stop training after the current step when Ctrl-C is pressed (the CLI does; a library
    /// caller may own the signal itself).
    pub handle_ctrl_c: bool,
}

/// Runs `config_path`'s pipeline; returns the run directory.
pub fn run(config_path: &Path, options: &RunOptions) -> Result<PathBuf> {
    let loaded = config::load(config_path, &options.overrides)?;
    let config = &loaded.config;
    let recipe = load_recipe(&loaded, options.seeds)?;
    let run_dir = options
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("artifacts").join(&config.name));
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create run directory {}", run_dir.display()))?;
    kiln_tflite::write_atomically(
        &run_dir.join("config.toml"),
        loaded.effective_toml.as_bytes(),
    )
    .with_context(|| format!("cannot write {}", run_dir.join("config.toml").display()))?;
    let stage_names = recipe.stage_names();
    info!(run_dir = %run_dir.display(), stages = ?stage_names, "starting run '{}'", config.name);
    if let Some(description) = &recipe.description {
        info!("recipe {}: {description}", recipe.path.display());
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
    // Seeded before anything draws from the backend's RNG: the model's initial weights.
    device.seed(config.seed);
    let autodiff = device.clone().autodiff();
    let mut run = RunContext {
        loaded: &loaded,
        config_path,
        run_dir: &run_dir,
        splits: &splits,
        device: &device,
        autodiff: &autodiff,
        resume: options.resume,
        started,
        stages: stage_names,
        train_settings: train_settings(&loaded, &run_dir, options)?,
        models: Vec::new(),
        exported: Vec::new(),
        sections: Vec::new(),
        pretrained: None,
    };
    for stage in &recipe.stages {
        if let Some(section) = stage.run(&mut run)? {
            run.sections.push(section);
        }
    }
    crate::manifest::write(&run)?;
    info!(
        "wrote {}",
        run_dir.join(crate::manifest::FILE_NAME).display()
    );
    Ok(run_dir)
}

/// The config's recipe, with `--seeds` applied to its distill stage.
fn load_recipe(loaded: &LoadedConfig, seeds: Option<usize>) -> Result<Recipe> {
    let path = loaded.resolve(&loaded.config.pipeline);
    recipe::load_with(&path, |table| {
        let Some(seeds) = seeds else {
            return Ok(());
        };
        let Some(distill) = table.get_mut("distill").and_then(toml::Value::as_table_mut) else {
            bail!(
                "--seeds N repeats the distill stage's student comparison over N seeds, but the recipe {} has no distill stage (see pipelines/distill-prune-qat.toml)",
                path.display()
            );
        };
        if seeds == 0 {
            bail!("--seeds must be at least 1");
        }
        let seeds = i64::try_from(seeds).context("--seeds is too large")?;
        distill.insert("seeds".into(), toml::Value::Integer(seeds));
        Ok(())
    })
}

/// The `[train]` table as kiln-train's settings, checkpointing into `run_dir/checkpoint`.
fn train_settings(
    loaded: &LoadedConfig,
    run_dir: &Path,
    options: &RunOptions,
) -> Result<TrainSettings> {
    let config = &loaded.config;
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
        transfer: TransferSettings {
            freeze_backbone_epochs: config.train.freeze_backbone_epochs,
            backbone_lr_scale: config.train.backbone_lr_scale,
        },
        seed: config.seed,
        checkpoint_dir: Some(run_dir.join("checkpoint")),
        resume: options.resume,
        fingerprint: config.training_fingerprint()?,
        progress: std::io::stderr().is_terminal(),
        interrupt: options.handle_ctrl_c.then(interrupt_flag),
    })
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
