//! A small SmallCnn-shaped float32 model built directly in the IR (kiln-export may not depend
//! on kiln-nn, which brings Burn), with seeded weights, for the transforms' tests:
//! image [1, 12, 12, 1] → conv1 (16 × 3×3, ReLU) → pool1 → conv2 (32 × 3×3×16, ReLU) →
//! flatten [1, 288] → dense1 (16, ReLU) → logits (10). conv2 and dense1 hold 4,608 weights
//! (dynamic range quantizes them); conv1 (144) and logits (160) stay below the 1,024 minimum.

use kiln_tflite::{
    Activation, BuiltinOp, BuiltinOptions, Conv2DOptions, FullyConnectedOptions, Model, Operator,
    Padding, Pool2DOptions, SignatureDef, Subgraph, Tensor, TensorMap, TensorType,
};

const SIDE: usize = 12;

pub fn input_len() -> usize {
    SIDE * SIDE
}

/// Deterministic values in [0, 1).
fn uniform(count: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x2545_f491_4f6c_dd1d;
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32) / (1u64 << 24) as f32
        })
        .collect()
}

/// An input image: pixels in [0, 1).
pub fn sample(seed: u64) -> Vec<f32> {
    uniform(input_len(), 1000 + seed)
}

struct Builder {
    model: Model,
    tensors: Vec<Tensor>,
    operators: Vec<Operator>,
}

impl Builder {
    fn tensor(&mut self, name: &str, shape: &[usize], dtype: TensorType, data: Vec<u8>) -> i32 {
        let buffer = if data.is_empty() {
            0
        } else {
            self.model.push_buffer(data)
        };
        self.tensors.push(Tensor::new(name, shape, dtype, buffer));
        self.tensors.len() as i32 - 1
    }

    fn activation(&mut self, name: &str, shape: &[usize]) -> i32 {
        self.tensor(name, shape, TensorType::Float32, Vec::new())
    }

    /// Weights uniform in ±`scale`, seeded by the name.
    fn weights(&mut self, name: &str, shape: &[usize], scale: f32) -> i32 {
        let seed = name
            .bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        let values = uniform(shape.iter().product(), seed);
        let bytes = values
            .iter()
            .flat_map(|v| ((2.0 * v - 1.0) * scale).to_le_bytes())
            .collect();
        self.tensor(name, shape, TensorType::Float32, bytes)
    }

    fn op(&mut self, op: BuiltinOp, inputs: &[i32], output: i32, options: BuiltinOptions) {
        let opcode_index = self.model.intern_opcode(op, 1);
        self.operators.push(Operator {
            opcode_index,
            inputs: inputs.to_vec(),
            outputs: vec![output],
            options,
            custom_options: None,
            intermediates: Vec::new(),
        });
    }

    fn conv(&mut self, name: &str, input: i32, in_c: usize, out_c: usize, out_side: usize) -> i32 {
        let scale = (6.0 / (9 * in_c) as f32).sqrt();
        let filter = self.weights(&format!("{name}/filter"), &[out_c, 3, 3, in_c], scale);
        let bias = self.weights(&format!("{name}/bias"), &[out_c], 0.05);
        let output = self.activation(name, &[1, out_side, out_side, out_c]);
        let options = BuiltinOptions::Conv2D(Conv2DOptions {
            padding: Padding::Valid,
            stride_w: 1,
            stride_h: 1,
            activation: Activation::Relu,
            dilation_w: 1,
            dilation_h: 1,
        });
        self.op(BuiltinOp::CONV_2D, &[input, filter, bias], output, options);
        output
    }

    fn dense(&mut self, name: &str, input: i32, n_in: usize, n_out: usize, relu: bool) -> i32 {
        let scale = (6.0 / n_in as f32).sqrt();
        let weights = self.weights(&format!("{name}/weights"), &[n_out, n_in], scale);
        let bias = self.weights(&format!("{name}/bias"), &[n_out], 0.05);
        let output = self.activation(name, &[1, n_out]);
        let options = BuiltinOptions::FullyConnected(FullyConnectedOptions {
            activation: if relu {
                Activation::Relu
            } else {
                Activation::None
            },
            ..Default::default()
        });
        self.op(
            BuiltinOp::FULLY_CONNECTED,
            &[input, weights, bias],
            output,
            options,
        );
        output
    }
}

