//! CONV_2D int8 with a pruned constant filter, skipping its zeros (AVX-512 VNNI).
//!
//! The dense GEMM puts 16 output channels in a register's lanes, so it can skip a group of
//! four inputs only where all 16 channels' weights are zero, which pruning in blocks along
//! the inputs (TF-MOT's and Kiln's `block = [1, 16]`) almost never leaves. This kernel puts
//! 16 output *pixels* in the lanes instead, as the sparse convolutions of "Fast Sparse
//! ConvNets" (Elsen et al., 2020) do, and walks each output channel's list of non-zero
//! groups of four weights: one `vpdpbusd` per group and 16 pixels, whatever the pattern
//! of the other channels.
//!
//! For that, each group of four input channels of a pixel must lie next to its neighbour
//! pixel's: the image is rewritten once per invoke as rows of four-channel groups
//! (`[row][channel group][column]`, 4 bytes each, padding included), which is the size of the
//! input rather than of its receptive fields; then once per tap column, shifted, so that each
//! load of 16 pixels is one aligned cache line. Stride 1 along the width keeps 16 output
//! pixels on 16 consecutive columns. The sums of 16 channels × 16 pixels are requantized
//! per channel (after the window maxima of a fused max pooling) and transposed in registers
//! to the output's pixel-major layout.
//!
//! The bits are the dense path's: integer sums are exact and wrapping addition is associative
//! (the tests compare every byte).

use std::arch::x86_64::*;

use kiln_tflite::quant::QuantizedMultiplier;

use super::super::common::convolution::Convolution;
use super::super::common::convolution::Geometry;
use super::super::common::igemm::{Isa, QuantizedGemm};
use super::super::common::quant::load_q;
use super::super::common::requantize::{
    ChannelLanes, ChannelRescale, OutputRange, WideConstants, WideRescale,
};
use super::super::common::scratch::with_image_bytes;
use super::super::common::weighted;
use super::super::common::weighted::Quantized;
use super::super::{In, OpKernel, Out, TilingMaxPool};
use crate::tensor::as_i32;
use std::sync::Arc;

/// At most this share of non-zero four-weight groups: above it the dense GEMM, which
/// reads its operands from registers more often, is as fast.
const MAX_DENSITY: f64 = 0.4;

/// Output pixels per register (lanes).
const LANES: usize = 16;

/// A pruned filter as per-channel lists of non-zero four-weight groups.
#[derive(Debug)]
pub struct SparseFilter {
    /// Channel `o`'s groups are `starts[o]..starts[o + 1]` of `offsets` and `weights`.
    starts: Vec<usize>,
    /// Where a group's inputs lie in the grouped image, relative to an output pixel's
    /// receptive field (in 4-byte cells).
    offsets: Vec<usize>,
    /// The group's four weights (i8) as one little-endian i32.
    weights: Vec<i32>,
    /// The largest of `offsets` (bounds a strip's reach).
    largest_offset: usize,
    /// Per channel: the correction of the shifted inputs and the input zero point, plus the
    /// bias when it is a constant; padded to whole registers.
    offsets_per_channel: Vec<i32>,
    /// Whether `offsets_per_channel` includes the bias.
    has_constant_bias: bool,
    /// Each channel's rescale repeated over 16 lanes (channel `o` at `16 * o`).
    rescale: ChannelRescale,
    range: OutputRange,
    /// Whether requantization is non-decreasing in the sum (no negative multiplier, no left
    /// shift) and no sum can wrap: then a following max pooling can take the maxima of the
    /// sums ([`SparseMaxPool`]).
    poolable: bool,
    /// XOR that shifts an input byte into 0..=255, and the shifted byte of a padded tap.
    flip: u8,
    outside: u8,
    /// Four-channel groups per pixel.
    groups: usize,
    /// The grouped image's rows and columns (padding and the last strip's spill included).
    rows: usize,
    columns: usize,
    /// Columns of each tap column's plane: whole strips, so that every strip's load is one
    /// aligned 64-byte line.
    strip_columns: usize,
}

