//! RESIZE_BILINEAR: NHWC float32, int8 and uint8 resized to the height and width given by a
//! constant INT32 tensor, with `align_corners` or `half_pixel_centers` sampling.
//!
//! This follows LiteRT's reference resolver (`Register_RESIZE_BILINEAR_REF`): float32 and
//! uint8 interpolate in float32 (uint8 adds 0.5 and truncates), int8 uses the integer-only
//! variant (ResizeBilinearInteger): source positions in 1/1024 steps, a 2^20-scaled weighted
//! sum, rounded half away from zero.

use kiln_tflite::{BuiltinOptions, TensorType};

use super::{In, Kernel, OpKernel, Out, Prep};
use crate::error::RuntimeError;
use crate::tensor::{as_f32, as_f32_mut};

#[derive(Debug)]
struct ResizeBilinear {
    batches: usize,
    in_h: usize,
    in_w: usize,
    depth: usize,
    dtype: TensorType,
    /// Source rows and columns of every output row and column; they depend only on the
    /// shapes and options, so they are computed once at prepare.
    float_taps: (Vec<FloatTap>, Vec<FloatTap>),
    integer_taps: (Vec<IntegerTap>, Vec<IntegerTap>),
}

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    let (align_corners, half_pixel_centers) = match &prep.op.options {
        BuiltinOptions::ResizeBilinear {
            align_corners,
            half_pixel_centers,
        } => (*align_corners, *half_pixel_centers),
        BuiltinOptions::None => (false, false),
        _ => return Err(prep.bad("options are not ResizeBilinearOptions")),
    };
    prep.expect_arity(2..=2, 1)?;
    let (input, size, output) = (prep.input(0)?, prep.input(1)?, prep.output(0)?);
    prep.require_type(
        input,
        &[TensorType::Float32, TensorType::Int8, TensorType::UInt8],
    )?;
    if output.dtype != input.dtype {
        return Err(prep.bad(&format!(
            "input '{}' is {} but output '{}' is {}",
            input.name, input.dtype, output.name, output.dtype
        )));
    }
    prep.require_rank(input, 4)?;
    if size.dtype != TensorType::Int32 || size.shape != [2] {
        return Err(prep.bad(&format!(
            "size '{}' must be an INT32 tensor of shape [2], is {} {:?}",
            size.name, size.dtype, size.shape
        )));
    }
    if align_corners && half_pixel_centers {
        return Err(prep.bad("align_corners and half_pixel_centers are both set"));
    }
    let Some(values) = prep.input_i32s(1)? else {
        return Err(prep.unsupported(&format!(
            "the output size '{}' is only known while running",
            size.name
        )));
    };
    let positive = |v: i32| usize::try_from(v).ok().filter(|&v| v > 0);
    let (Some(out_h), Some(out_w)) = (
        values.first().copied().and_then(positive),
        values.get(1).copied().and_then(positive),
    ) else {
        return Err(prep.bad(&format!("output size {values:?} must be positive")));
    };
    let [batches, in_h, in_w, depth] = input.shape[..] else {
        unreachable!("rank checked")
    };
    // Every output pixel samples the input: an empty plane has nothing to sample (the taps'
    // last row and column would be -1; TFLite reads out of bounds).
    if in_h == 0 || in_w == 0 {
        return Err(prep.bad(&format!(
            "input '{}' of shape {:?} has no pixels to resize",
            input.name, input.shape
        )));
    }
    // The integer variant computes 1024 · size in int32.
    let limit = (i32::MAX / 2048) as usize;
    if in_h.max(in_w).max(out_h).max(out_w) > limit {
        return Err(prep.unsupported(&format!("sizes above {limit} are not supported")));
    }
    prep.set_output_shape(0, vec![batches, out_h, out_w, depth]);
    Ok(Box::new(ResizeBilinear {
        batches,
        in_h,
        in_w,
        depth,
        dtype: input.dtype,
        float_taps: (
            float_taps(in_h, out_h, align_corners, half_pixel_centers),
            float_taps(in_w, out_w, align_corners, half_pixel_centers),
        ),
        integer_taps: (
            integer_taps(in_h, out_h, align_corners, half_pixel_centers),
            integer_taps(in_w, out_w, align_corners, half_pixel_centers),
        ),
    }))
}

/// Integer tap: (lower, upper, position in 1/1024 steps).
type IntegerTap = (usize, usize, i32);

