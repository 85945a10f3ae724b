//! The quantization parameters of the tensors an operator is prepared with (per-tensor scales
//! and zero points, per-channel filter scales, the clamp of a fused activation), 8-bit loads
//! and stores, and the on-the-fly input quantization of hybrid kernels. The arithmetic itself
//! (fixed-point multipliers, requantization) is `kiln_tflite::quant`, shared with the exporter
//! and quantization-aware training.

use kiln_tflite::{Activation, TensorType};

use crate::error::RuntimeError;
use crate::kernels::Prep;
use crate::tensor::TensorInfo;

/// Representable range of an integer tensor type.
pub fn type_range(dtype: TensorType) -> Option<(i32, i32)> {
    match dtype {
        TensorType::Int8 => Some((i32::from(i8::MIN), i32::from(i8::MAX))),
        TensorType::UInt8 => Some((0, i32::from(u8::MAX))),
        TensorType::Int16 => Some((i32::from(i16::MIN), i32::from(i16::MAX))),
        _ => None,
    }
}

/// A tensor's single (per-tensor) scale and zero point, or an error naming it.
pub fn per_tensor(prep: &Prep<'_>, tensor: &TensorInfo) -> Result<(f32, i32), RuntimeError> {
    let q = tensor.quantization.as_ref().ok_or_else(|| {
        prep.bad(&format!(
            "tensor '{}' is {} but has no quantization",
            tensor.name, tensor.dtype
        ))
    })?;
    if q.scale.len() != 1 {
        return Err(prep.unsupported(&format!(
            "tensor '{}' has {} scales; this operator needs one (per-tensor) scale",
            tensor.name,
            q.scale.len()
        )));
    }
    let zero_point = checked_zero_point(prep, tensor, q.zero_point.first().copied().unwrap_or(0))?;
    Ok((q.scale[0], zero_point))
}

/// A zero point, checked to lie in its tensor type's range (as TFLite requires), so the
/// integer arithmetic built on it cannot overflow.
pub fn checked_zero_point(
    prep: &Prep<'_>,
    tensor: &TensorInfo,
    zero_point: i64,
) -> Result<i32, RuntimeError> {
    let (lo, hi) = type_range(tensor.dtype).unwrap_or((i32::MIN, i32::MAX));
    match i32::try_from(zero_point) {
        Ok(z) if (lo..=hi).contains(&z) => Ok(z),
        _ => Err(prep.bad(&format!(
            "tensor '{}' ({}) has zero point {zero_point}, outside the type's range {lo}..={hi}",
            tensor.name, tensor.dtype
        ))),
    }
}

/// The clamp a fused activation becomes in the quantized domain of the output
/// (TFLite's CalculateActivationRangeQuantized).
pub fn activation_range(
    prep: &Prep<'_>,
    activation: Activation,
    output: &TensorInfo,
) -> Result<(i32, i32), RuntimeError> {
    let (qmin, qmax) = type_range(output.dtype).ok_or_else(|| {
        prep.unsupported(&format!("output type {} is not quantized", output.dtype))
    })?;
    let (scale, zero_point) = per_tensor(prep, output)?;
    // Saturating: a malformed file's zero point near i32::MAX (or a scale so small that the
    // rounded value saturates) must clamp, not overflow.
    let quantize = |real: f32| zero_point.saturating_add((real / scale).round() as i32);
    Ok(match activation {
        Activation::None => (qmin, qmax),
        Activation::Relu => (qmin.max(quantize(0.0)), qmax),
        Activation::Relu6 => (qmin.max(quantize(0.0)), qmax.min(quantize(6.0))),
        Activation::ReluN1To1 => (qmin.max(quantize(-1.0)), qmax.min(quantize(1.0))),
        other => {
            return Err(prep.unsupported(&format!(
                "fused activation {} on a quantized output",
                other.name()
            )));
        }
    })
}

/// Reads element `i` of an int8 or uint8 buffer as i32.
#[inline]
pub fn load_q(data: &[u8], signed: bool, i: usize) -> i32 {
    if signed {
        i32::from(data[i] as i8)
    } else {
        i32::from(data[i])
    }
}

/// Stores a value (already clamped to the type's range) into an int8 or uint8 buffer.
#[inline]
pub fn store_q(data: &mut [u8], i: usize, value: i32) {
    data[i] = value as u8;
}

/// Per-output-channel quantization of a filter: scales (one per channel, or one repeated)
/// and its single zero point (non-zero only for legacy uint8 filters).
pub struct FilterQuantization {
    pub scales: Vec<f32>,
    pub zero_point: i32,
}

