//! The in-memory image classification dataset every source produces.

use std::fmt;

use crate::{DataError, Normalization};

/// Decoded images and their labels, ready for batching.
///
/// Images are stored contiguously as `N × H × W × C` (row-major NHWC) decoded 8-bit pixels:
/// a quarter of the memory floats would take (cats_vs_dogs at 96 px: 0.5 GB, not 2 GB), and
/// NHWC is what TFLite models take. Reading an image as floats ([`image`](Self::image))
/// scales it to [0, 1] and applies the dataset's [`Normalization`].
#[derive(Clone, PartialEq)]
pub struct ImageDataset {
    /// `len() × height × width × channels` pixel values, 0–255.
    pub images: Vec<u8>,
    /// One class index per image, each `< class_names.len()`.
    pub labels: Vec<u32>,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    /// Human-readable class names, indexed by label.
    pub class_names: Vec<String>,
    /// Rows dropped because their image could not be decoded.
    pub skipped: usize,
    /// Why rows were skipped, and other non-fatal problems, for the caller to log.
    pub warnings: Vec<String>,
    /// Applied whenever pixels are read as floats: (pixel / 255 − mean) / std.
    pub normalization: Normalization,
}

impl ImageDataset {
    /// Number of images.
    /// Reads every image with `norm` from now on (after validating it against the channel
    /// count); the stored pixels stay as decoded.
    pub fn normalize(&mut self, norm: &Normalization) -> Result<(), DataError> {
        norm.validate(self.channels)?;
        self.normalization = norm.clone();
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of values in one image: `height × width × channels`.
    pub fn image_len(&self) -> usize {
        self.height * self.width * self.channels
    }

    /// Number of classes (length of `class_names`).
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Image `i`'s pixels, `H × W × C`, 0–255.
    ///
    /// # Panics
    /// If `i >= len()`, like slice indexing.
    pub fn pixels(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// Image `i` as the model sees it: `H × W × C` floats, scaled to [0, 1] and normalised.
    ///
    /// # Panics
    /// If `i >= len()`, like slice indexing.
    pub fn image(&self, i: usize) -> Vec<f32> {
        let mut out = vec![0.0; self.image_len()];
        self.write_image(i, &mut out);
        out
    }

    /// [`image`](Self::image) into `out` (of `image_len()` values), without allocating.
    ///
    /// # Panics
    /// If `i >= len()` or `out` has another length.
    pub fn write_image(&self, i: usize, out: &mut [f32]) {
        assert_eq!(out.len(), self.image_len(), "image buffer length");
        for (value, &pixel) in out.iter_mut().zip(self.pixels(i)) {
            *value = f32::from(pixel) / 255.0;
        }
        self.normalization.apply(out, self.channels);
    }

    /// A new dataset holding the rows at `indices`, in that order (repeats allowed), e.g.
    /// one side of a train/validation split or a shuffled copy.
    ///
    /// `class_names` and the image shape carry over; `skipped` and `warnings` do not, since
    /// they describe the original read and would be counted twice across splits.
    ///
    /// # Panics
    /// If an index is `>= len()`, like slice indexing.
    pub fn subset(&self, indices: &[usize]) -> ImageDataset {
        let mut images = Vec::with_capacity(indices.len() * self.image_len());
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            images.extend_from_slice(self.pixels(i));
            labels.push(self.labels[i]);
        }
        ImageDataset {
            images,
            labels,
            height: self.height,
            width: self.width,
            channels: self.channels,
            class_names: self.class_names.clone(),
            skipped: 0,
            warnings: Vec::new(),
            normalization: self.normalization.clone(),
        }
    }
}

/// A summary instead of millions of pixel values.
impl fmt::Debug for ImageDataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImageDataset")
            .field("len", &self.len())
            .field("height", &self.height)
            .field("width", &self.width)
            .field("channels", &self.channels)
            .field("class_names", &self.class_names)
            .field("skipped", &self.skipped)
            .field("warnings", &self.warnings.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ImageDataset {
        // Three 1×2×1 images: [0, 10], [100, 110], [200, 210].
        ImageDataset {
            images: vec![0, 10, 100, 110, 200, 210],
            labels: vec![0, 1, 2],
            height: 1,
            width: 2,
            channels: 1,
            class_names: vec!["a".into(), "b".into(), "c".into()],
            skipped: 4,
            warnings: vec!["w".into()],
            normalization: Normalization::identity(),
        }
    }

    #[test]
    fn image_slices_one_row() {
        let d = tiny();
        assert_eq!(d.len(), 3);
        assert!(!d.is_empty());
        assert_eq!(d.pixels(1), &[100, 110]);
        assert_eq!(d.image(1), vec![100.0 / 255.0, 110.0 / 255.0]);
        assert_eq!(d.num_classes(), 3);
    }

    #[test]
    fn subset_keeps_order_and_drops_read_diagnostics() {
        let s = tiny().subset(&[2, 0, 2]);
        assert_eq!(s.labels, vec![2, 0, 2]);
        assert_eq!(s.images, vec![200, 210, 0, 10, 200, 210]);
        assert_eq!(s.class_names.len(), 3);
        assert_eq!((s.skipped, s.warnings.len()), (0, 0));
        assert!(tiny().subset(&[]).is_empty());
    }
}
