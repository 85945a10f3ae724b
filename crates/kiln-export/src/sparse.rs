//! Sparse storage of pruned weights: what TF's converter writes with
//! `optimizations = [EXPERIMENTAL_SPARSITY]` (its `DenseToSparsePass`), so that a pruned
//! model's file shrinks instead of only its gzip. A weight keeps only its non-zero values and
//! where they are (TFLite's `SparsityParameters`, the TACO format):
//!
//! - a FULLY_CONNECTED weight pruned in blocks of 1×4 (float32) or 1×16 (int8) — the block
//!   shapes LiteRT's sparse FULLY_CONNECTED kernels run (`FullyConnectedSparseWeight1x4` and
//!   `…1x16`, reference and optimized alike; the int8 one only for symmetric weights) — is
//!   read by the operator itself: rows dense, block columns CSR, each kept block whole;
//! - any other conv, depthwise or fully-connected weight is stored with one dimension as CSR
//!   (the last, as the converter does, or whichever makes the file smallest: an index along
//!   64 output channels fits a byte where one along 1,600 inputs does not) and a DENSIFY
//!   operator (FLOAT32 and INT8 in LiteRT; XNNPACK expands it once when it
//!   takes the consumer) rebuilds the dense tensor, which the operator reads as before.
//!
//! An int8 FULLY_CONNECTED weight is never put behind DENSIFY: LiteRT's XNNPACK delegate fails
//! to prepare such an operator (measured with ai-edge-litert 2.3.0, all three kernel sets
//! checked by tests/litert_conformance.rs); it is stored sparse only in 1×16 blocks.
//!
//! A weight stays dense below [`MIN_SPARSITY`] zeros (the converter's threshold) or when the
//! sparse form would not be smaller. Hybrid (dynamic-range) operators keep dense weights:
//! LiteRT's sparse hybrid path checks no block format.

use kiln_tflite::{
    BuiltinOp, BuiltinOptions, DimensionMetadata, Model, Operator, Sparsity, Tensor, TensorType,
};

use crate::compact::compact;
use crate::error::ExportError;
use crate::graph::{consumers, dims, input_index, is_constant, single_subgraph};

/// Below this fraction of zeros a weight stays dense (the converter's `kMinSparsityLevel`).
pub const MIN_SPARSITY: f64 = 0.3;

/// FULLY_CONNECTED's first version with sparse weights.
const SPARSE_FULLY_CONNECTED: i32 = 8;

/// How one weight is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SparseLayout {
    /// Read by FULLY_CONNECTED directly: blocks of 1 × `width` along the input dimension.
    Blocks { width: usize },
    /// Expanded by a DENSIFY operator from CSR along the last dimension.
    Densify,
}

impl std::fmt::Display for SparseLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Blocks { width } => write!(f, "1x{width} blocks"),
            Self::Densify => f.write_str("CSR + DENSIFY"),
        }
    }
}

/// One weight stored sparse.
#[derive(Clone, Debug, PartialEq)]
pub struct SparseWeight {
    pub name: String,
    pub operator: BuiltinOp,
    pub layout: SparseLayout,
    /// Fraction of the weight's values that are zero.
    pub sparsity: f64,
    pub dense_bytes: usize,
    /// Values kept plus their index vectors.
    pub sparse_bytes: usize,
}

