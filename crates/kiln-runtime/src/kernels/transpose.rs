//! TRANSPOSE: permutes dimensions; output dimension `i` is input dimension `perm[i]` (negative
//! entries count from the end). The permutation is a constant INT32 vector. Any element type.

use kiln_tflite::TensorType;

use super::common::layout::{
    ANY_FIXED_SIZE, Gather, element_size, fold_known_output, known_i32s, require_same_type, strides,
};
use super::{Kernel, Prep};
use crate::error::RuntimeError;

/// TFLite's limit on the rank (kTransposeMaxDimensions).
const MAX_RANK: usize = 8;

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    prep.expect_arity(2..=2, 1)?;
    let (input, perm_info, output) = (prep.input(0)?, prep.input(1)?, prep.output(0)?);
    require_same_type(prep, input, output)?;
    let elem = element_size(prep, input, ANY_FIXED_SIZE)?;
    // TFLite reads the permutation as int32 whatever its declared type.
    prep.require_type(perm_info, &[TensorType::Int32])?;
    let rank = input.shape.len();
    if rank > MAX_RANK {
        return Err(prep.bad(&format!("input rank {rank} exceeds {MAX_RANK}")));
    }
    if perm_info.shape != [rank] {
        return Err(prep.bad(&format!(
            "the permutation '{}' has shape {:?}; expected [{rank}]",
            perm_info.name, perm_info.shape
        )));
    }
    let perm = permutation(prep, &known_i32s(prep, 1, "permutation")?, rank)?;
    let in_strides = strides(&input.shape);
    let shape: Vec<usize> = perm.iter().map(|&p| input.shape[p]).collect();
    let dims: Vec<(usize, isize)> = perm
        .iter()
        .map(|&p| (input.shape[p], in_strides[p] as isize))
        .collect();
    let gather = Gather::new(elem, 0, &dims, input.num_elements())
        .ok_or_else(|| prep.bad("permutation reads outside the input"))?;
    fold_known_output(prep, &gather, &shape);
    prep.set_output_shape(0, shape);
    Ok(Box::new(gather))
}

/// Normalizes negative entries and checks that every dimension appears exactly once.
fn permutation(prep: &Prep<'_>, values: &[i32], rank: usize) -> Result<Vec<usize>, RuntimeError> {
    let mut seen = vec![false; rank];
    let mut perm = Vec::with_capacity(rank);
    for &v in values {
        let p = i64::from(v) + if v < 0 { rank as i64 } else { 0 };
        match usize::try_from(p).ok().filter(|&p| p < rank) {
            Some(p) if !seen[p] => {
                seen[p] = true;
                perm.push(p);
            }
            _ => {
                return Err(prep.bad(&format!(
                    "{values:?} is not a permutation of {rank} dimensions"
                )));
            }
        }
    }
    Ok(perm)
}

#[cfg(test)]
mod tests {
    use kiln_tflite::BuiltinOptions;

    use super::super::common::testing::{i32s, run, tensor};
    use super::*;

    fn transpose(shape: &[usize], perm: &[i32]) -> Result<(Vec<usize>, Vec<u8>), RuntimeError> {
        let data: Vec<u8> = (0..shape.iter().product::<usize>())
            .map(|v| v as u8)
            .collect();
        run(
            prepare,
            BuiltinOptions::Transpose,
            vec![Some(tensor(TensorType::Int8, shape)), Some(i32s(perm))],
            tensor(TensorType::Int8, &[]),
            &[&data],
        )
        .map(|r| (r.shape, r.data))
    }

    #[test]
    fn permutes_dimensions() {
        assert_eq!(
            transpose(&[2, 3], &[1, 0]).unwrap(),
            (vec![3, 2], vec![0, 3, 1, 4, 2, 5])
        );
        // [2, 1, 3] → perm [2, 0, 1] (negative entries count from the end).
        let (shape, data) = transpose(&[2, 1, 3], &[-1, 0, 1]).unwrap();
        assert_eq!(shape, [3, 2, 1]);
        assert_eq!(data, [0, 3, 1, 4, 2, 5]);
        // The identity is a copy.
        assert_eq!(transpose(&[2, 2], &[0, 1]).unwrap().1, [0, 1, 2, 3]);
    }

    #[test]
    fn bad_permutations_are_errors() {
        assert!(transpose(&[2, 3], &[0, 0]).is_err());
        assert!(transpose(&[2, 3], &[0, 2]).is_err());
        assert!(transpose(&[2, 3], &[0]).is_err());
        assert!(transpose(&[1; 9], &[0, 1, 2, 3, 4, 5, 6, 7, 8]).is_err());
    }
}
