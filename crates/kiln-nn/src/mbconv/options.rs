//! The `[model]` keys every member of the family shares, and what a member provides.

use std::fmt::Debug;
use std::marker::PhantomData;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::{FamilySpec, MbConvNet, ScalingRule, WeightStyle};
use crate::LowerError;
use crate::architecture::Architecture;
use crate::head::HeadOptions;

/// One architecture of the family: its block table and names.
pub trait FamilyMember: Clone + Debug + Default + PartialEq + Send + Sync + 'static {
    /// The name in model descriptions (`"EfficientNet-Lite0"`).
    const TITLE: &'static str;
    /// The style of the weights people publish for it, when the config does not say.
    const DEFAULT_STYLE: WeightStyle;
    const SCALING: ScalingRule;
    /// The block table at width and depth 1.
    fn spec() -> FamilySpec;
}

/// `[model]` keys of a family member:
///
/// ```toml
/// architecture = "efficientnet_lite0"
/// pretrained = "timm/tf_efficientnet_lite0.in1k"   # Hub model repo[@revision], or a file
/// weight_style = "tensorflow"                      # or "pytorch"; see WeightStyle
/// head = { dense = [512, 64], batch_norm = true, dropout = 0.2, pooling = "max" }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, bound = "")]
pub struct FamilyOptions<M: FamilyMember> {
    /// Pretrained backbone weights: a Hugging Face Hub model repo id (`owner/name`, optionally
    /// `@revision`) holding `model.safetensors`, or a local `.safetensors`, `.pth` or `.bin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<String>,
    /// Channel multiplier (timm's `channel_multiplier`; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width_multiplier: Option<f64>,
    /// Repeat multiplier (timm's `depth_multiplier`; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth_multiplier: Option<f64>,
    /// Padding and BatchNorm ε of the weights (default: the member's usual source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_style: Option<WeightStyle>,
    /// The classifier head (default: average pooling, dropout 0.2, the classifier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<HeadOptions>,
    #[serde(skip)]
    member: PhantomData<M>,
}

impl<M: FamilyMember> FamilyOptions<M> {
    fn effective_style(&self) -> WeightStyle {
        self.weight_style.unwrap_or(M::DEFAULT_STYLE)
    }
}

impl<M: FamilyMember> Architecture for FamilyOptions<M> {
    type Model = MbConvNet;
    const TITLE: &'static str = M::TITLE;

    fn build(
        &self,
        input: [usize; 3],
        classes: usize,
        device: &Device,
    ) -> Result<MbConvNet, LowerError> {
        let head = self.head.clone().unwrap_or_default();
        let (width, depth) = (
            self.width_multiplier.unwrap_or(1.0),
            self.depth_multiplier.unwrap_or(1.0),
        );
        for (key, value) in [("width_multiplier", width), ("depth_multiplier", depth)] {
            if !(value.is_finite() && value > 0.0 && value <= 8.0) {
                return Err(LowerError::Unsupported {
                    layer: "model config".into(),
                    reason: format!("{key} = {value}: give a number in (0, 8]"),
                });
            }
        }
        M::spec().scaled(width, depth, M::SCALING).init(
            self.effective_style(),
            &head,
            input,
            classes,
            device,
        )
    }

    fn pretrained(&self) -> Option<&str> {
        self.pretrained.as_deref()
    }

    fn weight_style(&self) -> Option<WeightStyle> {
        Some(self.effective_style())
    }
}
