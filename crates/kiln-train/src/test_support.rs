//! Tiny data and settings the crate's tests train with.

/// Bright or dark `side`×`side` images: something to train on.
pub fn two_tone(rows: usize, side: usize) -> kiln_data::ImageDataset {
    let labels: Vec<u32> = (0..rows as u32).map(|i| i % 2).collect();
    let images = labels
        .iter()
        .flat_map(|&l| std::iter::repeat_n(50 + 150 * l as u8, side * side))
        .collect();
    kiln_data::ImageDataset {
        images,
        labels,
        height: side,
        width: side,
        channels: 1,
        class_names: vec!["dark".into(), "bright".into()],
        skipped: 0,
        warnings: Vec::new(),
        normalization: kiln_data::Normalization::identity(),
    }
}

pub fn settings(epochs: usize) -> crate::TrainSettings {
    crate::TrainSettings {
        epochs,
        batch_size: 8,
        learning_rate: 0.001,
        schedule: crate::LrSchedule::Constant,
        warmup_epochs: 0,
        optimizer: crate::OptimizerSettings::default(),
        label_smoothing: 0.0,
        early_stopping_patience: None,
        augment: crate::Augment::default(),
        transfer: crate::TransferSettings::default(),
        seed: 1,
        checkpoint_dir: None,
        resume: false,
        fingerprint: String::new(),
        progress: false,
        interrupt: None,
    }
}