/// Source row/column for one output coordinate: (lower, upper, fractional weight of upper).
#[derive(Clone, Copy, Debug, PartialEq)]
struct FloatTap {
    lower: usize,
    upper: usize,
    position: f32,
}

/// The reference ComputeInterpolationValues for every output coordinate along one axis.
fn float_taps(
    in_size: usize,
    out_size: usize,
    align_corners: bool,
    half_pixel: bool,
) -> Vec<FloatTap> {
    let mut scale = in_size as f32 / out_size as f32;
    if align_corners && out_size > 1 {
        scale = (in_size - 1) as f32 / (out_size - 1) as f32;
    }
    let last = in_size as i32 - 1;
    (0..out_size)
        .map(|i| {
            let position = if half_pixel {
                (i as f32 + 0.5) * scale - 0.5
            } else {
                i as f32 * scale
            };
            // Clamped on both sides so a coordinate can never leave the image.
            let lower = (position.floor() as i32).clamp(0, last);
            let upper = (position.ceil() as i32).min(last).max(0);
            FloatTap {
                lower: lower as usize,
                upper: upper as usize,
                position,
            }
        })
        .collect()
}

/// The integer variant's taps: (lower, upper, position in 1/1024 steps).
fn integer_taps(
    in_size: usize,
    out_size: usize,
    align_corners: bool,
    half_pixel: bool,
) -> Vec<IntegerTap> {
    let (in_size, out_size) = (in_size as i32, out_size as i32);
    let mut scale = ((1 << 10) * in_size + out_size / 2) / out_size;
    if align_corners && out_size > 1 {
        scale = ((1 << 10) * (in_size - 1) + (out_size - 1) / 2) / (out_size - 1);
    }
    let last = in_size - 1;
    (0..out_size)
        .map(|i| {
            let position = if half_pixel {
                i * scale + scale / 2 - (1 << 9)
            } else {
                i * scale
            };
            let lower = (position / (1 << 10)).max(0).min(last);
            let upper = ((position + (1 << 10) - 1) / (1 << 10)).min(last).max(0);
            (lower as usize, upper as usize, position)
        })
        .collect()
}

impl ResizeBilinear {
    fn offset(&self, b: usize, y: usize, x: usize) -> usize {
        ((b * self.in_h + y) * self.in_w + x) * self.depth
    }

    /// Float32 (and uint8 computed in float32, `rounding` 0.5).
    fn eval_float<T: Copy>(
        &self,
        input: &[T],
        output: &mut [T],
        to_f32: impl Fn(T) -> f32,
        from_f32: impl Fn(f32) -> T,
        rounding: f32,
    ) {
        let (ys, xs) = &self.float_taps;
        let mut o = 0;
        for b in 0..self.batches {
            for ty in ys {
                let dy = ty.position - ty.lower as f32;
                for tx in xs {
                    let dx = tx.position - tx.lower as f32;
                    let p00 = self.offset(b, ty.lower, tx.lower);
                    let p10 = self.offset(b, ty.upper, tx.lower);
                    let p01 = self.offset(b, ty.lower, tx.upper);
                    let p11 = self.offset(b, ty.upper, tx.upper);
                    for c in 0..self.depth {
                        let value = to_f32(input[p00 + c]) * (1.0 - dy) * (1.0 - dx)
                            + to_f32(input[p10 + c]) * dy * (1.0 - dx)
                            + to_f32(input[p01 + c]) * (1.0 - dy) * dx
                            + to_f32(input[p11 + c]) * dy * dx
                            + rounding;
                        output[o] = from_f32(value);
                        o += 1;
                    }
                }
            }
        }
    }

    fn eval_int8(&self, input: &[u8], output: &mut [u8]) {
        let (ys, xs) = &self.integer_taps;
        let one = 1i64 << 10;
        let mut o = 0;
        for b in 0..self.batches {
            for &(y0, y1, iy) in ys {
                let wy1 = i64::from(iy) - one * y0 as i64;
                let wy0 = one - wy1;
                for &(x0, x1, ix) in xs {
                    let wx1 = i64::from(ix) - one * x0 as i64;
                    let wx0 = one - wx1;
                    let p00 = self.offset(b, y0, x0);
                    let p10 = self.offset(b, y1, x0);
                    let p01 = self.offset(b, y0, x1);
                    let p11 = self.offset(b, y1, x1);
                    let at = |p: usize| i64::from(input[p] as i8);
                    for c in 0..self.depth {
                        let sum = at(p00 + c) * wy0 * wx0
                            + at(p10 + c) * wy1 * wx0
                            + at(p01 + c) * wy0 * wx1
                            + at(p11 + c) * wy1 * wx1;
                        let round = if sum > 0 { 1 << 19 } else { -(1 << 19) };
                        // Truncating division, then C++'s wrapping narrow to int8.
                        output[o] = ((sum + round) / (1 << 20)) as i8 as u8;
                        o += 1;
                    }
                }
            }
        }
    }
}

