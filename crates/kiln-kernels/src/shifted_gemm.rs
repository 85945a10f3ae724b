//! The two AVX-512 products behind [`crate::plane_conv`], over "shifted views" of a plane:
//! view `k` is the plane read from `offsets[k]` on, so matrix element `(k, q)` is
//! `plane[offsets[k] + q]`. A convolution's im2col matrix is such a matrix (see
//! `plane_conv`), which is why neither product needs an im2col copy or a packed right-hand
//! side: each 16-lane load comes straight from the plane.
//!
//! - [`shifted_product`]: `z = A · V`, `A` packed by [`PackedRows`] — the forward
//!   convolution and the input gradient. Register tile: 4 rows × 6 vectors (96 positions),
//!   24 accumulators fed by 6 loads and 4 broadcasts per tap.
//! - [`shifted_correlation`]: `g += D · Vᵀ` summed over positions and images, the weight
//!   gradient, with `D` transposed (channels in the lanes). Register tile: 32 channels × 12
//!   taps, 24 accumulators fed by 2 loads and 12 broadcasts per position.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

/// Rows per register tile (broadcast operands).
pub(crate) const ROWS: usize = 4;
/// Vectors of 16 positions per register tile in the product.
const VECTORS: usize = 6;
const LANES: usize = 16;

/// A row-major `rows × depth` matrix stored as blocks of [`ROWS`] rows, each block
/// depth-major (`block[k·ROWS + r]`), the last block padded with zero rows: the product's
/// broadcasts then read one contiguous run per tap.
pub(crate) struct PackedRows {
    values: Vec<f32>,
    rows: usize,
    depth: usize,
}

impl PackedRows {
    /// Packs the matrix whose element `(r, k)` is `value(r, k)`.
    pub(crate) fn new(rows: usize, depth: usize, value: impl Fn(usize, usize) -> f32) -> Self {
        let blocks = rows.div_ceil(ROWS);
        let mut values = vec![0.0; blocks * depth * ROWS];
        for (b, block) in values.chunks_exact_mut(depth * ROWS).enumerate() {
            for k in 0..depth {
                for r in 0..ROWS.min(rows - b * ROWS) {
                    block[k * ROWS + r] = value(b * ROWS + r, k);
                }
            }
        }
        Self {
            values,
            rows,
            depth,
        }
    }
}

/// `z[r·z_stride + q] = Σ_k a(r, k) · plane[offsets[k] + q]` for every row `r` and every
/// `q < positions`.
///
/// # Safety
/// The CPU must have AVX-512F.
///
/// # Panics
/// If `positions` is not a multiple of 16, a view reaches past the plane, `z` is too short or
/// the depths disagree: the callers derive all of them from one checked geometry.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn shifted_product(
    a: &PackedRows,
    plane: &[f32],
    offsets: &[usize],
    positions: usize,
    z: &mut [f32],
    z_stride: usize,
) {
    assert!(positions.is_multiple_of(LANES) && offsets.len() == a.depth);
    let reach = offsets.iter().max().map_or(0, |&o| o + positions);
    assert!(reach <= plane.len(), "shifted view past the plane");
    assert!(a.rows == 0 || (a.rows - 1) * z_stride + positions <= z.len());
    assert!(z_stride >= positions || a.rows <= 1);
    let vectors = positions / LANES;
    let (plane, z) = (plane.as_ptr(), z.as_mut_ptr());
    for first_vector in (0..vectors).step_by(VECTORS) {
        let q = first_vector * LANES;
        for (b, block) in a.values.chunks_exact(a.depth * ROWS).enumerate() {
            let rows = ROWS.min(a.rows - b * ROWS);
            // SAFETY: the asserts bound every view read at `offsets[k] + q + 16·v` below
            // `reach` and every store below row `rows`' end in `z`.
            unsafe {
                let out = z.add(b * ROWS * z_stride + q);
                let at = plane.add(q);
                match vectors - first_vector {
                    1 => product_tile::<1>(block, at, offsets, out, z_stride, rows),
                    2 => product_tile::<2>(block, at, offsets, out, z_stride, rows),
                    3 => product_tile::<3>(block, at, offsets, out, z_stride, rows),
                    4 => product_tile::<4>(block, at, offsets, out, z_stride, rows),
                    5 => product_tile::<5>(block, at, offsets, out, z_stride, rows),
                    _ => product_tile::<VECTORS>(block, at, offsets, out, z_stride, rows),
                }
            }
        }
    }
}

