//! Load → validate → prepare → invoke, the path `pipeline infer` takes with an untrusted
//! `.tflite`. Any `Err` is a correct answer; a panic, abort, out-of-memory or hang is a finding.
//!
//! Input layout: the whole input is the model, unless it ends with the 8-byte footer
//! `len: u32 LE` + `b"KFZ1"`, in which case the `len` bytes before the footer are the input
//! tensors' data (repeated to fill every input, in order) and the rest is the model. Without a
//! footer, or with an empty payload, the inputs are zeros. Plain `.tflite` files are therefore
//! valid seeds, and libFuzzer's comparison tracing finds the footer by itself.

#![no_main]

use libfuzzer_sys::fuzz_target;

/// Models whose arena exceeds this are loaded, validated, prepared and planned but not run: a
/// flipped dimension can make a valid model huge, and running it would be correct but slow.
/// crates/kiln-runtime/tests/malformed_models.rs runs up to 64 MiB; this build
/// (AddressSanitizer, coverage tracing, overflow checks) runs the kernels about 30 times
/// slower than a release build (a 26 MiB-arena int8 ADD/MUL broadcast: 0.2 s in release, 6.6 s here, over `-timeout=5`), so
/// the limit is 16 times lower.
const MAX_ARENA_BYTES: usize = 4 << 20;

/// Nor are models past this many multiply-accumulates per invoke: a filter may be as large as
/// a tensor, so a small arena can still mean 10^11 of them (a fuzzer-made depthwise layer whose
/// filter is its 645 KB input ran 4 minutes). About 0.2 s in this build.
const MAX_MULTIPLY_ACCUMULATES: usize = 1 << 27;

const MAGIC: &[u8; 4] = b"KFZ1";

fn split(data: &[u8]) -> (&[u8], &[u8]) {
    if data.len() >= 8 && &data[data.len() - 4..] == MAGIC {
        let len_bytes: [u8; 4] = data[data.len() - 8..data.len() - 4]
            .try_into()
            .unwrap_or_default();
        let len = u32::from_le_bytes(len_bytes) as usize;
        let body = data.len() - 8;
        if len <= body {
            return (&data[..body - len], &data[body - len..body]);
        }
    }
    (data, &[])
}

fn load_and_run(data: &[u8]) -> Result<(), kiln_runtime::RuntimeError> {
    let (model_bytes, payload) = split(data);
    let model = kiln_tflite::Model::from_bytes(model_bytes.to_vec())?;
    let mut interpreter = kiln_runtime::Interpreter::new(model)?;
    if interpreter.arena_bytes() > MAX_ARENA_BYTES
        || interpreter.multiply_accumulates() > MAX_MULTIPLY_ACCUMULATES
    {
        return Ok(());
    }
    let mut cursor = 0usize;
    for i in 0..interpreter.input_count() {
        let size = interpreter.input_info(i)?.byte_size();
        let bytes: Vec<u8> = if payload.is_empty() {
            vec![0u8; size]
        } else {
            (0..size)
                .map(|k| payload[(cursor + k) % payload.len()])
                .collect()
        };
        cursor = cursor.wrapping_add(size);
        interpreter.set_input(i, &bytes)?;
    }
    interpreter.invoke()?;
    // Reading the outputs back is part of the API an embedder uses after invoke.
    for i in 0..interpreter.output_count() {
        std::hint::black_box(interpreter.output(i)?);
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = load_and_run(data);
});
