//! DENSIFY: expands a constant stored sparse (TACO format) into a dense tensor, once, at
//! prepare time; the interpreter then folds the operator into that constant. FLOAT32, FLOAT16, INT8 — TFLite's list.
//!
//! The format (TFLite's `internal::sparsity::FormatConverter`): a tensor of rank n may be cut
//! into blocks along the dimensions in `block_map` (ascending), adding k block dimensions.
//! `traversal_order` lists the n + k dimensions in storage order — the n original (blocked)
//! dimensions first, then the k block dimensions — and `dim_metadata` describes each level
//! of that order: DENSE (every index 0..size) or SPARSE_CSR (for the position reached so far,
//! `segments[p]..segments[p+1]` delimit which `indices` follow). The values are stored in
//! the order the traversal reaches them. Everything is checked here: metadata consistent with
//! the shape, every index inside the tensor, exactly as many values as the buffer holds.

use kiln_tflite::{DimensionMetadata, Sparsity, TensorType};

use super::common::layout::{element_size, require_same_type};
use super::{In, Kernel, OpKernel, Out, Prep};
use crate::error::RuntimeError;

const TYPES: &[TensorType] = &[TensorType::Float32, TensorType::Float16, TensorType::Int8];

/// The largest dense tensor a sparse one may expand to at prepare. A few bytes of sparsity
/// parameters can declare gigabytes of zeros; sparse weights of edge models are far smaller.
pub(super) const MAX_DENSE_BYTES: usize = 256 << 20;

#[derive(Debug)]
struct Densify {
    dense: Vec<u8>,
}

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    prep.expect_arity(1..=1, 1)?;
    let (input, output) = (prep.input(0)?, prep.output(0)?);
    let elem = element_size(prep, input, TYPES)?;
    require_same_type(prep, input, output)?;
    let Some(sparsity) = &input.sparsity else {
        return Err(prep.bad(&format!(
            "input '{}' has no sparsity parameters",
            input.name
        )));
    };
    let Some(values) = prep.input_value(0) else {
        return Err(prep.bad(&format!("sparse input '{}' must be a constant", input.name)));
    };
    let dense = densify(sparsity, &input.shape, elem, values)
        .map_err(|e| prep.bad(&format!("sparse tensor '{}': {e}", input.name)))?;
    prep.set_output_shape(0, input.shape.clone());
    // The dense value is known now: the interpreter folds this operator into a constant.
    prep.set_output_value(0, dense.clone());
    Ok(Box::new(Densify { dense }))
}

impl OpKernel for Densify {
    fn eval(&self, _inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]) {
        outputs[0].data[..self.dense.len()].copy_from_slice(&self.dense);
    }
}

