//! SOFTMAX over the last dimension: float32, int8 and uint8.
//!
//! LiteRT's reference resolver (BUILTIN_REF, `Register_SOFTMAX_REF`) runs the quantized
//! softmax in gemmlowp fixed point (no table): `(x - row_max)` is rescaled by
//! `beta · input_scale` into Q5.26, exponentiated with `exp_on_negative_values`, summed in
//! Q12.19, inverted with `one_over_one_plus_x_for_x_in_0_1`, and each output is
//! `exp · (1 / sum)` on the 1/256 output scale. Differences below `diff_min` contribute
//! nothing. int8 outputs must be quantized with scale 1/256 and zero point −128 (as the
//! reference Prepare requires); uint8 outputs are written on scale 1/256, zero point 0.

use kiln_tflite::quant::{
    quantize_multiplier, rounding_divide_by_pot, saturating_rounding_doubling_high_mul,
};
use kiln_tflite::{BuiltinOptions, TensorType};

use super::common::lut::scale_and_zero_point;
use super::common::quant::{load_q, store_q};
use super::{In, Kernel, OpKernel, Out, Prep};
use crate::error::RuntimeError;
use crate::tensor::{as_f32, as_f32_mut};

/// Integer bits of the Q5.26 format the scaled differences use.
const SCALED_DIFF_INTEGER_BITS: i32 = 5;
/// Integer bits of the Q12.19 accumulator of exponentials.
const ACCUMULATION_INTEGER_BITS: i32 = 12;

#[derive(Debug)]
struct Softmax {
    rows: usize,
    depth: usize,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Float { beta: f32 },
    Quantized(QuantizedParams),
}

#[derive(Clone, Debug)]
struct QuantizedParams {
    signed: bool,
    input_multiplier: i32,
    input_left_shift: i32,
    diff_min: i32,
    /// The scaled exponential of every difference an 8-bit row can have, indexed by
    /// `row_max − x` (0..=255); `None` below `diff_min`. The values are what the reference
    /// computes per element, computed once at prepare.
    exps: Vec<Option<i32>>,
}

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    let beta = match &prep.op.options {
        BuiltinOptions::Softmax { beta } => *beta,
        BuiltinOptions::None => 0.0,
        _ => return Err(prep.bad("options are not SoftmaxOptions")),
    };
    prep.expect_arity(1..=1, 1)?;
    let (input, output) = (prep.input(0)?, prep.output(0)?);
    prep.require_type(
        input,
        &[TensorType::Float32, TensorType::Int8, TensorType::UInt8],
    )?;
    if output.dtype != input.dtype {
        return Err(prep.unsupported(&format!(
            "input '{}' is {} but output '{}' is {}",
            input.name, input.dtype, output.name, output.dtype
        )));
    }
    let Some((&depth, outer)) = input.shape.split_last() else {
        return Err(prep.bad(&format!(
            "input '{}' is a scalar; SOFTMAX needs at least one dimension",
            input.name
        )));
    };
    let rows = outer.iter().product();
    prep.set_output_shape(0, input.shape.clone());
    let kind = if input.dtype == TensorType::Float32 {
        Kind::Float { beta }
    } else {
        let (input_scale, _) = scale_and_zero_point(prep, input)?;
        let (output_scale, output_zp) = scale_and_zero_point(prep, output)?;
        let signed = input.dtype == TensorType::Int8;
        if signed && (output_zp != -128 || (output_scale - 1.0 / 256.0).abs() > 0.001 / 256.0) {
            return Err(prep.unsupported(&format!(
                "output '{}' is quantized with scale {output_scale}, zero point {output_zp}; \
                 int8 SOFTMAX requires 1/256 and -128",
                output.name
            )));
        }
        Kind::Quantized(
            QuantizedParams::new(beta, input_scale, signed).ok_or_else(|| {
                prep.unsupported(&format!(
                    "beta {beta} × input scale {input_scale} is outside what TFLite's quantized \
                 SOFTMAX supports"
                ))
            })?,
        )
    };
    Ok(Box::new(Softmax { rows, depth, kind }))
}

