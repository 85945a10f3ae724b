//! EfficientNet-Lite0 in timm's layout (`tf_efficientnet_lite0`, `efficientnet_lite0`).
//!
//! - M. Tan, Q. V. Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
//!   Networks", ICML 2019: B0's stage table (Table 1).
//! - EfficientNet-Lite (tensorflow/tpu `models/official/efficientnet/lite`, 2020): no
//!   squeeze-excitation, ReLU6 instead of swish, stem (32) and head (1280) fixed — the
//!   quantization-friendly variant TFLite's model zoo ships.
//!
//! Weights: `timm/tf_efficientnet_lite0.in1k` (ported from TensorFlow; the default
//! `weight_style = "tensorflow"`, inputs normalised with mean = std = 0.5) or
//! `timm/efficientnet_lite0.ra_in1k` (`weight_style = "pytorch"`, ImageNet mean/std).

use crate::mbconv::{
    BlockActivation, FamilyMember, FamilyOptions, FamilySpec, ScalingRule, Stage, WeightStyle,
};

/// The `[model]` keys of `architecture = "efficientnet_lite0"`.
pub type EfficientNetLite0Options = FamilyOptions<EfficientNetLite0>;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct EfficientNetLite0;

impl FamilyMember for EfficientNetLite0 {
    const TITLE: &'static str = "EfficientNet-Lite0";
    const DEFAULT_STYLE: WeightStyle = WeightStyle::Tensorflow;

    const SCALING: ScalingRule = ScalingRule::Lite;

    fn spec() -> FamilySpec {
        FamilySpec {
            stages: vec![
                Stage::ds(1, 3, 1, 16),
                Stage::ir(2, 3, 2, 6, 24),
                Stage::ir(2, 5, 2, 6, 40),
                Stage::ir(3, 3, 2, 6, 80),
                Stage::ir(3, 5, 1, 6, 112),
                Stage::ir(4, 5, 2, 6, 192),
                Stage::ir(1, 3, 1, 6, 320),
            ],
            stem_channels: 32,
            features: 1280,
            activation: BlockActivation::Relu6,
        }
    }
}
