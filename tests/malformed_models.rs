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
