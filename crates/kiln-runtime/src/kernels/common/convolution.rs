//! What CONV_2D and DEPTHWISE_CONV_2D share: their operands (input, 4-D filter, optional
//! bias, output), the geometry of the receptive fields (padding, strides, dilation, output
//! size), and the weighted arithmetic with its per-channel filter quantization
//! (`weighted::prepare`). Each operator adds only its filter layout and channel checks.

use kiln_tflite::{
    Activation, BuiltinOptions, Conv2DOptions, DepthwiseConv2DOptions, Padding, window,
};

use super::weighted::{self, Arithmetic, WeightedOp};
use crate::error::RuntimeError;
use crate::kernels::{In, Prep};
use crate::tensor::TensorInfo;

/// The options both convolutions carry.
pub struct ConvOptions {
    pub padding: Padding,
    /// (height, width).
    pub stride: (i32, i32),
    /// (height, width).
    pub dilation: (i32, i32),
    pub activation: Activation,
}

/// An operator's own options type (`Conv2DOptions`, `DepthwiseConv2DOptions`): how to find it
/// in an operator, and the part both convolutions share.
pub trait OperatorOptions: Sized + 'static {
    /// The error when the operator carries other options.
    const MISSING: &'static str;
    fn of(options: &BuiltinOptions) -> Option<&Self>;
    fn conv(&self) -> ConvOptions;
}

macro_rules! operator_options {
    ($($options:ident in $variant:ident),* $(,)?) => {$(
        impl OperatorOptions for $options {
            const MISSING: &'static str = concat!("missing ", stringify!($options));

            fn of(options: &BuiltinOptions) -> Option<&Self> {
                match options {
                    BuiltinOptions::$variant(options) => Some(options),
                    _ => None,
                }
            }

            fn conv(&self) -> ConvOptions {
                ConvOptions {
                    padding: self.padding,
                    stride: (self.stride_h, self.stride_w),
                    dilation: (self.dilation_h, self.dilation_w),
                    activation: self.activation,
                }
            }
        }
    )*};
}

operator_options!(Conv2DOptions in Conv2D, DepthwiseConv2DOptions in DepthwiseConv2D);

/// A convolution's tensors: input 0, the filter (input 1, checked to be 4-D), the optional
/// bias (input 2) and output 0.
pub struct Operands<'a> {
    pub input: &'a TensorInfo,
    pub filter: &'a TensorInfo,
    pub bias: Option<&'a TensorInfo>,
    pub output: &'a TensorInfo,
    /// The filter's four dimensions.
    pub filter_shape: [usize; 4],
}

impl<'a> Operands<'a> {
    /// Checks the arity (2 or 3 inputs, 1 output) and that the operator carries options `O`,
    /// then reads the tensors. Returns them with the options.
    pub fn new<O: OperatorOptions>(prep: &Prep<'a>) -> Result<(Self, &'a O), RuntimeError> {
        prep.expect_arity(2..=3, 1)?;
        let options = O::of(&prep.op.options).ok_or_else(|| prep.bad(O::MISSING))?;
        let (input, filter, output) = (prep.input(0)?, prep.input(1)?, prep.output(0)?);
        prep.require_rank(filter, 4)?;
        let [d0, d1, d2, d3] = filter.shape[..] else {
            unreachable!("rank checked")
        };
        let operands = Self {
            input,
            filter,
            bias: prep.optional_input(2),
            output,
            filter_shape: [d0, d1, d2, d3],
        };
        Ok((operands, options))
    }

    /// The geometry of a filter of spatial size `filter` (height, width) producing `out_c`
    /// channels over the NHWC input.
    pub fn geometry(
        &self,
        prep: &Prep<'_>,
        filter: (usize, usize),
        out_c: usize,
        options: &ConvOptions,
    ) -> Result<Geometry, RuntimeError> {
        Geometry::new(
            prep,
            self.input,
            filter,
            out_c,
            options.padding,
            options.stride,
            options.dilation,
        )
    }

