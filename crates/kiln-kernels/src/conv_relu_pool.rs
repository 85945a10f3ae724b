//! A convolution, ReLU and 2×2 max pooling (stride 2, floor) trained as one operation: the
//! block every classic CNN stacks (Keras' `Conv2D(activation="relu")` + `MaxPooling2D(2)`).
//! Apart, the three ops pass the convolution's full-size output through memory five more
//! times (ReLU in and out, the pool's read, ReLU's and the pool's gradients); together, each
//! image's output is pooled while it is still in cache, and the backward pass builds each
//! image's output gradient from the pooled one next to the products that use it.
//!
//! The arithmetic is the separate ops': `pooled = max over the window of relu(conv + bias)`,
//! ties to the first tap in row order, NaN winning; the gradient goes to the winning tap when
//! the pooled value is positive ([`clamp_backward`](crate::clamp_backward)'s rule). Each
//! pooled value keeps a one-byte code: its winning tap `2·row + column`, or [`NOT_ROUTED`].

use rayon::prelude::*;

use crate::conv2d::check_forward;
pub use crate::relu_pool::{ConvGradients, NOT_ROUTED, relu_pool_size};
use crate::relu_pool::{relu_pool_plane, routed};
use crate::shape::expect_len;
use crate::uninit::new_output;
use crate::{
    Conv2dShape, KernelError, conv2d_bias_grad, conv2d_forward_vec, conv2d_input_grad_vec,
    conv2d_weight_grad,
};

/// The pooled size, or an error when the convolution's output has no whole 2×2 window.
fn pooled_size(shape: &Conv2dShape) -> Result<[usize; 2], KernelError> {
    let pooled = relu_pool_size(shape);
    if pooled.contains(&0) {
        return Err(KernelError::Shape(format!(
            "the {:?} convolution output is smaller than the 2×2 pool",
            shape.out_size()
        )));
    }
    Ok(pooled)
}

fn pooled_len(shape: &Conv2dShape) -> usize {
    let [h, w] = relu_pool_size(shape);
    shape.batch * shape.out_channels * h * w
}

/// The pooled activation `[batch, out_channels, h/2, w/2]` and each value's window code.
pub fn conv2d_relu_pool_forward(
    shape: &Conv2dShape,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
) -> Result<(Vec<f32>, Vec<u8>), KernelError> {
    check_forward(shape, x, weight, bias)?;
    let [ph, pw] = pooled_size(shape)?;
    let len = pooled_len(shape);
    // Neither output is zeroed first: both paths write every window's value and code.
    let mut codes: Vec<u8> = Vec::with_capacity(len);
    let codes_out = &mut codes.spare_capacity_mut()[..len];
    // SAFETY: both paths pool every window of every channel of every image.
    let pooled = unsafe {
        new_output(len, |pooled| {
            #[cfg(target_arch = "x86_64")]
            if crate::plane_conv::pooled_applies(shape) {
                crate::plane_conv::forward_relu_pool(shape, x, weight, bias, pooled, codes_out);
                return Ok(());
            }
            let y = conv2d_forward_vec(shape, x, weight, bias)?;
            let [_, out_w] = shape.out_size();
            let plane = shape.out_pixels();
            y.par_chunks_exact(plane)
                .zip(pooled.par_chunks_exact_mut(ph * pw))
                .zip(codes_out.par_chunks_exact_mut(ph * pw))
                .for_each(|((channel, pooled), codes)| {
                    relu_pool_plane(channel, (out_w, pw), 0.0, pooled, codes);
                });
            Ok(())
        })?
    };
    // SAFETY: the pooling that wrote every pooled value wrote its code too.
    unsafe { codes.set_len(len) };
    Ok((pooled, codes))
}

