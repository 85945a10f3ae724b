//! How the int32 accumulator of a weighted operator (CONV_2D, DEPTHWISE_CONV_2D,
//! FULLY_CONNECTED) becomes a step of its output's grid: multiplied by
//! input_scale × filter_scale[c] / output_scale for output channel c (computed in double
//! precision from the f32 scales the file stores, as TFLite's
//! PopulateConvolutionQuantizationParams does), either in TFLite's fixed point or in double
//! precision, as LiteRT's reference kernels do for each operator.

use super::fixed_point::{
    QuantizedMultiplier, multiply_by_quantized_multiplier, quantize_multiplier,
};

/// How an integer accumulator becomes an output step, per output channel.
#[derive(Clone, Debug, PartialEq)]
pub enum Rescale {
    /// TFLite's fixed-point MultiplyByQuantizedMultiplier (reference conv, depthwise).
    FixedPoint(Vec<QuantizedMultiplier>),
    /// round(acc × scale) in double precision (LiteRT's reference FULLY_CONNECTED).
    Double(Vec<f64>),
}

impl Rescale {
    /// The per-channel rescale of an operator whose input, filter (one scale per output
    /// channel, or one) and output have these scales: in double precision when
    /// `double_precision` (FULLY_CONNECTED), else in fixed point.
    pub fn new(
        double_precision: bool,
        input_scale: f32,
        filter_scales: &[f32],
        output_scale: f32,
    ) -> Self {
        let real = filter_scales
            .iter()
            .map(|&f| f64::from(input_scale) * f64::from(f) / f64::from(output_scale));
        if double_precision {
            Self::Double(real.collect())
        } else {
            Self::FixedPoint(real.map(quantize_multiplier).collect())
        }
    }

    /// Accumulator `acc` of output channel `channel` on the output's grid (before the output's
    /// zero point is added).
    #[inline]
    pub fn apply(&self, acc: i32, channel: usize) -> i32 {
        match self {
            Rescale::FixedPoint(multipliers) => {
                multiply_by_quantized_multiplier(acc, multipliers[channel])
            }
            // f64::round rounds half away from zero, like C's round().
            Rescale::Double(scales) => (f64::from(acc) * scales[channel]).round() as i32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_rescales_use_the_same_real_multipliers() {
        let fixed = Rescale::new(false, 0.5, &[0.01, 0.002], 0.25);
        let double = Rescale::new(true, 0.5, &[0.01, 0.002], 0.25);
        let real = [
            0.5f64 * f64::from(0.01f32) / 0.25,
            0.5 * f64::from(0.002f32) / 0.25,
        ];
        assert_eq!(double, Rescale::Double(real.to_vec()));
        assert_eq!(
            fixed,
            Rescale::FixedPoint(real.iter().map(|&m| quantize_multiplier(m)).collect())
        );
        assert_eq!(double.apply(1000, 0), 20);
        assert_eq!(fixed.apply(1000, 0), 20);
        assert_eq!(double.apply(-1000, 1), -4);
    }

    #[test]
    fn the_two_round_ties_differently() {
        // 3 × 0.5 = 1.5 and −3 × 0.5 = −1.5: double precision rounds both away from zero;
        // the fixed-point high-mul rounds the negative tie toward zero (TFLite's reference).
        let fixed = Rescale::new(false, 1.0, &[0.5], 1.0);
        let double = Rescale::new(true, 1.0, &[0.5], 1.0);
        assert_eq!((fixed.apply(3, 0), fixed.apply(-3, 0)), (2, -1));
        assert_eq!((double.apply(3, 0), double.apply(-3, 0)), (2, -2));
    }
}
