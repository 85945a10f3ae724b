//! Micro-benchmarks of kiln-runtime's GEMM and convolution kernels: one-operator models built
//! in the `kiln_tflite` IR (float32 and int8, as the converter writes them), run through the
//! public `Interpreter` on one thread and on every core. Prints the median time per invoke
//! and the multiply-accumulates per second.
//!
//! `cargo bench -p kiln-runtime --bench kernels [-- FILTER]` (FILTER: a substring of the case
//! names, e.g. `int8` or `depthwise`).

use std::time::{Duration, Instant};

use kiln_runtime::Interpreter;
use kiln_tflite::{
    Activation, BuiltinOp, BuiltinOptions, Conv2DOptions, DepthwiseConv2DOptions,
    FullyConnectedOptions, Model, Operator, Padding, Quantization, Subgraph, Tensor, TensorType,
};

/// One operator's model and its multiply-accumulates per invoke.
struct Case {
    name: String,
    bytes: Vec<u8>,
    macs: usize,
}

#[derive(Clone, Copy)]
enum Layer {
    Conv {
        kernel: usize,
        stride: usize,
    },
    Depthwise {
        kernel: usize,
        stride: usize,
    },
    FullyConnected,
    /// A fully-connected layer whose weights are pruned in 1×16 blocks: `zero_percent` of the
    /// blocks zero (kiln-runtime takes its block-sparse product from 50% for float32, 80%
    /// for int8).
    PrunedFullyConnected {
        zero_percent: usize,
    },
}

/// Deterministic bytes (an LCG): benchmarks need no randomness crate.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as u8
        })
        .collect()
}

fn floats(n: usize, seed: u64) -> Vec<u8> {
    bytes(n, seed)
        .iter()
        .flat_map(|&b| (f32::from(b) / 128.0 - 1.0).to_le_bytes())
        .collect()
}

fn tensor(name: &str, shape: &[usize], dtype: TensorType, buffer: u32) -> Tensor {
    Tensor::new(name, shape, dtype, buffer)
}

fn quantized(mut t: Tensor, scales: Vec<f32>, zero_point: i64, axis: i32) -> Tensor {
    let n = scales.len();
    t.quantization = Some(Quantization {
        scale: scales,
        zero_point: vec![zero_point; n],
        quantized_dimension: axis,
        ..Default::default()
    });
    t
}

