//! PRELU, `x >= 0 ? x : alpha · x` with a per-element alpha tensor broadcast against the
//! input (right-aligned, NumPy rules; the broadcast shape must be the input's): float32,
//! int8 and uint8.
//!
//! The quantized kernel is TFLite's reference Prelu: `in_scale / out_scale` on the
//! non-negative side and `in_scale · alpha_scale / out_scale` applied to
//! `(q - in_zp) · (alpha_q - alpha_zp)` on the negative side (ratios in float32, as
//! PreluPrepare computes them).

use kiln_tflite::TensorType;
use kiln_tflite::quant::{QuantizedMultiplier, multiply_by_quantized_multiplier};

use super::common::lut::{checked_multiplier, scale_and_zero_point, walk_strided};
use super::common::quant::{load_q, store_q};
use super::{In, Kernel, OpKernel, Out, Prep};
use crate::error::RuntimeError;
use crate::tensor::{as_f32, as_f32_mut};

#[derive(Debug)]
struct Quantized {
    signed: bool,
    in_zp: i32,
    alpha_zp: i32,
    out_zp: i32,
    identity: QuantizedMultiplier,
    alpha: QuantizedMultiplier,
    min: i32,
    max: i32,
}

#[derive(Debug)]
struct Prelu {
    shape: Vec<usize>,
    /// Alpha's stride along each input dimension (0 where alpha is broadcast).
    alpha_strides: Vec<usize>,
    quantized: Option<Quantized>,
}

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    prep.expect_arity(2..=2, 1)?;
    let (input, alpha, output) = (prep.input(0)?, prep.input(1)?, prep.output(0)?);
    prep.require_type(
        input,
        &[TensorType::Float32, TensorType::Int8, TensorType::UInt8],
    )?;
    for other in [alpha, output] {
        if other.dtype != input.dtype {
            return Err(prep.unsupported(&format!(
                "input '{}' is {} but '{}' is {}",
                input.name, input.dtype, other.name, other.dtype
            )));
        }
    }
    let alpha_strides = broadcast_strides(&input.shape, &alpha.shape).ok_or_else(|| {
        prep.bad(&format!(
            "alpha '{}' {:?} does not broadcast to the input's shape {:?}",
            alpha.name, alpha.shape, input.shape
        ))
    })?;
    prep.set_output_shape(0, input.shape.clone());
    let quantized = if input.dtype == TensorType::Float32 {
        None
    } else {
        let (in_scale, in_zp) = scale_and_zero_point(prep, input)?;
        let (alpha_scale, alpha_zp) = scale_and_zero_point(prep, alpha)?;
        let (out_scale, out_zp) = scale_and_zero_point(prep, output)?;
        let signed = input.dtype == TensorType::Int8;
        let (min, max) = if signed { (-128, 127) } else { (0, 255) };
        Some(Quantized {
            signed,
            in_zp,
            alpha_zp,
            out_zp,
            identity: checked_multiplier(prep, "identity", f64::from(in_scale / out_scale))?,
            alpha: checked_multiplier(
                prep,
                "alpha",
                f64::from(in_scale * alpha_scale / out_scale),
            )?,
            min,
            max,
        })
    };
    Ok(Box::new(Prelu {
        shape: input.shape.clone(),
        alpha_strides,
        quantized,
    }))
}

/// For each dimension of `shape`, the stride of `small` along it (0 where `small` is
/// broadcast), or `None` when `small` does not broadcast to exactly `shape`.
fn broadcast_strides(shape: &[usize], small: &[usize]) -> Option<Vec<usize>> {
    if small.len() > shape.len() {
        return None;
    }
    let offset = shape.len() - small.len();
    let mut strides = vec![0; shape.len()];
    let mut stride = 1;
    for (j, &d) in small.iter().enumerate().rev() {
        let target = shape[offset + j];
        if d == target {
            strides[offset + j] = if d == 1 { 0 } else { stride };
        } else if d != 1 {
            return None;
        }
        stride *= d;
    }
    Some(strides)
}

impl OpKernel for Prelu {
    fn eval(&self, inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]) {
        let (Some(input), Some(alpha)) = (&inputs[0], &inputs[1]) else {
            unreachable!("prepared")
        };
        match &self.quantized {
            None => {
                let (x, a) = (as_f32(input.data), as_f32(alpha.data));
                let out = as_f32_mut(outputs[0].data);
                walk_strided(&self.shape, &self.alpha_strides, |i, j| {
                    out[i] = if x[i] >= 0.0 { x[i] } else { x[i] * a[j] };
                });
            }
            Some(q) => {
                let out = &mut *outputs[0].data;
                walk_strided(&self.shape, &self.alpha_strides, |i, j| {
                    let x = load_q(input.data, q.signed, i) - q.in_zp;
                    let value = if x >= 0 {
                        multiply_by_quantized_multiplier(x, q.identity)
                    } else {
                        let a = load_q(alpha.data, q.signed, j) - q.alpha_zp;
                        multiply_by_quantized_multiplier(x * a, q.alpha)
                    };
                    store_q(out, i, value.wrapping_add(q.out_zp).clamp(q.min, q.max));
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_follow_numpy_broadcasting() {
        assert_eq!(
            broadcast_strides(&[1, 8, 8, 4], &[1, 1, 4]),
            Some(vec![0, 0, 0, 1])
        );
        assert_eq!(broadcast_strides(&[2, 3, 4], &[3, 1]), Some(vec![0, 1, 0]));
        assert_eq!(broadcast_strides(&[2, 3], &[2, 3]), Some(vec![3, 1]));
        assert_eq!(broadcast_strides(&[2, 3], &[4]), None);
        assert_eq!(broadcast_strides(&[3], &[1, 3]), None);
        assert_eq!(broadcast_strides(&[], &[]), Some(vec![]));
    }
}
