//! Compression recipes end to end on tiny quickstart runs: pruning → quantization-aware
//! training (the int8 file takes QAT's ranges, keeps the pruned zeros and agrees with the
//! fake-quant Burn model), and distillation over several seeds.

mod support;

use support::{report, variant_names};

use std::path::{Path, PathBuf};

use kiln_tflite::quant::{Range, asymmetric_int8_params};
use serde_json::Value;
use support::*;

/// Runs the quickstart (2 epochs on 1,024 digits, 200 test digits, unless `extra` sets
/// otherwise) with `recipe`, in a fresh scratch directory.
fn tiny_run(name: &str, recipe: &str, extra: &[&str]) -> (PathBuf, std::process::Output) {
    let dir = scratch_dir(name);
    std::fs::write(dir.join("recipe.toml"), recipe).unwrap();
    let out = dir.join("run");
    let result = rerun(&out, extra);
    (out, result)
}

/// Runs tiny_run's pipeline again into its run directory `out`, with `extra` arguments.
fn rerun(out: &Path, extra: &[&str]) -> std::process::Output {
    let recipe_path = out.parent().unwrap().join("recipe.toml");
    let pipeline_set = format!("pipeline={}", recipe_path.display());
    let mut args = vec![
        "run",
        "configs/quickstart.toml",
        "--out",
        out.to_str().unwrap(),
        "--set",
        &pipeline_set,
        "--set",
        "train.epochs=2",
        "--set",
        "data.limit_train=1024",
        "--set",
        "data.limit_test=200",
        "--set",
        "export.variants=[\"fp32\"]",
        "--set",
        "verify.latency_runs=2",
    ];
    args.extend_from_slice(extra);
    pipeline(&args)
}

fn variant<'r>(report: &'r Value, name: &str) -> &'r Value {
    report["variants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no variant {name}: {}", report["variants"]))
}

fn succeeded(result: &std::process::Output) {
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
}

/// Prune to 80%, then QAT from the pruned model: `pruned80_qat_int8` keeps the zeros, its
/// activation parameters are exactly those of QAT's ranges, and its logits are the
/// fake-quant Burn model's.
#[test]
fn qat_after_pruning_exports_sparse_int8_with_the_learned_ranges() {
    let (out, result) = tiny_run(
        "qat_after_pruning",
        r#"stages = ["train", "prune", "qat", "export", "verify", "report"]
[prune]
final_sparsity = 0.8
epochs = 2
end_epoch = 1
frequency = 4
learning_rate = 0.0005
variants = ["int8"]
[qat]
epochs = 1
learning_rate = 0.0001
"#,
        // All 4,000 training and 1,000 test digits: a model trained past the point where
        // near-tied logits dominate, so agreement measures quantization, not ties.
        &[
            "--set",
            "data.limit_train=4000",
            "--set",
            "data.limit_test=1000",
        ],
    );
    succeeded(&result);
    let report = report(&out);
    assert_eq!(report["qat"]["from"], "prune");
    let qat = variant(&report, "pruned80_qat_int8");
    assert!(qat["sparsity"].as_f64().unwrap() >= 0.8, "{qat}");
    let stages: Vec<&str> = qat["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "train",
            "prune 80%",
            "qat 1 epochs",
            "export int8 (QAT ranges)"
        ]
    );
    // The int8 file against the Burn model with fake-quant, on the 1,000 test digits: in
    // inference fake-quant computes what the int8 kernels compute, so the logits are equal.
    let parity = &qat["parity"];
    assert_eq!(parity["reference"], "burn (fake-quant)");
    assert_eq!(parity["argmax_agreement"].as_f64(), Some(1.0), "{parity}");
    assert!(parity["max_abs_diff"].as_f64().unwrap() < 1e-5, "{parity}");
    // QAT fine-tunes the pruned model: it does not lose what pruning kept.
    let pruned = report["pruning"]["burn_test_accuracy"].as_f64().unwrap();
    assert!(
        qat["accuracy"].as_f64().unwrap() >= pruned - 0.01,
        "{qat} vs the pruned Burn model's {pruned}"
    );

    let model = kiln_tflite::Model::read_file(&out.join("model_pruned80_qat_int8.tflite")).unwrap();
    let graph = &model.subgraphs[0];
    let ranges = report["qat"]["ranges"].as_array().unwrap();
    let names: Vec<&str> = ranges
        .iter()
        .map(|r| r["tensor"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["image", "conv1", "conv2", "dense1", "logits"]);
    for r in ranges {
        let name = r["tensor"].as_str().unwrap();
        let range = Range {
            min: r["min"].as_f64().unwrap() as f32,
            max: r["max"].as_f64().unwrap() as f32,
        };
        let expected = asymmetric_int8_params(range);
        let tensor = graph.tensors.iter().find(|t| t.name == name).unwrap();
        let q = tensor.quantization.as_ref().expect("quantized");
        assert_eq!(q.scale, vec![expected.scale], "{name}");
        assert_eq!(q.zero_point, vec![i64::from(expected.zero_point)], "{name}");
    }
    assert_eq!(
        assert_weights_80_percent_zeros(&out.join("model_pruned80_qat_int8.tflite")),
        4
    );

    // `pipeline verify` reaches every exported variant by name.
    let verify = pipeline(&[
        "verify",
        out.to_str().unwrap(),
        "--variant",
        "pruned80_qat_int8",
        "--images",
        "20",
        "--json",
    ]);
    succeeded(&verify);
    let layers: Value = serde_json::from_slice(&verify.stdout).unwrap();
    assert_eq!(layers[0]["variant"], "pruned80_qat_int8");
    let verify = pipeline(&["verify", out.to_str().unwrap(), "--variant", "qat_int8"]);
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(
        !verify.status.success()
            && stderr.contains("exported: fp32, pruned80_int8, pruned80_qat_int8"),
        "{stderr}"
    );
}

