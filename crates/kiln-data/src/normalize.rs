//! Per-channel input normalisation, `(pixel - mean) / std` on pixels scaled to [0, 1]: the
//! transform a model is trained with, saved with the run and written into the exported
//! model's metadata so that deployments feed it the same inputs.

use serde_json::json;

use crate::DataError;

#[derive(Clone, Debug, PartialEq)]
pub struct Normalization {
    /// One value for all channels, or one per channel.
    pub mean: Vec<f32>,
    /// One value for all channels, or one per channel; each positive.
    pub std: Vec<f32>,
}

impl Normalization {
    /// No change: mean 0, std 1.
    pub fn identity() -> Self {
        Self {
            mean: vec![0.0],
            std: vec![1.0],
        }
    }

    /// Checks the lengths against `channels` and the values for sanity.
    pub fn validate(&self, channels: usize) -> Result<(), DataError> {
        for (what, values) in [("mean", &self.mean), ("std", &self.std)] {
            if values.len() != 1 && values.len() != channels {
                return Err(DataError::Transform(format!(
                    "normalisation {what} has {} values but the images have {channels} channels; give 1 value or {channels}",
                    values.len()
                )));
            }
            if values.iter().any(|v| !v.is_finite()) {
                return Err(DataError::Transform(format!(
                    "normalisation {what} {values:?} must be finite"
                )));
            }
        }
        if self.std.iter().any(|&s| s <= 0.0) {
            return Err(DataError::Transform(format!(
                "normalisation std {:?} must be positive",
                self.std
            )));
        }
        Ok(())
    }

    pub fn is_identity(&self) -> bool {
        self.mean.iter().all(|&m| m == 0.0) && self.std.iter().all(|&s| s == 1.0)
    }

    /// Normalises one interleaved (HWC) image in place.
    pub fn apply(&self, pixels: &mut [f32], channels: usize) {
        if self.is_identity() || channels == 0 {
            return;
        }
        let pick = |values: &[f32], c: usize| values.get(c).or(values.first()).copied();
        let scales: Vec<(f32, f32)> = (0..channels)
            .map(|c| {
                let mean = pick(&self.mean, c).unwrap_or(0.0);
                let std = pick(&self.std, c).unwrap_or(1.0);
                (mean, 1.0 / std)
            })
            .collect();
        for pixel in pixels.chunks_exact_mut(channels) {
            for (value, &(mean, inv_std)) in pixel.iter_mut().zip(&scales) {
                *value = (*value - mean) * inv_std;
            }
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({ "mean": self.mean, "std": self.std })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ImageDataset;

    #[test]
    fn per_channel_and_broadcast_normalisation() {
        let norm = Normalization {
            mean: vec![0.5, 0.0],
            std: vec![0.25, 2.0],
        };
        let mut pixels = vec![0.5, 1.0, 1.0, 0.0];
        norm.apply(&mut pixels, 2);
        assert_eq!(pixels, vec![0.0, 0.5, 2.0, 0.0]);

        let broadcast = Normalization {
            mean: vec![0.5],
            std: vec![0.5],
        };
        let mut pixels = vec![0.0, 1.0, 0.5];
        broadcast.apply(&mut pixels, 3);
        assert_eq!(pixels, vec![-1.0, 1.0, 0.0]);
    }

    #[test]
    fn bad_normalisation_is_an_error_naming_the_fix() {
        let wrong_len = Normalization {
            mean: vec![0.5, 0.5],
            std: vec![1.0],
        };
        let err = wrong_len.validate(3).unwrap_err().to_string();
        assert!(err.contains("3 channels"), "{err}");
        let zero_std = Normalization {
            mean: vec![0.5],
            std: vec![0.0],
        };
        assert!(
            zero_std
                .validate(1)
                .unwrap_err()
                .to_string()
                .contains("positive")
        );
        assert!(Normalization::identity().validate(3).is_ok());
    }

    #[test]
    fn a_normalised_dataset_keeps_its_pixels_and_reads_normalised() {
        let mut data = ImageDataset {
            images: vec![0, 255, 51, 102],
            labels: vec![0, 1],
            height: 1,
            width: 1,
            channels: 2,
            class_names: vec!["a".into(), "b".into()],
            skipped: 0,
            warnings: Vec::new(),
            normalization: Normalization::identity(),
        };
        let norm = Normalization {
            mean: vec![0.5, 0.0],
            std: vec![0.5, 2.0],
        };
        data.normalize(&norm).unwrap();
        assert_eq!(data.pixels(1), &[51, 102]);
        let expected = [(0.2f32 - 0.5) / 0.5, 0.4 / 2.0];
        for (got, want) in data.image(1).iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        // A split keeps reading the same way.
        assert_eq!(data.subset(&[1]).image(0), data.image(1));
        let bad = Normalization {
            mean: vec![0.5, 0.5, 0.5],
            std: vec![1.0],
        };
        assert!(data.normalize(&bad).is_err());
    }
}
