//! QAT's inference, layer by layer as the int8 kernels compute it.

use burn::prelude::*;
use kiln_nn::LayerKind;
use kiln_tflite::quant::{QParams, Rescale, int8_weight_axis, quantize_symmetric};

/// A conv or dense layer as its int8 kernel computes it, dequantized: the weights and the
/// bias rounded as the exporter rounds them (in f64, from the same f32 values), the int32
/// accumulators summed exactly (integers below 2²⁴ add exactly in f32), then requantized
/// with the kernel's own arithmetic — TFLite's fixed-point multiplier with its double
/// rounding for convolutions, one double-precision rounding for FULLY_CONNECTED. Summing the
/// dequantized values instead lands on the other side of a rounding tie now and then, and
/// deep networks compound that. `None` when the tensors cannot be read.
pub(super) fn int8_layer<const D: usize, const O: usize>(
    kind: LayerKind,
    (x, input): (Tensor<O>, QParams),
    (weight, channel_axis): (&Tensor<D>, Option<usize>),
    bias: Option<Tensor<1>>,
    output: QParams,
    apply: &impl Fn(Tensor<O>, Tensor<D>, Option<Tensor<1>>) -> Tensor<O>,
) -> Option<Tensor<O>> {
    let dims = weight.dims();
    let device = weight.device();
    let values = weight.clone().into_data().try_to_vec::<f32>().ok()?;
    // The exporter's own choice of axis and quantization (the same functions): scales per
    // channel (or one for a clustered weight), each stored as f32, from which the kernels
    // derive everything.
    let axis = int8_weight_axis(&values, channel_axis.filter(|&a| a < D));
    let channels = axis.map_or(1, |axis| dims[axis]);
    let quantized = quantize_symmetric(&values, &dims, axis)?;
    let integer_weight: Vec<f32> = quantized.values.iter().map(|&q| f32::from(q)).collect();
    let stored = quantized.scales;
    let input_scale = f64::from(input.scale);
    let integer_bias = match bias {
        Some(bias) => {
            let b = bias.into_data().try_to_vec::<f32>().ok()?;
            let ints: Vec<f32> = b
                .iter()
                .enumerate()
                .map(|(c, &v)| {
                    let scale = input_scale * f64::from(stored[if channels == 1 { 0 } else { c }]);
                    (f64::from(v) / scale).round() as f32
                })
                .collect();
            let len = ints.len();
            Some(Tensor::<1>::from_data(
                TensorData::new(ints, [len]),
                &device,
            ))
        }
        None => None,
    };
    let integer_weight = Tensor::<D>::from_data(TensorData::new(integer_weight, dims), &device);
    let integer_input = x.div_scalar(input_scale).round();
    let accumulators = apply(integer_input, integer_weight, integer_bias);
    let shape = accumulators.dims();
    let acc = accumulators.into_data().try_to_vec::<f32>().ok()?;
    let out_channels = shape.get(1).copied().unwrap_or(1).max(1);
    let per_position: usize = shape[2..].iter().product::<usize>().max(1);
    let output_scale = f64::from(output.scale);
    // The kernel's own requantization: fixed point for convolutions, double precision for
    // FULLY_CONNECTED.
    let double_precision = match kind {
        LayerKind::Convolution => false,
        LayerKind::Dense => true,
    };
    let rescale = Rescale::new(double_precision, input.scale, &stored, output.scale);
    let dequantized: Vec<f32> = acc
        .iter()
        .enumerate()
        .map(|(i, &a)| {
            let c = if channels == 1 {
                0
            } else {
                (i / per_position) % out_channels
            };
            let q = rescale.apply(a as i32, c);
            (f64::from(q) * output_scale) as f32
        })
        .collect();
    Some(Tensor::from_data(
        TensorData::new(dequantized, shape),
        &device,
    ))
}
