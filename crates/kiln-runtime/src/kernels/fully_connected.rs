//! FULLY_CONNECTED: weights [out, in], optional bias, input flattened to [batch, in]
//! (keep_num_dims keeps the input's leading dimensions), fused activation. Float32;
//! int8/uint8 with per-tensor or per-channel weight scales; hybrid (float input, int8 weights,
//! each input row quantized on the fly, symmetric or asymmetric per the options).
//!
//! Unlike CONV_2D, LiteRT's reference FULLY_CONNECTED rescales its int32 accumulator in
//! double precision — round(acc × input_scale × weight_scale / output_scale) — rather than
//! with a fixed-point multiplier; the two differ by one step on ties, and the converter
//! fixtures show which one LiteRT 2.3.0 runs.

use kiln_tflite::BuiltinOptions;

use super::common::block_sparse::BlockSparse;
use super::common::convolution::{Geometry, xor_copy};
use super::common::dot::{dot, dot_q8};
use super::common::field_gemm::FieldFilter;
use super::common::igemm::{Isa, PackedWeights, QuantizedGemm};
use super::common::quant::{load_q, quantize_floats, store_q};
use super::common::scratch::Scratch;
use super::common::weighted::{self, Arithmetic, WeightedOp};
use super::densify::densify;
use super::{In, Kernel, OpKernel, Out, Prep};
use crate::arena::AlignedBytes;
use crate::error::RuntimeError;
use crate::tensor::{as_f32, as_f32_mut, as_i32};

#[derive(Debug)]
struct FullyConnected {
    /// Weights stored sparse in the file (FULLY_CONNECTED v8+), densified once at prepare.
    dense_weights: Option<AlignedBytes>,
    batches: usize,
    in_features: usize,
    out_features: usize,
    has_bias: bool,
    arithmetic: Arithmetic,
    /// Quantized constant weights packed for the integer GEMM.
    packed: Option<QuantizedGemm>,
    /// Dynamic-range (int8) constant weights packed for the integer GEMM.
    hybrid: Option<PackedWeights>,
    /// Constant weights mostly pruned in blocks, kept as their non-zero blocks.
    block_sparse: Option<SparseWeights>,
}

/// A fully-connected weight's non-zero blocks: float32 in 1×16 or 1×4 blocks, int8 (zero
/// point 0) in 1×16 — the blocks LiteRT's sparse kernels read — or in 16 × 4 panels, with
/// each output's correction for the input offset (its weights' sum times the offset less
/// the 128 that reading int8 inputs unsigned adds).
#[derive(Debug)]
enum SparseWeights {
    Float(BlockSparse<f32>),
    Int8 {
        blocks: BlockSparse<i8>,
        corrections: Vec<i32>,
    },
    /// int8 pruned in blocks that span 16 output channels (`block = [16, 16]`): lists of the
    /// non-zero 16 × 4 panels, a register each (AVX-512 VNNI).
    Panels {
        filter: FieldFilter,
        corrections: Vec<i32>,
    },
}

/// Zero blocks from which the block-sparse product beats the dense kernels, measured with
/// `cargo bench -p kiln-runtime --bench kernels -- "fully connected"` (1280 → 1000, one
/// thread): the float32 dense product streams every weight and the sparse one is already
/// about twice as fast at half the blocks zero; the int8 VNNI GEMV is fast enough that the
/// sparse product only pulls ahead at about 80% (1.1× there, 1.4× at 90%).
const MIN_ZERO_BLOCKS_FLOAT: f64 = 0.5;
const MIN_ZERO_BLOCKS_INT8: f64 = 0.8;

/// Input rows whose products one call of the panel kernel takes.
const ROWS_PER_CALL: usize = 64;

