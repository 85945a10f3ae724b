//! The window arithmetic of the fused convolution → ReLU → 2×2 max-pool block
//! ([`crate::conv_relu_pool`]), shared by its im2col and plane-kernel paths: pooling one
//! channel with its window codes, and walking the codes back to the positions that receive a
//! gradient.

use std::mem::MaybeUninit;

use crate::Conv2dShape;

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
    codes: &mut [u8],
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
                if v > best || (v.is_nan() && !best.is_nan()) {
                    (best, arg) = (v, t as u8);
                }
            }
            out.write(best);
            *code = if best > 0.0 { arg } else { NOT_ROUTED };
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
    codes: &mut [u8],
) {
    use std::arch::x86_64::*;
    let ph = pooled.len() / pw.max(1);
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let (zero, bias) = (_mm512_setzero_ps(), _mm512_set1_ps(bias));
    let not_routed = _mm512_set1_epi32(i32::from(NOT_ROUTED));
    for i in 0..ph {
        for j in (0..pw).step_by(16) {
            let windows = (pw - j).min(16);
            let mask = ((1u32 << windows) - 1) as __mmask16;
            let halves = [
                ((1u64 << (2 * windows).min(16)) - 1) as __mmask16,
                ((1u64 << (2 * windows).saturating_sub(16)) - 1) as __mmask16,
            ];
            // SAFETY: the masked loads read only the windows' columns of rows 2i and 2i + 1
            // (checked inside `src` by the caller); the masked stores only this row's windows.
            unsafe {
                let relu = |v: __m512| {
                    let y = _mm512_add_ps(v, bias);
                    _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask::<_CMP_LT_OQ>(y, zero), zero)
                };
                let row = |at: usize| {
                    let p = src.as_ptr().add(at + 2 * j);
                    let a = _mm512_maskz_loadu_ps(halves[0], p);
                    let b = _mm512_maskz_loadu_ps(halves[1], p.add(16));
                    (
                        relu(_mm512_permutex2var_ps(a, even, b)),
                        relu(_mm512_permutex2var_ps(a, odd, b)),
                    )
                };
                let ((u0, u1), (l0, l1)) = (row(2 * i * pitch), row((2 * i + 1) * pitch));
                let (mut best, mut arg) = (u0, _mm512_setzero_si512());
                for (t, v) in [u1, l0, l1].into_iter().enumerate() {
                    let larger = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, best);
                    let v_nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
                    let best_nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(best, best);
                    let wins = larger | (v_nan & !best_nan);
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
