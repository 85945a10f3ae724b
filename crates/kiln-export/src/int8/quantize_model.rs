//! The full-integer rewrite of a float32 model, per the TFLite int8 quantization spec
//! (DESIGN.md): every float32 tensor becomes int8 — activations per tensor and asymmetric,
//! with parameters from their calibrated ranges; weights symmetric per output channel; biases
//! int32 on the accumulator's grid — and every operator takes the version the converter
//! writes for int8. Operators whose int8 kernels copy bytes (pooling, reshape) keep their
//! input's parameters; SOFTMAX and LOGISTIC (and TANH) have the fixed output parameters their
//! kernels assume; PAD keeps its input's (it fills with the zero point).

use kiln_tflite::quant::{QParams, asymmetric_int8_params};
use kiln_tflite::{BuiltinOp, Model, Subgraph, TensorType};

use super::Int8Options;
use super::calibrate::TensorRanges;
use super::constants::{per_tensor, quantize_constant, quantize_weights};
use super::io::wrap_io;
use crate::compact::compact;
use crate::error::ExportError;
use crate::graph::{
    consumers, input_index, inputs, is_constant, op_error, outputs, single_subgraph, tensor_error,
};
use crate::versions;

/// How an operator's output parameters are chosen.
#[derive(Clone, Copy, Debug)]
enum OutputParams {
    /// From the output's calibrated range.
    Calibrated,
    /// The input's: the int8 kernel moves or selects values without rescaling them.
    SameAsInput,
    /// Fixed by the kernel's output range: [0, 1) for SOFTMAX/LOGISTIC, [−1, 1) for TANH.
    Fixed(QParams),
}

/// The quantization rule of each operator full-integer export supports: the output-channel
/// axis of its weights (input 1, with an int32 bias at input 2) and its output parameters.
fn rule(op: BuiltinOp) -> Option<(Option<usize>, OutputParams)> {
    use OutputParams::*;
    Some(match op {
        BuiltinOp::CONV_2D | BuiltinOp::FULLY_CONNECTED => (Some(0), Calibrated),
        BuiltinOp::DEPTHWISE_CONV_2D => (Some(3), Calibrated),
        // PAD fills with the zero point: real 0 on the input's grid.
        BuiltinOp::MAX_POOL_2D
        | BuiltinOp::AVERAGE_POOL_2D
        | BuiltinOp::RESHAPE
        | BuiltinOp::PAD => (None, SameAsInput),
        BuiltinOp::SOFTMAX | BuiltinOp::LOGISTIC => (
            None,
            Fixed(QParams {
                scale: 1.0 / 256.0,
                zero_point: -128,
            }),
        ),
        BuiltinOp::TANH => (
            None,
            Fixed(QParams {
                scale: 1.0 / 128.0,
                zero_point: 0,
            }),
        ),
        BuiltinOp::RELU
        | BuiltinOp::RELU6
        | BuiltinOp::ADD
        | BuiltinOp::MUL
        | BuiltinOp::HARD_SWISH
        | BuiltinOp::MEAN => (None, Calibrated),
        _ => return None,
    })
}

const SUPPORTED: &str = "CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, MAX_POOL_2D, \
    AVERAGE_POOL_2D, RESHAPE, PAD, SOFTMAX, LOGISTIC, TANH, RELU, RELU6, HARD_SWISH, ADD, MUL \
    and MEAN";

