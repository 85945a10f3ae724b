//! Kiln's training kernels inside Burn: a backend extension ([`KilnOps`]) whose flex
//! implementation runs `kiln-kernels` (im2col + AVX-512 GEMM, direct depthwise loops, max
//! pooling, ReLU/ReLU6, batch normalization) and whose autodiff implementation supplies the
//! backward passes with Kiln's gradient kernels ([`KilnGradients`]). Burn 0.22's flex backend has no input- or
//! weight-gradient convolution kernels of its own (its defaults go through transposed
//! convolutions, and a depthwise weight gradient runs one convolution per channel), its max
//! pooling is a scalar loop, and its batch norm transposes the activation for each reduction.
//!
//! Every Kiln model convolves, pools, clamps and normalizes through [`conv2d`],
//! [`max_pool2d`], [`relu`]/[`relu6`] and [`batch_norm`]; on other backends (wgpu, ndarray)
//! they are Burn's own operations.

mod autodiff;
mod autodiff_batch_norm;
mod autodiff_channel_affine;
mod autodiff_clamp;
mod autodiff_conv;
mod autodiff_conv_pool;
mod autodiff_pool;
mod flex;
mod flex_batch_norm;
mod flex_clamp;
mod flex_conv;
mod flex_conv_pool;
mod flex_pool;
mod flex_tensor;
#[cfg(test)]
mod tests;

use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, Dispatch, ExtensionType, backend_extension};
use burn::nn::BatchNorm;
use burn::nn::pool::MaxPool2d;
use burn::prelude::*;
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};

/// The forward operations a backend may run with Kiln's kernels. The default bodies are
/// Burn's own operations, so a backend opts in one method at a time. (With and without bias
/// are two methods: Burn 0.22's extension macro does not route `Option` tensor arguments.)
#[backend_extension(Flex, Autodiff)]
pub trait KilnOps: Backend {
    fn kiln_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d(x, weight, Some(bias), options)
    }

    fn kiln_conv2d_no_bias(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d(x, weight, None, options)
    }

    /// `max_pool2d(relu(conv2d(x, weight, bias)))` with a 2×2 window, stride 2, no padding:
    /// the classic CNN block, fused on the CPU (see `kiln_kernels::conv2d_relu_pool_forward`).
    fn kiln_conv2d_relu_pool(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        let y = Self::conv2d(x, weight, Some(bias), options);
        let y = Self::float_clamp_min(y, 0.0f32.into());
        Self::max_pool2d(y, [2, 2], [2, 2], [0, 0], [1, 1], false)
    }

    fn kiln_max_pool2d(x: FloatTensor<Self>, pool: PoolOptions) -> FloatTensor<Self> {
        Self::max_pool2d(
            x,
            pool.kernel,
            pool.stride,
            pool.padding,
            pool.dilation,
            pool.ceil_mode,
        )
    }

    /// `min(max(x, low), high)`: ReLU with `high = ∞`, ReLU6 with 6.
    fn kiln_clamp(x: FloatTensor<Self>, low: f32, high: f32) -> FloatTensor<Self> {
        Self::float_clamp(x, low.into(), high.into())
    }

    /// Batch normalization in training: the output and the batch's per-channel statistics.
    fn kiln_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> BatchStatistics<Self> {
        let result = Self::batch_norm_train(x, gamma, beta, epsilon);
        BatchStatistics {
            output: result.output,
            mean: result.mean,
            variance: result.variance,
        }
    }

    /// `x · scale[c] + shift[c]` per channel: BatchNorm with fixed statistics.
    fn kiln_channel_affine(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::default_channel_affine(x, scale, shift)
    }
}

/// `[1, C, 1, …]` for an `[N, C, …]` tensor.
fn per_channel_shape<B: Backend>(x: &FloatTensor<B>) -> burn::tensor::Shape {
    let shape = burn::backend::TensorMetadata::shape(x);
    let mut dims = vec![1; shape.num_dims()];
    dims[1] = shape[1];
    burn::tensor::Shape::from(dims)
}

