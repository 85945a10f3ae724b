//! Depthwise convolution with channels in the SIMD lanes: each image is transposed to NHWC,
//! every output pixel is `Σ_taps w[tap][0..c] ⊙ x[pixel + tap][0..c]` (vector FMAs over
//! channels), and the result transposed back. For the small planes of a network's late stages
//! (6×6, 3×3) and for stride 2, the per-plane row loops spend their time in loop overhead and
//! strided loads; here the work per instruction does not depend on the plane size.

use crate::Conv2dShape;
use crate::parallel::{for_each_image, sum_over_images};
use crate::shape::valid_range;
use crate::simd::{Math, multiversion};

/// `dst` (`cols × rows`) = `src` (`rows × cols`) transposed, in 16×16 tiles so both sides
/// stay in cache.
fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const TILE: usize = 16;
    for r0 in (0..rows).step_by(TILE) {
        let r1 = (r0 + TILE).min(rows);
        for c0 in (0..cols).step_by(TILE) {
            let c1 = (c0 + TILE).min(cols);
            for r in r0..r1 {
                let row = &src[r * cols + c0..r * cols + c1];
                for (c, v) in (c0..c1).zip(row) {
                    dst[c * rows + r] = *v;
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

fn sized(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buffer.clear();
    buffer.resize(len, 0.0);
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
        let dx_image = sized(&mut scratch.input, in_image);
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
