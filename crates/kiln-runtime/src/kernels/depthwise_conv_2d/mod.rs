//! DEPTHWISE_CONV_2D: each input channel convolved with its own `depth_multiplier` filters;
//! filter [1, H, W, C × multiplier]. Float32; int8/uint8 per-channel (axis 3) requantization as
//! TFLite's reference kernels; hybrid (float input, int8 filter, input quantized per batch).

// Elsewhere `VnniDepthwise::new` is always None and the rest goes unused.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
mod vnni;

use kiln_tflite::DepthwiseConv2DOptions;

use super::common::convolution::{Convolution, Geometry, Operands, OperatorOptions};
use super::common::fused_activation::FloatClamp;
use super::common::parallel::for_each_chunk;
use super::common::quant::{quantize_floats, store_q};
#[cfg(target_arch = "x86_64")]
use super::common::requantize::Requantization;
use super::common::requantize::{ChannelRescale, OutputRange};
use super::common::scratch::Scratch;
use super::common::weighted::Arithmetic;
use super::{In, Kernel, OpKernel, Out, Prep};
use crate::error::RuntimeError;
use crate::tensor::{as_f32, as_f32_mut, as_i32};
use kiln_tflite::quant::Rescale;
use vnni::VnniDepthwise;

#[derive(Debug)]
struct DepthwiseConv2D {
    conv: Convolution,
    multiplier: usize,
    /// For a quantized constant filter: its values with the zero point applied, widened once
    /// at prepare, and the vectorised per-pixel requantization.
    quantized: Option<PreparedQuantized>,
}

#[derive(Debug)]
struct PreparedQuantized {
    filter: Vec<Wrapping>,
    /// The filter for the VNNI kernel, when the layer and the CPU suit it.
    vnni: Option<VnniDepthwise>,
    /// A constant bias per channel, padded to 16 (what the VNNI kernel's epilogue adds),
    /// made once instead of per invoke.
    padded_bias: Option<Vec<i32>>,
    rescale: ChannelRescale,
    range: OutputRange,
}

fn prepare_quantized(
    conv: &Convolution,
    filter: Option<&[u8]>,
    bias: Option<&[u8]>,
) -> Option<PreparedQuantized> {
    let Arithmetic::Quantized(q) = &conv.arithmetic else {
        return None;
    };
    let Rescale::FixedPoint(multipliers) = &q.rescale else {
        return None;
    };
    let g = &conv.geometry;
    let filter = filter.filter(|f| f.len() == g.filter_h * g.filter_w * g.out_c)?;
    if multipliers.len() != g.out_c {
        return None;
    }
    let filter = widen(filter, q.filter_signed, q.filter_offset);
    let vnni = VnniDepthwise::new(g, as_i32s(&filter), q.input_signed, q.input_offset);
    // Read byte-wise: a constant's bytes need not be aligned at prepare.
    let padded_bias = bias.filter(|b| b.len() == g.out_c * 4).map(|b| {
        let mut bias: Vec<i32> = b
            .chunks_exact(4)
            .map(|v| i32::from_le_bytes([v[0], v[1], v[2], v[3]]))
            .collect();
        bias.resize(g.out_c.div_ceil(16) * 16, 0);
        bias
    });
    let rescale = ChannelRescale::new(multipliers);
    // The VNNI kernel (taken whenever it and the wide rescale exist) reads only its own
    // layout: the widened filter would be memory no path reads.
    let filter = if vnni.is_some() && rescale.wide().is_some() {
        Vec::new()
    } else {
        filter
    };
    Some(PreparedQuantized {
        filter,
        vnni,
        padded_bias,
        rescale,
        range: OutputRange::of(q),
    })
}

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    let (operands, options) = Operands::new::<DepthwiseConv2DOptions>(prep)?;
    let depth_multiplier = options.depth_multiplier;
    let options = options.conv();
    let filter = operands.filter;
    let [one, filter_h, filter_w, out_c] = operands.filter_shape;
    if one != 1 {
        return Err(prep.bad(&format!(
            "filter '{}' must have shape [1, H, W, C], has {:?}",
            filter.name, filter.shape
        )));
    }
    let geometry = operands.geometry(prep, (filter_h, filter_w), out_c, &options)?;
    let in_c = geometry.in_c;
    if in_c == 0 || !out_c.is_multiple_of(in_c) {
        return Err(prep.bad(&format!(
            "filter channels {out_c} are not a multiple of the input's {in_c}"
        )));
    }
    let multiplier = out_c / in_c;
    // depth_multiplier in the options is informational in TFLite (older files set 0).
    if depth_multiplier > 0 && depth_multiplier as usize != multiplier {
        return Err(prep.bad(&format!(
            "depth_multiplier {depth_multiplier} disagrees with the filter ({out_c} channels for {in_c} inputs)"
        )));
    }
    // TFLite's hybrid depthwise always quantizes its input asymmetrically.
    let conv = operands.prepare(prep, geometry, &options, 3, true)?;
    let quantized = prepare_quantized(&conv, prep.input_value(1), prep.input_value(2));
    Ok(Box::new(DepthwiseConv2D {
        conv,
        multiplier,
        quantized,
    }))
}

/// Output values (pixels × channels) a tap accumulates per inner loop: long enough to
/// vectorise when the layer has few channels.
const RUN: usize = 64;