/// [`KilnOps::kiln_batch_norm_train`]'s result: the normalized output, the batch mean and the
/// biased batch variance per channel (the last two carry no gradient).
#[derive(ExtensionType)]
pub struct BatchStatistics<B: Backend> {
    pub output: FloatTensor<B>,
    pub mean: FloatTensor<B>,
    pub variance: FloatTensor<B>,
}

/// The gradient kernels behind [`KilnOps`]' autodiff implementation, called on the inner
/// backend; defaults are Burn's own, except for the fused block's, which only Kiln's
/// kernels define.
pub trait KilnGradients: Backend {
    /// [`KilnOps::kiln_conv2d_relu_pool`] in training: the pooled output and each pooled
    /// value's window code (`kiln_kernels::conv2d_relu_pool_forward`'s), as a u8 tensor.
    fn kiln_conv2d_relu_pool_train(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> (FloatTensor<Self>, IntTensor<Self>);

    /// The input (when `input_grad`), weight and bias gradients of
    /// [`Self::kiln_conv2d_relu_pool_train`] from the pooled output's gradient.
    fn kiln_conv2d_relu_pool_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        codes_and_output_grad: (IntTensor<Self>, FloatTensor<Self>),
        options: ConvOptions<2>,
        input_grad: bool,
    ) -> (
        Option<FloatTensor<Self>>,
        FloatTensor<Self>,
        FloatTensor<Self>,
    );

    fn kiln_conv2d_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_x_backward(x, weight, output_grad, options)
    }

    fn kiln_conv2d_weight_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_weight_backward(x, weight, output_grad, options)
    }

    fn kiln_conv2d_bias_backward(
        x: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::conv2d_bias_backward(x, bias, output_grad)
    }

    /// The pooled output and, for each output, where in its input plane the maximum was.
    fn kiln_max_pool2d_with_indices(
        x: FloatTensor<Self>,
        pool: PoolOptions,
    ) -> (FloatTensor<Self>, IntTensor<Self>) {
        let pooled = Self::max_pool2d_with_indices(
            x,
            pool.kernel,
            pool.stride,
            pool.padding,
            pool.dilation,
            pool.ceil_mode,
            burn::tensor::IntDType::I32,
        );
        (pooled.output, pooled.indices)
    }

    fn kiln_max_pool2d_backward(
        x: FloatTensor<Self>,
        pool: PoolOptions,
        output_grad: FloatTensor<Self>,
        indices: IntTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::max_pool2d_with_indices_backward(
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
    }

    /// The input, gamma and beta gradients of [`KilnOps::kiln_batch_norm_train`].
    fn kiln_batch_norm_train_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        (mean, variance): (FloatTensor<Self>, FloatTensor<Self>),
        epsilon: f64,
        output_grad: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 3] {
        let grads = Self::batch_norm_train_backward(x, gamma, mean, variance, epsilon, output_grad);
        [grads.x_grad, grads.gamma_grad, grads.beta_grad]
    }

    /// The input, scale and shift gradients of [`KilnOps::kiln_channel_affine`].
    fn kiln_channel_affine_backward(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 3] {
        Self::default_channel_affine_backward(x, scale, output_grad)
    }

    /// The gradient of [`KilnOps::kiln_clamp`] from its output `y`: `output_grad` where
    /// `low < y < high`, else 0.
    fn kiln_clamp_backward(
        y: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        low: f32,
        high: f32,
    ) -> FloatTensor<Self> {
        Self::mask_clamp_backward(y, output_grad, low, high)
    }
}

impl<B: Backend> KilnOpsDefault for B {}

