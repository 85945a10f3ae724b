//! The float GEMM under CONV_2D: `C = clamp(A·Wᵀ + bias)`, with `A` the activations (one row
//! per output pixel, read in place or gathered by the caller) and `W` a constant filter packed
//! once at prepare into panels of [`PANEL`] output channels, `k`-major, so a microkernel reads
//! one contiguous vector of weights per `k`.
//!
//! The microkernels keep a tile of outputs in registers and broadcast one activation per row
//! and `k` against the panel's vector, as XNNPACK's "broadcast" f32 GEMMs do:
//!
//! - **AVX-512F**: 8 rows × one or two panels (8 or 16 zmm accumulators), partial tiles stored
//!   through lane masks;
//! - **AVX2 + FMA**: 6 rows × one panel (12 ymm accumulators);
//! - **portable**: 4 rows × one panel in plain loops the compiler vectorises.
//!
//! Every output is one fused multiply-add chain over `k` in order, then `+ bias`, then the
//! clamp, so the AVX-512 and AVX2 kernels give the same bits; the portable one rounds each
//! product (no FMA) and may differ in the last place.
//!
//! A filter pruned in blocks that span a panel's 16 channels leaves whole `k` rows of a panel
//! zero. Where at most [`MAX_SPARSE_DENSITY`] of them are not, AVX-512 keeps each panel as the
//! list of its non-zero rows and the microkernel's chain runs over those alone (a skipped
//! term is `x · 0`: the sums are the dense kernel's but where an activation is infinite or
//! NaN, as in XNNPACK's sparse kernels).

/// Output channels per packed panel (one AVX-512 register, two AVX2 registers).
pub const PANEL: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatIsa {
    Avx512,
    Avx2Fma,
    Portable,
}

impl FloatIsa {
    /// The best set this CPU runs.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Self::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Self::Avx2Fma;
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
            Self::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Self::Avx2Fma => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Rows of `A` per microkernel call.
    fn rows(self) -> usize {
        match self {
            Self::Avx512 => 8,
            Self::Avx2Fma => 6,
            Self::Portable => 4,
        }
    }
}

/// What happens to each sum before it is stored: `+ bias[channel]`, then clamped to
/// `[min, max]` (the fused activation).
#[derive(Clone, Copy, Debug)]
pub struct Epilogue<'a> {
    pub bias: Option<&'a [f32]>,
    pub min: f32,
    pub max: f32,
}

/// `n` output channels × `k` weights, packed as `[panel][k][PANEL]` (channels past `n` zero).
#[derive(Debug)]
pub struct PackedFloatWeights {
    isa: FloatIsa,
    n: usize,
    k: usize,
    /// Empty when `sparse` holds the weights.
    panels: Vec<f32>,
    sparse: Option<SparsePanels>,
}

/// Each panel's non-zero `k` rows: panel `p`'s are `starts[p]..starts[p + 1]` of `ks` (which
/// row) and `rows` (its 16 weights).
#[derive(Debug)]
struct SparsePanels {
    starts: Vec<usize>,
    ks: Vec<u32>,
    rows: Vec<[f32; PANEL]>,
}

/// The share of non-zero panel rows up to which the lists run (AVX-512).
pub const MAX_SPARSE_DENSITY: f64 = 0.5;

impl PackedFloatWeights {
    /// Packs `weight(channel, k)` for this CPU.
    pub fn pack(n: usize, k: usize, weight: impl Fn(usize, usize) -> f32) -> Self {
        Self::pack_for(FloatIsa::detect(), n, k, weight)
    }

    /// Packs for `isa` (tests run every set the CPU has).
    pub fn pack_for(
        isa: FloatIsa,
        n: usize,
        k: usize,
        weight: impl Fn(usize, usize) -> f32,
    ) -> Self {
        let count = n.div_ceil(PANEL);
        let mut panels = vec![0.0f32; count * k * PANEL];
        for c in 0..n {
            let (panel, lane) = (c / PANEL, c % PANEL);
            for kk in 0..k {
                panels[(panel * k + kk) * PANEL + lane] = weight(c, kk);
            }
        }
        let sparse = (isa == FloatIsa::Avx512 && k > 0 && count > 0)
            .then(|| SparsePanels::of(&panels, k))
            .filter(|s| s.rows.len() as f64 <= MAX_SPARSE_DENSITY * (count * k) as f64);
        if sparse.is_some() {
            panels = Vec::new();
        }
        Self {
            isa,
            n,
            k,
            panels,
            sparse,
        }
    }

