//! The dynamic-range variant (the converter's `optimizations = [DEFAULT]` without a
//! representative set): weights of CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED become
//! symmetric int8 per output channel, activations stay float32. Hybrid kernels quantize each
//! input on the fly (asymmetrically: `asymmetric_quantize_inputs` for FULLY_CONNECTED, always
//! for per-channel convolutions), run the int8 dot products and rescale to float. Weights
//! stay int8 in memory: a quarter of the bytes, and faster on integer SIMD.
//!
//! As the converter: biases stay float32, and weights with fewer than
//! [`MIN_ELEMENTS_FOR_WEIGHTS`] elements stay float32 (quantizing them saves little and costs
//! accuracy). The operator versions are the converter's for per-channel hybrid operators
//! (tests/fixtures/hybrid_dynamic_range: CONV_2D v5, DEPTHWISE_CONV_2D v6, FULLY_CONNECTED
//! v12).

use kiln_tflite::quant::quantize_symmetric;
use kiln_tflite::{BuiltinOp, BuiltinOptions, Model, Quantization, TensorType};

use crate::compact::compact;
use crate::error::ExportError;
use crate::graph::{consumers, dims, float_values, input_index, op_error, single_subgraph};
use crate::versions;

/// The converter's minimum weight size for dynamic-range quantization
/// (`min_elements_for_weights`, 1,024).
pub const MIN_ELEMENTS_FOR_WEIGHTS: usize = 1024;

/// The output-channel axis of each hybrid-capable operator's weights (input 1).
fn channel_axis(op: BuiltinOp) -> Option<usize> {
    match op {
        BuiltinOp::CONV_2D | BuiltinOp::FULLY_CONNECTED => Some(0),
        BuiltinOp::DEPTHWISE_CONV_2D => Some(3),
        _ => None,
    }
}

/// Quantizes `model`'s large conv / depthwise / fully-connected weights to int8 per channel.
/// A weight tensor read by several operators is quantized only if each of them reads it as
/// its weights (it then has one quantization for all).
pub fn to_dynamic_range(model: &Model) -> Result<Model, ExportError> {
    let subgraph = single_subgraph(model)?;
    let readers = consumers(subgraph);
    let mut out = model.clone();
    let mut quantized = vec![false; subgraph.tensors.len()];
    for (op_index, op) in subgraph.operators.iter().enumerate() {
        let Some(code) = model.opcode_of(op) else {
            return Err(op_error(
                model,
                op_index,
                "its operator code is out of range",
            ));
        };
        let Some(axis) = channel_axis(code.builtin) else {
            continue;
        };
        let Some(w) = input_index(op, 1) else {
            continue;
        };
        let weight_slots_only = readers[w].iter().all(|&(reader, slot)| {
            slot == 1
                && model
                    .opcode_of(&subgraph.operators[reader])
                    .is_some_and(|c| channel_axis(c.builtin).is_some())
        });
        let tensor = &subgraph.tensors[w];
        if !quantized[w] {
            let Some(values) = float_values(model, tensor) else {
                continue;
            };
            if values.len() < MIN_ELEMENTS_FOR_WEIGHTS || !weight_slots_only {
                continue;
            }
            let shape = dims(tensor);
            let q = quantize_symmetric(&values, &shape, Some(axis)).ok_or_else(|| {
                op_error(
                    model,
                    op_index,
                    format!("weights '{}' have shape {shape:?}", tensor.name),
                )
            })?;
            let buffer = out.push_buffer(q.values.iter().map(|&v| v as u8).collect());
            let target = &mut out.subgraphs[0].tensors[w];
            target.dtype = TensorType::Int8;
            target.buffer = buffer;
            target.quantization = Some(Quantization {
                zero_point: vec![0; q.scales.len()],
                scale: q.scales,
                quantized_dimension: axis as i32,
                ..Default::default()
            });
            quantized[w] = true;
        }
        let version = versions::hybrid_per_channel(code.builtin)
            .ok_or_else(|| op_error(model, op_index, "has no hybrid version"))?;
        let opcode_index = out.intern_opcode(code.builtin, version);
        let target = &mut out.subgraphs[0].operators[op_index];
        target.opcode_index = opcode_index;
        if let BuiltinOptions::FullyConnected(options) = &mut target.options {
            options.asymmetric_quantize_inputs = true;
        }
    }
    compact(&mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_model::{run_real, sample, small_cnn};

    #[test]
    fn large_weights_become_per_channel_int8_and_small_ones_stay_float() {
        let model = small_cnn();
        let dynamic = to_dynamic_range(&model).unwrap();
        let graph = &dynamic.subgraphs[0];
        let tensor = |name: &str| graph.tensors.iter().find(|t| t.name == name).unwrap();
        for (name, channels) in [("conv2/filter", 32), ("dense1/weights", 16)] {
            let t = tensor(name);
            assert_eq!(t.dtype, TensorType::Int8, "{name}");
            let q = t.quantization.as_ref().unwrap();
            assert_eq!((q.scale.len(), q.zero_point.len()), (channels, channels));
            assert!(q.zero_point.iter().all(|&z| z == 0));
            assert_eq!(dynamic.tensor_data(t).len(), t.num_elements().unwrap());
        }
        for name in [
            "conv1/filter",
            "logits/weights",
            "conv2/bias",
            "dense1/bias",
        ] {
            assert_eq!(tensor(name).dtype, TensorType::Float32, "{name}");
        }
        let versions: Vec<(BuiltinOp, i32)> = graph
            .operators
            .iter()
            .map(|op| {
                let c = dynamic.opcode_of(op).unwrap();
                (c.builtin, c.version)
            })
            .collect();
        assert_eq!(
            versions,
            [
                (BuiltinOp::CONV_2D, 1),
                (BuiltinOp::MAX_POOL_2D, 1),
                (BuiltinOp::CONV_2D, 5),
                (BuiltinOp::RESHAPE, 1),
                (BuiltinOp::FULLY_CONNECTED, 12),
                (BuiltinOp::FULLY_CONNECTED, 1),
            ]
        );
        let BuiltinOptions::FullyConnected(options) = &graph.operators[4].options else {
            panic!("dense1 options")
        };
        assert!(options.asymmetric_quantize_inputs);
        assert!(dynamic.to_bytes().unwrap().len() < model.to_bytes().unwrap().len() / 2);
    }

    #[test]
    fn hybrid_outputs_stay_close_to_float() {
        let model = small_cnn();
        let dynamic = to_dynamic_range(&model).unwrap();
        for seed in 0..3 {
            let x = sample(seed);
            let (a, b) = (run_real(&model, &x), run_real(&dynamic, &x));
            let peak = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (a, b) in a.iter().zip(&b) {
                assert!((a - b).abs() <= 0.05 * peak, "{a} vs {b} (peak {peak})");
            }
        }
    }
}