impl DepthwiseConv2D {
    /// For every output row: `acc` (output width × output channels) receives, per output
    /// pixel and channel, Σ over the filter taps inside the image of input[channel] ×
    /// filter[tap, out channel], taps in (ky, kx) order as TFLite sums them; then
    /// `finish(batch, first pixel index of the row, acc)`.
    ///
    /// A tap's contributions to a row are one contiguous run of input values times the tap's
    /// weights repeated per pixel: long loops instead of one short loop per pixel and tap.
    /// For that, an image with a column stride or a depth multiplier is first rearranged so
    /// that each input row holds, per stride phase, the columns that phase reads, with each
    /// input channel repeated for its output channels.
    fn convolve<T, F>(&self, input: &[T], filter: &[T], finish: F)
    where
        T: Copy + Default + std::ops::Add<Output = T> + std::ops::Mul<Output = T>,
        F: FnMut(usize, usize, &[T]),
    {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
        {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { self.convolve_avx512(input, filter, finish) };
        }
        self.convolve_rows(input, filter, finish);
    }

    /// The same loops compiled for AVX-512 (16 lanes where the baseline has 4). No float
    /// operation is fused, so the bits are the baseline's.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn convolve_avx512<T, F>(&self, input: &[T], filter: &[T], finish: F)
    where
        T: Copy + Default + std::ops::Add<Output = T> + std::ops::Mul<Output = T>,
        F: FnMut(usize, usize, &[T]),
    {
        self.convolve_rows(input, filter, finish);
    }

    #[inline(always)]
    fn convolve_rows<T, F>(&self, input: &[T], filter: &[T], mut finish: F)
    where
        T: Copy + Default + std::ops::Add<Output = T> + std::ops::Mul<Output = T>,
        F: FnMut(usize, usize, &[T]),
    {
        let g = &self.conv.geometry;
        let (in_c, out_c, multiplier) = (g.in_c, g.out_c, self.multiplier);
        if out_c == 0 {
            return;
        }
        let stride = g.stride.1;
        let taps = g.filter_h * g.filter_w;
        let run_pixels = (RUN / out_c).max(1);
        let mut repeated: Vec<T> = Vec::with_capacity(taps * run_pixels * out_c);
        for tap in 0..taps {
            for _ in 0..run_pixels {
                repeated.extend_from_slice(&filter[tap * out_c..][..out_c]);
            }
        }
        // Columns per stride phase, and each input row's length in the arranged image (phases
        // past the image's width read nothing).
        let phases = stride.min(g.in_w).max(1);
        let phase_w = g.in_w.div_ceil(stride);
        let row_len = phases * phase_w * out_c;
        let direct = stride == 1 && multiplier == 1;
        let image_len = g.in_h * g.in_w * in_c;
        // A huge depth multiplier over a wide input (a malformed file) could ask for far more
        // than the tensors hold: such layers take the per-pixel loops instead.
        let bounded = g.in_h * row_len <= 4 * (image_len + g.out_h * g.out_w * out_c) + 4096;
        if !direct && !bounded {
            return self.convolve_pixels(input, filter, finish);
        }
        let mut arranged = if direct {
            Vec::new()
        } else {
            vec![T::default(); g.in_h * row_len]
        };
        let mut acc = vec![T::default(); g.out_w * out_c];
        for b in 0..g.batches {
            let image = &input[b * image_len..][..image_len];
            let rows: &[T] = if direct {
                image
            } else {
                for iy in 0..g.in_h {
                    for ix in 0..g.in_w {
                        let (phase, column) = (ix % stride, ix / stride);
                        let dst = &mut arranged[iy * row_len..]
                            [(phase * phase_w + column) * out_c..][..out_c];
                        let src = &image[(iy * g.in_w + ix) * in_c..][..in_c];
                        for (d, &v) in dst.chunks_exact_mut(multiplier).zip(src) {
                            d.fill(v);
                        }
                    }
                }
                &arranged
            };
            for oy in 0..g.out_h {
                acc.fill(T::default());
                for ky in 0..g.filter_h {
                    let Some(iy) = (oy * g.stride.0 + ky * g.dilation.0)
                        .checked_sub(g.pad.0)
                        .filter(|&iy| iy < g.in_h)
                    else {
                        continue;
                    };
                    let row = &rows[iy * row_len..][..row_len];
                    for kx in 0..g.filter_w {
                        let tap = ky * g.filter_w + kx;
                        let (lo, hi) = g.valid_columns(kx);
                        if lo >= hi {
                            continue;
                        }
                        // Output column ox reads input column ox·stride + offset: phase
                        // `offset mod stride`, column ox + ⌊offset / stride⌋ within it.
                        let offset = (kx * g.dilation.1) as isize - g.pad.1 as isize;
                        let phase = offset.rem_euclid(stride as isize) as usize;
                        let shift = offset.div_euclid(stride as isize);
                        let phase_row = &row[phase * phase_w * out_c..][..phase_w * out_c];
                        let weights = &repeated[tap * run_pixels * out_c..][..run_pixels * out_c];
                        for start in (lo..hi).step_by(run_pixels) {
                            let n = (hi - start).min(run_pixels) * out_c;
                            let column = (start as isize + shift) as usize;
                            let x = &phase_row[column * out_c..][..n];
                            let a = &mut acc[start * out_c..][..n];
                            for ((a, &xv), &wv) in a.iter_mut().zip(x).zip(weights) {
                                *a = *a + xv * wv;
                            }
                        }
                    }
                }
                finish(b, (b * g.out_h + oy) * g.out_w, &acc);
            }
        }
    }
}

