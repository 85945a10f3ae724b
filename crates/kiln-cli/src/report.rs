//! The run report: `report.json` (machine-readable; later stages add variants and fields to
//! the same schema) and `report.md` (the table a person reads).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use kiln_data::ImageDataset;
use kiln_train::EpochStats;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::LoadedConfig;

#[derive(Serialize)]
pub struct Report {
    pub name: String,
    pub config_sha256: String,
    pub seed: u64,
    pub backend: String,
    pub stages: Vec<String>,
    pub dataset: DatasetReport,
    pub training: TrainingReport,
    pub variants: Vec<VariantReport>,
    pub total_seconds: f64,
}

#[derive(Serialize)]
pub struct DatasetReport {
    pub train_rows: usize,
    pub test_rows: usize,
    pub classes: Vec<String>,
    /// [height, width, channels] fed to the model.
    pub image_shape: [usize; 3],
    /// Rows whose image could not be decoded, per split.
    pub skipped: SkippedReport,
    pub files: Vec<FileDigest>,
}

#[derive(Serialize)]
pub struct SkippedReport {
    pub train: usize,
    pub test: usize,
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
}

#[derive(Serialize)]
pub struct Parity {
    /// What the file's outputs were compared with.
    pub reference: String,
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
        })
    }
}

impl DatasetReport {
    pub fn new(loaded: &LoadedConfig, train: &ImageDataset, test: &ImageDataset) -> Result<Self> {
        let data = &loaded.config.data;
        let files = data
            .train
            .iter()
            .chain(&data.test)
            .map(|relative| {
                let path = loaded.resolve(relative);
                let bytes = std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                Ok(FileDigest {
                    path: relative.display().to_string(),
                    bytes: bytes.len() as u64,
                    sha256: sha256_hex(&bytes),
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            train_rows: train.len(),
            test_rows: test.len(),
            classes: train.class_names.clone(),
            image_shape: [train.height, train.width, train.channels],
            skipped: SkippedReport {
                train: train.skipped,
                test: test.skipped,
            },
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
        Ok(())
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
            "## Data\n\n{} train / {} test images of {}×{}×{}, {} classes; skipped (undecodable): {} train, {} test.\n\n",
            d.train_rows,
            d.test_rows,
            d.image_shape[0],
            d.image_shape[1],
            d.image_shape[2],
            d.classes.len(),
            d.skipped.train,
            d.skipped.test
        );
        md += "## Training\n\n| epoch | loss | train accuracy | learning rate | seconds |\n|---:|---:|---:|---:|---:|\n";
        for e in &self.training.epochs {
            md += &format!(
                "| {} | {:.4} | {:.2}% | {:.2e} | {:.1} |\n",
                e.epoch,
                e.loss,
                100.0 * e.accuracy,
                e.learning_rate,
                e.seconds
            );
        }
        md += &format!(
            "\nTrained in {:.1} s; the Burn model scores {:.2}% on the test split.\n\n",
            self.training.seconds,
            100.0 * self.training.burn_test_accuracy
        );
        md += "## Variants\n\n| variant | file | bytes | gzip bytes | accuracy (kiln-runtime) | latency p50 | max abs diff vs Burn | argmax agreement |\n";
        md += "|---|---|---:|---:|---:|---:|---:|---:|\n";
        for v in &self.variants {
            md += &format!(
                "| {} | `{}` | {} | {} | {} | {} | {} | {} |\n",
                v.name,
                v.file,
                v.bytes,
                v.gzip_bytes,
                percent(v.accuracy),
                v.latency_ms_p50
                    .map_or("—".into(), |l| format!("{l:.3} ms")),
                v.parity
                    .as_ref()
                    .map_or("—".into(), |p| format!("{:.2e}", p.max_abs_diff)),
                percent(v.parity.as_ref().map(|p| p.argmax_agreement)),
            );
        }
        md
    }
}
