//! MEAN over the axes given by a constant INT32 tensor (negative axes count from the end,
//! repeats are ignored), optionally keeping the reduced dimensions as 1: float32, int8 and
//! uint8, with input and output quantization that may differ.
//!
//! LiteRT's reference resolver (`Register_MEAN_REF`) takes one path for every quantized
//! MEAN: reference QuantizedMeanOrSum. Quantized values are summed in int32, the input zero
//! point times the element count is removed, and the sum is rescaled by
//! `input_scale / output_scale` (a double-precision ratio) folded together with
//! `1 / count`: the multiplier is shifted left by `floor(log2(count))` (at most 32 bits, and
//! keeping the final shift >= −31), integer-divided by the count, and applied with
//! MultiplyByQuantizedMultiplier. Float sums accumulate in float32 in input order.

use kiln_tflite::quant::{QuantizedMultiplier, multiply_by_quantized_multiplier};
use kiln_tflite::{BuiltinOptions, TensorType};

use super::common::lut::{checked_multiplier, scale_and_zero_point, walk_strided};
use super::common::quant::{load_q, store_q};
use super::{In, Kernel, OpKernel, Out, Prep};
use crate::error::RuntimeError;
use crate::tensor::as_f32_mut;

#[derive(Debug)]
struct Mean {
    input_shape: Vec<usize>,
    /// For each input dimension, the stride of the output slot it moves (0 if reduced).
    output_strides: Vec<usize>,
    output_len: usize,
    /// Input elements averaged into each output element.
    count: usize,
    quantized: Option<Quantized>,
}

#[derive(Debug)]
struct Quantized {
    signed: bool,
    input_zero_point: i32,
    output_zero_point: i32,
    /// `input_scale / output_scale / count`.
    multiplier: QuantizedMultiplier,
}

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    let keep_dims = match &prep.op.options {
        BuiltinOptions::Reducer { keep_dims } => *keep_dims,
        BuiltinOptions::None => false,
        _ => return Err(prep.bad("options are not ReducerOptions")),
    };
    prep.expect_arity(2..=2, 1)?;
    let (input, axes, output) = (prep.input(0)?, prep.input(1)?, prep.output(0)?);
    prep.require_type(
        input,
        &[TensorType::Float32, TensorType::Int8, TensorType::UInt8],
    )?;
    if output.dtype != input.dtype {
        return Err(prep.unsupported(&format!(
            "input '{}' is {} but output '{}' is {}",
            input.name, input.dtype, output.name, output.dtype
        )));
    }
    if axes.dtype != TensorType::Int32 {
        return Err(prep.bad(&format!(
            "axes '{}' must be INT32, is {}",
            axes.name, axes.dtype
        )));
    }
    let Some(axis_values) = prep.input_i32s(1)? else {
        return Err(prep.unsupported(&format!(
            "the axes '{}' are only known while running",
            axes.name
        )));
    };
    let rank = input.shape.len();
    let mut reduced = vec![false; rank];
    if rank > 0 {
        for &a in &axis_values {
            let resolved = if a < 0 { a + rank as i32 } else { a };
            let Some(flag) = usize::try_from(resolved)
                .ok()
                .and_then(|r| reduced.get_mut(r))
            else {
                return Err(prep.bad(&format!("axis {a} is out of range for rank {rank}")));
            };
            *flag = true;
        }
    }
    let output_shape: Vec<usize> = input
        .shape
        .iter()
        .zip(&reduced)
        .filter_map(|(&d, &r)| match (r, keep_dims) {
            (false, _) => Some(d),
            (true, true) => Some(1),
            (true, false) => None,
        })
        .collect();
    let mut output_strides = vec![0; rank];
    let mut stride = 1;
    for d in (0..rank).rev() {
        if !reduced[d] {
            output_strides[d] = stride;
            stride *= input.shape[d];
        }
    }
    let output_len = output_shape.iter().product();
    let count: usize = input
        .shape
        .iter()
        .zip(&reduced)
        .filter(|(_, r)| **r)
        .map(|(d, _)| d)
        .product();
    let quantized = if input.dtype == TensorType::Float32 {
        None
    } else {
        let (input_scale, input_zero_point) = scale_and_zero_point(prep, input)?;
        let (output_scale, output_zero_point) = scale_and_zero_point(prep, output)?;
        let base = checked_multiplier(
            prep,
            "input-to-output",
            f64::from(input_scale) / f64::from(output_scale),
        )?;
        Some(Quantized {
            signed: input.dtype == TensorType::Int8,
            input_zero_point,
            output_zero_point,
            multiplier: fold_count(base, count),
        })
    };
    prep.set_output_shape(0, output_shape);
    Ok(Box::new(Mean {
        input_shape: input.shape.clone(),
        output_strides,
        output_len,
        count,
        quantized,
    }))
}

