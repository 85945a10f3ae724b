//! MAX_POOL_2D: NHWC, SAME/VALID padding (padded cells never win), fused activation; float32
//! and int8/uint8 (the output keeps the input's quantization).

use super::common::pooling::{PoolArithmetic, PoolGeometry};
use super::common::quant::load_q;
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

#[cfg(test)]
mod tests {
    use kiln_tflite::{BuiltinOptions, Padding, Pool2DOptions, TensorType};

    use super::super::common::testing::{run, tensor};
    use super::*;

    /// Fuzzer finding: a filter of i32::MAX × i32::MAX made the window buffer ask for
    /// 2^62 cells (a multi-exabyte allocation that aborts). With SAME padding the window simply
    /// covers the whole input, as in TFLite.
    #[test]
    fn a_filter_larger_than_the_input_covers_the_input() {
        let options = Pool2DOptions {
            padding: Padding::Same,
            stride_w: 1,
            stride_h: 1,
            filter_w: i32::MAX,
            filter_h: i32::MAX,
            ..Pool2DOptions::default()
        };
        let input: Vec<u8> = [1.0f32, 4.0, -2.0, 3.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let out = run(
            prepare,
            BuiltinOptions::Pool2D(options),
            vec![Some(tensor(TensorType::Float32, &[1, 2, 2, 1]))],
            tensor(TensorType::Float32, &[]),
            &[&input],
        )
        .expect("prepares");
        assert_eq!(out.shape, [1, 2, 2, 1]);
        let values: Vec<f32> = out
            .data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(values, [4.0; 4]);
    }
}