    /// The arithmetic (per-channel scales along the filter's `channel_axis`; hybrid inputs
    /// quantized asymmetrically when `hybrid_asymmetric`), with the output shape declared.
    pub fn prepare(
        &self,
        prep: &Prep<'_>,
        geometry: Geometry,
        options: &ConvOptions,
        channel_axis: usize,
        hybrid_asymmetric: bool,
    ) -> Result<Convolution, RuntimeError> {
        let arithmetic = weighted::prepare(
            prep,
            &WeightedOp {
                input: self.input,
                filter: self.filter,
                bias: self.bias,
                output: self.output,
                activation: options.activation,
                channels: geometry.out_c,
                channel_axis,
                double_precision_rescale: false,
                hybrid_asymmetric,
            },
        )?;
        prep.set_output_shape(0, geometry.output_shape());
        Ok(Convolution {
            geometry,
            has_bias: self.bias.is_some(),
            arithmetic,
        })
    }
}

/// A prepared convolution: what both kernels evaluate with.
#[derive(Debug)]
pub struct Convolution {
    pub geometry: Geometry,
    pub has_bias: bool,
    pub arithmetic: Arithmetic,
}

impl Convolution {
    /// The bias's bytes at eval time, when the operator has one.
    pub fn bias<'b>(&self, inputs: &[Option<In<'b>>]) -> Option<&'b [u8]> {
        weighted::bias(inputs, self.has_bias)
    }
}

/// Where each output pixel's receptive field lies in the input.
#[derive(Clone, Debug)]
pub struct Geometry {
    pub batches: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub in_c: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub out_c: usize,
    pub filter_h: usize,
    pub filter_w: usize,
    pub stride: (usize, usize),
    pub dilation: (usize, usize),
    pub pad: (usize, usize),
}

fn positive(prep: &Prep<'_>, what: &str, value: i32) -> Result<usize, RuntimeError> {
    usize::try_from(value)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| prep.bad(&format!("{what} must be positive, is {value}")))
}

