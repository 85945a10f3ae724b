//! The public convolution entry points: checked against the shape, then routed to the direct
//! depthwise kernels or to the im2col + GEMM kernels.

use rayon::prelude::*;

use crate::shape::expect_len;
use crate::simd::sum;
use crate::uninit::{as_uninit, new_output};
use crate::{Conv2dShape, KernelError, depthwise, depthwise_nhwc, gemm_conv};

/// `y = conv(x, weight) + bias`, all NCHW / OIHW and contiguous; `y` is overwritten.
pub fn conv2d_forward(
    shape: &Conv2dShape,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<(), KernelError> {
    check_forward(shape, x, weight, bias)?;
    expect_len("output", y.len(), shape.output_len())?;
    if shape.is_depthwise() && channels_last_pays(shape) {
        depthwise_nhwc::forward(shape, x, weight, bias, y);
    } else if shape.is_depthwise() {
        depthwise::forward(shape, x, weight, bias, y);
    } else {
        gemm_conv::forward(shape, x, weight, bias, as_uninit(y));
    }
    Ok(())
}

/// [`conv2d_forward`] into a new vector: a dense or grouped convolution writes every output
/// itself, so the vector is never zeroed first (a zeroed allocation is a memset of the whole
/// activation, as long as the kernel's own pass over it).
pub fn conv2d_forward_vec(
    shape: &Conv2dShape,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
) -> Result<Vec<f32>, KernelError> {
    check_forward(shape, x, weight, bias)?;
    let len = shape.output_len().unwrap_or(0);
    if shape.is_depthwise() {
        let mut y = vec![0.0f32; len];
        conv2d_forward(shape, x, weight, bias, &mut y)?;
        return Ok(y);
    }
    // SAFETY: `gemm_conv::forward` writes every output.
    unsafe {
        new_output(len, |y| {
            gemm_conv::forward(shape, x, weight, bias, y);
            Ok(())
        })
    }
}

/// The shape and every forward operand but the output checked.
pub(crate) fn check_forward(
    shape: &Conv2dShape,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
) -> Result<(), KernelError> {
    shape.validate()?;
    expect_len("input", x.len(), shape.input_len())?;
    expect_len("weight", weight.len(), shape.weight_len())?;
    if let Some(bias) = bias {
        expect_len("bias", bias.len(), Some(shape.out_channels))?;
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
    check_input_grad(shape, weight, dy)?;
    expect_len("input gradient", dx.len(), shape.input_len())?;
    if shape.is_depthwise() && channels_last_pays(shape) {
        depthwise_nhwc::input_grad(shape, weight, dy, dx);
    } else if shape.is_depthwise() {
        depthwise::input_grad(shape, weight, dy, dx);
    } else {
        gemm_conv::input_grad(shape, weight, dy, as_uninit(dx));
    }
    Ok(())
}

/// [`conv2d_input_grad`] into a new vector, not zeroed first where the kernel writes every
/// element itself (dense and grouped convolutions).
pub fn conv2d_input_grad_vec(
    shape: &Conv2dShape,
    weight: &[f32],
    dy: &[f32],
) -> Result<Vec<f32>, KernelError> {
    check_input_grad(shape, weight, dy)?;
    let len = shape.input_len().unwrap_or(0);
    if shape.is_depthwise() {
        let mut dx = vec![0.0f32; len];
        conv2d_input_grad(shape, weight, dy, &mut dx)?;
        return Ok(dx);
    }
    // SAFETY: `gemm_conv::input_grad` writes every value.
    unsafe {
        new_output(len, |dx| {
            gemm_conv::input_grad(shape, weight, dy, dx);
            Ok(())
        })
    }
}

/// The shape and the input gradient's operands checked.
fn check_input_grad(shape: &Conv2dShape, weight: &[f32], dy: &[f32]) -> Result<(), KernelError> {
    shape.validate()?;
    expect_len("weight", weight.len(), shape.weight_len())?;
    expect_len("output gradient", dy.len(), shape.output_len())
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
