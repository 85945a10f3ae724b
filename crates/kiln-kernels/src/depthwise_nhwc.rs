//! Depthwise convolution with channels in the SIMD lanes: each image is transposed to NHWC,
//! every output pixel is `Σ_taps w[tap][0..c] ⊙ x[pixel + tap][0..c]` (vector FMAs over
//! channels), and the result transposed back. For the small planes of a network's late stages
//! (6×6, 3×3) and for stride 2, the per-plane row loops spend their time in loop overhead and
//! strided loads; here the work per instruction does not depend on the plane size.

use crate::Conv2dShape;
use crate::parallel::{for_each_image, sum_over_images};
use crate::shape::valid_range;
use crate::simd::{Math, multiversion};

/// `dst` (`cols × rows`) = `src` (`rows × cols`) transposed: 8×8 tiles in AVX registers
/// where the CPU has AVX (the scalar loop's strided stores were an eighth of MobileNetV2's
/// training step), the edges and other CPUs element by element in 16×16 tiles.
fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    assert!(src.len() >= rows * cols && dst.len() >= rows * cols);
    let (mut full_rows, mut full_cols) = (0, 0);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        (full_rows, full_cols) = (rows / 8 * 8, cols / 8 * 8);
        // SAFETY: the CPU has AVX; the tiles lie within both slices (asserted above).
        unsafe { transpose_tiles_avx(src, rows, cols, dst, full_rows, full_cols) };
    }
    // What the tiles left: the last columns of the tiled rows, then the last rows.
    transpose_scalar(src, rows, cols, dst, 0..full_rows, full_cols..cols);
    transpose_scalar(src, rows, cols, dst, full_rows..rows, 0..cols);
}

fn transpose_scalar(
    src: &[f32],
    rows: usize,
    cols: usize,
    dst: &mut [f32],
    row_range: std::ops::Range<usize>,
    col_range: std::ops::Range<usize>,
) {
    const TILE: usize = 16;
    for r0 in row_range.clone().step_by(TILE) {
        let r1 = (r0 + TILE).min(row_range.end);
        for c0 in col_range.clone().step_by(TILE) {
            let c1 = (c0 + TILE).min(col_range.end);
            for r in r0..r1 {
                let row = &src[r * cols + c0..r * cols + c1];
                for (c, v) in (c0..c1).zip(row) {
                    dst[c * rows + r] = *v;
                }
            }
        }
    }
}

/// The 8×8 tiles of the first `full_rows` × `full_cols` (multiples of 8).
///
/// # Safety
/// The CPU must have AVX; both slices must hold `rows × cols` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose_tiles_avx(
    src: &[f32],
    rows: usize,
    cols: usize,
    dst: &mut [f32],
    full_rows: usize,
    full_cols: usize,
) {
    use std::arch::x86_64::*;
    for r0 in (0..full_rows).step_by(8) {
        for c0 in (0..full_cols).step_by(8) {
            // SAFETY: rows r0..r0 + 8 and columns c0..c0 + 8 are inside both matrices.
            unsafe {
                let load = |r: usize| _mm256_loadu_ps(src.as_ptr().add((r0 + r) * cols + c0));
                let [a, b, c, d, e, f, g, h] = [0, 1, 2, 3, 4, 5, 6, 7].map(load);
                // Pairs of rows interleaved, then quads, then the 128-bit halves swapped.
                let (ab_lo, ab_hi) = (_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
                let (cd_lo, cd_hi) = (_mm256_unpacklo_ps(c, d), _mm256_unpackhi_ps(c, d));
                let (ef_lo, ef_hi) = (_mm256_unpacklo_ps(e, f), _mm256_unpackhi_ps(e, f));
                let (gh_lo, gh_hi) = (_mm256_unpacklo_ps(g, h), _mm256_unpackhi_ps(g, h));
                let q0 = _mm256_shuffle_ps::<0x44>(ab_lo, cd_lo);
                let q1 = _mm256_shuffle_ps::<0xEE>(ab_lo, cd_lo);
                let q2 = _mm256_shuffle_ps::<0x44>(ab_hi, cd_hi);
                let q3 = _mm256_shuffle_ps::<0xEE>(ab_hi, cd_hi);
                let q4 = _mm256_shuffle_ps::<0x44>(ef_lo, gh_lo);
                let q5 = _mm256_shuffle_ps::<0xEE>(ef_lo, gh_lo);
                let q6 = _mm256_shuffle_ps::<0x44>(ef_hi, gh_hi);
                let q7 = _mm256_shuffle_ps::<0xEE>(ef_hi, gh_hi);
                let columns = [
                    _mm256_permute2f128_ps::<0x20>(q0, q4),
                    _mm256_permute2f128_ps::<0x20>(q1, q5),
                    _mm256_permute2f128_ps::<0x20>(q2, q6),
                    _mm256_permute2f128_ps::<0x20>(q3, q7),
                    _mm256_permute2f128_ps::<0x31>(q0, q4),
                    _mm256_permute2f128_ps::<0x31>(q1, q5),
                    _mm256_permute2f128_ps::<0x31>(q2, q6),
                    _mm256_permute2f128_ps::<0x31>(q3, q7),
                ];
                for (c, column) in columns.into_iter().enumerate() {
                    _mm256_storeu_ps(dst.as_mut_ptr().add((c0 + c) * rows + r0), column);
                }
            }
        }
    }
}

/// The weight `[c][kh·kw]` as `[kh·kw][c]`.
fn taps_first(weight: &[f32], channels: usize, taps: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; weight.len()];
    for c in 0..channels {
        for t in 0..taps {
            out[t * channels + c] = weight[c * taps + t];
        }
    }
    out
}

