//! 2-D max pooling, forward (with the argmax of each window) and backward (each output's
//! gradient added to the input pixel that won), planes in parallel. NaN wins a window, as in
//! PyTorch and Burn, so a diverging model is seen rather than hidden.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::KernelError;
use crate::shape::{expect_len, valid_range};
use crate::simd::{Math, multiversion};
use crate::uninit::{as_uninit, filled, new_output};

/// Max pooling of an `[batch, channels, height, width]` input with Burn's parameters
/// (symmetric padding; `ceil_mode` keeps a last, partial window).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dShape {
    pub batch: usize,
    pub channels: usize,
    pub in_size: [usize; 2],
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub ceil_mode: bool,
}

impl Pool2dShape {
    pub fn validate(&self) -> Result<(), KernelError> {
        let fail = |why: String| Err(KernelError::Shape(why));
        if [self.kernel, self.stride, self.dilation]
            .iter()
            .any(|v| v.contains(&0))
        {
            return fail(format!(
                "pooling kernel {:?}, stride {:?} and dilation {:?} must be at least 1",
                self.kernel, self.stride, self.dilation
            ));
        }
        for axis in 0..2 {
            let reach = self.dilation[axis] * (self.kernel[axis] - 1) + 1;
            if self.in_size[axis] + 2 * self.padding[axis] < reach {
                return fail(format!(
                    "the {:?} input, padded {:?}, is smaller than the {:?} pooling window",
                    self.in_size, self.padding, self.kernel
                ));
            }
            if self.padding[axis] * 2 > self.kernel[axis] {
                return fail(format!(
                    "padding {:?} is more than half the {:?} pooling window",
                    self.padding, self.kernel
                ));
            }
        }
        if self.input_len().is_none() || self.output_len().is_none() {
            return fail("buffer sizes overflow usize".into());
        }
        Ok(())
    }

    pub fn out_size(&self) -> [usize; 2] {
        [0, 1].map(|axis| {
            let reach = self.dilation[axis] * (self.kernel[axis] - 1) + 1;
            let span = self.in_size[axis] + 2 * self.padding[axis] - reach;
            let stride = self.stride[axis];
            let mut out = if self.ceil_mode {
                span.div_ceil(stride)
            } else {
                span / stride
            } + 1;
            // A last window must start inside the input or its leading padding.
            if self.ceil_mode && (out - 1) * stride >= self.in_size[axis] + self.padding[axis] {
                out -= 1;
            }
            out
        })
    }

    pub fn input_len(&self) -> Option<usize> {
        [self.channels, self.in_size[0], self.in_size[1]]
            .iter()
            .try_fold(self.batch, |acc, &d| acc.checked_mul(d))
    }

    pub fn output_len(&self) -> Option<usize> {
        let [h, w] = self.out_size();
        [self.channels, h, w]
            .iter()
            .try_fold(self.batch, |acc, &d| acc.checked_mul(d))
    }
}

/// `y` = each window's maximum; `indices` (when given) = where in its input plane
/// (`row · width + column`) the maximum was.
pub fn max_pool2d_forward(
    shape: &Pool2dShape,
    x: &[f32],
    y: &mut [f32],
    indices: &mut [u32],
) -> Result<(), KernelError> {
    forward_into(shape, x, as_uninit(y), as_uninit(indices))
}

/// [`max_pool2d_forward`] into new vectors (output, indices), never zeroed first: every window
/// writes its maximum and its index.
pub fn max_pool2d_forward_vec(
    shape: &Pool2dShape,
    x: &[f32],
) -> Result<(Vec<f32>, Vec<u32>), KernelError> {
    shape.validate()?;
    let len = shape
        .output_len()
        .ok_or_else(|| KernelError::Shape("the output's size overflows usize".into()))?;
    let (mut y, mut indices) = (Vec::with_capacity(len), Vec::with_capacity(len));
    forward_into(
        shape,
        x,
        &mut y.spare_capacity_mut()[..len],
        &mut indices.spare_capacity_mut()[..len],
    )?;
    // SAFETY: `forward_into` succeeded, so every plane of both wrote all its `len` values.
    unsafe {
        y.set_len(len);
        indices.set_len(len);
    }
    Ok((y, indices))
}

