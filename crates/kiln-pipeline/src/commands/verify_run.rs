//! `pipeline verify RUN_DIR [--per-layer]`: first checks every artifact of a run directory
//! against its `manifest.json` (and fails naming each file that changed, went missing or was
//! added), then reopens the run (its effective config and test split) and prints, for each
//! exported variant, the error of its outputs against the fp32 file — or, with `--per-layer`, of every tensor (see `per_layer`), so a user can see
//! which layer loses accuracy.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
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
    let manifest = crate::manifest::check(run_dir)?;
    if !manifest.is_intact() {
        bail!(
            "{} does not match its manifest.json (the files were changed after the run; rerun \
             it to get files the manifest vouches for):\n  {}",
            run_dir.display(),
            manifest.problems().join("\n  ")
        );
    }
    if !as_json {
        println!(
            "manifest.json: all {} artifacts match their sha256",
            manifest.matching
        );
    }
    let loaded = config::load_run(run_dir)?;
    // Any exported variant by name (`int8`, `qat_int8`, `pruned80_int8`, …); by default the
    // configured dense ones.
    let chosen: Vec<String> = if variants.is_empty() {
        let configured = &loaded.config.export.variants;
        configured
            .iter()
            .filter(|&&v| v != Variant::Fp32)
            .map(|v| v.name().to_owned())
            .collect()
    } else {
        variants.to_vec()
    };
    for name in &chosen {
        let path = run_dir.join(format!("model_{name}.tflite"));
        ensure!(
            path.is_file(),
            "no variant '{name}' in {} (no {}); exported: {}",
            run_dir.display(),
            path.display(),
            exported_variants(run_dir).join(", ")
        );
    }
    ensure!(
        !chosen.is_empty(),
        "no variant to compare with fp32: name one with --variant"
    );
    let test = crate::data::load_data(&loaded)?.test;
    let images: Vec<Vec<f32>> = (0..test.len().min(images)).map(|r| test.image(r)).collect();
    let rows: Vec<&[f32]> = images.iter().map(Vec::as_slice).collect();
    let fp32 = run_dir.join(Variant::Fp32.file_name());
    let mut reports = Vec::new();
    for variant in chosen {
        let file = format!("model_{variant}.tflite");
        let path = run_dir.join(&file);
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
                file,
                Variant::Fp32.file_name(),
                rows.len(),
                per_layer::table(&tensors)
            );
        }
        reports.push(VariantLayers {
            variant,
            images: rows.len(),
            tensors,
        });
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(())
}

/// The variant names of the `model_<name>.tflite` files in `run_dir`, sorted.
fn exported_variants(run_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(run_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            Some(
                name.strip_prefix("model_")?
                    .strip_suffix(".tflite")?
                    .to_owned(),
            )
        })
        .collect();
    names.sort();
    names
}
