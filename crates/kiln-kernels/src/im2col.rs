//! im2col and its adjoint col2im for one image and one group: the matrix whose column `p`
//! holds every input value output pixel `p` reads, row `(c·kh + i)·kw + j` for channel `c` and
//! kernel tap `(i, j)` — so a convolution is one GEMM with the `[out, in·kh·kw]` weight.

use crate::Conv2dShape;
use crate::shape::valid_range;
use crate::simd::{Math, multiversion};

/// Fills `col` (`col_rows × out_pixels`, row-major) from `x` (`in_per_group × h × w`).
pub(crate) fn im2col(shape: &Conv2dShape, x: &[f32], col: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::level() == crate::simd::Level::Avx512 {
        // SAFETY: the CPU has AVX-512F (`level`).
        return unsafe { im2col_avx512(shape, x, col) };
    }
    im2col_body(shape, x, col, |dst, src| dst.copy_from_slice(src));
}

/// [`im2col`] with the short runs of a small plane's rows (11 floats for the quickstart's
/// second convolution) copied by inlined 16-float loads and masked stores: a call to `memcpy`
/// per run had cost more than the copy.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn im2col_avx512(shape: &Conv2dShape, x: &[f32], col: &mut [f32]) {
    im2col_body(shape, x, col, |dst, src| {
        // SAFETY: this function enables AVX-512F.
        unsafe { copy_run_avx512(dst, src) }
    });
}

/// `dst.copy_from_slice(src)`, 16 floats per AVX-512 load and store and one masked pair for
/// the rest. Always inlined and without target features of its own: it takes its caller's.
///
/// # Safety
/// Only called from functions that enable AVX-512F.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn copy_run_avx512(dst: &mut [f32], src: &[f32]) {
    use std::arch::x86_64::*;
    let n = dst.len().min(src.len());
    let (d, s) = (dst.as_mut_ptr(), src.as_ptr());
    let mut i = 0;
    // SAFETY: every access is below n, within both slices; the caller enables AVX-512F.
    unsafe {
        while i + 16 <= n {
            _mm512_storeu_ps(d.add(i), _mm512_loadu_ps(s.add(i)));
            i += 16;
        }
        if i < n {
            let mask = ((1u32 << (n - i)) - 1) as __mmask16;
            _mm512_mask_storeu_ps(d.add(i), mask, _mm512_maskz_loadu_ps(mask, s.add(i)));
        }
    }
}

#[inline(always)]
fn im2col_body(
    shape: &Conv2dShape,
    x: &[f32],
    col: &mut [f32],
    copy_run: impl Fn(&mut [f32], &[f32]),
) {
    let [in_h, in_w] = shape.in_size;
    let [out_h, out_w] = shape.out_size();
    let pixels = out_h * out_w;
    let [kernel_h, kernel_w] = shape.kernel;
    let mut rows = col.chunks_exact_mut(pixels);
    for channel in x.chunks_exact(in_h * in_w).take(shape.in_per_group()) {
        for i in 0..kernel_h {
            let row_offset = i * shape.dilation[0];
            let (oh_lo, oh_hi) =
                valid_range(out_h, in_h, shape.stride[0], row_offset, shape.padding[0].0);
            for j in 0..kernel_w {
                let Some(dst) = rows.next() else { return };
                let col_offset = j * shape.dilation[1];
                let (ow_lo, ow_hi) =
                    valid_range(out_w, in_w, shape.stride[1], col_offset, shape.padding[1].0);
                dst[..oh_lo * out_w].fill(0.0);
                dst[oh_hi * out_w..].fill(0.0);
                for oh in oh_lo..oh_hi {
                    let ih = oh * shape.stride[0] + row_offset - shape.padding[0].0;
                    let src = &channel[ih * in_w..(ih + 1) * in_w];
                    let out = &mut dst[oh * out_w..(oh + 1) * out_w];
                    out[..ow_lo].fill(0.0);
                    out[ow_hi..].fill(0.0);
                    if ow_lo < ow_hi {
                        let first = ow_lo * shape.stride[1] + col_offset - shape.padding[1].0;
                        if shape.stride[1] == 1 {
                            copy_run(&mut out[ow_lo..ow_hi], &src[first..first + ow_hi - ow_lo]);
                        } else {
                            for (o, s) in out[ow_lo..ow_hi]
                                .iter_mut()
                                .zip(src[first..].iter().step_by(shape.stride[1]))
                            {
                                *o = *s;
                            }
                        }
                    }
                }
            }
        }
    }
}

multiversion!(pub(crate) fn col2im(shape: &Conv2dShape, col: &[f32], dx: &mut [f32]) => col2im_body);

/// Adds every column of `col` back onto the input pixels it was read from: `dx` (zeroed by
/// the caller) receives the gradient of im2col's input.
#[inline(always)]
fn col2im_body<M: Math>(shape: &Conv2dShape, col: &[f32], dx: &mut [f32]) {
    let [in_h, in_w] = shape.in_size;
    let [out_h, out_w] = shape.out_size();
    let pixels = out_h * out_w;
    let [kernel_h, kernel_w] = shape.kernel;
    let mut rows = col.chunks_exact(pixels);
    for channel in dx.chunks_exact_mut(in_h * in_w).take(shape.in_per_group()) {
        for i in 0..kernel_h {
            let row_offset = i * shape.dilation[0];
            let (oh_lo, oh_hi) =
                valid_range(out_h, in_h, shape.stride[0], row_offset, shape.padding[0].0);
            for j in 0..kernel_w {
                let Some(src) = rows.next() else { return };
                let col_offset = j * shape.dilation[1];
                let (ow_lo, ow_hi) =
                    valid_range(out_w, in_w, shape.stride[1], col_offset, shape.padding[1].0);
                if ow_lo >= ow_hi {
                    continue;
                }
                let first = ow_lo * shape.stride[1] + col_offset - shape.padding[1].0;
                for oh in oh_lo..oh_hi {
                    let ih = oh * shape.stride[0] + row_offset - shape.padding[0].0;
                    let dst = &mut channel[ih * in_w..(ih + 1) * in_w];
                    let values = &src[oh * out_w + ow_lo..oh * out_w + ow_hi];
                    if shape.stride[1] == 1 {
                        for (d, v) in dst[first..first + values.len()].iter_mut().zip(values) {
                            *d += *v;
                        }
                    } else {
                        for (d, v) in dst[first..].iter_mut().step_by(shape.stride[1]).zip(values) {
                            *d += *v;
                        }
                    }
                }
            }
        }
    }
}
