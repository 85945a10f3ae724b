//! Round-trip tests: IR → bytes → IR must be lossless for everything Kiln models.

use crate::*;

fn sample_model() -> Model {
    let mut model = Model::new("round trip");
    let weights = model.push_buffer((0..36u8).collect());
    let conv = model.intern_opcode(BuiltinOp::CONV_2D, 1);
    let big = model.intern_opcode(BuiltinOp(150), 1);
    let tensor = |name: &str, shape: &[usize], buffer: u32| {
        Tensor::new(name, shape, TensorType::Float32, buffer)
    };
    let mut quantized = tensor("q", &[1, 3], 0);
    quantized.dtype = TensorType::Int8;
    quantized.quantization = Some(Quantization {
        scale: vec![0.5, 0.25, 0.125],
        zero_point: vec![0, 0, 0],
        quantized_dimension: 1,
        ..Default::default()
    });
    let mut sparse = tensor("s", &[2, 2], 0);
    sparse.sparsity = Some(Sparsity {
        traversal_order: vec![0, 1],
        block_map: vec![],
        dim_metadata: vec![
            DimensionMetadata::Dense { size: 2 },
            DimensionMetadata::SparseCsr {
                segments: vec![0, 1, 2],
                indices: vec![1, 0],
            },
        ],
    });
    model.subgraphs.push(Subgraph {
        name: Some("main".into()),
        tensors: vec![
            tensor("in", &[1, 4, 4, 1], 0),
            tensor("w", &[1, 3, 3, 1], weights),
            tensor("out", &[1, 2, 2, 1], 0),
            quantized,
            sparse,
        ],
        inputs: vec![0],
        outputs: vec![2],
        operators: vec![
            Operator {
                opcode_index: conv,
                inputs: vec![0, 1, -1],
                outputs: vec![2],
                options: BuiltinOptions::Conv2D(Conv2DOptions {
                    padding: Padding::Valid,
                    stride_w: 1,
                    stride_h: 1,
                    activation: Activation::Relu,
                    dilation_w: 1,
                    dilation_h: 1,
                }),
                custom_options: None,
                intermediates: vec![],
            },
            Operator {
                opcode_index: big,
                inputs: vec![2],
                outputs: vec![3],
                options: BuiltinOptions::Reshape {
                    new_shape: Some(vec![1, 4]),
                },
                custom_options: None,
                intermediates: vec![],
            },
        ],
    });
    let labels = model.push_buffer(b"zero\none\n".to_vec());
    model.metadata.push(Metadata {
        name: "labels".into(),
        buffer: labels,
    });
    model.signature_defs.push(SignatureDef {
        key: "serving_default".into(),
        subgraph_index: 0,
        inputs: vec![TensorMap {
            name: "image".into(),
            tensor_index: 0,
        }],
        outputs: vec![TensorMap {
            name: "logits".into(),
            tensor_index: 2,
        }],
    });
    model
}

#[test]
fn round_trip_is_lossless() {
    let model = sample_model();
    let bytes = model.to_bytes().unwrap();
    assert_eq!(&bytes[4..8], b"TFL3");
    let read = Model::from_bytes(bytes).unwrap();
    assert_eq!(read, model);
    assert_eq!(read.metadata_bytes("labels"), Some(&b"zero\none\n"[..]));
}

#[test]
fn large_opcodes_use_the_placeholder_byte() {
    let bytes = sample_model().to_bytes().unwrap();
    let read = Model::from_bytes(bytes).unwrap();
    assert_eq!(read.operator_codes[1].builtin, BuiltinOp(150));
}

#[test]
fn buffers_are_aligned_and_borrowed() {
    let bytes = sample_model().to_bytes().unwrap();
    let file = SharedBytes::from(bytes);
    let read = Model::from_bytes(file.clone()).unwrap();
    let weights = &read.buffers[1].data;
    assert!(
        file.shares_storage_with(weights),
        "weights must borrow the file's bytes"
    );
    let offset = weights.as_slice().as_ptr() as usize - file.as_slice().as_ptr() as usize;
    assert_eq!(
        offset % 16,
        0,
        "buffer data must start on a 16-byte boundary"
    );
}

