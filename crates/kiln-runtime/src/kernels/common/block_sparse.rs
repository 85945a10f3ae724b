//! Weights [rows, cols] whose blocks of 1 × `width` consecutive columns are mostly zero (a
//! fully-connected layer pruned in blocks), kept as their non-zero blocks only — the layout
//! of LiteRT's sparse FULLY_CONNECTED, but found in any constant weight, however the file
//! stores it (dense, CSR behind DENSIFY, or blocks) — so a product touches only those.
//! Skipping a zero block skips only products that are zero, so integer sums are exact and
//! the int8 bits are the dense kernel's.

/// The non-zero blocks of a weight matrix, row by row.
#[derive(Debug)]
pub struct BlockSparse<T> {
    width: usize,
    /// Row r's blocks are `row_starts[r]..row_starts[r + 1]`.
    row_starts: Vec<usize>,
    /// First column of each kept block (u32: half the bytes the kernels stream).
    columns: Vec<u32>,
    /// The kept blocks' values, `width` each.
    values: Vec<T>,
    /// One past the last column any kept block reaches.
    reach: usize,
}

impl<T: Copy> BlockSparse<T> {
    /// `dense` ([rows, cols], row-major) as blocks of 1 × `width`, when at least
    /// `min_zero_blocks` of them are all zero (`is_zero`) and `width` divides `cols`; `None`
    /// otherwise (the dense kernel is then as fast or faster).
    pub fn from_dense(
        dense: &[T],
        (rows, cols): (usize, usize),
        width: usize,
        is_zero: impl Fn(T) -> bool,
        min_zero_blocks: f64,
    ) -> Option<Self> {
        if width == 0
            || cols == 0
            || !cols.is_multiple_of(width)
            || dense.len() != rows * cols
            || u32::try_from(cols).is_err()
        {
            return None;
        }
        let blocks = rows * cols / width;
        let zero_blocks = dense
            .chunks_exact(width)
            .filter(|block| block.iter().all(|&v| is_zero(v)))
            .count();
        if (zero_blocks as f64) < min_zero_blocks * blocks as f64 {
            return None;
        }
        let mut row_starts = Vec::with_capacity(rows + 1);
        let mut columns = Vec::with_capacity(blocks - zero_blocks);
        let mut values = Vec::with_capacity((blocks - zero_blocks) * width);
        row_starts.push(0);
        for row in dense.chunks_exact(cols) {
            for (b, block) in row.chunks_exact(width).enumerate() {
                if !block.iter().all(|&v| is_zero(v)) {
                    columns.push((b * width) as u32);
                    values.extend_from_slice(block);
                }
            }
            row_starts.push(columns.len());
        }
        let reach = columns
            .iter()
            .map(|&c| c as usize + width)
            .max()
            .unwrap_or(0);
        Some(Self {
            reach,
            width,
            row_starts,
            columns,
            values,
        })
    }

    /// The row count, after checking that `batches` input rows of `cols` (`x_len` values)
    /// hold every kept block and `out_len` every output: what the kernels' unchecked loads
    /// rely on.
    fn check(&self, x_len: usize, out_len: usize, (batches, cols): (usize, usize)) -> usize {
        let rows = self.row_starts.len() - 1;
        assert!(
            x_len >= batches * cols && out_len >= batches * rows && self.reach <= cols,
            "prepared shapes"
        );
        rows
    }

    /// The non-zero blocks kept.
    pub fn kept(&self) -> usize {
        self.columns.len()
    }

    pub fn bytes(&self) -> usize {
        self.values.len() * size_of::<T>()
            + self.columns.len() * size_of::<u32>()
            + self.row_starts.len() * size_of::<usize>()
    }

    /// Row `r`'s kept blocks as (first column, values).
    #[inline]
    pub fn row(&self, r: usize) -> impl Iterator<Item = (usize, &[T])> {
        let blocks = self.row_starts[r]..self.row_starts[r + 1];
        self.columns[blocks.clone()]
            .iter()
            .zip(
                self.values[blocks.start * self.width..blocks.end * self.width]
                    .chunks_exact(self.width),
            )
            .map(|(&c, v)| (c as usize, v))
    }

    /// Σ over row `r`'s kept blocks of values × `x` (a row of the input), through `dot` per
    /// block.
    #[inline(always)]
    pub fn row_dot<X, S: std::ops::Add<Output = S> + Default>(
        &self,
        r: usize,
        x: &[X],
        dot: impl Fn(&[T], &[X]) -> S,
    ) -> S {
        self.row(r)
            .fold(S::default(), |sum, (c, w)| sum + dot(w, &x[c..c + w.len()]))
    }
}

