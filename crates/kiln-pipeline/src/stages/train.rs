//! The `train` stage: trains the config's `[model]` on the training split with the `[train]`
//! settings (checkpointed every epoch; `--resume` continues), saves it as `model.bpk`, and
//! evaluates it on the test split.

use std::time::Instant;

use anyhow::{Context, Result};
use burn::module::Module;
use kiln_train::{EpochStats, predict, train};
use serde::Serialize;
use tracing::info;

use crate::context::{ReferenceLogits, RunContext, StageModel};
use crate::pretrained::PretrainedSource;
use crate::report::ReportSection;
use crate::report::plots::{Axis, LineChart, Panel, Plot, Series, render};
use crate::stage::{Stage, StageKind, StageTable};
use crate::tensorboard::TrainingLog;

pub const KIND: StageKind = StageKind {
    name: "train",
    table: StageTable::None,
    makes_source: true,
    needs: &[],
    parse: |_| Ok(Box::new(TrainStage)),
};

struct TrainStage;

#[derive(Serialize)]
pub struct TrainingReport {
    /// The published weights training started from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<PretrainedSource>,
    pub seconds: f64,
    pub burn_test_accuracy: f64,
    /// On the validation split, when the config holds one out.
    pub burn_validation_accuracy: Option<f64>,
    /// The epoch whose model was exported (the best validation epoch, else the last).
    pub selected_epoch: usize,
    /// The checkpointed epoch a `--resume` continued from.
    pub resumed_from: Option<usize>,
    pub stopped_early: bool,
    pub epochs: Vec<EpochStats>,
}

