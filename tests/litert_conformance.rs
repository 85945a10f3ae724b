//! The exported float32 file runs in the official LiteRT interpreter under its default
//! (XNNPACK), builtin and reference kernels, and kiln-runtime's outputs match LiteRT's within
//! 1e-5 relative (numpy.allclose(rtol=1e-5, atol=1e-5) on logits).

mod support;

use std::process::Command;

use support::*;

#[test]
fn fp32_export_matches_litert() {
    let Some(python) = litert_python() else {
        let message = "LiteRT venv missing: run `scripts/test.sh` (it creates .venv with ai-edge-litert), \
                       or set KILN_LITERT_PYTHON";
        if std::env::var_os("CI").is_some() || std::env::var_os("KILN_REQUIRE_LITERT").is_some() {
            panic!("{message}");
        }
        eprintln!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n!!! SKIPPED LiteRT conformance: {message}\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
        return;
    };
    let dir = tiny_quickstart_run(&scratch_dir("litert"));
    let model = dir.join("model_fp32.tflite");
    let rows = 16;
    let input = dir.join("x.npy");
    write_f32_npy(
        &input,
        &[rows, 28, 28, 1],
        &uniform_inputs(rows * 28 * 28, 11),
    );

    let ours = dir.join("kiln.npy");
    let out = pipeline(&[
        "infer",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--output",
        ours.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (our_shape, our_values) = read_f32_npy(&ours);

    for kernels in ["default", "builtin", "reference"] {
        let theirs = dir.join(format!("litert_{kernels}.npy"));
        let out = Command::new(&python)
            .arg(repo_root().join("tests/litert/run_litert.py"))
            .args([&model, &input, &theirs])
            .args(["--kernels", kernels])
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "LiteRT ({kernels}) failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let signatures = String::from_utf8_lossy(&out.stdout);
        assert!(
            signatures.contains("serving_default")
                && signatures.contains("image")
                && signatures.contains("logits"),
            "signature missing: {signatures}"
        );
        let (shape, values) = read_f32_npy(&theirs);
        assert_eq!(shape, our_shape, "{kernels}");
        let mut worst = 0.0f32;
        for (a, b) in our_values.iter().zip(&values) {
            let excess = (a - b).abs() - 1e-5 * (1.0 + b.abs());
            worst = worst.max(excess);
            assert!(excess <= 0.0, "{kernels}: kiln {a} vs LiteRT {b}");
        }
        eprintln!("LiteRT {kernels}: {} values within tolerance", values.len());
    }
}
