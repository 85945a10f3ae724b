//! A row of int32 accumulators to 8-bit outputs at once, one output channel per element:
//! TFLite's MultiplyByQuantizedMultiplier (gemmlowp's double rounding, as
//! `kiln_tflite::quant` computes it one value at a time), the output zero point and the
//! activation clamp. On AVX-512 it runs in 64-bit lanes through two exact identities
//! ([`requantize_wide`]); elsewhere, and for the i32::MIN multiplier those identities exclude,
//! as the literal transcription written without branches so that it vectorises (compiled for
//! AVX2 besides the baseline, chosen at run time). The bits are the scalar function's: the
//! tests compare every path with it.

use kiln_tflite::quant::QuantizedMultiplier;

/// Per-channel fixed-point multipliers, split into the parts the row loop reads. They are
/// kept for one row of at least 16 values (a few channels repeat to fill a register) and the
/// accumulators are requantized row after row, so the parameters stay in L1 however many
/// pixels one call finishes.
#[derive(Debug)]
pub struct ChannelRescale {
    multiplier: Vec<i32>,
    left_shift: Vec<u32>,
    right_shift: Vec<i32>,
    isa: RowIsa,
    /// The row's parameters for [`requantize_wide`], when it applies (every multiplier but
    /// i32::MIN, the one the doubling multiply saturates on).
    wide: Option<Box<WideRescale>>,
}

impl WideRescale {
    /// Channels the parameters cover, padded to whole registers.
    pub fn padded_len(&self) -> usize {
        self.multiplier.len()
    }
}

/// What a kernel's fused epilogue needs to finish its sums into bytes ([`rescale_lanes`]).
#[cfg(target_arch = "x86_64")]
pub struct Requantization<'a> {
    pub wide: &'a WideRescale,
    /// Per output channel (correction and bias), padded to a multiple of 16.
    pub offsets: &'a [i32],
    pub range: OutputRange,
}

/// Per lane, padded to whole registers: the multiplier and left shift as i32, and for the
/// even and the odd lanes apart (64-bit arithmetic) the terms of [`rescale_lanes`]'s one
/// division: the added constant 2^30 + 2^(s−1)·2^31, what a product below −2^30 takes off it
/// (2^31 when s > 0) and the shift 31 + s.
#[derive(Debug)]
pub struct WideRescale {
    multiplier: Vec<i32>,
    left_shift: Vec<u32>,
    any_left_shift: bool,
    constant: [Vec<i64>; 2],
    negative: [Vec<i64>; 2],
    shift: [Vec<i64>; 2],
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum RowIsa {
    Avx512,
    Avx2,
    Baseline,
}

/// What follows the rescale: the output zero point and the clamp of the fused activation.
#[derive(Clone, Copy, Debug)]
pub struct OutputRange {
    pub offset: i32,
    pub min: i32,
    pub max: i32,
}

impl OutputRange {
    /// This range clamped further to `(min, max)` (a following operator's fused activation in
    /// the same quantization), when anything is left.
    pub fn within(self, (min, max): (i32, i32)) -> Option<Self> {
        let clamped = Self {
            min: self.min.max(min),
            max: self.max.min(max),
            ..self
        };
        (clamped.min <= clamped.max).then_some(clamped)
    }

    /// `q`'s output zero point and activation clamp.
    pub fn of(q: &super::weighted::Quantized) -> Self {
        Self {
            offset: q.output_offset,
            min: q.range.0,
            max: q.range.1,
        }
    }
}

impl ChannelRescale {
    /// The multipliers of each channel (channels innermost, as the outputs lie).
    pub fn new(multipliers: &[QuantizedMultiplier]) -> Self {
        let pixels = if multipliers.is_empty() {
            0
        } else {
            16usize.div_ceil(multipliers.len())
        };
        let repeated = || multipliers.iter().cycle().take(multipliers.len() * pixels);
        Self {
            multiplier: repeated().map(|m| m.multiplier).collect(),
            left_shift: repeated().map(|m| m.shift.clamp(0, 31) as u32).collect(),
            right_shift: repeated().map(|m| (-m.shift).clamp(0, 31)).collect(),
            isa: detect(),
            wide: None,
        }
        .with_wide()
    }

