//! SQUEEZE: drops dimensions of size 1 — the listed ones (negative counts from the end), or
//! every one when the list is empty. The bytes are unchanged; any element type.

use kiln_tflite::BuiltinOptions;

use super::common::layout::{
    ANY_FIXED_SIZE, CopyBytes, element_size, fold_known_output, require_same_type,
};
use super::{Kernel, Prep};
use crate::error::RuntimeError;

/// TFLite's limit on the input rank.
const MAX_RANK: usize = 8;

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    prep.expect_arity(1..=1, 1)?;
    let (input, output) = (prep.input(0)?, prep.output(0)?);
    require_same_type(prep, input, output)?;
    element_size(prep, input, ANY_FIXED_SIZE)?;
    let rank = input.shape.len();
    if rank > MAX_RANK {
        return Err(prep.bad(&format!("input rank {rank} exceeds {MAX_RANK}")));
    }
    let dims: &[i32] = match &prep.op.options {
        BuiltinOptions::Squeeze { squeeze_dims } => squeeze_dims,
        BuiltinOptions::None => &[],
        _ => return Err(prep.bad("expected SqueezeOptions")),
    };
    let mut squeeze = vec![false; rank];
    if dims.is_empty() {
        for (s, &d) in squeeze.iter_mut().zip(&input.shape) {
            *s = d == 1;
        }
    } else {
        for &d in dims {
            let axis = i64::from(d) + if d < 0 { rank as i64 } else { 0 };
            match usize::try_from(axis).ok().filter(|&a| a < rank) {
                Some(a) if input.shape[a] == 1 => squeeze[a] = true,
                _ => {
                    return Err(prep.bad(&format!(
                        "cannot squeeze dimension {d} of shape {:?}",
                        input.shape
                    )));
                }
            }
        }
    }
    let shape: Vec<usize> = input
        .shape
        .iter()
        .zip(&squeeze)
        .filter(|&(_, &s)| !s)
        .map(|(&d, _)| d)
        .collect();
    let kernel = CopyBytes {
        bytes: input.byte_size(),
    };
    fold_known_output(prep, &kernel, &shape);
    prep.set_output_shape(0, shape);
    Ok(Box::new(kernel))
}

#[cfg(test)]
mod tests {
    use kiln_tflite::TensorType;

    use super::super::common::testing::{run, tensor};
    use super::*;

    fn squeeze(shape: &[usize], dims: &[i32]) -> Result<Vec<usize>, RuntimeError> {
        let data = vec![0u8; shape.iter().product::<usize>() * 4];
        run(
            prepare,
            BuiltinOptions::Squeeze {
                squeeze_dims: dims.to_vec(),
            },
            vec![Some(tensor(TensorType::Float32, shape))],
            tensor(TensorType::Float32, &[]),
            &[&data],
        )
        .map(|r| r.shape)
    }

    #[test]
    fn drops_unit_dimensions() {
        assert_eq!(squeeze(&[1, 3, 1, 2], &[]).unwrap(), [3, 2]);
        assert_eq!(squeeze(&[1, 3, 1, 2], &[-2]).unwrap(), [1, 3, 2]);
        assert_eq!(squeeze(&[1, 3, 1, 2], &[0, 0]).unwrap(), [3, 1, 2]);
        assert_eq!(squeeze(&[1, 1], &[]).unwrap(), Vec::<usize>::new());
        assert!(squeeze(&[1, 3], &[1]).is_err());
        assert!(squeeze(&[1, 3], &[2]).is_err());
    }
}
