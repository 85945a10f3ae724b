//! Running a Kiln pipeline from Rust code instead of the `pipeline` CLI: a config, overrides
//! and a run directory in; the exported `.tflite` variants and the report out.
//!
//! ```sh
//! # A few seconds' run of the quickstart config on the bundled digits (float32 recipe):
//! cargo run -p run-pipeline
//! # Any config, with the CLI's --set overrides as extra arguments:
//! cargo run -p run-pipeline -- configs/quickstart.toml train.epochs=5
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kiln_pipeline::RunOptions;

fn main() -> Result<()> {
    tracing_subscriber::fmt().with_target(false).init();
    let mut args = std::env::args().skip(1);
    let (config, overrides) = match args.next() {
        Some(config) => (PathBuf::from(config), args.collect()),
        // Small and quick by default: train four epochs on 2,000 digits, export, verify.
        None => (
            PathBuf::from("configs/quickstart.toml"),
            vec![
                "pipeline=../pipelines/float32.toml".to_owned(),
                "train.epochs=4".to_owned(),
                "data.limit_train=2000".to_owned(),
                "data.limit_test=200".to_owned(),
            ],
        ),
    };
    let options = RunOptions {
        out: Some(PathBuf::from("artifacts/run-pipeline-example")),
        overrides,
        handle_ctrl_c: true,
        ..RunOptions::default()
    };
    let run_dir = kiln_pipeline::run(&config, &options)?;
    print_variants(&run_dir)
}

/// Reads the run's `report.json` and prints each exported variant.
fn print_variants(run_dir: &Path) -> Result<()> {
    let path = run_dir.join("report.json");
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?,
    )?;
    println!(
        "{:<24} {:>10} {:>9} {:>11}",
        "variant", "bytes", "accuracy", "p50 (ms)"
    );
    for variant in report["variants"].as_array().into_iter().flatten() {
        println!(
            "{:<24} {:>10} {:>8.2}% {:>11.3}",
            variant["name"].as_str().unwrap_or("?"),
            variant["bytes"].as_u64().unwrap_or(0),
            100.0 * variant["accuracy"].as_f64().unwrap_or(f64::NAN),
            variant["latency_ms_p50"].as_f64().unwrap_or(f64::NAN),
        );
    }
    println!("run directory: {}", run_dir.display());
    Ok(())
}
