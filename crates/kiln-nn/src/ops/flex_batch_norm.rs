//! Batch normalization in training on Burn's flex backend: f32 `[N, C, …]` tensors go to
//! `kiln-kernels`, anything else to Burn's own operations.

use burn::backend::Flex;
use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ModuleOps;
use burn::tensor::DType;
use kiln_kernels::BatchNormShape;

use super::flex_tensor::{f32_values, tensor};
use super::{BatchStatistics, KilnOpsDefault};

fn shape_of(x: &FlexTensor, gamma: &FlexTensor) -> Option<BatchNormShape> {
    let dims = x.shape();
    if x.dtype() != DType::F32 || gamma.dtype() != DType::F32 || dims.num_dims() < 2 {
        return None;
    }
    let (batch, channels) = (dims[0], dims[1]);
    let pixels = dims.num_elements() / (batch * channels).max(1);
    (gamma.shape().num_elements() == channels && batch * pixels > 0).then_some(BatchNormShape {
        batch,
        channels,
        pixels,
    })
}

pub(super) fn forward(
    x: FlexTensor,
    gamma: FlexTensor,
    beta: FlexTensor,
    epsilon: f64,
) -> BatchStatistics<Flex> {
    let kiln = shape_of(&x, &gamma).and_then(|shape| {
        let values = f32_values(&x)?;
        let (mut mean, mut variance) = (vec![0.0f32; shape.channels], vec![0.0f32; shape.channels]);
        let y = kiln_kernels::batch_norm_train_forward_vec(
            &shape,
            &values,
            (&f32_values(&gamma)?, &f32_values(&beta)?),
            epsilon as f32,
            (&mut mean, &mut variance),
        )
        .ok()?;
        Some(BatchStatistics {
            output: tensor(y, x.shape()),
            mean: tensor(mean, [shape.channels]),
            variance: tensor(variance, [shape.channels]),
        })
    });
    kiln.unwrap_or_else(|| {
        let result = Flex::batch_norm_train(x, gamma, beta, epsilon);
        BatchStatistics {
            output: result.output,
            mean: result.mean,
            variance: result.variance,
        }
    })
}

pub(super) fn backward(
    x: FlexTensor,
    gamma: FlexTensor,
    (mean, variance): (FlexTensor, FlexTensor),
    epsilon: f64,
    output_grad: FlexTensor,
) -> [FlexTensor; 3] {
    let kiln = shape_of(&x, &gamma).and_then(|shape| {
        let values = f32_values(&x)?;
        let (mut dgamma, mut dbeta) = (vec![0.0f32; shape.channels], vec![0.0f32; shape.channels]);
        let dx = kiln_kernels::batch_norm_train_backward_vec(
            &shape,
            (&values, &f32_values(&gamma)?),
            (&f32_values(&mean)?, &f32_values(&variance)?),
            epsilon as f32,
            &f32_values(&output_grad)?,
            (&mut dgamma, &mut dbeta),
        )
        .ok()?;
        Some([
            tensor(dx, x.shape()),
            tensor(dgamma, [shape.channels]),
            tensor(dbeta, [shape.channels]),
        ])
    });
    kiln.unwrap_or_else(|| {
        let grads = Flex::batch_norm_train_backward(x, gamma, mean, variance, epsilon, output_grad);
        [grads.x_grad, grads.gamma_grad, grads.beta_grad]
    })
}

pub(super) fn channel_affine(x: FlexTensor, scale: FlexTensor, shift: FlexTensor) -> FlexTensor {
    let kiln = shape_of(&x, &scale).and_then(|shape| {
        let values = f32_values(&x)?;
        let y = kiln_kernels::channel_affine_forward_vec(
            &shape,
            &values,
            &f32_values(&scale)?,
            &f32_values(&shift)?,
        )
        .ok()?;
        Some(tensor(y, x.shape()))
    });
    kiln.unwrap_or_else(|| <Flex as KilnOpsDefault>::default_channel_affine(x, scale, shift))
}

pub(super) fn channel_affine_backward(
    x: FlexTensor,
    scale: FlexTensor,
    output_grad: FlexTensor,
) -> [FlexTensor; 3] {
    let kiln = shape_of(&x, &scale).and_then(|shape| {
        let values = f32_values(&x)?;
        let (mut dscale, mut dshift) = (vec![0.0f32; shape.channels], vec![0.0f32; shape.channels]);
        let dx = kiln_kernels::channel_affine_backward_vec(
            &shape,
            (&values, &f32_values(&scale)?),
            &f32_values(&output_grad)?,
            (&mut dscale, &mut dshift),
        )
        .ok()?;
        Some([
            tensor(dx, x.shape()),
            tensor(dscale, [shape.channels]),
            tensor(dshift, [shape.channels]),
        ])
    });
    kiln.unwrap_or_else(|| {
        <Flex as KilnOpsDefault>::default_channel_affine_backward(x, scale, output_grad)
    })
}
