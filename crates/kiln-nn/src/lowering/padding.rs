//! A Burn convolution's padding, resolved for one input size into TFLite's terms.
//!
//! TFLite knows two paddings: VALID (none) and SAME, which pads `needed / 2` before and the
//! rest after (the extra pixel at the bottom/right). Burn 0.22's `PaddingConfig2d::Same`
//! computes exactly that split (burn-nn's `calculate_same_padding`: ONNX SAME_UPPER), so it
//! lowers to SAME. `Explicit` padding is usually symmetric, which differs from SAME whenever
//! the stride is 2 and the total is odd; such a convolution lowers the way TensorFlow's
//! converter lowers Keras' `ZeroPadding2D` + VALID conv: an explicit PAD op, then VALID.

use burn::nn::PaddingConfig2d;
use kiln_tflite::Padding;

use super::LowerError;
use super::builder::{GraphBuilder, TensorId};

/// (before, after) padding of one spatial axis.
type Pair = (usize, usize);

/// TFLite's (and Burn's `Same`) split of the padding a SAME window needs.
fn same_pair(input: usize, kernel: usize, stride: usize) -> Pair {
    let out = input.div_ceil(stride.max(1));
    let needed = (out.saturating_sub(1) * stride + kernel).saturating_sub(input);
    (needed / 2, needed - needed / 2)
}

/// The (before, after) pairs Burn's `Conv2d::forward` applies for this input size (burn-nn's
/// own helper for this is crate-private, so its rule is restated here).
pub(crate) fn burn_pairs(
    config: &PaddingConfig2d,
    input: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
) -> [Pair; 2] {
    match config {
        PaddingConfig2d::Valid => [(0, 0); 2],
        PaddingConfig2d::Same => [
            same_pair(input[0], kernel[0], stride[0]),
            same_pair(input[1], kernel[1], stride[1]),
        ],
        // Burn's order is (top, left, bottom, right).
        PaddingConfig2d::Explicit(top, left, bottom, right) => [(*top, *bottom), (*left, *right)],
    }
}

/// Lowers the padding of a convolution whose NHWC input is `input`: returns the tensor the
/// convolution should read (the input, or a PAD of it) and the padding to declare on it.
pub fn lower_padding(
    graph: &mut GraphBuilder,
    name: &str,
    config: &PaddingConfig2d,
    input: TensorId,
    kernel: [usize; 2],
    stride: [usize; 2],
) -> Result<(TensorId, Padding), LowerError> {
    let [_, h, w, _] = graph.shape(input)[..] else {
        return Err(LowerError::Unsupported {
            layer: name.to_owned(),
            reason: format!("input shape {:?} is not NHWC", graph.shape(input)),
        });
    };
    let pairs = burn_pairs(config, [h, w], kernel, stride);
    if pairs == [(0, 0); 2] {
        return Ok((input, Padding::Valid));
    }
    let same = [
        same_pair(h, kernel[0], stride[0]),
        same_pair(w, kernel[1], stride[1]),
    ];
    if pairs == same {
        return Ok((input, Padding::Same));
    }
    let [(top, bottom), (left, right)] = pairs;
    let padded = graph.pad(
        &format!("{name}/pad"),
        input,
        &[[0, 0], [top, bottom], [left, right], [0, 0]],
    );
    Ok((padded, Padding::Valid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_puts_the_odd_pixel_after() {
        // 28 → 14 with a 3×3 stride-2 window needs 1 pixel: TFLite puts it at the bottom.
        assert_eq!(same_pair(28, 3, 2), (0, 1));
        assert_eq!(same_pair(7, 3, 2), (1, 1));
        assert_eq!(same_pair(14, 5, 2), (1, 2));
        assert_eq!(same_pair(7, 5, 1), (2, 2));
    }

    fn lowered(config: PaddingConfig2d, side: usize, stride: usize) -> (Vec<usize>, Padding) {
        let mut graph = GraphBuilder::new("test");
        let x = graph.activation("x", &[1, side, side, 4]);
        let (y, padding) =
            lower_padding(&mut graph, "conv", &config, x, [3, 3], [stride; 2]).expect("NHWC input");
        (graph.shape(y), padding)
    }

    #[test]
    fn burn_same_lowers_to_same_without_a_pad() {
        assert_eq!(
            lowered(PaddingConfig2d::Same, 28, 2),
            (vec![1, 28, 28, 4], Padding::Same)
        );
    }

    #[test]
    fn symmetric_stride_two_padding_becomes_an_explicit_pad() {
        let explicit = PaddingConfig2d::Explicit(1, 1, 1, 1);
        // Even input, stride 2: symmetric (1, 1) is not SAME's (0, 1).
        assert_eq!(
            lowered(explicit.clone(), 28, 2),
            (vec![1, 30, 30, 4], Padding::Valid)
        );
        // Odd input or stride 1: symmetric equals SAME.
        assert_eq!(
            lowered(explicit.clone(), 29, 2),
            (vec![1, 29, 29, 4], Padding::Same)
        );
        assert_eq!(
            lowered(explicit, 28, 1),
            (vec![1, 28, 28, 4], Padding::Same)
        );
    }
}
