//! Strided matrix products on the `gemm` crate, whose packed microkernels use AVX-512 where the
//! CPU has it (the `x86-v4` feature) and AVX2 + FMA otherwise. Strides let the convolution
//! kernels multiply by a transposed weight or im2col matrix without copying it.

use std::mem::MaybeUninit;

use crate::uninit::as_uninit;

/// Where a row-and-column matrix lies in a slice.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MatLayout {
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl MatLayout {
    pub fn row_major(rows: usize, cols: usize) -> Self {
        Self::with_row_stride(rows, cols, cols)
    }

    /// Rows `row_stride` apart, columns contiguous.
    pub fn with_row_stride(rows: usize, cols: usize, row_stride: usize) -> Self {
        Self {
            rows,
            cols,
            row_stride,
            col_stride: 1,
        }
    }

    pub fn transposed(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// One past the largest index the matrix touches.
    fn span(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            0
        } else {
            (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride + 1
        }
    }
}

/// Whether one product may spread over the thread pool: only when the caller is not already
/// running one product per thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Threads {
    One,
    Pool,
}

/// `dst = lhs · rhs`, or `dst += lhs · rhs` when `accumulate`.
///
/// # Panics
/// When the layouts do not chain (`lhs.cols == rhs.rows`, `dst` is `lhs.rows × rhs.cols`) or a
/// matrix reaches past its slice: the convolution kernels derive both from a validated shape,
/// so either is a bug in Kiln, and the check guards the unsafe call below.
pub(crate) fn matmul(
    dst: &mut [f32],
    dst_layout: MatLayout,
    accumulate: bool,
    lhs: (&[f32], MatLayout),
    rhs: (&[f32], MatLayout),
    threads: Threads,
) {
    matmul_into(as_uninit(dst), dst_layout, accumulate, lhs, rhs, threads);
}

/// [`matmul`] into a destination that need not be initialized unless `accumulate` (the
/// product never reads `dst` otherwise): every element of the `dst_layout` matrix is
/// initialized afterwards.
pub(crate) fn matmul_into(
    dst: &mut [MaybeUninit<f32>],
    dst_layout: MatLayout,
    accumulate: bool,
    (lhs, lhs_layout): (&[f32], MatLayout),
    (rhs, rhs_layout): (&[f32], MatLayout),
    threads: Threads,
) {
    let (m, n, k) = (lhs_layout.rows, rhs_layout.cols, lhs_layout.cols);
    assert!(
        rhs_layout.rows == k && dst_layout.rows == m && dst_layout.cols == n,
        "matmul layouts do not chain: {lhs_layout:?} · {rhs_layout:?} → {dst_layout:?}"
    );
    assert!(
        dst_layout.span() <= dst.len()
            && lhs_layout.span() <= lhs.len()
            && rhs_layout.span() <= rhs.len(),
        "matmul matrix outside its buffer"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                for c in 0..n {
                    dst[r * dst_layout.row_stride + c * dst_layout.col_stride].write(0.0);
                }
            }
        }
        return;
    }
    let parallelism = match threads {
        Threads::One => gemm::Parallelism::None,
        Threads::Pool => gemm::Parallelism::Rayon(rayon::current_num_threads()),
    };
    // SAFETY: the asserts above keep every index the product touches inside its slice, and
    // `dst` is borrowed mutably, so it aliases neither input; gemm reads `dst` only when
    // `accumulate` (its `read_dst`), when the caller has initialized it.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().cast::<f32>(),
            dst_layout.col_stride as isize,
            dst_layout.row_stride as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_layout.col_stride as isize,
            lhs_layout.row_stride as isize,
            rhs.as_ptr(),
            rhs_layout.col_stride as isize,
            rhs_layout.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], al: MatLayout, b: &[f32], bl: MatLayout) -> Vec<f32> {
        let mut out = vec![0.0; al.rows * bl.cols];
        for i in 0..al.rows {
            for j in 0..bl.cols {
                out[i * bl.cols + j] = (0..al.cols)
                    .map(|p| {
                        a[i * al.row_stride + p * al.col_stride]
                            * b[p * bl.row_stride + j * bl.col_stride]
                    })
                    .sum();
            }
        }
        out
    }

    #[test]
    fn strided_products_match_the_naive_one() {
        let (m, n, k) = (7, 19, 13);
        let a: Vec<f32> = (0..m * k).map(|i| (i % 11) as f32 - 5.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.5).collect();
        // lhs stored transposed, as the input gradient reads the weight.
        let a_t = MatLayout::row_major(k, m).transposed();
        let b_l = MatLayout::row_major(k, n);
        let expected = naive(&a, a_t, &b, b_l);
        for threads in [Threads::One, Threads::Pool] {
            let mut dst = vec![1.0; m * n];
            matmul(
                &mut dst,
                MatLayout::row_major(m, n),
                false,
                (&a, a_t),
                (&b, b_l),
                threads,
            );
            assert_eq!(dst, expected);
            matmul(
                &mut dst,
                MatLayout::row_major(m, n),
                true,
                (&a, a_t),
                (&b, b_l),
                threads,
            );
            let doubled: Vec<f32> = expected.iter().map(|v| v * 2.0).collect();
            assert_eq!(dst, doubled);
        }
    }
}
