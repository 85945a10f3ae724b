//! Model metadata in the TFLite metadata format (`TFLITE_METADATA` entry, identifier "M001"):
//! the name, description and version of a model, and per input/output tensor its content
//! (an image of some colour space and size), its normalisation and its associated files (such
//! as the class labels). This is what the TFLite Task Library, MediaPipe Tasks and Android
//! Studio's model binding read, so a classifier exported by Kiln drops into those unchanged.

use flatbuffers::{FlatBufferBuilder, WIPOffset};

use crate::FormatError;
use crate::generated::metadata as fb;

/// Name of the model metadata entry holding the `ModelMetadata` flatbuffer.
pub const TFLITE_METADATA: &str = "TFLITE_METADATA";
/// Name of the model metadata entry holding the minimum TFLite runtime version (a
/// NUL-padded string), as the TFLite converter writes it.
pub const MIN_RUNTIME_VERSION: &str = "min_runtime_version";

/// The parsed (or to-be-written) content of a `TFLITE_METADATA` entry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelMetadata {
    pub name: Option<String>,
    pub description: Option<String>,
    pub version: Option<String>,
    pub author: Option<String>,
    pub license: Option<String>,
    /// One per subgraph input, in `SubGraph.inputs` order.
    pub inputs: Vec<TensorMetadata>,
    /// One per subgraph output, in `SubGraph.outputs` order.
    pub outputs: Vec<TensorMetadata>,
    /// The oldest metadata parser that understands every field written.
    pub min_parser_version: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorMetadata {
    pub name: Option<String>,
    pub description: Option<String>,
    pub image: Option<ImageContent>,
    pub normalization: Option<Normalization>,
    pub stats: Option<ValueStats>,
    pub associated_files: Vec<AssociatedFile>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorSpace {
    Unknown,
    Rgb,
    Grayscale,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageContent {
    pub color_space: ColorSpace,
    pub width: u32,
    pub height: u32,
}

/// Per-channel `(x - mean) / std` applied to raw input values (0–255 for images) before
/// they enter the model; a single value applies to every channel.
#[derive(Clone, Debug, PartialEq)]
pub struct Normalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// Per-channel range of a tensor's values (informational).
#[derive(Clone, Debug, PartialEq)]
pub struct ValueStats {
    pub min: Vec<f32>,
    pub max: Vec<f32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AssociatedFile {
    /// Name of the file inside the zip archive appended to the model.
    pub name: String,
    pub description: Option<String>,
    pub kind: AssociatedFileKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssociatedFileKind {
    Unknown,
    Descriptions,
    /// One label per line for the last axis of the tensor (classifier outputs).
    TensorAxisLabels,
    TensorValueLabels,
    Other(i8),
}

impl AssociatedFileKind {
    fn to_fb(self) -> fb::AssociatedFileType {
        match self {
            Self::Unknown => fb::AssociatedFileType::UNKNOWN,
            Self::Descriptions => fb::AssociatedFileType::DESCRIPTIONS,
            Self::TensorAxisLabels => fb::AssociatedFileType::TENSOR_AXIS_LABELS,
            Self::TensorValueLabels => fb::AssociatedFileType::TENSOR_VALUE_LABELS,
            Self::Other(code) => fb::AssociatedFileType(code),
        }
    }

    fn from_fb(kind: fb::AssociatedFileType) -> Self {
        match kind {
            fb::AssociatedFileType::UNKNOWN => Self::Unknown,
            fb::AssociatedFileType::DESCRIPTIONS => Self::Descriptions,
            fb::AssociatedFileType::TENSOR_AXIS_LABELS => Self::TensorAxisLabels,
            fb::AssociatedFileType::TENSOR_VALUE_LABELS => Self::TensorValueLabels,
            other => Self::Other(other.0),
        }
    }
}

impl ModelMetadata {
    /// Serialises to a `ModelMetadata` flatbuffer with the "M001" identifier.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::with_capacity(1024);
        let name = self.name.as_deref().map(|s| fbb.create_string(s));
        let description = self.description.as_deref().map(|s| fbb.create_string(s));
        let version = self.version.as_deref().map(|s| fbb.create_string(s));
        let inputs = tensor_vector(&mut fbb, &self.inputs);
        let outputs = tensor_vector(&mut fbb, &self.outputs);
        let subgraph = fb::SubGraphMetadata::create(
            &mut fbb,
            &fb::SubGraphMetadataArgs {
                input_tensor_metadata: Some(inputs),
                output_tensor_metadata: Some(outputs),
                ..Default::default()
            },
        );
        let subgraphs = fbb.create_vector(&[subgraph]);
        let author = self.author.as_deref().map(|s| fbb.create_string(s));
        let license = self.license.as_deref().map(|s| fbb.create_string(s));
        let min_parser_version = self
            .min_parser_version
            .as_deref()
            .map(|s| fbb.create_string(s));
        let root = fb::ModelMetadata::create(
            &mut fbb,
            &fb::ModelMetadataArgs {
                name,
                description,
                version,
                subgraph_metadata: Some(subgraphs),
                author,
                license,
                associated_files: None,
                min_parser_version,
            },
        );
        fb::finish_model_metadata_buffer(&mut fbb, root);
        fbb.finished_data().to_vec()
    }

    /// Parses a `TFLITE_METADATA` entry, verifying the flatbuffer. Only the first subgraph's
    /// metadata is read (TFLite classifiers have one).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, FormatError> {
        // Checked by hand: the generated helper asserts the buffer is at least 8 bytes long.
        if bytes.get(4..8) != Some(fb::MODEL_METADATA_IDENTIFIER.as_bytes()) {
            return Err(FormatError::Invalid(
                "the TFLITE_METADATA entry is not a TFLite metadata flatbuffer (identifier M001)"
                    .into(),
            ));
        }
        let root = fb::root_as_model_metadata(bytes)?;
        let subgraph = root.subgraph_metadata().and_then(|v| v.iter().next());
        let tensors = |list: Option<
            flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<fb::TensorMetadata<'_>>>,
        >| {
            list.map(|v| v.iter().map(read_tensor).collect())
                .unwrap_or_default()
        };
        Ok(Self {
            name: root.name().map(str::to_owned),
            description: root.description().map(str::to_owned),
            version: root.version().map(str::to_owned),
            author: root.author().map(str::to_owned),
            license: root.license().map(str::to_owned),
            inputs: tensors(subgraph.and_then(|s| s.input_tensor_metadata())),
            outputs: tensors(subgraph.and_then(|s| s.output_tensor_metadata())),
            min_parser_version: root.min_parser_version().map(str::to_owned),
        })
    }
}

fn tensor_vector<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    tensors: &[TensorMetadata],
) -> WIPOffset<flatbuffers::Vector<'a, flatbuffers::ForwardsUOffset<fb::TensorMetadata<'a>>>> {
    let offsets: Vec<_> = tensors.iter().map(|t| write_tensor(fbb, t)).collect();
    fbb.create_vector(&offsets)
}

fn write_tensor<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    tensor: &TensorMetadata,
) -> WIPOffset<fb::TensorMetadata<'a>> {
    let name = tensor.name.as_deref().map(|s| fbb.create_string(s));
    let description = tensor.description.as_deref().map(|s| fbb.create_string(s));
    let content = tensor.image.map(|image| {
        let size = fb::ImageSize::create(
            fbb,
            &fb::ImageSizeArgs {
                width: image.width,
                height: image.height,
            },
        );
        let properties = fb::ImageProperties::create(
            fbb,
            &fb::ImagePropertiesArgs {
                color_space: match image.color_space {
                    ColorSpace::Unknown => fb::ColorSpaceType::UNKNOWN,
                    ColorSpace::Rgb => fb::ColorSpaceType::RGB,
                    ColorSpace::Grayscale => fb::ColorSpaceType::GRAYSCALE,
                },
                default_size: Some(size),
            },
        );
        fb::Content::create(
            fbb,
            &fb::ContentArgs {
                content_properties_type: fb::ContentProperties::ImageProperties,
                content_properties: Some(properties.as_union_value()),
                range: None,
            },
        )
    });
    let process_units = tensor.normalization.as_ref().map(|norm| {
        let mean = fbb.create_vector(&norm.mean);
        let std = fbb.create_vector(&norm.std);
        let options = fb::NormalizationOptions::create(
            fbb,
            &fb::NormalizationOptionsArgs {
                mean: Some(mean),
                std_: Some(std),
            },
        );
        let unit = fb::ProcessUnit::create(
            fbb,
            &fb::ProcessUnitArgs {
                options_type: fb::ProcessUnitOptions::NormalizationOptions,
                options: Some(options.as_union_value()),
            },
        );
        fbb.create_vector(&[unit])
    });
    let stats = tensor.stats.as_ref().map(|stats| {
        let max = fbb.create_vector(&stats.max);
        let min = fbb.create_vector(&stats.min);
        fb::Stats::create(
            fbb,
            &fb::StatsArgs {
                max: Some(max),
                min: Some(min),
            },
        )
    });
    let files: Vec<_> = tensor
        .associated_files
        .iter()
        .map(|file| {
            let name = fbb.create_string(&file.name);
            let description = file.description.as_deref().map(|s| fbb.create_string(s));
            fb::AssociatedFile::create(
                fbb,
                &fb::AssociatedFileArgs {
                    name: Some(name),
                    description,
                    type_: file.kind.to_fb(),
                    locale: None,
                },
            )
        })
        .collect();
    let associated_files = (!files.is_empty()).then(|| fbb.create_vector(&files));
    fb::TensorMetadata::create(
        fbb,
        &fb::TensorMetadataArgs {
            name,
            description,
            dimension_names: None,
            content,
            process_units,
            stats,
            associated_files,
        },
    )
}

