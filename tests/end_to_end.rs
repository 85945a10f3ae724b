//! The spine end to end: a tiny quickstart run trains, exports, verifies and reports; the
//! written file then runs through `pipeline infer` and `pipeline inspect`.

mod support;

use serde_json::Value;
use support::*;

#[test]
fn quickstart_trains_exports_verifies_and_reports() {
    let dir = tiny_quickstart_run(&scratch_dir("e2e-quickstart"));
    let report: Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();

    assert_eq!(report["dataset"]["train_rows"], 1024);
    assert_eq!(report["dataset"]["test_rows"], 64);
    assert_eq!(report["dataset"]["classes"].as_array().unwrap().len(), 10);
    assert_eq!(report["config_sha256"].as_str().unwrap().len(), 64);
    let fp32 = &report["variants"][0];
    assert_eq!(fp32["name"], "fp32");
    assert_eq!(fp32["file"], "model_fp32.tflite");
    let bytes = std::fs::metadata(dir.join("model_fp32.tflite"))
        .unwrap()
        .len();
    assert_eq!(fp32["bytes"].as_u64().unwrap(), bytes);
    assert!(fp32["gzip_bytes"].as_u64().unwrap() < bytes);
    // Two epochs on 1,024 digits learn far above chance (10%).
    assert!(fp32["accuracy"].as_f64().unwrap() > 0.6, "{fp32}");
    assert!(fp32["latency_ms_p50"].as_f64().unwrap() > 0.0);
    assert_eq!(
        fp32["parity"]["argmax_agreement"].as_f64().unwrap(),
        1.0,
        "{fp32}"
    );
    assert!(
        fp32["parity"]["max_abs_diff"].as_f64().unwrap() < 1e-3,
        "{fp32}"
    );
    assert!(dir.join("report.md").exists());
    assert!(
        dir.join("model.bpk").exists(),
        "the Burn checkpoint is saved each epoch"
    );
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("| fp32 |"), "{md}");
    assert_eq!(fp32["size_vs_fp32"].as_f64().unwrap(), 1.0);
    assert_eq!(fp32["accuracy_delta"].as_f64().unwrap(), 0.0);
}

