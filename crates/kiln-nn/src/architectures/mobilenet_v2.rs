//! MobileNetV2 (width 1.0) in timm's layout (`mobilenetv2_100`).
//!
//! M. Sandler, A. Howard, M. Zhu, A. Zhmoginov, L.-C. Chen, "MobileNetV2: Inverted Residuals
//! and Linear Bottlenecks", CVPR 2018 (Table 2): inverted residual blocks (1×1 expansion by 6,
//! depthwise 3×3, linear 1×1 projection), ReLU6, stem 32, last 1×1 convolution 1280.
//!
//! Weights: `timm/mobilenetv2_100.ra_in1k` (the default `weight_style = "pytorch"`, ImageNet
//! mean/std).

use crate::mbconv::{
    BlockActivation, FamilyMember, FamilyOptions, FamilySpec, ScalingRule, Stage, WeightStyle,
};

/// The `[model]` keys of `architecture = "mobilenet_v2"`.
pub type MobileNetV2Options = FamilyOptions<MobileNetV2>;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct MobileNetV2;

impl FamilyMember for MobileNetV2 {
    const TITLE: &'static str = "MobileNetV2";
    const DEFAULT_STYLE: WeightStyle = WeightStyle::Pytorch;

    const SCALING: ScalingRule = ScalingRule::MobileNetV2;

    fn spec() -> FamilySpec {
        FamilySpec {
            stages: vec![
                Stage::ds(1, 3, 1, 16),
                Stage::ir(2, 3, 2, 6, 24),
                Stage::ir(3, 3, 2, 6, 32),
                Stage::ir(4, 3, 2, 6, 64),
                Stage::ir(3, 3, 1, 6, 96),
                Stage::ir(3, 3, 2, 6, 160),
                Stage::ir(1, 3, 1, 6, 320),
            ],
            stem_channels: 32,
            features: 1280,
            activation: BlockActivation::Relu6,
        }
    }
}
