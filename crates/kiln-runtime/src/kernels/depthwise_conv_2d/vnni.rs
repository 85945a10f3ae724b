//! Int8 depthwise convolution (one filter per channel) with AVX-512 VNNI: `vpdpbusd` sums four
//! 8-bit products per 32-bit lane, so each lane takes four horizontal taps of one channel at
//! once. For that, each input row is copied once (per band of output rows that read it) into
//! a padded row of 16-channel blocks, 16 bytes per column. Four columns q, q + d, q + 2d and
//! q + 3d (d the dilation) are then one 64-byte load, which one `vpermb` interleaves so that
//! each lane holds its channel's four taps: an output pixel costs a load, a `vpermb` and a
//! `vpdpbusd` per filter row and group of four filter columns, and its sums are requantized
//! in registers ([`rescale_lanes`]) and stored as bytes. (Interleaving whole rows in advance
//! instead writes four times the bytes and measured slower.)
//!
//! `vpdpbusd` multiplies unsigned bytes by signed ones. The weights are the signed side (an
//! 8-bit filter with its zero point applied must fit in i8, or the layer takes the generic
//! kernel), and int8 inputs become unsigned by flipping their sign bit: u = x + 128. TFLite
//! sums `w · (x + input_offset)` over the taps inside the image, which is
//! `Σ w·u + (input_offset − 128) · Σ w` when the taps outside the image read a byte whose
//! offset input is zero. So the padding holds that byte, each filter row's weight sum is
//! kept, and a filter row entirely outside the image is skipped along with its share. The
//! integer sums are exact: the bits are the reference kernel's.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::super::common::convolution::Geometry;
#[cfg(target_arch = "x86_64")]
use super::super::common::requantize::{Requantization, WideConstants, rescale_lanes};

/// Taps summed per lane by one `vpdpbusd`.
const TAPS: usize = 4;

/// Channels per register block.
const LANES: usize = 16;

/// Output pixels computed together: eight independent accumulators cover `vpdpbusd`'s
/// latency.
const PIXELS: usize = 8;

/// Input rows a band keeps padded at once (filter height × vertical dilation).
const MAX_SLOTS: usize = 64;

/// The most scratch bytes a layer may need; past it (only a malformed stride or dilation
/// spreads a few outputs over so many columns) the layer takes the generic kernel.
const MAX_SCRATCH: usize = 16 << 20;

/// A depthwise layer's filter prepared for [`convolve_rows`](VnniDepthwise::convolve_rows).
#[derive(Debug)]
pub struct VnniDepthwise {
    /// Per channel block, filter row and group of four filter columns, 64 bytes: lane i
    /// (channel 16·block + i) holds the four taps' weights; taps past the filter's width and
    /// channels past the layer's are zero.
    weights: Vec<i8>,
    /// Per channel block and filter row, 16 lanes: the row's weight sum per channel.
    row_sums: Vec<i32>,
    /// Groups of four filter columns.
    groups: usize,
    blocks: usize,
    /// XORed into every input byte: 0x80 for int8 inputs, 0 for uint8.
    flip: u8,
    /// The stored byte of the image's zero point, which the padding holds.
    fill: u8,
    /// Multiplies each filter row's weight sum: the input offset less the flip's 128.
    offset_share: i32,
    /// Columns of a padded row: every column any output pixel's taps read.
    columns: usize,
    slots: usize,
}

