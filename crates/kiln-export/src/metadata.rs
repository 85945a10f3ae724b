//! What a deployed classifier needs besides its graph: class labels, the input normalisation,
//! a description and the minimum runtime version, written the way the TFLite toolchain does
//! so that LiteRT, the Task Library and MediaPipe find them:
//!
//! - `min_runtime_version`: the converter's metadata entry (NUL-padded version string);
//! - `TFLITE_METADATA`: a tflite-support `ModelMetadata` flatbuffer naming the input as an
//!   image with its normalisation and the output's `labels.txt`;
//! - `labels.txt` itself, in a zip archive appended to the model (tflite-support's packing:
//!   a `.tflite` with metadata is also a valid zip, so `unzip` or Python's `zipfile` read it).

use std::io::{Cursor, Write};

use kiln_tflite::metadata::{
    AssociatedFile, AssociatedFileKind, ColorSpace, ImageContent, MIN_RUNTIME_VERSION,
    ModelMetadata, Normalization, TFLITE_METADATA, TensorMetadata, encode_runtime_version,
};
use kiln_tflite::{Metadata, Model};

use crate::ExportError;

/// File name of the class labels inside the appended archive (one label per line).
pub const LABELS_FILE: &str = "labels.txt";

/// Everything written into a model's metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelCard {
    pub name: String,
    pub description: String,
    pub version: String,
    pub author: String,
    /// One per output logit, in output order.
    pub labels: Vec<String>,
    /// Per-channel normalisation of pixels scaled to [0, 1], as the model was trained:
    /// `input = (pixel / 255 - mean) / std` (one value applies to all channels).
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// Adds (or replaces) the `min_runtime_version` and `TFLITE_METADATA` entries of `model`.
pub fn attach_metadata(model: &mut Model, card: &ModelCard) -> Result<(), ExportError> {
    let metadata = model_metadata(model, card)?;
    if let Some(version) = crate::min_runtime_version(model) {
        set_entry(model, MIN_RUNTIME_VERSION, encode_runtime_version(&version));
    }
    set_entry(model, TFLITE_METADATA, metadata.to_bytes());
    Ok(())
}

/// The bytes of `model` with `card`'s metadata attached and `labels.txt` appended.
pub fn to_bytes_with_metadata(model: &Model, card: &ModelCard) -> Result<Vec<u8>, ExportError> {
    let mut model = model.clone();
    attach_metadata(&mut model, card)?;
    let bytes = model.to_bytes().map_err(|e| ExportError::Metadata {
        reason: format!("cannot serialise the model: {e}"),
    })?;
    let labels = card.labels.join("\n") + "\n";
    append_associated_files(bytes, &[(LABELS_FILE, labels.as_bytes())])
}

fn append_associated_files(
    model_bytes: Vec<u8>,
    files: &[(&str, &[u8])],
) -> Result<Vec<u8>, ExportError> {
    let start = model_bytes.len() as u64;
    let mut cursor = Cursor::new(model_bytes);
    cursor.set_position(start);
    // Offsets in the archive are absolute file offsets because the writer starts after the
    // model; stored (not deflated) like tflite-support, so readers can mmap the labels.
    let mut writer = zip::ZipWriter::new(cursor);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .last_modified_time(zip::DateTime::default());
    for (name, content) in files {
        writer
            .start_file(*name, options)
            .and_then(|()| writer.write_all(content).map_err(Into::into))
            .map_err(|e| ExportError::Metadata {
                reason: format!("cannot pack {name}: {e}"),
            })?;
    }
    let cursor = writer.finish().map_err(|e| ExportError::Metadata {
        reason: format!("cannot finish the associated-files archive: {e}"),
    })?;
    Ok(cursor.into_inner())
}

fn set_entry(model: &mut Model, name: &str, bytes: Vec<u8>) {
    if let Some(entry) = model.metadata.iter().find(|m| m.name == name)
        && let Some(buffer) = model.buffers.get_mut(entry.buffer as usize)
    {
        *buffer = kiln_tflite::Buffer::from_vec(bytes);
        return;
    }
    model.metadata.retain(|m| m.name != name);
    let buffer = model.push_buffer(bytes);
    model.metadata.push(Metadata {
        name: name.to_owned(),
        buffer,
    });
}