    fn with_wide(mut self) -> Self {
        if self.multiplier.contains(&i32::MIN) {
            return self;
        }
        let padded = self.multiplier.len().div_ceil(16) * 16;
        let pad = |v: &[i32]| -> Vec<i32> {
            let mut v = v.to_vec();
            v.resize(padded, 0);
            v
        };
        let right = pad(&self.right_shift);
        let split = |f: &dyn Fn(i32) -> i64| -> [Vec<i64>; 2] {
            [0, 1].map(|parity| {
                right
                    .iter()
                    .skip(parity)
                    .step_by(2)
                    .map(|&s| f(s))
                    .collect()
            })
        };
        let mut left = self.left_shift.clone();
        left.resize(padded, 0);
        self.wide = Some(Box::new(WideRescale {
            multiplier: pad(&self.multiplier),
            any_left_shift: left.iter().any(|&l| l != 0),
            left_shift: left,
            constant: split(&|s| (1i64 << 30) + (((1i64 << s) >> 1) << 31)),
            negative: split(&|s| i64::from(s > 0) << 31),
            shift: split(&|s| 31 + i64::from(s)),
        }));
        self
    }

    /// The parameters a fused GEMM epilogue reads ([`rescale_lanes`]), on CPUs that run it.
    pub fn wide(&self) -> Option<&WideRescale> {
        (self.isa == RowIsa::Avx512)
            .then_some(self.wide.as_deref())
            .flatten()
    }

    /// The bytes the parameters hold.
    pub fn bytes(&self) -> usize {
        let row = self.multiplier.len() * 3 * size_of::<i32>();
        let wide = self.wide.as_ref().map_or(0, |w| {
            w.multiplier.len() * 2 * size_of::<i32>() + w.multiplier.len() * 3 * size_of::<i64>()
        });
        row + wide
    }

    /// The length of one row of parameters: a whole number of pixels' channels.
    pub fn row_len(&self) -> usize {
        self.multiplier.len()
    }

    /// A per-channel offset laid out like a row of parameters (what [`Self::requantize`]
    /// takes).
    pub fn periodic(&self, per_channel: &[i32]) -> Vec<i32> {
        per_channel
            .iter()
            .copied()
            .cycle()
            .take(self.row_len())
            .collect()
    }

    /// `out[i] = clamp(rescale_c(acc[i] + offset_c) + zero point)` as a byte (int8 or uint8
    /// bits) for every element of `acc` and `out` (equally long, whole pixels), channel
    /// c = i mod channels; `offset` is [`Self::periodic`]'s layout.
    pub fn requantize(&self, acc: &[i32], offset: &[i32], range: OutputRange, out: &mut [u8]) {
        let row = self.row_len();
        if row == 0 {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if let (RowIsa::Avx512, Some(wide), 0) = (self.isa, &self.wide, row % 16) {
            // Rows of whole registers: one pass over every row, the parameters' index
            // wrapping (a per-tensor rescale is a row of 16).
            // SAFETY: `detect` found the features the function is compiled for.
            return unsafe { requantize_wide(wide, acc, offset, range, out) };
        }
        for (acc, out) in acc.chunks(row).zip(out.chunks_mut(row)) {
            match (self.isa, &self.wide) {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `detect` found the features the function is compiled for.
                (RowIsa::Avx512, Some(wide)) => unsafe {
                    requantize_wide(wide, acc, offset, range, out)
                },
                // The one case the wide path leaves (an i32::MIN multiplier, only in a malformed
                // file) takes the literal transcription; AVX-512 CPUs have AVX2.
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                (RowIsa::Avx512 | RowIsa::Avx2, _) => unsafe {
                    requantize_avx2(self, acc, offset, range, out)
                },
                _ => requantize_row(self, acc, offset, range, out),
            }
        }
    }
}

fn detect() -> RowIsa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512bw")
        {
            return RowIsa::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return RowIsa::Avx2;
        }
    }
    RowIsa::Baseline
}

