//! Helpers shared by the workspace-level tests.
#![allow(dead_code)]

pub mod catsdogs_fixture;
pub mod fake_hub;
pub mod litert;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A run directory's `report.json`.
pub fn report(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("report.json")).expect("report.json"))
        .expect("report JSON")
}

/// The names of a report's exported variants, in order.
pub fn variant_names(report: &serde_json::Value) -> Vec<&str> {
    report["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .map(|v| v["name"].as_str().expect("variant name"))
        .collect()
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

pub fn pipeline(args: &[&str]) -> Output {
    pipeline_with_env(args, &[])
}

/// `pipeline ARGS` with extra environment variables. The decoded-image cache goes under the
/// target directory (not the user's ~/.cache) unless `env` sets KILN_CACHE_DIR, and Hugging
/// Face settings of the environment running the tests are dropped.
pub fn pipeline_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pipeline"));
    command
        .args(args)
        .current_dir(repo_root())
        .env("RUST_LOG", "warn")
        .env(
            "KILN_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("kiln-cache"),
        );
    for var in [
        "HF_ENDPOINT",
        "HF_HOME",
        "HF_HUB_CACHE",
        "HF_TOKEN",
        "HF_TOKEN_PATH",
        "HF_HUB_OFFLINE",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    command.output().expect("run the pipeline binary")
}

/// `pipeline infer MODEL --input INPUT --output OUTPUT`.
pub fn infer(model: &Path, input: &Path, output: &Path) -> Output {
    let arg = |p: &Path| p.to_str().expect("utf-8 path").to_owned();
    let (model, input, output) = (arg(model), arg(input), arg(output));
    pipeline(&["infer", &model, "--input", &input, "--output", &output])
}

/// A fresh directory under the target dir, removed first if a previous run left it.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Trains a tiny quickstart model (1,024 digits, two epochs: a few seconds; the float32
/// recipe, without the quickstart's compression stages) into `dir`.
pub fn tiny_quickstart_run(dir: &Path) -> PathBuf {
    let out = pipeline(&[
        "run",
        "configs/quickstart.toml",
        "--out",
        dir.to_str().expect("utf-8 path"),
        "--set",
        "pipeline=../pipelines/float32.toml",
        "--set",
        "train.epochs=2",
        "--set",
        "train.schedule=constant",
        "--set",
        "train.augment_shift=0",
        "--set",
        "data.limit_train=1024",
        "--set",
        "data.limit_test=64",
        "--set",
        "verify.latency_runs=5",
    ]);
    assert!(
        out.status.success(),
        "pipeline run failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.to_path_buf()
}

/// The Python with ai-edge-litert: $KILN_LITERT_PYTHON, else the repo's .venv.
pub fn litert_python() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("KILN_LITERT_PYTHON") {
        return Some(PathBuf::from(path));
    }
    let venv = repo_root().join(".venv/bin/python");
    venv.exists().then_some(venv)
}

/// Writes a float32 .npy of shape `shape` (C order) for test inputs.
pub fn write_f32_npy(path: &Path, shape: &[usize], values: &[f32]) {
    let dims = shape
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({dims}{}), }}",
        if shape.len() == 1 { "," } else { "" }
    );
    let pad = (64 - (10 + header.len() + 1) % 64) % 64;
    header.push_str(&" ".repeat(pad));
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes).expect("write npy");
}

/// Reads a little-endian float32 .npy: (shape, values).
pub fn read_f32_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).expect("read npy");
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).expect("header");
    assert!(header.contains("'<f4'"), "not float32: {header}");
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .expect("shape");
    let shape = shape_text
        .split(',')
        .filter_map(|d| d.trim().parse().ok())
        .collect();
    let values = bytes[10 + header_len..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (shape, values)
}

/// Deterministic pseudo-random floats in [0, 1) (a small LCG: tests need no rand crate).
pub fn uniform_inputs(count: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32) / (1u64 << 24) as f32
        })
        .collect()
}

/// Checks that every conv filter and dense weight tensor in the `.tflite` at `path` is at
/// least 80% exact zeros (stored zeros, plus the elements a sparse tensor does not store);
/// returns how many it checked.
pub fn assert_weights_80_percent_zeros(path: &Path) -> usize {
    let model = kiln_tflite::Model::read_file(path).expect("a readable model");
    let mut checked = 0;
    for tensor in &model.subgraphs[0].tensors {
        // A weight stored sparse is its `/sparse` constant (the DENSIFY output has no data):
        // its zeros are the dense elements it does not store, plus any it does.
        let name = tensor.name.trim_end_matches("/sparse");
        let data = model.tensor_data(tensor);
        if !(name.ends_with("/filter") || name.ends_with("/weights")) || data.is_empty() {
            continue;
        }
        let elements = tensor.num_elements().expect("a static shape");
        let width = tensor.dtype.element_size().expect("a fixed-size type");
        let float = tensor.dtype == kiln_tflite::TensorType::Float32;
        let stored_nonzero = data
            .chunks_exact(width)
            .filter(|v| {
                if float {
                    f32::from_le_bytes([v[0], v[1], v[2], v[3]]) != 0.0
                } else {
                    v.iter().any(|&b| b != 0)
                }
            })
            .count();
        let zeros = elements - stored_nonzero.min(elements);
        assert!(
            zeros * 5 >= elements * 4,
            "{}: {zeros} zeros of {elements}",
            tensor.name,
        );
        checked += 1;
    }
    checked
}
