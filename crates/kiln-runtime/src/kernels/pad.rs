//! PAD (and PADV2, which shares this kernel as in TFLite): surrounds the input with a constant.
//! Paddings are a constant INT32/INT64 tensor of shape [rank, 2] (before, after), all
//! non-negative; rank at most 5. The value is input 2 when present (PADV2's constant_values,
//! one element of the input's type), else zero — for UINT8, and for quantized INT8/INT16, the
//! output's zero point; a quantized constant must share the output's scale and zero point.

use kiln_tflite::TensorType;

use super::common::layout::{
    checked_elements, element_size, fold_known_output, known_i32s, per_tensor_params,
    require_same_type, strides,
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

/// TFLite's PadKernelMaxDimensionCount.
const MAX_RANK: usize = 5;

#[derive(Debug)]
enum PadValue {
    /// Known at prepare time (zero or the output's zero point), one element's bytes.
    Fixed(Vec<u8>),
    /// The constant_values input's single element.
    FromInput,
}

#[derive(Debug)]
struct Pad {
    elem: usize,
    value: PadValue,
    in_shape: Vec<usize>,
    out_strides: Vec<usize>,
    before: Vec<usize>,
    out_bytes: usize,
}

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    prep.expect_arity(2..=3, 1)?;
    let (input, paddings, output) = (prep.input(0)?, prep.input(1)?, prep.output(0)?);
    require_same_type(prep, input, output)?;
    let elem = element_size(prep, input, TYPES)?;
    let rank = input.shape.len();
    if rank > MAX_RANK {
        return Err(prep.unsupported(&format!("input rank {rank}; TFLite pads up to {MAX_RANK}")));
    }
    prep.require_type(paddings, &[TensorType::Int32, TensorType::Int64])?;
    if paddings.shape != [rank, 2] {
        return Err(prep.bad(&format!(
            "paddings '{}' have shape {:?}; expected [{rank}, 2]",
            paddings.name, paddings.shape
        )));
    }
    let values = known_i32s(prep, 1, "paddings")?;
    let mut before = Vec::with_capacity(rank);
    let mut shape = Vec::with_capacity(rank);
    for (d, pair) in values.chunks_exact(2).enumerate() {
        let (Ok(b), Ok(a)) = (usize::try_from(pair[0]), usize::try_from(pair[1])) else {
            return Err(prep.bad(&format!(
                "paddings {pair:?} of dimension {d} must be non-negative"
            )));
        };
        let extent = input.shape[d]
            .checked_add(b)
            .and_then(|e| e.checked_add(a))
            .filter(|&e| e <= i32::MAX as usize)
            .ok_or_else(|| prep.bad(&format!("padded dimension {d} overflows")))?;
        before.push(b);
        shape.push(extent);
    }
    let out_elements = checked_elements(prep, &shape, i32::MAX as usize)?;

    let constant = prep.optional_input(2);
    if let Some(c) = constant {
        require_same_type(prep, input, c)?;
        if c.num_elements() != 1 {
            return Err(prep.bad(&format!(
                "constant_values '{}' has shape {:?}; expected one element",
                c.name, c.shape
            )));
        }
    }
    let quantized = match input.dtype {
        TensorType::UInt8 => true,
        TensorType::Int8 | TensorType::Int16 => input.quantization.is_some(),
        _ => false,
    };
    let value = match constant {
        Some(c) if quantized && per_tensor_params(c) != per_tensor_params(output) => {
            return Err(prep.bad(&format!(
                "constant_values '{}' must share output '{}''s scale and zero point",
                c.name, output.name
            )));
        }
        Some(_) => PadValue::FromInput,
        None if quantized => PadValue::Fixed(zero_point_bytes(prep, input.dtype, output)?),
        None => PadValue::Fixed(vec![0; elem]),
    };
    let kernel = Pad {
        elem,
        value,
        in_shape: input.shape.clone(),
        out_strides: strides(&shape),
        before,
        out_bytes: out_elements * elem,
    };
    fold_known_output(prep, &kernel, &shape);
    prep.set_output_shape(0, shape);
    Ok(Box::new(kernel))
}

