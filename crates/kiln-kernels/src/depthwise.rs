//! Depthwise convolution (one filter per channel: MobileNet's and EfficientNet's 3×3 and 5×5
//! layers) by direct loops over each channel's plane. As GEMMs these are `1 × k²` by
//! `k² × pixels` products per channel, all packing and no arithmetic; here every output row is
//! built from `k²` shifted input rows (`y += w · x`), which vectorizes along the row when the
//! stride is 1.

use rayon::prelude::*;

use crate::Conv2dShape;
use crate::shape::valid_range;
use crate::simd::{Math, axpy, dot, multiversion};

/// Planes handed to one task at least this many output values, so tiny late-stage planes
/// (7×7) do not drown in scheduling.
const MIN_TASK_VALUES: usize = 4096;

/// Where kernel tap `(i, j)` lands: for each tap column `j`, the output columns that read
/// inside the input and the input column the first of them reads.
struct Taps {
    columns: Vec<(usize, usize, usize)>,
}

impl Taps {
    fn new(s: &Conv2dShape) -> Self {
        let out_w = s.out_size()[1];
        let columns = (0..s.kernel[1])
            .map(|j| {
                let offset = j * s.dilation[1];
                let (lo, hi) =
                    valid_range(out_w, s.in_size[1], s.stride[1], offset, s.padding[1].0);
                let first = if lo < hi {
                    lo * s.stride[1] + offset - s.padding[1].0
                } else {
                    0
                };
                (lo, hi, first)
            })
            .collect();
        Self { columns }
    }

    /// The input row output row `oh` reads through tap row `i`, if inside.
    fn input_row(s: &Conv2dShape, oh: usize, i: usize) -> Option<usize> {
        let ih = oh * s.stride[0] + i * s.dilation[0];
        ih.checked_sub(s.padding[0].0)
            .filter(|&ih| ih < s.in_size[0])
    }
}

fn tasks_min_len(values_per_plane: usize) -> usize {
    MIN_TASK_VALUES.div_ceil(values_per_plane.max(1))
}

pub(crate) fn forward(
    s: &Conv2dShape,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let taps = Taps::new(s);
    let (in_plane, out_plane, k) = (s.in_pixels(), s.out_pixels(), s.kernel[0] * s.kernel[1]);
    y.par_chunks_mut(out_plane)
        .enumerate()
        .with_min_len(tasks_min_len(out_plane))
        .for_each(|(plane, y_plane)| {
            let c = plane % s.in_channels;
            forward_plane(
                s,
                &taps,
                &x[plane * in_plane..(plane + 1) * in_plane],
                &weight[c * k..(c + 1) * k],
                bias.map_or(0.0, |b| b[c]),
                y_plane,
            );
        });
}

multiversion!(fn forward_plane(s: &Conv2dShape, taps: &Taps, x: &[f32], w: &[f32], bias: f32, y: &mut [f32]) => forward_plane_body);

#[inline(always)]
fn forward_plane_body<M: Math>(
    s: &Conv2dShape,
    taps: &Taps,
    x: &[f32],
    w: &[f32],
    bias: f32,
    y: &mut [f32],
) {
    let [_, in_w] = s.in_size;
    let out_w = s.out_size()[1];
    let stride = s.stride[1];
    y.fill(bias);
    for (oh, y_row) in y.chunks_exact_mut(out_w).enumerate() {
        for i in 0..s.kernel[0] {
            let Some(ih) = Taps::input_row(s, oh, i) else {
                continue;
            };
            let x_row = &x[ih * in_w..(ih + 1) * in_w];
            for (j, &(lo, hi, first)) in taps.columns.iter().enumerate() {
                let wv = w[i * s.kernel[1] + j];
                if lo >= hi {
                    continue;
                }
                if stride == 1 {
                    axpy::<M>(&mut y_row[lo..hi], wv, &x_row[first..first + hi - lo]);
                } else {
                    for (o, v) in y_row[lo..hi]
                        .iter_mut()
                        .zip(x_row[first..].iter().step_by(stride))
                    {
                        *o = M::mul_add(wv, *v, *o);
                    }
                }
            }
        }
    }
}

