#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("the training set is empty")]
    EmptyDataset,
    #[error("invalid training setting: {0}")]
    InvalidConfig(String),
    #[error("backend error: {0}")]
    Backend(String),
    #[error("cannot save the checkpoint {path}: {reason}")]
    Checkpoint { path: String, reason: String },
}
