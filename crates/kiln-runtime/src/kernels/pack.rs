//! PACK: stacks `values_count` tensors of one shape along a new dimension `axis` (negative
//! counts from the end of the output's dimensions). Inputs and output must share quantization
//! (TFLite does not requantize). FLOAT32, INT8, UINT8, INT16, INT32, INT64 — TFLite's list.

use kiln_tflite::{BuiltinOptions, TensorType};

use super::common::layout::{
    element_size, fold_known_output, interleave, normalize_axis, per_tensor_params, present,
    require_same_type,
};
use super::{In, Kernel, OpKernel, Out, Prep};
use crate::error::RuntimeError;

const TYPES: &[TensorType] = &[
    TensorType::Float32,
    TensorType::Int8,
    TensorType::UInt8,
    TensorType::Int16,
    TensorType::Int32,
    TensorType::Int64,
];

#[derive(Debug)]
struct Pack {
    outer: usize,
    /// Bytes of each input per outer step.
    blocks: Vec<usize>,
}

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    let BuiltinOptions::Pack { values_count, axis } = prep.op.options else {
        return Err(prep.bad("missing PackOptions"));
    };
    let count = usize::try_from(values_count)
        .ok()
        .filter(|&c| c > 0)
        .ok_or_else(|| prep.bad(&format!("values_count {values_count} must be positive")))?;
    prep.expect_arity(count..=count, 1)?;
    let (first, output) = (prep.input(0)?, prep.output(0)?);
    let elem = element_size(prep, first, TYPES)?;
    require_same_type(prep, first, output)?;
    let out_params = per_tensor_params(output);
    for i in 0..count {
        let input = prep.input(i)?;
        require_same_type(prep, first, input)?;
        if input.shape != first.shape {
            return Err(prep.bad(&format!(
                "input '{}' has shape {:?} but '{}' has {:?}",
                input.name, input.shape, first.name, first.shape
            )));
        }
        if per_tensor_params(input) != out_params {
            return Err(prep.unsupported(&format!(
                "input '{}' is quantized differently from output '{}' (TFLite does not \
                 requantize in PACK)",
                input.name, output.name
            )));
        }
    }
    let axis = normalize_axis(prep, axis, first.shape.len() + 1)?;
    let mut shape = first.shape.clone();
    shape.insert(axis, count);
    let outer: usize = first.shape[..axis].iter().product();
    let inner: usize = first.shape[axis..].iter().product();
    let kernel = Pack {
        outer,
        blocks: vec![inner * elem; count],
    };
    fold_known_output(prep, &kernel, &shape);
    prep.set_output_shape(0, shape);
    Ok(Box::new(kernel))
}

impl OpKernel for Pack {
    fn eval(&self, inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]) {
        interleave(self.outer, &self.blocks, &present(inputs), outputs[0].data);
    }
}

#[cfg(test)]
mod tests {
    use super::super::common::testing::{i32s, quantized, run, tensor};
    use super::*;

    fn options(count: i32, axis: i32) -> BuiltinOptions {
        BuiltinOptions::Pack {
            values_count: count,
            axis,
        }
    }

    #[test]
    fn stacks_along_any_axis() {
        let a = [1u8, 2, 3, 4]; // [2, 2]
        let b = [5u8, 6, 7, 8];
        let stack = |axis| {
            run(
                prepare,
                options(2, axis),
                vec![
                    Some(tensor(TensorType::UInt8, &[2, 2])),
                    Some(tensor(TensorType::UInt8, &[2, 2])),
                ],
                tensor(TensorType::UInt8, &[]),
                &[&a, &b],
            )
            .unwrap()
        };
        let r = stack(0);
        assert_eq!(
            (r.shape, r.data),
            (vec![2, 2, 2], vec![1, 2, 3, 4, 5, 6, 7, 8])
        );
        let r = stack(1);
        assert_eq!(
            (r.shape, r.data),
            (vec![2, 2, 2], vec![1, 2, 5, 6, 3, 4, 7, 8])
        );
        let r = stack(-1);
        assert_eq!(
            (r.shape, r.data),
            (vec![2, 2, 2], vec![1, 5, 2, 6, 3, 7, 4, 8])
        );
    }

    #[test]
    fn scalars_fold_into_a_shape() {
        let scalar = |v: i32| {
            let mut t = i32s(&[v]);
            t.info.shape = vec![];
            Some(t)
        };
        let r = run(
            prepare,
            options(3, 0),
            vec![scalar(1), scalar(-1), scalar(8)],
            tensor(TensorType::Int32, &[]),
            &[],
        )
        .unwrap();
        let expected: Vec<u8> = [1i32, -1, 8].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(r.shape, [3]);
        assert_eq!(r.folded, Some(expected));
    }

    #[test]
    fn mismatches_are_errors() {
        // values_count disagreeing with the inputs, shapes differing, quantization differing.
        let two = vec![
            Some(tensor(TensorType::Int8, &[2])),
            Some(tensor(TensorType::Int8, &[2])),
        ];
        let data: [&[u8]; 2] = [&[0, 0], &[0, 0]];
        assert!(
            run(
                prepare,
                options(3, 0),
                two,
                tensor(TensorType::Int8, &[]),
                &data
            )
            .is_err()
        );
        let shapes = vec![
            Some(tensor(TensorType::Int8, &[2])),
            Some(tensor(TensorType::Int8, &[1])),
        ];
        assert!(
            run(
                prepare,
                options(2, 0),
                shapes,
                tensor(TensorType::Int8, &[]),
                &data
            )
            .is_err()
        );
        let scales = vec![
            Some(quantized(tensor(TensorType::Int8, &[2]), 0.5, 0)),
            Some(quantized(tensor(TensorType::Int8, &[2]), 0.25, 0)),
        ];
        let out = quantized(tensor(TensorType::Int8, &[]), 0.5, 0);
        assert!(run(prepare, options(2, 0), scales, out, &data).is_err());
        let axis = vec![
            Some(tensor(TensorType::Int8, &[2])),
            Some(tensor(TensorType::Int8, &[2])),
        ];
        assert!(
            run(
                prepare,
                options(2, 2),
                axis,
                tensor(TensorType::Int8, &[]),
                &data
            )
            .is_err()
        );
    }
}
