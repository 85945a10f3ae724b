//! CONV_2D: NHWC input, OHWI filter (grouped when the filter holds fewer input channels than
//! the input), optional bias, SAME/VALID padding, strides, dilation and a fused activation.
//! Three arithmetics: float32; int8/uint8 with per-channel or per-tensor filter scales and an
//! int32 bias, requantized as TFLite's reference kernels do; and hybrid (dynamic range:
//! float input and output, int8 filter, the input quantized per batch on the fly).

use std::sync::Arc;

use kiln_tflite::Conv2DOptions;

use super::common::convolution::{
    Convolution, Geometry, Operands, OperatorOptions, WORD_SLACK, xor_copy,
};
use super::common::dot::{dot, dot_i16};
use super::common::field_gemm::{FieldFilter, MAX_ORIGINS};
use super::common::fused_activation::FloatClamp;
use super::common::igemm::{Isa, PackedWeights, QuantizedGemm};
use super::common::parallel::for_each_chunk;
use super::common::quant::{load_q, quantize_floats, store_q};
#[cfg(target_arch = "x86_64")]
use super::common::requantize::Requantization;
use super::common::requantize::{ChannelRescale, OutputRange};
use super::common::scratch::{Scratch, with_image_bytes};
use super::common::sgemm::{Epilogue, PackedFloatWeights};
use super::common::weighted::Arithmetic;
use super::{In, Kernel, OpKernel, Out, Prep, TilingMaxPool};
use crate::error::RuntimeError;
use crate::tensor::{as_f32, as_f32_mut, as_i32};
use kiln_tflite::quant::Rescale;

/// Filter rows shorter than this (filter width × input channels) are gathered into a patch.
const MIN_ROW_RUN: usize = 32;

#[derive(Debug)]
struct Conv2D {
    conv: Convolution,
    /// Input channels each filter sees (the input's channels over the number of groups).
    group_c: usize,
    /// The filter packed for a GEMM, when it is a constant of the file and the convolution is
    /// ungrouped.
    packed: Option<Packed>,
}

mod pooled;
#[cfg(target_arch = "x86_64")]
mod sparse_vnni;

#[derive(Debug)]
enum Packed {
    Float(PackedFloatWeights),
    /// Shared with the kernel that folds a following max pooling in ([`pooled`]).
    Quantized(Arc<PackedFilter>),
    /// A pruned int8 filter whose zeros the kernel skips.
    #[cfg(target_arch = "x86_64")]
    Sparse(Arc<sparse_vnni::SparseFilter>),
    /// A dynamic-range filter (int8, symmetric) for the integer GEMM over the input
    /// quantized at run time.
    Hybrid(PackedWeights),
}

/// A quantized convolution as a GEMM: each output pixel's receptive field becomes a row of
/// bytes (input + `shift`, so 0..=255), multiplied by the packed filter; the shift and the
/// input zero point come back through `correction`.
#[derive(Debug)]
struct PackedFilter {
    gemm: QuantizedGemm,
    /// The shifted byte of a tap outside the image (the input zero point, which contributes 0).
    outside: u8,
    rescale: ChannelRescale,
    range: OutputRange,
    /// With a constant bias: what each channel's sum gains besides the GEMM (correction and
    /// bias), made once instead of per invoke.
    offsets: Option<ChannelOffsets>,
    /// The implicit GEMM over the image padded to this size, where the CPU runs it (VNNI and
    /// the in-register requantization) and the convolution is not a 1×1 one that multiplies
    /// the image in place.
    field: Option<(FieldFilter, (usize, usize))>,
}

impl PackedFilter {
    /// The channels' offsets: made at prepare for a constant bias, else from `bias` into
    /// `made`.
    fn offsets<'a>(
        &'a self,
        bias: Option<&[i32]>,
        out_c: usize,
        made: &'a mut Option<ChannelOffsets>,
    ) -> &'a ChannelOffsets {
        match &self.offsets {
            Some(offsets) => offsets,
            None => made.insert(ChannelOffsets::new(&self.gemm, &self.rescale, bias, out_c)),
        }
    }

    /// `f(padded, out)` for each batch: its image padded to `size` (shifted bytes, the byte of
    /// a zero input around it, [`WORD_SLACK`] past it) and its `out_len` output bytes.
    fn per_padded_image(
        &self,
        g: &Geometry,
        size: (usize, usize),
        (input, output): (&[u8], &mut [u8]),
        out_len: usize,
        f: impl Fn(&[u8], &mut [u8]),
    ) {
        let image_len = g.in_h * g.in_w * g.in_c;
        for b in 0..g.batches {
            let image = &input[b * image_len..][..image_len];
            let out = &mut output[b * out_len..][..out_len];
            with_image_bytes(size.0 * size.1 * g.in_c + WORD_SLACK, |padded| {
                g.fill_padded(image, size, self.outside, self.gemm.flip, padded);
                f(padded, out);
            });
        }
    }

    /// With VNNI and AVX-512, the requantization the GEMM runs in its registers.
    #[cfg(target_arch = "x86_64")]
    fn in_register<'a>(
        &'a self,
        offsets: &'a ChannelOffsets,
        range: OutputRange,
    ) -> Option<Requantization<'a>> {
        self.gemm
            .weights
            .fuses()
            .then(|| self.rescale.wide())
            .flatten()
            .map(|wide| Requantization {
                wide,
                offsets: &offsets.padded,
                range,
            })
    }
}

/// A channel's sum's correction plus bias, laid out for the fused epilogue (padded to 16)
/// and for the row requantization (periodic).
#[derive(Debug)]
struct ChannelOffsets {
    padded: Vec<i32>,
    periodic: Vec<i32>,
}

impl ChannelOffsets {
    fn new(
        gemm: &QuantizedGemm,
        rescale: &ChannelRescale,
        bias: Option<&[i32]>,
        out_c: usize,
    ) -> Self {
        let per_channel: Vec<i32> = (0..out_c)
            .map(|oc| gemm.correction[oc].wrapping_add(bias.map_or(0, |b| b[oc])))
            .collect();
        let mut padded = per_channel.clone();
        padded.resize(out_c.div_ceil(16) * 16, 0);
        Self {
            periodic: rescale.periodic(&per_channel),
            padded,
        }
    }
}

