//! The MobileNetV2 / EfficientNet family in timm's module layout (`timm.models.EfficientNet`):
//! `conv_stem` → `bn1` + act → `blocks.{stage}.{index}` → `conv_head` → `bn2` + act → pooling →
//! the [head](crate::head) → `classifier`. The architectures `efficientnet_lite0`,
//! `efficientnet_b0` and `mobilenet_v2` are block tables over it; their parameter names and
//! shapes are timm's, so timm's (and TensorFlow-ported) weights load one to one
//! ([`crate::pretrained`]).
//!
//! Lowering names every activation tensor after its timm module path (`blocks.1.0.conv_dw`),
//! which is also what QAT's ranges are keyed by.

mod blocks;
mod conv_bn_act;
mod options;
mod squeeze_excite;

use burn::module::ParamId;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear, LinearConfig};
use burn::prelude::*;
use kiln_tflite::Model;

pub use blocks::{DepthwiseSeparable, InvertedResidual, MbBlock};
pub(crate) use conv_bn_act::hooked_activation;
pub use conv_bn_act::{BlockActivation, ConvPadding};
pub(crate) use conv_bn_act::{ConvShape, batch_norm, conv_bn_act, lower_conv_bn_act};
pub use options::{FamilyMember, FamilyOptions};
pub use squeeze_excite::SqueezeExcite;

use crate::head::{ClassifierHead, HeadOptions};
use crate::hooked_layers::linear_hooked;
use crate::lowering::{GraphBuilder, LowerError, lower_linear};
use crate::pretrained::{
    ClassifierWeights, LoadTarget, LoadedWeights, PretrainedError, load_pretrained,
};
use crate::{Classifier, FloatForward, QuantHooks, QuantizableClassifier};

/// Channel counts are rounded to multiples of this (timm's and TF's `make_divisible`).
const CHANNEL_DIVISOR: usize = 8;

/// timm's `make_divisible`: round to the nearest multiple of 8 (at least 8), one multiple up
/// if that lost more than 10 %.
pub(crate) fn make_divisible(value: f64) -> usize {
    let divisor = CHANNEL_DIVISOR as f64;
    let mut rounded = (((value + divisor / 2.0) / divisor).floor() * divisor).max(divisor);
    if rounded < 0.9 * value {
        rounded += divisor;
    }
    rounded as usize
}

/// Which of the family's blocks a stage is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockType {
    /// timm's `ds`: depthwise then pointwise, no expansion.
    DepthwiseSeparable,
    /// timm's `ir`: expand, depthwise, project.
    InvertedResidual,
}

/// One stage of a block table (a line of timm's `arch_def`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stage {
    pub block: BlockType,
    pub repeats: usize,
    pub kernel: usize,
    /// Stride of the stage's first block; the others use 1.
    pub stride: usize,
    pub expansion: usize,
    pub channels: usize,
    /// Squeeze-excitation ratio, relative to the block's input channels (timm's `se0.25`).
    pub se_ratio: Option<f64>,
}

impl Stage {
    /// timm's `ds_r{repeats}_k{kernel}_s{stride}_c{channels}`.
    pub const fn ds(repeats: usize, kernel: usize, stride: usize, channels: usize) -> Self {
        Self {
            block: BlockType::DepthwiseSeparable,
            repeats,
            kernel,
            stride,
            expansion: 1,
            channels,
            se_ratio: None,
        }
    }

    /// timm's `ir_r{repeats}_k{kernel}_s{stride}_e{expansion}_c{channels}`.
    pub const fn ir(
        repeats: usize,
        kernel: usize,
        stride: usize,
        expansion: usize,
        channels: usize,
    ) -> Self {
        Self {
            block: BlockType::InvertedResidual,
            repeats,
            kernel,
            stride,
            expansion,
            channels,
            se_ratio: None,
        }
    }

    /// The same stage with `_se{ratio}`.
    pub const fn se(mut self, ratio: f64) -> Self {
        self.se_ratio = Some(ratio);
        self
    }
}

/// How a set of weights was trained: TensorFlow's padding and BatchNorm ε, or PyTorch's.
/// timm's `tf_*` models (ported from TensorFlow) use the first, its own trainings the second;
/// loading weights under the other style runs, but computes something else.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightStyle {
    /// SAME padding, BatchNorm ε = 1e-3: also what TFLite runs without extra PAD ops.
    #[default]
    Tensorflow,
    /// Symmetric `kernel / 2` padding, BatchNorm ε = 1e-5.
    Pytorch,
}

/// The per-style constants blocks are built with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct FamilyStyle {
    pub padding: ConvPadding,
    pub bn_epsilon: f64,
}

