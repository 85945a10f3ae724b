//! TANH: float32, int8 and uint8.
//!
//! LiteRT's reference resolver (BUILTIN_REF, `Register_TANH_REF`) evaluates int8 and uint8
//! through a 256-entry table built in Prepare (`LUTPopulate` with `std::tanh` in float32), not
//! through gemmlowp's fixed-point tanh; so does this kernel. The table works for any output
//! quantization (the converter writes scale 1/128, zero point 0 for int8), and like the
//! reference Prepare nothing about it is checked.

use kiln_tflite::TensorType;

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
        return Ok(FloatMap::boxed("TANH", len, f32::tanh));
    }
    let input_q = scale_and_zero_point(prep, input)?;
    let output_q = scale_and_zero_point(prep, output)?;
    let signed = input.dtype == TensorType::Int8;
    Ok(float_lut(signed, len, input_q, output_q, f32::tanh).boxed())
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
