//! What AVERAGE_POOL_2D and MAX_POOL_2D share: the whole kernel but the reduction of a window.
//! [`prepare`] checks the operator and derives the window geometry (padded cells are never
//! part of a window, as in TFLite) and the per-type output clamp; the kernel walks the windows
//! and clamps what the operator's [`Reduce`] makes of each.

use kiln_tflite::{BuiltinOptions, TensorType, window};

use super::fused_activation::FloatClamp;
use super::quant::{activation_range, per_tensor};
use super::scratch::Scratch;
use crate::error::RuntimeError;
use crate::kernels::{In, Kernel, OpKernel, Out, Prep, TilingMaxPool};
use crate::tensor::{as_f32, as_f32_mut};

/// How a pooling operator reduces one window of one output pixel, before the clamp.
pub trait Reduce: std::fmt::Debug + Send + Sync + 'static {
    /// Float32: `out` (the output pixel's channels) from the input pixels `cells`, each
    /// `out.len()` channels of `input`.
    fn float(&self, input: &[f32], cells: &[usize], out: &mut [f32]);

    /// 8-bit (int8 when `signed`, else uint8): `out` (the output pixel's channels, clamped to
    /// `range`) from the input pixels `cells`, each `out.len()` channels of `input`; `sums` is
    /// as long as `out`, for reductions that need wider accumulators.
    fn quantized(
        &self,
        input: &[u8],
        signed: bool,
        cells: &[usize],
        range: (i32, i32),
        sums: &mut [i32],
        out: &mut [u8],
    );

    /// How large windows are reduced without visiting every cell of every window (quadratic:
    /// a 16 391-wide window over a row of as many pixels took seconds).
    fn separable(&self) -> Separable<'_>;
}

/// A reduction that runs along the width, then along the height, in time linear in the
/// input and output.
pub enum Separable<'a> {
    /// A function of the window's sum and cell count (the average), summed with prefix sums.
    Sums(&'a dyn OfSums),
    /// The maximum, with a sliding-window maximum (a monotonic queue).
    Maximum,
}

/// A window's result from its sum and cell count, before the clamp.
pub trait OfSums {
    fn float(&self, total: f64, count: usize) -> f32;
    /// `total` as the reference's int32 accumulator holds it (wrapped).
    fn quantized(&self, total: i32, count: usize) -> i32;
}

/// `visit(k, max of values[windows[k]])` for windows whose starts and ends never decrease
/// (`empty` for an empty window), with a queue of indices whose values decrease: each value
/// enters and leaves it once.
fn sliding_max<T: Copy + PartialOrd>(
    values: &[T],
    windows: &[std::ops::Range<usize>],
    empty: T,
    queue: &mut std::collections::VecDeque<usize>,
    mut visit: impl FnMut(usize, T),
) {
    queue.clear();
    let mut next = 0;
    for (k, window) in windows.iter().enumerate() {
        while next < window.end {
            // NaN never wins (as f32::max has it); anything not greater than the newcomer can
            // never be a window's maximum again.
            #[allow(clippy::eq_op)]
            let comparable = values[next] == values[next];
            if comparable {
                while queue.back().is_some_and(|&i| values[i] <= values[next]) {
                    queue.pop_back();
                }
                queue.push_back(next);
            }
            next += 1;
        }
        while queue.front().is_some_and(|&i| i < window.start) {
            queue.pop_front();
        }
        visit(k, queue.front().map_or(empty, |&i| values[i]));
    }
}

/// Cells per window from which pooling runs separably.
const LARGE_WINDOW: usize = 64;

/// Prepares a pooling operator that reduces each window with `reduce`.
pub fn prepare<R: Reduce>(prep: &Prep<'_>, reduce: R) -> Result<Kernel, RuntimeError> {
    let (geometry, arithmetic) = PoolGeometry::prepare(prep)?;
    Ok(Box::new(Pool {
        geometry,
        arithmetic,
        reduce,
    }))
}

#[derive(Debug)]
struct Pool<R> {
    geometry: PoolGeometry,
    arithmetic: PoolArithmetic,
    reduce: R,
}

