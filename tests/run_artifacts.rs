//! What a run directory holds besides the models — `manifest.json`, TensorFlow Lite Micro
//! sources for every int8 variant, the plots as SVG and PNG, TensorBoard event files — checked
//! on a tiny run of the quickstart's whole recipe (train, distill, prune, QAT) with a
//! validation split; and `pipeline verify` failing, naming the file, after one byte changes.

mod support;

use std::path::Path;
use std::process::Command;

use kiln_pipeline::tensorboard::read::{Scalar, read_events};
use serde_json::Value;
use support::*;

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every scalar of every event file under `dir`, by tag.
fn scalars(dir: &Path) -> Vec<Scalar> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .contains("tfevents")
        {
            all.extend(read_events(&path).unwrap().scalars);
        }
    }
    all
}

fn tagged<'a>(scalars: &'a [Scalar], tag: &str) -> Vec<&'a Scalar> {
    scalars.iter().filter(|s| s.tag == tag).collect()
}

#[test]
fn a_quickstart_run_directory_holds_its_manifest_micro_sources_plots_and_tensorboard_logs() {
    let dir = scratch_dir("artifacts-quickstart");
    let run_dir = dir.to_str().unwrap();
    let out = pipeline(&[
        "run",
        "configs/quickstart.toml",
        "--out",
        run_dir,
        "--set",
        "train.epochs=2",
        "--set",
        "data.limit_train=512",
        "--set",
        "data.limit_test=64",
        "--set",
        "data.validation_fraction=0.25",
        "--set",
        "verify.latency_runs=5",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&dir.join("report.json"));
    // The report names what measured the latency column.
    let runtime = report["latency_runtime"].as_str().unwrap();
    assert!(
        runtime.contains("1 thread") && runtime.contains("int8 GEMM"),
        "{runtime}"
    );
    let variants: Vec<String> = report["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();
    let int8: Vec<&String> = variants.iter().filter(|v| v.ends_with("int8")).collect();
    assert_eq!(
        int8,
        [
            "int8",
            "student_int8",
            "pruned80_int8",
            "clustered16_int8",
            "qat_int8"
        ],
        "{variants:?}"
    );

    // The manifest: identity of config, code and data, and every artifact's hash.
    let manifest = json(&dir.join("manifest.json"));
    assert_eq!(manifest["config"]["sha256"], report["config_sha256"]);
    assert!(
        manifest["config"]["effective"]
            .as_str()
            .unwrap()
            .contains("micro = true")
    );
    assert!(!manifest["kiln_version"].as_str().unwrap().is_empty());
    let data_files = manifest["data"]["files"].as_array().unwrap();
    assert_eq!(data_files.len(), 2, "{data_files:?}");
    for file in data_files {
        let bytes = std::fs::read(repo_root().join(file["path"].as_str().unwrap())).unwrap();
        assert_eq!(file["sha256"].as_str().unwrap(), sha256(&bytes));
    }
    let artifacts: Vec<&str> = manifest["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let path = a["path"].as_str().unwrap();
            let bytes = std::fs::read(dir.join(path)).unwrap();
            assert_eq!(a["sha256"].as_str().unwrap(), sha256(&bytes), "{path}");
            assert_eq!(a["bytes"].as_u64().unwrap(), bytes.len() as u64, "{path}");
            path
        })
        .collect();
    for variant in &variants {
        assert!(artifacts.contains(&format!("model_{variant}.tflite").as_str()));
    }
    for expected in ["report.json", "report.md", "config.toml", "model.bpk"] {
        assert!(
            artifacts.contains(&expected),
            "{expected} not in {artifacts:?}"
        );
    }
    assert!(artifacts.iter().any(|a| a.starts_with("tensorboard/")));
    assert!(!artifacts.iter().any(|a| a.starts_with("checkpoint")));

    // TensorFlow Lite Micro sources for every int8 variant, compiling against TFLM's API.
    for variant in &int8 {
        let tflite = std::fs::read(dir.join(format!("model_{variant}.tflite"))).unwrap();
        let header = dir.join(format!("model_{variant}_data.h"));
        let source = dir.join(format!("model_{variant}_data.cc"));
        for path in [&header, &source] {
            assert!(artifacts.contains(&path.file_name().unwrap().to_str().unwrap()));
        }
        let cc = std::fs::read_to_string(&source).unwrap();
        let body = cc.split_once("= {").unwrap().1.split_once("};").unwrap().0;
        let array: Vec<u8> = body
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| u8::from_str_radix(s.trim_start_matches("0x"), 16).unwrap())
            .collect();
        let entry = report["variants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == variant.as_str())
            .unwrap();
        match entry["dense_bytes"].as_u64() {
            // A file with sparse weights: the C array is its dense form (TensorFlow Lite Micro
            // has no DENSIFY or sparse kernels), which computes the same outputs.
            Some(dense) => {
                assert_eq!(array.len() as u64, dense, "{variant}");
                let model = kiln_tflite::Model::from_bytes(array.clone()).unwrap();
                assert!(
                    model.subgraphs[0]
                        .tensors
                        .iter()
                        .all(|t| t.sparsity.is_none()),
                    "{variant}: the C array is dense"
                );
                let run = |bytes: Vec<u8>| {
                    let mut interpreter = kiln_runtime::Interpreter::from_bytes(bytes).unwrap();
                    let input = vec![0.5f32; 28 * 28];
                    kiln_runtime::real_io::set_input(&mut interpreter, 0, &input).unwrap();
                    interpreter.invoke().unwrap();
                    kiln_runtime::real_io::output(&interpreter, 0).unwrap()
                };
                assert_eq!(run(array.clone()), run(tflite.clone()), "{variant}");
            }
            None => assert!(array == tflite, "{variant}: the C array is not the file"),
        }
        let h = std::fs::read_to_string(&header).unwrap();
        assert!(h.contains(&format!("g_model_{variant}_data_size = {};", array.len())));
        assert!(h.contains("MicroMutableOpResolver<kOperatorCount>"));
        for method in [
            "AddConv2D",
            "AddMaxPool2D",
            "AddReshape",
            "AddFullyConnected",
        ] {
            assert!(
                h.contains(&format!("resolver.{method}()")),
                "{variant}: {method}"
            );
        }
        let arena: usize = h
            .split_once("kTensorArenaSize = ")
            .unwrap()
            .1
            .split_once(';')
            .unwrap()
            .0
            .parse()
            .unwrap();
        let plan = kiln_runtime::Interpreter::from_bytes(tflite.clone())
            .unwrap()
            .arena_bytes();
        assert!(
            arena >= plan + plan / 10,
            "{variant}: arena {arena} B for activations planned at {plan} B"
        );
        let main = dir.join(format!("main_{variant}.cc"));
        std::fs::write(
            &main,
            format!(
                "#include \"model_{variant}_data.h\"\n#include <cstdint>\n\
                 alignas(16) static uint8_t arena[kiln_model_{variant}::kTensorArenaSize];\n\
                 int main() {{ static kiln_model_{variant}::OpResolver r;\n\
                 return kiln_model_{variant}::RegisterOps(r) + arena[0] + g_model_{variant}_data[4]; }}\n"
            ),
        )
        .unwrap();
        for file in [&source, &main] {
            let out = Command::new("g++")
                .args(["-std=c++17", "-fsyntax-only", "-Wall", "-Werror", "-I"])
                .arg(repo_root().join("crates/kiln-pipeline/tests/fixtures/tflm_stub"))
                .arg("-I")
                .arg(&dir)
                .arg(file)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::fs::remove_file(&main).unwrap();
    }

    // The plots, as SVG and PNG, embedded in the report.
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    for stem in ["training", "learning_rate", "sparsity", "variants"] {
        let svg = std::fs::read_to_string(dir.join(format!("{stem}.svg"))).unwrap();
        assert!(svg.starts_with("<svg"), "{stem}.svg");
        let png = image::open(dir.join(format!("{stem}.png"))).unwrap();
        assert_eq!(png.width(), 960, "{stem}.png");
        assert!(
            md.contains(&format!("({stem}.svg)")),
            "report.md lacks {stem}.svg"
        );
    }
    let training = std::fs::read_to_string(dir.join("training.svg")).unwrap();
    assert!(training.contains("\nvalidation\n"), "no validation curve");
    let variants_svg = std::fs::read_to_string(dir.join("variants.svg")).unwrap();
    assert!(variants_svg.contains("\nPareto frontier\n"));

    // TensorBoard: per-step and per-epoch scalars of every training run.
    let train_rows = report["dataset"]["train_rows"].as_u64().unwrap() as usize;
    let steps_per_epoch = train_rows.div_ceil(64);
    let tb = dir.join("tensorboard");
    let train = scalars(&tb.join("train/train"));
    let epochs: Vec<i64> = tagged(&train, "epoch_accuracy")
        .iter()
        .map(|s| s.step)
        .collect();
    assert_eq!(epochs, [1, 2]);
    assert_eq!(tagged(&train, "batch_loss").len(), 2 * steps_per_epoch);
    assert_eq!(
        tagged(&train, "batch_learning_rate").len(),
        2 * steps_per_epoch
    );
    let training_epochs = report["training"]["epochs"].as_array().unwrap();
    let first_loss = tagged(&train, "epoch_loss")[0].value;
    assert!((f64::from(first_loss) - training_epochs[0]["loss"].as_f64().unwrap()).abs() < 1e-5);
    let validation = scalars(&tb.join("train/validation"));
    assert_eq!(tagged(&validation, "epoch_accuracy").len(), 2);
    assert_eq!(tagged(&validation, "epoch_loss").len(), 2);
    assert!(!tagged(&scalars(&tb.join("prune/train")), "epoch_target_sparsity").is_empty());
    assert!(!tagged(&scalars(&tb.join("qat/train")), "batch_loss").is_empty());
    assert!(
        !tagged(
            &scalars(&tb.join("distill/seed42-distilled/train")),
            "epoch_loss"
        )
        .is_empty()
    );

    // TensorBoard's own reader sees the same (the test venv carries the tensorboard package).
    let python = litert_python().filter(|python| {
        Command::new(python)
            .args(["-c", "import tensorboard"])
            .status()
            .is_ok_and(|s| s.success())
    });
    match python {
        Some(python) => {
            let out = Command::new(python)
                .arg(repo_root().join("tests/tensorboard/read_scalars.py"))
                .arg(&tb)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
            let accuracy = &runs["train/train"]["epoch_accuracy"];
            assert_eq!(accuracy.as_array().unwrap().len(), 2, "{runs}");
            assert_eq!(accuracy[0][0], 1);
            assert!(
                (accuracy[1][1].as_f64().unwrap()
                    - f64::from(tagged(&train, "epoch_accuracy")[1].value))
                .abs()
                    < 1e-6
            );
            assert_eq!(
                runs["train/train"]["batch_loss"].as_array().unwrap().len(),
                2 * steps_per_epoch
            );
            assert!(runs["train/validation"]["epoch_loss"].is_array(), "{runs}");
            assert!(runs["distill/seed44-baseline/train"]["epoch_accuracy"].is_array());
        }
        None => assert!(
            std::env::var_os("KILN_REQUIRE_LITERT").is_none(),
            "TensorBoard is missing from the test venv (scripts/test.sh installs it)"
        ),
    }

    // Verification checks the manifest first; one changed byte fails it, naming the file.
    let verify = pipeline(&["verify", run_dir, "--images", "4"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(String::from_utf8_lossy(&verify.stdout).contains("artifacts match"));
    let target = dir.join("model_int8.tflite");
    let mut bytes = std::fs::read(&target).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&target, &bytes).unwrap();
    let verify = pipeline(&["verify", run_dir, "--images", "4"]);
    assert!(!verify.status.success());
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(stderr.contains("model_int8.tflite: changed"), "{stderr}");
    assert!(!stderr.contains("model_fp32.tflite"), "{stderr}");
}
