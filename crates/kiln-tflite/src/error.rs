//! Errors of the format layer. Each says what is wrong and, where it can, what to do.

/// Why a model could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not a TensorFlow Lite model: {0}; is this a .tflite file?")]
    NotTflite(String),
    #[error(
        "the model file is corrupt or truncated (flatbuffer verification failed: {0}); re-export or re-download it"
    )]
    Corrupt(#[from] flatbuffers::InvalidFlatbuffer),
    #[error("the model is inconsistent: {0}")]
    Invalid(String),
    #[error(
        "cannot write builtin options with union tag {tag}: Kiln does not model that options table"
    )]
    UnwritableOptions { tag: u8 },
    #[error("{context}: {source}")]
    Context {
        context: String,
        #[source]
        source: Box<FormatError>,
    },
}

impl FormatError {
    pub(crate) fn in_subgraph(self, index: usize) -> Self {
        Self::Context {
            context: format!("subgraph {index}"),
            source: Box::new(self),
        }
    }

    pub(crate) fn in_operator(self, index: usize) -> Self {
        Self::Context {
            context: format!("operator {index}"),
            source: Box::new(self),
        }
    }
}