fn forward_into(
    shape: &Pool2dShape,
    x: &[f32],
    y: &mut [MaybeUninit<f32>],
    indices: &mut [MaybeUninit<u32>],
) -> Result<(), KernelError> {
    shape.validate()?;
    expect_len("input", x.len(), shape.input_len())?;
    expect_len("output", y.len(), shape.output_len())?;
    expect_len("indices", indices.len(), shape.output_len())?;
    let in_plane = shape.in_size[0] * shape.in_size[1];
    if u32::try_from(in_plane).is_err() {
        return Err(KernelError::Shape(format!(
            "a {:?} plane is too large to index with u32",
            shape.in_size
        )));
    }
    let [out_h, out_w] = shape.out_size();
    let out_plane = out_h * out_w;
    if out_plane == 0 {
        return Ok(());
    }
    y.par_chunks_mut(out_plane)
        .zip(indices.par_chunks_mut(out_plane))
        .enumerate()
        .with_min_len(4096usize.div_ceil(out_plane))
        .for_each(|(plane, (y_plane, idx_plane))| {
            let x_plane = &x[plane * in_plane..(plane + 1) * in_plane];
            forward_plane(shape, x_plane, y_plane, idx_plane);
        });
    Ok(())
}

fn forward_plane(
    s: &Pool2dShape,
    x: &[f32],
    y: &mut [MaybeUninit<f32>],
    indices: &mut [MaybeUninit<u32>],
) {
    let [out_h, out_w] = s.out_size();
    let whole_windows = 2 * out_h <= s.in_size[0] && 2 * out_w <= s.in_size[1];
    if s.kernel == [2, 2]
        && s.stride == [2, 2]
        && s.padding == [0, 0]
        && s.dilation == [1, 1]
        && whole_windows
    {
        #[cfg(target_arch = "x86_64")]
        if crate::simd::level() == crate::simd::Level::Avx512 {
            // SAFETY: the CPU has AVX-512F (`level`).
            return unsafe { forward_plane_2x2_avx512(s, x, y, indices) };
        }
        return forward_plane_2x2(s, x, y, indices);
    }
    // Any other window: every output starts at "no tap yet", then the taps compete.
    let (y, indices) = (filled(y, f32::NEG_INFINITY), filled(indices, NO_INDEX));
    let [in_h, in_w] = s.in_size;
    let columns: Vec<(usize, usize, usize)> = (0..s.kernel[1])
        .map(|j| {
            let offset = j * s.dilation[1];
            let (lo, hi) = valid_range(out_w, in_w, s.stride[1], offset, s.padding[1]);
            let first = if lo < hi {
                lo * s.stride[1] + offset - s.padding[1]
            } else {
                0
            };
            (lo, hi, first)
        })
        .collect();
    for (oh, (y_row, idx_row)) in y
        .chunks_exact_mut(out_w)
        .zip(indices.chunks_exact_mut(out_w))
        .enumerate()
    {
        // Taps in the naive order (rows, then columns), so ties go to the first, as in Burn.
        for i in 0..s.kernel[0] {
            let Some(ih) = (oh * s.stride[0] + i * s.dilation[0])
                .checked_sub(s.padding[0])
                .filter(|&ih| ih < in_h)
            else {
                continue;
            };
            let row = &x[ih * in_w..(ih + 1) * in_w];
            for &(lo, hi, first) in &columns {
                for (k, ow) in (lo..hi).enumerate() {
                    let at = first + k * s.stride[1];
                    consider(
                        row[at],
                        (ih * in_w + at) as u32,
                        &mut y_row[ow],
                        &mut idx_row[ow],
                    );
                }
            }
        }
    }
}

/// No index yet: the window's first tap wins whatever its value.
const NO_INDEX: u32 = u32::MAX;

#[inline(always)]
fn consider(v: f32, at: u32, best: &mut f32, best_index: &mut u32) {
    if *best_index == NO_INDEX || better(v, *best) {
        *best = v;
        *best_index = at;
    }
}

multiversion!(fn forward_plane_2x2(s: &Pool2dShape, x: &[f32], y: &mut [MaybeUninit<f32>], indices: &mut [MaybeUninit<u32>]) => forward_plane_2x2_body);

