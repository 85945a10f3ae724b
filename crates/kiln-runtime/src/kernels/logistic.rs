//! LOGISTIC (sigmoid): float32, int8 and uint8.
//!
//! LiteRT's reference resolver (BUILTIN_REF, `Register_LOGISTIC_REF`) evaluates int8 and
//! uint8 through a 256-entry table built in Prepare (`LUTPopulate` with
//! `1 / (1 + exp(-x))` in float32), not through gemmlowp's fixed-point logistic; so does
//! this kernel. Like the reference Prepare, the output scale must be exactly 1/256 (the
//! zero point is not checked; the converter writes −128 for int8 and 0 for uint8).

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
        return Ok(FloatMap::boxed("LOGISTIC", len, logistic_f32));
    }
    let input_q = scale_and_zero_point(prep, input)?;
    let output_q = scale_and_zero_point(prep, output)?;
    if f64::from(output_q.0) != 1.0 / 256.0 {
        return Err(prep.unsupported(&format!(
            "output '{}' has scale {}; quantized LOGISTIC requires 1/256",
            output.name, output_q.0
        )));
    }
    let signed = input.dtype == TensorType::Int8;
    Ok(float_lut(signed, len, input_q, output_q, |x| 1.0 / (1.0 + (-x).exp())).boxed())
}

/// The reference float kernel's cut-offs (1 above 16.62, e^x below −9, else 1 / (1 + e^−x))
/// as selects over one branch-free exp, so the element loop vectorises.
#[inline(always)]
fn logistic_f32(x: f32) -> f32 {
    const CUTOFF_UPPER: f32 = 16.619_047;
    const CUTOFF_LOWER: f32 = -9.0;
    let e = exp(-x);
    let middle = 1.0 / (1.0 + e);
    // e^x = 1 / e^−x (and 0 once e^−x overflows).
    let low = 1.0 / e;
    let value = if x > CUTOFF_UPPER { 1.0 } else { middle };
    if x < CUTOFF_LOWER { low } else { value }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_logistic_tracks_the_reference_formula() {
        let reference = |x: f32| {
            if x > 16.619_047 {
                1.0
            } else if x < -9.0 {
                x.exp()
            } else {
                1.0 / (1.0 + (-x).exp())
            }
        };
        let mut x = -100.0f32;
        while x < 100.0 {
            let (got, want) = (logistic_f32(x), reference(x));
            assert!(
                (got - want).abs() <= 3e-7 * want.max(1e-30) + 1e-37,
                "logistic({x}) = {got}, reference {want}"
            );
            x += 0.003_1;
        }
        assert!(logistic_f32(f32::NAN).is_nan());
        assert_eq!(logistic_f32(f32::INFINITY), 1.0);
        assert_eq!(logistic_f32(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn int8_table_tracks_float_sigmoid_within_one_step() {
        let input_q = (0.05f32, 3);
        let table = float_lut(true, 1, input_q, (1.0 / 256.0, -128), |x| {
            1.0 / (1.0 + (-x).exp())
        });
        for q in -128..=127 {
            let x = input_q.0 * (q - input_q.1) as f32;
            let exact = 1.0 / (1.0 + (-f64::from(x)).exp());
            let got = f64::from(table.lookup(true, q) + 128) / 256.0;
            assert!(
                (got - exact).abs() <= 1.0 / 256.0,
                "q={q}: {got} vs {exact}"
            );
        }
        // The extremes saturate: sigmoid(−6.55) ≈ 0.0014 → −128; sigmoid(6.2) ≈ 0.998 → 127.
        assert_eq!(table.lookup(true, -128), -128);
        assert_eq!(table.lookup(true, 127), 127);
        assert_eq!(table.lookup(true, 3), 0); // sigmoid(0) = 0.5 → −128 + 128
    }

    #[test]
    fn uint8_table_is_monotone() {
        let table = float_lut(false, 1, (0.1, 128), (1.0 / 256.0, 0), |x| {
            1.0 / (1.0 + (-x).exp())
        });
        for q in 1..=255 {
            assert!(table.lookup(false, q) >= table.lookup(false, q - 1));
        }
        assert_eq!(table.lookup(false, 128), 128);
        assert_eq!(table.lookup(false, 255), 255);
    }

    #[test]
    fn float_cutoffs() {
        assert_eq!(logistic_f32(20.0), 1.0);
        assert!((logistic_f32(-10.0) - (-10.0f32).exp()).abs() < 1e-9);
        assert!((logistic_f32(0.0) - 0.5).abs() < 1e-7);
    }
}