impl From<WeightStyle> for FamilyStyle {
    fn from(style: WeightStyle) -> Self {
        match style {
            WeightStyle::Tensorflow => Self {
                padding: ConvPadding::Same,
                bn_epsilon: 1e-3,
            },
            WeightStyle::Pytorch => Self {
                padding: ConvPadding::Symmetric,
                bn_epsilon: 1e-5,
            },
        }
    }
}

/// A whole family member: block table, stem and head widths, nonlinearity.
#[derive(Clone, Debug, PartialEq)]
pub struct FamilySpec {
    pub stages: Vec<Stage>,
    pub stem_channels: usize,
    /// Channels of `conv_head` (timm's `num_features`).
    pub features: usize,
    pub activation: BlockActivation,
}

/// How a member scales with `width_multiplier` and `depth_multiplier` (timm's generators).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScalingRule {
    /// EfficientNet-B*: every stage's channels and repeats, the stem and the head scale.
    EfficientNet,
    /// EfficientNet-Lite: stem (32) and head (1280) fixed, first and last stages' repeats too.
    Lite,
    /// MobileNetV2: everything scales but the head never drops below 1280.
    MobileNetV2,
}

/// One block after the table is unrolled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct BlockPlan {
    pub block: BlockType,
    pub input: usize,
    pub expanded: usize,
    pub output: usize,
    pub kernel: usize,
    pub stride: usize,
    pub squeezed: Option<usize>,
}

impl BlockPlan {
    pub fn residual(&self) -> bool {
        self.stride == 1 && self.input == self.output
    }
}

impl FamilySpec {
    /// The table at `width` × channels and `depth` × repeats, rounded as timm rounds
    /// (`round_channels`, and `ceil` of the repeats).
    pub fn scaled(mut self, width: f64, depth: f64, rule: ScalingRule) -> Self {
        let channels = |c: usize| make_divisible(c as f64 * width);
        let last = self.stages.len().saturating_sub(1);
        for (i, stage) in self.stages.iter_mut().enumerate() {
            stage.channels = channels(stage.channels);
            let fixed = rule == ScalingRule::Lite && (i == 0 || i == last);
            if !fixed {
                stage.repeats = (stage.repeats as f64 * depth).ceil().max(1.0) as usize;
            }
        }
        match rule {
            ScalingRule::EfficientNet => {
                self.stem_channels = channels(self.stem_channels);
                self.features = channels(self.features);
            }
            ScalingRule::Lite => {}
            ScalingRule::MobileNetV2 => {
                self.stem_channels = channels(self.stem_channels);
                self.features = self.features.max(channels(self.features));
            }
        }
        self
    }

    /// Every stage's blocks, channels resolved as timm resolves them.
    pub(crate) fn plan(&self) -> Vec<Vec<BlockPlan>> {
        let mut input = self.stem_channels;
        self.stages
            .iter()
            .map(|stage| {
                (0..stage.repeats)
                    .map(|r| {
                        let expanded = match stage.block {
                            BlockType::DepthwiseSeparable => input,
                            BlockType::InvertedResidual => {
                                make_divisible((input * stage.expansion) as f64)
                            }
                        };
                        // timm sizes SE from the block's input: ratio / expansion of `expanded`,
                        // rounded half to even (Python's `round`).
                        let squeezed = stage.se_ratio.map(|ratio| {
                            let exp = stage.expansion.max(1) as f64;
                            ((expanded as f64 * (ratio / exp)).round_ties_even() as usize).max(1)
                        });
                        let plan = BlockPlan {
                            block: stage.block,
                            input,
                            expanded,
                            output: stage.channels,
                            kernel: stage.kernel,
                            stride: if r == 0 { stage.stride } else { 1 },
                            squeezed,
                        };
                        input = stage.channels;
                        plan
                    })
                    .collect()
            })
            .collect()
    }

