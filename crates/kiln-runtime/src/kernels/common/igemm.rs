//! The integer GEMM under the quantized convolutions: activations as unsigned bytes times
//! weights as signed bytes, summed in i32. Weights are packed once at prepare, in the layout
//! the microkernel of the CPU's best instruction set reads:
//!
//! - **VNNI** (AVX-512 `vpdpbusd`): 16 output channels per register, 4 consecutive `k` per
//!   lane, one instruction multiplies and sums 64 byte pairs;
//! - **AVX2** (`vpmaddwd`): 8 channels per register, pairs of `k` widened to i16 — exact, unlike
//!   `vpmaddubsw`, whose i16 sums saturate for activations near 255;
//! - **portable**: the AVX2 layout in plain loops, for other CPUs and targets.
//!
//! Integer sums are exact and wrapping i32 addition is associative, so every kernel gives the
//! bits TFLite's reference kernels give, whatever the order. Callers shift activations into
//! `0..=255` and fold the shift and the input zero point into a per-channel correction
//! through [`PackedWeights::sums`].

use super::quant::load_q;
#[cfg(target_arch = "x86_64")]
use super::requantize::{ChannelLanes, Requantization, WideConstants};
use super::weighted::Quantized;

/// Rows (output pixels) per full microkernel call.
pub const ROWS: usize = 8;

/// A quantized layer's constant weights as a GEMM over shifted activations: inputs enter as
/// `byte ^ flip` (0..=255), and Σ (x + input offset)·w = Σ (x ^ flip)·w + correction.
#[derive(Debug)]
pub struct QuantizedGemm {
    pub weights: PackedWeights,
    /// (input offset − shift) × Σ w, per output channel.
    pub correction: Vec<i32>,
    /// XOR that maps an input byte to its shifted value (0x80 for int8, 0 for uint8).
    pub flip: u8,
}

impl QuantizedGemm {
    /// `weights` ([n, k] 8-bit values of `q`'s filter type) packed for this CPU, when their
    /// values after the zero point fit i8 (every int8 model; legacy uint8 filters near
    /// their zero point).
    pub fn new(q: &Quantized, n: usize, k: usize, weights: &[u8]) -> Option<Self> {
        if weights.len() != n * k {
            return None;
        }
        let value = |i: usize| load_q(weights, q.filter_signed, i) + q.filter_offset;
        if !(0..weights.len()).all(|i| i8::try_from(value(i)).is_ok()) {
            return None;
        }
        let packed = PackedWeights::pack(Isa::detect(), n, k, |c, kk| value(c * k + kk) as i8);
        let correction = packed
            .sums
            .iter()
            .map(|&sum| (q.input_offset - Self::shift(q)).wrapping_mul(sum))
            .collect();
        Some(Self {
            weights: packed,
            correction,
            flip: if q.input_signed { 0x80 } else { 0 },
        })
    }

    /// The bytes the packed weights and corrections hold.
    pub fn bytes(&self) -> usize {
        self.weights.bytes() + self.correction.len() * size_of::<i32>()
    }

    /// What the flip adds to an input value: 128 for int8, 0 for uint8.
    pub fn shift(q: &Quantized) -> i32 {
        if q.input_signed { 128 } else { 0 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Vnni,
    Avx2,
    Portable,
}

impl Isa {
    /// The best set this CPU runs.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vnni")
            {
                return Self::Vnni;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return Self::Avx2;
            }
        }
        Self::Portable
    }

