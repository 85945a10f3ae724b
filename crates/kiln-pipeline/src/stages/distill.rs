//! The `distill` stage: a student network learns from a teacher — the model this run trained,
//! or a previous run's (`teacher_run`) — with the loss α·T²·KL + (1 − α)·CE. For every seed
//! (`seeds`, or `pipeline run --seeds N`) the same student is also trained without the
//! teacher from the same initial weights, so the report shows the gain as mean ± std over
//! seeds: on small networks one seed's difference is mostly noise.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::prelude::{Device, Tensor};
use kiln_nn::{AnyClassifier, Classifier, ModelConfig};
use kiln_data::ImageDataset;
use kiln_train::{
    Augment, Distillation, TrainData, TrainHook, TrainSettings, accuracy, images_nchw, predict,
    train_with_hooks,
};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::tensorboard::TrainingLog;
use crate::config::Variant;
use crate::context::{ReferenceLogits, RunContext, StageModel};
use crate::report::ReportSection;
use super::tflite_teacher::TfliteTeacher;
use crate::stage::{Stage, StageKind, StageTable, parse_stage};

pub const KIND: StageKind = StageKind {
    name: "distill",
    table: StageTable::Required {
        keys: "a [distill.student] model table",
    },
    makes_source: true,
    needs: &[],
    parse: |table| parse_stage(table, DistillStage::validate),
};

/// `[distill]`: the student and the loss.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DistillStage {
    /// The student network, with the keys of a config's [model] table.
    pub student: ModelConfig,
    /// A previous run directory whose model (model.bpk, with the [model] of its config.toml)
    /// teaches, instead of the model this run trains; relative to the working directory.
    /// With it, a recipe may start at `distill` and train no teacher.
    #[serde(default)]
    pub teacher_run: Option<PathBuf>,
    /// A `.tflite` classifier (float or int8) whose logits, computed by kiln-runtime, teach:
    /// a converter file or another run's export. It must take this run's images (size,
    /// colour, normalisation) and classes. Relative to the working directory.
    #[serde(default)]
    pub teacher_tflite: Option<PathBuf>,
    /// Softening temperature T.
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// Weight α of the teacher's soft targets (1 − α goes to the labels).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Student training epochs (default: [train] epochs).
    #[serde(default)]
    pub epochs: Option<usize>,
    /// Student learning rate (default: [train] learning_rate).
    #[serde(default)]
    pub learning_rate: Option<f64>,
    /// Seeds to compare students over (`--seeds` overrides); the first seed's distilled
    /// student goes on to the next stages and is exported.
    #[serde(default = "default_seeds")]
    pub seeds: usize,
    /// Variants of the distilled student to export, named student_<variant>.
    #[serde(default = "default_variants")]
    pub variants: Vec<Variant>,
}

fn default_temperature() -> f64 {
    4.0
}

fn default_alpha() -> f64 {
    0.9
}

fn default_seeds() -> usize {
    1
}

fn default_variants() -> Vec<Variant> {
    vec![Variant::Fp32, Variant::Int8]
}

impl DistillStage {
    fn validate(&self) -> std::result::Result<(), String> {
        // Checked before any data loads or training starts.
        if let Some(dir) = &self.teacher_run
            && !(dir.join("config.toml").is_file() && dir.join("model.bpk").is_file())
        {
            return Err(format!(
                "teacher_run = {:?} is not a run directory (it needs the config.toml and model.bpk `pipeline run` writes; relative paths start from the working directory)",
                dir.display().to_string()
            ));
        }
        if self.teacher_run.is_some() && self.teacher_tflite.is_some() {
            return Err("give teacher_run or teacher_tflite, not both".into());
        }
        if let Some(file) = &self.teacher_tflite
            && !file.is_file()
        {
            return Err(format!(
                "teacher_tflite = {:?} is not a file (relative paths start from the working directory)",
                file.display().to_string()
            ));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(format!(
                "temperature = {} must be positive",
                self.temperature
            ));
        }
        if !(0.0..=1.0).contains(&self.alpha) {
            return Err(format!("alpha = {} must be in [0, 1]", self.alpha));
        }
        if self.seeds == 0 || self.epochs == Some(0) {
            return Err("seeds and epochs must be at least 1".into());
        }
        if let Some(lr) = self.learning_rate
            && !(lr.is_finite() && lr > 0.0)
        {
            return Err(format!("learning_rate = {lr} must be positive"));
        }
        Ok(())
    }
}

