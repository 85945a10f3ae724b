//! DEPTHWISE_CONV_2D: each input channel convolved with its own `depth_multiplier` filters;
//! filter [1, H, W, C × multiplier]. Float32; int8/uint8 per-channel (axis 3) requantization as
//! TFLite's reference kernels; hybrid (float input, int8 filter, input quantized per batch).

use kiln_tflite::DepthwiseConv2DOptions;

use super::common::convolution::{Convolution, Operands, OperatorOptions};
use super::common::quant::{load_q, quantize_floats, store_q};
use super::common::requantize::{ChannelRescale, OutputRange};
use super::common::weighted::Arithmetic;
use super::{In, Kernel, OpKernel, Out, Prep};
use crate::error::RuntimeError;
use crate::tensor::{as_f32, as_f32_mut, as_i32};
use kiln_tflite::quant::Rescale;

#[derive(Debug)]
struct DepthwiseConv2D {
    conv: Convolution,
    multiplier: usize,
    /// For a quantized constant filter: its values with the zero point applied, widened once
    /// at prepare, and the vectorised per-pixel requantization.
    quantized: Option<PreparedQuantized>,
}

#[derive(Debug)]
struct PreparedQuantized {
    filter: Vec<Wrapping>,
    rescale: ChannelRescale,
    range: OutputRange,
}

fn prepare_quantized(conv: &Convolution, filter: Option<&[u8]>) -> Option<PreparedQuantized> {
    let Arithmetic::Quantized(q) = &conv.arithmetic else {
        return None;
    };
    let Rescale::FixedPoint(multipliers) = &q.rescale else {
        return None;
    };
    let g = &conv.geometry;
    let filter = filter.filter(|f| f.len() == g.filter_h * g.filter_w * g.out_c)?;
    if multipliers.len() != g.out_c {
        return None;
    }
    Some(PreparedQuantized {
        filter: widen(filter, q.filter_signed, q.filter_offset),
        rescale: ChannelRescale::new(multipliers, 1),
        range: OutputRange::of(q),
    })
}

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    let (operands, options) = Operands::new::<DepthwiseConv2DOptions>(prep)?;
    let depth_multiplier = options.depth_multiplier;
    let options = options.conv();
    let filter = operands.filter;
    let [one, filter_h, filter_w, out_c] = operands.filter_shape;
    if one != 1 {
        return Err(prep.bad(&format!(
            "filter '{}' must have shape [1, H, W, C], has {:?}",
            filter.name, filter.shape
        )));
    }
    let geometry = operands.geometry(prep, (filter_h, filter_w), out_c, &options)?;
    let in_c = geometry.in_c;
    if in_c == 0 || !out_c.is_multiple_of(in_c) {
        return Err(prep.bad(&format!(
            "filter channels {out_c} are not a multiple of the input's {in_c}"
        )));
    }
    let multiplier = out_c / in_c;
    // depth_multiplier in the options is informational in TFLite (older files set 0).
    if depth_multiplier > 0 && depth_multiplier as usize != multiplier {
        return Err(prep.bad(&format!(
            "depth_multiplier {depth_multiplier} disagrees with the filter ({out_c} channels for {in_c} inputs)"
        )));
    }
    // TFLite's hybrid depthwise always quantizes its input asymmetrically.
    let conv = operands.prepare(prep, geometry, &options, 3, true)?;
    let quantized = prepare_quantized(&conv, prep.input_value(1));
    Ok(Box::new(DepthwiseConv2D {
        conv,
        multiplier,
        quantized,
    }))
}

impl DepthwiseConv2D {
    /// For every output pixel: `acc` (one slot per output channel) receives
    /// Σ over the filter taps inside the image of input[channel] × filter[tap, out channel],
    /// taps in (ky, kx) order as TFLite sums them; then `finish(batch, pixel index, acc)`.
    fn convolve<T>(&self, input: &[T], filter: &[T], mut finish: impl FnMut(usize, usize, &[T]))
    where
        T: Copy + Default + std::ops::Add<Output = T> + std::ops::Mul<Output = T>,
    {
        let g = &self.conv.geometry;
        let (in_c, out_c, multiplier) = (g.in_c, g.out_c, self.multiplier);
        let mut acc = vec![T::default(); out_c];
        // Output channel oc reads input channel oc / multiplier.
        let input_channel: Vec<usize> = (0..out_c).map(|oc| oc / multiplier).collect();
        let mut pixel = 0;
        for b in 0..g.batches {
            for oy in 0..g.out_h {
                for ox in 0..g.out_w {
                    acc.fill(T::default());
                    for ky in 0..g.filter_h {
                        for kx in 0..g.filter_w {
                            let Some((iy, ix)) = g.tap(oy, ox, ky, kx) else {
                                continue;
                            };
                            let x = &input[((b * g.in_h + iy) * g.in_w + ix) * in_c..][..in_c];
                            let w = &filter[(ky * g.filter_w + kx) * out_c..][..out_c];
                            if multiplier == 1 {
                                for ((a, &xv), &wv) in acc.iter_mut().zip(x).zip(w) {
                                    *a = *a + xv * wv;
                                }
                            } else {
                                for ((a, &wv), &ic) in acc.iter_mut().zip(w).zip(&input_channel) {
                                    *a = *a + x[ic] * wv;
                                }
                            }
                        }
                    }
                    finish(b, pixel, &acc);
                    pixel += 1;
                }
            }
        }
    }
}

