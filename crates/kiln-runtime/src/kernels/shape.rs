//! SHAPE: the input's shape as a 1-D INT32 or INT64 tensor. Known at prepare time, so
//! operators reading it (e.g. RESHAPE) see the value before running.

use kiln_tflite::{BuiltinOptions, TensorType};

use super::{In, Kernel, OpKernel, Out, Prep};
use crate::error::RuntimeError;

#[derive(Debug)]
struct Shape {
    bytes: Vec<u8>,
}

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    prep.expect_arity(1..=1, 1)?;
    let (input, output) = (prep.input(0)?, prep.output(0)?);
    let out_type = match &prep.op.options {
        BuiltinOptions::Shape { out_type } => *out_type,
        _ => output.dtype,
    };
    if out_type != output.dtype {
        return Err(prep.bad(&format!(
            "options say {out_type} but output '{}' is {}",
            output.name, output.dtype
        )));
    }
    let bytes: Vec<u8> = match output.dtype {
        TensorType::Int32 => input
            .shape
            .iter()
            .flat_map(|&d| (d as i32).to_le_bytes())
            .collect(),
        TensorType::Int64 => input
            .shape
            .iter()
            .flat_map(|&d| (d as i64).to_le_bytes())
            .collect(),
        other => {
            return Err(prep.unsupported(&format!("output type {other} (INT32 or INT64 expected)")));
        }
    };
    prep.set_output_shape(0, vec![input.shape.len()]);
    prep.set_output_value(0, bytes.clone());
    Ok(Box::new(Shape { bytes }))
}

impl OpKernel for Shape {
    fn eval(&self, _inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]) {
        outputs[0].data.copy_from_slice(&self.bytes);
    }
}
