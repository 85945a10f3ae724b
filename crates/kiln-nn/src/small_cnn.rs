//! SmallCnn: the classic two-convolution MNIST network (LeCun et al., "Gradient-Based Learning
//! Applied to Document Recognition", 1998, in its modern Keras-tutorial form):
//! Conv(32, 3×3)+ReLU → MaxPool 2 → Conv(64, 3×3)+ReLU → MaxPool 2 → Flatten →
//! Dense(64)+ReLU → Dense(classes). Takes NCHW input in Burn; lowers to an NHWC TFLite graph.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;
use kiln_tflite::{Activation, Model};

use crate::Classifier;
use crate::lowering::{
    GraphBuilder, LowerError, lower_conv2d, lower_linear, nchw_flatten_to_nhwc_rows,
};

/// Shape and width of a SmallCnn.
#[derive(Clone, Debug, PartialEq)]
pub struct SmallCnnConfig {
    /// Input [height, width, channels].
    pub input: [usize; 3],
    pub num_classes: usize,
    pub conv1_filters: usize,
    pub conv2_filters: usize,
    pub dense_units: usize,
}

impl SmallCnnConfig {
    pub fn new(input: [usize; 3], num_classes: usize) -> Self {
        Self {
            input,
            num_classes,
            conv1_filters: 32,
            conv2_filters: 64,
            dense_units: 64,
        }
    }

    /// Spatial size after conv(3, valid) → pool(2) → conv(3, valid) → pool(2).
    fn feature_map(&self) -> Option<[usize; 2]> {
        let stage = |x: usize| x.checked_sub(2).map(|x| x / 2).filter(|&x| x > 0);
        let [h, w, _] = self.input;
        Some([stage(stage(h)?)?, stage(stage(w)?)?])
    }

    pub fn init(&self, device: &Device) -> Result<SmallCnn, LowerError> {
        let [fh, fw] = self.feature_map().ok_or_else(|| LowerError::Unsupported {
            layer: "small_cnn".into(),
            reason: format!(
                "input {:?} is too small: SmallCnn needs at least 10×10 pixels",
                self.input
            ),
        })?;
        let channels = self.input[2];
        Ok(SmallCnn {
            conv1: Conv2dConfig::new([channels, self.conv1_filters], [3, 3]).init(device),
            conv2: Conv2dConfig::new([self.conv1_filters, self.conv2_filters], [3, 3]).init(device),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            fc1: LinearConfig::new(self.conv2_filters * fh * fw, self.dense_units).init(device),
            fc2: LinearConfig::new(self.dense_units, self.num_classes).init(device),
            input: self.input,
        })
    }
}

#[derive(Module, Debug)]
pub struct SmallCnn {
    conv1: Conv2d,
    conv2: Conv2d,
    pool: MaxPool2d,
    fc1: Linear,
    fc2: Linear,
    #[module(skip)]
    input: [usize; 3],
}

impl Classifier for SmallCnn {
    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let x = self.pool.forward(relu(self.conv1.forward(images)));
        let x = self.pool.forward(relu(self.conv2.forward(x)));
        let x: Tensor<2> = x.flatten(1, 3);
        self.fc2.forward(relu(self.fc1.forward(x)))
    }

    /// Input `image` [1, H, W, C], output `logits` [1, classes].
    fn lower(&self, description: &str) -> Result<Model, LowerError> {
        let [h, w, c] = self.input;
        let mut graph = GraphBuilder::new(description);
        let image = graph.activation("image", &[1, h, w, c]);
        let x = lower_conv2d(&mut graph, "conv1", &self.conv1, image, Activation::Relu)?;
        let x = graph.max_pool2d("pool1", x, [2, 2], [2, 2]);
        let x = lower_conv2d(&mut graph, "conv2", &self.conv2, x, Activation::Relu)?;
        let x = graph.max_pool2d("pool2", x, [2, 2], [2, 2]);
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
