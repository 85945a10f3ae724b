//! MUL: element-wise a × b with broadcasting and a fused activation; float32, int32, and
//! int8/uint8 (one requantization of the product by input1 × input2 / output scale).

use kiln_tflite::quant::quantize_multiplier;

use super::common::binary::{
    Broadcast, ElementwiseType, Run, eval_float, eval_int32, prepare_elementwise,
};
use super::common::fused_activation::FloatClamp;
use super::common::quant::{activation_range, per_tensor};
use super::common::requantize::{ChannelRescale, OutputRange};
use super::common::scratch::Scratch;
use super::{In, Kernel, OpKernel, Out, Prep};
use crate::error::RuntimeError;

#[derive(Debug)]
enum Arithmetic {
    Float(FloatClamp),
    Int32((i32, i32)),
    Quantized {
        input_offsets: (i32, i32),
        output_offset: i32,
        range: (i32, i32),
        signed: bool,
        /// The one multiplier for a block of products, vectorised.
        rescale: ChannelRescale,
        /// A row of zero offsets for `rescale`, made once.
        zeros: Vec<i32>,
    },
}

#[derive(Debug)]
struct Mul {
    broadcast: Broadcast,
    arithmetic: Arithmetic,
}

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    let elementwise = prepare_elementwise(prep)?;
    let arithmetic = match elementwise.dtype {
        ElementwiseType::Float(clamp) => Arithmetic::Float(clamp),
        ElementwiseType::Int32(range) => Arithmetic::Int32(range),
        ElementwiseType::Quantized => {
            let (a, b, output) = (prep.input(0)?, prep.input(1)?, prep.output(0)?);
            let (sa, za) = per_tensor(prep, a)?;
            let (sb, zb) = per_tensor(prep, b)?;
            let (so, zo) = per_tensor(prep, output)?;
            let multiplier = quantize_multiplier(f64::from(sa) * f64::from(sb) / f64::from(so));
            Arithmetic::Quantized {
                input_offsets: (-za, -zb),
                output_offset: zo,
                range: activation_range(prep, elementwise.activation, output)?,
                signed: output.dtype == kiln_tflite::TensorType::Int8,
                rescale: ChannelRescale::new(&[multiplier]),
                zeros: vec![0; 16],
            }
        }
    };
    Ok(Box::new(Mul {
        broadcast: elementwise.broadcast,
        arithmetic,
    }))
}

impl OpKernel for Mul {
    fn eval(&self, inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]) {
        match &self.arithmetic {
            Arithmetic::Float(clamp) => {
                eval_float(&self.broadcast, *clamp, inputs, outputs, |x, y| x * y)
            }
            Arithmetic::Int32(range) => {
                eval_int32(&self.broadcast, *range, inputs, outputs, |x, y| {
                    x.wrapping_mul(y)
                })
            }
            Arithmetic::Quantized {
                input_offsets,
                output_offset,
                range,
                signed,
                rescale,
                zeros,
            } => {
                let (Some(a), Some(b)) = (&inputs[0], &inputs[1]) else {
                    unreachable!("prepared")
                };
                let output = &mut *outputs[0].data;
                // The products first (exact: offset 8-bit values multiply within i32), then
                // one vectorised requantization per block, the bits of TFLite's per-element
                // MultiplyByQuantizedMultiplier.
                i32::with(output.len(), |products| {
                    if *signed {
                        offset_products::<true>(
                            &self.broadcast,
                            (a.data, b.data),
                            *input_offsets,
                            products,
                        );
                    } else {
                        offset_products::<false>(
                            &self.broadcast,
                            (a.data, b.data),
                            *input_offsets,
                            products,
                        );
                    }
                    let range = OutputRange {
                        offset: *output_offset,
                        min: range.0,
                        max: range.1,
                    };
                    rescale.requantize(products, zeros, range, output);
                });
            }
        }
    }
}

