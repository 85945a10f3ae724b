//! Moving f32 values between flex tensors and the kernels' slices.

use std::borrow::Cow;

use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, Shape, TensorData};

/// The tensor's values in row-major order: borrowed when it is already contiguous, which a
/// freshly computed activation or parameter is; `None` unless it holds f32.
pub(super) fn f32_values(t: &FlexTensor) -> Option<Cow<'_, [f32]>> {
    if t.dtype() != DType::F32 {
        return None;
    }
    match t.as_slice::<f32>() {
        Some(values) => Some(Cow::Borrowed(values)),
        None => t
            .to_contiguous()
            .as_slice::<f32>()
            .map(|v| Cow::Owned(v.to_vec())),
    }
}

/// A contiguous f32 tensor owning `values`.
pub(super) fn tensor(values: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}
