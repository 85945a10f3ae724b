//! The owned model IR: a TensorFlow Lite model as plain Rust data. Reading and writing convert
//! between this and the flatbuffer; every transform in Kiln works on this.

use crate::bytes::SharedBytes;
use crate::options::BuiltinOptions;
use crate::types::{BuiltinOp, TensorType};

/// The schema version this crate reads and writes.
pub const SCHEMA_VERSION: u32 = 3;

#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub version: u32,
    pub description: Option<String>,
    pub operator_codes: Vec<OperatorCode>,
    pub subgraphs: Vec<Subgraph>,
    /// Buffer 0 is by convention the empty sentinel that tensors without data point to.
    pub buffers: Vec<Buffer>,
    pub metadata: Vec<Metadata>,
    pub signature_defs: Vec<SignatureDef>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct OperatorCode {
    pub builtin: BuiltinOp,
    pub custom_code: Option<String>,
    pub version: i32,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Subgraph {
    pub name: Option<String>,
    pub tensors: Vec<Tensor>,
    pub inputs: Vec<i32>,
    pub outputs: Vec<i32>,
    pub operators: Vec<Operator>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<i32>,
    /// Like `shape` but with -1 for dimensions that are dynamic (e.g. the batch).
    pub shape_signature: Option<Vec<i32>>,
    pub dtype: TensorType,
    /// Index into `Model::buffers`; 0 (or an empty buffer) means the tensor has no constant data.
    pub buffer: u32,
    pub quantization: Option<Quantization>,
    pub sparsity: Option<Sparsity>,
    pub is_variable: bool,
}

/// Affine quantization: real = scale × (q − zero_point), per tensor (one scale) or per channel
/// along `quantized_dimension`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Quantization {
    pub scale: Vec<f32>,
    pub zero_point: Vec<i64>,
    pub min: Vec<f32>,
    pub max: Vec<f32>,
    pub quantized_dimension: i32,
    /// Set when the file carries a non-affine (custom) quantization the IR does not model.
    pub has_custom_details: bool,
}

impl Quantization {
    /// True when the parameters describe an affine quantization (scale and zero point set).
    pub fn is_affine(&self) -> bool {
        !self.scale.is_empty()
    }
}

/// Sparse storage of a constant tensor (TACO format), densified by the DENSIFY operator.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Sparsity {
    pub traversal_order: Vec<i32>,
    pub block_map: Vec<i32>,
    pub dim_metadata: Vec<DimensionMetadata>,
}

impl Sparsity {
    /// Bytes of the segment and index vectors as the writer stores them, each in the
    /// narrowest type that holds it ([`index_width`]).
    pub fn index_bytes(&self) -> usize {
        self.dim_metadata
            .iter()
            .map(|d| match d {
                DimensionMetadata::Dense { .. } => 0,
                DimensionMetadata::SparseCsr { segments, indices } => {
                    segments.len() * index_width(segments) + indices.len() * index_width(indices)
                }
            })
            .sum()
    }
}

/// Bytes per value of the narrowest sparse index vector type holding every one of `values`,
/// as the TFLite converter writes them: 1 (uint8, up to 255), 2 (uint16, up to 65535) or 4
/// (int32).
pub fn index_width(values: &[i32]) -> usize {
    if values.iter().all(|&v| u8::try_from(v).is_ok()) {
        1
    } else if values.iter().all(|&v| u16::try_from(v).is_ok()) {
        2
    } else {
        4
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum DimensionMetadata {
    Dense {
        size: i32,
    },
    SparseCsr {
        segments: Vec<i32>,
        indices: Vec<i32>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Operator {
    pub opcode_index: u32,
    pub inputs: Vec<i32>,
    pub outputs: Vec<i32>,
    pub options: BuiltinOptions,
    pub custom_options: Option<Vec<u8>>,
    pub intermediates: Vec<i32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    pub data: SharedBytes,
}

impl Buffer {
    pub fn empty() -> Self {
        Self {
            data: SharedBytes::empty(),
        }
    }

    pub fn from_vec(data: Vec<u8>) -> Self {
        Self {
            data: SharedBytes::from(data),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Metadata {
    pub name: String,
    pub buffer: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SignatureDef {
    pub key: String,
    pub subgraph_index: u32,
    pub inputs: Vec<TensorMap>,
    pub outputs: Vec<TensorMap>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TensorMap {
    pub name: String,
    pub tensor_index: u32,
}

impl Model {
    /// An empty model with the sentinel buffer 0 in place.
    pub fn new(description: impl Into<String>) -> Self {
        Self {
            version: SCHEMA_VERSION,
            description: Some(description.into()),
            operator_codes: Vec::new(),
            subgraphs: Vec::new(),
            buffers: vec![Buffer::empty()],
            metadata: Vec::new(),
            signature_defs: Vec::new(),
        }
    }

    /// The operator code of `op`, if its index is in range.
    pub fn opcode_of(&self, op: &Operator) -> Option<&OperatorCode> {
        self.operator_codes.get(op.opcode_index as usize)
    }

    /// The constant data of a tensor (empty when it has none or the index is out of range).
    pub fn tensor_data(&self, tensor: &Tensor) -> &[u8] {
        self.buffers
            .get(tensor.buffer as usize)
            .map(|b| b.data.as_slice())
            .unwrap_or(&[])
    }

    /// Index of the operator code for (op, version), appending it if new.
    pub fn intern_opcode(&mut self, builtin: BuiltinOp, version: i32) -> u32 {
        if let Some(i) = self
            .operator_codes
            .iter()
            .position(|c| c.builtin == builtin && c.version == version && c.custom_code.is_none())
        {
            return i as u32;
        }
        self.operator_codes.push(OperatorCode {
            builtin,
            custom_code: None,
            version,
        });
        (self.operator_codes.len() - 1) as u32
    }

    /// Appends a buffer and returns its index.
    pub fn push_buffer(&mut self, data: Vec<u8>) -> u32 {
        self.buffers.push(Buffer::from_vec(data));
        (self.buffers.len() - 1) as u32
    }

    /// The metadata entry named `name`, with its bytes.
    pub fn metadata_bytes(&self, name: &str) -> Option<&[u8]> {
        let entry = self.metadata.iter().find(|m| m.name == name)?;
        self.buffers
            .get(entry.buffer as usize)
            .map(|b| b.data.as_slice())
    }
}

impl Tensor {
    /// A plain (unquantized, dense, non-variable) tensor of `dtype` with a static `shape`,
    /// its data in buffer `buffer` (0: none). Dimensions past i32's range saturate, which the
    /// reader then rejects as too large.
    pub fn new(name: &str, shape: &[usize], dtype: TensorType, buffer: u32) -> Self {
        Self {
            name: name.into(),
            shape: shape
                .iter()
                .map(|&d| i32::try_from(d).unwrap_or(i32::MAX))
                .collect(),
            shape_signature: None,
            dtype,
            buffer,
            quantization: None,
            sparsity: None,
            is_variable: false,
        }
    }

    /// Number of elements, or `None` when a dimension is negative (dynamic) or it overflows.
    pub fn num_elements(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |acc, &d| {
            usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
        })
    }

    /// Bytes of a dense tensor of this shape and type, when both are known.
    pub fn byte_size(&self) -> Option<usize> {
        self.num_elements()?.checked_mul(self.dtype.element_size()?)
    }
}