impl SparseFilter {
    /// The filter (`[out_c, h, w, in_c]` bytes of `q`'s filter type) as lists, when this CPU
    /// runs the kernel, the layout suits it (ungrouped, stride 1 along the width) and few
    /// enough groups are non-zero.
    pub fn new(
        q: &Quantized,
        g: &Geometry,
        multipliers: &[QuantizedMultiplier],
        filter: &[u8],
        bias: Option<&[u8]>,
    ) -> Option<Self> {
        if Isa::detect() != Isa::Vnni || g.stride.1 != 1 || g.out_h * g.out_w == 0 {
            return None;
        }
        let (out_c, c) = (g.out_c, g.in_c);
        let k = g.filter_h * g.filter_w * c;
        if filter.len() != out_c * k || multipliers.len() != out_c || c == 0 {
            return None;
        }
        let value = |i: usize| i8::try_from(load_q(filter, q.filter_signed, i) + q.filter_offset);
        let groups = c.div_ceil(4);
        // Columns: the last strip of 16 pixels reads up to 15 past the last output column.
        let columns = g.out_w.div_ceil(LANES) * LANES + (g.filter_w - 1) * g.dilation.1;
        let rows = (g.out_h - 1) * g.stride.0 + (g.filter_h - 1) * g.dilation.0 + 1;
        let row_cells = groups.checked_mul(columns)?;
        let strip_columns = g.out_w.div_ceil(LANES) * LANES;
        let plane_cells = rows.checked_mul(groups)?.checked_mul(strip_columns)?;
        // A malformed geometry must not ask for an unbounded image.
        let cells = rows
            .checked_mul(row_cells)?
            .checked_add(plane_cells.checked_mul(g.filter_w)?)?;
        if cells > (16 << 20) / 4 {
            return None;
        }
        let mut starts = vec![0];
        let (mut offsets, mut weights) = (Vec::new(), Vec::new());
        let mut sums = vec![0i32; out_c];
        for (o, sum) in sums.iter_mut().enumerate() {
            for ky in 0..g.filter_h {
                for kx in 0..g.filter_w {
                    for group in 0..groups {
                        let mut quad = [0i8; 4];
                        for (j, w) in quad.iter_mut().enumerate() {
                            let channel = 4 * group + j;
                            if channel < c {
                                *w = value(o * k + (ky * g.filter_w + kx) * c + channel).ok()?;
                                *sum += i32::from(*w);
                            }
                        }
                        if quad != [0; 4] {
                            // Tap column kx reads its own plane, shifted by kx · dilation.
                            offsets.push(
                                kx * plane_cells
                                    + ky * g.dilation.0 * groups * strip_columns
                                    + group * strip_columns,
                            );
                            weights.push(i32::from_le_bytes(quad.map(|w| w as u8)));
                        }
                    }
                }
            }
            starts.push(weights.len());
        }
        if weights.len() as f64 > MAX_DENSITY * (out_c * g.filter_h * g.filter_w * groups) as f64 {
            return None;
        }
        let rescale = ChannelRescale::new(
            &multipliers
                .iter()
                .flat_map(|&m| std::iter::repeat_n(m, LANES))
                .collect::<Vec<_>>(),
        );
        rescale.wide()?;
        let monotonic = multipliers
            .iter()
            .all(|m| m.multiplier >= 0 && m.shift <= 0);
        let shift = QuantizedGemm::shift(q);
        let bias: Option<Vec<i32>> = bias.filter(|b| b.len() == out_c * 4).map(|b| {
            b.chunks_exact(4)
                .map(|v| i32::from_le_bytes([v[0], v[1], v[2], v[3]]))
                .collect()
        });
        let mut offsets_per_channel: Vec<i32> = sums
            .iter()
            .enumerate()
            .map(|(o, &sum)| {
                (q.input_offset - shift)
                    .wrapping_mul(sum)
                    .wrapping_add(bias.as_ref().map_or(0, |b| b[o]))
            })
            .collect();
        offsets_per_channel.resize(out_c.div_ceil(LANES) * LANES, 0);
        // |Σ (x ^ flip)·w| ≤ (4 · groups per field) · 255 · 128, plus the offsets.
        let largest_offset = offsets_per_channel
            .iter()
            .map(|&o| i64::from(o).abs())
            .max();
        let field = (4 * groups * g.filter_h * g.filter_w) as i64;
        let bounded = largest_offset.is_some_and(|o| field * 255 * 128 + o < i64::from(i32::MAX));
        Some(Self {
            largest_offset: offsets.iter().copied().max().unwrap_or(0),
            starts,
            offsets,
            weights,
            offsets_per_channel,
            has_constant_bias: bias.is_some(),
            poolable: monotonic && bounded,
            rescale,
            range: OutputRange::of(q),
            flip: if q.input_signed { 0x80 } else { 0 },
            outside: u8::try_from(shift - q.input_offset).ok()?,
            groups,
            rows,
            columns,
            strip_columns,
        })
    }

