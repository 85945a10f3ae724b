//! Every exported variant runs in the official LiteRT interpreter under its default (XNNPACK),
//! builtin and reference kernels, and kiln-runtime's outputs on the same file and inputs
//! match LiteRT's:
//! - fp32 and fp16 (float kernels; float16 weights dequantize exactly): within 1e-5 relative
//!   (numpy.allclose(rtol=1e-5, atol=1e-5) on logits);
//! - dynamic (hybrid kernels: int8 dot products rescaled in float, where summation order and
//!   rounding of the scale products differ): within 1e-3 relative of the reference and
//!   builtin kernels, 2% of the logits' peak of XNNPACK's (which may quantize inputs its own
//!   way);
//! - int8 (int8 in, int8 out: the test quantizes its float inputs with the input tensor's
//!   scale and zero point): bit-exact with the reference kernels, at most one quantization
//!   step from the builtin and XNNPACK kernels — also for the float-I/O and uint8-I/O int8
//!   files, built here from the run's fp32 file with kiln-export.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_export::{Calibrator, Int8Options, IoType, quantize_int8};
use kiln_runtime::Interpreter;
use kiln_runtime::npy::{NpyArray, read_npy};
use kiln_tflite::{Model, TensorType};
use serde_json::Value;
use support::*;

const KERNELS: [&str; 3] = ["default", "builtin", "reference"];
const ROWS: usize = 16;

/// How closely kiln-runtime must match LiteRT.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// |ours − theirs| ≤ rel × (1 + |theirs|) with every kernel set.
    Float { rel: f64 },
    /// Hybrid: `rel` relative against reference/builtin, `of_peak` × max|logit| against XNNPACK.
    Hybrid { rel: f64, of_peak: f64 },
    /// Quantized outputs (or their dequantized floats) in steps of `step`: equal to the
    /// reference kernels, at most `slack` steps from the others (XNNPACK and the optimized
    /// builtins round each requantization differently; deep networks accumulate that).
    Steps { step: f64, slack: f64 },
}

