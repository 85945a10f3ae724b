//! Dropping what a transform left unreferenced: the float32 buffers replaced by quantized or
//! float16 copies (otherwise the file would carry both, and no size saving) and operator
//! codes no operator uses any more (the converter lists only the codes a model needs).

use kiln_tflite::Model;

/// Removes unreferenced buffers (keeping the empty sentinel buffer 0) and operator codes,
/// renumbering the references to the ones that stay.
pub(crate) fn compact(model: &mut Model) {
    let mut used = vec![false; model.buffers.len()];
    if let Some(sentinel) = used.first_mut() {
        *sentinel = true;
    }
    let tensors = model.subgraphs.iter().flat_map(|s| &s.tensors);
    for buffer in tensors
        .map(|t| t.buffer)
        .chain(model.metadata.iter().map(|m| m.buffer))
    {
        if let Some(slot) = used.get_mut(buffer as usize) {
            *slot = true;
        }
    }
    let buffer_map = renumber(&used);
    let buffers = std::mem::take(&mut model.buffers);
    model.buffers = buffers
        .into_iter()
        .zip(&used)
        .filter_map(|(b, &keep)| keep.then_some(b))
        .collect();
    for tensor in model.subgraphs.iter_mut().flat_map(|s| &mut s.tensors) {
        if let Some(Some(new)) = buffer_map.get(tensor.buffer as usize) {
            tensor.buffer = *new;
        }
    }
    for entry in &mut model.metadata {
        if let Some(Some(new)) = buffer_map.get(entry.buffer as usize) {
            entry.buffer = *new;
        }
    }

    let mut used = vec![false; model.operator_codes.len()];
    for op in model.subgraphs.iter().flat_map(|s| &s.operators) {
        if let Some(slot) = used.get_mut(op.opcode_index as usize) {
            *slot = true;
        }
    }
    let code_map = renumber(&used);
    let codes = std::mem::take(&mut model.operator_codes);
    model.operator_codes = codes
        .into_iter()
        .zip(&used)
        .filter_map(|(c, &keep)| keep.then_some(c))
        .collect();
    for op in model.subgraphs.iter_mut().flat_map(|s| &mut s.operators) {
        if let Some(Some(new)) = code_map.get(op.opcode_index as usize) {
            op.opcode_index = *new;
        }
    }
}

/// New index of each kept entry, in order.
fn renumber(keep: &[bool]) -> Vec<Option<u32>> {
    let mut next = 0u32;
    keep.iter()
        .map(|&k| {
            k.then(|| {
                next += 1;
                next - 1
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use kiln_tflite::BuiltinOp;

    use super::*;
    use crate::test_model::small_cnn;

    #[test]
    fn unreferenced_buffers_and_codes_go_and_references_follow() {
        let mut model = small_cnn();
        let before = model.clone();
        // An orphan buffer in the middle and an unused operator code at the front.
        model
            .buffers
            .insert(1, kiln_tflite::Buffer::from_vec(vec![1, 2, 3]));
        for t in &mut model.subgraphs[0].tensors {
            if t.buffer >= 1 {
                t.buffer += 1;
            }
        }
        model.operator_codes.insert(
            0,
            kiln_tflite::OperatorCode {
                builtin: BuiltinOp::TANH,
                custom_code: None,
                version: 1,
            },
        );
        for op in &mut model.subgraphs[0].operators {
            op.opcode_index += 1;
        }
        compact(&mut model);
        assert_eq!(model, before);
    }
}