    /// The network for `input` ([height, width, channels]) images and `classes` classes.
    pub fn init(
        &self,
        style: WeightStyle,
        head: &HeadOptions,
        input: [usize; 3],
        classes: usize,
        device: &Device,
    ) -> Result<MbConvNet, LowerError> {
        let invalid = |reason: String| LowerError::Unsupported {
            layer: "model config".into(),
            reason,
        };
        let [h, w, c] = input;
        if classes == 0 || h == 0 || w == 0 || c == 0 {
            return Err(invalid(format!(
                "input {input:?} and {classes} classes: every dimension and the class count must \
                 be at least 1"
            )));
        }
        let downsamplings = self
            .stages
            .iter()
            .filter(|s| s.stride == 2)
            .count()
            .saturating_add(1);
        // The last stride-2 layer must still see 2 pixels per side.
        let min_side = (1usize << (downsamplings - 1).min(30)) + 1;
        if h.min(w) < min_side {
            return Err(invalid(format!(
                "input {h}×{w} is too small for {downsamplings} stride-2 stages: use at least \
                 {min_side}×{min_side} (224×224 is what ImageNet weights were trained at)"
            )));
        }
        let style_consts = FamilyStyle::from(style);
        let plan = self.plan();
        let blocks: Vec<Vec<MbBlock>> = plan
            .iter()
            .map(|stage| {
                stage
                    .iter()
                    .map(|b| MbBlock::new(b, &style_consts, device))
                    .collect()
            })
            .collect();
        let last = plan
            .iter()
            .flatten()
            .last()
            .map_or(self.stem_channels, |b| b.output);
        let stem = ConvShape {
            channels: [c, self.stem_channels],
            kernel: 3,
            stride: 2,
            groups: 1,
        };
        let head = ClassifierHead::new(head, self.features, device)?;
        let classifier =
            LinearConfig::new(head.output_features(self.features), classes).init(device);
        Ok(MbConvNet {
            conv_stem: stem.init(style_consts.padding, device),
            bn1: batch_norm(self.stem_channels, style_consts.bn_epsilon, device),
            blocks,
            conv_head: ConvShape::pointwise([last, self.features])
                .init(style_consts.padding, device),
            bn2: batch_norm(self.features, style_consts.bn_epsilon, device),
            head,
            classifier,
            input,
            activation: self.activation,
        })
    }
}

/// A family member with its classifier head (see the module documentation).
#[derive(Module, Debug)]
pub struct MbConvNet {
    conv_stem: Conv2d,
    bn1: BatchNorm,
    blocks: Vec<Vec<MbBlock>>,
    conv_head: Conv2d,
    bn2: BatchNorm,
    head: ClassifierHead,
    classifier: Linear,
    #[module(skip)]
    input: [usize; 3],
    #[module(skip)]
    activation: BlockActivation,
}

/// The module paths of the backbone (what pretrained weights must cover); the head and the
/// classifier are the task's own.
pub const BACKBONE_PREFIXES: [&str; 5] = ["conv_stem.", "bn1.", "blocks.", "conv_head.", "bn2."];

impl MbConvNet {
    /// Input [height, width, channels].
    pub fn input(&self) -> [usize; 3] {
        self.input
    }

    /// The pooled backbone features [batch, features] of NCHW `images`: what a frozen backbone
    /// computes once per image.
    pub fn features_with<H: QuantHooks>(&self, images: Tensor<4>, hooks: &H) -> Tensor<2> {
        let act = Some(self.activation);
        let x = hooks.activation("image", images);
        let mut x = conv_bn_act((&self.conv_stem, &self.bn1), x, hooks, "conv_stem", act);
        for (s, stage) in self.blocks.iter().enumerate() {
            for (i, block) in stage.iter().enumerate() {
                x = block.forward_with(x, hooks, &format!("blocks.{s}.{i}"), self.activation);
            }
        }
        let x = conv_bn_act((&self.conv_head, &self.bn2), x, hooks, "conv_head", act);
        self.head.pool_with(x, hooks)
    }

    /// Logits from pooled features (the trainable part while the backbone is frozen).
    pub fn classify_with<H: QuantHooks>(&self, features: Tensor<2>, hooks: &H) -> Tensor<2> {
        let hidden = self.head.forward_with(features, hooks);
        let logits = linear_hooked(&self.classifier, "logits", hidden, hooks);
        hooks.activation("logits", logits)
    }

    /// The blocks, by stage.
    pub fn blocks(&self) -> &[Vec<MbBlock>] {
        &self.blocks
    }

    /// Every BatchNorm of the backbone, for tests that move their statistics.
    #[cfg(test)]
    pub(crate) fn batch_norms(&mut self) -> Vec<&mut BatchNorm> {
        let mut all = vec![&mut self.bn1, &mut self.bn2];
        for block in self.blocks.iter_mut().flatten() {
            all.extend(block.batch_norms());
        }
        all
    }
}

