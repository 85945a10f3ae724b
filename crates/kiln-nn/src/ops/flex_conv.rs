//! Convolution on Burn's flex backend: f32 tensors go to `kiln-kernels`; other dtypes, and
//! anything the kernels reject, to Burn's own operations (which report the problem as Burn
//! does).

use burn::backend::Flex;
use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ModuleOps;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Shape};
use kiln_kernels::Conv2dShape;

use super::flex_tensor::{f32_values, tensor};

pub(super) fn input_grad(
    x: FlexTensor,
    weight: FlexTensor,
    output_grad: FlexTensor,
    options: ConvOptions<2>,
) -> FlexTensor {
    let kiln = conv_shape(&x, &weight, &options).and_then(|shape| {
        let dx = kiln_kernels::conv2d_input_grad_vec(
            &shape,
            &f32_values(&weight)?,
            &f32_values(&output_grad)?,
        )
        .ok()?;
        let [h, w] = shape.in_size;
        Some(tensor(dx, [shape.batch, shape.in_channels, h, w]))
    });
    kiln.unwrap_or_else(|| Flex::conv2d_x_backward(x, weight, output_grad, options))
}

pub(super) fn weight_grad(
    x: FlexTensor,
    weight: FlexTensor,
    output_grad: FlexTensor,
    options: ConvOptions<2>,
) -> FlexTensor {
    let kiln = conv_shape(&x, &weight, &options).and_then(|shape| {
        let mut dw = vec![0.0f32; shape.weight_len()?];
        kiln_kernels::conv2d_weight_grad(
            &shape,
            &f32_values(&x)?,
            &f32_values(&output_grad)?,
            &mut dw,
        )
        .ok()?;
        Some(tensor(dw, weight.shape().dims::<4>()))
    });
    kiln.unwrap_or_else(|| Flex::conv2d_weight_backward(x, weight, output_grad, options))
}

pub(super) fn bias_grad(x: FlexTensor, bias: FlexTensor, output_grad: FlexTensor) -> FlexTensor {
    let kiln = (|| {
        let [batch, channels, h, w] = output_grad.shape().dims::<4>();
        if output_grad.dtype() != DType::F32 || bias.shape().num_elements() != channels {
            return None;
        }
        // Only the output's geometry matters to a bias gradient: describe it as a 1×1
        // convolution of an input the output's size.
        let shape = Conv2dShape {
            batch,
            in_channels: channels,
            in_size: [h, w],
            out_channels: channels,
            kernel: [1, 1],
            stride: [1, 1],
            padding: [(0, 0), (0, 0)],
            dilation: [1, 1],
            groups: 1,
        };
        let mut db = vec![0.0f32; channels];
        kiln_kernels::conv2d_bias_grad(&shape, &f32_values(&output_grad)?, &mut db).ok()?;
        Some(tensor(db, [channels]))
    })();
    kiln.unwrap_or_else(|| Flex::conv2d_bias_backward(x, bias, output_grad))
}

pub(super) fn forward(
    x: FlexTensor,
    weight: FlexTensor,
    bias: Option<FlexTensor>,
    options: ConvOptions<2>,
) -> FlexTensor {
    let kiln = conv_shape(&x, &weight, &options).and_then(|shape| {
        let bias_values = match &bias {
            Some(b) => Some(f32_values(b)?),
            None => None,
        };
        let y = kiln_kernels::conv2d_forward_vec(
            &shape,
            &f32_values(&x)?,
            &f32_values(&weight)?,
            bias_values.as_deref(),
        )
        .ok()?;
        let [h, w] = shape.out_size();
        Some(tensor(y, [shape.batch, shape.out_channels, h, w]))
    });
    kiln.unwrap_or_else(|| Flex::conv2d(x, weight, bias, options))
}

/// The kernels' description of the convolution, if both tensors are f32 and 4-D.
pub(super) fn conv_shape(
    x: &FlexTensor,
    weight: &FlexTensor,
    options: &ConvOptions<2>,
) -> Option<Conv2dShape> {
    if x.dtype() != DType::F32 || weight.dtype() != DType::F32 {
        return None;
    }
    shape_of(&x.shape(), &weight.shape(), options)
}

/// The convolution of an input and a weight of these shapes, if both are 4-D and it is well
/// formed.
pub(super) fn shape_of(
    x_shape: &Shape,
    w_shape: &Shape,
    options: &ConvOptions<2>,
) -> Option<Conv2dShape> {
    if x_shape.num_dims() != 4 || w_shape.num_dims() != 4 {
        return None;
    }
    let [batch, in_channels, h, w] = x_shape.dims::<4>();
    let [out_channels, _, kh, kw] = w_shape.dims::<4>();
    let shape = Conv2dShape {
        batch,
        in_channels,
        in_size: [h, w],
        out_channels,
        kernel: [kh, kw],
        stride: options.stride,
        padding: options.padding,
        dilation: options.dilation,
        groups: options.groups,
    };
    (shape.validate().is_ok() && shape.weight_len() == Some(w_shape.num_elements()))
        .then_some(shape)
}