    /// Whether this CPU can run `self`.
    #[cfg(test)]
    pub fn available(self) -> bool {
        match self {
            Self::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Self::Vnni => Self::detect() == Self::Vnni,
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Output channels per register.
    fn lanes(self) -> usize {
        match self {
            Self::Vnni => 16,
            Self::Avx2 | Self::Portable => 8,
        }
    }

    /// Consecutive `k` per lane.
    fn depth(self) -> usize {
        match self {
            Self::Vnni => 4,
            Self::Avx2 | Self::Portable => 2,
        }
    }
}

/// `n` output channels × `k` weights, packed for one instruction set.
#[derive(Debug)]
pub struct PackedWeights {
    isa: Isa,
    n: usize,
    /// `k` rounded up to the kernel's depth; activation rows are this long.
    k_padded: usize,
    bytes: Vec<i8>,
    words: Vec<i16>,
    /// Σ over `k` of each channel's weights.
    pub sums: Vec<i32>,
}

impl PackedWeights {
    /// Packs `weight(channel, k)` (values in i8's range) for `isa`.
    pub fn pack(isa: Isa, n: usize, k: usize, weight: impl Fn(usize, usize) -> i8) -> Self {
        let (lanes, depth) = (isa.lanes(), isa.depth());
        let k_padded = k.div_ceil(depth) * depth;
        let blocks = n.div_ceil(lanes);
        let len = blocks * k_padded * lanes;
        let value = |c: usize, kk: usize| {
            if c < n && kk < k { weight(c, kk) } else { 0 }
        };
        // [block][k / depth][lane][depth]
        let index = |block: usize, kk: usize, lane: usize| {
            ((block * (k_padded / depth) + kk / depth) * lanes + lane) * depth + kk % depth
        };
        let (mut bytes, mut words) = (Vec::new(), Vec::new());
        match isa {
            Isa::Vnni => bytes = vec![0i8; len],
            Isa::Avx2 | Isa::Portable => words = vec![0i16; len],
        }
        for block in 0..blocks {
            for lane in 0..lanes {
                for kk in 0..k_padded {
                    let w = value(block * lanes + lane, kk);
                    let at = index(block, kk, lane);
                    match isa {
                        Isa::Vnni => bytes[at] = w,
                        Isa::Avx2 | Isa::Portable => words[at] = i16::from(w),
                    }
                }
            }
        }
        let sums = (0..n)
            .map(|c| (0..k).map(|kk| i32::from(weight(c, kk))).sum())
            .collect();
        Self {
            isa,
            n,
            k_padded,
            bytes,
            words,
            sums,
        }
    }

    /// The bytes the packed copy holds.
    pub fn bytes(&self) -> usize {
        self.bytes.len() + self.words.len() * size_of::<i16>() + self.sums.len() * size_of::<i32>()
    }

    /// Frees the packed weights, keeping the shape and the sums, for an owner that multiplies
    /// through another layout of them (the implicit GEMM's lists); a product after this
    /// panics.
    pub fn release_weights(&mut self) {
        self.bytes = Vec::new();
        self.words = Vec::new();
    }

    /// Whether [`Self::release_weights`] freed the weights.
    fn released(&self) -> bool {
        self.bytes.is_empty() && self.words.is_empty() && self.n > 0 && self.k_padded > 0
    }

    /// The length of one activation row (`k` padded with zeros).
    pub fn row_len(&self) -> usize {
        self.k_padded
    }

    /// `out[r * n + c] = Σ_k a[r * row_len + k] × weight(c, k)` for `rows` rows (`a` holds
    /// that many rows of [`Self::row_len`] bytes).
    pub fn multiply(&self, a: &[u8], rows: usize, out: &mut [i32]) {
        self.multiply_flipped(a, rows, 0, out);
    }

    /// [`Self::multiply`] of rows whose bytes the microkernel XORs with `flip` as it reads
    /// them: int8 activations read in place (a 1×1 convolution's image, when its channels
    /// fill whole rows) instead of copied with their sign bit flipped.
    pub fn multiply_flipped(&self, a: &[u8], rows: usize, flip: u8, out: &mut [i32]) {
        assert!(!self.released(), "packed weights released");
        assert!(a.len() >= rows * self.k_padded && out.len() >= rows * self.n);
        let lanes = self.isa.lanes();
        let block_len = self.k_padded * lanes;
        let blocks = self.n.div_ceil(lanes);
        let mut tile = [[0i32; 32]; ROWS];
        let mut block = 0;
        while block < blocks {
            // VNNI takes two blocks at once while two remain: twice the accumulators per
            // broadcast activation, which hides vpdpbusd's latency.
            let together = if self.isa == Isa::Vnni && block + 1 < blocks {
                2
            } else {
                1
            };
            let first = block * lanes;
            let width = (together * lanes).min(self.n - first);
            let weights = block * block_len..(block + together) * block_len;
            let mut r0 = 0;
            while r0 < rows {
                // Full tiles of ROWS rows, then the rest one row at a time (a batch-1 fully
                // connected layer is all rest).
                let count = if rows - r0 >= ROWS { ROWS } else { 1 };
                let a = &a[r0 * self.k_padded..(r0 + count) * self.k_padded];
                let w = weights.clone();
                match (self.isa, together, count) {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `Isa::Vnni` is only packed when the CPU has AVX-512 VNNI (or by a
                    // test that checked `available`); the slices hold the rows and the blocks.
                    (Isa::Vnni, 2, ROWS) => unsafe {
                        tile_vnni::<2, ROWS>(a, self.k_padded, &self.bytes[w], flip, &mut tile)
                    },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: as above.
                    (Isa::Vnni, 2, _) => unsafe {
                        tile_vnni::<2, 1>(a, self.k_padded, &self.bytes[w], flip, &mut tile)
                    },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: as above.
                    (Isa::Vnni, _, ROWS) => unsafe {
                        tile_vnni::<1, ROWS>(a, self.k_padded, &self.bytes[w], flip, &mut tile)
                    },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: as above.
                    (Isa::Vnni, _, _) => unsafe {
                        tile_vnni::<1, 1>(a, self.k_padded, &self.bytes[w], flip, &mut tile)
                    },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: as above, for AVX2.
                    (Isa::Avx2, _, ROWS) => unsafe {
                        tile_avx2::<ROWS>(a, self.k_padded, &self.words[w], flip, &mut tile)
                    },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: as above, for AVX2.
                    (Isa::Avx2, _, _) => unsafe {
                        tile_avx2::<1>(a, self.k_padded, &self.words[w], flip, &mut tile)
                    },
                    (_, _, ROWS) => {
                        tile_portable::<ROWS>(a, self.k_padded, &self.words[w], flip, &mut tile)
                    }
                    _ => tile_portable::<1>(a, self.k_padded, &self.words[w], flip, &mut tile),
                }
                for (r, sums) in tile.iter().take(count).enumerate() {
                    out[(r0 + r) * self.n + first..][..width].copy_from_slice(&sums[..width]);
                }
                r0 += count;
            }
            block += together;
        }
    }
}

/// ROWS rows × 8 channels from the i16 layout, in plain integer arithmetic.
fn tile_portable<const R: usize>(
    a: &[u8],
    row_len: usize,
    block: &[i16],
    flip: u8,
    tile: &mut [[i32; 32]; ROWS],
) {
    for (r, sums) in tile.iter_mut().enumerate().take(R) {
        let row = &a[r * row_len..][..row_len];
        let mut acc = [0i32; 8];
        for (pair, weights) in row.chunks_exact(2).zip(block.chunks_exact(16)) {
            let (x0, x1) = (i32::from(pair[0] ^ flip), i32::from(pair[1] ^ flip));
            for (lane, w) in weights.chunks_exact(2).enumerate() {
                acc[lane] = acc[lane]
                    .wrapping_add(x0 * i32::from(w[0]))
                    .wrapping_add(x1 * i32::from(w[1]));
            }
        }
        sums[..8].copy_from_slice(&acc);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn tile_avx2<const R: usize>(
    a: &[u8],
    row_len: usize,
    block: &[i16],
    flip: u8,
    tile: &mut [[i32; 32]; ROWS],
) {
    use std::arch::x86_64::*;
    let pairs = block.len() / 16;
    let rows = split_rows::<R>(a, row_len).map(|row| &row[..2 * pairs]);
    let mut acc = [_mm256_setzero_si256(); R];
    for (p, weights) in block.chunks_exact(16).enumerate() {
        // SAFETY: 16 i16 per chunk is one 256-bit load.
        let w = unsafe { _mm256_loadu_si256(weights.as_ptr().cast()) };
        for (acc, row) in acc.iter_mut().zip(&rows) {
            // SAFETY: p < pairs, and each row holds 2 × pairs bytes.
            let pair = unsafe { row.as_ptr().add(2 * p).cast::<u16>().read_unaligned() }
                ^ u16::from_ne_bytes([flip; 2]);
            // The two bytes, each widened to an i16 lane.
            let pair = i32::from(pair & 0xff) | (i32::from(pair >> 8) << 16);
            *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(_mm256_set1_epi32(pair), w));
        }
    }
    for (sums, acc) in tile.iter_mut().zip(acc) {
        // SAFETY: 8 i32 fit the first half of the row.
        unsafe { _mm256_storeu_si256(sums.as_mut_ptr().cast(), acc) };
    }
}

/// The R rows of `a`, each `row_len` long.
#[inline(always)]
fn split_rows<const R: usize>(a: &[u8], row_len: usize) -> [&[u8]; R] {
    std::array::from_fn(|r| &a[r * row_len..(r + 1) * row_len])
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_vnni<const BLOCKS: usize, const R: usize>(
    a: &[u8],
    row_len: usize,
    blocks: &[i8],
    flip: u8,
    tile: &mut [[i32; 32]; ROWS],
) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's CPU has VNNI.
    let acc = unsafe { vnni_sums::<BLOCKS, R>(a, row_len, blocks, flip) };
    for (sums, acc) in tile.iter_mut().zip(acc) {
        for (b, acc) in acc.into_iter().enumerate() {
            // SAFETY: 16 i32 per block, at most two blocks in a 32-wide row.
            unsafe { _mm512_storeu_si512(sums.as_mut_ptr().add(16 * b).cast(), acc) };
        }
    }
}

/// R rows × BLOCKS blocks of 16 channels, summed in registers (`vpdpbusd`, four `k` per
/// instruction). Always inlined, and without target features of its own: inlined into its
/// VNNI callers, the intrinsics take theirs. As a call (a `#[target_feature]` function is
/// never force-inlined), the registers went back through memory with a `memcpy` per tile,
/// which cost a small layer as much as its sums.
///
/// # Safety
/// Only called from functions that enable AVX-512 F, BW and VNNI.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn vnni_sums<const BLOCKS: usize, const R: usize>(
    a: &[u8],
    row_len: usize,
    blocks: &[i8],
    flip: u8,
) -> [[std::arch::x86_64::__m512i; BLOCKS]; R] {
    use std::arch::x86_64::*;
    let block_len = blocks.len() / BLOCKS;
    let quads = block_len / 64;
    assert!(R == 0 || (R - 1) * row_len + 4 * quads <= a.len());
    let (a, w) = (a.as_ptr(), blocks.as_ptr());
    let flip = i32::from_ne_bytes([flip; 4]);
    // SAFETY: the caller enables the features; row r's quad q lies within `a` and block b's
    // within `blocks` (the assertion and the block length).
    unsafe {
        let mut acc = [[_mm512_setzero_si512(); BLOCKS]; R];
        for q in 0..quads {
            let mut weights = [_mm512_setzero_si512(); BLOCKS];
            for (b, weights) in weights.iter_mut().enumerate() {
                *weights = _mm512_loadu_si512(w.add(b * block_len + 64 * q).cast());
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let quad = a.add(r * row_len + 4 * q).cast::<i32>().read_unaligned() ^ flip;
                let quad = _mm512_set1_epi32(quad);
                for (acc, &weights) in acc.iter_mut().zip(&weights) {
                    *acc = _mm512_dpbusd_epi32(*acc, quad, weights);
                }
            }
        }
        acc
    }
}

#[cfg(target_arch = "x86_64")]
impl PackedWeights {
    /// Whether [`Self::multiply_requantized`] runs on this packing (VNNI).
    pub fn fuses(&self) -> bool {
        self.isa == Isa::Vnni
    }

    /// `out[r * n + c] = requantize_c(Σ_k (a[r * row_len + k] ^ flip) × weight(c, k) +
    /// offset_c)` as bytes: the sums never leave the registers.
    ///
    /// # Panics
    /// When the packing is not VNNI ([`Self::fuses`]), the CPU lacks the requantization's
    /// AVX-512 subsets (`q.wide` exists only where it has them), or a slice is too short.
    pub fn multiply_requantized(
        &self,
        a: &[u8],
        rows: usize,
        flip: u8,
        q: &Requantization<'_>,
        out: &mut [u8],
    ) {
        self.multiply_max_requantized(a, rows, flip, 1, q, out);
    }
}

#[cfg(target_arch = "x86_64")]
impl PackedWeights {
    /// [`Self::multiply_requantized`] for rows in groups of `cells` (a pooling window's
    /// pixels, consecutive): each group's maximum sum per channel is requantized into
    /// `out[group * n + c]`. `cells` must divide [`ROWS`] and `rows`.
    ///
    /// # Panics
    /// As [`Self::multiply_requantized`], and when `cells` does not divide both.
    pub fn multiply_max_requantized(
        &self,
        a: &[u8],
        rows: usize,
        flip: u8,
        cells: usize,
        q: &Requantization<'_>,
        out: &mut [u8],
    ) {
        assert!(self.fuses(), "a VNNI packing");
        assert!(!self.released(), "packed weights released");
        assert!(cells > 0 && ROWS.is_multiple_of(cells) && rows.is_multiple_of(cells));
        assert!(a.len() >= rows * self.k_padded && out.len() >= rows / cells * self.n);
        assert!(
            q.offsets.len() >= self.n.div_ceil(16) * 16
                && q.wide.padded_len() >= self.n.div_ceil(16) * 16
        );
        assert!(
            flip == 0 || flip == 0x80,
            "int8 flips the sign bit, uint8 nothing"
        );
        // The flip as a constant: a run-time XOR keeps each activation's broadcast from
        // folding into `vpdpbusd`'s memory operand (+45% on a pooled 3×3 layer).
        if flip == 0 {
            self.max_requantized_tiles::<false>(a, rows, cells, q, out);
        } else {
            self.max_requantized_tiles::<true>(a, rows, cells, q, out);
        }
    }

    fn max_requantized_tiles<const FLIPPED: bool>(
        &self,
        a: &[u8],
        rows: usize,
        cells: usize,
        q: &Requantization<'_>,
        out: &mut [u8],
    ) {
        let lanes = self.isa.lanes();
        let block_len = self.k_padded * lanes;
        let blocks = self.n.div_ceil(lanes);
        // SAFETY: a VNNI packing and a `WideRescale` exist only on CPUs with every subset used.
        let constants = unsafe { WideConstants::new(q.range) };
        for block in (0..blocks).step_by(2) {
            let together = (blocks - block).min(2);
            let weights = &self.bytes[block * block_len..(block + together) * block_len];
            let mut r0 = 0;
            while r0 < rows {
                let count = if rows - r0 >= ROWS { ROWS } else { cells };
                let a = &a[r0 * self.k_padded..(r0 + count) * self.k_padded];
                let out = &mut out[r0 / cells * self.n..];
                let epilogue = Epilogue {
                    q,
                    constants: &constants,
                    first: block * lanes,
                    n: self.n,
                };
                macro_rules! tile {
                    ($($cells:literal),*) => {
                        match (together, count == ROWS, cells) {
                            $(
                                // SAFETY: as above; the slices hold the rows, the blocks and
                                // the groups' outputs.
                                (2, true, $cells) => unsafe {
                                    tile_vnni_max_requantized::<2, ROWS, $cells, FLIPPED>(a, self.k_padded, weights, &epilogue, out)
                                },
                                (2, false, $cells) => unsafe {
                                    tile_vnni_max_requantized::<2, $cells, $cells, FLIPPED>(a, self.k_padded, weights, &epilogue, out)
                                },
                                (_, true, $cells) => unsafe {
                                    tile_vnni_max_requantized::<1, ROWS, $cells, FLIPPED>(a, self.k_padded, weights, &epilogue, out)
                                },
                                (_, false, $cells) => unsafe {
                                    tile_vnni_max_requantized::<1, $cells, $cells, FLIPPED>(a, self.k_padded, weights, &epilogue, out)
                                },
                            )*
                            _ => unreachable!("cells divides ROWS"),
                        }
                    };
                }
                tile!(1, 2, 4, 8);
                r0 += count;
            }
        }
    }
}

/// `R` rows (groups of `CELLS`) × `BLOCKS` blocks of 16 channels: each group's maximum,
/// requantized in registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512dq,avx512vl")]
unsafe fn tile_vnni_max_requantized<
    const BLOCKS: usize,
    const R: usize,
    const CELLS: usize,
    const FLIPPED: bool,
>(
    a: &[u8],
    row_len: usize,
    blocks: &[i8],
    e: &Epilogue<'_, '_>,
    out: &mut [u8],
) {
    use std::arch::x86_64::*;
    let flip = if FLIPPED { 0x80 } else { 0 };
    // SAFETY: the caller's CPU has VNNI.
    let acc = unsafe { vnni_sums::<BLOCKS, R>(a, row_len, blocks, flip) };
    for b in 0..BLOCKS {
        let channel = e.first + 16 * b;
        if channel >= e.n {
            break;
        }
        let lanes: __mmask16 = ((1u32 << (e.n - channel).min(16)) - 1) as __mmask16;
        // SAFETY: offsets and parameters are padded past every channel below n (asserted by
        // the caller); each store is masked to its group's channels below n.
        unsafe {
            let offsets = _mm512_loadu_si512(e.q.offsets.as_ptr().add(channel).cast());
            let rescale = ChannelLanes::load(e.q.wide, channel);
            for (group, cells) in acc.chunks_exact(CELLS).enumerate() {
                let max = cells
                    .iter()
                    .fold(cells[0][b], |m, row| _mm512_max_epi32(m, row[b]));
                let bytes = rescale.rescale(e.constants, _mm512_add_epi32(max, offsets));
                _mm_mask_storeu_epi8(
                    out.as_mut_ptr().add(group * e.n + channel).cast(),
                    lanes,
                    bytes,
                );
            }
        }
    }
}

/// One tile's epilogue: where its channels start and the requantization.
#[cfg(target_arch = "x86_64")]
struct Epilogue<'a, 'q> {
    q: &'a Requantization<'q>,
    constants: &'a WideConstants,
    first: usize,
    n: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: u64) -> impl FnMut() -> u64 {
        let mut state = seed;
        move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            state >> 33
        }
    }

    #[test]
    fn every_kernel_equals_the_naive_product() {
        for (n, k, rows) in [(1, 1, 4), (8, 2, 4), (10, 9, 8), (64, 288, 12), (17, 33, 4)] {
            let mut next = lcg((n * 1000 + k) as u64);
            let weights: Vec<i8> = (0..n * k).map(|_| next() as u8 as i8).collect();
            let a_raw: Vec<u8> = (0..rows * k).map(|_| next() as u8).collect();
            let expected: Vec<i32> = (0..rows)
                .flat_map(|r| {
                    let (weights, a_raw) = (&weights, &a_raw);
                    (0..n).map(move |c| {
                        (0..k)
                            .map(|kk| i32::from(a_raw[r * k + kk]) * i32::from(weights[c * k + kk]))
                            .sum::<i32>()
                    })
                })
                .collect();
            for isa in [Isa::Vnni, Isa::Avx2, Isa::Portable] {
                if !isa.available() {
                    continue;
                }
                let packed = PackedWeights::pack(isa, n, k, |c, kk| weights[c * k + kk]);
                let mut a = vec![0u8; rows * packed.row_len()];
                for r in 0..rows {
                    a[r * packed.row_len()..][..k].copy_from_slice(&a_raw[r * k..][..k]);
                }
                let mut out = vec![0i32; rows * n];
                packed.multiply(&a, rows, &mut out);
                assert_eq!(out, expected, "{isa:?} n {n} k {k}");
                // The same rows stored with their sign bits flipped, flipped back as read.
                let flipped: Vec<u8> = a.iter().map(|&b| b ^ 0x80).collect();
                let mut again = vec![0i32; rows * n];
                packed.multiply_flipped(&flipped, rows, 0x80, &mut again);
                assert_eq!(again, expected, "{isa:?} n {n} k {k} flipped");
                let sums: Vec<i32> = (0..n)
                    .map(|c| weights[c * k..][..k].iter().map(|&w| i32::from(w)).sum())
                    .collect();
                assert_eq!(packed.sums, sums);
            }
        }
    }
}
