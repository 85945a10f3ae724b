//! ADD (and, through `prepare_add_or_sub`, SUB): element-wise a ± b with broadcasting and a
//! fused activation; float32, int32, and int8/uint8 with TFLite's reference rescaling (see
//! `binary`).

use super::common::binary::{
    AddSubParams, Broadcast, ElementwiseType, eval_float, eval_int32, prepare_elementwise,
};
use super::common::fused_activation::FloatClamp;
use super::{In, Kernel, OpKernel, Out, Prep};
use crate::error::RuntimeError;

#[derive(Debug)]
enum Arithmetic {
    Float(FloatClamp),
    Int32((i32, i32)),
    Quantized(AddSubParams),
}

#[derive(Debug)]
struct AddOrSub {
    subtract: bool,
    broadcast: Broadcast,
    arithmetic: Arithmetic,
}

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    prepare_add_or_sub(prep, false)
}

pub(super) fn prepare_add_or_sub(prep: &Prep<'_>, subtract: bool) -> Result<Kernel, RuntimeError> {
    let elementwise = prepare_elementwise(prep)?;
    let arithmetic = match elementwise.dtype {
        ElementwiseType::Float(clamp) => Arithmetic::Float(clamp),
        ElementwiseType::Int32(range) => Arithmetic::Int32(range),
        ElementwiseType::Quantized => {
            let (a, b, output) = (prep.input(0)?, prep.input(1)?, prep.output(0)?);
            Arithmetic::Quantized(AddSubParams::new(
                prep,
                a,
                b,
                output,
                elementwise.activation,
            )?)
        }
    };
    Ok(Box::new(AddOrSub {
        subtract,
        broadcast: elementwise.broadcast,
        arithmetic,
    }))
}

impl OpKernel for AddOrSub {
    fn eval(&self, inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]) {
        let b = &self.broadcast;
        match (&self.arithmetic, self.subtract) {
            (Arithmetic::Float(clamp), false) => {
                eval_float(b, *clamp, inputs, outputs, |x, y| x + y)
            }
            (Arithmetic::Float(clamp), true) => {
                eval_float(b, *clamp, inputs, outputs, |x, y| x - y)
            }
            (Arithmetic::Int32(range), false) => {
                eval_int32(b, *range, inputs, outputs, i32::wrapping_add)
            }
            (Arithmetic::Int32(range), true) => {
                eval_int32(b, *range, inputs, outputs, i32::wrapping_sub)
            }
            (Arithmetic::Quantized(params), subtract) => params.eval(b, subtract, inputs, outputs),
        }
    }
}