/// What every backend can run with Burn's own operations: the extension's default bodies, and
/// the flex implementation's fallbacks.
trait KilnOpsDefault: Backend {
    fn default_channel_affine(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        shift: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let per_channel = per_channel_shape::<Self>(&x);
        let scale = Self::float_reshape(scale, per_channel.clone());
        let shift = Self::float_reshape(shift, per_channel);
        Self::float_add(Self::float_mul(x, scale), shift)
    }

    fn default_channel_affine_backward(
        x: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 3] {
        let per_channel = per_channel_shape::<Self>(&x);
        let channels = per_channel[1];
        let dims = per_channel.num_dims();
        // Σ over every axis but the channel axis, as a [C] tensor.
        let channel_sums = |t: FloatTensor<Self>| {
            let t = (0..dims)
                .filter(|&axis| axis != 1)
                .fold(t, |t, axis| Self::float_sum_dim(t, axis));
            Self::float_reshape(t, burn::tensor::Shape::new([channels]))
        };
        let dx = Self::float_mul(output_grad.clone(), Self::float_reshape(scale, per_channel));
        let dscale = channel_sums(Self::float_mul(output_grad.clone(), x));
        let dshift = channel_sums(output_grad);
        [dx, dscale, dshift]
    }

    /// The mask-based clamp gradient (Burn's own formulation).
    fn mask_clamp_backward(
        y: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        low: f32,
        high: f32,
    ) -> FloatTensor<Self> {
        let bool_dtype = burn::tensor::BoolDType::Native;
        let above = Self::float_greater_elem(y.clone(), low.into(), bool_dtype);
        let below = Self::float_lower_elem(y, high.into(), bool_dtype);
        let outside = Self::bool_not(Self::bool_and(above, below));
        Self::float_mask_fill(output_grad, outside, 0.0f32.into())
    }
}

/// Burn's max-pooling parameters (symmetric padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolOptions {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub ceil_mode: bool,
}

/// `burn::tensor::module::conv2d`, through Kiln's kernels on the flex backend (with or
/// without autodiff).
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: ConvOptions<2>,
) -> Tensor<4> {
    if !runs_kiln_kernels(&x.device()) {
        return burn::tensor::module::conv2d(x, weight, bias, options);
    }
    let (x, weight) = (x.into_dispatch(), weight.into_dispatch());
    Tensor::from_dispatch(match bias {
        Some(bias) => <Dispatch as KilnOps>::kiln_conv2d(x, weight, bias.into_dispatch(), options),
        None => <Dispatch as KilnOps>::kiln_conv2d_no_bias(x, weight, options),
    })
}

/// `max_pool2d(relu(conv2d(x, weight, bias)), 2×2, stride 2)`: fused through Kiln's kernels
/// on the flex backend for f32; the three operations apart elsewhere (and with padded or
/// pooled shapes the fused kernel does not take).
pub fn conv2d_relu_max_pool(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Tensor<1>,
    options: ConvOptions<2>,
) -> Tensor<4> {
    let fused = runs_kiln_kernels(&x.device())
        && x.dtype() == burn::tensor::DType::F32
        && weight.dtype() == burn::tensor::DType::F32
        && bias.dtype() == burn::tensor::DType::F32
        && flex_conv_pool::takes(&x.shape(), &weight.shape(), &options);
    if !fused {
        let y = relu(conv2d(x, weight, Some(bias), options));
        return max_pool2d(y, MaxPoolOptions::new([2, 2]).with_stride([2, 2]));
    }
    Tensor::from_dispatch(<Dispatch as KilnOps>::kiln_conv2d_relu_pool(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        options,
    ))
}

/// The extension is implemented for flex and autodiff-over-flex; any other device keeps
/// Burn's operation (the generated dispatch would panic on an unlisted backend).
fn runs_kiln_kernels(device: &Device) -> bool {
    device.clone().inner() == Device::flex()
}