/// A small student learns from the quickstart model over two seeds (`--seeds`): the report
/// holds each seed's student with and without the teacher and their mean ± std, and the
/// distilled student is exported and verified.
#[test]
fn distillation_compares_students_over_seeds() {
    let (out, result) = tiny_run(
        "distill_seeds",
        r#"stages = ["train", "distill", "export", "verify", "report"]
[distill]
student = { architecture = "small_cnn", conv_filters = [8, 16], dense_units = 32 }
temperature = 4.0
alpha = 0.9
epochs = 3
variants = ["fp32", "int8"]
"#,
        &["--seeds", "2"],
    );
    succeeded(&result);
    let report = report(&out);
    let d = &report["distillation"];
    let seeds = d["seeds"].as_array().unwrap();
    assert_eq!(seeds.len(), 2, "{d}");
    assert_eq!(seeds[0]["seed"], 42);
    assert_eq!(seeds[1]["seed"], 43);
    for s in seeds {
        for key in ["baseline_accuracy", "distilled_accuracy"] {
            let a = s[key].as_f64().unwrap();
            assert!(a > 0.3, "{key} {a}: the student learns in three epochs");
        }
    }
    let mean = (seeds[0]["distilled_accuracy"].as_f64().unwrap()
        + seeds[1]["distilled_accuracy"].as_f64().unwrap())
        / 2.0;
    assert!((d["distilled"]["mean"].as_f64().unwrap() - mean).abs() < 1e-12);
    assert!(d["student_parameters"].as_u64().unwrap() < d["teacher_parameters"].as_u64().unwrap());
    for name in ["student_fp32", "student_int8"] {
        let v = variant(&report, name);
        assert!(v["accuracy"].as_f64().is_some(), "{v}");
    }
    assert_eq!(
        variant(&report, "student_fp32")["parity"]["argmax_agreement"],
        1.0
    );
    let markdown = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(markdown.contains("## Distillation"), "{markdown}");
    assert!(markdown.contains("mean ± std over 2"), "{markdown}");

    // One more seed on resume: the two students of each earlier seed are reused as they were.
    succeeded(&rerun(&out, &["--seeds", "3", "--resume"]));
    let more = self::report(&out);
    let more_seeds = more["distillation"]["seeds"].as_array().unwrap();
    assert_eq!(more_seeds.len(), 3);
    assert_eq!(more_seeds[..2], seeds[..]);

    // That run's model teaches again from its run directory, with no train stage.
    let teacher_run = format!("teacher_run = {:?}\n", out.display().to_string());
    let (again, result) = tiny_run(
        "distill_from_a_run",
        &format!(
            "stages = [\"distill\", \"export\", \"verify\", \"report\"]\n[distill]\n{teacher_run}\
             student = {{ architecture = \"small_cnn\", conv_filters = [8, 16], dense_units = 32 }}\n\
             epochs = 1\nvariants = [\"int8\"]\n"
        ),
        &[],
    );
    succeeded(&result);
    let report = self::report(&again);
    assert!(report.get("training").is_none(), "no train stage ran");
    assert_eq!(report["distillation"]["teacher"], out.display().to_string());
    assert_eq!(
        report["distillation"]["teacher_test_accuracy"], d["teacher_test_accuracy"],
        "the same teacher, reloaded"
    );
    let names = variant_names(&report);
    assert_eq!(names, ["student_int8"]);

    // Its exported fp32 file teaches through kiln-runtime, and so does the run's int8 student
    // (int8 input and output, quantized and dequantized with the file's parameters).
    let float_teacher = out.join("model_fp32.tflite");
    let int8_teacher = again.join("model_student_int8.tflite");
    for (name, file) in [
        ("distill_from_tflite", &float_teacher),
        ("distill_from_int8_tflite", &int8_teacher),
    ] {
        let teacher_tflite = format!("teacher_tflite = {:?}\n", file.display().to_string());
        let (from_file, result) = tiny_run(
            name,
            &format!(
                "stages = [\"distill\", \"export\", \"report\"]\n[distill]\n{teacher_tflite}\
                 student = {{ architecture = \"small_cnn\", conv_filters = [8, 16], dense_units = 32 }}\n\
                 epochs = 1\nvariants = [\"fp32\"]\n"
            ),
            &[],
        );
        succeeded(&result);
        let d = &self::report(&from_file)["distillation"];
        assert_eq!(d["teacher"], file.display().to_string());
        assert!(d["teacher_parameters"].as_u64().unwrap() > 1000, "{d}");
        let teacher_accuracy = d["teacher_test_accuracy"].as_f64().unwrap();
        // The float file: the Burn teacher's weights through the runtime; the int8 file: the
        // accuracy its own run verified.
        let expected = if file == &float_teacher {
            report["distillation"]["teacher_test_accuracy"]
                .as_f64()
                .unwrap()
        } else {
            report["variants"][0]["accuracy"].as_f64().unwrap()
        };
        assert!(
            (teacher_accuracy - expected).abs() <= 0.01,
            "{name}: {teacher_accuracy} vs {expected}"
        );
    }

    // A file for other images is refused before any training, naming both shapes.
    let (_, result) = tiny_run(
        "distill_from_wrong_tflite",
        &format!(
            "stages = [\"distill\", \"export\"]\n[distill]\nteacher_tflite = {:?}\n\
             student = {{ architecture = \"small_cnn\" }}\n",
            float_teacher.display().to_string()
        ),
        &["--set", "data.image_size=[20, 20]"],
    );
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.contains("[1, 28, 28, 1]") && stderr.contains("[1, 20, 20, 1]"),
        "{stderr}"
    );
}