impl QuantizedParams {
    /// TFLite's PreprocessSoftmaxScaling and CalculateInputRadius (double precision).
    fn new(beta: f32, input_scale: f32, signed: bool) -> Option<Self> {
        let real = (f64::from(beta)
            * f64::from(input_scale)
            * f64::from(1u32 << (31 - SCALED_DIFF_INTEGER_BITS)))
        .min(f64::from(i32::MAX));
        // QuantizeMultiplierGreaterThanOne (NaN fails too).
        if real.is_nan() || real <= 1.0 {
            return None;
        }
        let m = quantize_multiplier(real);
        if !(0..=31).contains(&m.shift) {
            return None;
        }
        let radius = (f64::from((1 << SCALED_DIFF_INTEGER_BITS) - 1)
            * (1i64 << (31 - SCALED_DIFF_INTEGER_BITS)) as f64
            / (1i64 << m.shift) as f64)
            .floor();
        let mut params = Self {
            signed,
            input_multiplier: m.multiplier,
            input_left_shift: m.shift,
            diff_min: -(radius as i32),
            exps: Vec::new(),
        };
        params.exps = (0..256).map(|d| params.scaled_exp(-d)).collect();
        Some(params)
    }

    /// The reference's exponential of `diff = x − row max` (Q5.26 in, Q0.31 out), `None`
    /// below `diff_min`, where it contributes nothing.
    fn scaled_exp(&self, diff: i32) -> Option<i32> {
        (diff >= self.diff_min).then(|| {
            // MultiplyByQuantizedMultiplierGreaterThanOne (double rounding).
            let rescaled = saturating_rounding_doubling_high_mul(
                diff.wrapping_mul(1i32.wrapping_shl(self.input_left_shift as u32)),
                self.input_multiplier,
            );
            exp_on_negative_values_q5(rescaled)
        })
    }

    /// One row of the reference quantized softmax; `out(c, value)` receives each output
    /// value (already offset to the output type's range).
    fn row(&self, load: impl Fn(usize) -> i32, depth: usize, mut out: impl FnMut(usize, i32)) {
        let (min, max) = if self.signed { (-128, 127) } else { (0, 255) };
        let row_max = (0..depth).map(&load).fold(min, i32::max);
        // 8-bit values differ from their row's maximum by 0..=255.
        let scaled_exp = |c: usize| self.exps[(row_max - load(c)) as usize];
        let mut sum_of_exps: i32 = 0;
        for c in 0..depth {
            if let Some(e) = scaled_exp(c) {
                sum_of_exps =
                    sum_of_exps.wrapping_add(rounding_divide_by_pot(e, ACCUMULATION_INTEGER_BITS));
            }
        }
        let (reciprocal, bits_over_unit) = reciprocal(sum_of_exps, ACCUMULATION_INTEGER_BITS);
        // TFLite checks 0 <= exponent <= 31 (a row whose exponentials sum past 512 aborts
        // it); here the shift saturates instead.
        let exponent = (bits_over_unit + 31 - 8).clamp(0, 31);
        for c in 0..depth {
            let value = match scaled_exp(c) {
                Some(e) => {
                    let unsaturated = rounding_divide_by_pot(
                        saturating_rounding_doubling_high_mul(reciprocal, e),
                        exponent,
                    );
                    unsaturated.wrapping_add(min).clamp(min, max)
                }
                None => min,
            };
            out(c, value);
        }
    }
}

