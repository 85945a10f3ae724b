//! DEQUANTIZE: int8/uint8/int16 → float32 (per tensor, or per channel along the quantized
//! dimension), and float16 → float32 (how the converter stores float16 weights).

use kiln_tflite::TensorType;

use super::common::quant::checked_zero_point;
use super::{In, Kernel, OpKernel, Out, Prep};
use crate::error::RuntimeError;
use crate::tensor::as_f32_mut;

#[derive(Debug)]
enum Source {
    Float16,
    /// Per-channel when `scales` has several entries: channel = (i / inner) % scales.len().
    Integer {
        dtype: TensorType,
        scales: Vec<f32>,
        zero_points: Vec<i32>,
        inner: usize,
    },
}

#[derive(Debug)]
struct Dequantize {
    source: Source,
    elements: usize,
}

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    use TensorType::{Float16, Float32, Int8, Int16, UInt8};
    prep.expect_arity(1..=1, 1)?;
    let (input, output) = (prep.input(0)?, prep.output(0)?);
    prep.require_type(output, &[Float32])?;
    let source = match input.dtype {
        Float16 => Source::Float16,
        Int8 | UInt8 | Int16 => {
            let q = input
                .quantization
                .as_ref()
                .ok_or_else(|| prep.bad(&format!("input '{}' has no quantization", input.name)))?;
            let zero_points: Vec<i32> = if q.zero_point.is_empty() {
                vec![0; q.scale.len()]
            } else {
                q.zero_point
                    .iter()
                    .map(|&z| checked_zero_point(prep, input, z))
                    .collect::<Result<_, _>>()?
            };
            let inner = if q.scale.len() > 1 {
                let axis = usize::try_from(q.quantized_dimension)
                    .ok()
                    .filter(|&a| a < input.shape.len());
                let axis = axis.ok_or_else(|| prep.bad("quantized dimension out of range"))?;
                input.shape[axis + 1..].iter().product()
            } else {
                1
            };
            Source::Integer {
                dtype: input.dtype,
                scales: q.scale.clone(),
                zero_points,
                inner,
            }
        }
        other => return Err(prep.unsupported(&format!("input type {other}"))),
    };
    prep.set_output_shape(0, input.shape.clone());
    let kernel = Dequantize {
        source,
        elements: input.num_elements(),
    };
    // Constant weights (float16 or int8, as the converter stores them) are dequantized once:
    // the interpreter folds this operator into the float32 constant, as TFLite does.
    if let Some(bytes) = prep.input_value(0).filter(|b| b.len() == input.byte_size()) {
        let mut values = vec![0.0f32; kernel.elements];
        kernel.dequantize(bytes, &mut values);
        prep.set_output_value(0, values.iter().flat_map(|v| v.to_le_bytes()).collect());
    }
    Ok(Box::new(kernel))
}

/// IEEE 754 half → single precision, exactly (subnormals, infinities and NaN included).
pub fn f16_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits >> 15) << 31;
    let exponent = u32::from((bits >> 10) & 0x1f);
    let mantissa = u32::from(bits & 0x3ff);
    let magnitude = match (exponent, mantissa) {
        (0, 0) => 0,
        (0, m) => {
            // Subnormal: value = m × 2^-24; normalise into a single-precision number.
            let shift = m.leading_zeros() - 21;
            ((113 - shift) << 23) | (((m << shift) & 0x3ff) << 13)
        }
        (0x1f, m) => 0x7f80_0000 | (m << 13),
        (e, m) => ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(sign | magnitude)
}

impl OpKernel for Dequantize {
    fn eval(&self, inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]) {
        let Some(input) = &inputs[0] else {
            unreachable!("prepared")
        };
        self.dequantize(input.data, as_f32_mut(outputs[0].data));
    }
}

impl Dequantize {
    fn dequantize(&self, input: &[u8], output: &mut [f32]) {
        let input = In { data: input };
        match &self.source {
            Source::Float16 => {
                for (o, b) in output.iter_mut().zip(input.data.chunks_exact(2)) {
                    *o = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
                }
            }
            Source::Integer {
                dtype,
                scales,
                zero_points,
                inner,
            } => {
                let per_channel = scales.len() > 1;
                for (i, o) in output.iter_mut().enumerate().take(self.elements) {
                    let value = match dtype {
                        TensorType::Int8 => i32::from(input.data[i] as i8),
                        TensorType::UInt8 => i32::from(input.data[i]),
                        _ => i32::from(i16::from_le_bytes([
                            input.data[2 * i],
                            input.data[2 * i + 1],
                        ])),
                    };
                    *o = if per_channel {
                        let c = (i / inner) % scales.len();
                        (value - zero_points[c]) as f32 * scales[c]
                    } else {
                        // TFLite computes this one in double precision.
                        (f64::from(scales[0]) * f64::from(value - zero_points[0])) as f32
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::f16_to_f32;

    #[test]
    fn half_precision_conversion_is_exact() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x03ff), 1023.0 * 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
    }
}