/// For output row `oh`, the tap rows inside the input: `(tap row, input row)`.
fn rows(s: &Conv2dShape, oh: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
    (0..s.kernel[0]).filter_map(move |i| {
        (oh * s.stride[0] + i * s.dilation[0])
            .checked_sub(s.padding[0].0)
            .filter(|&ih| ih < s.in_size[0])
            .map(|ih| (i, ih))
    })
}

/// For each tap column: the output columns reading inside the input.
fn column_ranges(s: &Conv2dShape) -> Vec<(usize, usize)> {
    let out_w = s.out_size()[1];
    (0..s.kernel[1])
        .map(|j| {
            valid_range(
                out_w,
                s.in_size[1],
                s.stride[1],
                j * s.dilation[1],
                s.padding[1].0,
            )
        })
        .collect()
}

fn input_column(s: &Conv2dShape, ow: usize, j: usize) -> usize {
    ow * s.stride[1] + j * s.dilation[1] - s.padding[1].0
}

/// Per-thread scratch: one image channels-last, in and out.
#[derive(Default)]
struct Scratch {
    input: Vec<f32>,
    output: Vec<f32>,
}

/// `len` floats of `buffer` with whatever they held: for buffers written before they are read
/// (zeroing them per image cost a pass over every image).
fn sized(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    &mut buffer[..len]
}

/// `len` zeros, for buffers that are summed into.
fn zeroed(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    let buffer = sized(buffer, len);
    buffer.fill(0.0);
    buffer
}

pub(crate) fn forward(
    s: &Conv2dShape,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let c = s.in_channels;
    let [in_h, in_w] = s.in_size;
    let [out_h, out_w] = s.out_size();
    let wt = taps_first(weight, c, s.kernel[0] * s.kernel[1]);
    let columns = column_ranges(s);
    let (in_image, out_image) = (c * in_h * in_w, c * out_h * out_w);
    // One image at a time per thread: the channels-last copies stay in cache.
    for_each_image(y, out_image, Scratch::default, |scratch, n, y_n, _| {
        let image = sized(&mut scratch.input, in_image);
        transpose(&x[n * in_image..(n + 1) * in_image], c, in_h * in_w, image);
        let out = sized(&mut scratch.output, out_image);
        for (oh, y_row) in out.chunks_exact_mut(out_w * c).enumerate() {
            for px in y_row.chunks_exact_mut(c) {
                match bias {
                    Some(b) => px.copy_from_slice(b),
                    None => px.fill(0.0),
                }
            }
            for (i, ih) in rows(s, oh) {
                for (j, &(lo, hi)) in columns.iter().enumerate() {
                    let w = &wt[(i * s.kernel[1] + j) * c..(i * s.kernel[1] + j + 1) * c];
                    for ow in lo..hi {
                        let at = (ih * in_w + input_column(s, ow, j)) * c;
                        fma_rows(&mut y_row[ow * c..(ow + 1) * c], w, &image[at..at + c]);
                    }
                }
            }
        }
        transpose(out, out_h * out_w, c, y_n);
    });
}

