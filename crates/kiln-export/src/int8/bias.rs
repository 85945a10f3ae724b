//! int32 biases of quantized CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED. The kernels add the
//! bias to the int32 accumulator of input × weight products, whose scale is
//! input_scale × weight_scale[c]; the bias must be on that same grid (zero point 0), per
//! output channel when the weights are.

/// Quantizes `values` (one per output channel) for an input of scale `input_scale` and
/// weights of scales `weight_scales` (one per channel, or one for the tensor). Returns the
/// int32 values and their scales (one per entry of `weight_scales`), or `None` when the
/// counts do not match. Values beyond the int32 range saturate.
pub fn quantize_bias(
    values: &[f32],
    input_scale: f32,
    weight_scales: &[f32],
) -> Option<(Vec<i32>, Vec<f32>)> {
    let per_channel = weight_scales.len() == values.len();
    if !per_channel && weight_scales.len() != 1 {
        return None;
    }
    let scales: Vec<f64> = weight_scales
        .iter()
        .map(|&w| f64::from(input_scale) * f64::from(w))
        .collect();
    let limit = f64::from(i32::MAX);
    let quantized = values
        .iter()
        .enumerate()
        .map(|(c, &b)| {
            let scale = scales[if per_channel { c } else { 0 }];
            let q = if scale > 0.0 {
                (f64::from(b) / scale).round()
            } else {
                0.0
            };
            q.clamp(-limit, limit) as i32
        })
        .collect();
    Some((quantized, scales.iter().map(|&s| s as f32).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_channel_uses_input_scale_times_its_weight_scale() {
        let (q, scales) = quantize_bias(&[0.1, -0.3], 0.5, &[0.01, 0.002]).unwrap();
        assert_eq!(scales, vec![0.005, 0.001]);
        assert_eq!(q, vec![20, -300]);
    }

    #[test]
    fn per_tensor_weights_give_one_bias_scale() {
        let (q, scales) = quantize_bias(&[0.1, -0.3, 0.0], 0.5, &[0.01]).unwrap();
        assert_eq!(scales, vec![0.005]);
        assert_eq!(q, vec![20, -60, 0]);
    }

    #[test]
    fn huge_biases_saturate_and_mismatches_are_refused() {
        let (q, _) = quantize_bias(&[1e30, -1e30], 1e-6, &[1e-6]).unwrap();
        assert_eq!(q, vec![i32::MAX, -i32::MAX]);
        assert!(quantize_bias(&[0.1, 0.2, 0.3], 0.5, &[0.1, 0.2]).is_none());
    }
}