impl<R: Reduce> OpKernel for Pool<R> {
    fn tiling_max_pool(&self) -> Option<TilingMaxPool> {
        let g = &self.geometry;
        let PoolArithmetic::Quantized { range, .. } = self.arithmetic else {
            return None;
        };
        (matches!(self.reduce.separable(), Separable::Maximum)
            && g.stride == g.filter
            && g.pad == (0, 0)
            && g.out_h * g.filter.0 <= g.in_h
            && g.out_w * g.filter.1 <= g.in_w)
            .then_some(TilingMaxPool {
                window: g.filter,
                out: (g.out_h, g.out_w),
                range,
            })
    }

    fn eval(&self, inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]) {
        let Some(input) = &inputs[0] else {
            unreachable!("prepared")
        };
        let c = self.geometry.channels;
        let g = &self.geometry;
        let large = g.filter.0.min(g.in_h) * g.filter.1.min(g.in_w) > LARGE_WINDOW;
        if large && let Separable::Maximum = self.reduce.separable() {
            match &self.arithmetic {
                PoolArithmetic::Float(clamp) => {
                    let input = as_f32(input.data);
                    let output = as_f32_mut(outputs[0].data);
                    g.for_each_window_max(
                        |i| input[i],
                        f32::NEG_INFINITY,
                        |element, max| {
                            output[element] = clamp.apply(max);
                        },
                    );
                }
                PoolArithmetic::Quantized { range, signed } => {
                    let output = &mut *outputs[0].data;
                    let data = input.data;
                    let value = |i: usize| {
                        if *signed {
                            i32::from(data[i] as i8)
                        } else {
                            i32::from(data[i])
                        }
                    };
                    // An empty window (impossible with valid padding) gives the range's low end.
                    g.for_each_window_max(value, range.0, |element, max| {
                        output[element] = max.clamp(range.0, range.1) as u8;
                    });
                }
            }
            return;
        }
        if large && let Separable::Sums(of_sums) = self.reduce.separable() {
            match &self.arithmetic {
                PoolArithmetic::Float(clamp) => {
                    let input = as_f32(input.data);
                    let output = as_f32_mut(outputs[0].data);
                    g.for_each_window_sum(
                        |i| f64::from(input[i]),
                        |element, total, count| {
                            output[element] = clamp.apply(of_sums.float(total, count));
                        },
                    );
                }
                PoolArithmetic::Quantized { range, signed } => {
                    let output = &mut *outputs[0].data;
                    let data = input.data;
                    let value = |i: usize| {
                        if *signed {
                            i64::from(data[i] as i8)
                        } else {
                            i64::from(data[i])
                        }
                    };
                    g.for_each_window_sum(value, |element, total, count| {
                        let mean = of_sums.quantized(total as i32, count);
                        output[element] = mean.clamp(range.0, range.1) as u8;
                    });
                }
            }
            return;
        }
        match &self.arithmetic {
            PoolArithmetic::Float(clamp) => {
                let input = as_f32(input.data);
                let output = as_f32_mut(outputs[0].data);
                self.geometry.for_each_window(|pixel, cells| {
                    let out = &mut output[pixel * c..][..c];
                    self.reduce.float(input, cells, out);
                    out.iter_mut().for_each(|o| *o = clamp.apply(*o));
                });
            }
            PoolArithmetic::Quantized { range, signed } => {
                let output = &mut *outputs[0].data;
                i32::with(c, |sums| {
                    self.geometry.for_each_window(|pixel, cells| {
                        let out = &mut output[pixel * c..][..c];
                        self.reduce
                            .quantized(input.data, *signed, cells, *range, sums, out);
                    });
                });
            }
        }
    }
}

#[derive(Debug)]
struct PoolGeometry {
    batches: usize,
    in_h: usize,
    in_w: usize,
    channels: usize,
    out_h: usize,
    out_w: usize,
    filter: (usize, usize),
    stride: (usize, usize),
    pad: (usize, usize),
}

#[derive(Debug)]
enum PoolArithmetic {
    Float(FloatClamp),
    /// 8-bit: the output keeps the input's scale and zero point; the range is the clamp.
    Quantized {
        range: (i32, i32),
        signed: bool,
    },
}