/// The CNNs' 2×2, stride-2 pooling of whole windows: per window, the four taps in the naive
/// order (upper-left, upper-right, lower-left, lower-right) through one branch-free select
/// chain, so the first of equals wins and NaN wins over numbers; the loop over a row's
/// windows vectorizes (two interleaved loads per input row), with no buffer per plane.
#[inline(always)]
fn forward_plane_2x2_body<M: Math>(
    s: &Pool2dShape,
    x: &[f32],
    y: &mut [MaybeUninit<f32>],
    indices: &mut [MaybeUninit<u32>],
) {
    let in_w = s.in_size[1];
    let out_w = s.out_size()[1];
    for (oh, (y_row, idx_row)) in y
        .chunks_exact_mut(out_w)
        .zip(indices.chunks_exact_mut(out_w))
        .enumerate()
    {
        let top = 2 * oh * in_w;
        let upper = &x[top..top + 2 * out_w];
        let lower = &x[top + in_w..top + in_w + 2 * out_w];
        for (ow, (((value, index), u), l)) in y_row
            .iter_mut()
            .zip(idx_row.iter_mut())
            .zip(upper.chunks_exact(2))
            .zip(lower.chunks_exact(2))
            .enumerate()
        {
            let first = (top + 2 * ow) as u32;
            let (mut best, mut at) = (u[0], first);
            for (v, offset) in [(u[1], 1), (l[0], in_w as u32), (l[1], in_w as u32 + 1)] {
                let wins = better(v, best);
                best = if wins { v } else { best };
                at = if wins { first + offset } else { at };
            }
            value.write(best);
            index.write(at);
        }
    }
}

/// [`forward_plane_2x2`] 16 windows per register: each input row's 32 floats deinterleaved
/// into even and odd columns (`vpermt2ps`), then the same select chain over the four taps in
/// the same order, with the same tie and NaN rules; a row's last windows through masks. The
/// compiler's version of the loop had used 4-wide vectors and a scalar tail on short rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn forward_plane_2x2_avx512(
    s: &Pool2dShape,
    x: &[f32],
    y: &mut [MaybeUninit<f32>],
    indices: &mut [MaybeUninit<u32>],
) {
    use std::arch::x86_64::*;
    let in_w = s.in_size[1];
    let [out_h, out_w] = s.out_size();
    assert!(
        2 * out_h <= s.in_size[0]
            && 2 * out_w <= in_w
            && x.len() >= s.in_size[0] * in_w
            && y.len() >= out_h * out_w
            && indices.len() >= out_h * out_w
            && u32::try_from(x.len()).is_ok(),
        "2×2 pooling buffers"
    );
    let lane_offsets = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let taps = [1, in_w as i32, in_w as i32 + 1].map(|tap| _mm512_set1_epi32(tap));
    for oh in 0..out_h {
        let top = 2 * oh * in_w;
        for ow in (0..out_w).step_by(16) {
            let (mask, halves) = window_masks((out_w - ow).min(16));
            // SAFETY: the masked loads read only the windows' columns of rows 2·oh and
            // 2·oh + 1 (asserted inside the plane); the masked stores only this row's outputs.
            unsafe {
                let row = |at: usize| even_odd_columns(x.as_ptr().add(at + 2 * ow), halves);
                let ((u0, u1), (l0, l1)) = (row(top), row(top + in_w));
                let first =
                    _mm512_add_epi32(_mm512_set1_epi32((top + 2 * ow) as i32), lane_offsets);
                let (mut best, mut at) = (u0, first);
                for (v, tap) in [u1, l0, l1].into_iter().zip(taps) {
                    let wins = replaces(v, best);
                    best = _mm512_mask_mov_ps(best, wins, v);
                    at = _mm512_mask_mov_epi32(at, wins, _mm512_add_epi32(first, tap));
                }
                let out = oh * out_w + ow;
                _mm512_mask_storeu_ps(y.as_mut_ptr().add(out).cast(), mask, best);
                _mm512_mask_storeu_epi32(indices.as_mut_ptr().add(out).cast(), mask, at);
            }
        }
    }
}

/// The masks of a row's next `windows` (1–16) 2×2 windows: the windows' own, and the first
/// and second 16 of the `2 · windows` input columns they cover.
#[cfg(target_arch = "x86_64")]
pub(crate) fn window_masks(
    windows: usize,
) -> (
    std::arch::x86_64::__mmask16,
    [std::arch::x86_64::__mmask16; 2],
) {
    (
        ((1u32 << windows) - 1) as u16,
        [
            ((1u64 << (2 * windows).min(16)) - 1) as u16,
            ((1u64 << (2 * windows).saturating_sub(16)) - 1) as u16,
        ],
    )
}