/// One seed's students.
#[derive(Clone, Debug, Serialize)]
pub struct SeedResult {
    pub seed: u64,
    /// Test accuracy of the student trained on labels alone.
    pub baseline_accuracy: f64,
    /// Test accuracy of the student trained with the teacher.
    pub distilled_accuracy: f64,
}

/// Mean and sample standard deviation.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct MeanStd {
    pub mean: f64,
    pub std: f64,
}

impl MeanStd {
    pub fn of(values: &[f64]) -> Self {
        let n = values.len().max(1) as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = if values.len() > 1 {
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        Self {
            mean,
            std: var.sqrt(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct DistillationReport {
    pub settings: DistillStage,
    /// "this run's train stage" or the teacher run's directory.
    pub teacher: String,
    pub teacher_test_accuracy: f64,
    pub teacher_parameters: usize,
    pub student_parameters: usize,
    pub seeds: Vec<SeedResult>,
    pub baseline: MeanStd,
    pub distilled: MeanStd,
    /// Mean and std over seeds of distilled − baseline (paired: same initial weights).
    pub gain: MeanStd,
}

impl Stage for DistillStage {
    fn name(&self) -> &'static str {
        KIND.name
    }

    fn can_start(&self) -> bool {
        self.teacher_run.is_some() || self.teacher_tflite.is_some()
    }

    fn run(&self, run: &mut RunContext<'_>) -> Result<Option<ReportSection>> {
        let input = run.input_shape();
        let classes = run.classes();
        let teacher = match (&self.teacher_run, &self.teacher_tflite) {
            (Some(dir), _) => Teacher {
                model: TeacherModel::Burn(load_run_model(dir, input, classes, run.device)?),
                name: dir.display().to_string(),
            },
            (None, Some(file)) => Teacher {
                model: TeacherModel::Tflite(TfliteTeacher::load(file, input, classes)?),
                name: file.display().to_string(),
            },
            (None, None) => match run.source_model(Some("train")) {
                Ok(trained) => Teacher {
                    model: TeacherModel::Burn(trained.model.valid()),
                    name: "this run's train stage".to_owned(),
                },
                Err(_) => bail!(
                    "the distill stage needs a teacher: a train stage before it, teacher_run or \
                     teacher_tflite"
                ),
            },
        };
        let distilled = distill(self, teacher, run)?;
        let report = distilled.report;
        run.models.push(StageModel {
            source: Some(KIND.name),
            prefix: "student".into(),
            model: distilled.student,
            stages: vec![
                "train (teacher)".into(),
                format!("distill T={} α={}", self.temperature, self.alpha),
            ],
            sparsity: None,
            pattern: None,
            clusters: None,
            variants: self.variants.clone(),
            qat: None,
            reference: ReferenceLogits {
                logits: distilled.test_logits,
                model: "burn (this stage's model)",
            },
        });
        Ok(Some(ReportSection::new(
            "distillation",
            markdown(&report),
            report,
        )))
    }
}

/// The model students learn from, on the plain device, and what the report calls it.
struct Teacher {
    model: TeacherModel,
    name: String,
}

// One teacher per stage: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum TeacherModel {
    Burn(AnyClassifier),
    Tflite(TfliteTeacher),
}

impl TeacherModel {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            Self::Burn(model) => model.forward(images),
            Self::Tflite(file) => file.logits(images),
        }
    }

    /// Logits of every image of `data`.
    fn predict(&self, data: &ImageDataset, device: &Device) -> Result<Vec<f32>> {
        match self {
            Self::Burn(model) => Ok(predict(model, data, device)?),
            Self::Tflite(file) => {
                let indices: Vec<usize> = (0..data.len()).collect();
                let mut logits = Vec::new();
                for chunk in indices.chunks(256) {
                    let pixels = images_nchw(data, chunk, Augment::default(), None);
                    logits.extend(file.run(&pixels, chunk.len()));
                }
                self.check()?;
                Ok(logits)
            }
        }
    }

    fn parameters(&self) -> usize {
        match self {
            Self::Burn(model) => model.num_params(),
            Self::Tflite(file) => file.parameters,
        }
    }

    /// A teacher file that failed to run on some batch is an error, not zeros.
    fn check(&self) -> Result<()> {
        match self {
            Self::Tflite(file) => match file.failure() {
                Some(e) => bail!("the teacher .tflite failed to run: {e}"),
                None => Ok(()),
            },
            Self::Burn(_) => Ok(()),
        }
    }
}

struct Distilled {
    /// The first seed's distilled student, on the autodiff device.
    student: AnyClassifier,
    /// Its logits on the test split.
    test_logits: Vec<f32>,
    report: DistillationReport,
}

/// Trains students with and without `teacher` (on the plain device) over `stage.seeds` seeds.
fn distill(
    stage: &DistillStage,
    teacher: Teacher,
    run: &RunContext<'_>,
) -> Result<Distilled> {
    let Teacher {
        model: teacher,
        name: teacher_name,
    } = teacher;
    let (train_set, validation, test_set) = (&run.splits.train, run.validation(), &run.splits.test);
    let (autodiff, device) = (run.autodiff, run.device);
    let (run_dir, resume) = (run.run_dir, run.resume);
    let base = &run.train_settings;
    let input = run.input_shape();
    let classes = run.classes();
    let teacher_logits = teacher
        .predict(test_set, device)
        .context("evaluating the teacher")?;
    let teacher_test_accuracy = accuracy(&teacher_logits, &test_set.labels, classes);
    let teacher_parameters = teacher.parameters();
    info!(
        "distill: teacher ({teacher_name}) test accuracy {:.2}%, {teacher_parameters} parameters",
        100.0 * teacher_test_accuracy
    );
    let teacher = Rc::new(teacher);
    // What shapes each student's training (not `seeds` or `variants`: a resumed run with
    // more seeds reuses the students it already has).
    let shaping = (
        &stage.student,
        &stage.teacher_run,
        &stage.teacher_tflite,
        stage.temperature,
        stage.alpha,
        stage.epochs,
        stage.learning_rate,
    );
    let fingerprint = format!(
        "{}+distill{}",
        base.fingerprint,
        serde_json::to_string(&shaping).unwrap_or_default()
    );
    let mut seeds = Vec::with_capacity(stage.seeds);
    let mut first_student = None;
    for i in 0..stage.seeds {
        let seed = base.seed + i as u64;
        let mut accuracies = [0.0; 2];
        for (slot, with_teacher) in [false, true].into_iter().enumerate() {
            let kind = if with_teacher {
                "distilled"
            } else {
                "baseline"
            };
            // The same initial weights for both students of a seed: a paired comparison.
            device.seed(seed);
            let student = stage
                .student
                .build(input, classes, autodiff)
                .context("building the student")?;
            let checkpoint_dir = run_dir.join(format!("checkpoint-distill-{seed}-{kind}"));
            let shared_teacher = Rc::clone(&teacher);
            let settings = TrainSettings {
                epochs: stage.epochs.unwrap_or(base.epochs),
                learning_rate: stage.learning_rate.unwrap_or(base.learning_rate),
                seed,
                resume: resume && checkpoint_dir.join("state.json").exists(),
                checkpoint_dir: Some(checkpoint_dir),
                fingerprint: format!("{fingerprint}+{seed}+{kind}"),
                progress: std::io::stderr().is_terminal(),
                // A student trains whole (the teacher's backbone settings are not its own).
                transfer: kiln_train::TransferSettings::default(),
                ..base.clone()
            };
            let mut hooks: Vec<Box<dyn TrainHook<_>>> = Vec::new();
            if with_teacher {
                hooks.push(Box::new(Distillation {
                    teacher: Rc::new(move |images| shared_teacher.logits(images)),
                    temperature: stage.temperature,
                    alpha: stage.alpha,
                }));
            }
            let mut log = TrainingLog::open(
                run_dir,
                &format!("distill/seed{seed}-{kind}"),
                settings.resume,
            )?;
            let outcome = train_with_hooks(student, TrainData { train: train_set, validation }, &settings, hooks, autodiff, device, |e| {
                log.record(e);
                info!(
                    "distill seed {seed} {kind} student epoch {}/{}: loss {:.4}, train accuracy {:.2}%",
                    e.epoch,
                    settings.epochs,
                    e.loss,
                    100.0 * e.accuracy
                )
            })
            .with_context(|| format!("training the {kind} student (seed {seed})"))?;
            log.finish()?;
            teacher.check()?;
            let logits = predict(&outcome.model, test_set, device)
                .with_context(|| format!("evaluating the {kind} student"))?;
            accuracies[slot] = accuracy(&logits, &test_set.labels, classes);
            info!(
                "distill seed {seed}: {kind} student test accuracy {:.2}%",
                100.0 * accuracies[slot]
            );
            if with_teacher && first_student.is_none() {
                first_student = Some((outcome.model, logits));
            }
        }
        seeds.push(SeedResult {
            seed,
            baseline_accuracy: accuracies[0],
            distilled_accuracy: accuracies[1],
        });
    }
    let (student, test_logits) = first_student.context("the distill stage trained no student")?;
    let column = |f: fn(&SeedResult) -> f64| seeds.iter().map(f).collect::<Vec<_>>();
    let report = DistillationReport {
        settings: stage.clone(),
        teacher: teacher_name,
        teacher_test_accuracy,
        teacher_parameters,
        student_parameters: student.num_params(),
        baseline: MeanStd::of(&column(|s| s.baseline_accuracy)),
        distilled: MeanStd::of(&column(|s| s.distilled_accuracy)),
        gain: MeanStd::of(&column(|s| s.distilled_accuracy - s.baseline_accuracy)),
        seeds,
    };
    info!(
        "distill over {} seed(s): baseline {:.2} ± {:.2}%, distilled {:.2} ± {:.2}%",
        report.seeds.len(),
        100.0 * report.baseline.mean,
        100.0 * report.baseline.std,
        100.0 * report.distilled.mean,
        100.0 * report.distilled.std
    );
    Ok(Distilled {
        student,
        test_logits,
        report,
    })
}

fn markdown(d: &DistillationReport) -> String {
    let s = &d.settings;
    let pm = |m: MeanStd| format!("{:.2} ± {:.2}%", 100.0 * m.mean, 100.0 * m.std);
    let mut md = format!(
        "## Distillation\n\nTeacher: {} ({} parameters, {:.2}% test accuracy). Student: `{}` ({} parameters), T = {}, α = {}. \
         Each seed trains the student twice from the same initial weights: on labels alone, and with the teacher.\n\n\
         | seed | student alone | distilled student | gain |\n|---:|---:|---:|---:|\n",
        d.teacher,
        d.teacher_parameters,
        100.0 * d.teacher_test_accuracy,
        s.student.name(),
        d.student_parameters,
        s.temperature,
        s.alpha
    );
    for r in &d.seeds {
        md += &format!(
            "| {} | {:.2}% | {:.2}% | {:+.2} pt |\n",
            r.seed,
            100.0 * r.baseline_accuracy,
            100.0 * r.distilled_accuracy,
            100.0 * (r.distilled_accuracy - r.baseline_accuracy)
        );
    }
    md += &format!(
        "| **mean ± std over {}** | **{}** | **{}** | **{:+.2} ± {:.2} pt** |\n",
        d.seeds.len(),
        pm(d.baseline),
        pm(d.distilled),
        100.0 * d.gain.mean,
        100.0 * d.gain.std
    );
    md
}

/// A previous run's trained model: its config.toml's [model] built for this data, with the
/// parameters of its model.bpk.
pub fn load_run_model(
    dir: &Path,
    input: [usize; 3],
    classes: usize,
    device: &Device,
) -> Result<AnyClassifier> {
    let config_path = dir.join("config.toml");
    let text = std::fs::read_to_string(&config_path).with_context(|| {
        format!(
            "teacher_run: cannot read {} (teacher_run names a directory `pipeline run` wrote)",
            config_path.display()
        )
    })?;
    let table: toml::Table = toml::from_str(&text)
        .with_context(|| format!("teacher_run: {} is not valid TOML", config_path.display()))?;
    let Some(model) = table.get("model").cloned() else {
        bail!(
            "teacher_run: {} has no [model] table",
            config_path.display()
        );
    };
    let model: ModelConfig = model
        .try_into()
        .with_context(|| format!("teacher_run: the [model] of {}", config_path.display()))?;
    let weights = dir.join("model.bpk");
    let built = model
        .build(input, classes, device)
        .context("teacher_run: its [model] does not fit this run's data")?;
    built.try_load_file(&weights).map_err(|e| {
        anyhow::anyhow!(
            "teacher_run: cannot load {} into its [model] for {}×{}×{} images and {classes} classes: {e}",
            weights.display(),
            input[0],
            input[1],
            input[2]
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std() {
        let m = MeanStd::of(&[0.9, 0.92, 0.94]);
        assert!((m.mean - 0.92).abs() < 1e-12);
        assert!((m.std - 0.02).abs() < 1e-12);
        assert_eq!(MeanStd::of(&[0.5]).std, 0.0);
    }
}
