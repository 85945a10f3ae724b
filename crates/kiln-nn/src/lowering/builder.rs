//! Builds a float32 TFLite graph operator by operator, tracking each tensor's shape.

use kiln_tflite::{
    Activation, BuiltinOp, BuiltinOptions, Conv2DOptions, DepthwiseConv2DOptions,
    FullyConnectedOptions, Model, Operator, Padding, Pool2DOptions, SignatureDef, Subgraph, Tensor,
    TensorMap, TensorType, window,
};

/// Index of a tensor in the graph being built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorId(pub usize);

pub struct GraphBuilder {
    model: Model,
    tensors: Vec<Tensor>,
    operators: Vec<Operator>,
}

fn dims(shape: &[usize]) -> Vec<i32> {
    shape.iter().map(|&d| d as i32).collect()
}

impl GraphBuilder {
    pub fn new(description: &str) -> Self {
        Self {
            model: Model::new(description),
            tensors: Vec::new(),
            operators: Vec::new(),
        }
    }

    pub fn shape(&self, id: TensorId) -> Vec<usize> {
        self.tensors[id.0]
            .shape
            .iter()
            .map(|&d| d as usize)
            .collect()
    }

    fn push_tensor(&mut self, name: &str, shape: &[usize], buffer: u32) -> TensorId {
        self.tensors
            .push(Tensor::new(name, shape, TensorType::Float32, buffer));
        TensorId(self.tensors.len() - 1)
    }

    /// A float32 activation tensor without data (graph input or operator output).
    pub fn activation(&mut self, name: &str, shape: &[usize]) -> TensorId {
        self.push_tensor(name, shape, 0)
    }

    /// An INT32 constant (shapes, axes, paddings).
    pub(super) fn constant_i32(&mut self, name: &str, shape: &[usize], values: &[i32]) -> TensorId {
        debug_assert_eq!(shape.iter().product::<usize>(), values.len());
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let buffer = self.model.push_buffer(bytes);
        let id = self.push_tensor(name, shape, buffer);
        self.tensors[id.0].dtype = TensorType::Int32;
        id
    }

    /// A float32 constant.
    pub fn constant(&mut self, name: &str, shape: &[usize], values: &[f32]) -> TensorId {
        debug_assert_eq!(shape.iter().product::<usize>(), values.len());
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let buffer = self.model.push_buffer(bytes);
        self.push_tensor(name, shape, buffer)
    }

    /// Appends one operator (its output already declared). Shared with `ops`, which adds the
    /// element-wise and reduction operators.
    pub(super) fn operator(
        &mut self,
        op: BuiltinOp,
        inputs: &[Option<TensorId>],
        output: TensorId,
        options: BuiltinOptions,
    ) {
        let opcode_index = self.model.intern_opcode(op, 1);
        self.operators.push(Operator {
            opcode_index,
            inputs: inputs
                .iter()
                .map(|t| t.map_or(-1, |t| t.0 as i32))
                .collect(),
            outputs: vec![output.0 as i32],
            options,
            custom_options: None,
            intermediates: Vec::new(),
        });
    }

    /// The NHWC activation a `kernel`-sized window op (convolution) writes over `input`.
    fn windowed_output(
        &mut self,
        name: &str,
        input: TensorId,
        [kh, kw]: [usize; 2],
        stride: [usize; 2],
        padding: Padding,
        channels: usize,
    ) -> TensorId {
        let [n, h, w, _] = self.shape(input)[..] else {
            panic!("{name}: a convolution input must be NHWC")
        };
        let (oh, _) = window(padding, h, kh, stride[0], 1);
        let (ow, _) = window(padding, w, kw, stride[1], 1);
        self.activation(name, &[n, oh, ow, channels])
    }

    /// CONV_2D on an NHWC input with an OHWI filter.
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d(
        &mut self,
        name: &str,
        input: TensorId,
        filter: TensorId,
        bias: Option<TensorId>,
        stride: [usize; 2],
        padding: Padding,
        activation: Activation,
    ) -> TensorId {
        let [o, kh, kw, _] = self.shape(filter)[..] else {
            panic!("conv2d filter must be OHWI")
        };
        let output = self.windowed_output(name, input, [kh, kw], stride, padding, o);
        let options = BuiltinOptions::Conv2D(Conv2DOptions {
            padding,
            stride_w: stride[1] as i32,
            stride_h: stride[0] as i32,
            activation,
            dilation_w: 1,
            dilation_h: 1,
        });
        self.operator(
            BuiltinOp::CONV_2D,
            &[Some(input), Some(filter), bias],
            output,
            options,
        );
        output
    }