impl Geometry {
    /// Geometry for an NHWC input and a filter of spatial size `filter` producing `out_c` channels.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        prep: &Prep<'_>,
        input: &TensorInfo,
        filter: (usize, usize),
        out_c: usize,
        padding: kiln_tflite::Padding,
        stride: (i32, i32),
        dilation: (i32, i32),
    ) -> Result<Self, RuntimeError> {
        prep.require_rank(input, 4)?;
        let [batches, in_h, in_w, in_c] = input.shape[..] else {
            unreachable!("rank checked")
        };
        if filter.0 == 0 || filter.1 == 0 {
            return Err(prep.bad("the filter has an empty spatial size"));
        }
        let stride = (
            positive(prep, "stride_h", stride.0)?,
            positive(prep, "stride_w", stride.1)?,
        );
        let dilation = (
            positive(prep, "dilation_h", dilation.0)?,
            positive(prep, "dilation_w", dilation.1)?,
        );
        let (out_h, pad_h) = window(padding, in_h, filter.0, stride.0, dilation.0);
        let (out_w, pad_w) = window(padding, in_w, filter.1, stride.1, dilation.1);
        Ok(Self {
            batches,
            in_h,
            in_w,
            in_c,
            out_h,
            out_w,
            out_c,
            filter_h: filter.0,
            filter_w: filter.1,
            stride,
            dilation,
            pad: (pad_h, pad_w),
        })
    }

    /// Multiply-accumulates of the whole convolution, with `taps_per_output` weights per
    /// output value (saturating: a malformed shape must not wrap to a small number).
    pub fn multiply_accumulates(&self, taps_per_output: usize) -> usize {
        [self.out_h, self.out_w, self.out_c, taps_per_output]
            .iter()
            .fold(self.batches, |acc, &d| acc.saturating_mul(d))
    }

    pub fn output_shape(&self) -> Vec<usize> {
        vec![self.batches, self.out_h, self.out_w, self.out_c]
    }

    /// Input pixel (row, column) under filter tap (ky, kx) of output pixel (oy, ox), if inside.
    #[inline]
    pub fn tap(&self, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<(usize, usize)> {
        let iy = (oy * self.stride.0 + ky * self.dilation.0).checked_sub(self.pad.0)?;
        let ix = (ox * self.stride.1 + kx * self.dilation.1).checked_sub(self.pad.1)?;
        (iy < self.in_h && ix < self.in_w).then_some((iy, ix))
    }

    /// A 1×1 convolution with stride 1 and no padding: output pixel i reads input pixel i.
    pub fn pointwise(&self) -> bool {
        self.filter_h == 1
            && self.filter_w == 1
            && self.stride == (1, 1)
            && self.pad == (0, 0)
            && (self.out_h, self.out_w) == (self.in_h, self.in_w)
    }

    /// The output columns `lo..hi` whose tap `kx` lands inside the image.
    pub fn valid_columns(&self, kx: usize) -> (usize, usize) {
        let offset = kx * self.dilation.1;
        // ix = ox·stride + offset − pad must be in 0..in_w.
        let lo = self.pad.1.saturating_sub(offset).div_ceil(self.stride.1);
        let hi = if self.in_w + self.pad.1 > offset {
            (self.in_w + self.pad.1 - offset - 1) / self.stride.1 + 1
        } else {
            0
        };
        (
            lo.min(self.out_w),
            hi.min(self.out_w).max(lo.min(self.out_w)),
        )
    }

    /// Output pixel (oy, ox)'s receptive field over every input channel of `image` (one
    /// batch, NHWC) as one row in the filter's (h, w, c) order: runs of input values through
    /// `copy`, taps outside the image `outside`. A filter row wholly inside the image is one
    /// contiguous run of the input.
    #[inline]
    pub fn gather_field<T: Copy>(
        &self,
        image: &[T],
        (oy, ox): (usize, usize),
        outside: T,
        copy: impl Fn(&mut [T], &[T]),
        row: &mut [T],
    ) {
        let run = self.filter_w * self.in_c;
        let x0 = (ox * self.stride.1).checked_sub(self.pad.1);
        let runs_inside =
            self.dilation.1 == 1 && x0.is_some_and(|x0| x0 + self.filter_w <= self.in_w);
        for (ky, dst) in row.chunks_exact_mut(run).take(self.filter_h).enumerate() {
            let iy = (oy * self.stride.0 + ky * self.dilation.0)
                .checked_sub(self.pad.0)
                .filter(|&iy| iy < self.in_h);
            match (iy, x0) {
                (None, _) => dst.fill(outside),
                (Some(iy), Some(x0)) if runs_inside => {
                    copy(dst, &image[(iy * self.in_w + x0) * self.in_c..][..run]);
                }
                (Some(_), _) => {
                    for (kx, dst) in dst.chunks_exact_mut(self.in_c).enumerate() {
                        match self.tap(oy, ox, ky, kx) {
                            Some((iy, ix)) => copy(
                                dst,
                                &image[(iy * self.in_w + ix) * self.in_c..][..self.in_c],
                            ),
                            None => dst.fill(outside),
                        }
                    }
                }
            }
        }
    }
}

/// Bytes past the end of a padded image and of a gathered block of rows: the short-run
/// gather copies whole 8-byte words, whose tails spill into them.
pub const WORD_SLACK: usize = 8;

