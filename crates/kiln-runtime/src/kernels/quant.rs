//! Fixed-point arithmetic of TFLite's quantized kernels: real multipliers as (Q31 multiplier,
//! shift) pairs and the rounding multiply that applies them, written to produce exactly what
//! the reference kernels produce (double rounding, TFLite's default build).

use kiln_tflite::{Activation, TensorType};

use super::Prep;
use crate::error::RuntimeError;
use crate::tensor::TensorInfo;

/// A real multiplier M as M ≈ multiplier × 2^(shift − 31), multiplier in [2^30, 2^31).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct QuantizedMultiplier {
    pub multiplier: i32,
    pub shift: i32,
}

/// TFLite's QuantizeMultiplier: frexp, round the fraction to Q31, renormalise 2^31.
pub fn quantize_multiplier(real: f64) -> QuantizedMultiplier {
    if real == 0.0 || !real.is_finite() {
        return QuantizedMultiplier::default();
    }
    let (fraction, mut shift) = frexp(real);
    // Rust's f64::round rounds half away from zero, like std::round.
    let mut fixed = (fraction * (1u64 << 31) as f64).round() as i64;
    if fixed == 1i64 << 31 {
        fixed /= 2;
        shift += 1;
    }
    if shift < -31 {
        shift = 0;
        fixed = 0;
    }
    QuantizedMultiplier {
        multiplier: fixed as i32,
        shift,
    }
}

/// (fraction in [0.5, 1), exponent) with value = fraction × 2^exponent, like C's frexp.
fn frexp(value: f64) -> (f64, i32) {
    if value == 0.0 || !value.is_finite() {
        return (value, 0);
    }
    let bits = value.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i32;
    if exponent == 0 {
        // Subnormal: scale into the normal range first.
        let (fraction, e) = frexp(value * (1u64 << 54) as f64);
        return (fraction, e - 54);
    }
    let fraction = f64::from_bits((bits & !(0x7ffu64 << 52)) | (1022u64 << 52));
    (fraction, exponent - 1022)
}

/// gemmlowp's SaturatingRoundingDoublingHighMul: round(a × b / 2^31), saturating the one
/// overflowing case.
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let product = i64::from(a) * i64::from(b);
    let nudge = if product >= 0 {
        1i64 << 30
    } else {
        1 - (1i64 << 30)
    };
    // C++ integer division truncates toward zero; so does Rust's.
    ((product + nudge) / (1i64 << 31)) as i32
}

/// gemmlowp's RoundingDivideByPOT: x / 2^exponent rounded half away from zero.
pub fn rounding_divide_by_pot(x: i32, exponent: i32) -> i32 {
    // Valid models keep exponents in 0..=31; a corrupt file's absurd scale is clamped rather
    // than allowed to overflow the shift.
    let exponent = exponent.clamp(0, 31);
    let mask = ((1i64 << exponent) - 1) as i32;
    let remainder = x & mask;
    let threshold = (mask >> 1) + i32::from(x < 0);
    (x >> exponent) + i32::from(remainder > threshold)
}

/// TFLite's MultiplyByQuantizedMultiplier (double rounding): x × M.
pub fn multiply_by_quantized_multiplier(x: i32, m: QuantizedMultiplier) -> i32 {
    let left_shift = m.shift.clamp(0, 31);
    let right_shift = (-m.shift).max(0);
    rounding_divide_by_pot(
        saturating_rounding_doubling_high_mul(
            x.wrapping_mul(1i32.wrapping_shl(left_shift as u32)),
            m.multiplier,
        ),
        right_shift,
    )
}

/// TFLite's MultiplyByQuantizedMultiplierSmallerThanOneExp (double rounding), used by the
/// ADD/SUB rescaling where the multiplier is below one.
pub fn multiply_by_quantized_multiplier_smaller_than_one(x: i32, m: QuantizedMultiplier) -> i32 {
    rounding_divide_by_pot(
        saturating_rounding_doubling_high_mul(x, m.multiplier),
        -m.shift,
    )
}

/// Representable range of an integer tensor type.
pub fn type_range(dtype: TensorType) -> Option<(i32, i32)> {
    match dtype {
        TensorType::Int8 => Some((i32::from(i8::MIN), i32::from(i8::MAX))),
        TensorType::UInt8 => Some((0, i32::from(u8::MAX))),
        TensorType::Int16 => Some((i32::from(i16::MIN), i32::from(i16::MAX))),
        _ => None,
    }
}

/// A tensor's single (per-tensor) scale and zero point, or an error naming it.
pub fn per_tensor(prep: &Prep<'_>, tensor: &TensorInfo) -> Result<(f32, i32), RuntimeError> {
    let q = tensor.quantization.as_ref().ok_or_else(|| {
        prep.bad(&format!(
            "tensor '{}' is {} but has no quantization",
            tensor.name, tensor.dtype
        ))
    })?;
    if q.scale.len() != 1 {
        return Err(prep.unsupported(&format!(
            "tensor '{}' has {} scales; this operator needs one (per-tensor) scale",
            tensor.name,
            q.scale.len()
        )));
    }
    let zero_point = checked_zero_point(prep, tensor, q.zero_point.first().copied().unwrap_or(0))?;
    Ok((q.scale[0], zero_point))
}

