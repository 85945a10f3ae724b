//! Export errors: each names the operator or tensor at fault and what would fix it.

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the model has {0} subgraphs; kiln-export transforms models with exactly one")]
    Subgraphs(usize),
    #[error("operator {op_index} ({op}): {reason}")]
    Operator {
        op_index: usize,
        op: String,
        reason: String,
    },
    #[error("tensor {index} '{name}': {reason}")]
    Tensor {
        index: usize,
        name: String,
        reason: String,
    },
    #[error("model metadata: {reason}")]
    Metadata { reason: String },
    #[error("calibration: {0}")]
    Calibration(String),
    #[error("calibration ran the float model in kiln-runtime and it failed: {0}")]
    Runtime(#[from] kiln_runtime::RuntimeError),
}
