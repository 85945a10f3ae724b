//! Typed views over raw tensor bytes, and the static facts about each tensor the kernels use.

use kiln_tflite::{Quantization, Sparsity, TensorType};

/// What a kernel knows about a tensor besides its data.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: TensorType,
    pub quantization: Option<Quantization>,
    /// Constant data stored in a sparse format (only DENSIFY reads it).
    pub sparse: bool,
    /// The sparse format's parameters, when `sparse`.
    pub sparsity: Option<Sparsity>,
}

impl TensorInfo {
    /// Saturates at `usize::MAX` (still exact whenever a dimension is 0): the interpreter
    /// rejects any tensor over `MAX_TENSOR_BYTES`, so a shape too large to address is an
    /// error rather than an overflow.
    pub fn num_elements(&self) -> usize {
        self.shape.iter().fold(1usize, |n, &d| n.saturating_mul(d))
    }

    pub fn byte_size(&self) -> usize {
        self.num_elements()
            .saturating_mul(self.dtype.element_size().unwrap_or(0))
    }
}

/// Reinterprets bytes as `f32`s. The arena and borrowed weights are aligned by construction
/// (the loader copies any misaligned constant), so a misaligned slice is a bug, not bad input.
pub fn as_f32(bytes: &[u8]) -> &[f32] {
    // SAFETY: every bit pattern is a valid f32; align_to only yields the aligned middle part.
    let (prefix, floats, suffix) = unsafe { bytes.align_to::<f32>() };
    assert!(
        prefix.is_empty() && suffix.is_empty(),
        "tensor data is not 4-byte aligned"
    );
    floats
}

pub fn as_f32_mut(bytes: &mut [u8]) -> &mut [f32] {
    // SAFETY: as in `as_f32`; the slice is uniquely borrowed.
    let (prefix, floats, suffix) = unsafe { bytes.align_to_mut::<f32>() };
    assert!(
        prefix.is_empty() && suffix.is_empty(),
        "tensor data is not 4-byte aligned"
    );
    floats
}

pub fn as_i32(bytes: &[u8]) -> &[i32] {
    // SAFETY: every bit pattern is a valid i32; align_to only yields the aligned middle part.
    let (prefix, ints, suffix) = unsafe { bytes.align_to::<i32>() };
    assert!(
        prefix.is_empty() && suffix.is_empty(),
        "tensor data is not 4-byte aligned"
    );
    ints
}

/// Whether constant data can be read in place: kernels view it as 4-byte elements (f32/i32;
/// wider types are read byte-wise), so 4-byte alignment is what matters.
pub fn is_aligned_for_words(bytes: &[u8]) -> bool {
    (bytes.as_ptr() as usize).is_multiple_of(4)
}
