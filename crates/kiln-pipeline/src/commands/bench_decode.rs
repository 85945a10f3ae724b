//! `pipeline bench-decode`: decode + resize throughput (images/s) at each requested size, on
//! one thread and on all cores, for synthetic photos or the images of a parquet file or an
//! image folder — the number that says whether the data path can keep training fed.

use std::path::Path;

use anyhow::{Context, Result, bail};
use kiln_data::{
    ColorMode, DecodeSpec, ResizeMode, decode_throughput, list_image_folder, synthetic_photo_jpeg,
};
use serde_json::json;

pub struct DecodeBench<'a> {
    /// Output sides to fit to (square).
    pub sizes: &'a [usize],
    /// Synthetic photos to generate when no `source` is given.
    pub images: usize,
    /// An image folder (root/<class>/…) to read instead of synthetic photos.
    pub source: Option<&'a Path>,
    pub json: bool,
}

pub fn run(bench: &DecodeBench<'_>) -> Result<()> {
    if bench.sizes.is_empty() || bench.sizes.contains(&0) {
        bail!("--sizes needs at least one positive side, e.g. --sizes 96,224");
    }
    let (encoded, what) = match bench.source {
        Some(root) => {
            let listing = list_image_folder(root)
                .with_context(|| format!("reading images from {}", root.display()))?;
            let files = listing
                .files
                .iter()
                .take(bench.images)
                .map(|(path, _)| {
                    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
                })
                .collect::<Result<Vec<_>>>()?;
            (
                files,
                format!("{} images from {}", bench.images, root.display()),
            )
        }
        None => (
            (0..bench.images as u64)
                .map(|seed| synthetic_photo_jpeg(500, 375, seed))
                .collect(),
            format!("{} synthetic 500×375 JPEGs (q90)", bench.images),
        ),
    };
    if encoded.is_empty() {
        bail!("no images to decode: --images must be at least 1");
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut rows = Vec::new();
    for &side in bench.sizes {
        let spec = DecodeSpec::new(ColorMode::Rgb, Some((side, side)), ResizeMode::CenterCrop);
        // One untimed pass warms the allocator and the page cache.
        decode_throughput(&encoded[..encoded.len().min(8)], spec, 1).map_err(anyhow::Error::msg)?;
        let (single, failures) =
            decode_throughput(&encoded, spec, 1).map_err(anyhow::Error::msg)?;
        let (parallel, _) = decode_throughput(&encoded, spec, cores).map_err(anyhow::Error::msg)?;
        rows.push(json!({
            "size": side,
            "images_per_second_1_thread": single,
            "images_per_second_all_cores": parallel,
            "cores": cores,
            "undecodable": failures,
        }));
    }
    if bench.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"images": what, "results": rows}))?
        );
    } else {
        println!("decode + centre-crop resize (RGB), {what}:");
        println!(
            "{:>6}  {:>14}  {:>16}",
            "size",
            "1 thread img/s",
            format!("{cores} cores img/s")
        );
        for row in &rows {
            println!(
                "{:>6}  {:>14.1}  {:>16.1}",
                row["size"],
                row["images_per_second_1_thread"].as_f64().unwrap_or(0.0),
                row["images_per_second_all_cores"].as_f64().unwrap_or(0.0)
            );
        }
    }
    Ok(())
}
