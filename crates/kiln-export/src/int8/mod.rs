//! Full-integer int8: calibration ranges → per-tensor int8 activations, per-channel int8
//! weights, int32 biases, int8 kernels end to end (the converter's
//! `optimizations = [DEFAULT]` with a representative set and
//! `supported_ops = [TFLITE_BUILTINS_INT8]`). One file per step.

mod bias;
mod calibrate;
mod constants;
mod io;
mod quantize_model;

pub use bias::quantize_bias;
pub use calibrate::{Calibrator, TensorRanges};
/// An activation's int8 grid from its range: the calibration API's types, at home in
/// `kiln_tflite::quant` with the rest of the int8 arithmetic (re-exported for callers of
/// [`quantize_int8`] and [`TensorRanges`]).
/// The range type of [`TensorRanges`], from the one home of the int8 arithmetic.
pub use kiln_tflite::quant::Range;
pub use quantize_model::quantize_int8;

/// The element type of an int8 model's inputs and outputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoType {
    /// int8 in and out (`inference_input_type = tf.int8`): callers quantize with the input
    /// tensor's scale and zero point. The converter's choice for microcontrollers and NPUs.
    #[default]
    Int8,
    /// uint8 in and out, through QUANTIZE operators (for pipelines that feed raw pixels).
    UInt8,
    /// float32 in and out: a QUANTIZE at the input and a DEQUANTIZE at the output, as the
    /// converter writes without `inference_input_type` (drop-in for the float model).
    Float32,
}

/// Choices of the full-integer export.
#[derive(Clone, Debug, PartialEq)]
pub struct Int8Options {
    pub io: IoType,
    /// FULLY_CONNECTED weights per output channel (TF 2.21's default) rather than per tensor
    /// (`_experimental_disable_per_channel_quantization_for_dense_layers`).
    pub per_channel_dense: bool,
}

impl Default for Int8Options {
    fn default() -> Self {
        Self {
            io: IoType::Int8,
            per_channel_dense: true,
        }
    }
}
