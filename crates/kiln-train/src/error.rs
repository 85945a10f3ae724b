#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("the training set is empty")]
    EmptyDataset,
    #[error("invalid training setting: {0}")]
    InvalidConfig(String),
    #[error("backend error: {0}")]
    Backend(String),
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: String, reason: String },
    #[error(
        "interrupted; {}",
        match checkpoint_dir {
            Some(dir) if *last_epoch > 0 => format!("epoch {last_epoch} is checkpointed in {dir}: continue with `pipeline run CONFIG --resume`"),
            _ => "no epoch had completed, so there is nothing to resume".to_owned(),
        }
    )]
    Interrupted {
        last_epoch: usize,
        checkpoint_dir: Option<String>,
    },
}