/// The weights of `model`'s conv, depthwise and fully-connected operators stored sparse where
/// that makes them smaller, and which ones. Operators and tensor indices are unchanged but
/// for DENSIFY operators placed first: a weight taken over by one becomes its output (same
/// index, name and quantization, no data) and a new `<name>/sparse` tensor holds the values.
pub fn to_sparse(model: &Model) -> Result<(Model, Vec<SparseWeight>), ExportError> {
    let subgraph = single_subgraph(model)?;
    let readers = consumers(subgraph);
    let mut out = model.clone();
    let mut densify = Vec::new();
    let mut new_tensors = Vec::new();
    let mut report = Vec::new();
    for (t, tensor) in subgraph.tensors.iter().enumerate() {
        let Some(operator) = weight_of(model, &readers[t]) else {
            continue;
        };
        let Some(values) = Values::of(model, tensor) else {
            continue;
        };
        // Hybrid operators (float activations, int8 weights) keep dense weights.
        let hybrid = readers[t].iter().any(|&(op, _)| {
            let op = &subgraph.operators[op];
            input_index(op, 0)
                .and_then(|i| subgraph.tensors.get(i))
                .is_some_and(|input| input.dtype != tensor.dtype)
        });
        let sparsity = values.zeros() as f64 / values.len().max(1) as f64;
        if hybrid || sparsity < MIN_SPARSITY {
            continue;
        }
        let shape = dims(tensor);
        // LiteRT's XNNPACK delegate (its default kernels) fails to prepare an int8
        // FULLY_CONNECTED whose weight a DENSIFY makes ("failed to delegate FULLY_CONNECTED",
        // ai-edge-litert 2.3.0), so an int8 fully-connected weight is sparse only as blocks the
        // operator reads itself (FULLY_CONNECTED v8, which XNNPACK leaves to the builtins).
        let densify_runs =
            !(operator == BuiltinOp::FULLY_CONNECTED && tensor.dtype == TensorType::Int8);
        let mut candidates: Vec<_> = (0..shape.len())
            .filter(|_| densify_runs)
            .map(|d| (SparseLayout::Densify, csr_along(&values, &shape, d)))
            .collect();
        // The converter's rule: blocks only where they hold nearly all the zeros (block
        // sparsity over value sparsity above 0.9 for float32, 0.8 for int8).
        let (block, ratio) = match tensor.dtype {
            TensorType::Int8 => (16, 0.8),
            _ => (4, 0.9),
        };
        if operator == BuiltinOp::FULLY_CONNECTED
            && readers[t].len() == 1
            && let [rows, cols] = shape[..]
            && cols.is_multiple_of(block)
            && values.zero_blocks(block) as f64 / (values.len() / block) as f64 > ratio * sparsity
        {
            candidates.push((
                SparseLayout::Blocks { width: block },
                row_blocks(&values, rows, cols, block),
            ));
        }
        let dense_bytes = values.bytes.len();
        // What DENSIFY adds besides the values: an operator, a tensor and its name.
        let overhead = |layout: SparseLayout| match layout {
            SparseLayout::Densify => 96 + tensor.name.len(),
            SparseLayout::Blocks { .. } => 0,
        };
        let Some((layout, (sparsity_params, stored))) = candidates
            .into_iter()
            .filter(|(layout, (params, stored))| {
                stored.len() + params.index_bytes() + overhead(*layout) < dense_bytes
            })
            .min_by_key(|(layout, (params, stored))| {
                stored.len() + params.index_bytes() + overhead(*layout)
            })
        else {
            continue;
        };
        report.push(SparseWeight {
            name: tensor.name.clone(),
            operator,
            layout,
            sparsity,
            dense_bytes,
            sparse_bytes: stored.len() + sparsity_params.index_bytes(),
        });
        let buffer = out.push_buffer(stored);
        match layout {
            SparseLayout::Blocks { .. } => {
                let weight = &mut out.subgraphs[0].tensors[t];
                weight.buffer = buffer;
                weight.sparsity = Some(sparsity_params);
                let (op_index, _) = readers[t][0];
                raise_fully_connected_version(&mut out, op_index);
            }
            SparseLayout::Densify => {
                let index = subgraph.tensors.len() + new_tensors.len();
                new_tensors.push(Tensor {
                    name: format!("{}/sparse", tensor.name),
                    buffer,
                    // DENSIFY copies values; the quantization stays on its output.
                    quantization: None,
                    sparsity: Some(sparsity_params),
                    ..tensor.clone()
                });
                out.subgraphs[0].tensors[t].buffer = 0;
                densify.push((index, t));
            }
        }
    }
    if !densify.is_empty() {
        let opcode_index = out.intern_opcode(BuiltinOp::DENSIFY, 1);
        let graph = &mut out.subgraphs[0];
        graph.tensors.extend(new_tensors);
        let operators = densify.into_iter().map(|(input, output)| Operator {
            opcode_index,
            inputs: vec![input as i32],
            outputs: vec![output as i32],
            // The converter writes DENSIFY with an empty options table.
            options: BuiltinOptions::None,
            custom_options: None,
            intermediates: Vec::new(),
        });
        graph.operators.splice(0..0, operators);
    }
    compact(&mut out);
    Ok((out, report))
}