fn litert() -> Option<PathBuf> {
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

fn values(array: &NpyArray) -> Vec<f64> {
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
fn write_inputs(model: &Path, path: &Path, floats: &[f32]) {
    let interpreter = Interpreter::from_file(model).unwrap();
    let info = interpreter.input_info(0).unwrap();
    let mut shape = info.shape.clone();
    shape[0] = ROWS;
    let data = kiln_runtime::real_io::encode_input(info, floats).unwrap();
    let bytes = NpyArray::new(info.dtype, shape, data).to_bytes().unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// The scale of the int8 tensor a model's output is, or is dequantized/requantized from.
fn output_step(model: &Path) -> f64 {
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
fn check_variant(python: &Path, dir: &Path, label: &str, model: &Path, expect: Expect) {
    let input = dir.join(format!("{label}_x.npy"));
    write_inputs(model, &input, &uniform_inputs(ROWS * 28 * 28, 11));
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

/// An int8 file with `io` I/O made from the run's fp32 file, calibrated on the test inputs.
fn int8_with_io(dir: &Path, io: IoType, name: &str) -> PathBuf {
    let fp32 = Model::read_file(&dir.join("model_fp32.tflite")).unwrap();
    let mut calibrator = Calibrator::new(&fp32).unwrap();
    let rows = uniform_inputs(ROWS * 28 * 28, 3);
    for row in rows.chunks_exact(28 * 28) {
        calibrator.observe(&[row]).unwrap();
    }
    let options = Int8Options {
        io,
        ..Int8Options::default()
    };
    let model = quantize_int8(&fp32, &calibrator.finish().unwrap(), &options).unwrap();
    let path = dir.join(name);
    model.write_file(&path).unwrap();
    path
}

#[test]
fn every_variant_runs_in_litert_and_matches_kiln_runtime() {
    let Some(python) = litert() else { return };
    let dir = tiny_quickstart_run(&scratch_dir("litert"));
    let file = |name: &str| dir.join(format!("model_{name}.tflite"));
    check_variant(
        &python,
        &dir,
        "fp32",
        &file("fp32"),
        Expect::Float { rel: 1e-5 },
    );
    check_variant(
        &python,
        &dir,
        "fp16",
        &file("fp16"),
        Expect::Float { rel: 1e-5 },
    );
    let hybrid = Expect::Hybrid {
        rel: 1e-3,
        of_peak: 0.02,
    };
    check_variant(&python, &dir, "dynamic", &file("dynamic"), hybrid);
    let int8 = file("int8");
    check_variant(
        &python,
        &dir,
        "int8",
        &int8,
        Expect::Steps {
            step: 1.0,
            slack: 1.0,
        },
    );

    let float_io = int8_with_io(&dir, IoType::Float32, "model_int8_float_io.tflite");
    let step = output_step(&float_io);
    check_variant(
        &python,
        &dir,
        "int8_float_io",
        &float_io,
        Expect::Steps { step, slack: 1.0 },
    );
    let uint8_io = int8_with_io(&dir, IoType::UInt8, "model_int8_uint8_io.tflite");
    check_variant(
        &python,
        &dir,
        "int8_uint8_io",
        &uint8_io,
        Expect::Steps {
            step: 1.0,
            slack: 1.0,
        },
    );
}

/// EfficientNet-lite (default config) on the bundled digits: trains, exports every variant,
/// matches Burn's argmax on every test image in kiln-runtime, and runs in LiteRT under all
/// three kernel sets with kiln-runtime's outputs (depthwise, BatchNorm-folded convs, ReLU6,
/// residual ADD, MEAN pooling; int8 bit-exact with the reference kernels).
#[test]
fn efficientnet_lite_runs_in_litert_and_agrees_with_burn() {
    let dir = scratch_dir("litert_efficientnet");
    // With a QAT stage: its int8 file carries BatchNorm-folded, fake-quant-trained weights.
    run_qat_recipe(
        "configs/efficientnet_lite.toml",
        &dir,
        &["train.warmup_epochs=0", "data.limit_train=512"],
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
    for variant in report["variants"].as_array().unwrap() {
        let agreement = variant["parity"]["argmax_agreement"].as_f64().unwrap();
        if variant["name"] == "fp32" {
            assert_eq!(agreement, 1.0, "fp32 argmax vs Burn: {variant}");
        }
    }
    let Some(python) = litert() else { return };
    let file = |name: &str| dir.join(format!("model_{name}.tflite"));
    check_variant(
        &python,
        &dir,
        "efficientnet_fp32",
        &file("fp32"),
        Expect::Float { rel: 1e-5 },
    );
    // ~30 chained requantizations with residual adds: a few steps apart off the reference path.
    let deep = Expect::Steps {
        step: 1.0,
        slack: 4.0,
    };
    check_variant(&python, &dir, "efficientnet_int8", &file("int8"), deep);
    check_variant(
        &python,
        &dir,
        "efficientnet_qat_int8",
        &file("qat_int8"),
        deep,
    );
}

/// The timm-layout family's int8 paths: EfficientNet-B0's swish (LOGISTIC + MUL) and
/// squeeze-excitation (MEAN, 1×1 convs with bias, LOGISTIC, broadcast MUL), and MobileNetV2
/// with PyTorch's symmetric padding (int8 PAD before every stride-2 convolution). Every
/// variant runs in LiteRT under all three kernel sets; int8 is bit-exact with the reference
/// kernels.
#[test]
fn efficientnet_b0_and_mobilenet_v2_run_in_litert() {
    let models: [(&str, &[&str]); 2] = [
        ("efficientnet_b0", &[]),
        (
            "mobilenet_v2",
            &[
                "model.architecture=\"mobilenet_v2\"",
                "model.weight_style=\"pytorch\"",
                "model.width_multiplier=0.35",
                "model.depth_multiplier=0.5",
            ],
        ),
    ];
    for (name, sets) in models {
        let dir = scratch_dir(&format!("litert_{name}"));
        let mut args = vec![
            "run",
            "configs/efficientnet_b0.toml",
            "--out",
            dir.to_str().unwrap(),
        ];
        for set in [
            "train.epochs=1",
            "train.warmup_epochs=0",
            "data.limit_train=256",
            "data.limit_test=32",
            "export.calibration_samples=32",
            "verify.latency_runs=2",
        ]
        .iter()
        .chain(sets)
        {
            args.extend(["--set", set]);
        }
        let out = support::pipeline(&args);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let Some(python) = litert() else { return };
        let file = |variant: &str| dir.join(format!("model_{variant}.tflite"));
        check_variant(
            &python,
            &dir,
            &format!("{name}_fp32"),
            &file("fp32"),
            Expect::Float { rel: 1e-5 },
        );
        let deep = Expect::Steps {
            step: 1.0,
            slack: 4.0,
        };
        check_variant(&python, &dir, &format!("{name}_int8"), &file("int8"), deep);
    }
    // QAT through swish and squeeze-excitation: its int8 file is held to the same standard.
    let dir = scratch_dir("litert_efficientnet_b0_qat");
    run_qat_recipe(
        "configs/efficientnet_b0.toml",
        &dir,
        &[
            "train.warmup_epochs=0",
            "data.limit_train=256",
            "export.variants=[\"fp32\"]",
        ],
    );
    let Some(python) = litert() else { return };
    let deep = Expect::Steps {
        step: 1.0,
        slack: 4.0,
    };
    let qat = dir.join("model_qat_int8.tflite");
    check_variant(&python, &dir, "efficientnet_b0_qat_int8", &qat, deep);
}

/// A train → qat recipe: one epoch of quantization-aware fine-tuning.
const QAT_RECIPE: &str = r#"stages = ["train", "qat", "export", "verify", "report"]
[qat]
epochs = 1
learning_rate = 0.0001
"#;

/// Runs `config` with QAT_RECIPE into `dir`: two training epochs, 64 test images, and `sets`.
fn run_qat_recipe(config: &str, dir: &Path, sets: &[&str]) {
    let recipe = dir.join("qat.toml");
    std::fs::write(&recipe, QAT_RECIPE).unwrap();
    let pipeline_set = format!("pipeline={}", recipe.display());
    let mut args = vec!["run", config, "--out", dir.to_str().unwrap()];
    for set in [
        pipeline_set.as_str(),
        "train.epochs=2",
        "data.limit_test=64",
        "verify.latency_runs=2",
    ]
    .iter()
    .chain(sets)
    {
        args.extend(["--set", set]);
    }
    let out = support::pipeline(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The QAT int8 file (activation parameters from training's ranges, not calibration) is
/// held to the same standard as the calibrated one: bit-exact with LiteRT's reference
/// kernels, one step from the others.
#[test]
fn qat_int8_runs_in_litert_like_calibrated_int8() {
    let Some(python) = litert() else { return };
    let dir = scratch_dir("litert_qat");
    run_qat_recipe(
        "configs/quickstart.toml",
        &dir,
        &["data.limit_train=1024", "export.variants=[\"fp32\"]"],
    );
    check_variant(
        &python,
        &dir,
        "qat_int8",
        &dir.join("model_qat_int8.tflite"),
        Expect::Steps {
            step: 1.0,
            slack: 1.0,
        },
    );
}

/// What a Python user with only ai-edge-litert finds in every exported file: the metadata
/// entries, the minimum runtime version, the labels and the input normalisation.
#[test]
fn exported_metadata_is_readable_with_litert_tools() {
    let Some(python) = litert() else { return };
    let dir = tiny_quickstart_run(&scratch_dir("litert_metadata"));
    for variant in ["fp32", "fp16", "dynamic", "int8"] {
        let model = dir.join(format!("model_{variant}.tflite"));
        let out = Command::new(&python)
            .arg(repo_root().join("tests/litert/read_metadata.py"))
            .arg(&model)
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "{variant}: read_metadata.py failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let found: Value = serde_json::from_slice(&out.stdout).expect("read_metadata.py JSON");
        let entries = found["entries"].to_string();
        assert!(
            entries.contains("min_runtime_version") && entries.contains("TFLITE_METADATA"),
            "{variant}: {entries}"
        );
        let version = found["min_runtime_version"].as_str().unwrap_or_default();
        assert!(
            version.split('.').count() == 3 && version.split('.').all(|p| p.parse::<u32>().is_ok()),
            "{variant}: min_runtime_version {version:?}"
        );
        let metadata = &found["metadata"];
        assert_eq!(metadata["name"], "quickstart", "{variant}");
        assert!(
            metadata["description"]
                .as_str()
                .unwrap_or_default()
                .contains("SmallCnn"),
            "{variant}: {metadata}"
        );
        let input = &metadata["inputs"][0];
        assert_eq!(input["name"], "image", "{variant}");
        // quickstart trains on pixels / 255: mean 0, std 1 in Kiln's units = 0, 255 raw.
        assert_eq!(
            input["normalization"]["mean"],
            serde_json::json!([0.0]),
            "{variant}"
        );
        assert_eq!(
            input["normalization"]["std"],
            serde_json::json!([255.0]),
            "{variant}"
        );
        let output = &metadata["outputs"][0];
        assert_eq!(
            output["associated_files"],
            serde_json::json!(["labels.txt"]),
            "{variant}"
        );
        let labels: Vec<&str> = found["files"]["labels.txt"]
            .as_str()
            .unwrap_or_default()
            .lines()
            .collect();
        assert_eq!(
            labels,
            ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
            "{variant}"
        );
    }
}