/// Runs of a few bytes (few input channels: a network's first layer) cost more in bounds
/// logic than in copying: such images are padded once per invoke (this size), and every run
/// is then a few whole-word copies.
fn short_run_padding(g: &Geometry) -> Option<(usize, usize)> {
    (g.filter_w * g.in_c < MIN_ROW_RUN)
        .then(|| padded_image(g))
        .flatten()
}

/// The padded image's size, unless it would pass four times the image plus 64 KiB (a
/// malformed stride or dilation); the implicit GEMM ([`FieldFilter`]) always reads one.
fn padded_image(g: &Geometry) -> Option<(usize, usize)> {
    let image_len = g.in_h * g.in_w * g.in_c;
    g.padded_size(4 * image_len + (64 << 10))
}

/// Output pixels gathered per GEMM call (a multiple of the microkernel's rows).
const PIXELS_PER_PASS: usize = 64;

/// Output pixels per pass for passes whose working set is `bytes_per_pixel` per pixel
/// (gathered activations, integer sums): as many as keep it within L1, from 8 (a full
/// microkernel tile) to [`PIXELS_PER_PASS`].
fn pass_pixels(bytes_per_pixel: usize) -> usize {
    const L1_BUDGET: usize = 32 << 10;
    (L1_BUDGET / bytes_per_pixel.max(1)).clamp(8, PIXELS_PER_PASS) / 8 * 8
}

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    let (operands, options) = Operands::new::<Conv2DOptions>(prep)?;
    let options = options.conv();
    let filter = operands.filter;
    let [out_c, filter_h, filter_w, group_c] = operands.filter_shape;
    let geometry = operands.geometry(prep, (filter_h, filter_w), out_c, &options)?;
    if group_c == 0
        || !geometry.in_c.is_multiple_of(group_c)
        || !out_c.is_multiple_of(geometry.in_c / group_c)
    {
        return Err(prep.bad(&format!(
            "filter '{}' has {group_c} input channels, which does not divide the input's {} into groups of {out_c} outputs",
            filter.name, geometry.in_c
        )));
    }
    // TFLite quantizes hybrid inputs asymmetrically for per-channel filters only.
    let hybrid_asymmetric = filter
        .quantization
        .as_ref()
        .is_some_and(|q| q.scale.len() > 1);
    let conv = operands.prepare(prep, geometry, &options, 0, hybrid_asymmetric)?;
    let packed = if group_c != conv.geometry.in_c {
        None
    } else if let Arithmetic::Float { .. } = conv.arithmetic {
        pack_float_filter(&conv, prep.input_value(1)).map(Packed::Float)
    } else if let Arithmetic::Hybrid { .. } = conv.arithmetic {
        pack_hybrid_filter(&conv, prep.input_value(1)).map(Packed::Hybrid)
    } else {
        let (filter, bias) = (prep.input_value(1), prep.input_value(2));
        let packed = pack_filter(&conv, group_c, filter, bias);
        let sparse = sparse_filter(&conv, group_c, filter, bias);
        choose_quantized(&conv.geometry, packed, sparse)
    };
    Ok(Box::new(Conv2D {
        conv,
        group_c,
        packed,
    }))
}

/// A constant float filter ([out_c, h, w, in_c]) packed for the float GEMM.
fn pack_float_filter(conv: &Convolution, filter: Option<&[u8]>) -> Option<PackedFloatWeights> {
    let g = &conv.geometry;
    let k = g.filter_h * g.filter_w * g.in_c;
    let filter = filter?;
    if filter.len() != g.out_c * k * size_of::<f32>() {
        return None;
    }
    let weight = |i: usize| {
        let b = &filter[i * 4..][..4];
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    };
    Some(PackedFloatWeights::pack(g.out_c, k, |c, kk| {
        weight(c * k + kk)
    }))
}

/// A constant int8 dynamic-range filter ([out_c, h, w, in_c]) packed for the integer GEMM.
fn pack_hybrid_filter(conv: &Convolution, filter: Option<&[u8]>) -> Option<PackedWeights> {
    let g = &conv.geometry;
    let k = g.filter_h * g.filter_w * g.in_c;
    let filter = filter.filter(|f| f.len() == g.out_c * k)?;
    Some(PackedWeights::pack(Isa::detect(), g.out_c, k, |c, kk| {
        filter[c * k + kk] as i8
    }))
}

