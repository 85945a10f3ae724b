//! [`KilnOps`] and [`KilnGradients`] for Burn's flex backend.

use burn::backend::Flex;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::tensor::ops::ConvOptions;

use super::{
    BatchStatistics, KilnGradients, KilnOps, PoolOptions, flex_batch_norm, flex_clamp, flex_conv,
    flex_conv_pool, flex_pool,
};

impl KilnOps for Flex {
    fn kiln_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        flex_conv::forward(x, weight, Some(bias), options)
    }

    fn kiln_conv2d_no_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        flex_conv::forward(x, weight, None, options)
    }

    fn kiln_conv2d_relu_pool(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        flex_conv_pool::forward(x, weight, bias, options).0
    }

    fn kiln_max_pool2d(x: FloatTensor<Self>, pool: PoolOptions) -> FloatTensor<Self> {
        flex_pool::max_pool(x, pool)
    }

    fn kiln_clamp(x: FloatTensor<Self>, low: f32, high: f32) -> FloatTensor<Self> {
        flex_clamp::clamp(x, low, high)
    }

    fn kiln_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> BatchStatistics<Self> {
        flex_batch_norm::forward(x, gamma, beta, epsilon)
    }

    fn kiln_channel_affine(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        flex_batch_norm::channel_affine(x, scale, shift)
    }
}

impl KilnGradients for Flex {
    fn kiln_conv2d_relu_pool_train(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> (FloatTensor<Self>, IntTensor<Self>) {
        flex_conv_pool::forward(x, weight, bias, options)
    }

    fn kiln_conv2d_relu_pool_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        (codes, output_grad): (IntTensor<Self>, FloatTensor<Self>),
        options: ConvOptions<2>,
        input_grad: bool,
    ) -> (
        Option<FloatTensor<Self>>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    ) {
        flex_conv_pool::backward(x, weight, (codes, output_grad), options, input_grad)
    }

    fn kiln_conv2d_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        flex_conv::input_grad(x, weight, output_grad, options)
    }

    fn kiln_conv2d_weight_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        flex_conv::weight_grad(x, weight, output_grad, options)
    }

    fn kiln_conv2d_bias_backward(
        x: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        flex_conv::bias_grad(x, bias, output_grad)
    }

    fn kiln_max_pool2d_with_indices(
        x: FloatTensor<Self>,
        pool: PoolOptions,
    ) -> (FloatTensor<Self>, IntTensor<Self>) {
        flex_pool::max_pool_with_indices(x, pool)
    }

    fn kiln_max_pool2d_backward(
        x: FloatTensor<Self>,
        pool: PoolOptions,
        output_grad: FloatTensor<Self>,
        indices: IntTensor<Self>,
    ) -> FloatTensor<Self> {
        flex_pool::max_pool_backward(x, pool, output_grad, indices)
    }

    fn kiln_batch_norm_train_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        statistics: (FloatTensor<Self>, FloatTensor<Self>),
        epsilon: f64,
        output_grad: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 3] {
        flex_batch_norm::backward(x, gamma, statistics, epsilon, output_grad)
    }

    fn kiln_channel_affine_backward(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 3] {
        flex_batch_norm::channel_affine_backward(x, scale, output_grad)
    }

    fn kiln_clamp_backward(
        y: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        low: f32,
        high: f32,
    ) -> FloatTensor<Self> {
        flex_clamp::clamp_backward(y, output_grad, low, high)
    }
}
