//! The int8 convolution as an implicit GEMM (AVX-512 VNNI): no receptive field is gathered.
//!
//! The explicit GEMM first copies each output pixel's receptive field into a row (im2col);
//! for a layer with few input channels (a network's first) those copies are runs of a few
//! bytes and cost more than the products. Here each output pixel is only an *origin* in the
//! image, padded once per invoke (every tap inside), and every group of four consecutive
//! bytes of a field row is a fixed offset from it: `vpdpbusd` broadcasts the four bytes
//! straight from the image, and a field row whose length is not a multiple of four reads up
//! to three bytes past it, which meet zero weights. The idea is the implicit GEMM of
//! cuDNN's "implicit precomp" convolution, on a CPU.
//!
//! The filter is a list per 16 output channels of (offset, 16 × 4 weights). A pruned filter's
//! all-zero entries are left out of the list, which makes this also the kernel that skips the
//! zeros of a filter pruned in blocks that span 16 output channels (`block = [16, 4]` or
//! wider): its cost is its non-zero blocks', with no lane idle.
//!
//! Each list entry's weights are one register; eight output pixels' sums are accumulated
//! against them, then requantized (after the maxima of a fused max pooling's windows) in
//! registers: the bits are the explicit GEMM's (integer sums are exact).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::convolution::Geometry;
#[cfg(target_arch = "x86_64")]
use super::requantize::{ChannelLanes, Requantization, WideConstants};

/// Output pixels per tile (accumulators).
const PIXELS: usize = 8;

/// Origins per call of [`FieldFilter::multiply_max_requantized`].
pub const MAX_ORIGINS: usize = 64;

/// Whether [`FieldFilter::multiply_max_requantized`] takes the maxima of groups of `cells`
/// pixels (1, 2, 4 or 8: the cells of a tile's windows).
pub fn folds_windows_of(cells: usize) -> bool {
    cells > 0 && PIXELS.is_multiple_of(cells)
}

/// Output channels per list (a register's lanes).
const LANES: usize = 16;

/// At most this much more multiplying than the explicit GEMM's field (rounded to whole
/// groups of four) for the padding of short field rows to whole groups: a single-channel
/// 3×3 filter has none (12 against 12), a 3-channel 3×3 one 36 against 28.
const MAX_PADDING: f64 = 1.5;

/// A constant int8 filter as per-16-channel lists of groups of four weights, each with
/// where its four inputs lie relative to an output pixel's origin in the padded image.
#[derive(Debug)]
pub struct FieldFilter {
    /// Output channels.
    n: usize,
    /// Block `b`'s entries (channels `16 b ..`): `starts[b]..starts[b + 1]`.
    starts: Vec<usize>,
    /// Byte offset of an entry's four inputs from the output pixel's origin.
    offsets: Vec<u32>,
    /// An entry's weights: lane (channel) after lane, four bytes each.
    weights: Vec<[i8; 64]>,
    /// One past the furthest byte any entry reads from an origin.
    reach: usize,
    /// The padded image's columns the offsets were made for.
    columns: usize,
    /// Entries per block of a dense filter (every group of every field row).
    field_groups: usize,
}

