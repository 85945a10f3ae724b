//! Dense and grouped convolution as GEMMs over im2col matrices, one image at a time (a 1×1
//! stride-1 convolution multiplies the input itself). Forward: `Y = W · col(X) + b`; input
//! gradient: `dX = col2im(Wᵀ · dY)`; weight gradient: `dW = Σₙ dYₙ · col(Xₙ)ᵀ`.

use std::mem::MaybeUninit;

use crate::Conv2dShape;
use crate::im2col::{col2im, im2col};
use crate::matmul::{MatLayout, matmul, matmul_into};
use crate::parallel::{for_each_image, sum_over_images};
use crate::uninit::filled;

/// The forward convolution into `y`, which need not be initialized: every element is written
/// (the bias, then the product accumulated onto it; or the product alone).
pub(crate) fn forward(
    s: &Conv2dShape,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    y: &mut [MaybeUninit<f32>],
) {
    #[cfg(target_arch = "x86_64")]
    if crate::plane_conv::applies(s) {
        return crate::plane_conv::forward(s, x, weight, bias, y);
    }
    let (in_plane, pixels) = (s.in_pixels(), s.out_pixels());
    let (cin_g, cout_g, rows) = (s.in_per_group(), s.out_per_group(), s.col_rows());
    let col_len = if s.is_pointwise() { 0 } else { rows * pixels };
    for_each_image(
        y,
        s.out_channels * pixels,
        || vec![0.0f32; col_len],
        |col, n, y_n, threads| {
            let x_n = &x[n * s.in_channels * in_plane..(n + 1) * s.in_channels * in_plane];
            for g in 0..s.groups {
                let x_g = &x_n[g * cin_g * in_plane..(g + 1) * cin_g * in_plane];
                let y_g = &mut y_n[g * cout_g * pixels..(g + 1) * cout_g * pixels];
                if let Some(bias) = bias {
                    for (row, b) in y_g.chunks_exact_mut(pixels).zip(&bias[g * cout_g..]) {
                        for v in row {
                            v.write(*b);
                        }
                    }
                }
                let columns: &[f32] = if s.is_pointwise() {
                    x_g
                } else {
                    im2col(s, x_g, col);
                    col
                };
                matmul_into(
                    y_g,
                    MatLayout::row_major(cout_g, pixels),
                    bias.is_some(),
                    (
                        &weight[g * cout_g * rows..(g + 1) * cout_g * rows],
                        MatLayout::row_major(cout_g, rows),
                    ),
                    (columns, MatLayout::row_major(rows, pixels)),
                    threads,
                );
            }
        },
    );
}

/// The input gradient into `dx`, which need not be initialized: a 1×1 convolution's product
/// writes every element, others are zeroed and then receive col2im's sums.
pub(crate) fn input_grad(s: &Conv2dShape, weight: &[f32], dy: &[f32], dx: &mut [MaybeUninit<f32>]) {
    #[cfg(target_arch = "x86_64")]
    if crate::plane_conv::input_grad_applies(s) {
        return crate::plane_conv::input_grad(s, weight, dy, dx);
    }
    let (in_plane, pixels) = (s.in_pixels(), s.out_pixels());
    let (cin_g, cout_g, rows) = (s.in_per_group(), s.out_per_group(), s.col_rows());
    let col_len = if s.is_pointwise() { 0 } else { rows * pixels };
    for_each_image(
        dx,
        s.in_channels * in_plane,
        || vec![0.0f32; col_len],
        |col, n, dx_n, threads| {
            let dy_n = &dy[n * s.out_channels * pixels..(n + 1) * s.out_channels * pixels];
            for g in 0..s.groups {
                let dy_g = (
                    &dy_n[g * cout_g * pixels..(g + 1) * cout_g * pixels],
                    MatLayout::row_major(cout_g, pixels),
                );
                let w_t = (
                    &weight[g * cout_g * rows..(g + 1) * cout_g * rows],
                    MatLayout::row_major(cout_g, rows).transposed(),
                );
                let dx_g = &mut dx_n[g * cin_g * in_plane..(g + 1) * cin_g * in_plane];
                if s.is_pointwise() {
                    matmul_into(
                        dx_g,
                        MatLayout::row_major(rows, pixels),
                        false,
                        w_t,
                        dy_g,
                        threads,
                    );
                } else {
                    matmul(
                        col,
                        MatLayout::row_major(rows, pixels),
                        false,
                        w_t,
                        dy_g,
                        threads,
                    );
                    col2im(s, col, filled(dx_g, 0.0));
                }
            }
        },
    );
}

pub(crate) fn weight_grad(s: &Conv2dShape, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::plane_conv::applies(s) {
        return crate::plane_conv::weight_grad(s, x, dy, dw);
    }
    let (in_plane, pixels) = (s.in_pixels(), s.out_pixels());
    let (cin_g, cout_g, rows) = (s.in_per_group(), s.out_per_group(), s.col_rows());
    let col_len = if s.is_pointwise() { 0 } else { rows * pixels };
    sum_over_images(
        s.batch,
        dw,
        || vec![0.0f32; col_len],
        |col, n, dw_sum, threads| {
            let x_n = &x[n * s.in_channels * in_plane..(n + 1) * s.in_channels * in_plane];
            let dy_n = &dy[n * s.out_channels * pixels..(n + 1) * s.out_channels * pixels];
            for g in 0..s.groups {
                let x_g = &x_n[g * cin_g * in_plane..(g + 1) * cin_g * in_plane];
                let columns: &[f32] = if s.is_pointwise() {
                    x_g
                } else {
                    im2col(s, x_g, col);
                    col
                };
                matmul(
                    &mut dw_sum[g * cout_g * rows..(g + 1) * cout_g * rows],
                    MatLayout::row_major(cout_g, rows),
                    true,
                    (
                        &dy_n[g * cout_g * pixels..(g + 1) * cout_g * pixels],
                        MatLayout::row_major(cout_g, pixels),
                    ),
                    (columns, MatLayout::row_major(rows, pixels).transposed()),
                    threads,
                );
            }
        },
    );
}
