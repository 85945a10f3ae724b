//! Shared pieces of the data-movement kernels (SQUEEZE, TRANSPOSE, STRIDED_SLICE, PACK,
//! CONCATENATION, PAD, DEPTH_TO_SPACE, DENSIFY): element sizes, row-major strides, a strided
//! gather planned and bounds-checked at prepare time, block interleaving, per-tensor
//! quantization parameters, and folding of small integer results at prepare time (so shape
//! arithmetic such as SHAPE → STRIDED_SLICE → PACK → RESHAPE is known before running).

use kiln_tflite::TensorType;

use crate::error::RuntimeError;
use crate::kernels::{In, OpKernel, Out, Prep};
use crate::tensor::TensorInfo;

/// Every fixed-size element type the runtime knows; kernels that only move bytes take any.
pub const ANY_FIXED_SIZE: &[TensorType] = &[
    TensorType::Float32,
    TensorType::Float16,
    TensorType::Float64,
    TensorType::Int8,
    TensorType::UInt8,
    TensorType::Int16,
    TensorType::Int32,
    TensorType::Int64,
    TensorType::Bool,
];

/// Largest integer result folded at prepare time (the interpreter keeps constants up to this).
const MAX_FOLDED_BYTES: usize = 1 << 16;

/// Checks `tensor`'s type against `allowed` and returns its element size in bytes.
pub fn element_size(
    prep: &Prep<'_>,
    tensor: &TensorInfo,
    allowed: &[TensorType],
) -> Result<usize, RuntimeError> {
    prep.require_type(tensor, allowed)?;
    tensor
        .dtype
        .element_size()
        .ok_or_else(|| prep.unsupported(&format!("tensor type {} is not supported", tensor.dtype)))
}

/// Errors unless `b` has the same element type as `a`.
pub fn require_same_type(
    prep: &Prep<'_>,
    a: &TensorInfo,
    b: &TensorInfo,
) -> Result<(), RuntimeError> {
    if a.dtype != b.dtype {
        return Err(prep.bad(&format!(
            "tensor '{}' is {} but '{}' is {}",
            a.name, a.dtype, b.name, b.dtype
        )));
    }
    Ok(())
}

/// Row-major element strides of `shape`.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1usize; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    strides
}

/// Element count of `shape`, or an error when it does not fit in `limit`.
pub fn checked_elements(
    prep: &Prep<'_>,
    shape: &[usize],
    limit: usize,
) -> Result<usize, RuntimeError> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= limit)
        .ok_or_else(|| prep.bad(&format!("output shape {shape:?} is too large")))
}

/// `axis` (negative counts from the end) as an index below `rank`.
pub fn normalize_axis(prep: &Prep<'_>, axis: i32, rank: usize) -> Result<usize, RuntimeError> {
    let rank_i = i64::try_from(rank).unwrap_or(i64::MAX);
    let a = i64::from(axis);
    let a = if a < 0 { a + rank_i } else { a };
    if a < 0 || a >= rank_i {
        return Err(prep.bad(&format!("axis {axis} is out of range for rank {rank}")));
    }
    Ok(a as usize)
}

/// The int32 values of input `i`, which must be known before running (a constant or the
/// result of an operator computed at prepare). Empty tensors have no buffer, so no value.
pub fn known_i32s(prep: &Prep<'_>, i: usize, what: &str) -> Result<Vec<i32>, RuntimeError> {
    let info = prep.input(i)?;
    if info.num_elements() == 0 {
        return Ok(Vec::new());
    }
    let Some(values) = prep.input_i32s(i)? else {
        return Err(prep.unsupported(&format!(
            "the {what} '{}' is only known while running; kiln-runtime needs it constant",
            info.name
        )));
    };
    if values.len() != info.num_elements() {
        return Err(prep.bad(&format!(
            "the {what} '{}' holds {} values but has shape {:?}",
            info.name,
            values.len(),
            info.shape
        )));
    }
    Ok(values)
}

