//! DEPTH_TO_SPACE, NHWC: each pixel's channels, read as a block_size × block_size grid of
//! C / block_size² channels, spread over a block of output pixels:
//! out[b, h·bs + i, w·bs + j, c] = in[b, h, w, (i·bs + j)·C' + c].
//! FLOAT32, UINT8, INT8, INT32, INT64 — TFLite's list.

use kiln_tflite::{BuiltinOptions, TensorType};

use super::common::layout::{Gather, element_size, require_same_type};
use super::{Kernel, Prep};
use crate::error::RuntimeError;

const TYPES: &[TensorType] = &[
    TensorType::Float32,
    TensorType::UInt8,
    TensorType::Int8,
    TensorType::Int32,
    TensorType::Int64,
];

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    prep.expect_arity(1..=1, 1)?;
    let BuiltinOptions::DepthToSpace { block_size } = prep.op.options else {
        return Err(prep.bad("missing DepthToSpaceOptions"));
    };
    let (input, output) = (prep.input(0)?, prep.output(0)?);
    let elem = element_size(prep, output, TYPES)?;
    require_same_type(prep, output, input)?;
    prep.require_rank(input, 4)?;
    let bs = usize::try_from(block_size)
        .ok()
        .filter(|&b| b > 0)
        .ok_or_else(|| prep.bad(&format!("block_size {block_size} must be positive")))?;
    let [n, h, w, c] = input.shape[..] else {
        unreachable!("rank checked")
    };
    let block = bs * bs;
    if !c.is_multiple_of(block) {
        return Err(prep.bad(&format!("{c} channels do not divide into {bs}×{bs} blocks")));
    }
    let depth = c / block;
    let (Some(out_h), Some(out_w)) = (h.checked_mul(bs), w.checked_mul(bs)) else {
        return Err(prep.bad("output dimensions overflow"));
    };
    // Output order b, h, i, w, j, c' with the input's strides for each.
    let dims = [
        (n, (h * w * c) as isize),
        (h, (w * c) as isize),
        (bs, (bs * depth) as isize),
        (w, c as isize),
        (bs, depth as isize),
        (depth, 1),
    ];
    let gather = Gather::new(elem, 0, &dims, input.num_elements())
        .ok_or_else(|| prep.bad("block layout reads outside the input"))?;
    prep.set_output_shape(0, vec![n, out_h, out_w, depth]);
    Ok(Box::new(gather))
}

#[cfg(test)]
mod tests {
    use super::super::common::testing::{run, tensor};
    use super::*;

    #[test]
    fn block_size_must_divide_the_channels() {
        let d2s = |block_size, c| {
            run(
                prepare,
                BuiltinOptions::DepthToSpace { block_size },
                vec![Some(tensor(TensorType::Int8, &[1, 1, 1, c]))],
                tensor(TensorType::Int8, &[]),
                &[&vec![0u8; c]],
            )
        };
        assert_eq!(d2s(2, 8).unwrap().shape, [1, 2, 2, 2]);
        assert!(d2s(2, 6).is_err());
        assert!(d2s(0, 4).is_err());
        assert!(d2s(-2, 4).is_err());
    }

    #[test]
    fn matches_the_reference_index_formula() {
        let (n, h, w, bs, depth) = (2usize, 2usize, 3usize, 2usize, 3usize);
        let c = bs * bs * depth;
        let input: Vec<u8> = (0..n * h * w * c).map(|v| v as u8).collect();
        let dims = [
            (n, (h * w * c) as isize),
            (h, (w * c) as isize),
            (bs, (bs * depth) as isize),
            (w, c as isize),
            (bs, depth as isize),
            (depth, 1),
        ];
        let gather = Gather::new(1, 0, &dims, input.len()).expect("in bounds");
        let mut out = vec![0u8; input.len()];
        gather.copy(&input, &mut out);
        let (oh, ow) = (h * bs, w * bs);
        for b in 0..n {
            for y in 0..oh {
                for x in 0..ow {
                    for d in 0..depth {
                        let in_d = d + ((y % bs) * bs + x % bs) * depth;
                        let src = ((b * h + y / bs) * w + x / bs) * c + in_d;
                        assert_eq!(out[((b * oh + y) * ow + x) * depth + d], input[src]);
                    }
                }
            }
        }
    }
}