impl VnniDepthwise {
    /// Whether this CPU runs the kernel.
    pub fn available() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512vbmi")
                && std::arch::is_x86_feature_detected!("avx512vnni")
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// Prepares `filter` (taps × output channels, zero point applied), when the kernel can
    /// compute the layer: weights within i8, the padding byte within u8, the CPU's features
    /// present. Output channel o reads input channel o / multiplier.
    pub fn new(g: &Geometry, filter: &[i32], signed: bool, input_offset: i32) -> Option<Self> {
        let c = g.out_c;
        if g.in_c == 0
            || !c.is_multiple_of(g.in_c)
            || filter.len() != g.filter_h * g.filter_w * c
            || !Self::available()
        {
            return None;
        }
        let weights_fit = filter.iter().all(|&w| i8::try_from(w).is_ok());
        let flip: i32 = if signed { 128 } else { 0 };
        let fill = u8::try_from(flip.checked_sub(input_offset)?).ok()?;
        let slots = g.filter_h.checked_mul(g.dilation.0)?;
        if !weights_fit || slots > MAX_SLOTS || g.out_w == 0 {
            return None;
        }
        let groups = g.filter_w.div_ceil(TAPS);
        let blocks = c.div_ceil(LANES);
        let mut weights = vec![0i8; blocks * g.filter_h * groups * TAPS * LANES];
        let mut row_sums = vec![0i32; blocks * g.filter_h * LANES];
        for ky in 0..g.filter_h {
            for kx in 0..g.filter_w {
                for (channel, &w) in filter[(ky * g.filter_w + kx) * c..][..c].iter().enumerate() {
                    let (block, lane) = (channel / LANES, channel % LANES);
                    let (group, tap) = (kx / TAPS, kx % TAPS);
                    let at = (((block * g.filter_h + ky) * groups + group) * LANES + lane) * TAPS;
                    weights[at + tap] = w as i8;
                    row_sums[(block * g.filter_h + ky) * LANES + lane] += w;
                }
            }
        }
        // Checked: a malformed file's stride or dilation can overflow the column count.
        let columns = (g.out_w - 1)
            .checked_mul(g.stride.1)?
            .checked_add((groups * TAPS - 1).checked_mul(g.dilation.1)?)?
            .checked_add(1)?;
        let scratch = slots
            .checked_mul(blocks)?
            .checked_mul(columns)?
            .checked_mul(LANES)?;
        if scratch > MAX_SCRATCH {
            return None;
        }
        Some(Self {
            weights,
            row_sums,
            groups,
            blocks,
            flip: flip as u8,
            fill,
            offset_share: input_offset - flip,
            columns,
            slots,
        })
    }

    pub fn bytes(&self) -> usize {
        self.weights.len() + self.row_sums.len() * size_of::<i32>()
    }

    /// Bytes [`convolve_rows`](Self::convolve_rows) works in: `slots` padded input rows.
    pub fn scratch_len(&self) -> usize {
        self.slots * self.padded_row_len()
    }

    fn padded_row_len(&self) -> usize {
        self.blocks * self.columns * LANES
    }

    fn multiplier(g: &Geometry) -> usize {
        g.out_c / g.in_c
    }

    /// Output rows `first..first + count` (over batches × output height, in order) into
    /// `out` (those rows, whole), requantized by `q` (its offsets: the bias).
    #[cfg(target_arch = "x86_64")]
    pub fn convolve_rows(
        &self,
        g: &Geometry,
        input: &[u8],
        (first, count): (usize, usize),
        q: &Requantization<'_>,
        scratch: &mut [u8],
        out: &mut [u8],
    ) {
        let c = g.out_c;
        let row_out = g.out_w * c;
        assert!(
            input.len() >= g.batches * g.in_h * g.in_w * g.in_c
                && out.len() >= count * row_out
                && scratch.len() >= self.scratch_len()
                && first + count <= g.batches * g.out_h
                && q.offsets.len() >= self.blocks * LANES
                && q.wide.padded_len() >= self.blocks * LANES,
            "prepared shapes"
        );
        // Which (batch, input row) each slot of `scratch` holds.
        let mut held = [None::<(usize, usize)>; MAX_SLOTS];
        let row_len = self.padded_row_len();
        // The filter rows inside the image, (ky, offset of its padded row): at most `slots`
        // (filter height × dilation ≤ MAX_SLOTS), so a stack array, not a per-band Vec.
        let mut rows = [(0usize, 0usize); MAX_SLOTS];
        for index in first..first + count {
            let (b, oy) = (index / g.out_h, index % g.out_h);
            let mut count = 0;
            for ky in 0..g.filter_h {
                let Some(iy) = (oy * g.stride.0 + ky * g.dilation.0).checked_sub(g.pad.0) else {
                    continue;
                };
                if iy >= g.in_h {
                    continue;
                }
                // Distinct for the rows of one output row: they differ by less than `slots`.
                let slot = iy % self.slots;
                if held[slot] != Some((b, iy)) {
                    let row = &input[(b * g.in_h + iy) * g.in_w * g.in_c..][..g.in_w * g.in_c];
                    let padded = &mut scratch[slot * row_len..][..row_len];
                    // SAFETY: `available()` held when the layer was prepared.
                    unsafe { self.pad_row(g, row, padded) };
                    held[slot] = Some((b, iy));
                }
                rows[count] = (ky, slot * row_len);
                count += 1;
            }
            let out = &mut out[(index - first) * row_out..][..row_out];
            // SAFETY: as above; each padded row is `row_len` bytes within `scratch`.
            unsafe { self.output_row(g, scratch, &rows[..count], q, out) };
        }
    }

