//! ADD: element-wise a + b with broadcasting and a fused activation; float32, int32, and
//! int8/uint8 with TFLite's reference rescaling (see `binary`).

use kiln_tflite::{BuiltinOptions, TensorType};

use super::binary::{AddSubParams, Broadcast, common_type, eval_float, eval_int32, int32_range};
use super::fused_activation::FloatClamp;
use super::{In, Kernel, OpKernel, Out, Prep};
use crate::error::RuntimeError;

#[derive(Debug)]
enum Arithmetic {
    Float(FloatClamp),
    Int32((i32, i32)),
    Quantized(AddSubParams),
}

#[derive(Debug)]
struct Add {
    broadcast: Broadcast,
    arithmetic: Arithmetic,
}

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    use TensorType::{Float32, Int8, Int32, UInt8};
    let dtype = common_type(prep, &[Float32, Int32, Int8, UInt8])?;
    let activation = match &prep.op.options {
        BuiltinOptions::Add { activation } => *activation,
        BuiltinOptions::None => Default::default(),
        _ => return Err(prep.bad("unexpected options")),
    };
    let (a, b, output) = (prep.input(0)?, prep.input(1)?, prep.output(0)?);
    let broadcast = Broadcast::new(prep, a, b)?;
    let arithmetic = match dtype {
        Float32 => Arithmetic::Float(FloatClamp::prepare(prep, activation)?),
        Int32 => Arithmetic::Int32(int32_range(prep, activation)?),
        _ => Arithmetic::Quantized(AddSubParams::new(prep, a, b, output, activation)?),
    };
    prep.set_output_shape(0, broadcast.output_shape.clone());
    Ok(Box::new(Add {
        broadcast,
        arithmetic,
    }))
}

impl OpKernel for Add {
    fn eval(&self, inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]) {
        match &self.arithmetic {
            Arithmetic::Float(clamp) => {
                eval_float(&self.broadcast, *clamp, inputs, outputs, |x, y| x + y)
            }
            Arithmetic::Int32(range) => {
                eval_int32(&self.broadcast, *range, inputs, outputs, |x, y| {
                    x.wrapping_add(y)
                })
            }
            Arithmetic::Quantized(params) => params.eval(&self.broadcast, false, inputs, outputs),
        }
    }
}
