//! Turning dataset rows into Burn tensors: NHWC pixels → normalised NCHW floats, with seeded
//! augmentation: random shifts (pad-and-crop with zero fill — the normalised mean —, what
//! helps digit-like data) and horizontal flips (photos).

use burn::prelude::*;
use kiln_data::ImageDataset;
use rand::Rng;
use rand::rngs::StdRng;

/// Random training-time augmentation, drawn per image from the epoch's seeded RNG.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Augment {
    /// Pad-and-crop: translate by up to this many pixels each way, filling with 0 (0 = off).
    pub shift: usize,
    /// Mirror left–right with probability ½ (photos; not digits or text).
    pub horizontal_flip: bool,
}

/// NCHW pixels of the rows `indices`, augmented by `augment` when an RNG is given.
pub fn images_nchw(
    data: &ImageDataset,
    indices: &[usize],
    augment: Augment,
    mut rng: Option<&mut StdRng>,
) -> Vec<f32> {
    let (h, w, c) = (data.height, data.width, data.channels);
    let mut out = vec![0.0f32; indices.len() * c * h * w];
    let mut image = vec![0.0f32; data.image_len()];
    for (slot, &row) in indices.iter().enumerate() {
        data.write_image(row, &mut image);
        let (dy, dx) = match rng.as_deref_mut() {
            Some(rng) if augment.shift > 0 => {
                let s = augment.shift as i32;
                (
                    rng.random_range(-s..=s) as isize,
                    rng.random_range(-s..=s) as isize,
                )
            }
            _ => (0, 0),
        };
        let flip = match rng.as_deref_mut() {
            Some(rng) if augment.horizontal_flip => rng.random_bool(0.5),
            _ => false,
        };
        let dst = &mut out[slot * c * h * w..][..c * h * w];
        for y in 0..h {
            let sy = y as isize - dy;
            if sy < 0 || sy >= h as isize {
                continue;
            }
            for x in 0..w {
                let sx = x as isize - dx;
                if sx < 0 || sx >= w as isize {
                    continue;
                }
                let out_x = if flip { w - 1 - x } else { x };
                for ch in 0..c {
                    dst[(ch * h + y) * w + out_x] = image[(sy as usize * w + sx as usize) * c + ch];
                }
            }
        }
    }
    out
}

pub fn image_tensor(
    data: &ImageDataset,
    pixels: Vec<f32>,
    batch: usize,
    device: &Device,
) -> Tensor<4> {
    Tensor::from_data(
        TensorData::new(pixels, [batch, data.channels, data.height, data.width]),
        device,
    )
}

pub fn label_tensor(data: &ImageDataset, indices: &[usize], device: &Device) -> Tensor<1, Int> {
    let labels: Vec<i64> = indices.iter().map(|&i| i64::from(data.labels[i])).collect();
    Tensor::from_data(TensorData::new(labels, [indices.len()]), device)
}
