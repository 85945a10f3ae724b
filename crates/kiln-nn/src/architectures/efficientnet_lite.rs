//! EfficientNet-lite: a quantization-friendly EfficientNet for on-device classification.
//!
//! - M. Tan, Q. V. Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
//!   Networks", ICML 2019: the B0 stage table, compound width/depth scaling (`round_filters`
//!   to multiples of 8, `round_repeats` with ceil), squeeze-excitation, swish.
//! - M. Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018:
//!   the MBConv block — 1×1 expansion, depthwise k×k, 1×1 linear projection (no activation),
//!   residual between the narrow ends when shapes allow.
//! - EfficientNet-lite (TensorFlow blog "Higher accuracy on vision models with
//!   EfficientNet-Lite" and tensorflow/tpu `efficientnet/lite`, 2020): no squeeze-excitation
//!   (poorly supported by some mobile accelerators), ReLU6 instead of swish (its bounded range
//!   survives post-training quantization far better; int8 RELU6 is a clamp), and the stem and
//!   head kept fixed while scaling, to keep the scaled models small and fast (the reference
//!   code also keeps the first and last stages' repeats).
//!
//! Layers: stem conv 3×3 stride 2 + BN + act → MBConv blocks → head conv 1×1 + BN + act →
//! global average pool → dropout → linear. Convolutions use Burn's `Same` padding, which splits
//! padding exactly as TensorFlow's SAME (the odd pixel at the bottom/right), so every layer
//! lowers without PAD ops and feature maps shrink as `ceil(side / stride)`:
//! 28 → 14 → 7 → 4 → 2 → 1 for digits. BatchNorm uses TensorFlow EfficientNet's ε = 1e-3 (it
//! bounds the folded per-channel scales `γ / √(σ² + ε)`, which int8 weights appreciate) with
//! Burn's default momentum 0.1 (running statistics follow the weights within tens of steps,
//! which suits short runs; TensorFlow's 0.01 would lag behind them).
//! Not implemented: stochastic depth (drop-connect), which matters only for long ImageNet runs.
//!
//! The model lowers to a float32 TFLite graph with every BatchNorm folded into its conv,
//! ReLU6 fused into the conv, hard-swish as HARD_SWISH, swish as LOGISTIC + MUL,
//! squeeze-excitation as MEAN + 1×1 CONV_2D ×2 + LOGISTIC + MUL, residuals as ADD, and the
//! global pool as MEAN before FULLY_CONNECTED.

use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Dropout, DropoutConfig, Linear, LinearConfig};
use burn::prelude::*;
use kiln_tflite::{Activation, Model};

use crate::architecture::Architecture;
use crate::hooked_layers::linear_hooked;
use crate::lowering::{GraphBuilder, LowerError, TensorId, lower_linear};
use crate::mbconv::{
    BlockActivation, ConvPadding, ConvShape, SqueezeExcite, batch_norm, conv_bn_act,
    lower_conv_bn_act, make_divisible,
};
use crate::{Classifier, FloatForward, QuantHooks, QuantizableClassifier};

/// TensorFlow EfficientNet's BatchNorm epsilon.
const BN_EPSILON: f64 = 1e-3;
/// Stride of the stem convolution.
const STEM_STRIDE: usize = 2;

/// One stage of identical MBConv blocks, at width and depth multiplier 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StageSpec {
    /// Blocks in the stage (scaled by the depth multiplier, rounded up).
    pub repeats: usize,
    /// Depthwise kernel size: odd (3 and 5 in EfficientNet).
    pub kernel: usize,
    /// Stride of the stage's first block, 1 or 2; the others use 1.
    pub stride: usize,
    /// Expansion ratio of the inverted bottleneck; 1 skips the expansion convolution.
    pub expansion: usize,
    /// Output channels (scaled by the width multiplier, rounded to multiples of 8).
    pub channels: usize,
}

impl StageSpec {
    pub const fn new(
        repeats: usize,
        kernel: usize,
        stride: usize,
        expansion: usize,
        channels: usize,
    ) -> Self {
        Self {
            repeats,
            kernel,
            stride,
            expansion,
            channels,
        }
    }

    /// EfficientNet-B0's (and lite0's) seven stages, Tan & Le 2019, Table 1.
    pub fn lite0() -> Vec<Self> {
        vec![
            Self::new(1, 3, 1, 1, 16),
            Self::new(2, 3, 2, 6, 24),
            Self::new(2, 5, 2, 6, 40),
            Self::new(3, 3, 2, 6, 80),
            Self::new(3, 5, 1, 6, 112),
            Self::new(4, 5, 2, 6, 192),
            Self::new(1, 3, 1, 6, 320),
        ]
    }
}

