//! The geometry of one 2-D convolution over an NCHW batch, checked once so every kernel can
//! index without further bounds reasoning.

use crate::KernelError;

/// A 2-D convolution of an `[batch, in_channels, height, width]` input with an
/// `[out_channels, in_channels / groups, kernel_h, kernel_w]` weight (Burn's and PyTorch's
/// layouts), with per-side padding `[(top, bottom), (left, right)]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dShape {
    pub batch: usize,
    pub in_channels: usize,
    pub in_size: [usize; 2],
    pub out_channels: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [(usize, usize); 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl Conv2dShape {
    /// Checks that the convolution is well formed and its output non-empty.
    pub fn validate(&self) -> Result<(), KernelError> {
        let fail = |why: String| Err(KernelError::Shape(why));
        if self.groups == 0 || self.stride.contains(&0) || self.dilation.contains(&0) {
            return fail(format!(
                "groups {}, stride {:?} and dilation {:?} must be at least 1",
                self.groups, self.stride, self.dilation
            ));
        }
        if !self.in_channels.is_multiple_of(self.groups)
            || !self.out_channels.is_multiple_of(self.groups)
        {
            return fail(format!(
                "{} input and {} output channels do not split into {} groups",
                self.in_channels, self.out_channels, self.groups
            ));
        }
        if self.kernel.contains(&0) || self.in_channels == 0 || self.out_channels == 0 {
            return fail(format!(
                "kernel {:?}, {} input and {} output channels must all be non-zero",
                self.kernel, self.in_channels, self.out_channels
            ));
        }
        for axis in 0..2 {
            let padded = self.in_size[axis] + self.padding[axis].0 + self.padding[axis].1;
            if padded < self.dilated_kernel(axis) {
                return fail(format!(
                    "the {}×{} input, padded {:?}, is smaller than the {:?} kernel (dilation {:?})",
                    self.in_size[0], self.in_size[1], self.padding, self.kernel, self.dilation
                ));
            }
        }
        // Every buffer length must be representable; the kernels index with plain usize.
        let sizes = [
            self.input_len(),
            self.output_len(),
            self.weight_len(),
            self.col_rows().checked_mul(self.out_pixels()),
        ];
        if sizes.iter().any(Option::is_none) {
            return fail("buffer sizes overflow usize".into());
        }
        Ok(())
    }

    fn dilated_kernel(&self, axis: usize) -> usize {
        self.dilation[axis] * (self.kernel[axis] - 1) + 1
    }

    /// `[out_height, out_width]`; meaningful once [`validate`](Self::validate) passed.
    pub fn out_size(&self) -> [usize; 2] {
        [0, 1].map(|axis| {
            let padded = self.in_size[axis] + self.padding[axis].0 + self.padding[axis].1;
            (padded - self.dilated_kernel(axis)) / self.stride[axis] + 1
        })
    }

    pub fn in_pixels(&self) -> usize {
        self.in_size[0] * self.in_size[1]
    }

    pub fn out_pixels(&self) -> usize {
        let [h, w] = self.out_size();
        h * w
    }

    pub fn in_per_group(&self) -> usize {
        self.in_channels / self.groups
    }

    pub fn out_per_group(&self) -> usize {
        self.out_channels / self.groups
    }

    /// Rows of one group's im2col matrix: `in_per_group · kernel_h · kernel_w`.
    pub fn col_rows(&self) -> usize {
        self.in_per_group() * self.kernel[0] * self.kernel[1]
    }

    pub fn input_len(&self) -> Option<usize> {
        [self.in_channels, self.in_size[0], self.in_size[1]]
            .iter()
            .try_fold(self.batch, |acc, &d| acc.checked_mul(d))
    }

    pub fn output_len(&self) -> Option<usize> {
        let [h, w] = self.out_size();
        [self.out_channels, h, w]
            .iter()
            .try_fold(self.batch, |acc, &d| acc.checked_mul(d))
    }

    pub fn weight_len(&self) -> Option<usize> {
        self.out_channels.checked_mul(self.col_rows())
    }

    /// One filter per channel (`groups == in_channels == out_channels`): MobileNet's and
    /// EfficientNet's depthwise layers, which get direct kernels instead of GEMMs.
    pub fn is_depthwise(&self) -> bool {
        self.groups == self.in_channels && self.out_channels == self.in_channels
    }

    /// A 1×1, stride-1, unpadded convolution: its input already is the im2col matrix.
    pub fn is_pointwise(&self) -> bool {
        self.kernel == [1, 1] && self.stride == [1, 1] && self.padding == [(0, 0), (0, 0)]
    }
}

/// Checks one buffer's length against what the shape needs.
pub(crate) fn expect_len(
    buffer: &'static str,
    actual: usize,
    expected: Option<usize>,
) -> Result<(), KernelError> {
    let expected =
        expected.ok_or_else(|| KernelError::Shape("buffer sizes overflow usize".into()))?;
    if actual == expected {
        Ok(())
    } else {
        Err(KernelError::BufferLength {
            buffer,
            expected,
            actual,
        })
    }
}

/// The output positions `lo..hi` along one axis whose input index
/// `out · stride + offset − pad_begin` lies inside `0..in_len`, for a kernel tap at `offset`.
pub(crate) fn valid_range(
    out_len: usize,
    in_len: usize,
    stride: usize,
    offset: usize,
    pad_begin: usize,
) -> (usize, usize) {
    // in = out·stride + offset − pad ≥ 0  ⇔  out ≥ ceil((pad − offset) / stride)
    let lo = if pad_begin > offset {
        (pad_begin - offset).div_ceil(stride)
    } else {
        0
    };
    // in ≤ in_len − 1  ⇔  out ≤ (in_len − 1 + pad − offset) / stride
    let reach = in_len + pad_begin;
    let hi = if reach > offset {
        ((reach - offset - 1) / stride + 1).min(out_len)
    } else {
        0
    };
    (lo.min(hi), hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Conv2dShape {
        Conv2dShape {
            batch: 2,
            in_channels: 4,
            in_size: [7, 6],
            out_channels: 8,
            kernel: [3, 3],
            stride: [2, 1],
            padding: [(1, 1), (0, 2)],
            dilation: [1, 2],
            groups: 2,
        }
    }

    #[test]
    fn output_size_follows_padding_stride_and_dilation() {
        let s = shape();
        s.validate().unwrap();
        // rows: (7 + 2 − 3) / 2 + 1 = 4; columns: (6 + 2 − 5) / 1 + 1 = 4
        assert_eq!(s.out_size(), [4, 4]);
        assert_eq!(s.col_rows(), 2 * 9);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let mut s = shape();
        s.groups = 3;
        assert!(s.validate().is_err());
        let mut s = shape();
        s.in_size = [1, 1];
        s.padding = [(0, 0), (0, 0)];
        assert!(s.validate().is_err());
        let mut s = shape();
        s.stride = [0, 1];
        assert!(s.validate().is_err());
    }

    #[test]
    fn valid_range_matches_brute_force() {
        for in_len in 1..7 {
            for stride in 1..4 {
                for offset in 0..5 {
                    for pad in 0..4 {
                        let out_len = 9;
                        let inside = |o: usize| {
                            let i = (o * stride + offset) as isize - pad as isize;
                            i >= 0 && (i as usize) < in_len
                        };
                        let (lo, hi) = valid_range(out_len, in_len, stride, offset, pad);
                        for o in 0..out_len {
                            assert_eq!(
                                inside(o),
                                (lo..hi).contains(&o),
                                "{in_len} {stride} {offset} {pad} {o}"
                            );
                        }
                    }
                }
            }
        }
    }
}
