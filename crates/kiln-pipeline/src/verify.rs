//! Verifying an exported file: kiln-runtime runs the file as written to disk, and its outputs
//! (dequantized, for int8/uint8 outputs) are compared with the Burn model's on the test set.
//! Quantized inputs are fed the test images quantized with the input's scale and zero point.

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, ensure};
use kiln_data::ImageDataset;
use kiln_train::argmax_rows;

use kiln_runtime::real_io;

pub struct Verified {
    pub accuracy: f64,
    pub max_abs_diff: f64,
    pub argmax_agreement: f64,
    pub latency_ms_p50: f64,
}

pub fn verify_variant(
    path: &Path,
    test: &ImageDataset,
    reference_logits: &[f32],
    latency_runs: usize,
) -> Result<Verified> {
    let mut interpreter = crate::model_file::interpreter(path)?;
    let classes = test.class_names.len();
    let mut logits = Vec::with_capacity(test.len() * classes);
    let mut latencies = Vec::with_capacity(test.len());
    for row in 0..test.len() {
        real_io::set_input(&mut interpreter, 0, &test.image(row))?;
        let started = Instant::now();
        interpreter.invoke()?;
        latencies.push(started.elapsed().as_secs_f64() * 1e3);
        logits.extend(real_io::output(&interpreter, 0)?);
    }
    ensure!(
        logits.len() == reference_logits.len(),
        "kiln-runtime produced {} logits, Burn {}",
        logits.len(),
        reference_logits.len()
    );
    // Latency over extra timed runs of the first image, after the full pass warmed caches.
    for _ in 0..latency_runs {
        real_io::set_input(&mut interpreter, 0, &test.image(0))?;
        let started = Instant::now();
        interpreter.invoke()?;
        latencies.push(started.elapsed().as_secs_f64() * 1e3);
    }
    latencies.sort_by(f64::total_cmp);
    let ours = argmax_rows(&logits, classes);
    let theirs = argmax_rows(reference_logits, classes);
    let agree = ours.iter().zip(&theirs).filter(|(a, b)| a == b).count();
    let correct = ours
        .iter()
        .zip(&test.labels)
        .filter(|(p, l)| **p == **l as usize)
        .count();
    let max_abs_diff = logits
        .iter()
        .zip(reference_logits)
        .map(|(a, b)| f64::from((a - b).abs()))
        .fold(0.0, f64::max);
    Ok(Verified {
        accuracy: correct as f64 / test.len() as f64,
        max_abs_diff,
        argmax_agreement: agree as f64 / test.len() as f64,
        latency_ms_p50: latencies[latencies.len() / 2],
    })
}