fn read_tensor(tensor: fb::TensorMetadata<'_>) -> TensorMetadata {
    let image = tensor
        .content()
        .and_then(|c| c.content_properties_as_image_properties())
        .map(|image| ImageContent {
            color_space: match image.color_space() {
                fb::ColorSpaceType::RGB => ColorSpace::Rgb,
                fb::ColorSpaceType::GRAYSCALE => ColorSpace::Grayscale,
                _ => ColorSpace::Unknown,
            },
            width: image.default_size().map_or(0, |s| s.width()),
            height: image.default_size().map_or(0, |s| s.height()),
        });
    let normalization = tensor.process_units().and_then(|units| {
        units
            .iter()
            .find_map(|u| u.options_as_normalization_options())
            .map(|n| Normalization {
                mean: n.mean().map(|v| v.iter().collect()).unwrap_or_default(),
                std: n.std_().map(|v| v.iter().collect()).unwrap_or_default(),
            })
    });
    let stats = tensor.stats().map(|s| ValueStats {
        min: s.min().map(|v| v.iter().collect()).unwrap_or_default(),
        max: s.max().map(|v| v.iter().collect()).unwrap_or_default(),
    });
    let associated_files = tensor
        .associated_files()
        .map(|files| {
            files
                .iter()
                .map(|f| AssociatedFile {
                    name: f.name().unwrap_or_default().to_owned(),
                    description: f.description().map(str::to_owned),
                    kind: AssociatedFileKind::from_fb(f.type_()),
                })
                .collect()
        })
        .unwrap_or_default();
    TensorMetadata {
        name: tensor.name().map(str::to_owned),
        description: tensor.description().map(str::to_owned),
        image,
        normalization,
        stats,
        associated_files,
    }
}

