//! The run report: `report.json` (machine-readable; later stages add variants and fields to
//! the same schema) and `report.md` (the table a person reads).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use kiln_train::EpochStats;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::data::Splits;

#[derive(Serialize)]
pub struct Report {
    pub name: String,
    /// The config file the run started from (absolute): its directory resolves the effective
    /// config's relative paths when `pipeline verify` reopens the run.
    pub config_file: String,
    pub config_sha256: String,
    pub seed: u64,
    pub backend: String,
    pub stages: Vec<String>,
    pub dataset: DatasetReport,
    /// The train stage (absent when a recipe distils from a previous run's teacher).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainingReport>,
    pub variants: Vec<VariantReport>,
    /// The distill stage, when the recipe has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distillation: Option<crate::distill_stage::DistillationReport>,
    /// The prune stage, when the recipe has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pruning: Option<PruningReport>,
    /// The qat stage, when the recipe has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qat: Option<QatReport>,
    pub total_seconds: f64,
}

#[derive(Serialize)]
pub struct PruningReport {
    pub settings: crate::recipe::PruneStage,
    /// Zeros over all pruned layers' weights.
    pub sparsity: f64,
    pub burn_test_accuracy: f64,
    pub layers: Vec<kiln_train::LayerSparsity>,
    pub epochs: Vec<EpochStats>,
}

#[derive(Serialize)]
pub struct QatReport {
    pub settings: crate::qat_stage::QatStage,
    /// The stage whose model QAT fine-tuned.
    pub from: String,
    /// The Burn model with fake-quant, which the int8 file is verified against.
    pub burn_fake_quant_test_accuracy: f64,
    /// The activation ranges QAT learned, which the int8 file's parameters come from.
    pub ranges: Vec<TensorRange>,
    pub epochs: Vec<EpochStats>,
}

#[derive(Serialize)]
pub struct TensorRange {
    pub tensor: String,
    pub min: f32,
    pub max: f32,
}

#[derive(Serialize)]
pub struct DatasetReport {
    /// `parquet`, `hub` or `folder`.
    pub source: String,
    /// Hub repo, revision, resolved commit and files (Hub sources).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hub: Option<crate::data::HubProvenance>,
    pub train_rows: usize,
    pub validation_rows: usize,
    pub test_rows: usize,
    pub classes: Vec<String>,
    /// [height, width, channels] fed to the model.
    pub image_shape: [usize; 3],
    /// Per-channel normalisation applied to pixels in [0, 1].
    pub normalization: serde_json::Value,
    /// Rows whose image could not be decoded (corrupt, truncated, zero bytes), per source
    /// split (before the train/validation/test split).
    pub skipped: BTreeMap<String, usize>,
    /// Source splits served from the decoded-image cache.
    pub cache_hits: Vec<String>,
    pub files: Vec<FileDigest>,
}

#[derive(Serialize)]
pub struct FileDigest {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Serialize)]
pub struct TrainingReport {
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

#[derive(Serialize)]
pub struct VariantReport {
    pub name: String,
    pub file: String,
    pub bytes: u64,
    pub gzip_bytes: u64,
    pub sha256: String,
    pub accuracy: Option<f64>,
    pub latency_ms_p50: Option<f64>,
    pub parity: Option<Parity>,
    /// bytes / the fp32 file's bytes.
    pub size_vs_fp32: Option<f64>,
    /// accuracy − the fp32 file's accuracy (a fraction, like `accuracy`).
    pub accuracy_delta: Option<f64>,
    /// The fp32 file's latency p50 / this file's (> 1: faster).
    pub speedup_vs_fp32: Option<f64>,
    /// Fraction of zeros in the pruned layers' weights (pruned variants).
    pub sparsity: Option<f64>,
    /// The stages that made this file.
    pub stages: Vec<String>,
}

#[derive(Serialize)]
pub struct Parity {
    /// What the file's outputs were compared with.
    pub reference: String,
    /// Largest |reference − output| over the test set's logits (quantized outputs
    /// dequantized first).
    pub max_abs_diff: f64,
    pub argmax_agreement: f64,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn gzip_len(bytes: &[u8]) -> Result<u64> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes)?;
    Ok(encoder.finish()?.len() as u64)
}