/// The block-sparse form of constant `weights` ([rows, cols] bytes), when it pays.
fn sparse_weights(
    arithmetic: &Arithmetic,
    weights: &[u8],
    shape: (usize, usize),
) -> Option<SparseWeights> {
    match arithmetic {
        Arithmetic::Float { .. } => {
            // Read byte-wise: constant bytes need not be aligned at prepare.
            let floats: Vec<f32> = weights
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            // 16-wide blocks where the pruning made them (one AVX-512 multiply-add each),
            // else LiteRT's 1×4.
            [16, 4]
                .into_iter()
                .find_map(|width| {
                    BlockSparse::from_dense(
                        &floats,
                        shape,
                        width,
                        |w| w == 0.0,
                        MIN_ZERO_BLOCKS_FLOAT,
                    )
                })
                .map(SparseWeights::Float)
        }
        Arithmetic::Quantized(q) if q.filter_signed && q.filter_offset == 0 => {
            let bytes: Vec<i8> = weights.iter().map(|&b| b as i8).collect();
            let blocks =
                BlockSparse::from_dense(&bytes, shape, 16, |w| w == 0, MIN_ZERO_BLOCKS_INT8);
            let panels = panels(&bytes, shape);
            // int8 inputs are read unsigned, x + 128: Σ w·(x + offset) is then
            // Σ w·u + (offset − 128)·Σ w.
            let share = q.input_offset.wrapping_sub(QuantizedGemm::shift(q));
            let corrections = bytes
                .chunks_exact(shape.1.max(1))
                .map(|row| share.wrapping_mul(row.iter().map(|&w| i32::from(w)).sum()))
                .collect();
            // In `vpdpbusd`s per input row: a panel is one; four 1×16 blocks are one, plus
            // about ten per output for the row's horizontal sum.
            match (blocks, panels) {
                (Some(blocks), Some(filter))
                    if filter.entries() >= blocks.kept() / 4 + 10 * shape.0 =>
                {
                    Some(SparseWeights::Int8 {
                        blocks,
                        corrections,
                    })
                }
                (_, Some(filter)) => Some(SparseWeights::Panels {
                    filter,
                    corrections,
                }),
                (Some(blocks), None) => Some(SparseWeights::Int8 {
                    blocks,
                    corrections,
                }),
                (None, None) => None,
            }
        }
        _ => None,
    }
}

/// Panels of 16 outputs × 4 inputs, as lists of the non-zero ones, where this CPU runs them
/// and at most [`MAX_PANEL_DENSITY`] of them are non-zero.
fn panels(weights: &[i8], (rows, cols): (usize, usize)) -> Option<FieldFilter> {
    if Isa::detect() != Isa::Vnni || rows == 0 || cols == 0 {
        return None;
    }
    // The layer as a 1×1 convolution of a 1×1 image with `cols` channels.
    let g = Geometry {
        batches: 1,
        in_h: 1,
        in_w: 1,
        in_c: cols,
        out_h: 1,
        out_w: 1,
        out_c: rows,
        filter_h: 1,
        filter_w: 1,
        stride: (1, 1),
        dilation: (1, 1),
        pad: (0, 0),
    };
    FieldFilter::new(&g, 1, true, |o, k| weights[o * cols + k])
        .filter(|f| f.density() <= MAX_PANEL_DENSITY)
}

