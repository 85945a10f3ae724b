//! Small read-only helpers over the IR that every transform needs.

use kiln_tflite::{Model, Operator, Subgraph, Tensor, TensorType};

use crate::error::ExportError;

/// The transforms rewrite one graph; TFLite models from Kiln's lowering (and most converter
/// output) have exactly one subgraph.
pub(crate) fn single_subgraph(model: &Model) -> Result<&Subgraph, ExportError> {
    match &model.subgraphs[..] {
        [subgraph] => Ok(subgraph),
        other => Err(ExportError::Subgraphs(other.len())),
    }
}

/// The tensor index at input `slot` of `op`, `None` when the input is omitted (−1) or absent.
pub(crate) fn input_index(op: &Operator, slot: usize) -> Option<usize> {
    op.inputs.get(slot).and_then(|&t| usize::try_from(t).ok())
}

/// The tensor indices an operator reads, skipping omitted inputs.
pub(crate) fn inputs(op: &Operator) -> impl Iterator<Item = (usize, usize)> + '_ {
    (0..op.inputs.len()).filter_map(|slot| input_index(op, slot).map(|t| (slot, t)))
}

/// The tensor indices an operator writes.
pub(crate) fn outputs(op: &Operator) -> impl Iterator<Item = usize> + '_ {
    op.outputs.iter().filter_map(|&t| usize::try_from(t).ok())
}

/// For each tensor, the (operator index, input slot) pairs that read it: a weight read by two
/// operators cannot take two different quantizations.
pub(crate) fn consumers(subgraph: &Subgraph) -> Vec<Vec<(usize, usize)>> {
    let mut readers = vec![Vec::new(); subgraph.tensors.len()];
    for (op_index, op) in subgraph.operators.iter().enumerate() {
        for (slot, t) in inputs(op) {
            if let Some(list) = readers.get_mut(t) {
                list.push((op_index, slot));
            }
        }
    }
    readers
}

/// The values of a dense float32 constant, or `None` when the tensor is not one (no data,
/// another type, sparse storage, or a buffer whose size does not match its shape).
pub(crate) fn float_values(model: &Model, tensor: &Tensor) -> Option<Vec<f32>> {
    if tensor.dtype != TensorType::Float32 || tensor.sparsity.is_some() {
        return None;
    }
    let data = model.tensor_data(tensor);
    if data.is_empty() || Some(data.len()) != tensor.byte_size() {
        return None;
    }
    Some(
        data.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

/// Whether the tensor carries constant data in the file.
pub(crate) fn is_constant(model: &Model, tensor: &Tensor) -> bool {
    !model.tensor_data(tensor).is_empty()
}

/// A tensor's shape as sizes (negative dimensions, which constants never have, become 0).
pub(crate) fn dims(tensor: &Tensor) -> Vec<usize> {
    tensor
        .shape
        .iter()
        .map(|&d| usize::try_from(d).unwrap_or(0))
        .collect()
}

/// The builtin name of operator `op_index`, for error messages.
pub(crate) fn op_name(model: &Model, op: &Operator) -> String {
    model
        .opcode_of(op)
        .map_or_else(|| "unknown operator".into(), |c| c.builtin.name())
}

pub(crate) fn op_error(model: &Model, op_index: usize, reason: impl Into<String>) -> ExportError {
    let op = &model.subgraphs[0].operators[op_index];
    ExportError::Operator {
        op_index,
        op: op_name(model, op),
        reason: reason.into(),
    }
}

pub(crate) fn tensor_error(
    subgraph: &Subgraph,
    index: usize,
    reason: impl Into<String>,
) -> ExportError {
    ExportError::Tensor {
        index,
        name: subgraph
            .tensors
            .get(index)
            .map_or_else(String::new, |t| t.name.clone()),
        reason: reason.into(),
    }
}