impl DepthwiseConv2D {
    /// The plain loops, one output pixel and tap at a time, for layers too large to rearrange.
    fn convolve_pixels<T, F>(&self, input: &[T], filter: &[T], mut finish: F)
    where
        T: Copy + Default + std::ops::Add<Output = T> + std::ops::Mul<Output = T>,
        F: FnMut(usize, usize, &[T]),
    {
        let g = &self.conv.geometry;
        let (in_c, out_c) = (g.in_c, g.out_c);
        let mut acc = vec![T::default(); g.out_w * out_c];
        for b in 0..g.batches {
            for oy in 0..g.out_h {
                acc.fill(T::default());
                for (ox, acc) in acc.chunks_exact_mut(out_c).enumerate() {
                    for ky in 0..g.filter_h {
                        for kx in 0..g.filter_w {
                            let Some((iy, ix)) = g.tap(oy, ox, ky, kx) else {
                                continue;
                            };
                            let x = &input[((b * g.in_h + iy) * g.in_w + ix) * in_c..][..in_c];
                            let w = &filter[(ky * g.filter_w + kx) * out_c..][..out_c];
                            for (oc, (a, &wv)) in acc.iter_mut().zip(w).enumerate() {
                                *a = *a + x[oc / self.multiplier] * wv;
                            }
                        }
                    }
                }
                finish(b, (b * g.out_h + oy) * g.out_w, &acc);
            }
        }
    }
}

/// Output row `oy` of batch `b` of a float depthwise layer (one filter per channel) in
/// AVX-512: 16 channels of an output pixel stay in a register while every tap inside the
/// image adds its product (fused multiply-add), then the bias and the clamp; inside the image
/// four pixels at once, each weight loaded once for them. As in LiteRT's optimized kernels and
/// unlike the reference, a product is not rounded before it is added (within float tolerance
/// of it).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn float_row_avx512(
    g: &Geometry,
    (b, oy): (usize, usize),
    input: &[f32],
    filter: &[f32],
    bias: Option<&[f32]>,
    clamp: FloatClamp,
    output: &mut [f32],
) {
    use std::arch::x86_64::*;
    let c = g.out_c;
    assert!(
        g.in_c == c
            && input.len() >= g.batches * g.in_h * g.in_w * c
            && filter.len() >= g.filter_h * g.filter_w * c
            && b < g.batches
            && output.len() >= g.out_w * c
            && bias.is_none_or(|b| b.len() >= c),
        "prepared shapes"
    );
    let taps = g.filter_h * g.filter_w;
    assert!(taps <= MAX_TAPS, "checked by the caller");
    let (min, max) = (_mm512_set1_ps(clamp.min), _mm512_set1_ps(clamp.max));
    let RowTaps {
        rows,
        columns,
        inside,
    } = RowTaps::new(g, b, oy);
    let mut ox = 0;
    while ox < g.out_w {
        // A group of PIXELS pixels inside the image, else one pixel; the channel
        // blocks innermost, so the pixels' input rows stay in L1 across them.
        let group = if ox >= inside.0 && ox + PIXELS <= inside.1 {
            PIXELS
        } else {
            1
        };
        for c0 in (0..c).step_by(16) {
            let mask: __mmask16 = ((1u32 << (c - c0).min(16)) - 1) as __mmask16;
            // SAFETY: every load and store is masked to the channels c0..c of a tap, a
            // pixel or the bias the assertion above keeps in bounds.
            unsafe {
                let bias = bias.map_or(_mm512_setzero_ps(), |b| {
                    _mm512_maskz_loadu_ps(mask, b.as_ptr().add(c0))
                });
                let finish =
                    |acc: __m512| _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(acc, bias), min), max);
                let weight =
                    |tap: usize| _mm512_maskz_loadu_ps(mask, filter.as_ptr().add(tap * c + c0));
                if group == PIXELS {
                    // Independent accumulators hide the fused multiply-add's latency,
                    // and each weight is loaded once for the group.
                    let mut acc = [_mm512_setzero_ps(); PIXELS];
                    for &(ky, row) in &rows {
                        for kx in 0..g.filter_w {
                            let w = weight(ky * g.filter_w + kx);
                            let first = ox * g.stride.1 + kx * g.dilation.1 - g.pad.1;
                            for (p, acc) in acc.iter_mut().enumerate() {
                                let ix = first + p * g.stride.1;
                                let x = _mm512_maskz_loadu_ps(
                                    mask,
                                    input.as_ptr().add(row + ix * c + c0),
                                );
                                *acc = _mm512_fmadd_ps(x, w, *acc);
                            }
                        }
                    }
                    for (p, acc) in acc.into_iter().enumerate() {
                        _mm512_mask_storeu_ps(
                            output.as_mut_ptr().add((ox + p) * c + c0),
                            mask,
                            finish(acc),
                        );
                    }
                    continue;
                }
                let mut acc = _mm512_setzero_ps();
                for &(ky, row) in &rows {
                    for (kx, &(lo, hi)) in columns.iter().enumerate() {
                        if ox < lo || ox >= hi {
                            continue;
                        }
                        let ix = ox * g.stride.1 + kx * g.dilation.1 - g.pad.1;
                        let x = _mm512_maskz_loadu_ps(mask, input.as_ptr().add(row + ix * c + c0));
                        acc = _mm512_fmadd_ps(x, weight(ky * g.filter_w + kx), acc);
                    }
                }
                _mm512_mask_storeu_ps(output.as_mut_ptr().add(ox * c + c0), mask, finish(acc));
            }
        }
        ox += group;
    }
}

