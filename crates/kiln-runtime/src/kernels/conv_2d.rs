//! CONV_2D: NHWC input, OHWI filter (grouped when the filter holds fewer input channels than
//! the input), optional bias, SAME/VALID padding, strides, dilation and a fused activation.
//! Three arithmetics: float32; int8/uint8 with per-channel or per-tensor filter scales and an
//! int32 bias, requantized as TFLite's reference kernels do; and hybrid (dynamic range:
//! float input and output, int8 filter, the input quantized per batch on the fly).

use kiln_tflite::{BuiltinOptions, Conv2DOptions, window};

use super::common::dot::{dot, dot_i16};
use super::common::fused_activation::FloatClamp;
use super::common::quant::{load_q, quantize_floats, store_q};
use super::common::weighted::{self, Arithmetic, WeightedOp};
use super::{In, Kernel, OpKernel, Out, Prep};
use crate::error::RuntimeError;
use crate::tensor::{TensorInfo, as_f32, as_f32_mut, as_i32};

/// Where each output pixel's receptive field lies in the input.
#[derive(Debug)]
pub(super) struct Geometry {
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
}

#[derive(Debug)]
struct Conv2D {
    geometry: Geometry,
    /// Input channels each filter sees (the input's channels over the number of groups).
    group_c: usize,
    has_bias: bool,
    arithmetic: Arithmetic,
}

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    prep.expect_arity(2..=3, 1)?;
    let BuiltinOptions::Conv2D(options) = &prep.op.options else {
        return Err(prep.bad("missing Conv2DOptions"));
    };
    let (input, filter, output) = (prep.input(0)?, prep.input(1)?, prep.output(0)?);
    prep.require_rank(filter, 4)?;
    let [out_c, filter_h, filter_w, group_c] = filter.shape[..] else {
        unreachable!("rank checked")
    };
    let geometry = geometry(prep, input, options, (filter_h, filter_w), out_c)?;
    if group_c == 0
        || !geometry.in_c.is_multiple_of(group_c)
        || !out_c.is_multiple_of(geometry.in_c / group_c)
    {
        return Err(prep.bad(&format!(
            "filter '{}' has {group_c} input channels, which does not divide the input's {} into groups of {out_c} outputs",
            filter.name, geometry.in_c
        )));
    }
    let bias = prep.optional_input(2);
    let arithmetic = weighted::prepare(
        prep,
        &WeightedOp {
            input,
            filter,
            bias,
            output,
            activation: options.activation,
            channels: out_c,
            channel_axis: 0,
            double_precision_rescale: false,
            // TFLite quantizes hybrid inputs asymmetrically for per-channel filters only.
            hybrid_asymmetric: filter
                .quantization
                .as_ref()
                .is_some_and(|q| q.scale.len() > 1),
        },
    )?;
    prep.set_output_shape(0, geometry.output_shape());
    Ok(Box::new(Conv2D {
        geometry,
        group_c,
        has_bias: bias.is_some(),
        arithmetic,
    }))
}

fn geometry(
    prep: &Prep<'_>,
    input: &TensorInfo,
    options: &Conv2DOptions,
    filter: (usize, usize),
    out_c: usize,
) -> Result<Geometry, RuntimeError> {
    Geometry::new(
        prep,
        input,
        filter,
        out_c,
        options.padding,
        (options.stride_h, options.stride_w),
        (options.dilation_h, options.dilation_w),
    )
}

impl Conv2D {
    fn groups(&self) -> usize {
        self.geometry.in_c / self.group_c
    }

    /// Gathers the receptive field of output pixel (oy, ox) for the channels of `group` into
    /// `patch`, in the filter's (h, w, c) order; taps outside the image contribute zero.
    fn gather<T: Copy + Default>(
        &self,
        image: &[T],
        oy: usize,
        ox: usize,
        group: usize,
        patch: &mut [T],
    ) {
        let g = &self.geometry;
        let c = self.group_c;
        for ky in 0..g.filter_h {
            for kx in 0..g.filter_w {
                let dst = &mut patch[(ky * g.filter_w + kx) * c..][..c];
                match g.tap(oy, ox, ky, kx) {
                    Some((iy, ix)) => {
                        dst.copy_from_slice(&image[(iy * g.in_w + ix) * g.in_c + group * c..][..c])
                    }
                    None => dst.fill(T::default()),
                }
            }
        }
    }

    fn eval_float(
        &self,
        input: &[f32],
        filter: &[f32],
        bias: Option<&[f32]>,
        output: &mut [f32],
        clamp: FloatClamp,
    ) {
        let g = &self.geometry;
        let patch_len = g.filter_h * g.filter_w * self.group_c;
        let outputs_per_group = g.out_c / self.groups();
        let mut patch = vec![0.0f32; patch_len];
        let mut out_index = 0;
        for b in 0..g.batches {
            let image = &input[b * g.in_h * g.in_w * g.in_c..][..g.in_h * g.in_w * g.in_c];
            for oy in 0..g.out_h {
                for ox in 0..g.out_w {
                    let mut gathered = usize::MAX;
                    for oc in 0..g.out_c {
                        let group = oc / outputs_per_group;
                        if group != gathered {
                            self.gather(image, oy, ox, group, &mut patch);
                            gathered = group;
                        }
                        let acc = dot(&patch, &filter[oc * patch_len..][..patch_len])
                            + bias.map_or(0.0, |b| b[oc]);
                        output[out_index] = clamp.apply(acc);
                        out_index += 1;
                    }
                }
            }
        }
    }

