//! Flatbuffer → IR. The flatbuffer is verified first (offsets, bounds, nesting), so a
//! truncated or corrupted file is an error, never a panic or an out-of-bounds read. Buffers
//! borrow the file's bytes.

use flatbuffers::{Vector, VerifierOptions};

use crate::bytes::SharedBytes;
use crate::error::FormatError;
use crate::generated as fb;
use crate::model::*;
use crate::options::*;
use crate::types::{Activation, BuiltinOp, Padding, TensorType};

impl Model {
    /// Parses and verifies a `.tflite` file's bytes. Buffers keep pointing into `bytes`.
    pub fn from_bytes(bytes: impl Into<SharedBytes>) -> Result<Model, FormatError> {
        let file = bytes.into();
        let data = file.as_slice();
        if data.len() < 8 {
            return Err(FormatError::NotTflite(format!(
                "the file is {} bytes, too short to hold a model header",
                data.len()
            )));
        }
        if !fb::model_buffer_has_identifier(data) {
            return Err(FormatError::NotTflite(format!(
                "missing the \"{}\" file identifier at bytes 4..8 (found {:?})",
                fb::MODEL_IDENTIFIER,
                String::from_utf8_lossy(&data[4..8])
            )));
        }
        let options = VerifierOptions {
            max_depth: 64,
            max_tables: 10_000_000,
            // Weights dominate a model's size and are plain byte vectors; allow any size that
            // fits the 2 GiB flatbuffer limit.
            max_apparent_size: 1 << 31,
            ignore_missing_null_terminator: true,
        };
        let root = fb::root_as_model_with_opts(&options, data)?;
        convert_model(&root, &file)
    }

