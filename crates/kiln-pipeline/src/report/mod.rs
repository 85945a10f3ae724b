//! The run report: `report.json` (machine-readable; later stages add sections to the same
//! schema) and `report.md` (what a person reads), with SVG plots. The report knows the run's
//! data and exported variants; every stage adds its own section (`training`, `pruning`, …)
//! through [`ReportSection`], so a new stage needs no change here.

pub mod plots;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::commands::bench::milliseconds;
use crate::data::Splits;
use crate::digest::{FileDigest, gzip_len, sha256_hex};

/// A stage's part of the report.
pub struct ReportSection {
    /// Its key in `report.json` (`training`, `pruning`, …).
    pub key: &'static str,
    /// Its value in `report.json`.
    pub json: Box<dyn SectionJson>,
    /// Its part of `report.md`, starting with a `## ` heading.
    pub markdown: String,
    /// Plots it adds to the run directory (each as SVG and PNG).
    pub plots: Vec<plots::Plot>,
}

impl ReportSection {
    pub fn new(key: &'static str, markdown: String, json: impl SectionJson + 'static) -> Self {
        Self {
            key,
            json: Box::new(json),
            markdown,
            plots: Vec::new(),
        }
    }
}

type PrettyMap<'a> =
    serde_json::ser::Compound<'a, &'a mut Vec<u8>, serde_json::ser::PrettyFormatter<'a>>;

/// A section's value, written into `report.json` as it serializes itself (an object-safe
/// stand-in for `Serialize`, so sections of any type sit in one list and floats keep their
/// own precision).
pub trait SectionJson {
    fn write_entry(&self, key: &str, map: &mut PrettyMap<'_>) -> serde_json::Result<()>;
}

impl<T: Serialize> SectionJson for T {
    fn write_entry(&self, key: &str, map: &mut PrettyMap<'_>) -> serde_json::Result<()> {
        map.serialize_entry(key, self)
    }
}

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
    pub variants: Vec<VariantReport>,
    /// What measured the variants' latency: kiln-runtime, its threads and microkernels.
    pub latency_runtime: String,
    /// The stages' sections, in recipe order.
    pub sections: Vec<ReportSection>,
    pub total_seconds: f64,
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

#[derive(Clone, Serialize)]
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
    /// The pruning pattern (`1x16 blocks`, `2:4`, `unstructured`; pruned variants).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Shared weight values per layer (clustered variants).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clusters: Option<usize>,
    /// With weights stored sparse: the file's size with every weight dense.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dense_bytes: Option<u64>,
    /// With weights stored sparse: which, and how (`conv2/filter: CSR + DENSIFY, …`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sparse_storage: Option<String>,
    /// The stages that made this file.
    pub stages: Vec<String>,
}

#[derive(Clone, Serialize)]
pub struct Parity {
    /// What the file's outputs were compared with.
    pub reference: String,
    /// Largest |reference − output| over the test set's logits (quantized outputs
    /// dequantized first).
    pub max_abs_diff: f64,
    pub argmax_agreement: f64,
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
            pattern: None,
            clusters: None,
            dense_bytes: None,
            sparse_storage: None,
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
        let files = provenance.file_digests()?;
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

/// A variant as the accuracy-against-size plot shows it.
pub struct VariantPoint {
    pub name: String,
    pub bytes: u64,
    pub gzip_bytes: u64,
    pub accuracy: f64,
    pub latency_ms_p50: Option<f64>,
    /// Its run, as an index into the plot's groups.
    pub group: usize,
}

impl VariantPoint {
    /// `variant`'s point (None until its accuracy is measured).
    pub fn of(variant: &VariantReport, group: usize) -> Option<Self> {
        Some(Self {
            name: variant.name.clone(),
            bytes: variant.bytes,
            gzip_bytes: variant.gzip_bytes,
            accuracy: variant.accuracy?,
            latency_ms_p50: variant.latency_ms_p50,
            group,
        })
    }
}

/// `<stem>.svg`/`.png`: accuracy against raw and gzip size, the Pareto frontier marked; with
/// more than one group (runs), each point is colored by its group and the legend names them.
/// No points: no plot.
pub fn variants_plot(
    stem: &str,
    points: &[VariantPoint],
    groups: &[String],
) -> Result<Option<plots::Plot>> {
    if points.is_empty() {
        return Ok(None);
    }
    let panel = |title: &str, x_label: &str, size: fn(&VariantPoint) -> u64| plots::FrontierPanel {
        title: title.into(),
        x_label: x_label.into(),
        points: points
            .iter()
            .map(|p| plots::LabeledPoint {
                x: size(p) as f64,
                y: p.accuracy,
                label: match p.latency_ms_p50 {
                    Some(ms) => format!("{} ({} ms)", p.name, milliseconds(ms)),
                    None => p.name.clone(),
                },
                group: p.group,
            })
            .collect(),
    };
    let chart = plots::FrontierChart {
        panels: vec![
            panel(
                "Accuracy vs file size (p50 latency in kiln-runtime)",
                "file size",
                |p| p.bytes,
            ),
            panel(
                "Accuracy vs gzip size (what a download costs; pruning shows here)",
                "gzip size",
                |p| p.gzip_bytes,
            ),
        ],
        groups: groups.to_vec(),
    };
    plots::render(stem, &chart).map(Some)
}

fn percent(value: Option<f64>) -> String {
    value.map_or("—".into(), |v| format!("{:.2}%", 100.0 * v))
}

impl Report {
    pub fn write(&self, run_dir: &Path) -> Result<()> {
        let json = self.json().context("cannot serialise report.json")?;
        kiln_tflite::write_atomically(&run_dir.join("report.json"), &json)
            .context("cannot write report.json")?;
        kiln_tflite::write_atomically(&run_dir.join("report.md"), self.markdown().as_bytes())
            .context("cannot write report.md")?;
        for plot in self.plots()? {
            plot.write(run_dir)?;
        }
        Ok(())
    }

