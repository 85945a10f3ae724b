//! TANH: float32, int8 and uint8.
//!
//! LiteRT's reference resolver (BUILTIN_REF, `Register_TANH_REF`) evaluates int8 and uint8
//! through a 256-entry table built in Prepare (`LUTPopulate` with `std::tanh` in float32), not
//! through gemmlowp's fixed-point tanh; so does this kernel. The table works for any output
//! quantization (the converter writes scale 1/128, zero point 0 for int8), and like the
//! reference Prepare nothing about it is checked.

use kiln_tflite::TensorType;

use super::common::exp::exp;
use super::common::lut::{FloatMap, float_lut, scale_and_zero_point, unary};
use super::{Kernel, Prep};
use crate::error::RuntimeError;

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    let (input, output) = unary(
        prep,
        &[TensorType::Float32, TensorType::Int8, TensorType::UInt8],
    )?;
    let len = input.num_elements();
    if input.dtype == TensorType::Float32 {
        return Ok(FloatMap::boxed("TANH", len, tanh_f32));
    }
    let input_q = scale_and_zero_point(prep, input)?;
    let output_q = scale_and_zero_point(prep, output)?;
    let signed = input.dtype == TensorType::Int8;
    Ok(float_lut(signed, len, input_q, output_q, f32::tanh).boxed())
}

/// tanh through one branch-free exp: sign(x)·(1 − 2 / (e^{2|x|} + 1)), which vectorises
/// (libm's tanh is a call per element). Within 1e-7 of it absolutely; 1 from |x| = 9.02 on.
#[inline(always)]
fn tanh_f32(x: f32) -> f32 {
    let magnitude = 1.0 - 2.0 / (exp(2.0 * x.abs()) + 1.0);
    magnitude.copysign(x)
}

#[cfg(test)]
mod float_tests {
    #[test]
    fn float_tanh_tracks_libm() {
        let mut x = -12.0f32;
        while x < 12.0 {
            let (got, want) = (super::tanh_f32(x), x.tanh());
            assert!((got - want).abs() <= 2e-7, "tanh({x}) = {got}, libm {want}");
            x += 0.001_37;
        }
        assert!(super::tanh_f32(f32::NAN).is_nan());
        assert_eq!(super::tanh_f32(f32::INFINITY), 1.0);
        assert_eq!(super::tanh_f32(f32::NEG_INFINITY), -1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_table_tracks_float_tanh_within_one_step() {
        let input_q = (0.03f32, -5);
        let table = float_lut(true, 1, input_q, (1.0 / 128.0, 0), f32::tanh);
        for q in -128..=127 {
            let x = f64::from(input_q.0 * (q - input_q.1) as f32);
            let got = f64::from(table.lookup(true, q)) / 128.0;
            assert!((got - x.tanh()).abs() <= 1.0 / 128.0, "q={q}");
        }
        assert_eq!(table.lookup(true, -5), 0);
        assert_eq!(table.lookup(true, -128), -128); // tanh(−3.69) × 128 ≈ −127.8 → −128
        assert_eq!(table.lookup(true, 127), 127); // tanh(3.96) × 128 ≈ 127.9 → 128, clamped
    }
}
