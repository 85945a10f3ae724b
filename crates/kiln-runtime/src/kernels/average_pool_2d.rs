//! AVERAGE_POOL_2D: NHWC, SAME/VALID padding; the average counts only cells inside the input
//! (as TFLite does). Float32, and int8/uint8 with the reference kernel's rounding of the
//! integer mean (half away from zero). Everything but the mean is `common::pooling`'s.

use super::common::pooling::{self, OfSums, Reduce, Separable};
use super::{Kernel, Prep};
use crate::error::RuntimeError;

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    pooling::prepare(prep, Average)
}

#[derive(Debug)]
struct Average;

impl OfSums for Average {
    fn float(&self, total: f64, count: usize) -> f32 {
        if count == 0 {
            0.0
        } else {
            (total / count as f64) as f32
        }
    }

    /// The reference's rounding of the integer mean: half away from zero.
    fn quantized(&self, total: i32, count: usize) -> i32 {
        let count = count.max(1) as i32;
        if total > 0 {
            total.wrapping_add(count / 2) / count
        } else {
            total.wrapping_sub(count / 2) / count
        }
    }
}

impl Reduce for Average {
    fn separable(&self) -> Separable<'_> {
        Separable::Sums(self)
    }

    fn float(&self, input: &[f32], cells: &[usize], out: &mut [f32]) {
        let c = out.len();
        for (ch, o) in out.iter_mut().enumerate() {
            let total: f32 = cells.iter().map(|&cell| input[cell * c + ch]).sum();
            // An empty window (impossible with valid padding) yields 0 rather than NaN.
            *o = if cells.is_empty() {
                0.0
            } else {
                total / cells.len() as f32
            };
        }
    }

    fn quantized(
        &self,
        input: &[u8],
        signed: bool,
        cells: &[usize],
        (low, high): (i32, i32),
        sums: &mut [i32],
        out: &mut [u8],
    ) {
        let c = out.len();
        // int32 accumulators as in TFLite, where a window of more than 2^24 cells overflows;
        // they wrap there (C++ on every target) rather than panicking here.
        sums.fill(0);
        for &cell in cells {
            let pixel = &input[cell * c..][..c];
            if signed {
                for (o, &v) in sums.iter_mut().zip(pixel) {
                    *o = o.wrapping_add(i32::from(v as i8));
                }
            } else {
                for (o, &v) in sums.iter_mut().zip(pixel) {
                    *o = o.wrapping_add(i32::from(v));
                }
            }
        }
        for (o, &total) in out.iter_mut().zip(&*sums) {
            *o = OfSums::quantized(self, total, cells.len()).clamp(low, high) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use kiln_tflite::{BuiltinOptions, Padding, Pool2DOptions, TensorType};

    use super::super::common::testing::{quantized, run, tensor};
    use super::*;

    /// A 2902 × 2902 window of 255s sums past i32::MAX: the accumulator wraps as TFLite's
    /// int32 one does (and the result is what that wrapped sum gives), never a panic.
    #[test]
    fn a_huge_uint8_window_wraps_its_int32_sum() {
        let side = 2902usize;
        let options = Pool2DOptions {
            padding: Padding::Valid,
            stride_w: 1,
            stride_h: 1,
            filter_w: side as i32,
            filter_h: side as i32,
            ..Pool2DOptions::default()
        };
        let shape = [1, side, side, 1];
        let out = run(
            prepare,
            BuiltinOptions::Pool2D(options),
            vec![Some(quantized(tensor(TensorType::UInt8, &shape), 1.0, 0))],
            quantized(tensor(TensorType::UInt8, &[]), 1.0, 0),
            &[&vec![255u8; side * side]],
        )
        .expect("prepares");
        assert_eq!(out.shape, [1, 1, 1, 1]);
        let count = (side * side) as i64;
        let wrapped = (255 * count) as i32; // C++'s int32 accumulator
        let average = if wrapped > 0 {
            wrapped.wrapping_add((count / 2) as i32)
        } else {
            wrapped.wrapping_sub((count / 2) as i32)
        } / count as i32;
        assert_eq!(out.data, [average.clamp(0, 255) as u8]);
    }

    /// Windows of more than 64 cells are summed with prefix sums (fuzzer finding: a
    /// 16 391-wide window over a row of as many pixels took seconds cell by cell). Against the
    /// definition, int8 bit for bit and float within rounding, on SAME and VALID windows,
    /// strides and edges.
    #[test]
    fn large_windows_average_as_the_definition() {
        super::super::common::pooling::check_large_windows(
            prepare,
            0xa7e,
            |case, q, f, cells_q, cells_f| {
                let count = cells_q.len().max(1) as i32;
                let total: i32 = cells_q.iter().map(|&v| i32::from(v)).sum();
                let mean = if total > 0 {
                    total + count / 2
                } else {
                    total - count / 2
                } / count;
                assert_eq!(q, mean.clamp(-128, 127) as i8, "case {case}");
                let want =
                    (cells_f.iter().map(|&v| f64::from(v)).sum::<f64>() / f64::from(count)) as f32;
                assert!(
                    (f - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "case {case}: {f} vs {want}"
                );
            },
        );
    }
}