    /// The `vpdpbusd`s of one image: each non-zero group times the strips of 16 columns of
    /// every output row.
    pub fn multiplies(&self, g: &Geometry) -> usize {
        self.weights.len() * g.out_h * g.out_w.div_ceil(LANES)
    }

    /// The bytes the lists and parameters hold.
    pub fn bytes(&self) -> usize {
        self.starts.len() * size_of::<usize>()
            + self.offsets.len() * size_of::<usize>()
            + self.weights.len() * size_of::<i32>()
            + self.offsets_per_channel.len() * size_of::<i32>()
            + self.rescale.bytes()
    }

    /// The convolution of every batch of `input` into `output` (NHWC bytes); `bias` is the
    /// run-time bias when the file does not make it a constant.
    pub fn eval(&self, g: &Geometry, input: &[u8], bias: Option<&[i32]>, output: &mut [u8]) {
        let unpooled = Pooling {
            window: (1, 1),
            out: (g.out_h, g.out_w),
            range: self.range,
        };
        self.eval_pooled(g, input, bias, output, unpooled);
    }

    /// [`Self::eval`] with each window of `pooling` reduced to its maximum before the sums
    /// are requantized (the unpooled convolution: 1×1 windows).
    fn eval_pooled(
        &self,
        g: &Geometry,
        input: &[u8],
        bias: Option<&[i32]>,
        output: &mut [u8],
        pooling: Pooling,
    ) {
        let per_channel: Vec<i32>;
        let offsets = if self.has_constant_bias || bias.is_none() {
            &self.offsets_per_channel
        } else {
            let bias = bias.unwrap_or_default();
            per_channel = self
                .offsets_per_channel
                .iter()
                .enumerate()
                .map(|(o, &v)| v.wrapping_add(bias.get(o).copied().unwrap_or(0)))
                .collect();
            &per_channel
        };
        let image_len = g.in_h * g.in_w * g.in_c;
        let out_len = pooling.out.0 * pooling.out.1 * g.out_c;
        let grouped_len = 4 * self.rows * self.groups * self.columns;
        let plane_len = 4 * self.rows * self.groups * self.strip_columns;
        let taps = plane_len * g.filter_w;
        for b in 0..g.batches {
            with_image_bytes(grouped_len + taps + 64, |buffer| {
                let (grouped, planes) = buffer.split_at_mut(grouped_len);
                // Planes on a 64-byte boundary: with whole strips per row, every load of 16
                // cells is one cache line.
                let align = planes.as_ptr().align_offset(64).min(64);
                let planes = &mut planes[align..][..taps];
                // SAFETY: `new` returned a filter only on a CPU with VNNI and the rescale's
                // AVX-512 subsets (`wide`).
                unsafe {
                    self.fill_grouped(g, &input[b * image_len..][..image_len], grouped);
                }
                self.fill_planes(g, grouped, planes);
                let out = &mut output[b * out_len..][..out_len];
                // SAFETY: as above.
                unsafe { self.convolve(g, planes, offsets, pooling, out) };
            });
        }
    }