/// The operator whose weight a tensor is, when every reader takes it as the weight (input 1)
/// of a CONV_2D, DEPTHWISE_CONV_2D or FULLY_CONNECTED (one kind).
fn weight_of(model: &Model, readers: &[(usize, usize)]) -> Option<BuiltinOp> {
    let mut kind = None;
    for &(op, slot) in readers {
        let builtin = model.opcode_of(&model.subgraphs[0].operators[op])?.builtin;
        let weighted = matches!(
            builtin,
            BuiltinOp::CONV_2D | BuiltinOp::DEPTHWISE_CONV_2D | BuiltinOp::FULLY_CONNECTED
        );
        if slot != 1 || !weighted || kind.is_some_and(|k| k != builtin) {
            return None;
        }
        kind = Some(builtin);
    }
    kind
}

/// A dense constant's values as bytes, `width` bytes each, where a zero value is all zero
/// bytes (float32 ±0 aside, which counts as zero too).
struct Values<'a> {
    bytes: &'a [u8],
    width: usize,
    float: bool,
}

impl<'a> Values<'a> {
    /// Float32 weights, or int8 ones whose zero points are all 0 (so a zero byte is 0.0).
    fn of(model: &'a Model, tensor: &Tensor) -> Option<Self> {
        if tensor.sparsity.is_some() || !is_constant(model, tensor) {
            return None;
        }
        let bytes = model.tensor_data(tensor);
        if Some(bytes.len()) != tensor.byte_size() {
            return None;
        }
        let (width, float) = match tensor.dtype {
            TensorType::Float32 => (4, true),
            TensorType::Int8
                if tensor
                    .quantization
                    .as_ref()
                    .is_some_and(|q| q.zero_point.iter().all(|&z| z == 0)) =>
            {
                (1, false)
            }
            _ => return None,
        };
        Some(Self {
            bytes,
            width,
            float,
        })
    }

    fn len(&self) -> usize {
        self.bytes.len() / self.width
    }

    fn value(&self, i: usize) -> &'a [u8] {
        &self.bytes[i * self.width..(i + 1) * self.width]
    }

    fn is_zero(&self, i: usize) -> bool {
        let v = self.value(i);
        if self.float {
            f32::from_le_bytes([v[0], v[1], v[2], v[3]]) == 0.0
        } else {
            v[0] == 0
        }
    }

    fn zeros(&self) -> usize {
        (0..self.len()).filter(|&i| self.is_zero(i)).count()
    }

    /// Runs of `width` consecutive values (from the first) that are all zero.
    fn zero_blocks(&self, width: usize) -> usize {
        (0..self.len() / width)
            .filter(|&b| (b * width..(b + 1) * width).all(|i| self.is_zero(i)))
            .count()
    }
}