/// A model of one `layer` over an NHWC input (`[1, in_features]` for a fully connected layer),
/// float32 or int8 with per-channel filter scales.
fn case(layer: Layer, (h, w, c): (usize, usize, usize), out_c: usize, int8: bool) -> Case {
    let (op, filter_shape, out_shape, macs, options) = match layer {
        Layer::Conv { kernel, stride } => {
            let (oh, ow) = (h.div_ceil(stride), w.div_ceil(stride));
            (
                BuiltinOp::CONV_2D,
                vec![out_c, kernel, kernel, c],
                vec![1, oh, ow, out_c],
                oh * ow * out_c * kernel * kernel * c,
                BuiltinOptions::Conv2D(Conv2DOptions {
                    padding: Padding::Same,
                    stride_w: stride as i32,
                    stride_h: stride as i32,
                    activation: Activation::Relu6,
                    dilation_w: 1,
                    dilation_h: 1,
                }),
            )
        }
        Layer::Depthwise { kernel, stride } => {
            let (oh, ow) = (h.div_ceil(stride), w.div_ceil(stride));
            (
                BuiltinOp::DEPTHWISE_CONV_2D,
                vec![1, kernel, kernel, c],
                vec![1, oh, ow, c],
                oh * ow * c * kernel * kernel,
                BuiltinOptions::DepthwiseConv2D(DepthwiseConv2DOptions {
                    padding: Padding::Same,
                    stride_w: stride as i32,
                    stride_h: stride as i32,
                    depth_multiplier: 1,
                    activation: Activation::Relu6,
                    dilation_w: 1,
                    dilation_h: 1,
                }),
            )
        }
        Layer::FullyConnected | Layer::PrunedFullyConnected { .. } => (
            BuiltinOp::FULLY_CONNECTED,
            vec![out_c, c],
            vec![1, out_c],
            out_c * c,
            BuiltinOptions::FullyConnected(FullyConnectedOptions::default()),
        ),
    };
    let (input_shape, channels) = match layer {
        Layer::FullyConnected | Layer::PrunedFullyConnected { .. } => (vec![1, c], out_c),
        _ => (vec![1, h, w, c], *out_shape.last().unwrap_or(&out_c)),
    };
    let filter_len: usize = filter_shape.iter().product();
    let mut model = Model::new("kernel benchmark");
    let dtype = if int8 {
        TensorType::Int8
    } else {
        TensorType::Float32
    };
    let (mut filter_data, bias_data): (Vec<u8>, Vec<u8>) = if int8 {
        let filter = bytes(filter_len, 7)
            .into_iter()
            .map(|b| b.max(1)) // −127..=127, as the converter writes
            .collect();
        let bias = bytes(channels, 9)
            .iter()
            .flat_map(|&b| (i32::from(b) * 16 - 2048).to_le_bytes())
            .collect();
        (filter, bias)
    } else {
        (floats(filter_len, 7), floats(channels, 9))
    };
    if let Layer::PrunedFullyConnected { zero_percent } = layer {
        // Zero blocks of 16 weights (64 bytes of float32), spread evenly.
        let block_bytes = 16 * if int8 { 1 } else { 4 };
        for (b, block) in filter_data.chunks_mut(block_bytes).enumerate() {
            if (b * 37 % 100) < zero_percent {
                block.fill(0);
            }
        }
    }
    let filter_buffer = model.push_buffer(filter_data);
    let bias_buffer = model.push_buffer(bias_data);
    let opcode = model.intern_opcode(op, 1);
    let filter_axis = if matches!(layer, Layer::Depthwise { .. }) {
        3
    } else {
        0
    };
    let mut tensors = vec![
        tensor("input", &input_shape, dtype, 0),
        tensor("filter", &filter_shape, dtype, filter_buffer),
        tensor(
            "bias",
            &[channels],
            if int8 {
                TensorType::Int32
            } else {
                TensorType::Float32
            },
            bias_buffer,
        ),
        tensor("output", &out_shape, dtype, 0),
    ];
    if int8 {
        let filter_scales = vec![0.004f32; channels];
        tensors[0] = quantized(tensors[0].clone(), vec![0.02], -3, 0);
        tensors[1] = quantized(tensors[1].clone(), filter_scales, 0, filter_axis);
        tensors[2] = quantized(tensors[2].clone(), vec![0.02 * 0.004; channels], 0, 0);
        tensors[3] = quantized(tensors[3].clone(), vec![0.05], 4, 0);
    }
    model.subgraphs.push(Subgraph {
        name: Some("main".into()),
        tensors,
        inputs: vec![0],
        outputs: vec![3],
        operators: vec![Operator {
            opcode_index: opcode,
            inputs: vec![0, 1, 2],
            outputs: vec![3],
            options,
            custom_options: None,
            intermediates: vec![],
        }],
    });
    let kind = match layer {
        Layer::Conv { kernel, stride } => format!("conv {kernel}x{kernel}/{stride}"),
        Layer::Depthwise { kernel, stride } => format!("depthwise {kernel}x{kernel}/{stride}"),
        Layer::FullyConnected => "fully connected".into(),
        Layer::PrunedFullyConnected { zero_percent } => {
            format!("fully connected {zero_percent}% sparse 1x16")
        }
    };
    let shape = match layer {
        Layer::FullyConnected | Layer::PrunedFullyConnected { .. } => format!("{c} -> {out_c}"),
        _ => format!("{h}x{w}x{c} -> {out_c}"),
    };
    Case {
        name: format!("{} {kind} {shape}", if int8 { "int8" } else { "f32 " }),
        bytes: model.to_bytes().expect("the benchmark model serialises"),
        macs,
    }
}