    /// Each tap column's plane: the grouped image's rows from column kx · dilation, as many
    /// columns as the strips hold.
    fn fill_planes(&self, g: &Geometry, grouped: &[u8], planes: &mut [u8]) {
        let plane_len = 4 * self.rows * self.groups * self.strip_columns;
        for (kx, plane) in planes.chunks_exact_mut(plane_len).enumerate() {
            let shift = 4 * kx * g.dilation.1;
            for (dst, src) in plane
                .chunks_exact_mut(4 * self.strip_columns)
                .zip(grouped.chunks_exact(4 * self.columns))
            {
                dst.copy_from_slice(&src[shift..shift + dst.len()]);
            }
        }
    }

    /// One batch's image as rows of four-channel groups, shifted, with padding around it:
    /// each group of 16 columns is one gather.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    unsafe fn fill_grouped(&self, g: &Geometry, image: &[u8], grouped: &mut [u8]) {
        grouped.fill(self.outside);
        let (c, columns) = (g.in_c, self.columns);
        let row_bytes = 4 * self.groups * columns;
        let flip = _mm512_set1_epi32(i32::from_ne_bytes([self.flip; 4]));
        // Byte offsets of 16 consecutive pixels' channel 0.
        let pixel_offsets = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32(c as i32),
        );
        let width = g.in_w.min(columns.saturating_sub(g.pad.1));
        // Whole groups are gathered (offsets fit i32: `new` bounds the image); the bytes of a
        // last, partial group one at a time (a 4-byte read could pass the image's end).
        let gathered = if image.len() < i32::MAX as usize {
            c / 4
        } else {
            0
        };
        for iy in 0..g.in_h {
            let row = iy + g.pad.0;
            if row >= self.rows {
                continue;
            }
            let row = &mut grouped[row * row_bytes..][..row_bytes];
            for group in 0..gathered {
                let cells = &mut row[4 * (group * columns + g.pad.1)..][..4 * width];
                for x0 in (0..width).step_by(LANES) {
                    let n = (width - x0).min(LANES);
                    let mask = ((1u32 << n) - 1) as __mmask16;
                    let first = ((iy * g.in_w + x0) * c + 4 * group) as i32;
                    let at = _mm512_add_epi32(pixel_offsets, _mm512_set1_epi32(first));
                    // SAFETY: the masked lanes read whole groups of pixels of this row, and
                    // store within the row's cells for those columns.
                    unsafe {
                        let values =
                            _mm512_mask_i32gather_epi32::<1>(flip, mask, at, image.as_ptr().cast());
                        _mm512_mask_storeu_epi32(
                            cells.as_mut_ptr().add(4 * x0).cast(),
                            mask,
                            _mm512_xor_si512(values, flip),
                        );
                    }
                }
            }
            for ix in 0..width {
                let pixel = &image[(iy * g.in_w + ix) * c..][..c];
                let column = ix + g.pad.1;
                for (channel, &value) in pixel.iter().enumerate().skip(4 * gathered) {
                    let (group, j) = (channel / 4, channel % 4);
                    row[4 * (group * columns + column) + j] = value ^ self.flip;
                }
            }
        }
    }

    /// The sums, requantized, of every output pixel, by blocks of up to four strips of 16
    /// pixels (a strip: 16 consecutive columns of one output row).
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW, DQ, VL, VBMI and VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi,avx512vnni")]
    unsafe fn convolve(
        &self,
        g: &Geometry,
        grouped: &[u8],
        offsets: &[i32],
        pooling: Pooling,
        out: &mut [u8],
    ) {
        let ((window_h, window_w), (pooled_h, pooled_w)) = (pooling.window, pooling.out);
        // Strips over the columns some window covers, a window's rows together.
        let strips_per_row = (pooled_w * window_w).div_ceil(LANES);
        // Strip i: (output row, first column), window by window, each window's rows together.
        let strip = |i: usize| {
            let (window, r) = (i / window_h, i % window_h);
            let (py, s) = (window / strips_per_row, window % strips_per_row);
            (py * window_h + r, s * LANES)
        };
        let strips = pooled_h * strips_per_row * window_h;
        let row_cells = self.groups * self.strip_columns;
        // The furthest cell a strip reads: its first cell plus the largest offset plus 15.
        let last_origin = strips.checked_sub(1).map_or(0, |i| {
            let (oy, x0) = strip(i);
            oy * g.stride.0 * row_cells + x0
        });
        let reach = last_origin + self.largest_offset + LANES;
        assert!(
            reach <= grouped.len() / 4
                && offsets.len() >= g.out_c.div_ceil(LANES) * LANES
                && out.len() >= pooled_h * pooled_w * g.out_c
                && pooling.out.0 * window_h <= g.out_h
                && pooling.out.1 * window_w <= g.out_w
                && [1, 2, 4].contains(&window_w)
                && (1..=4).contains(&window_h),
            "sparse convolution: buffers smaller than the geometry"
        );
        let wide = self.rescale.wide().expect("checked at prepare");
        // SAFETY: the features are enabled; every access below is within the bounds asserted.
        unsafe {
            let constants = WideConstants::new(pooling.range);
            // Up to four strips per block, whole windows' rows.
            let per_block = 4 / window_h * window_h;
            for first in (0..strips).step_by(per_block) {
                let len = per_block.min(strips - first);
                let mut block = [(0, 0); 4];
                for (k, origin) in block.iter_mut().take(len).enumerate() {
                    *origin = strip(first + k);
                }
                let args = (
                    g,
                    &block[..len],
                    grouped,
                    offsets,
                    wide,
                    &constants,
                    pooling,
                );
                match len {
                    4 => self.block::<4>(args, out),
                    3 => self.block::<3>(args, out),
                    2 => self.block::<2>(args, out),
                    _ => self.block::<1>(args, out),
                }
            }
        }
    }

    /// `S` strips: for each output channel, its non-zero groups over the strips' pixels; per
    /// 16 channels the bytes are transposed to pixel-major and stored.
    ///
    /// # Safety
    /// As [`Self::convolve`], which checked the bounds.
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi,avx512vnni")]
    unsafe fn block<const S: usize>(
        &self,
        (g, strips, grouped, offsets, wide, constants, pooling): BlockArgs<'_>,
        out: &mut [u8],
    ) {
        let ((window_h, window_w), (_, pooled_w)) = (pooling.window, pooling.out);
        let row_cells = self.groups * self.strip_columns;
        let origins: [usize; S] =
            std::array::from_fn(|s| strips[s].0 * g.stride.0 * row_cells + strips[s].1);
        let base = grouped.as_ptr().cast::<i32>();
        for first in (0..g.out_c).step_by(LANES) {
            // Bytes of 16 channels × 16 pixels per strip, channel-major.
            let mut bytes = [[_mm_setzero_si128(); LANES]; S];
            for channel in first..(first + LANES).min(g.out_c) {
                // Two sets of sums, for even and odd groups of the list: twice the independent
                // chains, since one `vpdpbusd` waits for the last on the same register.
                let (mut even, mut odd) =
                    ([_mm512_setzero_si512(); S], [_mm512_setzero_si512(); S]);
                let (start, end) = (self.starts[channel], self.starts[channel + 1]);
                let step = |acc: &mut [__m512i; S], i: usize| {
                    // SAFETY: i is within the channel's list; origin + offset + 16 cells is
                    // within the image (asserted).
                    unsafe {
                        let offset = *self.offsets.get_unchecked(i);
                        let w = _mm512_set1_epi32(*self.weights.get_unchecked(i));
                        for (acc, &origin) in acc.iter_mut().zip(&origins) {
                            let x = _mm512_loadu_si512(base.add(origin + offset).cast());
                            *acc = _mm512_dpbusd_epi32(*acc, x, w);
                        }
                    }
                };
                let mut i = start;
                while i + 1 < end {
                    step(&mut even, i);
                    step(&mut odd, i + 1);
                    i += 2;
                }
                if i < end {
                    step(&mut even, i);
                }
                let acc: [__m512i; S] = std::array::from_fn(|s| _mm512_add_epi32(even[s], odd[s]));
                // SAFETY: the offsets are padded to whole registers; the repeated rescale
                // holds 16 lanes per channel.
                unsafe {
                    let offset = _mm512_set1_epi32(*offsets.get_unchecked(channel));
                    let rescale = ChannelLanes::load(wide, LANES * channel);
                    for (bytes, window_rows) in bytes.iter_mut().zip(acc.chunks_exact(window_h)) {
                        let max = window_maxima(window_rows, window_w);
                        bytes[channel - first] =
                            rescale.rescale(constants, _mm512_add_epi32(max, offset));
                    }
                }
            }
            let channels = (g.out_c - first).min(LANES);
            let channel_mask = ((1u32 << channels) - 1) as __mmask16;
            for (bytes, window_rows) in bytes.iter().zip(strips.chunks_exact(window_h)) {
                let (oy, x0) = window_rows[0];
                let (py, px0) = (oy / window_h, x0 / window_w);
                let pixels = transpose(bytes);
                let valid = (pooled_w - px0).min(LANES / window_w);
                for (p, pixel) in pixels.iter().enumerate().take(valid) {
                    let at = ((py * pooled_w + px0 + p) * g.out_c + first).min(out.len());
                    // SAFETY: the mask keeps the store within the pixel's channels.
                    unsafe {
                        _mm_mask_storeu_epi8(out.as_mut_ptr().add(at).cast(), channel_mask, *pixel)
                    };
                }
            }
        }
    }
}

