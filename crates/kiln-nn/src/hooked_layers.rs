//! Burn's conv and linear layers run with their weights passed through [`QuantHooks`] first —
//! the same arithmetic as the layers' own `forward`, on the (fake-quantized) weight.

use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear};
use burn::prelude::*;
use burn::tensor::module::linear;
use burn::tensor::ops::ConvOptions;

use crate::lowering::fold_batch_norm;
use crate::lowering::padding::burn_pairs;
use crate::ops::{conv2d, conv2d_relu_max_pool};
use crate::quant_hooks::{BatchNormMode, LayerCall, LayerKind, QuantHooks};

/// `conv.forward(x)` with its weight through `hooks`, quantized per output channel (axis 0
/// of Burn's [out, in / groups, kh, kw]: TFLite's CONV_2D axis 0 and DEPTHWISE_CONV_2D axis 3).
/// `output` is the lowered graph's name of the convolution's output.
pub fn conv2d_hooked<H: QuantHooks>(
    conv: &Conv2d,
    output: &str,
    x: Tensor<4>,
    hooks: &H,
) -> Tensor<4> {
    hooks.layer(
        convolution(output),
        x,
        (conv.weight.val(), Some(0)),
        conv.bias.as_ref().map(|b| b.val()),
        |x, w, b| conv2d_with_weight(conv, x, w, b),
    )
}

fn convolution(output: &str) -> LayerCall<'_> {
    LayerCall {
        output,
        kind: LayerKind::Convolution,
    }
}

/// `conv`'s convolution (stride, padding, dilation, groups) with another weight and bias.
pub fn conv2d_with_weight(
    conv: &Conv2d,
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
) -> Tensor<4> {
    let options = conv_options(conv, &x);
    conv2d(x, weight, bias, options)
}

/// `max_pool2d(relu(conv.forward(x)))` with a 2×2 window and stride, as one fused operation
/// (`crate::ops::conv2d_relu_max_pool`), for a convolution whose bias is `bias`.
pub fn conv2d_relu_max_pool_layer(conv: &Conv2d, bias: Tensor<1>, x: Tensor<4>) -> Tensor<4> {
    let options = conv_options(conv, &x);
    conv2d_relu_max_pool(x, conv.weight.val(), bias, options)
}

/// `conv`'s stride, padding (resolved for `x`'s size), dilation and groups.
fn conv_options(conv: &Conv2d, x: &Tensor<4>) -> ConvOptions<2> {
    let [_, _, height, width] = x.dims();
    let [rows, cols] = burn_pairs(
        &conv.padding,
        [height, width],
        conv.kernel_size,
        conv.stride,
    );
    ConvOptions::new_with_padding(conv.stride, [rows, cols], conv.dilation, conv.groups)
}

/// `layer.forward(x)` with its weight through `hooks`, one scale per output channel (the int8
/// exporter's FULLY_CONNECTED default, as TF 2.21's converter).
/// `output` is the lowered graph's name of the layer's output.
pub fn linear_hooked<H: QuantHooks>(
    layer: &Linear,
    output: &str,
    x: Tensor<2>,
    hooks: &H,
) -> Tensor<2> {
    let call = LayerCall {
        output,
        kind: LayerKind::Dense,
    };
    hooks.layer(
        call,
        x,
        // Burn keeps dense weights as [inputs, outputs]: output channels on axis 1.
        (layer.weight.val(), Some(1)),
        layer.bias.as_ref().map(|b| b.val()),
        linear,
    )
}

/// `bn.forward(conv.forward(x))` with `hooks`. Folded (QAT), the convolution runs with the
/// BatchNorm-folded weight `w · γ/σ` (σ from the running variance) through the hooks — what
/// the int8 model holds — following Krishnamoorthi, "Quantizing deep convolutional networks
/// for efficient inference: A whitepaper" (2018), §3.2: while BatchNorm still trains, the
/// output is divided by γ/σ again and normalised with the batch's statistics (which also
/// update the running ones); frozen, the folded bias `β − γ·μ/σ` is added instead, exactly
/// the exported graph's arithmetic.
pub fn conv_bn_hooked<H: QuantHooks>(
    conv: &Conv2d,
    bn: &BatchNorm,
    output: &str,
    x: Tensor<4>,
    hooks: &H,
) -> Tensor<4> {
    conv_bn_hooked_as(LayerKind::Convolution, conv, bn, output, x, hooks)
}