/// Quantizes a float32 `model` to full int8 with activation `ranges` (from [`Calibrator`] or
/// QAT). Tensor indices are kept (float I/O adds tensors at the end); the inputs' and
/// outputs' element types follow `options.io`.
///
/// [`Calibrator`]: super::Calibrator
pub fn quantize_int8(
    model: &Model,
    ranges: &TensorRanges,
    options: &Int8Options,
) -> Result<Model, ExportError> {
    let subgraph = single_subgraph(model)?;
    let readers = consumers(subgraph);
    let mut out = model.clone();
    let mut params: Vec<Option<QParams>> = vec![None; subgraph.tensors.len()];
    for &t in &subgraph.inputs {
        let t = index(subgraph, t)?;
        params[t] = Some(calibrated(subgraph, ranges, t)?);
    }
    for (op_index, op) in subgraph.operators.iter().enumerate() {
        let builtin = model
            .opcode_of(op)
            .map(|c| c.builtin)
            .ok_or_else(|| op_error(model, op_index, "its operator code is out of range"))?;
        let (weights_axis, output_params) = rule(builtin).ok_or_else(|| {
            op_error(
                model,
                op_index,
                format!(
                    "full-integer export supports {SUPPORTED}; export fp32/fp16/dynamic instead"
                ),
            )
        })?;
        for (slot, t) in inputs(op) {
            let tensor = &subgraph.tensors[t];
            let weight_or_bias = weights_axis.is_some() && slot >= 1;
            if tensor.dtype != TensorType::Float32 || weight_or_bias || params[t].is_some() {
                continue;
            }
            if !is_constant(model, tensor) {
                return Err(tensor_error(
                    subgraph,
                    t,
                    "is read before an operator computes it",
                ));
            }
            params[t] = Some(quantize_constant(model, &mut out, t)?);
        }
        if let Some(axis) = weights_axis {
            let per_channel = builtin != BuiltinOp::FULLY_CONNECTED || options.per_channel_dense;
            quantize_weights(
                model,
                &mut out,
                op_index,
                &readers,
                &params,
                per_channel.then_some(axis),
            )?;
        }
        for t in outputs(op) {
            if subgraph.tensors[t].dtype != TensorType::Float32 {
                return Err(tensor_error(
                    subgraph,
                    t,
                    "is not float32; quantize the float model",
                ));
            }
            params[t] = Some(match output_params {
                OutputParams::Calibrated => calibrated(subgraph, ranges, t)?,
                OutputParams::SameAsInput => input_index(op, 0)
                    .and_then(|i| params[i])
                    .ok_or_else(|| op_error(model, op_index, "its input has no int8 parameters"))?,
                OutputParams::Fixed(p) => p,
            });
        }
        let version = versions::int8(builtin, &op.options)
            .ok_or_else(|| op_error(model, op_index, "has no known int8 version"))?;
        out.subgraphs[0].operators[op_index].opcode_index = out.intern_opcode(builtin, version);
    }
    for (t, p) in params.iter().enumerate() {
        if let Some(p) = p
            && !is_constant(model, &subgraph.tensors[t])
        {
            let tensor = &mut out.subgraphs[0].tensors[t];
            tensor.dtype = TensorType::Int8;
            tensor.quantization = Some(per_tensor(*p));
        }
    }
    wrap_io(&mut out, options.io)?;
    compact(&mut out);
    Ok(out)
}

fn index(subgraph: &Subgraph, t: i32) -> Result<usize, ExportError> {
    usize::try_from(t)
        .ok()
        .filter(|&t| t < subgraph.tensors.len())
        .ok_or_else(|| ExportError::Tensor {
            index: usize::try_from(t).unwrap_or(0),
            name: String::new(),
            reason: format!(
                "is a graph input, but the subgraph has {} tensors",
                subgraph.tensors.len()
            ),
        })
}