/// Where the taps of output row `oy` of batch `b` land: the filter rows inside the image as
/// (ky, index of that input row's first element), each filter column's output columns inside
/// the image (`Geometry::valid_columns`), and the output columns whose every tap is inside
/// (empty unless every filter row is).
struct RowTaps {
    rows: Vec<(usize, usize)>,
    columns: Vec<(usize, usize)>,
    inside: (usize, usize),
}

impl RowTaps {
    fn new(g: &Geometry, b: usize, oy: usize) -> Self {
        let rows: Vec<(usize, usize)> = (0..g.filter_h)
            .filter_map(|ky| {
                let iy = (oy * g.stride.0 + ky * g.dilation.0).checked_sub(g.pad.0)?;
                (iy < g.in_h).then_some((ky, (b * g.in_h + iy) * g.in_w * g.in_c))
            })
            .collect();
        let columns: Vec<(usize, usize)> = (0..g.filter_w).map(|kx| g.valid_columns(kx)).collect();
        let inside = if rows.len() == g.filter_h {
            columns
                .iter()
                .fold((0, g.out_w), |(lo, hi), &(l, h)| (lo.max(l), hi.min(h)))
        } else {
            (0, 0)
        };
        Self {
            rows,
            columns,
            inside,
        }
    }
}

/// Output rows the VNNI kernel computes in one go, reusing each padded input row.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const BAND: usize = 8;

/// Output pixels the AVX-512 depthwise kernels compute together inside the image.
const PIXELS: usize = 4;

/// Taps the quantized AVX-512 kernel keeps per channel block (7×7 filters and smaller).
const MAX_TAPS: usize = 49;

/// One output row of a quantized depthwise layer (one filter per channel) in AVX-512: 16
/// channels of a pixel summed in i32 lanes across every tap inside the image. Offset inputs
/// and weights fit in i16, so each product is one `vpmaddwd` against the weight's low half
/// (high half zero); inside the image the input offset's share, offset · Σ weights, is added
/// once per pixel. Integer sums are exact, so the bits are the reference's.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn quantized_row_avx512(
    g: &Geometry,
    (b, oy): (usize, usize),
    input: &[u8],
    (signed, input_offset): (bool, i32),
    filter: &[i32],
    acc: &mut [i32],
) {
    use std::arch::x86_64::*;
    let c = g.out_c;
    let taps = g.filter_h * g.filter_w;
    assert!(
        g.in_c == c
            && taps <= MAX_TAPS
            && input.len() >= g.batches * g.in_h * g.in_w * c
            && filter.len() >= taps * c
            && acc.len() >= g.out_w * c,
        "prepared shapes"
    );
    let offset = _mm512_set1_epi32(input_offset);
    let low_halves = _mm512_set1_epi32(0xffff);
    let RowTaps {
        rows,
        columns,
        inside,
    } = RowTaps::new(g, b, oy);
    let widen = |bytes: __m128i| {
        if signed {
            _mm512_cvtepi8_epi32(bytes)
        } else {
            _mm512_cvtepu8_epi32(bytes)
        }
    };
    for c0 in (0..c).step_by(16) {
        let mask: __mmask16 = ((1u32 << (c - c0).min(16)) - 1) as __mmask16;
        let mut weights = [_mm512_setzero_si512(); MAX_TAPS];
        let mut weight_sum = _mm512_setzero_si512();
        for (tap, w) in weights.iter_mut().enumerate().take(taps) {
            // SAFETY: masked to the channels c0..c of a tap within the filter (asserted).
            let full = unsafe { _mm512_maskz_loadu_epi32(mask, filter.as_ptr().add(tap * c + c0)) };
            weight_sum = _mm512_add_epi32(weight_sum, full);
            *w = _mm512_and_si512(full, low_halves);
        }
        let offset_share = _mm512_mullo_epi32(offset, weight_sum);
        let mut ox = 0;
        while ox < g.out_w {
            // SAFETY: every load and store is masked to the channels c0..c of a pixel the
            // assertion above keeps in bounds.
            unsafe {
                if ox >= inside.0 && ox + PIXELS <= inside.1 {
                    let mut sums = [offset_share; PIXELS];
                    for &(ky, row) in &rows {
                        for kx in 0..g.filter_w {
                            let w = weights[ky * g.filter_w + kx];
                            let first = ox * g.stride.1 + kx * g.dilation.1 - g.pad.1;
                            for (p, sum) in sums.iter_mut().enumerate() {
                                let ix = first + p * g.stride.1;
                                let bytes = _mm_maskz_loadu_epi8(
                                    mask,
                                    input.as_ptr().add(row + ix * c + c0).cast(),
                                );
                                *sum = _mm512_add_epi32(*sum, _mm512_madd_epi16(widen(bytes), w));
                            }
                        }
                    }
                    for (p, sum) in sums.into_iter().enumerate() {
                        _mm512_mask_storeu_epi32(
                            acc.as_mut_ptr().add((ox + p) * c + c0),
                            mask,
                            sum,
                        );
                    }
                    ox += PIXELS;
                    continue;
                }
                let mut sum = _mm512_setzero_si512();
                for &(ky, row) in &rows {
                    for (kx, &(lo, hi)) in columns.iter().enumerate() {
                        if ox < lo || ox >= hi {
                            continue;
                        }
                        let ix = ox * g.stride.1 + kx * g.dilation.1 - g.pad.1;
                        let bytes = _mm_maskz_loadu_epi8(
                            mask,
                            input.as_ptr().add(row + ix * c + c0).cast(),
                        );
                        let x = _mm512_add_epi32(widen(bytes), offset);
                        sum = _mm512_add_epi32(
                            sum,
                            _mm512_madd_epi16(x, weights[ky * g.filter_w + kx]),
                        );
                    }
                }
                _mm512_mask_storeu_epi32(acc.as_mut_ptr().add(ox * c + c0), mask, sum);
                ox += 1;
            }
        }
    }
}