impl Geometry {
    /// The padded image's (rows, columns) for one batch: every tap of every output pixel, with
    /// the image at (pad.0, pad.1). `None` when it would exceed `limit` bytes (a malformed
    /// dilation or stride can make it arbitrarily large).
    pub fn padded_size(&self, limit: usize) -> Option<(usize, usize)> {
        let extent = |out: usize, stride: usize, filter: usize, dilation: usize| {
            (out.checked_sub(1)?)
                .checked_mul(stride)?
                .checked_add((filter - 1).checked_mul(dilation)?)?
                .checked_add(1)
        };
        let rows = extent(self.out_h, self.stride.0, self.filter_h, self.dilation.0)?;
        let columns = extent(self.out_w, self.stride.1, self.filter_w, self.dilation.1)?;
        let bytes = rows.checked_mul(columns)?.checked_mul(self.in_c)?;
        (bytes <= limit).then_some((rows, columns))
    }

    /// Writes one batch's `image` into `padded` (`padded_size` plus [`WORD_SLACK`] bytes),
    /// each byte `^ flip`, with `outside` around it.
    pub fn fill_padded(
        &self,
        image: &[u8],
        (rows, columns): (usize, usize),
        outside: u8,
        flip: u8,
        padded: &mut [u8],
    ) {
        let c = self.in_c;
        // Image columns and rows that some tap reaches (the rest is never read).
        let width = self.in_w.min(columns.saturating_sub(self.pad.1));
        let height = self.in_h.min(rows.saturating_sub(self.pad.0));
        let row_len = columns * c;
        // Only the border takes `outside`: the rows above and below the image, and each image
        // row's columns left and right of it.
        padded[..self.pad.0 * row_len].fill(outside);
        padded[(self.pad.0 + height) * row_len..].fill(outside);
        for iy in 0..height {
            let row = &mut padded[(iy + self.pad.0) * row_len..][..row_len];
            let (left, rest) = row.split_at_mut(self.pad.1 * c);
            let (inside, right) = rest.split_at_mut(width * c);
            left.fill(outside);
            right.fill(outside);
            xor_copy(inside, &image[iy * self.in_w * c..][..width * c], flip);
        }
    }

    /// The receptive fields of `count` output pixels from `start` (row-major) as rows of
    /// `row_len` (≥ the field's length) bytes in the filter's (h, w, c) order, from an image
    /// of `size` made by `fill_padded`: every tap is inside, so each run is copied as whole
    /// words, whose spill the next run (or the row's padding, or [`WORD_SLACK`] bytes past the
    /// rows) takes.
    pub fn gather_padded(
        &self,
        padded: &[u8],
        size: (usize, usize),
        start: usize,
        row_len: usize,
        rows: &mut [u8],
    ) {
        self.gather_padded_in(padded, size, PixelOrder::Raster { start }, row_len, rows);
    }

    /// [`Self::gather_padded`] for the pixels `order` names, as many as `rows` holds.
    pub fn gather_padded_in(
        &self,
        padded: &[u8],
        size: (usize, usize),
        order: PixelOrder,
        row_len: usize,
        rows: &mut [u8],
    ) {
        let c = self.in_c;
        let columns = size.1;
        let field = self.filter_h * self.filter_w * c;
        let count = rows.len().saturating_sub(WORD_SLACK) / row_len.max(1);
        let pixels_inside = match order {
            PixelOrder::Raster { start } => start + count <= self.out_h * self.out_w,
            PixelOrder::Windows { py, window } => {
                let cells = window.0 * window.1;
                cells > 0
                    && (py + 1) * window.0 <= self.out_h
                    && count.div_ceil(cells) * window.1 <= self.out_w
            }
        };
        // Every tap of every output pixel lies in the padded image (`padded_size`), so a run's
        // words end at most WORD_SLACK − 1 bytes past it, and a row's words at most as far past
        // its field.
        assert!(
            row_len >= field
                && pixels_inside
                && padded.len() >= size.0 * columns * c + WORD_SLACK
                && rows.len() >= count * row_len + WORD_SLACK,
            "gather_padded: buffers smaller than the geometry"
        );
        let contiguous = self.dilation.1 == 1;
        let run = if contiguous { self.filter_w * c } else { c };
        let pixels = Pixels::new(order, self.out_w, count);
        // A fixed number of words per run: a loop over a run's words becomes a call to memcpy.
        match run.div_ceil(8) {
            0 => {}
            1 => self.copy_runs::<1>(padded, columns, pixels, row_len, rows),
            2 => self.copy_runs::<2>(padded, columns, pixels, row_len, rows),
            3 => self.copy_runs::<3>(padded, columns, pixels, row_len, rows),
            4 => self.copy_runs::<4>(padded, columns, pixels, row_len, rows),
            words => {
                let n = 8 * words;
                self.for_each_run(columns, pixels, row_len, |at, from| {
                    rows[at..][..n].copy_from_slice(&padded[from..][..n]);
                });
            }
        }
    }