    /// One input row into `padded`: per block of 16 output channels, `columns` columns of 16
    /// bytes, the image's (each output channel's input channel) flipped to unsigned, the
    /// padding's the fill.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
    unsafe fn pad_row(&self, g: &Geometry, row: &[u8], padded: &mut [u8]) {
        let (in_c, multiplier) = (g.in_c, Self::multiplier(g));
        assert!(row.len() >= g.in_w * in_c && padded.len() >= self.padded_row_len());
        let flip = _mm_set1_epi8(self.flip as i8);
        let fill = _mm_set1_epi8(self.fill as i8);
        // Columns left of the image, inside it, and right of it.
        let left = g.pad.1.min(self.columns);
        let inside = g.in_w.min(self.columns - left);
        for block in 0..self.blocks {
            // The block's output channels read input channels from `first` on.
            let first = block * LANES / multiplier;
            let mask: __mmask16 = ((1u32 << (in_c - first).min(LANES)) - 1) as __mmask16;
            // Lane i takes input channel (16·block + i) / multiplier (past the layer's
            // channels, any: their weights are zero).
            let mut spread = [0u8; LANES];
            for (lane, index) in spread.iter_mut().enumerate() {
                *index = ((block * LANES + lane) / multiplier - first).min(LANES - 1) as u8;
            }
            // SAFETY: 16 bytes read from a 16-byte array.
            let spread = unsafe { _mm_loadu_si128(spread.as_ptr().cast()) };
            let out = padded[block * self.columns * LANES..].as_mut_ptr();
            // SAFETY: every store is to a column below `columns`, within this block's part
            // of `padded`; every load is masked to the input channels first..in_c of a pixel
            // of the row.
            unsafe {
                for column in (0..left).chain(left + inside..self.columns) {
                    _mm_storeu_si128(out.add(column * LANES).cast(), fill);
                }
                let (row, out) = (row.as_ptr().add(first), out.add(left * LANES));
                for x in 0..inside {
                    let bytes = _mm_maskz_loadu_epi8(mask, row.add(x * in_c).cast());
                    let bytes = if multiplier == 1 {
                        bytes
                    } else {
                        _mm_permutexvar_epi8(spread, bytes)
                    };
                    _mm_storeu_si128(out.add(x * LANES).cast(), _mm_xor_si128(bytes, flip));
                }
            }
        }
    }