/// The `[model]` keys of `architecture = "efficientnet_lite"`; omitted keys keep
/// [`EfficientNetLiteConfig::new`]'s values.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EfficientNetLiteOptions {
    /// Channel multiplier of the stages (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width_multiplier: Option<f64>,
    /// Repeat multiplier of the stages (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth_multiplier: Option<f64>,
    /// "relu6" (default, quantization-friendly), "swish" or "hard_swish".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<BlockActivation>,
    /// Squeeze-excitation ratio (omitted = none, as lite; 0.25 = the original EfficientNet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub se_ratio: Option<f64>,
    /// Dropout before the classifier (default 0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
}

impl Architecture for EfficientNetLiteOptions {
    type Model = EfficientNetLite;
    const TITLE: &'static str = "EfficientNet-lite";

    fn build(
        &self,
        input: [usize; 3],
        classes: usize,
        device: &Device,
    ) -> Result<EfficientNetLite, LowerError> {
        let mut config = EfficientNetLiteConfig::new(input, classes);
        config.width_multiplier = self.width_multiplier.unwrap_or(config.width_multiplier);
        config.depth_multiplier = self.depth_multiplier.unwrap_or(config.depth_multiplier);
        config.se_ratio = self.se_ratio.or(config.se_ratio);
        config.dropout = self.dropout.unwrap_or(config.dropout);
        config.activation = self.activation.unwrap_or(config.activation);
        config.init(device)
    }
}

/// Shape, scaling and variant of an EfficientNet-lite.
#[derive(Clone, Debug, PartialEq)]
pub struct EfficientNetLiteConfig {
    /// Input [height, width, channels].
    pub input: [usize; 3],
    pub num_classes: usize,
    /// Scales every stage's channels (not the stem's or the head's).
    pub width_multiplier: f64,
    /// Scales every stage's repeats except the first and last stage's.
    pub depth_multiplier: f64,
    pub activation: BlockActivation,
    /// Squeeze-excitation bottleneck as a fraction of each block's input channels: `None` for
    /// lite, `Some(0.25)` for the original EfficientNet.
    pub se_ratio: Option<f64>,
    /// Dropout before the classifier (training only).
    pub dropout: f64,
    /// Stem convolution channels; fixed, as lite fixes them (32).
    pub stem_channels: usize,
    /// Head 1×1 convolution channels; fixed, as lite fixes them.
    pub head_channels: usize,
    pub stages: Vec<StageSpec>,
}

impl EfficientNetLiteConfig {
    /// Lite0's stage table at half width and half depth, stem 32, head 640, ReLU6, no SE,
    /// dropout 0.2: 0.57 M parameters for 10 classes; 1.4 M multiply-accumulates at 28×28×1,
    /// 15 M at 96×96×3 (lite0 itself, with 10 classes: 3.4 M parameters, 7.3 M MACs at 28×28).
    ///
    /// Why this size: the same network has to train on the bundled 28×28 digits on two CPU
    /// cores in seconds per epoch and still be a sensible model for 64–224 px photos.
    /// - Width 0.5 halves lite0's channels, rounded to multiples of 8 (8, 16, 24, 40, 56, 96,
    ///   160): MobileNet-0.5-class capacity, plenty for digits and small photo datasets.
    /// - Depth 0.5 (ceil; first and last stage fixed, as lite does) keeps 10 of 16 blocks:
    ///   every stage and kernel size survives, and a CPU training step costs about 40 % less.
    ///   At 28×28 the later stages run on 2×2 and 1×1 maps, where extra depth buys little.
    /// - Head 640 keeps lite0's ratio of head to last stage (1280 = 4 × 320) rather than its
    ///   absolute width: a 1280-wide head over 160 channels would hold a third of the
    ///   parameters while seeing a single pixel at 28×28.
    pub fn new(input: [usize; 3], num_classes: usize) -> Self {
        Self {
            input,
            num_classes,
            width_multiplier: 0.5,
            depth_multiplier: 0.5,
            activation: BlockActivation::Relu6,
            se_ratio: None,
            dropout: 0.2,
            stem_channels: 32,
            head_channels: 640,
            stages: StageSpec::lite0(),
        }
    }

