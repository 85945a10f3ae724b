//! What an operator's kernel is (a prepared [`OpKernel`], evaluated on [`In`]puts and
//! [`Out`]puts) and what its `prepare` function sees ([`Prep`]: the operator, its tensors, the
//! values known before running, and helpers that turn problems into named errors).

use std::cell::RefCell;

use kiln_tflite::{Operator, TensorType};

use crate::error::RuntimeError;
use crate::tensor::TensorInfo;

/// An input of an operator at eval time (`None` for an omitted optional input).
pub struct In<'a> {
    pub data: &'a [u8],
}

/// An output of an operator at eval time.
pub struct Out<'a> {
    pub data: &'a mut [u8],
}

/// A prepared operator: parameters derived once at load time, evaluated on every invoke.
pub trait OpKernel: std::fmt::Debug + Send + Sync {
    fn eval(&self, inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]);

    /// Bytes the kernel made at prepare from the model's constants (weights packed for its
    /// microkernels, densified sparse weights, widened filters): memory beyond the arena.
    fn prepared_bytes(&self) -> usize {
        0
    }

    /// Whether eval reads input `i` (false for a constant the kernel copied into its own
    /// layout at prepare): the interpreter frees a value folded at prepare that no kernel
    /// reads.
    fn reads_input(&self, _i: usize) -> bool {
        true
    }

    /// Multiply-accumulates per invoke, for operators whose work grows faster than their
    /// tensors (convolutions, fully connected layers): a 9 × 17,920 filter over as large an
    /// image is a 1.6 MB model and 10^11 of them. Others report 0.
    fn multiply_accumulates(&self) -> usize {
        0
    }

    /// This operator as a quantized max pooling without padding whose windows tile its
    /// input, for folding into the operator that makes its input.
    fn tiling_max_pool(&self) -> Option<TilingMaxPool> {
        None
    }

    /// A kernel that computes this operator followed by `pool` in one pass, writing the
    /// pooled output (the interpreter then skips the pool), when this kernel can.
    fn fused_with_max_pool(&self, _pool: &TilingMaxPool) -> Option<Kernel> {
        None
    }
}

/// A quantized MAX_POOL_2D whose windows tile its input (stride = filter, no padding): every
/// input value lies in at most one window, and values past the last whole window in none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TilingMaxPool {
    /// (height, width).
    pub window: (usize, usize),
    /// The pooled output's (height, width).
    pub out: (usize, usize),
    /// The clamp of its fused activation, in the (shared) quantized type.
    pub range: (i32, i32),
}

pub type Kernel = Box<dyn OpKernel>;

/// What preparing an operator decided: its kernel and the shape (and, for operators whose
/// result is known before running, like SHAPE, the value) of each output.
pub struct Prepared {
    pub kernel: Kernel,
    pub outputs: Vec<PreparedOutput>,
}

#[derive(Clone, Debug, Default)]
pub struct PreparedOutput {
    pub shape: Option<Vec<usize>>,
    pub value: Option<Vec<u8>>,
}

/// What a kernel's `prepare` sees, with helpers that turn problems into named errors.
pub struct Prep<'a> {
    pub op_index: usize,
    pub name: String,
    pub version: i32,
    pub op: &'a Operator,
    pub tensors: &'a [TensorInfo],
    values: &'a [Option<Vec<u8>>],
    /// The file's constant data, per tensor (borrowed, never copied).
    constants: &'a [Option<&'a [u8]>],
    outputs: RefCell<Vec<PreparedOutput>>,
}

