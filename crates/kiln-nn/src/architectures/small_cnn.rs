//! SmallCnn: the classic convolutional classifier (LeCun et al., "Gradient-Based Learning
//! Applied to Document Recognition", 1998, in its modern Keras-tutorial form): blocks of
//! Conv(k, 3×3, valid)+ReLU → MaxPool 2 — two by default, Conv 32 → Conv 64 — then Flatten →
//! Dense(64)+ReLU → Dense(classes). Takes NCHW input in Burn; lowers to an NHWC TFLite graph.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use crate::ops::relu;
use kiln_tflite::{Activation, Model};

use crate::architecture::Architecture;
use crate::hooked_layers::{conv2d_hooked, conv2d_relu_max_pool_layer, linear_hooked};
use crate::lowering::{
    GraphBuilder, LowerError, lower_conv2d, lower_linear, nchw_flatten_to_nhwc_rows,
};
use crate::{Classifier, FloatForward, QuantHooks, QuantizableClassifier};

/// The `[model]` keys of `architecture = "small_cnn"`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmallCnnOptions {
    /// Filters of each conv block, e.g. [32, 64] (the default) or [32, 64, 128].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conv_filters: Option<Vec<usize>>,
    /// Units of the hidden dense layer (default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dense_units: Option<usize>,
}

impl Architecture for SmallCnnOptions {
    type Model = SmallCnn;
    const TITLE: &'static str = "SmallCnn";

    fn build(
        &self,
        input: [usize; 3],
        classes: usize,
        device: &Device,
    ) -> Result<SmallCnn, LowerError> {
        let mut config = SmallCnnConfig::new(input, classes);
        if let Some(filters) = &self.conv_filters {
            config.conv_filters = filters.clone();
        }
        config.dense_units = self.dense_units.unwrap_or(config.dense_units);
        config.init(device)
    }
}

/// Shape and width of a SmallCnn.
#[derive(Clone, Debug, PartialEq)]
pub struct SmallCnnConfig {
    /// Input [height, width, channels].
    pub input: [usize; 3],
    pub num_classes: usize,
    /// Filters of each conv block, in order.
    pub conv_filters: Vec<usize>,
    pub dense_units: usize,
}

impl SmallCnnConfig {
    pub fn new(input: [usize; 3], num_classes: usize) -> Self {
        Self {
            input,
            num_classes,
            conv_filters: vec![32, 64],
            dense_units: 64,
        }
    }

    /// Spatial size after every block's conv(3, valid) → pool(2).
    fn feature_map(&self) -> Option<[usize; 2]> {
        let stage = |x: usize| x.checked_sub(2).map(|x| x / 2).filter(|&x| x > 0);
        let [mut h, mut w, _] = self.input;
        for _ in &self.conv_filters {
            (h, w) = (stage(h)?, stage(w)?);
        }
        Some([h, w])
    }

    pub fn init(&self, device: &Device) -> Result<SmallCnn, LowerError> {
        let [fh, fw] = self.feature_map().ok_or_else(|| LowerError::Unsupported {
            layer: "small_cnn".into(),
            reason: format!(
                "input {:?} is too small for {} conv blocks (each 3×3 valid conv + 2×2 pool)",
                self.input,
                self.conv_filters.len()
            ),
        })?;
        if self.conv_filters.is_empty() || self.conv_filters.contains(&0) || self.dense_units == 0 {
            return Err(LowerError::Unsupported {
                layer: "small_cnn".into(),
                reason: format!(
                    "conv_filters {:?} and dense_units {} must be non-empty and positive",
                    self.conv_filters, self.dense_units
                ),
            });
        }
        let mut channels = self.input[2];
        let mut convs = Vec::with_capacity(self.conv_filters.len());
        for &filters in &self.conv_filters {
            convs.push(Conv2dConfig::new([channels, filters], [3, 3]).init(device));
            channels = filters;
        }
        Ok(SmallCnn {
            convs,
            pool: MaxPool2dConfig::new([2, 2]).init(),
            fc1: LinearConfig::new(channels * fh * fw, self.dense_units).init(device),
            fc2: LinearConfig::new(self.dense_units, self.num_classes).init(device),
            input: self.input,
        })
    }
}

#[derive(Module, Debug)]
pub struct SmallCnn {
    convs: Vec<Conv2d>,
    pool: MaxPool2d,
    fc1: Linear,
    fc2: Linear,
    #[module(skip)]
    input: [usize; 3],
}

