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
use super::common::scratch::Scratch;
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
    /// When the reduced dimensions are adjacent (size-1 dimensions aside), the input as
    /// [outer, reduced, inner] (a spatial MEAN of NHWC is [N, H·W, C]): whole rows summed.
    span: Option<(usize, usize, usize)>,
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
        span: adjacent_span(&input.shape, &reduced),
        input_shape: input.shape.clone(),
        output_strides,
        output_len,
        count,
        quantized,
    }))
}

/// `shape` as [outer, reduced, inner] when the `reduced` dimensions of more than one element
/// are adjacent.
fn adjacent_span(shape: &[usize], reduced: &[bool]) -> Option<(usize, usize, usize)> {
    if shape.is_empty() || reduced.len() != shape.len() {
        return None;
    }
    let counted = |d: usize| reduced[d] && shape[d] != 1;
    let first = (0..shape.len()).find(|&d| counted(d)).unwrap_or(0);
    let last = (0..shape.len()).rev().find(|&d| counted(d)).unwrap_or(0);
    let gap = (first..=last).any(|d| !reduced[d] && shape[d] != 1);
    (!gap).then(|| {
        (
            shape[..first].iter().product(),
            shape[first..=last].iter().product(),
            shape[last + 1..].iter().product(),
        )
    })
}