/// `products[o] = (a + offset_a) · (b + offset_b)` for every output element, the 8-bit values
/// read as int8 when `SIGNED` (exact: offset 8-bit values multiply within i32). Runs where
/// both operands are contiguous, or one is repeated, are zipped slices so that they
/// vectorise, compiled for AVX-512 and AVX2 besides the baseline (which lacks a 32-bit
/// multiply) and chosen at run time.
fn offset_products<const SIGNED: bool>(
    broadcast: &Broadcast,
    operands: (&[u8], &[u8]),
    offsets: (i32, i32),
    products: &mut [i32],
) {
    #[cfg(target_arch = "x86_64")]
    {
        /// # Safety
        /// The CPU must have AVX-512F and BW.
        #[target_feature(enable = "avx512f,avx512bw")]
        unsafe fn avx512<const SIGNED: bool>(
            broadcast: &Broadcast,
            operands: (&[u8], &[u8]),
            offsets: (i32, i32),
            products: &mut [i32],
        ) {
            offset_products_loops::<SIGNED>(broadcast, operands, offsets, products);
        }
        /// # Safety
        /// The CPU must have AVX2.
        #[target_feature(enable = "avx2")]
        unsafe fn avx2<const SIGNED: bool>(
            broadcast: &Broadcast,
            operands: (&[u8], &[u8]),
            offsets: (i32, i32),
            products: &mut [i32],
        ) {
            offset_products_loops::<SIGNED>(broadcast, operands, offsets, products);
        }
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
        {
            // SAFETY: the CPU has the features.
            return unsafe { avx512::<SIGNED>(broadcast, operands, offsets, products) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has the feature.
            return unsafe { avx2::<SIGNED>(broadcast, operands, offsets, products) };
        }
    }
    offset_products_loops::<SIGNED>(broadcast, operands, offsets, products);
}

#[inline(always)]
fn offset_products_loops<const SIGNED: bool>(
    broadcast: &Broadcast,
    (a, b): (&[u8], &[u8]),
    (offset_a, offset_b): (i32, i32),
    products: &mut [i32],
) {
    let value = |v: u8| {
        if SIGNED {
            i32::from(v as i8)
        } else {
            i32::from(v)
        }
    };
    for Run {
        first,
        len,
        a: (ia, step_a),
        b: (ib, step_b),
    } in broadcast.runs()
    {
        let out = &mut products[first..first + len];
        match (step_a, step_b) {
            (1, 1) => {
                for ((p, &x), &y) in out.iter_mut().zip(&a[ia..ia + len]).zip(&b[ib..ib + len]) {
                    *p = (value(x) + offset_a) * (value(y) + offset_b);
                }
            }
            (1, 0) => {
                let y = value(b[ib]) + offset_b;
                for (p, &x) in out.iter_mut().zip(&a[ia..ia + len]) {
                    *p = (value(x) + offset_a) * y;
                }
            }
            (0, 1) => {
                let x = value(a[ia]) + offset_a;
                for (p, &y) in out.iter_mut().zip(&b[ib..ib + len]) {
                    *p = x * (value(y) + offset_b);
                }
            }
            _ => {
                for (k, p) in out.iter_mut().enumerate() {
                    *p = (value(a[ia + k * step_a]) + offset_a)
                        * (value(b[ib + k * step_b]) + offset_b);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use kiln_tflite::quant::multiply_by_quantized_multiplier;
    use kiln_tflite::{Activation, BuiltinOptions, TensorType};

    use super::super::common::testing::{quantized, run, seeded, tensor};
    use super::*;

    /// Quantized MUL under every kind of broadcast (none, a per-channel vector, a per-pixel
    /// column, a scalar, both sides broadcasting), int8 and uint8: every byte equals TFLite's
    /// definition, the offset product rescaled by sa·sb/so, offset and clamped.
    #[test]
    fn quantized_products_equal_the_definition_under_broadcasting() {
        let mut next = seeded(0x6d756c);
        let shapes: [(&[usize], &[usize]); 5] = [
            (&[1, 5, 7, 24], &[1, 5, 7, 24]),
            (&[1, 5, 7, 24], &[1, 1, 1, 24]),
            (&[1, 5, 7, 24], &[1, 5, 7, 1]),
            (&[1], &[3, 40]),
            (&[2, 1, 3], &[1, 4, 1]),
        ];
        for (case, (shape_a, shape_b)) in shapes.into_iter().enumerate() {
            for signed in [true, false] {
                let dtype = if signed {
                    TensorType::Int8
                } else {
                    TensorType::UInt8
                };
                let (za, zb, zo) = if signed { (-7, 12, 3) } else { (130, 90, 128) };
                let (sa, sb, so) = (0.02f32, 0.05f32, 0.011f32);
                let a: Vec<u8> = (0..shape_a.iter().product())
                    .map(|_| next(256) as u8)
                    .collect();
                let b: Vec<u8> = (0..shape_b.iter().product())
                    .map(|_| next(256) as u8)
                    .collect();
                let got = run(
                    prepare,
                    BuiltinOptions::Mul {
                        activation: Activation::None,
                    },
                    vec![
                        Some(quantized(tensor(dtype, shape_a), sa, za)),
                        Some(quantized(tensor(dtype, shape_b), sb, zb)),
                    ],
                    quantized(tensor(dtype, &[1]), so, zo),
                    &[&a, &b],
                )
                .unwrap();
                let rank = shape_a.len().max(shape_b.len());
                let padded = |s: &[usize]| {
                    let mut p = vec![1; rank - s.len()];
                    p.extend_from_slice(s);
                    p
                };
                let (pa, pb) = (padded(shape_a), padded(shape_b));
                let out_shape: Vec<usize> = pa.iter().zip(&pb).map(|(&x, &y)| x.max(y)).collect();
                assert_eq!(got.shape, out_shape);
                let index = |shape: &[usize], at: &[usize]| {
                    shape
                        .iter()
                        .zip(at)
                        .fold(0, |i, (&d, &x)| i * d + if d == 1 { 0 } else { x })
                };
                let value = |v: u8| {
                    if signed {
                        i32::from(v as i8)
                    } else {
                        i32::from(v)
                    }
                };
                let multiplier = quantize_multiplier(f64::from(sa) * f64::from(sb) / f64::from(so));
                let (lo, hi) = if signed { (-128, 127) } else { (0, 255) };
                for (o, &byte) in got.data.iter().enumerate() {
                    let mut at = vec![0; rank];
                    let mut rest = o;
                    for d in (0..rank).rev() {
                        at[d] = rest % out_shape[d];
                        rest /= out_shape[d];
                    }
                    let product = (value(a[index(&pa, &at)]) - za as i32)
                        * (value(b[index(&pb, &at)]) - zb as i32);
                    let want = (multiply_by_quantized_multiplier(product, multiplier) + zo as i32)
                        .clamp(lo, hi) as u8;
                    assert_eq!(byte, want, "case {case}, signed {signed}, element {o}");
                }
            }
        }
    }
}
