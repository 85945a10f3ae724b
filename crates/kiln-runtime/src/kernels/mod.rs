//! Operator kernels. Each operator is prepared once at load time (inputs, types and shapes
//! checked, parameters derived), then evaluated on every invoke without further checks.

mod conv_2d;
mod dot;
mod fully_connected;
mod fused_activation;
mod max_pool_2d;
mod reshape;

use kiln_tflite::{BuiltinOp, Operator, OperatorCode, TensorType};

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

/// A prepared operator.
#[derive(Debug)]
pub enum Kernel {
    Conv2D(conv_2d::Conv2D),
    MaxPool2D(max_pool_2d::MaxPool2D),
    FullyConnected(fully_connected::FullyConnected),
    Reshape(reshape::Reshape),
}

/// Highest version of each operator this runtime implements; versions grow when TFLite adds
/// types or options, so a newer one may mean semantics we would get wrong.
fn max_supported_version(op: BuiltinOp) -> Option<i32> {
    Some(match op {
        BuiltinOp::CONV_2D => 8,
        BuiltinOp::MAX_POOL_2D => 3,
        BuiltinOp::FULLY_CONNECTED => 13,
        BuiltinOp::RESHAPE => 3,
        _ => return None,
    })
}

impl Kernel {
    pub fn prepare(
        op_index: usize,
        code: &OperatorCode,
        op: &Operator,
        tensors: &[TensorInfo],
    ) -> Result<Kernel, RuntimeError> {
        let prep = Prep {
            op_index,
            name: operator_name(code),
            version: code.version,
            op,
            tensors,
        };
        if code.builtin == BuiltinOp::CUSTOM {
            return Err(prep.unsupported("custom operators are not supported"));
        }
        match max_supported_version(code.builtin) {
            None => return Err(prep.unsupported("kiln-runtime does not implement this operator")),
            Some(max) if code.version < 1 || code.version > max => {
                return Err(
                    prep.unsupported(&format!("kiln-runtime implements versions 1 to {max}"))
                );
            }
            Some(_) => {}
        }
        Ok(match code.builtin {
            BuiltinOp::CONV_2D => Kernel::Conv2D(conv_2d::Conv2D::prepare(&prep)?),
            BuiltinOp::MAX_POOL_2D => Kernel::MaxPool2D(max_pool_2d::MaxPool2D::prepare(&prep)?),
            BuiltinOp::FULLY_CONNECTED => {
                Kernel::FullyConnected(fully_connected::FullyConnected::prepare(&prep)?)
            }
            BuiltinOp::RESHAPE => Kernel::Reshape(reshape::Reshape::prepare(&prep)?),
            _ => return Err(prep.unsupported("kiln-runtime does not implement this operator")),
        })
    }

    pub fn eval(&self, inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]) {
        match self {
            Kernel::Conv2D(k) => k.eval(inputs, outputs),
            Kernel::MaxPool2D(k) => k.eval(inputs, outputs),
            Kernel::FullyConnected(k) => k.eval(inputs, outputs),
            Kernel::Reshape(k) => k.eval(inputs, outputs),
        }
    }
}

pub fn operator_name(code: &OperatorCode) -> String {
    match (&code.custom_code, code.builtin) {
        (Some(custom), BuiltinOp::CUSTOM) => format!("CUSTOM '{custom}'"),
        (_, builtin) => builtin.name(),
    }
}

/// What a kernel's `prepare` sees, with helpers that turn problems into named errors.
pub struct Prep<'a> {
    pub op_index: usize,
    pub name: String,
    pub version: i32,
    pub op: &'a Operator,
    pub tensors: &'a [TensorInfo],
}

impl<'a> Prep<'a> {
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
