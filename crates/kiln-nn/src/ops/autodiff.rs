//! [`KilnOps`] under autodiff: forwards on the inner backend, backward passes registered by
//! hand with the inner backend's [`KilnGradients`].

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::tensor::FloatTensor;
use burn::tensor::ops::ConvOptions;

use super::{
    BatchStatistics, KilnGradients, KilnOps, PoolOptions, autodiff_batch_norm,
    autodiff_channel_affine, autodiff_clamp, autodiff_conv, autodiff_conv_pool, autodiff_pool,
};

impl<B: KilnOps + KilnGradients, C: CheckpointStrategy> KilnOps for Autodiff<B, C> {
    fn kiln_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        autodiff_conv::conv_with_bias::<B, C>(x, weight, bias, options)
    }

    fn kiln_conv2d_no_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        autodiff_conv::conv_no_bias::<B, C>(x, weight, options)
    }

    fn kiln_conv2d_relu_pool(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        autodiff_conv_pool::conv_relu_pool::<B, C>(x, weight, bias, options)
    }

    fn kiln_max_pool2d(x: FloatTensor<Self>, pool: PoolOptions) -> FloatTensor<Self> {
        autodiff_pool::max_pool::<B, C>(x, pool)
    }

    fn kiln_clamp(x: FloatTensor<Self>, low: f32, high: f32) -> FloatTensor<Self> {
        autodiff_clamp::clamp::<B, C>(x, low, high)
    }

    fn kiln_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> BatchStatistics<Self> {
        autodiff_batch_norm::batch_norm_train::<B, C>(x, gamma, beta, epsilon)
    }

    fn kiln_channel_affine(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        autodiff_channel_affine::channel_affine::<B, C>(x, scale, shift)
    }
}
