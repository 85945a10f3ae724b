//! An int8 CONV_2D followed by a MAX_POOL_2D whose windows tile its output, in one pass: each
//! pooled row's convolution rows are summed by the integer GEMM, the maximum of each window
//! is taken over the int32 sums, and only the maxima are requantized.
//!
//! The bits are the two operators': requantization (rescale, zero point, clamp) is
//! non-decreasing in the sum, so the maximum of the requantized values is the requantized
//! maximum — provided no sum wraps and no rescale shifts left (each checked at prepare). A
//! quarter of the requantizations of a 2×2 pooling remain, the convolution's output never
//! goes through memory, and pixels no window covers are not computed.

use std::sync::Arc;

use super::super::common::convolution::{Convolution, Geometry, PixelOrder, WORD_SLACK, xor_copy};
use super::super::common::field_gemm::{MAX_ORIGINS, folds_windows_of};
use super::super::common::parallel::for_each_chunk;
use super::super::common::requantize::OutputRange;
use super::super::common::scratch::{Scratch, with_image_bytes};
use super::super::common::weighted::{self, Quantized};
use super::super::{In, OpKernel, Out, TilingMaxPool};
use super::{PackedFilter, short_run_padding};
use crate::tensor::as_i32;
use kiln_tflite::quant::Rescale;

#[derive(Debug)]
pub(super) struct ConvMaxPool {
    geometry: Geometry,
    has_bias: bool,
    filter: Arc<PackedFilter>,
    pool: TilingMaxPool,
    /// The convolution's zero point with both clamps (its activation's and the pool's).
    range: OutputRange,
}

impl ConvMaxPool {
    /// The fused kernel, when the bits are sure to be the two operators'.
    pub(super) fn new(
        conv: &Convolution,
        q: &Quantized,
        filter: Arc<PackedFilter>,
        pool: TilingMaxPool,
    ) -> Option<Self> {
        let g = &conv.geometry;
        let Rescale::FixedPoint(multipliers) = &q.rescale else {
            return None;
        };
        // Non-decreasing rescales: no negative multiplier (a negative scale), no left shift
        // (which may wrap).
        if multipliers.iter().any(|m| m.multiplier < 0 || m.shift > 0) {
            return None;
        }
        // No sum may wrap: |Σ (x ^ flip)·w| ≤ k · 255 · 128, plus the constant offsets (a
        // bias fed at run time cannot be bounded).
        let offsets = filter.offsets.as_ref()?;
        let k = filter.gemm.weights.row_len() as i64;
        let largest_offset = offsets.padded.iter().map(|&o| i64::from(o).abs()).max()?;
        if k * 255 * 128 + largest_offset >= i64::from(i32::MAX) {
            return None;
        }
        let (window, out) = (pool.window, pool.out);
        if window.0 * out.0 > g.out_h || window.1 * out.1 > g.out_w {
            return None;
        }
        // The implicit GEMM (which then holds the only copy of the weights) folds windows of
        // 1, 2, 4 or 8 cells.
        if filter.field.is_some() && !folds_windows_of(window.0 * window.1) {
            return None;
        }
        Some(Self {
            geometry: g.clone(),
            has_bias: conv.has_bias,
            range: filter.range.within(pool.range)?,
            filter,
            pool,
        })
    }
}

