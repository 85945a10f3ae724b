//! Fixed-point arithmetic of TFLite's quantized kernels: real multipliers as (Q31 multiplier,
//! shift) pairs and the rounding multiply that applies them, written to produce exactly what
//! the reference kernels produce (double rounding, TFLite's default build).

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
#[inline]
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
#[inline]
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
#[inline]
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