/// A zero point, checked to lie in its tensor type's range (as TFLite requires), so the
/// integer arithmetic built on it cannot overflow.
pub fn checked_zero_point(
    prep: &Prep<'_>,
    tensor: &TensorInfo,
    zero_point: i64,
) -> Result<i32, RuntimeError> {
    let (lo, hi) = type_range(tensor.dtype).unwrap_or((i32::MIN, i32::MAX));
    match i32::try_from(zero_point) {
        Ok(z) if (lo..=hi).contains(&z) => Ok(z),
        _ => Err(prep.bad(&format!(
            "tensor '{}' ({}) has zero point {zero_point}, outside the type's range {lo}..={hi}",
            tensor.name, tensor.dtype
        ))),
    }
}

/// The clamp a fused activation becomes in the quantized domain of the output
/// (TFLite's CalculateActivationRangeQuantized).
pub fn activation_range(
    prep: &Prep<'_>,
    activation: Activation,
    output: &TensorInfo,
) -> Result<(i32, i32), RuntimeError> {
    let (qmin, qmax) = type_range(output.dtype).ok_or_else(|| {
        prep.unsupported(&format!("output type {} is not quantized", output.dtype))
    })?;
    let (scale, zero_point) = per_tensor(prep, output)?;
    let quantize = |real: f32| zero_point + (real / scale).round() as i32;
    Ok(match activation {
        Activation::None => (qmin, qmax),
        Activation::Relu => (qmin.max(quantize(0.0)), qmax),
        Activation::Relu6 => (qmin.max(quantize(0.0)), qmax.min(quantize(6.0))),
        Activation::ReluN1To1 => (qmin.max(quantize(-1.0)), qmax.min(quantize(1.0))),
        other => {
            return Err(prep.unsupported(&format!(
                "fused activation {} on a quantized output",
                other.name()
            )));
        }
    })
}

/// Reads element `i` of an int8 or uint8 buffer as i32.
#[inline]
pub fn load_q(data: &[u8], signed: bool, i: usize) -> i32 {
    if signed {
        i32::from(data[i] as i8)
    } else {
        i32::from(data[i])
    }
}

/// Stores a value (already clamped to the type's range) into an int8 or uint8 buffer.
#[inline]
pub fn store_q(data: &mut [u8], i: usize, value: i32) {
    data[i] = value as u8;
}

/// Per-output-channel quantization of a filter: scales (one per channel, or one repeated)
/// and its single zero point (non-zero only for legacy uint8 filters).
pub struct FilterQuantization {
    pub scales: Vec<f32>,
    pub zero_point: i32,
}

/// The scales of `filter` along `axis` for `channels` output channels.
pub fn filter_quantization(
    prep: &Prep<'_>,
    filter: &TensorInfo,
    axis: usize,
    channels: usize,
) -> Result<FilterQuantization, RuntimeError> {
    let q = filter.quantization.as_ref().ok_or_else(|| {
        prep.bad(&format!(
            "filter '{}' is {} but has no quantization",
            filter.name, filter.dtype
        ))
    })?;
    let scales = match q.scale.len() {
        1 => vec![q.scale[0]; channels],
        n if n == channels && q.quantized_dimension as usize == axis => q.scale.clone(),
        n => {
            return Err(prep.bad(&format!(
                "filter '{}' has {n} scales along dimension {}; expected 1 or {channels} along dimension {axis}",
                filter.name, q.quantized_dimension
            )));
        }
    };
    let zero_point = q.zero_point.first().copied().unwrap_or(0);
    if q.zero_point.iter().any(|&z| z != zero_point) {
        return Err(prep.unsupported(&format!(
            "filter '{}' has per-channel zero points",
            filter.name
        )));
    }
    let zero_point = checked_zero_point(prep, filter, zero_point)?;
    Ok(FilterQuantization { scales, zero_point })
}

/// Per-channel output multipliers input_scale × filter_scale[c] / output_scale, computed in
/// double precision as TFLite's PopulateConvolutionQuantizationParams does.
pub fn output_multipliers(
    input_scale: f32,
    filter_scales: &[f32],
    output_scale: f32,
) -> Vec<QuantizedMultiplier> {
    filter_scales
        .iter()
        .map(|&f| {
            quantize_multiplier(f64::from(input_scale) * f64::from(f) / f64::from(output_scale))
        })
        .collect()
}

