//! Output size and leading padding of a SAME/VALID window, as TFLite computes them: used by
//! lowering (to declare output shapes) and by the runtime (to run the window).

use crate::Padding;

/// (output size, padding before) for one spatial dimension.
pub fn window(
    padding: Padding,
    input: usize,
    filter: usize,
    stride: usize,
    dilation: usize,
) -> (usize, usize) {
    // Saturating arithmetic: a corrupt file's zero or huge sizes must not overflow.
    let stride = stride.max(1);
    let effective = filter
        .saturating_sub(1)
        .saturating_mul(dilation)
        .saturating_add(1);
    match padding {
        Padding::Same => {
            let out = input.div_ceil(stride);
            let needed = out
                .saturating_sub(1)
                .saturating_mul(stride)
                .saturating_add(effective)
                .saturating_sub(input);
            (out, needed / 2)
        }
        Padding::Valid => (
            input.saturating_add(stride).saturating_sub(effective) / stride,
            0,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_and_valid_sizes() {
        assert_eq!(window(Padding::Valid, 28, 3, 1, 1), (26, 0));
        assert_eq!(window(Padding::Valid, 26, 2, 2, 1), (13, 0));
        assert_eq!(window(Padding::Valid, 11, 2, 2, 1), (5, 0));
        assert_eq!(window(Padding::Same, 28, 3, 1, 1), (28, 1));
        // Asymmetric SAME: total padding 1 goes after, as in TFLite.
        assert_eq!(window(Padding::Same, 28, 2, 2, 1), (14, 0));
        assert_eq!(window(Padding::Same, 5, 3, 2, 1), (3, 1));
        assert_eq!(window(Padding::Valid, 2, 3, 1, 1), (0, 0));
        assert_eq!(window(Padding::Same, 0, 3, 1, 1), (0, 1));
        assert_eq!(window(Padding::Valid, usize::MAX, 0, 0, usize::MAX).1, 0);
    }
}