impl Classifier for SmallCnn {
    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward_with(images, &FloatForward)
    }

    fn exported_input_orders(&self) -> Vec<(String, Vec<usize>)> {
        // fc1 reads the last pool's [c, h, w] flattened; TFLite's graph flattens (h, w, c).
        let channels = self.convs.last().map_or(self.input[2], |conv| {
            conv.weight.shape().dims::<4>()[0]
        });
        let [in_features, _] = self.fc1.weight.shape().dims::<2>();
        let spatial = in_features / channels.max(1);
        let order = (0..in_features)
            .map(|burn| {
                let (c, position) = (burn / spatial.max(1), burn % spatial.max(1));
                position * channels + c
            })
            .collect();
        vec![("fc1".into(), order)]
    }

    /// Input `image` [1, H, W, C], output `logits` [1, classes].
    fn lower(&self, description: &str) -> Result<Model, LowerError> {
        let [h, w, c] = self.input;
        let mut graph = GraphBuilder::new(description);
        let image = graph.activation("image", &[1, h, w, c]);
        let mut x = image;
        for (i, conv) in self.convs.iter().enumerate() {
            let n = i + 1;
            x = lower_conv2d(&mut graph, &format!("conv{n}"), conv, x, Activation::Relu)?;
            x = graph.max_pool2d(&format!("pool{n}"), x, [2, 2], [2, 2]);
        }
        let [_, fh, fw, fc] = graph.shape(x)[..] else {
            unreachable!("pool output is NHWC")
        };
        let x = graph.reshape("flatten", x, &[1, fh * fw * fc]);
        let reorder =
            |weights: &[f32], out: usize| nchw_flatten_to_nhwc_rows(weights, [fc, fh, fw], out);
        let x = lower_linear(
            &mut graph,
            "dense1",
            &self.fc1,
            x,
            Activation::Relu,
            Some(&reorder),
        )?;
        let logits = lower_linear(&mut graph, "logits", &self.fc2, x, Activation::None, None)?;
        Ok(graph.finish(&[("image", image)], &[("logits", logits)]))
    }
}

impl SmallCnn {
    /// Whether the pool is the 2×2, stride-2, unpadded one the fused block computes.
    fn pools_2x2(&self) -> bool {
        let pool = &self.pool;
        pool.kernel_size == [2, 2]
            && pool.stride == [2, 2]
            && pool.dilation == [1, 1]
            && !pool.ceil_mode
            && matches!(pool.padding, burn::nn::PaddingConfig2d::Valid)
    }
}

impl QuantizableClassifier for SmallCnn {
    /// Fake-quant points as `lower` names the tensors: `image`, `conv<n>` (after ReLU; each
    /// pool and the flatten keep their input's int8 parameters), `dense1`, `logits`.
    fn forward_with<H: QuantHooks>(&self, images: Tensor<4>, hooks: &H) -> Tensor<2> {
        let mut x = hooks.activation("image", images);
        let fuse = hooks.is_identity() && self.pools_2x2();
        for (i, conv) in self.convs.iter().enumerate() {
            if let (true, Some(bias)) = (fuse, &conv.bias) {
                x = conv2d_relu_max_pool_layer(conv, bias.val(), x);
                continue;
            }
            let name = format!("conv{}", i + 1);
            let y = relu(conv2d_hooked(conv, &name, x, hooks));
            x = crate::ops::max_pool2d_layer(&self.pool, hooks.activation(&name, y));
        }
        let x: Tensor<2> = x.flatten(1, 3);
        let x = relu(linear_hooked(&self.fc1, "dense1", x, hooks));
        let x = hooks.activation("dense1", x);
        hooks.activation("logits", linear_hooked(&self.fc2, "logits", x, hooks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The input order pruning uses for fc1 is the one the lowering writes: exported weight
    /// [out, order[i]] holds Burn's fc1 weight [i, out].
    #[test]
    fn fc1_input_order_matches_the_lowered_weight() {
        let device = Device::flex();
        let model = SmallCnnConfig::new([20, 24, 3], 5).init(&device).unwrap();
        let orders = model.exported_input_orders();
        let [(layer, order)] = &orders[..] else {
            panic!("one reordered layer: {orders:?}")
        };
        assert_eq!(layer, "fc1");
        let lowered = model.lower("test").unwrap();
        let graph = &lowered.subgraphs[0];
        let dense1 = graph
            .tensors
            .iter()
            .find(|t| t.name == "dense1/weights")
            .unwrap();
        let exported: Vec<f32> = lowered
            .tensor_data(dense1)
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let burn = model.fc1.weight.val().into_data();
        let burn = burn.as_slice::<f32>().unwrap();
        let [inputs, outputs] = model.fc1.weight.shape().dims::<2>();
        assert_eq!(order.len(), inputs);
        for i in 0..inputs {
            for o in 0..outputs {
                assert_eq!(exported[o * inputs + order[i]], burn[i * outputs + o]);
            }
        }
    }
}
