//! The constants of a full-integer model: weights symmetric int8 per output channel, biases
//! int32 on the grid of the accumulator they are added to (input_scale × weight_scale), and
//! any other float constant (an ADD operand, say) per-tensor int8 from its own range.

use kiln_tflite::quant::{
    QParams, Range, asymmetric_int8_params, int8_weight_axis, quantize_symmetric,
};
use kiln_tflite::{Model, Quantization, TensorType};

use super::bias::quantize_bias;
use crate::error::ExportError;
use crate::graph::{dims, float_values, input_index, op_error, tensor_error};

/// Per-tensor quantization parameters as the IR stores them.
pub(super) fn per_tensor(p: QParams) -> Quantization {
    Quantization {
        scale: vec![p.scale],
        zero_point: vec![i64::from(p.zero_point)],
        ..Default::default()
    }
}

/// A float constant that is not a weight or bias (e.g. an ADD operand): per-tensor int8 from
/// its own value range.
pub(super) fn quantize_constant(
    model: &Model,
    out: &mut Model,
    t: usize,
) -> Result<QParams, ExportError> {
    let subgraph = &model.subgraphs[0];
    let values = float_values(model, &subgraph.tensors[t])
        .ok_or_else(|| tensor_error(subgraph, t, "is a float32 constant of the wrong size"))?;
    let (min, max) = values
        .iter()
        .fold((0.0f32, 0.0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let p = asymmetric_int8_params(Range { min, max });
    let buffer = out.push_buffer(values.iter().map(|&v| p.quantize(v) as u8).collect());
    let tensor = &mut out.subgraphs[0].tensors[t];
    tensor.dtype = TensorType::Int8;
    tensor.buffer = buffer;
    tensor.quantization = Some(per_tensor(p));
    Ok(p)
}

/// Weights (input 1) symmetric int8 along `axis` (per tensor when `None`), bias (input 2)
/// int32 with scale input_scale × weight_scale per channel.
pub(super) fn quantize_weights(
    model: &Model,
    out: &mut Model,
    op_index: usize,
    readers: &[Vec<(usize, usize)>],
    params: &[Option<QParams>],
    axis: Option<usize>,
) -> Result<(), ExportError> {
    let subgraph = &model.subgraphs[0];
    let op = &subgraph.operators[op_index];
    let err = |reason: String| op_error(model, op_index, reason);
    let input_scale = input_index(op, 0)
        .and_then(|t| params[t])
        .ok_or_else(|| err("its input has no int8 parameters".into()))?
        .scale;
    let w = input_index(op, 1).ok_or_else(|| err("has no weights".into()))?;
    let mut constants = vec![w];
    constants.extend(input_index(op, 2));
    for &t in &constants {
        if readers[t].len() != 1 {
            return Err(err(format!(
                "'{}' is read by {} operators; each needs its own quantized copy",
                subgraph.tensors[t].name,
                readers[t].len()
            )));
        }
    }
    let tensor = &subgraph.tensors[w];
    let values = float_values(model, tensor).ok_or_else(|| {
        err(format!(
            "weights '{}' are not a float32 constant",
            tensor.name
        ))
    })?;
    let shape = dims(tensor);
    // A clustered weight per tensor (its channels share one grid), others per channel.
    let axis = int8_weight_axis(&values, axis);
    let q = quantize_symmetric(&values, &shape, axis)
        .ok_or_else(|| err(format!("weights '{}' have shape {shape:?}", tensor.name)))?;
    let buffer = out.push_buffer(q.values.iter().map(|&v| v as u8).collect());
    let target = &mut out.subgraphs[0].tensors[w];
    target.dtype = TensorType::Int8;
    target.buffer = buffer;
    target.quantization = Some(Quantization {
        scale: q.scales.clone(),
        zero_point: vec![0; q.scales.len()],
        quantized_dimension: axis.unwrap_or(0) as i32,
        ..Default::default()
    });
    let Some(b) = input_index(op, 2) else {
        return Ok(());
    };
    let tensor = &subgraph.tensors[b];
    let values = float_values(model, tensor)
        .ok_or_else(|| err(format!("bias '{}' is not a float32 constant", tensor.name)))?;
    let (quantized, scales) = quantize_bias(&values, input_scale, &q.scales).ok_or_else(|| {
        err(format!(
            "bias '{}' has {} values for {} weight scales",
            tensor.name,
            values.len(),
            q.scales.len()
        ))
    })?;
    let buffer = out.push_buffer(quantized.iter().flat_map(|v| v.to_le_bytes()).collect());
    let target = &mut out.subgraphs[0].tensors[b];
    target.dtype = TensorType::Int32;
    target.buffer = buffer;
    target.quantization = Some(Quantization {
        zero_point: vec![0; scales.len()],
        scale: scales,
        quantized_dimension: 0,
        ..Default::default()
    });
    Ok(())
}