/// Wrapping i32 so the integer paths share `convolve` with floats without overflow panics
/// (TFLite's int32 accumulators wrap too).
#[derive(Clone, Copy, Debug, Default)]
#[repr(transparent)]
struct Wrapping(i32);

/// The accumulators as plain i32s (no copy).
fn as_i32s(values: &[Wrapping]) -> &[i32] {
    // SAFETY: `Wrapping` is `repr(transparent)` over i32: same size, alignment and validity.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<i32>(), values.len()) }
}

impl std::ops::Add for Wrapping {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        Self(self.0.wrapping_add(other.0))
    }
}

impl std::ops::Mul for Wrapping {
    type Output = Self;
    fn mul(self, other: Self) -> Self {
        Self(self.0.wrapping_mul(other.0))
    }
}

/// 8-bit values (int8 when `signed`, else uint8) plus `offset`, as accumulator operands.
fn widen(data: &[u8], signed: bool, offset: i32) -> Vec<Wrapping> {
    // Two plain loops rather than a branch per value: each vectorises.
    if signed {
        data.iter()
            .map(|&v| Wrapping(i32::from(v as i8) + offset))
            .collect()
    } else {
        data.iter()
            .map(|&v| Wrapping(i32::from(v) + offset))
            .collect()
    }
}

impl OpKernel for DepthwiseConv2D {
    fn multiply_accumulates(&self) -> usize {
        let g = &self.conv.geometry;
        g.multiply_accumulates(g.filter_h * g.filter_w)
    }

    fn prepared_bytes(&self) -> usize {
        self.quantized.as_ref().map_or(0, |q| {
            q.filter.len() * size_of::<Wrapping>()
                + q.vnni.as_ref().map_or(0, VnniDepthwise::bytes)
                + q.padded_bias
                    .as_ref()
                    .map_or(0, |b| b.len() * size_of::<i32>())
        })
    }