impl Stage for TrainStage {
    fn name(&self) -> &'static str {
        KIND.name
    }

    fn can_start(&self) -> bool {
        true
    }

    fn run(&self, run: &mut RunContext<'_>) -> Result<Option<ReportSection>> {
        let config = run.config();
        let mut model = config
            .model
            .build(run.input_shape(), run.classes(), run.autodiff)
            .context("cannot build the model")?;
        let pretrained =
            crate::pretrained::load_into(&mut model, run.loaded, &kiln_data::HubSettings::from_env())?;
        let settings = &run.train_settings;
        let (train_set, test_set) = (&run.splits.train, &run.splits.test);
        let train_started = Instant::now();
        let mut log = TrainingLog::open(run.run_dir, "train", settings.resume)?;
        let outcome = train(
            model,
            train_set,
            run.validation(),
            settings,
            run.autodiff,
            run.device,
            |e| {
                log.record(e);
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
        log.finish()?;
        let train_seconds = train_started.elapsed().as_secs_f64();
        if let Some(epoch) = outcome.resumed_from {
            info!(
                "resumed after epoch {epoch} from {}",
                run.run_dir.join("checkpoint").display()
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
        let model_file = run.run_dir.join("model.bpk");
        let record = trained
            .valid()
            .into_record()
            .into_bytes()
            .map_err(|e| anyhow::anyhow!("cannot serialise the trained model: {e}"))?;
        kiln_tflite::write_atomically(&model_file, &record)
            .with_context(|| format!("cannot save {}", model_file.display()))?;

        let burn_logits =
            predict(&trained, test_set, run.device).context("evaluating the Burn model")?;
        let burn_accuracy = kiln_train::accuracy(&burn_logits, &test_set.labels, run.classes());
        info!(
            "Burn model (epoch {selected_epoch}) test accuracy {:.2}%",
            100.0 * burn_accuracy
        );
        let validation_accuracy = outcome
            .history
            .iter()
            .find(|e| e.epoch == selected_epoch)
            .and_then(|e| e.val_accuracy);
        let variants = config.export.variants.clone();
        run.models.push(StageModel {
            source: Some(KIND.name),
            prefix: String::new(),
            model: trained,
            stages: vec!["train".into()],
            sparsity: None,
            pattern: None,
            clusters: None,
            variants,
            qat: None,
            reference: ReferenceLogits {
                logits: burn_logits,
                model: "burn",
            },
        });
        run.pretrained.clone_from(&pretrained);
        let report = TrainingReport {
            pretrained,
            seconds: train_seconds,
            burn_test_accuracy: burn_accuracy,
            burn_validation_accuracy: validation_accuracy,
            selected_epoch,
            resumed_from: outcome.resumed_from,
            stopped_early: outcome.stopped_early,
            epochs: outcome.history,
        };
        let steps_per_epoch = run.splits.train.len().div_ceil(settings.batch_size.max(1));
        let plots = vec![
            chart(&report.epochs)?,
            learning_rate_chart(settings, steps_per_epoch)?,
        ];
        let mut section = ReportSection::new("training", markdown(&report), report);
        section.plots = plots;
        Ok(Some(section))
    }
}

fn markdown(training: &TrainingReport) -> String {
    let mut md = String::new();
    md += "## Training\n\n| epoch | loss | train accuracy | learning rate | seconds | of which data path |\n|---:|---:|---:|---:|---:|---:|\n";
    for e in &training.epochs {
        md += &format!(
            "| {} | {:.4} | {:.2}% | {:.2e} | {:.1} | {:.1}% |\n",
            e.epoch,
            e.loss,
            100.0 * e.accuracy,
            e.learning_rate,
            e.seconds,
            100.0 * e.data_seconds / e.seconds.max(1e-9)
        );
    }
    md += "\n![loss and accuracy per epoch](training.svg)\n\n![learning rate schedule](learning_rate.svg)\n";
    if let Some(p) = &training.pretrained {
        md += &format!(
            "\nStarted from pretrained weights {}{} ({}, {} bytes, sha256 `{}`; {} tensors).\n",
            p.spec,
            p.commit.as_ref().map_or(String::new(), |c| format!(" at commit `{c}`")),
            p.file,
            p.bytes,
            p.sha256,
            p.tensors
        );
    }
    md += &format!(
        "\nTrained in {:.1} s; the Burn model scores {:.2}% on the test split.\n",
        training.seconds,
        100.0 * training.burn_test_accuracy
    );
    md
}

/// Loss and accuracy per epoch, training solid and validation dashed.
fn chart(epochs: &[EpochStats]) -> Result<Plot> {
    let per_epoch = |f: &dyn Fn(&EpochStats) -> Option<f64>| -> Vec<(f64, f64)> {
        epochs
            .iter()
            .filter_map(|e| f(e).map(|v| (e.epoch as f64, v)))
            .collect()
    };
    let panel = |title: &str, y_label: &str, y_axis, train: Vec<(f64, f64)>, validation: Vec<(f64, f64)>| {
        let mut series = vec![Series::new("training", 0, train)];
        if !validation.is_empty() {
            series.push(Series::new("validation", 1, validation).dashed());
        }
        Panel {
            title: title.into(),
            x_label: "epoch".into(),
            y_label: y_label.into(),
            x_axis: Axis::Count,
            y_axis,
            series,
        }
    };
    let chart = LineChart {
        panels: vec![
            panel(
                "Loss per epoch",
                "cross-entropy",
                Axis::Number,
                per_epoch(&|e| Some(e.loss)),
                per_epoch(&|e| e.val_loss),
            ),
            panel(
                "Accuracy per epoch",
                "accuracy",
                Axis::Percent,
                per_epoch(&|e| Some(e.accuracy)),
                per_epoch(&|e| e.val_accuracy),
            ),
        ],
    };
    render("training", &chart)
}

/// The learning rate at every optimizer step of the planned run (warmup and schedule).
fn learning_rate_chart(settings: &kiln_train::TrainSettings, steps_per_epoch: usize) -> Result<Plot> {
    let plan = settings.lr_plan(steps_per_epoch);
    let points = (0..plan.total_steps)
        .map(|step| (step as f64, plan.rate(step)))
        .collect();
    let chart = LineChart {
        panels: vec![Panel {
            title: format!("Learning rate schedule ({} epochs of {steps_per_epoch} steps)", settings.epochs),
            x_label: "optimizer step".into(),
            y_label: "learning rate".into(),
            x_axis: Axis::Count,
            y_axis: Axis::Number,
            series: vec![Series::new("learning rate", 2, points)],
        }],
    };
    render("learning_rate", &chart)
}