/// A pruned convolution followed by a max pooling that tiles its output, in one pass: the
/// maxima of the sums are requantized (why the bits are the two operators': `pooled.rs`).
#[derive(Debug)]
pub struct SparseMaxPool {
    geometry: Geometry,
    has_bias: bool,
    filter: Arc<SparseFilter>,
    pooling: Pooling,
}

impl SparseMaxPool {
    pub fn new(conv: &Convolution, filter: Arc<SparseFilter>, pool: TilingMaxPool) -> Option<Self> {
        let g = &conv.geometry;
        let ((window_h, window_w), out) = (pool.window, pool.out);
        if !filter.poolable
            || (conv.has_bias && !filter.has_constant_bias)
            || ![1, 2, 4].contains(&window_w)
            || !(1..=4).contains(&window_h)
            || out.0 * window_h > g.out_h
            || out.1 * window_w > g.out_w
        {
            return None;
        }
        Some(Self {
            geometry: g.clone(),
            has_bias: conv.has_bias,
            pooling: Pooling {
                window: pool.window,
                out,
                range: filter.range.within(pool.range)?,
            },
            filter,
        })
    }
}

impl OpKernel for SparseMaxPool {
    fn eval(&self, inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]) {
        let Some(input) = &inputs[0] else {
            unreachable!("prepared")
        };
        let bias = weighted::bias(inputs, self.has_bias).map(as_i32);
        let g = &self.geometry;
        self.filter
            .eval_pooled(g, input.data, bias, &mut *outputs[0].data, self.pooling);
    }
}

