//! AVERAGE_POOL_2D: NHWC, SAME/VALID padding; the average counts only cells inside the input
//! (as TFLite does). Float32, and int8/uint8 with the reference kernel's rounding of the
//! integer mean (half away from zero).

use super::pooling::{PoolArithmetic, PoolGeometry};
use super::quant::load_q;
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
                        let total: i32 = cells
                            .iter()
                            .map(|&cell| load_q(input.data, *signed, cell * c + ch))
                            .sum();
                        let average = if total > 0 {
                            (total + count / 2) / count
                        } else {
                            (total - count / 2) / count
                        };
                        output[pixel * c + ch] = average.clamp(range.0, range.1) as u8;
                    }
                });
            }
        }
    }
}
