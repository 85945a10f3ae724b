//! Semantic validation of a parsed model before any kernel runs: every index in range, every
//! constant buffer the size its tensor declares, quantization parameter counts consistent,
//! and operators in an order where each input exists before it is read.

use kiln_tflite::{Model, SCHEMA_VERSION, Subgraph, Tensor};

use crate::error::RuntimeError;

/// The largest tensor kiln-runtime accepts (2 GiB, the flatbuffer limit): a corrupt shape
/// must be an error, not an allocation that aborts the process.
pub const MAX_TENSOR_BYTES: usize = 1 << 31;

/// The bytes a shape would span with every zero dimension counted as one (saturating). It
/// bounds every product of the shape's dimensions, in any order, times the element size: a
/// shape whose extent is at most `MAX_TENSOR_BYTES` is safe for kernels to multiply out, even
/// when a zero dimension makes the tensor empty (e.g. [0, 2^31 - 1, 2^31 - 1]).
pub fn extent(dims: impl IntoIterator<Item = usize>, element_size: usize) -> usize {
    dims.into_iter()
        .fold(element_size, |bytes, d| bytes.saturating_mul(d.max(1)))
}

fn invalid(msg: String) -> RuntimeError {
    RuntimeError::InvalidModel(msg)
}

/// Checks the model's first subgraph (the one the runtime executes).
pub fn validate(model: &Model) -> Result<(), RuntimeError> {
    if model.version != SCHEMA_VERSION {
        return Err(invalid(format!(
            "schema version {} (kiln-runtime reads version {SCHEMA_VERSION}, what TF 2.x converters write)",
            model.version
        )));
    }
    let Some(subgraph) = model.subgraphs.first() else {
        return Err(invalid("the model has no subgraph".into()));
    };
    for (index, tensor) in subgraph.tensors.iter().enumerate() {
        validate_tensor(model, index, tensor)?;
    }
    validate_graph(model, subgraph)
}

fn validate_tensor(model: &Model, index: usize, tensor: &Tensor) -> Result<(), RuntimeError> {
    let name = &tensor.name;
    if let Some(&dim) = tensor.shape.iter().find(|&&d| d < 0) {
        return Err(invalid(format!(
            "tensor {index} '{name}' has a dynamic dimension ({dim}) in shape {:?}; kiln-runtime needs static shapes",
            tensor.shape
        )));
    }
    // Negative dimensions were rejected above.
    let dims = tensor.shape.iter().map(|&d| d as usize);
    if extent(dims, tensor.dtype.element_size().unwrap_or(1)) > MAX_TENSOR_BYTES {
        return Err(invalid(format!(
            "tensor {index} '{name}' has a shape {:?} too large to address (over {MAX_TENSOR_BYTES} bytes)",
            tensor.shape
        )));
    }
    let buffer = model.buffers.get(tensor.buffer as usize).ok_or_else(|| {
        invalid(format!(
            "tensor {index} '{name}' refers to buffer {} but the model has {}",
            tensor.buffer,
            model.buffers.len()
        ))
    })?;
    if !buffer.data.is_empty() && tensor.sparsity.is_none() {
        match tensor.byte_size() {
            Some(expected) if expected == buffer.data.len() => {}
            Some(expected) => {
                return Err(invalid(format!(
                    "tensor {index} '{name}' ({} {:?}) needs {expected} bytes but its buffer {} holds {}",
                    tensor.dtype,
                    tensor.shape,
                    tensor.buffer,
                    buffer.data.len()
                )));
            }
            None => {} // variable-size types (strings) are checked by the kernels that read them
        }
    }
    if let Some(q) = &tensor.quantization
        && q.is_affine()
    {
        if !q.zero_point.is_empty() && q.zero_point.len() != q.scale.len() {
            return Err(invalid(format!(
                "tensor {index} '{name}' has {} scales but {} zero points",
                q.scale.len(),
                q.zero_point.len()
            )));
        }
        if q.scale.len() > 1 {
            let dim = usize::try_from(q.quantized_dimension)
                .ok()
                .and_then(|d| tensor.shape.get(d));
            match dim {
                Some(&channels) if channels as usize == q.scale.len() => {}
                _ => {
                    return Err(invalid(format!(
                        "tensor {index} '{name}' has {} per-channel scales along dimension {} of shape {:?}",
                        q.scale.len(),
                        q.quantized_dimension,
                        tensor.shape
                    )));
                }
            }
        }
        if q.scale.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(invalid(format!(
                "tensor {index} '{name}' has a non-positive or non-finite scale"
            )));
        }
    }
    Ok(())
}

fn validate_graph(model: &Model, subgraph: &Subgraph) -> Result<(), RuntimeError> {
    let count = subgraph.tensors.len();
    let tensor_index = |what: String, index: i32| -> Result<usize, RuntimeError> {
        usize::try_from(index)
            .ok()
            .filter(|&i| i < count)
            .ok_or_else(|| {
                invalid(format!(
                    "{what} refers to tensor {index} but the subgraph has {count} tensors"
                ))
            })
    };
    let has_data = |t: usize| !model.tensor_data(&subgraph.tensors[t]).is_empty();

    // `ready[t]`: t can be read — a constant, a graph input or already produced.
    let mut ready: Vec<bool> = (0..count).map(has_data).collect();
    for (i, &input) in subgraph.inputs.iter().enumerate() {
        ready[tensor_index(format!("graph input {i}"), input)?] = true;
    }
    for (op_index, op) in subgraph.operators.iter().enumerate() {
        if model.opcode_of(op).is_none() {
            return Err(invalid(format!(
                "operator {op_index} uses operator code {} but the model has {}",
                op.opcode_index,
                model.operator_codes.len()
            )));
        }
        for (slot, &input) in op.inputs.iter().enumerate() {
            if input < 0 {
                continue; // an omitted optional input
            }
            let t = tensor_index(format!("operator {op_index} input {slot}"), input)?;
            if !ready[t] {
                return Err(invalid(format!(
                    "operator {op_index} reads tensor {t} '{}' before any operator produces it",
                    subgraph.tensors[t].name
                )));
            }
        }
        for (slot, &output) in op.outputs.iter().enumerate() {
            let t = tensor_index(format!("operator {op_index} output {slot}"), output)?;
            if ready[t] {
                return Err(invalid(format!(
                    "operator {op_index} writes tensor {t} '{}', which is a constant, a graph input or already written",
                    subgraph.tensors[t].name
                )));
            }
            ready[t] = true;
        }
    }
    for (i, &output) in subgraph.outputs.iter().enumerate() {
        let t = tensor_index(format!("graph output {i}"), output)?;
        if !ready[t] {
            return Err(invalid(format!(
                "graph output {i} (tensor {t}) is never produced"
            )));
        }
    }
    Ok(())
}