/// Median time per invoke over about half a second.
fn time(case: &Case, threads: usize) -> Duration {
    let mut interpreter =
        Interpreter::from_bytes(case.bytes.clone()).expect("the benchmark model loads");
    interpreter.set_threads(threads).expect("threads start");
    let info = interpreter.input_info(0).expect("one input").clone();
    // Floats in [-1, 1) (random bytes would make denormals and NaNs), any byte for int8.
    let input = match info.dtype {
        TensorType::Float32 => floats(info.num_elements(), 11),
        _ => bytes(info.byte_size(), 11),
    };
    interpreter.set_input(0, &input).expect("input fits");
    for _ in 0..3 {
        interpreter.invoke().expect("invoke");
    }
    let started = Instant::now();
    interpreter.invoke().expect("invoke");
    let once = started.elapsed().max(Duration::from_micros(1));
    let runs = (Duration::from_millis(500).as_secs_f64() / once.as_secs_f64()).clamp(5.0, 5000.0);
    let mut times: Vec<Duration> = (0..runs as usize)
        .map(|_| {
            let started = Instant::now();
            interpreter.invoke().expect("invoke");
            started.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let all = std::thread::available_parallelism().map_or(1, usize::from);
    let mut cases = Vec::new();
    for int8 in [false, true] {
        cases.push(case(
            Layer::Conv {
                kernel: 1,
                stride: 1,
            },
            (56, 56, 64),
            64,
            int8,
        ));
        cases.push(case(
            Layer::Conv {
                kernel: 1,
                stride: 1,
            },
            (14, 14, 256),
            256,
            int8,
        ));
        cases.push(case(
            Layer::Conv {
                kernel: 3,
                stride: 1,
            },
            (28, 28, 64),
            64,
            int8,
        ));
        cases.push(case(
            Layer::Conv {
                kernel: 3,
                stride: 2,
            },
            (112, 112, 3),
            32,
            int8,
        ));
        cases.push(case(
            Layer::Depthwise {
                kernel: 3,
                stride: 1,
            },
            (56, 56, 96),
            96,
            int8,
        ));
        cases.push(case(
            Layer::Depthwise {
                kernel: 3,
                stride: 2,
            },
            (56, 56, 96),
            96,
            int8,
        ));
        // EfficientNet's 5×5 depthwise layers.
        cases.push(case(
            Layer::Depthwise {
                kernel: 5,
                stride: 1,
            },
            (14, 14, 480),
            480,
            int8,
        ));
        // The quickstart CNN's two convolutions: one input channel (runs of three bytes),
        // then 32 → 64.
        cases.push(case(
            Layer::Conv {
                kernel: 3,
                stride: 1,
            },
            (28, 28, 1),
            32,
            int8,
        ));
        cases.push(case(
            Layer::Conv {
                kernel: 3,
                stride: 1,
            },
            (14, 14, 32),
            64,
            int8,
        ));
        // A layer small enough that per-call costs dominate (the smallnet fixture's).
        cases.push(case(
            Layer::Conv {
                kernel: 3,
                stride: 2,
            },
            (12, 12, 3),
            8,
            int8,
        ));
        cases.push(case(Layer::FullyConnected, (1, 1, 1280), 1000, int8));
        // MACs count the dense layer's, so GMAC/s is the dense-equivalent rate.
        for zero_percent in [50, 80, 90] {
            cases.push(case(
                Layer::PrunedFullyConnected { zero_percent },
                (1, 1, 1280),
                1000,
                int8,
            ));
        }
    }
    println!("kiln-runtime kernels ({})", kiln_runtime::kernel_sets());
    println!(
        "{:<44} {:>12} {:>10} {:>14} {:>10}",
        "case",
        "1 thread ms",
        "GMAC/s",
        format!("{all} threads ms"),
        "GMAC/s"
    );
    for case in cases
        .iter()
        .filter(|c| filter.as_ref().is_none_or(|f| c.name.contains(f.as_str())))
    {
        let one = time(case, 1);
        let many = time(case, all);
        let rate = |t: Duration| case.macs as f64 / t.as_secs_f64() / 1e9;
        println!(
            "{:<44} {:>12.4} {:>10.1} {:>14.4} {:>10.1}",
            case.name,
            one.as_secs_f64() * 1e3,
            rate(one),
            many.as_secs_f64() * 1e3,
            rate(many)
        );
    }
}