/// The quickstart also writes fp16, dynamic-range and int8 files; each is verified on the test
/// split and compared with fp32. The architecture is the quickstart's, so the sizes are the
/// quickstart's and issue 5's size targets apply here too.
#[test]
fn quickstart_exports_fp16_dynamic_and_int8_variants() {
    let dir = tiny_quickstart_run(&scratch_dir("e2e-variants"));
    let report: Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
    let variants = report["variants"].as_array().unwrap();
    let names: Vec<&str> = variants
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fp32", "fp16", "dynamic", "int8"]);
    let fp32_accuracy = variants[0]["accuracy"].as_f64().unwrap();
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    // (variant, largest size vs fp32, largest max |logit − Burn logit|, least argmax agreement)
    for (v, (name, max_size, max_diff, min_agreement)) in variants[1..].iter().zip([
        ("fp16", 0.51, 1e-2, 1.0),
        ("dynamic", 0.27, 1.0, 0.95),
        ("int8", 0.265, 1.5, 0.95),
    ]) {
        assert_eq!(v["name"], name);
        let file = format!("model_{name}.tflite");
        assert_eq!(v["file"], file.as_str());
        let bytes = std::fs::metadata(dir.join(&file)).unwrap().len();
        assert_eq!(v["bytes"].as_u64().unwrap(), bytes, "{name}");
        let size = v["size_vs_fp32"].as_f64().unwrap();
        assert!(size <= max_size, "{name}: {size:.4} of fp32's bytes");
        let accuracy = v["accuracy"].as_f64().unwrap();
        let delta = v["accuracy_delta"].as_f64().unwrap();
        assert!((delta - (accuracy - fp32_accuracy)).abs() < 1e-12, "{v}");
        // 64 test digits: a quantized variant may flip an image or two of a 2-epoch model.
        assert!(
            delta.abs() <= 0.05,
            "{name}: accuracy {accuracy} vs fp32 {fp32_accuracy}"
        );
        assert!(v["speedup_vs_fp32"].as_f64().unwrap() > 0.0, "{v}");
        let parity = &v["parity"];
        assert!(parity["max_abs_diff"].as_f64().unwrap() <= max_diff, "{v}");
        assert!(
            parity["argmax_agreement"].as_f64().unwrap() >= min_agreement,
            "{v}"
        );
        assert!(md.contains(&format!("| {name} |")), "{md}");
    }

    // The int8 file is int8 end to end: `pipeline inspect` shows the converter's versions.
    let out = pipeline(&[
        "inspect",
        dir.join("model_int8.tflite").to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let codes: Vec<String> = json["operator_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{}:v{}", c["op"].as_str().unwrap_or("?"), c["version"]))
        .collect();
    for expected in [
        "CONV_2D:v3",
        "MAX_POOL_2D:v2",
        "RESHAPE:v1",
        "FULLY_CONNECTED:v4",
    ] {
        assert!(codes.iter().any(|c| c == expected), "{codes:?}");
    }

    // Per-layer parity on demand: every layer of every variant against fp32.
    let run_dir = dir.to_str().unwrap();
    let out = pipeline(&["verify", run_dir, "--per-layer", "--images", "8"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "model_fp16.tflite",
        "model_dynamic.tflite",
        "model_int8.tflite",
        "dense1",
    ] {
        assert!(text.contains(needle), "{needle} missing:\n{text}");
    }
    let out = pipeline(&[
        "verify",
        run_dir,
        "--per-layer",
        "--variant",
        "int8",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let layers: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tensors = layers[0]["tensors"].as_array().unwrap();
    let names: Vec<&str> = tensors
        .iter()
        .map(|t| t["tensor"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "image", "conv1", "pool1", "conv2", "pool2", "flatten", "dense1", "logits"
        ]
    );
    for t in tensors {
        assert_eq!(t["dtype"], "INT8", "{t}");
        assert!(t["cosine"].as_f64().unwrap() > 0.99, "{t}");
    }
    // Without --per-layer, only the model's outputs are compared.
    let out = pipeline(&[
        "verify",
        run_dir,
        "--variant",
        "int8",
        "--images",
        "8",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outputs: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = outputs[0]["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tensor"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["logits"]);
}

#[test]
fn infer_and_inspect_run_the_exported_file() {
    let dir = tiny_quickstart_run(&scratch_dir("e2e-infer"));
    let model = dir.join("model_fp32.tflite");
    let input = dir.join("x.npy");
    let output = dir.join("y.npy");
    write_f32_npy(&input, &[3, 28, 28, 1], &uniform_inputs(3 * 28 * 28, 7));
    let out = infer(&model, &input, &output);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (shape, values) = read_f32_npy(&output);
    assert_eq!(shape, vec![3, 10]);
    assert!(values.iter().all(|v| v.is_finite()));

    // An input of the wrong shape is a clear error naming the expected shape.
    let bad = dir.join("bad.npy");
    write_f32_npy(&bad, &[2, 28, 28], &uniform_inputs(2 * 28 * 28, 1));
    let out = infer(&model, &bad, &output);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("shape") && stderr.contains("[1, 28, 28, 1]"),
        "{stderr}"
    );

    let out = pipeline(&["inspect", model.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "CONV_2D",
        "MAX_POOL_2D",
        "RESHAPE",
        "FULLY_CONNECTED",
        "arena:",
        "serving_default",
    ] {
        assert!(
            text.contains(needle),
            "inspect output lacks {needle}:\n{text}"
        );
    }
    let out = pipeline(&["inspect", model.to_str().unwrap(), "--json"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json["arena_bytes"].as_u64().unwrap() > 0);
    assert_eq!(json["signatures"][0]["inputs"][0]["name"], "image");
}

#[test]
fn bad_configs_are_named_errors() {
    let out = pipeline(&["run", "configs/quickstart.toml", "--set", "train.epochz=1"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("epochz") && stderr.contains("quickstart.toml"),
        "{stderr}"
    );

    let out = pipeline(&["run", "configs/does-not-exist.toml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does-not-exist.toml"));
}

/// A recipe with a prune stage: the dense variants plus `pruned80_int8`, whose pruned layers'
/// weights are ≥ 80% exact zeros in the file itself, with a per-layer table in the report.
#[test]
fn a_prune_recipe_exports_an_80_percent_sparse_int8_model() {
    let dir = scratch_dir("prune_recipe");
    let recipe = dir.join("prune.toml");
    std::fs::write(
        &recipe,
        r#"stages = ["train", "prune", "export", "verify", "report"]
[prune]
final_sparsity = 0.8
epochs = 2
end_epoch = 1
frequency = 4
learning_rate = 0.0005
variants = ["int8"]
"#,
    )
    .unwrap();
    let out = dir.join("run");
    let result = pipeline(&[
        "run",
        "configs/quickstart.toml",
        "--out",
        out.to_str().unwrap(),
        "--set",
        &format!("pipeline={}", recipe.display()),
        "--set",
        "train.epochs=2",
        "--set",
        "data.limit_train=1024",
        "--set",
        "data.limit_test=100",
        "--set",
        "export.variants=[\"fp32\"]",
        "--set",
        "verify.latency_runs=2",
    ]);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let pruned = report["variants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "pruned80_int8")
        .expect("pruned80_int8 variant");
    assert!(pruned["sparsity"].as_f64().unwrap() >= 0.8, "{pruned}");
    assert!(pruned["accuracy"].as_f64().is_some());
    let layers = report["pruning"]["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 4, "conv1, conv2, dense, logits: {layers:?}");

    // The file itself: every conv and dense weight tensor is at least 80% zeros.
    assert_eq!(
        assert_weights_80_percent_zeros(&out.join("model_pruned80_int8.tflite")),
        4
    );
}