    /// `gather_padded`'s copies for runs of `WORDS` words.
    fn copy_runs<const WORDS: usize>(
        &self,
        padded: &[u8],
        columns: usize,
        pixels: Pixels,
        row_len: usize,
        rows: &mut [u8],
    ) {
        let (src, dst) = (padded.as_ptr(), rows.as_mut_ptr());
        self.for_each_run(columns, pixels, row_len, |at, from| {
            // SAFETY: in bounds (`gather_padded_in`'s assertion); unaligned 8-byte accesses.
            unsafe {
                let words = src.add(from).cast::<[u64; WORDS]>().read_unaligned();
                dst.add(at).cast::<[u64; WORDS]>().write_unaligned(words);
            }
        });
    }

    /// `copy(at, from)` for every run of the receptive fields of `pixels`: its offset in rows
    /// of `row_len` and in a padded image `columns` wide.
    #[inline(always)]
    fn for_each_run(
        &self,
        columns: usize,
        pixels: Pixels,
        row_len: usize,
        mut copy: impl FnMut(usize, usize),
    ) {
        let c = self.in_c;
        let row_step = self.dilation.0 * columns * c;
        for (i, (oy, ox)) in pixels.enumerate() {
            let origin = (oy * self.stride.0 * columns + ox * self.stride.1) * c;
            for ky in 0..self.filter_h {
                let from = origin + ky * row_step;
                let at = i * row_len + ky * self.filter_w * c;
                if self.dilation.1 == 1 {
                    copy(at, from);
                } else {
                    for kx in 0..self.filter_w {
                        copy(at + kx * c, from + kx * self.dilation.1 * c);
                    }
                }
            }
        }
    }
}

/// Which output pixels a gather takes, in which order.
#[derive(Clone, Copy, Debug)]
pub enum PixelOrder {
    /// Consecutive pixels in row-major order from this index.
    Raster { start: usize },
    /// The pixels of the windows (`window`: rows, columns) that tile output rows
    /// `py · window.0 ..`, window after window, each window row by row.
    Windows { py: usize, window: (usize, usize) },
}

/// The (row, column) of each pixel of a [`PixelOrder`], advanced by counting (a division per
/// pixel cost as much as the copies).
struct Pixels {
    order: PixelOrder,
    out_w: usize,
    left: usize,
    /// Raster: the current pixel; windows: the window, its row and its column.
    at: (usize, usize, usize),
}

impl Pixels {
    fn new(order: PixelOrder, out_w: usize, count: usize) -> Self {
        let at = match order {
            PixelOrder::Raster { start } => (start / out_w.max(1), start % out_w.max(1), 0),
            PixelOrder::Windows { .. } => (0, 0, 0),
        };
        Self {
            order,
            out_w,
            left: count,
            at,
        }
    }
}

impl Iterator for Pixels {
    type Item = (usize, usize);

