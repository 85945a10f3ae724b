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
use kiln_tflite::Model;
use serde_json::Value;
use support::litert::*;
use support::*;

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
        let tiny = [
            "train.epochs=1",
            "train.warmup_epochs=0",
            "data.limit_train=256",
            "data.limit_test=32",
            "export.calibration_samples=32",
            "verify.latency_runs=2",
        ];
        run_config(
            "configs/efficientnet_b0.toml",
            &dir,
            &[&tiny[..], sets].concat(),
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
    let defaults = [
        pipeline_set.as_str(),
        "train.epochs=2",
        "data.limit_test=64",
        "verify.latency_runs=2",
    ];
    run_config(config, dir, &[&defaults[..], sets].concat());
}

/// `pipeline run CONFIG --out DIR --set …` for each of `sets`; it must succeed.
fn run_config(config: &str, dir: &Path, sets: &[&str]) {
    let mut args = vec!["run", config, "--out", dir.to_str().unwrap()];
    for set in sets {
        args.extend(["--set", set]);
    }
    let out = support::pipeline(&args);
    assert!(
        out.status.success(),
        "{config}: {}",
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

/// Zeroes 80% of every conv and fully-connected weight of a float32 model by magnitude: each
/// value on its own, or whole `block`s (outputs × inputs of the weight seen as [out, in]) by
/// their L1 norm, what `[prune] block` does in training — for fully-connected weights only,
/// or with `conv_too` also for convolutions whose inputs the block divides.
fn prune_weights(model: &mut Model, block: Option<(usize, usize)>, conv_too: bool) {
    use kiln_tflite::{BuiltinOp, TensorType};
    let graph = &model.subgraphs[0];
    let weights: Vec<(usize, bool)> = graph
        .operators
        .iter()
        .filter_map(|op| {
            let code = model.opcode_of(op)?.builtin;
            let fc = code == BuiltinOp::FULLY_CONNECTED;
            let weighted = fc || code == BuiltinOp::CONV_2D || code == BuiltinOp::DEPTHWISE_CONV_2D;
            let t = usize::try_from(*op.inputs.get(1)?).ok()?;
            (weighted && graph.tensors[t].dtype == TensorType::Float32).then_some((t, fc))
        })
        .collect();
    for (t, fc) in weights {
        let tensor = model.subgraphs[0].tensors[t].clone();
        let mut values: Vec<f32> = model
            .tensor_data(&tensor)
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let outputs = usize::try_from(tensor.shape[0]).unwrap();
        let inputs = values.len() / outputs;
        let (rows, cols) = block
            .filter(|&(rows, cols)| {
                (fc || conv_too) && outputs.is_multiple_of(rows) && inputs.is_multiple_of(cols)
            })
            .unwrap_or((1, 1));
        // Block (r, c) holds outputs r·rows.. and inputs c·cols.. .
        let blocks_per_row = inputs / cols;
        let block_of = |i: usize| (i / inputs / rows) * blocks_per_row + i % inputs / cols;
        let mut norms = vec![0.0f32; values.len() / (rows * cols)];
        for (i, v) in values.iter().enumerate() {
            norms[block_of(i)] += v.abs();
        }
        let mut sorted = norms.clone();
        sorted.sort_by(f32::total_cmp);
        let threshold = sorted[sorted.len() * 8 / 10];
        for (i, v) in values.iter_mut().enumerate() {
            if norms[block_of(i)] < threshold {
                *v = 0.0;
            }
        }
        let buffer = model.push_buffer(values.iter().flat_map(|v| v.to_le_bytes()).collect());
        model.subgraphs[0].tensors[t].buffer = buffer;
    }
}

/// Pruned weights stored sparse (`kiln_export::to_sparse`) run in LiteRT under all three
/// kernel sets with kiln-runtime's outputs (float32 within 1e-5, int8 bit-exact with the
/// reference kernels and within a step of the others): unstructured pruning (every weight
/// CSR behind DENSIFY, float32 and int8), the dense layer pruned in 1×16 blocks (read by
/// FULLY_CONNECTED v8 itself: 1×4 blocks for float32, 1×16 for int8), and every layer but the
/// first in 16×16 blocks (the quickstart recipe's: stored the same way, run by kiln-runtime's
/// panel lists). The sparse files are smaller, and kiln-runtime computes on them exactly what
/// it computes on the dense ones.
#[test]
fn sparse_pruned_files_run_in_litert_under_every_kernel_set() {
    use kiln_export::{SparseLayout, to_sparse};
    let Some(python) = litert() else { return };
    let dir = tiny_quickstart_run(&scratch_dir("litert_sparse"));
    let fp32 = Model::read_file(&dir.join("model_fp32.tflite")).unwrap();
    for (label, block, conv_too, float_fc, int8_fc) in [
        // An int8 fully-connected weight stays dense unless pruned in 1×16 blocks.
        (
            "unstructured",
            None,
            false,
            Some(SparseLayout::Densify),
            None,
        ),
        (
            "blocks",
            Some((1, 16)),
            false,
            Some(SparseLayout::Blocks { width: 4 }),
            Some(SparseLayout::Blocks { width: 16 }),
        ),
        (
            "panels",
            Some((16, 16)),
            true,
            Some(SparseLayout::Blocks { width: 4 }),
            Some(SparseLayout::Blocks { width: 16 }),
        ),
    ] {
        let mut pruned = fp32.clone();
        prune_weights(&mut pruned, block, conv_too);
        let mut calibrator = Calibrator::new(&pruned).unwrap();
        for row in uniform_inputs(ROWS * 28 * 28, 3).chunks_exact(28 * 28) {
            calibrator.observe(&[row]).unwrap();
        }
        let int8 = quantize_int8(
            &pruned,
            &calibrator.finish().unwrap(),
            &Int8Options::default(),
        )
        .unwrap();
        for (kind, dense, fc_layout, expect) in [
            ("fp32", &pruned, float_fc, Expect::Float { rel: 1e-5 }),
            (
                "int8",
                &int8,
                int8_fc,
                Expect::Steps {
                    step: 1.0,
                    slack: 1.0,
                },
            ),
        ] {
            let (sparse, report) = to_sparse(dense).unwrap();
            let layout = |name: &str| report.iter().find(|w| w.name == name).map(|w| w.layout);
            assert_eq!(
                layout("conv2/filter"),
                Some(SparseLayout::Densify),
                "{label} {kind}"
            );
            assert_eq!(layout("dense1/weights"), fc_layout, "{label} {kind}");
            eprintln!("{label} {kind}: {report:?}");
            let name = format!("sparse_{label}_{kind}");
            let (dense_path, sparse_path) = (
                dir.join(format!("{name}_dense.tflite")),
                dir.join(format!("{name}.tflite")),
            );
            dense.write_file(&dense_path).unwrap();
            sparse.write_file(&sparse_path).unwrap();
            let (before, after) = (
                std::fs::metadata(&dense_path).unwrap().len(),
                std::fs::metadata(&sparse_path).unwrap().len(),
            );
            eprintln!("{name}: {after} bytes sparse, {before} dense");
            // Unstructured int8 keeps its fully-connected weight dense.
            let at_most = if fc_layout.is_some() { 0.5 } else { 0.95 };
            assert!(
                (after as f64) < at_most * before as f64,
                "{name}: {after} vs {before} bytes"
            );
            let rows = uniform_inputs(4 * 28 * 28, 5);
            for row in rows.chunks_exact(28 * 28) {
                let run = |model: &Model| {
                    let mut interpreter = kiln_runtime::Interpreter::new(model.clone()).unwrap();
                    kiln_runtime::real_io::set_input(&mut interpreter, 0, row).unwrap();
                    interpreter.invoke().unwrap();
                    kiln_runtime::real_io::output(&interpreter, 0).unwrap()
                };
                assert_eq!(run(dense), run(&sparse), "{name}");
            }
            check_variant(&python, &dir, &name, &sparse_path, expect);
        }
    }
}

/// A clustered model (every conv and dense weight snapped to 16 values per layer) exports
/// its int8 weights per tensor — one grid for all channels, one code per value — and LiteRT
/// runs that file under all three kernel sets with kiln-runtime's outputs (bit-exact with
/// the reference kernels, within a step of the others).
#[test]
fn clustered_int8_files_run_in_litert_under_every_kernel_set() {
    use kiln_tflite::{BuiltinOp, TensorType};
    let Some(python) = litert() else { return };
    let dir = tiny_quickstart_run(&scratch_dir("litert_clustered"));
    let mut model = Model::read_file(&dir.join("model_fp32.tflite")).unwrap();
    let graph = &model.subgraphs[0];
    let weights: Vec<usize> = graph
        .operators
        .iter()
        .filter(|op| {
            model.opcode_of(op).is_some_and(|c| {
                matches!(c.builtin, BuiltinOp::CONV_2D | BuiltinOp::FULLY_CONNECTED)
            })
        })
        .map(|op| op.inputs[1] as usize)
        .collect();
    for t in weights {
        let tensor = model.subgraphs[0].tensors[t].clone();
        assert_eq!(tensor.dtype, TensorType::Float32);
        let values: Vec<f32> = model
            .tensor_data(&tensor)
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        // 16 evenly spaced centroids over the layer's range.
        let (lo, hi) = values
            .iter()
            .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
        let step = (hi - lo) / 15.0;
        let snapped: Vec<u8> = values
            .iter()
            .flat_map(|&v| (lo + ((v - lo) / step).round() * step).to_le_bytes())
            .collect();
        let buffer = model.push_buffer(snapped);
        model.subgraphs[0].tensors[t].buffer = buffer;
    }
    let mut calibrator = Calibrator::new(&model).unwrap();
    for row in uniform_inputs(ROWS * 28 * 28, 3).chunks_exact(28 * 28) {
        calibrator.observe(&[row]).unwrap();
    }
    let int8 = quantize_int8(
        &model,
        &calibrator.finish().unwrap(),
        &Int8Options::default(),
    )
    .unwrap();
    for tensor in &int8.subgraphs[0].tensors {
        if tensor.name.ends_with("/filter") || tensor.name.ends_with("/weights") {
            let q = tensor.quantization.as_ref().unwrap();
            assert_eq!(
                q.scale.len(),
                1,
                "{}: one scale for the tensor",
                tensor.name
            );
            let mut codes = int8.tensor_data(tensor).to_vec();
            codes.sort_unstable();
            codes.dedup();
            assert!(codes.len() <= 16, "{}: {} codes", tensor.name, codes.len());
        }
    }
    let path = dir.join("clustered_int8.tflite");
    int8.write_file(&path).unwrap();
    check_variant(
        &python,
        &dir,
        "clustered_int8",
        &path,
        Expect::Steps {
            step: 1.0,
            slack: 1.0,
        },
    );
}
