//! CONCATENATION along `axis` (negative counts from the end). Scalars concatenate into a
//! vector. Quantized inputs follow TFLite: UINT8 inputs whose scale or zero point differ from
//! the output's are requantized (reference `ConcatenationWithScaling`, float arithmetic);
//! INT8 requires identical parameters (TFLite refuses otherwise); INT16 requires zero points
//! of 0 and copies values as they are.

use kiln_tflite::{Activation, BuiltinOptions, TensorType};

use super::common::layout::{
    element_size, fold_known_output, interleave, normalize_axis, per_tensor_params, present,
    require_same_type,
};
use super::{In, Kernel, OpKernel, Out, Prep};
use crate::error::RuntimeError;

const TYPES: &[TensorType] = &[
    TensorType::Float32,
    TensorType::Float16,
    TensorType::Int8,
    TensorType::UInt8,
    TensorType::Int16,
    TensorType::Int32,
    TensorType::Int64,
    TensorType::Bool,
];

#[derive(Debug)]
struct Concatenation {
    outer: usize,
    /// Bytes of each input per outer step.
    blocks: Vec<usize>,
    /// For UINT8 inputs quantized differently from the output: how to requantize them.
    rescale: Vec<Option<Rescale>>,
}

/// TFLite's ConcatenationWithScaling for one input: q_out = round(q × scale + bias) + zp_out.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Rescale {
    scale: f32,
    bias: f32,
    output_zero_point: i32,
}

impl Rescale {
    fn new(input: (f32, i64), output: (f32, i64)) -> Self {
        let scale = input.0 * (1.0f32 / output.0);
        Self {
            scale,
            bias: -(input.1 as i32) as f32 * scale,
            output_zero_point: output.1 as i32,
        }
    }

    fn apply(&self, q: u8) -> u8 {
        let value = (f32::from(q) * self.scale + self.bias).round() as i32 + self.output_zero_point;
        value.clamp(0, 255) as u8
    }
}

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    let BuiltinOptions::Concatenation { axis, activation } = prep.op.options else {
        return Err(prep.bad("missing ConcatenationOptions"));
    };
    if activation != Activation::None {
        return Err(prep.unsupported(&format!(
            "fused activation {activation:?} (TFLite supports none)"
        )));
    }
    let count = prep.op.inputs.len();
    prep.expect_arity(1..=count.max(1), 1)?;
    let (first, output) = (prep.input(0)?, prep.output(0)?);
    let elem = element_size(prep, first, TYPES)?;
    require_same_type(prep, first, output)?;
    let rank = first.shape.len();
    let mut inputs = Vec::with_capacity(count);
    for i in 0..count {
        let input = prep.input(i)?;
        require_same_type(prep, first, input)?;
        if input.shape.len() != rank {
            return Err(prep.bad(&format!(
                "input '{}' has shape {:?} but '{}' has {:?}",
                input.name, input.shape, first.name, first.shape
            )));
        }
        inputs.push(input);
    }

    // Scalars stack into a vector (TFLite does this for constant scalars).
    let (shape, outer, extents) = if rank == 0 {
        if axis != 0 {
            return Err(prep.bad(&format!("axis {axis} for scalar inputs")));
        }
        (vec![count], 1, vec![1; count])
    } else {
        let axis = normalize_axis(prep, axis, rank)?;
        let mut total = 0usize;
        for input in &inputs {
            for d in 0..rank {
                if d != axis && input.shape[d] != first.shape[d] {
                    return Err(prep.bad(&format!(
                        "input '{}' has shape {:?}, incompatible with '{}' {:?} along axis {axis}",
                        input.name, input.shape, first.name, first.shape
                    )));
                }
            }
            total = total
                .checked_add(input.shape[axis])
                .filter(|&t| t <= i32::MAX as usize)
                .ok_or_else(|| prep.bad("concatenated dimension overflows"))?;
        }
        let mut shape = first.shape.clone();
        shape[axis] = total;
        let outer: usize = first.shape[..axis].iter().product();
        let inner: usize = first.shape[axis + 1..].iter().product();
        let extents = inputs.iter().map(|t| t.shape[axis] * inner).collect();
        (shape, outer, extents)
    };

    let out_params = per_tensor_params(output);
    let mut rescale = vec![None; count];
    match first.dtype {
        TensorType::Int8 => {
            if let Some(input) = inputs.iter().find(|t| per_tensor_params(t) != out_params) {
                return Err(prep.unsupported(&format!(
                    "INT8 input '{}' is quantized differently from output '{}' (TFLite requires \
                     identical scales and zero points)",
                    input.name, output.name
                )));
            }
        }
        TensorType::Int16 => {
            if let Some(t) = inputs
                .iter()
                .copied()
                .chain([output])
                .find(|t| per_tensor_params(t).1 != 0)
            {
                return Err(prep.unsupported(&format!(
                    "INT16 tensor '{}' has a non-zero zero point (TFLite requires 0)",
                    t.name
                )));
            }
        }
        TensorType::UInt8 => {
            for (slot, input) in rescale.iter_mut().zip(&inputs) {
                let params = per_tensor_params(input);
                if params == out_params {
                    continue;
                }
                if out_params.0 <= 0.0 || !(0..=255).contains(&out_params.1) {
                    return Err(prep.bad(&format!(
                        "input '{}' needs requantizing but output '{}' has no usable quantization",
                        input.name, output.name
                    )));
                }
                *slot = Some(Rescale::new(params, out_params));
            }
        }
        _ => {}
    }

    let kernel = Concatenation {
        outer,
        blocks: extents.iter().map(|e| e * elem).collect(),
        rescale,
    };
    fold_known_output(prep, &kernel, &shape);
    prep.set_output_shape(0, shape);
    Ok(Box::new(kernel))
}