/// The cheaper of the two kernels that skip a pruned filter's zeros: the implicit GEMM, which
/// skips a group of four inputs where all 16 channels of a register are zero, and the sparse
/// kernel with output pixels in the lanes, which skips each channel's own zero groups but
/// leaves lanes idle past a row's end. Both counted in `vpdpbusd`s.
fn choose_quantized(
    g: &Geometry,
    packed: Option<PackedFilter>,
    sparse: Option<SparseKernel>,
) -> Option<Packed> {
    #[cfg(target_arch = "x86_64")]
    if let Some(sparse) = sparse {
        let pixels = g.out_h * g.out_w;
        let field = packed
            .as_ref()
            .and_then(|p| p.field.as_ref())
            .map(|(f, _)| f.entries() * pixels);
        if field.is_none_or(|field| sparse.multiplies(g) < field) {
            return Some(Packed::Sparse(Arc::new(sparse)));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (g, sparse);
    packed.map(|p| Packed::Quantized(Arc::new(p)))
}

#[cfg(target_arch = "x86_64")]
type SparseKernel = sparse_vnni::SparseFilter;
#[cfg(not(target_arch = "x86_64"))]
type SparseKernel = ();

/// A pruned int8 filter as lists of its non-zero weights, where the sparse kernel runs it.
#[cfg(target_arch = "x86_64")]
fn sparse_filter(
    conv: &Convolution,
    group_c: usize,
    filter: Option<&[u8]>,
    bias: Option<&[u8]>,
) -> Option<SparseKernel> {
    let Arithmetic::Quantized(q) = &conv.arithmetic else {
        return None;
    };
    let Rescale::FixedPoint(multipliers) = &q.rescale else {
        return None;
    };
    if group_c != conv.geometry.in_c {
        return None;
    }
    sparse_vnni::SparseFilter::new(q, &conv.geometry, multipliers, filter?, bias)
}

#[cfg(not(target_arch = "x86_64"))]
fn sparse_filter(
    _: &Convolution,
    _: usize,
    _: Option<&[u8]>,
    _: Option<&[u8]>,
) -> Option<SparseKernel> {
    None
}

/// The filter packed for the integer GEMM: for quantized, ungrouped convolutions whose filter
/// is a constant with values (after its zero point) in i8's range — every int8 model; legacy
/// uint8 filters with a zero point keep the direct path.
fn pack_filter(
    conv: &Convolution,
    group_c: usize,
    filter: Option<&[u8]>,
    bias: Option<&[u8]>,
) -> Option<PackedFilter> {
    let Arithmetic::Quantized(q) = &conv.arithmetic else {
        return None;
    };
    let g = &conv.geometry;
    let Rescale::FixedPoint(multipliers) = &q.rescale else {
        return None;
    };
    if multipliers.len() != g.out_c {
        return None;
    }
    let k = g.filter_h * g.filter_w * group_c;
    if group_c != g.in_c {
        return None;
    }
    let filter = filter?;
    let gemm = QuantizedGemm::new(q, g.out_c, k, filter)?;
    let outside = u8::try_from(QuantizedGemm::shift(q) - q.input_offset).ok()?;
    let rescale = ChannelRescale::new(multipliers);
    let in_place = gemm.weights.row_len() == g.in_c && g.pointwise();
    let field = (Isa::detect() == Isa::Vnni && rescale.wide().is_some() && !in_place)
        .then(|| padded_image(g))
        .flatten()
        .and_then(|size| {
            // QuantizedGemm::new checked that every value fits i8.
            let value = |i: usize| (load_q(filter, q.filter_signed, i) + q.filter_offset) as i8;
            FieldFilter::new(g, size.1, true, |o, kk| value(o * k + kk)).map(|f| (f, size))
        });
    // Every product then goes through the lists (with VNNI and the wide rescale the
    // requantization is always in registers; a pooling the lists cannot fold is not fused).
    let mut gemm = gemm;
    if field.is_some() {
        gemm.weights.release_weights();
    }
    // A constant bias (every converter file) fixes the offsets now; a file that feeds the
    // bias at run time gets them per invoke.
    let offsets = bias.filter(|b| b.len() == g.out_c * 4).map(|b| {
        // Read byte-wise: a constant's bytes need not be aligned at prepare.
        let bias: Vec<i32> = b
            .chunks_exact(4)
            .map(|v| i32::from_le_bytes([v[0], v[1], v[2], v[3]]))
            .collect();
        ChannelOffsets::new(&gemm, &rescale, Some(&bias), g.out_c)
    });
    Some(PackedFilter {
        gemm,
        outside,
        rescale,
        range: OutputRange::of(q),
        offsets,
        field,
    })
}

impl Conv2D {
    /// The float convolution through the packed filter. A 1×1 convolution with stride 1
    /// multiplies the image in place; others gather a pass of receptive fields (as many as fit L1) into
    /// rows first.
    fn eval_float_packed(
        &self,
        weights: &PackedFloatWeights,
        input: &[f32],
        bias: Option<&[f32]>,
        output: &mut [f32],
        clamp: FloatClamp,
    ) {
        let g = &self.conv.geometry;
        let k = g.filter_h * g.filter_w * g.in_c;
        let pixels = g.out_h * g.out_w;
        let image_len = g.in_h * g.in_w * g.in_c;
        let epilogue = Epilogue {
            bias,
            min: clamp.min,
            max: clamp.max,
        };
        let pointwise = g.pointwise();
        let work = pixels * g.out_c * k;
        let per_pass = if pointwise {
            PIXELS_PER_PASS
        } else {
            pass_pixels(k * size_of::<f32>())
        };
        for b in 0..g.batches {
            let image = &input[b * image_len..][..image_len];
            let out = &mut output[b * pixels * g.out_c..][..pixels * g.out_c];
            // Each pass of output pixels is independent: the invoke's threads share them.
            for_each_chunk(out, per_pass * g.out_c, work, |pass, out| {
                let start = pass * per_pass;
                let count = out.len() / g.out_c;
                if pointwise {
                    let rows = &image[start * g.in_c..][..count * g.in_c];
                    weights.multiply(rows, g.in_c, count, epilogue, out, g.out_c);
                    return;
                }
                f32::with(count * k, |rows| {
                    for (i, row) in rows.chunks_exact_mut(k).enumerate() {
                        let (oy, ox) = ((start + i) / g.out_w, (start + i) % g.out_w);
                        g.gather_field(image, (oy, ox), 0.0, |d, s| d.copy_from_slice(s), row);
                    }
                    weights.multiply(rows, k, count, epilogue, out, g.out_c);
                });
            });
        }
    }

    /// The dynamic-range convolution through the packed filter: each batch's image quantized
    /// to int8 (TFLite's scale and zero point), shifted to unsigned bytes, then the same
    /// gather and GEMM as the int8 path; each sum is exact, so the floats are the direct
    /// path's.
    #[allow(clippy::too_many_arguments)]
    fn eval_hybrid_packed(
        &self,
        weights: &PackedWeights,
        input: &[f32],
        bias: Option<&[f32]>,
        output: &mut [f32],
        filter_scales: &[f32],
        asymmetric: bool,
        clamp: FloatClamp,
    ) {
        let g = &self.conv.geometry;
        let row_len = weights.row_len();
        let pixels = g.out_h * g.out_w;
        let image_len = g.in_h * g.in_w * g.in_c;
        let work = pixels * g.out_c * row_len;
        let per_pass = pass_pixels(row_len + g.out_c * size_of::<i32>());
        let mut quantized = vec![0i32; image_len];
        let mut shifted = vec![0u8; image_len];
        for b in 0..g.batches {
            let (scale, zero_point) = quantize_floats(
                &input[b * image_len..][..image_len],
                asymmetric,
                &mut quantized,
            );
            // int8 values + 128 as bytes; Σ (x + 128)·w − (128 + zero point)·Σw = Σ (x − zp)·w.
            for (s, &q) in shifted.iter_mut().zip(&quantized) {
                *s = (q + 128) as u8;
            }
            let correction: Vec<i32> = weights
                .sums
                .iter()
                .map(|&sum| (-128 - zero_point).wrapping_mul(sum))
                .collect();
            // A tap outside the image is the float 0.0, which quantizes to the zero point.
            let outside = (zero_point + 128) as u8;
            let out = &mut output[b * pixels * g.out_c..][..pixels * g.out_c];
            for_each_chunk(out, per_pass * g.out_c, work, |pass, out| {
                let start = pass * per_pass;
                let count = out.len() / g.out_c;
                u8::with(count * row_len, |rows| {
                    i32::with(count * g.out_c, |sums| {
                        for (i, row) in rows.chunks_exact_mut(row_len).enumerate() {
                            let (oy, ox) = ((start + i) / g.out_w, (start + i) % g.out_w);
                            g.gather_field(
                                &shifted,
                                (oy, ox),
                                outside,
                                |d, s| d.copy_from_slice(s),
                                row,
                            );
                        }
                        weights.multiply(rows, count, sums);
                        for (out, sums) in out
                            .chunks_exact_mut(g.out_c)
                            .zip(sums.chunks_exact(g.out_c))
                        {
                            for (oc, (o, &sum)) in out.iter_mut().zip(sums).enumerate() {
                                let acc = sum.wrapping_add(correction[oc]);
                                let value = acc as f32 * filter_scales[oc] * scale
                                    + bias.map_or(0.0, |b| b[oc]);
                                *o = clamp.apply(value);
                            }
                        }
                    })
                });
            });
        }
    }

    /// The quantized convolution through the packed filter: receptive fields gathered into
    /// rows of shifted bytes, a pass of output pixels (as many as keep the rows and sums in L1) per GEMM call.
    fn eval_packed(&self, p: &PackedFilter, input: &[u8], bias: Option<&[i32]>, output: &mut [u8]) {
        let g = &self.conv.geometry;
        let row_len = p.gemm.weights.row_len();
        let pixels = g.out_h * g.out_w;
        let image_len = g.in_h * g.in_w * g.in_c;
        // What each channel's sum gains besides the GEMM: the shift's and zero point's
        // correction, and the bias (made at prepare for a constant bias).
        let mut made = None;
        let offsets = p.offsets(bias, g.out_c, &mut made);
        // With VNNI and AVX-512 the sums are requantized in the GEMM's registers.
        #[cfg(target_arch = "x86_64")]
        let fused = p.in_register(offsets, p.range);
        // The row requantization's offsets (used only where the GEMM does not requantize
        // itself).
        let offsets = &offsets.periodic;
        // `rows` (bytes read ^ `flip`) times the filter, requantized into `out`.
        let finish = |rows: &[u8], count: usize, flip: u8, out: &mut [u8]| {
            #[cfg(target_arch = "x86_64")]
            if let Some(q) = &fused {
                p.gemm
                    .weights
                    .multiply_requantized(rows, count, flip, q, out);
                return;
            }
            i32::with(count * g.out_c, |sums| {
                p.gemm.weights.multiply_flipped(rows, count, flip, sums);
                p.rescale.requantize(sums, offsets, p.range, out);
            });
        };
        let work = pixels * g.out_c * row_len;
        #[cfg(target_arch = "x86_64")]
        if let (Some((field, size)), Some(q)) = (&p.field, &fused) {
            let (row_step, column_step) = field.steps(g);
            let images = (input, output);
            p.per_padded_image(g, *size, images, pixels * g.out_c, |padded, out| {
                for_each_chunk(out, MAX_ORIGINS * g.out_c, work, |pass, out| {
                    let start = pass * MAX_ORIGINS;
                    let mut origins = [0; MAX_ORIGINS];
                    let count = out.len() / g.out_c;
                    let (mut oy, mut ox) = (start / g.out_w, start % g.out_w);
                    let mut row_origin = oy * row_step;
                    for origin in &mut origins[..count] {
                        *origin = row_origin + ox * column_step;
                        ox += 1;
                        if ox == g.out_w {
                            (oy, ox) = (oy + 1, 0);
                            row_origin += row_step;
                        }
                    }
                    field.multiply_max_requantized(padded, &origins[..count], 1, q, out);
                });
            });
            return;
        }
        let in_place = row_len == g.in_c && g.pointwise();
        let per_pass = pass_pixels(row_len + g.out_c * size_of::<i32>());
        let padded_size = (!in_place).then(|| short_run_padding(g)).flatten();
        for b in 0..g.batches {
            let image = &input[b * image_len..][..image_len];
            let out = &mut output[b * pixels * g.out_c..][..pixels * g.out_c];
            // Each pass of output pixels is independent: the invoke's threads share them.
            let mut passes = |padded: Option<(&[u8], (usize, usize))>| {
                for_each_chunk(out, per_pass * g.out_c, work, |pass, out| {
                    let start = pass * per_pass;
                    let count = out.len() / g.out_c;
                    if in_place {
                        // A 1×1 convolution whose channels fill whole rows: the image's pixels
                        // are the GEMM's rows, their sign bits flipped as the microkernel reads.
                        finish(
                            &image[start * g.in_c..][..count * g.in_c],
                            count,
                            p.gemm.flip,
                            out,
                        );
                        return;
                    }
                    // The reused buffer holds stale bytes: the padding past `k` in each row
                    // meets zero weights.
                    u8::with(count * row_len + WORD_SLACK, |rows| {
                        if let Some((padded, size)) = padded {
                            g.gather_padded(padded, size, start, row_len, rows);
                        } else {
                            for (i, row) in rows.chunks_exact_mut(row_len).enumerate() {
                                let (oy, ox) = ((start + i) / g.out_w, (start + i) % g.out_w);
                                g.gather_field(
                                    image,
                                    (oy, ox),
                                    p.outside,
                                    |d, s| xor_copy(d, s, p.gemm.flip),
                                    row,
                                );
                            }
                        }
                        finish(&rows[..count * row_len], count, 0, out);
                    });
                });
            };
            match padded_size {
                Some(size) => with_image_bytes(size.0 * size.1 * g.in_c + WORD_SLACK, |padded| {
                    g.fill_padded(image, size, p.outside, p.gemm.flip, padded);
                    passes(Some((padded, size)));
                }),
                None => passes(None),
            }
        }
    }

    fn groups(&self) -> usize {
        self.conv.geometry.in_c / self.group_c
    }

    /// Gathers the receptive field of output pixel (oy, ox) for the channels of `group` into
    /// `patch`, in the filter's (h, w, c) order; taps outside the image contribute zero.
    fn gather<T: Copy + Default>(
        &self,
        image: &[T],
        oy: usize,
        ox: usize,
        group: usize,
        patch: &mut [T],
    ) {
        let g = &self.conv.geometry;
        let c = self.group_c;
        for ky in 0..g.filter_h {
            for kx in 0..g.filter_w {
                let dst = &mut patch[(ky * g.filter_w + kx) * c..][..c];
                match g.tap(oy, ox, ky, kx) {
                    Some((iy, ix)) => {
                        dst.copy_from_slice(&image[(iy * g.in_w + ix) * g.in_c + group * c..][..c])
                    }
                    None => dst.fill(T::default()),
                }
            }
        }
    }

    fn eval_float(
        &self,
        input: &[f32],
        filter: &[f32],
        bias: Option<&[f32]>,
        output: &mut [f32],
        clamp: FloatClamp,
    ) {
        let g = &self.conv.geometry;
        let patch_len = g.filter_h * g.filter_w * self.group_c;
        let outputs_per_group = g.out_c / self.groups();
        let mut patch = vec![0.0f32; patch_len];
        let mut out_index = 0;
        for b in 0..g.batches {
            let image = &input[b * g.in_h * g.in_w * g.in_c..][..g.in_h * g.in_w * g.in_c];
            for oy in 0..g.out_h {
                for ox in 0..g.out_w {
                    let mut gathered = usize::MAX;
                    for oc in 0..g.out_c {
                        let group = oc / outputs_per_group;
                        if group != gathered {
                            self.gather(image, oy, ox, group, &mut patch);
                            gathered = group;
                        }
                        let acc = dot(&patch, &filter[oc * patch_len..][..patch_len])
                            + bias.map_or(0.0, |b| b[oc]);
                        output[out_index] = clamp.apply(acc);
                        out_index += 1;
                    }
                }
            }
        }
    }

    /// Integer accumulation shared by the quantized and hybrid paths: `image` holds each batch's
    /// input already offset (input − zero point); `visit(b, oc, acc, index)` finishes an output.
    fn accumulate(
        &self,
        image_of: &dyn Fn(usize) -> Vec<i16>,
        filter: &[u8],
        filter_signed: bool,
        filter_offset: i32,
        mut finish: impl FnMut(usize, usize, i32, usize),
    ) {
        let g = &self.conv.geometry;
        let patch_len = g.filter_h * g.filter_w * self.group_c;
        let outputs_per_group = g.out_c / self.groups();
        let mut patch = vec![0i16; patch_len];
        // Every weight is reused at each output pixel: widen the filter once (offset 8-bit
        // values fit in i16).
        let filter: Vec<i16> = (0..filter.len())
            .map(|i| (load_q(filter, filter_signed, i) + filter_offset) as i16)
            .collect();
        let mut out_index = 0;
        for b in 0..g.batches {
            let image = image_of(b);
            for oy in 0..g.out_h {
                for ox in 0..g.out_w {
                    // A window fully inside the image (one group, no horizontal dilation) reads
                    // each filter row as one contiguous run of the image: no patch copy. Worth
                    // it only for long rows; short ones (few input channels) gather a patch and
                    // take one longer dot per output channel instead of many tiny ones.
                    let inside = self.groups() == 1
                        && g.filter_w * g.in_c >= MIN_ROW_RUN
                        && g.dilation.1 == 1
                        && g.tap(oy, ox, 0, 0).is_some()
                        && g.tap(oy, ox, g.filter_h - 1, g.filter_w - 1).is_some();
                    if inside {
                        let row_len = g.filter_w * g.in_c;
                        for oc in 0..g.out_c {
                            let weights = &filter[oc * patch_len..][..patch_len];
                            let mut acc = 0i32;
                            for ky in 0..g.filter_h {
                                let Some((iy, ix)) = g.tap(oy, ox, ky, 0) else {
                                    continue;
                                };
                                let run = &image[(iy * g.in_w + ix) * g.in_c..][..row_len];
                                acc = acc.wrapping_add(dot_i16(
                                    run,
                                    &weights[ky * row_len..][..row_len],
                                ));
                            }
                            finish(b, oc, acc, out_index);
                            out_index += 1;
                        }
                        continue;
                    }
                    let mut gathered = usize::MAX;
                    for oc in 0..g.out_c {
                        let group = oc / outputs_per_group;
                        if group != gathered {
                            self.gather(&image, oy, ox, group, &mut patch);
                            gathered = group;
                        }
                        let acc = dot_i16(&patch, &filter[oc * patch_len..][..patch_len]);
                        finish(b, oc, acc, out_index);
                        out_index += 1;
                    }
                }
            }
        }
    }
}

impl OpKernel for Conv2D {
    /// A packed filter (every kind) is all eval reads of the filter.
    fn reads_input(&self, i: usize) -> bool {
        !(i == 1 && self.packed.is_some())
    }

    fn multiply_accumulates(&self) -> usize {
        let g = &self.conv.geometry;
        g.multiply_accumulates(g.filter_h * g.filter_w * self.group_c)
    }

    fn fused_with_max_pool(&self, pool: &TilingMaxPool) -> Option<Kernel> {
        #[cfg(target_arch = "x86_64")]
        if let Some(Packed::Sparse(filter)) = &self.packed {
            let kernel = sparse_vnni::SparseMaxPool::new(&self.conv, Arc::clone(filter), *pool)?;
            return Some(Box::new(kernel));
        }
        let (Some(Packed::Quantized(filter)), Arithmetic::Quantized(q)) =
            (&self.packed, &self.conv.arithmetic)
        else {
            return None;
        };
        let kernel = pooled::ConvMaxPool::new(&self.conv, q, Arc::clone(filter), *pool)?;
        Some(Box::new(kernel))
    }

    fn prepared_bytes(&self) -> usize {
        match &self.packed {
            Some(Packed::Float(weights)) => weights.bytes(),
            Some(Packed::Quantized(p)) => {
                p.gemm.bytes()
                    + p.field.as_ref().map_or(0, |(f, _)| f.bytes())
                    + p.offsets.as_ref().map_or(0, |o| {
                        (o.padded.len() + o.periodic.len()) * size_of::<i32>()
                    })
            }
            Some(Packed::Hybrid(weights)) => weights.bytes(),
            #[cfg(target_arch = "x86_64")]
            Some(Packed::Sparse(filter)) => filter.bytes(),
            None => 0,
        }
    }

    fn eval(&self, inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]) {
        let (Some(input), Some(filter)) = (&inputs[0], &inputs[1]) else {
            unreachable!("prepared")
        };
        let bias = self.conv.bias(inputs);
        let g = &self.conv.geometry;
        let image_len = g.in_h * g.in_w * g.in_c;
        match &self.conv.arithmetic {
            Arithmetic::Float { clamp } if matches!(self.packed, Some(Packed::Float(_))) => {
                let Some(Packed::Float(weights)) = &self.packed else {
                    unreachable!("guarded")
                };
                self.eval_float_packed(
                    weights,
                    as_f32(input.data),
                    bias.map(as_f32),
                    as_f32_mut(outputs[0].data),
                    *clamp,
                );
            }
            Arithmetic::Float { clamp } => self.eval_float(
                as_f32(input.data),
                as_f32(filter.data),
                bias.map(as_f32),
                as_f32_mut(outputs[0].data),
                *clamp,
            ),
            Arithmetic::Quantized(_) if matches!(self.packed, Some(Packed::Quantized(_))) => {
                let Some(Packed::Quantized(packed)) = &self.packed else {
                    unreachable!("guarded")
                };
                self.eval_packed(packed, input.data, bias.map(as_i32), &mut *outputs[0].data);
            }
            #[cfg(target_arch = "x86_64")]
            Arithmetic::Quantized(_) if matches!(self.packed, Some(Packed::Sparse(_))) => {
                let Some(Packed::Sparse(sparse)) = &self.packed else {
                    unreachable!("guarded")
                };
                sparse.eval(g, input.data, bias.map(as_i32), &mut *outputs[0].data);
            }
            Arithmetic::Quantized(q) => {
                let data = input.data;
                // Offset 8-bit values (input − zero point) fit in i16.
                let image_of = |b: usize| -> Vec<i16> {
                    (0..image_len)
                        .map(|i| {
                            (load_q(data, q.input_signed, b * image_len + i) + q.input_offset)
                                as i16
                        })
                        .collect()
                };
                let bias = bias.map(as_i32);
                let output = &mut *outputs[0].data;
                self.accumulate(
                    &image_of,
                    filter.data,
                    q.filter_signed,
                    q.filter_offset,
                    |_, oc, acc, index| {
                        store_q(output, index, q.finish(acc, bias.map_or(0, |b| b[oc]), oc));
                    },
                );
            }
            Arithmetic::Hybrid {
                filter_scales,
                asymmetric_inputs,
                clamp,
            } if matches!(self.packed, Some(Packed::Hybrid(_))) => {
                let Some(Packed::Hybrid(weights)) = &self.packed else {
                    unreachable!("guarded")
                };
                self.eval_hybrid_packed(
                    weights,
                    as_f32(input.data),
                    bias.map(as_f32),
                    as_f32_mut(outputs[0].data),
                    filter_scales,
                    *asymmetric_inputs,
                    *clamp,
                );
            }
            Arithmetic::Hybrid {
                filter_scales,
                asymmetric_inputs,
                clamp,
            } => {
                let input = as_f32(input.data);
                // Each batch is quantized on its own, as TFLite's hybrid kernels do.
                let mut input_scales = vec![0.0f32; g.batches];
                let mut images = Vec::with_capacity(g.batches);
                for b in 0..g.batches {
                    let mut q = vec![0i32; image_len];
                    let (scale, zero_point) = quantize_floats(
                        &input[b * image_len..][..image_len],
                        *asymmetric_inputs,
                        &mut q,
                    );
                    input_scales[b] = scale;
                    images.push(
                        q.iter()
                            .map(|&v| (v - zero_point) as i16)
                            .collect::<Vec<i16>>(),
                    );
                }
                let image_of = |b: usize| images[b].clone();
                let bias = bias.map(as_f32);
                let output = as_f32_mut(outputs[0].data);
                self.accumulate(&image_of, filter.data, true, 0, |b, oc, acc, index| {
                    let value = acc as f32 * filter_scales[oc] * input_scales[b]
                        + bias.map_or(0.0, |bias| bias[oc]);
                    output[index] = clamp.apply(value);
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use kiln_tflite::{Activation, BuiltinOptions, Padding, TensorType};

    use super::super::common::parallel::with_pool;
    use super::super::common::testing::{constant, per_channel, quantized, run, seeded, tensor};
    use super::*;

    fn floats(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn conv_options(stride: i32, padding: Padding, activation: Activation) -> BuiltinOptions {
        BuiltinOptions::Conv2D(Conv2DOptions {
            padding,
            stride_w: stride,
            stride_h: stride,
            activation,
            dilation_w: 1,
            dilation_h: 1,
        })
    }

    /// The packed float GEMM (filter a constant) against the direct path (the filter fed at
    /// run time): 3×3 and 1×1 (read in place) filters, strides, paddings and activations.
    #[test]
    fn the_packed_float_path_equals_the_direct_one() {
        let mut next = seeded(0xf10a7);
        for case in 0..24 {
            let (in_h, in_w, in_c) = (
                2 + next(9) as usize,
                2 + next(9) as usize,
                1 + next(12) as usize,
            );
            let out_c = 1 + next(40) as usize;
            let k = if case % 3 == 0 { 1 } else { 3 };
            let stride = if case % 4 == 1 { 2 } else { 1 };
            let padding = if case % 2 == 0 {
                Padding::Same
            } else {
                Padding::Valid
            };
            if padding == Padding::Valid && (in_h < k || in_w < k) {
                continue;
            }
            let activation = [Activation::None, Activation::Relu, Activation::Relu6][case % 3];
            let mut float = || next(2001) as f32 / 500.0 - 2.0;
            let filter: Vec<f32> = (0..out_c * k * k * in_c).map(|_| float()).collect();
            let bias: Vec<f32> = (0..out_c).map(|_| float()).collect();
            let image: Vec<f32> = (0..in_h * in_w * in_c).map(|_| float()).collect();
            let shape = [out_c, k, k, in_c];
            let input = || tensor(TensorType::Float32, &[1, in_h, in_w, in_c]);
            let bias_tensor = || constant(TensorType::Float32, &[out_c], floats(&bias));
            let options = conv_options(stride, padding, activation);
            let packed = run(
                prepare,
                options.clone(),
                vec![
                    Some(input()),
                    Some(constant(TensorType::Float32, &shape, floats(&filter))),
                    Some(bias_tensor()),
                ],
                tensor(TensorType::Float32, &[1]),
                &[&floats(&image)],
            )
            .unwrap();
            let direct = run(
                prepare,
                options,
                vec![
                    Some(input()),
                    Some(tensor(TensorType::Float32, &shape)),
                    Some(bias_tensor()),
                ],
                tensor(TensorType::Float32, &[1]),
                &[&floats(&image), &floats(&filter)],
            )
            .unwrap();
            assert_eq!(packed.shape, direct.shape, "case {case}");
            for (i, (p, d)) in packed
                .data
                .chunks_exact(4)
                .zip(direct.data.chunks_exact(4))
                .enumerate()
            {
                let (p, d) = (
                    f32::from_le_bytes([p[0], p[1], p[2], p[3]]),
                    f32::from_le_bytes([d[0], d[1], d[2], d[3]]),
                );
                assert!(
                    (p - d).abs() <= 1e-4 * (1.0 + d.abs()),
                    "case {case} [{i}]: {p} vs {d}"
                );
            }
        }
    }

    /// Dynamic range (float input, int8 filter): the packed GEMM (filter a constant) and the
    /// direct path (the filter fed at run time) sum the same integers, so the floats are
    /// equal; per-tensor (symmetric inputs) and per-channel (asymmetric) filters, paddings,
    /// strides and 1×1 filters.
    #[test]
    fn the_packed_hybrid_path_equals_the_direct_one() {
        let mut next = seeded(0x4b1d);
        for case in 0..20 {
            let (in_h, in_w, in_c) = (
                2 + next(8) as usize,
                2 + next(8) as usize,
                1 + next(12) as usize,
            );
            let out_c = 1 + next(24) as usize;
            let k = if case % 4 == 0 { 1 } else { 3 };
            let stride = if case % 3 == 1 { 2 } else { 1 };
            let padding = if case % 2 == 0 {
                Padding::Same
            } else {
                Padding::Valid
            };
            if padding == Padding::Valid && (in_h < k || in_w < k) {
                continue;
            }
            let per_channel_scales = case % 2 == 1;
            let filter: Vec<u8> = (0..out_c * k * k * in_c)
                .map(|_| (next(255) as i32 - 127) as i8 as u8)
                .collect();
            let scales: Vec<f32> = if per_channel_scales {
                (0..out_c)
                    .map(|_| 0.001 + next(100) as f32 * 1e-4)
                    .collect()
            } else {
                vec![0.003]
            };
            let image: Vec<f32> = (0..in_h * in_w * in_c)
                .map(|_| next(2001) as f32 / 400.0 - 2.0)
                .collect();
            let bias: Vec<f32> = (0..out_c)
                .map(|_| next(2001) as f32 / 1000.0 - 1.0)
                .collect();
            let shape = [out_c, k, k, in_c];
            let input = || tensor(TensorType::Float32, &[1, in_h, in_w, in_c]);
            let bias_tensor = || constant(TensorType::Float32, &[out_c], floats(&bias));
            let options = conv_options(stride, padding, Activation::Relu);
            let packed = run(
                prepare,
                options.clone(),
                vec![
                    Some(input()),
                    Some(per_channel(
                        constant(TensorType::Int8, &shape, filter.clone()),
                        scales.clone(),
                        0,
                    )),
                    Some(bias_tensor()),
                ],
                tensor(TensorType::Float32, &[1]),
                &[&floats(&image)],
            )
            .unwrap();
            let direct = run(
                prepare,
                options,
                vec![
                    Some(input()),
                    Some(per_channel(
                        tensor(TensorType::Int8, &shape),
                        scales.clone(),
                        0,
                    )),
                    Some(bias_tensor()),
                ],
                tensor(TensorType::Float32, &[1]),
                &[&floats(&image), &filter],
            )
            .unwrap();
            assert_eq!(packed.shape, direct.shape, "case {case}");
            assert_eq!(packed.data, direct.data, "case {case}");
        }
    }

    /// A convolution large enough to split across threads gives the same bits on one thread
    /// and on three, float and int8.
    #[test]
    fn threads_give_the_same_bits() {
        let (in_h, in_w, in_c, out_c) = (48, 48, 16, 48);
        let mut next = seeded(3);
        let bytes = |n: usize, next: &mut dyn FnMut(u64) -> u64| -> Vec<u8> {
            (0..n).map(|_| next(256) as u8).collect()
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let float_filter: Vec<f32> = (0..out_c * 9 * in_c)
            .map(|_| next(200) as f32 / 100.0 - 1.0)
            .collect();
        let float_image: Vec<f32> = (0..in_h * in_w * in_c)
            .map(|_| next(200) as f32 / 100.0 - 1.0)
            .collect();
        let int8_filter: Vec<u8> = (0..out_c * 9 * in_c)
            .map(|_| (next(255) as i32 - 127) as i8 as u8)
            .collect();
        let int8_image = bytes(in_h * in_w * in_c, &mut next);
        assert!(
            in_h * in_w * out_c * 9 * in_c >= super::super::common::parallel::MIN_PARALLEL_WORK
        );
        let float_run = || {
            run(
                prepare,
                conv_options(1, Padding::Same, Activation::Relu),
                vec![
                    Some(tensor(TensorType::Float32, &[1, in_h, in_w, in_c])),
                    Some(constant(
                        TensorType::Float32,
                        &[out_c, 3, 3, in_c],
                        floats(&float_filter),
                    )),
                    None,
                ],
                tensor(TensorType::Float32, &[1]),
                &[&floats(&float_image)],
            )
            .unwrap()
            .data
        };
        let int8_run = || {
            run(
                prepare,
                conv_options(1, Padding::Same, Activation::None),
                vec![
                    Some(quantized(
                        tensor(TensorType::Int8, &[1, in_h, in_w, in_c]),
                        0.05,
                        -3,
                    )),
                    Some(per_channel(
                        constant(TensorType::Int8, &[out_c, 3, 3, in_c], int8_filter.clone()),
                        vec![0.002; out_c],
                        0,
                    )),
                    None,
                ],
                quantized(tensor(TensorType::Int8, &[1]), 0.2, 4),
                &[&int8_image],
            )
            .unwrap()
            .data
        };
        assert_eq!(float_run(), with_pool(Some(&pool), float_run));
        assert_eq!(int8_run(), with_pool(Some(&pool), int8_run));
    }

    /// The packed GEMM path (filter a constant) against the direct path (the same filter fed
    /// at run time, which cannot be packed) on random shapes, strides, dilations, paddings,
    /// batches and both 8-bit types: the bytes must be equal.
    #[test]
    fn the_packed_int8_path_equals_the_direct_one() {
        let mut next = seeded(0x9e37_79b9_7f4a_7c15);
        for case in 0..40 {
            let signed = case % 3 != 0;
            let dtype = if signed {
                TensorType::Int8
            } else {
                TensorType::UInt8
            };
            let batches = 1 + next(2) as usize;
            let (in_h, in_w) = (3 + next(9) as usize, 3 + next(9) as usize);
            // Every seventh case a 1×1 stride-1 convolution over whole rows of channels: the
            // image read in place.
            let pointwise = case % 7 == 3;
            let in_c = if pointwise {
                4 * (1 + next(8) as usize)
            } else {
                1 + next(20) as usize
            };
            let out_c = 1 + next(40) as usize;
            let (kh, kw) = if pointwise {
                (1, 1)
            } else {
                (1 + next(3) as usize, 1 + next(3) as usize)
            };
            let stride = if pointwise { 1 } else { 1 + next(2) as i32 };
            let dilation = if case % 5 == 0 { 2 } else { 1 };
            let padding = if next(2) == 0 {
                Padding::Same
            } else {
                Padding::Valid
            };
            if padding == Padding::Valid
                && (in_h < (kh - 1) * dilation as usize + 1
                    || in_w < (kw - 1) * dilation as usize + 1)
            {
                continue;
            }
            let input_zero = if signed {
                next(256) as i64 - 128
            } else {
                next(256) as i64
            };
            // int8 filters are symmetric; legacy uint8 filters have a zero point near 128.
            let filter_zero = if signed { 0 } else { 100 + next(56) as i64 };
            let filter_bytes: Vec<u8> = (0..out_c * kh * kw * in_c)
                .map(|_| {
                    if signed {
                        (next(255) as i32 - 127) as i8 as u8
                    } else {
                        next(256) as u8
                    }
                })
                .collect();
            let scales: Vec<f32> = (0..out_c)
                .map(|_| 0.001 + next(100) as f32 * 1e-4)
                .collect();
            let bias: Vec<i32> = (0..out_c).map(|_| next(4000) as i32 - 2000).collect();
            let input_bytes: Vec<u8> = (0..batches * in_h * in_w * in_c)
                .map(|_| next(256) as u8)
                .collect();
            let activation = if case % 4 == 0 {
                Activation::Relu
            } else {
                Activation::None
            };
            let case_data = QuantizedCase {
                dtype,
                input_shape: [batches, in_h, in_w, in_c],
                input_zero,
                filter_shape: [out_c, kh, kw, in_c],
                filter: filter_bytes,
                filter_zero,
                scales,
                bias,
                fed_bias: false,
                options: Conv2DOptions {
                    padding,
                    stride_w: stride,
                    stride_h: stride,
                    activation,
                    dilation_w: dilation,
                    dilation_h: dilation,
                },
            };
            let (packed, direct) = case_data.constant_and_fed(&input_bytes);
            assert_eq!(packed.shape, direct.shape, "case {case}");
            assert_eq!(packed.data, direct.data, "case {case}");
        }
    }

    /// A quantized convolution for the tests that hold a kernel chosen for a constant filter
    /// (packed, sparse) to the direct path, which a filter fed at run time takes.
    pub(super) struct QuantizedCase {
        pub(super) dtype: kiln_tflite::TensorType,
        pub(super) input_shape: [usize; 4],
        pub(super) input_zero: i64,
        pub(super) filter_shape: [usize; 4],
        pub(super) filter: Vec<u8>,
        pub(super) filter_zero: i64,
        /// Per output channel (the bias's scales follow from them).
        pub(super) scales: Vec<f32>,
        pub(super) bias: Vec<i32>,
        /// The bias fed at run time rather than a constant.
        pub(super) fed_bias: bool,
        pub(super) options: Conv2DOptions,
    }

    impl QuantizedCase {
        /// The outputs with the filter a constant, then fed at run time.
        pub(super) fn constant_and_fed(
            &self,
            input: &[u8],
        ) -> (
            super::super::common::testing::Run,
            super::super::common::testing::Run,
        ) {
            use super::super::common::testing::{constant, per_channel, quantized, run, tensor};
            use kiln_tflite::{BuiltinOptions, TensorType};
            let signed = self.dtype == TensorType::Int8;
            let out_c = self.filter_shape[0];
            let bias_bytes: Vec<u8> = self.bias.iter().flat_map(|b| b.to_le_bytes()).collect();
            let bias = || {
                let t = if self.fed_bias {
                    tensor(TensorType::Int32, &[out_c])
                } else {
                    constant(TensorType::Int32, &[out_c], bias_bytes.clone())
                };
                per_channel(t, self.scales.iter().map(|s| s * 0.05).collect(), 0)
            };
            let filter = |value: bool| {
                let t = if value {
                    constant(self.dtype, &self.filter_shape, self.filter.clone())
                } else {
                    tensor(self.dtype, &self.filter_shape)
                };
                per_channel(t, self.scales.clone(), self.filter_zero)
            };
            let run_with = |constant_filter: bool| {
                let mut data: Vec<&[u8]> = vec![input];
                if !constant_filter {
                    data.push(&self.filter);
                }
                if self.fed_bias {
                    data.push(&bias_bytes);
                }
                run(
                    prepare,
                    BuiltinOptions::Conv2D(self.options.clone()),
                    vec![
                        Some(quantized(
                            tensor(self.dtype, &self.input_shape),
                            0.05,
                            self.input_zero,
                        )),
                        Some(filter(constant_filter)),
                        Some(bias()),
                    ],
                    quantized(tensor(self.dtype, &[1]), 0.1, if signed { -5 } else { 120 }),
                    &data,
                )
                .expect("the case prepares")
            };
            (run_with(true), run_with(false))
        }
    }
}