    pub fn init(&self, device: &Device) -> Result<EfficientNetLite, LowerError> {
        let plan = self.plan()?;
        let [_, _, channels] = self.input;
        let stem = ConvBn::new(device, [channels, self.stem_channels], 3, STEM_STRIDE, 1);
        let blocks = plan.iter().map(|b| MbConv::new(device, b)).collect();
        let last = plan.last().map_or(self.stem_channels, |b| b.output);
        let head = ConvBn::new(device, [last, self.head_channels], 1, 1, 1);
        Ok(EfficientNetLite {
            stem,
            blocks,
            head,
            dropout: DropoutConfig::new(self.dropout).init(),
            classifier: LinearConfig::new(self.head_channels, self.num_classes).init(device),
            input: self.input,
            activation: self.activation,
        })
    }

    /// Multiply-accumulates of one inference at the configured input size (convolutions,
    /// squeeze-excitation and the classifier; element-wise ops and pooling are not counted).
    pub fn macs(&self) -> Result<u64, LowerError> {
        let plan = self.plan()?;
        let [h, w, c] = self.input;
        let (mut h, mut w) = (h.div_ceil(STEM_STRIDE), w.div_ceil(STEM_STRIDE));
        let mut total = (h * w * 9 * c * self.stem_channels) as u64;
        for b in &plan {
            if b.expanded != b.input {
                total += (h * w * b.input * b.expanded) as u64;
            }
            (h, w) = (h.div_ceil(b.stride), w.div_ceil(b.stride));
            total += (h * w * b.kernel * b.kernel * b.expanded) as u64;
            if let Some(squeezed) = b.squeezed {
                total += (2 * b.expanded * squeezed) as u64;
            }
            total += (h * w * b.expanded * b.output) as u64;
        }
        let last = plan.last().map_or(self.stem_channels, |b| b.output);
        total += (h * w * last * self.head_channels) as u64;
        total += (self.head_channels * self.num_classes) as u64;
        Ok(total)
    }

    fn invalid(reason: String) -> LowerError {
        LowerError::Unsupported {
            layer: "efficientnet_lite config".into(),
            reason,
        }
    }

    fn validate(&self) -> Result<(), LowerError> {
        let [h, w, c] = self.input;
        let checks: [(bool, String); 8] = [
            (
                self.num_classes == 0,
                "num_classes is 0; a classifier needs at least one class".into(),
            ),
            (
                h == 0 || w == 0 || c == 0,
                format!("input {:?} has a zero dimension", self.input),
            ),
            (
                !(self.width_multiplier.is_finite() && self.width_multiplier > 0.0),
                format!("width_multiplier {} must be > 0", self.width_multiplier),
            ),
            (
                !(self.depth_multiplier.is_finite() && self.depth_multiplier > 0.0),
                format!("depth_multiplier {} must be > 0", self.depth_multiplier),
            ),
            (
                !(self.dropout.is_finite() && (0.0..1.0).contains(&self.dropout)),
                format!("dropout {} must be in [0, 1)", self.dropout),
            ),
            (
                self.se_ratio
                    .is_some_and(|r| !(r.is_finite() && r > 0.0 && r <= 1.0)),
                format!("se_ratio {:?} must be in (0, 1] (or None)", self.se_ratio),
            ),
            (
                self.stem_channels == 0 || self.head_channels == 0,
                "stem_channels and head_channels must be at least 1".into(),
            ),
            (
                self.stages.is_empty(),
                "stages is empty; give at least one StageSpec".into(),
            ),
        ];
        if let Some((_, reason)) = checks.into_iter().find(|(failed, _)| *failed) {
            return Err(Self::invalid(reason));
        }
        for (i, s) in self.stages.iter().enumerate() {
            let bad = s.repeats == 0
                || s.kernel % 2 == 0
                || !(1..=2).contains(&s.stride)
                || s.expansion == 0
                || s.channels == 0;
            if bad {
                return Err(Self::invalid(format!(
                    "stage {i} {s:?}: needs repeats, expansion and channels >= 1, an odd kernel \
                     and stride 1 or 2"
                )));
            }
        }
        Ok(())
    }