/// [`conv_bn_hooked`] for a 1×1 convolution on a 1×1 map that the lowering writes as
/// `kind` (a dense layer kept as a convolution so BatchNorm folds into it the same way).
pub fn conv_bn_hooked_as<H: QuantHooks>(
    kind: LayerKind,
    conv: &Conv2d,
    bn: &BatchNorm,
    output: &str,
    x: Tensor<4>,
    hooks: &H,
) -> Tensor<4> {
    let call = LayerCall { output, kind };
    let frozen = match hooks.batch_norm() {
        BatchNormMode::Separate => {
            let y = hooks.layer(
                call,
                x,
                (conv.weight.val(), Some(0)),
                conv.bias.as_ref().map(|b| b.val()),
                |x, w, b| conv2d_with_weight(conv, x, w, b),
            );
            return crate::ops::batch_norm(bn, y);
        }
        BatchNormMode::Folded { frozen } => frozen,
    };
    let weight = conv.weight.val();
    let channels = weight.dims()[0];
    let device = weight.device();
    let mean = bn.running_mean.value_sync().to_device(&device).detach();
    let std = bn
        .running_var
        .value_sync()
        .to_device(&device)
        .detach()
        .add_scalar(bn.epsilon)
        .sqrt();
    let gamma = bn.gamma.val();
    let scale = gamma.clone().div(std.clone());
    let folded = weight.mul(scale.clone().reshape([channels, 1, 1, 1]));
    let bias = conv.bias.as_ref().map(|b| b.val());
    let by_channel = |t: Tensor<1>| t.reshape([1, channels, 1, 1]);
    let training = x.device().is_autodiff() && bn.training.is_enabled();
    if training && !frozen {
        let folded = hooks.weight(folded, Some(0));
        let mut unscaled = conv2d_with_weight(conv, x, folded, None).div(by_channel(scale));
        if let Some(bias) = bias {
            unscaled = unscaled.add(by_channel(bias));
        }
        crate::ops::batch_norm(bn, unscaled)
    } else if let (false, Ok(exported)) = (training, fold_batch_norm(output, conv, Some(bn))) {
        // Inference: the very weights and bias the exporter writes (folded in f64), so the
        // int8 arithmetic QAT's inference reproduces starts from the file's values.
        let weights = Tensor::from_data(TensorData::new(exported.weights, exported.shape), &device);
        let bias = Tensor::from_data(TensorData::new(exported.bias, [channels]), &device);
        hooks.layer(call, x, (weights, Some(0)), Some(bias), |x, w, b| {
            conv2d_with_weight(conv, x, w, b)
        })
    } else {
        // β + γ/σ · (b − μ): the folded bias of lowering/batch_norm.rs, differentiably.
        let centred = match bias {
            Some(bias) => bias.sub(mean),
            None => mean.neg(),
        };
        let folded_bias = bn.beta.val().add(scale.mul(centred));
        hooks.layer(call, x, (folded, Some(0)), Some(folded_bias), |x, w, b| {
            conv2d_with_weight(conv, x, w, b)
        })
    }
}

#[cfg(test)]
mod tests {
    use burn::nn::BatchNormConfig;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::Distribution;

    use super::*;
    use crate::FloatForward;

    /// Folds BatchNorm but leaves every value as it is.
    struct FoldOnly(bool);

    impl QuantHooks for FoldOnly {
        fn weight<const D: usize>(&self, weight: Tensor<D>, _: Option<usize>) -> Tensor<D> {
            weight
        }
        fn activation<const D: usize>(&self, _: &str, x: Tensor<D>) -> Tensor<D> {
            x
        }
        fn batch_norm(&self) -> BatchNormMode {
            BatchNormMode::Folded { frozen: self.0 }
        }
    }

    fn max_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
        a.sub(b).abs().max().into_scalar::<f32>()
    }

    fn layers(device: &Device) -> (Conv2d, BatchNorm) {
        let conv = Conv2dConfig::new([3, 6], [3, 3])
            .with_stride([2, 2])
            .with_padding(burn::nn::PaddingConfig2d::Same)
            .init(device);
        let mut bn = BatchNormConfig::new(6).init(device);
        bn.gamma = bn.gamma.map(|g| g.add_scalar(0.5));
        bn.beta = bn.beta.map(|b| b.add_scalar(-0.25));
        // Running statistics away from their (0, 1) start.
        let x = Tensor::<4>::random([8, 3, 9, 9], Distribution::Normal(1.0, 2.0), device);
        for _ in 0..20 {
            let _ = bn.forward(conv.forward(x.clone()));
        }
        (conv, bn)
    }

    #[test]
    fn folded_inference_is_conv_then_batch_norm() {
        let train_device = Device::flex().autodiff();
        let (conv, bn) = layers(&train_device);
        let (conv, bn) = (conv.valid(), bn.valid());
        let x = Tensor::<4>::random([2, 3, 9, 9], Distribution::Default, &Device::flex());
        let separate = conv_bn_hooked(&conv, &bn, "c", x.clone(), &FloatForward);
        let folded = conv_bn_hooked(&conv, &bn, "c", x, &FoldOnly(false));
        assert!(max_diff(separate, folded) < 1e-5);
    }

    #[test]
    fn folded_training_normalises_with_batch_statistics_until_frozen() {
        let device = Device::flex().autodiff();
        let (conv, bn) = layers(&device);
        let x = Tensor::<4>::random([4, 3, 9, 9], Distribution::Default, &device);
        let separate = conv_bn_hooked(&conv, &bn, "c", x.clone(), &FloatForward);
        let folded = conv_bn_hooked(&conv, &bn, "c", x.clone(), &FoldOnly(false));
        assert!(max_diff(separate, folded) < 1e-4);
        let frozen = conv_bn_hooked(&conv, &bn, "c", x.clone(), &FoldOnly(true));
        let inference = conv_bn_hooked(&conv.valid(), &bn.valid(), "c", x.inner(), &FloatForward);
        assert!(max_diff(frozen.inner(), inference) < 1e-5);
    }
}
