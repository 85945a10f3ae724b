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

/// Mean cross-entropy of `logits` (rows of `classes`) against `labels`, with the labels
/// smoothed by `smoothing` as in training (`(1 − s)·one_hot + s / classes`): the validation
/// loss, on the same scale as the training loss.
pub fn cross_entropy(logits: &[f32], labels: &[u32], classes: usize, smoothing: f64) -> f64 {
    let classes = classes.max(1);
    let mut total = 0.0f64;
    for (row, &label) in logits.chunks(classes).zip(labels) {
        let max = row
            .iter()
            .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
        let log_sum = row
            .iter()
            .map(|&v| (f64::from(v) - max).exp())
            .sum::<f64>()
            .ln()
            + max;
        for (class, &value) in row.iter().enumerate() {
            let target = smoothing / classes as f64
                + if class == label as usize {
                    1.0 - smoothing
                } else {
                    0.0
                };
            total -= target * (f64::from(value) - log_sum);
        }
    }
    total / labels.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_entropy_of_known_logits() {
        // Uniform logits: ln(classes) whatever the label or smoothing.
        let uniform = cross_entropy(&[0.0; 8], &[1, 3], 4, 0.1);
        assert!((uniform - 4f64.ln()).abs() < 1e-12);
        // One row, no smoothing: −log softmax of the label.
        let logits = [2.0f32, 0.0, -1.0];
        let expected = -(2.0 - (2f64.exp() + 1.0 + (-1f64).exp()).ln());
        assert!((cross_entropy(&logits, &[0], 3, 0.0) - expected).abs() < 1e-9);
        // Smoothing mixes in the other classes' log-probabilities.
        let smoothed = cross_entropy(&logits, &[0], 3, 0.3);
        assert!(smoothed > expected);
    }

    #[test]
    fn argmax_and_accuracy() {
        let logits = [0.1, 0.9, 0.0, 2.0, -1.0, 0.5];
        assert_eq!(argmax_rows(&logits, 3), vec![1, 0]);
        assert!((accuracy(&logits, &[1, 2], 3) - 0.5).abs() < 1e-12);
    }
}