/// Wrapping i32 so the integer paths share `convolve` with floats without overflow panics
/// (TFLite's int32 accumulators wrap too).
#[derive(Clone, Copy, Debug, Default)]
#[repr(transparent)]
struct Wrapping(i32);

/// The accumulators as plain i32s (no copy).
fn as_i32s(values: &[Wrapping]) -> &[i32] {
    // SAFETY: `Wrapping` is `repr(transparent)` over i32: same size, alignment and validity.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<i32>(), values.len()) }
}

impl std::ops::Add for Wrapping {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        Self(self.0.wrapping_add(other.0))
    }
}

impl std::ops::Mul for Wrapping {
    type Output = Self;
    fn mul(self, other: Self) -> Self {
        Self(self.0.wrapping_mul(other.0))
    }
}

fn widen(data: &[u8], signed: bool, offset: i32) -> Vec<Wrapping> {
    (0..data.len())
        .map(|i| Wrapping(load_q(data, signed, i) + offset))
        .collect()
}

impl OpKernel for DepthwiseConv2D {
    fn eval(&self, inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]) {
        let (Some(input), Some(filter)) = (&inputs[0], &inputs[1]) else {
            unreachable!("prepared")
        };
        let bias = self.conv.bias(inputs);
        let out_c = self.conv.geometry.out_c;
        match &self.conv.arithmetic {
            Arithmetic::Float { clamp } => {
                let bias = bias.map(as_f32);
                let output = as_f32_mut(outputs[0].data);
                self.convolve(as_f32(input.data), as_f32(filter.data), |_, pixel, acc| {
                    for (oc, &a) in acc.iter().enumerate() {
                        output[pixel * out_c + oc] = clamp.apply(a + bias.map_or(0.0, |b| b[oc]));
                    }
                });
            }
            Arithmetic::Quantized(q) if self.quantized.is_some() => {
                let Some(prepared) = &self.quantized else {
                    unreachable!("guarded")
                };
                let bias: Vec<i32> = bias
                    .map(as_i32)
                    .map_or_else(|| vec![0; out_c], <[i32]>::to_vec);
                let output = &mut *outputs[0].data;
                let x = widen(input.data, q.input_signed, q.input_offset);
                self.convolve(&x, &prepared.filter, |_, pixel, acc| {
                    prepared.rescale.requantize(
                        as_i32s(acc),
                        &bias,
                        prepared.range,
                        &mut output[pixel * out_c..][..out_c],
                    );
                });
            }
            Arithmetic::Quantized(q) => {
                let bias = bias.map(as_i32);
                let output = &mut *outputs[0].data;
                let x = widen(input.data, q.input_signed, q.input_offset);
                let w = widen(filter.data, q.filter_signed, q.filter_offset);
                self.convolve(&x, &w, |_, pixel, acc| {
                    for (oc, a) in acc.iter().enumerate() {
                        store_q(
                            output,
                            pixel * out_c + oc,
                            q.finish(a.0, bias.map_or(0, |b| b[oc]), oc),
                        );
                    }
                });
            }
            Arithmetic::Hybrid {
                filter_scales,
                clamp,
                ..
            } => {
                let g = &self.conv.geometry;
                let image_len = g.in_h * g.in_w * g.in_c;
                let input = as_f32(input.data);
                // Each batch quantized asymmetrically on its own, as TFLite's hybrid kernel does.
                let mut quantized = vec![0i32; input.len()];
                let mut input_scales = vec![0.0f32; g.batches];
                for b in 0..g.batches {
                    let q = &mut quantized[b * image_len..][..image_len];
                    let (scale, zero_point) =
                        quantize_floats(&input[b * image_len..][..image_len], true, q);
                    q.iter_mut().for_each(|v| *v -= zero_point);
                    input_scales[b] = scale;
                }
                let x: Vec<Wrapping> = quantized.into_iter().map(Wrapping).collect();
                let w = widen(filter.data, true, 0);
                let bias = bias.map(as_f32);
                let output = as_f32_mut(outputs[0].data);
                self.convolve(&x, &w, |b, pixel, acc| {
                    for (oc, a) in acc.iter().enumerate() {
                        let value = a.0 as f32 * input_scales[b] * filter_scales[oc]
                            + bias.map_or(0.0, |b| b[oc]);
                        output[pixel * out_c + oc] = clamp.apply(value);
                    }
                });
            }
        }
    }
}