/// One [`ROWS`] × `V` vector tile of [`shifted_product`]; stores the first `rows` rows.
/// Inlined into its AVX-512 caller (it has no target features of its own).
#[inline(always)]
unsafe fn product_tile<const V: usize>(
    block: &[f32],
    plane: *const f32,
    offsets: &[usize],
    out: *mut f32,
    z_stride: usize,
    rows: usize,
) {
    // SAFETY (whole body): the caller checked the views and the output rows.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); V]; ROWS];
        for (k, &offset) in offsets.iter().enumerate() {
            let view = plane.add(offset);
            let x: [__m512; V] = std::array::from_fn(|v| _mm512_loadu_ps(view.add(v * LANES)));
            let w = block.as_ptr().add(k * ROWS);
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let broadcast = _mm512_set1_ps(*w.add(r));
                for v in 0..V {
                    acc_r[v] = _mm512_fmadd_ps(broadcast, x[v], acc_r[v]);
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate().take(rows) {
            for (v, value) in acc_r.iter().enumerate() {
                _mm512_storeu_ps(out.add(r * z_stride + v * LANES), *value);
            }
        }
    }
}

/// The output gradient of a run of images as [`shifted_correlation`] reads it: image `n`'s
/// position `p = r · out_w + col` at `d[n · image_stride + p · channel_pitch ..]`, one
/// 16-lane-aligned run of channels per position (channels in the lanes); and image `n`'s
/// plane at `n · plane_stride`, output row `r` starting at `r · pitch`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CorrelationLayout {
    pub images: usize,
    pub channels: usize,
    pub channel_pitch: usize,
    pub image_stride: usize,
    pub out_size: [usize; 2],
    pub pitch: usize,
    pub plane_stride: usize,
}

/// Taps per correlation tile.
const TAPS: usize = 12;

/// `g[c·offsets.len() + k] += Σ_n Σ_(r, col) d_n[(r, col), c] · plane_n[offsets[k] + r·pitch + col]`
/// for every channel `c < channels`: the weight gradient with the output gradient transposed
/// so that 16 channels share a vector. Each tile keeps 2 × 16 channels × 12 taps of sums in
/// registers over every position of every image, so nothing is reduced across lanes and the
/// order of every sum is fixed.
///
/// # Safety
/// The CPU must have AVX-512F.
///
/// # Panics
/// If an image's gradient or a view reaches past `d` or the planes, the channel pitch is not
/// a multiple of 16 or `g` is too short.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn shifted_correlation(
    d: &[f32],
    planes: &[f32],
    offsets: &[usize],
    layout: CorrelationLayout,
    g: &mut [f32],
) {
    let depth = offsets.len();
    let l = layout;
    let [out_h, out_w] = l.out_size;
    assert!(l.channel_pitch.is_multiple_of(LANES) && l.channels <= l.channel_pitch);
    assert!(g.len() >= l.channels * depth);
    if l.images == 0 || depth == 0 || out_h * out_w == 0 || l.channels == 0 {
        return;
    }
    let last = l.images - 1;
    let reach = offsets
        .iter()
        .max()
        .map_or(0, |&o| o + (out_h - 1) * l.pitch + out_w);
    assert!(
        last * l.plane_stride + reach <= planes.len(),
        "view past the planes"
    );
    assert!(
        last * l.image_stride + out_h * out_w * l.channel_pitch <= d.len(),
        "gradient past its buffer"
    );
    for c0 in (0..l.channels).step_by(2 * LANES) {
        for k0 in (0..depth).step_by(TAPS) {
            // Taps past the end read tap 0 and are never stored.
            let taps: [usize; TAPS] =
                std::array::from_fn(|t| offsets.get(k0 + t).copied().unwrap_or(offsets[0]));
            let mut sums = [[0.0f32; 2 * LANES]; TAPS];
            // SAFETY: the asserts bound every read; channels c0.. lie in the pitch.
            unsafe {
                let first = d.as_ptr().add(c0);
                if l.channel_pitch - c0 >= 2 * LANES {
                    correlation_tile::<2>(first, planes.as_ptr(), &taps, l, &mut sums);
                } else {
                    correlation_tile::<1>(first, planes.as_ptr(), &taps, l, &mut sums);
                }
            }
            for (t, sums_t) in sums.iter().enumerate().take(depth - k0) {
                for (i, sum) in sums_t.iter().enumerate().take(l.channels - c0) {
                    g[(c0 + i) * depth + k0 + t] += *sum;
                }
            }
        }
    }
}

/// One `V` × 16 channel by [`TAPS`] tile of [`shifted_correlation`], written to `sums`.
#[inline(always)]
unsafe fn correlation_tile<const V: usize>(
    d: *const f32,
    planes: *const f32,
    taps: &[usize; TAPS],
    l: CorrelationLayout,
    sums: &mut [[f32; 2 * LANES]; TAPS],
) {
    let [out_h, out_w] = l.out_size;
    // SAFETY (whole body): the caller checked every image's gradient and views.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); V]; TAPS];
        for n in 0..l.images {
            let plane = planes.add(n * l.plane_stride);
            let mut dp = d.add(n * l.image_stride);
            for r in 0..out_h {
                let row = plane.add(r * l.pitch);
                for col in 0..out_w {
                    let dv: [__m512; V] =
                        std::array::from_fn(|v| _mm512_loadu_ps(dp.add(v * LANES)));
                    let at = row.add(col);
                    for (t, &tap) in taps.iter().enumerate() {
                        let x = _mm512_set1_ps(*at.add(tap));
                        for v in 0..V {
                            acc[t][v] = _mm512_fmadd_ps(dv[v], x, acc[t][v]);
                        }
                    }
                    dp = dp.add(l.channel_pitch);
                }
            }
        }
        for (t, acc_t) in acc.iter().enumerate() {
            for (v, value) in acc_t.iter().enumerate() {
                _mm512_storeu_ps(sums[t].as_mut_ptr().add(v * LANES), *value);
            }
        }
    }
}