/// How a block's sums become bytes: windows of `window` (rows, columns) pixels reduced to
/// their maxima ((1, 1): the convolution itself) into an output of `out` pixels, clamped to
/// `range`.
#[derive(Clone, Copy, Debug)]
struct Pooling {
    window: (usize, usize),
    out: (usize, usize),
    range: OutputRange,
}

/// What every block of strips reads: the geometry, its strips, the grouped image, the
/// per-channel offsets, the rescale and its constants, and the pooling.
type BlockArgs<'a> = (
    &'a Geometry,
    &'a [(usize, usize)],
    &'a [u8],
    &'a [i32],
    &'a WideRescale,
    &'a WideConstants,
    Pooling,
);

/// The maxima of windows `window_w` lanes wide over the rows `sums` (one window row each),
/// packed into the first 16 / `window_w` lanes.
#[target_feature(enable = "avx512f")]
fn window_maxima(sums: &[__m512i], window_w: usize) -> __m512i {
    let rows = sums[1..]
        .iter()
        .fold(sums[0], |m, &v| _mm512_max_epi32(m, v));
    match window_w {
        2 => {
            let pairs = _mm512_max_epi32(rows, _mm512_alignr_epi32::<1>(rows, rows));
            _mm512_maskz_compress_epi32(0x5555, pairs)
        }
        4 => {
            let pairs = _mm512_max_epi32(rows, _mm512_alignr_epi32::<1>(rows, rows));
            let quads = _mm512_max_epi32(pairs, _mm512_alignr_epi32::<2>(pairs, pairs));
            _mm512_maskz_compress_epi32(0x1111, quads)
        }
        _ => rows,
    }
}

