//! `pipeline infer`: run a `.tflite` on `.npy`/`.npz` inputs with kiln-runtime.

use std::path::Path;

use anyhow::{Context, Result, bail};
use kiln_runtime::npy::{NpyArray, npz_bytes, read_npy, read_npz};
use kiln_runtime::rows::invoke_rows;

fn is_npz(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npz"))
}

pub fn run(model_path: &Path, input_path: &Path, output_path: &Path, threads: usize) -> Result<()> {
    let mut interpreter = crate::model_file::interpreter(model_path)?;
    interpreter.set_threads(threads)?;
    let inputs: Vec<NpyArray> = if is_npz(input_path) {
        read_npz(input_path)?.into_iter().map(|(_, a)| a).collect()
    } else {
        vec![read_npy(input_path)?]
    };
    let arrays = invoke_rows(&mut interpreter, &inputs).with_context(|| {
        format!(
            "running {} on {}",
            model_path.display(),
            input_path.display()
        )
    })?;
    let bytes = if arrays.len() == 1 && !is_npz(output_path) {
        arrays[0].1.to_bytes()?
    } else {
        if !is_npz(output_path) {
            bail!(
                "the model has {} outputs: name the output file .npz",
                arrays.len()
            );
        }
        npz_bytes(&arrays)?
    };
    kiln_tflite::write_atomically(output_path, &bytes)
        .with_context(|| format!("cannot write {}", output_path.display()))?;
    Ok(())
}