impl VariantReport {
    pub fn for_file(name: &str, run_dir: &Path, file: &str) -> Result<Self> {
        let path = run_dir.join(file);
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        Ok(Self {
            name: name.into(),
            file: file.into(),
            bytes: bytes.len() as u64,
            gzip_bytes: gzip_len(&bytes)?,
            sha256: sha256_hex(&bytes),
            accuracy: None,
            latency_ms_p50: None,
            parity: None,
            size_vs_fp32: None,
            accuracy_delta: None,
            speedup_vs_fp32: None,
            sparsity: None,
            stages: vec!["train".into(), format!("export {name}")],
        })
    }
}

/// Fills each variant's comparison with the `fp32` variant (when there is one, and for
/// accuracy and latency when both were measured).
pub fn compare_with_fp32(variants: &mut [VariantReport]) {
    let Some(base) = variants.iter().find(|v| v.name == "fp32") else {
        return;
    };
    let (bytes, accuracy, latency) = (base.bytes, base.accuracy, base.latency_ms_p50);
    for v in variants.iter_mut() {
        v.size_vs_fp32 = (bytes > 0).then(|| v.bytes as f64 / bytes as f64);
        v.accuracy_delta = accuracy.zip(v.accuracy).map(|(base, this)| this - base);
        v.speedup_vs_fp32 = latency
            .zip(v.latency_ms_p50)
            .filter(|&(_, this)| this > 0.0)
            .map(|(base, this)| base / this);
    }
}

impl DatasetReport {
    pub fn new(splits: &Splits, normalization: &kiln_data::Normalization) -> Result<Self> {
        let provenance = &splits.provenance;
        let files = provenance
            .files
            .iter()
            .filter(|path| path.is_file())
            .map(|path| {
                let bytes = std::fs::read(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                Ok(FileDigest {
                    path: path.display().to_string(),
                    bytes: bytes.len() as u64,
                    sha256: sha256_hex(&bytes),
                })
            })
            .collect::<Result<_>>()?;
        let train = &splits.train;
        Ok(Self {
            source: provenance.source.clone(),
            hub: provenance.hub.clone(),
            train_rows: train.len(),
            validation_rows: splits.validation.len(),
            test_rows: splits.test.len(),
            classes: train.class_names.clone(),
            image_shape: [train.height, train.width, train.channels],
            normalization: normalization.to_json(),
            skipped: provenance.skipped.clone(),
            cache_hits: provenance.cache_hits.clone(),
            files,
        })
    }
}

fn percent(value: Option<f64>) -> String {
    value.map_or("—".into(), |v| format!("{:.2}%", 100.0 * v))
}

impl Report {
    pub fn write(&self, run_dir: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self)?;
        kiln_tflite::write_atomically(&run_dir.join("report.json"), json.as_bytes())
            .context("cannot write report.json")?;
        kiln_tflite::write_atomically(&run_dir.join("report.md"), self.markdown().as_bytes())
            .context("cannot write report.md")?;
        for (file, svg) in self.plots() {
            kiln_tflite::write_atomically(&run_dir.join(file), svg.as_bytes())
                .with_context(|| format!("cannot write {file}"))?;
        }
        Ok(())
    }

    /// `training.svg` (loss and accuracies per epoch) and `variants.svg` (accuracy against
    /// gzip size, latency in the labels).
    fn plots(&self) -> Vec<(&'static str, String)> {
        use crate::plots::{Series, line_chart, scatter};
        let mut plots = Vec::new();
        if let Some(training) = &self.training {
            plots.push(("training.svg", training_chart(&training.epochs)));
        }
        let points: Vec<(f64, f64, String)> = self
            .variants
            .iter()
            .filter_map(|v| {
                v.accuracy.map(|a| {
                    let latency = v
                        .latency_ms_p50
                        .map_or(String::new(), |l| format!(", {l:.2} ms"));
                    (v.gzip_bytes as f64, a, format!("{}{latency}", v.name))
                })
            })
            .collect();
        let variants = scatter(
            "Variants: accuracy vs gzip size (p50 latency)",
            "gzip bytes",
            "test accuracy",
            &points,
        );
        plots.push(("variants.svg", variants));
        if let Some(p) = &self.pruning {
            let points: Vec<(f64, f64)> = p
                .epochs
                .iter()
                .filter_map(|e| e.target_sparsity.map(|s| (e.epoch as f64, s)))
                .collect();
            let accuracy: Vec<(f64, f64)> = p
                .epochs
                .iter()
                .map(|e| (e.epoch as f64, e.accuracy))
                .collect();
            plots.push((
                "sparsity.svg",
                line_chart(
                    "Pruning: target sparsity and train accuracy per fine-tuning epoch",
                    "epoch",
                    "fraction",
                    &[
                        Series {
                            name: "target sparsity",
                            points,
                        },
                        Series {
                            name: "train accuracy",
                            points: accuracy,
                        },
                    ],
                ),
            ));
        }
        plots
    }