/// [`transpose`]'s byte permutations. Round 1 takes 8 channels (two registers: byte 16·c + p
/// is channel c's pixel p) to 8 pixels × 8 channels, pixel-major (byte 8·p + c): pixels 0–7,
/// then 8–15. Round 2 takes a pixel's 8 low channels from the first register and its 8 high
/// ones from the second (byte 64 + 8·p + c − 8): pixels 0–3, then 4–7.
const TRANSPOSE: [[u8; 64]; 4] = {
    let mut tables = [[0u8; 64]; 4];
    let mut i = 0;
    while i < 64 {
        tables[0][i] = ((i % 8) * 16 + i / 8) as u8;
        tables[1][i] = ((i % 8) * 16 + 8 + i / 8) as u8;
        let (p, c) = (i / 16, i % 16);
        let high = if c < 8 { 0 } else { 64 - 8 };
        tables[2][i] = (8 * p + c + high) as u8;
        tables[3][i] = (8 * (4 + p) + c + high) as u8;
        i += 1;
    }
    tables
};

/// A 16 × 16 byte matrix (rows: channels, each 16 pixels) transposed to 16 pixels of 16
/// channels, with two rounds of byte permutations over pairs of registers.
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
fn transpose(rows: &[__m128i; LANES]) -> [__m128i; LANES] {
    // Four channels per register: byte 16·c + p is channel c's pixel p.
    let quarter = |q: usize| {
        let v = _mm512_castsi128_si512(rows[4 * q]);
        let v = _mm512_inserti32x4::<1>(v, rows[4 * q + 1]);
        let v = _mm512_inserti32x4::<2>(v, rows[4 * q + 2]);
        _mm512_inserti32x4::<3>(v, rows[4 * q + 3])
    };
    let z = [quarter(0), quarter(1), quarter(2), quarter(3)];
    // SAFETY: each table is 64 bytes, one register.
    let [low_pixels, high_pixels, first_four, next_four] =
        TRANSPOSE.map(|t| unsafe { _mm512_loadu_si512(t.as_ptr().cast()) });
    let y = [
        _mm512_permutex2var_epi8(z[0], low_pixels, z[1]),
        _mm512_permutex2var_epi8(z[0], high_pixels, z[1]),
        _mm512_permutex2var_epi8(z[2], low_pixels, z[3]),
        _mm512_permutex2var_epi8(z[2], high_pixels, z[3]),
    ];
    let w = [
        _mm512_permutex2var_epi8(y[0], first_four, y[2]),
        _mm512_permutex2var_epi8(y[0], next_four, y[2]),
        _mm512_permutex2var_epi8(y[1], first_four, y[3]),
        _mm512_permutex2var_epi8(y[1], next_four, y[3]),
    ];
    std::array::from_fn(|p| {
        let v = w[p / 4];
        match p % 4 {
            0 => _mm512_castsi512_si128(v),
            1 => _mm512_extracti32x4_epi32::<1>(v),
            2 => _mm512_extracti32x4_epi32::<2>(v),
            _ => _mm512_extracti32x4_epi32::<3>(v),
        }
    })
}

#[cfg(test)]
mod tests {
    use kiln_tflite::{Activation, Conv2DOptions, Padding, TensorType};

    use super::super::super::common::testing::seeded;
    use super::super::tests::QuantizedCase;
    use super::*;