pub fn small_cnn() -> Model {
    let mut b = Builder {
        model: Model::new("kiln-export test model"),
        tensors: Vec::new(),
        operators: Vec::new(),
    };
    let image = b.activation("image", &[1, SIDE, SIDE, 1]);
    let x = b.conv("conv1", image, 1, 16, 10);
    let pooled = b.activation("pool1", &[1, 5, 5, 16]);
    let pool = BuiltinOptions::Pool2D(Pool2DOptions {
        padding: Padding::Valid,
        stride_w: 2,
        stride_h: 2,
        filter_w: 2,
        filter_h: 2,
        activation: Activation::None,
    });
    b.op(BuiltinOp::MAX_POOL_2D, &[x], pooled, pool);
    let x = b.conv("conv2", pooled, 16, 32, 3);
    let shape_bytes = [1i32, 288].iter().flat_map(|v| v.to_le_bytes()).collect();
    let shape = b.tensor("flatten/shape", &[2], TensorType::Int32, shape_bytes);
    let flat = b.activation("flatten", &[1, 288]);
    let reshape = BuiltinOptions::Reshape {
        new_shape: Some(vec![1, 288]),
    };
    b.op(BuiltinOp::RESHAPE, &[x, shape], flat, reshape);
    let x = b.dense("dense1", flat, 288, 16, true);
    let logits = b.dense("logits", x, 16, 10, false);
    let map = |name: &str, t: i32| TensorMap {
        name: name.into(),
        tensor_index: t as u32,
    };
    b.model.subgraphs.push(Subgraph {
        name: Some("main".into()),
        tensors: b.tensors,
        inputs: vec![image],
        outputs: vec![logits],
        operators: b.operators,
    });
    b.model.signature_defs.push(SignatureDef {
        key: "serving_default".into(),
        subgraph_index: 0,
        inputs: vec![map("image", image)],
        outputs: vec![map("logits", logits)],
    });
    b.model
}

/// Runs `model` in kiln-runtime on float `input`, returning the float output (dequantized
/// when the model's output is int8/uint8) — for comparing variants.
pub fn run_real(model: &Model, input: &[f32]) -> Vec<f32> {
    let mut interpreter = kiln_runtime::Interpreter::new(model.clone()).expect("model loads");
    let info = interpreter.input_info(0).unwrap().clone();
    let bytes: Vec<u8> = match info.dtype {
        TensorType::Float32 => input.iter().flat_map(|v| v.to_le_bytes()).collect(),
        TensorType::Int8 | TensorType::UInt8 => {
            let q = info.quantization.as_ref().unwrap();
            let (scale, zp) = (q.scale[0], q.zero_point[0] as f32);
            let (lo, hi) = if info.dtype == TensorType::Int8 {
                (-128.0, 127.0)
            } else {
                (0.0, 255.0)
            };
            input
                .iter()
                .map(|&v| ((v / scale).round() + zp).clamp(lo, hi) as i32 as u8)
                .collect()
        }
        other => panic!("input type {other}"),
    };
    interpreter.set_input(0, &bytes).unwrap();
    interpreter.invoke().unwrap();
    let info = interpreter.output_info(0).unwrap().clone();
    let out = interpreter.output(0).unwrap();
    match info.dtype {
        TensorType::Float32 => out
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        TensorType::Int8 | TensorType::UInt8 => {
            let q = info.quantization.as_ref().unwrap();
            out.iter()
                .map(|&b| {
                    let v = if info.dtype == TensorType::Int8 {
                        f32::from(b as i8)
                    } else {
                        f32::from(b)
                    };
                    q.scale[0] * (v - q.zero_point[0] as f32)
                })
                .collect()
        }
        other => panic!("output type {other}"),
    }
}
