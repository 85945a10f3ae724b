//! Operator versions as TF 2.21's TFLite converter writes them (see the `ops` of
//! tests/fixtures/manifest.json, written by that converter). A runtime picks its kernel by
//! (operator, version): a version too low may select a kernel without int8 or hybrid support,
//! one too high may be refused by an older runtime.

use kiln_tflite::{BuiltinOp, BuiltinOptions};

/// DEQUANTIZE of a FLOAT16 constant (the float16 variant).
pub(crate) const DEQUANTIZE_FLOAT16: i32 = 3;
/// DEQUANTIZE int8 → float32 (float-output int8 models).
pub(crate) const DEQUANTIZE_INT8: i32 = 2;
/// QUANTIZE float32 → int8, uint8 → int8 and int8 → uint8 (the I/O of int8 models).
pub(crate) const QUANTIZE: i32 = 1;

/// Hybrid (dynamic-range) versions: float activations, int8 weights quantized per channel.
/// FULLY_CONNECTED v12 is per-channel hybrid with `asymmetric_quantize_inputs`.
pub(crate) fn hybrid_per_channel(op: BuiltinOp) -> Option<i32> {
    match op {
        BuiltinOp::CONV_2D => Some(5),
        BuiltinOp::DEPTHWISE_CONV_2D => Some(6),
        BuiltinOp::FULLY_CONNECTED => Some(12),
        _ => None,
    }
}

/// The version of `op` with int8 inputs and outputs, for the operators full-integer export
/// supports.
pub(crate) fn int8(op: BuiltinOp, options: &BuiltinOptions) -> Option<i32> {
    Some(match op {
        BuiltinOp::CONV_2D | BuiltinOp::DEPTHWISE_CONV_2D => 3,
        BuiltinOp::FULLY_CONNECTED => match options {
            BuiltinOptions::FullyConnected(o) if o.keep_num_dims => 5,
            _ => 4,
        },
        BuiltinOp::MAX_POOL_2D
        | BuiltinOp::AVERAGE_POOL_2D
        | BuiltinOp::SOFTMAX
        | BuiltinOp::LOGISTIC
        | BuiltinOp::TANH
        | BuiltinOp::RELU
        | BuiltinOp::RELU6
        | BuiltinOp::ADD
        | BuiltinOp::MEAN => 2,
        // As the converter fixtures' int8 MUL and PAD (MUL 3 would be an int8 MUL whose
        // input1 × input2 / output scale reaches 1; swish and squeeze-excitation gates
        // multiply by a LOGISTIC output of scale 1/256, far below).
        BuiltinOp::MUL | BuiltinOp::PAD => 2,
        BuiltinOp::RESHAPE | BuiltinOp::HARD_SWISH => 1,
        _ => return None,
    })
}