    #[inline(always)]
    fn next(&mut self) -> Option<(usize, usize)> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        match self.order {
            PixelOrder::Raster { .. } => {
                let (oy, ox, _) = self.at;
                self.at = if ox + 1 == self.out_w {
                    (oy + 1, 0, 0)
                } else {
                    (oy, ox + 1, 0)
                };
                Some((oy, ox))
            }
            PixelOrder::Windows { py, window } => {
                let (x, r, col) = self.at;
                self.at = match (col + 1 == window.1, r + 1 == window.0) {
                    (false, _) => (x, r, col + 1),
                    (true, false) => (x, r + 1, 0),
                    (true, true) => (x + 1, 0, 0),
                };
                Some((py * window.0 + r, x * window.1 + col))
            }
        }
    }
}

/// `dst[i] = src[i] ^ flip` (equal lengths), eight bytes at a time: receptive-field runs are
/// often a few bytes to a few dozen, too short for a vectorised loop to pay for its set-up.
#[inline]
pub fn xor_copy(dst: &mut [u8], src: &[u8], flip: u8) {
    let n = dst.len().min(src.len());
    let (dst, src) = (&mut dst[..n], &src[..n]);
    if n < 8 {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s ^ flip;
        }
        return;
    }
    // Whole 64-byte lines first: fixed-size arrays, which the compiler makes vector XORs.
    let lines = n / 64 * 64;
    for (d, s) in dst[..lines]
        .chunks_exact_mut(64)
        .zip(src[..lines].chunks_exact(64))
    {
        let mut line = [0u8; 64];
        line.copy_from_slice(s);
        for b in &mut line {
            *b ^= flip;
        }
        d.copy_from_slice(&line);
    }
    let (dst, src, n) = (&mut dst[lines..], &src[lines..], n - lines);
    if n == 0 {
        return;
    }
    if n < 8 {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s ^ flip;
        }
        return;
    }
    let mask = u64::from_ne_bytes([flip; 8]);
    let word = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&src[at..at + 8]);
        (u64::from_ne_bytes(bytes) ^ mask).to_ne_bytes()
    };
    let mut at = 0;
    while at + 8 <= n {
        dst[at..at + 8].copy_from_slice(&word(at));
        at += 8;
    }
    if at < n {
        // The last word overlaps the one before: both write the same bytes there.
        dst[n - 8..].copy_from_slice(&word(n - 8));
    }
}

#[cfg(test)]
mod gather_tests {
    use super::Geometry;

    #[test]
    fn valid_columns_are_the_taps_inside_the_image() {
        for in_w in 1usize..9 {
            for (filter_w, stride, dilation, pad) in [
                (3, 1, 1, 1),
                (3, 2, 1, 0),
                (5, 1, 2, 4),
                (1, 3, 1, 0),
                (3, 1, 1, 7),
                (2, 2, 3, 1),
            ] {
                let out_w =
                    1 + (in_w + 2 * pad).saturating_sub((filter_w - 1) * dilation + 1) / stride;
                let g = Geometry {
                    batches: 1,
                    in_h: 1,
                    in_w,
                    in_c: 1,
                    out_h: 1,
                    out_w,
                    out_c: 1,
                    filter_h: 1,
                    filter_w,
                    stride: (1, stride),
                    dilation: (1, dilation),
                    pad: (0, pad),
                };
                for kx in 0..filter_w {
                    let inside: Vec<usize> = (0..out_w)
                        .filter(|&ox| g.tap(0, ox, 0, kx).is_some())
                        .collect();
                    let (lo, hi) = g.valid_columns(kx);
                    assert_eq!((lo..hi).collect::<Vec<_>>(), inside, "{g:?} kx {kx}");
                }
            }
        }
    }

    #[test]
    fn xor_copy_flips_every_byte_of_every_length() {
        for n in 0..40 {
            let src: Vec<u8> = (0..n).map(|i| (i * 37 + 5) as u8).collect();
            let mut dst = vec![0u8; n];
            super::xor_copy(&mut dst, &src, 0x80);
            let expected: Vec<u8> = src.iter().map(|s| s ^ 0x80).collect();
            assert_eq!(dst, expected, "length {n}");
        }
    }
}
