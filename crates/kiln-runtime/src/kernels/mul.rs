//! MUL: element-wise a × b with broadcasting and a fused activation; float32, int32, and
//! int8/uint8 (one requantization of the product by input1 × input2 / output scale).

use kiln_tflite::quant::quantize_multiplier;

use super::common::binary::{
    Broadcast, ElementwiseType, eval_float, eval_int32, prepare_elementwise,
};
use super::common::fused_activation::FloatClamp;
use super::common::quant::{activation_range, per_tensor};
use super::common::requantize::{ChannelRescale, OutputRange};
use super::common::scratch::Scratch;
use super::{In, Kernel, OpKernel, Out, Prep};
use crate::error::RuntimeError;

#[derive(Debug)]
enum Arithmetic {
    Float(FloatClamp),
    Int32((i32, i32)),
    Quantized {
        input_offsets: (i32, i32),
        output_offset: i32,
        range: (i32, i32),
        signed: bool,
        /// The one multiplier for a block of products, vectorised.
        rescale: ChannelRescale,
    },
}

/// Products requantized per call.
const BLOCK: usize = 256;

#[derive(Debug)]
struct Mul {
    broadcast: Broadcast,
    arithmetic: Arithmetic,
}

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    let elementwise = prepare_elementwise(prep)?;
    let arithmetic = match elementwise.dtype {
        ElementwiseType::Float(clamp) => Arithmetic::Float(clamp),
        ElementwiseType::Int32(range) => Arithmetic::Int32(range),
        ElementwiseType::Quantized => {
            let (a, b, output) = (prep.input(0)?, prep.input(1)?, prep.output(0)?);
            let (sa, za) = per_tensor(prep, a)?;
            let (sb, zb) = per_tensor(prep, b)?;
            let (so, zo) = per_tensor(prep, output)?;
            let multiplier = quantize_multiplier(f64::from(sa) * f64::from(sb) / f64::from(so));
            Arithmetic::Quantized {
                input_offsets: (-za, -zb),
                output_offset: zo,
                range: activation_range(prep, elementwise.activation, output)?,
                signed: output.dtype == kiln_tflite::TensorType::Int8,
                rescale: ChannelRescale::new(&[multiplier]),
            }
        }
    };
    Ok(Box::new(Mul {
        broadcast: elementwise.broadcast,
        arithmetic,
    }))
}

impl OpKernel for Mul {
    fn eval(&self, inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]) {
        match &self.arithmetic {
            Arithmetic::Float(clamp) => {
                eval_float(&self.broadcast, *clamp, inputs, outputs, |x, y| x * y)
            }
            Arithmetic::Int32(range) => {
                eval_int32(&self.broadcast, *range, inputs, outputs, |x, y| {
                    x.wrapping_mul(y)
                })
            }
            Arithmetic::Quantized {
                input_offsets,
                output_offset,
                range,
                signed,
                rescale,
            } => {
                let (Some(a), Some(b)) = (&inputs[0], &inputs[1]) else {
                    unreachable!("prepared")
                };
                let output = &mut *outputs[0].data;
                // The products first (exact: offset 8-bit values multiply within i32), then
                // one vectorised requantization per block, the bits of TFLite's per-element
                // MultiplyByQuantizedMultiplier.
                i32::with(output.len(), |products| {
                    let (da, db) = (a.data, b.data);
                    let (oa, ob) = *input_offsets;
                    if *signed {
                        self.broadcast.for_each(|o, ia, ib| {
                            products[o] =
                                (i32::from(da[ia] as i8) + oa) * (i32::from(db[ib] as i8) + ob);
                        });
                    } else {
                        self.broadcast.for_each(|o, ia, ib| {
                            products[o] = (i32::from(da[ia]) + oa) * (i32::from(db[ib]) + ob);
                        });
                    }
                    let range = OutputRange {
                        offset: *output_offset,
                        min: range.0,
                        max: range.1,
                    };
                    let zeros = rescale.periodic(&[0]);
                    for (products, out) in products.chunks(BLOCK).zip(output.chunks_mut(BLOCK)) {
                        rescale.requantize(products, &zeros, range, out);
                    }
                });
            }
        }
    }
}
