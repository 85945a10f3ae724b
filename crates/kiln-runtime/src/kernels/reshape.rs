//! RESHAPE: the same elements under a new shape (from the options or a shape tensor; the
//! output tensor's static shape is what the file declares and is checked against both).

use super::{In, Out, Prep};
use crate::error::RuntimeError;

#[derive(Debug)]
pub struct Reshape {
    bytes: usize,
}

impl Reshape {
    pub fn prepare(prep: &Prep<'_>) -> Result<Self, RuntimeError> {
        prep.expect_arity(1..=2, 1)?;
        let (input, output) = (prep.input(0)?, prep.output(0)?);
        if input.dtype != output.dtype {
            return Err(prep.bad(&format!(
                "input '{}' is {} but output '{}' is {}",
                input.name, input.dtype, output.name, output.dtype
            )));
        }
        if input.dtype.element_size().is_none() {
            return Err(prep.unsupported(&format!("tensor type {} is not supported", input.dtype)));
        }
        if input.num_elements() != output.num_elements() {
            return Err(prep.bad(&format!(
                "cannot reshape '{}' {:?} ({} elements) to '{}' {:?} ({} elements)",
                input.name,
                input.shape,
                input.num_elements(),
                output.name,
                output.shape,
                output.num_elements()
            )));
        }
        Ok(Self {
            bytes: input.byte_size(),
        })
    }

    pub fn eval(&self, inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]) {
        let Some(input) = &inputs[0] else {
            unreachable!("prepared")
        };
        outputs[0].data[..self.bytes].copy_from_slice(&input.data[..self.bytes]);
    }
}