impl OpKernel for Softmax {
    fn eval(&self, inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]) {
        let Some(input) = &inputs[0] else {
            unreachable!("prepared")
        };
        let depth = self.depth;
        match &self.kind {
            Kind::Float { beta } => {
                let input = as_f32(input.data);
                let output = as_f32_mut(outputs[0].data);
                for r in 0..self.rows {
                    let x = &input[r * depth..][..depth];
                    let y = &mut output[r * depth..][..depth];
                    let max = x.iter().copied().fold(f32::MIN, f32::max);
                    let mut sum = 0.0f32;
                    for (o, &v) in y.iter_mut().zip(x) {
                        let e = ((v - max) * beta).exp();
                        *o = e;
                        sum += e;
                    }
                    for o in y.iter_mut() {
                        *o /= sum;
                    }
                }
            }
            Kind::Quantized(params) => {
                let data = input.data;
                let out = &mut *outputs[0].data;
                for r in 0..self.rows {
                    let base = r * depth;
                    params.row(
                        |c| load_q(data, params.signed, base + c),
                        depth,
                        |c, v| store_q(out, base + c, v),
                    );
                }
            }
        }
    }
}

// gemmlowp fixed-point pieces (FixedPoint<int32_t, N> raw values).

/// SaturatingRoundingMultiplyByPOT with a positive exponent: a saturating left shift.
fn saturating_shift_left(x: i32, exponent: u32) -> i32 {
    let threshold = (1i32 << (31 - exponent)) - 1;
    if x > threshold {
        i32::MAX
    } else if x < -threshold {
        i32::MIN
    } else {
        x << exponent
    }
}

/// exp(x) for x in [-1/4, 0), Q0.31 in and out: a Taylor expansion around -1/8.
fn exp_on_interval_between_negative_one_quarter_and_0_excl(a: i32) -> i32 {
    const EXP_MINUS_ONE_EIGHTH: i32 = 1_895_147_668;
    const ONE_THIRD: i32 = 715_827_883;
    let mul = saturating_rounding_doubling_high_mul;
    let x = a.wrapping_add(1 << 28);
    let x2 = mul(x, x);
    let x3 = mul(x2, x);
    let x4 = mul(x2, x2);
    let x4_over_4 = rounding_divide_by_pot(x4, 2);
    let poly = rounding_divide_by_pot(
        mul(x4_over_4.wrapping_add(x3), ONE_THIRD).wrapping_add(x2),
        1,
    );
    EXP_MINUS_ONE_EIGHTH.wrapping_add(mul(EXP_MINUS_ONE_EIGHTH, x.wrapping_add(poly)))
}

/// gemmlowp's exp_on_negative_values for a Q5.26 input (x <= 0), returning Q0.31.
fn exp_on_negative_values_q5(a: i32) -> i32 {
    const FRACTIONAL_BITS: i32 = 31 - SCALED_DIFF_INTEGER_BITS;
    const ONE_QUARTER: i32 = 1 << (FRACTIONAL_BITS - 2);
    let mask = ONE_QUARTER - 1;
    let a_mod_quarter_minus_one_quarter = (a & mask) - ONE_QUARTER;
    // Rescale<0> from Q5.26 to Q0.31.
    let mut result =
        exp_on_interval_between_negative_one_quarter_and_0_excl(saturating_shift_left(
            a_mod_quarter_minus_one_quarter,
            SCALED_DIFF_INTEGER_BITS as u32,
        ));
    let remainder = a_mod_quarter_minus_one_quarter.wrapping_sub(a);
    // exp(-2^k) for k = -2..=4, Q0.31.
    const BARREL: [(i32, i32); 7] = [
        (-2, 1_672_461_947),
        (-1, 1_302_514_674),
        (0, 790_015_084),
        (1, 290_630_308),
        (2, 39_332_535),
        (3, 720_401),
        (4, 242),
    ];
    for (exponent, multiplier) in BARREL {
        if remainder & (1 << (FRACTIONAL_BITS + exponent)) != 0 {
            result = saturating_rounding_doubling_high_mul(result, multiplier);
        }
    }
    if a == 0 { i32::MAX } else { result }
}

