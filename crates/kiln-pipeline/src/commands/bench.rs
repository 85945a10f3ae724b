//! `pipeline bench`: kiln-runtime latency on a model (p50/p90 over repeated invokes on fixed
//! pseudo-random inputs) and its arena size; with `--profile`, each operator's share of the
//! time (as LiteRT's `benchmark_model --enable_op_profiling` reports it).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use kiln_runtime::OpProfile;
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
    /// Threads the kernels ran on.
    pub threads: usize,
    /// The microkernels' instruction sets on this CPU.
    pub kernels: String,
    /// Arena + weights the kernels prepared + constants copied for alignment: what the
    /// interpreter holds beyond the (memory-mapped) file.
    pub peak_memory_bytes: usize,
    pub prepared_weight_bytes: usize,
    /// The model's constants at four bytes per element.
    pub float32_weight_bytes: usize,
    /// Multiply-accumulates per invoke of its convolutions and fully connected layers.
    pub multiply_accumulates: usize,
    /// Per-operator kernel time, in execution order (with `--profile`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operators: Option<Vec<OperatorReport>>,
}

#[derive(Serialize)]
pub struct OperatorReport {
    /// The operator's index in the subgraph.
    pub index: usize,
    pub operator: String,
    /// Its (first) output tensor.
    pub output: String,
    /// Mean kernel time per invoke.
    pub mean_ms: f64,
    /// Fraction of all operators' kernel time.
    pub share: f64,
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

/// Times `runs` invokes after `warmup` untimed ones; with `profile`, another `runs` invokes
/// time each operator.
pub fn measure(
    path: &Path,
    runs: usize,
    warmup: usize,
    profile: bool,
    threads: usize,
) -> Result<BenchReport> {
    let mut reports = measure_together(&[path], runs, warmup, profile, threads)?;
    Ok(reports.remove(0))
}

/// Rounds in which [`measure_together`] alternates its models.
const ROUNDS: usize = 10;

/// [`measure`] for several models in one run: their invokes alternate in [`ROUNDS`] rounds, so
/// that a change in the machine's speed (another process, the clock) weighs on each alike
/// and their ratios hold.
pub fn measure_together(
    paths: &[&Path],
    runs: usize,
    warmup: usize,
    profile: bool,
    threads: usize,
) -> Result<Vec<BenchReport>> {
    let mut models = Vec::with_capacity(paths.len());
    for &path in paths {
        let file_bytes = crate::model_file::map(path)?.len();
        let mut interpreter = crate::model_file::interpreter(path)?;
        interpreter.set_threads(threads)?;
        fill_inputs(&mut interpreter)?;
        for _ in 0..warmup {
            interpreter.invoke()?;
        }
        models.push((
            path,
            file_bytes,
            interpreter,
            Vec::with_capacity(runs.max(1)),
        ));
    }
    let runs = runs.max(1);
    for round in 0..ROUNDS {
        let count = runs * (round + 1) / ROUNDS - runs * round / ROUNDS;
        for (_, _, interpreter, times) in &mut models {
            for _ in 0..count {
                let started = Instant::now();
                interpreter.invoke()?;
                times.push(started.elapsed());
            }
        }
    }
    models
        .into_iter()
        .map(|(path, file_bytes, mut interpreter, mut times)| {
            times.sort();
            report(path, file_bytes, &mut interpreter, &times, runs, profile)
        })
        .collect()
}

/// One model's report from its sorted invoke times; with `profile`, `runs` more invokes time
/// each operator.
fn report(
    path: &Path,
    file_bytes: usize,
    interpreter: &mut kiln_runtime::Interpreter,
    times: &[Duration],
    runs: usize,
    profile: bool,
) -> Result<BenchReport> {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let operators = if profile {
        let mut profile = OpProfile::new();
        for _ in 0..runs.max(1) {
            interpreter.invoke_profiled(&mut profile)?;
        }
        let times = profile.operators();
        let reports = interpreter
            .operators()
            .into_iter()
            .zip(times)
            .map(|((index, operator, output), time)| OperatorReport {
                index,
                operator,
                output,
                mean_ms: ms(time.mean),
                share: time.share,
            })
            .collect();
        Some(reports)
    } else {
        None
    };
    let memory = interpreter.memory();
    Ok(BenchReport {
        model: path.display().to_string(),
        runs: times.len(),
        latency_ms_p50: ms(times[times.len() / 2]),
        latency_ms_p90: ms(times[(times.len() * 9 / 10).min(times.len() - 1)]),
        latency_ms_min: ms(times[0]),
        arena_bytes: interpreter.arena_bytes(),
        file_bytes,
        threads: interpreter.threads(),
        kernels: kiln_runtime::kernel_sets(),
        peak_memory_bytes: memory.peak(),
        prepared_weight_bytes: memory.prepared_weights,
        float32_weight_bytes: memory.float32_weights,
        multiply_accumulates: interpreter.multiply_accumulates(),
        operators,
    })
}

/// Three significant digits of a time in milliseconds (a small model's 0.00652 ms, a large
/// one's 23.4 ms).
pub fn milliseconds(ms: f64) -> String {
    let decimals = if ms > 0.0 && ms.is_finite() {
        (2 - ms.log10().floor() as i32).clamp(0, 9) as usize
    } else {
        3
    };
    format!("{ms:.decimals$}")
}

/// `pipeline bench MODEL [MODEL…]`: each model's report; with several, measured together
/// ([`measure_together`]) and each p50 as a ratio of the first's.
pub fn run(
    paths: &[&Path],
    runs: usize,
    profile: bool,
    threads: usize,
    as_json: bool,
) -> Result<()> {
    let reports = measure_together(paths, runs, runs.div_ceil(10).max(1), profile, threads)?;
    if as_json {
        match &reports[..] {
            [report] => println!("{}", serde_json::to_string_pretty(report)?),
            reports => println!("{}", serde_json::to_string_pretty(reports)?),
        }
        return Ok(());
    }
    for report in &reports {
        print_report(report);
    }
    if let [first, rest @ ..] = &reports[..]
        && !rest.is_empty()
    {
        println!("p50 relative to {} (same run):", first.model);
        for report in rest {
            println!(
                "  {}: {:.3}×",
                report.model,
                report.latency_ms_p50 / first.latency_ms_p50.max(f64::MIN_POSITIVE)
            );
        }
    }
    Ok(())
}

fn print_report(report: &BenchReport) {
    println!(
        "{}: p50 {} ms, p90 {} ms, min {} ms over {} runs; arena {} bytes; file {} bytes; {} multiply-accumulates ({:.1} GMAC/s at p50)",
        report.model,
        milliseconds(report.latency_ms_p50),
        milliseconds(report.latency_ms_p90),
        milliseconds(report.latency_ms_min),
        report.runs,
        report.arena_bytes,
        report.file_bytes,
        report.multiply_accumulates,
        report.multiply_accumulates as f64 / (report.latency_ms_p50 * 1e6).max(f64::MIN_POSITIVE)
    );
    println!(
        "peak memory {} bytes (arena + {} bytes of prepared weights); the weights as float32: {} bytes; {} thread(s), {}",
        report.peak_memory_bytes,
        report.prepared_weight_bytes,
        report.float32_weight_bytes,
        report.threads,
        report.kernels
    );
    if let Some(operators) = &report.operators {
        print!("{}", profile_table(operators));
    }
}

/// The operators by share of the time, then the time per operator type.
fn profile_table(operators: &[OperatorReport]) -> String {
    let mut by_share: Vec<&OperatorReport> = operators.iter().collect();
    by_share.sort_by(|a, b| b.share.total_cmp(&a.share));
    let mut out = format!(
        "operator profile (mean kernel time per invoke, {} operators):\n{:>7} {:>7} {:>9} {:>5}  {:<20} output\n",
        operators.len(),
        "share",
        "cdf",
        "mean ms",
        "op",
        "operator"
    );
    let mut cdf = 0.0;
    for op in by_share {
        cdf += op.share;
        out += &format!(
            "{:>6.1}% {:>6.1}% {:>9.4} {:>5}  {:<20} {}\n",
            100.0 * op.share,
            100.0 * cdf,
            op.mean_ms,
            op.index,
            op.operator,
            op.output
        );
    }
    let mut types: Vec<(&str, usize, f64, f64)> = Vec::new();
    for op in operators {
        match types.iter_mut().find(|t| t.0 == op.operator) {
            Some(t) => {
                t.1 += 1;
                t.2 += op.share;
                t.3 += op.mean_ms;
            }
            None => types.push((&op.operator, 1, op.share, op.mean_ms)),
        }
    }
    types.sort_by(|a, b| b.2.total_cmp(&a.2));
    out += "by operator type:\n";
    for (name, count, share, mean_ms) in types {
        out += &format!(
            "{:>6.1}% {mean_ms:>9.4} ms  {name} ×{count}\n",
            100.0 * share
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_names_every_operator_and_sums_to_the_whole() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/pool_pad_mean_int8/model.tflite");
        let report = measure(&path, 5, 1, true, 1).unwrap();
        let operators = report.operators.as_ref().unwrap();
        assert!(operators.len() >= 3, "{}", operators.len());
        let shares: f64 = operators.iter().map(|o| o.share).sum();
        assert!((shares - 1.0).abs() < 1e-9, "{shares}");
        let table = profile_table(operators);
        for op in operators {
            assert!(table.contains(&op.operator), "{table}");
        }
        assert!(table.contains("by operator type"), "{table}");
        assert!(measure(&path, 5, 1, false, 1).unwrap().operators.is_none());
    }

    #[test]
    fn times_keep_three_significant_digits() {
        assert_eq!(milliseconds(0.006_524), "0.00652");
        assert_eq!(milliseconds(0.0125), "0.0125");
        assert_eq!(milliseconds(1.0), "1.00");
        assert_eq!(milliseconds(23.44), "23.4");
        assert_eq!(milliseconds(1234.5), "1234");
        assert_eq!(milliseconds(0.0), "0.000");
    }

    /// Models measured together each get their own full report, in the order given.
    #[test]
    fn models_measured_together_each_get_a_report() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
        let (a, b) = (
            fixtures.join("conv_int8/model.tflite"),
            fixtures.join("pool_pad_mean_int8/model.tflite"),
        );
        let reports = measure_together(&[&a, &b], 7, 1, false, 1).unwrap();
        assert_eq!(reports.len(), 2);
        for (report, path) in reports.iter().zip([&a, &b]) {
            assert_eq!(report.model, path.display().to_string());
            assert_eq!(report.runs, 7);
            assert!(report.latency_ms_min <= report.latency_ms_p50);
        }
        assert_ne!(reports[0].file_bytes, reports[1].file_bytes);
    }

    #[test]
    fn the_report_states_memory_threads_and_kernels() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/conv_int8/model.tflite");
        let report = measure(&path, 3, 1, false, 2).unwrap();
        assert_eq!(report.threads, 2);
        assert!(report.kernels.contains("int8 GEMM"), "{}", report.kernels);
        // The packed filters are the prepared weights; the arena is part of the peak.
        assert!(report.prepared_weight_bytes > 0);
        assert!(report.peak_memory_bytes >= report.arena_bytes + report.prepared_weight_bytes);
        // int8 filters packed as bytes stay far below the weights as float32.
        assert!(report.prepared_weight_bytes < report.float32_weight_bytes);
        assert!(report.multiply_accumulates > 0);
    }
}
