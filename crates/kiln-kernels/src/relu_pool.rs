//! The window arithmetic of the fused convolution → ReLU → 2×2 max-pool block
//! ([`crate::conv_relu_pool`]): pooling one channel with its window codes (on max pooling's
//! 2×2 primitives, the same tie and NaN rules), and turning codes and pooled gradients back
//! into output gradients — listed for the im2col path, transposed or written whole into a
//! padded plane for the plane kernels.

use std::mem::MaybeUninit;

use crate::Conv2dShape;
use crate::max_pool::better;
#[cfg(target_arch = "x86_64")]
use crate::max_pool::{even_odd_columns, replaces, window_masks};

/// The code of a window whose pooled value is not positive: no gradient flows back.
pub const NOT_ROUTED: u8 = 4;

/// `[pooled_h, pooled_w]`: the convolution's output halved, rounded down.
pub fn relu_pool_size(shape: &Conv2dShape) -> [usize; 2] {
    shape.out_size().map(|v| v / 2)
}

/// The gradients of [`crate::conv2d_relu_pool_forward`]: the input's (when asked for), the
/// weight's and the bias's, each summed over the batch in a fixed order.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvGradients {
    pub input: Option<Vec<f32>>,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// Pools one channel whose convolution output (without `bias`) is `src[r · pitch + col]`
/// into `pooled` and `codes` (row-major, `pw` windows per row).
pub(crate) fn relu_pool_plane(
    src: &[f32],
    (pitch, pw): (usize, usize),
    bias: f32,
    pooled: &mut [MaybeUninit<f32>],
    codes: &mut [MaybeUninit<u8>],
) {
    let ph = pooled.len().checked_div(pw).unwrap_or(0);
    assert!(
        codes.len() == pooled.len()
            && 2 * pw <= pitch
            && (ph == 0 || (2 * ph - 1) * pitch + 2 * pw <= src.len()),
        "pooled plane buffers"
    );
    #[cfg(target_arch = "x86_64")]
    if crate::simd::level() == crate::simd::Level::Avx512 {
        // SAFETY: the CPU has AVX-512F (`level`); the buffers were checked above.
        return unsafe { relu_pool_plane_avx512(src, (pitch, pw), bias, pooled, codes) };
    }
    let relu = |v: f32| {
        let y = v + bias;
        if y < 0.0 { 0.0 } else { y }
    };
    for (i, (out_row, code_row)) in pooled
        .chunks_exact_mut(pw)
        .zip(codes.chunks_exact_mut(pw))
        .enumerate()
    {
        let (upper, lower) = (&src[2 * i * pitch..], &src[(2 * i + 1) * pitch..]);
        for (j, (out, code)) in out_row.iter_mut().zip(code_row.iter_mut()).enumerate() {
            let taps = [
                upper[2 * j],
                upper[2 * j + 1],
                lower[2 * j],
                lower[2 * j + 1],
            ]
            .map(relu);
            let (mut best, mut arg) = (taps[0], 0u8);
            for (t, &v) in taps.iter().enumerate().skip(1) {
                if better(v, best) {
                    (best, arg) = (v, t as u8);
                }
            }
            out.write(best);
            code.write(if best > 0.0 { arg } else { NOT_ROUTED });
        }
    }
}

/// [`relu_pool_plane`] 16 windows per register: each row's 32 floats deinterleaved into even
/// and odd columns (`vpermt2ps`), then the same ReLU, select chain (ties to the first tap,
/// NaN winning) and routing rule; a row's last windows through masks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn relu_pool_plane_avx512(
    src: &[f32],
    (pitch, pw): (usize, usize),
    bias: f32,
    pooled: &mut [MaybeUninit<f32>],
    codes: &mut [MaybeUninit<u8>],
) {
    use std::arch::x86_64::*;
    let ph = pooled.len() / pw.max(1);
    let (zero, bias) = (_mm512_setzero_ps(), _mm512_set1_ps(bias));
    let not_routed = _mm512_set1_epi32(i32::from(NOT_ROUTED));
    for i in 0..ph {
        for j in (0..pw).step_by(16) {
            let (mask, halves) = window_masks((pw - j).min(16));
            // SAFETY: the masked loads read only the windows' columns of rows 2i and 2i + 1
            // (checked inside `src` by the caller); the masked stores only this row's windows.
            unsafe {
                let relu = |v: __m512| {
                    let y = _mm512_add_ps(v, bias);
                    _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask::<_CMP_LT_OQ>(y, zero), zero)
                };
                let row = |at: usize| {
                    let (left, right) = even_odd_columns(src.as_ptr().add(at + 2 * j), halves);
                    (relu(left), relu(right))
                };
                let ((u0, u1), (l0, l1)) = (row(2 * i * pitch), row((2 * i + 1) * pitch));
                let (mut best, mut arg) = (u0, _mm512_setzero_si512());
                for (t, v) in [u1, l0, l1].into_iter().enumerate() {
                    let wins = replaces(v, best);
                    best = _mm512_mask_mov_ps(best, wins, v);
                    arg = _mm512_mask_mov_epi32(arg, wins, _mm512_set1_epi32(t as i32 + 1));
                }
                let routed = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(best, zero);
                let code = _mm512_mask_mov_epi32(not_routed, routed, arg);
                let out = i * pw + j;
                _mm512_mask_storeu_ps(pooled.as_mut_ptr().add(out).cast(), mask, best);
                _mm512_mask_cvtepi32_storeu_epi8(codes.as_mut_ptr().add(out).cast(), mask, code);
            }
        }
    }
}

