//! Per-operator profiles cover every operator that runs, in order, and profiling changes no
//! output.

use std::path::Path;

use kiln_runtime::{Interpreter, OpProfile};

#[test]
fn profiles_cover_every_operator_that_runs_and_change_no_output() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    for fixture in [
        "conv_int8",
        "pool_pad_mean_f32",
        "tensor_ops_int8",
        "sparse_densify_f32",
    ] {
        let path = root.join(fixture).join("model.tflite");
        let mut interpreter = Interpreter::from_file(&path).unwrap();
        for i in 0..interpreter.input_count() {
            let size = interpreter.input_info(i).unwrap().byte_size();
            let bytes: Vec<u8> = (0..size).map(|b| (b * 7 % 251) as u8).collect();
            interpreter.set_input(i, &bytes).unwrap();
        }
        interpreter.invoke().unwrap();
        let plain: Vec<Vec<u8>> = (0..interpreter.output_count())
            .map(|i| interpreter.output(i).unwrap().to_vec())
            .collect();

        let mut profile = OpProfile::new();
        for _ in 0..3 {
            interpreter.invoke_profiled(&mut profile).unwrap();
        }
        for (i, expected) in plain.iter().enumerate() {
            assert_eq!(
                interpreter.output(i).unwrap(),
                expected,
                "{fixture} output {i}"
            );
        }
        let operators = interpreter.operators();
        let times = profile.operators();
        assert_eq!(profile.invokes(), 3, "{fixture}");
        assert!(!operators.is_empty(), "{fixture}");
        assert_eq!(
            times.iter().map(|t| t.index).collect::<Vec<_>>(),
            operators
                .iter()
                .map(|(index, _, _)| *index)
                .collect::<Vec<_>>(),
            "{fixture}"
        );
        assert!(
            operators
                .iter()
                .all(|(_, name, _)| !name.is_empty() && name != "?")
        );
        let shares: f64 = times.iter().map(|t| t.share).sum();
        assert!(
            (shares - 1.0).abs() < 1e-9 || shares == 0.0,
            "{fixture}: {shares}"
        );
        assert!(times.iter().all(|t| t.mean <= profile.mean_total()));
    }
}
