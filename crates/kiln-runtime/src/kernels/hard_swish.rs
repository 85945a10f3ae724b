//! HARD_SWISH, `x · relu6(x + 3) / 6`: float32, int8 and uint8.
//!
//! The quantized kernel is TFLite's reference 16-bit fixed-point computation (the reference
//! and the builtin resolver share it; there is no table in LiteRT): the input is moved to a
//! "high-resolution" scale (`input_scale / 128`), rescaled once to the output scale and once
//! to a "relu-ish" scale where ±3.0 is ±32768, the relu-ish value is mapped into [0, 1] and
//! multiplied in. All multipliers are 16-bit. Every int8/uint8 input value is evaluated once
//! at prepare time into a table.

use kiln_tflite::TensorType;
use kiln_tflite::quant::quantize_multiplier;

use super::common::lut::{ByteTable, FloatMap, scale_and_zero_point, unary};
use super::common::quant::type_range;
use super::{Kernel, Prep};
use crate::error::RuntimeError;

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    let (input, output) = unary(
        prep,
        &[TensorType::Float32, TensorType::Int8, TensorType::UInt8],
    )?;
    let len = input.num_elements();
    if input.dtype == TensorType::Float32 {
        return Ok(FloatMap::boxed("HARD_SWISH", len, |x: f32| {
            x * (x + 3.0).clamp(0.0, 6.0) / 6.0
        }));
    }
    let (in_scale, in_zp) = scale_and_zero_point(prep, input)?;
    let (out_scale, out_zp) = scale_and_zero_point(prep, output)?;
    let params = Params::new(in_scale, in_zp, out_scale, out_zp);
    if params.output_exponent > 0 {
        return Err(prep.unsupported(&format!(
            "output '{}' scale {out_scale} is too small for input scale {in_scale} \
             (TFLite's HARD_SWISH needs input_scale / 128 <= output_scale)",
            output.name
        )));
    }
    let (min, max) = type_range(input.dtype).unwrap_or((0, 255));
    let signed = input.dtype == TensorType::Int8;
    Ok(ByteTable::new(signed, len, |q| params.apply(q, min, max)).boxed())
}

/// TFLite's HardSwishParams.
#[derive(Clone, Copy, Debug)]
struct Params {
    input_zero_point: i16,
    output_zero_point: i16,
    reluish_multiplier: i16,
    reluish_exponent: i32,
    output_multiplier: i16,
    output_exponent: i32,
}

impl Params {
    fn new(in_scale: f32, in_zp: i32, out_scale: f32, out_zp: i32) -> Self {
        // HardSwishPrepare computes these ratios in float32.
        let hires_input_scale = (1.0f32 / 128.0) * in_scale;
        let reluish_scale = 3.0f32 / 32768.0;
        let output = quantize_multiplier(f64::from(hires_input_scale / out_scale));
        let reluish = quantize_multiplier(f64::from(hires_input_scale / reluish_scale));
        Self {
            input_zero_point: in_zp as i16,
            output_zero_point: out_zp as i16,
            reluish_multiplier: down_scale_to_i16(reluish.multiplier),
            reluish_exponent: reluish.shift,
            output_multiplier: down_scale_to_i16(output.multiplier),
            output_exponent: output.shift,
        }
    }

    /// The reference kernel's arithmetic for one quantized input value.
    fn apply(&self, q: i32, min: i32, max: i32) -> i32 {
        let input_value = (q - i32::from(self.input_zero_point)) as i16;
        let hires = input_value.wrapping_mul(1 << 7);
        let preshift_output = srdhm16(hires, self.output_multiplier);
        let mut reluish = hires;
        if self.reluish_exponent > 0 {
            reluish = saturating_left_shift16(reluish, self.reluish_exponent - 1);
        }
        reluish = srdhm16(reluish, self.reluish_multiplier);
        if self.reluish_exponent > 0 {
            reluish = saturating_left_shift16(reluish, 1);
        }
        if self.reluish_exponent < 0 {
            reluish = rounding_divide_by_pot16(reluish, -self.reluish_exponent);
        }
        // [-1, 1] → [0, 1].
        let reluish = ((i32::from(reluish) + (1 << 15)) >> 1) as i16;
        let preshift = sdhm16(reluish, preshift_output);
        let out = rounding_divide_by_pot16(preshift, -self.output_exponent)
            .wrapping_add(self.output_zero_point);
        i32::from(out).clamp(min, max)
    }
}