/// gemmlowp's one_over_one_plus_x_for_x_in_0_1 (Q0.31 in and out), Newton-Raphson.
fn one_over_one_plus_x_for_x_in_0_1(a: i32) -> i32 {
    const FORTY_EIGHT_OVER_SEVENTEEN: i32 = 1_515_870_810; // Q2.29
    const MINUS_THIRTY_TWO_OVER_SEVENTEEN: i32 = -1_010_580_540; // Q2.29
    const ONE_Q2: i32 = 1 << 29;
    let mul = saturating_rounding_doubling_high_mul;
    // RoundingHalfSum(a, 1.0).
    let sum = i64::from(a) + i64::from(i32::MAX);
    let half_denominator = ((sum + if sum >= 0 { 1 } else { -1 }) / 2) as i32;
    let mut x = FORTY_EIGHT_OVER_SEVENTEEN
        .wrapping_add(mul(half_denominator, MINUS_THIRTY_TWO_OVER_SEVENTEEN));
    for _ in 0..3 {
        let half_denominator_times_x = mul(half_denominator, x);
        let one_minus = ONE_Q2.wrapping_sub(half_denominator_times_x);
        x = x.wrapping_add(saturating_shift_left(mul(x, one_minus), 2));
    }
    saturating_shift_left(x, 1)
}

/// TFLite's GetReciprocal: 1 / x for a positive fixed-point x with `integer_bits`, as a
/// Q0.31 value and the number of bits x has above one.
fn reciprocal(x: i32, integer_bits: i32) -> (i32, i32) {
    let headroom_plus_one = (x as u32).leading_zeros();
    let bits_over_unit = integer_bits - headroom_plus_one as i32;
    let shifted_minus_one = ((x as u32)
        .checked_shl(headroom_plus_one)
        .unwrap_or(0)
        .wrapping_sub(1 << 31)) as i32;
    (
        one_over_one_plus_x_for_x_in_0_1(shifted_minus_one),
        bits_over_unit,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_point_exp_matches_float() {
        for i in 0..=2000 {
            let x = -(i as f64) / 100.0; // 0 .. −20
            let raw = (x * f64::from(1 << 26)).round() as i32;
            let got = f64::from(exp_on_negative_values_q5(raw)) / 2f64.powi(31);
            assert!((got - x.exp()).abs() < 1e-6, "exp({x}) = {got}");
        }
        assert_eq!(exp_on_negative_values_q5(0), i32::MAX);
    }

    #[test]
    fn fixed_point_reciprocal_matches_float() {
        for i in 1..1000 {
            let x = i as f64 / 1000.0;
            let raw = (x * 2f64.powi(31)) as i32;
            let got = f64::from(one_over_one_plus_x_for_x_in_0_1(raw)) / 2f64.powi(31);
            assert!((got - 1.0 / (1.0 + x)).abs() < 1e-7, "1/(1+{x}) = {got}");
        }
    }

    #[test]
    fn int8_softmax_tracks_float_softmax() {
        let scale = 0.1f32;
        let params = QuantizedParams::new(1.0, scale, true).unwrap();
        let inputs: Vec<i32> = vec![-128, -20, 0, 5, 30, 31, 127, 100, -50, 64];
        let mut got = vec![0; inputs.len()];
        params.row(|c| inputs[c], inputs.len(), |c, v| got[c] = v);
        let max = *inputs.iter().max().unwrap();
        let exps: Vec<f64> = inputs
            .iter()
            .map(|&q| (f64::from(scale) * f64::from(q - max)).exp())
            .collect();
        let total: f64 = exps.iter().sum();
        for (g, e) in got.iter().zip(&exps) {
            let want = e / total * 256.0 - 128.0;
            assert!((f64::from(*g) - want).abs() <= 1.0, "{g} vs {want}");
        }
        // A single element is certain: 1.0 → 127 after saturation.
        let mut one = 0;
        params.row(|_| 42, 1, |_, v| one = v);
        assert_eq!(one, 127);
    }

    #[test]
    fn tiny_scaling_is_rejected() {
        assert!(QuantizedParams::new(1.0, 1e-9, true).is_none());
        assert!(QuantizedParams::new(-1.0, 0.1, true).is_none());
    }
}
