//! Squeeze-and-excitation: J. Hu, L. Shen, G. Sun, "Squeeze-and-Excitation Networks", CVPR
//! 2018, as EfficientNet and MobileNetV3 use it (1×1 convolutions with bias on the pooled
//! features; timm's `conv_reduce` / `conv_expand` names).

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::prelude::*;
use burn::tensor::activation::sigmoid;
use kiln_tflite::Activation;

use super::{BlockActivation, hooked_activation};
use crate::QuantHooks;
use crate::hooked_layers::conv2d_hooked;
use crate::lowering::{GraphBuilder, LowerError, TensorId, lower_conv_bn};

/// Squeeze-excitation (Hu et al., 2018, as EfficientNet uses it): global average → 1×1 reduce
/// (+ activation) → 1×1 expand → sigmoid → channel-wise gate on the block's features.
#[derive(Module, Debug)]
pub struct SqueezeExcite {
    pub(crate) conv_reduce: Conv2d,
    pub(crate) conv_expand: Conv2d,
}

impl SqueezeExcite {
    pub(crate) fn new(device: &Device, channels: usize, squeezed: usize) -> Self {
        Self {
            conv_reduce: Conv2dConfig::new([channels, squeezed], [1, 1]).init(device),
            conv_expand: Conv2dConfig::new([squeezed, channels], [1, 1]).init(device),
        }
    }

    pub(crate) fn forward_with<H: QuantHooks>(
        &self,
        x: Tensor<4>,
        hooks: &H,
        name: &str,
        activation: BlockActivation,
    ) -> Tensor<4> {
        let pooled = hooks.activation(&format!("{name}/mean"), x.clone().mean_dim(3).mean_dim(2));
        let reduce_name = format!("{name}/reduce");
        let reduce = conv2d_hooked(&self.conv_reduce, &reduce_name, pooled, hooks);
        let gate = hooked_activation(reduce, hooks, &reduce_name, Some(activation));
        let expand_name = format!("{name}/expand");
        let gate = conv2d_hooked(&self.conv_expand, &expand_name, gate, hooks);
        let gate = hooks.activation(&expand_name, gate);
        // LOGISTIC's int8 output has fixed parameters (1/256, −128): no observer.
        hooks.activation(name, x.mul(sigmoid(gate)))
    }

    pub(crate) fn lower(
        &self,
        graph: &mut GraphBuilder,
        name: &str,
        x: TensorId,
        activation: BlockActivation,
    ) -> Result<TensorId, LowerError> {
        let pooled = graph.mean(&format!("{name}/mean"), x, &[1, 2], true);
        let reduce = format!("{name}/reduce");
        let gate = lower_conv_bn(
            graph,
            &reduce,
            &self.conv_reduce,
            None,
            pooled,
            activation.fused(),
        )?;
        let gate = activation.lower_unfused(graph, &reduce, gate);
        let expand = format!("{name}/expand");
        let gate = lower_conv_bn(
            graph,
            &expand,
            &self.conv_expand,
            None,
            gate,
            Activation::None,
        )?;
        let gate = graph.logistic(&format!("{name}/sigmoid"), gate);
        Ok(graph.mul(name, x, gate, Activation::None))
    }
}