/// TFLite's legacy per-tensor parameters (`TfLiteTensor::params`): the single scale and zero
/// point, or (0, 0) for an unquantized or per-channel tensor.
pub fn per_tensor_params(tensor: &TensorInfo) -> (f32, i64) {
    match &tensor.quantization {
        Some(q) if q.scale.len() == 1 => (q.scale[0], q.zero_point.first().copied().unwrap_or(0)),
        _ => (0.0, 0),
    }
}

/// A copy that reads the input at strided positions and writes the output in order: output
/// element `(i_0, ..., i_k)` comes from input element `start + Σ i_d × step_d`. Planned at
/// prepare time, where every position it will read is checked to lie inside the input.
#[derive(Clone, Debug)]
pub struct Gather {
    /// Byte offset of the first element read.
    start: usize,
    /// (count, byte step) of each loop above the innermost run, outermost first.
    loops: Vec<(usize, isize)>,
    /// Bytes copied contiguously per innermost step (0 when the output is empty).
    run: usize,
    /// Output bytes written.
    total: usize,
}

impl Gather {
    /// `dims`: (count, step in elements) outermost first; `start`: element offset of the first
    /// element; `input_elements`: the input's element count. `None` if any position read would
    /// fall outside the input.
    pub fn new(
        elem: usize,
        start: usize,
        dims: &[(usize, isize)],
        input_elements: usize,
    ) -> Option<Self> {
        if dims.iter().any(|&(count, _)| count == 0) {
            return Some(Self {
                start: 0,
                loops: Vec::new(),
                run: 0,
                total: 0,
            });
        }
        // Bounds: the lowest and highest element reached.
        let (mut low, mut high) = (start as i128, start as i128);
        for &(count, step) in dims {
            let reach = (count as i128 - 1) * step as i128;
            if reach < 0 {
                low += reach;
            } else {
                high += reach;
            }
        }
        if low < 0 || high >= input_elements as i128 {
            return None;
        }
        // Drop unit loops and merge loops that walk memory contiguously.
        let mut merged: Vec<(usize, isize)> = Vec::with_capacity(dims.len());
        for &(count, step) in dims.iter().filter(|&&(count, _)| count != 1) {
            match merged.last_mut() {
                Some(last) if last.1 == step * count as isize => {
                    *last = (last.0 * count, step);
                }
                _ => merged.push((count, step)),
            }
        }
        let mut run = elem;
        if let Some(&(count, 1)) = merged.last() {
            run = count * elem;
            merged.pop();
        }
        let total = run * merged.iter().map(|&(count, _)| count).product::<usize>();
        let loops = merged
            .into_iter()
            .map(|(count, step)| (count, step * elem as isize))
            .collect();
        Some(Self {
            start: start * elem,
            loops,
            run,
            total,
        })
    }

    /// Output bytes written.
    #[cfg(test)]
    pub fn output_bytes(&self) -> usize {
        self.total
    }

    pub fn copy(&self, input: &[u8], output: &mut [u8]) {
        if self.total == 0 {
            return;
        }
        let mut index = vec![0usize; self.loops.len()];
        let mut src = self.start as isize;
        for chunk in output[..self.total].chunks_exact_mut(self.run) {
            let at = src as usize;
            chunk.copy_from_slice(&input[at..at + self.run]);
            for d in (0..self.loops.len()).rev() {
                let (count, step) = self.loops[d];
                index[d] += 1;
                src += step;
                if index[d] < count {
                    break;
                }
                index[d] = 0;
                src -= step * count as isize;
            }
        }
    }
}

/// Interleaves blocks: for each of `outer` steps, copies `blocks[i]` bytes from input `i`
/// (its `k`-th block), inputs in order — concatenation along an axis and PACK.
pub fn interleave(outer: usize, blocks: &[usize], inputs: &[&[u8]], output: &mut [u8]) {
    let mut at = 0;
    for k in 0..outer {
        for (input, &block) in inputs.iter().zip(blocks) {
            output[at..at + block].copy_from_slice(&input[k * block..(k + 1) * block]);
            at += block;
        }
    }
}

