//! `pipeline verify RUN_DIR [--per-layer]`: reopens a run directory (its effective config and
//! test split) and prints, for each exported variant, the error of its outputs against the
//! fp32 file — or, with `--per-layer`, of every tensor (see `per_layer`), so a user can see
//! which layer loses accuracy.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use serde::Serialize;

use crate::config::{self, Variant};
use crate::per_layer::{self, LayerError};

#[derive(Serialize)]
struct VariantLayers {
    variant: String,
    images: usize,
    tensors: Vec<LayerError>,
}

/// `variants`: names to compare with fp32 (empty: every configured variant but fp32);
/// `images`: the first N test images.
pub fn run(
    run_dir: &Path,
    per_layer: bool,
    variants: &[String],
    images: usize,
    as_json: bool,
) -> Result<()> {
    ensure!(images > 0, "--images must be at least 1");
    let loaded = config::load_run(run_dir)?;
    let chosen: Vec<Variant> = if variants.is_empty() {
        let configured = &loaded.config.export.variants;
        configured
            .iter()
            .copied()
            .filter(|&v| v != Variant::Fp32)
            .collect()
    } else {
        variants
            .iter()
            .map(|name| {
                Variant::from_name(name).with_context(|| {
                    format!("unknown variant '{name}' (fp32, fp16, dynamic or int8)")
                })
            })
            .collect::<Result<_>>()?
    };
    ensure!(
        !chosen.is_empty(),
        "no variant to compare with fp32: name one with --variant"
    );
    let test = crate::data::load_data(&loaded)?.test;
    let rows: Vec<&[f32]> = (0..test.len().min(images)).map(|r| test.image(r)).collect();
    let fp32 = run_dir.join(Variant::Fp32.file_name());
    let mut reports = Vec::new();
    for variant in chosen {
        let path = run_dir.join(variant.file_name());
        let mut float = crate::model_file::interpreter(&fp32)?;
        let mut quantized = crate::model_file::interpreter(&path)?;
        let output_names: Vec<String> = (0..float.output_count())
            .map(|i| float.output_info(i).map(|info| info.name.clone()))
            .collect::<Result<_, _>>()?;
        let mut tensors = per_layer::compare(&mut float, &mut quantized, &rows)
            .with_context(|| format!("comparing {} with {}", path.display(), fp32.display()))?;
        if !per_layer {
            tensors.retain(|t| output_names.contains(&t.tensor));
        }
        if !as_json {
            println!(
                "{} vs {} on {} test images (kiln-runtime):\n{}",
                variant.file_name(),
                Variant::Fp32.file_name(),
                rows.len(),
                per_layer::table(&tensors)
            );
        }
        reports.push(VariantLayers {
            variant: variant.name().into(),
            images: rows.len(),
            tensors,
        });
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(())
}
