//! Stride-1 dense convolutions without im2col. Copy an image into a zero-padded plane whose
//! rows keep the padded width as their pitch, and lay the output out at that same pitch
//! ("wide" rows: the last `dilation · (kw − 1)` columns of each are computed and discarded).
//! Then tap `(c, i, j)` of every output position `q` reads `plane[offset(c, i, j) + q]`: the
//! im2col matrix's row for that tap is the plane itself, shifted, and the products in
//! [`crate::shifted_gemm`] read it in place.
//!
//! - forward: `z = W · views`, then bias added while the wide rows are compacted;
//! - input gradient: the same product on the output gradient padded by `d·(k − 1) − pad`,
//!   with the filter flipped and its channel axes swapped (a stride-1 convolution's adjoint);
//! - weight gradient: the output gradient transposed (channels in the lanes) correlated with
//!   the views over the valid positions only, several small images per pass;
//! - the fused conv → ReLU → 2×2 pool block's forward and backward on the same products.
//!
//! The AVX-512 products are the only implementation: without AVX-512 the convolution takes
//! the im2col + GEMM path.

#![cfg(target_arch = "x86_64")]

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::Conv2dShape;
use crate::parallel::{for_each_image, sum_over_image_runs, sum_over_image_runs_writing};
use crate::relu_pool::{
    ConvGradients, PooledLayout, relu_pool_plane, relu_pool_size, transpose_window_taps,
    write_window_taps,
};
use crate::shifted_gemm::{CorrelationLayout, PackedRows, shifted_correlation, shifted_product};
use crate::simd::{Level, level};
use crate::uninit::new_output;

/// Whether [`forward`] and [`weight_grad`] take this convolution (and [`input_grad`] when
/// [`input_grad_applies`] too): stride 1, one group, not a 1×1 (whose input already is the
/// im2col matrix), on a CPU with AVX-512. Below 16 taps (a 3×3 filter over one channel) the
/// output's stores outweigh the products, and im2col + GEMM measured faster.
pub(crate) fn applies(s: &Conv2dShape) -> bool {
    takes(s, 16)
}

/// Whether the fused conv → ReLU → pool block runs here ([`forward_relu_pool`],
/// [`relu_pool_backward`]): from 9 taps, since the pooled block never stores the full output
/// (the quickstart's 3×3 first layer over one channel trained 25–35% faster here than
/// through im2col + GEMM and a separate pooling pass).
pub(crate) fn pooled_applies(s: &Conv2dShape) -> bool {
    takes(s, 9)
}

/// The shared conditions, AVX-512 among them: every entry point here is taken only after it.
fn takes(s: &Conv2dShape, min_taps: usize) -> bool {
    s.stride == [1, 1]
        && s.groups == 1
        && !s.is_pointwise()
        && s.col_rows() >= min_taps
        && level() == Level::Avx512
}

/// The input gradient pads the output gradient by `d·(k − 1) − pad` per side, so no side
/// may be padded by more than the dilated kernel's reach.
pub(crate) fn input_grad_applies(s: &Conv2dShape) -> bool {
    applies(s) && adjoint_padding_fits(s)
}

pub(crate) fn adjoint_padding_fits(s: &Conv2dShape) -> bool {
    (0..2).all(|axis| {
        let reach = s.dilation[axis] * (s.kernel[axis] - 1);
        s.padding[axis].0 <= reach && s.padding[axis].1 <= reach
    })
}

/// Floats per AVX-512 vector: wide outputs and channel pitches are rounded up to it.
const LANES: usize = 16;

/// Where one image's channels lie in its padded plane, and each tap's shifted view.
struct ShiftedPlane {
    channels: usize,
    in_size: [usize; 2],
    /// Padding above and left of the copied image.
    corner: [usize; 2],
    /// Padded height and width (the row pitch of the plane and of the wide output).
    rows: usize,
    pitch: usize,
    out_size: [usize; 2],
    /// View offset of each tap, in im2col row order `(c, i, j)`.
    offsets: Vec<usize>,
    /// Wide output positions computed: `out_h · pitch`, rounded up to 16.
    positions: usize,
    /// Plane length: the farthest view's end.
    len: usize,
}