fn model_metadata(model: &Model, card: &ModelCard) -> Result<ModelMetadata, ExportError> {
    let subgraph = match model.subgraphs.as_slice() {
        [one] => one,
        other => return Err(ExportError::Subgraphs(other.len())),
    };
    let (&[input_index], &[output_index]) =
        (subgraph.inputs.as_slice(), subgraph.outputs.as_slice())
    else {
        return Err(ExportError::Metadata {
            reason: format!(
                "a classifier has one input and one output; this model has {} and {}",
                subgraph.inputs.len(),
                subgraph.outputs.len()
            ),
        });
    };
    let tensor = |index: i32| {
        subgraph
            .tensors
            .get(index as usize)
            .ok_or_else(|| ExportError::Metadata {
                reason: format!("the subgraph names tensor {index}, which does not exist"),
            })
    };
    let (input, output) = (tensor(input_index)?, tensor(output_index)?);
    let &[_, height, width, channels] = input.shape.as_slice() else {
        return Err(ExportError::Metadata {
            reason: format!(
                "the input '{}' has shape {:?}; image metadata needs [batch, height, width, channels]",
                input.name, input.shape
            ),
        });
    };
    let classes = output.shape.last().copied().unwrap_or(0);
    if classes as usize != card.labels.len() {
        return Err(ExportError::Metadata {
            reason: format!(
                "the output '{}' has {classes} classes but {} labels were given",
                output.name,
                card.labels.len()
            ),
        });
    }
    let channel_count = channels.max(1) as usize;
    for (what, values) in [("mean", &card.mean), ("std", &card.std)] {
        if values.len() != 1 && values.len() != channel_count {
            return Err(ExportError::Metadata {
                reason: format!(
                    "normalisation {what} has {} values; give 1 or {channel_count} (one per channel)",
                    values.len()
                ),
            });
        }
    }
    if card.std.iter().any(|&s| !(s.is_finite() && s > 0.0)) {
        return Err(ExportError::Metadata {
            reason: format!(
                "normalisation std {:?} must be positive and finite",
                card.std
            ),
        });
    }
    // The metadata convention normalises raw 0–255 pixels; Kiln's is pixels scaled to [0, 1].
    let mean: Vec<f32> = card.mean.iter().map(|m| m * 255.0).collect();
    let std: Vec<f32> = card.std.iter().map(|s| s * 255.0).collect();
    Ok(ModelMetadata {
        name: Some(card.name.clone()),
        description: Some(card.description.clone()),
        version: Some(card.version.clone()),
        author: Some(card.author.clone()),
        license: None,
        inputs: vec![TensorMetadata {
            name: Some(input.name.clone()),
            description: None,
            image: Some(ImageContent {
                color_space: match channels {
                    1 => ColorSpace::Grayscale,
                    3 => ColorSpace::Rgb,
                    _ => ColorSpace::Unknown,
                },
                width: width.max(0) as u32,
                height: height.max(0) as u32,
            }),
            normalization: Some(Normalization { mean, std }),
            // No Stats table: each byte here also counts against the int8 size budget.
            stats: None,
            associated_files: Vec::new(),
        }],
        outputs: vec![TensorMetadata {
            name: Some(output.name.clone()),
            description: None,
            associated_files: vec![AssociatedFile {
                name: LABELS_FILE.into(),
                description: None,
                kind: AssociatedFileKind::TensorAxisLabels,
            }],
            ..TensorMetadata::default()
        }],
        // Every field written exists since metadata schema 1.0.0.
        min_parser_version: Some("1.0.0".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_model::small_cnn;
    use kiln_runtime::associated_files;

    /// The test model's classes.
    const CLASSES: usize = 10;

    fn card(labels: usize) -> ModelCard {
        ModelCard {
            name: "quickstart".into(),
            description: "SmallCnn on mnist5k".into(),
            version: "seed 42".into(),
            author: "Kiln".into(),
            labels: (0..labels).map(|i| format!("class{i}")).collect(),
            mean: vec![0.5],
            std: vec![0.25],
        }
    }

    #[test]
    fn metadata_labels_and_runtime_version_survive_a_round_trip() {
        let bytes = to_bytes_with_metadata(&small_cnn(), &card(CLASSES)).unwrap();
        let read = Model::from_bytes(bytes.clone()).unwrap();

        let metadata =
            ModelMetadata::from_bytes(read.metadata_bytes(TFLITE_METADATA).unwrap()).unwrap();
        assert_eq!(metadata.name.as_deref(), Some("quickstart"));
        let input = &metadata.inputs[0];
        assert_eq!(input.name.as_deref(), Some("image"));
        assert_eq!(input.image.unwrap().color_space, ColorSpace::Grayscale);
        let norm = input.normalization.as_ref().unwrap();
        assert_eq!(
            (norm.mean.as_slice(), norm.std.as_slice()),
            (&[127.5f32][..], &[63.75f32][..])
        );
        assert_eq!(metadata.outputs[0].associated_files[0].name, LABELS_FILE);

        let version = read.metadata_bytes(MIN_RUNTIME_VERSION).unwrap();
        assert_eq!(version.len(), 16);
        assert!(kiln_tflite::metadata::decode_runtime_version(version).is_some());

        let files = associated_files(&bytes).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].0, LABELS_FILE);
        let labels = String::from_utf8(files[0].1.clone()).unwrap();
        assert_eq!(labels.lines().count(), CLASSES);
        assert!(labels.starts_with("class0\nclass1\n"));
    }

    #[test]
    fn attaching_twice_replaces_the_entries() {
        let mut model = small_cnn();
        attach_metadata(&mut model, &card(CLASSES)).unwrap();
        let (entries, buffers) = (model.metadata.len(), model.buffers.len());
        attach_metadata(&mut model, &card(CLASSES)).unwrap();
        assert_eq!(
            (model.metadata.len(), model.buffers.len()),
            (entries, buffers)
        );
    }

    #[test]
    fn mismatched_labels_or_normalisation_are_errors_that_say_so() {
        let model = small_cnn();
        let err = to_bytes_with_metadata(&model, &card(1234))
            .unwrap_err()
            .to_string();
        assert!(err.contains("1234 labels"), "{err}");
        let mut bad = card(CLASSES);
        bad.std = vec![0.0];
        let err = to_bytes_with_metadata(&model, &bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("std"), "{err}");
        bad.std = vec![0.2; 5];
        let err = to_bytes_with_metadata(&model, &bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("one per channel"), "{err}");
    }

    #[test]
    fn a_model_without_an_archive_has_no_associated_files() {
        let bytes = small_cnn().to_bytes().unwrap();
        assert!(associated_files(&bytes).unwrap().is_empty());
    }
}