    /// One output row from its filter rows inside the image, given as (ky, offset of that
    /// input row's padded copy in `scratch`).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vbmi,avx512vnni")]
    unsafe fn output_row(
        &self,
        g: &Geometry,
        scratch: &[u8],
        rows: &[(usize, usize)],
        q: &Requantization<'_>,
        out: &mut [u8],
    ) {
        let c = g.out_c;
        let (stride, dilation) = (g.stride.1, g.dilation.1);
        assert!(out.len() >= g.out_w * c);
        assert!(
            rows.iter()
                .all(|&(ky, at)| ky < g.filter_h && at + self.padded_row_len() <= scratch.len())
        );
        let interleave = interleave_taps();
        let step = dilation * LANES;
        // SAFETY: the CPU has AVX-512F (the caller's features).
        let constants = unsafe { WideConstants::new(q.range) };
        for block in 0..self.blocks {
            let c0 = block * LANES;
            let mask: __mmask16 = ((1u32 << (c - c0).min(LANES)) - 1) as __mmask16;
            // The bias plus the input offset's share of the filter rows inside the image.
            // SAFETY: offsets are padded to whole blocks (asserted by the caller).
            let mut start = unsafe { _mm512_loadu_si512(q.offsets[c0..].as_ptr().cast()) };
            let share = _mm512_set1_epi32(self.offset_share);
            for &(ky, _) in rows {
                // SAFETY: within `row_sums` (ky < filter_h, block < blocks).
                let sums = unsafe {
                    _mm512_loadu_si512(
                        self.row_sums[(block * g.filter_h + ky) * LANES..]
                            .as_ptr()
                            .cast(),
                    )
                };
                start = _mm512_add_epi32(start, _mm512_mullo_epi32(sums, share));
            }
            let weights_of = |ky: usize, group: usize| -> __m512i {
                let at = ((block * g.filter_h + ky) * self.groups + group) * LANES * TAPS;
                // SAFETY: within `weights` (ky < filter_h, group < groups, block < blocks).
                unsafe { _mm512_loadu_si512(self.weights[at..].as_ptr().cast()) }
            };
            let block_columns = block * self.columns * LANES;
            // Four taps' columns from `q` of a padded row (offset `row` in `scratch`), each
            // lane holding its channel's four.
            let taps = |row: usize, q: usize| -> __m512i {
                // SAFETY: q + 3·dilation < columns for every q an output pixel reads, within
                // the row's block.
                unsafe {
                    let at = scratch.as_ptr().add(row + q * LANES);
                    let bytes = if dilation == 1 {
                        _mm512_loadu_si512(at.cast())
                    } else {
                        let v = _mm512_castsi128_si512(_mm_loadu_si128(at.cast()));
                        let v = _mm512_inserti32x4::<1>(v, _mm_loadu_si128(at.add(step).cast()));
                        let v =
                            _mm512_inserti32x4::<2>(v, _mm_loadu_si128(at.add(2 * step).cast()));
                        _mm512_inserti32x4::<3>(v, _mm_loadu_si128(at.add(3 * step).cast()))
                    };
                    _mm512_permutexvar_epi8(interleave, bytes)
                }
            };
            let finish = |sum: __m512i, out: *mut u8| {
                // SAFETY: the parameters are padded to whole blocks; the store is masked to
                // the channels c0..c of a pixel inside `out`.
                unsafe {
                    let bytes = rescale_lanes(q.wide, &constants, sum, c0);
                    _mm_mask_storeu_epi8(out.cast(), mask, bytes);
                }
            };
            let mut ox = 0;
            while ox + PIXELS <= g.out_w {
                let mut sums = [start; PIXELS];
                for &(ky, at) in rows {
                    let row = at + block_columns;
                    for group in 0..self.groups {
                        let w = weights_of(ky, group);
                        let first = ox * stride + group * TAPS * dilation;
                        for (p, sum) in sums.iter_mut().enumerate() {
                            *sum = _mm512_dpbusd_epi32(*sum, taps(row, first + p * stride), w);
                        }
                    }
                }
                for (p, sum) in sums.into_iter().enumerate() {
                    // SAFETY: pixel ox + p < out_w.
                    finish(sum, unsafe { out.as_mut_ptr().add((ox + p) * c + c0) });
                }
                ox += PIXELS;
            }
            while ox < g.out_w {
                let mut sum = start;
                for &(ky, at) in rows {
                    let row = at + block_columns;
                    for group in 0..self.groups {
                        let first = ox * stride + group * TAPS * dilation;
                        sum = _mm512_dpbusd_epi32(sum, taps(row, first), weights_of(ky, group));
                    }
                }
                // SAFETY: pixel ox < out_w.
                finish(sum, unsafe { out.as_mut_ptr().add(ox * c + c0) });
                ox += 1;
            }
        }
    }
}