/// The even and odd columns of the `2 · windows` floats at `p` (read through `halves`, from
/// [`window_masks`]): each window's left and right taps, 16 windows a register.
///
/// # Safety
/// The masked reads must lie inside one buffer; only called from AVX-512F functions.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn even_odd_columns(
    p: *const f32,
    halves: [std::arch::x86_64::__mmask16; 2],
) -> (std::arch::x86_64::__m512, std::arch::x86_64::__m512) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract.
    unsafe {
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        let a = _mm512_maskz_loadu_ps(halves[0], p);
        let b = _mm512_maskz_loadu_ps(halves[1], p.add(16));
        (
            _mm512_permutex2var_ps(a, even, b),
            _mm512_permutex2var_ps(a, odd, b),
        )
    }
}

/// The lanes where a later tap `v` replaces the maximum `best`: [`better`], 16 at once.
///
/// # Safety
/// Only called from AVX-512F functions.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn replaces(
    v: std::arch::x86_64::__m512,
    best: std::arch::x86_64::__m512,
) -> std::arch::x86_64::__mmask16 {
    use std::arch::x86_64::*;
    // SAFETY: the caller enables AVX-512F.
    unsafe {
        let larger = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, best);
        let v_nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
        let best_nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(best, best);
        larger | (v_nan & !best_nan)
    }
}

/// Whether a later tap `v` replaces the current maximum: larger, or NaN over a number.
#[inline(always)]
pub(crate) fn better(v: f32, best: f32) -> bool {
    (v > best) | (v.is_nan() & !best.is_nan())
}

/// `dx` = each output gradient added onto the input pixel its window's maximum came from.
pub fn max_pool2d_backward(
    shape: &Pool2dShape,
    dy: &[f32],
    indices: &[u32],
    dx: &mut [f32],
) -> Result<(), KernelError> {
    backward_into(shape, dy, indices, as_uninit(dx))
}

/// [`max_pool2d_backward`] into a new vector, zeroed by the kernel's own pass over each plane
/// rather than by the allocation as well.
pub fn max_pool2d_backward_vec(
    shape: &Pool2dShape,
    dy: &[f32],
    indices: &[u32],
) -> Result<Vec<f32>, KernelError> {
    shape.validate()?;
    let len = shape
        .input_len()
        .ok_or_else(|| KernelError::Shape("the input's size overflows usize".into()))?;
    // SAFETY: when `backward_into` succeeds every plane was zeroed, then received its sums
    // (an empty plane has nothing to write).
    unsafe { new_output(len, |dx| backward_into(shape, dy, indices, dx)) }
}