/// The output's zero point as one element of `dtype`, which must represent it.
fn zero_point_bytes(
    prep: &Prep<'_>,
    dtype: TensorType,
    output: &crate::tensor::TensorInfo,
) -> Result<Vec<u8>, RuntimeError> {
    let zero_point = per_tensor_params(output).1;
    let bytes = match dtype {
        TensorType::UInt8 => u8::try_from(zero_point)
            .ok()
            .map(|z| z.to_le_bytes().to_vec()),
        TensorType::Int8 => i8::try_from(zero_point)
            .ok()
            .map(|z| z.to_le_bytes().to_vec()),
        TensorType::Int16 => i16::try_from(zero_point)
            .ok()
            .map(|z| z.to_le_bytes().to_vec()),
        _ => None,
    };
    bytes.ok_or_else(|| {
        prep.bad(&format!(
            "output '{}' zero point {zero_point} is not representable as {dtype}",
            output.name
        ))
    })
}

impl OpKernel for Pad {
    fn eval(&self, inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]) {
        let Some(input) = &inputs[0] else {
            unreachable!("prepared")
        };
        let value: &[u8] = match &self.value {
            PadValue::Fixed(bytes) => bytes,
            PadValue::FromInput => match inputs.get(2) {
                Some(Some(c)) => &c.data[..self.elem],
                _ => unreachable!("prepared"),
            },
        };
        let output = &mut outputs[0].data[..self.out_bytes];
        let first = value.first().copied().unwrap_or(0);
        if value.iter().all(|&b| b == first) {
            // Zero, an int8 zero point, or any value whose bytes are all alike: one memset.
            output.fill(first);
        } else if output.len() >= value.len() {
            // One element, then the filled part copied onto the rest, doubling each time.
            output[..value.len()].copy_from_slice(value);
            let mut filled = value.len();
            while filled < output.len() {
                let n = filled.min(output.len() - filled);
                output.copy_within(..n, filled);
                filled += n;
            }
        }
        let rank = self.in_shape.len();
        let Some((&last, outer_shape)) = self.in_shape.split_last() else {
            output[..self.elem].copy_from_slice(&input.data[..self.elem]);
            return;
        };
        if self.in_shape.contains(&0) {
            return;
        }
        let row = last * self.elem;
        let mut index = vec![0usize; rank - 1];
        let mut src = 0;
        loop {
            let mut dst = self.before[rank - 1];
            for ((&i, &b), &s) in index.iter().zip(&self.before).zip(&self.out_strides) {
                dst += (i + b) * s;
            }
            let dst = dst * self.elem;
            output[dst..dst + row].copy_from_slice(&input.data[src..src + row]);
            src += row;
            // Next row, or done.
            let mut d = rank - 1;
            loop {
                if d == 0 {
                    return;
                }
                d -= 1;
                index[d] += 1;
                if index[d] < outer_shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use kiln_tflite::BuiltinOptions;

    use super::super::common::testing::{constant, i32s, quantized, run, tensor};

    fn paddings(values: &[i32]) -> super::super::common::testing::Tensor {
        let mut t = i32s(values);
        t.info.shape = vec![values.len() / 2, 2];
        t
    }

    #[test]
    fn pad_uses_the_output_zero_point_for_quantized_tensors() {
        let input = [1u8, 2];
        let r = run(
            prepare,
            BuiltinOptions::Pad,
            vec![
                Some(quantized(tensor(TensorType::Int8, &[1, 2]), 0.5, -3)),
                Some(paddings(&[0, 1, 1, 0])),
            ],
            quantized(tensor(TensorType::Int8, &[]), 0.5, -3),
            &[&input],
        )
        .unwrap();
        assert_eq!(r.shape, [2, 3]);
        let m3 = (-3i8) as u8;
        assert_eq!(r.data, [m3, 1, 2, m3, m3, m3]);
        // Unquantized INT8 pads with 0; FLOAT32 with 0.0.
        let r = run(
            prepare,
            BuiltinOptions::Pad,
            vec![
                Some(tensor(TensorType::Int8, &[2])),
                Some(paddings(&[2, 0])),
            ],
            tensor(TensorType::Int8, &[]),
            &[&input],
        )
        .unwrap();
        assert_eq!(r.data, [0, 0, 1, 2]);
    }

    #[test]
    fn padv2_uses_its_constant_and_checks_it() {
        let input: Vec<u8> = [1.5f32].iter().flat_map(|v| v.to_le_bytes()).collect();
        let value = (-2.0f32).to_le_bytes().to_vec();
        let r = run(
            super::super::padv2::prepare,
            BuiltinOptions::PadV2,
            vec![
                Some(tensor(TensorType::Float32, &[1, 1])),
                Some(paddings(&[1, 0, 0, 1])),
                Some(constant(TensorType::Float32, &[], value)),
            ],
            tensor(TensorType::Float32, &[]),
            &[&input],
        )
        .unwrap();
        let floats: Vec<f32> = r
            .data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!((r.shape, floats), (vec![2, 2], vec![-2.0, -2.0, 1.5, -2.0]));
        // A quantized constant on another scale is refused, as in TFLite.
        let r = run(
            super::super::padv2::prepare,
            BuiltinOptions::PadV2,
            vec![
                Some(tensor(TensorType::UInt8, &[1])),
                Some(paddings(&[1, 0])),
                Some(quantized(constant(TensorType::UInt8, &[], vec![9]), 0.1, 0)),
            ],
            quantized(tensor(TensorType::UInt8, &[]), 0.2, 0),
            &[&[1]],
        );
        assert!(r.is_err());
    }

    #[test]
    fn bad_paddings_are_errors() {
        let pad = |input: &[usize], values: &[i32]| {
            run(
                prepare,
                BuiltinOptions::Pad,
                vec![
                    Some(tensor(TensorType::Int32, input)),
                    Some(paddings(values)),
                ],
                tensor(TensorType::Int32, &[]),
                &[&vec![0u8; input.iter().product::<usize>() * 4]],
            )
        };
        assert!(pad(&[2], &[0, -1]).is_err()); // negative
        assert!(pad(&[2, 2], &[0, 1]).is_err()); // not [rank, 2]
        assert!(pad(&[1; 6], &[0; 12]).is_err()); // rank over 5
        assert!(pad(&[2], &[i32::MAX, 1]).is_err()); // overflow
        assert_eq!(pad(&[], &[]).unwrap().shape, Vec::<usize>::new()); // a scalar is copied
    }

    #[test]
    fn pads_rows_with_the_value() {
        // [2, 2] int8 input padded by [[1, 0], [0, 2]] with value 9.
        let pad = Pad {
            elem: 1,
            value: PadValue::Fixed(vec![9]),
            in_shape: vec![2, 2],
            out_strides: vec![4, 1],
            before: vec![1, 0],
            out_bytes: 12,
        };
        let input = [1u8, 2, 3, 4];
        let mut out = [0u8; 12];
        pad.eval(&[Some(In { data: &input })], &mut [Out { data: &mut out }]);
        assert_eq!(out, [9, 9, 9, 9, 1, 2, 9, 9, 3, 4, 9, 9]);
    }

    #[test]
    fn pads_from_the_constant_input() {
        let pad = Pad {
            elem: 2,
            value: PadValue::FromInput,
            in_shape: vec![1],
            out_strides: vec![1],
            before: vec![1],
            out_bytes: 6,
        };
        let input = [1u8, 0];
        let constant = [7u8, 0];
        let mut out = [0u8; 6];
        pad.eval(
            &[
                Some(In { data: &input }),
                None,
                Some(In { data: &constant }),
            ],
            &mut [Out { data: &mut out }],
        );
        assert_eq!(out, [7, 0, 1, 0, 7, 0]);
    }
}
