//! The classifier head a backbone's pooled features go through before the final `classifier`:
//! global pooling, optional dense layers, dropout — what transfer-learning notebooks put on a
//! pretrained backbone (Keras' `EfficientNetB0(include_top=False, pooling="max")` then
//! Dense 512 → BatchNorm → Dense 64 → Dropout 0.2 → Dense N).
//!
//! One deliberate difference from the Keras notebook: each dense layer's BatchNorm sits
//! *before* its ReLU, so it folds into the dense layer's weights as conv + BN does, and the
//! int8 file holds one FULLY_CONNECTED per layer (after the ReLU it would cost a MUL and an
//! ADD at inference, and quantize another tensor). The dense layers are kept as 1×1
//! convolutions on the pooled 1×1 map so that fold, and QAT's view of it, is the one the
//! backbone uses; they lower as FULLY_CONNECTED with the ReLU fused.

use crate::ops::relu;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig};
use burn::prelude::*;
use kiln_tflite::Activation;
use serde::{Deserialize, Serialize};

use crate::hooked_layers::conv_bn_hooked_as;
use crate::lowering::{GraphBuilder, LowerError, TensorId, fold_batch_norm};
use crate::{LayerKind, QuantHooks};

/// ε of the head's BatchNorms (Keras' default).
const HEAD_BN_EPSILON: f64 = 1e-3;

/// How the backbone's last feature map becomes one vector per image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Global average (timm's and Keras' default): MEAN in TFLite.
    #[default]
    Avg,
    /// Global max (the cats-vs-dogs notebook's `pooling="max"`): MAX_POOL_2D over the map.
    Max,
}

/// `head = { dense = [512, 64], batch_norm = true, dropout = 0.2, pooling = "max" }` in
/// `[model]`; omitted, the head is timm's: average pooling, dropout 0.2, the classifier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadOptions {
    /// Widths of the dense ReLU layers between pooling and the classifier.
    #[serde(default)]
    pub dense: Vec<usize>,
    /// BatchNorm in every dense layer (before its ReLU; see the module documentation).
    #[serde(default)]
    pub batch_norm: bool,
    /// Dropout before the classifier (training only).
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    #[serde(default)]
    pub pooling: Pooling,
}

fn default_dropout() -> f64 {
    0.2
}

impl Default for HeadOptions {
    fn default() -> Self {
        Self {
            dense: Vec::new(),
            batch_norm: false,
            dropout: default_dropout(),
            pooling: Pooling::Avg,
        }
    }
}

/// One dense ReLU layer of the head, as a 1×1 convolution (with its BatchNorm when asked).
#[derive(Module, Debug)]
pub struct DenseLayer {
    linear: Conv2d,
    bn: Option<BatchNorm>,
}

/// Pooling, dense layers and dropout; the `classifier` after it belongs to the network.
#[derive(Module, Debug)]
pub struct ClassifierHead {
    dense: Vec<DenseLayer>,
    dropout: Dropout,
    #[module(skip)]
    pooling: Pooling,
}

impl ClassifierHead {
    pub fn new(
        options: &HeadOptions,
        features: usize,
        device: &Device,
    ) -> Result<Self, LowerError> {
        let invalid = |reason: String| LowerError::Unsupported {
            layer: "head".into(),
            reason,
        };
        if !(options.dropout.is_finite() && (0.0..1.0).contains(&options.dropout)) {
            return Err(invalid(format!(
                "dropout {} must be in [0, 1)",
                options.dropout
            )));
        }
        if options.dense.contains(&0) {
            return Err(invalid(format!(
                "dense = {:?}: every layer needs at least one unit",
                options.dense
            )));
        }
        let mut width = features;
        let dense = options
            .dense
            .iter()
            .map(|&units| {
                let layer = DenseLayer {
                    // A bias would be cancelled by the BatchNorm's mean.
                    linear: Conv2dConfig::new([width, units], [1, 1])
                        .with_bias(!options.batch_norm)
                        .init(device),
                    bn: options.batch_norm.then(|| {
                        BatchNormConfig::new(units)
                            .with_epsilon(HEAD_BN_EPSILON)
                            .init(device)
                    }),
                };
                width = units;
                layer
            })
            .collect();
        Ok(Self {
            dense,
            dropout: DropoutConfig::new(options.dropout).init(),
            pooling: options.pooling,
        })
    }

