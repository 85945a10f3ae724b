//! The public convolution entry points: checked against the shape, then routed to the direct
//! depthwise kernels or to the im2col + GEMM kernels.

use rayon::prelude::*;

use crate::shape::expect_len;
use crate::simd::sum;
use crate::{Conv2dShape, KernelError, depthwise, depthwise_nhwc, gemm_conv};

/// `y = conv(x, weight) + bias`, all NCHW / OIHW and contiguous; `y` is overwritten.
pub fn conv2d_forward(
    shape: &Conv2dShape,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<(), KernelError> {
    shape.validate()?;
    expect_len("input", x.len(), shape.input_len())?;
    expect_len("weight", weight.len(), shape.weight_len())?;
    expect_len("output", y.len(), shape.output_len())?;
    if let Some(bias) = bias {
        expect_len("bias", bias.len(), Some(shape.out_channels))?;
    }
    if shape.is_depthwise() && channels_last_pays(shape) {
        depthwise_nhwc::forward(shape, x, weight, bias, y);
    } else if shape.is_depthwise() {
        depthwise::forward(shape, x, weight, bias, y);
    } else {
        gemm_conv::forward(shape, x, weight, bias, y);
    }
    Ok(())
}

/// `dx`, the gradient of the loss with respect to the input, from the output's gradient `dy`.
pub fn conv2d_input_grad(
    shape: &Conv2dShape,
    weight: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) -> Result<(), KernelError> {
    shape.validate()?;
    expect_len("weight", weight.len(), shape.weight_len())?;
    expect_len("output gradient", dy.len(), shape.output_len())?;
    expect_len("input gradient", dx.len(), shape.input_len())?;
    if shape.is_depthwise() && channels_last_pays(shape) {
        depthwise_nhwc::input_grad(shape, weight, dy, dx);
    } else if shape.is_depthwise() {
        depthwise::input_grad(shape, weight, dy, dx);
    } else {
        gemm_conv::input_grad(shape, weight, dy, dx);
    }
    Ok(())
}

/// `dw`, the gradient with respect to the weight, summed over the batch.
pub fn conv2d_weight_grad(
    shape: &Conv2dShape,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
) -> Result<(), KernelError> {
    shape.validate()?;
    expect_len("input", x.len(), shape.input_len())?;
    expect_len("output gradient", dy.len(), shape.output_len())?;
    expect_len("weight gradient", dw.len(), shape.weight_len())?;
    if shape.is_depthwise() && channels_last_pays(shape) {
        depthwise_nhwc::weight_grad(shape, x, dy, dw);
    } else if shape.is_depthwise() {
        depthwise::weight_grad(shape, x, dy, dw);
    } else {
        gemm_conv::weight_grad(shape, x, dy, dw);
    }
    Ok(())
}

/// Depthwise layers run channels-last unless their planes are large and the stride 1, where
/// the per-plane row loops are as fast without the two transposes (measured with
/// `cargo bench -p kiln-kernels --bench conv`).
fn channels_last_pays(shape: &Conv2dShape) -> bool {
    let [out_h, out_w] = shape.out_size();
    shape.stride != [1, 1] || out_h.min(out_w) < 24
}

/// `db[c] = Σ dy[·, c, ·, ·]`, channels in parallel, each summed in a fixed order.
pub fn conv2d_bias_grad(
    shape: &Conv2dShape,
    dy: &[f32],
    db: &mut [f32],
) -> Result<(), KernelError> {
    shape.validate()?;
    expect_len("output gradient", dy.len(), shape.output_len())?;
    expect_len("bias gradient", db.len(), Some(shape.out_channels))?;
    let (pixels, channels) = (shape.out_pixels(), shape.out_channels);
    db.par_iter_mut().enumerate().for_each(|(c, db_c)| {
        *db_c = (0..shape.batch)
            .map(|n| sum(&dy[(n * channels + c) * pixels..(n * channels + c + 1) * pixels]))
            .sum();
    });
    Ok(())
}