    /// Every block's channels, kernel and stride after scaling; validates the config.
    fn plan(&self) -> Result<Vec<BlockPlan>, LowerError> {
        self.validate()?;
        let last_stage = self.stages.len() - 1;
        let mut blocks = Vec::new();
        let mut input = self.stem_channels;
        for (i, stage) in self.stages.iter().enumerate() {
            let output = round_filters(stage.channels, self.width_multiplier);
            let repeats = if i == 0 || i == last_stage {
                stage.repeats
            } else {
                round_repeats(stage.repeats, self.depth_multiplier)
            };
            for r in 0..repeats {
                blocks.push(BlockPlan {
                    input,
                    expanded: input * stage.expansion,
                    output,
                    kernel: stage.kernel,
                    stride: if r == 0 { stage.stride } else { 1 },
                    // EfficientNet sizes the SE bottleneck from the block's input channels.
                    squeezed: self
                        .se_ratio
                        .map(|ratio| ((input as f64 * ratio) as usize).max(1)),
                });
                input = output;
            }
        }
        self.check_input_size(&blocks)?;
        Ok(blocks)
    }

    /// Every stride-2 layer must see at least 2 pixels per side, or it downsamples nothing and
    /// the stages after it work on a single pixel they could have had more of.
    fn check_input_size(&self, blocks: &[BlockPlan]) -> Result<(), LowerError> {
        let downsamplings = 1 + blocks.iter().filter(|b| b.stride == 2).count();
        let min_side = 1usize
            .checked_shl((downsamplings - 1) as u32)
            .map_or(usize::MAX, |s| s + 1);
        let [h, w, _] = self.input;
        if h.min(w) < min_side {
            return Err(Self::invalid(format!(
                "input {h}×{w} is too small: its {downsamplings} stride-2 layers need at least \
                 {min_side}×{min_side} pixels (each must see 2 or more pixels per side); use a \
                 larger input or give fewer stages stride 2"
            )));
        }
        Ok(())
    }
}

/// EfficientNet's `round_filters`: scale, then timm's / TF's `make_divisible`.
fn round_filters(channels: usize, width: f64) -> usize {
    make_divisible(channels as f64 * width)
}

/// EfficientNet's `round_repeats`: scale and round up.
fn round_repeats(repeats: usize, depth: f64) -> usize {
    (repeats as f64 * depth).ceil() as usize
}

/// One MBConv block after scaling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BlockPlan {
    input: usize,
    expanded: usize,
    output: usize,
    kernel: usize,
    stride: usize,
    squeezed: Option<usize>,
}

/// A bias-free convolution followed by BatchNorm (the bias would be cancelled by BN's mean).
#[derive(Module, Debug)]
pub struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm,
}

impl ConvBn {
    fn new(
        device: &Device,
        channels: [usize; 2],
        kernel: usize,
        stride: usize,
        groups: usize,
    ) -> Self {
        let shape = ConvShape {
            channels,
            kernel,
            stride,
            groups,
        };
        Self {
            conv: shape.init(ConvPadding::Same, device),
            bn: batch_norm(channels[1], BN_EPSILON, device),
        }
    }

    fn forward_with<H: QuantHooks>(
        &self,
        x: Tensor<4>,
        hooks: &H,
        name: &str,
        activation: Option<BlockActivation>,
    ) -> Tensor<4> {
        conv_bn_act((&self.conv, &self.bn), x, hooks, name, activation)
    }

    fn lower(
        &self,
        graph: &mut GraphBuilder,
        name: &str,
        x: TensorId,
        activation: Option<BlockActivation>,
    ) -> Result<TensorId, LowerError> {
        lower_conv_bn_act(graph, name, (&self.conv, &self.bn), x, activation)
    }
}

/// MobileNetV2's inverted residual block with EfficientNet's optional squeeze-excitation.
#[derive(Module, Debug)]
pub struct MbConv {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    se: Option<SqueezeExcite>,
    project: ConvBn,
    #[module(skip)]
    residual: bool,
}

impl MbConv {
    fn new(device: &Device, plan: &BlockPlan) -> Self {
        let e = plan.expanded;
        Self {
            expand: (e != plan.input).then(|| ConvBn::new(device, [plan.input, e], 1, 1, 1)),
            depthwise: ConvBn::new(device, [e, e], plan.kernel, plan.stride, e),
            se: plan.squeezed.map(|s| SqueezeExcite::new(device, e, s)),
            project: ConvBn::new(device, [e, plan.output], 1, 1, 1),
            residual: plan.stride == 1 && plan.input == plan.output,
        }
    }