    /// Whether the weights are kept as the lists of their non-zero panel rows.
    #[cfg(test)]
    pub fn is_sparse(&self) -> bool {
        self.sparse.is_some()
    }

    /// The bytes the packed copy holds.
    pub fn bytes(&self) -> usize {
        self.panels.len() * size_of::<f32>()
            + self.sparse.as_ref().map_or(0, |s| {
                s.starts.len() * size_of::<usize>()
                    + s.ks.len() * size_of::<u32>()
                    + s.rows.len() * size_of::<[f32; PANEL]>()
            })
    }

    /// `c[r * ldc + j] = clamp(Σ_k a[r * lda + k] × weight(j, k) + bias[j])` for `r < rows`,
    /// `j < n`.
    ///
    /// # Panics
    /// When `a` or `c` is too short for `rows` rows of their strides, or the bias for `n`.
    pub fn multiply(
        &self,
        a: &[f32],
        lda: usize,
        rows: usize,
        epilogue: Epilogue<'_>,
        c: &mut [f32],
        ldc: usize,
    ) {
        if rows == 0 || self.n == 0 {
            return;
        }
        assert!(
            lda >= self.k && a.len() >= (rows - 1) * lda + self.k,
            "A holds {rows} rows"
        );
        assert!(
            ldc >= self.n && c.len() >= (rows - 1) * ldc + self.n,
            "C holds {rows} rows"
        );
        assert!(
            epilogue.bias.is_none_or(|b| b.len() >= self.n),
            "a bias per channel"
        );
        let panel_len = self.k * PANEL;
        let count = self.n.div_ceil(PANEL);
        let step = self.isa.rows();
        let mut panel = 0;
        while panel < count {
            // AVX-512 takes two dense panels at once while two remain: twice the accumulators
            // per broadcast activation. A sparse panel has its own list.
            let together =
                if self.sparse.is_none() && self.isa == FloatIsa::Avx512 && panel + 1 < count {
                    2
                } else {
                    1
                };
            let first = panel * PANEL;
            let cols = (together * PANEL).min(self.n - first);
            let bias = tile_bias(epilogue, first, cols);
            let weights = match self.sparse {
                Some(_) => &[][..],
                None => &self.panels[panel * panel_len..(panel + together) * panel_len],
            };
            for r0 in (0..rows).step_by(step) {
                let tile = Tile {
                    a: &a[r0 * lda..],
                    lda,
                    rows: step.min(rows - r0),
                    k: self.k,
                    weights,
                    bias: &bias,
                    min: epilogue.min,
                    max: epilogue.max,
                    cols,
                };
                let out = &mut c[r0 * ldc + first..];
                match (&self.sparse, self.isa, together) {
                    #[cfg(target_arch = "x86_64")]
                    (Some(sparse), _, _) => {
                        let list = sparse.starts[panel]..sparse.starts[panel + 1];
                        let (ks, rows) = (&sparse.ks[list.clone()], &sparse.rows[list]);
                        // SAFETY: sparse panels are made only for AVX-512 (see `pack_for`);
                        // the rows' indices are below k.
                        unsafe { tile_avx512_sparse(&tile, ks, rows, out, ldc) }
                    }
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `FloatIsa::Avx512` is only packed on a CPU with AVX-512F (or by
                    // a test that checked `available`).
                    (None, FloatIsa::Avx512, 2) => unsafe { tile_avx512::<2>(&tile, out, ldc) },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: as above.
                    (None, FloatIsa::Avx512, _) => unsafe { tile_avx512::<1>(&tile, out, ldc) },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: as above, for AVX2 and FMA.
                    (None, FloatIsa::Avx2Fma, _) => unsafe { tile_avx2(&tile, out, ldc) },
                    _ => tile_portable(&tile, out, ldc),
                }
            }
            panel += together;
        }
    }
}

/// The bias of a tile's `cols` channels from `first`, zero past them.
fn tile_bias(epilogue: Epilogue<'_>, first: usize, cols: usize) -> [f32; 2 * PANEL] {
    let mut bias = [0.0f32; 2 * PANEL];
    if let Some(b) = epilogue.bias {
        bias[..cols].copy_from_slice(&b[first..first + cols]);
    }
    bias
}

impl SparsePanels {
    /// The non-zero rows of `panels` (`[panel][k][PANEL]`).
    fn of(panels: &[f32], k: usize) -> Self {
        let mut starts = vec![0];
        let (mut ks, mut rows) = (Vec::new(), Vec::new());
        for panel in panels.chunks_exact(k * PANEL) {
            for (kk, row) in panel.chunks_exact(PANEL).enumerate() {
                if row.iter().any(|&w| w != 0.0) {
                    ks.push(kk as u32);
                    rows.push(std::array::from_fn(|lane| row[lane]));
                }
            }
            starts.push(rows.len());
        }
        Self { starts, ks, rows }
    }
}

/// One microkernel call: up to the kernel's rows of `A` against one or two panels.
struct Tile<'a> {
    /// Starts at the tile's first row.
    a: &'a [f32],
    lda: usize,
    /// Valid rows (at most the kernel's; missing rows repeat the last and are not stored).
    rows: usize,
    k: usize,
    /// The panels, each `k × PANEL`.
    weights: &'a [f32],
    /// Per column of the tile, zero past the valid ones.
    bias: &'a [f32; 2 * PANEL],
    min: f32,
    max: f32,
    /// Valid columns.
    cols: usize,
}