impl FieldFilter {
    /// The filter `weight(channel, kk)` (kk in the filter's (h, w, c) order) for `g`'s
    /// ungrouped convolution over an image padded to `columns` columns. With
    /// `skip_zeros`, entries whose 64 weights are zero are left out. `None` when the field
    /// rows' padding to groups of four costs too much ([`MAX_PADDING`]) or an offset is out
    /// of u32's range.
    pub fn new(
        g: &Geometry,
        columns: usize,
        skip_zeros: bool,
        weight: impl Fn(usize, usize) -> i8,
    ) -> Option<Self> {
        let c = g.in_c;
        let k = g.filter_h * g.filter_w * c;
        // Field rows: one per filter row when a row's taps are contiguous (no dilation
        // across the width), else one per tap.
        let contiguous = g.dilation.1 == 1;
        let run = if contiguous { g.filter_w * c } else { c };
        let runs = k / run.max(1);
        let groups_per_run = run.div_ceil(4);
        let field_groups = runs * groups_per_run;
        if run == 0 || field_groups as f64 > MAX_PADDING * k.div_ceil(4) as f64 {
            return None;
        }
        let row_step = g.dilation.0.checked_mul(columns)?.checked_mul(c)?;
        // Run r: where it starts from the origin, and its first kk.
        let run_at = |r: usize| -> Option<(usize, usize)> {
            if contiguous {
                Some((r.checked_mul(row_step)?, r * run))
            } else {
                let (ky, kx) = (r / g.filter_w, r % g.filter_w);
                let at = ky
                    .checked_mul(row_step)?
                    .checked_add(kx.checked_mul(g.dilation.1)?.checked_mul(c)?)?;
                Some((at, r * run))
            }
        };
        let blocks = g.out_c.div_ceil(LANES);
        let mut starts = vec![0];
        let (mut offsets, mut weights) = (Vec::new(), Vec::new());
        let mut reach = 0;
        for block in 0..blocks {
            for r in 0..runs {
                let (at, first_kk) = run_at(r)?;
                for j in 0..groups_per_run {
                    let mut entry = [0i8; 64];
                    for lane in 0..LANES {
                        let channel = block * LANES + lane;
                        for e in 0..4 {
                            let within = 4 * j + e;
                            if channel < g.out_c && within < run {
                                entry[4 * lane + e] = weight(channel, first_kk + within);
                            }
                        }
                    }
                    if skip_zeros && entry == [0; 64] {
                        continue;
                    }
                    let offset = at.checked_add(4 * j)?;
                    offsets.push(u32::try_from(offset).ok()?);
                    weights.push(entry);
                    reach = reach.max(offset + 4);
                }
            }
            starts.push(weights.len());
        }
        Some(Self {
            n: g.out_c,
            starts,
            offsets,
            weights,
            reach,
            columns,
            field_groups,
        })
    }

    /// The share of a dense filter's entries this one holds (1 unless zeros were skipped).
    pub fn density(&self) -> f64 {
        self.weights.len() as f64 / (self.field_groups * (self.starts.len() - 1)).max(1) as f64
    }

    /// The entries multiplied per output pixel.
    pub fn entries(&self) -> usize {
        self.weights.len()
    }

    /// The bytes the lists hold.
    pub fn bytes(&self) -> usize {
        self.starts.len() * size_of::<usize>()
            + self.offsets.len() * size_of::<u32>()
            + self.weights.len() * 64
    }

    /// The origin (byte offset in the padded image) of output pixel (oy, ox).
    pub fn origin(&self, g: &Geometry, (oy, ox): (usize, usize)) -> usize {
        let (row, column) = self.steps(g);
        oy * row + ox * column
    }

    /// How far the origin moves per output row and per output column.
    pub fn steps(&self, g: &Geometry) -> (usize, usize) {
        (g.stride.0 * self.columns * g.in_c, g.stride.1 * g.in_c)
    }
}

#[cfg(target_arch = "x86_64")]
impl FieldFilter {
    /// `out[group * n + c]` = the requantized maximum over each group of `cells` consecutive
    /// origins of the sums `Σ image[origin + offset ..][..4] · weights` of channel `c`
    /// (`cells` = 1: the convolution itself). `image` is the padded image, its bytes
    /// already shifted to 0..=255.
    ///
    /// # Panics
    /// When `cells` does not divide [`PIXELS`] or the origins, a field reaches past `image`,
    /// `out` is short, or `q`'s parameters are not padded to whole registers.
    pub fn multiply_max_requantized(
        &self,
        image: &[u8],
        origins: &[usize],
        cells: usize,
        q: &Requantization<'_>,
        out: &mut [u8],
    ) {
        assert!(cells > 0 && PIXELS.is_multiple_of(cells) && origins.len().is_multiple_of(cells));
        assert!(
            origins.len() <= MAX_ORIGINS,
            "at most {MAX_ORIGINS} origins per call"
        );
        assert!(out.len() >= origins.len() / cells * self.n);
        // Whole tiles of origins, made once for every block: a short last tile repeats its
        // last origin (only its own groups are stored).
        let mut tiles = [[0; PIXELS]; MAX_ORIGINS / PIXELS];
        for (tile, chunk) in tiles.iter_mut().zip(origins.chunks(PIXELS)) {
            let last = chunk[chunk.len() - 1];
            *tile = std::array::from_fn(|i| chunk.get(i).copied().unwrap_or(last));
            let furthest = tile.iter().fold(0, |m: usize, &o| m.max(o));
            assert!(
                furthest + self.reach <= image.len(),
                "field GEMM: a field reaches past the image"
            );
        }
        let tiles = &tiles[..origins.len().div_ceil(PIXELS)];
        let padded = self.n.div_ceil(LANES) * LANES;
        assert!(q.offsets.len() >= padded && q.wide.padded_len() >= padded);
        // SAFETY: a FieldFilter is used only where the CPU has VNNI and the requantization's
        // AVX-512 subsets (the caller holds a `WideRescale`, made only on such CPUs); the
        // outputs and parameters are asserted above, each tile's fields in `tiles`.
        let groups = origins.len() / cells;
        unsafe {
            match cells {
                1 => self.tiles::<1>(image, tiles, groups, q, out),
                2 => self.tiles::<2>(image, tiles, groups, q, out),
                4 => self.tiles::<4>(image, tiles, groups, q, out),
                _ => self.tiles::<8>(image, tiles, groups, q, out),
            }
        }
    }