/// The output positions `(row, col)` that receive a gradient, with the gradient, for one
/// channel's codes and pooled gradient (`pw` windows per row), in window order.
pub(crate) fn routed<'a>(
    codes: &'a [u8],
    grads: &'a [f32],
    pw: usize,
) -> impl Iterator<Item = ((usize, usize), f32)> + 'a {
    codes
        .chunks_exact(pw.max(1))
        .zip(grads.chunks_exact(pw.max(1)))
        .enumerate()
        .flat_map(move |(i, (codes, grads))| {
            codes
                .iter()
                .zip(grads)
                .enumerate()
                .filter(|(_, (code, _))| **code < NOT_ROUTED)
                .map(move |(j, (&code, &grad))| {
                    let tap = usize::from(code);
                    ((2 * i + tap / 2, 2 * j + tap % 2), grad)
                })
        })
}

/// The geometry of one image's pooled gradient as [`transpose_window_taps`] reads it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PooledLayout {
    pub channels: usize,
    /// Pooled rows and windows per row.
    pub pooled: [usize; 2],
    /// The convolution output's width.
    pub out_w: usize,
    /// Floats per output position in the transposed buffer: a multiple of 16, at least
    /// `channels`.
    pub pitch: usize,
}

/// One image's output gradient, transposed for the weight gradient, straight from the
/// pooled gradient and its window codes: `out[((2i + a) · out_w + 2j + b) · pitch + c]` is
/// `grads[c][i][j]` when window `(i, j)` of channel `c` routed to tap `(a, b)`, else 0 — for
/// every tap of every window and every channel below `pitch`. Positions no window covers (an
/// odd output's last row and column) are left as they are (zero from allocation). Adds each
/// channel's routed gradients into `bias_grad[c]` (16 lanes, then reduced: a fixed order).
///
/// 16 channels × 16 windows at a time, transposed in registers and stored as whole vectors:
/// scattering the routed values into a zeroed buffer had cost a cache-line fill per value,
/// more than the weight gradient's products on a 3-channel first layer.
///
/// # Safety
/// The CPU must have AVX-512F.
///
/// # Panics
/// If the buffers are shorter than the layout says.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn transpose_window_taps(
    (codes, grads): (&[u8], &[f32]),
    layout: PooledLayout,
    out: &mut [f32],
    bias_grad: &mut [f32],
) {
    use std::arch::x86_64::*;
    let PooledLayout {
        channels,
        pooled: [ph, pw],
        out_w,
        pitch,
    } = layout;
    let windows = ph * pw;
    assert!(
        pitch.is_multiple_of(16)
            && channels <= pitch
            && 2 * pw <= out_w
            && codes.len() >= channels * windows
            && grads.len() >= channels * windows
            && out.len() >= 2 * ph * out_w * pitch
            && bias_grad.len() >= channels,
        "pooled-gradient buffers"
    );
    let not_routed = _mm512_set1_epi32(i32::from(NOT_ROUTED));
    let taps: [__m512i; 4] = std::array::from_fn(|tap| _mm512_set1_epi32(tap as i32));
    // Per channel: its routed gradients' 16 lane sums.
    let mut sums = vec![_mm512_setzero_ps(); pitch];
    for i in 0..ph {
        for j0 in (0..pw).step_by(16) {
            let count = (pw - j0).min(16);
            let (mask, _) = window_masks(count);
            // Channel blocks innermost: each position's whole run of channels is written
            // before the next position's, so every cache line is filled in one go.
            for c0 in (0..pitch).step_by(16) {
                let live = channels.saturating_sub(c0).min(16);
                let mut g = [_mm512_setzero_ps(); 16];
                let mut k = [not_routed; 16];
                for r in 0..live {
                    let at = (c0 + r) * windows + i * pw + j0;
                    // SAFETY: the loads read only this row's `count` windows (masked, or
                    // 16 bytes when 16 remain).
                    unsafe {
                        g[r] = _mm512_maskz_loadu_ps(mask, grads.as_ptr().add(at));
                        k[r] = load_codes(codes, at, count);
                    }
                    let routed = _mm512_cmplt_epu32_mask(k[r], not_routed);
                    sums[c0 + r] = _mm512_add_ps(sums[c0 + r], _mm512_maskz_mov_ps(routed, g[r]));
                }
                let g = transpose16(g);
                let k = transpose16(k.map(|v| _mm512_castsi512_ps(v)));
                for w in 0..count {
                    let code = _mm512_castps_si512(k[w]);
                    for (tap, tap_code) in taps.iter().enumerate() {
                        let hit = _mm512_cmpeq_epi32_mask(code, *tap_code);
                        let row = 2 * i + tap / 2;
                        let col = 2 * (j0 + w) + tap % 2;
                        let at = (row * out_w + col) * pitch + c0;
                        // SAFETY: row < 2·ph and col < 2·pw ≤ out_w: inside `out` (asserted).
                        unsafe {
                            _mm512_storeu_ps(
                                out.as_mut_ptr().add(at),
                                _mm512_maskz_mov_ps(hit, g[w]),
                            )
                        };
                    }
                }
            }
        }
    }
    for (c, sum) in sums.iter().enumerate().take(channels) {
        bias_grad[c] += _mm512_reduce_add_ps(*sum);
    }
}

