//! Turning dataset rows into Burn tensors: NHWC pixels → NCHW batch, with seeded random-shift
//! augmentation (translation with zero fill, the augmentation that helps digit-like data).

use burn::prelude::*;
use kiln_data::ImageDataset;
use rand::Rng;
use rand::rngs::StdRng;

/// NCHW pixels of the rows `indices`, each shifted by up to `max_shift` pixels when an RNG is
/// given.
pub fn images_nchw(
    data: &ImageDataset,
    indices: &[usize],
    max_shift: usize,
    mut rng: Option<&mut StdRng>,
) -> Vec<f32> {
    let (h, w, c) = (data.height, data.width, data.channels);
    let mut out = vec![0.0f32; indices.len() * c * h * w];
    for (slot, &row) in indices.iter().enumerate() {
        let image = data.image(row);
        let (dy, dx) = match rng.as_deref_mut() {
            Some(rng) if max_shift > 0 => {
                let s = max_shift as i32;
                (
                    rng.random_range(-s..=s) as isize,
                    rng.random_range(-s..=s) as isize,
                )
            }
            _ => (0, 0),
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
                for ch in 0..c {
                    dst[(ch * h + y) * w + x] = image[(sy as usize * w + sx as usize) * c + ch];
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
