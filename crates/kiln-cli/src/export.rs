//! The export stage: the lowered float32 model and the variants derived from it (kiln-export's
//! transforms), written side by side in the run directory as `model_<variant>.tflite`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kiln_data::ImageDataset;
use kiln_export::{Calibrator, Int8Options, IoType, ModelCard};
use kiln_tflite::Model;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use tracing::info;

use crate::config::{ExportConfig, Int8Io, Variant};

/// A written variant.
pub struct Exported {
    pub variant: Variant,
    pub file: String,
    pub path: PathBuf,
}

/// Writes every configured variant of `fp32` into `run_dir`, in the configured order.
/// `train` supplies the int8 calibration images (a sample seeded by `seed`); every file carries
/// `card` as metadata (labels, normalisation, description, minimum runtime version).
pub fn export_variants(
    fp32: &Model,
    card: &ModelCard,
    run_dir: &Path,
    config: &ExportConfig,
    train: &ImageDataset,
    seed: u64,
) -> Result<Vec<Exported>> {
    let mut written = Vec::with_capacity(config.variants.len());
    for &variant in &config.variants {
        written.push(export_one(
            fp32,
            card,
            variant,
            &variant.file_name(),
            run_dir,
            config,
            train,
            seed,
        )?);
    }
    Ok(written)
}

/// Derives `variant` from `fp32` and writes it, with `card`'s metadata, as `run_dir/file`.
#[allow(clippy::too_many_arguments)]
pub fn export_one(
    fp32: &Model,
    card: &ModelCard,
    variant: Variant,
    file: &str,
    run_dir: &Path,
    config: &ExportConfig,
    train: &ImageDataset,
    seed: u64,
) -> Result<Exported> {
    let model = match variant {
        Variant::Fp32 => fp32.clone(),
        Variant::Fp16 => kiln_export::to_float16(fp32).context("float16 export")?,
        Variant::Dynamic => kiln_export::to_dynamic_range(fp32).context("dynamic-range export")?,
        Variant::Int8 => int8(fp32, config, train, seed).context("int8 export")?,
    };
    let path = run_dir.join(file);
    let bytes = kiln_export::to_bytes_with_metadata(&model, card)
        .with_context(|| format!("{} metadata", variant.name()))?;
    kiln_tflite::write_atomically(&path, &bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    info!("exported {}", path.display());
    Ok(Exported {
        variant,
        file: file.to_owned(),
        path,
    })
}

/// Calibrates on `calibration_samples` training images, then quantizes to full int8.
fn int8(fp32: &Model, config: &ExportConfig, train: &ImageDataset, seed: u64) -> Result<Model> {
    let mut calibrator = Calibrator::new(fp32)?;
    let rows = calibration_rows(train.len(), config.calibration_samples, seed);
    for &row in &rows {
        calibrator
            .observe(&[train.image(row)])
            .with_context(|| format!("calibrating on training image {row}"))?;
    }
    let ranges = calibrator.finish()?;
    info!("int8: calibrated on {} training images", ranges.samples());
    let options = Int8Options {
        io: match config.int8_io {
            Int8Io::Int8 => IoType::Int8,
            Int8Io::Uint8 => IoType::UInt8,
            Int8Io::Float32 => IoType::Float32,
        },
        ..Int8Options::default()
    };
    Ok(kiln_export::quantize_int8(fp32, &ranges, &options)?)
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