/// Float inputs quantized on the fly for hybrid (dynamic-range) kernels: int8 values, the
/// scale, and the zero point (0 for symmetric quantization). TFLite's
/// Symmetric/AsymmetricQuantizeFloats.
pub fn quantize_floats(values: &[f32], asymmetric: bool, out: &mut [i32]) -> (f32, i32) {
    let (min, max) = values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    if !asymmetric {
        let range = min.abs().max(max.abs());
        if range == 0.0 || values.is_empty() {
            out.iter_mut().for_each(|q| *q = 0);
            return (1.0, 0);
        }
        let inverse = 127.0 / range;
        for (q, &v) in out.iter_mut().zip(values) {
            *q = ((v * inverse).round() as i32).clamp(-127, 127);
        }
        return (range / 127.0, 0);
    }
    let (rmin, rmax) = (f64::from(min.min(0.0)), f64::from(max.max(0.0)));
    if rmin == rmax || values.is_empty() {
        out.iter_mut().for_each(|q| *q = 0);
        return (1.0, 0);
    }
    let (qmin, qmax) = (-128.0f64, 127.0f64);
    let scale = (rmax - rmin) / (qmax - qmin);
    let from_min = qmin - rmin / scale;
    let from_max = qmax - rmax / scale;
    let from_min_error = qmin.abs() + (rmin / scale).abs();
    let from_max_error = qmax.abs() + (rmax / scale).abs();
    let zero_point = if from_min_error < from_max_error {
        from_min
    } else {
        from_max
    };
    let nudged = if zero_point <= qmin {
        qmin as i32
    } else if zero_point >= qmax {
        qmax as i32
    } else {
        zero_point.round() as i32
    };
    let scale = scale as f32;
    let inverse = 1.0f32 / scale;
    for (q, &v) in out.iter_mut().zip(values) {
        *q = ((nudged as f32 + v * inverse).round() as i32).clamp(-128, 127);
    }
    (scale, nudged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_multiplier_matches_tflite() {
        // 0.5 → fraction 0.5, exponent 0 → 2^30, shift 0.
        assert_eq!(
            quantize_multiplier(0.5),
            QuantizedMultiplier {
                multiplier: 1 << 30,
                shift: 0
            }
        );
        assert_eq!(
            quantize_multiplier(1.0),
            QuantizedMultiplier {
                multiplier: 1 << 30,
                shift: 1
            }
        );
        assert_eq!(quantize_multiplier(0.0), QuantizedMultiplier::default());
        let m = quantize_multiplier(0.0123);
        assert!((m.multiplier as f64 * 2f64.powi(m.shift - 31) - 0.0123).abs() < 1e-9);
        // A fraction that rounds up to 2^31 renormalises.
        let m = quantize_multiplier(1.0 - 1e-12);
        assert_eq!(
            m,
            QuantizedMultiplier {
                multiplier: 1 << 30,
                shift: 1
            }
        );
        assert_eq!(quantize_multiplier(1e-12), QuantizedMultiplier::default());
    }

    #[test]
    fn frexp_matches_c() {
        assert_eq!(frexp(8.0), (0.5, 4));
        assert_eq!(frexp(0.75), (0.75, 0));
        assert_eq!(frexp(-3.0), (-0.75, 2));
        let (f, e) = frexp(f64::MIN_POSITIVE / 4.0);
        assert_eq!(f * 2f64.powi(e), f64::MIN_POSITIVE / 4.0);
    }

    #[test]
    fn rounding_helpers_match_gemmlowp() {
        assert_eq!(rounding_divide_by_pot(5, 1), 3); // 2.5 → 3
        assert_eq!(rounding_divide_by_pot(-5, 1), -3); // −2.5 → −3
        assert_eq!(rounding_divide_by_pot(7, 2), 2); // 1.75 → 2
        assert_eq!(rounding_divide_by_pot(-6, 2), -2); // −1.5 → −2
        assert_eq!(
            saturating_rounding_doubling_high_mul(i32::MIN, i32::MIN),
            i32::MAX
        );
        assert_eq!(
            saturating_rounding_doubling_high_mul(1 << 30, 1 << 30),
            1 << 29
        );
        // The high-mul's nudge rounds positive ties up but negative ties toward zero:
        // 3 × 0.5 → 2, −3 × 0.5 → −1 (what TFLite's reference kernels compute).
        let half = quantize_multiplier(0.5);
        assert_eq!(multiply_by_quantized_multiplier(3, half), 2);
        assert_eq!(multiply_by_quantized_multiplier(-3, half), -1);
        // With a right shift, RoundingDivideByPOT rounds ties away from zero.
        let quarter = quantize_multiplier(0.25);
        assert_eq!(multiply_by_quantized_multiplier(6, quarter), 2);
        assert_eq!(multiply_by_quantized_multiplier(-6, quarter), -2);
        assert_eq!(
            multiply_by_quantized_multiplier(1000, quantize_multiplier(1.0)),
            1000
        );
    }
}
