//! Small value types of the format: element types, padding, fused activations, operator codes.
//!
//! The codes are the schema's (`schema/tflite.fbs`): each type below lists the names it knows and
//! takes their values from the generated code, never by copying numbers.

use std::fmt;

use crate::generated as fb;
use crate::op_names::builtin_operator_name;

/// An owned enum over a generated schema enum: one variant per listed schema name, and
/// `Other(code)` for any other value, so a file using one can be read and reported, not
/// rejected while parsing. `from_code`, `code` and `name` (the schema's name) all follow
/// from the list.
macro_rules! schema_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident: fb::$schema:ident($repr:ty), other $other:literal {
            $($(#[$variant_meta:meta])* $variant:ident = $code:ident),* $(,)?
        }
    ) => {
        $(#[$meta])*
        pub enum $name {
            $($(#[$variant_meta])* $variant,)*
            Other($repr),
        }

        impl $name {
            pub fn from_code(code: $repr) -> Self {
                match fb::$schema(code) {
                    $(fb::$schema::$code => Self::$variant,)*
                    _ => Self::Other(code),
                }
            }

            pub fn code(self) -> $repr {
                match self {
                    $(Self::$variant => fb::$schema::$code.0,)*
                    Self::Other(code) => code,
                }
            }

            pub fn name(self) -> String {
                match self {
                    $(Self::$variant => stringify!($code).into(),)*
                    Self::Other(code) => format!($other, code),
                }
            }
        }
    };
}

schema_enum! {
    /// A tensor's element type.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum TensorType: fb::TensorType(i8), other "type code {}" {
        Float32 = FLOAT32,
        Float16 = FLOAT16,
        Int32 = INT32,
        UInt8 = UINT8,
        Int64 = INT64,
        String = STRING,
        Bool = BOOL,
        Int16 = INT16,
        Int8 = INT8,
        Float64 = FLOAT64,
    }
}

impl TensorType {
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

schema_enum! {
    /// An activation fused into an operator's output.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
    pub enum Activation: fb::ActivationFunctionType(i8), other "activation code {}" {
        #[default]
        None = NONE,
        Relu = RELU,
        ReluN1To1 = RELU_N1_TO_1,
        Relu6 = RELU6,
        Tanh = TANH,
        SignBit = SIGN_BIT,
    }
}

/// A builtin operator code as stored in the file (any i32; known ones have names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BuiltinOp(pub i32);

/// The operator codes of the schema, by name (values from the generated `BuiltinOperator`).
macro_rules! builtin_ops {
    ($($(#[$meta:meta])* $name:ident,)*) => {
        impl BuiltinOp {
            $($(#[$meta])* pub const $name: Self = Self(fb::BuiltinOperator::$name.0);)*
        }

        /// Every operator code `builtin_ops!` lists, in order.
        #[cfg(test)]
        const LISTED_OPS: &[BuiltinOp] = &[$(BuiltinOp::$name),*];
    };
}

builtin_ops! {
    ADD,
    AVERAGE_POOL_2D,
    CONCATENATION,
    CONV_2D,
    DEPTHWISE_CONV_2D,
    DEPTH_TO_SPACE,
    DEQUANTIZE,
    FULLY_CONNECTED,
    LOGISTIC,
    MAX_POOL_2D,
    MUL,
    RELU,
    RELU_N1_TO_1,
    RELU6,
    RESHAPE,
    RESIZE_BILINEAR,
    SOFTMAX,
    TANH,
    CUSTOM,
    PAD,
    TRANSPOSE,
    MEAN,
    SUB,
    SQUEEZE,
    STRIDED_SLICE,
    PRELU,
    PADV2,
    SHAPE,
    PACK,
    LEAKY_RELU,
    QUANTIZE,
    HARD_SWISH,
    DENSIFY,
    /// Codes at or above this are stored only in `builtin_code`, not the deprecated byte.
    PLACEHOLDER_FOR_GREATER_OP_CODES,
}

impl BuiltinOp {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The owned types know every code the schema does, under the schema's names.
    #[test]
    fn the_lists_are_the_schemas() {
        let listed: Vec<i32> = LISTED_OPS.iter().map(|op| op.0).collect();
        let schema: Vec<i32> = fb::BuiltinOperator::ENUM_VALUES
            .iter()
            .map(|op| op.0)
            .collect();
        assert_eq!(listed, schema);
        for op in fb::BuiltinOperator::ENUM_VALUES {
            assert_eq!(Some(BuiltinOp(op.0).name().as_str()), op.variant_name());
        }
        for a in fb::ActivationFunctionType::ENUM_VALUES {
            let owned = Activation::from_code(a.0);
            assert!(!matches!(owned, Activation::Other(_)), "{a:?}");
            assert_eq!(
                (owned.code(), Some(owned.name().as_str())),
                (a.0, a.variant_name())
            );
        }
        for t in fb::TensorType::ENUM_VALUES {
            let owned = TensorType::from_code(t.0);
            assert_eq!(owned.code(), t.0);
            if !matches!(owned, TensorType::Other(_)) {
                assert_eq!(Some(owned.name().as_str()), t.variant_name());
            }
        }
        assert_eq!(TensorType::from_code(8), TensorType::Other(8));
        assert_eq!(TensorType::Other(8).name(), "type code 8");
        assert_eq!(Activation::from_code(-3).name(), "activation code -3");
    }
}