/// Every dimension dense but `sparse`, which is traversed last and stored CSR: per position
/// of the others, the non-zero values' indices along it (TFLite's random-sparsity encoding
/// when `sparse` is the last dimension; another choice can make the indices one byte, e.g.
/// a [64, 1600] weight's output dimension instead of its input one).
fn csr_along(values: &Values<'_>, shape: &[usize], sparse: usize) -> (Sparsity, Vec<u8>) {
    let rank = shape.len();
    let mut strides = vec![1usize; rank];
    for d in (0..rank.saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    let outer: Vec<usize> = (0..rank).filter(|&d| d != sparse).collect();
    let positions: usize = outer.iter().map(|&d| shape[d]).product();
    let mut coords = vec![0usize; outer.len()];
    let mut segments = vec![0i32];
    let mut indices = Vec::new();
    let mut stored = Vec::new();
    for _ in 0..positions {
        let base: usize = outer
            .iter()
            .zip(&coords)
            .map(|(&d, &c)| c * strides[d])
            .sum();
        for k in 0..shape[sparse] {
            let i = base + k * strides[sparse];
            if !values.is_zero(i) {
                indices.push(k as i32);
                stored.extend_from_slice(values.value(i));
            }
        }
        segments.push(indices.len() as i32);
        // Odometer over the outer dimensions, the last fastest.
        for (c, &d) in coords.iter_mut().zip(&outer).rev() {
            *c += 1;
            if *c < shape[d] {
                break;
            }
            *c = 0;
        }
    }
    let mut dim_metadata: Vec<DimensionMetadata> = outer
        .iter()
        .map(|&d| DimensionMetadata::Dense {
            size: shape[d] as i32,
        })
        .collect();
    dim_metadata.push(DimensionMetadata::SparseCsr { segments, indices });
    let sparsity = Sparsity {
        traversal_order: outer.iter().chain([&sparse]).map(|&d| d as i32).collect(),
        block_map: Vec::new(),
        dim_metadata,
    };
    (sparsity, stored)
}

/// [rows, cols] in blocks of 1 × `width` along the columns: rows dense, block columns CSR,
/// each block with any non-zero stored whole (LiteRT's sparse FULLY_CONNECTED layout).
fn row_blocks(values: &Values<'_>, rows: usize, cols: usize, width: usize) -> (Sparsity, Vec<u8>) {
    let blocks = cols / width;
    let mut segments = vec![0i32];
    let mut indices = Vec::new();
    let mut stored = Vec::new();
    for row in 0..rows {
        for block in 0..blocks {
            let first = row * cols + block * width;
            if (first..first + width).any(|i| !values.is_zero(i)) {
                indices.push(block as i32);
                stored.extend_from_slice(
                    &values.bytes[first * values.width..(first + width) * values.width],
                );
            }
        }
        segments.push(indices.len() as i32);
    }
    let sparsity = Sparsity {
        traversal_order: vec![0, 1, 2],
        block_map: vec![1],
        dim_metadata: vec![
            DimensionMetadata::Dense { size: rows as i32 },
            DimensionMetadata::SparseCsr { segments, indices },
            DimensionMetadata::Dense { size: width as i32 },
        ],
    };
    (sparsity, stored)
}

/// Gives FULLY_CONNECTED `op_index` an operator code of at least the sparse-weight version
/// (8); a later version (hybrid, 4-bit) already implies it.
fn raise_fully_connected_version(model: &mut Model, op_index: usize) {
    let op = &model.subgraphs[0].operators[op_index];
    let version = model.opcode_of(op).map_or(1, |code| code.version);
    if version < SPARSE_FULLY_CONNECTED {
        let code = model.intern_opcode(BuiltinOp::FULLY_CONNECTED, SPARSE_FULLY_CONNECTED);
        model.subgraphs[0].operators[op_index].opcode_index = code;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::int8::{Calibrator, Int8Options, quantize_int8};
    use crate::test_model::{run_real, sample, small_cnn};

    /// Zeroes `fraction` of the named float32 weights: unstructured (every value but one in
    /// five, magnitude-blind, as a pattern the encoders cannot exploit) or in 1×`block` blocks
    /// along the last dimension.
    fn prune(model: &mut Model, name: &str, block: Option<usize>) {
        let tensor = model.subgraphs[0]
            .tensors
            .iter()
            .find(|t| t.name == name)
            .unwrap()
            .clone();
        let mut values: Vec<f32> = model
            .tensor_data(&tensor)
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        for (i, v) in values.iter_mut().enumerate() {
            let keep = match block {
                None => i % 5 == 0,
                Some(width) => (i / width) % 5 == 0,
            };
            if !keep {
                *v = 0.0;
            }
        }
        let buffer = model.push_buffer(values.iter().flat_map(|v| v.to_le_bytes()).collect());
        model.subgraphs[0]
            .tensors
            .iter_mut()
            .find(|t| t.name == name)
            .unwrap()
            .buffer = buffer;
    }

    fn pruned(dense1_block: Option<usize>) -> Model {
        let mut model = small_cnn();
        prune(&mut model, "conv2/filter", None);
        prune(&mut model, "dense1/weights", dense1_block);
        model
    }

    fn int8(model: &Model) -> Model {
        let mut calibrator = Calibrator::new(model).unwrap();
        for seed in 0..8 {
            calibrator.observe(&[&sample(seed)]).unwrap();
        }
        quantize_int8(
            model,
            &calibrator.finish().unwrap(),
            &Int8Options::default(),
        )
        .unwrap()
    }

    fn layouts(report: &[SparseWeight]) -> Vec<(&str, SparseLayout)> {
        report.iter().map(|w| (w.name.as_str(), w.layout)).collect()
    }

    /// The sparse file computes exactly what the dense one does (the runtime rebuilds the
    /// same weights), and is smaller.
    fn assert_same_outputs_and_smaller(dense: &Model, sparse: &Model) {
        for seed in 0..3 {
            let x = sample(seed);
            assert_eq!(run_real(dense, &x), run_real(sparse, &x));
        }
        let (before, after) = (
            dense.to_bytes().unwrap().len(),
            sparse.to_bytes().unwrap().len(),
        );
        assert!(after < before, "{after} vs {before} bytes");
    }

    #[test]
    fn unstructured_float_weights_go_behind_densify() {
        let model = pruned(None);
        let (sparse, report) = to_sparse(&model).unwrap();
        assert_eq!(
            layouts(&report),
            [
                ("conv2/filter", SparseLayout::Densify),
                ("dense1/weights", SparseLayout::Densify)
            ]
        );
        assert!(report.iter().all(|w| (w.sparsity - 0.8).abs() < 0.01));
        let graph = &sparse.subgraphs[0];
        // Two DENSIFY operators first, each from a `/sparse` constant to the weight.
        for op in &graph.operators[..2] {
            let code = sparse.opcode_of(op).unwrap();
            assert_eq!((code.builtin, code.version), (BuiltinOp::DENSIFY, 1));
            let input = &graph.tensors[op.inputs[0] as usize];
            let output = &graph.tensors[op.outputs[0] as usize];
            assert!(input.name.ends_with("/sparse") && input.sparsity.is_some());
            assert!(sparse.tensor_data(output).is_empty() && output.sparsity.is_none());
        }
        assert_same_outputs_and_smaller(&model, &sparse);
    }

    #[test]
    fn block_pruned_fully_connected_weights_are_read_by_the_operator() {
        let model = pruned(Some(4));
        let (sparse, report) = to_sparse(&model).unwrap();
        assert_eq!(
            layouts(&report),
            [
                ("conv2/filter", SparseLayout::Densify),
                ("dense1/weights", SparseLayout::Blocks { width: 4 })
            ]
        );
        let graph = &sparse.subgraphs[0];
        let dense1 = graph
            .operators
            .iter()
            .find(|op| {
                op.inputs
                    .get(1)
                    .is_some_and(|&i| graph.tensors[i as usize].name == "dense1/weights")
            })
            .unwrap();
        assert_eq!(sparse.opcode_of(dense1).unwrap().version, 8);
        let logits = graph.operators.last().unwrap();
        assert!(sparse.opcode_of(logits).unwrap().version < 8, "dense stays");
        assert_same_outputs_and_smaller(&model, &sparse);
    }

    #[test]
    fn int8_weights_are_stored_sparse_too() {
        // An int8 fully-connected weight is sparse only in 1×16 blocks (never behind
        // DENSIFY, which XNNPACK cannot prepare): not at all when pruned value by value or
        // in 1×4 blocks (four in five 1×16 blocks keep a value).
        for (block, dense1) in [
            (None, None),
            (Some(4), None),
            (Some(16), Some(SparseLayout::Blocks { width: 16 })),
        ] {
            let model = int8(&pruned(block));
            let (sparse, report) = to_sparse(&model).unwrap();
            let mut expected = vec![("conv2/filter", SparseLayout::Densify)];
            expected.extend(dense1.map(|layout| ("dense1/weights", layout)));
            assert_eq!(layouts(&report), expected, "{block:?}");
            assert_same_outputs_and_smaller(&model, &sparse);
        }
    }

    #[test]
    fn dense_models_and_lightly_pruned_weights_stay_as_they_are() {
        let model = small_cnn();
        let (same, report) = to_sparse(&model).unwrap();
        assert!(report.is_empty());
        assert_eq!(same.to_bytes().unwrap(), model.to_bytes().unwrap());
        // A tenth of zeros is below the converter's 30%.
        let mut light = small_cnn();
        let name = "dense1/weights";
        let tensor = light.subgraphs[0]
            .tensors
            .iter()
            .find(|t| t.name == name)
            .unwrap()
            .clone();
        let mut bytes = light.tensor_data(&tensor).to_vec();
        for chunk in bytes.chunks_exact_mut(40) {
            chunk[..4].fill(0);
        }
        let buffer = light.push_buffer(bytes);
        light.subgraphs[0]
            .tensors
            .iter_mut()
            .find(|t| t.name == name)
            .unwrap()
            .buffer = buffer;
        let (_, report) = to_sparse(&light).unwrap();
        assert!(report.is_empty());
    }
}
