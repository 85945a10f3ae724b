//! MAX_POOL_2D: NHWC, SAME/VALID padding (padded cells never win), fused activation; float32
//! and int8/uint8 (the output keeps the input's quantization).

use super::pooling::{PoolArithmetic, PoolGeometry};
use super::quant::load_q;
use super::{In, Kernel, OpKernel, Out, Prep};
use crate::error::RuntimeError;
use crate::tensor::{as_f32, as_f32_mut};

#[derive(Debug)]
struct MaxPool2D {
    geometry: PoolGeometry,
    arithmetic: PoolArithmetic,
}

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    let (geometry, arithmetic) = PoolGeometry::prepare(prep)?;
    Ok(Box::new(MaxPool2D {
        geometry,
        arithmetic,
    }))
}

impl OpKernel for MaxPool2D {
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
                    let out = &mut output[pixel * c..][..c];
                    out.fill(f32::NEG_INFINITY);
                    for &cell in cells {
                        for (o, &v) in out.iter_mut().zip(&input[cell * c..][..c]) {
                            *o = o.max(v);
                        }
                    }
                    out.iter_mut().for_each(|o| *o = clamp.apply(*o));
                });
            }
            PoolArithmetic::Quantized { range, signed } => {
                let output = &mut *outputs[0].data;
                self.geometry.for_each_window(|pixel, cells| {
                    for ch in 0..c {
                        let max = cells
                            .iter()
                            .map(|&cell| load_q(input.data, *signed, cell * c + ch))
                            .max();
                        let value = max.unwrap_or(range.0).clamp(range.0, range.1);
                        output[pixel * c + ch] = value as u8;
                    }
                });
            }
        }
    }
}