pub(crate) fn input_grad(s: &Conv2dShape, weight: &[f32], dy: &[f32], dx: &mut [f32]) {
    let taps = Taps::new(s);
    let (in_plane, out_plane, k) = (s.in_pixels(), s.out_pixels(), s.kernel[0] * s.kernel[1]);
    dx.par_chunks_mut(in_plane)
        .enumerate()
        .with_min_len(tasks_min_len(in_plane))
        .for_each(|(plane, dx_plane)| {
            let c = plane % s.in_channels;
            input_grad_plane(
                s,
                &taps,
                &dy[plane * out_plane..(plane + 1) * out_plane],
                &weight[c * k..(c + 1) * k],
                dx_plane,
            );
        });
}

multiversion!(fn input_grad_plane(s: &Conv2dShape, taps: &Taps, dy: &[f32], w: &[f32], dx: &mut [f32]) => input_grad_plane_body);

#[inline(always)]
fn input_grad_plane_body<M: Math>(
    s: &Conv2dShape,
    taps: &Taps,
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
) {
    let [_, in_w] = s.in_size;
    let out_w = s.out_size()[1];
    let stride = s.stride[1];
    dx.fill(0.0);
    for (oh, dy_row) in dy.chunks_exact(out_w).enumerate() {
        for i in 0..s.kernel[0] {
            let Some(ih) = Taps::input_row(s, oh, i) else {
                continue;
            };
            let dx_row = &mut dx[ih * in_w..(ih + 1) * in_w];
            for (j, &(lo, hi, first)) in taps.columns.iter().enumerate() {
                let wv = w[i * s.kernel[1] + j];
                if lo >= hi {
                    continue;
                }
                if stride == 1 {
                    axpy::<M>(&mut dx_row[first..first + hi - lo], wv, &dy_row[lo..hi]);
                } else {
                    for (d, g) in dx_row[first..]
                        .iter_mut()
                        .step_by(stride)
                        .zip(&dy_row[lo..hi])
                    {
                        *d = M::mul_add(wv, *g, *d);
                    }
                }
            }
        }
    }
}

/// `dw[c] = Σₙ Σ_pixels dy[n, c] · x[n, c] shifted by each tap`: channels in parallel, the
/// batch summed in order inside each channel.
pub(crate) fn weight_grad(s: &Conv2dShape, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let taps = Taps::new(s);
    let (in_plane, out_plane, k) = (s.in_pixels(), s.out_pixels(), s.kernel[0] * s.kernel[1]);
    let channels = s.in_channels;
    dw.par_chunks_mut(k).enumerate().for_each(|(c, dw_c)| {
        dw_c.fill(0.0);
        for n in 0..s.batch {
            let plane = n * channels + c;
            weight_grad_plane(
                s,
                &taps,
                &x[plane * in_plane..(plane + 1) * in_plane],
                &dy[plane * out_plane..(plane + 1) * out_plane],
                dw_c,
            );
        }
    });
}

multiversion!(fn weight_grad_plane(s: &Conv2dShape, taps: &Taps, x: &[f32], dy: &[f32], dw: &mut [f32]) => weight_grad_plane_body);

#[inline(always)]
fn weight_grad_plane_body<M: Math>(
    s: &Conv2dShape,
    taps: &Taps,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
) {
    let [_, in_w] = s.in_size;
    let out_w = s.out_size()[1];
    let stride = s.stride[1];
    for i in 0..s.kernel[0] {
        for (j, &(lo, hi, first)) in taps.columns.iter().enumerate() {
            if lo >= hi {
                continue;
            }
            let mut sum = 0.0f32;
            for (oh, dy_row) in dy.chunks_exact(out_w).enumerate() {
                let Some(ih) = Taps::input_row(s, oh, i) else {
                    continue;
                };
                let x_row = &x[ih * in_w..(ih + 1) * in_w];
                sum += if stride == 1 {
                    dot::<M>(&dy_row[lo..hi], &x_row[first..first + hi - lo])
                } else {
                    dy_row[lo..hi]
                        .iter()
                        .zip(x_row[first..].iter().step_by(stride))
                        .fold(0.0, |acc, (g, v)| M::mul_add(*g, *v, acc))
                };
            }
            dw[i * s.kernel[1] + j] += sum;
        }
    }
}
