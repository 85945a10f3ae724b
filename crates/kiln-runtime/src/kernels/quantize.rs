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
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && zero_point.unsigned_abs() <= 1 << 16
            {
                // SAFETY: the CPU has AVX-512F, BW and VL.
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

/// The same values with AVX-512 intrinsics, sixteen at a time: the division as the
/// reference does it (not a multiply by the reciprocal), `round`'s half away from zero as
/// truncation plus one step where the remainder (exact) reaches a half, NaN as 0 (what
/// `as i32` gives), and the clamp applied before the zero point is added (the same result
/// for zero points far inside i32, which the caller checks).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn floats_to_bytes_avx512(
    input: &[f32],
    scale: f32,
    zero_point: i32,
    (lo, hi): (i32, i32),
    output: &mut [u8],
) {
    use std::arch::x86_64::*;
    let n = input.len().min(output.len());
    let scale = _mm512_set1_ps(scale);
    let (lower, upper) = (
        _mm512_set1_ps((lo - zero_point) as f32),
        _mm512_set1_ps((hi - zero_point) as f32),
    );
    let half = _mm512_set1_ps(0.5);
    let sign = _mm512_set1_epi32(i32::MIN);
    let one = _mm512_set1_ps(1.0);
    let offset = _mm512_set1_epi32(zero_point);
    for start in (0..n).step_by(16) {
        let lanes: __mmask16 = ((1u32 << (n - start).min(16)) - 1) as __mmask16;
        // SAFETY: loads and stores masked to the first n elements.
        unsafe {
            let x = _mm512_div_ps(
                _mm512_maskz_loadu_ps(lanes, input.as_ptr().add(start)),
                scale,
            );
            let truncated = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(x);
            let remainder = _mm512_abs_ps(_mm512_sub_ps(x, truncated));
            let away = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(remainder, half);
            let step = _mm512_castsi512_ps(_mm512_or_si512(
                _mm512_and_si512(_mm512_castps_si512(x), sign),
                _mm512_castps_si512(one),
            ));
            let rounded = _mm512_mask_add_ps(truncated, away, truncated, step);
            // NaN compares unordered with itself: 0 there.
            let rounded = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(x, x), rounded);
            let clamped = _mm512_min_ps(_mm512_max_ps(rounded, lower), upper);
            let value = _mm512_add_epi32(_mm512_cvtps_epi32(clamped), offset);
            _mm_mask_storeu_epi8(
                output.as_mut_ptr().add(start).cast(),
                lanes,
                _mm512_cvtepi32_epi8(value),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX-512 conversion against the scalar loop (the reference's arithmetic) on ties,
    /// near-ties, signed zeros, infinities, NaN, huge and tiny values, with int8 and uint8
    /// ranges, zero points and scales, and lengths that leave partial registers.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_avx512_conversion_equals_the_scalar_one() {
        if !(std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl"))
        {
            return;
        }
        let mut values = vec![
            0.0,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            1e-40,
            8_388_608.5,
            16_777_216.0,
        ];
        for k in -300..300 {
            let x = k as f32 * 0.25;
            values.extend([
                x,
                x + f32::EPSILON,
                x - f32::EPSILON,
                x.next_up(),
                x.next_down(),
            ]);
        }
        for (scale, zero_point, range) in [
            (1.0, 0, (-128, 127)),
            (0.5, -3, (-128, 127)),
            (0.1, 10, (-128, 127)),
            (0.02, 128, (0, 255)),
            (3.0, 0, (0, 255)),
            (1.0, -128, (-128, 127)),
        ] {
            for len in [values.len(), 17, 5] {
                let input = &values[..len];
                let mut want = vec![0u8; len];
                floats_to_bytes(input, scale, zero_point, range, &mut want);
                let mut got = vec![0u8; len];
                // SAFETY: the CPU has the features (checked above).
                unsafe { floats_to_bytes_avx512(input, scale, zero_point, range, &mut got) };
                for i in 0..len {
                    assert_eq!(
                        got[i], want[i],
                        "{} / {scale} + {zero_point} in {range:?}",
                        input[i]
                    );
                }
            }
        }
    }
}
