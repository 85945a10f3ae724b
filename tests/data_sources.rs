//! Data sources end to end. `pipeline run configs/catsdogs_scratch.toml` against a fake Hugging Face Hub on 127.0.0.1 serving
//! the microsoft/cats_vs_dogs layout (two parquet shards of generated JPEGs, one corrupt and
//! one grayscale image): download into the Hugging Face cache, train, export, report the
//! corrupt image; then again from the cache with no download, and offline with no request.
//! Also the errors a user meets: wrong split, missing repo, gated repo, wrong column, offline
//! without a cache. And an image folder (`root/<class>/*.jpg`) as the source.

mod support;

use support::report;

use std::path::Path;

use serde_json::Value;
use support::catsdogs_fixture::{catsdogs_jpeg, catsdogs_parquet};
use support::fake_hub::{FakeHub, FakeRepo};
use support::{pipeline_with_env, repo_root, scratch_dir};

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
const SHARD_ROWS: usize = 48;

fn cats_vs_dogs(id: &str) -> FakeRepo {
    FakeRepo::new(
        id,
        SHA,
        vec![
            (
                "data/train-00000-of-00002.parquet".into(),
                catsdogs_parquet(SHARD_ROWS, 1, &[5], &[7]),
            ),
            (
                "data/train-00001-of-00002.parquet".into(),
                catsdogs_parquet(SHARD_ROWS, 2, &[], &[30]),
            ),
            ("README.md".into(), b"# cats vs dogs\n".to_vec()),
        ],
    )
}

/// A tiny, fast version of configs/catsdogs_scratch.toml.
const TINY: &[&str] = &[
    "--set",
    "data.image_size=[32, 32]",
    "--set",
    "train.epochs=2",
    "--set",
    "train.batch_size=16",
    "--set",
    "model.dense_units=16",
    "--set",
    "export.calibration_samples=16",
    "--set",
    "verify.latency_runs=2",
];