impl ShiftedPlane {
    /// The plane of a convolution's input (for the forward product and the weight gradient).
    fn of_input(s: &Conv2dShape) -> Self {
        Self::new(s.in_channels, s.in_size, s.padding, s.kernel, s.dilation)
    }

    fn new(
        channels: usize,
        in_size: [usize; 2],
        padding: [(usize, usize); 2],
        kernel: [usize; 2],
        dilation: [usize; 2],
    ) -> Self {
        let rows = in_size[0] + padding[0].0 + padding[0].1;
        let pitch = in_size[1] + padding[1].0 + padding[1].1;
        let reach = [0, 1].map(|axis| dilation[axis] * (kernel[axis] - 1));
        let out_size = [rows - reach[0], pitch - reach[1]];
        let mut offsets = Vec::with_capacity(channels * kernel[0] * kernel[1]);
        for c in 0..channels {
            for i in 0..kernel[0] {
                for j in 0..kernel[1] {
                    offsets.push(c * rows * pitch + i * dilation[0] * pitch + j * dilation[1]);
                }
            }
        }
        let positions = (out_size[0] * pitch).next_multiple_of(LANES);
        let len = offsets.iter().max().map_or(0, |&o| o + positions);
        Self {
            channels,
            in_size,
            corner: [padding[0].0, padding[1].0],
            rows,
            pitch,
            out_size,
            offsets,
            positions,
            len: len.max(channels * rows * pitch),
        }
    }

    /// Copies `x` (`channels × h × w`) into the interior of `plane`; the padding and the
    /// slack keep whatever they hold, zero in a buffer from [`Self::zeroed`].
    fn copy_in(&self, x: &[f32], plane: &mut [f32]) {
        let [h, w] = self.in_size;
        for (c, channel) in x.chunks_exact(h * w).take(self.channels).enumerate() {
            for (r, row) in channel.chunks_exact(w).enumerate() {
                plane[self.index(c, r, 0)..][..w].copy_from_slice(row);
            }
        }
    }

    /// Where the copied image's value at channel `c`, row `r`, column `col` lies.
    fn index(&self, c: usize, r: usize, col: usize) -> usize {
        (c * self.rows + self.corner[0] + r) * self.pitch + self.corner[1] + col
    }

    fn zeroed(&self, images: usize) -> Vec<f32> {
        vec![0.0; self.len * images]
    }

    /// `rows` wide rows of `positions` floats each, zeroed.
    fn zeroed_wide(&self, rows: usize) -> Vec<f32> {
        vec![0.0; rows * self.positions]
    }
}

/// The forward product: the input's padded plane and the packed filter.
struct Forward {
    plane: ShiftedPlane,
    filter: PackedRows,
    per_image_in: usize,
}

impl Forward {
    fn new(s: &Conv2dShape, weight: &[f32]) -> Self {
        let depth = s.col_rows();
        Self {
            plane: ShiftedPlane::of_input(s),
            filter: PackedRows::new(s.out_channels, depth, |r, k| weight[r * depth + k]),
            per_image_in: s.in_channels * s.in_pixels(),
        }
    }

    /// Scratch: the padded input and the wide output.
    fn scratch(&self, out_channels: usize) -> (Vec<f32>, Vec<f32>) {
        (self.plane.zeroed(1), self.plane.zeroed_wide(out_channels))
    }

    /// Image `n`'s wide output (without bias) into `z`.
    fn run(&self, x: &[f32], n: usize, (buffer, z): (&mut [f32], &mut [f32])) {
        let plane = &self.plane;
        plane.copy_in(
            &x[n * self.per_image_in..(n + 1) * self.per_image_in],
            buffer,
        );
        // SAFETY: every caller checked `takes` first, which requires AVX-512.
        unsafe {
            shifted_product(
                &self.filter,
                buffer,
                &plane.offsets,
                plane.positions,
                z,
                plane.positions,
            );
        }
    }
}