/// The backward pass of [`conv2d_relu_pool_forward`] from the pooled output's gradient and
/// the forward's window codes.
pub fn conv2d_relu_pool_backward(
    shape: &Conv2dShape,
    x: &[f32],
    weight: &[f32],
    codes: &[u8],
    pooled_grad: &[f32],
    input_grad: bool,
) -> Result<ConvGradients, KernelError> {
    check_forward(shape, x, weight, None)?;
    let [ph, pw] = pooled_size(shape)?;
    let len = pooled_len(shape);
    expect_len("window codes", codes.len(), Some(len))?;
    expect_len("pooled gradient", pooled_grad.len(), Some(len))?;
    // The largest code, not the first bad one: a max vectorizes (a search had been a serial
    // tenth of a 3-channel layer's backward pass).
    if let Some(bad) = codes.iter().copied().max().filter(|&c| c > NOT_ROUTED) {
        return Err(KernelError::Shape(format!(
            "window code {bad} is not a 2×2 tap (0–3) or {NOT_ROUTED}"
        )));
    }
    #[cfg(target_arch = "x86_64")]
    if crate::plane_conv::pooled_applies(shape)
        && (!input_grad || crate::plane_conv::adjoint_padding_fits(shape))
    {
        return Ok(crate::plane_conv::relu_pool_backward(
            shape,
            x,
            weight,
            (codes, pooled_grad),
            input_grad,
        ));
    }
    // Any other convolution: the output gradient in full, then the convolution's gradients.
    let mut dy = vec![0.0f32; shape.output_len().unwrap_or(0)];
    let [_, out_w] = shape.out_size();
    for ((dy_c, codes), grads) in dy
        .chunks_exact_mut(shape.out_pixels())
        .zip(codes.chunks_exact(ph * pw))
        .zip(pooled_grad.chunks_exact(ph * pw))
    {
        for (position, value) in routed(codes, grads, pw) {
            dy_c[position.0 * out_w + position.1] = value;
        }
    }
    let mut weight_grad = vec![0.0; weight.len()];
    conv2d_weight_grad(shape, x, &dy, &mut weight_grad)?;
    let mut bias = vec![0.0; shape.out_channels];
    conv2d_bias_grad(shape, &dy, &mut bias)?;
    let input = if input_grad {
        Some(conv2d_input_grad_vec(shape, weight, &dy)?)
    } else {
        None
    };
    Ok(ConvGradients {
        input,
        weight: weight_grad,
        bias,
    })
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::tests::assert_close;
    use crate::{
        Pool2dShape, clamp_backward, clamp_forward, conv2d_forward, conv2d_input_grad,
        max_pool2d_backward_vec, max_pool2d_forward_vec,
    };

    fn conv(batch: usize, cin: usize, size: [usize; 2], cout: usize, k: usize) -> Conv2dShape {
        Conv2dShape {
            batch,
            in_channels: cin,
            in_size: size,
            out_channels: cout,
            kernel: [k, k],
            stride: [1, 1],
            padding: [(0, 0), (0, 0)],
            dilation: [1, 1],
            groups: 1,
        }
    }

    /// The fused op against the three separate ops, forward and backward, on shapes the
    /// plane kernels take (many taps), shapes they leave to im2col (one input channel, a
    /// stride), odd outputs (the pool drops the last row and column) and values rounded to
    /// a few levels (ties inside windows, zeros at ReLU's kink).
    #[test]
    fn fused_block_matches_conv_relu_and_pool_apart() {
        let mut rng = StdRng::seed_from_u64(21);
        let mut strided = conv(2, 3, [11, 12], 6, 3);
        strided.stride = [2, 1];
        let mut padded = conv(3, 4, [8, 9], 10, 3);
        padded.padding = [(1, 1), (1, 1)];
        let cases = [
            conv(3, 1, [12, 12], 8, 3),
            conv(5, 3, [15, 14], 17, 3),
            conv(9, 8, [9, 9], 40, 3),
            conv(2, 16, [7, 10], 33, 2),
            strided,
            padded,
        ];
        for (case, s) in cases.iter().enumerate() {
            let ties = case % 2 == 1;
            let mut random = |len: usize| -> Vec<f32> {
                (0..len)
                    .map(|_| {
                        let v: f32 = rng.random_range(-1.0..1.0);
                        if ties { (v * 2.0).round() / 2.0 } else { v }
                    })
                    .collect()
            };
            let x = random(s.input_len().unwrap());
            let w = random(s.weight_len().unwrap());
            let b = random(s.out_channels);
            let [oh, ow] = s.out_size();
            let [ph, pw] = relu_pool_size(s);

            let mut y = vec![0.0; s.output_len().unwrap()];
            conv2d_forward(s, &x, &w, Some(&b), &mut y).unwrap();
            let mut r = vec![0.0; y.len()];
            clamp_forward(&y, 0.0, f32::INFINITY, &mut r).unwrap();
            let pool = Pool2dShape {
                batch: s.batch,
                channels: s.out_channels,
                in_size: [oh, ow],
                kernel: [2, 2],
                stride: [2, 2],
                padding: [0, 0],
                dilation: [1, 1],
                ceil_mode: false,
            };
            let (p, indices) = max_pool2d_forward_vec(&pool, &r).unwrap();

            let (pooled, codes) = conv2d_relu_pool_forward(s, &x, &w, Some(&b)).unwrap();
            assert_eq!(pooled, p, "pooled values for {s:?}");
            for (window, (&code, &index)) in codes.iter().zip(&indices).enumerate() {
                if code == NOT_ROUTED {
                    assert!(p[window] <= 0.0, "{s:?}");
                    continue;
                }
                let (i, j) = ((window / pw) % ph, window % pw);
                let (row, col) = (2 * i + usize::from(code) / 2, 2 * j + usize::from(code) % 2);
                assert_eq!(row * ow + col, index as usize, "window {window} of {s:?}");
            }

            let dp = random(p.len());
            let dr = max_pool2d_backward_vec(&pool, &dp, &indices).unwrap();
            let mut dy = vec![0.0; dr.len()];
            clamp_backward(&r, &dr, 0.0, f32::INFINITY, &mut dy).unwrap();
            let mut dx = vec![0.0; x.len()];
            conv2d_input_grad(s, &w, &dy, &mut dx).unwrap();
            let mut dw = vec![0.0; w.len()];
            conv2d_weight_grad(s, &x, &dy, &mut dw).unwrap();
            let mut db = vec![0.0; b.len()];
            conv2d_bias_grad(s, &dy, &mut db).unwrap();

            let grads = conv2d_relu_pool_backward(s, &x, &w, &codes, &dp, true).unwrap();
            assert_close("input gradient", s, grads.input.as_deref().unwrap(), &dx);
            assert_close("weight gradient", s, &grads.weight, &dw);
            assert_close("bias gradient", s, &grads.bias, &db);
            let without = conv2d_relu_pool_backward(s, &x, &w, &codes, &dp, false).unwrap();
            assert_eq!(without.input, None);
            assert_eq!(without.weight, grads.weight, "{s:?}");
        }
    }

    #[test]
    fn bad_codes_and_lengths_are_errors() {
        let s = conv(1, 2, [6, 6], 3, 3);
        let x = vec![0.5; s.input_len().unwrap()];
        let w = vec![0.1; s.weight_len().unwrap()];
        let (pooled, mut codes) = conv2d_relu_pool_forward(&s, &x, &w, None).unwrap();
        codes[0] = 9;
        let err = conv2d_relu_pool_backward(&s, &x, &w, &codes, &pooled, true).unwrap_err();
        assert!(err.to_string().contains("window code 9"), "{err}");
        let err = conv2d_relu_pool_backward(&s, &x, &w, &codes[1..], &pooled, true).unwrap_err();
        assert!(err.to_string().contains("window codes"), "{err}");
        // A 1×1 output has no 2×2 window: an error both ways, on both kernel paths.
        for stride in [1, 2] {
            let mut tiny = conv(1, 2, [3, 3], 3, 3);
            tiny.stride = [stride, stride];
            let x = vec![0.5; tiny.input_len().unwrap()];
            assert!(conv2d_relu_pool_forward(&tiny, &x, &w, None).is_err());
            let err = conv2d_relu_pool_backward(&tiny, &x, &w, &[], &[], true).unwrap_err();
            assert!(
                err.to_string().contains("smaller than the 2×2 pool"),
                "{err}"
            );
        }
    }
}
