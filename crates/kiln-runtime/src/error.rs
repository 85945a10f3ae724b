//! Runtime errors. Each names the operator, tensor or input at fault and how to fix it.

use kiln_tflite::FormatError;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("invalid model: {0}")]
    InvalidModel(String),
    #[error("unsupported operator {name} version {version} (operator {op_index}): {reason}")]
    Unsupported {
        op_index: usize,
        name: String,
        version: i32,
        reason: String,
    },
    #[error("operator {op_index} ({name}): {reason}")]
    BadOperator {
        op_index: usize,
        name: String,
        reason: String,
    },
    #[error("input {index} ('{name}'): {reason}")]
    BadInput {
        index: usize,
        name: String,
        reason: String,
    },
    #[error("tensor '{tensor}': {reason}")]
    NotRealValued { tensor: String, reason: String },
    #[error(
        "cannot start {threads} worker threads: {reason} (ask for fewer, or 1 to run on the caller's thread)"
    )]
    Threads { threads: usize, reason: String },
    #[error("no {kind} {index}: the model has {count}")]
    NoSuchTensor {
        kind: &'static str,
        index: usize,
        count: usize,
    },
}