impl Tile<'_> {
    /// Row `r`'s first `k` activations; rows past the valid ones alias the last valid row.
    #[inline(always)]
    fn row(&self, r: usize) -> &[f32] {
        &self.a[r.min(self.rows - 1) * self.lda..][..self.k]
    }
}

fn tile_portable(t: &Tile<'_>, out: &mut [f32], ldc: usize) {
    const ROWS: usize = 4;
    let mut acc = [[0.0f32; PANEL]; ROWS];
    let rows: [&[f32]; ROWS] = std::array::from_fn(|r| t.row(r));
    for (kk, w) in t.weights.chunks_exact(PANEL).take(t.k).enumerate() {
        for (acc, row) in acc.iter_mut().zip(rows) {
            let x = row[kk];
            for (acc, &w) in acc.iter_mut().zip(w) {
                *acc += x * w;
            }
        }
    }
    for (r, acc) in acc.iter().enumerate().take(t.rows) {
        let out = &mut out[r * ldc..][..t.cols];
        for ((o, &v), &b) in out.iter_mut().zip(acc).zip(t.bias) {
            *o = (v + b).max(t.min).min(t.max);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2(t: &Tile<'_>, out: &mut [f32], ldc: usize) {
    use std::arch::x86_64::*;
    const ROWS: usize = 6;
    let rows: [&[f32]; ROWS] = std::array::from_fn(|r| t.row(r));
    let mut acc = [[_mm256_setzero_ps(); 2]; ROWS];
    let weights = &t.weights[..t.k * PANEL];
    for kk in 0..t.k {
        // SAFETY: kk < k, and the panel holds k × 16 floats.
        let (w0, w1) = unsafe {
            let p = weights.as_ptr().add(kk * PANEL);
            (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)))
        };
        for (acc, row) in acc.iter_mut().zip(rows) {
            // SAFETY: each row holds k floats.
            let x = _mm256_set1_ps(unsafe { *row.get_unchecked(kk) });
            acc[0] = _mm256_fmadd_ps(x, w0, acc[0]);
            acc[1] = _mm256_fmadd_ps(x, w1, acc[1]);
        }
    }
    // SAFETY: the bias holds 32 floats.
    let bias = unsafe {
        [
            _mm256_loadu_ps(t.bias.as_ptr()),
            _mm256_loadu_ps(t.bias.as_ptr().add(8)),
        ]
    };
    let (min, max) = (_mm256_set1_ps(t.min), _mm256_set1_ps(t.max));
    let mut tile = [[0.0f32; PANEL]; ROWS];
    for (r, acc) in acc.iter().enumerate().take(t.rows) {
        for half in 0..2 {
            let v = _mm256_min_ps(
                _mm256_max_ps(_mm256_add_ps(acc[half], bias[half]), min),
                max,
            );
            if t.cols == PANEL {
                // SAFETY: row r < rows of C holds the panel's 16 channels.
                unsafe { _mm256_storeu_ps(out[r * ldc..][..PANEL].as_mut_ptr().add(8 * half), v) };
            } else {
                // SAFETY: the tile row holds 16 floats.
                unsafe { _mm256_storeu_ps(tile[r].as_mut_ptr().add(8 * half), v) };
            }
        }
        if t.cols < PANEL {
            out[r * ldc..][..t.cols].copy_from_slice(&tile[r][..t.cols]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512<const PANELS: usize>(t: &Tile<'_>, out: &mut [f32], ldc: usize) {
    use std::arch::x86_64::*;
    const ROWS: usize = 8;
    let rows: [&[f32]; ROWS] = std::array::from_fn(|r| t.row(r));
    let mut acc = [[_mm512_setzero_ps(); PANELS]; ROWS];
    let panel_len = t.k * PANEL;
    let weights = &t.weights[..PANELS * panel_len];
    for kk in 0..t.k {
        // SAFETY: kk < k, and each of the PANELS panels holds k × 16 floats.
        let w: [__m512; PANELS] = std::array::from_fn(|p| unsafe {
            _mm512_loadu_ps(weights.as_ptr().add(p * panel_len + kk * PANEL))
        });
        for (acc, row) in acc.iter_mut().zip(rows) {
            // SAFETY: each row holds k floats.
            let x = _mm512_set1_ps(unsafe { *row.get_unchecked(kk) });
            for (acc, w) in acc.iter_mut().zip(w) {
                *acc = _mm512_fmadd_ps(x, w, *acc);
            }
        }
    }
    // SAFETY: the caller's CPU has AVX-512F.
    unsafe { store_avx512(t, &acc, out, ldc) };
}

/// [`tile_avx512`] over one panel's list of non-zero rows (`ks`, `weights`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512_sparse(
    t: &Tile<'_>,
    ks: &[u32],
    weights: &[[f32; PANEL]],
    out: &mut [f32],
    ldc: usize,
) {
    use std::arch::x86_64::*;
    const ROWS: usize = 8;
    let rows: [&[f32]; ROWS] = std::array::from_fn(|r| t.row(r));
    let mut acc = [[_mm512_setzero_ps(); 1]; ROWS];
    for (&kk, w) in ks.iter().zip(weights) {
        // SAFETY: a row of 16 floats.
        let w = unsafe { _mm512_loadu_ps(w.as_ptr()) };
        for (acc, row) in acc.iter_mut().zip(rows) {
            let x = _mm512_set1_ps(row[kk as usize]);
            acc[0] = _mm512_fmadd_ps(x, w, acc[0]);
        }
    }
    // SAFETY: the caller's CPU has AVX-512F.
    unsafe { store_avx512(t, &acc, out, ldc) };
}

/// A tile's sums plus bias, clamped, stored through lane masks.
///
/// # Safety
/// Called only from functions that enable AVX-512F.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store_avx512<const PANELS: usize>(
    t: &Tile<'_>,
    acc: &[[std::arch::x86_64::__m512; PANELS]; 8],
    out: &mut [f32],
    ldc: usize,
) {
    use std::arch::x86_64::*;
    // SAFETY: the caller enables AVX-512F; the bias holds 32 floats; each store's mask covers
    // only the row's valid columns.
    unsafe {
        let (min, max) = (_mm512_set1_ps(t.min), _mm512_set1_ps(t.max));
        let bias: [__m512; PANELS] =
            std::array::from_fn(|p| _mm512_loadu_ps(t.bias.as_ptr().add(p * PANEL)));
        let masks: [__mmask16; PANELS] = std::array::from_fn(|p| {
            let valid = t.cols.saturating_sub(p * PANEL).min(PANEL);
            ((1u32 << valid) - 1) as __mmask16
        });
        for (r, acc) in acc.iter().enumerate().take(t.rows) {
            let row = &mut out[r * ldc..][..t.cols];
            for p in 0..PANELS {
                let v = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(acc[p], bias[p]), min), max);
                _mm512_mask_storeu_ps(row.as_mut_ptr().add(p * PANEL), masks[p], v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::common::testing::seeded;

    #[test]
    fn every_kernel_equals_the_naive_product() {
        let mut next = seeded(0x5eed_f10a);
        let mut float = move || next(2001) as f32 / 1000.0 - 1.0;
        for (n, k, rows, lda_pad, ldc_pad) in [
            (1, 1, 1, 0, 0),
            (16, 9, 8, 0, 0),
            (32, 144, 64, 3, 5),
            (17, 33, 13, 0, 2),
            (40, 7, 3, 1, 0),
            (48, 16, 25, 0, 0),
            (5, 300, 9, 0, 0),
        ] {
            let (lda, ldc) = (k + lda_pad, n + ldc_pad);
            let weights: Vec<f32> = (0..n * k).map(|_| float()).collect();
            let a: Vec<f32> = (0..rows * lda).map(|_| float()).collect();
            let bias: Vec<f32> = (0..n).map(|_| float()).collect();
            for with_bias in [false, true] {
                let (min, max) = if with_bias {
                    (-0.5, 0.75)
                } else {
                    (f32::NEG_INFINITY, f32::INFINITY)
                };
                let expected: Vec<f32> = (0..rows)
                    .flat_map(|r| (0..ldc).map(move |j| (r, j)))
                    .map(|(r, j)| {
                        if j >= n {
                            return 7.0;
                        }
                        let sum: f64 = (0..k)
                            .map(|kk| f64::from(a[r * lda + kk]) * f64::from(weights[j * k + kk]))
                            .sum();
                        let b = if with_bias { f64::from(bias[j]) } else { 0.0 };
                        ((sum + b) as f32).max(min).min(max)
                    })
                    .collect();
                for isa in [FloatIsa::Avx512, FloatIsa::Avx2Fma, FloatIsa::Portable] {
                    if !isa.available() {
                        continue;
                    }
                    let packed =
                        PackedFloatWeights::pack_for(isa, n, k, |c, kk| weights[c * k + kk]);
                    // Columns past n hold 7.0 and must keep it.
                    let mut c = vec![7.0f32; rows * ldc];
                    let epilogue = Epilogue {
                        bias: with_bias.then_some(&bias[..]),
                        min,
                        max,
                    };
                    packed.multiply(&a, lda, rows, epilogue, &mut c, ldc);
                    for (i, (got, want)) in c.iter().zip(&expected).enumerate() {
                        assert!(
                            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "{isa:?} n {n} k {k} rows {rows}: [{i}] {got} != {want}"
                        );
                    }
                }
            }
        }
    }

    /// Weights pruned in whole panel rows (16 channels × one k, 80% zero): the AVX-512
    /// packing keeps only the non-zero rows, and its products equal the AVX2 kernel's dense
    /// ones bit for bit (the same fused chains; the skipped terms add zeros).
    #[test]
    fn sparse_panels_give_the_dense_bits() {
        if !(FloatIsa::Avx512.available() && FloatIsa::Avx2Fma.available()) {
            return;
        }
        let mut next = seeded(0x5a5a);
        for (n, k, rows) in [
            (16usize, 40usize, 8usize),
            (37, 75, 19),
            (64, 288, 30),
            (5, 9, 3),
        ] {
            let kept: Vec<bool> = (0..n.div_ceil(PANEL) * k).map(|_| next(5) == 0).collect();
            let weights: Vec<f32> = (0..n * k)
                .map(|i| {
                    let (c, kk) = (i / k, i % k);
                    if kept[c / PANEL * k + kk] {
                        next(1000) as f32 * 0.013 - 6.0
                    } else {
                        0.0
                    }
                })
                .collect();
            let a: Vec<f32> = (0..rows * k)
                .map(|_| next(1000) as f32 * 0.007 - 3.0)
                .collect();
            let bias: Vec<f32> = (0..n).map(|_| next(1000) as f32 * 0.001).collect();
            let outputs = [FloatIsa::Avx512, FloatIsa::Avx2Fma].map(|isa| {
                let packed = PackedFloatWeights::pack_for(isa, n, k, |c, kk| weights[c * k + kk]);
                assert_eq!(packed.is_sparse(), isa == FloatIsa::Avx512, "n {n} k {k}");
                let mut c = vec![0.0f32; rows * n];
                let epilogue = Epilogue {
                    bias: Some(&bias),
                    min: -4.0,
                    max: 5.0,
                };
                packed.multiply(&a, k, rows, epilogue, &mut c, n);
                c
            });
            assert_eq!(outputs[0], outputs[1], "n {n} k {k}");
        }
    }

    #[test]
    fn the_simd_kernels_give_the_same_bits() {
        if !(FloatIsa::Avx512.available() && FloatIsa::Avx2Fma.available()) {
            return;
        }
        let mut next = seeded(77);
        let (n, k, rows) = (37, 75, 19);
        let weights: Vec<f32> = (0..n * k)
            .map(|_| next(1000) as f32 * 0.013 - 6.0)
            .collect();
        let a: Vec<f32> = (0..rows * k)
            .map(|_| next(1000) as f32 * 0.007 - 3.0)
            .collect();
        let outputs = [FloatIsa::Avx512, FloatIsa::Avx2Fma].map(|isa| {
            let packed = PackedFloatWeights::pack_for(isa, n, k, |c, kk| weights[c * k + kk]);
            let mut c = vec![0.0f32; rows * n];
            let epilogue = Epilogue {
                bias: None,
                min: f32::MIN,
                max: f32::MAX,
            };
            packed.multiply(&a, k, rows, epilogue, &mut c, n);
            c
        });
        assert_eq!(outputs[0], outputs[1]);
    }
}