impl PoolGeometry {
    fn prepare(prep: &Prep<'_>) -> Result<(Self, PoolArithmetic), RuntimeError> {
        prep.expect_arity(1..=1, 1)?;
        let BuiltinOptions::Pool2D(options) = &prep.op.options else {
            return Err(prep.bad("missing Pool2DOptions"));
        };
        let (input, output) = (prep.input(0)?, prep.output(0)?);
        prep.require_type(
            input,
            &[TensorType::Float32, TensorType::Int8, TensorType::UInt8],
        )?;
        prep.require_type(output, &[input.dtype])?;
        prep.require_rank(input, 4)?;
        let [batches, in_h, in_w, channels] = input.shape[..] else {
            unreachable!("rank checked")
        };
        let positive = |what: &str, v: i32| {
            usize::try_from(v)
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| prep.bad(&format!("{what} must be positive, is {v}")))
        };
        let filter = (
            positive("filter_height", options.filter_h)?,
            positive("filter_width", options.filter_w)?,
        );
        let stride = (
            positive("stride_h", options.stride_h)?,
            positive("stride_w", options.stride_w)?,
        );
        let (out_h, pad_h) = window(options.padding, in_h, filter.0, stride.0, 1);
        let (out_w, pad_w) = window(options.padding, in_w, filter.1, stride.1, 1);
        let arithmetic = if input.dtype == TensorType::Float32 {
            PoolArithmetic::Float(FloatClamp::prepare(prep, options.activation)?)
        } else {
            let input_q = per_tensor(prep, input)?;
            let output_q = per_tensor(prep, output)?;
            if input_q != output_q {
                return Err(prep.unsupported(&format!(
                    "output '{}' must keep the input's scale and zero point",
                    output.name
                )));
            }
            PoolArithmetic::Quantized {
                range: activation_range(prep, options.activation, output)?,
                signed: input.dtype == TensorType::Int8,
            }
        };
        prep.set_output_shape(0, vec![batches, out_h, out_w, channels]);
        let geometry = Self {
            batches,
            in_h,
            in_w,
            channels,
            out_h,
            out_w,
            filter,
            stride,
            pad: (pad_h, pad_w),
        };
        Ok((geometry, arithmetic))
    }

    /// The window's input rows and columns of output pixel (oy, ox).
    fn window_of(&self, oy: usize, ox: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let span = |o: usize, stride: usize, pad: usize, filter: usize, size: usize| {
            let start = (o * stride) as isize - pad as isize;
            let end = ((start + filter as isize).max(0) as usize).min(size);
            (start.max(0) as usize).min(end)..end
        };
        (
            span(oy, self.stride.0, self.pad.0, self.filter.0, self.in_h),
            span(ox, self.stride.1, self.pad.1, self.filter.1, self.in_w),
        )
    }

    /// Calls `visit(output element index, maximum over its window)` for every output element
    /// (`empty` for a window without cells), through a sliding-window maximum along the
    /// width, then along the height: linear in the input and output however large the window.
    fn for_each_window_max<T>(
        &self,
        value: impl Fn(usize) -> T,
        empty: T,
        mut visit: impl FnMut(usize, T),
    ) where
        T: Copy + PartialOrd,
    {
        let c = self.channels;
        let columns: Vec<_> = (0..self.out_w).map(|ox| self.window_of(0, ox).1).collect();
        let rows: Vec<_> = (0..self.out_h).map(|oy| self.window_of(oy, 0).0).collect();
        // Each input row's maximum over each output column's window, then over the rows.
        let mut across = vec![empty; self.in_h * self.out_w * c];
        let mut queue = std::collections::VecDeque::new();
        let mut line = Vec::new();
        for b in 0..self.batches {
            for y in 0..self.in_h {
                for ch in 0..c {
                    line.clear();
                    line.extend(
                        (0..self.in_w)
                            .map(|x| value(((b * self.in_h + y) * self.in_w + x) * c + ch)),
                    );
                    sliding_max(&line, &columns, empty, &mut queue, |ox, max| {
                        across[(y * self.out_w + ox) * c + ch] = max;
                    });
                }
            }
            for ox in 0..self.out_w {
                for ch in 0..c {
                    line.clear();
                    line.extend((0..self.in_h).map(|y| across[(y * self.out_w + ox) * c + ch]));
                    sliding_max(&line, &rows, empty, &mut queue, |oy, max| {
                        visit(((b * self.out_h + oy) * self.out_w + ox) * c + ch, max);
                    });
                }
            }
        }
    }

    /// Calls `visit(output element index, sum over its window, cell count)` for every output
    /// element, the sums of `value(input element index)` taken through prefix sums along the
    /// width, then along the height: linear in the input and output however large the window.
    fn for_each_window_sum<T>(
        &self,
        value: impl Fn(usize) -> T,
        mut visit: impl FnMut(usize, T, usize),
    ) where
        T: Copy + Default + std::ops::Add<Output = T> + std::ops::Sub<Output = T>,
    {
        let c = self.channels;
        let columns: Vec<_> = (0..self.out_w).map(|ox| self.window_of(0, ox).1).collect();
        let rows: Vec<_> = (0..self.out_h).map(|oy| self.window_of(oy, 0).0).collect();
        let mut prefix = vec![T::default(); (self.in_w + 1) * c];
        // Per input row, each output column's horizontal window sum; then their prefix sums
        // down the rows.
        let mut down = vec![T::default(); (self.in_h + 1) * self.out_w * c];
        for b in 0..self.batches {
            for y in 0..self.in_h {
                for x in 0..self.in_w {
                    for ch in 0..c {
                        let v = value(((b * self.in_h + y) * self.in_w + x) * c + ch);
                        prefix[(x + 1) * c + ch] = prefix[x * c + ch] + v;
                    }
                }
                for (ox, xs) in columns.iter().enumerate() {
                    for ch in 0..c {
                        let row_sum = prefix[xs.end * c + ch] - prefix[xs.start * c + ch];
                        let at = (ox * c + ch, self.out_w * c);
                        down[(y + 1) * at.1 + at.0] = down[y * at.1 + at.0] + row_sum;
                    }
                }
            }
            for (oy, ys) in rows.iter().enumerate() {
                for (ox, xs) in columns.iter().enumerate() {
                    let count = ys.len() * xs.len();
                    for ch in 0..c {
                        let at = ox * c + ch;
                        let total = down[ys.end * self.out_w * c + at]
                            - down[ys.start * self.out_w * c + at];
                        visit(
                            ((b * self.out_h + oy) * self.out_w + ox) * c + ch,
                            total,
                            count,
                        );
                    }
                }
            }
        }
    }

    /// Calls `visit(output pixel index, input pixel indices of its window)` for every output
    /// pixel; indices count pixels (multiply by `channels` for elements).
    fn for_each_window(&self, mut visit: impl FnMut(usize, &[usize])) {
        // Without channels the output is empty: walking the windows anyway costs output pixels
        // × window cells for nothing, which a wide filter makes unbounded (TFLite's channel
        // loop, outside its filter loops, does no work either).
        if self.channels == 0 {
            return;
        }
        // A window never holds more cells than the input plane, whatever the (file-given)
        // filter size: sizing by the filter alone lets a corrupt one request exabytes.
        let mut cells =
            Vec::with_capacity(self.filter.0.min(self.in_h) * self.filter.1.min(self.in_w));
        let mut pixel = 0;
        for b in 0..self.batches {
            for oy in 0..self.out_h {
                let y0 = (oy * self.stride.0) as isize - self.pad.0 as isize;
                let ys = y0.max(0) as usize
                    ..((y0 + self.filter.0 as isize).max(0) as usize).min(self.in_h);
                for ox in 0..self.out_w {
                    let x0 = (ox * self.stride.1) as isize - self.pad.1 as isize;
                    let xs = x0.max(0) as usize
                        ..((x0 + self.filter.1 as isize).max(0) as usize).min(self.in_w);
                    cells.clear();
                    for y in ys.clone() {
                        for x in xs.clone() {
                            cells.push((b * self.in_h + y) * self.in_w + x);
                        }
                    }
                    visit(pixel, &cells);
                    pixel += 1;
                }
            }
        }
    }
}

