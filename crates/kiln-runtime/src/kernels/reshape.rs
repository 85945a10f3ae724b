//! RESHAPE: the same elements under a new shape. The target comes from the shape tensor
//! (input 1) when its value is known, else from the options; one dimension may be -1.

use kiln_tflite::BuiltinOptions;

use super::common::layout::CopyBytes;
use super::{Kernel, Prep};
use crate::error::RuntimeError;

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    prep.expect_arity(1..=2, 1)?;
    let (input, output) = (prep.input(0)?, prep.output(0)?);
    if input.dtype != output.dtype {
        return Err(prep.bad(&format!(
            "input '{}' is {} but output '{}' is {}",
            input.name, input.dtype, output.name, output.dtype
        )));
    }
    if input.dtype.element_size().is_none() {
        return Err(prep.unsupported(&format!("tensor type {} is not supported", input.dtype)));
    }
    let from_options = match &prep.op.options {
        BuiltinOptions::Reshape {
            new_shape: Some(shape),
        } if !shape.is_empty() => Some(shape.clone()),
        _ => None,
    };
    // TFLite prefers a 1-D shape tensor over the options when both are present.
    let target = match (prep.optional_input(1), prep.input_i32s(1)?) {
        (Some(info), Some(values)) if info.shape.len() == 1 => values,
        (Some(info), None) if from_options.is_none() => {
            return Err(prep.unsupported(&format!(
                "the target shape '{}' is only known while running (a data-dependent reshape)",
                info.name
            )));
        }
        _ => from_options.unwrap_or_else(|| output.shape.iter().map(|&d| d as i32).collect()),
    };
    let shape = resolve(prep, &target, input.num_elements())?;
    prep.set_output_shape(0, shape);
    Ok(Box::new(CopyBytes {
        bytes: input.byte_size(),
    }))
}

/// Replaces a single -1 by the size that keeps the element count.
fn resolve(prep: &Prep<'_>, target: &[i32], elements: usize) -> Result<Vec<usize>, RuntimeError> {
    let wildcards = target.iter().filter(|&&d| d == -1).count();
    if wildcards > 1 || target.iter().any(|&d| d < -1) {
        return Err(prep.bad(&format!("invalid target shape {target:?}")));
    }
    let cannot = || prep.bad(&format!("cannot reshape {elements} elements to {target:?}"));
    // Checked products, as the validator counts a file's shapes: a target whose size
    // overflows cannot hold the input's elements (and must not wrap into a match).
    fn product(dims: impl IntoIterator<Item = usize>) -> Option<usize> {
        dims.into_iter().try_fold(1usize, |n, d| n.checked_mul(d))
    }
    let known =
        product(target.iter().filter(|&&d| d >= 0).map(|&d| d as usize)).ok_or_else(cannot)?;
    let shape: Vec<usize> = target
        .iter()
        .map(|&d| {
            if d == -1 {
                elements.checked_div(known).unwrap_or(0)
            } else {
                d as usize
            }
        })
        .collect();
    if product(shape.iter().copied()) != Some(elements) {
        return Err(cannot());
    }
    Ok(shape)
}

#[cfg(test)]
mod tests {
    use kiln_tflite::TensorType;

    use super::super::common::testing::{i32s, run, tensor};
    use super::*;

    fn reshape(target: &[i32]) -> Result<Vec<usize>, RuntimeError> {
        run(
            prepare,
            BuiltinOptions::None,
            vec![
                Some(tensor(TensorType::Float32, &[1, 8, 8, 4])),
                Some(i32s(target)),
            ],
            tensor(TensorType::Float32, &[]),
            &[&[0u8; 256 * 4]],
        )
        .map(|run| run.shape)
    }

    /// Fuzzer finding: the target [1717986817, 1717986918, 6, 8, 4] overflowed the product of
    /// its dimensions (a panic with overflow checks, a wrapped size without).
    #[test]
    fn a_target_whose_size_overflows_is_an_error() {
        let err = reshape(&[1_717_986_817, 1_717_986_918, 6, 8, 4]).unwrap_err();
        assert!(err.to_string().contains("cannot reshape"), "{err}");
        let err = reshape(&[1_717_986_817, 1_717_986_918, 6, -1]).unwrap_err();
        assert!(err.to_string().contains("cannot reshape"), "{err}");
        assert_eq!(reshape(&[16, -1]).unwrap(), [16, 16]);
        assert_eq!(reshape(&[4, 64]).unwrap(), [4, 64]);
    }
}
