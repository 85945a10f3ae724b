//! FULLY_CONNECTED, float32: weights [out, in], optional bias, input flattened to
//! [batch, in] (keep_num_dims keeps the input's leading dimensions), fused activation.

use kiln_tflite::{BuiltinOptions, TensorType};

use super::dot::dot;
use super::fused_activation::FloatClamp;
use super::{In, Kernel, OpKernel, Out, Prep};
use crate::error::RuntimeError;
use crate::tensor::{as_f32, as_f32_mut};

#[derive(Debug)]
pub struct FullyConnected {
    batches: usize,
    in_features: usize,
    out_features: usize,
    has_bias: bool,
    clamp: FloatClamp,
}

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    Ok(Box::new(FullyConnected::new(prep)?))
}

impl FullyConnected {
    fn new(prep: &Prep<'_>) -> Result<Self, RuntimeError> {
        prep.expect_arity(2..=3, 1)?;
        let BuiltinOptions::FullyConnected(options) = &prep.op.options else {
            return Err(prep.bad("missing FullyConnectedOptions"));
        };
        if options.weights_format != 0 {
            return Err(prep.unsupported("shuffled weight formats are not supported"));
        }
        let (input, weights, output) = (prep.input(0)?, prep.input(1)?, prep.output(0)?);
        for tensor in [input, weights, output] {
            prep.require_type(tensor, &[TensorType::Float32])?;
        }
        prep.require_rank(weights, 2)?;
        let (out_features, in_features) = (weights.shape[0], weights.shape[1]);
        let total = input.num_elements();
        if in_features == 0 || !total.is_multiple_of(in_features) {
            return Err(prep.bad(&format!(
                "input '{}' of shape {:?} cannot be split into rows of {in_features} features",
                input.name, input.shape
            )));
        }
        let batches = total / in_features;
        let has_bias = match prep.optional_input(2) {
            Some(bias) => {
                prep.require_type(bias, &[TensorType::Float32])?;
                prep.require_shape(bias, &[out_features])?;
                true
            }
            None => false,
        };
        let expected: Vec<usize> = if options.keep_num_dims {
            let mut shape = input.shape.clone();
            if let Some(last) = shape.last_mut() {
                *last = out_features;
            }
            shape
        } else {
            vec![batches, out_features]
        };
        prep.set_output_shape(0, expected);
        Ok(Self {
            batches,
            in_features,
            out_features,
            has_bias,
            clamp: FloatClamp::prepare(prep, options.activation)?,
        })
    }
}

impl OpKernel for FullyConnected {
    fn eval(&self, inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]) {
        let (Some(input), Some(weights)) = (&inputs[0], &inputs[1]) else {
            unreachable!("prepared")
        };
        let input = as_f32(input.data);
        let weights = as_f32(weights.data);
        let bias = if self.has_bias {
            inputs
                .get(2)
                .and_then(|b| b.as_ref())
                .map(|b| as_f32(b.data))
        } else {
            None
        };
        let output = as_f32_mut(outputs[0].data);
        for b in 0..self.batches {
            let row = &input[b * self.in_features..][..self.in_features];
            for o in 0..self.out_features {
                let acc = dot(row, &weights[o * self.in_features..][..self.in_features])
                    + bias.map_or(0.0, |bias| bias[o]);
                output[b * self.out_features + o] = self.clamp.apply(acc);
            }
        }
    }
}
