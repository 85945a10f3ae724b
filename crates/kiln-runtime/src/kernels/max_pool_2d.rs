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
        use super::super::common::testing::{quantized, seeded};
        let mut next = seeded(0x3a7);
        for case in 0..12 {
            let (h, w, c) = (
                1 + next(6) as usize,
                40 + next(120) as usize,
                1 + next(5) as usize,
            );
            let (fh, fw) = (1 + next(h as u64) as usize, 70 + next(60) as usize);
            let stride = 1 + next(3) as usize;
            let padding = if case % 2 == 0 {
                Padding::Same
            } else {
                Padding::Valid
            };
            if padding == Padding::Valid && fw > w {
                continue;
            }
            let options = Pool2DOptions {
                padding,
                stride_w: stride as i32,
                stride_h: stride as i32,
                filter_w: fw as i32,
                filter_h: fh as i32,
                ..Pool2DOptions::default()
            };
            let (oh, pad_h) = kiln_tflite::window(padding, h, fh, stride, 1);
            let (ow, pad_w) = kiln_tflite::window(padding, w, fw, stride, 1);
            let bytes: Vec<u8> = (0..h * w * c).map(|_| next(256) as u8).collect();
            let floats: Vec<f32> = bytes.iter().map(|&b| f32::from(b) / 7.0 - 9.0).collect();
            let int8 = run(
                prepare,
                BuiltinOptions::Pool2D(options.clone()),
                vec![Some(quantized(
                    tensor(TensorType::Int8, &[1, h, w, c]),
                    0.1,
                    3,
                ))],
                quantized(tensor(TensorType::Int8, &[]), 0.1, 3),
                &[&bytes],
            )
            .expect("prepares");
            let float = run(
                prepare,
                BuiltinOptions::Pool2D(options),
                vec![Some(tensor(TensorType::Float32, &[1, h, w, c]))],
                tensor(TensorType::Float32, &[]),
                &[&floats
                    .iter()
                    .flat_map(|f| f.to_le_bytes())
                    .collect::<Vec<u8>>()],
            )
            .expect("prepares");
            assert_eq!(int8.shape, [1, oh, ow, c], "case {case}");
            for oy in 0..oh {
                for ox in 0..ow {
                    let y0 = (oy * stride) as isize - pad_h as isize;
                    let x0 = (ox * stride) as isize - pad_w as isize;
                    let ys = y0.max(0) as usize..((y0 + fh as isize).max(0) as usize).min(h);
                    let xs = x0.max(0) as usize..((x0 + fw as isize).max(0) as usize).min(w);
                    for ch in 0..c {
                        let cells: Vec<usize> = ys
                            .clone()
                            .flat_map(|y| xs.clone().map(move |x| (y * w + x) * c + ch))
                            .collect();
                        let max_q = cells.iter().map(|&i| bytes[i] as i8).max().unwrap_or(-128);
                        let max_f = cells
                            .iter()
                            .map(|&i| floats[i])
                            .fold(f32::NEG_INFINITY, f32::max);
                        let at = (oy * ow + ox) * c + ch;
                        assert_eq!(int8.data[at] as i8, max_q, "case {case}");
                        let b = &float.data[at * 4..at * 4 + 4];
                        assert_eq!(
                            f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                            max_f,
                            "case {case}"
                        );
                    }
                }
            }
        }
    }
}
