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
}

#[test]
fn infer_and_inspect_run_the_exported_file() {
    let dir = tiny_quickstart_run(&scratch_dir("e2e-infer"));
    let model = dir.join("model_fp32.tflite");
    let input = dir.join("x.npy");
    let output = dir.join("y.npy");
    write_f32_npy(&input, &[3, 28, 28, 1], &uniform_inputs(3 * 28 * 28, 7));
    let out = pipeline(&[
        "infer",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (shape, values) = read_f32_npy(&output);
    assert_eq!(shape, vec![3, 10]);
    assert!(values.iter().all(|v| v.is_finite()));

    // A single row of the wrong dtype is a clear error.
    let bad = dir.join("bad.npy");
    write_f32_npy(&bad, &[2, 28, 28], &uniform_inputs(2 * 28 * 28, 1));
    let out = pipeline(&[
        "infer",
        model.to_str().unwrap(),
        "--input",
        bad.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
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