    /// `report.json`, pretty-printed: the run's fields, then each section under its key.
    pub fn json(&self) -> serde_json::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        let mut serializer = serde_json::Serializer::pretty(&mut bytes);
        let mut map = (&mut serializer).serialize_map(None)?;
        map.serialize_entry("name", &self.name)?;
        map.serialize_entry("config_file", &self.config_file)?;
        map.serialize_entry("config_sha256", &self.config_sha256)?;
        map.serialize_entry("seed", &self.seed)?;
        map.serialize_entry("backend", &self.backend)?;
        map.serialize_entry("stages", &self.stages)?;
        map.serialize_entry("dataset", &self.dataset)?;
        map.serialize_entry("variants", &self.variants)?;
        map.serialize_entry("latency_runtime", &self.latency_runtime)?;
        for section in &self.sections {
            section.json.write_entry(section.key, &mut map)?;
        }
        map.serialize_entry("total_seconds", &self.total_seconds)?;
        map.end()?;
        Ok(bytes)
    }

    /// `variants.svg`/`.png` (accuracy against raw and gzip size, the Pareto frontier marked)
    /// and the sections' plots.
    fn plots(&self) -> Result<Vec<plots::Plot>> {
        let mut all = Vec::new();
        let points: Vec<VariantPoint> = self
            .variants
            .iter()
            .filter_map(|v| VariantPoint::of(v, 0))
            .collect();
        if let Some(variants) = variants_plot("variants", &points, &[])? {
            all.push(variants);
        }
        for section in &self.sections {
            all.extend(section.plots.iter().cloned());
        }
        Ok(all)
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
        md += &format!(
            "## Variants\n\nAccuracy and latency are kiln-runtime's on the test split (latency: {}); parity \
             compares each file's (dequantized) logits with the Burn model's.\n\n",
            self.latency_runtime
        );
        md += "| variant | file | bytes | dense bytes | gzip bytes | size vs fp32 | accuracy | Δ accuracy | latency p50 | speedup vs fp32 | max abs diff vs Burn | argmax agreement | sparsity | clusters |\n";
        md += "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
        for v in &self.variants {
            md += &format!(
                "| {} | `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                v.name,
                v.file,
                v.bytes,
                // The same file with every weight dense, when some are stored sparse.
                v.dense_bytes.map_or("—".into(), |d| d.to_string()),
                v.gzip_bytes,
                v.size_vs_fp32
                    .map_or("—".into(), |r| format!("{:.1}%", 100.0 * r)),
                percent(v.accuracy),
                v.accuracy_delta
                    .map_or("—".into(), |d| format!("{:+.2} pt", 100.0 * d)),
                v.latency_ms_p50
                    .map_or("—".into(), |l| format!("{} ms", milliseconds(l))),
                v.speedup_vs_fp32.map_or("—".into(), |s| format!("{s:.2}×")),
                v.parity
                    .as_ref()
                    .map_or("—".into(), |p| format!("{:.2e}", p.max_abs_diff)),
                percent(v.parity.as_ref().map(|p| p.argmax_agreement)),
                match (&v.pattern, v.sparsity) {
                    (Some(pattern), Some(_)) => format!("{} ({pattern})", percent(v.sparsity)),
                    _ => percent(v.sparsity),
                },
                v.clusters.map_or("—".into(), |c| c.to_string()),
            );
        }
        let sparse: Vec<String> = self
            .variants
            .iter()
            .filter_map(|v| {
                v.sparse_storage
                    .as_ref()
                    .map(|s| format!("- `{}`: {s}", v.file))
            })
            .collect();
        if !sparse.is_empty() {
            md += "\nWeights stored sparse (TFLite `SparsityParameters`; `[export] sparse = false` keeps \
                   them dense): blocks are read by FULLY_CONNECTED itself (LiteRT's sparse kernels), CSR \
                   is expanded once by DENSIFY.\n\n";
            md += &sparse.join("\n");
            md += "\n";
        }
        if self.variants.iter().any(|v| v.accuracy.is_some()) {
            md += "\n![accuracy against size, Pareto frontier dashed](variants.svg)\n";
        }
        for section in &self.sections {
            md += "\n";
            md += &section.markdown;
        }
        md
    }
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
            pattern: None,
            clusters: None,
            dense_bytes: None,
            sparse_storage: None,
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
