//! The family's two blocks, with timm's parameter names (`_efficientnet_blocks.py`), so a
//! timm `state_dict` maps onto them one to one:
//! - depthwise-separable (MobileNetV1's unit, the first stage of MobileNetV2 and EfficientNet):
//!   `conv_dw` → `bn1` + act → [`se`] → `conv_pw` → `bn2` (linear);
//! - inverted residual (MobileNetV2's MBConv): `conv_pw` (expand) → `bn1` + act → `conv_dw` →
//!   `bn2` + act → [`se`] → `conv_pwl` (project) → `bn3` (linear).
//!
//! Either adds its input back when stride is 1 and the channels match.

use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use kiln_tflite::Activation;

use super::conv_bn_act::{ConvShape, batch_norm, conv_bn_act, lower_conv_bn_act};
use super::squeeze_excite::SqueezeExcite;
use super::{BlockActivation, BlockPlan, BlockType, FamilyStyle};
use crate::QuantHooks;
use crate::lowering::{GraphBuilder, LowerError, TensorId};

/// One block of the family.
// Both variants are large (Burn layers); boxing would cost the Module derive its support.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum MbBlock {
    DepthwiseSeparable(DepthwiseSeparable),
    InvertedResidual(InvertedResidual),
}

impl MbBlock {
    pub(crate) fn new(plan: &BlockPlan, style: &FamilyStyle, device: &Device) -> Self {
        let eps = style.bn_epsilon;
        let pad = style.padding;
        let se = |channels| {
            plan.squeezed
                .map(|s| SqueezeExcite::new(device, channels, s))
        };
        match plan.block {
            BlockType::DepthwiseSeparable => Self::DepthwiseSeparable(DepthwiseSeparable {
                conv_dw: ConvShape::depthwise(plan.input, plan.kernel, plan.stride)
                    .init(pad, device),
                bn1: batch_norm(plan.input, eps, device),
                se: se(plan.input),
                conv_pw: ConvShape::pointwise([plan.input, plan.output]).init(pad, device),
                bn2: batch_norm(plan.output, eps, device),
                residual: plan.residual(),
            }),
            BlockType::InvertedResidual => Self::InvertedResidual(InvertedResidual {
                conv_pw: ConvShape::pointwise([plan.input, plan.expanded]).init(pad, device),
                bn1: batch_norm(plan.expanded, eps, device),
                conv_dw: ConvShape::depthwise(plan.expanded, plan.kernel, plan.stride)
                    .init(pad, device),
                bn2: batch_norm(plan.expanded, eps, device),
                se: se(plan.expanded),
                conv_pwl: ConvShape::pointwise([plan.expanded, plan.output]).init(pad, device),
                bn3: batch_norm(plan.output, eps, device),
                residual: plan.residual(),
            }),
        }
    }

    /// The block, its activations named `name.conv_dw` and so on (timm's module paths).
    pub(crate) fn forward_with<H: QuantHooks>(
        &self,
        x: Tensor<4>,
        hooks: &H,
        name: &str,
        act: BlockActivation,
    ) -> Tensor<4> {
        let at = |part: &str| format!("{name}.{part}");
        let (y, residual) = match self {
            Self::DepthwiseSeparable(b) => {
                let mut y = conv_bn_act(
                    (&b.conv_dw, &b.bn1),
                    x.clone(),
                    hooks,
                    &at("conv_dw"),
                    Some(act),
                );
                if let Some(se) = &b.se {
                    y = se.forward_with(y, hooks, &at("se"), act);
                }
                let y = conv_bn_act((&b.conv_pw, &b.bn2), y, hooks, &at("conv_pw"), None);
                (y, b.residual)
            }
            Self::InvertedResidual(b) => {
                let y = conv_bn_act(
                    (&b.conv_pw, &b.bn1),
                    x.clone(),
                    hooks,
                    &at("conv_pw"),
                    Some(act),
                );
                let mut y = conv_bn_act((&b.conv_dw, &b.bn2), y, hooks, &at("conv_dw"), Some(act));
                if let Some(se) = &b.se {
                    y = se.forward_with(y, hooks, &at("se"), act);
                }
                let y = conv_bn_act((&b.conv_pwl, &b.bn3), y, hooks, &at("conv_pwl"), None);
                (y, b.residual)
            }
        };
        if residual {
            hooks.activation(&at("add"), y.add(x))
        } else {
            y
        }
    }

    pub(crate) fn lower(
        &self,
        graph: &mut GraphBuilder,
        name: &str,
        x: TensorId,
        act: BlockActivation,
    ) -> Result<TensorId, LowerError> {
        let at = |part: &str| format!("{name}.{part}");
        let (y, residual) = match self {
            Self::DepthwiseSeparable(b) => {
                let mut y =
                    lower_conv_bn_act(graph, &at("conv_dw"), (&b.conv_dw, &b.bn1), x, Some(act))?;
                if let Some(se) = &b.se {
                    y = se.lower(graph, &at("se"), y, act)?;
                }
                let y = lower_conv_bn_act(graph, &at("conv_pw"), (&b.conv_pw, &b.bn2), y, None)?;
                (y, b.residual)
            }
            Self::InvertedResidual(b) => {
                let y =
                    lower_conv_bn_act(graph, &at("conv_pw"), (&b.conv_pw, &b.bn1), x, Some(act))?;
                let mut y =
                    lower_conv_bn_act(graph, &at("conv_dw"), (&b.conv_dw, &b.bn2), y, Some(act))?;
                if let Some(se) = &b.se {
                    y = se.lower(graph, &at("se"), y, act)?;
                }
                let y = lower_conv_bn_act(graph, &at("conv_pwl"), (&b.conv_pwl, &b.bn3), y, None)?;
                (y, b.residual)
            }
        };
        Ok(if residual {
            graph.add(&at("add"), y, x, Activation::None)
        } else {
            y
        })
    }

    /// The block's BatchNorms, for tests that move their statistics.
    #[cfg(test)]
    pub(crate) fn batch_norms(&mut self) -> Vec<&mut BatchNorm> {
        match self {
            Self::DepthwiseSeparable(b) => vec![&mut b.bn1, &mut b.bn2],
            Self::InvertedResidual(b) => vec![&mut b.bn1, &mut b.bn2, &mut b.bn3],
        }
    }
}

/// Depthwise k×k → pointwise 1×1 (timm's `DepthwiseSeparableConv`).
#[derive(Module, Debug)]
pub struct DepthwiseSeparable {
    conv_dw: Conv2d,
    bn1: BatchNorm,
    se: Option<SqueezeExcite>,
    conv_pw: Conv2d,
    bn2: BatchNorm,
    #[module(skip)]
    residual: bool,
}

/// Expand 1×1 → depthwise k×k → project 1×1 (timm's `InvertedResidual`).
#[derive(Module, Debug)]
pub struct InvertedResidual {
    conv_pw: Conv2d,
    bn1: BatchNorm,
    conv_dw: Conv2d,
    bn2: BatchNorm,
    se: Option<SqueezeExcite>,
    conv_pwl: Conv2d,
    bn3: BatchNorm,
    #[module(skip)]
    residual: bool,
}