/// `y` (every element written) = `conv(x, weight) + bias` for a convolution [`applies`]
/// accepts.
pub(crate) fn forward(
    s: &Conv2dShape,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    y: &mut [MaybeUninit<f32>],
) {
    let product = Forward::new(s, weight);
    for_each_image(
        y,
        s.out_channels * s.out_pixels(),
        || product.scratch(s.out_channels),
        |(buffer, z), n, y_n, _| {
            product.run(x, n, (buffer, z));
            // SAFETY: every caller checked `takes` first, which requires AVX-512.
            unsafe { compact(z, &product.plane, bias, y_n) };
        },
    );
}

/// The input gradient's product: the output gradient padded by `d·(k − 1) − pad` per side,
/// and the filter flipped with its channel axes swapped.
struct Adjoint {
    plane: ShiftedPlane,
    filter: PackedRows,
}

impl Adjoint {
    fn new(s: &Conv2dShape, weight: &[f32]) -> Self {
        let reach = [0, 1].map(|axis| s.dilation[axis] * (s.kernel[axis] - 1));
        let padding = [0, 1].map(|axis| {
            (
                reach[axis] - s.padding[axis].0,
                reach[axis] - s.padding[axis].1,
            )
        });
        let plane = ShiftedPlane::new(s.out_channels, s.out_size(), padding, s.kernel, s.dilation);
        debug_assert_eq!(plane.out_size, s.in_size);
        let [kh, kw] = s.kernel;
        let (cin, taps) = (s.in_channels, kh * kw);
        // Row ci, tap (co, i, j): weight[co, ci, kh − 1 − i, kw − 1 − j].
        let filter = PackedRows::new(cin, s.out_channels * taps, |ci, k| {
            let (co, tap) = (k / taps, k % taps);
            let (i, j) = (tap / kw, tap % kw);
            weight[(co * cin + ci) * taps + (kh - 1 - i) * kw + (kw - 1 - j)]
        });
        Self { plane, filter }
    }

    /// Scratch: the padded output gradient and the wide input gradient.
    fn scratch(&self, in_channels: usize) -> (Vec<f32>, Vec<f32>) {
        (self.plane.zeroed(1), self.plane.zeroed_wide(in_channels))
    }

    /// `dx_n` from the padded output gradient already in `buffer`.
    fn run(&self, (buffer, z): (&[f32], &mut [f32]), dx_n: &mut [MaybeUninit<f32>]) {
        let positions = self.plane.positions;
        // SAFETY: every caller checked `takes` first, which requires AVX-512.
        unsafe {
            shifted_product(
                &self.filter,
                buffer,
                &self.plane.offsets,
                positions,
                z,
                positions,
            );
            compact(z, &self.plane, None, dx_n);
        }
    }
}

/// `dx` (every element written), the input gradient of a convolution
/// [`input_grad_applies`] accepts.
pub(crate) fn input_grad(s: &Conv2dShape, weight: &[f32], dy: &[f32], dx: &mut [MaybeUninit<f32>]) {
    let adjoint = Adjoint::new(s, weight);
    let per_image_dy = s.out_channels * s.out_pixels();
    for_each_image(
        dx,
        s.in_channels * s.in_pixels(),
        || adjoint.scratch(s.in_channels),
        |(buffer, z), n, dx_n, _| {
            adjoint
                .plane
                .copy_in(&dy[n * per_image_dy..(n + 1) * per_image_dy], buffer);
            adjoint.run((buffer, z), dx_n);
        },
    );
}

/// Images correlated per pass over the filter's tiles: as many as keep the run's transposed
/// output gradient within about this many bytes (the L2 cache's share of it).
const CORRELATED_BYTES: usize = 512 << 10;

/// The weight gradient's correlation: a group of images' padded input planes and output
/// gradients transposed (channels in the lanes), correlated together.
struct WeightGradient {
    plane: ShiftedPlane,
    channels: usize,
    channel_pitch: usize,
    /// Floats of one image's transposed output gradient.
    transposed_len: usize,
    /// Images per correlation.
    group: usize,
    per_image_in: usize,
}

impl WeightGradient {
    fn new(s: &Conv2dShape) -> Self {
        let channel_pitch = s.out_channels.next_multiple_of(LANES);
        let transposed_len = s.out_pixels() * channel_pitch;
        Self {
            plane: ShiftedPlane::of_input(s),
            channels: s.out_channels,
            channel_pitch,
            transposed_len,
            group: (CORRELATED_BYTES / (transposed_len * 4).max(1)).max(1),
            per_image_in: s.in_channels * s.in_pixels(),
        }
    }