impl Classifier for MbConvNet {
    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward_with(images, &FloatForward)
    }

    /// Input `image` [1, H, W, C], output `logits` [1, classes].
    fn lower(&self, description: &str) -> Result<Model, LowerError> {
        let [h, w, c] = self.input;
        let act = self.activation;
        let mut graph = GraphBuilder::new(description);
        let image = graph.activation("image", &[1, h, w, c]);
        let mut x = lower_conv_bn_act(
            &mut graph,
            "conv_stem",
            (&self.conv_stem, &self.bn1),
            image,
            Some(act),
        )?;
        for (s, stage) in self.blocks.iter().enumerate() {
            for (i, block) in stage.iter().enumerate() {
                x = block.lower(&mut graph, &format!("blocks.{s}.{i}"), x, act)?;
            }
        }
        let x = lower_conv_bn_act(
            &mut graph,
            "conv_head",
            (&self.conv_head, &self.bn2),
            x,
            Some(act),
        )?;
        let pooled = self.head.lower_pool(&mut graph, x);
        let hidden = self.head.lower(&mut graph, pooled)?;
        let logits = lower_linear(
            &mut graph,
            "logits",
            &self.classifier,
            hidden,
            kiln_tflite::Activation::None,
            None,
        )?;
        Ok(graph.finish(&[("image", image)], &[("logits", logits)]))
    }

    fn backbone_features(&self, images: Tensor<4>) -> Option<Tensor<2>> {
        Some(self.features_with(images, &FloatForward))
    }

    fn classify_features(&self, features: Tensor<2>) -> Option<Tensor<2>> {
        Some(self.classify_with(features, &FloatForward))
    }

    fn with_backbone(mut self, mode: crate::BackboneMode) -> Self {
        fn set<M: Module>(module: M, mode: crate::BackboneMode) -> M {
            match mode {
                crate::BackboneMode::Frozen => module.freeze(),
                // Frozen flags (BatchNorm on running statistics), then trainable weights.
                crate::BackboneMode::FineTuned => module.freeze().set_require_grad(true),
                crate::BackboneMode::Trainable => module.unfreeze(),
            }
        }
        self.conv_stem = set(self.conv_stem, mode);
        self.bn1 = set(self.bn1, mode);
        self.blocks = set(self.blocks, mode);
        self.conv_head = set(self.conv_head, mode);
        self.bn2 = set(self.bn2, mode);
        self
    }

    fn backbone_params(&self) -> Vec<ParamId> {
        struct Ids(Vec<ParamId>);
        impl burn::module::ModuleVisitor for Ids {
            fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
                self.0.push(param.id);
            }
        }
        let mut ids = Ids(Vec::new());
        self.conv_stem.visit(&mut ids);
        self.bn1.visit(&mut ids);
        self.blocks.visit(&mut ids);
        self.conv_head.visit(&mut ids);
        self.bn2.visit(&mut ids);
        ids.0
    }

    fn load_pretrained(
        &mut self,
        architecture: &str,
        path: &std::path::Path,
        classifier: ClassifierWeights,
    ) -> Result<LoadedWeights, PretrainedError> {
        let target = LoadTarget {
            architecture,
            backbone: &BACKBONE_PREFIXES,
            efficientnet_pytorch_keys: efficientnet_pytorch_keys(self),
        };
        load_pretrained(self, &target, path, classifier)
    }
}

impl QuantizableClassifier for MbConvNet {
    fn forward_with<H: QuantHooks>(&self, images: Tensor<4>, hooks: &H) -> Tensor<2> {
        let features = self.features_with(images, hooks);
        self.classify_with(features, hooks)
    }
}

/// Renames lukemelas' keys to timm's: top-level layers by name, blocks by their position
/// in the block table (`_blocks.5.` is the sixth block, `blocks.2.1.` in a 1-2-2-… table),
/// and each block's layers by its type (a depthwise-separable block has no `_expand_conv`,
/// so its `_bn1` is timm's `bn1`, not `bn2`).
fn efficientnet_pytorch_keys(model: &MbConvNet) -> Vec<(String, String)> {
    let mut patterns: Vec<(String, String)> = [
        ("_conv_stem", "conv_stem"),
        ("_bn0", "bn1"),
        ("_conv_head", "conv_head"),
        ("_bn1", "bn2"),
        ("_fc", "classifier"),
    ]
    .iter()
    .map(|(from, to)| (format!(r"^{from}\."), format!("{to}.")))
    .collect();
    let mut flat = 0;
    for (s, stage) in model.blocks().iter().enumerate() {
        for (i, block) in stage.iter().enumerate() {
            let layers: &[(&str, &str)] = match block {
                MbBlock::DepthwiseSeparable(_) => &[
                    ("_depthwise_conv", "conv_dw"),
                    ("_bn1", "bn1"),
                    ("_project_conv", "conv_pw"),
                    ("_bn2", "bn2"),
                ],
                MbBlock::InvertedResidual(_) => &[
                    ("_expand_conv", "conv_pw"),
                    ("_bn0", "bn1"),
                    ("_depthwise_conv", "conv_dw"),
                    ("_bn1", "bn2"),
                    ("_project_conv", "conv_pwl"),
                    ("_bn2", "bn3"),
                ],
            };
            let se = [
                ("_se_reduce", "se.conv_reduce"),
                ("_se_expand", "se.conv_expand"),
            ];
            for (from, to) in layers.iter().chain(se.iter()) {
                patterns.push((
                    format!(r"^_blocks\.{flat}\.{from}\."),
                    format!("blocks.{s}.{i}.{to}."),
                ));
            }
            flat += 1;
        }
    }
    patterns
}

#[cfg(test)]
mod tests;