    fn forward_with<H: QuantHooks>(
        &self,
        x: Tensor<4>,
        hooks: &H,
        name: &str,
        activation: BlockActivation,
    ) -> Tensor<4> {
        let mut y = match &self.expand {
            Some(expand) => expand.forward_with(
                x.clone(),
                hooks,
                &format!("{name}/expand"),
                Some(activation),
            ),
            None => x.clone(),
        };
        y = self
            .depthwise
            .forward_with(y, hooks, &format!("{name}/depthwise"), Some(activation));
        if let Some(se) = &self.se {
            y = se.forward_with(y, hooks, &format!("{name}/se"), activation);
        }
        y = self
            .project
            .forward_with(y, hooks, &format!("{name}/project"), None);
        if self.residual {
            hooks.activation(&format!("{name}/add"), y.add(x))
        } else {
            y
        }
    }

    fn lower(
        &self,
        graph: &mut GraphBuilder,
        name: &str,
        x: TensorId,
        activation: BlockActivation,
    ) -> Result<TensorId, LowerError> {
        let mut y = match &self.expand {
            Some(expand) => expand.lower(graph, &format!("{name}/expand"), x, Some(activation))?,
            None => x,
        };
        y = self
            .depthwise
            .lower(graph, &format!("{name}/depthwise"), y, Some(activation))?;
        if let Some(se) = &self.se {
            y = se.lower(graph, &format!("{name}/se"), y, activation)?;
        }
        y = self
            .project
            .lower(graph, &format!("{name}/project"), y, None)?;
        Ok(if self.residual {
            graph.add(&format!("{name}/add"), y, x, Activation::None)
        } else {
            y
        })
    }
}

/// An EfficientNet-lite classifier (see the module documentation); built by
/// [`EfficientNetLiteConfig::init`].
#[derive(Module, Debug)]
pub struct EfficientNetLite {
    stem: ConvBn,
    blocks: Vec<MbConv>,
    head: ConvBn,
    dropout: Dropout,
    classifier: Linear,
    #[module(skip)]
    input: [usize; 3],
    #[module(skip)]
    activation: BlockActivation,
}

impl Classifier for EfficientNetLite {
    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward_with(images, &FloatForward)
    }

    /// Input `image` [1, H, W, C], output `logits` [1, classes].
    fn lower(&self, description: &str) -> Result<Model, LowerError> {
        let [h, w, c] = self.input;
        let act = self.activation;
        let mut graph = GraphBuilder::new(description);
        let image = graph.activation("image", &[1, h, w, c]);
        let mut x = self.stem.lower(&mut graph, "stem", image, Some(act))?;
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.lower(&mut graph, &format!("block{i}"), x, act)?;
        }
        let x = self.head.lower(&mut graph, "head", x, Some(act))?;
        let pooled = graph.mean("pool", x, &[1, 2], false);
        let logits = lower_linear(
            &mut graph,
            "logits",
            &self.classifier,
            pooled,
            Activation::None,
            None,
        )?;
        Ok(graph.finish(&[("image", image)], &[("logits", logits)]))
    }
}

impl QuantizableClassifier for EfficientNetLite {
    fn forward_with<H: QuantHooks>(&self, images: Tensor<4>, hooks: &H) -> Tensor<2> {
        let act = Some(self.activation);
        let x = hooks.activation("image", images);
        let mut x = self.stem.forward_with(x, hooks, "stem", act);
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward_with(x, hooks, &format!("block{i}"), self.activation);
        }
        let x = self.head.forward_with(x, hooks, "head", act);
        let pooled: Tensor<2> = x.mean_dim(3).mean_dim(2).flatten(1, 3);
        let pooled = hooks.activation("pool", pooled);
        let logits = linear_hooked(
            &self.classifier,
            "logits",
            self.dropout.forward(pooled),
            hooks,
        );
        hooks.activation("logits", logits)
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;

    use super::*;
    use crate::test_support::{
        lowered_relative_error, move_running_statistics, randomize_batch_norms,
    };

    /// Output channels of a few lite0 stages at known widths (values from EfficientNet's
    /// `round_filters`).
    #[test]
    fn channel_and_depth_rounding_follow_efficientnet() {
        assert_eq!(round_filters(32, 1.0), 32);
        assert_eq!(round_filters(16, 0.5), 8);
        assert_eq!(round_filters(24, 0.5), 16);
        assert_eq!(round_filters(40, 0.5), 24);
        assert_eq!(round_filters(112, 0.5), 56);
        assert_eq!(round_filters(320, 1.1), 352);
        assert_eq!(round_filters(192, 0.35), 64);
        assert_eq!(round_repeats(3, 0.5), 2);
        assert_eq!(round_repeats(4, 1.1), 5);
    }