    /// DEPTHWISE_CONV_2D on an NHWC input with a [1, H, W, C × multiplier] filter.
    #[allow(clippy::too_many_arguments)]
    pub fn depthwise_conv2d(
        &mut self,
        name: &str,
        input: TensorId,
        filter: TensorId,
        bias: Option<TensorId>,
        stride: [usize; 2],
        padding: Padding,
        activation: Activation,
    ) -> TensorId {
        let [_, kh, kw, o] = self.shape(filter)[..] else {
            panic!("depthwise_conv2d filter must be [1, H, W, C]")
        };
        let c = self.shape(input).last().copied().unwrap_or(1);
        let output = self.windowed_output(name, input, [kh, kw], stride, padding, o);
        let options = BuiltinOptions::DepthwiseConv2D(DepthwiseConv2DOptions {
            padding,
            stride_w: stride[1] as i32,
            stride_h: stride[0] as i32,
            depth_multiplier: (o / c.max(1)) as i32,
            activation,
            dilation_w: 1,
            dilation_h: 1,
        });
        self.operator(
            BuiltinOp::DEPTHWISE_CONV_2D,
            &[Some(input), Some(filter), bias],
            output,
            options,
        );
        output
    }

    pub fn max_pool2d(
        &mut self,
        name: &str,
        input: TensorId,
        filter: [usize; 2],
        stride: [usize; 2],
    ) -> TensorId {
        let [n, h, w, c] = self.shape(input)[..] else {
            panic!("max_pool2d input must be NHWC")
        };
        let (oh, _) = window(Padding::Valid, h, filter[0], stride[0], 1);
        let (ow, _) = window(Padding::Valid, w, filter[1], stride[1], 1);
        let output = self.activation(name, &[n, oh, ow, c]);
        let options = BuiltinOptions::Pool2D(Pool2DOptions {
            padding: Padding::Valid,
            stride_w: stride[1] as i32,
            stride_h: stride[0] as i32,
            filter_w: filter[1] as i32,
            filter_h: filter[0] as i32,
            activation: Activation::None,
        });
        self.operator(BuiltinOp::MAX_POOL_2D, &[Some(input)], output, options);
        output
    }

    /// RESHAPE with the target shape in the options and, as the converter writes it, as a
    /// constant second input.
    pub fn reshape(&mut self, name: &str, input: TensorId, shape: &[usize]) -> TensorId {
        let target = dims(shape);
        let shape_tensor = self.constant_i32(&format!("{name}/shape"), &[shape.len()], &target);
        let output = self.activation(name, shape);
        let options = BuiltinOptions::Reshape {
            new_shape: Some(target),
        };
        self.operator(
            BuiltinOp::RESHAPE,
            &[Some(input), Some(shape_tensor)],
            output,
            options,
        );
        output
    }

    /// FULLY_CONNECTED with [out, in] weights.
    pub fn fully_connected(
        &mut self,
        name: &str,
        input: TensorId,
        weights: TensorId,
        bias: Option<TensorId>,
        activation: Activation,
    ) -> TensorId {
        let rows = self.shape(input)[0];
        let out = self.shape(weights)[0];
        let output = self.activation(name, &[rows, out]);
        let options = BuiltinOptions::FullyConnected(FullyConnectedOptions {
            activation,
            ..Default::default()
        });
        self.operator(
            BuiltinOp::FULLY_CONNECTED,
            &[Some(input), Some(weights), bias],
            output,
            options,
        );
        output
    }

    /// Finishes the model with one subgraph and a `serving_default` signature whose input and
    /// output names are the given (stable) names.
    pub fn finish(mut self, inputs: &[(&str, TensorId)], outputs: &[(&str, TensorId)]) -> Model {
        let maps = |list: &[(&str, TensorId)]| -> Vec<TensorMap> {
            list.iter()
                .map(|(name, id)| TensorMap {
                    name: (*name).to_owned(),
                    tensor_index: id.0 as u32,
                })
                .collect()
        };
        self.model.subgraphs.push(Subgraph {
            name: Some("main".into()),
            tensors: self.tensors,
            inputs: inputs.iter().map(|(_, id)| id.0 as i32).collect(),
            outputs: outputs.iter().map(|(_, id)| id.0 as i32).collect(),
            operators: self.operators,
        });
        self.model.signature_defs.push(SignatureDef {
            key: "serving_default".into(),
            subgraph_index: 0,
            inputs: maps(inputs),
            outputs: maps(outputs),
        });
        self.model
    }
}