/// `sums[i] += Σ_r rows[r · sums.len() + i]` over `reduce` rows, row by row (the order a
/// float sum keeps), compiled for AVX-512 besides the baseline.
fn add_rows<T: Copy, S: Copy>(sums: &mut [S], rows: &[T], reduce: usize, add: impl Fn(S, T) -> S) {
    #[inline(always)]
    fn loops<T: Copy, S: Copy>(sums: &mut [S], rows: &[T], reduce: usize, add: impl Fn(S, T) -> S) {
        let inner = sums.len();
        for row in rows.chunks_exact(inner.max(1)).take(reduce) {
            for (s, &x) in sums.iter_mut().zip(row) {
                *s = add(*s, x);
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
    {
        /// # Safety
        /// The CPU must have AVX-512F and BW.
        #[target_feature(enable = "avx512f,avx512bw")]
        unsafe fn avx512<T: Copy, S: Copy>(
            sums: &mut [S],
            rows: &[T],
            reduce: usize,
            add: impl Fn(S, T) -> S,
        ) {
            loops(sums, rows, reduce, add);
        }
        // SAFETY: the CPU has the features.
        return unsafe { avx512(sums, rows, reduce, add) };
    }
    loops(sums, rows, reduce, add);
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
                match self.span {
                    Some((outer, reduce, inner)) => {
                        for (o, out) in out.chunks_exact_mut(inner.max(1)).take(outer).enumerate() {
                            let rows = &input[o * reduce * inner..][..reduce * inner];
                            add_rows(out, rows, reduce, |s: f32, x: f32| s + x);
                        }
                    }
                    None => walk_strided(&self.input_shape, &self.output_strides, |i, o| {
                        out[o] += input[i];
                    }),
                }
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
                i32::with(self.output_len, |sums| {
                    sums.fill(0);
                    match (self.span, q.signed) {
                        (Some((outer, reduce, inner)), signed) => {
                            for (o, sums) in
                                sums.chunks_exact_mut(inner.max(1)).take(outer).enumerate()
                            {
                                let rows = &input.data[o * reduce * inner..][..reduce * inner];
                                if signed {
                                    add_rows(sums, rows, reduce, |s: i32, x: u8| {
                                        s.wrapping_add(i32::from(x as i8))
                                    });
                                } else {
                                    add_rows(sums, rows, reduce, |s: i32, x: u8| {
                                        s.wrapping_add(i32::from(x))
                                    });
                                }
                            }
                        }
                        (None, _) => {
                            walk_strided(&self.input_shape, &self.output_strides, |i, o| {
                                sums[o] = sums[o].wrapping_add(load_q(input.data, q.signed, i));
                            })
                        }
                    }
                    let (min, max) = if q.signed { (-128, 127) } else { (0, 255) };
                    let zero_sum = i64::from(q.input_zero_point) * self.count as i64;
                    for (o, &sum) in sums.iter().enumerate() {
                        let shifted = (i64::from(sum) - zero_sum) as i32;
                        let value = multiply_by_quantized_multiplier(shifted, q.multiplier)
                            .wrapping_add(q.output_zero_point);
                        store_q(out, o, value.clamp(min, max));
                    }
                });
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

    /// A scalar input has no span (found by the fuzz target: it indexed an empty axis list).
    #[test]
    fn a_scalar_has_no_span() {
        assert_eq!(adjacent_span(&[], &[]), None);
        assert_eq!(adjacent_span(&[3, 4], &[true, false]), Some((1, 3, 4)));
        assert_eq!(adjacent_span(&[2, 3, 4], &[true, false, true]), None);
    }

    /// Every kind of axis set over shapes up to rank 4 (adjacent or not, with and without
    /// size-1 dimensions, keep_dims both ways), float32 and int8: the row sums give what
    /// summing in input order gives (float bits, quantized bytes).
    #[test]
    fn row_sums_equal_sums_in_input_order() {
        use super::super::common::testing::{constant, quantized, run, seeded, tensor};
        let mut next = seeded(0x6d65616e);
        for case in 0..200 {
            let rank = 1 + next(4) as usize;
            let shape: Vec<usize> = (0..rank).map(|_| 1 + next(5) as usize).collect();
            let axes: Vec<i32> = (0..rank as i32).filter(|_| next(2) == 0).collect();
            let keep_dims = case % 2 == 0;
            let total: usize = shape.iter().product();
            let int8 = case % 3 == 0;
            let axes_tensor = constant(
                TensorType::Int32,
                &[axes.len()],
                axes.iter().flat_map(|a| a.to_le_bytes()).collect(),
            );
            let (dtype, data): (TensorType, Vec<u8>) = if int8 {
                (
                    TensorType::Int8,
                    (0..total).map(|_| next(256) as u8).collect(),
                )
            } else {
                let floats: Vec<f32> = (0..total).map(|_| next(1000) as f32 / 7.0 - 50.0).collect();
                (
                    TensorType::Float32,
                    floats.iter().flat_map(|v| v.to_le_bytes()).collect(),
                )
            };
            let wrap = |t| if int8 { quantized(t, 0.05, -3) } else { t };
            let got = run(
                prepare,
                BuiltinOptions::Reducer { keep_dims },
                vec![Some(wrap(tensor(dtype, &shape))), Some(axes_tensor)],
                if int8 {
                    quantized(tensor(dtype, &[1]), 0.02, 5)
                } else {
                    tensor(dtype, &[1])
                },
                &[&data],
            )
            .unwrap();
            // The definition: each element added, in input order, to its output slot.
            let reduced: Vec<bool> = (0..rank).map(|d| axes.contains(&(d as i32))).collect();
            let mut strides = vec![0; rank];
            let mut stride = 1;
            for d in (0..rank).rev() {
                if !reduced[d] {
                    strides[d] = stride;
                    stride *= shape[d];
                }
            }
            let out_len = stride;
            let count: usize = (0..rank)
                .filter(|&d| reduced[d])
                .map(|d| shape[d])
                .product();
            let slot = |i: usize| {
                let mut rest = i;
                let mut o = 0;
                for d in (0..rank).rev() {
                    o += rest % shape[d] * strides[d];
                    rest /= shape[d];
                }
                o
            };
            if int8 {
                let mut sums = vec![0i32; out_len];
                for (i, &b) in data.iter().enumerate() {
                    sums[slot(i)] += i32::from(b as i8);
                }
                let m = fold_count(
                    quantize_multiplier(f64::from(0.05f32) / f64::from(0.02f32)),
                    count,
                );
                let want: Vec<u8> = sums
                    .iter()
                    .map(|&s| {
                        (multiply_by_quantized_multiplier(s + 3 * count as i32, m) + 5)
                            .clamp(-128, 127) as u8
                    })
                    .collect();
                assert_eq!(got.data, want, "case {case}: {shape:?} over {axes:?}");
            } else {
                let input: Vec<f32> = data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                let mut sums = vec![0f32; out_len];
                for (i, &x) in input.iter().enumerate() {
                    sums[slot(i)] += x;
                }
                let want: Vec<u8> = sums
                    .iter()
                    .flat_map(|&s| (s / count as f32).to_le_bytes())
                    .collect();
                assert_eq!(got.data, want, "case {case}: {shape:?} over {axes:?}");
            }
        }
    }
}