impl OpKernel for Concatenation {
    fn eval(&self, inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]) {
        let inputs = present(inputs);
        if self.rescale.iter().all(Option::is_none) {
            interleave(self.outer, &self.blocks, &inputs, outputs[0].data);
            return;
        }
        let mut at = 0;
        let output = &mut *outputs[0].data;
        for k in 0..self.outer {
            for ((input, &block), rescale) in inputs.iter().zip(&self.blocks).zip(&self.rescale) {
                let src = &input[k * block..(k + 1) * block];
                let dst = &mut output[at..at + block];
                match rescale {
                    None => dst.copy_from_slice(src),
                    Some(r) => {
                        for (d, &s) in dst.iter_mut().zip(src) {
                            *d = r.apply(s);
                        }
                    }
                }
                at += block;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::common::testing::{i32s, quantized, run, tensor};
    use super::*;

    fn options(axis: i32) -> BuiltinOptions {
        BuiltinOptions::Concatenation {
            axis,
            activation: Activation::None,
        }
    }

    #[test]
    fn concatenates_along_negative_axes() {
        // [2, 1] ++ [2, 2] along -1.
        let r = run(
            prepare,
            options(-1),
            vec![
                Some(tensor(TensorType::Int16, &[2, 1])),
                Some(tensor(TensorType::Int16, &[2, 2])),
            ],
            tensor(TensorType::Int16, &[]),
            &[&[1, 0, 2, 0], &[3, 0, 4, 0, 5, 0, 6, 0]],
        )
        .unwrap();
        assert_eq!(r.shape, [2, 3]);
        assert_eq!(r.data, [1, 0, 3, 0, 4, 0, 2, 0, 5, 0, 6, 0]);
        // Mismatched other dimensions and out-of-range axes are errors.
        let bad = |axis, b: &[usize]| {
            run(
                prepare,
                options(axis),
                vec![
                    Some(tensor(TensorType::Int8, &[2, 1])),
                    Some(tensor(TensorType::Int8, b)),
                ],
                tensor(TensorType::Int8, &[]),
                &[&[0; 2], &[0; 6]],
            )
            .is_err()
        };
        assert!(bad(1, &[3, 2]));
        assert!(bad(2, &[2, 3]));
        assert!(bad(-3, &[2, 3]));
    }

    #[test]
    fn uint8_inputs_on_other_scales_are_requantized() {
        let r = run(
            prepare,
            options(0),
            vec![
                Some(quantized(tensor(TensorType::UInt8, &[2]), 0.5, 10)),
                Some(quantized(tensor(TensorType::UInt8, &[1]), 1.0, 3)),
            ],
            quantized(tensor(TensorType::UInt8, &[]), 1.0, 3),
            &[&[11, 13], &[200]],
        )
        .unwrap();
        assert_eq!(r.data, [4, 5, 200]);
    }

    #[test]
    fn int8_inputs_on_other_scales_are_refused() {
        let r = run(
            prepare,
            options(0),
            vec![
                Some(quantized(tensor(TensorType::Int8, &[2]), 0.5, 10)),
                Some(quantized(tensor(TensorType::Int8, &[1]), 1.0, 3)),
            ],
            quantized(tensor(TensorType::Int8, &[]), 1.0, 3),
            &[&[11, 13], &[200]],
        );
        assert!(matches!(r, Err(RuntimeError::Unsupported { .. })));
    }

    #[test]
    fn shape_vectors_fold() {
        // Building a shape: [-1] ++ [4, 4] known at prepare time.
        let r = run(
            prepare,
            options(0),
            vec![Some(i32s(&[-1])), Some(i32s(&[4, 4]))],
            tensor(TensorType::Int32, &[]),
            &[],
        )
        .unwrap();
        let expected: Vec<u8> = [-1i32, 4, 4].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(r.folded, Some(expected));
    }

    #[test]
    fn requantization_rounds_half_away_from_zero_and_saturates() {
        // Input scale 0.5 zp 10 into output scale 1.0 zp 3: q_out = round((q - 10) / 2) + 3.
        let r = Rescale::new((0.5, 10), (1.0, 3));
        assert_eq!(r.apply(10), 3);
        assert_eq!(r.apply(11), 4); // 0.5 rounds away from zero
        assert_eq!(r.apply(9), 2); // -0.5 rounds away from zero
        assert_eq!(r.apply(13), 5); // 1.5 → 2
        assert_eq!(r.apply(0), 0); // -5 + 3 = -2 → clamps to 0
        let up = Rescale::new((4.0, 0), (1.0, 0));
        assert_eq!(up.apply(100), 255);
    }

    #[test]
    fn requantization_uses_float_arithmetic_like_tflite() {
        // scale = 0.3 * (1 / 0.7) in f32, bias = -zp * scale in f32.
        let r = Rescale::new((0.3, 7), (0.7, 128));
        let scale = 0.3f32 * (1.0f32 / 0.7f32);
        let bias = -7.0f32 * scale;
        for q in 0..=255u8 {
            let expected = ((f32::from(q) * scale + bias).round() as i32 + 128).clamp(0, 255);
            assert_eq!(i32::from(r.apply(q)), expected);
        }
    }
}
