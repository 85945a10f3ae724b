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

    /// An empty window (impossible with valid padding) gives the range's low end. Bytes are
    /// compared as unsigned, int8 with its sign bit flipped (which keeps the order), so each
    /// loop is one byte-wise maximum over a vector of channels.
    fn quantized(
        &self,
        input: &[u8],
        signed: bool,
        cells: &[usize],
        (low, high): (i32, i32),
        _sums: &mut [i32],
        out: &mut [u8],
    ) {
        let c = out.len();
        let flip = if signed { 0x80 } else { 0 };
        // The range holds values of the tensor's type.
        let [low, high] = [low, high].map(|v| (v as u8) ^ flip);
        out.fill(low);
        for &cell in cells {
            for (o, &v) in out.iter_mut().zip(&input[cell * c..][..c]) {
                *o = (*o).max(v ^ flip);
            }
        }
        for o in out.iter_mut() {
            *o = (*o).min(high) ^ flip;
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

    /// Small windows (the byte-wise path) against the definition: int8 and uint8, SAME and
    /// VALID, strides, and the clamp of a fused ReLU6.
    #[test]
    fn small_quantized_windows_take_the_clamped_maximum() {
        use super::super::common::testing::{quantized, seeded};
        use kiln_tflite::Activation;
        let mut next = seeded(0x9001);
        for case in 0..30 {
            let signed = case % 2 == 0;
            let dtype = if signed {
                TensorType::Int8
            } else {
                TensorType::UInt8
            };
            let (h, w, c) = (
                1 + next(9) as usize,
                1 + next(9) as usize,
                1 + next(70) as usize,
            );
            let (fh, fw) = (1 + next(3) as usize, 1 + next(3) as usize);
            let stride = 1 + next(2) as usize;
            let same = case % 3 != 0;
            if !same && (h < fh || w < fw) {
                continue;
            }
            let relu6 = case % 4 == 1;
            let zero_point = if signed { -10 } else { 118 };
            let options = Pool2DOptions {
                padding: if same { Padding::Same } else { Padding::Valid },
                stride_w: stride as i32,
                stride_h: stride as i32,
                filter_w: fw as i32,
                filter_h: fh as i32,
                activation: if relu6 {
                    Activation::Relu6
                } else {
                    Activation::None
                },
            };
            let input: Vec<u8> = (0..h * w * c).map(|_| next(256) as u8).collect();
            let out = run(
                prepare,
                BuiltinOptions::Pool2D(options),
                vec![Some(quantized(
                    tensor(dtype, &[1, h, w, c]),
                    0.05,
                    zero_point,
                ))],
                quantized(tensor(dtype, &[]), 0.05, zero_point),
                &[&input],
            )
            .expect("prepares");
            let [_, oh, ow, _] = out.shape[..] else {
                panic!("rank 4")
            };
            let value = |b: u8| {
                if signed {
                    i32::from(b as i8)
                } else {
                    i32::from(b)
                }
            };
            let (low, high) = if signed { (-128, 127) } else { (0, 255) };
            let (low, high) = if relu6 {
                (
                    low.max(zero_point as i32),
                    high.min(zero_point as i32 + 120),
                )
            } else {
                (low, high)
            };
            // SAME padding: the window starts half the excess before the image.
            let pad = |size: usize, out: usize, filter: usize| {
                if same {
                    ((out - 1) * stride + filter).saturating_sub(size) / 2
                } else {
                    0
                }
            };
            let (pad_y, pad_x) = (pad(h, oh, fh), pad(w, ow, fw));
            for oy in 0..oh {
                for ox in 0..ow {
                    for ch in 0..c {
                        let mut max = i32::MIN;
                        for y in (oy * stride)..(oy * stride + fh) {
                            for x in (ox * stride)..(ox * stride + fw) {
                                let (Some(iy), Some(ix)) =
                                    (y.checked_sub(pad_y), x.checked_sub(pad_x))
                                else {
                                    continue;
                                };
                                if iy < h && ix < w {
                                    max = max.max(value(input[(iy * w + ix) * c + ch]));
                                }
                            }
                        }
                        let expected = max.clamp(low, high);
                        let got = value(out.data[(oy * ow + ox) * c + ch]);
                        assert_eq!(got, expected, "case {case} ({oy}, {ox}, {ch})");
                    }
                }
            }
        }
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