    /// Filters pruned in groups of 4 or 16 input channels (85% of them zero), on random
    /// shapes (several strips per row, channels not a multiple of 4 or 16), row strides,
    /// dilations, paddings, batches and both 8-bit types: the sparse kernel (the filter a
    /// constant) gives the bytes of the direct path (the filter fed at run time).
    #[test]
    fn pruned_filters_give_the_direct_paths_bytes() {
        if Isa::detect() != Isa::Vnni {
            return;
        }
        let mut next = seeded(0x005b_a75e);
        let mut sparse_cases = 0;
        for case in 0..40 {
            let signed = case % 4 != 0;
            let dtype = if signed {
                TensorType::Int8
            } else {
                TensorType::UInt8
            };
            let batches = 1 + next(2) as usize;
            let (in_h, in_w) = (2 + next(12) as usize, 2 + next(40) as usize);
            let in_c = 1 + next(40) as usize;
            let out_c = 1 + next(40) as usize;
            let (kh, kw) = (1 + next(3) as usize, 1 + next(3) as usize);
            let stride_h = 1 + next(2) as i32;
            let dilation = 1 + (case % 3 == 0) as i32;
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
            let filter_zero = if signed { 0 } else { 100 + next(56) as i64 };
            let block = if case % 2 == 0 { 4 } else { 16 };
            let mut filter_bytes = Vec::with_capacity(out_c * kh * kw * in_c);
            for _ in 0..out_c * kh * kw {
                let mut kept = false;
                for ch in 0..in_c {
                    if ch % block == 0 {
                        kept = next(100) < 15;
                    }
                    let value = if kept { next(255) as i64 - 127 } else { 0 };
                    filter_bytes.push((value + filter_zero) as u8);
                }
            }
            let scales: Vec<f32> = (0..out_c)
                .map(|_| 0.001 + next(100) as f32 * 1e-4)
                .collect();
            let bias: Vec<i32> = (0..out_c).map(|_| next(4000) as i32 - 2000).collect();
            let input_bytes: Vec<u8> = (0..batches * in_h * in_w * in_c)
                .map(|_| next(256) as u8)
                .collect();
            let case_data = QuantizedCase {
                dtype,
                input_shape: [batches, in_h, in_w, in_c],
                input_zero,
                filter_shape: [out_c, kh, kw, in_c],
                filter: filter_bytes,
                filter_zero,
                scales,
                bias,
                // Every third case feeds the bias at run time.
                fed_bias: case % 3 == 1,
                options: Conv2DOptions {
                    padding,
                    stride_w: 1,
                    stride_h,
                    activation: if case % 5 == 0 {
                        Activation::Relu6
                    } else {
                        Activation::None
                    },
                    dilation_w: dilation,
                    dilation_h: dilation,
                },
            };
            let (sparse, direct) = case_data.constant_and_fed(&input_bytes);
            if format!("{:?}", sparse.kernel).contains("Sparse(SparseFilter") {
                sparse_cases += 1;
            }
            assert_eq!(sparse.shape, direct.shape, "case {case}");
            assert_eq!(sparse.data, direct.data, "case {case}");
        }
        assert!(
            sparse_cases >= 25,
            "{sparse_cases} cases took the sparse kernel"
        );
    }

    /// The transpose moves byte (channel c, pixel p) to (pixel p, channel c).
    #[test]
    fn the_transpose_swaps_channels_and_pixels() {
        if !std::arch::is_x86_feature_detected!("avx512vbmi") {
            return;
        }
        let matrix: [[u8; 16]; 16] =
            std::array::from_fn(|c| std::array::from_fn(|p| (16 * c + p) as u8));
        // SAFETY: the CPU has the features (checked above); 16-byte loads and stores.
        let transposed = unsafe {
            let rows = matrix.map(|row| _mm_loadu_si128(row.as_ptr().cast()));
            transpose(&rows).map(|v| {
                let mut bytes = [0u8; 16];
                _mm_storeu_si128(bytes.as_mut_ptr().cast(), v);
                bytes
            })
        };
        for (p, pixel) in transposed.iter().enumerate() {
            for (c, &b) in pixel.iter().enumerate() {
                assert_eq!(b, matrix[c][p], "pixel {p} channel {c}");
            }
        }
    }
}