/// The dense bytes of a sparse tensor of `shape` whose stored values are `values`.
pub(super) fn densify(
    sparsity: &Sparsity,
    shape: &[usize],
    elem: usize,
    values: &[u8],
) -> Result<Vec<u8>, String> {
    let dense_bytes = shape
        .iter()
        .try_fold(elem, |bytes, &d| bytes.checked_mul(d))
        .unwrap_or(usize::MAX);
    if dense_bytes > MAX_DENSE_BYTES {
        return Err(format!(
            "shape {shape:?} densifies to {dense_bytes} bytes, more than the {} MiB kiln-runtime \
             expands at prepare; store the tensor dense",
            MAX_DENSE_BYTES >> 20
        ));
    }
    let n = shape.len();
    let k = sparsity.block_map.len();
    let levels = n + k;
    if sparsity.traversal_order.len() != levels || sparsity.dim_metadata.len() != levels {
        return Err(format!(
            "{} traversal entries and {} dimension metadata for rank {n} with {k} block \
             dimensions (expected {levels} each)",
            sparsity.traversal_order.len(),
            sparsity.dim_metadata.len()
        ));
    }
    // The original dimensions are traversed first, then the block dimensions.
    let order: Vec<usize> = sparsity
        .traversal_order
        .iter()
        .map(|&t| usize::try_from(t).unwrap_or(usize::MAX))
        .collect();
    let mut seen = vec![false; levels];
    for (level, &t) in order.iter().enumerate() {
        let range = if level < n { 0..n } else { n..levels };
        if !range.contains(&t) || seen[t] {
            return Err(format!(
                "traversal order {:?} must list dimensions 0..{n} then {n}..{levels}, each once",
                sparsity.traversal_order
            ));
        }
        seen[t] = true;
    }
    let block_map: Vec<usize> = sparsity
        .block_map
        .iter()
        .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
        .collect();
    if block_map.iter().any(|&d| d >= n) || block_map.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!(
            "block map {:?} must list distinct dimensions below {n} in ascending order",
            sparsity.block_map
        ));
    }
    // TFLite takes block b's size from the dense size of level traversal_order[n + b].
    let mut block_size = vec![0usize; k];
    for (b, size) in block_size.iter_mut().enumerate() {
        *size = match sparsity.dim_metadata[order[n + b]] {
            DimensionMetadata::Dense { size } if size > 0 => size as usize,
            _ => {
                return Err(format!(
                    "block dimension {b} must be dense with a positive size"
                ));
            }
        };
    }
    let mut blocked = shape.to_vec();
    for (&d, &size) in block_map.iter().zip(&block_size) {
        if !shape[d].is_multiple_of(size) {
            return Err(format!(
                "dimension {d} of size {} does not divide into blocks of {size}",
                shape[d]
            ));
        }
        blocked[d] = shape[d] / size;
    }
    for (level, &t) in order.iter().enumerate() {
        let extent = if t < n { blocked[t] } else { block_size[t - n] };
        if let DimensionMetadata::Dense { size } = sparsity.dim_metadata[level]
            && usize::try_from(size).ok() != Some(extent)
        {
            return Err(format!(
                "level {level} is dense with size {size} but its dimension has {extent}"
            ));
        }
    }
    if !values.len().is_multiple_of(elem) {
        return Err(format!(
            "{} bytes of values is not a whole number of elements",
            values.len()
        ));
    }
    let stored = values.len() / elem;
    let dense_elements: usize = shape.iter().product();
    let metadata: usize = sparsity
        .dim_metadata
        .iter()
        .map(|m| match m {
            DimensionMetadata::Dense { .. } => 0,
            DimensionMetadata::SparseCsr { segments, indices } => segments.len() + indices.len(),
        })
        .sum();
    let mut walk = Walk {
        metadata: &sparsity.dim_metadata,
        order: &order,
        block_map: &block_map,
        block_size: &block_size,
        shape,
        index: vec![0; levels],
        coords: vec![0; n],
        targets: Vec::with_capacity(stored),
        stored,
        budget: (levels + 1)
            .saturating_mul(dense_elements.saturating_add(metadata))
            .saturating_add(1024),
    };
    walk.visit(0, 0)?;
    if walk.targets.len() != stored {
        return Err(format!(
            "the metadata addresses {} values but the buffer holds {stored}",
            walk.targets.len()
        ));
    }
    let mut dense = vec![0u8; dense_elements * elem];
    for (i, &target) in walk.targets.iter().enumerate() {
        dense[target * elem..(target + 1) * elem]
            .copy_from_slice(&values[i * elem..(i + 1) * elem]);
    }
    Ok(dense)
}

/// The traversal of FormatConverter::Populate, recording where each stored value goes.
struct Walk<'a> {
    metadata: &'a [DimensionMetadata],
    order: &'a [usize],
    block_map: &'a [usize],
    block_size: &'a [usize],
    shape: &'a [usize],
    /// The index reached at each level.
    index: Vec<i64>,
    /// Scratch: the original coordinates of the current value.
    coords: Vec<i64>,
    /// Dense element index of each stored value, in storage order.
    targets: Vec<usize>,
    stored: usize,
    /// Steps left before the metadata is judged to loop excessively.
    budget: usize,
}

