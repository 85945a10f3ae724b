//! Weight layout conversions between Burn and TFLite.

/// Conv filter [O, I, H, W] (Burn) → [O, H, W, I] (TFLite).
pub fn oihw_to_ohwi(weights: &[f32], [o, i, h, w]: [usize; 4]) -> Vec<f32> {
    let mut out = vec![0.0; weights.len()];
    for oc in 0..o {
        for ic in 0..i {
            for y in 0..h {
                for x in 0..w {
                    out[((oc * h + y) * w + x) * i + ic] = weights[((oc * i + ic) * h + y) * w + x];
                }
            }
        }
    }
    out
}

/// Depthwise filter [O, 1, H, W] (Burn, groups = input channels) → [1, H, W, O] (TFLite).
/// Both number output channels group by group (`o = c × multiplier + m`), so only the axes move.
pub fn depthwise_oihw_to_1hwo(weights: &[f32], [o, h, w]: [usize; 3]) -> Vec<f32> {
    transpose_2d(weights, o, h * w)
}

/// One image's activations [C, H, W] (Burn) → [H, W, C] (TFLite), e.g. to feed a Burn input
/// to the lowered model.
pub fn chw_to_hwc(values: &[f32], [c, h, w]: [usize; 3]) -> Vec<f32> {
    transpose_2d(values, c, h * w)
}

/// Row-major [rows, cols] → [cols, rows] (Burn's [in, out] dense weight → TFLite's [out, in]).
pub fn transpose_2d(weights: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; weights.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = weights[r * cols + c];
        }
    }
    out
}

/// A dense layer that follows a flatten: Burn flattens NCHW activations in (c, h, w) order, the
/// TFLite graph flattens NHWC in (h, w, c) order. Reorders the rows of Burn's [in, out] weight
/// so the TFLite layer sees the same features, and returns TFLite's [out, in] weight.
pub fn nchw_flatten_to_nhwc_rows(
    weights: &[f32],
    [c, h, w]: [usize; 3],
    out_features: usize,
) -> Vec<f32> {
    let in_features = c * h * w;
    let mut out = vec![0.0; weights.len()];
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                let burn_row = (ch * h + y) * w + x;
                let tflite_col = (y * w + x) * c + ch;
                for o in 0..out_features {
                    out[o * in_features + tflite_col] = weights[burn_row * out_features + o];
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_transpose_moves_input_channel_last() {
        // O=1, I=2, H=1, W=2: [[ [a b], [c d] ]] → [[ [a c], [b d] ]]
        assert_eq!(
            oihw_to_ohwi(&[1.0, 2.0, 3.0, 4.0], [1, 2, 1, 2]),
            vec![1.0, 3.0, 2.0, 4.0]
        );
    }

    #[test]
    fn depthwise_filter_moves_channels_last() {
        // O=2, H=1, W=2: [[a b], [c d]] → [[a c], [b d]]
        assert_eq!(
            depthwise_oihw_to_1hwo(&[1.0, 2.0, 3.0, 4.0], [2, 1, 2]),
            vec![1.0, 3.0, 2.0, 4.0]
        );
    }

    #[test]
    fn transpose_swaps_axes() {
        assert_eq!(
            transpose_2d(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3),
            vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
        );
    }

    #[test]
    fn flatten_reorder_matches_feature_positions() {
        // c=2, h=1, w=2, one output: Burn rows (c0x0, c0x1, c1x0, c1x1) → TFLite (x0c0, x0c1, x1c0, x1c1).
        let burn = [10.0, 11.0, 20.0, 21.0];
        assert_eq!(
            nchw_flatten_to_nhwc_rows(&burn, [2, 1, 2], 1),
            vec![10.0, 20.0, 11.0, 21.0]
        );
    }
}