/// Random large-window cases for the pooling kernels' tests (windows of 70–129 columns, SAME
/// and VALID, strides, edges), each run in int8 and in float32 through `prepare`; `check` gets
/// the case, each output element's int8 and float values, and the window's cells in both.
#[cfg(test)]
pub fn check_large_windows(
    prepare: fn(&Prep<'_>) -> Result<Kernel, RuntimeError>,
    seed: u64,
    check: impl Fn(usize, i8, f32, &[i8], &[f32]),
) {
    use kiln_tflite::{Padding, Pool2DOptions};

    use super::testing::{quantized, run, seeded, tensor};
    let mut next = seeded(seed);
    for case in 0..12 {
        let (h, w, c) = (
            1 + next(6) as usize,
            40 + next(120) as usize,
            1 + next(5) as usize,
        );
        let (fh, fw) = (1 + next(h as u64) as usize, 70 + next(60) as usize);
        let stride = 1 + next(3) as usize;
        let padding = if case % 2 == 0 {
            Padding::Same
        } else {
            Padding::Valid
        };
        if padding == Padding::Valid && fw > w {
            continue;
        }
        let options = BuiltinOptions::Pool2D(Pool2DOptions {
            padding,
            stride_w: stride as i32,
            stride_h: stride as i32,
            filter_w: fw as i32,
            filter_h: fh as i32,
            ..Pool2DOptions::default()
        });
        let (oh, pad_h) = window(padding, h, fh, stride, 1);
        let (ow, pad_w) = window(padding, w, fw, stride, 1);
        let bytes: Vec<u8> = (0..h * w * c).map(|_| next(256) as u8).collect();
        let floats: Vec<f32> = bytes.iter().map(|&b| f32::from(b) / 7.0 - 9.0).collect();
        let int8 = run(
            prepare,
            options.clone(),
            vec![Some(quantized(
                tensor(TensorType::Int8, &[1, h, w, c]),
                0.1,
                3,
            ))],
            quantized(tensor(TensorType::Int8, &[]), 0.1, 3),
            &[&bytes],
        )
        .expect("prepares");
        let float = run(
            prepare,
            options,
            vec![Some(tensor(TensorType::Float32, &[1, h, w, c]))],
            tensor(TensorType::Float32, &[]),
            &[&floats
                .iter()
                .flat_map(|f| f.to_le_bytes())
                .collect::<Vec<u8>>()],
        )
        .expect("prepares");
        assert_eq!(int8.shape, [1, oh, ow, c], "case {case}");
        for oy in 0..oh {
            for ox in 0..ow {
                let y0 = (oy * stride) as isize - pad_h as isize;
                let x0 = (ox * stride) as isize - pad_w as isize;
                let ys = y0.max(0) as usize..((y0 + fh as isize).max(0) as usize).min(h);
                let xs = x0.max(0) as usize..((x0 + fw as isize).max(0) as usize).min(w);
                for ch in 0..c {
                    let cells: Vec<usize> = ys
                        .clone()
                        .flat_map(|y| xs.clone().map(move |x| (y * w + x) * c + ch))
                        .collect();
                    let cells_q: Vec<i8> = cells.iter().map(|&i| bytes[i] as i8).collect();
                    let cells_f: Vec<f32> = cells.iter().map(|&i| floats[i]).collect();
                    let at = (oy * ow + ox) * c + ch;
                    let b = &float.data[at * 4..at * 4 + 4];
                    let value = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    check(case, int8.data[at] as i8, value, &cells_q, &cells_f);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fuzzer finding (a 5 s timeout): an input [1, 7, 262407, 0] under a SAME window 458754
    /// wide walked 2.7·10^11 window cells to produce an empty output.
    #[test]
    fn an_empty_output_visits_no_window() {
        let geometry = |channels| PoolGeometry {
            batches: 1,
            in_h: 1,
            in_w: 1000,
            channels,
            out_h: 1,
            out_w: 1000,
            filter: (1, 2001),
            stride: (1, 1),
            pad: (0, 1000),
        };
        let mut visits = 0;
        geometry(0).for_each_window(|_, _| visits += 1);
        assert_eq!(visits, 0);
        let mut cells = 0;
        geometry(1).for_each_window(|_, window| cells += window.len());
        assert_eq!(cells, 1000 * 1000);
    }
}