/// The same bits in fewer instructions, sixteen channels per step (AVX-512), using two
/// identities of TFLite's arithmetic: the doubling high multiply's nudge-and-truncate is
/// `h = (x·m + 2^30) >> 31` (floor) whenever it does not saturate (m ≠ i32::MIN), and the
/// rounding divide by 2^s is `(h + 2^(s−1) − [h < 0]) >> s` (floor) for s > 0. Two nested
/// floor divisions are one (⌊(⌊a/b⌋ + c)/d⌋ = ⌊(a + c·b)/(b·d)⌋), and h < 0 exactly when
/// x·m < −2^30, so the whole rescale is one 64-bit sum shifted once (see [`rescale_lanes`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw")]
unsafe fn requantize_wide(
    r: &WideRescale,
    acc: &[i32],
    offset: &[i32],
    range: OutputRange,
    out: &mut [u8],
) {
    use std::arch::x86_64::*;
    let period = r.multiplier.len();
    // Past one row, only rows of whole registers (the parameters wrap at a register).
    let n = if offset.len() >= period && period.is_multiple_of(16) {
        out.len().min(acc.len())
    } else {
        out.len().min(acc.len()).min(offset.len()).min(period)
    };
    // SAFETY: the caller's CPU has the features this function is compiled for.
    let constants = unsafe { WideConstants::new(range) };
    for start in (0..n).step_by(16) {
        let count = (n - start).min(16);
        let lanes: __mmask16 = ((1u32 << count) - 1) as __mmask16;
        let channel = start % period;
        // SAFETY: acc and out are read and written under the mask within their first n
        // elements; offset within its first min(n, period) (channel + count ≤ its length
        // either way); the parameters are padded to whole registers.
        unsafe {
            let x = _mm512_add_epi32(
                _mm512_maskz_loadu_epi32(lanes, acc.as_ptr().add(start)),
                _mm512_maskz_loadu_epi32(lanes, offset.as_ptr().add(channel)),
            );
            let bytes = rescale_lanes(r, &constants, x, channel);
            _mm_mask_storeu_epi8(out.as_mut_ptr().add(start).cast(), lanes, bytes);
        }
    }
}

/// The registers one requantization's every step reads.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub struct WideConstants {
    negative_threshold: std::arch::x86_64::__m512i,
    limit: std::arch::x86_64::__m512i,
    add_offset: std::arch::x86_64::__m512i,
    min: std::arch::x86_64::__m512i,
    max: std::arch::x86_64::__m512i,
    offset_non_negative: bool,
}

#[cfg(target_arch = "x86_64")]
impl WideConstants {
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub unsafe fn new(range: OutputRange) -> Self {
        use std::arch::x86_64::*;
        Self {
            negative_threshold: _mm512_set1_epi64(-(1 << 30)),
            // A saturating add of one scalar: clamp first to where the sum cannot overflow.
            limit: if range.offset >= 0 {
                _mm512_set1_epi32(i32::MAX - range.offset)
            } else {
                _mm512_set1_epi32(i32::MIN - range.offset)
            },
            add_offset: _mm512_set1_epi32(range.offset),
            min: _mm512_set1_epi32(range.min),
            max: _mm512_set1_epi32(range.max),
            offset_non_negative: range.offset >= 0,
        }
    }
}

/// Sixteen sums (offsets already added) of channels `start..start + 16` to bytes.
///
/// # Safety
/// The CPU must have AVX-512F, DQ, VL and BW; `start` must be a multiple of 16 below the
/// parameters' padded length.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw")]
#[inline]
pub unsafe fn rescale_lanes(
    r: &WideRescale,
    k: &WideConstants,
    x: std::arch::x86_64::__m512i,
    start: usize,
) -> std::arch::x86_64::__m128i {
    // SAFETY: as the caller guarantees.
    unsafe { ChannelLanes::load(r, start).rescale(k, x) }
}

/// One register of channels' rescale parameters, loaded once for every row of a tile (a
/// load per row and step was a third of a small layer's epilogue).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub struct ChannelLanes {
    left_shift: Option<std::arch::x86_64::__m512i>,
    multiplier: std::arch::x86_64::__m512i,
    /// Per parity (even, odd dwords): the 64-bit constant, negative correction and shift.
    constant: [std::arch::x86_64::__m512i; 2],
    negative: [std::arch::x86_64::__m512i; 2],
    shift: [std::arch::x86_64::__m512i; 2],
}

