//! `pipeline micro MODEL.tflite [--out DIR]`: TensorFlow Lite Micro sources for any `.tflite`
//! (see [`crate::micro`]), next to the file by default.

use std::path::Path;

use anyhow::Result;

pub fn run(model: &Path, out: Option<&Path>) -> Result<()> {
    let dir = match out {
        Some(dir) => dir.to_path_buf(),
        None => model
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf(),
    };
    let (sources, paths) = crate::micro::write(model, &dir)?;
    let arena = sources.arena;
    let operators: Vec<&str> = sources
        .registrations
        .iter()
        .map(|r| r.operator.as_str())
        .collect();
    println!("{}\n{}", paths[0].display(), paths[1].display());
    eprintln!(
        "operators ({}): {}\ntensor arena: {} B (activations {} + scratch {} + TFLM records {}, plus 10%)",
        operators.len(),
        operators.join(", "),
        arena.total,
        arena.activations,
        arena.scratch,
        arena.bookkeeping
    );
    Ok(())
}
