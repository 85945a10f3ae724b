//! The arithmetic CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED share: an op with weights
//! runs in float32, in int8/uint8 (integer accumulation, then a per-channel rescale into the
//! output's quantization), or hybrid (float activations, int8 weights, the input quantized on
//! the fly). This module checks the tensor types once and holds each mode's parameters.

use kiln_tflite::quant::Rescale;
use kiln_tflite::{Activation, TensorType};

use super::fused_activation::FloatClamp;
use super::quant::{activation_range, filter_quantization, per_tensor};
use crate::error::RuntimeError;
use crate::kernels::{In, Prep};
use crate::tensor::TensorInfo;

#[derive(Debug)]
pub struct Quantized {
    pub input_offset: i32,
    pub filter_offset: i32,
    pub output_offset: i32,
    pub rescale: Rescale,
    pub range: (i32, i32),
    pub input_signed: bool,
    pub filter_signed: bool,
}

impl Quantized {
    /// The output value (clamped, in the output type's range) of accumulator `acc` + bias.
    #[inline]
    pub fn finish(&self, acc: i32, bias: i32, channel: usize) -> i32 {
        let scaled = self.rescale.apply(acc.wrapping_add(bias), channel);
        scaled
            .saturating_add(self.output_offset)
            .clamp(self.range.0, self.range.1)
    }
}

#[derive(Debug)]
pub enum Arithmetic {
    Float {
        clamp: FloatClamp,
    },
    Quantized(Quantized),
    Hybrid {
        filter_scales: Vec<f32>,
        asymmetric_inputs: bool,
        clamp: FloatClamp,
    },
}

/// What differs between the three operators.
pub struct WeightedOp<'a> {
    pub input: &'a TensorInfo,
    pub filter: &'a TensorInfo,
    pub bias: Option<&'a TensorInfo>,
    pub output: &'a TensorInfo,
    pub activation: Activation,
    pub channels: usize,
    /// The filter dimension that indexes output channels (per-channel scales lie along it).
    pub channel_axis: usize,
    /// FULLY_CONNECTED rescales in double precision; the convolutions in fixed point.
    pub double_precision_rescale: bool,
    /// Whether hybrid inputs are quantized asymmetrically (per op and options in TFLite).
    pub hybrid_asymmetric: bool,
}

pub fn prepare(prep: &Prep<'_>, op: &WeightedOp<'_>) -> Result<Arithmetic, RuntimeError> {
    use TensorType::{Float32, Int8, Int32, UInt8};
    let check_bias = |dtype: TensorType| -> Result<(), RuntimeError> {
        if let Some(bias) = op.bias {
            prep.require_type(bias, &[dtype])?;
            prep.require_shape(bias, &[op.channels])?;
        }
        Ok(())
    };
    match (op.input.dtype, op.filter.dtype) {
        (Float32, Float32) => {
            prep.require_type(op.output, &[Float32])?;
            check_bias(Float32)?;
            Ok(Arithmetic::Float { clamp: FloatClamp::prepare(prep, op.activation)? })
        }
        (Float32, Int8) => {
            prep.require_type(op.output, &[Float32])?;
            check_bias(Float32)?;
            Ok(Arithmetic::Hybrid {
                filter_scales: filter_quantization(prep, op.filter, op.channel_axis, op.channels)?.scales,
                asymmetric_inputs: op.hybrid_asymmetric,
                clamp: FloatClamp::prepare(prep, op.activation)?,
            })
        }
        (Int8 | UInt8, Int8 | UInt8) => {
            prep.require_type(op.output, &[op.input.dtype])?;
            check_bias(Int32)?;
            let (input_scale, input_zero) = per_tensor(prep, op.input)?;
            let (output_scale, output_zero) = per_tensor(prep, op.output)?;
            let filter_q = filter_quantization(prep, op.filter, op.channel_axis, op.channels)?;
            let rescale = Rescale::new(
                op.double_precision_rescale,
                input_scale,
                &filter_q.scales,
                output_scale,
            );
            Ok(Arithmetic::Quantized(Quantized {
                input_offset: -input_zero,
                filter_offset: -filter_q.zero_point,
                output_offset: output_zero,
                rescale,
                range: activation_range(prep, op.activation, op.output)?,
                input_signed: op.input.dtype == Int8,
                filter_signed: op.filter.dtype == Int8,
            }))
        }
        (input, filter) => Err(prep.unsupported(&format!(
            "input {input} with weights {filter} (supported: FLOAT32 with FLOAT32, INT8/UINT8 quantized, FLOAT32 with INT8 hybrid)"
        ))),
    }
}

/// The bias input's bytes at eval time (input 2), when the operator was prepared with one.
pub fn bias<'b>(inputs: &[Option<In<'b>>], has_bias: bool) -> Option<&'b [u8]> {
    if has_bias {
        inputs.get(2).and_then(Option::as_ref).map(|b| b.data)
    } else {
        None
    }
}
