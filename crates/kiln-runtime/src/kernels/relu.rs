//! RELU, RELU6 and RELU_N1_TO_1: float32, int8 and uint8. The quantized kernels rescale from
//! the input's quantization to the output's (the two may differ) and clamp to the activation's
//! range on the output scale, as TFLite's QuantizedReluX does:
//! `clamp(out_zp + MultiplyByQuantizedMultiplier(q - in_zp, in_scale / out_scale))`.

use kiln_tflite::TensorType;
use kiln_tflite::quant::{QuantizedMultiplier, multiply_by_quantized_multiplier};

use super::common::lut::{ByteTable, FloatMap, checked_multiplier, scale_and_zero_point, unary};
use super::{Kernel, Prep};
use crate::error::RuntimeError;

const TYPES: &[TensorType] = &[TensorType::Float32, TensorType::Int8, TensorType::UInt8];

/// The three clamps; the upper bound of RELU is unbounded.
#[derive(Clone, Copy)]
enum Range {
    Relu,
    Relu6,
    ReluN1To1,
}

impl Range {
    fn bounds(self) -> (f32, f32) {
        match self {
            Range::Relu => (0.0, f32::INFINITY),
            Range::Relu6 => (0.0, 6.0),
            Range::ReluN1To1 => (-1.0, 1.0),
        }
    }
}

pub fn prepare_relu(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    prepare(prep, Range::Relu)
}

pub fn prepare_relu6(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    prepare(prep, Range::Relu6)
}

pub fn prepare_relu_n1_to_1(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    prepare(prep, Range::ReluN1To1)
}

fn prepare(prep: &Prep<'_>, range: Range) -> Result<Kernel, RuntimeError> {
    let (input, output) = unary(prep, TYPES)?;
    let len = input.num_elements();
    if input.dtype == TensorType::Float32 {
        return Ok(match range {
            Range::Relu => FloatMap::boxed("RELU", len, |x: f32| x.max(0.0)),
            Range::Relu6 => FloatMap::boxed("RELU6", len, |x: f32| x.clamp(0.0, 6.0)),
            Range::ReluN1To1 => FloatMap::boxed("RELU_N1_TO_1", len, |x: f32| x.clamp(-1.0, 1.0)),
        });
    }
    let input_q = scale_and_zero_point(prep, input)?;
    let output_q = scale_and_zero_point(prep, output)?;
    // ReluPrepare divides the float scales in float32, then widens to double.
    let multiplier =
        checked_multiplier(prep, "input-to-output", f64::from(input_q.0 / output_q.0))?;
    let signed = input.dtype == TensorType::Int8;
    Ok(table(signed, len, input_q, output_q, multiplier, range).boxed())
}

/// TFLite's QuantizedReluX for every int8/uint8 input value.
fn table(
    signed: bool,
    len: usize,
    (_, in_zp): (f32, i32),
    (out_scale, out_zp): (f32, i32),
    multiplier: QuantizedMultiplier,
    range: Range,
) -> ByteTable {
    let (qmin, qmax) = if signed { (-128, 127) } else { (0, 255) };
    let (act_min, act_max) = range.bounds();
    // roundf(bound / scale) on the output scale, in float32.
    let min = qmin.max(out_zp.saturating_add((act_min / out_scale).round() as i32));
    let max = if act_max == f32::INFINITY {
        qmax
    } else {
        qmax.min(out_zp.saturating_add((act_max / out_scale).round() as i32))
    };
    ByteTable::new(signed, len, |q| {
        // Wrapping like the C++ int32 arithmetic (only extreme scale ratios overflow).
        let rescaled = out_zp.wrapping_add(multiply_by_quantized_multiplier(q - in_zp, multiplier));
        rescaled.max(min).min(max)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_tflite::quant::quantize_multiplier;

    #[test]
    fn same_scale_relu_is_a_clamp_at_the_zero_point() {
        let q = (0.1f32, -20);
        let t = table(true, 1, q, q, quantize_multiplier(1.0), Range::Relu);
        for v in -128..=127 {
            assert_eq!(t.lookup(true, v), v.max(-20));
        }
    }

    #[test]
    fn rescaling_relu6_tracks_float() {
        let (input_q, output_q) = ((0.1f32, 10), (0.03f32, -128));
        let m = quantize_multiplier(f64::from(input_q.0 / output_q.0));
        let t = table(true, 1, input_q, output_q, m, Range::Relu6);
        for v in -128..=127 {
            let x = f64::from(input_q.0) * f64::from(v - input_q.1);
            let want = (x.clamp(0.0, 6.0) / f64::from(output_q.0)).round() - 128.0;
            let want = want.clamp(-128.0, 127.0);
            assert!((f64::from(t.lookup(true, v)) - want).abs() <= 1.0, "v={v}");
        }
        // 6.0 / 0.03 = 200 → −128 + 200 = 72 is the ceiling; the bottom is the zero point.
        assert_eq!(t.lookup(true, 127), 72);
        assert_eq!(t.lookup(true, -128), -128);
    }

    #[test]
    fn uint8_relu_n1_to_1_bounds() {
        let q = (0.02f32, 128);
        let t = table(false, 1, q, q, quantize_multiplier(1.0), Range::ReluN1To1);
        assert_eq!(t.lookup(false, 0), 78); // −1 / 0.02 = −50 → 128 − 50
        assert_eq!(t.lookup(false, 255), 178);
        assert_eq!(t.lookup(false, 130), 130);
    }
}