fn backward_into(
    shape: &Pool2dShape,
    dy: &[f32],
    indices: &[u32],
    dx: &mut [MaybeUninit<f32>],
) -> Result<(), KernelError> {
    shape.validate()?;
    expect_len("output gradient", dy.len(), shape.output_len())?;
    expect_len("indices", indices.len(), shape.output_len())?;
    expect_len("input gradient", dx.len(), shape.input_len())?;
    let in_plane = shape.in_size[0] * shape.in_size[1];
    let out_plane = shape.out_size()[0] * shape.out_size()[1];
    if in_plane == 0 {
        return Ok(());
    }
    if let Some(bad) = indices.iter().find(|&&i| i as usize >= in_plane) {
        return Err(KernelError::Shape(format!(
            "pooling index {bad} is outside the {:?} input plane",
            shape.in_size
        )));
    }
    dx.par_chunks_mut(in_plane)
        .enumerate()
        .with_min_len(4096usize.div_ceil(in_plane))
        .for_each(|(plane, dx_plane)| {
            let dx_plane = filled(dx_plane, 0.0);
            let range = plane * out_plane..(plane + 1) * out_plane;
            for (g, &i) in dy[range.clone()].iter().zip(&indices[range]) {
                dx_plane[i as usize] += *g;
            }
        });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// The naive pooling: every window's taps in order, the first maximum wins.
    fn naive(s: &Pool2dShape, x: &[f32]) -> (Vec<f32>, Vec<u32>) {
        let [out_h, out_w] = s.out_size();
        let [in_h, in_w] = s.in_size;
        let mut y = Vec::new();
        let mut idx = Vec::new();
        for plane in 0..s.batch * s.channels {
            for oh in 0..out_h {
                for ow in 0..out_w {
                    let mut best: Option<(f32, usize)> = None;
                    for i in 0..s.kernel[0] {
                        for j in 0..s.kernel[1] {
                            let ih = (oh * s.stride[0] + i * s.dilation[0]) as isize
                                - s.padding[0] as isize;
                            let iw = (ow * s.stride[1] + j * s.dilation[1]) as isize
                                - s.padding[1] as isize;
                            if ih < 0 || iw < 0 || ih as usize >= in_h || iw as usize >= in_w {
                                continue;
                            }
                            let at = ih as usize * in_w + iw as usize;
                            let v = x[plane * in_h * in_w + at];
                            if best.is_none_or(|(b, _)| v > b || (v.is_nan() && !b.is_nan())) {
                                best = Some((v, at));
                            }
                        }
                    }
                    let (v, at) = best.unwrap();
                    y.push(v);
                    idx.push(at as u32);
                }
            }
        }
        (y, idx)
    }

    #[test]
    fn matches_the_naive_pooling_and_routes_gradients_to_the_maxima() {
        let mut rng = StdRng::seed_from_u64(9);
        for case in 0..200 {
            let kernel = [rng.random_range(1..4), rng.random_range(1..4)];
            let padding = [
                rng.random_range(0..=kernel[0] / 2),
                rng.random_range(0..=kernel[1] / 2),
            ];
            let mut shape = Pool2dShape {
                batch: rng.random_range(1..4),
                channels: rng.random_range(1..4),
                in_size: [rng.random_range(3..12), rng.random_range(3..12)],
                kernel,
                stride: [rng.random_range(1..4), rng.random_range(1..4)],
                padding,
                dilation: [rng.random_range(1..3), rng.random_range(1..3)],
                ceil_mode: rng.random_bool(0.5),
            };
            if case % 4 == 0 {
                // the CNNs' 2×2 stride-2 pooling, which has its own loop
                (shape.kernel, shape.stride, shape.padding, shape.dilation) =
                    ([2, 2], [2, 2], [0, 0], [1, 1]);
                // Rows of up to 35 windows: whole registers of 16 and masked remainders.
                shape.in_size[1] = rng.random_range(3..72);
            }
            if shape.validate().is_err() {
                continue;
            }
            // Half the cases (2×2 ones included) are rounded to three levels with NaNs: ties
            // decide the index.
            let ties = (case / 4) % 2 == 1;
            let x: Vec<f32> = (0..shape.input_len().unwrap())
                .map(|_| {
                    let v: f32 = rng.random_range(-1.0..1.0);
                    match (ties, rng.random_range(0..20)) {
                        (false, _) => v,
                        (true, 0) => f32::NAN,
                        (true, _) => v.round(),
                    }
                })
                .collect();
            let n = shape.output_len().unwrap();
            let (mut y, mut idx) = (vec![0.0; n], vec![0; n]);
            max_pool2d_forward(&shape, &x, &mut y, &mut idx).unwrap();
            let (ey, eidx) = naive(&shape, &x);
            let same = |a: &f32, b: &f32| a == b || (a.is_nan() && b.is_nan());
            assert!(y.iter().zip(&ey).all(|(a, b)| same(a, b)), "{shape:?}");
            assert_eq!(idx, eidx, "{shape:?}");

            let dy: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let mut dx = vec![f32::NAN; x.len()];
            max_pool2d_backward(&shape, &dy, &idx, &mut dx).unwrap();
            let plane = shape.in_size[0] * shape.in_size[1];
            let out_plane = n / (shape.batch * shape.channels);
            let mut expected = vec![0.0; x.len()];
            for (o, &i) in idx.iter().enumerate() {
                expected[(o / out_plane) * plane + i as usize] += dy[o];
            }
            assert_eq!(dx, expected);
            // The allocating forms (never zeroed first) give the same bits.
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            let (y2, idx2) = max_pool2d_forward_vec(&shape, &x).unwrap();
            assert_eq!((bits(&y2), idx2), (bits(&y), idx.clone()), "{shape:?}");
            let dx2 = max_pool2d_backward_vec(&shape, &dy, &idx).unwrap();
            assert_eq!(bits(&dx2), bits(&dx), "{shape:?}");
        }
    }

    #[test]
    fn nan_wins_its_window_and_bad_indices_are_errors() {
        let shape = Pool2dShape {
            batch: 1,
            channels: 1,
            in_size: [2, 2],
            kernel: [2, 2],
            stride: [2, 2],
            padding: [0, 0],
            dilation: [1, 1],
            ceil_mode: false,
        };
        let (mut y, mut idx) = (vec![0.0], vec![0]);
        max_pool2d_forward(&shape, &[1.0, f32::NAN, 3.0, 2.0], &mut y, &mut idx).unwrap();
        assert!(y[0].is_nan());
        assert_eq!(idx[0], 1);
        let mut dx = vec![0.0; 4];
        assert!(max_pool2d_backward(&shape, &[1.0], &[7], &mut dx).is_err());
    }
}
