//! Operator kernels. Each operator is prepared once at load time (inputs, types and shapes
//! checked, parameters derived), then evaluated on every invoke without further checks.

mod add;
mod average_pool_2d;
mod binary;
mod concatenation;
mod conv_2d;
mod densify;
mod depth_to_space;
mod depthwise_conv_2d;
mod dequantize;
mod dot;
mod fully_connected;
mod fused_activation;
mod hard_swish;
mod layout;
mod leaky_relu;
mod logistic;
mod lut;
mod max_pool_2d;
mod mean;
mod mul;
mod pack;
mod pad;
mod padv2;
mod pooling;
mod prelu;
mod quant;
mod quantize;
mod relu;
mod reshape;
mod resize_bilinear;
mod shape;
mod softmax;
mod squeeze;
mod strided_slice;
mod sub;
mod tanh;
mod transpose;
mod weighted;

use std::cell::RefCell;

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

/// A prepared operator: parameters derived once at load time, evaluated on every invoke.
pub trait OpKernel: std::fmt::Debug + Send + Sync {
    fn eval(&self, inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]);
}

pub type Kernel = Box<dyn OpKernel>;

type PrepareFn = fn(&Prep<'_>) -> Result<Kernel, RuntimeError>;

/// An operator this runtime implements, up to the highest version it understands (versions
/// grow when TFLite adds types or options, so a newer one may mean semantics we would get
/// wrong). Each operator's kernels (all element types) live in one file.
struct Registration {
    op: BuiltinOp,
    max_version: i32,
    prepare: PrepareFn,
}

const REGISTRY: &[Registration] = &[
    Registration {
        op: BuiltinOp::QUANTIZE,
        max_version: 3,
        prepare: quantize::prepare,
    },
    Registration {
        op: BuiltinOp::DEQUANTIZE,
        max_version: 6,
        prepare: dequantize::prepare,
    },
    Registration {
        op: BuiltinOp::AVERAGE_POOL_2D,
        max_version: 3,
        prepare: average_pool_2d::prepare,
    },
    Registration {
        op: BuiltinOp::ADD,
        max_version: 5,
        prepare: add::prepare,
    },
    Registration {
        op: BuiltinOp::SUB,
        max_version: 5,
        prepare: sub::prepare,
    },
    Registration {
        op: BuiltinOp::MUL,
        max_version: 7,
        prepare: mul::prepare,
    },
    Registration {
        op: BuiltinOp::CONV_2D,
        max_version: 8,
        prepare: conv_2d::prepare,
    },
    Registration {
        op: BuiltinOp::DEPTHWISE_CONV_2D,
        max_version: 7,
        prepare: depthwise_conv_2d::prepare,
    },
    Registration {
        op: BuiltinOp::FULLY_CONNECTED,
        max_version: 13,
        prepare: fully_connected::prepare,
    },
    Registration {
        op: BuiltinOp::MAX_POOL_2D,
        max_version: 3,
        prepare: max_pool_2d::prepare,
    },
    Registration {
        op: BuiltinOp::RESHAPE,
        max_version: 1,
        prepare: reshape::prepare,
    },
    Registration {
        op: BuiltinOp::SHAPE,
        max_version: 1,
        prepare: shape::prepare,
    },
    // Data-movement operators.
    Registration {
        op: BuiltinOp::SQUEEZE,
        max_version: 2,
        prepare: squeeze::prepare,
    },
    Registration {
        op: BuiltinOp::TRANSPOSE,
        max_version: 9,
        prepare: transpose::prepare,
    },
    Registration {
        op: BuiltinOp::STRIDED_SLICE,
        max_version: 8,
        prepare: strided_slice::prepare,
    },
    Registration {
        op: BuiltinOp::PACK,
        max_version: 5,
        prepare: pack::prepare,
    },
    Registration {
        op: BuiltinOp::CONCATENATION,
        max_version: 7,
        prepare: concatenation::prepare,
    },
    Registration {
        op: BuiltinOp::PAD,
        max_version: 6,
        prepare: pad::prepare,
    },
    Registration {
        op: BuiltinOp::PADV2,
        max_version: 6,
        prepare: padv2::prepare,
    },
    Registration {
        op: BuiltinOp::DEPTH_TO_SPACE,
        max_version: 2,
        prepare: depth_to_space::prepare,
    },
    Registration {
        op: BuiltinOp::DENSIFY,
        max_version: 1,
        prepare: densify::prepare,
    },
    // Activations, SOFTMAX, MEAN and RESIZE_BILINEAR.
    Registration {
        op: BuiltinOp::HARD_SWISH,
        max_version: 1,
        prepare: hard_swish::prepare,
    },
    Registration {
        op: BuiltinOp::LEAKY_RELU,
        max_version: 2,
        prepare: leaky_relu::prepare,
    },
    Registration {
        op: BuiltinOp::LOGISTIC,
        max_version: 3,
        prepare: logistic::prepare,
    },
    Registration {
        op: BuiltinOp::MEAN,
        max_version: 3,
        prepare: mean::prepare,
    },
    Registration {
        op: BuiltinOp::PRELU,
        max_version: 1,
        prepare: prelu::prepare,
    },
    Registration {
        op: BuiltinOp::RELU,
        max_version: 3,
        prepare: relu::prepare_relu,
    },
    Registration {
        op: BuiltinOp::RELU6,
        max_version: 3,
        prepare: relu::prepare_relu6,
    },
    Registration {
        op: BuiltinOp::RELU_N1_TO_1,
        max_version: 1,
        prepare: relu::prepare_relu_n1_to_1,
    },
    Registration {
        op: BuiltinOp::RESIZE_BILINEAR,
        max_version: 4,
        prepare: resize_bilinear::prepare,
    },
    Registration {
        op: BuiltinOp::SOFTMAX,
        max_version: 4,
        prepare: softmax::prepare,
    },
    Registration {
        op: BuiltinOp::TANH,
        max_version: 3,
        prepare: tanh::prepare,
    },
];

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

/// Prepares operator `op_index` for execution, or names why it cannot run. `values` holds
/// the bytes of every tensor whose value is known before running (small integer constants
/// and the outputs of operators such as SHAPE).
pub fn prepare(
    op_index: usize,
    code: &OperatorCode,
    op: &Operator,
    tensors: &[TensorInfo],
    values: &[Option<Vec<u8>>],
    constants: &[Option<&[u8]>],
) -> Result<Prepared, RuntimeError> {
    let prep = Prep {
        op_index,
        name: operator_name(code),
        version: code.version,
        op,
        tensors,
        values,
        constants,
        outputs: RefCell::new(vec![PreparedOutput::default(); op.outputs.len()]),
    };
    if code.builtin == BuiltinOp::CUSTOM {
        return Err(prep.unsupported("custom operators are not supported"));
    }
    let Some(registration) = REGISTRY.iter().find(|r| r.op == code.builtin) else {
        return Err(prep.unsupported("kiln-runtime does not implement this operator"));
    };
    // Sparse constants are only meaningful to operators that decode them: DENSIFY, and
    // FULLY_CONNECTED's weights (input 1).
    let reads_sparse = |slot: usize| match code.builtin {
        BuiltinOp::DENSIFY => true,
        BuiltinOp::FULLY_CONNECTED => slot == 1,
        _ => false,
    };
    if let Some(sparse) = (0..op.inputs.len())
        .filter(|&slot| !reads_sparse(slot))
        .filter_map(|slot| prep.optional_input(slot))
        .find(|t| t.sparse)
    {
        return Err(prep.unsupported(&format!(
            "input '{}' is stored sparse; only DENSIFY and FULLY_CONNECTED weights may be",
            sparse.name
        )));
    }
    if code.version < 1 || code.version > registration.max_version {
        return Err(prep.unsupported(&format!(
            "kiln-runtime implements versions 1 to {}",
            registration.max_version
        )));
    }
    let kernel = (registration.prepare)(&prep)?;
    Ok(Prepared {
        kernel,
        outputs: prep.outputs.into_inner(),
    })
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
    values: &'a [Option<Vec<u8>>],
    /// The file's constant data, per tensor (borrowed, never copied).
    constants: &'a [Option<&'a [u8]>],
    outputs: RefCell<Vec<PreparedOutput>>,
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
