//! The files a `.tflite` carries after its flatbuffer (the TFLite metadata convention: a zip
//! archive appended to the model, e.g. the `labels.txt` its metadata names), so a deployment
//! reads a classifier's labels from the model file itself.

use std::io::{Cursor, Read};

use crate::RuntimeError;

/// The files packed after the flatbuffer, in archive order (empty when there is no archive).
pub fn associated_files(model_bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, RuntimeError> {
    let Ok(mut archive) = zip::ZipArchive::new(Cursor::new(model_bytes)) else {
        return Ok(Vec::new());
    };
    let corrupt = |reason: String| {
        RuntimeError::InvalidModel(format!(
            "the associated-files archive after the model is corrupt ({reason}); re-export the model"
        ))
    };
    let mut files = Vec::with_capacity(archive.len());
    for index in 0..archive.len() {
        let mut file = archive
            .by_index(index)
            .map_err(|e| corrupt(e.to_string()))?;
        let mut content = Vec::new();
        file.read_to_end(&mut content)
            .map_err(|e| corrupt(e.to_string()))?;
        let name = file
            .name()
            .map_err(|e| corrupt(e.to_string()))?
            .into_owned();
        files.push((name, content));
    }
    Ok(files)
}
