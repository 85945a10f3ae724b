//! MAX_POOL_2D: NHWC, SAME/VALID padding (padded cells never win), fused activation; float32
//! and int8/uint8 (the output keeps the input's quantization). Everything but the maximum is
//! `common::pooling`'s.

use super::common::pooling::{self, Reduce, Separable};
use super::{Kernel, Prep};
use crate::error::RuntimeError;

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    pooling::prepare(prep, Maximum)
}

#[derive(Debug)]
struct Maximum;

impl Reduce for Maximum {
    fn separable(&self) -> Separable<'_> {
        Separable::Maximum
    }

    fn float(&self, input: &[f32], cells: &[usize], out: &mut [f32]) {
        let c = out.len();
        out.fill(f32::NEG_INFINITY);
        for &cell in cells {
            for (o, &v) in out.iter_mut().zip(&input[cell * c..][..c]) {
                *o = o.max(v);
            }
        }
    }

    /// An empty window (impossible with valid padding) gives the range's low end.
    fn quantized(&self, input: &[u8], signed: bool, cells: &[usize], low: i32, out: &mut [i32]) {
        let c = out.len();
        out.fill(if cells.is_empty() { low } else { i32::MIN });
        for &cell in cells {
            let pixel = &input[cell * c..][..c];
            // Two loops rather than a branch per value: each vectorises.
            if signed {
                for (o, &v) in out.iter_mut().zip(pixel) {
                    *o = (*o).max(i32::from(v as i8));
                }
            } else {
                for (o, &v) in out.iter_mut().zip(pixel) {
                    *o = (*o).max(i32::from(v));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use kiln_tflite::{BuiltinOptions, Padding, Pool2DOptions, TensorType};

    use super::super::common::testing::{run, tensor};
    use super::*;

    /// Fuzzer finding: a filter of i32::MAX × i32::MAX made the window buffer ask for
    /// 2^62 cells (a multi-exabyte allocation that aborts). With SAME padding the window simply
    /// covers the whole input, as in TFLite.
    #[test]
    fn a_filter_larger_than_the_input_covers_the_input() {
        let options = Pool2DOptions {
            padding: Padding::Same,
            stride_w: 1,
            stride_h: 1,
            filter_w: i32::MAX,
            filter_h: i32::MAX,
            ..Pool2DOptions::default()
        };
        let input: Vec<u8> = [1.0f32, 4.0, -2.0, 3.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let out = run(
            prepare,
            BuiltinOptions::Pool2D(options),
            vec![Some(tensor(TensorType::Float32, &[1, 2, 2, 1]))],
            tensor(TensorType::Float32, &[]),
            &[&input],
        )
        .expect("prepares");
        assert_eq!(out.shape, [1, 2, 2, 1]);
        let values: Vec<f32> = out
            .data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(values, [4.0; 4]);
    }

    /// Windows of more than 64 cells take the sliding-window maximum (fuzzer finding: huge
    /// windows were quadratic). Against the definition, int8 and float, SAME and VALID,
    /// strides and edges.
    #[test]
    fn large_windows_take_the_maximum_of_the_definition() {
        super::super::common::pooling::check_large_windows(
            prepare,
            0x3a7,
            |case, q, f, cells_q, cells_f| {
                assert_eq!(
                    q,
                    cells_q.iter().copied().max().unwrap_or(-128),
                    "case {case}"
                );
                assert_eq!(
                    f,
                    cells_f.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                    "case {case}"
                );
            },
        );
    }
}
