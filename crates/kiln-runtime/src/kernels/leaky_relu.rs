//! LEAKY_RELU, `x > 0 ? x : alpha · x`: float32, int8 and uint8 (alpha may be negative or
//! above one).
//!
//! The quantized kernel is TFLite's reference QuantizeLeakyRelu: two multipliers,
//! `in_scale / out_scale` for the identity side and `in_scale · alpha / out_scale` for the
//! negative side (both ratios computed in float32, as LeakyReluPrepare does); a negative alpha
//! multiplier is applied by magnitude and the result negated. Evaluated at prepare time for
//! every int8/uint8 input value.

use kiln_tflite::quant::{QuantizedMultiplier, multiply_by_quantized_multiplier};
use kiln_tflite::{BuiltinOptions, TensorType};

use super::common::lut::{ByteTable, FloatMap, checked_multiplier, scale_and_zero_point, unary};
use super::common::quant::type_range;
use super::{Kernel, Prep};
use crate::error::RuntimeError;

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    let alpha = match &prep.op.options {
        BuiltinOptions::LeakyRelu { alpha } => *alpha,
        BuiltinOptions::None => 0.0,
        _ => return Err(prep.bad("options are not LeakyReluOptions")),
    };
    let (input, output) = unary(
        prep,
        &[TensorType::Float32, TensorType::Int8, TensorType::UInt8],
    )?;
    let len = input.num_elements();
    if input.dtype == TensorType::Float32 {
        return Ok(FloatMap::boxed("LEAKY_RELU", len, move |x: f32| {
            if x > 0.0 { x } else { x * alpha }
        }));
    }
    let (in_scale, in_zp) = scale_and_zero_point(prep, input)?;
    let (out_scale, out_zp) = scale_and_zero_point(prep, output)?;
    let identity = checked_multiplier(prep, "identity", f64::from(in_scale / out_scale))?;
    let alpha_m = checked_multiplier(prep, "alpha", f64::from(in_scale * alpha / out_scale))?;
    let (min, max) = type_range(input.dtype).unwrap_or((0, 255));
    let signed = input.dtype == TensorType::Int8;
    Ok(ByteTable::new(signed, len, |q| {
        quantized(q - in_zp, out_zp, identity, alpha_m).clamp(min, max)
    })
    .boxed())
}

/// The unclamped output for input value `x` (zero point removed).
fn quantized(
    x: i32,
    out_zp: i32,
    identity: QuantizedMultiplier,
    alpha: QuantizedMultiplier,
) -> i32 {
    if x >= 0 {
        out_zp.wrapping_add(multiply_by_quantized_multiplier(x, identity))
    } else {
        let negative = alpha.multiplier < 0;
        let magnitude = QuantizedMultiplier {
            multiplier: alpha.multiplier.wrapping_abs(),
            shift: alpha.shift,
        };
        let scaled = multiply_by_quantized_multiplier(x, magnitude);
        out_zp.wrapping_add(if negative {
            scaled.wrapping_neg()
        } else {
            scaled
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_tflite::quant::quantize_multiplier;

    #[test]
    fn negative_alpha_mirrors_positive_alpha() {
        let identity = quantize_multiplier(0.8);
        let plus = quantize_multiplier(0.16);
        let minus = quantize_multiplier(-0.16);
        assert!(minus.multiplier < 0);
        for x in -255..0 {
            assert_eq!(
                quantized(x, 0, identity, minus),
                -quantized(x, 0, identity, plus)
            );
        }
        assert_eq!(quantized(10, 5, identity, plus), 13);
        assert_eq!(quantized(-10, 5, identity, plus), 3); // −1.6 → −2
    }
}