/// The scales of `filter` along `axis` for `channels` output channels.
pub fn filter_quantization(
    prep: &Prep<'_>,
    filter: &TensorInfo,
    axis: usize,
    channels: usize,
) -> Result<FilterQuantization, RuntimeError> {
    let q = filter.quantization.as_ref().ok_or_else(|| {
        prep.bad(&format!(
            "filter '{}' is {} but has no quantization",
            filter.name, filter.dtype
        ))
    })?;
    let scales = match q.scale.len() {
        1 => vec![q.scale[0]; channels],
        n if n == channels && q.quantized_dimension as usize == axis => q.scale.clone(),
        n => {
            return Err(prep.bad(&format!(
                "filter '{}' has {n} scales along dimension {}; expected 1 or {channels} along dimension {axis}",
                filter.name, q.quantized_dimension
            )));
        }
    };
    let zero_point = q.zero_point.first().copied().unwrap_or(0);
    if q.zero_point.iter().any(|&z| z != zero_point) {
        return Err(prep.unsupported(&format!(
            "filter '{}' has per-channel zero points",
            filter.name
        )));
    }
    let zero_point = checked_zero_point(prep, filter, zero_point)?;
    Ok(FilterQuantization { scales, zero_point })
}

/// Float inputs quantized on the fly for hybrid (dynamic-range) kernels: int8 values, the
/// scale, and the zero point (0 for symmetric quantization). TFLite's
/// Symmetric/AsymmetricQuantizeFloats.
pub fn quantize_floats(values: &[f32], asymmetric: bool, out: &mut [i32]) -> (f32, i32) {
    let (min, max) = values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    if !asymmetric {
        let range = min.abs().max(max.abs());
        if range == 0.0 || values.is_empty() {
            out.iter_mut().for_each(|q| *q = 0);
            return (1.0, 0);
        }
        let inverse = 127.0 / range;
        for (q, &v) in out.iter_mut().zip(values) {
            *q = ((v * inverse).round() as i32).clamp(-127, 127);
        }
        return (range / 127.0, 0);
    }
    let (rmin, rmax) = (f64::from(min.min(0.0)), f64::from(max.max(0.0)));
    if rmin == rmax || values.is_empty() {
        out.iter_mut().for_each(|q| *q = 0);
        return (1.0, 0);
    }
    let (qmin, qmax) = (-128.0f64, 127.0f64);
    let scale = (rmax - rmin) / (qmax - qmin);
    let from_min = qmin - rmin / scale;
    let from_max = qmax - rmax / scale;
    let from_min_error = qmin.abs() + (rmin / scale).abs();
    let from_max_error = qmax.abs() + (rmax / scale).abs();
    let zero_point = if from_min_error < from_max_error {
        from_min
    } else {
        from_max
    };
    let nudged = if zero_point <= qmin {
        qmin as i32
    } else if zero_point >= qmax {
        qmax as i32
    } else {
        zero_point.round() as i32
    };
    let scale = scale as f32;
    let inverse = 1.0f32 / scale;
    for (q, &v) in out.iter_mut().zip(values) {
        *q = ((nudged as f32 + v * inverse).round() as i32).clamp(-128, 127);
    }
    (scale, nudged)
}

#[cfg(test)]
mod tests {
    use kiln_tflite::{Activation, BuiltinOptions, TensorType};

    use super::super::testing::{quantized, run, tensor};

    /// Fuzzer finding: an output scale so small that round(6 / scale) saturates at i32::MAX
    /// made the fused activation's clamp overflow (`zero_point + …`) and panic in prepare. It
    /// saturates now.
    #[test]
    fn a_tiny_output_scale_saturates_the_activation_range() {
        let options = BuiltinOptions::Add {
            activation: Activation::Relu6,
        };
        let input = || quantized(tensor(TensorType::Int8, &[4]), 0.01, -1);
        let output = quantized(tensor(TensorType::Int8, &[4]), 1e-38, 5);
        let result = run(
            crate::kernels::add::prepare,
            options,
            vec![Some(input()), Some(input())],
            output,
            &[&[1, 2, 3, 4], &[5, 6, 7, 8]],
        );
        // The range is [5, 127] (a wrapped upper bound, i32::MIN + 4, would give 4s): every
        // output, a huge positive value, clamps to its top.
        assert_eq!(result.expect("prepares").data, [127u8; 4]);
    }
}
