//! Transfer learning from a Hub model repo, end to end: a fake Hugging Face Hub on 127.0.0.1
//! serves a timm-layout EfficientNet-B0 (`model.safetensors`, a small random one from
//! kiln-nn's parity fixtures) and the cats-vs-dogs dataset layout; `pipeline run` downloads
//! both into the Hugging Face cache, loads the backbone strictly, trains a new head, exports
//! every variant and verifies it; the report names the weights (repo, commit, sha256). A
//! second, offline run makes no request. The first epoch trains the head alone on the frozen
//! backbone's cached features, the second everything (the backbone at a tenth of the rate);
//! all four variants run in LiteRT with kiln-runtime's outputs. Wrong weights fail with the key and both shapes.

mod support;

use support::{report, variant_names};

use std::path::Path;

use support::catsdogs_fixture::catsdogs_parquet;
use support::fake_hub::{FakeHub, FakeRepo, sha256_hex};
use support::litert::{Expect, check_variant, litert};
use support::{pipeline_with_env, repo_root, scratch_dir};

const DATA_SHA: &str = "0123456789abcdef0123456789abcdef01234567";
const MODEL_SHA: &str = "89abcdef0123456789abcdef0123456789abcdef";

fn weights(name: &str) -> Vec<u8> {
    let path = repo_root()
        .join("crates/kiln-nn/tests/fixtures/pretrained")
        .join(name);
    std::fs::read(&path).expect("kiln-nn pretrained fixture")
}

fn hub(model_file: &str) -> FakeHub {
    hub_serving("timm/efficientnet_b0.tiny", model_file, "efficientnet_b0")
}

/// The dataset and `model_repo` with `model_file` as its weights and a timm `config.json`
/// naming `timm_architecture`.
fn hub_serving(model_repo: &str, model_file: &str, timm_architecture: &str) -> FakeHub {
    FakeHub::start(vec![
        FakeRepo::new(
            "microsoft/cats_vs_dogs",
            DATA_SHA,
            vec![(
                "data/train-00000-of-00001.parquet".into(),
                catsdogs_parquet(64, 1, &[], &[]),
            )],
        ),
        FakeRepo::new(
            model_repo,
            MODEL_SHA,
            vec![
                ("model.safetensors".into(), weights(model_file)),
                (
                    "config.json".into(),
                    format!(r#"{{"architecture": "{timm_architecture}"}}"#).into_bytes(),
                ),
            ],
        ),
    ])
}

fn config(dir: &Path) -> std::path::PathBuf {
    let recipe = repo_root().join("pipelines/float32.toml");
    let text = format!(
        r#"name = "pretrained"
seed = 7
pipeline = "{}"

[data]
image_column = "image"
label_column = "labels"
color = "rgb"
image_size = [32, 32]
split = [0.7, 0.1, 0.2]
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]

[data.hub]
repo = "microsoft/cats_vs_dogs"
train_split = "train"

[model]
architecture = "efficientnet_b0"
pretrained = "timm/efficientnet_b0.tiny@main"
width_multiplier = 0.25
depth_multiplier = 0.34
head = {{ dense = [16], batch_norm = true, dropout = 0.2, pooling = "max" }}

[train]
epochs = 2
batch_size = 16
learning_rate = 0.001
freeze_backbone_epochs = 1   # the head alone on cached features, then everything
backbone_lr_scale = 0.1

[export]
variants = ["fp32", "fp16", "dynamic", "int8"]
calibration_samples = 16

[verify]
latency_runs = 2
"#,
        recipe.display()
    );
    let path = dir.join("pretrained.toml");
    std::fs::write(&path, text).expect("config");
    path
}