    /// Width of what the head hands the classifier, given the backbone's `features`.
    pub fn output_features(&self, features: usize) -> usize {
        self.dense
            .last()
            .map_or(features, |layer| layer.linear.weight.dims()[0])
    }

    /// NCHW feature map → [batch, channels].
    pub fn pool_with<H: QuantHooks>(&self, x: Tensor<4>, hooks: &H) -> Tensor<2> {
        match self.pooling {
            Pooling::Avg => hooks.activation("pool", x.mean_dim(3).mean_dim(2).flatten(1, 3)),
            // The max of quantized values is one of them: MAX_POOL_2D keeps its input's int8
            // parameters, so there is nothing to observe.
            Pooling::Max => x.max_dim(3).max_dim(2).flatten(1, 3),
        }
    }

    /// Pooled features → the classifier's input (dense layers, then dropout).
    pub fn forward_with<H: QuantHooks>(&self, pooled: Tensor<2>, hooks: &H) -> Tensor<2> {
        let [batch, channels] = pooled.dims();
        let mut x: Tensor<4> = pooled.reshape([batch, channels, 1, 1]);
        for (i, layer) in self.dense.iter().enumerate() {
            let name = format!("head.dense.{i}");
            let y = match &layer.bn {
                Some(bn) => conv_bn_hooked_as(LayerKind::Dense, &layer.linear, bn, &name, x, hooks),
                None => hooks.layer(
                    crate::LayerCall {
                        output: &name,
                        kind: LayerKind::Dense,
                    },
                    x,
                    (layer.linear.weight.val(), Some(0)),
                    layer.linear.bias.as_ref().map(|b| b.val()),
                    |x, w, b| crate::hooked_layers::conv2d_with_weight(&layer.linear, x, w, b),
                ),
            };
            x = hooks.activation(&name, relu(y));
        }
        let [batch, width, _, _] = x.dims();
        self.dropout.forward(x.reshape([batch, width]))
    }

    /// The pooling of an NHWC feature map, as [1, channels].
    pub fn lower_pool(&self, graph: &mut GraphBuilder, x: TensorId) -> TensorId {
        match self.pooling {
            Pooling::Avg => graph.mean("pool", x, &[1, 2], false),
            Pooling::Max => {
                let shape = graph.shape(x);
                let (h, w, c) = (shape[1], shape[2], shape[3]);
                let pooled = graph.max_pool2d("pool/max", x, [h, w], [1, 1]);
                graph.reshape("pool", pooled, &[1, c])
            }
        }
    }

    /// The dense layers as FULLY_CONNECTED, BatchNorm folded, ReLU fused.
    pub fn lower(
        &self,
        graph: &mut GraphBuilder,
        pooled: TensorId,
    ) -> Result<TensorId, LowerError> {
        let mut x = pooled;
        for (i, layer) in self.dense.iter().enumerate() {
            let name = format!("head.dense.{i}");
            let folded = fold_batch_norm(&name, &layer.linear, layer.bn.as_ref())?;
            let [units, inputs, _, _] = folded.shape;
            // A 1×1 filter [O, I, 1, 1] is already FULLY_CONNECTED's [out, in] row-major.
            let weights = graph.constant(
                &format!("{name}/weights"),
                &[units, inputs],
                &folded.weights,
            );
            let bias = graph.constant(&format!("{name}/bias"), &[units], &folded.bias);
            x = graph.fully_connected(&name, x, weights, Some(bias), Activation::Relu);
        }
        Ok(x)
    }
}
