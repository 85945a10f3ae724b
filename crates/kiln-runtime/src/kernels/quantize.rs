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
    Ok(Box::new(Quantize {
        conversion,
        output_type: output.dtype,
        range,
        elements: input.num_elements(),
    }))
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

impl OpKernel for Quantize {
    fn eval(&self, inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]) {
        let Some(input) = &inputs[0] else {
            unreachable!("prepared")
        };
        let (lo, hi) = self.range;
        for i in 0..self.elements {
            let value = match &self.conversion {
                Conversion::FromFloat { scale, zero_point } => {
                    // `as i32` saturates, so huge or infinite inputs clamp instead of wrapping.
                    ((as_f32(input.data)[i] / scale).round() as i32).saturating_add(*zero_point)
                }
                Conversion::Requantize {
                    input_zero_point,
                    input_type,
                    multiplier,
                    output_zero_point,
                } => {
                    let x = read_int(input.data, *input_type, i) - input_zero_point;
                    multiply_by_quantized_multiplier(x, *multiplier)
                        .saturating_add(*output_zero_point)
                }
            };
            write_int(outputs[0].data, self.output_type, i, value.clamp(lo, hi));
        }
    }
}