    /// Reads a model file from disk.
    pub fn read_file(path: &std::path::Path) -> Result<Model, FormatError> {
        let bytes = std::fs::read(path).map_err(|source| FormatError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Model::from_bytes(bytes)
    }
}

fn ints(v: Option<Vector<'_, i32>>) -> Vec<i32> {
    v.map(|v| v.iter().collect()).unwrap_or_default()
}

fn convert_model(root: &fb::Model<'_>, file: &SharedBytes) -> Result<Model, FormatError> {
    let operator_codes = root
        .operator_codes()
        .map(|codes| codes.iter().map(convert_opcode).collect())
        .unwrap_or_default();

    let buffers = root
        .buffers()
        .map(|buffers| {
            buffers
                .iter()
                .enumerate()
                .map(|(i, b)| convert_buffer(i, &b, file))
                .collect()
        })
        .transpose()?
        .unwrap_or_default();

    let subgraphs = root
        .subgraphs()
        .map(|subgraphs| subgraphs.iter().map(|s| convert_subgraph(&s)).collect())
        .unwrap_or_default();

    let metadata = root
        .metadata()
        .map(|entries| {
            entries
                .iter()
                .map(|m| Metadata {
                    name: m.name().unwrap_or_default().to_owned(),
                    buffer: m.buffer(),
                })
                .collect()
        })
        .unwrap_or_default();

    let signature_defs = root
        .signature_defs()
        .map(|defs| {
            defs.iter()
                .map(|d| SignatureDef {
                    key: d.signature_key().unwrap_or_default().to_owned(),
                    subgraph_index: d.subgraph_index(),
                    inputs: convert_tensor_maps(d.inputs()),
                    outputs: convert_tensor_maps(d.outputs()),
                })
                .collect()
        })
        .unwrap_or_default();

    Ok(Model {
        version: root.version(),
        description: root.description().map(str::to_owned),
        operator_codes,
        subgraphs,
        buffers,
        metadata,
        signature_defs,
    })
}

fn convert_tensor_maps(
    maps: Option<Vector<'_, flatbuffers::ForwardsUOffset<fb::TensorMap<'_>>>>,
) -> Vec<TensorMap> {
    maps.map(|maps| {
        maps.iter()
            .map(|m| TensorMap {
                name: m.name().unwrap_or_default().to_owned(),
                tensor_index: m.tensor_index(),
            })
            .collect()
    })
    .unwrap_or_default()
}

fn convert_opcode(code: fb::OperatorCode<'_>) -> OperatorCode {
    // Files from before the 127-op limit only fill the deprecated byte; newer ones fill both
    // (with 127 in the byte for large codes). The larger of the two is the real code.
    let builtin = code
        .builtin_code()
        .0
        .max(i32::from(code.deprecated_builtin_code()));
    OperatorCode {
        builtin: BuiltinOp(builtin),
        custom_code: code.custom_code().map(str::to_owned),
        version: code.version(),
    }
}

fn convert_buffer(
    index: usize,
    buffer: &fb::Buffer<'_>,
    file: &SharedBytes,
) -> Result<Buffer, FormatError> {
    // Models over 2 GB keep buffer contents after the flatbuffer and point at them.
    if buffer.offset() > 1 {
        let start = usize::try_from(buffer.offset()).ok();
        let end = start.and_then(|s| s.checked_add(usize::try_from(buffer.size()).ok()?));
        return match (start, end) {
            (Some(start), Some(end)) => file.slice(start..end).map(|data| Buffer { data }).ok_or_else(|| {
                FormatError::Invalid(format!(
                    "buffer {index} points at bytes {start}..{end} beyond the end of the {}-byte file",
                    file.len()
                ))
            }),
            _ => Err(FormatError::Invalid(format!("buffer {index} has an offset/size that overflows"))),
        };
    }
    let Some(data) = buffer.data() else {
        return Ok(Buffer::empty());
    };
    let bytes = data.bytes();
    // The verifier guarantees `bytes` lies inside the file, so this subtraction is in range.
    let start = bytes.as_ptr() as usize - file.as_slice().as_ptr() as usize;
    let data = file
        .slice(start..start + bytes.len())
        .ok_or_else(|| FormatError::Invalid(format!("buffer {index} lies outside the file")))?;
    Ok(Buffer { data })
}

fn convert_subgraph(subgraph: &fb::SubGraph<'_>) -> Subgraph {
    Subgraph {
        name: subgraph.name().map(str::to_owned),
        tensors: subgraph
            .tensors()
            .map(|ts| ts.iter().map(|t| convert_tensor(&t)).collect())
            .unwrap_or_default(),
        inputs: ints(subgraph.inputs()),
        outputs: ints(subgraph.outputs()),
        operators: subgraph
            .operators()
            .map(|ops| ops.iter().map(|o| convert_operator(&o)).collect())
            .unwrap_or_default(),
    }
}

fn convert_tensor(tensor: &fb::Tensor<'_>) -> Tensor {
    Tensor {
        name: tensor.name().unwrap_or_default().to_owned(),
        shape: ints(tensor.shape()),
        shape_signature: tensor.shape_signature().map(|s| s.iter().collect()),
        dtype: TensorType::from_code(tensor.type_().0),
        buffer: tensor.buffer(),
        quantization: tensor.quantization().map(|q| convert_quantization(&q)),
        sparsity: tensor.sparsity().map(|s| convert_sparsity(&s)),
        is_variable: tensor.is_variable(),
    }
}

fn convert_quantization(q: &fb::QuantizationParameters<'_>) -> Quantization {
    Quantization {
        scale: q.scale().map(|v| v.iter().collect()).unwrap_or_default(),
        zero_point: q
            .zero_point()
            .map(|v| v.iter().collect())
            .unwrap_or_default(),
        min: q.min().map(|v| v.iter().collect()).unwrap_or_default(),
        max: q.max().map(|v| v.iter().collect()).unwrap_or_default(),
        quantized_dimension: q.quantized_dimension(),
        has_custom_details: q.details_type() != fb::QuantizationDetails::NONE,
    }
}

fn convert_sparsity(s: &fb::SparsityParameters<'_>) -> Sparsity {
    // Only the typed accessors, which follow a union's offset when its tag names a variant.
    // The verifier checks the offset of those variants only: with a NONE or unknown tag the
    // offset is unverified, and following it (as `array_indices()` does) can leave the file.
    let index_vector = |i32s: Option<fb::Int32Vector<'_>>,
                        u16s: Option<fb::Uint16Vector<'_>>,
                        u8s: Option<fb::Uint8Vector<'_>>|
     -> Vec<i32> {
        if let Some(v) = i32s {
            ints(v.values())
        } else if let Some(v) = u16s.and_then(|v| v.values()) {
            v.iter().map(i32::from).collect()
        } else if let Some(v) = u8s.and_then(|v| v.values()) {
            v.iter().map(i32::from).collect()
        } else {
            Vec::new()
        }
    };
    Sparsity {
        traversal_order: ints(s.traversal_order()),
        block_map: ints(s.block_map()),
        dim_metadata: s
            .dim_metadata()
            .map(|dims| {
                dims.iter()
                    .map(|d| match d.format() {
                        fb::DimensionType::SPARSE_CSR => DimensionMetadata::SparseCsr {
                            segments: index_vector(
                                d.array_segments_as_int_32_vector(),
                                d.array_segments_as_uint_16_vector(),
                                d.array_segments_as_uint_8_vector(),
                            ),
                            indices: index_vector(
                                d.array_indices_as_int_32_vector(),
                                d.array_indices_as_uint_16_vector(),
                                d.array_indices_as_uint_8_vector(),
                            ),
                        },
                        _ => DimensionMetadata::Dense {
                            size: d.dense_size(),
                        },
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn convert_operator(op: &fb::Operator<'_>) -> Operator {
    Operator {
        opcode_index: op.opcode_index(),
        inputs: ints(op.inputs()),
        outputs: ints(op.outputs()),
        options: convert_options(op),
        custom_options: op.custom_options().map(|v| v.bytes().to_vec()),
        intermediates: ints(op.intermediates()),
    }
}

fn padding(p: fb::Padding) -> Padding {
    if p == fb::Padding::VALID {
        Padding::Valid
    } else {
        Padding::Same
    }
}

fn act(a: fb::ActivationFunctionType) -> Activation {
    Activation::from_code(a.0)
}

fn convert_options(op: &fb::Operator<'_>) -> BuiltinOptions {
    use fb::BuiltinOptions as T;
    let tag = op.builtin_options_type();
    let unknown = BuiltinOptions::Unknown { tag: tag.0 };
    match tag {
        T::NONE => BuiltinOptions::None,
        T::Conv2DOptions => op
            .builtin_options_as_conv_2_doptions()
            .map_or(unknown, |o| {
                BuiltinOptions::Conv2D(Conv2DOptions {
                    padding: padding(o.padding()),
                    stride_w: o.stride_w(),
                    stride_h: o.stride_h(),
                    activation: act(o.fused_activation_function()),
                    dilation_w: o.dilation_w_factor(),
                    dilation_h: o.dilation_h_factor(),
                })
            }),
        T::DepthwiseConv2DOptions => {
            op.builtin_options_as_depthwise_conv_2_doptions()
                .map_or(unknown, |o| {
                    BuiltinOptions::DepthwiseConv2D(DepthwiseConv2DOptions {
                        padding: padding(o.padding()),
                        stride_w: o.stride_w(),
                        stride_h: o.stride_h(),
                        depth_multiplier: o.depth_multiplier(),
                        activation: act(o.fused_activation_function()),
                        dilation_w: o.dilation_w_factor(),
                        dilation_h: o.dilation_h_factor(),
                    })
                })
        }
        T::Pool2DOptions => op
            .builtin_options_as_pool_2_doptions()
            .map_or(unknown, |o| {
                BuiltinOptions::Pool2D(Pool2DOptions {
                    padding: padding(o.padding()),
                    stride_w: o.stride_w(),
                    stride_h: o.stride_h(),
                    filter_w: o.filter_width(),
                    filter_h: o.filter_height(),
                    activation: act(o.fused_activation_function()),
                })
            }),
        T::FullyConnectedOptions => {
            op.builtin_options_as_fully_connected_options()
                .map_or(unknown, |o| {
                    BuiltinOptions::FullyConnected(FullyConnectedOptions {
                        activation: act(o.fused_activation_function()),
                        weights_format: o.weights_format().0,
                        keep_num_dims: o.keep_num_dims(),
                        asymmetric_quantize_inputs: o.asymmetric_quantize_inputs(),
                    })
                })
        }
        T::SoftmaxOptions => op
            .builtin_options_as_softmax_options()
            .map_or(unknown, |o| BuiltinOptions::Softmax { beta: o.beta() }),
        T::ConcatenationOptions => {
            op.builtin_options_as_concatenation_options()
                .map_or(unknown, |o| BuiltinOptions::Concatenation {
                    axis: o.axis(),
                    activation: act(o.fused_activation_function()),
                })
        }
        T::AddOptions => {
            op.builtin_options_as_add_options()
                .map_or(unknown, |o| BuiltinOptions::Add {
                    activation: act(o.fused_activation_function()),
                })
        }
        T::MulOptions => {
            op.builtin_options_as_mul_options()
                .map_or(unknown, |o| BuiltinOptions::Mul {
                    activation: act(o.fused_activation_function()),
                })
        }
        T::SubOptions => {
            op.builtin_options_as_sub_options()
                .map_or(unknown, |o| BuiltinOptions::Sub {
                    activation: act(o.fused_activation_function()),
                })
        }
        T::ReshapeOptions => op
            .builtin_options_as_reshape_options()
            .map_or(unknown, |o| BuiltinOptions::Reshape {
                new_shape: o.new_shape().map(|v| v.iter().collect()),
            }),
        T::ResizeBilinearOptions => {
            op.builtin_options_as_resize_bilinear_options()
                .map_or(unknown, |o| BuiltinOptions::ResizeBilinear {
                    align_corners: o.align_corners(),
                    half_pixel_centers: o.half_pixel_centers(),
                })
        }
        T::ReducerOptions => op
            .builtin_options_as_reducer_options()
            .map_or(unknown, |o| BuiltinOptions::Reducer {
                keep_dims: o.keep_dims(),
            }),
        T::SqueezeOptions => op
            .builtin_options_as_squeeze_options()
            .map_or(unknown, |o| BuiltinOptions::Squeeze {
                squeeze_dims: ints(o.squeeze_dims()),
            }),
        T::StridedSliceOptions => {
            op.builtin_options_as_strided_slice_options()
                .map_or(unknown, |o| {
                    BuiltinOptions::StridedSlice(StridedSliceOptions {
                        begin_mask: o.begin_mask(),
                        end_mask: o.end_mask(),
                        ellipsis_mask: o.ellipsis_mask(),
                        new_axis_mask: o.new_axis_mask(),
                        shrink_axis_mask: o.shrink_axis_mask(),
                        offset: o.offset(),
                    })
                })
        }
        T::ShapeOptions => {
            op.builtin_options_as_shape_options()
                .map_or(unknown, |o| BuiltinOptions::Shape {
                    out_type: TensorType::from_code(o.out_type().0),
                })
        }
        T::PackOptions => {
            op.builtin_options_as_pack_options()
                .map_or(unknown, |o| BuiltinOptions::Pack {
                    values_count: o.values_count(),
                    axis: o.axis(),
                })
        }
        T::LeakyReluOptions => op
            .builtin_options_as_leaky_relu_options()
            .map_or(unknown, |o| BuiltinOptions::LeakyRelu { alpha: o.alpha() }),
        T::DepthToSpaceOptions => {
            op.builtin_options_as_depth_to_space_options()
                .map_or(unknown, |o| BuiltinOptions::DepthToSpace {
                    block_size: o.block_size(),
                })
        }
        T::PadOptions => BuiltinOptions::Pad,
        T::PadV2Options => BuiltinOptions::PadV2,
        T::TransposeOptions => BuiltinOptions::Transpose,
        T::DequantizeOptions => BuiltinOptions::Dequantize,
        T::QuantizeOptions => BuiltinOptions::Quantize,
        T::HardSwishOptions => BuiltinOptions::HardSwish,
        T::DensifyOptions => BuiltinOptions::Densify,
        _ => unknown,
    }
}