/// Folds `1 / count` into a quantized multiplier as reference QuantizedMeanOrSum does.
fn fold_count(m: QuantizedMultiplier, count: usize) -> QuantizedMultiplier {
    if count == 0 {
        return m;
    }
    let count = count as i64;
    let shift = (63 - (count as u64).leading_zeros() as i32)
        .min(32)
        .min(31 + m.shift)
        .max(0);
    QuantizedMultiplier {
        multiplier: ((i64::from(m.multiplier) << shift) / count) as i32,
        shift: m.shift - shift,
    }
}

impl OpKernel for Mean {
    fn eval(&self, inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]) {
        let Some(input) = &inputs[0] else {
            unreachable!("prepared")
        };
        let input_empty = self.input_shape.contains(&0);
        match &self.quantized {
            None => {
                let input = crate::tensor::as_f32(input.data);
                let out = &mut as_f32_mut(outputs[0].data)[..self.output_len];
                if input_empty {
                    out.fill(f32::NAN);
                    return;
                }
                out.fill(0.0);
                walk_strided(&self.input_shape, &self.output_strides, |i, o| {
                    out[o] += input[i];
                });
                let count = self.count as f32;
                for v in out.iter_mut() {
                    *v /= count;
                }
            }
            Some(q) => {
                let out = &mut outputs[0].data[..self.output_len];
                if input_empty {
                    out.fill(0);
                    return;
                }
                let mut sums = vec![0i32; self.output_len];
                walk_strided(&self.input_shape, &self.output_strides, |i, o| {
                    sums[o] = sums[o].wrapping_add(load_q(input.data, q.signed, i));
                });
                let (min, max) = if q.signed { (-128, 127) } else { (0, 255) };
                let zero_sum = i64::from(q.input_zero_point) * self.count as i64;
                for (o, &sum) in sums.iter().enumerate() {
                    let shifted = (i64::from(sum) - zero_sum) as i32;
                    let value = multiply_by_quantized_multiplier(shifted, q.multiplier)
                        .wrapping_add(q.output_zero_point);
                    store_q(out, o, value.clamp(min, max));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_tflite::quant::quantize_multiplier;

    #[test]
    fn folding_the_count_divides() {
        let base = quantize_multiplier(1.0);
        for count in [1usize, 2, 3, 7, 49, 1000, 1 << 20] {
            let m = fold_count(base, count);
            for sum in [-5000, -49, 0, 49, 1234, 100_000] {
                let got = multiply_by_quantized_multiplier(sum, m);
                let want = sum as f64 / count as f64;
                // Within a step: double rounding can land a value near a tie one off.
                assert!((f64::from(got) - want).abs() < 1.0, "{sum}/{count}: {got}");
            }
        }
    }

    #[test]
    fn fold_keeps_shift_in_range() {
        let tiny = quantize_multiplier(2f64.powi(-30));
        let m = fold_count(tiny, 1 << 20);
        assert!(m.shift >= -31);
    }
}
