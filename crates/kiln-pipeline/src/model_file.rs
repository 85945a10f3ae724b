//! Opening `.tflite` files for the runtime: memory-mapped, so the weights are read in place
//! from the page cache instead of copied into the process.

use std::path::Path;

use anyhow::{Context, Result};
use kiln_runtime::Interpreter;
use kiln_tflite::SharedBytes;

/// The file's bytes, memory-mapped (or read, for an empty file, which cannot be mapped).
pub fn map(path: &Path) -> Result<SharedBytes> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = file
        .metadata()
        .with_context(|| format!("cannot stat {}", path.display()))?
        .len();
    if len == 0 {
        return Ok(SharedBytes::empty());
    }
    // SAFETY: the map is read-only. Kiln never writes model files in place (they are
    // replaced by rename), so the mapped pages do not change under the reader.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .with_context(|| format!("cannot map {}", path.display()))?;
    Ok(SharedBytes::new(map))
}

/// Maps, validates and prepares a model for kiln-runtime.
pub fn interpreter(path: &Path) -> Result<Interpreter> {
    Interpreter::from_shared(map(path)?).with_context(|| format!("cannot load {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_borrowed_from_the_memory_map() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/conv_f32/model.tflite");
        let interpreter = interpreter(&path).unwrap();
        let subgraph = &interpreter.model().subgraphs[0];
        let weights: Vec<usize> = (0..subgraph.tensors.len())
            .filter(|&t| {
                subgraph.tensors[t].shape.len() == 4
                    && !interpreter
                        .model()
                        .tensor_data(&subgraph.tensors[t])
                        .is_empty()
            })
            .collect();
        assert!(!weights.is_empty(), "the fixture has convolution filters");
        for t in weights {
            assert!(
                interpreter.constant_is_borrowed(t),
                "filter {t} was copied, not borrowed"
            );
        }
    }
}