impl OpKernel for ResizeBilinear {
    fn eval(&self, inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]) {
        let Some(input) = &inputs[0] else {
            unreachable!("prepared")
        };
        match self.dtype {
            TensorType::Float32 => self.eval_float(
                as_f32(input.data),
                as_f32_mut(outputs[0].data),
                |v| v,
                |v| v,
                0.0,
            ),
            // float → uint8 conversion truncates (C++'s static_cast; Rust's `as` saturates
            // where C++ is undefined).
            TensorType::UInt8 => {
                self.eval_float(input.data, outputs[0].data, f32::from, |v| v as u8, 0.5)
            }
            _ => self.eval_int8(input.data, outputs[0].data),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::common::testing::{i32s, run, tensor};
    use super::*;

    /// Fuzzer finding: an input of height 0 made prepare clamp taps to [0, -1] and panic.
    #[test]
    fn an_empty_input_plane_is_an_error() {
        for shape in [[1, 0, 2, 1], [1, 2, 0, 1]] {
            let result = run(
                prepare,
                BuiltinOptions::None,
                vec![
                    Some(tensor(TensorType::Float32, &shape)),
                    Some(i32s(&[4, 4])),
                ],
                tensor(TensorType::Float32, &[]),
                &[&[]],
            );
            let err = result.unwrap_err().to_string();
            assert!(err.contains("no pixels"), "{err}");
        }
        let input: Vec<u8> = [1.0f32, 3.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let out = run(
            prepare,
            BuiltinOptions::None,
            vec![
                Some(tensor(TensorType::Float32, &[1, 1, 2, 1])),
                Some(i32s(&[1, 4])),
            ],
            tensor(TensorType::Float32, &[]),
            &[&input],
        )
        .expect("a 1-pixel-high input resizes");
        assert_eq!(out.shape, [1, 1, 4, 1]);
    }

    #[test]
    fn float_taps_match_the_reference_sampling() {
        // 5 → 8, plain: scale 0.625.
        let t = float_taps(5, 8, false, false);
        assert_eq!((t[7].lower, t[7].upper), (4, 4));
        assert!((t[3].position - 1.875).abs() < 1e-6);
        // align_corners: the corners coincide.
        let t = float_taps(5, 9, true, false);
        assert_eq!((t[8].lower, t[8].upper, t[8].position), (4, 4, 4.0));
        // half_pixel_centers: the first sample sits before pixel 0 and is clamped.
        let t = float_taps(5, 10, false, true);
        assert_eq!((t[0].lower, t[0].upper), (0, 0));
        assert!((t[0].position + 0.25).abs() < 1e-6);
    }

    #[test]
    fn integer_taps_track_float_taps() {
        for (i, o) in [(5, 8), (5, 3), (7, 16), (4, 4)] {
            for (ac, hp) in [(false, false), (true, false), (false, true)] {
                let f = float_taps(i, o, ac, hp);
                let n = integer_taps(i, o, ac, hp);
                for (a, b) in f.iter().zip(&n) {
                    assert!((a.position * 1024.0 - b.2 as f32).abs() <= 1.0 + o as f32);
                    assert!(b.0 <= b.1 && b.1 < i);
                }
            }
        }
    }

    #[test]
    fn int8_interpolates_and_rounds_away_from_zero() {
        let r = ResizeBilinear {
            batches: 1,
            in_h: 1,
            in_w: 2,
            depth: 1,
            dtype: TensorType::Int8,
            float_taps: (
                float_taps(1, 1, false, false),
                float_taps(2, 4, false, false),
            ),
            integer_taps: (
                integer_taps(1, 1, false, false),
                integer_taps(2, 4, false, false),
            ),
        };
        let input = [(-3i8) as u8, 4u8];
        let mut out = [0u8; 4];
        r.eval_int8(&input, &mut out);
        let out: Vec<i8> = out.iter().map(|&b| b as i8).collect();
        // positions 0, 0.5, 1, 1.5 → −3, 0.5 → 1, 4, 4.
        assert_eq!(out, vec![-3, 1, 4, 4]);
    }
}