    /// Integer accumulation shared by the quantized and hybrid paths: `image` holds each batch's
    /// input already offset (input − zero point); `visit(b, oc, acc, index)` finishes an output.
    fn accumulate(
        &self,
        image_of: &dyn Fn(usize) -> Vec<i16>,
        filter: &[u8],
        filter_signed: bool,
        filter_offset: i32,
        mut finish: impl FnMut(usize, usize, i32, usize),
    ) {
        let g = &self.geometry;
        let patch_len = g.filter_h * g.filter_w * self.group_c;
        let outputs_per_group = g.out_c / self.groups();
        let mut patch = vec![0i16; patch_len];
        // Every weight is reused at each output pixel: widen the filter once (offset 8-bit
        // values fit in i16).
        let filter: Vec<i16> = (0..filter.len())
            .map(|i| (load_q(filter, filter_signed, i) + filter_offset) as i16)
            .collect();
        let mut out_index = 0;
        for b in 0..g.batches {
            let image = image_of(b);
            for oy in 0..g.out_h {
                for ox in 0..g.out_w {
                    // A window fully inside the image (one group, no horizontal dilation) reads
                    // each filter row as one contiguous run of the image: no patch copy.
                    let inside = self.groups() == 1
                        && g.dilation.1 == 1
                        && g.tap(oy, ox, 0, 0).is_some()
                        && g.tap(oy, ox, g.filter_h - 1, g.filter_w - 1).is_some();
                    if inside {
                        let row_len = g.filter_w * g.in_c;
                        for oc in 0..g.out_c {
                            let weights = &filter[oc * patch_len..][..patch_len];
                            let mut acc = 0i32;
                            for ky in 0..g.filter_h {
                                let Some((iy, ix)) = g.tap(oy, ox, ky, 0) else {
                                    continue;
                                };
                                let run = &image[(iy * g.in_w + ix) * g.in_c..][..row_len];
                                acc = acc.wrapping_add(dot_i16(
                                    run,
                                    &weights[ky * row_len..][..row_len],
                                ));
                            }
                            finish(b, oc, acc, out_index);
                            out_index += 1;
                        }
                        continue;
                    }
                    let mut gathered = usize::MAX;
                    for oc in 0..g.out_c {
                        let group = oc / outputs_per_group;
                        if group != gathered {
                            self.gather(&image, oy, ox, group, &mut patch);
                            gathered = group;
                        }
                        let acc = dot_i16(&patch, &filter[oc * patch_len..][..patch_len]);
                        finish(b, oc, acc, out_index);
                        out_index += 1;
                    }
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
        let bias = if self.has_bias {
            inputs.get(2).and_then(Option::as_ref).map(|b| b.data)
        } else {
            None
        };
        let g = &self.geometry;
        let image_len = g.in_h * g.in_w * g.in_c;
        match &self.arithmetic {
            Arithmetic::Float { clamp } => self.eval_float(
                as_f32(input.data),
                as_f32(filter.data),
                bias.map(as_f32),
                as_f32_mut(outputs[0].data),
                *clamp,
            ),
            Arithmetic::Quantized(q) => {
                let data = input.data;
                // Offset 8-bit values (input − zero point) fit in i16.
                let image_of = |b: usize| -> Vec<i16> {
                    (0..image_len)
                        .map(|i| {
                            (load_q(data, q.input_signed, b * image_len + i) + q.input_offset)
                                as i16
                        })
                        .collect()
                };
                let bias = bias.map(as_i32);
                let output = &mut *outputs[0].data;
                self.accumulate(
                    &image_of,
                    filter.data,
                    q.filter_signed,
                    q.filter_offset,
                    |_, oc, acc, index| {
                        store_q(output, index, q.finish(acc, bias.map_or(0, |b| b[oc]), oc));
                    },
                );
            }
            Arithmetic::Hybrid {
                filter_scales,
                asymmetric_inputs,
                clamp,
            } => {
                let input = as_f32(input.data);
                // Each batch is quantized on its own, as TFLite's hybrid kernels do.
                let mut input_scales = vec![0.0f32; g.batches];
                let mut images = Vec::with_capacity(g.batches);
                for b in 0..g.batches {
                    let mut q = vec![0i32; image_len];
                    let (scale, zero_point) = quantize_floats(
                        &input[b * image_len..][..image_len],
                        *asymmetric_inputs,
                        &mut q,
                    );
                    input_scales[b] = scale;
                    images.push(
                        q.iter()
                            .map(|&v| (v - zero_point) as i16)
                            .collect::<Vec<i16>>(),
                    );
                }
                let image_of = |b: usize| images[b].clone();
                let bias = bias.map(as_f32);
                let output = as_f32_mut(outputs[0].data);
                self.accumulate(&image_of, filter.data, true, 0, |b, oc, acc, index| {
                    let value = acc as f32 * filter_scales[oc] * input_scales[b]
                        + bias.map_or(0.0, |bias| bias[oc]);
                    output[index] = clamp.apply(value);
                });
            }
        }
    }
}
