//! Crash safety of training: `kill -9` during an epoch, or Ctrl-C, then `pipeline run
//! --resume` ends with the same result as a run that was never interrupted (same seed, same
//! backend) — the same accuracy and byte-identical exported models.

mod support;

use support::report;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{pipeline, repo_root, scratch_dir};

/// Six epochs of about half a second each on 1,024 digits (training only: the float32 recipe).
const SETTINGS: &[&str] = &[
    "--set",
    "pipeline=../pipelines/float32.toml",
    "--set",
    "train.epochs=6",
    "--set",
    "train.schedule=cosine",
    "--set",
    "train.warmup_epochs=1",
    "--set",
    "data.limit_train=1024",
    "--set",
    "data.limit_test=200",
    "--set",
    "export.variants=[\"fp32\"]",
    "--set",
    "verify.latency_runs=2",
];

fn args(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["run", "configs/quickstart.toml", "--out"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.push(out.to_str().expect("utf-8 path").to_owned());
    args.extend(SETTINGS.iter().chain(extra).map(|s| (*s).to_owned()));
    args
}

fn spawn(out: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .args(args(out, extra))
        .current_dir(repo_root())
        .env("RUST_LOG", "warn")
        .env(
            "KILN_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("kiln-cache"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pipeline")
}

/// The last complete epoch recorded in the run's training checkpoint (0 when none yet).
fn checkpointed_epoch(out: &Path) -> usize {
    stage_checkpointed_epoch(out, "checkpoint")
}

/// The last complete epoch in the checkpoint directory `stage_dir` of the run.
fn stage_checkpointed_epoch(out: &Path, stage_dir: &str) -> usize {
    std::fs::read(out.join(stage_dir).join("state.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .and_then(|state| state["epoch"].as_u64())
        .unwrap_or(0) as usize
}

fn wait_for_epoch(out: &Path, child: &mut Child, epoch: usize) {
    wait_for_stage_epoch(out, "checkpoint", child, epoch);
}

fn wait_for_stage_epoch(out: &Path, stage_dir: &str, child: &mut Child, epoch: usize) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while stage_checkpointed_epoch(out, stage_dir) < epoch {
        assert!(
            child.try_wait().expect("poll child").is_none(),
            "the run ended before epoch {epoch} was checkpointed"
        );
        assert!(Instant::now() < deadline, "no checkpoint of epoch {epoch}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn resume(out: &Path) -> Value {
    resume_with(out, &[])
}

fn resume_with(out: &Path, extra: &[&str]) -> Value {
    let mut with_resume = extra.to_vec();
    with_resume.push("--resume");
    let owned = args(out, &with_resume);
    let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
    let result = pipeline(&refs);
    assert!(
        result.status.success(),
        "resume failed:\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    report(out)
}

fn uninterrupted(dir: &Path) -> (PathBuf, Value) {
    uninterrupted_with(dir, &[])
}

fn uninterrupted_with(dir: &Path, extra: &[&str]) -> (PathBuf, Value) {
    let out = dir.join("uninterrupted");
    let owned = args(&out, extra);
    let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
    let result = pipeline(&refs);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let r = report(&out);
    (out, r)
}

fn assert_same_result(
    resumed_dir: &Path,
    resumed: &Value,
    reference_dir: &Path,
    reference: &Value,
) {
    assert_eq!(
        resumed["variants"][0]["accuracy"], reference["variants"][0]["accuracy"],
        "accuracy after resume"
    );
    assert_eq!(
        resumed["training"]["burn_test_accuracy"],
        reference["training"]["burn_test_accuracy"]
    );
    let model = |dir: &Path| std::fs::read(dir.join("model_fp32.tflite")).expect("model");
    assert!(
        model(resumed_dir) == model(reference_dir),
        "the resumed run's model differs from the uninterrupted run's"
    );
    let losses = |r: &Value| -> Vec<Value> {
        r["training"]["epochs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["loss"].clone())
            .collect()
    };
    assert_eq!(losses(resumed), losses(reference), "per-epoch losses");
}

#[test]
fn kill_9_then_resume_matches_an_uninterrupted_run() {
    let dir = scratch_dir("resume_kill9");
    let (reference_dir, reference) = uninterrupted(&dir);

    let out = dir.join("killed");
    let mut child = spawn(&out, &[]);
    wait_for_epoch(&out, &mut child, 2);
    child.kill().expect("SIGKILL"); // kill -9: no chance to clean up
    let _ = child.wait();
    let killed_at = checkpointed_epoch(&out);
    assert!(
        (2..6).contains(&killed_at),
        "killed after epoch {killed_at}"
    );
    assert!(!out.join("report.json").exists(), "the killed run finished");

    let resumed = resume(&out);
    assert_eq!(
        resumed["training"]["resumed_from"].as_u64(),
        Some(killed_at as u64)
    );
    assert_same_result(&out, &resumed, &reference_dir, &reference);
}

#[test]
fn ctrl_c_saves_and_exits_cleanly_then_resumes() {
    let dir = scratch_dir("resume_ctrl_c");
    let (reference_dir, reference) = uninterrupted(&dir);

    let out = dir.join("interrupted");
    let mut child = spawn(&out, &[]);
    wait_for_epoch(&out, &mut child, 1);
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("send SIGINT");
    assert!(status.success());
    let output = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("--resume") && !stderr.contains("panicked"),
        "{stderr}"
    );

    let resumed = resume(&out);
    assert_same_result(&out, &resumed, &reference_dir, &reference);

    // Resuming a finished run trains nothing and reproduces the same files.
    let again = resume(&out);
    assert_eq!(again["training"]["resumed_from"].as_u64(), Some(6));
    assert_same_result(&out, &again, &reference_dir, &reference);
}

#[test]
fn resume_refuses_a_changed_config_and_a_missing_checkpoint() {
    let dir = scratch_dir("resume_refusals");
    let out = dir.join("none");
    let owned = args(&out, &["--resume"]);
    let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
    let result = pipeline(&refs);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success());
    assert!(stderr.contains("no checkpoint to resume from"), "{stderr}");

    let (done, _) = uninterrupted(&dir);
    let mut owned = args(&done, &["--resume"]);
    owned.extend(["--set".to_owned(), "train.learning_rate=0.1".to_owned()]);
    let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
    let result = pipeline(&refs);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success());
    assert!(stderr.contains("different config"), "{stderr}");
}

/// Killed in the middle of quantization-aware training (after the train stage finished),
/// the run resumes the QAT stage from its own checkpoint and writes the same qat_int8 file
/// as an uninterrupted run.
#[test]
fn kill_9_during_qat_then_resume_matches_an_uninterrupted_run() {
    let dir = scratch_dir("resume_qat");
    let recipe = dir.join("qat.toml");
    std::fs::write(
        &recipe,
        "stages = [\"train\", \"qat\", \"export\", \"verify\", \"report\"]\n\
         [qat]\nepochs = 4\nlearning_rate = 0.0002\n",
    )
    .unwrap();
    let pipeline_set = format!("pipeline={}", recipe.display());
    let extra = ["--set", pipeline_set.as_str(), "--set", "train.epochs=2"];
    let (reference_dir, reference) = uninterrupted_with(&dir, &extra);

    let out = dir.join("killed");
    let mut child = spawn(&out, &extra);
    wait_for_stage_epoch(&out, "checkpoint-qat", &mut child, 1);
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let killed_at = stage_checkpointed_epoch(&out, "checkpoint-qat");
    assert!(
        (1..4).contains(&killed_at),
        "killed after QAT epoch {killed_at}"
    );
    assert!(!out.join("report.json").exists(), "the killed run finished");

    let resumed = resume_with(&out, &extra);
    let qat = |r: &Value| -> Vec<Value> {
        r["qat"]["epochs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["loss"].clone())
            .collect()
    };
    assert_eq!(qat(&resumed), qat(&reference), "QAT per-epoch losses");
    assert_eq!(resumed["qat"]["ranges"], reference["qat"]["ranges"]);
    let file = |d: &Path| std::fs::read(d.join("model_qat_int8.tflite")).expect("qat_int8");
    assert!(
        file(&out) == file(&reference_dir),
        "the resumed run's qat_int8 differs from the uninterrupted run's"
    );
}
