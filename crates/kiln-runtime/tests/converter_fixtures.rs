//! Files written by the official TFLite converter (tests/fixtures, made by TF 2.21) run in
//! kiln-runtime and match LiteRT 2.3.0's outputs stored next to them: int8/uint8 bit-exact
//! with the reference kernels, float32 (and float16 weights) within 1e-5 relative,
//! dynamic-range within 5e-3. Every fixture must pass. (The same files also go through
//! `pipeline infer` in the workspace's end-to-end tests.)

use std::path::{Path, PathBuf};

use kiln_runtime::Interpreter;
use kiln_runtime::npy::{NpyArray, read_npy, read_npz};
use kiln_runtime::rows::invoke_rows;
use kiln_tflite::TensorType;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn arrays(path: &Path) -> Vec<NpyArray> {
    if path.extension().is_some_and(|e| e == "npz") {
        read_npz(path)
            .unwrap()
            .into_iter()
            .map(|(_, a)| a)
            .collect()
    } else {
        vec![read_npy(path).unwrap()]
    }
}

fn values_f64(array: &NpyArray) -> Vec<f64> {
    let bytes = &array.data;
    match array.dtype {
        TensorType::Float32 => bytes
            .chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
        TensorType::Int8 => bytes.iter().map(|&b| f64::from(b as i8)).collect(),
        TensorType::UInt8 => bytes.iter().map(|&b| f64::from(b)).collect(),
        TensorType::Int32 => bytes
            .chunks_exact(4)
            .map(|b| f64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
        TensorType::Int64 => bytes
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64)
            .collect(),
        other => panic!("unexpected output type {other}"),
    }
}

/// `None` when within tolerance, else a description of the worst element.
fn compare(kind: &str, tolerance: &str, ours: &NpyArray, theirs: &NpyArray) -> Option<String> {
    if ours.dtype != theirs.dtype || ours.shape != theirs.shape {
        return Some(format!(
            "{} {:?} vs LiteRT {} {:?}",
            ours.dtype, ours.shape, theirs.dtype, theirs.shape
        ));
    }
    let (a, b) = (values_f64(ours), values_f64(theirs));
    let mut worst: Option<(usize, f64, f64)> = None;
    for (i, (&x, &y)) in a.iter().zip(&b).enumerate() {
        let ok = match tolerance {
            "exact" => x == y,
            "abs5e-3" => (x - y).abs() <= 5e-3,
            _ => (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
        };
        if !ok && worst.is_none_or(|(_, wx, wy)| (x - y).abs() > (wx - wy).abs()) {
            worst = Some((i, x, y));
        }
    }
    let differing = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    worst.map(|(i, x, y)| {
        format!("{kind}: element {i}: kiln {x} vs LiteRT {y} ({differing} elements differ)")
    })
}

#[test]
fn converter_fixtures_match_litert() {
    let root = fixtures();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(root.join("manifest.json")).unwrap()).unwrap();
    let mut failures = Vec::new();
    let mut passed = Vec::new();
    for fixture in manifest["fixtures"].as_array().unwrap() {
        let name = fixture["name"].as_str().unwrap();
        let dir = root.join(name);
        let files = &fixture["files"];
        let input = dir.join(files["input"].as_str().unwrap());
        let reference = dir.join(files["ref"].as_str().unwrap());
        let model = dir.join(files["model"].as_str().unwrap());
        let ours = match Interpreter::from_bytes(std::fs::read(&model).unwrap())
            .and_then(|mut interpreter| invoke_rows(&mut interpreter, &arrays(&input)))
        {
            Ok(outputs) => outputs.into_iter().map(|(_, a)| a).collect::<Vec<_>>(),
            Err(error) => {
                failures.push(format!("{name}: {error}"));
                continue;
            }
        };
        let kind = fixture["kind"].as_str().unwrap();
        let tolerance = fixture["tolerance"].as_str().unwrap();
        let theirs = arrays(&reference);
        let mut ok = ours.len() == theirs.len();
        for (o, t) in ours.iter().zip(&theirs) {
            if let Some(problem) = compare(kind, tolerance, o, t) {
                failures.push(format!("{name} vs reference kernels: {problem}"));
                ok = false;
            }
        }
        if ok && tolerance == "exact" {
            let default = dir.join(files["default"].as_str().unwrap());
            let off_by_one: usize = ours
                .iter()
                .zip(arrays(&default))
                .map(|(o, d)| {
                    values_f64(o)
                        .into_iter()
                        .zip(values_f64(&d))
                        .filter(|(x, y)| x != y)
                        .count()
                })
                .sum();
            eprintln!(
                "{name}: bit-exact with reference kernels; {off_by_one} elements differ from default kernels"
            );
        }
        if ok {
            passed.push(name);
        }
    }
    eprintln!("{} fixtures pass: {}", passed.len(), passed.join(", "));
    assert!(
        passed.len() >= 28,
        "expected all 28 converter fixtures to run"
    );
    assert!(
        failures.is_empty(),
        "{} fixture problems:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Loads a fixture whose first operator code is rewritten; the error it must fail with.
fn load_with_opcode(builtin: kiln_tflite::BuiltinOp, version: i32) -> String {
    let path = fixtures().join("conv_f32/model.tflite");
    let mut model = kiln_tflite::Model::read_file(&path).unwrap();
    model.operator_codes[0].builtin = builtin;
    model.operator_codes[0].version = version;
    let bytes = model.to_bytes().unwrap();
    match Interpreter::from_bytes(bytes) {
        Ok(_) => panic!("{builtin:?} version {version} must not load"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn unknown_operators_and_versions_are_named() {
    let message = load_with_opcode(kiln_tflite::BuiltinOp(126), 1);
    assert!(
        message.contains("BATCH_MATMUL") && message.contains("version 1"),
        "{message}"
    );
    let message = load_with_opcode(kiln_tflite::BuiltinOp::CONV_2D, 99);
    assert!(
        message.contains("CONV_2D") && message.contains("version 99"),
        "{message}"
    );
    let message = load_with_opcode(kiln_tflite::BuiltinOp(5000), 1);
    assert!(message.contains("BUILTIN_5000"), "{message}");
}

/// A DENSIFY'd weight that its kernel copies into its own layout (the packed conv filter, the
/// FULLY_CONNECTED's non-zero blocks) is not kept a second time, and every fixture holds at
/// most 1.5 × (its weights as float32 + its arena) — the runtime's memory budget.
#[test]
fn densified_weights_are_not_kept_twice_and_memory_stays_in_budget() {
    let path = fixtures().join("sparse_densify_f32/model.tflite");
    let interpreter = kiln_runtime::Interpreter::from_file(&path).unwrap();
    assert_eq!(interpreter.memory().copied_constants, 0);
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let path = entry.unwrap().path().join("model.tflite");
        if !path.exists() {
            continue;
        }
        let memory = kiln_runtime::Interpreter::from_file(&path)
            .unwrap()
            .memory();
        let budget = 3 * (memory.float32_weights + memory.arena) / 2;
        assert!(memory.peak() <= budget, "{}: {memory:?}", path.display());
    }
}
