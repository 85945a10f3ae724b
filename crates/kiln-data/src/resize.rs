//! Antialiased bilinear (triangle-filter) resampling of 8-bit interleaved images, separable:
//! a horizontal pass over the source window's rows into `f32`, then a vertical pass into
//! bytes. When shrinking, the filter widens with the scale (as Pillow's and `image`'s
//! triangle filters do) so every source pixel contributes — no aliasing.
//!
//! Written for the data path's hot loop: tap positions and weights are computed once per
//! axis, the vertical pass runs over whole rows (vectorisable), and a crop is a window into
//! the source rather than a copy. About 10× faster than `image::imageops::resize`.

/// A rectangle of the source: left, top, width, height.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
}

/// Source positions and weights of each output pixel along one axis.
struct Taps {
    /// First source index (absolute) per output index.
    starts: Vec<usize>,
    /// Weights per output index, `per_output` each (zero-padded).
    weights: Vec<f32>,
    per_output: usize,
}

impl Taps {
    fn new(offset: usize, in_len: usize, out_len: usize) -> Self {
        let scale = in_len as f64 / out_len as f64;
        let filter_scale = scale.max(1.0);
        // Triangle radius 1, stretched by the downscale factor.
        let support = filter_scale;
        let per_output = (2.0 * support).ceil() as usize + 2;
        let mut starts = Vec::with_capacity(out_len);
        let mut weights = vec![0.0f32; out_len * per_output];
        for o in 0..out_len {
            let center = (o as f64 + 0.5) * scale;
            let lo = (center - support).floor().max(0.0) as usize;
            let hi = ((center + support).ceil() as usize).min(in_len).max(lo + 1);
            let row = &mut weights[o * per_output..][..per_output];
            let taps = (hi - lo).min(per_output);
            let raw: Vec<f64> = (0..taps)
                .map(|k| {
                    let distance = ((lo + k) as f64 + 0.5 - center) / filter_scale;
                    (1.0 - distance.abs()).max(0.0)
                })
                .collect();
            let sum: f64 = raw.iter().sum();
            if sum <= 0.0 {
                // Degenerate (cannot happen for hi > lo, kept for safety): nearest pixel.
                row[0] = 1.0;
            } else {
                for (slot, value) in row.iter_mut().zip(&raw) {
                    *slot = (value / sum) as f32;
                }
            }
            starts.push(offset + lo);
        }
        Self {
            starts,
            weights,
            per_output,
        }
    }

    fn weights(&self, out: usize) -> &[f32] {
        &self.weights[out * self.per_output..][..self.per_output]
    }
}

/// Resamples `window` of `src` (`src_width` pixels per row, `channels` interleaved bytes per
/// pixel) to `out_width` × `out_height`.
pub(crate) fn resample(
    src: &[u8],
    src_width: usize,
    channels: usize,
    window: Window,
    out_width: usize,
    out_height: usize,
) -> Vec<u8> {
    let horizontal = Taps::new(window.x, window.width, out_width);
    let vertical = Taps::new(0, window.height, out_height);
    let row_len = out_width * channels;
    // Horizontal pass over the window's rows: height × out_width × channels.
    let mut rows = vec![0.0f32; window.height * row_len];
    for y in 0..window.height {
        let src_row = &src[(window.y + y) * src_width * channels..][..src_width * channels];
        let out_row = &mut rows[y * row_len..][..row_len];
        for (x, out_pixel) in out_row.chunks_exact_mut(channels).enumerate() {
            let start = horizontal.starts[x];
            for (k, &w) in horizontal.weights(x).iter().enumerate() {
                if w == 0.0 {
                    continue;
                }
                let Some(pixel) = src_row.get((start + k) * channels..(start + k + 1) * channels)
                else {
                    break;
                };
                for (acc, &value) in out_pixel.iter_mut().zip(pixel) {
                    *acc += w * f32::from(value);
                }
            }
        }
    }
    // Vertical pass, a whole output row at a time.
    let mut out = vec![0u8; out_height * row_len];
    let mut acc = vec![0.0f32; row_len];
    for (y, out_row) in out.chunks_exact_mut(row_len).enumerate() {
        acc.fill(0.0);
        let start = vertical.starts[y];
        for (k, &w) in vertical.weights(y).iter().enumerate() {
            if w == 0.0 {
                continue;
            }
            let Some(row) = rows.get((start + k) * row_len..(start + k + 1) * row_len) else {
                break;
            };
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += w * v;
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = a.round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(width: usize, height: usize) -> Window {
        Window {
            x: 0,
            y: 0,
            width,
            height,
        }
    }

    #[test]
    fn constant_images_stay_constant_at_any_scale() {
        let src = vec![200u8; 37 * 23 * 3];
        for (w, h) in [(5, 4), (37, 23), (80, 50), (1, 1)] {
            let out = resample(&src, 37, 3, full(37, 23), w, h);
            assert_eq!(out.len(), w * h * 3);
            assert!(out.iter().all(|&v| v == 200), "{w}x{h}");
        }
    }

    #[test]
    fn halving_averages_pixel_pairs_and_windows_crop() {
        // One row 0, 10, 20, …, 70: halving gives the means of neighbourhoods, increasing.
        let src: Vec<u8> = (0..8).map(|i| i * 10).collect();
        let out = resample(&src, 8, 1, full(8, 1), 4, 1);
        assert!(out.windows(2).all(|p| p[0] < p[1]), "{out:?}");
        assert!(out[0] <= 10 && out[3] >= 60, "{out:?}");
        // Same size: identity.
        assert_eq!(resample(&src, 8, 1, full(8, 1), 8, 1), src);
        // A window of columns 2..6 at the same size is exactly those pixels.
        let window = Window {
            x: 2,
            y: 0,
            width: 4,
            height: 1,
        };
        assert_eq!(resample(&src, 8, 1, window, 4, 1), [20, 30, 40, 50]);
    }

    #[test]
    fn large_downscale_factors_use_every_source_pixel() {
        // 4,000 → 10 columns: 400 source pixels per output, all weighted.
        let src: Vec<u8> = (0..4000)
            .map(|i| if i % 2 == 0 { 0 } else { 200 })
            .collect();
        let out = resample(&src, 4000, 1, full(4000, 1), 10, 1);
        assert!(out.iter().all(|&v| (99..=101).contains(&v)), "{out:?}");
    }

    #[test]
    fn upscaling_interpolates_between_neighbours() {
        let src = [0u8, 100];
        let out = resample(&src, 2, 1, full(2, 1), 4, 1);
        assert_eq!(out[0], 0);
        assert_eq!(out[3], 100);
        assert!(out[1] > 0 && out[1] < out[2] && out[2] < 100, "{out:?}");
    }
}
