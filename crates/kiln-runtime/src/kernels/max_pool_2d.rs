//! MAX_POOL_2D, float32: NHWC, SAME/VALID padding (padded cells never win), fused activation.

use kiln_tflite::{BuiltinOptions, TensorType, window};

use super::fused_activation::FloatClamp;
use super::{In, Kernel, OpKernel, Out, Prep};
use crate::error::RuntimeError;
use crate::tensor::{as_f32, as_f32_mut};

#[derive(Debug)]
pub struct MaxPool2D {
    batches: usize,
    in_h: usize,
    in_w: usize,
    channels: usize,
    out_h: usize,
    out_w: usize,
    filter: (usize, usize),
    stride: (usize, usize),
    pad: (usize, usize),
    clamp: FloatClamp,
}

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    Ok(Box::new(MaxPool2D::new(prep)?))
}

impl MaxPool2D {
    fn new(prep: &Prep<'_>) -> Result<Self, RuntimeError> {
        prep.expect_arity(1..=1, 1)?;
        let BuiltinOptions::Pool2D(options) = &prep.op.options else {
            return Err(prep.bad("missing Pool2DOptions"));
        };
        let (input, output) = (prep.input(0)?, prep.output(0)?);
        prep.require_type(output, &[TensorType::Float32])?;
        prep.require_type(input, &[TensorType::Float32])?;
        prep.require_rank(input, 4)?;
        let [batches, in_h, in_w, channels] = input.shape[..] else {
            unreachable!("rank checked")
        };
        let to_usize = |what: &str, v: i32| {
            usize::try_from(v)
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| prep.bad(&format!("{what} must be positive, is {v}")))
        };
        let filter = (
            to_usize("filter_height", options.filter_h)?,
            to_usize("filter_width", options.filter_w)?,
        );
        let stride = (
            to_usize("stride_h", options.stride_h)?,
            to_usize("stride_w", options.stride_w)?,
        );
        let (out_h, pad_h) = window(options.padding, in_h, filter.0, stride.0, 1);
        let (out_w, pad_w) = window(options.padding, in_w, filter.1, stride.1, 1);
        prep.set_output_shape(0, vec![batches, out_h, out_w, channels]);
        Ok(Self {
            batches,
            in_h,
            in_w,
            channels,
            out_h,
            out_w,
            filter,
            stride,
            pad: (pad_h, pad_w),
            clamp: FloatClamp::prepare(prep, options.activation)?,
        })
    }
}

impl OpKernel for MaxPool2D {
    fn eval(&self, inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]) {
        let Some(input) = &inputs[0] else {
            unreachable!("prepared")
        };
        let input = as_f32(input.data);
        let output = as_f32_mut(outputs[0].data);
        let c = self.channels;
        for b in 0..self.batches {
            for oy in 0..self.out_h {
                let y0 = (oy * self.stride.0) as isize - self.pad.0 as isize;
                let ys = y0.max(0) as usize
                    ..((y0 + self.filter.0 as isize).max(0) as usize).min(self.in_h);
                for ox in 0..self.out_w {
                    let x0 = (ox * self.stride.1) as isize - self.pad.1 as isize;
                    let xs = x0.max(0) as usize
                        ..((x0 + self.filter.1 as isize).max(0) as usize).min(self.in_w);
                    let out = &mut output[((b * self.out_h + oy) * self.out_w + ox) * c..][..c];
                    out.fill(f32::NEG_INFINITY);
                    for y in ys.clone() {
                        for x in xs.clone() {
                            let pixel = &input[((b * self.in_h + y) * self.in_w + x) * c..][..c];
                            for (o, &v) in out.iter_mut().zip(pixel) {
                                *o = o.max(v);
                            }
                        }
                    }
                    for o in out.iter_mut() {
                        *o = self.clamp.apply(*o);
                    }
                }
            }
        }
    }
}
