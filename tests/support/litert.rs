//! Running a `.tflite` in the official LiteRT interpreter (the repo's `.venv` with
//! ai-edge-litert) under its three kernel sets and comparing with kiln-runtime.

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_runtime::Interpreter;
use kiln_runtime::npy::{NpyArray, read_npy};
use kiln_tflite::{Model, TensorType};
use serde_json::Value;

use super::{infer, litert_python, repo_root, uniform_inputs};

pub const KERNELS: [&str; 3] = ["default", "builtin", "reference"];
pub const ROWS: usize = 16;

/// How closely kiln-runtime must match LiteRT.
#[derive(Clone, Copy, Debug)]
pub enum Expect {
    /// |ours − theirs| ≤ rel × (1 + |theirs|) with every kernel set.
    Float { rel: f64 },
    /// Hybrid: `rel` relative against reference/builtin, `of_peak` × max|logit| against XNNPACK.
    Hybrid { rel: f64, of_peak: f64 },
    /// Quantized outputs (or their dequantized floats) in steps of `step`: equal to the
    /// reference kernels, at most `slack` steps from the others (XNNPACK and the optimized
    /// builtins round each requantization differently; deep networks accumulate that).
    Steps { step: f64, slack: f64 },
}

pub fn litert() -> Option<PathBuf> {
    let python = litert_python();
    if python.is_none() {
        let message = "LiteRT venv missing: run `scripts/test.sh` (it creates .venv with ai-edge-litert), \
                       or set KILN_LITERT_PYTHON";
        if std::env::var_os("CI").is_some() || std::env::var_os("KILN_REQUIRE_LITERT").is_some() {
            panic!("{message}");
        }
        eprintln!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n!!! SKIPPED LiteRT conformance: {message}\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
    }
    python
}

pub fn values(array: &NpyArray) -> Vec<f64> {
    match array.dtype {
        TensorType::Float32 => array
            .data
            .chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
        TensorType::Int8 => array.data.iter().map(|&b| f64::from(b as i8)).collect(),
        TensorType::UInt8 => array.data.iter().map(|&b| f64::from(b)).collect(),
        other => panic!("unexpected output type {other}"),
    }
}

/// Writes the test inputs for `model`'s input type: the same float rows for every variant,
/// quantized with the input's scale and zero point when it is int8/uint8.
pub fn write_inputs(model: &Path, path: &Path, floats: &[f32]) {
    let interpreter = Interpreter::from_file(model).unwrap();
    let info = interpreter.input_info(0).unwrap();
    let mut shape = info.shape.clone();
    shape[0] = ROWS;
    let data = kiln_runtime::real_io::encode_input(info, floats).unwrap();
    let bytes = NpyArray::new(info.dtype, shape, data).to_bytes().unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// The scale of the int8 tensor a model's output is, or is dequantized/requantized from.
pub fn output_step(model: &Path) -> f64 {
    let model = Model::read_file(model).unwrap();
    let graph = &model.subgraphs[0];
    let output = graph.outputs[0];
    let tensor = match graph.operators.last() {
        Some(op)
            if op.outputs == [output]
                && graph.tensors[output as usize].dtype != TensorType::Int8 =>
        {
            &graph.tensors[op.inputs[0] as usize]
        }
        _ => &graph.tensors[output as usize],
    };
    f64::from(tensor.quantization.as_ref().unwrap().scale[0])
}

/// Runs `model` through `pipeline infer` and LiteRT's three kernel sets and checks each
/// against kiln-runtime as `expect` says.
pub fn check_variant(python: &Path, dir: &Path, label: &str, model: &Path, expect: Expect) {
    let input = dir.join(format!("{label}_x.npy"));
    let per_row: usize = Interpreter::from_file(model)
        .unwrap()
        .input_info(0)
        .unwrap()
        .shape[1..]
        .iter()
        .product();
    write_inputs(model, &input, &uniform_inputs(ROWS * per_row, 11));
    let ours_path = dir.join(format!("{label}_kiln.npy"));
    let out = infer(model, &input, &ours_path);
    assert!(
        out.status.success(),
        "{label}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours = read_npy(&ours_path).unwrap();
    let kiln_input = Interpreter::from_file(model)
        .unwrap()
        .input_info(0)
        .unwrap()
        .clone();

    for kernels in KERNELS {
        let theirs_path = dir.join(format!("{label}_litert_{kernels}.npy"));
        let out = Command::new(python)
            .arg(repo_root().join("tests/litert/run_litert.py"))
            .args([model, &input, &theirs_path])
            .args(["--kernels", kernels])
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "{label}: LiteRT ({kernels}) failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let details: Value = serde_json::from_slice(&out.stdout).expect("run_litert.py JSON");
        let signatures = details["signatures"].to_string();
        assert!(
            signatures.contains("serving_default")
                && signatures.contains("image")
                && signatures.contains("logits"),
            "{label}: signature missing: {signatures}"
        );
        if let Some(q) = &kiln_input.quantization {
            let theirs = &details["inputs"][0];
            assert_eq!(
                theirs["scale"].as_f64().unwrap() as f32,
                q.scale[0],
                "{label}"
            );
            assert_eq!(
                theirs["zero_point"].as_i64().unwrap(),
                q.zero_point[0],
                "{label}"
            );
        }
        let theirs = read_npy(&theirs_path).unwrap();
        assert_eq!(
            (ours.dtype, &ours.shape),
            (theirs.dtype, &theirs.shape),
            "{label} ({kernels})"
        );
        let (a, b) = (values(&ours), values(&theirs));
        let peak = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let mut worst = 0.0f64;
        for (i, (&x, &y)) in a.iter().zip(&b).enumerate() {
            let diff = (x - y).abs();
            let (ok, measure) = match expect {
                Expect::Float { rel } => (diff <= rel * (1.0 + y.abs()), diff),
                Expect::Hybrid { rel, of_peak } => match kernels {
                    "default" => (diff <= of_peak * peak, diff),
                    _ => (diff <= rel * (1.0 + y.abs()), diff),
                },
                Expect::Steps { step, slack } => {
                    let steps = diff / step;
                    let allowed = if kernels == "reference" { 0.0 } else { slack };
                    (steps <= allowed + 1e-3, steps)
                }
            };
            worst = worst.max(measure);
            assert!(
                ok,
                "{label} ({kernels}): element {i}: kiln {x} vs LiteRT {y}"
            );
        }
        let unit = if matches!(expect, Expect::Steps { .. }) {
            " steps"
        } else {
            ""
        };
        eprintln!(
            "{label}: LiteRT {kernels}: {} values, worst difference {worst:.3e}{unit}",
            b.len()
        );
    }
}