impl<'a> Prep<'a> {
    /// The context of operator `op_index` (`name`, `version`) over the subgraph's `tensors`;
    /// `values` and `constants` as [`super::prepare`] takes them.
    pub fn new(
        op_index: usize,
        name: String,
        version: i32,
        op: &'a Operator,
        tensors: &'a [TensorInfo],
        values: &'a [Option<Vec<u8>>],
        constants: &'a [Option<&'a [u8]>],
    ) -> Self {
        Self {
            op_index,
            name,
            version,
            op,
            tensors,
            values,
            constants,
            outputs: RefCell::new(vec![PreparedOutput::default(); op.outputs.len()]),
        }
    }

    /// What prepare declared for each output.
    pub fn into_outputs(self) -> Vec<PreparedOutput> {
        self.outputs.into_inner()
    }

    pub fn bad(&self, reason: &str) -> RuntimeError {
        RuntimeError::BadOperator {
            op_index: self.op_index,
            name: self.name.clone(),
            reason: reason.into(),
        }
    }

    pub fn unsupported(&self, reason: &str) -> RuntimeError {
        RuntimeError::Unsupported {
            op_index: self.op_index,
            name: self.name.clone(),
            version: self.version,
            reason: reason.into(),
        }
    }

    pub fn expect_arity(
        &self,
        inputs: std::ops::RangeInclusive<usize>,
        outputs: usize,
    ) -> Result<(), RuntimeError> {
        if !inputs.contains(&self.op.inputs.len()) || self.op.outputs.len() != outputs {
            return Err(self.bad(&format!(
                "expects {}..={} inputs and {outputs} output(s), has {} and {}",
                inputs.start(),
                inputs.end(),
                self.op.inputs.len(),
                self.op.outputs.len()
            )));
        }
        Ok(())
    }

    /// Input `i`, or `None` when it is omitted (index −1 or beyond the list).
    pub fn optional_input(&self, i: usize) -> Option<&'a TensorInfo> {
        let index = *self.op.inputs.get(i)?;
        usize::try_from(index)
            .ok()
            .and_then(|index| self.tensors.get(index))
    }

    pub fn input(&self, i: usize) -> Result<&'a TensorInfo, RuntimeError> {
        self.optional_input(i)
            .ok_or_else(|| self.bad(&format!("input {i} is missing")))
    }

    pub fn output(&self, i: usize) -> Result<&'a TensorInfo, RuntimeError> {
        let index = self
            .op
            .outputs
            .get(i)
            .and_then(|&t| usize::try_from(t).ok());
        index
            .and_then(|t| self.tensors.get(t))
            .ok_or_else(|| self.bad(&format!("output {i} is missing")))
    }

    pub fn require_type(
        &self,
        tensor: &TensorInfo,
        allowed: &[TensorType],
    ) -> Result<(), RuntimeError> {
        if allowed.contains(&tensor.dtype) {
            return Ok(());
        }
        let allowed: Vec<String> = allowed.iter().map(|t| t.name()).collect();
        Err(self.unsupported(&format!(
            "tensor '{}' has type {}; this kernel supports {}",
            tensor.name,
            tensor.dtype,
            allowed.join(", ")
        )))
    }

    pub fn require_rank(&self, tensor: &TensorInfo, rank: usize) -> Result<(), RuntimeError> {
        if tensor.shape.len() != rank {
            return Err(self.bad(&format!(
                "tensor '{}' has shape {:?}; expected rank {rank}",
                tensor.name, tensor.shape
            )));
        }
        Ok(())
    }

    /// The bytes of input `i` when known before running (a constant, or computed at prepare).
    pub fn input_value(&self, i: usize) -> Option<&'a [u8]> {
        let index = usize::try_from(*self.op.inputs.get(i)?).ok()?;
        self.values
            .get(index)?
            .as_deref()
            .or_else(|| self.constants.get(index).copied().flatten())
    }

    /// Input `i` as int32 values known before running (shapes, axes, paddings, ...).
    pub fn input_i32s(&self, i: usize) -> Result<Option<Vec<i32>>, RuntimeError> {
        let Some(info) = self.optional_input(i) else {
            return Ok(None);
        };
        let Some(bytes) = self.input_value(i) else {
            return Ok(None);
        };
        match info.dtype {
            TensorType::Int32 => Ok(Some(
                bytes
                    .chunks_exact(4)
                    .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            )),
            TensorType::Int64 => bytes
                .chunks_exact(8)
                .map(|b| {
                    let v = i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
                    i32::try_from(v)
                        .map_err(|_| self.bad(&format!("input {i} holds {v}, out of range")))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            other => Err(self.bad(&format!(
                "input {i} ('{}') must be INT32 or INT64, is {other}",
                info.name
            ))),
        }
    }

    /// Declares output `i`'s shape (operators compute their output shapes, as in TFLite).
    pub fn set_output_shape(&self, i: usize, shape: Vec<usize>) {
        if let Some(out) = self.outputs.borrow_mut().get_mut(i) {
            out.shape = Some(shape);
        }
    }

    /// Declares output `i`'s value, known before running.
    pub fn set_output_value(&self, i: usize, value: Vec<u8>) {
        if let Some(out) = self.outputs.borrow_mut().get_mut(i) {
            out.value = Some(value);
        }
    }

    pub fn require_shape(
        &self,
        tensor: &TensorInfo,
        expected: &[usize],
    ) -> Result<(), RuntimeError> {
        if tensor.shape != expected {
            return Err(self.bad(&format!(
                "tensor '{}' has shape {:?}; the operator computes {:?}",
                tensor.name, tensor.shape, expected
            )));
        }
        Ok(())
    }
}