/// `--seeds` belongs to distillation; without a distill stage it is a named error, and a
/// malformed [qat] table names the stage and the key.
#[test]
fn seeds_without_distillation_and_bad_qat_tables_are_named_errors() {
    let (_, result) = tiny_run(
        "seeds_without_distill",
        "stages = [\"train\", \"export\"]\n",
        &["--seeds", "3"],
    );
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.contains("--seeds") && stderr.contains("no distill stage"),
        "{stderr}"
    );

    let (_, result) = tiny_run(
        "bad_qat",
        "stages = [\"train\", \"qat\", \"export\"]\n[qat]\nepochs = 2\nlearning_rate = 0.001\nquant_delay_epochs = 2\n",
        &[],
    );
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.contains("stage `qat`") && stderr.contains("quant_delay_epochs"),
        "{stderr}"
    );
}

/// The quickstart's own recipe (pipelines/quickstart.toml) exports the dense variants, the
/// distilled student (compared over 3 seeds), `pruned80_int8` (block-pruned, stored sparse),
/// `clustered16_int8` and `qat_int8`, each verified.
#[test]
fn the_quickstart_recipe_exports_pruned80_int8_and_qat_int8() {
    let recipe = std::fs::read_to_string(repo_root().join("pipelines/quickstart.toml")).unwrap();
    let (out, result) = tiny_run("quickstart_recipe", &recipe, &[]);
    succeeded(&result);
    let report = report(&out);
    let names = variant_names(&report);
    assert_eq!(
        names,
        [
            "fp32",
            "student_int8",
            "pruned80_int8",
            "clustered16_int8",
            "qat_int8"
        ]
    );
    assert_eq!(report["distillation"]["seeds"].as_array().unwrap().len(), 3);
    let pruned = variant(&report, "pruned80_int8");
    assert!(pruned["sparsity"].as_f64().unwrap() >= 0.8);
    // Pruned in 16×16 blocks (unions of LiteRT's 1×16), the dense layer is stored sparse: the
    // file is at most half the size it has with every weight dense.
    let (bytes, dense) = (
        pruned["bytes"].as_u64().unwrap(),
        pruned["dense_bytes"].as_u64().expect("stored sparse"),
    );
    assert!(bytes * 2 <= dense, "{bytes} bytes, {dense} dense");
    assert!(
        pruned["sparse_storage"]
            .as_str()
            .unwrap()
            .contains("1x16 blocks"),
        "{pruned}"
    );
    // The report (and `pipeline compare`) names each compressed variant's pattern and clusters.
    assert_eq!(pruned["pattern"], "16x16 blocks", "{pruned}");
    let clustered = variant(&report, "clustered16_int8");
    assert_eq!(clustered["clusters"], 16, "{clustered}");
    assert!(variant(&report, "qat_int8")["clusters"].is_null());
    assert_eq!(report["qat"]["from"], "train");
    for name in names {
        assert!(
            variant(&report, name)["parity"]["argmax_agreement"]
                .as_f64()
                .is_some()
        );
    }
}