/// The share of non-zero 16 × 4 panels up to which their lists beat the dense GEMV.
const MAX_PANEL_DENSITY: f64 = 0.5;

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    prep.expect_arity(2..=3, 1)?;
    let BuiltinOptions::FullyConnected(options) = &prep.op.options else {
        return Err(prep.bad("missing FullyConnectedOptions"));
    };
    if options.weights_format != 0 {
        return Err(prep.unsupported("shuffled weight formats are not supported"));
    }
    let (input, weights, output) = (prep.input(0)?, prep.input(1)?, prep.output(0)?);
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
    let dense_weights = match &weights.sparsity {
        Some(sparsity) => {
            let element_size = weights.dtype.element_size().unwrap_or(1);
            let values = prep.input_value(1).ok_or_else(|| {
                prep.bad(&format!(
                    "sparse weights '{}' must be a constant",
                    weights.name
                ))
            })?;
            let dense = densify(sparsity, &weights.shape, element_size, values)
                .map_err(|e| prep.bad(&format!("sparse weights '{}': {e}", weights.name)))?;
            let mut aligned = AlignedBytes::try_zeroed(dense.len())
                .map_err(|_| prep.bad("cannot allocate the densified weights"))?;
            aligned.as_mut_slice().copy_from_slice(&dense);
            Some(aligned)
        }
        None => None,
    };
    let bias = prep.optional_input(2);
    let arithmetic = weighted::prepare(
        prep,
        &WeightedOp {
            input,
            filter: weights,
            bias,
            output,
            activation: options.activation,
            channels: out_features,
            channel_axis: 0,
            double_precision_rescale: true,
            hybrid_asymmetric: options.asymmetric_quantize_inputs,
        },
    )?;
    let shape = if options.keep_num_dims {
        // As TFLite: the kept dimensions only describe the output when the rows are the
        // input's last dimension (otherwise `batches` and the output's size disagree).
        if input.shape.last() != Some(&in_features) {
            return Err(prep.bad(&format!(
                "keep_num_dims needs input '{}' of shape {:?} to end in {in_features} features",
                input.name, input.shape
            )));
        }
        let mut shape = input.shape.clone();
        if let Some(last) = shape.last_mut() {
            *last = out_features;
        }
        shape
    } else {
        vec![batches, out_features]
    };
    prep.set_output_shape(0, shape);
    let constant_weights = dense_weights
        .as_ref()
        .map(AlignedBytes::as_slice)
        .or_else(|| prep.input_value(1));
    // Weights mostly pruned in blocks take the block-sparse product, which needs neither
    // the packed GEMM nor (for a sparse file) the densified copy.
    let block_sparse = constant_weights
        .filter(|w| {
            w.len() == out_features * in_features * weights.dtype.element_size().unwrap_or(0)
        })
        .and_then(|w| sparse_weights(&arithmetic, w, (out_features, in_features)));
    let constant_weights = constant_weights.filter(|_| block_sparse.is_none());
    let packed = match (&arithmetic, constant_weights) {
        (Arithmetic::Quantized(q), Some(weights)) => {
            QuantizedGemm::new(q, out_features, in_features, weights)
        }
        _ => None,
    };
    let hybrid = match (&arithmetic, constant_weights) {
        (Arithmetic::Hybrid { .. }, Some(weights))
            if weights.len() == out_features * in_features =>
        {
            Some(PackedWeights::pack(
                Isa::detect(),
                out_features,
                in_features,
                |o, k| weights[o * in_features + k] as i8,
            ))
        }
        _ => None,
    };
    let dense_weights = dense_weights.filter(|_| block_sparse.is_none());
    Ok(Box::new(FullyConnected {
        block_sparse,
        dense_weights,
        batches,
        in_features,
        out_features,
        has_bias: bias.is_some(),
        arithmetic,
        packed,
        hybrid,
    }))
}

impl OpKernel for FullyConnected {
    /// The non-zero blocks, the packed int8 weights and the packed dynamic-range weights are
    /// all eval reads of the weights (float32 dense weights are read in place).
    fn reads_input(&self, i: usize) -> bool {
        let own_copy = self.block_sparse.is_some()
            || (matches!(self.arithmetic, Arithmetic::Quantized(_)) && self.packed.is_some())
            || (matches!(self.arithmetic, Arithmetic::Hybrid { .. }) && self.hybrid.is_some());
        !(i == 1 && own_copy)
    }

    fn multiply_accumulates(&self) -> usize {
        self.batches
            .saturating_mul(self.in_features)
            .saturating_mul(self.out_features)
    }

    fn prepared_bytes(&self) -> usize {
        self.dense_weights.as_ref().map_or(0, AlignedBytes::len)
            + self.packed.as_ref().map_or(0, QuantizedGemm::bytes)
            + self.hybrid.as_ref().map_or(0, PackedWeights::bytes)
            + self.block_sparse.as_ref().map_or(0, |s| match s {
                SparseWeights::Float(blocks) => blocks.bytes(),
                SparseWeights::Int8 {
                    blocks,
                    corrections,
                } => blocks.bytes() + corrections.len() * size_of::<i32>(),
                SparseWeights::Panels {
                    filter,
                    corrections,
                } => filter.bytes() + corrections.len() * size_of::<i32>(),
            })
    }

