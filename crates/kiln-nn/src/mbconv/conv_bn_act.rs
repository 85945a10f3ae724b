//! The block nonlinearities of the MobileNet / EfficientNet family, and a convolution followed
//! by BatchNorm and one of them: the unit every block of the family is made of.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::sigmoid;

use crate::ops::{relu, relu6};
use kiln_tflite::Activation;

use crate::QuantHooks;
use crate::hooked_layers::conv_bn_hooked;
use crate::lowering::{GraphBuilder, LowerError, TensorId, lower_conv_bn};

/// The nonlinearity after every convolution but the projections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockActivation {
    /// `min(max(x, 0), 6)`: EfficientNet-lite's choice; fuses into the convolution in TFLite.
    #[default]
    Relu6,
    /// `max(x, 0)`: the classifier head's dense layers (as Keras' notebooks use).
    Relu,
    /// `x · sigmoid(x)`: the original EfficientNet's; LOGISTIC + MUL in TFLite.
    Swish,
    /// `x · relu6(x + 3) / 6` (MobileNetV3's piecewise swish): one HARD_SWISH op.
    HardSwish,
}

impl BlockActivation {
    pub(crate) fn forward<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Self::Relu6 => relu6(x),
            Self::Relu => relu(x),
            Self::Swish => x.clone().mul(sigmoid(x)),
            // In TFLite's order (x · clamp, then / 6) rather than Burn's `x · hard_sigmoid(x)`,
            // so the float model and the HARD_SWISH kernel round alike.
            Self::HardSwish => x.clone().mul(relu6(x.add_scalar(3.0))).div_scalar(6.0),
        }
    }

    /// The part of the activation TFLite fuses into the preceding convolution.
    pub(crate) fn fused(self) -> Activation {
        match self {
            Self::Relu6 => Activation::Relu6,
            Self::Relu => Activation::Relu,
            Self::Swish | Self::HardSwish => Activation::None,
        }
    }

    /// The part that needs operators of its own, applied to the convolution's output.
    pub(crate) fn lower_unfused(
        self,
        graph: &mut GraphBuilder,
        name: &str,
        x: TensorId,
    ) -> TensorId {
        match self {
            Self::Relu6 | Self::Relu => x,
            Self::Swish => graph.swish(&format!("{name}/swish"), x),
            Self::HardSwish => graph.hard_swish(&format!("{name}/hard_swish"), x),
        }
    }
}

/// `activation` after a convolution whose output `lower` names `name`, with fake-quant on
/// what the int8 graph stores: the convolution's output after its fused part (ReLU6), and
/// the unfused part's own output (`name/swish`, `name/hard_swish`).
pub(crate) fn hooked_activation<H: QuantHooks>(
    y: Tensor<4>,
    hooks: &H,
    name: &str,
    activation: Option<BlockActivation>,
) -> Tensor<4> {
    match activation {
        None => hooks.activation(name, y),
        Some(fused @ (BlockActivation::Relu6 | BlockActivation::Relu)) => {
            hooks.activation(name, fused.forward(y))
        }
        Some(unfused) => {
            let y = hooks.activation(name, y);
            let suffix = match unfused {
                BlockActivation::Swish => "swish",
                _ => "hard_swish",
            };
            hooks.activation(&format!("{name}/{suffix}"), unfused.forward(y))
        }
    }
}

/// How a family member pads its convolutions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConvPadding {
    /// TensorFlow's SAME (the odd pixel after): lowers without PAD ops.
    Same,
    /// PyTorch's `kernel / 2` on every side: stride-2 layers lower with a PAD op.
    Symmetric,
}

impl ConvPadding {
    fn config(self, kernel: usize) -> PaddingConfig2d {
        match self {
            Self::Same => PaddingConfig2d::Same,
            Self::Symmetric => {
                let p = kernel / 2;
                PaddingConfig2d::Explicit(p, p, p, p)
            }
        }
    }
}

/// The shape of one bias-free convolution (the BatchNorm after it would cancel a bias).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvShape {
    pub channels: [usize; 2],
    pub kernel: usize,
    pub stride: usize,
    pub groups: usize,
}

impl ConvShape {
    pub fn pointwise(channels: [usize; 2]) -> Self {
        Self {
            channels,
            kernel: 1,
            stride: 1,
            groups: 1,
        }
    }

    pub fn depthwise(channels: usize, kernel: usize, stride: usize) -> Self {
        Self {
            channels: [channels, channels],
            kernel,
            stride,
            groups: channels,
        }
    }

    pub fn init(self, padding: ConvPadding, device: &Device) -> Conv2d {
        Conv2dConfig::new(self.channels, [self.kernel, self.kernel])
            .with_stride([self.stride, self.stride])
            .with_groups(self.groups)
            .with_padding(padding.config(self.kernel))
            .with_bias(false)
            .init(device)
    }
}

/// BatchNorm over `channels` with `epsilon` (Burn's default momentum, PyTorch's 0.1).
pub(crate) fn batch_norm(channels: usize, epsilon: f64, device: &Device) -> BatchNorm {
    BatchNormConfig::new(channels)
        .with_epsilon(epsilon)
        .init(device)
}

/// Conv → BN → `activation` (none for linear projections), with fake-quant points on the
/// tensors the lowering names `name` (after the fused part of the activation) and
/// `name/swish` or `name/hard_swish`.
pub(crate) fn conv_bn_act<H: QuantHooks>(
    (conv, bn): (&Conv2d, &BatchNorm),
    x: Tensor<4>,
    hooks: &H,
    name: &str,
    activation: Option<BlockActivation>,
) -> Tensor<4> {
    let y = conv_bn_hooked(conv, bn, name, x, hooks);
    hooked_activation(y, hooks, name, activation)
}

/// Conv with BN folded, then `activation` (fused where TFLite can), or linear with `None`.
pub(crate) fn lower_conv_bn_act(
    graph: &mut GraphBuilder,
    name: &str,
    (conv, bn): (&Conv2d, &BatchNorm),
    x: TensorId,
    activation: Option<BlockActivation>,
) -> Result<TensorId, LowerError> {
    let fused = activation.map_or(Activation::None, BlockActivation::fused);
    let y = lower_conv_bn(graph, name, conv, Some(bn), x, fused)?;
    Ok(match activation {
        Some(activation) => activation.lower_unfused(graph, name, y),
        None => y,
    })
}