impl BlockSparse<i8> {
    /// `sums[b · rows + r] = Σ_k w[r, k] · (x[b, k] ^ flip)` — the input bytes read as
    /// unsigned after `flip` (0x80 makes int8 unsigned, x + 128) — for `batches` rows of
    /// `cols` bytes, zero blocks skipped. With AVX-512 VNNI one `vpdpbusd` takes a 16-wide
    /// block; elsewhere portable loops.
    pub fn multiply(&self, x: &[u8], flip: u8, (batches, cols): (usize, usize), sums: &mut [i32]) {
        let rows = self.check(x.len(), sums.len(), (batches, cols));
        #[cfg(target_arch = "x86_64")]
        if self.width == 16
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512vnni")
        {
            for b in 0..batches {
                // SAFETY: the CPU has the features; the blocks lie inside the row (asserted).
                unsafe {
                    self.row_sums_vnni(&x[b * cols..][..cols], flip, &mut sums[b * rows..][..rows])
                };
            }
            return;
        }
        for b in 0..batches {
            let x = &x[b * cols..][..cols];
            for (r, sum) in sums[b * rows..][..rows].iter_mut().enumerate() {
                *sum = self.row_dot(r, x, |w, x| {
                    w.iter().zip(x).fold(0i32, |s, (&w, &x)| {
                        s.wrapping_add(i32::from(w) * i32::from(x ^ flip))
                    })
                });
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vl,avx512vnni")]
    unsafe fn row_sums_vnni(&self, x: &[u8], flip: u8, sums: &mut [i32]) {
        use std::arch::x86_64::*;
        let flip128 = _mm_set1_epi8(flip as i8);
        let flip512 = _mm512_set1_epi8(flip as i8);
        for (r, sum) in sums.iter_mut().enumerate() {
            let blocks = self.row_starts[r]..self.row_starts[r + 1];
            let mut block = blocks.start;
            // SAFETY: every block's 16 columns lie inside `x` (the caller asserted it) and
            // its 16 values inside `values`.
            *sum = unsafe {
                // Four blocks per `vpdpbusd`: their weights are one 64-byte load, their
                // inputs four 16-byte ones; two accumulators hide the instruction's latency.
                let (mut even, mut odd) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                let input = |at: usize| {
                    let column = *self.columns.get_unchecked(at) as usize;
                    _mm_loadu_si128(x.as_ptr().add(column).cast())
                };
                let quad = |at: usize| {
                    let u = _mm512_castsi128_si512(input(at));
                    let u = _mm512_inserti32x4::<1>(u, input(at + 1));
                    let u = _mm512_inserti32x4::<2>(u, input(at + 2));
                    let u = _mm512_inserti32x4::<3>(u, input(at + 3));
                    let w = _mm512_loadu_si512(self.values.as_ptr().add(at * 16).cast());
                    (_mm512_xor_si512(u, flip512), w)
                };
                while block + 8 <= blocks.end {
                    let (u, w) = quad(block);
                    even = _mm512_dpbusd_epi32(even, u, w);
                    let (u, w) = quad(block + 4);
                    odd = _mm512_dpbusd_epi32(odd, u, w);
                    block += 8;
                }
                if block + 4 <= blocks.end {
                    let (u, w) = quad(block);
                    even = _mm512_dpbusd_epi32(even, u, w);
                    block += 4;
                }
                let mut rest = _mm_setzero_si128();
                while block < blocks.end {
                    let u = _mm_xor_si128(input(block), flip128);
                    let w = _mm_loadu_si128(self.values.as_ptr().add(block * 16).cast());
                    rest = _mm_dpbusd_epi32(rest, u, w);
                    block += 1;
                }
                let rest = _mm512_castsi128_si512(rest);
                let rest = _mm512_maskz_mov_epi32(0x000f, rest);
                _mm512_reduce_add_epi32(_mm512_add_epi32(_mm512_add_epi32(even, odd), rest))
            };
        }
    }
}

impl BlockSparse<f32> {
    /// `out[b · rows + r] = Σ_k w[r, k] · x[b, k]`, zero blocks skipped: one fused
    /// multiply-add per 16- or 4-wide block with AVX-512, portable loops elsewhere.
    pub fn multiply(&self, x: &[f32], (batches, cols): (usize, usize), out: &mut [f32]) {
        let rows = self.check(x.len(), out.len(), (batches, cols));
        #[cfg(target_arch = "x86_64")]
        if matches!(self.width, 4 | 16) && std::arch::is_x86_feature_detected!("avx512f") {
            for b in 0..batches {
                // SAFETY: the CPU has the feature; the blocks lie inside the row (asserted).
                unsafe { self.rows_avx512(&x[b * cols..][..cols], &mut out[b * rows..][..rows]) };
            }
            return;
        }
        for b in 0..batches {
            let x = &x[b * cols..][..cols];
            for (r, o) in out[b * rows..][..rows].iter_mut().enumerate() {
                *o = self.row_dot(r, x, |w, x| {
                    w.iter().zip(x).fold(0.0f32, |s, (&w, &x)| s + w * x)
                });
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vl,fma")]
    unsafe fn rows_avx512(&self, x: &[f32], out: &mut [f32]) {
        use std::arch::x86_64::*;
        for (r, o) in out.iter_mut().enumerate() {
            let blocks = self.row_starts[r]..self.row_starts[r + 1];
            // SAFETY: every block's columns lie inside `x` (asserted by the caller) and its
            // values inside `values`.
            *o = unsafe {
                if self.width == 16 {
                    let mut acc = _mm512_setzero_ps();
                    for at in blocks {
                        let column = *self.columns.get_unchecked(at) as usize;
                        acc = _mm512_fmadd_ps(
                            _mm512_loadu_ps(self.values.as_ptr().add(at * 16)),
                            _mm512_loadu_ps(x.as_ptr().add(column)),
                            acc,
                        );
                    }
                    _mm512_reduce_add_ps(acc)
                } else {
                    let mut acc = _mm_setzero_ps();
                    for at in blocks {
                        let column = *self.columns.get_unchecked(at) as usize;
                        acc = _mm_fmadd_ps(
                            _mm_loadu_ps(self.values.as_ptr().add(at * 4)),
                            _mm_loadu_ps(x.as_ptr().add(column)),
                            acc,
                        );
                    }
                    let pairs = _mm_add_ps(acc, _mm_movehl_ps(acc, acc));
                    _mm_cvtss_f32(_mm_add_ss(pairs, _mm_shuffle_ps::<0b01>(pairs, pairs)))
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(rows: usize, cols: usize, width: usize, keep_every: usize) -> Vec<i8> {
        (0..rows * cols)
            .map(|i| {
                let block = i / width;
                if block.is_multiple_of(keep_every) {
                    ((i * 37 % 255) as i32 - 127) as i8
                } else {
                    0
                }
            })
            .collect()
    }

    /// Products equal the dense ones exactly (int8) and to rounding (float), for int8 and
    /// uint8 inputs and several batches; too few zero blocks, or a width that does not
    /// divide the columns, leave the weight dense.
    #[test]
    fn products_equal_the_dense_ones() {
        let (rows, cols, width) = (7, 64, 16);
        let dense = weights(rows, cols, width, 5);
        let sparse = BlockSparse::from_dense(&dense, (rows, cols), width, |v| v == 0, 0.7).unwrap();
        assert!(sparse.bytes() < dense.len() * 2);
        let x: Vec<u8> = (0..3 * cols).map(|i| (i * 91 % 256) as u8).collect();
        for flip in [0x80u8, 0] {
            let mut got = vec![0i32; 3 * rows];
            sparse.multiply(&x, flip, (3, cols), &mut got);
            for b in 0..3 {
                for r in 0..rows {
                    let want: i32 = (0..cols)
                        .map(|k| i32::from(dense[r * cols + k]) * i32::from(x[b * cols + k] ^ flip))
                        .sum();
                    assert_eq!(got[b * rows + r], want, "flip {flip}, batch {b}, row {r}");
                }
            }
        }
        let floats: Vec<f32> = dense.iter().map(|&w| f32::from(w) * 0.01).collect();
        let sparse = BlockSparse::from_dense(&floats, (rows, cols), 4, |v| v == 0.0, 0.7).unwrap();
        let xf: Vec<f32> = (0..cols).map(|k| (k as f32 * 0.37).sin()).collect();
        let mut out = vec![0.0f32; rows];
        sparse.multiply(&xf, (1, cols), &mut out);
        for r in 0..rows {
            let want: f32 = (0..cols).map(|k| floats[r * cols + k] * xf[k]).sum();
            assert!(
                (out[r] - want).abs() <= 1e-5 * (1.0 + want.abs()),
                "{} vs {want}",
                out[r]
            );
        }
        // Half the blocks zero is below 70%; 16 does not divide 60.
        assert!(
            BlockSparse::from_dense(
                &weights(rows, cols, width, 2),
                (rows, cols),
                width,
                |v| v == 0,
                0.7
            )
            .is_none()
        );
        assert!(
            BlockSparse::from_dense(&vec![0i8; 7 * 60], (7, 60), 16, |v| v == 0, 0.7).is_none()
        );
    }
}
