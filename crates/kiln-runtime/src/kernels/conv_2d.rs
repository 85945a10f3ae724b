//! CONV_2D, float32: NHWC input, OHWI filter, optional bias, SAME/VALID padding, strides,
//! dilation and a fused activation.

use kiln_tflite::{BuiltinOptions, TensorType, window};

use super::dot::dot;
use super::fused_activation::FloatClamp;
use super::{In, Kernel, OpKernel, Out, Prep};
use crate::error::RuntimeError;
use crate::tensor::{as_f32, as_f32_mut};

#[derive(Debug)]
pub struct Conv2D {
    batches: usize,
    in_h: usize,
    in_w: usize,
    in_c: usize,
    out_h: usize,
    out_w: usize,
    out_c: usize,
    filter_h: usize,
    filter_w: usize,
    stride: (usize, usize),
    dilation: (usize, usize),
    pad: (usize, usize),
    clamp: FloatClamp,
    has_bias: bool,
}

fn positive(prep: &Prep<'_>, what: &str, value: i32) -> Result<usize, RuntimeError> {
    usize::try_from(value)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| prep.bad(&format!("{what} must be positive, is {value}")))
}

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    Ok(Box::new(Conv2D::new(prep)?))
}

impl Conv2D {
    fn new(prep: &Prep<'_>) -> Result<Self, RuntimeError> {
        prep.expect_arity(2..=3, 1)?;
        let BuiltinOptions::Conv2D(options) = &prep.op.options else {
            return Err(prep.bad("missing Conv2DOptions"));
        };
        let (input, filter, output) = (prep.input(0)?, prep.input(1)?, prep.output(0)?);
        prep.require_type(output, &[TensorType::Float32])?;
        for tensor in [input, filter] {
            prep.require_type(tensor, &[TensorType::Float32])?;
            prep.require_rank(tensor, 4)?;
        }
        let [batches, in_h, in_w, in_c] = input.shape[..] else {
            unreachable!("rank checked")
        };
        let [out_c, filter_h, filter_w, filter_c] = filter.shape[..] else {
            unreachable!("rank checked")
        };
        if filter_c != in_c {
            return Err(prep.unsupported(&format!(
                "filter '{}' has {filter_c} input channels but the input has {in_c} (grouped convolution)",
                filter.name
            )));
        }
        let has_bias = match prep.optional_input(2) {
            Some(bias) => {
                prep.require_type(bias, &[TensorType::Float32])?;
                prep.require_shape(bias, &[out_c])?;
                true
            }
            None => false,
        };
        let stride = (
            positive(prep, "stride_h", options.stride_h)?,
            positive(prep, "stride_w", options.stride_w)?,
        );
        let dilation = (
            positive(prep, "dilation_h", options.dilation_h)?,
            positive(prep, "dilation_w", options.dilation_w)?,
        );
        if filter_h == 0 || filter_w == 0 {
            return Err(prep.bad("the filter has an empty spatial size"));
        }
        let (out_h, pad_h) = window(options.padding, in_h, filter_h, stride.0, dilation.0);
        let (out_w, pad_w) = window(options.padding, in_w, filter_w, stride.1, dilation.1);
        prep.set_output_shape(0, vec![batches, out_h, out_w, out_c]);
        Ok(Self {
            batches,
            in_h,
            in_w,
            in_c,
            out_h,
            out_w,
            out_c,
            filter_h,
            filter_w,
            stride,
            dilation,
            pad: (pad_h, pad_w),
            clamp: FloatClamp::prepare(prep, options.activation)?,
            has_bias,
        })
    }

    fn gather_patch(&self, image: &[f32], oy: usize, ox: usize, patch: &mut [f32]) {
        let c = self.in_c;
        for ky in 0..self.filter_h {
            let iy = (oy * self.stride.0 + ky * self.dilation.0) as isize - self.pad.0 as isize;
            for kx in 0..self.filter_w {
                let ix = (ox * self.stride.1 + kx * self.dilation.1) as isize - self.pad.1 as isize;
                let dst = &mut patch[(ky * self.filter_w + kx) * c..][..c];
                if iy < 0 || ix < 0 || iy as usize >= self.in_h || ix as usize >= self.in_w {
                    dst.fill(0.0);
                } else {
                    dst.copy_from_slice(&image[(iy as usize * self.in_w + ix as usize) * c..][..c]);
                }
            }
        }
    }
}

impl OpKernel for Conv2D {
    fn eval(&self, inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]) {
        let (Some(input), Some(filter)) = (&inputs[0], &inputs[1]) else {
            unreachable!("prepared")
        };
        let input = as_f32(input.data);
        let filter = as_f32(filter.data);
        let bias = if self.has_bias {
            inputs
                .get(2)
                .and_then(|b| b.as_ref())
                .map(|b| as_f32(b.data))
        } else {
            None
        };
        let output = as_f32_mut(outputs[0].data);
        let patch_len = self.filter_h * self.filter_w * self.in_c;
        // The receptive field of one output pixel, gathered contiguously in the filter's
        // (h, w, c) order so each output channel is one dot product.
        let mut patch = vec![0.0f32; patch_len];
        let mut out_index = 0;
        for b in 0..self.batches {
            let image = &input[b * self.in_h * self.in_w * self.in_c..]
                [..self.in_h * self.in_w * self.in_c];
            for oy in 0..self.out_h {
                for ox in 0..self.out_w {
                    self.gather_patch(image, oy, ox, &mut patch);
                    for oc in 0..self.out_c {
                        let weights = &filter[oc * patch_len..][..patch_len];
                        let acc = dot(&patch, weights) + bias.map_or(0.0, |bias| bias[oc]);
                        output[out_index] = self.clamp.apply(acc);
                        out_index += 1;
                    }
                }
            }
        }
    }
}