#[cfg(target_arch = "x86_64")]
impl ChannelLanes {
    /// Channels `start..start + 16`.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `start` must be a multiple of 16 below the parameters'
    /// padded length.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub unsafe fn load(r: &WideRescale, start: usize) -> Self {
        use std::arch::x86_64::*;
        let pair = start / 2;
        // SAFETY: the parameters are padded to whole registers past `start` (caller).
        unsafe {
            let load = |v: &[Vec<i64>; 2], parity: usize| {
                _mm512_loadu_si512(v[parity].as_ptr().add(pair).cast())
            };
            Self {
                left_shift: r
                    .any_left_shift
                    .then(|| _mm512_loadu_si512(r.left_shift.as_ptr().add(start).cast())),
                multiplier: _mm512_loadu_si512(r.multiplier.as_ptr().add(start).cast()),
                constant: [load(&r.constant, 0), load(&r.constant, 1)],
                negative: [load(&r.negative, 0), load(&r.negative, 1)],
                shift: [load(&r.shift, 0), load(&r.shift, 1)],
            }
        }
    }

    /// Sixteen sums (offsets already added) of these channels to bytes.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, DQ, VL and BW.
    #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx512bw")]
    #[inline]
    pub unsafe fn rescale(
        &self,
        k: &WideConstants,
        x: std::arch::x86_64::__m512i,
    ) -> std::arch::x86_64::__m128i {
        use std::arch::x86_64::*;
        let x = match self.left_shift {
            Some(left_shift) => _mm512_sllv_epi32(x, left_shift),
            None => x,
        };
        let m = self.multiplier;
        // ⌊(x·m + 2^30 + 2^(s−1)·2^31 − [x·m < −2^30]·[s > 0]·2^31) / 2^(31+s)⌋ per 64-bit lane.
        let divide = |product: __m512i, parity: usize| {
            let below = _mm512_cmplt_epi64_mask(product, k.negative_threshold);
            let sum = _mm512_add_epi64(product, self.constant[parity]);
            let sum = _mm512_mask_sub_epi64(sum, below, sum, self.negative[parity]);
            _mm512_srav_epi64(sum, self.shift[parity])
        };
        let even = divide(_mm512_mul_epi32(x, m), 0);
        // The odd lanes' values moved to the even positions: 0xF5 picks dwords 1, 1, 3, 3.
        let odd = divide(
            _mm512_mul_epi32(
                _mm512_shuffle_epi32::<0xF5>(x),
                _mm512_shuffle_epi32::<0xF5>(m),
            ),
            1,
        );
        // Each odd result's low dword into the odd position (0xA0 picks dwords 0, 0, 2, 2).
        let scaled = _mm512_mask_shuffle_epi32::<0xA0>(even, 0xAAAA, odd);
        let bounded = if k.offset_non_negative {
            _mm512_min_epi32(scaled, k.limit)
        } else {
            _mm512_max_epi32(scaled, k.limit)
        };
        let value = _mm512_min_epi32(
            _mm512_max_epi32(_mm512_add_epi32(bounded, k.add_offset), k.min),
            k.max,
        );
        _mm512_cvtepi32_epi8(value)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn requantize_avx2(
    r: &ChannelRescale,
    acc: &[i32],
    offset: &[i32],
    range: OutputRange,
    out: &mut [u8],
) {
    requantize_row(r, acc, offset, range, out);
}

#[inline(always)]
fn requantize_row(
    r: &ChannelRescale,
    acc: &[i32],
    offset: &[i32],
    range: OutputRange,
    out: &mut [u8],
) {
    let n = out
        .len()
        .min(acc.len())
        .min(offset.len())
        .min(r.multiplier.len());
    let (acc, offset, out) = (&acc[..n], &offset[..n], &mut out[..n]);
    let (multiplier, left, right) = (&r.multiplier[..n], &r.left_shift[..n], &r.right_shift[..n]);
    // Wrapping operations throughout: they are what the arithmetic means here, and they keep
    // overflow checks (debug builds) from stopping the loop from vectorising.
    for c in 0..n {
        let x = acc[c].wrapping_add(offset[c]).wrapping_shl(left[c]);
        let m = multiplier[c];
        // SaturatingRoundingDoublingHighMul: (x·m + nudge) / 2^31, truncating toward zero.
        let product = i64::from(x).wrapping_mul(i64::from(m));
        let negative = product >> 63;
        let nudge = (1i64 << 30).wrapping_add(negative & (1 - (1i64 << 31)));
        let sum = product.wrapping_add(nudge);
        let toward_zero = sum.wrapping_add((sum >> 63) & ((1i64 << 31) - 1));
        let high = (toward_zero >> 31) as i32;
        let high = if x == i32::MIN && m == i32::MIN {
            i32::MAX
        } else {
            high
        };
        // RoundingDivideByPOT: half away from zero.
        let shift = right[c] as u32;
        let mask = (1i64.wrapping_shl(shift) as i32).wrapping_sub(1);
        let remainder = high & mask;
        let threshold = (mask >> 1).wrapping_add((high >> 31) & 1);
        let scaled = high
            .wrapping_shr(shift)
            .wrapping_add(i32::from(remainder > threshold));
        out[c] = scaled
            .saturating_add(range.offset)
            .clamp(range.min, range.max) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_tflite::quant::{multiply_by_quantized_multiplier, quantize_multiplier};

    #[test]
    fn every_path_equals_the_scalar_rescale() {
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 32) as u32
        };
        let channels: usize = 37;
        let mut multipliers: Vec<QuantizedMultiplier> = (0..channels)
            .map(|c| {
                quantize_multiplier(f64::from(next() % 1000 + 1) * 10f64.powi(c as i32 % 9 - 6))
            })
            .collect();
        // The extremes: a shift that clamps, the largest multiplier.
        multipliers[0].shift = 40;
        multipliers[1].shift = -40;
        multipliers[2].multiplier = i32::MIN;
        let rescale = ChannelRescale::new(&multipliers);
        let ranges = [
            (-3, -128, 127),
            (130, 0, 255),
            (i32::MAX, -128, 127),
            (i32::MIN, 0, 255),
        ]
        .map(|(offset, min, max)| OutputRange { offset, min, max });
        for round in 0..400 {
            let range = ranges[round % ranges.len()];
            let acc: Vec<i32> = (0..channels)
                .map(|c| match (round, c) {
                    (0, _) => i32::MIN,
                    (1, _) => i32::MAX,
                    _ => next() as i32 >> (next() % 24),
                })
                .collect();
            let offset: Vec<i32> = (0..channels).map(|_| next() as i32 >> 20).collect();
            let expected: Vec<u8> = (0..channels)
                .map(|c| {
                    let scaled = multiply_by_quantized_multiplier(
                        acc[c].wrapping_add(offset[c]),
                        multipliers[c],
                    );
                    scaled
                        .saturating_add(range.offset)
                        .clamp(range.min, range.max) as u8
                })
                .collect();
            let mut out = vec![0u8; channels];
            rescale.requantize(&acc, &offset, range, &mut out);
            assert_eq!(out, expected, "round {round}");
            #[cfg(target_arch = "x86_64")]
            if detect() == RowIsa::Avx512 {
                // Without the i32::MIN multiplier, which the wide path leaves to the others.
                let mut plain = multipliers.clone();
                plain[2].multiplier = i32::MAX;
                let plain_rescale = ChannelRescale::new(&plain);
                let wide = plain_rescale.wide.as_ref().expect("no i32::MIN multiplier");
                let mut got = vec![0u8; channels];
                // SAFETY: the CPU has the AVX-512 subsets the function needs.
                unsafe { requantize_wide(wide, &acc, &offset, range, &mut got) };
                let want: Vec<u8> = (0..channels)
                    .map(|c| {
                        multiply_by_quantized_multiplier(acc[c].wrapping_add(offset[c]), plain[c])
                            .saturating_add(range.offset)
                            .clamp(range.min, range.max) as u8
                    })
                    .collect();
                assert_eq!(got, want, "wide, round {round}");
            }
            let mut portable = vec![0u8; channels];
            requantize_row(&rescale, &acc, &offset, range, &mut portable);
            assert_eq!(portable, expected, "round {round}");
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                let mut avx2 = vec![0u8; channels];
                // SAFETY: the CPU has AVX2.
                unsafe { requantize_avx2(&rescale, &acc, &offset, range, &mut avx2) };
                assert_eq!(avx2, expected, "round {round}");
            }
        }
    }

    /// Many rows in one call, for the row lengths that take one pass (a per-tensor rescale's
    /// 16, 32 channels) and one that does not (40): every byte equals the scalar rescale of
    /// its channel.
    #[test]
    fn many_rows_in_one_call_equal_the_scalar_rescale() {
        let mut state = 0x0dd_ba11u64;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 32) as u32
        };
        for channels in [1usize, 32, 40] {
            let multipliers: Vec<QuantizedMultiplier> = (0..channels)
                .map(|c| {
                    quantize_multiplier(f64::from(next() % 1000 + 1) * 10f64.powi(c as i32 % 5 - 5))
                })
                .collect();
            let rescale = ChannelRescale::new(&multipliers);
            let per_channel: Vec<i32> = (0..channels).map(|_| next() as i32 >> 12).collect();
            let offset = rescale.periodic(&per_channel);
            let range = OutputRange {
                offset: 5,
                min: -128,
                max: 127,
            };
            // Whole pixels, not a whole number of rows.
            let len = channels * 37;
            let acc: Vec<i32> = (0..len).map(|_| next() as i32 >> (next() % 20)).collect();
            let mut out = vec![0u8; len];
            rescale.requantize(&acc, &offset, range, &mut out);
            for (i, (&a, &o)) in acc.iter().zip(&out).enumerate() {
                let c = i % channels;
                let want = multiply_by_quantized_multiplier(
                    a.wrapping_add(per_channel[c]),
                    multipliers[c],
                )
                .saturating_add(range.offset)
                .clamp(range.min, range.max) as u8;
                assert_eq!(o, want, "{channels} channels, element {i}");
            }
        }
    }
}
