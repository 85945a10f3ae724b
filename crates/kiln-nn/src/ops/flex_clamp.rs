//! ReLU / ReLU6 on Burn's flex backend: f32 tensors go to `kiln-kernels`, others to Burn.

use burn::backend::Flex;
use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;
use burn::backend::ops::FloatTensorOps;
use burn::tensor::DType;

use super::KilnOpsDefault;
use super::flex_tensor::{f32_values, tensor};

/// In place when no one else holds `x` (an activation straight out of a convolution or a
/// batch norm, whose backward keeps its own input): no allocation, no zeroing, one pass.
pub(super) fn clamp(mut x: FlexTensor, low: f32, high: f32) -> FlexTensor {
    let elements = x.shape().num_elements();
    if x.dtype() == DType::F32
        && x.is_contiguous()
        && let Some(values) = x.try_storage_mut::<f32>()
        && values.len() == elements
        && kiln_kernels::clamp_forward_in_place(values, low, high).is_ok()
    {
        return x;
    }
    let kiln = (x.dtype() == DType::F32).then(|| {
        let values = f32_values(&x)?;
        let mut y = vec![0.0f32; values.len()];
        kiln_kernels::clamp_forward(&values, low, high, &mut y).ok()?;
        Some(tensor(y, x.shape()))
    });
    kiln.flatten()
        .unwrap_or_else(|| Flex::float_clamp(x, low.into(), high.into()))
}

pub(super) fn clamp_backward(
    y: FlexTensor,
    mut output_grad: FlexTensor,
    low: f32,
    high: f32,
) -> FlexTensor {
    // The output's gradient is usually held by no one else: it becomes the input's in place.
    if y.dtype() == DType::F32
        && output_grad.dtype() == DType::F32
        && y.shape() == output_grad.shape()
        && output_grad.is_contiguous()
        && let Some(values) = f32_values(&y)
        && let Some(grad) = output_grad.try_storage_mut::<f32>()
        && grad.len() == values.len()
        && kiln_kernels::clamp_backward_in_place(&values, grad, low, high).is_ok()
    {
        drop(values);
        return output_grad;
    }
    let kiln = (y.dtype() == DType::F32 && y.shape() == output_grad.shape()).then(|| {
        let (values, grad) = (f32_values(&y)?, f32_values(&output_grad)?);
        let mut dx = vec![0.0f32; values.len()];
        kiln_kernels::clamp_backward(&values, &grad, low, high, &mut dx).ok()?;
        Some(tensor(dx, y.shape()))
    });
    kiln.flatten()
        .unwrap_or_else(|| Flex::mask_clamp_backward(y, output_grad, low, high))
}