fn run_catsdogs(out: &Path, extra: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut args = vec![
        "run",
        "configs/catsdogs_scratch.toml",
        "--out",
        out.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(TINY);
    args.extend_from_slice(extra);
    pipeline_with_env(&args, env)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn catsdogs_downloads_caches_trains_and_reruns_offline() {
    let dir = scratch_dir("hub_catsdogs");
    let hub = FakeHub::start(vec![cats_vs_dogs("microsoft/cats_vs_dogs")]);
    let endpoint = hub.endpoint();
    let hf_cache = dir.join("hf");
    let kiln_cache = dir.join("kiln");
    let (hf_cache, kiln_cache) = (hf_cache.to_str().unwrap(), kiln_cache.to_str().unwrap());
    let env = [
        ("HF_ENDPOINT", endpoint.as_str()),
        ("HF_HUB_CACHE", hf_cache),
        ("KILN_CACHE_DIR", kiln_cache),
    ];

    // First run: downloads both shards, decodes, trains, exports, reports.
    let first = dir.join("first");
    let out = run_catsdogs(&first, &[], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(hub.file_downloads(), 2, "{:?}", hub.request_log());
    let r = report(&first);
    let data = &r["dataset"];
    assert_eq!(data["source"], "hub");
    assert_eq!(data["hub"]["repo"], "microsoft/cats_vs_dogs");
    assert_eq!(data["hub"]["commit"], SHA);
    assert_eq!(
        data["hub"]["files"],
        serde_json::json!([
            "data/train-00000-of-00002.parquet",
            "data/train-00001-of-00002.parquet"
        ])
    );
    assert_eq!(data["skipped"]["train"], 1, "one corrupt JPEG: {data}");
    assert_eq!(data["classes"], serde_json::json!(["cat", "dog"]));
    assert_eq!(data["image_shape"], serde_json::json!([32, 32, 3]));
    let rows = |k: &str| data[k].as_u64().unwrap();
    assert_eq!(
        rows("train_rows") + rows("validation_rows") + rows("test_rows"),
        2 * SHARD_ROWS as u64 - 1
    );
    assert_eq!(rows("test_rows"), 10, "10% of 47 cats + 48 dogs, per class");
    let variants: Vec<&str> = r["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(variants, ["fp32", "fp16", "dynamic", "int8"]);
    for v in r["variants"].as_array().unwrap() {
        assert!(v["accuracy"].as_f64().is_some(), "{v}");
    }
    let inspect = pipeline_with_env(
        &[
            "inspect",
            first.join("model_int8.tflite").to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    let model: Value = serde_json::from_slice(&inspect.stdout).expect("inspect JSON");
    assert_eq!(
        model["model_metadata"]["labels"],
        serde_json::json!(["cat", "dog"])
    );
    let normalization = &model["model_metadata"]["metadata"]["inputs"][0]["normalization"];
    let mean0 = normalization["mean"][0].as_f64().unwrap();
    assert!((mean0 - 0.485 * 255.0).abs() < 1e-3, "{normalization}");

    // Second run, online: the Hub is asked which commit `main` is, nothing is downloaded,
    // and the decoded images come from Kiln's cache.
    let second = dir.join("second");
    let out = run_catsdogs(&second, &[], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(hub.file_downloads(), 2, "{:?}", hub.request_log());
    assert_eq!(
        report(&second)["dataset"]["cache_hits"],
        serde_json::json!(["train"])
    );
    assert_eq!(
        report(&second)["variants"][0]["accuracy"],
        r["variants"][0]["accuracy"],
        "same seed, same data: same result"
    );

    // Offline, with an empty decoded cache: everything comes from the Hugging Face cache
    // without a single request.
    let requests = hub.requests();
    let offline = dir.join("offline");
    let fresh_kiln_cache = dir.join("kiln-fresh");
    let out = run_catsdogs(
        &offline,
        &[],
        &[
            ("HF_ENDPOINT", endpoint.as_str()),
            ("HF_HUB_CACHE", hf_cache),
            ("KILN_CACHE_DIR", fresh_kiln_cache.to_str().unwrap()),
            ("HF_HUB_OFFLINE", "1"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(hub.requests(), requests, "offline made requests");
    let r = report(&offline);
    assert_eq!(r["dataset"]["skipped"]["train"], 1);
    assert_eq!(r["dataset"]["hub"]["commit"], SHA);
}

/// Bingsu/Cat_and_Dog's layout (separate train and test files) by config alone.
#[test]
fn a_hub_dataset_with_its_own_test_split_uses_it() {
    let dir = scratch_dir("hub_cat_and_dog");
    let hub = FakeHub::start(vec![FakeRepo::new(
        "Bingsu/Cat_and_Dog",
        SHA,
        vec![
            (
                "data/train-00000-of-00001-6e6e5c8d.parquet".into(),
                catsdogs_parquet(40, 3, &[2], &[]),
            ),
            (
                "data/test-00000-of-00001-9b1f0a3e.parquet".into(),
                catsdogs_parquet(12, 4, &[0, 11], &[5]),
            ),
        ],
    )]);
    let endpoint = hub.endpoint();
    let hf_cache = dir.join("hf");
    let out_dir = dir.join("run");
    let mut args = vec![
        "run",
        "configs/cat_and_dog.toml",
        "--out",
        out_dir.to_str().unwrap(),
    ];
    args.extend_from_slice(TINY);
    let out = pipeline_with_env(
        &args,
        &[
            ("HF_ENDPOINT", endpoint.as_str()),
            ("HF_HUB_CACHE", hf_cache.to_str().unwrap()),
            ("KILN_CACHE_DIR", dir.join("kiln").to_str().unwrap()),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let data = &report(&out_dir)["dataset"];
    assert_eq!(data["skipped"], serde_json::json!({"train": 1, "test": 2}));
    assert_eq!(
        data["test_rows"], 10,
        "the Hub's test split, minus 2 corrupt"
    );
    assert_eq!(
        data["train_rows"].as_u64().unwrap() + data["validation_rows"].as_u64().unwrap(),
        39
    );
    assert_eq!(
        data["validation_rows"], 4,
        "validation_fraction 0.1 of 19 + 20"
    );
    assert_eq!(hub.file_downloads(), 2);
}

#[test]
fn hub_errors_say_what_went_wrong_and_how_to_fix_it() {
    let dir = scratch_dir("hub_errors");
    let hub = FakeHub::start(vec![
        cats_vs_dogs("microsoft/cats_vs_dogs"),
        cats_vs_dogs("someone/gated_cats").gated("hf_secret"),
    ]);
    let endpoint = hub.endpoint();
    let hf_cache = dir.join("hf");
    let env = [
        ("HF_ENDPOINT", endpoint.as_str()),
        ("HF_HUB_CACHE", hf_cache.to_str().unwrap()),
        ("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1"),
    ];
    let fails_with = |extra: &[&str], env: &[(&str, &str)], needles: &[&str]| {
        let out = run_catsdogs(&dir.join("run"), extra, env);
        let message = stderr(&out);
        assert!(!out.status.success(), "{extra:?} should fail");
        for needle in needles {
            assert!(
                message.contains(needle),
                "{extra:?}: missing {needle:?} in:\n{message}"
            );
        }
        assert!(!message.contains("panicked"), "{message}");
    };

    fails_with(
        &["--set", "data.hub.train_split=validation"],
        &env,
        &[
            "no parquet files for split 'validation'",
            "its splits are: train",
        ],
    );
    fails_with(
        &["--set", "data.hub.repo=nobody/nothing"],
        &env,
        &["nobody/nothing", "does not exist on the Hub", "repo name"],
    );
    fails_with(
        &["--set", "data.hub.repo=someone/gated_cats"],
        &env,
        &["someone/gated_cats", "401", "HF_TOKEN"],
    );
    fails_with(
        &["--set", "data.label_column=label"],
        &env,
        &["label", "labels"],
    );
    let empty_cache = dir.join("empty");
    fails_with(
        &[],
        &[
            ("HF_ENDPOINT", endpoint.as_str()),
            ("HF_HUB_CACHE", empty_cache.to_str().unwrap()),
            ("HF_HUB_OFFLINE", "1"),
        ],
        &[
            "HF_HUB_OFFLINE",
            "not in the Hugging Face cache",
            "run once online",
        ],
    );
    fails_with(
        &["--set", "data.hub.repo=not-a-repo-id"],
        &env,
        &["owner/name"],
    );

    // The right token opens the gated dataset.
    // (HF_HUB_DISABLE_IMPLICIT_TOKEN, set above so no ambient token leaks in, would also
    // stop HF_TOKEN from being sent.)
    let with_token = [env[0], env[1], ("HF_TOKEN", "hf_secret")];
    let out = run_catsdogs(
        &dir.join("gated"),
        &[
            "--set",
            "data.hub.repo=someone/gated_cats",
            "--set",
            "export.variants=[\"fp32\"]",
            "--set",
            "train.epochs=1",
            "--set",
            "train.warmup_epochs=0",
        ],
        &with_token,
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn an_image_folder_trains_with_sorted_classes_and_counted_corrupt_files() {
    let dir = scratch_dir("folder_source");
    let images = dir.join("images");
    for (label, class) in [(0, "cat"), (1, "dog")] {
        std::fs::create_dir_all(images.join(class)).unwrap();
        for i in 0..20u64 {
            let jpeg = catsdogs_jpeg(label, i, i == 3);
            std::fs::write(images.join(class).join(format!("{i:03}.jpg")), jpeg).unwrap();
        }
    }
    std::fs::write(images.join("dog/broken.jpg"), b"\xff\xd8\xff truncated").unwrap();
    let config = dir.join("folder.toml");
    let recipe = repo_root().join("pipelines/float32.toml");
    std::fs::write(
        &config,
        format!(
            r#"name = "folder"
seed = 3
pipeline = "{}"
[data]
color = "rgb"
image_size = [24, 24]
split = [0.7, 0.1, 0.2]
[data.folder]
train = "images"
[model]
architecture = "small_cnn"
dense_units = 8
[train]
epochs = 1
batch_size = 8
learning_rate = 0.002
augment_flip = true
[export]
variants = ["fp32"]
[verify]
latency_runs = 2
"#,
            recipe.display()
        ),
    )
    .unwrap();
    let out_dir = dir.join("run");
    let out = pipeline_with_env(
        &[
            "run",
            config.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ],
        &[("KILN_CACHE_DIR", dir.join("cache").to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let data = &report(&out_dir)["dataset"];
    assert_eq!(data["source"], "folder");
    assert_eq!(data["classes"], serde_json::json!(["cat", "dog"]));
    assert_eq!(data["skipped"]["train"], 1, "{data}");
    assert_eq!(data["test_rows"], 8, "20% of 20 cats and of 20 dogs");
    assert_eq!(data["image_shape"], serde_json::json!([24, 24, 3]));
}
