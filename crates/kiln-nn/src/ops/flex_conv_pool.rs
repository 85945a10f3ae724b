//! The fused convolution → ReLU → 2×2 max-pool block on Burn's flex backend, through
//! `kiln-kernels`. [`super::conv2d_relu_max_pool`] sends only f32 tensors of a convolution
//! [`takes`] accepts; the window codes travel as a u8 tensor the pooled output's shape.

use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Shape, TensorData};
use kiln_kernels::relu_pool_size;

use super::flex_conv::{conv_shape, shape_of};
use super::flex_tensor::{f32_values, tensor};

/// Whether the fused kernels take this convolution: 4-D, well formed, and an output of at
/// least 2×2 to pool.
pub(super) fn takes(x: &Shape, weight: &Shape, options: &ConvOptions<2>) -> bool {
    shape_of(x, weight, options).is_some_and(|shape| !relu_pool_size(&shape).contains(&0))
}

const INVARIANT: &str = "the fused conv-relu-pool block takes f32 tensors of a convolution \
                         `takes` accepts (conv2d_relu_max_pool checks both)";

/// The pooled output `[n, c, h/2, w/2]` and its window codes.
pub(super) fn forward(
    x: FlexTensor,
    weight: FlexTensor,
    bias: FlexTensor,
    options: ConvOptions<2>,
) -> (FlexTensor, FlexTensor) {
    let run = || {
        let shape = conv_shape(&x, &weight, &options)?;
        let (pooled, codes) = kiln_kernels::conv2d_relu_pool_forward(
            &shape,
            &f32_values(&x)?,
            &f32_values(&weight)?,
            Some(&f32_values(&bias)?),
        )
        .ok()?;
        let [h, w] = relu_pool_size(&shape);
        let dims = [shape.batch, shape.out_channels, h, w];
        Some((
            tensor(pooled, dims),
            FlexTensor::from_data(TensorData::new(codes, dims)),
        ))
    };
    run().expect(INVARIANT)
}

/// The input (when `input_grad`), weight and bias gradients.
pub(super) fn backward(
    x: FlexTensor,
    weight: FlexTensor,
    (codes, output_grad): (FlexTensor, FlexTensor),
    options: ConvOptions<2>,
    input_grad: bool,
) -> (Option<FlexTensor>, FlexTensor, FlexTensor) {
    let run = || {
        let shape = conv_shape(&x, &weight, &options)?;
        let codes = codes.as_slice::<u8>()?;
        let grads = kiln_kernels::conv2d_relu_pool_backward(
            &shape,
            &f32_values(&x)?,
            &f32_values(&weight)?,
            codes,
            &f32_values(&output_grad)?,
            input_grad,
        )
        .ok()?;
        Some((
            grads.input.map(|dx| tensor(dx, x.shape())),
            tensor(grads.weight, weight.shape()),
            tensor(grads.bias, [shape.out_channels]),
        ))
    };
    run().expect(INVARIANT)
}