    /// Scratch: a group's planes and transposed gradients (channels past the real ones in
    /// the pitch stay zero: only real ones are ever written).
    fn scratch(&self) -> (Vec<f32>, Vec<f32>) {
        (
            self.plane.zeroed(self.group),
            vec![0.0f32; self.group * self.transposed_len],
        )
    }

    /// Image `n`'s input into slot `slot` of the group's planes.
    fn copy_input(&self, x: &[f32], n: usize, slot: usize, planes: &mut [f32]) {
        let len = self.plane.len;
        self.plane.copy_in(
            &x[n * self.per_image_in..(n + 1) * self.per_image_in],
            &mut planes[slot * len..(slot + 1) * len],
        );
    }

    /// Slot `slot` of the group's transposed gradients.
    fn transposed<'a>(&self, transposed: &'a mut [f32], slot: usize) -> &'a mut [f32] {
        &mut transposed[slot * self.transposed_len..(slot + 1) * self.transposed_len]
    }

    /// `dw += ` the correlation of the group's first `count` images.
    fn correlate(&self, (planes, transposed): (&[f32], &[f32]), count: usize, dw: &mut [f32]) {
        let layout = CorrelationLayout {
            images: count,
            channels: self.channels,
            channel_pitch: self.channel_pitch,
            image_stride: self.transposed_len,
            out_size: self.plane.out_size,
            pitch: self.plane.pitch,
            plane_stride: self.plane.len,
        };
        // SAFETY: every caller checked `takes` first, which requires AVX-512.
        unsafe { shifted_correlation(transposed, planes, &self.plane.offsets, layout, dw) };
    }
}

/// `dw` (overwritten), the weight gradient summed over the batch, of a convolution
/// [`applies`] accepts.
pub(crate) fn weight_grad(s: &Conv2dShape, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let grad = WeightGradient::new(s);
    let pixels = s.out_pixels();
    let per_image_dy = s.out_channels * pixels;
    sum_over_image_runs(
        s.batch,
        dw,
        || grad.scratch(),
        |(planes, transposed), images, partial| {
            for first in images.clone().step_by(grad.group) {
                let count = grad.group.min(images.end - first);
                for (slot, n) in (first..first + count).enumerate() {
                    grad.copy_input(x, n, slot, planes);
                    transpose_into(
                        &dy[n * per_image_dy..(n + 1) * per_image_dy],
                        pixels,
                        grad.channel_pitch,
                        grad.transposed(transposed, slot),
                    );
                }
                grad.correlate((planes, transposed), count, partial);
            }
        },
    );
}

/// `out[p · pitch + c] = values[c · pixels + p]`: channel-major to position-major, in
/// 16 × 16 blocks so both sides stay in cache lines.
fn transpose_into(values: &[f32], pixels: usize, pitch: usize, out: &mut [f32]) {
    const BLOCK: usize = 16;
    let channels = values.len() / pixels.max(1);
    for c0 in (0..channels).step_by(BLOCK) {
        for p0 in (0..pixels).step_by(BLOCK) {
            for c in c0..(c0 + BLOCK).min(channels) {
                let row = &values[c * pixels..(c + 1) * pixels];
                for p in p0..(p0 + BLOCK).min(pixels) {
                    out[p * pitch + c] = row[p];
                }
            }
        }
    }
}

/// The fused conv → ReLU → pool block's forward for a convolution [`pooled_applies`]
/// accepts: each image's wide output pooled straight from the product's buffer.
pub(crate) fn forward_relu_pool(
    s: &Conv2dShape,
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    pooled: &mut [MaybeUninit<f32>],
    codes: &mut [MaybeUninit<u8>],
) {
    let product = Forward::new(s, weight);
    let [ph, pw] = relu_pool_size(s);
    let per_channel = ph * pw;
    let per_image = s.out_channels * per_channel;
    if per_image == 0 {
        return;
    }
    pooled
        .par_chunks_mut(per_image)
        .zip(codes.par_chunks_mut(per_image))
        .enumerate()
        .for_each_init(
            || product.scratch(s.out_channels),
            |(buffer, z), (n, (pooled_n, codes_n))| {
                product.run(x, n, (buffer, z));
                for (c, (pooled_c, codes_c)) in pooled_n
                    .chunks_exact_mut(per_channel)
                    .zip(codes_n.chunks_exact_mut(per_channel))
                    .enumerate()
                {
                    let plane = &product.plane;
                    let z_c = &z[c * plane.positions..(c + 1) * plane.positions];
                    let b = bias.map_or(0.0, |b| b[c]);
                    relu_pool_plane(z_c, (plane.pitch, pw), b, pooled_c, codes_c);
                }
            },
        );
}

