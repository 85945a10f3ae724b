//! MUL: element-wise a × b with broadcasting and a fused activation; float32, int32, and
//! int8/uint8 (one requantization of the product by input1 × input2 / output scale).

use kiln_tflite::quant::{
    QuantizedMultiplier, multiply_by_quantized_multiplier, quantize_multiplier,
};

use super::common::binary::{
    Broadcast, ElementwiseType, eval_float, eval_int32, prepare_elementwise,
};
use super::common::fused_activation::FloatClamp;
use super::common::quant::{activation_range, load_q, per_tensor};
use super::{In, Kernel, OpKernel, Out, Prep};
use crate::error::RuntimeError;

#[derive(Debug)]
enum Arithmetic {
    Float(FloatClamp),
    Int32((i32, i32)),
    Quantized {
        input_offsets: (i32, i32),
        output_offset: i32,
        multiplier: QuantizedMultiplier,
        range: (i32, i32),
        signed: bool,
    },
}

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
            Arithmetic::Quantized {
                input_offsets: (-za, -zb),
                output_offset: zo,
                multiplier: quantize_multiplier(f64::from(sa) * f64::from(sb) / f64::from(so)),
                range: activation_range(prep, elementwise.activation, output)?,
                signed: output.dtype == kiln_tflite::TensorType::Int8,
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
                multiplier,
                range,
                signed,
            } => {
                let (Some(a), Some(b)) = (&inputs[0], &inputs[1]) else {
                    unreachable!("prepared")
                };
                let output = &mut *outputs[0].data;
                self.broadcast.for_each(|o, ia, ib| {
                    let x = load_q(a.data, *signed, ia) + input_offsets.0;
                    let y = load_q(b.data, *signed, ib) + input_offsets.1;
                    let value = multiply_by_quantized_multiplier(x * y, *multiplier)
                        .saturating_add(*output_offset);
                    output[o] = value.clamp(range.0, range.1) as u8;
                });
            }
        }
    }
}
