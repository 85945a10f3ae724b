//! `pipeline compare RUN_DIR... [--out DIR]`: one table across runs — every variant of every
//! run with its size (and its dense size when stored sparse), gzip size, accuracy, latency,
//! sparsity and pruning pattern, and clusters per layer — and one plot,
//! `compare.svg`/`.png` (accuracy against raw and gzip size, each run in its color, the Pareto
//! frontier over all of them), for researchers comparing configs, seeds or schedules.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::commands::bench::milliseconds;
use crate::report::plots::Plot;
use crate::report::{VariantPoint, variants_plot};
use serde_json::{Value, json};

/// One row: a variant of a run.
#[derive(Debug, PartialEq)]
struct Row {
    run: String,
    name: String,
    seed: Option<u64>,
    variant: String,
    bytes: Option<u64>,
    /// With weights stored sparse, the file's size with every weight dense.
    dense_bytes: Option<u64>,
    gzip_bytes: Option<u64>,
    size_vs_fp32: Option<f64>,
    accuracy: Option<f64>,
    accuracy_delta: Option<f64>,
    latency_ms_p50: Option<f64>,
    sparsity: Option<f64>,
    /// The pruning pattern (`1x16 blocks`, …), for pruned variants.
    pattern: Option<String>,
    /// Shared values per layer, for clustered variants.
    clusters: Option<u64>,
}

/// `plot_dir`: where `compare.svg` and `compare.png` go.
pub fn run(run_dirs: &[PathBuf], plot_dir: &Path, as_json: bool) -> Result<()> {
    if run_dirs.is_empty() {
        bail!("name at least one run directory, e.g. `pipeline compare artifacts/a artifacts/b`");
    }
    let mut rows = Vec::new();
    for dir in run_dirs {
        rows.extend(rows_of(dir)?);
    }
    if let Some(plot) = plot(&rows)? {
        std::fs::create_dir_all(plot_dir)
            .with_context(|| format!("cannot create {}", plot_dir.display()))?;
        plot.write(plot_dir)?;
        eprintln!(
            "wrote {} and {}",
            plot_dir.join(plot.svg_name()).display(),
            plot_dir.join(plot.png_name()).display()
        );
    }
    if as_json {
        let rows: Vec<Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "run": r.run, "name": r.name, "seed": r.seed, "variant": r.variant,
                    "bytes": r.bytes, "dense_bytes": r.dense_bytes, "gzip_bytes": r.gzip_bytes,
                    "size_vs_fp32": r.size_vs_fp32,
                    "accuracy": r.accuracy, "accuracy_delta": r.accuracy_delta,
                    "latency_ms_p50": r.latency_ms_p50, "sparsity": r.sparsity,
                    "pattern": r.pattern, "clusters": r.clusters,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", table(&rows));
    }
    Ok(())
}

fn rows_of(dir: &Path) -> Result<Vec<Row>> {
    let path = dir.join("report.json");
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "cannot read {} (is {} a run directory written by `pipeline run`?)",
            path.display(),
            dir.display()
        )
    })?;
    let report: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    let variants = report["variants"]
        .as_array()
        .with_context(|| format!("{} has no variants list", path.display()))?;
    Ok(variants
        .iter()
        .map(|v| Row {
            run: dir.display().to_string(),
            name: report["name"].as_str().unwrap_or("?").to_owned(),
            seed: report["seed"].as_u64(),
            variant: v["name"].as_str().unwrap_or("?").to_owned(),
            bytes: v["bytes"].as_u64(),
            dense_bytes: v["dense_bytes"].as_u64(),
            gzip_bytes: v["gzip_bytes"].as_u64(),
            size_vs_fp32: v["size_vs_fp32"].as_f64(),
            accuracy: v["accuracy"].as_f64(),
            accuracy_delta: v["accuracy_delta"].as_f64(),
            latency_ms_p50: v["latency_ms_p50"].as_f64(),
            sparsity: v["sparsity"].as_f64(),
            pattern: v["pattern"].as_str().map(str::to_owned),
            clusters: v["clusters"].as_u64(),
        })
        .collect())
}

/// Every measured variant of every run, colored by run (named by its directory).
fn plot(rows: &[Row]) -> Result<Option<Plot>> {
    let mut groups: Vec<String> = Vec::new();
    let mut points = Vec::new();
    for row in rows {
        let group = match groups.iter().position(|g| *g == row.run) {
            Some(g) => g,
            None => {
                groups.push(row.run.clone());
                groups.len() - 1
            }
        };
        let (Some(bytes), Some(gzip_bytes), Some(accuracy)) =
            (row.bytes, row.gzip_bytes, row.accuracy)
        else {
            continue;
        };
        points.push(VariantPoint {
            name: row.variant.clone(),
            bytes,
            gzip_bytes,
            accuracy,
            latency_ms_p50: row.latency_ms_p50,
            group,
        });
    }
    variants_plot("compare", &points, &groups)
}