/// `m_by_n = [2, 4]` (TF-MOT's `sparsity_m_by_n`): in the exported int8 file, every run of 4
/// consecutive inputs of every output of each dense layer and multi-channel convolution
/// (TFLite [out, in] and OHWI, inputs (kh, kw, in)) holds at most 2 non-zeros; the report
/// names the pattern per layer.
#[test]
fn two_of_four_pruning_leaves_at_most_two_of_every_four_inputs_in_the_file() {
    let (out, result) = tiny_run(
        "two_of_four",
        r#"stages = ["train", "prune", "export", "verify", "report"]
[prune]
final_sparsity = 0.5
m_by_n = [2, 4]
epochs = 2
end_epoch = 1
frequency = 4
learning_rate = 0.0005
variants = ["int8"]
"#,
        &[],
    );
    succeeded(&result);
    let report = report(&out);
    let layers = report["pruning"]["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 4);
    let model = kiln_tflite::Model::read_file(&out.join("model_pruned50_int8.tflite")).unwrap();
    let mut checked = Vec::new();
    for tensor in &model.subgraphs[0].tensors {
        let is_weight = tensor.name.ends_with("/filter") || tensor.name.ends_with("/weights");
        let shape: Vec<usize> = tensor.shape.iter().map(|&d| d as usize).collect();
        // Single-channel convolutions (conv1 on grey digits) are pruned value by value.
        if !is_weight || shape.last() == Some(&1) {
            continue;
        }
        assert!(tensor.sparsity.is_none(), "{}: stored dense", tensor.name);
        let data = model.tensor_data(tensor);
        let inputs: usize = shape[1..].iter().product();
        for (row, weights) in data.chunks_exact(inputs).enumerate() {
            for (group, four) in weights.chunks(4).enumerate() {
                let kept = four.iter().filter(|&&b| b != 0).count();
                assert!(
                    kept <= 2,
                    "{} output {row} group {group}: {four:?}",
                    tensor.name
                );
            }
        }
        checked.push(tensor.name.clone());
    }
    assert_eq!(
        checked,
        ["conv2/filter", "dense1/weights", "logits/weights"],
        "every multi-channel weight"
    );
    let markdown = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        markdown.contains("| `fc1` | 102400 |") && markdown.contains("| 2:4 |"),
        "{markdown}"
    );
}

/// `[cluster]` after `[prune]` (TF-MOT's sparsity-preserving clustering): `clustered16_int8`
/// is exported and verified; in the file every output channel of each clustered weight
/// holds at most 16 distinct non-zero int8 values (per-channel scales keep one value per
/// centroid), the pruned zeros are still there, and the report has the clustering table.
#[test]
fn clustering_after_pruning_leaves_at_most_16_values_per_channel() {
    let (out, result) = tiny_run(
        "cluster_after_prune",
        r#"stages = ["train", "prune", "cluster", "export", "verify", "report"]
[prune]
final_sparsity = 0.5
epochs = 2
end_epoch = 1
frequency = 4
learning_rate = 0.0005
variants = []
[cluster]
from = "prune"
clusters = 16
epochs = 1
learning_rate = 0.0005
"#,
        &[],
    );
    succeeded(&result);
    let report = report(&out);
    let clustered = variant(&report, "pruned50_clustered16_int8");
    assert!(clustered["parity"]["argmax_agreement"].as_f64().is_some());
    let layers = report["clustering"]["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 4);
    for layer in layers {
        assert!(layer["distinct_values"].as_u64().unwrap() <= 16, "{layer}");
        assert!(
            layer["sparsity"].as_f64().unwrap() >= 0.49,
            "zeros kept: {layer}"
        );
    }
    let model =
        kiln_tflite::Model::read_file(&out.join("model_pruned50_clustered16_int8.tflite")).unwrap();
    let mut checked = 0;
    for tensor in &model.subgraphs[0].tensors {
        let is_weight = tensor.name.ends_with("/filter") || tensor.name.ends_with("/weights");
        let data = model.tensor_data(tensor);
        if !is_weight || data.is_empty() {
            continue;
        }
        let outputs = tensor.shape[0] as usize;
        for (channel, values) in data.chunks_exact(data.len() / outputs).enumerate() {
            let mut distinct: Vec<u8> = values.iter().copied().filter(|&b| b != 0).collect();
            distinct.sort_unstable();
            distinct.dedup();
            assert!(
                distinct.len() <= 16,
                "{} channel {channel}: {distinct:?}",
                tensor.name
            );
        }
        checked += 1;
    }
    assert!(checked >= 3, "{checked} weights checked");
    let markdown = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(markdown.contains("## Clustering"), "{markdown}");
}
