//! AVERAGE_POOL_2D: NHWC, SAME/VALID padding; the average counts only cells inside the input
//! (as TFLite does). Float32, and int8/uint8 with the reference kernel's rounding of the
//! integer mean (half away from zero).

use super::common::pooling::{PoolArithmetic, PoolGeometry};
use super::common::quant::load_q;
use super::{In, Kernel, OpKernel, Out, Prep};
use crate::error::RuntimeError;
use crate::tensor::{as_f32, as_f32_mut};

#[derive(Debug)]
struct AveragePool2D {
    geometry: PoolGeometry,
    arithmetic: PoolArithmetic,
}

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    let (geometry, arithmetic) = PoolGeometry::prepare(prep)?;
    Ok(Box::new(AveragePool2D {
        geometry,
        arithmetic,
    }))
}

impl OpKernel for AveragePool2D {
    fn eval(&self, inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]) {
        let Some(input) = &inputs[0] else {
            unreachable!("prepared")
        };
        let c = self.geometry.channels;
        match &self.arithmetic {
            PoolArithmetic::Float(clamp) => {
                let input = as_f32(input.data);
                let output = as_f32_mut(outputs[0].data);
                self.geometry.for_each_window(|pixel, cells| {
                    for ch in 0..c {
                        let total: f32 = cells.iter().map(|&cell| input[cell * c + ch]).sum();
                        // An empty window (impossible with valid padding) yields 0 rather than NaN.
                        let average = if cells.is_empty() {
                            0.0
                        } else {
                            total / cells.len() as f32
                        };
                        output[pixel * c + ch] = clamp.apply(average);
                    }
                });
            }
            PoolArithmetic::Quantized { range, signed } => {
                let output = &mut *outputs[0].data;
                self.geometry.for_each_window(|pixel, cells| {
                    let count = cells.len().max(1) as i32;
                    for ch in 0..c {
                        // int32 accumulator as in TFLite, where a window of more than 2^24
                        // cells overflows; it wraps there (C++ on every target) rather than
                        // panicking here.
                        let total = cells.iter().fold(0i32, |total, &cell| {
                            total.wrapping_add(load_q(input.data, *signed, cell * c + ch))
                        });
                        let average = if total > 0 {
                            total.wrapping_add(count / 2) / count
                        } else {
                            total.wrapping_sub(count / 2) / count
                        };
                        output[pixel * c + ch] = average.clamp(range.0, range.1) as u8;
                    }
                });
            }
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
}
