//! The element type at an int8 model's boundary. Inside, every tensor is int8; at the edges
//! the converter either leaves int8 (callers quantize), or adds conversion operators so that
//! callers keep feeding what they fed the float model (float32) or raw bytes (uint8):
//! QUANTIZE float32 → int8 / DEQUANTIZE int8 → float32, or QUANTIZE uint8 ↔ int8 (same scale,
//! zero point + 128, an exact shift).

use kiln_tflite::{
    BuiltinOp, BuiltinOptions, Model, Operator, Quantization, SignatureDef, Subgraph, Tensor,
    TensorType,
};

use super::IoType;
use crate::error::ExportError;
use crate::graph::tensor_error;
use crate::versions;

/// Gives the (int8) model `io`-typed inputs and outputs. The new boundary tensors take the
/// original names and the signature's entries; the int8 tensors inside are renamed
/// `<name>/int8`.
pub(super) fn wrap_io(model: &mut Model, io: IoType) -> Result<(), ExportError> {
    let dtype = match io {
        IoType::Int8 => return Ok(()),
        IoType::UInt8 => TensorType::UInt8,
        IoType::Float32 => TensorType::Float32,
    };
    let quantize = model.intern_opcode(BuiltinOp::QUANTIZE, versions::QUANTIZE);
    let output_opcode = match io {
        IoType::Float32 => model.intern_opcode(BuiltinOp::DEQUANTIZE, versions::DEQUANTIZE_INT8),
        _ => quantize,
    };
    let graph = &mut model.subgraphs[0];
    let mut renamed = Vec::new();
    let mut front = Vec::new();
    for i in 0..graph.inputs.len() {
        let inner = graph.inputs[i];
        let outer = boundary_tensor(graph, inner, dtype)?;
        front.push(convert(quantize, outer, inner));
        graph.inputs[i] = outer;
        renamed.push((inner, outer));
    }
    let mut back = Vec::new();
    for i in 0..graph.outputs.len() {
        let inner = graph.outputs[i];
        let outer = boundary_tensor(graph, inner, dtype)?;
        back.push(convert(output_opcode, inner, outer));
        graph.outputs[i] = outer;
        renamed.push((inner, outer));
    }
    graph.operators.splice(0..0, front);
    graph.operators.extend(back);
    for signature in model
        .signature_defs
        .iter_mut()
        .filter(|s| s.subgraph_index == 0)
    {
        retarget(signature, &renamed);
    }
    Ok(())
}

/// Appends the `dtype` twin of int8 tensor `inner` and returns its index.
fn boundary_tensor(
    graph: &mut Subgraph,
    inner: i32,
    dtype: TensorType,
) -> Result<i32, ExportError> {
    let t = usize::try_from(inner)
        .ok()
        .filter(|&t| t < graph.tensors.len())
        .ok_or_else(|| ExportError::Tensor {
            index: 0,
            name: String::new(),
            reason: format!("graph input/output {inner} is out of range"),
        })?;
    let tensor = &graph.tensors[t];
    let Some((scale, zero_point)) = tensor
        .quantization
        .as_ref()
        .filter(|q| q.scale.len() == 1 && q.zero_point.len() == 1)
        .map(|q| (q.scale[0], q.zero_point[0]))
    else {
        return Err(tensor_error(graph, t, "has no per-tensor int8 parameters"));
    };
    let quantization = (dtype == TensorType::UInt8).then(|| Quantization {
        scale: vec![scale],
        zero_point: vec![zero_point + 128],
        ..Default::default()
    });
    let outer = Tensor {
        dtype,
        buffer: 0,
        quantization,
        ..tensor.clone()
    };
    graph.tensors[t].name = format!("{}/int8", outer.name);
    graph.tensors.push(outer);
    Ok(graph.tensors.len() as i32 - 1)
}

/// A QUANTIZE or DEQUANTIZE from `from` to `to`; the converter writes no options table for
/// either.
fn convert(opcode_index: u32, from: i32, to: i32) -> Operator {
    Operator {
        opcode_index,
        inputs: vec![from],
        outputs: vec![to],
        options: BuiltinOptions::None,
        custom_options: None,
        intermediates: Vec::new(),
    }
}

fn retarget(signature: &mut SignatureDef, renamed: &[(i32, i32)]) {
    for map in signature
        .inputs
        .iter_mut()
        .chain(signature.outputs.iter_mut())
    {
        if let Some(&(_, outer)) = renamed
            .iter()
            .find(|&&(inner, _)| i64::from(inner) == i64::from(map.tensor_index))
        {
            map.tensor_index = outer as u32;
        }
    }
}