    fn eval(&self, inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]) {
        let (Some(input), Some(weights)) = (&inputs[0], &inputs[1]) else {
            unreachable!("prepared")
        };
        let weights = In {
            data: self
                .dense_weights
                .as_ref()
                .map_or(weights.data, AlignedBytes::as_slice),
        };
        let bias = weighted::bias(inputs, self.has_bias);
        let (n_in, n_out) = (self.in_features, self.out_features);
        match (&self.arithmetic, &self.block_sparse) {
            (Arithmetic::Float { clamp }, Some(SparseWeights::Float(blocks))) => {
                let bias = bias.map(as_f32);
                let output = &mut as_f32_mut(outputs[0].data)[..self.batches * n_out];
                blocks.multiply(as_f32(input.data), (self.batches, n_in), output);
                for (i, o) in output.iter_mut().enumerate() {
                    *o = clamp.apply(*o + bias.map_or(0.0, |bias| bias[i % n_out]));
                }
                return;
            }
            (
                Arithmetic::Quantized(q),
                Some(SparseWeights::Int8 {
                    blocks,
                    corrections,
                }),
            ) => {
                let bias = bias.map(as_i32);
                let output = &mut outputs[0].data[..self.batches * n_out];
                let flip = if q.input_signed { 0x80 } else { 0 };
                i32::with(self.batches * n_out, |sums| {
                    blocks.multiply(input.data, flip, (self.batches, n_in), sums);
                    q.finish_rows(sums, corrections, bias, n_out, output);
                });
                return;
            }
            #[cfg(target_arch = "x86_64")]
            (
                Arithmetic::Quantized(q),
                Some(SparseWeights::Panels {
                    filter,
                    corrections,
                }),
            ) => {
                let bias = bias.map(as_i32);
                let output = &mut outputs[0].data[..self.batches * n_out];
                let flip = if q.input_signed { 0x80 } else { 0 };
                let rows = self.batches;
                // Each row's last group of four may read three bytes past it.
                u8::with(rows * n_in + 3, |shifted| {
                    xor_copy(shifted, &input.data[..rows * n_in], flip);
                    i32::with(rows * n_out, |sums| {
                        for first in (0..rows).step_by(ROWS_PER_CALL) {
                            let count = (rows - first).min(ROWS_PER_CALL);
                            let origins: [usize; ROWS_PER_CALL] =
                                std::array::from_fn(|i| (first + i) * n_in);
                            let sums = &mut sums[first * n_out..];
                            filter.multiply(shifted, &origins[..count], sums);
                        }
                        q.finish_rows(sums, corrections, bias, n_out, output);
                    });
                });
                return;
            }
            _ => {}
        }
        match &self.arithmetic {
            Arithmetic::Float { clamp } => {
                let (input, weights) = (as_f32(input.data), as_f32(weights.data));
                let bias = bias.map(as_f32);
                let output = as_f32_mut(outputs[0].data);
                for b in 0..self.batches {
                    let row = &input[b * n_in..][..n_in];
                    for o in 0..n_out {
                        let acc = dot(row, &weights[o * n_in..][..n_in])
                            + bias.map_or(0.0, |bias| bias[o]);
                        output[b * n_out + o] = clamp.apply(acc);
                    }
                }
            }
            Arithmetic::Quantized(q) if self.packed.is_some() => {
                let Some(p) = &self.packed else {
                    unreachable!("guarded")
                };
                let bias = bias.map(as_i32);
                let output = &mut *outputs[0].data;
                let row_len = p.weights.row_len();
                let rows = self.batches;
                // Per-thread buffers reused across invokes; the padding past `n_in` in each
                // row meets zero weights, so stale bytes there are harmless.
                u8::with(rows * row_len, |shifted| {
                    for b in 0..self.batches {
                        let src = &input.data[b * n_in..][..n_in];
                        for (d, &s) in shifted[b * row_len..][..n_in].iter_mut().zip(src) {
                            *d = s ^ p.flip;
                        }
                    }
                    i32::with(rows * n_out, |sums| {
                        p.weights.multiply(shifted, rows, sums);
                        let output = &mut output[..rows * n_out];
                        q.finish_rows(sums, &p.correction, bias, n_out, output);
                    })
                });
            }
            Arithmetic::Quantized(q) => {
                let bias = bias.map(as_i32);
                let output = &mut *outputs[0].data;
                // Offset 8-bit values (input − zero point) fit in i16.
                let mut row = vec![0i16; n_in];
                for b in 0..self.batches {
                    for (k, x) in row.iter_mut().enumerate() {
                        *x = (load_q(input.data, q.input_signed, b * n_in + k) + q.input_offset)
                            as i16;
                    }
                    for o in 0..n_out {
                        let acc = dot_q8(
                            &row,
                            &weights.data[o * n_in..][..n_in],
                            q.filter_signed,
                            q.filter_offset,
                        );
                        store_q(
                            output,
                            b * n_out + o,
                            q.finish(acc, bias.map_or(0, |bias| bias[o]), o),
                        );
                    }
                }
            }
            Arithmetic::Hybrid {
                filter_scales: weight_scales,
                asymmetric_inputs,
                clamp,
            } if self.hybrid.is_some() => {
                let Some(packed) = &self.hybrid else {
                    unreachable!("guarded")
                };
                let input = as_f32(input.data);
                let bias = bias.map(as_f32);
                let output = as_f32_mut(outputs[0].data);
                let row_len = packed.row_len();
                // Each batch's row quantized on its own, shifted to bytes (x + 128); the sum
                // gets −(128 + zero point)·Σw back per output, exactly.
                let mut quantized = vec![0i32; n_in];
                let mut rows = vec![0u8; self.batches * row_len];
                let mut scales = Vec::with_capacity(self.batches);
                for b in 0..self.batches {
                    let (scale, zero_point) = quantize_floats(
                        &input[b * n_in..][..n_in],
                        *asymmetric_inputs,
                        &mut quantized,
                    );
                    for (x, &q) in rows[b * row_len..][..n_in].iter_mut().zip(&quantized) {
                        *x = (q + 128) as u8;
                    }
                    scales.push((scale, zero_point));
                }
                let mut sums = vec![0i32; self.batches * n_out];
                packed.multiply(&rows, self.batches, &mut sums);
                for (b, &(scale, zero_point)) in scales.iter().enumerate() {
                    for o in 0..n_out {
                        let acc = sums[b * n_out + o]
                            .wrapping_add((-128 - zero_point).wrapping_mul(packed.sums[o]));
                        let value = bias.map_or(0.0, |bias| bias[o])
                            + acc as f32 * scale * weight_scales[o];
                        output[b * n_out + o] = clamp.apply(value);
                    }
                }
            }
            Arithmetic::Hybrid {
                filter_scales: weight_scales,
                asymmetric_inputs,
                clamp,
            } => {
                let input = as_f32(input.data);
                let bias = bias.map(as_f32);
                let output = as_f32_mut(outputs[0].data);
                let mut quantized = vec![0i32; n_in];
                let mut row = vec![0i16; n_in];
                for b in 0..self.batches {
                    let (scale, zero_point) = quantize_floats(
                        &input[b * n_in..][..n_in],
                        *asymmetric_inputs,
                        &mut quantized,
                    );
                    for (x, &q) in row.iter_mut().zip(&quantized) {
                        *x = (q - zero_point) as i16;
                    }
                    for o in 0..n_out {
                        let acc = dot_q8(&row, &weights.data[o * n_in..][..n_in], true, 0);
                        let value = bias.map_or(0.0, |bias| bias[o])
                            + acc as f32 * scale * weight_scales[o];
                        output[b * n_out + o] = clamp.apply(value);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use kiln_tflite::{Activation, FullyConnectedOptions, TensorType};

    use super::super::common::testing::{
        Tensor, constant, per_channel, quantized, run, seeded, tensor,
    };
    use super::*;

    /// The weights as a constant (the prepared paths) or as a run-time input (the direct
    /// path, which nothing prepares), and the run's data: the input, then the weights when
    /// they are fed.
    fn weights_and_data<'a>(
        dtype: TensorType,
        shape: (usize, usize),
        weights: &'a [u8],
        input: &'a [u8],
        constant_weights: bool,
    ) -> (Tensor, Vec<&'a [u8]>) {
        if constant_weights {
            (
                constant(dtype, &[shape.0, shape.1], weights.to_vec()),
                vec![input],
            )
        } else {
            (tensor(dtype, &[shape.0, shape.1]), vec![input, weights])
        }
    }

    /// The packed GEMM path (constant weights) against the direct one (weights fed at run
    /// time) on random sizes, batches, both 8-bit types and per-channel scales; and, with
    /// int8 weights pruned in 1×16 blocks, the block-sparse path, and in 16×16 blocks, the
    /// panel lists (batches of eight and more take its eight-row tiles).
    #[test]
    fn the_packed_and_block_sparse_int8_paths_equal_the_direct_one() {
        let mut next = seeded(0x2545_f491_4f6c_dd1d);
        for case in 0..40 {
            let signed = case % 3 != 0;
            let pruned = signed && case % 2 == 1;
            let panels = pruned && case % 4 == 1;
            let dtype = if signed {
                TensorType::Int8
            } else {
                TensorType::UInt8
            };
            let (batches, n_in, n_out) = (
                1 + next(if panels { 20 } else { 6 }) as usize,
                if pruned {
                    16 * (1 + next(18) as usize)
                } else {
                    1 + next(300) as usize
                },
                1 + next(40) as usize,
            );
            let filter_zero = if signed { 0 } else { 100 + next(56) as i64 };
            let mut weights: Vec<u8> = (0..n_out * n_in)
                .map(|_| {
                    if signed {
                        (next(255) as i32 - 127) as i8 as u8
                    } else {
                        next(256) as u8
                    }
                })
                .collect();
            if panels {
                // Blocks of 16 outputs × 16 inputs, nine in ten zero (the last rows' block
                // may be short).
                for rows in (0..n_out).step_by(16) {
                    for columns in (0..n_in).step_by(16) {
                        if next(10) != 0 {
                            for row in rows..(rows + 16).min(n_out) {
                                weights[row * n_in + columns..][..16].fill(0);
                            }
                        }
                    }
                }
            } else if pruned {
                // Nine in ten blocks zero: past the 80% from which the block-sparse path runs.
                for block in weights.chunks_mut(16) {
                    if next(10) != 0 {
                        block.fill(0);
                    }
                }
            }
            let scales: Vec<f32> = (0..n_out)
                .map(|_| 0.001 + next(100) as f32 * 1e-4)
                .collect();
            let bias: Vec<u8> = (0..n_out)
                .flat_map(|_| (next(4000) as i32 - 2000).to_le_bytes())
                .collect();
            let input: Vec<u8> = (0..batches * n_in).map(|_| next(256) as u8).collect();
            let input_zero = if signed {
                next(256) as i64 - 128
            } else {
                next(256) as i64
            };
            let options = BuiltinOptions::FullyConnected(FullyConnectedOptions {
                activation: if case % 4 == 0 {
                    Activation::Relu
                } else {
                    Activation::None
                },
                ..FullyConnectedOptions::default()
            });
            let evaluate = |constant_weights: bool| {
                let (weights_tensor, data) =
                    weights_and_data(dtype, (n_out, n_in), &weights, &input, constant_weights);
                run(
                    prepare,
                    options.clone(),
                    vec![
                        Some(quantized(tensor(dtype, &[batches, n_in]), 0.05, input_zero)),
                        Some(per_channel(weights_tensor, scales.clone(), filter_zero)),
                        Some(per_channel(
                            constant(TensorType::Int32, &[n_out], bias.clone()),
                            scales.iter().map(|s| s * 0.05).collect(),
                            0,
                        )),
                    ],
                    quantized(tensor(dtype, &[]), 0.2, if signed { 3 } else { 128 }),
                    &data,
                )
                .unwrap()
                .data
            };
            assert_eq!(evaluate(true), evaluate(false), "case {case}");
        }
    }

    /// Float weights pruned in 1×4 blocks (nine in ten zero): the block-sparse product
    /// against the direct one (weights fed at run time), within float rounding.
    #[test]
    fn the_block_sparse_float_path_equals_the_direct_one() {
        let mut next = seeded(0x51ab);
        for case in 0..10 {
            let (batches, n_in, n_out) = (
                1 + next(4) as usize,
                4 * (1 + next(80) as usize),
                1 + next(30) as usize,
            );
            let mut weights: Vec<f32> = (0..n_out * n_in)
                .map(|_| next(2000) as f32 / 1000.0 - 1.0)
                .collect();
            for block in weights.chunks_mut(4) {
                if next(10) != 0 {
                    block.fill(0.0);
                }
            }
            let bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
            let weight_bytes = bytes(&weights);
            let input = bytes(
                &(0..batches * n_in)
                    .map(|_| next(2000) as f32 / 1000.0 - 1.0)
                    .collect::<Vec<_>>(),
            );
            let bias = bytes(
                &(0..n_out)
                    .map(|_| next(100) as f32 / 100.0)
                    .collect::<Vec<_>>(),
            );
            let evaluate = |constant_weights: bool| {
                let (weights_tensor, data) = weights_and_data(
                    TensorType::Float32,
                    (n_out, n_in),
                    &weight_bytes,
                    &input,
                    constant_weights,
                );
                let out = run(
                    prepare,
                    BuiltinOptions::FullyConnected(FullyConnectedOptions::default()),
                    vec![
                        Some(tensor(TensorType::Float32, &[batches, n_in])),
                        Some(weights_tensor),
                        Some(constant(TensorType::Float32, &[n_out], bias.clone())),
                    ],
                    tensor(TensorType::Float32, &[]),
                    &data,
                )
                .unwrap()
                .data;
                out.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect::<Vec<f32>>()
            };
            for (a, b) in evaluate(true).iter().zip(evaluate(false)) {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "case {case}: {a} vs {b}"
                );
            }
        }
    }

    fn fc(input_shape: &[usize]) -> Result<Vec<usize>, RuntimeError> {
        let weights: Vec<u8> = (0..3 * 16).flat_map(|v| (v as f32).to_le_bytes()).collect();
        let input = vec![0u8; input_shape.iter().product::<usize>() * 4];
        let options = FullyConnectedOptions {
            keep_num_dims: true,
            ..FullyConnectedOptions::default()
        };
        run(
            prepare,
            BuiltinOptions::FullyConnected(options),
            vec![
                Some(tensor(TensorType::Float32, input_shape)),
                Some(constant(TensorType::Float32, &[3, 16], weights)),
            ],
            tensor(TensorType::Float32, &[]),
            &[&input],
        )
        .map(|run| run.shape)
    }

    /// Fuzzer finding: with keep_num_dims, an input [1, 2, 32] against 16-feature weights
    /// was split into 4 rows but given the output shape [1, 2, 3] (2 rows), so the kernel
    /// wrote past the output. TFLite requires the last dimension to be the feature count.
    #[test]
    fn keep_num_dims_needs_the_features_last() {
        assert_eq!(fc(&[1, 4, 16]).unwrap(), [1, 4, 3]);
        let err = fc(&[1, 2, 32]).unwrap_err().to_string();
        assert!(err.contains("keep_num_dims"), "{err}");
        assert!(fc(&[]).is_err());
    }

    /// Dynamic range (float input, int8 weights): the packed GEMM and the direct path sum the
    /// same integers, so the floats are equal; symmetric and asymmetric input quantization,
    /// several batches (each quantized on its own).
    #[test]
    fn the_packed_hybrid_path_equals_the_direct_one() {
        let mut next = seeded(0x7e57);
        for case in 0..20 {
            let (batches, n_in, n_out) = (
                1 + next(5) as usize,
                1 + next(200) as usize,
                1 + next(40) as usize,
            );
            let weights: Vec<u8> = (0..n_out * n_in)
                .map(|_| (next(255) as i32 - 127) as i8 as u8)
                .collect();
            let scales: Vec<f32> = (0..n_out)
                .map(|_| 0.001 + next(100) as f32 * 1e-4)
                .collect();
            let input: Vec<u8> = (0..batches * n_in)
                .flat_map(|_| (next(2001) as f32 / 300.0 - 3.0).to_le_bytes())
                .collect();
            let bias: Vec<u8> = (0..n_out)
                .flat_map(|_| (next(2001) as f32 / 1000.0 - 1.0).to_le_bytes())
                .collect();
            let options = BuiltinOptions::FullyConnected(FullyConnectedOptions {
                asymmetric_quantize_inputs: case % 2 == 1,
                ..FullyConnectedOptions::default()
            });
            let evaluate = |constant_weights: bool| {
                let (weights_tensor, data) = weights_and_data(
                    TensorType::Int8,
                    (n_out, n_in),
                    &weights,
                    &input,
                    constant_weights,
                );
                run(
                    prepare,
                    options.clone(),
                    vec![
                        Some(tensor(TensorType::Float32, &[batches, n_in])),
                        Some(per_channel(weights_tensor, scales.clone(), 0)),
                        Some(constant(TensorType::Float32, &[n_out], bias.clone())),
                    ],
                    tensor(TensorType::Float32, &[]),
                    &data,
                )
                .unwrap()
                .data
            };
            assert_eq!(evaluate(true), evaluate(false), "case {case}");
        }
    }
}