#[test]
fn truncation_and_garbage_are_errors_not_panics() {
    let bytes = sample_model().to_bytes().unwrap();
    for len in 0..bytes.len() {
        let _ = Model::from_bytes(bytes[..len].to_vec());
    }
    assert!(matches!(
        Model::from_bytes(vec![0u8; 3]),
        Err(FormatError::NotTflite(_))
    ));
    assert!(matches!(
        Model::from_bytes(b"\0\0\0\0XXXX".to_vec()),
        Err(FormatError::NotTflite(_))
    ));
    // Flip every bit of every byte: reading must return (Ok or Err), never panic.
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut corrupt = bytes.clone();
            corrupt[i] ^= 1 << bit;
            let _ = Model::from_bytes(corrupt);
        }
    }
}

#[test]
fn unknown_options_are_kept_by_tag_and_refused_on_write() {
    let mut model = sample_model();
    model.subgraphs[0].operators[0].options = BuiltinOptions::Unknown { tag: 200 };
    let err = model.to_bytes().unwrap_err();
    assert!(err.to_string().contains("tag 200"), "{err}");
}

/// Fuzzer finding: the verifier checks a union's value field only when the tag names a known
/// variant, but the reader looked the `array_indices` field up whatever the tag, so a NONE (or
/// unknown) tag with a vtable entry pointing past the end of the file panicked on an
/// out-of-bounds read. The reader now reads the value only through the typed accessors, which
/// check the tag first.
#[test]
fn a_sparse_index_union_with_no_type_is_not_followed() {
    let mut bytes = sample_model().to_bytes().unwrap();
    let (tag_at, entry_at) = {
        let root = generated::root_as_model(&bytes).unwrap();
        let tensor = root.subgraphs().unwrap().get(0).tensors().unwrap().get(4);
        let csr = tensor.sparsity().unwrap().dim_metadata().unwrap().get(1);
        assert!(csr.array_indices_as_uint_8_vector().is_some());
        let table = csr._tab.loc();
        let tag = csr
            ._tab
            .vtable()
            .get(generated::DimensionMetadata::VT_ARRAY_INDICES_TYPE);
        assert!(tag != 0, "the writer stores the tag");
        // The table starts with a signed offset back to its vtable.
        let to_vtable = i32::from_le_bytes(bytes[table..table + 4].try_into().unwrap());
        let vtable = (table as i64 - i64::from(to_vtable)) as usize;
        let entry = vtable + usize::from(generated::DimensionMetadata::VT_ARRAY_INDICES);
        (table + usize::from(tag), entry)
    };
    assert!(
        bytes.len() < 0xfff0,
        "the field must land past the end of the file"
    );
    bytes[entry_at..entry_at + 2].copy_from_slice(&0xfff0u16.to_le_bytes());
    for tag in [0u8, 77] {
        bytes[tag_at] = tag;
        let model = Model::from_bytes(bytes.clone()).expect("an untyped union is legal");
        let sparsity = model.subgraphs[0].tensors[4].sparsity.as_ref().unwrap();
        assert!(matches!(
            &sparsity.dim_metadata[1],
            DimensionMetadata::SparseCsr { segments, indices }
                if segments == &[0, 1, 2] && indices.is_empty()
        ));
    }
}

/// Segments and indices are written in the narrowest vector type (as the converter does:
/// uint8, uint16, else int32) and read back as the same values.
#[test]
fn sparse_index_vectors_take_the_narrowest_type() {
    for (indices, expected) in [
        (vec![0, 7, 255], generated::SparseIndexVector::Uint8Vector),
        (
            vec![0, 256, 65535],
            generated::SparseIndexVector::Uint16Vector,
        ),
        (vec![0, 65536, 3], generated::SparseIndexVector::Int32Vector),
    ] {
        let mut model = sample_model();
        let sparsity = model.subgraphs[0].tensors[4].sparsity.as_mut().unwrap();
        sparsity.dim_metadata[1] = DimensionMetadata::SparseCsr {
            segments: vec![0, 1, 3],
            indices: indices.clone(),
        };
        let bytes = model.to_bytes().unwrap();
        let root = generated::root_as_model(&bytes).unwrap();
        let tensor = root.subgraphs().unwrap().get(0).tensors().unwrap().get(4);
        let csr = tensor.sparsity().unwrap().dim_metadata().unwrap().get(1);
        assert_eq!(csr.array_indices_type(), expected, "{indices:?}");
        assert_eq!(
            csr.array_segments_type(),
            generated::SparseIndexVector::Uint8Vector
        );
        let back = Model::from_bytes(bytes).unwrap();
        assert_eq!(
            back.subgraphs[0].tensors[4]
                .sparsity
                .as_ref()
                .unwrap()
                .dim_metadata[1],
            DimensionMetadata::SparseCsr {
                segments: vec![0, 1, 3],
                indices,
            }
        );
    }
}