fn calibrated(
    subgraph: &Subgraph,
    ranges: &TensorRanges,
    t: usize,
) -> Result<QParams, ExportError> {
    ranges.get(t).map(asymmetric_int8_params).ok_or_else(|| {
        tensor_error(
            subgraph,
            t,
            "has no calibrated range: calibrate the float model it belongs to (Calibrator) first",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::int8::{Calibrator, IoType, Range};
    use crate::test_model::{run_real, sample, small_cnn};

    fn calibrated_int8(io: IoType) -> (Model, Model) {
        let model = small_cnn();
        let mut calibrator = Calibrator::new(&model).unwrap();
        for seed in 0..16 {
            calibrator.observe(&[&sample(seed)]).unwrap();
        }
        let ranges = calibrator.finish().unwrap();
        let options = Int8Options {
            io,
            ..Default::default()
        };
        let int8 = quantize_int8(&model, &ranges, &options).unwrap();
        (model, int8)
    }

    fn tensor<'a>(model: &'a Model, name: &str) -> &'a kiln_tflite::Tensor {
        model.subgraphs[0]
            .tensors
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
    }

    fn scale(model: &Model, name: &str) -> Vec<f32> {
        tensor(model, name)
            .quantization
            .as_ref()
            .unwrap()
            .scale
            .clone()
    }

    #[test]
    fn every_tensor_follows_the_int8_spec() {
        let (_, int8) = calibrated_int8(IoType::Int8);
        let graph = &int8.subgraphs[0];
        for t in &graph.tensors {
            let q = t.quantization.as_ref();
            match t.name.as_str() {
                "flatten/shape" => assert_eq!((t.dtype, q), (TensorType::Int32, None)),
                name if name.ends_with("/bias") => {
                    assert_eq!(t.dtype, TensorType::Int32, "{name}");
                    assert!(q.unwrap().zero_point.iter().all(|&z| z == 0));
                }
                name if name.ends_with("/filter") || name.ends_with("/weights") => {
                    assert_eq!(t.dtype, TensorType::Int8, "{name}");
                    let q = q.unwrap();
                    assert_eq!(q.scale.len(), t.shape[0] as usize, "{name}: per channel");
                    assert_eq!(q.quantized_dimension, 0);
                    let data = int8.tensor_data(t);
                    assert!(
                        data.iter().all(|&b| b as i8 >= -127),
                        "{name}: narrow range"
                    );
                }
                name => {
                    assert_eq!(t.dtype, TensorType::Int8, "{name}");
                    assert_eq!(q.unwrap().scale.len(), 1, "{name}: per tensor");
                }
            }
        }
        // Bias scale = input scale × weight scale, per channel.
        let (input, weights, bias) = (
            scale(&int8, "pool1")[0],
            scale(&int8, "conv2/filter"),
            scale(&int8, "conv2/bias"),
        );
        for (w, b) in weights.iter().zip(&bias) {
            assert_eq!(*b, (f64::from(input) * f64::from(*w)) as f32);
        }
        // Pooling and reshape keep their input's parameters; ReLU outputs start at −128.
        assert_eq!(
            tensor(&int8, "pool1").quantization,
            tensor(&int8, "conv1").quantization
        );
        assert_eq!(
            tensor(&int8, "flatten").quantization,
            tensor(&int8, "conv2").quantization
        );
        assert_eq!(
            tensor(&int8, "conv1")
                .quantization
                .as_ref()
                .unwrap()
                .zero_point,
            [-128]
        );
        // Images in [0, 1): the input grid is about 1/255 from −128.
        let image = tensor(&int8, "image").quantization.as_ref().unwrap();
        assert_eq!(image.zero_point, [-128]);
        assert!((image.scale[0] - 1.0 / 255.0).abs() < 1e-5);

        let versions: Vec<(BuiltinOp, i32)> = graph
            .operators
            .iter()
            .map(|op| {
                let c = int8.opcode_of(op).unwrap();
                (c.builtin, c.version)
            })
            .collect();
        assert_eq!(
            versions,
            [
                (BuiltinOp::CONV_2D, 3),
                (BuiltinOp::MAX_POOL_2D, 2),
                (BuiltinOp::CONV_2D, 3),
                (BuiltinOp::RESHAPE, 1),
                (BuiltinOp::FULLY_CONNECTED, 4),
                (BuiltinOp::FULLY_CONNECTED, 4),
            ]
        );
        assert_eq!(
            int8.operator_codes.len(),
            4,
            "no stale float operator codes"
        );
    }

    #[test]
    fn int8_outputs_track_the_float_model_and_the_file_shrinks() {
        let (model, int8) = calibrated_int8(IoType::Int8);
        let out_scale = scale(&int8, "logits")[0];
        for seed in 100..104 {
            let x = sample(seed);
            let (a, b) = (run_real(&model, &x), run_real(&int8, &x));
            let peak = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (a, b) in a.iter().zip(&b) {
                assert!(
                    (a - b).abs() <= 0.05 * peak + out_scale,
                    "{a} vs {b} (peak {peak})"
                );
            }
        }
        let (before, after) = (
            model.to_bytes().unwrap().len(),
            int8.to_bytes().unwrap().len(),
        );
        assert!(after * 100 < before * 35, "{after} vs {before} bytes");
    }

    #[test]
    fn float_and_uint8_io_wrap_the_same_int8_graph() {
        let (_, int8) = calibrated_int8(IoType::Int8);
        for io in [IoType::Float32, IoType::UInt8] {
            let (_, wrapped) = calibrated_int8(io);
            let graph = &wrapped.subgraphs[0];
            let first = wrapped.opcode_of(&graph.operators[0]).unwrap();
            let last = wrapped.opcode_of(graph.operators.last().unwrap()).unwrap();
            let dtype = if io == IoType::Float32 {
                assert_eq!((last.builtin, last.version), (BuiltinOp::DEQUANTIZE, 2));
                TensorType::Float32
            } else {
                assert_eq!((last.builtin, last.version), (BuiltinOp::QUANTIZE, 1));
                TensorType::UInt8
            };
            assert_eq!((first.builtin, first.version), (BuiltinOp::QUANTIZE, 1));
            let signature = &wrapped.signature_defs[0];
            for (map, &t) in signature
                .inputs
                .iter()
                .chain(&signature.outputs)
                .zip(graph.inputs.iter().chain(&graph.outputs))
            {
                assert_eq!(map.tensor_index as i32, t);
                assert_eq!(graph.tensors[t as usize].dtype, dtype);
                assert_eq!(graph.tensors[t as usize].name, map.name);
            }
            assert_eq!(tensor(&wrapped, "image/int8").dtype, TensorType::Int8);
            // The int8 core computes the same values: the outputs agree exactly once mapped
            // back to reals (QUANTIZE of float input = the int8 test's rounding).
            for seed in 0..3 {
                let x = sample(seed);
                assert_eq!(run_real(&wrapped, &x), run_real(&int8, &x), "{io:?}");
            }
        }
    }

    #[test]
    fn unsupported_operators_and_missing_ranges_are_named() {
        let model = small_cnn();
        let ranges = TensorRanges::new(model.subgraphs[0].tensors.len());
        let message = quantize_int8(&model, &ranges, &Int8Options::default())
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("'image'") && message.contains("calibrat"),
            "{message}"
        );

        let mut model = small_cnn();
        let pool = model.subgraphs[0].operators[1].opcode_index as usize;
        model.operator_codes[pool].builtin = BuiltinOp::SQUEEZE;
        let mut ranges = TensorRanges::new(model.subgraphs[0].tensors.len());
        for t in 0..model.subgraphs[0].tensors.len() {
            ranges.set(t, Range { min: 0.0, max: 1.0 });
        }
        let message = quantize_int8(&model, &ranges, &Int8Options::default())
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("SQUEEZE") && message.contains("supports"),
            "{message}"
        );
    }

    #[test]
    fn dense_layers_can_be_quantized_per_tensor() {
        let model = small_cnn();
        let mut calibrator = Calibrator::new(&model).unwrap();
        calibrator.observe(&[&sample(0)]).unwrap();
        let options = Int8Options {
            per_channel_dense: false,
            ..Default::default()
        };
        let int8 = quantize_int8(&model, &calibrator.finish().unwrap(), &options).unwrap();
        assert_eq!(scale(&int8, "dense1/weights").len(), 1);
        assert_eq!(scale(&int8, "dense1/bias").len(), 1);
        assert_eq!(scale(&int8, "conv2/filter").len(), 32);
    }
}