    pub fn markdown(&self) -> String {
        let mut md = format!("# Kiln run `{}`\n\n", self.name);
        md += &format!(
            "Seed {}, backend `{}`, stages {}. Config sha256 `{}`. Total {:.1} s.\n\n",
            self.seed,
            self.backend,
            self.stages.join(" → "),
            self.config_sha256,
            self.total_seconds
        );
        let d = &self.dataset;
        md += &format!(
            "## Data\n\nSource: {}{}. {} train / {} validation / {} test images of {}×{}×{}, {} classes; skipped (undecodable): {}.\n\n",
            d.source,
            d.hub.as_ref().map_or(String::new(), |h| format!(
                " `{}`@{} (commit {})",
                h.repo, h.revision, h.commit
            )),
            d.train_rows,
            d.validation_rows,
            d.test_rows,
            d.image_shape[0],
            d.image_shape[1],
            d.image_shape[2],
            d.classes.len(),
            if d.skipped.is_empty() {
                "none".to_owned()
            } else {
                d.skipped
                    .iter()
                    .map(|(split, n)| format!("{n} in {split}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        if let Some(training) = &self.training {
            md += &training_markdown(training);
        }
        md += "## Variants\n\nAccuracy and latency are kiln-runtime's on the test split; parity compares each \
               file's (dequantized) logits with the Burn model's.\n\n";
        md += "| variant | file | bytes | gzip bytes | size vs fp32 | accuracy | Δ accuracy | latency p50 | speedup vs fp32 | max abs diff vs Burn | argmax agreement | sparsity |\n";
        md += "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
        for v in &self.variants {
            md += &format!(
                "| {} | `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                v.name,
                v.file,
                v.bytes,
                v.gzip_bytes,
                v.size_vs_fp32
                    .map_or("—".into(), |r| format!("{:.1}%", 100.0 * r)),
                percent(v.accuracy),
                v.accuracy_delta
                    .map_or("—".into(), |d| format!("{:+.2} pt", 100.0 * d)),
                v.latency_ms_p50
                    .map_or("—".into(), |l| format!("{l:.3} ms")),
                v.speedup_vs_fp32.map_or("—".into(), |s| format!("{s:.2}×")),
                v.parity
                    .as_ref()
                    .map_or("—".into(), |p| format!("{:.2e}", p.max_abs_diff)),
                percent(v.parity.as_ref().map(|p| p.argmax_agreement)),
                percent(v.sparsity),
            );
        }
        if let Some(p) = &self.pruning {
            md += &format!(
                "\n## Pruning\n\nMagnitude pruning to {:.0}% ({:?} schedule, power {}, {:?}), {} fine-tuning epochs at learning rate {}: {:.2}% of the pruned layers' weights are zero; the pruned Burn model scores {:.2}%.\n\n| layer | weights | zeros | sparsity |\n|---|---:|---:|---:|\n",
                100.0 * p.settings.final_sparsity,
                p.settings.schedule,
                p.settings.power,
                p.settings.scope,
                p.settings.epochs,
                p.settings.learning_rate,
                100.0 * p.sparsity,
                100.0 * p.burn_test_accuracy
            );
            for l in &p.layers {
                md += &format!(
                    "| `{}` | {} | {} | {:.2}% |\n",
                    l.layer,
                    l.weights,
                    l.zeros,
                    100.0 * l.sparsity
                );
            }
            md += "\n![sparsity schedule](sparsity.svg)\n";
        }
        if let Some(q) = &self.qat {
            md += &qat_markdown(q);
        }
        if let Some(d) = &self.distillation {
            md += &distillation_markdown(d);
        }
        md += "\n![accuracy vs gzip size](variants.svg)\n";
        md
    }
}

/// Loss and accuracies per epoch.
fn training_chart(epochs: &[EpochStats]) -> String {
    use crate::plots::{Series, line_chart};
    let per_epoch = |f: &dyn Fn(&EpochStats) -> Option<f64>| -> Vec<(f64, f64)> {
        epochs
            .iter()
            .filter_map(|e| f(e).map(|v| (e.epoch as f64, v)))
            .collect()
    };
    let mut series = vec![
        Series {
            name: "train loss",
            points: per_epoch(&|e| Some(e.loss)),
        },
        Series {
            name: "train accuracy",
            points: per_epoch(&|e| Some(e.accuracy)),
        },
    ];
    let validation = per_epoch(&|e| e.val_accuracy);
    if !validation.is_empty() {
        series.push(Series {
            name: "validation accuracy",
            points: validation,
        });
    }
    line_chart("Training", "epoch", "loss / accuracy", &series)
}

fn training_markdown(training: &TrainingReport) -> String {
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
    md += "\n![training curves](training.svg)\n";
    md += &format!(
        "\nTrained in {:.1} s; the Burn model scores {:.2}% on the test split.\n\n",
        training.seconds,
        100.0 * training.burn_test_accuracy
    );
    md
}

fn qat_markdown(q: &QatReport) -> String {
    let s = &q.settings;
    let mut md = format!(
        "\n## Quantization-aware training\n\nFrom the `{}` model: {} epochs at learning rate {} (cosine), fake-quant from epoch {}{}{}, range EMA decay {}. \
         The fake-quant Burn model scores {:.2}%; its int8 file takes these activation ranges:\n\n| tensor | min | max |\n|---|---:|---:|\n",
        q.from,
        s.epochs,
        s.learning_rate,
        s.quant_delay_epochs,
        s.freeze_observers_epoch
            .map_or(String::new(), |e| format!(", ranges frozen from epoch {e}")),
        s.freeze_batch_norm_epoch.map_or(String::new(), |e| format!(
            ", BatchNorm frozen from epoch {e}"
        )),
        s.ema_decay,
        100.0 * q.burn_fake_quant_test_accuracy
    );
    for r in &q.ranges {
        md += &format!("| `{}` | {:.4} | {:.4} |\n", r.tensor, r.min, r.max);
    }
    md
}

fn distillation_markdown(d: &crate::distill_stage::DistillationReport) -> String {
    let s = &d.settings;
    let pm =
        |m: crate::distill_stage::MeanStd| format!("{:.2} ± {:.2}%", 100.0 * m.mean, 100.0 * m.std);
    let mut md = format!(
        "\n## Distillation\n\nTeacher: {} ({} parameters, {:.2}% test accuracy). Student: {:?} ({} parameters), T = {}, α = {}. \
         Each seed trains the student twice from the same initial weights: on labels alone, and with the teacher.\n\n\
         | seed | student alone | distilled student | gain |\n|---:|---:|---:|---:|\n",
        d.teacher,
        d.teacher_parameters,
        100.0 * d.teacher_test_accuracy,
        s.student.architecture,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn variant(name: &str, bytes: u64, accuracy: f64, latency: f64) -> VariantReport {
        VariantReport {
            name: name.into(),
            file: format!("model_{name}.tflite"),
            bytes,
            gzip_bytes: bytes,
            sha256: String::new(),
            accuracy: Some(accuracy),
            latency_ms_p50: Some(latency),
            parity: None,
            size_vs_fp32: None,
            accuracy_delta: None,
            speedup_vs_fp32: None,
            sparsity: None,
            stages: Vec::new(),
        }
    }

    #[test]
    fn variants_are_compared_with_fp32() {
        let mut variants = vec![
            variant("fp32", 1000, 0.98, 0.5),
            variant("int8", 250, 0.975, 0.25),
        ];
        compare_with_fp32(&mut variants);
        let int8 = &variants[1];
        assert_eq!(int8.size_vs_fp32, Some(0.25));
        assert!((int8.accuracy_delta.unwrap() + 0.005).abs() < 1e-12);
        assert_eq!(int8.speedup_vs_fp32, Some(2.0));
        assert_eq!(variants[0].size_vs_fp32, Some(1.0));

        let mut alone = vec![variant("int8", 250, 0.9, 0.2)];
        compare_with_fp32(&mut alone);
        assert_eq!(alone[0].size_vs_fp32, None);
    }
}