/// The present inputs of the operator at eval time, all of which prepare checked.
pub fn present<'a>(inputs: &'a [Option<In<'_>>]) -> Vec<&'a [u8]> {
    inputs.iter().flatten().map(|i| i.data).collect()
}

/// When output 0 is a small INT32/INT64 tensor and every input's value is known before
/// running, runs the kernel now and declares the result, so later operators (RESHAPE, ...)
/// can use it at prepare time, as TFLite does for constant and persistent tensors.
pub fn fold_known_output(prep: &Prep<'_>, kernel: &dyn OpKernel, output_shape: &[usize]) {
    let Ok(output) = prep.output(0) else { return };
    let Some(elem) = output.dtype.element_size() else {
        return;
    };
    if !matches!(output.dtype, TensorType::Int32 | TensorType::Int64) {
        return;
    }
    let Some(bytes) = output_shape
        .iter()
        .try_fold(elem, |acc, &d| acc.checked_mul(d))
        .filter(|&b| b <= MAX_FOLDED_BYTES)
    else {
        return;
    };
    let mut inputs = Vec::with_capacity(prep.op.inputs.len());
    for i in 0..prep.op.inputs.len() {
        let Some(info) = prep.optional_input(i) else {
            inputs.push(None);
            continue;
        };
        match prep.input_value(i) {
            Some(data) if data.len() == info.byte_size() => inputs.push(Some(In { data })),
            _ => return,
        }
    }
    let mut value = vec![0u8; bytes];
    kernel.eval(&inputs, &mut [Out { data: &mut value }]);
    prep.set_output_value(0, value);
}

/// The kernel of the operators that only gather their input (TRANSPOSE, STRIDED_SLICE,
/// DEPTH_TO_SPACE): the planned [`Gather`] itself.
impl OpKernel for Gather {
    fn eval(&self, inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]) {
        let Some(input) = &inputs[0] else {
            unreachable!("prepared")
        };
        self.copy(input.data, outputs[0].data);
    }
}

/// The kernel of the operators whose output is their input's bytes under another shape
/// (RESHAPE, SQUEEZE): copies the first `bytes`.
#[derive(Debug)]
pub struct CopyBytes {
    pub bytes: usize,
}

impl OpKernel for CopyBytes {
    fn eval(&self, inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]) {
        let Some(input) = &inputs[0] else {
            unreachable!("prepared")
        };
        outputs[0].data[..self.bytes].copy_from_slice(&input.data[..self.bytes]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gather(elem: usize, start: usize, dims: &[(usize, isize)], input: &[u8]) -> Vec<u8> {
        let g = Gather::new(elem, start, dims, input.len() / elem).expect("in bounds");
        let mut out = vec![0u8; g.output_bytes()];
        g.copy(input, &mut out);
        out
    }

    #[test]
    fn gather_transposes_and_reverses() {
        let input: Vec<u8> = (0..6).collect(); // [2, 3]
        assert_eq!(gather(1, 0, &[(3, 1), (2, 3)], &input), [0, 3, 1, 4, 2, 5]);
        assert_eq!(
            gather(1, 5, &[(2, -3), (3, -1)], &input),
            [5, 4, 3, 2, 1, 0]
        );
        // Contiguous rows merge into one run.
        assert_eq!(gather(1, 0, &[(2, 3), (3, 1)], &input), input);
        // Multi-byte elements.
        let words: Vec<u8> = (0..8).collect(); // two 4-byte elements
        assert_eq!(gather(4, 1, &[(1, 1)], &words), [4, 5, 6, 7]);
    }

    #[test]
    fn gather_rejects_out_of_bounds_and_handles_empty() {
        assert!(Gather::new(1, 0, &[(4, 2)], 6).is_none());
        assert!(Gather::new(1, 1, &[(2, -1)], 7).is_some());
        assert!(Gather::new(1, 0, &[(2, -1)], 7).is_none());
        let empty = Gather::new(4, 0, &[(3, 1), (0, 1)], 0).expect("empty is fine");
        assert_eq!(empty.output_bytes(), 0);
        empty.copy(&[], &mut []);
    }

    #[test]
    fn strides_are_row_major() {
        assert_eq!(strides(&[2, 3, 4]), [12, 4, 1]);
        assert_eq!(strides(&[]), Vec::<usize>::new());
    }
}