/// TFLite's DownScaleInt32ToInt16Multiplier: round a Q31 multiplier to Q15.
fn down_scale_to_i16(multiplier: i32) -> i16 {
    const ROUNDING: i32 = 1 << 15;
    if multiplier >= i32::MAX - ROUNDING {
        return i16::MAX;
    }
    ((multiplier + ROUNDING) >> 16) as i16
}

/// gemmlowp's 16-bit SaturatingRoundingDoublingHighMul.
fn srdhm16(a: i16, b: i16) -> i16 {
    if a == i16::MIN && b == i16::MIN {
        return i16::MAX;
    }
    let product = i32::from(a) * i32::from(b);
    let nudge = if product >= 0 { 1 << 14 } else { 1 - (1 << 14) };
    ((product + nudge) / (1 << 15)) as i16
}

/// The reference's SaturatingDoublingHighMul: like `srdhm16` but rounding toward zero.
fn sdhm16(a: i16, b: i16) -> i16 {
    if a == i16::MIN && b == i16::MIN {
        return i16::MAX;
    }
    ((i32::from(a) * i32::from(b)) / (1 << 15)) as i16
}

fn saturating_left_shift16(value: i16, amount: i32) -> i16 {
    let shifted = i64::from(value) * (1i64 << amount.clamp(0, 40));
    shifted.clamp(i64::from(i16::MIN), i64::from(i16::MAX)) as i16
}

/// gemmlowp's RoundingDivideByPOT on int16 values, including its int16 wrap-around for
/// exponents of 16 and more.
fn rounding_divide_by_pot16(x: i16, exponent: i32) -> i16 {
    let exponent = exponent.clamp(0, 31);
    let mask = ((1i64 << exponent) - 1) as i16;
    let remainder = x & mask;
    let threshold = (mask >> 1).wrapping_add(i16::from(x < 0));
    ((i32::from(x) >> exponent) as i16).wrapping_add(i16::from(remainder > threshold))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hard_swish(x: f64) -> f64 {
        x * (x + 3.0).clamp(0.0, 6.0) / 6.0
    }

    #[test]
    fn int8_tracks_float_within_two_steps() {
        let (in_scale, in_zp, out_scale, out_zp) = (0.05f32, 10, 0.03f32, -100);
        let params = Params::new(in_scale, in_zp, out_scale, out_zp);
        for q in -128..=127 {
            let x = f64::from(in_scale) * f64::from(q - in_zp);
            let want = (hard_swish(x) / f64::from(out_scale) + f64::from(out_zp))
                .round()
                .clamp(-128.0, 127.0);
            let got = f64::from(params.apply(q, -128, 127));
            assert!((got - want).abs() <= 2.0, "q={q}: {got} vs {want}");
        }
        // Zero maps to the output zero point; large negatives to zero too.
        assert_eq!(params.apply(in_zp, -128, 127), out_zp);
    }

    #[test]
    fn fixed_point_helpers() {
        assert_eq!(srdhm16(i16::MIN, i16::MIN), i16::MAX);
        assert_eq!(srdhm16(16384, 16384), 8192);
        assert_eq!(sdhm16(-3, 16384), -1); // −1.5 toward zero
        assert_eq!(rounding_divide_by_pot16(5, 1), 3);
        assert_eq!(rounding_divide_by_pot16(-5, 1), -3);
        assert_eq!(saturating_left_shift16(20000, 1), i16::MAX);
        assert_eq!(down_scale_to_i16(1 << 30), 1 << 14);
        assert_eq!(down_scale_to_i16(i32::MAX), i16::MAX);
    }
}