/// `burn::tensor::module::max_pool2d`, through Kiln's kernels on the flex backend (for
/// symmetric padding, which is all Kiln's models use).
pub fn max_pool2d(x: Tensor<4>, options: MaxPoolOptions<2>) -> Tensor<4> {
    let [(top, bottom), (left, right)] = options.padding;
    if !runs_kiln_kernels(&x.device()) || top != bottom || left != right {
        return burn::tensor::module::max_pool2d(x, options);
    }
    let pool = PoolOptions {
        kernel: options.kernel_size,
        stride: options.stride,
        padding: [top, left],
        dilation: options.dilation,
        ceil_mode: options.ceil_mode,
    };
    Tensor::from_dispatch(<Dispatch as KilnOps>::kiln_max_pool2d(
        x.into_dispatch(),
        pool,
    ))
}

/// `layer.forward(x)` through [`max_pool2d`].
pub fn max_pool2d_layer(layer: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let [rows, cols] = crate::lowering::padding::burn_pairs(
        &layer.padding,
        [h, w],
        layer.kernel_size,
        layer.stride,
    );
    let options = MaxPoolOptions::new(layer.kernel_size)
        .with_stride(layer.stride)
        .with_padding_pairs([rows, cols])
        .with_dilation(layer.dilation)
        .with_ceil_mode(layer.ceil_mode);
    max_pool2d(x, options)
}

/// ReLU through Kiln's kernels on the flex backend (Burn's `relu` elsewhere).
pub fn relu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    clamp(x, 0.0, f32::INFINITY)
}

/// ReLU6 (`min(max(x, 0), 6)`), MobileNet's activation, through Kiln's kernels on the flex
/// backend.
pub fn relu6<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    clamp(x, 0.0, 6.0)
}

fn clamp<const D: usize>(x: Tensor<D>, low: f32, high: f32) -> Tensor<D> {
    if !runs_kiln_kernels(&x.device()) {
        return x.clamp(low, high);
    }
    Tensor::from_dispatch(<Dispatch as KilnOps>::kiln_clamp(
        x.into_dispatch(),
        low,
        high,
    ))
}

/// `bn.forward(x)`: in training on the flex backend through Kiln's batch-norm kernels, with
/// the running statistics updated as Burn's `BatchNorm` does; otherwise Burn's own forward.
pub fn batch_norm(bn: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    let device = x.device();
    let [_, channels, _, _] = x.dims();
    let training = device.is_autodiff() && bn.training.is_enabled();
    if !runs_kiln_kernels(&device) || bn.gamma.dims() != [channels] {
        return bn.forward(x);
    }
    if !training {
        // Burn's inference arithmetic, folded into one scale and shift per channel.
        let mean = bn.running_mean.value().to_device(&device);
        let std = bn
            .running_var
            .value()
            .to_device(&device)
            .add_scalar(bn.epsilon)
            .sqrt();
        let scale = bn.gamma.val().div(std);
        let shift = bn.beta.val().sub(mean.mul(scale.clone()));
        return Tensor::from_dispatch(<Dispatch as KilnOps>::kiln_channel_affine(
            x.into_dispatch(),
            scale.into_dispatch(),
            shift.into_dispatch(),
        ));
    }
    let result = <Dispatch as KilnOps>::kiln_batch_norm_train(
        x.into_dispatch(),
        bn.gamma.val().into_dispatch(),
        bn.beta.val().into_dispatch(),
        bn.epsilon,
    );
    let (mean, variance) = (
        Tensor::<1>::from_dispatch(result.mean),
        Tensor::<1>::from_dispatch(result.variance),
    );
    let blend = |running: Tensor<1>, batch: Tensor<1>| {
        running
            .to_device(&device)
            .mul_scalar(1.0 - bn.momentum)
            .add(batch.detach().mul_scalar(bn.momentum))
            .detach()
    };
    bn.running_mean
        .update(blend(bn.running_mean.value_sync(), mean));
    bn.running_var
        .update(blend(bn.running_var.value_sync(), variance));
    Tensor::from_dispatch(result.output)
}