/// Window codes `at..at + count` (`count ≤ 16`) as 32-bit lanes, [`NOT_ROUTED`] past `count`:
/// one 16-byte load when the slice has 16 bytes from `at` (the next row's codes are masked
/// off), a copy only at the slice's very end.
///
/// # Safety
/// Only called from functions that enable AVX-512F.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn load_codes(codes: &[u8], at: usize, count: usize) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    let mask = ((1u32 << count) - 1) as __mmask16;
    // SAFETY: the load reads 16 bytes inside `codes` (checked), or a local copy; the caller
    // enables AVX-512F.
    unsafe {
        let not_routed = _mm512_set1_epi32(i32::from(NOT_ROUTED));
        let bytes = if at + 16 <= codes.len() {
            _mm_loadu_si128(codes.as_ptr().add(at).cast())
        } else {
            let mut copy = [NOT_ROUTED; 16];
            copy[..count].copy_from_slice(&codes[at..at + count]);
            _mm_loadu_si128(copy.as_ptr().cast())
        };
        _mm512_mask_mov_epi32(not_routed, mask, _mm512_cvtepu8_epi32(bytes))
    }
}

/// The 16 × 16 transpose of the rows in `r`: element `j` of output `i` is element `i` of
/// input `j`. Unpacks of 32- then 64-bit pairs, then two rounds of 128-bit lane shuffles.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn transpose16(r: [std::arch::x86_64::__m512; 16]) -> [std::arch::x86_64::__m512; 16] {
    use std::arch::x86_64::*;
    // SAFETY: register shuffles only; inlined into AVX-512 callers.
    unsafe {
        let mut t = [_mm512_setzero_ps(); 16];
        for p in 0..8 {
            t[2 * p] = _mm512_unpacklo_ps(r[2 * p], r[2 * p + 1]);
            t[2 * p + 1] = _mm512_unpackhi_ps(r[2 * p], r[2 * p + 1]);
        }
        // u[4g + m]: column 4L + m of rows 4g..4g + 4, in 128-bit lane L.
        let mut u = [_mm512_setzero_ps(); 16];
        for g in 0..4 {
            let pd = |i: usize| _mm512_castps_pd(t[4 * g + i]);
            u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(0), pd(2)));
            u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(0), pd(2)));
            u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(1), pd(3)));
            u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(1), pd(3)));
        }
        let mut out = [_mm512_setzero_ps(); 16];
        for m in 0..4 {
            let v = _mm512_shuffle_f32x4::<0x88>(u[m], u[4 + m]);
            let w = _mm512_shuffle_f32x4::<0xDD>(u[m], u[4 + m]);
            let v2 = _mm512_shuffle_f32x4::<0x88>(u[8 + m], u[12 + m]);
            let w2 = _mm512_shuffle_f32x4::<0xDD>(u[8 + m], u[12 + m]);
            out[m] = _mm512_shuffle_f32x4::<0x88>(v, v2);
            out[8 + m] = _mm512_shuffle_f32x4::<0xDD>(v, v2);
            out[4 + m] = _mm512_shuffle_f32x4::<0x88>(w, w2);
            out[12 + m] = _mm512_shuffle_f32x4::<0xDD>(w, w2);
        }
        out
    }
}

