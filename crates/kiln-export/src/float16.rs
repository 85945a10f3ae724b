//! The float16 variant: every float32 constant an operator reads (weights and biases) is stored
//! as FLOAT16 — half the bytes — and a DEQUANTIZE operator turns it back into the float32
//! tensor the original operator consumes. This is exactly what TF's converter writes for
//! `supported_types = [tf.float16]` (see tests/fixtures/smallnet_float16): the kernels stay
//! float32, so the file runs everywhere, and a GPU delegate may keep the weights in half
//! precision. Runtimes compute DEQUANTIZE of a constant once (TFLite) or per invoke.

use kiln_tflite::{BuiltinOp, BuiltinOptions, Model, Operator, Tensor, TensorType};

use crate::compact::compact;
use crate::error::ExportError;
use crate::graph::{consumers, float_values, single_subgraph, tensor_error};
use crate::versions;

/// float16's largest finite value: a weight beyond it would silently become infinite.
const F16_MAX: f32 = 65504.0;

/// Converts `model`'s float32 constants to FLOAT16 + DEQUANTIZE. Operators and their tensor
/// indices are unchanged: each original constant becomes the DEQUANTIZE output (same index
/// and name, no data) and a new `<name>/float16` tensor holds the half-precision data. The
/// DEQUANTIZE operators come first in the graph, as the converter orders them.
pub fn to_float16(model: &Model) -> Result<Model, ExportError> {
    let subgraph = single_subgraph(model)?;
    let readers = consumers(subgraph);
    let mut out = model.clone();
    let opcode_index = out.intern_opcode(BuiltinOp::DEQUANTIZE, versions::DEQUANTIZE_FLOAT16);
    let mut dequantize = Vec::new();
    let mut new_tensors = Vec::new();
    for (t, tensor) in subgraph.tensors.iter().enumerate() {
        if readers[t].is_empty() {
            continue;
        }
        let Some(values) = float_values(model, tensor) else {
            continue;
        };
        if let Some(v) = values.iter().find(|v| v.abs() > F16_MAX) {
            return Err(tensor_error(
                subgraph,
                t,
                format!("holds {v}, beyond float16's range (±{F16_MAX}); export fp32 instead"),
            ));
        }
        let halves = values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect();
        let buffer = out.push_buffer(halves);
        let index = subgraph.tensors.len() + new_tensors.len();
        new_tensors.push(Tensor {
            name: format!("{}/float16", tensor.name),
            dtype: TensorType::Float16,
            buffer,
            quantization: None,
            ..tensor.clone()
        });
        out.subgraphs[0].tensors[t].buffer = 0;
        dequantize.push(Operator {
            opcode_index,
            inputs: vec![index as i32],
            outputs: vec![t as i32],
            // The converter writes DEQUANTIZE without an options table.
            options: BuiltinOptions::None,
            custom_options: None,
            intermediates: Vec::new(),
        });
    }
    let graph = &mut out.subgraphs[0];
    graph.tensors.extend(new_tensors);
    graph.operators.splice(0..0, dequantize);
    compact(&mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_model::{run_real, sample, small_cnn};

    #[test]
    fn every_float_constant_becomes_float16_behind_a_dequantize() {
        let model = small_cnn();
        let fp16 = to_float16(&model).unwrap();
        let graph = &fp16.subgraphs[0];
        // 8 weights and biases → 8 DEQUANTIZE v3 first, then the original 6 operators.
        assert_eq!(graph.operators.len(), 6 + 8);
        for op in &graph.operators[..8] {
            let code = fp16.opcode_of(op).unwrap();
            assert_eq!((code.builtin, code.version), (BuiltinOp::DEQUANTIZE, 3));
            let input = &graph.tensors[op.inputs[0] as usize];
            let output = &graph.tensors[op.outputs[0] as usize];
            assert_eq!(input.dtype, TensorType::Float16);
            assert_eq!(output.dtype, TensorType::Float32);
            assert!(fp16.tensor_data(output).is_empty());
            assert_eq!(
                fp16.tensor_data(input).len(),
                2 * output.num_elements().unwrap()
            );
        }
        // The int32 reshape target is untouched; no float32 buffer remains.
        let float_bytes: usize = graph
            .tensors
            .iter()
            .filter(|t| t.dtype == TensorType::Float32)
            .map(|t| fp16.tensor_data(t).len())
            .sum();
        assert_eq!(float_bytes, 0);
        let before = model.to_bytes().unwrap().len();
        let after = fp16.to_bytes().unwrap().len();
        assert!(after * 100 < before * 60, "{after} vs {before} bytes");
        assert_eq!(fp16.signature_defs, model.signature_defs);
    }

    #[test]
    fn outputs_match_float32_to_half_precision() {
        let model = small_cnn();
        let fp16 = to_float16(&model).unwrap();
        for seed in 0..3 {
            let x = sample(seed);
            let (a, b) = (run_real(&model, &x), run_real(&fp16, &x));
            for (a, b) in a.iter().zip(&b) {
                assert!((a - b).abs() <= 1e-2 * (1.0 + a.abs()), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn values_beyond_float16_are_refused() {
        let mut model = small_cnn();
        let bias = model.subgraphs[0]
            .tensors
            .iter()
            .find(|t| t.name == "logits/bias")
            .unwrap()
            .buffer as usize;
        model.buffers[bias] = kiln_tflite::Buffer::from_vec(
            [1e6f32; 10].iter().flat_map(|v| v.to_le_bytes()).collect(),
        );
        let message = to_float16(&model).unwrap_err().to_string();
        assert!(
            message.contains("logits/bias") && message.contains("float16"),
            "{message}"
        );
    }
}
