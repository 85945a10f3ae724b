//! `pipeline bench`: kiln-runtime latency on a model (p50/p90 over repeated invokes on fixed
//! pseudo-random inputs) and its arena size.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use kiln_tflite::TensorType;
use serde::Serialize;

#[derive(Serialize)]
pub struct BenchReport {
    pub model: String,
    pub runs: usize,
    pub latency_ms_p50: f64,
    pub latency_ms_p90: f64,
    pub latency_ms_min: f64,
    pub arena_bytes: usize,
    pub file_bytes: usize,
}

/// Deterministic inputs in each input's type: uniform in [0, 1) for floats, the full range
/// for integers (LCG: benchmarks need no randomness crate).
fn fill_inputs(interpreter: &mut kiln_runtime::Interpreter) -> Result<()> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as u32
    };
    for i in 0..interpreter.input_count() {
        let info = interpreter.input_info(i)?.clone();
        let bytes: Vec<u8> = match info.dtype {
            TensorType::Float32 => (0..info.num_elements())
                .flat_map(|_| (next() as f32 / u32::MAX as f32).to_le_bytes())
                .collect(),
            _ => (0..info.byte_size()).map(|_| next() as u8).collect(),
        };
        interpreter.set_input(i, &bytes)?;
    }
    Ok(())
}

pub fn measure(path: &Path, runs: usize, warmup: usize) -> Result<BenchReport> {
    let bytes = crate::model_file::map(path)?;
    let file_bytes = bytes.len();
    let mut interpreter = crate::model_file::interpreter(path)?;
    fill_inputs(&mut interpreter)?;
    for _ in 0..warmup {
        interpreter.invoke()?;
    }
    let mut times: Vec<Duration> = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        interpreter.invoke()?;
        times.push(started.elapsed());
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok(BenchReport {
        model: path.display().to_string(),
        runs: times.len(),
        latency_ms_p50: ms(times[times.len() / 2]),
        latency_ms_p90: ms(times[(times.len() * 9 / 10).min(times.len() - 1)]),
        latency_ms_min: ms(times[0]),
        arena_bytes: interpreter.arena_bytes(),
        file_bytes,
    })
}

pub fn run(path: &Path, runs: usize, as_json: bool) -> Result<()> {
    let report = measure(path, runs, runs.div_ceil(10).max(1))?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{}: p50 {:.3} ms, p90 {:.3} ms, min {:.3} ms over {} runs; arena {} bytes; file {} bytes",
            report.model,
            report.latency_ms_p50,
            report.latency_ms_p90,
            report.latency_ms_min,
            report.runs,
            report.arena_bytes,
            report.file_bytes
        );
    }
    Ok(())
}