fn table(rows: &[Row]) -> String {
    let dash = || "—".to_owned();
    let cells: Vec<[String; 13]> = rows
        .iter()
        .map(|r| {
            [
                r.run.clone(),
                r.seed.map_or_else(dash, |s| s.to_string()),
                r.variant.clone(),
                r.bytes.map_or_else(dash, |b| b.to_string()),
                r.dense_bytes.map_or_else(dash, |b| b.to_string()),
                r.gzip_bytes.map_or_else(dash, |b| b.to_string()),
                r.size_vs_fp32
                    .map_or_else(dash, |s| format!("{:.1}%", 100.0 * s)),
                r.accuracy
                    .map_or_else(dash, |a| format!("{:.2}%", 100.0 * a)),
                r.accuracy_delta
                    .map_or_else(dash, |d| format!("{:+.2}", 100.0 * d)),
                r.latency_ms_p50
                    .map_or_else(dash, |l| format!("{} ms", milliseconds(l))),
                r.sparsity
                    .map_or_else(dash, |s| format!("{:.1}%", 100.0 * s)),
                r.pattern.clone().unwrap_or_else(dash),
                r.clusters.map_or_else(dash, |c| c.to_string()),
            ]
        })
        .collect();
    let header = [
        "run", "seed", "variant", "bytes", "dense", "gzip", "vs fp32", "accuracy", "Δ pt", "p50",
        "sparsity", "pattern", "clusters",
    ];
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            cells
                .iter()
                .map(|c| c[i].chars().count())
                .chain([header[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: Vec<&str>| -> String {
        values
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (v, &w))| {
                let pad = w - v.chars().count();
                // Text columns left-aligned, numbers right-aligned.
                if i < 3 {
                    format!("{v}{}", " ".repeat(pad))
                } else {
                    format!("{}{v}", " ".repeat(pad))
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
            + "\n"
    };
    let mut out = line(header.to_vec());
    for c in &cells {
        out += &line(c.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_report(dir: &Path, seed: u64, accuracy: f64) {
        std::fs::create_dir_all(dir).unwrap();
        let report = json!({
            "name": "quickstart", "seed": seed,
            "variants": [
                {"name": "fp32", "bytes": 1000, "gzip_bytes": 900, "size_vs_fp32": 1.0,
                 "accuracy": accuracy, "accuracy_delta": 0.0, "latency_ms_p50": 0.5},
                {"name": "int8", "bytes": 250, "gzip_bytes": 200, "size_vs_fp32": 0.25,
                 "accuracy": accuracy - 0.001, "accuracy_delta": -0.001, "latency_ms_p50": null},
                {"name": "pruned80_int8", "bytes": 75, "dense_bytes": 250, "gzip_bytes": 60,
                 "size_vs_fp32": 0.075, "accuracy": accuracy - 0.002, "sparsity": 0.8,
                 "pattern": "1x16 blocks"},
                {"name": "clustered16_int8", "bytes": 250, "gzip_bytes": 120,
                 "size_vs_fp32": 0.25, "accuracy": accuracy - 0.003, "clusters": 16},
            ]
        });
        std::fs::write(dir.join("report.json"), report.to_string()).unwrap();
    }

    #[test]
    fn rows_span_runs_and_variants_and_bad_dirs_are_named() {
        let root = std::env::temp_dir().join(format!("kiln-compare-{}", std::process::id()));
        let (a, b) = (root.join("a"), root.join("b"));
        write_report(&a, 1, 0.98);
        write_report(&b, 2, 0.97);
        let rows: Vec<Row> = [&a, &b].iter().flat_map(|d| rows_of(d).unwrap()).collect();
        assert_eq!(rows.len(), 8);
        assert_eq!((rows[4].seed, rows[4].variant.as_str()), (Some(2), "fp32"));
        assert_eq!((rows[2].bytes, rows[2].dense_bytes), (Some(75), Some(250)));
        assert_eq!(rows[2].pattern.as_deref(), Some("1x16 blocks"));
        assert_eq!(
            (rows[3].clusters, rows[3].pattern.as_deref()),
            (Some(16), None)
        );
        let text = table(&rows);
        assert!(text.lines().count() == 9, "{text}");
        let header = text.lines().next().unwrap();
        assert!(
            header.contains("dense") && header.contains("pattern") && header.contains("clusters"),
            "{text}"
        );
        assert!(text.contains("1x16 blocks"), "{text}");
        assert!(
            text.contains("98.00%") && text.contains("25.0%") && text.contains("—"),
            "{text}"
        );

        // One plot across both runs, each run in its own color.
        let out = root.join("plots");
        run(&[a.clone(), b.clone()], &out, true).unwrap();
        let svg = std::fs::read_to_string(out.join("compare.svg")).unwrap();
        for name in [a.display().to_string(), b.display().to_string()] {
            assert!(
                svg.contains(&format!("\n{name}\n")),
                "{name} not in the legend"
            );
        }
        image::load_from_memory(&std::fs::read(out.join("compare.png")).unwrap()).unwrap();

        let err = format!("{:#}", rows_of(&root.join("missing")).unwrap_err());
        assert!(err.contains("run directory"), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
