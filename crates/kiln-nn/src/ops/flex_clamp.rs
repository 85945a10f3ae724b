//! ReLU / ReLU6 on Burn's flex backend: f32 tensors go to `kiln-kernels`, others to Burn.

use burn::backend::Flex;
use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;
use burn::backend::ops::FloatTensorOps;
use burn::tensor::DType;

use super::KilnOpsDefault;
use super::flex_tensor::{f32_values, tensor};

pub(super) fn clamp(x: FlexTensor, low: f32, high: f32) -> FlexTensor {
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
    output_grad: FlexTensor,
    low: f32,
    high: f32,
) -> FlexTensor {
    let kiln = (y.dtype() == DType::F32 && y.shape() == output_grad.shape()).then(|| {
        let (values, grad) = (f32_values(&y)?, f32_values(&output_grad)?);
        let mut dx = vec![0.0f32; values.len()];
        kiln_kernels::clamp_backward(&values, &grad, low, high, &mut dx).ok()?;
        Some(tensor(dx, y.shape()))
    });
    kiln.flatten()
        .unwrap_or_else(|| Flex::mask_clamp_backward(y, output_grad, low, high))
}
