//! Max pooling on Burn's flex backend: f32 tensors go to `kiln-kernels`, with the argmax
//! kept as i32 plane offsets (Burn's own indices' meaning); anything else to Burn.

use burn::backend::Flex;
use burn::backend::TensorMetadata;
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ModuleOps;
use burn::tensor::{DType, IntDType, TensorData};
use kiln_kernels::Pool2dShape;

use super::PoolOptions;
use super::flex_tensor::{f32_values, tensor};

fn pool_shape(x: &FlexTensor, pool: &PoolOptions) -> Option<Pool2dShape> {
    if x.dtype() != DType::F32 || x.shape().num_dims() != 4 {
        return None;
    }
    let [batch, channels, h, w] = x.shape().dims::<4>();
    let shape = Pool2dShape {
        batch,
        channels,
        in_size: [h, w],
        kernel: pool.kernel,
        stride: pool.stride,
        padding: pool.padding,
        dilation: pool.dilation,
        ceil_mode: pool.ceil_mode,
    };
    // The indices travel as i32.
    (shape.validate().is_ok() && h.checked_mul(w).is_some_and(|p| p <= i32::MAX as usize))
        .then_some(shape)
}

fn run(x: &FlexTensor, shape: &Pool2dShape) -> Option<(FlexTensor, Vec<u32>)> {
    let (y, indices) = kiln_kernels::max_pool2d_forward_vec(shape, &f32_values(x)?).ok()?;
    let [h, w] = shape.out_size();
    Some((tensor(y, [shape.batch, shape.channels, h, w]), indices))
}

pub(super) fn max_pool(x: FlexTensor, pool: PoolOptions) -> FlexTensor {
    pool_shape(&x, &pool)
        .and_then(|shape| run(&x, &shape))
        .map(|(y, _)| y)
        .unwrap_or_else(|| {
            Flex::max_pool2d(
                x,
                pool.kernel,
                pool.stride,
                pool.padding,
                pool.dilation,
                pool.ceil_mode,
            )
        })
}

pub(super) fn max_pool_with_indices(x: FlexTensor, pool: PoolOptions) -> (FlexTensor, FlexTensor) {
    let kiln = pool_shape(&x, &pool).and_then(|shape| {
        let (y, indices) = run(&x, &shape)?;
        let indices: Vec<i32> = indices.into_iter().map(|i| i as i32).collect();
        Some((
            y.clone(),
            FlexTensor::from_data(TensorData::new(indices, y.shape())),
        ))
    });
    kiln.unwrap_or_else(|| {
        let pooled = Flex::max_pool2d_with_indices(
            x,
            pool.kernel,
            pool.stride,
            pool.padding,
            pool.dilation,
            pool.ceil_mode,
            IntDType::I32,
        );
        (pooled.output, pooled.indices)
    })
}

pub(super) fn max_pool_backward(
    x: FlexTensor,
    pool: PoolOptions,
    output_grad: FlexTensor,
    indices: FlexTensor,
) -> FlexTensor {
    let kiln = pool_shape(&x, &pool).and_then(|shape| {
        let offsets: Vec<u32> = indices
            .as_slice::<i32>()?
            .iter()
            .map(|&i| u32::try_from(i).ok())
            .collect::<Option<_>>()?;
        let dx =
            kiln_kernels::max_pool2d_backward_vec(&shape, &f32_values(&output_grad)?, &offsets)
                .ok()?;
        Some(tensor(dx, x.shape().dims::<4>()))
    });
    kiln.unwrap_or_else(|| {
        Flex::max_pool2d_with_indices_backward(
            x,
            pool.kernel,
            pool.stride,
            pool.padding,
            pool.dilation,
            pool.ceil_mode,
            output_grad,
            indices,
        )
        .x_grad
    })
}
