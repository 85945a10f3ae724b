//! Per-tensor asymmetric int8 parameters of an activation from its observed range — what
//! TFLite's converter derives from calibration statistics: the range is widened to include 0
//! (so that 0, the value of padding and of ReLU's cut-off, is exact), then spread over all 256
//! int8 steps with the zero point nudged to an integer.

/// An observed value range of a tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range {
    pub min: f32,
    pub max: f32,
}

/// Affine quantization of one tensor: real = scale × (q − zero_point).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QParams {
    pub scale: f32,
    pub zero_point: i32,
}

const QMIN: f64 = -128.0;
const QMAX: f64 = 127.0;

/// The int8 parameters for values in `range`: scale = (max − min) / 255 after widening the
/// range to include 0, zero point = round(−128 − min / scale) clamped to [−128, 127]. As the
/// converter's quantizer (MLIR `getNudgedScaleAndZeroPoint`), the arithmetic is f64 and the
/// zero point is solved from whichever end of the range adds the smaller rounding error; a
/// range of zeros gets scale 1 and zero point −128.
pub fn asymmetric_int8_params(range: Range) -> QParams {
    let min = f64::from(range.min).min(0.0);
    let max = f64::from(range.max).max(0.0);
    // The widened range always spans 0, so it is never negative.
    let span = max - min;
    if !span.is_finite() || span < f64::EPSILON {
        return QParams {
            scale: 1.0,
            zero_point: QMIN as i32,
        };
    }
    let scale = span / (QMAX - QMIN);
    let from_min = QMIN - min / scale;
    let from_min_error = QMIN.abs() + (min / scale).abs();
    let from_max = QMAX - max / scale;
    let from_max_error = QMAX.abs() + (max / scale).abs();
    let zero_point = if from_min_error < from_max_error {
        from_min
    } else {
        from_max
    };
    QParams {
        scale: scale as f32,
        zero_point: zero_point.round().clamp(QMIN, QMAX) as i32,
    }
}

impl QParams {
    /// The same real grid on uint8 (zero point shifted by 128), for uint8 model I/O.
    pub fn to_uint8(self) -> Self {
        Self {
            scale: self.scale,
            zero_point: self.zero_point + 128,
        }
    }

    /// Quantizes one value to int8 as TFLite's QUANTIZE kernel does: round(value / scale) in
    /// f32, half away from zero, plus the zero point, saturating.
    pub fn quantize(self, value: f32) -> i8 {
        let q = f64::from((value / self.scale).round()) + f64::from(self.zero_point);
        q.clamp(QMIN, QMAX) as i8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_converter_on_its_own_fixtures() {
        // The calibration ranges of tests/fixtures/smallnet_{int8_float_io,uint8_io} (uniform
        // data in [−1, 1)) and the parameters TF 2.21 wrote for their input tensors.
        let int8_io = asymmetric_int8_params(Range {
            min: -0.999_994_9,
            max: 0.999_978_4,
        });
        assert_eq!(int8_io.zero_point, 0);
        assert!((int8_io.scale - 0.007_843_03).abs() < 1e-8, "{int8_io:?}");
        let uint8_io = asymmetric_int8_params(Range {
            min: -0.999_924_8,
            max: 0.999_990_6,
        });
        assert_eq!(uint8_io.to_uint8().zero_point, 127);
        assert!((uint8_io.scale - 0.007_842_81).abs() < 1e-8, "{uint8_io:?}");
    }

    #[test]
    fn the_range_is_widened_to_include_zero() {
        // Post-ReLU activations: min 0 → zero point −128.
        let relu = asymmetric_int8_params(Range {
            min: 0.3,
            max: 2.55,
        });
        assert_eq!(
            relu,
            QParams {
                scale: 0.01,
                zero_point: -128
            }
        );
        // All negative: max becomes 0 → zero point 127.
        let negative = asymmetric_int8_params(Range {
            min: -5.1,
            max: -1.0,
        });
        assert_eq!(
            negative,
            QParams {
                scale: 0.02,
                zero_point: 127
            }
        );
        // Images in [0, 1]: scale 1/255.
        let image = asymmetric_int8_params(Range { min: 0.0, max: 1.0 });
        assert_eq!(
            image,
            QParams {
                scale: 1.0 / 255.0,
                zero_point: -128
            }
        );
    }

    #[test]
    fn the_zero_point_is_nudged_to_an_integer() {
        // −1..3: scale 4/255, exact zero point −128 + 63.75 = −64.25 → −64.
        let p = asymmetric_int8_params(Range {
            min: -1.0,
            max: 3.0,
        });
        assert_eq!(p.zero_point, -64);
        assert_eq!(p.scale, (4.0f64 / 255.0) as f32);
    }

    #[test]
    fn degenerate_ranges_stay_valid() {
        let zeros = asymmetric_int8_params(Range { min: 0.0, max: 0.0 });
        assert_eq!(
            zeros,
            QParams {
                scale: 1.0,
                zero_point: -128
            }
        );
        let infinite = asymmetric_int8_params(Range {
            min: f32::NEG_INFINITY,
            max: 1.0,
        });
        assert!(infinite.scale.is_finite() && infinite.scale > 0.0);
    }

    #[test]
    fn quantize_rounds_half_away_and_saturates() {
        let p = QParams {
            scale: 0.5,
            zero_point: -10,
        };
        assert_eq!(p.quantize(0.25), -9); // 0.5 step → 1
        assert_eq!(p.quantize(-0.25), -11);
        assert_eq!(p.quantize(1000.0), 127);
        assert_eq!(p.quantize(-1000.0), -128);
        assert_eq!(p.to_uint8().zero_point, 118);
    }
}