impl OpKernel for ConvMaxPool {
    fn eval(&self, inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]) {
        let Some(input) = &inputs[0] else {
            unreachable!("prepared")
        };
        let (g, p) = (&self.geometry, &*self.filter);
        let mut made = None;
        let bias = weighted::bias(inputs, self.has_bias).map(as_i32);
        let offsets = p.offsets(bias, g.out_c, &mut made);
        // With VNNI and AVX-512 the maxima are taken and requantized in the GEMM's registers.
        #[cfg(target_arch = "x86_64")]
        let fused = p.in_register(offsets, self.range);
        let c = g.out_c;
        let row_len = p.gemm.weights.row_len();
        let ((window_h, window_w), (pooled_h, pooled_w)) = (self.pool.window, self.pool.out);
        let cells = window_h * window_w;
        // A pooled row's convolution pixels, window after window.
        let pixels = pooled_w * cells;
        let image_len = g.in_h * g.in_w * g.in_c;
        let pooled_len = pooled_h * pooled_w * c;
        let output = &mut *outputs[0].data;
        let work = pooled_h * pixels * c * row_len;
        #[cfg(target_arch = "x86_64")]
        if let (Some((field, size)), Some(q)) = (&p.field, &fused)
            && folds_windows_of(cells)
        {
            let (row_step, column_step) = field.steps(g);
            // Each cell's origin from its window's first.
            let mut pattern = [0; MAX_ORIGINS];
            for (j, at) in pattern[..cells].iter_mut().enumerate() {
                *at = j / window_w * row_step + j % window_w * column_step;
            }
            let pattern = &pattern[..cells];
            // Windows in the output's order, across its rows: no tile is cut short at a row's
            // end.
            let windows = MAX_ORIGINS / cells;
            let images = (input.data, &mut *output);
            p.per_padded_image(g, *size, images, pooled_len, |padded, out| {
                for_each_chunk(out, windows * c, work, |call, out| {
                    let first = call * windows;
                    let count = out.len() / c * cells;
                    let mut origins = [0; MAX_ORIGINS];
                    let (mut py, mut px) = (first / pooled_w, first % pooled_w);
                    for window in origins[..count].chunks_exact_mut(cells) {
                        let corner = field.origin(g, (py * window_h, px * window_w));
                        for (origin, &at) in window.iter_mut().zip(pattern) {
                            *origin = corner + at;
                        }
                        px += 1;
                        if px == pooled_w {
                            (py, px) = (py + 1, 0);
                        }
                    }
                    field.multiply_max_requantized(padded, &origins[..count], cells, q, out);
                });
            });
            return;
        }
        // `rows` (each window's pixels together) times the filter, pooled and requantized.
        let finish = |rows: &[u8], out: &mut [u8]| {
            #[cfg(target_arch = "x86_64")]
            if let Some(q) = &fused
                && super::super::common::igemm::ROWS.is_multiple_of(cells)
            {
                p.gemm
                    .weights
                    .multiply_max_requantized(rows, pixels, 0, cells, q, out);
                return;
            }
            i32::with(pixels * c + pooled_w * c, |sums| {
                let (sums, pooled) = sums.split_at_mut(pixels * c);
                p.gemm.weights.multiply_flipped(rows, pixels, 0, sums);
                for (max, window) in pooled.chunks_exact_mut(c).zip(sums.chunks_exact(cells * c)) {
                    max.copy_from_slice(&window[..c]);
                    for pixel in window.chunks_exact(c).skip(1) {
                        for (m, &v) in max.iter_mut().zip(pixel) {
                            *m = (*m).max(v);
                        }
                    }
                }
                p.rescale
                    .requantize(pooled, &offsets.periodic, self.range, out);
            });
        };
        for b in 0..g.batches {
            let image = &input.data[b * image_len..][..image_len];
            let out = &mut output[b * pooled_len..][..pooled_len];
            let mut passes = |padded: Option<(&[u8], (usize, usize))>| {
                for_each_chunk(out, pooled_w * c, work, |py, out_row| {
                    u8::with(pixels * row_len + WORD_SLACK, |rows| {
                        let window = (window_h, window_w);
                        match padded {
                            Some((padded, size)) => {
                                let order = PixelOrder::Windows { py, window };
                                g.gather_padded_in(padded, size, order, row_len, rows);
                            }
                            // Window x's row r: `window_w` pixels side by side in the image.
                            None => {
                                for (i, row) in
                                    rows.chunks_exact_mut(row_len).take(pixels).enumerate()
                                {
                                    let (x, within) = (i / cells, i % cells);
                                    let (r, col) = (within / window_w, within % window_w);
                                    g.gather_field(
                                        image,
                                        (py * window_h + r, x * window_w + col),
                                        p.outside,
                                        |d, s| xor_copy(d, s, p.gemm.flip),
                                        row,
                                    );
                                }
                            }
                        }
                        finish(&rows[..pixels * row_len], out_row);
                    });
                });
            };
            match short_run_padding(g) {
                Some(size) => with_image_bytes(size.0 * size.1 * g.in_c + WORD_SLACK, |padded| {
                    g.fill_padded(image, size, p.outside, p.gemm.flip, padded);
                    passes(Some((padded, size)));
                }),
                None => passes(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use kiln_tflite::{
        Activation, BuiltinOp, BuiltinOptions, Conv2DOptions, Model, Operator, Padding,
        Pool2DOptions, Quantization, Subgraph, Tensor, TensorType,
    };

    use super::super::super::common::testing::seeded;
    use crate::Interpreter;

    fn tensor(name: &str, shape: &[usize], dtype: TensorType, buffer: u32) -> Tensor {
        Tensor::new(name, shape, dtype, buffer)
    }

    fn quantized(mut t: Tensor, scale: Vec<f32>, zero_point: i64) -> Tensor {
        let n = scale.len();
        t.quantization = Some(Quantization {
            scale,
            zero_point: vec![zero_point; n],
            ..Default::default()
        });
        t
    }

    /// CONV_2D → MAX_POOL_2D on random shapes (few and many input channels, strides,
    /// paddings, activations on both, windows of 1 to 9 cells, leftover rows and columns,
    /// batches, int8 and uint8): the fused kernel of a plain invoke gives the bytes of the two
    /// operators run one after the other (an observed invoke).
    #[test]
    fn a_fused_convolution_and_pooling_gives_the_two_operators_bytes() {
        let mut next = seeded(0xf00d);
        let (mut fused, mut sparse) = (0, 0);
        // The last case is large enough (21 M multiply-accumulates) for the kernels to split
        // the work over threads: two threads give one thread's bytes.
        for case in 0..41 {
            let large = case == 40;
            let signed = case % 3 != 0;
            let dtype = if signed {
                TensorType::Int8
            } else {
                TensorType::UInt8
            };
            let batches = 1 + next(2) as usize;
            let (h, w) = (4 + next(20) as usize, 4 + next(20) as usize);
            let in_c = 1 + next(24) as usize;
            let out_c = 1 + next(40) as usize;
            let k = [1, 3][next(2) as usize];
            let (batches, h, w, in_c, out_c, k) = if large {
                (1, 36, 36, 32, 64, 3)
            } else {
                (batches, h, w, in_c, out_c, k)
            };
            let stride = if large {
                1
            } else {
                1 + (case % 5 == 0) as usize
            };
            let same = next(2) == 0;
            let (oh, ow) = if same {
                (h.div_ceil(stride), w.div_ceil(stride))
            } else {
                ((h - k) / stride + 1, (w - k) / stride + 1)
            };
            let window = [(2, 2), (2, 2), (1, 2), (2, 1), (3, 3), (4, 2)][case % 6];
            let window = if large { (2, 2) } else { window };
            if oh < window.0 || ow < window.1 {
                continue;
            }
            let (ph, pw) = (oh / window.0, ow / window.1);
            let zero = |v: u64| if signed { v as i64 - 128 } else { v as i64 };
            let mut model = Model::new("conv then pool");
            let filter_zero = if signed { 0 } else { 100 + next(56) as i64 };
            // Every other case pruned: 85% of the groups of four input channels zero (the
            // sparse kernel's pooling).
            let pruned = case % 2 == 1;
            let mut filter = Vec::with_capacity(out_c * k * k * in_c);
            let mut kept = true;
            for i in 0..out_c * k * k * in_c {
                if (i % in_c).is_multiple_of(4) {
                    kept = !pruned || next(100) < 15;
                }
                let value = if kept { next(255) as i64 - 127 } else { 0 };
                filter.push((value + filter_zero) as u8);
            }
            let bias: Vec<u8> = (0..out_c)
                .flat_map(|_| (next(4000) as i32 - 2000).to_le_bytes())
                .collect();
            let (filter_buffer, bias_buffer) = (model.push_buffer(filter), model.push_buffer(bias));
            let conv = model.intern_opcode(BuiltinOp::CONV_2D, 1);
            let pool = model.intern_opcode(BuiltinOp::MAX_POOL_2D, 1);
            let scales: Vec<f32> = (0..out_c).map(|_| 0.002 + next(50) as f32 * 1e-4).collect();
            let output_zero = zero(next(256));
            let tensors = vec![
                quantized(
                    tensor("input", &[batches, h, w, in_c], dtype, 0),
                    vec![0.05],
                    zero(next(256)),
                ),
                quantized(
                    tensor("filter", &[out_c, k, k, in_c], dtype, filter_buffer),
                    scales.clone(),
                    filter_zero,
                ),
                quantized(
                    tensor("bias", &[out_c], TensorType::Int32, bias_buffer),
                    scales.iter().map(|s| s * 0.05).collect(),
                    0,
                ),
                quantized(
                    tensor("conv", &[batches, oh, ow, out_c], dtype, 0),
                    vec![0.1],
                    output_zero,
                ),
                quantized(
                    tensor("pool", &[batches, ph, pw, out_c], dtype, 0),
                    vec![0.1],
                    output_zero,
                ),
            ];
            let activation =
                |i: u64| [Activation::None, Activation::Relu, Activation::Relu6][i as usize];
            model.subgraphs.push(Subgraph {
                name: Some("main".into()),
                tensors,
                inputs: vec![0],
                outputs: vec![4],
                operators: vec![
                    Operator {
                        opcode_index: conv,
                        inputs: vec![0, 1, 2],
                        outputs: vec![3],
                        options: BuiltinOptions::Conv2D(Conv2DOptions {
                            padding: if same { Padding::Same } else { Padding::Valid },
                            stride_w: stride as i32,
                            stride_h: stride as i32,
                            activation: activation(next(3)),
                            dilation_w: 1,
                            dilation_h: 1,
                        }),
                        custom_options: None,
                        intermediates: vec![],
                    },
                    Operator {
                        opcode_index: pool,
                        inputs: vec![3],
                        outputs: vec![4],
                        options: BuiltinOptions::Pool2D(Pool2DOptions {
                            padding: Padding::Valid,
                            stride_w: window.1 as i32,
                            stride_h: window.0 as i32,
                            filter_w: window.1 as i32,
                            filter_h: window.0 as i32,
                            activation: activation(next(2)),
                        }),
                        custom_options: None,
                        intermediates: vec![],
                    },
                ],
            });
            let mut interpreter = Interpreter::new(model).expect("the model prepares");
            assert_eq!(
                interpreter.multiply_accumulates(),
                batches * oh * ow * out_c * k * k * in_c,
                "case {case}"
            );
            fused += interpreter.fused_operators();
            sparse += interpreter
                .fused_kernels()
                .iter()
                .filter(|k| k.starts_with("SparseMaxPool"))
                .count();
            let input: Vec<u8> = (0..batches * h * w * in_c)
                .map(|_| next(256) as u8)
                .collect();
            interpreter.set_input(0, &input).unwrap();
            interpreter.invoke().unwrap();
            let plain = interpreter.output(0).unwrap().to_vec();
            interpreter.invoke_with(|_, _, _| {}).unwrap();
            let observed = interpreter.output(0).unwrap().to_vec();
            assert_eq!(plain, observed, "case {case}");
            if large {
                assert_eq!(interpreter.fused_operators(), 1);
                interpreter.set_threads(2).unwrap();
                interpreter.invoke().unwrap();
                assert_eq!(plain, interpreter.output(0).unwrap(), "two threads");
                interpreter.invoke_with(|_, _, _| {}).unwrap();
                assert_eq!(
                    plain,
                    interpreter.output(0).unwrap(),
                    "two threads, unfused"
                );
            }
        }
        // With VNNI, 3×3 windows (nine cells: no whole tile of them) run unfused.
        assert!(fused >= 20, "{fused} cases fused");
        #[cfg(target_arch = "x86_64")]
        if super::super::super::common::igemm::Isa::detect()
            == super::super::super::common::igemm::Isa::Vnni
        {
            assert!(sparse >= 6, "{sparse} cases fused with the sparse kernel");
        }
    }
}
