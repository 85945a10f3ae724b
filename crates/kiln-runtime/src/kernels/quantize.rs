//! QUANTIZE: float32 → int8/uint8/int16 (round(x / scale) + zero point, in float as TFLite's
//! reference AffineQuantize), and 8/16-bit → 8-bit requantization (e.g. int8 ↔ uint8 model I/O).

use kiln_tflite::TensorType;
use kiln_tflite::quant::{
    QuantizedMultiplier, multiply_by_quantized_multiplier, quantize_multiplier,
};

use super::common::quant::{per_tensor, type_range};
use super::{In, Kernel, OpKernel, Out, Prep};
use crate::error::RuntimeError;
use crate::tensor::as_f32;

#[derive(Debug)]
enum Conversion {
    FromFloat {
        scale: f32,
        zero_point: i32,
    },
    Requantize {
        input_zero_point: i32,
        input_type: TensorType,
        multiplier: QuantizedMultiplier,
        output_zero_point: i32,
    },
}

#[derive(Debug)]
struct Quantize {
    conversion: Conversion,
    output_type: TensorType,
    range: (i32, i32),
    elements: usize,
    /// 8-bit to 8-bit: every input byte's output byte, tabulated at prepare.
    table: Option<Box<[u8; 256]>>,
}

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    use TensorType::{Float32, Int8, Int16, UInt8};
    prep.expect_arity(1..=1, 1)?;
    let (input, output) = (prep.input(0)?, prep.output(0)?);
    prep.require_type(output, &[Int8, UInt8, Int16])?;
    let (output_scale, output_zero) = per_tensor(prep, output)?;
    let range = type_range(output.dtype).ok_or_else(|| prep.unsupported("output type"))?;
    let conversion = match input.dtype {
        Float32 => Conversion::FromFloat {
            scale: output_scale,
            zero_point: output_zero,
        },
        Int8 | UInt8 | Int16 => {
            let (input_scale, input_zero) = per_tensor(prep, input)?;
            Conversion::Requantize {
                input_zero_point: input_zero,
                input_type: input.dtype,
                multiplier: quantize_multiplier(f64::from(input_scale) / f64::from(output_scale)),
                output_zero_point: output_zero,
            }
        }
        other => return Err(prep.unsupported(&format!("input type {other}"))),
    };
    prep.set_output_shape(0, input.shape.clone());
    let mut quantize = Quantize {
        conversion,
        output_type: output.dtype,
        range,
        elements: input.num_elements(),
        table: None,
    };
    if matches!(input.dtype, Int8 | UInt8) && matches!(output.dtype, Int8 | UInt8) {
        let table: Vec<u8> = (0..=255u8)
            .map(|byte| quantize.requantized(&[byte], 0) as u8)
            .collect();
        quantize.table = table.try_into().ok();
    }
    Ok(Box::new(quantize))
}

fn read_int(data: &[u8], dtype: TensorType, i: usize) -> i32 {
    match dtype {
        TensorType::Int8 => i32::from(data[i] as i8),
        TensorType::UInt8 => i32::from(data[i]),
        _ => i32::from(i16::from_le_bytes([data[2 * i], data[2 * i + 1]])),
    }
}

fn write_int(data: &mut [u8], dtype: TensorType, i: usize, value: i32) {
    match dtype {
        TensorType::Int16 => data[2 * i..2 * i + 2].copy_from_slice(&(value as i16).to_le_bytes()),
        _ => data[i] = value as u8,
    }
}

impl Quantize {
    /// Element `i` of `input` converted, clamped to the output type.
    fn requantized(&self, input: &[u8], i: usize) -> i32 {
        let value = match &self.conversion {
            Conversion::FromFloat { scale, zero_point } => {
                // `as i32` saturates, so huge or infinite inputs clamp instead of wrapping.
                ((as_f32(input)[i] / scale).round() as i32).saturating_add(*zero_point)
            }
            Conversion::Requantize {
                input_zero_point,
                input_type,
                multiplier,
                output_zero_point,
            } => {
                let x = read_int(input, *input_type, i) - input_zero_point;
                multiply_by_quantized_multiplier(x, *multiplier).saturating_add(*output_zero_point)
            }
        };
        value.clamp(self.range.0, self.range.1)
    }
}

impl OpKernel for Quantize {
    fn eval(&self, inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]) {
        let Some(input) = &inputs[0] else {
            unreachable!("prepared")
        };
        let (lo, hi) = self.range;
        if let Some(table) = &self.table {
            let input = &input.data[..self.elements];
            for (o, &x) in outputs[0].data[..self.elements].iter_mut().zip(input) {
                *o = table[usize::from(x)];
            }
            return;
        }
        if let Conversion::FromFloat { scale, zero_point } = &self.conversion
            && matches!(self.output_type, TensorType::Int8 | TensorType::UInt8)
        {
            let input = &as_f32(input.data)[..self.elements];
            let output = &mut outputs[0].data[..self.elements];
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F.
                unsafe { floats_to_bytes_avx512(input, *scale, *zero_point, (lo, hi), output) };
                return;
            }
            floats_to_bytes(input, *scale, *zero_point, (lo, hi), output);
            return;
        }
        for i in 0..self.elements {
            let value = self.requantized(input.data, i);
            write_int(outputs[0].data, self.output_type, i, value);
        }
    }
}

/// Float32 to int8/uint8 bytes (the clamp keeps each value in its type's range), in one
/// loop without per-element type dispatch, so that it vectorises.
#[inline(always)]
fn floats_to_bytes(
    input: &[f32],
    scale: f32,
    zero_point: i32,
    (lo, hi): (i32, i32),
    output: &mut [u8],
) {
    for (o, &x) in output.iter_mut().zip(input) {
        // `as i32` saturates, so huge or infinite inputs clamp instead of wrapping.
        *o = ((x / scale).round() as i32)
            .saturating_add(zero_point)
            .clamp(lo, hi) as u8;
    }
}

/// The same loop with AVX-512 (its rounding instructions inline `round`, a library call on
/// baseline x86-64); the arithmetic is the same, so are the bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn floats_to_bytes_avx512(
    input: &[f32],
    scale: f32,
    zero_point: i32,
    range: (i32, i32),
    output: &mut [u8],
) {
    floats_to_bytes(input, scale, zero_point, range, output);
}
