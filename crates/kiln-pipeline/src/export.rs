//! The export stage: the lowered float32 model and the variants derived from it (kiln-export's
//! transforms), written side by side in the run directory as `model_<variant>.tflite`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kiln_data::ImageDataset;
use kiln_export::{Calibrator, Int8Options, ModelCard, SparseWeight, TensorRanges};
use kiln_tflite::Model;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use tracing::info;

use crate::config::{ExportConfig, Variant};

/// A written variant.
pub struct Exported {
    pub variant: Variant,
    /// The variant's name in the report (`int8`, `pruned80_int8`, `qat_int8`, …).
    pub name: String,
    pub file: String,
    pub path: PathBuf,
    /// The weights stored sparse (empty: every weight dense).
    pub sparse: Vec<SparseWeight>,
    /// With sparse weights, the file with every weight dense (its size goes in the report;
    /// TensorFlow Lite Micro sources are made from it).
    pub dense: Option<Vec<u8>>,
}

/// Where a full-int8 export gets its activation ranges.
pub enum Int8Ranges<'a> {
    /// Calibrate: run the fp32 model on a seeded sample of `calibration_samples` training
    /// images (TFLite's post-training quantization).
    Calibrate { train: &'a ImageDataset, seed: u64 },
    /// Ranges learned in quantization-aware training, by tensor index.
    Given(TensorRanges),
}

/// How a model's files are written: its metadata, where, the `[export]` settings, and where
/// the int8 variant's ranges come from.
pub struct ExportPlan<'a> {
    /// Every file carries it as metadata (labels, normalisation, description, minimum
    /// runtime version).
    pub card: &'a ModelCard,
    pub run_dir: &'a Path,
    pub config: &'a ExportConfig,
    pub int8: &'a Int8Ranges<'a>,
}

/// Writes `variants` of `fp32` as `model_<prefix>_<variant>.tflite` (no prefix:
/// `model_<variant>.tflite`), named `<prefix>_<variant>`.
pub fn export_variants(
    fp32: &Model,
    prefix: &str,
    variants: &[Variant],
    plan: &ExportPlan<'_>,
) -> Result<Vec<Exported>> {
    variants
        .iter()
        .map(|&variant| {
            let name = if prefix.is_empty() {
                variant.name().to_owned()
            } else {
                format!("{prefix}_{}", variant.name())
            };
            export_one(fp32, variant, &name, plan)
        })
        .collect()
}

/// Derives `variant` from `fp32` and writes it as `run_dir/model_<name>.tflite`.
pub fn export_one(
    fp32: &Model,
    variant: Variant,
    name: &str,
    plan: &ExportPlan<'_>,
) -> Result<Exported> {
    let ExportPlan {
        card,
        run_dir,
        config,
        int8: int8_ranges,
    } = plan;
    let model = match variant {
        Variant::Fp32 => fp32.clone(),
        Variant::Fp16 => kiln_export::to_float16(fp32).context("float16 export")?,
        Variant::Dynamic => kiln_export::to_dynamic_range(fp32).context("dynamic-range export")?,
        Variant::Int8 => int8(fp32, config, int8_ranges).context("int8 export")?,
    };
    // Pruned weights stored sparse where that shrinks the file: float32 and int8 (the
    // float16 file keeps half-precision weights behind DEQUANTIZE and the dynamic-range one
    // hybrid kernels, for which LiteRT checks no sparse format).
    let sparse_allowed = config.sparse && matches!(variant, Variant::Fp32 | Variant::Int8);
    let (model, sparse, dense) = if sparse_allowed {
        let (stored, weights) =
            kiln_export::to_sparse(&model).with_context(|| format!("{name}: sparse storage"))?;
        if weights.is_empty() {
            (model, weights, None)
        } else {
            let dense = kiln_export::to_bytes_with_metadata(&model, card)
                .with_context(|| format!("{name} metadata"))?;
            (stored, weights, Some(dense))
        }
    } else {
        (model, Vec::new(), None)
    };
    let file = format!("model_{name}.tflite");
    let path = run_dir.join(&file);
    let bytes = kiln_export::to_bytes_with_metadata(&model, card)
        .with_context(|| format!("{name} metadata"))?;
    if let Some(dense) = &dense {
        info!(
            "{name}: {} weights stored sparse ({}): {} bytes instead of {}",
            sparse.len(),
            describe_sparse(&sparse),
            bytes.len(),
            dense.len()
        );
    }
    kiln_tflite::write_atomically(&path, &bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    info!("exported {}", path.display());
    Ok(Exported {
        variant,
        name: name.to_owned(),
        file,
        path,
        sparse,
        dense,
    })
}

/// "conv2/filter: CSR + DENSIFY, dense1/weights: 1x16 blocks" — how each sparse weight is
/// stored.
pub fn describe_sparse(weights: &[SparseWeight]) -> String {
    weights
        .iter()
        .map(|w| format!("{}: {}", w.name, w.layout))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Quantizes to full int8 with calibrated or QAT ranges.
fn int8(fp32: &Model, config: &ExportConfig, source: &Int8Ranges) -> Result<Model> {
    let calibrated;
    let ranges = match source {
        Int8Ranges::Given(ranges) => ranges,
        Int8Ranges::Calibrate { train, seed } => {
            let mut calibrator = Calibrator::new(fp32)?;
            let rows = calibration_rows(train.len(), config.calibration_samples, *seed);
            for &row in &rows {
                calibrator
                    .observe(&[&train.image(row)])
                    .with_context(|| format!("calibrating on training image {row}"))?;
            }
            calibrated = calibrator.finish()?;
            info!(
                "int8: calibrated on {} training images",
                calibrated.samples()
            );
            &calibrated
        }
    };
    let options = Int8Options {
        io: config.int8_io,
        ..Int8Options::default()
    };
    Ok(kiln_export::quantize_int8(fp32, ranges, &options)?)
}

/// A seeded uniform sample of `count` row indices (all rows when there are fewer): datasets
/// stored sorted by label must not calibrate on one class.
fn calibration_rows(rows: usize, count: usize, seed: u64) -> Vec<usize> {
    let mut indices: Vec<usize> = (0..rows).collect();
    indices.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed ^ 0xca1b));
    indices.truncate(count);
    indices.sort_unstable();
    indices
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_rows_are_a_seeded_sample() {
        let rows = calibration_rows(1000, 100, 42);
        assert_eq!(rows.len(), 100);
        assert!(rows.windows(2).all(|w| w[0] < w[1]));
        assert!(
            *rows.last().unwrap() > 500,
            "spread over the set, not its head"
        );
        assert_eq!(rows, calibration_rows(1000, 100, 42));
        assert_ne!(rows, calibration_rows(1000, 100, 43));
        assert_eq!(calibration_rows(5, 100, 1), vec![0, 1, 2, 3, 4]);
    }
}