/// The `min_runtime_version` entry's bytes: the version string NUL-padded to 16 bytes, the
/// layout the TFLite converter writes (and LiteRT's `GetMinimumRuntime` reads).
pub fn encode_runtime_version(version: &str) -> Vec<u8> {
    let mut bytes = version.as_bytes().to_vec();
    bytes.resize(bytes.len().max(16), 0);
    bytes
}

/// Reads a `min_runtime_version` entry (up to its first NUL).
pub fn decode_runtime_version(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    std::str::from_utf8(&bytes[..end]).ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classifier_metadata() -> ModelMetadata {
        ModelMetadata {
            name: Some("quickstart".into()),
            description: Some("digits".into()),
            version: Some("1".into()),
            author: Some("Kiln".into()),
            license: None,
            inputs: vec![TensorMetadata {
                name: Some("image".into()),
                description: None,
                image: Some(ImageContent {
                    color_space: ColorSpace::Grayscale,
                    width: 28,
                    height: 28,
                }),
                normalization: Some(Normalization {
                    mean: vec![0.0],
                    std: vec![255.0],
                }),
                stats: Some(ValueStats {
                    min: vec![0.0],
                    max: vec![1.0],
                }),
                associated_files: vec![],
            }],
            outputs: vec![TensorMetadata {
                name: Some("logits".into()),
                associated_files: vec![AssociatedFile {
                    name: "labels.txt".into(),
                    description: None,
                    kind: AssociatedFileKind::TensorAxisLabels,
                }],
                ..Default::default()
            }],
            min_parser_version: Some("1.0.0".into()),
        }
    }

    #[test]
    fn metadata_round_trips_through_the_flatbuffer() {
        let metadata = classifier_metadata();
        let bytes = metadata.to_bytes();
        assert_eq!(&bytes[4..8], b"M001");
        assert_eq!(ModelMetadata::from_bytes(&bytes).unwrap(), metadata);
    }

    #[test]
    fn wrong_identifier_or_truncation_is_an_error_not_a_panic() {
        let bytes = classifier_metadata().to_bytes();
        assert!(ModelMetadata::from_bytes(b"not metadata at all").is_err());
        for cut in 0..bytes.len() {
            let _ = ModelMetadata::from_bytes(&bytes[..cut]);
        }
        let mut flipped = bytes.clone();
        for i in 8..flipped.len() {
            flipped[i] ^= 0x5a;
            let _ = ModelMetadata::from_bytes(&flipped);
            flipped[i] ^= 0x5a;
        }
    }

    #[test]
    fn runtime_version_is_nul_padded_to_sixteen_bytes() {
        let bytes = encode_runtime_version("2.3.0");
        assert_eq!(bytes.len(), 16);
        assert_eq!(decode_runtime_version(&bytes).as_deref(), Some("2.3.0"));
        assert_eq!(decode_runtime_version(b"1.14.0").as_deref(), Some("1.14.0"));
    }
}