/// One channel's pooled gradient written into the input gradient's padded plane: window
/// `(i, j)` (at `first + i·pw + j` of `codes` and `grads`) has its four taps at
/// `plane[rows(i)[a] + 2j + b]` (the routed one its gradient, the others 0), so every covered
/// value is rewritten and a reused plane needs no clearing. 16 windows a register: the two
/// taps of each row interleaved (`vpermt2ps`) into 32 floats.
///
/// # Safety
/// The CPU must have AVX-512F.
///
/// # Panics
/// If a row reaches past `plane` or the channel's windows past the codes or gradients.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn write_window_taps(
    (codes, grads): (&[u8], &[f32]),
    (first, [ph, pw]): (usize, [usize; 2]),
    rows: impl Fn(usize) -> [usize; 2],
    plane: &mut [f32],
) {
    use std::arch::x86_64::*;
    assert!(
        first + ph * pw <= codes.len().min(grads.len()),
        "windows past the codes"
    );
    let low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let high = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for i in 0..ph {
        let starts = rows(i);
        for start in starts {
            assert!(start + 2 * pw <= plane.len(), "window row past the plane");
        }
        for j0 in (0..pw).step_by(16) {
            let count = (pw - j0).min(16);
            let (mask, halves) = window_masks(count);
            let at = first + i * pw + j0;
            // SAFETY: the masked loads and stores stay inside this row of windows and of
            // the plane (asserted above).
            unsafe {
                let code = load_codes(codes, at, count);
                let grad = _mm512_maskz_loadu_ps(mask, grads.as_ptr().add(at));
                let tap = |t: i32| {
                    _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(code, _mm512_set1_epi32(t)), grad)
                };
                for (a, start) in starts.into_iter().enumerate() {
                    let (left, right) = (tap(2 * a as i32), tap(2 * a as i32 + 1));
                    let out = plane.as_mut_ptr().add(start + 2 * j0);
                    _mm512_mask_storeu_ps(out, halves[0], _mm512_permutex2var_ps(left, low, right));
                    _mm512_mask_storeu_ps(
                        out.add(16),
                        halves[1],
                        _mm512_permutex2var_ps(left, high, right),
                    );
                }
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn transposed_window_taps_match_the_scalar_definition() {
        if crate::simd::level() != crate::simd::Level::Avx512 {
            return;
        }
        for (channels, ph, pw, out_w) in [
            (3usize, 2usize, 5usize, 11usize),
            (16, 3, 16, 32),
            (17, 2, 33, 67),
            (40, 4, 7, 14),
        ] {
            let pitch = channels.next_multiple_of(16);
            let windows = ph * pw;
            let codes: Vec<u8> = (0..channels * windows)
                .map(|i| ((i * 7 + i / 3) % 5) as u8)
                .collect();
            let grads: Vec<f32> = (0..channels * windows)
                .map(|i| i as f32 * 0.5 - 3.0)
                .collect();
            let rows = 2 * ph + 1;
            let mut out = vec![f32::NAN; rows * out_w * pitch];
            let mut bias = vec![1.0f32; channels];
            let layout = PooledLayout {
                channels,
                pooled: [ph, pw],
                out_w,
                pitch,
            };
            // SAFETY: AVX-512 checked above.
            unsafe { transpose_window_taps((&codes, &grads), layout, &mut out, &mut bias) };
            for row in 0..rows {
                for col in 0..out_w {
                    for c in 0..pitch {
                        let value = out[(row * out_w + col) * pitch + c];
                        if row >= 2 * ph || col >= 2 * pw {
                            assert!(value.is_nan(), "uncovered position written");
                            continue;
                        }
                        let window = (row / 2) * pw + col / 2;
                        let tap = (2 * (row % 2) + col % 2) as u8;
                        let expected = if c < channels && codes[c * windows + window] == tap {
                            grads[c * windows + window]
                        } else {
                            0.0
                        };
                        assert_eq!(value, expected, "{channels} {row} {col} {c}");
                    }
                }
            }
            for c in 0..channels {
                let routed: f32 = (0..windows)
                    .filter(|&w| codes[c * windows + w] < NOT_ROUTED)
                    .map(|w| grads[c * windows + w])
                    .sum();
                assert!((bias[c] - 1.0 - routed).abs() < 1e-3, "{c}");
            }
        }
    }
}
