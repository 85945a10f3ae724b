//! What AVERAGE_POOL_2D and MAX_POOL_2D share: the whole kernel but the reduction of a window.
//! [`prepare`] checks the operator and derives the window geometry (padded cells are never
//! part of a window, as in TFLite) and the per-type output clamp; the kernel walks the windows
//! and clamps what the operator's [`Reduce`] makes of each.

use kiln_tflite::{BuiltinOptions, TensorType, window};

use super::fused_activation::FloatClamp;
use super::quant::{activation_range, per_tensor};
use super::scratch::Scratch;
use crate::error::RuntimeError;
use crate::kernels::{In, Kernel, OpKernel, Out, Prep};
use crate::tensor::{as_f32, as_f32_mut};

/// How a pooling operator reduces one window of one output pixel, before the clamp.
pub trait Reduce: std::fmt::Debug + Send + Sync + 'static {
    /// Float32: `out` (the output pixel's channels) from the input pixels `cells`, each
    /// `out.len()` channels of `input`.
    fn float(&self, input: &[f32], cells: &[usize], out: &mut [f32]);

    /// 8-bit (int8 when `signed`, else uint8): `out` (the output pixel's channels, before the
    /// clamp) from the input pixels `cells`, each `out.len()` channels of `input`; `low` is
    /// the lower bound of the output's range.
    fn quantized(&self, input: &[u8], signed: bool, cells: &[usize], low: i32, out: &mut [i32]);
}

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
    fn eval(&self, inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]) {
        let Some(input) = &inputs[0] else {
            unreachable!("prepared")
        };
        let c = self.geometry.channels;
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
                i32::with(c, |reduced| {
                    self.geometry.for_each_window(|pixel, cells| {
                        self.reduce
                            .quantized(input.data, *signed, cells, range.0, reduced);
                        for (o, &v) in output[pixel * c..][..c].iter_mut().zip(&*reduced) {
                            *o = v.clamp(range.0, range.1) as u8;
                        }
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