    /// `sums[i * n + c]` = `Σ image[origin_i + offset ..][..4] · weights` of channel `c`,
    /// unrequantized: the sums of a fully-connected layer (one origin per input row, which
    /// must hold three bytes past its end).
    ///
    /// # Panics
    /// When a field reaches past `image` or `sums` is short.
    pub fn multiply(&self, image: &[u8], origins: &[usize], sums: &mut [i32]) {
        assert!(sums.len() >= origins.len() * self.n);
        let furthest = origins.iter().fold(0, |m: usize, &o| m.max(o));
        assert!(
            origins.is_empty() || furthest + self.reach <= image.len(),
            "field GEMM: a field reaches past the image"
        );
        // SAFETY: as `multiply_max_requantized`; the fields and sums are asserted above.
        unsafe { self.sums_avx512(image, origins, sums) }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512dq,avx512vl")]
    unsafe fn sums_avx512(&self, image: &[u8], origins: &[usize], sums: &mut [i32]) {
        for block in 0..self.starts.len() - 1 {
            let entries = self.starts[block]..self.starts[block + 1];
            let (offsets, weights) = (&self.offsets[entries.clone()], &self.weights[entries]);
            let channel = block * LANES;
            let lanes: __mmask16 = ((1u32 << (self.n - channel).min(LANES)) - 1) as __mmask16;
            let base = sums.as_mut_ptr();
            // SAFETY (both stores): row i's channels below n lie within `sums` (asserted).
            let store = |i: usize, sum: __m512i| unsafe {
                _mm512_mask_storeu_epi32(base.add(i * self.n + channel).cast(), lanes, sum);
            };
            let tiles = origins.chunks_exact(PIXELS);
            let rest = tiles.remainder();
            for (t, tile) in tiles.enumerate() {
                let fields: [usize; PIXELS] = std::array::from_fn(|i| tile[i]);
                // SAFETY: the fields lie within `image` (asserted by the caller).
                let tile_sums = unsafe { field_sums(image.as_ptr(), &fields, offsets, weights) };
                for (i, &sum) in tile_sums.iter().enumerate() {
                    store(t * PIXELS + i, sum);
                }
            }
            // Single rows (a batch of one): one row of sums, not eight copies of it.
            let done = origins.len() - rest.len();
            for (i, &origin) in rest.iter().enumerate() {
                // SAFETY: as above.
                let [sum] = unsafe { field_sums(image.as_ptr(), &[origin], offsets, weights) };
                store(done + i, sum);
            }
        }
    }

    /// Block after block of 16 channels (its rescale loaded once), tile after tile of
    /// [`PIXELS`] origins.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512dq,avx512vl")]
    unsafe fn tiles<const CELLS: usize>(
        &self,
        image: &[u8],
        tiles: &[[usize; PIXELS]],
        groups: usize,
        q: &Requantization<'_>,
        out: &mut [u8],
    ) {
        // SAFETY: the features are enabled.
        let constants = unsafe { WideConstants::new(q.range) };
        let groups_per_tile = PIXELS / CELLS;
        for block in 0..self.starts.len() - 1 {
            let entries = self.starts[block]..self.starts[block + 1];
            let (offsets, weights) = (&self.offsets[entries.clone()], &self.weights[entries]);
            let channel = block * LANES;
            let lanes: __mmask16 = ((1u32 << (self.n - channel).min(LANES)) - 1) as __mmask16;
            // SAFETY: the parameters are padded to whole registers (asserted by the caller).
            let (channel_offsets, rescale) = unsafe {
                (
                    _mm512_loadu_si512(q.offsets.as_ptr().add(channel).cast()),
                    ChannelLanes::load(q.wide, channel),
                )
            };
            for (t, fields) in tiles.iter().enumerate() {
                let out = &mut out[t * groups_per_tile * self.n..];
                let stored = (groups - t * groups_per_tile).min(groups_per_tile);
                // SAFETY: every field of the tile lies within `image` (asserted), the outputs
                // of its groups within `out` (the caller's assertion).
                unsafe {
                    let sums = field_sums(image.as_ptr(), fields, offsets, weights);
                    let groups = sums.chunks_exact(CELLS).take(stored);
                    for (group, cells) in groups.enumerate() {
                        let max = cells.iter().fold(cells[0], |m, &s| _mm512_max_epi32(m, s));
                        let sum = _mm512_add_epi32(max, channel_offsets);
                        _mm_mask_storeu_epi8(
                            out.as_mut_ptr().add(group * self.n + channel).cast(),
                            lanes,
                            rescale.rescale(&constants, sum),
                        );
                    }
                }
            }
        }
    }
}

/// `P` pixels' sums over one block's entries (eight, or one for a single row). Always inlined and without target features
/// of its own, so that it takes its caller's (a call would pass the registers through
/// memory), and each broadcast folds into `vpdpbusd`'s memory operand.
///
/// # Safety
/// Called only from functions that enable AVX-512 F and VNNI; `origin + offset + 4` lies
/// within the image for every origin and entry.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn field_sums<const P: usize>(
    image: *const u8,
    origins: &[usize; P],
    offsets: &[u32],
    weights: &[[i8; 64]],
) -> [__m512i; P] {
    // SAFETY: as the caller guarantees.
    unsafe {
        let fields: [*const u8; P] = std::array::from_fn(|i| image.add(origins[i]));
        let step = |acc: &mut [__m512i; P], offset: u32, weights: &[i8; 64]| {
            let w = _mm512_loadu_si512(weights.as_ptr().cast());
            let offset = offset as usize;
            for (acc, field) in acc.iter_mut().zip(&fields) {
                let x = _mm512_set1_epi32(field.add(offset).cast::<i32>().read_unaligned());
                *acc = _mm512_dpbusd_epi32(*acc, x, w);
            }
        };
        // Two sets of sums, for the even and the odd entries: sixteen independent chains,
        // as many as keep `vpdpbusd` busy through its latency.
        let (mut even, mut odd) = ([_mm512_setzero_si512(); P], [_mm512_setzero_si512(); P]);
        let (offset_pairs, weight_pairs) = (offsets.chunks_exact(2), weights.chunks_exact(2));
        if let (&[offset], [weights]) = (offset_pairs.remainder(), weight_pairs.remainder()) {
            step(&mut odd, offset, weights);
        }
        for (offset, weights) in offset_pairs.zip(weight_pairs) {
            step(&mut even, offset[0], &weights[0]);
            step(&mut odd, offset[1], &weights[1]);
        }
        std::array::from_fn(|i| _mm512_add_epi32(even[i], odd[i]))
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::kernels::common::igemm::Isa;
    use crate::kernels::common::requantize::{ChannelRescale, OutputRange};
    use crate::kernels::common::testing::seeded;
    use kiln_tflite::quant::{multiply_by_quantized_multiplier, quantize_multiplier};

    /// Random geometries (channels 1 to 9, dilations, strides, pruned and dense filters):
    /// every output byte equals the requantized maximum of the naive sums.
    #[test]
    fn sums_and_maxima_equal_the_naive_ones() {
        if Isa::detect() != Isa::Vnni {
            return;
        }
        let mut next = seeded(7);
        let mut tested = 0;
        for case in 0..60 {
            let c = 1 + next(9) as usize;
            let (fh, fw) = (1 + next(3) as usize, 1 + next(3) as usize);
            let dilation = (1 + next(2) as usize, 1 + next(2) as usize);
            let stride = (1 + next(2) as usize, 1 + next(2) as usize);
            let out_c = 1 + next(40) as usize;
            let (out_h, out_w) = (1 + next(5) as usize, 1 + next(6) as usize);
            let rows = (out_h - 1) * stride.0 + (fh - 1) * dilation.0 + 1;
            let columns = (out_w - 1) * stride.1 + (fw - 1) * dilation.1 + 1;
            let g = Geometry {
                batches: 1,
                in_h: rows,
                in_w: columns,
                in_c: c,
                out_h,
                out_w,
                out_c,
                filter_h: fh,
                filter_w: fw,
                stride,
                dilation,
                pad: (0, 0),
            };
            let k = fh * fw * c;
            let prune = case % 2 == 0;
            let filter: Vec<i8> = (0..out_c * k)
                .map(|i| {
                    // Pruned: whole 16 × 4 blocks of zeros along the flattened field.
                    if prune && !(i % k / 4 + i / k / 16).is_multiple_of(3) {
                        0
                    } else {
                        next(256) as u8 as i8
                    }
                })
                .collect();
            let Some(f) = FieldFilter::new(&g, columns, prune, |o, kk| filter[o * k + kk]) else {
                continue;
            };
            let image: Vec<u8> = (0..rows * columns * c + 8)
                .map(|_| next(256) as u8)
                .collect();
            let cells = [1, 2, 4, 8][next(4) as usize];
            let pixels: Vec<(usize, usize)> = (0..out_h)
                .flat_map(|y| (0..out_w).map(move |x| (y, x)))
                .collect();
            let count = pixels.len() / cells * cells;
            let origins: Vec<usize> = pixels[..count].iter().map(|&p| f.origin(&g, p)).collect();
            let naive = |(oy, ox): (usize, usize), o: usize| -> i32 {
                let mut sum = 0i32;
                for ky in 0..fh {
                    for kx in 0..fw {
                        for ch in 0..c {
                            let (iy, ix) = (
                                oy * stride.0 + ky * dilation.0,
                                ox * stride.1 + kx * dilation.1,
                            );
                            let x = i32::from(image[(iy * columns + ix) * c + ch]);
                            sum += x * i32::from(filter[o * k + (ky * fw + kx) * c + ch]);
                        }
                    }
                }
                sum
            };
            let multipliers: Vec<_> = (0..out_c)
                .map(|o| quantize_multiplier(0.0005 + 0.0001 * o as f64))
                .collect();
            let rescale = ChannelRescale::new(&multipliers);
            let Some(wide) = rescale.wide() else { continue };
            let mut offsets: Vec<i32> = (0..out_c).map(|o| o as i32 * 37 - 500).collect();
            offsets.resize(out_c.div_ceil(16) * 16, 0);
            let range = OutputRange {
                offset: -3,
                min: -128,
                max: 127,
            };
            let q = Requantization {
                wide,
                offsets: &offsets,
                range,
            };
            let groups = count / cells;
            tested += 1;
            let mut out = vec![0u8; groups * out_c];
            f.multiply_max_requantized(&image, &origins, cells, &q, &mut out);
            for group in 0..groups {
                for o in 0..out_c {
                    let max = (0..cells)
                        .map(|i| naive(pixels[group * cells + i], o))
                        .max()
                        .unwrap();
                    let scaled = multiply_by_quantized_multiplier(max + offsets[o], multipliers[o]);
                    let expected = (scaled + range.offset).clamp(range.min, range.max) as u8;
                    assert_eq!(
                        out[group * out_c + o],
                        expected,
                        "case {case}, group {group}, channel {o}"
                    );
                }
            }
        }
        assert!(
            tested >= 40,
            "only {tested} of 60 geometries took the kernel"
        );
    }
}
