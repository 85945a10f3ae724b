//! Mutated converter files (truncated, bytes flipped) given to kiln-runtime are errors that
//! say what is wrong, never panics. (The fuzz target explores further; see fuzz/.)

use std::path::Path;

/// Loads and, when the mutated model is still valid and small, runs it on zero inputs.
fn load_and_run(bytes: Vec<u8>) -> Result<(), kiln_runtime::RuntimeError> {
    let mut interpreter = kiln_runtime::Interpreter::from_bytes(bytes)?;
    // A flipped dimension can turn a valid model into a huge one: running it would be
    // correct but slow, so only models with a modest arena are invoked.
    // Likewise a filter as large as a tensor: a small arena, but 10^11 multiply-accumulates.
    if interpreter.arena_bytes() > 64 << 20 || interpreter.multiply_accumulates() > 1 << 32 {
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
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
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