/// The fused conv → ReLU → pool block's backward for a convolution [`pooled_applies`] (and,
/// with `input_grad`, [`adjoint_padding_fits`]) accepts. Per image, every pooled window
/// writes its four taps' gradients (the routed one, zeros) into the transposed output
/// gradient (the weight gradient's operand, 16 channels × 16 windows transposed in
/// registers) and into the padded one (the input gradient's), which are used while in cache;
/// every covered value being rewritten each time, the buffers are never cleared.
pub(crate) fn relu_pool_backward(
    s: &Conv2dShape,
    x: &[f32],
    weight: &[f32],
    (codes, pooled_grad): (&[u8], &[f32]),
    input_grad: bool,
) -> ConvGradients {
    let grad = WeightGradient::new(s);
    let adjoint = input_grad.then(|| Adjoint::new(s, weight));
    let [_, out_w] = s.out_size();
    let [ph, pw] = relu_pool_size(s);
    let cout = s.out_channels;
    let per_channel = ph * pw;
    let per_image_dx = if input_grad { grad.per_image_in } else { 0 };
    let weight_len = weight.len();
    let mut sums = vec![0.0f32; weight_len + cout];
    let layout = PooledLayout {
        channels: cout,
        pooled: [ph, pw],
        out_w,
        pitch: grad.channel_pitch,
    };
    let mut run = |dx: &mut [MaybeUninit<f32>]| {
        sum_over_image_runs_writing(
            s.batch,
            &mut sums,
            (dx, per_image_dx),
            || {
                let (planes, transposed) = grad.scratch();
                let adjoint_scratch = adjoint.as_ref().map(|a| a.scratch(s.in_channels));
                (planes, transposed, adjoint_scratch)
            },
            |(planes, transposed, adjoint_scratch), images, partial, dx_run| {
                let (dw, db) = partial.split_at_mut(weight_len);
                for first in images.clone().step_by(grad.group) {
                    let count = grad.group.min(images.end - first);
                    for (slot, n) in (first..first + count).enumerate() {
                        grad.copy_input(x, n, slot, planes);
                        let image = n * cout * per_channel..(n + 1) * cout * per_channel;
                        let (codes_n, grads_n) = (&codes[image.clone()], &pooled_grad[image]);
                        // SAFETY: every caller checked `takes` first, which requires AVX-512.
                        unsafe {
                            transpose_window_taps(
                                (codes_n, grads_n),
                                layout,
                                grad.transposed(transposed, slot),
                                db,
                            );
                        }
                        if let (Some(a), Some((buffer, z))) = (&adjoint, adjoint_scratch.as_mut()) {
                            for c in 0..cout {
                                let rows = |wi: usize| {
                                    [a.plane.index(c, 2 * wi, 0), a.plane.index(c, 2 * wi + 1, 0)]
                                };
                                // SAFETY: every caller checked `takes` first (AVX-512).
                                unsafe {
                                    write_window_taps(
                                        (codes_n, grads_n),
                                        (c * per_channel, [ph, pw]),
                                        rows,
                                        buffer,
                                    );
                                }
                            }
                            let at = (n - images.start) * per_image_dx;
                            a.run((buffer, z), &mut dx_run[at..at + per_image_dx]);
                        }
                    }
                    grad.correlate((planes, transposed), count, dw);
                }
            },
        );
    };
    let input = if input_grad {
        // SAFETY: every image's input gradient is written by `Adjoint::run`.
        let dx = unsafe {
            new_output(s.batch * grad.per_image_in, |dx| {
                run(dx);
                Ok(())
            })
        };
        Some(dx.unwrap_or_default())
    } else {
        run(&mut []);
        None
    };
    let bias = sums.split_off(weight_len);
    ConvGradients {
        input,
        weight: sums,
        bias,
    }
}

