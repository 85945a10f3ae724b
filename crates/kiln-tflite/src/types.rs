//! Small value types of the format: element types, padding, fused activations, operator codes.

use std::fmt;

use crate::op_names::builtin_operator_name;

/// A tensor's element type. Values Kiln has no name for are kept as `Other(code)` so a file
/// using them can be read and reported, not rejected while parsing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorType {
    Float32,
    Float16,
    Int32,
    UInt8,
    Int64,
    String,
    Bool,
    Int16,
    Int8,
    Float64,
    Other(i8),
}

impl TensorType {
    pub fn from_code(code: i8) -> Self {
        match code {
            0 => Self::Float32,
            1 => Self::Float16,
            2 => Self::Int32,
            3 => Self::UInt8,
            4 => Self::Int64,
            5 => Self::String,
            6 => Self::Bool,
            7 => Self::Int16,
            9 => Self::Int8,
            10 => Self::Float64,
            other => Self::Other(other),
        }
    }

    pub fn code(self) -> i8 {
        match self {
            Self::Float32 => 0,
            Self::Float16 => 1,
            Self::Int32 => 2,
            Self::UInt8 => 3,
            Self::Int64 => 4,
            Self::String => 5,
            Self::Bool => 6,
            Self::Int16 => 7,
            Self::Int8 => 9,
            Self::Float64 => 10,
            Self::Other(code) => code,
        }
    }

    /// Bytes per element, `None` for variable-size (STRING) or unknown types.
    pub fn element_size(self) -> Option<usize> {
        match self {
            Self::Float32 | Self::Int32 => Some(4),
            Self::Float16 | Self::Int16 => Some(2),
            Self::UInt8 | Self::Int8 | Self::Bool => Some(1),
            Self::Int64 | Self::Float64 => Some(8),
            Self::String | Self::Other(_) => None,
        }
    }

    pub fn name(self) -> String {
        match self {
            Self::Float32 => "FLOAT32".into(),
            Self::Float16 => "FLOAT16".into(),
            Self::Int32 => "INT32".into(),
            Self::UInt8 => "UINT8".into(),
            Self::Int64 => "INT64".into(),
            Self::String => "STRING".into(),
            Self::Bool => "BOOL".into(),
            Self::Int16 => "INT16".into(),
            Self::Int8 => "INT8".into(),
            Self::Float64 => "FLOAT64".into(),
            Self::Other(code) => format!("type code {code}"),
        }
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Padding {
    #[default]
    Same,
    Valid,
}

/// An activation fused into an operator's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Activation {
    #[default]
    None,
    Relu,
    ReluN1To1,
    Relu6,
    Tanh,
    SignBit,
    Other(i8),
}

impl Activation {
    pub fn from_code(code: i8) -> Self {
        match code {
            0 => Self::None,
            1 => Self::Relu,
            2 => Self::ReluN1To1,
            3 => Self::Relu6,
            4 => Self::Tanh,
            5 => Self::SignBit,
            other => Self::Other(other),
        }
    }

    pub fn code(self) -> i8 {
        match self {
            Self::None => 0,
            Self::Relu => 1,
            Self::ReluN1To1 => 2,
            Self::Relu6 => 3,
            Self::Tanh => 4,
            Self::SignBit => 5,
            Self::Other(code) => code,
        }
    }

    pub fn name(self) -> String {
        match self {
            Self::None => "NONE".into(),
            Self::Relu => "RELU".into(),
            Self::ReluN1To1 => "RELU_N1_TO_1".into(),
            Self::Relu6 => "RELU6".into(),
            Self::Tanh => "TANH".into(),
            Self::SignBit => "SIGN_BIT".into(),
            Self::Other(code) => format!("activation code {code}"),
        }
    }
}

/// A builtin operator code as stored in the file (any i32; known ones have names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BuiltinOp(pub i32);

impl BuiltinOp {
    pub const ADD: Self = Self(0);
    pub const AVERAGE_POOL_2D: Self = Self(1);
    pub const CONCATENATION: Self = Self(2);
    pub const CONV_2D: Self = Self(3);
    pub const DEPTHWISE_CONV_2D: Self = Self(4);
    pub const DEPTH_TO_SPACE: Self = Self(5);
    pub const DEQUANTIZE: Self = Self(6);
    pub const FULLY_CONNECTED: Self = Self(9);
    pub const LOGISTIC: Self = Self(14);
    pub const MAX_POOL_2D: Self = Self(17);
    pub const MUL: Self = Self(18);
    pub const RELU: Self = Self(19);
    pub const RELU_N1_TO_1: Self = Self(20);
    pub const RELU6: Self = Self(21);
    pub const RESHAPE: Self = Self(22);
    pub const RESIZE_BILINEAR: Self = Self(23);
    pub const SOFTMAX: Self = Self(25);
    pub const TANH: Self = Self(28);
    pub const CUSTOM: Self = Self(32);
    pub const PAD: Self = Self(34);
    pub const TRANSPOSE: Self = Self(39);
    pub const MEAN: Self = Self(40);
    pub const SUB: Self = Self(41);
    pub const SQUEEZE: Self = Self(43);
    pub const STRIDED_SLICE: Self = Self(45);
    pub const PRELU: Self = Self(54);
    pub const PADV2: Self = Self(60);
    pub const SHAPE: Self = Self(77);
    pub const PACK: Self = Self(83);
    pub const LEAKY_RELU: Self = Self(98);
    pub const QUANTIZE: Self = Self(114);
    pub const HARD_SWISH: Self = Self(117);
    pub const DENSIFY: Self = Self(124);
    /// Codes at or above this are stored only in `builtin_code`, not the deprecated byte.
    pub const PLACEHOLDER_FOR_GREATER_OP_CODES: Self = Self(127);

    pub fn name(self) -> String {
        builtin_operator_name(self.0)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("BUILTIN_{}", self.0))
    }
}

impl fmt::Display for BuiltinOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}