    fn plan_summary(config: &EfficientNetLiteConfig) -> Vec<(usize, usize, usize, usize)> {
        config
            .plan()
            .expect("valid config")
            .iter()
            .map(|b| (b.input, b.output, b.kernel, b.stride))
            .collect()
    }

    #[test]
    fn default_config_is_lite0_at_half_width_and_depth() {
        let config = EfficientNetLiteConfig::new([28, 28, 1], 10);
        let plan = plan_summary(&config);
        let outputs: Vec<usize> = plan.iter().map(|b| b.1).collect();
        // First and last stage keep their single block; the others halve, rounding up.
        assert_eq!(outputs, vec![8, 16, 24, 40, 40, 56, 56, 96, 96, 160]);
        assert_eq!(plan[0], (32, 8, 3, 1));
        let strides: Vec<usize> = plan.iter().map(|b| b.3).collect();
        assert_eq!(strides, vec![1, 2, 2, 2, 1, 1, 1, 2, 1, 1]);
    }

    #[test]
    fn default_config_fits_the_parameter_budget() {
        const BUDGET: usize = 700_000;
        let config = EfficientNetLiteConfig::new([28, 28, 1], 10);
        let mut model = config.init(&Device::flex()).expect("valid config");
        // Burn's `num_params` also counts BatchNorm's running mean and variance.
        let counted = model.num_params();
        let running: usize = batch_norms(&mut model)
            .iter()
            .map(|bn| 2 * bn.gamma.dims()[0])
            .sum();
        let trainable = counted - running;
        let macs = |input| {
            EfficientNetLiteConfig::new(input, 10)
                .macs()
                .expect("valid config")
        };
        let summary = format!(
            "default EfficientNet-lite: {trainable} trainable parameters (+{running} BatchNorm \
             statistics), {} MACs at 28×28×1, {} at 96×96×3, {} at 224×224×3",
            macs([28, 28, 1]),
            macs([96, 96, 3]),
            macs([224, 224, 3])
        );
        assert!(trainable < BUDGET, "{summary}: over the {BUDGET} budget");
        eprintln!("{summary}");
    }

