//! Symmetric int8 weights, the TFLite quantization spec for constant filters: values in
//! [−127, 127] (the narrow range keeps the grid symmetric around 0, which the optimized
//! kernels rely on), zero point 0, one scale per output channel (or one per tensor). Shared by
//! the exporter's dynamic-range and full-int8 variants, and the grid QAT's fake quantization
//! rounds weights to.

/// Quantized weights: `values` in the tensor's layout, one scale per channel (or one).
#[derive(Clone, Debug, PartialEq)]
pub struct SymmetricWeights {
    pub values: Vec<i8>,
    pub scales: Vec<f32>,
}

/// The largest quantized magnitude: the narrow int8 range [−127, 127].
const QMAX: f64 = 127.0;

/// Quantizes `values` (row-major, of `shape`) symmetrically, per channel along `axis` or per
/// tensor when `axis` is `None`. Each scale is max|w| / 127 over its channel, computed in f64
/// as the converter's quantizer does, and each value round-half-away-from-zero(w / scale). A
/// channel of zeros (a pruned-away filter) may take any scale: it gets the largest of the
/// other channels' (1 when every channel is zero), which keeps its bias scale finite and its
/// requantization multiplier in the others' range — below 1, where LiteRT's dense and sparse
/// int8 FULLY_CONNECTED kernels agree (with scale 1 they differed by a step). `None` when the
/// shape does not match the values or the axis.
pub fn quantize_symmetric(
    values: &[f32],
    shape: &[usize],
    axis: Option<usize>,
) -> Option<SymmetricWeights> {
    if shape.iter().product::<usize>() != values.len() {
        return None;
    }
    let (channels, inner) = match axis {
        Some(axis) => (*shape.get(axis)?, shape[axis + 1..].iter().product()),
        None => (1, values.len().max(1)),
    };
    if channels == 0 && !values.is_empty() {
        return None;
    }
    let channel_of = |i: usize| (i / inner) % channels;
    let mut max_abs = vec![0.0f64; channels];
    for (i, &v) in values.iter().enumerate() {
        let slot = &mut max_abs[channel_of(i)];
        // f64::max ignores NaN, so a NaN weight cannot poison its channel's scale.
        *slot = slot.max(f64::from(v).abs());
    }
    let usable = |m: f64| m > 0.0 && m.is_finite();
    let zero_channel_scale = max_abs
        .iter()
        .copied()
        .filter(|&m| usable(m))
        .fold(None, |largest: Option<f64>, m| {
            Some(largest.map_or(m, |l| l.max(m)))
        })
        .map_or(1.0, |m| m / QMAX);
    let scales: Vec<f64> = max_abs
        .iter()
        .map(|&m| {
            if usable(m) {
                m / QMAX
            } else {
                zero_channel_scale
            }
        })
        .collect();
    let quantized = values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            (f64::from(v) / scales[channel_of(i)])
                .round()
                .clamp(-QMAX, QMAX) as i8
        })
        .collect();
    Some(SymmetricWeights {
        values: quantized,
        scales: scales.iter().map(|&s| s as f32).collect(),
    })
}

/// The axis full-int8 export quantizes a weight along: `axis` (one scale per channel), except
/// for a weight that takes few values — at most 256 distinct ones, each used four times on
/// average, as a clustered layer's centroids are — which is quantized per tensor: every
/// channel then shares one grid and the file keeps one int8 code per value, which is what
/// makes a clustered model compress (per-channel scales would give each channel its own
/// codes). The exporter and QAT's int8 inference both ask this.
pub fn int8_weight_axis(values: &[f32], axis: Option<usize>) -> Option<usize> {
    axis?;
    let mut distinct: Vec<u32> = values.iter().map(|v| v.to_bits()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    let palettized = distinct.len() <= 256 && distinct.len() * 4 <= values.len();
    if palettized { None } else { axis }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scale of a channel whose largest magnitude is `m` (f32 weights, f64 arithmetic).
    fn scale(m: f32) -> f32 {
        (f64::from(m) / 127.0) as f32
    }

    #[test]
    fn per_channel_scales_follow_each_channels_largest_magnitude() {
        // Two output channels (axis 0) of three weights each.
        let w = [0.5, -1.27, 0.0, 0.02, 0.012, -0.005];
        let q = quantize_symmetric(&w, &[2, 3], Some(0)).unwrap();
        assert_eq!(q.scales, vec![scale(1.27), scale(0.02)]);
        assert_eq!(q.values, vec![50, -127, 0, 127, 76, -32]);
    }

    #[test]
    fn the_last_axis_is_a_channel_axis_too() {
        // Depthwise filters [1, 1, 2, 2]: channel = last index.
        let w = [1.2, -4.0, -2.0, 2.4];
        let q = quantize_symmetric(&w, &[1, 1, 2, 2], Some(3)).unwrap();
        assert_eq!(q.scales, vec![scale(2.0), scale(4.0)]);
        assert_eq!(q.values, vec![76, -127, -127, 76]);
    }

    #[test]
    fn per_tensor_zero_channels_and_bad_shapes() {
        let q = quantize_symmetric(&[0.0, 0.0, 0.5, -0.3], &[2, 2], None).unwrap();
        assert_eq!(q.scales, vec![scale(0.5)]);
        assert_eq!(q.values, vec![0, 0, 127, -76]);
        let zeros = quantize_symmetric(&[0.0; 4], &[2, 2], Some(0)).unwrap();
        assert_eq!(zeros.scales, vec![1.0, 1.0]);
        assert_eq!(zeros.values, vec![0; 4]);
        // A pruned-away channel takes the largest other channel's scale.
        let pruned =
            quantize_symmetric(&[0.0, 0.0, 0.5, -0.3, 0.0, 0.2], &[3, 2], Some(0)).unwrap();
        assert_eq!(pruned.scales, vec![scale(0.5), scale(0.5), scale(0.2)]);
        assert_eq!(pruned.values, vec![0, 0, 127, -76, 0, 127]);
        assert!(quantize_symmetric(&[1.0; 3], &[2, 2], Some(0)).is_none());
        assert!(quantize_symmetric(&[1.0; 4], &[2, 2], Some(2)).is_none());
    }

    #[test]
    fn halves_round_away_from_zero() {
        // max 127/128 gives the scale 1/128 exactly, so these are exact half steps.
        let step = 1.0 / 128.0;
        let w = [
            127.0 * step,
            0.5 * step,
            -0.5 * step,
            1.5 * step,
            2.5 * step,
        ];
        let q = quantize_symmetric(&w, &[5], None).unwrap();
        assert_eq!(q.scales, vec![step]);
        assert_eq!(q.values, vec![127, 1, -1, 2, 3]);
    }

    #[test]
    fn palettized_weights_are_quantized_per_tensor() {
        // 16 values each used 8 times: per tensor.
        let clustered: Vec<f32> = (0..128).map(|i| (i % 16) as f32 * 0.1 - 0.8).collect();
        assert_eq!(int8_weight_axis(&clustered, Some(0)), None);
        // Every value distinct, or few values used once each: per channel.
        let dense: Vec<f32> = (0..128).map(|i| i as f32 * 0.01).collect();
        assert_eq!(int8_weight_axis(&dense, Some(0)), Some(0));
        assert_eq!(int8_weight_axis(&dense[..16], Some(3)), Some(3));
        assert_eq!(int8_weight_axis(&clustered, None), None);
    }
}