    fn eval(&self, inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]) {
        let (Some(input), Some(filter)) = (&inputs[0], &inputs[1]) else {
            unreachable!("prepared")
        };
        let bias = self.conv.bias(inputs);
        let out_c = self.conv.geometry.out_c;
        match &self.conv.arithmetic {
            #[cfg(target_arch = "x86_64")]
            Arithmetic::Float { clamp }
                if self.multiplier == 1
                    && self.conv.geometry.filter_h * self.conv.geometry.filter_w <= MAX_TAPS
                    && std::arch::is_x86_feature_detected!("avx512f") =>
            {
                let g = &self.conv.geometry;
                let (input, filter, bias) =
                    (as_f32(input.data), as_f32(filter.data), bias.map(as_f32));
                let row = g.out_w * g.out_c;
                let output = &mut as_f32_mut(outputs[0].data)[..g.batches * g.out_h * row];
                let work = output.len() * g.filter_h * g.filter_w;
                // Output rows are independent: the invoke's threads share them.
                for_each_chunk(output, row, work, |i, out| {
                    // SAFETY: the CPU has AVX-512F.
                    unsafe {
                        float_row_avx512(
                            g,
                            (i / g.out_h, i % g.out_h),
                            input,
                            filter,
                            bias,
                            *clamp,
                            out,
                        )
                    };
                });
            }
            Arithmetic::Float { clamp } => {
                let bias = bias.map(as_f32);
                let output = as_f32_mut(outputs[0].data);
                self.convolve(as_f32(input.data), as_f32(filter.data), |_, first, acc| {
                    let out = &mut output[first * out_c..][..acc.len()];
                    for (out, acc) in out.chunks_exact_mut(out_c).zip(acc.chunks_exact(out_c)) {
                        match bias {
                            Some(bias) => {
                                for ((o, &a), &b) in out.iter_mut().zip(acc).zip(bias) {
                                    *o = clamp.apply(a + b);
                                }
                            }
                            None => {
                                for (o, &a) in out.iter_mut().zip(acc) {
                                    *o = clamp.apply(a);
                                }
                            }
                        }
                    }
                });
            }
            Arithmetic::Quantized(q) if self.quantized.is_some() => {
                let Some(prepared) = &self.quantized else {
                    unreachable!("guarded")
                };
                let per_channel = || {
                    bias.map(as_i32)
                        .map_or_else(|| vec![0; out_c], <[i32]>::to_vec)
                };
                let output = &mut *outputs[0].data;
                let g = &self.conv.geometry;
                #[cfg(target_arch = "x86_64")]
                if let (Some(vnni), Some(wide)) = (&prepared.vnni, prepared.rescale.wide()) {
                    let made;
                    let offsets = match &prepared.padded_bias {
                        Some(bias) => bias,
                        None => {
                            let mut padded = per_channel();
                            padded.resize(out_c.div_ceil(16) * 16, 0);
                            made = padded;
                            &made
                        }
                    };
                    let q = Requantization {
                        wide,
                        offsets,
                        range: prepared.range,
                    };
                    let row = g.out_w * out_c;
                    let output = &mut output[..g.batches * g.out_h * row];
                    let work = output.len() * g.filter_h * g.filter_w;
                    // Bands of rows share their quads; the invoke's threads share the bands.
                    for_each_chunk(output, BAND * row, work, |i, out| {
                        u8::with(vnni.scratch_len(), |scratch| {
                            vnni.convolve_rows(
                                g,
                                input.data,
                                (i * BAND, out.len() / row),
                                &q,
                                scratch,
                                out,
                            )
                        })
                    });
                    return;
                }
                // One requantization call per output row.
                let bias = prepared.rescale.periodic(&per_channel());
                #[cfg(target_arch = "x86_64")]
                if self.multiplier == 1
                    && self.conv.geometry.filter_h * self.conv.geometry.filter_w <= MAX_TAPS
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                {
                    let g = &self.conv.geometry;
                    let row = g.out_w * out_c;
                    let output = &mut output[..g.batches * g.out_h * row];
                    let work = output.len() * g.filter_h * g.filter_w;
                    // Output rows are independent: the invoke's threads share them.
                    for_each_chunk(output, row, work, |i, out| {
                        i32::with(row, |acc| {
                            // SAFETY: the CPU has AVX-512F, BW and VL.
                            unsafe {
                                quantized_row_avx512(
                                    g,
                                    (i / g.out_h, i % g.out_h),
                                    input.data,
                                    (q.input_signed, q.input_offset),
                                    as_i32s(&prepared.filter),
                                    acc,
                                )
                            };
                            prepared.rescale.requantize(acc, &bias, prepared.range, out);
                        });
                    });
                    return;
                }
                let x = widen(input.data, q.input_signed, q.input_offset);
                self.convolve(&x, &prepared.filter, |_, first, acc| {
                    prepared.rescale.requantize(
                        as_i32s(acc),
                        &bias,
                        prepared.range,
                        &mut output[first * out_c..][..acc.len()],
                    );
                });
            }
            Arithmetic::Quantized(q) => {
                let bias = bias.map(as_i32);
                let output = &mut *outputs[0].data;
                let x = widen(input.data, q.input_signed, q.input_offset);
                let w = widen(filter.data, q.filter_signed, q.filter_offset);
                self.convolve(&x, &w, |_, first, acc| {
                    for (pixel, acc) in acc.chunks_exact(out_c).enumerate() {
                        for (oc, a) in acc.iter().enumerate() {
                            store_q(
                                output,
                                (first + pixel) * out_c + oc,
                                q.finish(a.0, bias.map_or(0, |b| b[oc]), oc),
                            );
                        }
                    }
                });
            }
            Arithmetic::Hybrid {
                filter_scales,
                clamp,
                ..
            } => {
                let g = &self.conv.geometry;
                let image_len = g.in_h * g.in_w * g.in_c;
                let input = as_f32(input.data);
                // Each batch quantized asymmetrically on its own, as TFLite's hybrid kernel does.
                let mut quantized = vec![0i32; input.len()];
                let mut input_scales = vec![0.0f32; g.batches];
                for b in 0..g.batches {
                    let q = &mut quantized[b * image_len..][..image_len];
                    let (scale, zero_point) =
                        quantize_floats(&input[b * image_len..][..image_len], true, q);
                    q.iter_mut().for_each(|v| *v -= zero_point);
                    input_scales[b] = scale;
                }
                let x: Vec<Wrapping> = quantized.into_iter().map(Wrapping).collect();
                let w = widen(filter.data, true, 0);
                let bias = bias.map(as_f32);
                let output = as_f32_mut(outputs[0].data);
                self.convolve(&x, &w, |b, first, acc| {
                    let out = &mut output[first * out_c..][..acc.len()];
                    let input_scale = input_scales[b];
                    // Zipped slices, the bias chosen outside the loop: it vectorises.
                    for (out, acc) in out.chunks_exact_mut(out_c).zip(acc.chunks_exact(out_c)) {
                        let scaled = out.iter_mut().zip(acc).zip(filter_scales);
                        match bias {
                            Some(bias) => {
                                for (((o, a), &fs), &bv) in scaled.zip(bias) {
                                    *o = clamp.apply(a.0 as f32 * input_scale * fs + bv);
                                }
                            }
                            None => {
                                for ((o, a), &fs) in scaled {
                                    *o = clamp.apply(a.0 as f32 * input_scale * fs + 0.0);
                                }
                            }
                        }
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use kiln_tflite::{Activation, BuiltinOptions, Padding, TensorType};

    use super::super::common::testing::{
        Tensor, constant, per_channel, quantized, run, seeded, tensor,
    };
    use super::*;

    fn floats(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// Float depthwise (the AVX-512 kernel where the CPU has it, the row loops otherwise)
    /// against the definition, on random shapes, strides, dilations, paddings, multipliers
    /// and channel counts around the 16-lane blocks.
    #[test]
    fn float_depthwise_matches_the_definition() {
        let mut next = seeded(0xd3b7);
        for case in 0..40 {
            let (in_h, in_w) = (1 + next(9) as usize, 1 + next(9) as usize);
            let in_c = [1, 3, 16, 17, 33][case % 5];
            let multiplier = if case % 4 == 3 { 2 } else { 1 };
            let out_c = in_c * multiplier;
            let (kh, kw) = (1 + next(3) as usize, 1 + next(3) as usize);
            let stride = 1 + next(2) as usize;
            let dilation = if case % 6 == 5 { 2 } else { 1 };
            let padding = if next(2) == 0 {
                Padding::Same
            } else {
                Padding::Valid
            };
            let (span_h, span_w) = ((kh - 1) * dilation + 1, (kw - 1) * dilation + 1);
            if padding == Padding::Valid && (in_h < span_h || in_w < span_w) {
                continue;
            }
            let (out_h, pad_h) = kiln_tflite::window(padding, in_h, kh, stride, dilation);
            let (out_w, pad_w) = kiln_tflite::window(padding, in_w, kw, stride, dilation);
            let mut float = || next(2001) as f32 / 1000.0 - 1.0;
            let image: Vec<f32> = (0..in_h * in_w * in_c).map(|_| float()).collect();
            let filter: Vec<f32> = (0..kh * kw * out_c).map(|_| float()).collect();
            let bias: Vec<f32> = (0..out_c).map(|_| float()).collect();
            let activation = [Activation::None, Activation::Relu6][case % 2];
            let options = BuiltinOptions::DepthwiseConv2D(DepthwiseConv2DOptions {
                padding,
                stride_w: stride as i32,
                stride_h: stride as i32,
                depth_multiplier: multiplier as i32,
                activation,
                dilation_w: dilation as i32,
                dilation_h: dilation as i32,
            });
            let got = run(
                prepare,
                options,
                vec![
                    Some(tensor(TensorType::Float32, &[1, in_h, in_w, in_c])),
                    Some(constant(
                        TensorType::Float32,
                        &[1, kh, kw, out_c],
                        floats(&filter),
                    )),
                    Some(constant(TensorType::Float32, &[out_c], floats(&bias))),
                ],
                tensor(TensorType::Float32, &[1]),
                &[&floats(&image)],
            )
            .unwrap();
            assert_eq!(got.shape, [1, out_h, out_w, out_c], "case {case}");
            for oy in 0..out_h {
                for ox in 0..out_w {
                    for oc in 0..out_c {
                        let mut sum = 0.0f64;
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * stride + ky * dilation) as isize - pad_h as isize;
                                let ix = (ox * stride + kx * dilation) as isize - pad_w as isize;
                                if iy < 0 || ix < 0 || iy >= in_h as isize || ix >= in_w as isize {
                                    continue;
                                }
                                let x = image
                                    [(iy as usize * in_w + ix as usize) * in_c + oc / multiplier];
                                sum +=
                                    f64::from(x) * f64::from(filter[(ky * kw + kx) * out_c + oc]);
                            }
                        }
                        let mut want = (sum + f64::from(bias[oc])) as f32;
                        if activation == Activation::Relu6 {
                            want = want.clamp(0.0, 6.0);
                        }
                        let at = ((oy * out_w + ox) * out_c + oc) * 4;
                        let b = &got.data[at..at + 4];
                        let value = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                        assert!(
                            (value - want).abs() <= 1e-5 * (1.0 + want.abs()),
                            "case {case} ({oy}, {ox}, {oc}): {value} vs {want}"
                        );
                    }
                }
            }
        }
    }

    /// The prepared int8 path (AVX-512 rows where the CPU has them) against the generic one
    /// (the same filter fed at run time, which nothing prepares): equal bytes on random
    /// geometries, zero points, both 8-bit types and channel counts around the 16-lane
    /// blocks.
    #[test]
    fn the_prepared_int8_path_equals_the_generic_one() {
        let mut next = seeded(0x1d3b7);
        for case in 0..40 {
            let signed = case % 3 != 0;
            let dtype = if signed {
                TensorType::Int8
            } else {
                TensorType::UInt8
            };
            let (in_h, in_w) = (1 + next(9) as usize, 1 + next(9) as usize);
            let in_c = [1, 4, 16, 17, 40][case % 5];
            let (kh, kw) = (1 + next(3) as usize, 1 + next(3) as usize);
            let stride = 1 + next(2) as i32;
            let dilation = if case % 6 == 5 { 2 } else { 1 };
            let padding = if next(2) == 0 {
                Padding::Same
            } else {
                Padding::Valid
            };
            let (span_h, span_w) = (
                (kh - 1) * dilation as usize + 1,
                (kw - 1) * dilation as usize + 1,
            );
            if padding == Padding::Valid && (in_h < span_h || in_w < span_w) {
                continue;
            }
            let input_zero = if signed {
                next(256) as i64 - 128
            } else {
                next(256) as i64
            };
            let filter_zero = if signed { 0 } else { 100 + next(56) as i64 };
            let filter: Vec<u8> = (0..kh * kw * in_c).map(|_| next(256) as u8).collect();
            let image: Vec<u8> = (0..in_h * in_w * in_c).map(|_| next(256) as u8).collect();
            let bias: Vec<u8> = (0..in_c)
                .flat_map(|_| (next(4000) as i32 - 2000).to_le_bytes())
                .collect();
            let scales: Vec<f32> = (0..in_c).map(|_| 0.001 + next(100) as f32 * 1e-4).collect();
            let options = BuiltinOptions::DepthwiseConv2D(DepthwiseConv2DOptions {
                padding,
                stride_w: stride,
                stride_h: stride,
                depth_multiplier: 1,
                activation: [Activation::None, Activation::Relu][case % 2],
                dilation_w: dilation,
                dilation_h: dilation,
            });
            let input = || quantized(tensor(dtype, &[1, in_h, in_w, in_c]), 0.05, input_zero);
            let bias_tensor = || {
                per_channel(
                    constant(TensorType::Int32, &[in_c], bias.clone()),
                    scales.iter().map(|s| s * 0.05).collect(),
                    0,
                )
            };
            let output = || quantized(tensor(dtype, &[1]), 0.1, if signed { -5 } else { 120 });
            let shape = [1, kh, kw, in_c];
            // Depthwise filters are quantized along their last axis.
            let along_channels = |t: Tensor| {
                let mut t = per_channel(t, scales.clone(), filter_zero);
                if let Some(q) = t.info.quantization.as_mut() {
                    q.quantized_dimension = 3;
                }
                t
            };
            let prepared = run(
                prepare,
                options.clone(),
                vec![
                    Some(input()),
                    Some(along_channels(constant(dtype, &shape, filter.clone()))),
                    Some(bias_tensor()),
                ],
                output(),
                &[&image],
            )
            .unwrap();
            let generic = run(
                prepare,
                options,
                vec![
                    Some(input()),
                    Some(along_channels(tensor(dtype, &shape))),
                    Some(bias_tensor()),
                ],
                output(),
                &[&image, &filter],
            )
            .unwrap();
            assert_eq!(prepared.shape, generic.shape, "case {case}");
            assert_eq!(prepared.data, generic.data, "case {case}");
        }
    }

    /// A layer large enough to split its rows across threads gives the same bits on one
    /// thread and on three, float and int8.
    #[test]
    fn threads_give_the_same_bits() {
        use super::super::common::parallel::{MIN_PARALLEL_WORK, with_pool};
        let (side, c) = (96, 64);
        assert!(side * side * c * 9 >= MIN_PARALLEL_WORK);
        let mut next = seeded(5);
        let options = BuiltinOptions::DepthwiseConv2D(DepthwiseConv2DOptions {
            padding: Padding::Same,
            stride_w: 1,
            stride_h: 1,
            depth_multiplier: 1,
            activation: Activation::Relu6,
            dilation_w: 1,
            dilation_h: 1,
        });
        let image: Vec<u8> = (0..side * side * c * 4).map(|_| next(256) as u8).collect();
        let float_image = floats(
            &(0..side * side * c)
                .map(|_| next(200) as f32 / 100.0 - 1.0)
                .collect::<Vec<_>>(),
        );
        let float_filter = floats(
            &(0..9 * c)
                .map(|_| next(200) as f32 / 100.0 - 1.0)
                .collect::<Vec<_>>(),
        );
        let int8_filter: Vec<u8> = (0..9 * c)
            .map(|_| (next(255) as i32 - 127) as i8 as u8)
            .collect();
        let float_run = || {
            run(
                prepare,
                options.clone(),
                vec![
                    Some(tensor(TensorType::Float32, &[1, side, side, c])),
                    Some(constant(
                        TensorType::Float32,
                        &[1, 3, 3, c],
                        float_filter.clone(),
                    )),
                    None,
                ],
                tensor(TensorType::Float32, &[1]),
                &[&float_image],
            )
            .unwrap()
            .data
        };
        let int8_run = || {
            let mut filter = per_channel(
                constant(TensorType::Int8, &[1, 3, 3, c], int8_filter.clone()),
                vec![0.003; c],
                0,
            );
            if let Some(q) = filter.info.quantization.as_mut() {
                q.quantized_dimension = 3;
            }
            run(
                prepare,
                options.clone(),
                vec![
                    Some(quantized(
                        tensor(TensorType::Int8, &[1, side, side, c]),
                        0.05,
                        7,
                    )),
                    Some(filter),
                    None,
                ],
                quantized(tensor(TensorType::Int8, &[1]), 0.1, -3),
                &[&image[..side * side * c]],
            )
            .unwrap()
            .data
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        assert_eq!(float_run(), with_pool(Some(&pool), float_run));
        assert_eq!(int8_run(), with_pool(Some(&pool), int8_run));
    }
}