    fn rejected(config: &EfficientNetLiteConfig) -> String {
        match config.init(&Device::flex()) {
            Ok(_) => panic!("{config:?} should be rejected"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn invalid_configs_are_errors_not_panics() {
        let base = EfficientNetLiteConfig::new([28, 28, 1], 10);
        let with = |edit: fn(&mut EfficientNetLiteConfig)| {
            let mut config = base.clone();
            edit(&mut config);
            rejected(&config)
        };
        assert!(with(|c| c.num_classes = 0).contains("num_classes is 0"));
        assert!(with(|c| c.width_multiplier = 0.0).contains("width_multiplier 0 must be > 0"));
        assert!(with(|c| c.depth_multiplier = -1.0).contains("depth_multiplier -1 must be > 0"));
        assert!(with(|c| c.width_multiplier = f64::NAN).contains("width_multiplier"));
        assert!(with(|c| c.dropout = 1.0).contains("dropout"));
        assert!(with(|c| c.se_ratio = Some(0.0)).contains("se_ratio"));
        assert!(with(|c| c.stages.clear()).contains("stages is empty"));
        assert!(with(|c| c.stages[1].kernel = 4).contains("odd kernel"));
        assert!(with(|c| c.input = [28, 28, 0]).contains("zero dimension"));
        let small = with(|c| c.input = [16, 16, 1]);
        assert!(
            small.contains("too small") && small.contains("17×17"),
            "{small}"
        );
        // The smallest accepted input builds and lowers.
        let mut config = base.clone();
        config.input = [17, 17, 1];
        let model = config.init(&Device::flex()).expect("17×17 is enough");
        model.lower("smallest").expect("lowers");
    }

    /// Every BatchNorm of the model, for tests that give them non-trivial statistics.
    fn batch_norms(model: &mut EfficientNetLite) -> Vec<&mut BatchNorm> {
        let mut all = vec![&mut model.stem.bn, &mut model.head.bn];
        for block in &mut model.blocks {
            if let Some(expand) = &mut block.expand {
                all.push(&mut expand.bn);
            }
            all.push(&mut block.depthwise.bn);
            all.push(&mut block.project.bn);
        }
        all
    }

    /// A model whose BatchNorms are far from identity: random γ and β, then running
    /// statistics moved by training-mode forward passes on the autodiff device.
    fn trained_statistics(config: &EfficientNetLiteConfig) -> EfficientNetLite {
        let device = Device::flex().autodiff();
        let mut model = config.init(&device).expect("valid config");
        randomize_batch_norms(batch_norms(&mut model), &device);
        move_running_statistics(&model, config.input, 3, &device);
        let model = model.valid();
        let mean = model.head.bn.running_mean.value().into_data();
        let mean = mean.as_slice::<f32>().expect("f32");
        assert!(
            mean.iter().any(|m| m.abs() > 1e-3),
            "training-mode passes should move the running mean"
        );
        model
    }

    /// Max |Burn − runtime| over the logits, relative to the largest logit's magnitude.
    fn parity(config: &EfficientNetLiteConfig) -> f32 {
        lowered_relative_error(&trained_statistics(config), config.input)
    }

    fn check_parity(activation: BlockActivation, se_ratio: Option<f64>) {
        for input in [[28, 28, 1], [64, 64, 3], [30, 30, 3]] {
            let mut config = EfficientNetLiteConfig::new(input, 10);
            config.activation = activation;
            config.se_ratio = se_ratio;
            let error = parity(&config);
            eprintln!("{activation:?} se {se_ratio:?} {input:?}: relative max error {error:.2e}");
            assert!(
                error <= 1e-4,
                "{activation:?}, SE {se_ratio:?}, input {input:?}: Burn and kiln-runtime differ \
                 by {error:e} of the logit scale"
            );
        }
    }

    #[test]
    fn relu6_lite_matches_the_runtime() {
        check_parity(BlockActivation::Relu6, None);
    }

    #[test]
    fn relu6_with_se_matches_the_runtime() {
        check_parity(BlockActivation::Relu6, Some(0.25));
    }

    #[test]
    fn swish_matches_the_runtime() {
        check_parity(BlockActivation::Swish, None);
    }

    #[test]
    fn swish_with_se_matches_the_runtime() {
        check_parity(BlockActivation::Swish, Some(0.25));
    }

    #[test]
    fn hard_swish_matches_the_runtime() {
        check_parity(BlockActivation::HardSwish, None);
    }

    #[test]
    fn hard_swish_with_se_matches_the_runtime() {
        check_parity(BlockActivation::HardSwish, Some(0.25));
    }

    /// Feature maps shrink as ceil(side / 2) in both Burn and the lowered graph.
    #[test]
    fn lowered_feature_maps_follow_same_padding() {
        for (side, head_side) in [(28, 1), (30, 1), (64, 2), (96, 3)] {
            let config = EfficientNetLiteConfig::new([side, side, 3], 4);
            let model = config.init(&Device::flex()).expect("valid config");
            let lowered = model.lower("shapes").expect("lowers");
            let head = lowered.subgraphs[0]
                .tensors
                .iter()
                .find(|t| t.name == "head")
                .expect("a head tensor");
            assert_eq!(
                head.shape,
                vec![1, head_side, head_side, 640],
                "input {side}"
            );
            let x = Tensor::<4>::zeros([1, 3, side, side], &Device::flex());
            let stem = model
                .stem
                .forward_with(x, &crate::FloatForward, "stem", None);
            assert_eq!(stem.dims()[2], side.div_ceil(2));
        }
    }

    /// One backward pass reaches the depthwise filters (grouped, asymmetrically padded
    /// convolutions train in Burn).
    #[test]
    fn gradients_reach_every_layer_kind() {
        let device = Device::flex().autodiff();
        let mut config = EfficientNetLiteConfig::new([28, 28, 1], 10);
        config.se_ratio = Some(0.25);
        let model = config.init(&device).expect("valid config");
        let x = Tensor::<4>::random([2, 1, 28, 28], Distribution::Normal(0.0, 1.0), &device);
        let loss = model.forward(x).powi_scalar(2).mean();
        let grads = loss.backward();
        let block = &model.blocks[1];
        let se = block.se.as_ref().expect("SE block");
        assert!(block.depthwise.conv.weight.grad(&grads).is_some());
        assert!(se.conv_reduce.weight.grad(&grads).is_some());
        assert!(model.stem.bn.gamma.grad(&grads).is_some());
    }
}