/// `out[c, r, col] = z[c · positions + r · pitch + col] (+ bias[c])` for the valid columns.
#[target_feature(enable = "avx512f")]
unsafe fn compact(
    z: &[f32],
    plane: &ShiftedPlane,
    bias: Option<&[f32]>,
    out: &mut [MaybeUninit<f32>],
) {
    let [out_h, out_w] = plane.out_size;
    for (c, channel) in out.chunks_exact_mut(out_h * out_w).enumerate() {
        let b = bias.map_or(0.0, |b| b[c]);
        let z_c = &z[c * plane.positions..];
        for (r, row) in channel.chunks_exact_mut(out_w).enumerate() {
            for (o, v) in row.iter_mut().zip(&z_c[r * plane.pitch..][..out_w]) {
                o.write(v + b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::reference;
    use crate::tests::assert_close;

    fn shape(batch: usize, cin: usize, size: [usize; 2], cout: usize) -> Conv2dShape {
        Conv2dShape {
            batch,
            in_channels: cin,
            in_size: size,
            out_channels: cout,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [(0, 0), (0, 0)],
            dilation: [1, 1],
            groups: 1,
        }
    }

    /// Channel counts off the 4-row and 32-channel tiles, taps off the 12-tap tile, wide rows
    /// ending mid-vector, asymmetric padding, dilation, and batches that span several
    /// correlation groups and partial sums.
    #[test]
    fn every_pass_matches_the_naive_convolution() {
        if level() != Level::Avx512 {
            return;
        }
        let mut rng = StdRng::seed_from_u64(11);
        let mut cases = vec![
            shape(3, 2, [9, 11], 5),
            shape(2, 7, [6, 20], 17),
            shape(9, 3, [13, 13], 40),
            shape(1, 16, [5, 5], 33),
            shape(19, 4, [8, 7], 64),
        ];
        let mut padded = shape(2, 3, [10, 9], 6);
        padded.padding = [(1, 2), (2, 0)];
        padded.kernel = [3, 4];
        cases.push(padded);
        let mut dilated = shape(2, 5, [12, 12], 9);
        dilated.dilation = [2, 1];
        dilated.padding = [(2, 2), (1, 1)];
        cases.push(dilated);
        let mut wide_pad = shape(2, 4, [6, 6], 8);
        wide_pad.padding = [(3, 3), (0, 0)]; // more than the kernel reaches: no input gradient
        cases.push(wide_pad);
        let random = |rng: &mut StdRng, len: usize| -> Vec<f32> {
            (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
        };
        for s in cases {
            s.validate().unwrap();
            assert!(applies(&s), "{s:?}");
            let x = random(&mut rng, s.input_len().unwrap());
            let w = random(&mut rng, s.weight_len().unwrap());
            let b = random(&mut rng, s.out_channels);
            let dy = random(&mut rng, s.output_len().unwrap());
            let mut y = vec![MaybeUninit::new(f32::NAN); dy.len()];
            forward(&s, &x, &w, Some(&b), &mut y);
            let y: Vec<f32> = y.iter().map(|v| unsafe { v.assume_init() }).collect();
            assert_close("forward", &s, &y, &reference::forward(&s, &x, &w, Some(&b)));
            if input_grad_applies(&s) {
                let mut dx = vec![MaybeUninit::new(f32::NAN); x.len()];
                input_grad(&s, &w, &dy, &mut dx);
                let dx: Vec<f32> = dx.iter().map(|v| unsafe { v.assume_init() }).collect();
                assert_close("input grad", &s, &dx, &reference::input_grad(&s, &w, &dy));
            } else {
                assert_eq!(s.padding[0], (3, 3));
            }
            let mut dw = vec![f32::NAN; w.len()];
            weight_grad(&s, &x, &dy, &mut dw);
            assert_close("weight grad", &s, &dw, &reference::weight_grad(&s, &x, &dy));
        }
    }
}
