//! A truncated or corrupted `.tflite` given to `pipeline infer` or `inspect` is an error
//! message and a non-zero exit, never a panic.

mod support;

use support::*;

fn assert_clean_failure(args: &[&str], what: &str) {
    let out = pipeline(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{what}: panicked:\n{stderr}");
    if !out.status.success() {
        assert!(
            stderr.contains("error:"),
            "{what}: no error message:\n{stderr}"
        );
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
    }
}

#[test]
fn truncated_and_corrupted_files_are_errors() {
    let dir = tiny_quickstart_run(&scratch_dir("malformed"));
    let bytes = std::fs::read(dir.join("model_fp32.tflite")).unwrap();
    let input = dir.join("x.npy");
    write_f32_npy(&input, &[1, 28, 28, 1], &uniform_inputs(28 * 28, 3));
    let output = dir.join("y.npy");

    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), vec![]),
        ("text".into(), b"this is not a model".to_vec()),
        ("header only".into(), bytes[..16].to_vec()),
    ];
    for fraction in [2, 3, 5, 10, 100] {
        cases.push((
            format!("truncated to 1/{fraction}"),
            bytes[..bytes.len() / fraction].to_vec(),
        ));
    }
    // Corrupt the small tables at the front (offsets, vtables, indices), where damage matters.
    for (i, position) in (4..bytes.len().min(4096)).step_by(61).enumerate() {
        let mut corrupt = bytes.clone();
        corrupt[position] ^= 0xA5 ^ (i as u8);
        cases.push((format!("byte {position} flipped"), corrupt));
    }
    let mut failures = 0;
    for (name, data) in &cases {
        let path = dir.join("bad.tflite");
        std::fs::write(&path, data).unwrap();
        let model = path.to_str().unwrap();
        assert_clean_failure(&["inspect", model], name);
        assert_clean_failure(
            &[
                "infer",
                model,
                "--input",
                input.to_str().unwrap(),
                "--output",
                output.to_str().unwrap(),
            ],
            name,
        );
        if !pipeline(&["inspect", model]).status.success() {
            failures += 1;
        }
    }
    // Every truncation and the garbage files must be rejected, not just survived.
    assert!(
        failures >= 8,
        "only {failures} of {} damaged files were rejected",
        cases.len()
    );

    let out = pipeline(&["inspect", dir.join("missing.tflite").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.tflite"));
}

/// Loads and, when the mutated model is still valid and small, runs it on zero inputs.
fn load_and_run(bytes: Vec<u8>) -> Result<(), kiln_runtime::RuntimeError> {
    let mut interpreter = kiln_runtime::Interpreter::from_bytes(bytes)?;
    // A flipped dimension can turn a valid model into a huge one: running it would be
    // correct but slow, so only models with a modest arena are invoked.
    if interpreter.arena_bytes() > 64 << 20 {
        return Ok(());
    }
    for i in 0..interpreter.input_count() {
        let size = interpreter.input_info(i)?.byte_size();
        interpreter.set_input(i, &vec![0u8; size])?;
    }
    interpreter.invoke()
}

#[test]
fn mutated_converter_fixtures_are_errors_not_panics() {
    let root = repo_root().join("tests/fixtures");
    let mut models: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| {
            let path = e.ok()?.path().join("model.tflite");
            path.exists().then_some(path)
        })
        .collect();
    models.sort();
    assert!(
        models.len() >= 20,
        "expected the converter fixtures under {}",
        root.display()
    );
    let (mut mutations, mut rejected, mut panics) = (0usize, 0usize, Vec::new());
    for path in &models {
        let bytes = std::fs::read(path).unwrap();
        let mut variants: Vec<(String, Vec<u8>)> = [
            0,
            7,
            8,
            64,
            bytes.len() / 3,
            bytes.len() / 2,
            bytes.len() - 1,
        ]
        .into_iter()
        .map(|len| (format!("truncated to {len}"), bytes[..len].to_vec()))
        .collect();
        // Every byte of the tables before the first big buffer, then a sparse walk over the rest.
        let dense = bytes.len().min(2048);
        let positions = (4..dense)
            .step_by(5)
            .chain((dense..bytes.len()).step_by(151));
        for (k, position) in positions.enumerate() {
            let mut corrupt = bytes.clone();
            corrupt[position] ^= [0x01, 0x80, 0xff, 0x10][k % 4];
            variants.push((format!("byte {position} flipped"), corrupt));
        }
        for (what, data) in variants {
            mutations += 1;
            match std::panic::catch_unwind(|| load_and_run(data)) {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    rejected += 1;
                    assert!(!error.to_string().is_empty());
                }
                Err(_) => panics.push(format!("{}: {what}", path.display())),
            }
        }
    }
    eprintln!(
        "{mutations} mutations of {} fixtures: {rejected} rejected with an error, none panicked",
        models.len()
    );
    assert!(
        panics.is_empty(),
        "{} mutations panicked:\n{}",
        panics.len(),
        panics.join("\n")
    );
}
