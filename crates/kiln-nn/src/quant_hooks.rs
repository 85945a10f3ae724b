//! Where a network's forward pass meets quantization. Quantization-aware training runs the
//! same forward pass as float training, with fake-quant inserted where the int8 TFLite model
//! will round: every weight as the int8 exporter quantizes it, and every activation tensor the
//! int8 graph stores, named as the lowering names it (so the ranges training learns land on
//! the right tensors of the exported file).

use burn::prelude::*;

/// Hooks a [`Classifier`](crate::Classifier)'s forward pass calls on its weights and on the
/// activations the int8 graph quantizes.
pub trait QuantHooks {
    /// A weight about to be used; `channel_axis` is the output-channel axis of a
    /// per-channel-quantized weight (Burn layout), `None` for one scale per tensor.
    fn weight<const D: usize>(&self, weight: Tensor<D>, channel_axis: Option<usize>) -> Tensor<D>;

    /// A convolution or dense layer whose output the lowered graph names `call.output`:
    /// `apply` computes it from an input, a weight and a bias (output channels on axis 1).
    /// By default `apply` runs on the hooked weight. QAT's inference instead computes what
    /// the int8 kernel computes, which needs the input's int8 parameters: layers call this
    /// right after the activation hook of their input (or of the tensor whose parameters
    /// their input shares, as a max-pool's).
    fn layer<const D: usize, const O: usize>(
        &self,
        call: LayerCall<'_>,
        x: Tensor<O>,
        (weight, channel_axis): (Tensor<D>, Option<usize>),
        bias: Option<Tensor<1>>,
        apply: impl Fn(Tensor<O>, Tensor<D>, Option<Tensor<1>>) -> Tensor<O>,
    ) -> Tensor<O> {
        let _ = call;
        let weight = self.weight(weight, channel_axis);
        apply(x, weight, bias)
    }

    /// The activation tensor named `tensor` in the lowered graph, as the int8 model stores
    /// it (after any fused activation).
    fn activation<const D: usize>(&self, tensor: &str, x: Tensor<D>) -> Tensor<D>;

    /// How a convolution followed by BatchNorm runs.
    fn batch_norm(&self) -> BatchNormMode;

    /// Whether every hook is the identity (the float forward pass), so a network may fuse
    /// operations across hook points (SmallCnn's conv → ReLU → pool blocks).
    fn is_identity(&self) -> bool {
        false
    }
}

/// A layer call: the lowered graph's name for its output, and its kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerCall<'a> {
    pub output: &'a str,
    pub kind: LayerKind,
}

/// How TFLite's int8 kernel of a layer requantizes its int32 accumulators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    /// CONV_2D and DEPTHWISE_CONV_2D: fixed-point multiplier, rounded twice.
    Convolution,
    /// FULLY_CONNECTED: one rounding in double precision (LiteRT's reference kernel).
    Dense,
}

/// A conv → BatchNorm pair in the forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchNormMode {
    /// As two layers (float training and inference).
    Separate,
    /// BatchNorm folded into the convolution's weights before they reach
    /// [`QuantHooks::weight`], so training sees the weights the int8 model will hold.
    /// With `frozen`, the running statistics also normalise in training (the folded bias
    /// replaces BatchNorm, as in the exported graph) and stop updating; otherwise training
    /// batches are normalised with their own statistics.
    Folded { frozen: bool },
}

/// No quantization: the float forward pass.
pub struct FloatForward;

impl QuantHooks for FloatForward {
    fn weight<const D: usize>(&self, weight: Tensor<D>, _: Option<usize>) -> Tensor<D> {
        weight
    }

    fn activation<const D: usize>(&self, _: &str, x: Tensor<D>) -> Tensor<D> {
        x
    }

    fn batch_norm(&self) -> BatchNormMode {
        BatchNormMode::Separate
    }

    fn is_identity(&self) -> bool {
        true
    }
}