pub(crate) fn input_grad(s: &Conv2dShape, weight: &[f32], dy: &[f32], dx: &mut [f32]) {
    let c = s.in_channels;
    let [in_h, in_w] = s.in_size;
    let [out_h, out_w] = s.out_size();
    let wt = taps_first(weight, c, s.kernel[0] * s.kernel[1]);
    let columns = column_ranges(s);
    let (in_image, out_image) = (c * in_h * in_w, c * out_h * out_w);
    for_each_image(dx, in_image, Scratch::default, |scratch, n, dx_n, _| {
        let grad = sized(&mut scratch.output, out_image);
        transpose(
            &dy[n * out_image..(n + 1) * out_image],
            c,
            out_h * out_w,
            grad,
        );
        let dx_image = zeroed(&mut scratch.input, in_image);
        for oh in 0..out_h {
            for (i, ih) in rows(s, oh) {
                for (j, &(lo, hi)) in columns.iter().enumerate() {
                    let w = &wt[(i * s.kernel[1] + j) * c..(i * s.kernel[1] + j + 1) * c];
                    for ow in lo..hi {
                        let at = (ih * in_w + input_column(s, ow, j)) * c;
                        let from = (oh * out_w + ow) * c;
                        fma_rows(&mut dx_image[at..at + c], w, &grad[from..from + c]);
                    }
                }
            }
        }
        transpose(dx_image, in_h * in_w, c, dx_n);
    });
}

pub(crate) fn weight_grad(s: &Conv2dShape, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let c = s.in_channels;
    let [in_h, in_w] = s.in_size;
    let [out_h, out_w] = s.out_size();
    let k = s.kernel[0] * s.kernel[1];
    let columns = column_ranges(s);
    let (in_image, out_image) = (c * in_h * in_w, c * out_h * out_w);
    let mut taps_by_channel = vec![0.0f32; dw.len()];
    sum_over_images(
        s.batch,
        &mut taps_by_channel,
        Scratch::default,
        |scratch, n, sum, _| {
            let image = sized(&mut scratch.input, in_image);
            transpose(&x[n * in_image..(n + 1) * in_image], c, in_h * in_w, image);
            let grad = sized(&mut scratch.output, out_image);
            transpose(
                &dy[n * out_image..(n + 1) * out_image],
                c,
                out_h * out_w,
                grad,
            );
            for oh in 0..out_h {
                for (i, ih) in rows(s, oh) {
                    for (j, &(lo, hi)) in columns.iter().enumerate() {
                        let tap = i * s.kernel[1] + j;
                        let acc = &mut sum[tap * c..(tap + 1) * c];
                        for ow in lo..hi {
                            let at = (ih * in_w + input_column(s, ow, j)) * c;
                            let from = (oh * out_w + ow) * c;
                            fma_rows(acc, &grad[from..from + c], &image[at..at + c]);
                        }
                    }
                }
            }
        },
    );
    for ch in 0..c {
        for t in 0..k {
            dw[ch * k + t] = taps_by_channel[t * c + ch];
        }
    }
}

multiversion!(fn fma_rows(acc: &mut [f32], a: &[f32], b: &[f32]) => fma_rows_body);

/// `acc[i] += a[i] · b[i]`
#[inline(always)]
fn fma_rows_body<M: Math>(acc: &mut [f32], a: &[f32], b: &[f32]) {
    for ((acc, a), b) in acc.iter_mut().zip(a).zip(b) {
        *acc = M::mul_add(*a, *b, *acc);
    }
}

#[cfg(test)]
mod tests {
    /// The AVX tiles and the scalar edges together move every value, whatever the shape.
    #[test]
    fn transpose_moves_every_value_for_any_shape() {
        for (rows, cols) in [(1, 1), (8, 8), (9, 17), (16, 3), (5, 24), (33, 40)] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let mut dst = vec![-1.0; rows * cols];
            super::transpose(&src, rows, cols, &mut dst);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        dst[c * rows + r],
                        src[r * cols + c],
                        "{rows}×{cols} ({r}, {c})"
                    );
                }
            }
        }
    }
}