impl Walk<'_> {
    fn visit(&mut self, level: usize, position: usize) -> Result<(), String> {
        self.budget = self
            .budget
            .checked_sub(1)
            .ok_or("the metadata describes far more positions than the tensor has")?;
        if level == self.metadata.len() {
            return self.record();
        }
        match &self.metadata[level] {
            DimensionMetadata::Dense { size } => {
                let size = *size as usize; // checked positive and equal to the extent
                for i in 0..size {
                    self.index[level] = i as i64;
                    let next = position
                        .checked_mul(size)
                        .and_then(|p| p.checked_add(i))
                        .ok_or("position overflows")?;
                    self.visit(level + 1, next)?;
                }
            }
            DimensionMetadata::SparseCsr { segments, indices } => {
                // As in TFLite: no segment for this position means nothing stored under it,
                // and entries outside the index array are skipped.
                if let (Some(&lo), Some(&hi)) = (segments.get(position), segments.get(position + 1))
                {
                    let lo = usize::try_from(lo).unwrap_or(0);
                    let hi = usize::try_from(hi).unwrap_or(0).min(indices.len());
                    for (i, &index) in indices.iter().enumerate().take(hi).skip(lo) {
                        self.index[level] = i64::from(index);
                        self.visit(level + 1, i)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Maps the indices reached at every level to a dense position.
    fn record(&mut self) -> Result<(), String> {
        if self.targets.len() == self.stored {
            return Err(format!(
                "the metadata addresses more values than the {} stored",
                self.stored
            ));
        }
        let n = self.shape.len();
        for level in 0..n {
            self.coords[self.order[level]] = self.index[level];
        }
        for level in n..self.order.len() {
            let block = self.order[level] - n;
            let d = self.block_map[block];
            self.coords[d] = self.coords[d] * self.block_size[block] as i64 + self.index[level];
        }
        let mut target = 0usize;
        for (d, (&c, &size)) in self.coords.iter().zip(self.shape).enumerate() {
            let c = usize::try_from(c)
                .ok()
                .filter(|&c| c < size)
                .ok_or_else(|| format!("index {c} of dimension {d} is outside 0..{size}"))?;
            target = target * size + c;
        }
        self.targets.push(target);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr(segments: &[i32], indices: &[i32]) -> DimensionMetadata {
        DimensionMetadata::SparseCsr {
            segments: segments.to_vec(),
            indices: indices.to_vec(),
        }
    }

    fn bytes(values: &[i8]) -> Vec<u8> {
        values.iter().map(|&v| v as u8).collect()
    }

    #[test]
    fn densifies_a_csr_matrix() {
        // [[0, 1, 0, 2],
        //  [0, 0, 0, 0],
        //  [3, 0, 0, 4]]
        let sparsity = Sparsity {
            traversal_order: vec![0, 1],
            block_map: vec![],
            dim_metadata: vec![
                DimensionMetadata::Dense { size: 3 },
                csr(&[0, 2, 2, 4], &[1, 3, 0, 3]),
            ],
        };
        let dense = densify(&sparsity, &[3, 4], 1, &bytes(&[1, 2, 3, 4])).unwrap();
        assert_eq!(dense, bytes(&[0, 1, 0, 2, 0, 0, 0, 0, 3, 0, 0, 4]));
    }

    /// Fuzzer finding: a sparse FULLY_CONNECTED weight declared [32, 8388864] (1 GiB of
    /// float zeros from a few bytes of sparsity parameters) was densified, copied twice and
    /// took seconds and gigabytes before the layer was rejected. Such a shape is an error
    /// before anything is allocated.
    #[test]
    fn a_huge_dense_shape_is_an_error_before_allocating() {
        let sparsity = Sparsity {
            traversal_order: vec![0, 1],
            block_map: vec![],
            dim_metadata: vec![DimensionMetadata::Dense { size: 32 }, csr(&[0; 33], &[])],
        };
        let error = densify(&sparsity, &[32, 8_388_864], 4, &[]).unwrap_err();
        assert!(error.contains("store the tensor dense"), "{error}");
        let overflowing = densify(&sparsity, &[usize::MAX, 2], 4, &[]).unwrap_err();
        assert!(overflowing.contains("densifies to"), "{overflowing}");
    }

    #[test]
    fn densifies_column_major_traversal() {
        // The same matrix stored column by column: traversal order [1, 0].
        let sparsity = Sparsity {
            traversal_order: vec![1, 0],
            block_map: vec![],
            dim_metadata: vec![
                DimensionMetadata::Dense { size: 4 },
                csr(&[0, 1, 2, 2, 4], &[2, 0, 0, 2]),
            ],
        };
        let dense = densify(&sparsity, &[3, 4], 1, &bytes(&[3, 1, 2, 4])).unwrap();
        assert_eq!(dense, bytes(&[0, 1, 0, 2, 0, 0, 0, 0, 3, 0, 0, 4]));
    }

    #[test]
    fn densifies_block_sparse_float() {
        // A [2, 4] matrix in 1×2 blocks along dimension 1; only block (0, 1) and (1, 0) stored:
        // [[0, 0, 1, 2],
        //  [3, 4, 0, 0]]
        let sparsity = Sparsity {
            traversal_order: vec![0, 1, 2],
            block_map: vec![1],
            dim_metadata: vec![
                DimensionMetadata::Dense { size: 2 },
                csr(&[0, 1, 2], &[1, 0]),
                DimensionMetadata::Dense { size: 2 },
            ],
        };
        let values: Vec<u8> = [1f32, 2., 3., 4.]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let dense = densify(&sparsity, &[2, 4], 4, &values).unwrap();
        let floats: Vec<f32> = dense
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(floats, [0., 0., 1., 2., 3., 4., 0., 0.]);
    }

    #[test]
    fn rejects_inconsistent_metadata() {
        let matrix = |dims: Vec<DimensionMetadata>| Sparsity {
            traversal_order: vec![0, 1],
            block_map: vec![],
            dim_metadata: dims,
        };
        let dense3 = DimensionMetadata::Dense { size: 3 };
        // An index past the row.
        let s = matrix(vec![dense3.clone(), csr(&[0, 1, 1, 1], &[4])]);
        assert!(
            densify(&s, &[3, 4], 1, &[7])
                .unwrap_err()
                .contains("outside")
        );
        // More values stored than addressed, and fewer.
        let s = matrix(vec![dense3.clone(), csr(&[0, 1, 1, 1], &[2])]);
        assert!(densify(&s, &[3, 4], 1, &[7, 8]).is_err());
        assert!(densify(&s, &[3, 4], 1, &[]).is_err());
        // A dense level whose size disagrees with the shape.
        let s = matrix(vec![DimensionMetadata::Dense { size: 5 }, csr(&[0], &[])]);
        assert!(densify(&s, &[3, 4], 1, &[]).is_err());
        // Traversal order that is not a permutation.
        let s = Sparsity {
            traversal_order: vec![0, 0],
            block_map: vec![],
            dim_metadata: vec![dense3.clone(), DimensionMetadata::Dense { size: 4 }],
        };
        assert!(densify(&s, &[3, 4], 1, &[0; 12]).is_err());
        // Negative and reversed segments are skipped, as in TFLite; nothing stored.
        let s = matrix(vec![dense3, csr(&[-5, 3, 1, 0], &[0, 1, 2])]);
        assert!(densify(&s, &[3, 4], 1, &[]).is_err()); // 0..3 of row 0 addresses 3 values
        let s = matrix(vec![
            DimensionMetadata::Dense { size: 3 },
            csr(&[0, 0, 0, 0], &[]),
        ]);
        assert_eq!(densify(&s, &[3, 4], 1, &[]).unwrap(), vec![0; 12]);
    }
}

/// A literal transcription of TFLite's FormatConverter (sparse to dense) checks `densify` on
/// random metadata: it must never panic, and wherever it accepts, both must agree.
#[cfg(test)]
mod cross_check {
    use kiln_tflite::{DimensionMetadata, Sparsity};

    use super::densify;

    /// The dense tensor TFLite writes, and how many values it consumed; `None` where it would
    /// index out of bounds.
    fn tflite(s: &Sparsity, shape: &[usize], values: &[u8]) -> Option<(Vec<u8>, usize)> {
        let n = shape.len();
        let trav = &s.traversal_order;
        let block_map = &s.block_map;
        let dense_size: Vec<i32> = s
            .dim_metadata
            .iter()
            .map(|m| match m {
                DimensionMetadata::Dense { size } => *size,
                DimensionMetadata::SparseCsr { .. } => 0,
            })
            .collect();
        let mut block_size = vec![0i64; block_map.len()];
        let mut block_dim = 0;
        for i in 0..n {
            if block_dim < block_map.len()
                && block_map[block_dim] == i as i32
                && n + block_dim < trav.len()
            {
                let level = usize::try_from(trav[n + block_dim]).ok()?;
                block_size[block_dim] = i64::from(*dense_size.get(level)?);
                block_dim += 1;
            }
        }
        struct State<'a> {
            s: &'a Sparsity,
            shape: &'a [usize],
            block_size: Vec<i64>,
            values: &'a [u8],
            next: usize,
            dense: Vec<u8>,
        }
        fn populate(st: &mut State<'_>, idx: &mut Vec<i64>, level: usize, prev: i64) -> Option<()> {
            let n = st.shape.len();
            if level == idx.len() {
                let mut orig = vec![0i64; n];
                let mut i = 0;
                while i < n {
                    *orig.get_mut(usize::try_from(st.s.traversal_order[i]).ok()?)? = idx[i];
                    i += 1;
                }
                while i < idx.len() {
                    let block = usize::try_from(st.s.traversal_order[i] - n as i32).ok()?;
                    let d = usize::try_from(*st.s.block_map.get(block)?).ok()?;
                    *orig.get_mut(d)? = orig[d] * st.block_size[block] + idx[i];
                    i += 1;
                }
                let mut flat = 0i64;
                let mut sub = 1i64;
                for d in (0..n).rev() {
                    flat += orig[d] * sub;
                    sub *= st.shape[d] as i64;
                }
                let value = *st.values.get(st.next)?;
                *st.dense.get_mut(usize::try_from(flat).ok()?)? = value;
                st.next += 1;
                return Some(());
            }
            match &st.s.dim_metadata[level] {
                DimensionMetadata::Dense { size } => {
                    for i in 0..i64::from(*size) {
                        idx[level] = i;
                        populate(st, idx, level + 1, prev * i64::from(*size) + i)?;
                    }
                }
                DimensionMetadata::SparseCsr { segments, indices } => {
                    let p = usize::try_from(prev).ok()?;
                    if p + 1 < segments.len() {
                        for i in segments[p]..segments[p + 1] {
                            if i >= 0 && (i as usize) < indices.len() {
                                idx[level] = i64::from(indices[i as usize]);
                                populate(st, idx, level + 1, i64::from(i))?;
                            }
                        }
                    }
                }
            }
            Some(())
        }
        if s.dim_metadata.len() < trav.len() {
            return None;
        }
        let mut st = State {
            s,
            shape,
            block_size,
            values,
            next: 0,
            dense: vec![0; shape.iter().product()],
        };
        populate(&mut st, &mut vec![0; trav.len()], 0, 0)?;
        Some((st.dense, st.next))
    }

    #[test]
    fn agrees_with_tflite_on_random_metadata() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        let mut accepted = 0;
        for _ in 0..20_000 {
            let n = 1 + next(3) as usize;
            let shape: Vec<usize> = (0..n).map(|_| 1 + next(4) as usize).collect();
            // At most one blocked dimension, usually with a block size dividing it.
            let mut block_map = Vec::new();
            let mut block_size = Vec::new();
            if next(3) == 0 {
                let d = next(n as u64) as usize;
                let divisors: Vec<usize> = (1..=shape[d])
                    .filter(|&b| shape[d].is_multiple_of(b))
                    .collect();
                block_map.push(d as i32);
                block_size.push(if next(6) == 0 {
                    3
                } else {
                    divisors[next(divisors.len() as u64) as usize]
                });
            }
            let k = block_map.len();
            let mut trav: Vec<i32> = (0..(n + k) as i32).collect();
            if next(2) == 0 {
                trav.swap(0, next(n as u64) as usize);
            }
            if next(20) == 0 {
                trav.swap(0, n + k - 1);
            }
            let metadata: Vec<DimensionMetadata> = trav
                .iter()
                .map(|&t| {
                    let t = t as usize;
                    let extent = if t < n {
                        match block_map.iter().position(|&d| d as usize == t) {
                            Some(b) => shape[t] / block_size[b],
                            None => shape[t],
                        }
                    } else {
                        block_size[t - n]
                    } as i32;
                    if next(2) == 0 {
                        let size = if next(10) == 0 { extent + 1 } else { extent };
                        DimensionMetadata::Dense { size }
                    } else {
                        let segments: Vec<i32> = {
                            let mut at = 0i32;
                            (0..1 + next(6))
                                .map(|j| {
                                    if j > 0 {
                                        at += next(3) as i32 - i32::from(next(12) == 0);
                                    }
                                    at
                                })
                                .collect()
                        };
                        let indices = (0..next(8))
                            .map(|_| next(extent as u64 + 2) as i32 - i32::from(next(15) == 0))
                            .collect();
                        DimensionMetadata::SparseCsr { segments, indices }
                    }
                })
                .collect();
            let sparsity = Sparsity {
                traversal_order: trav,
                block_map,
                dim_metadata: metadata,
            };
            // As many values as the traversal reaches (usually), numbered from 1.
            let probe: Vec<u8> = (1..=255).collect();
            let count = tflite(&sparsity, &shape, &probe).map_or(next(5) as usize, |(_, c)| c);
            let count = if next(15) == 0 { count + 1 } else { count };
            let values: Vec<u8> = (1..=count as u8).collect();
            let Ok(ours) = densify(&sparsity, &shape, 1, &values) else {
                continue;
            };
            accepted += 1;
            let (theirs, consumed) = tflite(&sparsity, &shape, &values)
                .unwrap_or_else(|| panic!("kiln accepts what TFLite mishandles: {sparsity:?}"));
            assert_eq!(consumed, values.len(), "{sparsity:?}");
            assert_eq!(ours, theirs, "{shape:?} {sparsity:?}");
        }
        assert!(accepted > 1_000, "only {accepted} accepted");
    }
}