#[test]
fn a_hub_backbone_fine_tunes_exports_and_reruns_offline() {
    let dir = scratch_dir("pretrained_hub");
    let hub = hub("efficientnet_b0.safetensors");
    let endpoint = hub.endpoint();
    let hf_cache = dir.join("hf");
    let hf_cache = hf_cache.to_str().unwrap();
    let kiln_cache = dir.join("kiln");
    let config = config(&dir);
    let config = config.to_str().unwrap();
    let env = [
        ("HF_ENDPOINT", endpoint.as_str()),
        ("HF_HUB_CACHE", hf_cache),
        ("KILN_CACHE_DIR", kiln_cache.to_str().unwrap()),
    ];
    let first = dir.join("first");
    let out = pipeline_with_env(&["run", config, "--out", first.to_str().unwrap()], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report(&first);
    let p = &r["training"]["pretrained"];
    assert_eq!(p["repo"], "timm/efficientnet_b0.tiny", "{p}");
    assert_eq!(p["revision"], "main");
    assert_eq!(p["commit"], MODEL_SHA);
    assert_eq!(p["file"], "model.safetensors");
    assert_eq!(
        p["sha256"],
        sha256_hex(&weights("efficientnet_b0.safetensors"))
    );
    assert!(p["tensors"].as_u64().unwrap() > 100, "{p}");
    // The manifest records the same weights, with the data's identity.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(first.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["pretrained"]["sha256"], p["sha256"]);
    assert_eq!(manifest["pretrained"]["commit"], MODEL_SHA);
    assert!(!manifest["data"]["files"].as_array().unwrap().is_empty());
    let md = std::fs::read_to_string(first.join("report.md")).unwrap();
    assert!(
        md.contains("timm/efficientnet_b0.tiny@main") && md.contains(MODEL_SHA),
        "{md}"
    );
    let epochs = r["training"]["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 2, "a frozen epoch, then a fine-tuning one");

    // Every variant runs in LiteRT with kiln-runtime's outputs (int8 bit-exact with the
    // reference kernels).
    let file = |variant: &str| first.join(format!("model_{variant}.tflite"));
    if let Some(python) = litert() {
        let float = Expect::Float { rel: 1e-5 };
        check_variant(&python, &first, "pretrained_fp32", &file("fp32"), float);
        check_variant(&python, &first, "pretrained_fp16", &file("fp16"), float);
        let hybrid = Expect::Hybrid {
            rel: 1e-3,
            of_peak: 0.02,
        };
        check_variant(
            &python,
            &first,
            "pretrained_dynamic",
            &file("dynamic"),
            hybrid,
        );
        let steps = Expect::Steps {
            step: 1.0,
            slack: 4.0,
        };
        check_variant(&python, &first, "pretrained_int8", &file("int8"), steps);
    }

    // Offline: everything from the cache, not one request.
    let requests = hub.requests();
    let second = dir.join("second");
    let mut offline = env.to_vec();
    offline.push(("HF_HUB_OFFLINE", "1"));
    let out = pipeline_with_env(
        &["run", config, "--out", second.to_str().unwrap()],
        &offline,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(hub.requests(), requests, "{:?}", hub.request_log());
    assert_eq!(
        report(&second)["training"]["pretrained"]["commit"],
        MODEL_SHA
    );
}

#[test]
fn weights_of_another_architecture_name_the_key_and_both_shapes() {
    let dir = scratch_dir("pretrained_mismatch");
    // MobileNetV2 weights where the config says EfficientNet-B0.
    let hub = hub("mobilenetv2_100.safetensors");
    let endpoint = hub.endpoint();
    let hf_cache = dir.join("hf");
    let config = config(&dir);
    let env = [
        ("HF_ENDPOINT", endpoint.as_str()),
        ("HF_HUB_CACHE", hf_cache.to_str().unwrap()),
    ];
    let out = pipeline_with_env(
        &[
            "run",
            config.to_str().unwrap(),
            "--out",
            dir.join("run").to_str().unwrap(),
        ],
        &env,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("EfficientNet-B0")
            && err.contains("conv_stem.weight")
            && err.contains("the file has shape")
            && err.contains("timm/efficientnet_b0.tiny"),
        "{err}"
    );
    assert!(!dir.join("run/model_fp32.tflite").exists());

    // Weights timm made with TensorFlow's padding, into a network built PyTorch's way: the
    // shapes agree, so only the repo's config.json can tell.
    let tf_hub = hub_serving(
        "timm/efficientnet_b0.tiny",
        "tf_efficientnet_b0.safetensors",
        "tf_efficientnet_b0",
    );
    let tf_endpoint = tf_hub.endpoint();
    let tf_cache = dir.join("hf-tf");
    let out = pipeline_with_env(
        &[
            "run",
            config.to_str().unwrap(),
            "--out",
            dir.join("run-tf").to_str().unwrap(),
        ],
        &[
            ("HF_ENDPOINT", tf_endpoint.as_str()),
            ("HF_HUB_CACHE", tf_cache.to_str().unwrap()),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tf_efficientnet_b0") && err.contains("weight_style = \"tensorflow\""),
        "{err}"
    );

    // A local file that is not there, and a repo that is not on the Hub.
    for (pretrained, expected) in [
        ("weights/missing.safetensors", "not found"),
        ("timm/no_such_model", "does not exist on the Hub"),
    ] {
        let out = pipeline_with_env(
            &[
                "run",
                config.to_str().unwrap(),
                "--out",
                dir.join("run2").to_str().unwrap(),
                "--set",
                &format!("model.pretrained=\"{pretrained}\""),
            ],
            &env,
        );
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(pretrained) || err.contains("no_such_model"),
            "{err}"
        );
        assert!(err.contains(expected), "{err}");
    }
}

/// `configs/catsdogs.toml` itself — pretrained Lite0 from the Hub, the notebook's head, frozen
/// then fine-tuned, QAT, four variants — with the Hub serving a small Lite0 (the TF-style
/// parity fixture) under the real repo id, at 32 px.
#[test]
fn the_catsdogs_config_runs_its_whole_recipe() {
    let dir = scratch_dir("pretrained_catsdogs");
    let hub = hub_serving(
        "timm/tf_efficientnet_lite0.in1k",
        "tf_efficientnet_lite0.safetensors",
        "tf_efficientnet_lite0",
    );
    let endpoint = hub.endpoint();
    let hf_cache = dir.join("hf");
    let kiln_cache = dir.join("kiln");
    let env = [
        ("HF_ENDPOINT", endpoint.as_str()),
        ("HF_HUB_CACHE", hf_cache.to_str().unwrap()),
        ("KILN_CACHE_DIR", kiln_cache.to_str().unwrap()),
    ];
    let run = dir.join("run");
    let mut args = vec![
        "run",
        "configs/catsdogs.toml",
        "--out",
        run.to_str().unwrap(),
    ];
    for set in [
        "model.width_multiplier=0.25",
        "model.depth_multiplier=0.34",
        "model.head.dense=[16, 8]",
        "data.image_size=[32, 32]",
        "data.cache=false",
        "train.epochs=2",
        "train.freeze_backbone_epochs=1",
        "train.batch_size=16",
        "export.calibration_samples=16",
        "verify.latency_runs=2",
    ] {
        args.extend(["--set", set]);
    }
    let out = pipeline_with_env(&args, &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report(&run);
    assert_eq!(
        r["training"]["pretrained"]["repo"],
        "timm/tf_efficientnet_lite0.in1k"
    );
    assert_eq!(
        variant_names(&r),
        ["fp32", "fp16", "dynamic", "int8", "qat_int8"]
    );

    // The fine-tuned backbone teaches a small student (the case distillation pays in), from
    // the Hub cache, offline.
    let recipe = dir.join("distill.toml");
    std::fs::write(
        &recipe,
        "stages = [\"train\", \"distill\", \"export\", \"report\"]\n[distill]\n\
         student = { architecture = \"small_cnn\", conv_filters = [8, 16], dense_units = 16 }\n\
         epochs = 1\nvariants = [\"int8\"]\n",
    )
    .unwrap();
    let distilled = dir.join("distilled");
    let pipeline_set = format!("pipeline={}", recipe.display());
    args[3] = distilled.to_str().unwrap();
    args.extend([
        "--set",
        &pipeline_set,
        "--set",
        "export.variants=[\"fp32\"]",
    ]);
    let mut offline = env.to_vec();
    offline.push(("HF_HUB_OFFLINE", "1"));
    let out = pipeline_with_env(&args, &offline);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report(&distilled);
    assert_eq!(r["distillation"]["teacher"], "this run's train stage");
    assert!(
        r["distillation"]["teacher_parameters"].as_u64().unwrap()
            > 10 * r["distillation"]["student_parameters"].as_u64().unwrap(),
        "a Lite0 teacher, a small student"
    );
    assert_eq!(variant_names(&r), ["fp32", "student_int8"]);
}
