//! EfficientNet-B0 in timm's layout (`efficientnet_b0`, `tf_efficientnet_b0`).
//!
//! M. Tan, Q. V. Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
//! Networks", ICML 2019: the baseline found by neural architecture search (Table 1) —
//! MBConv blocks with squeeze-excitation (ratio 0.25 of each block's input channels) and
//! swish (`x · sigmoid(x)`, LOGISTIC + MUL in TFLite).
//!
//! Weights: `timm/efficientnet_b0.ra_in1k` (the default `weight_style = "pytorch"`, ImageNet
//! mean/std) or `timm/tf_efficientnet_b0.in1k` (`weight_style = "tensorflow"`).

use crate::mbconv::{
    BlockActivation, FamilyMember, FamilyOptions, FamilySpec, ScalingRule, Stage, WeightStyle,
};

/// The `[model]` keys of `architecture = "efficientnet_b0"`.
pub type EfficientNetB0Options = FamilyOptions<EfficientNetB0>;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct EfficientNetB0;

impl FamilyMember for EfficientNetB0 {
    const TITLE: &'static str = "EfficientNet-B0";
    const DEFAULT_STYLE: WeightStyle = WeightStyle::Pytorch;

    const SCALING: ScalingRule = ScalingRule::EfficientNet;

    fn spec() -> FamilySpec {
        FamilySpec {
            stages: vec![
                Stage::ds(1, 3, 1, 16).se(0.25),
                Stage::ir(2, 3, 2, 6, 24).se(0.25),
                Stage::ir(2, 5, 2, 6, 40).se(0.25),
                Stage::ir(3, 3, 2, 6, 80).se(0.25),
                Stage::ir(3, 5, 1, 6, 112).se(0.25),
                Stage::ir(4, 5, 2, 6, 192).se(0.25),
                Stage::ir(1, 3, 1, 6, 320).se(0.25),
            ],
            stem_channels: 32,
            features: 1280,
            activation: BlockActivation::Swish,
        }
    }
}
