//! Inference with a trained model over a whole dataset.

use burn::prelude::*;
use kiln_data::ImageDataset;
use kiln_nn::Classifier;

use crate::batch::{Augment, image_tensor, images_nchw};
use crate::error::TrainError;

/// Logits [N, classes] row-major for every row of `data`, on a plain (non-autodiff) device.
pub fn predict<M: Classifier>(
    model: &M,
    data: &ImageDataset,
    device: &Device,
) -> Result<Vec<f32>, TrainError> {
    let model = model.valid();
    let indices: Vec<usize> = (0..data.len()).collect();
    let mut logits = Vec::new();
    for chunk in indices.chunks(256) {
        let images = image_tensor(
            data,
            images_nchw(data, chunk, Augment::default(), None),
            chunk.len(),
            device,
        );
        let out = model.forward(images).into_data();
        let values = out
            .as_slice::<f32>()
            .map_err(|e| TrainError::Backend(format!("reading logits: {e:?}")))?;
        logits.extend_from_slice(values);
    }
    Ok(logits)
}

/// Index of the largest value in each row of `values` (rows of `width`).
pub fn argmax_rows(values: &[f32], width: usize) -> Vec<usize> {
    values
        .chunks(width.max(1))
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                    if v > best.1 { (i, v) } else { best }
                })
                .0
        })
        .collect()
}

/// Fraction of rows whose argmax equals the label.
pub fn accuracy(logits: &[f32], labels: &[u32], classes: usize) -> f64 {
    let predictions = argmax_rows(logits, classes);
    let correct = predictions
        .iter()
        .zip(labels)
        .filter(|(p, l)| **p == **l as usize)
        .count();
    correct as f64 / labels.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_and_accuracy() {
        let logits = [0.1, 0.9, 0.0, 2.0, -1.0, 0.5];
        assert_eq!(argmax_rows(&logits, 3), vec![1, 0]);
        assert!((accuracy(&logits, &[1, 2], 3) - 0.5).abs() < 1e-12);
    }
}