/// `vpermb` indices that put byte 16t + i (tap t, channel i) at 4i + t: lane i then holds
/// channel i's four taps.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn interleave_taps() -> __m512i {
    let mut indices = [0i8; 64];
    for (k, index) in indices.iter_mut().enumerate() {
        *index = (16 * (k % TAPS) + k / TAPS) as i8;
    }
    // SAFETY: 64 bytes read from a 64-byte array.
    unsafe { _mm512_loadu_si512(indices.as_ptr().cast()) }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use kiln_tflite::quant::{multiply_by_quantized_multiplier, quantize_multiplier};

    use super::super::super::common::requantize::{ChannelRescale, OutputRange};
    use super::super::super::common::testing::seeded;
    use super::*;

    /// Fuzz finding: a huge stride spread two output pixels over 10^11 padded columns and the
    /// scratch allocation aborted. Such layers (and overflowing ones) take the generic kernel.
    #[test]
    fn a_huge_stride_or_dilation_is_left_to_the_generic_kernel() {
        let g = |stride: usize, dilation: usize| Geometry {
            batches: 1,
            in_h: 3,
            in_w: 3,
            in_c: 16,
            out_h: 1,
            out_w: 2,
            out_c: 16,
            filter_h: 1,
            filter_w: 3,
            stride: (1, stride),
            dilation: (1, dilation),
            pad: (0, 0),
        };
        let filter = vec![1; 3 * 16];
        assert!(VnniDepthwise::new(&g(1 << 33, 1), &filter, true, 0).is_none());
        assert!(VnniDepthwise::new(&g(usize::MAX / 2, 1), &filter, true, 0).is_none());
        assert!(VnniDepthwise::new(&g(1, usize::MAX / 2), &filter, true, 0).is_none());
        if VnniDepthwise::available() {
            assert!(VnniDepthwise::new(&g(1, 1), &filter, true, 0).is_some());
        }
    }

    /// Random geometries (filters up to 7×7, strides and dilations up to 3, padding on either
    /// side, channel counts around the 16-lane blocks, depth multipliers 1 to 3, two images), both 8-bit input types
    /// and extreme zero points, computed in random bands of rows: every byte equals TFLite's
    /// definition, Σ w·(x + input offset) over the taps inside the image, plus the bias,
    /// rescaled, offset and clamped.
    #[test]
    fn every_byte_equals_the_definition() {
        if !VnniDepthwise::available() {
            return;
        }
        let mut next = seeded(0x5eed_d3b7);
        let mut checked = 0;
        for case in 0..120 {
            let in_c = [1, 5, 16, 17, 40, 64][case % 6];
            let multiplier = [1, 1, 2, 3][case / 6 % 4];
            let c = in_c * multiplier;
            let (filter_h, filter_w) = (1 + next(7) as usize, 1 + next(7) as usize);
            let stride = (1 + next(3) as usize, 1 + next(3) as usize);
            let dilation = if case % 4 == 3 {
                (1 + next(3) as usize, 1 + next(3) as usize)
            } else {
                (1, 1)
            };
            let span = (
                (filter_h - 1) * dilation.0 + 1,
                (filter_w - 1) * dilation.1 + 1,
            );
            let (in_h, in_w) = (1 + next(12) as usize, 1 + next(30) as usize);
            let pad = (next(span.0 as u64) as usize, next(span.1 as u64) as usize);
            let extent = |size: usize, pad: usize, span: usize, stride: usize| {
                (size + 2 * pad).checked_sub(span).map(|e| e / stride + 1)
            };
            let (Some(out_h), Some(out_w)) = (
                extent(in_h, pad.0, span.0, stride.0),
                extent(in_w, pad.1, span.1, stride.1),
            ) else {
                continue;
            };
            let g = Geometry {
                batches: 2,
                in_h,
                in_w,
                in_c,
                out_h,
                out_w,
                out_c: c,
                filter_h,
                filter_w,
                stride,
                dilation,
                pad,
            };
            let signed = case % 3 != 0;
            let input_offset = match (signed, case % 5) {
                (true, 0) => 128,
                (true, 1) => -127,
                (true, _) => next(256) as i32 - 127,
                (false, 0) => 0,
                (false, 1) => -255,
                (false, _) => -(next(256) as i32),
            };
            let filter: Vec<i32> = (0..filter_h * filter_w * c)
                .map(|_| next(256) as i32 - 128)
                .collect();
            let vnni = VnniDepthwise::new(&g, &filter, signed, input_offset)
                .expect("weights within i8 and a representable padding byte");
            let image: Vec<u8> = (0..2 * in_h * in_w * in_c)
                .map(|_| next(256) as u8)
                .collect();
            let bias: Vec<i32> = (0..c).map(|_| next(1 << 20) as i32 - (1 << 19)).collect();
            let multipliers: Vec<_> = (0..c)
                .map(|_| quantize_multiplier(f64::from(1 + next(1000) as u32) * 1e-6))
                .collect();
            let range = [
                OutputRange {
                    offset: -3,
                    min: -128,
                    max: 127,
                },
                OutputRange {
                    offset: 120,
                    min: 120,
                    max: 255,
                },
            ][case % 2];
            let rescale = ChannelRescale::new(&multipliers);
            let mut offsets = bias.clone();
            offsets.resize(c.div_ceil(16) * 16, 0);
            let q = Requantization {
                wide: rescale.wide().expect("AVX-512"),
                offsets: &offsets,
                range,
            };
            let rows = 2 * out_h;
            let row = out_w * c;
            let mut got = vec![0u8; rows * row];
            let mut scratch = vec![0u8; vnni.scratch_len()];
            let mut first = 0;
            while first < rows {
                let count = (1 + next(5) as usize).min(rows - first);
                vnni.convolve_rows(
                    &g,
                    &image,
                    (first, count),
                    &q,
                    &mut scratch,
                    &mut got[first * row..],
                );
                first += count;
            }
            let value = |x: u8| {
                if signed {
                    i32::from(x as i8)
                } else {
                    i32::from(x)
                }
            };
            for (index, &byte) in got.iter().enumerate() {
                let (pixel, channel) = (index / c, index % c);
                let (b, oy, ox) = (
                    pixel / (out_h * out_w),
                    pixel / out_w % out_h,
                    pixel % out_w,
                );
                let mut acc = bias[channel];
                for ky in 0..filter_h {
                    for kx in 0..filter_w {
                        let iy = (oy * stride.0 + ky * dilation.0).checked_sub(pad.0);
                        let ix = (ox * stride.1 + kx * dilation.1).checked_sub(pad.1);
                        if let (Some(iy), Some(ix)) = (iy, ix)
                            && iy < in_h
                            && ix < in_w
                        {
                            let input_channel = channel / multiplier;
                            let x =
                                value(image[((b * in_h + iy) * in_w + ix) * in_c + input_channel]);
                            acc += filter[(ky * filter_w + kx) * c + channel] * (x + input_offset);
                        }
                    }
                }
                let expected = multiply_by_quantized_multiplier(acc, multipliers[channel])
                    .saturating_add(range.offset)
                    .clamp(range.min, range.max) as u8;
                assert_eq!(
                    byte, expected,
                    "case {case}, pixel {pixel}, channel {channel}"
                );
            }
            checked += 1;
        }
        assert!(checked > 60, "most geometries fit: {checked}");
    }
}
