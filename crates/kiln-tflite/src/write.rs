//! IR → flatbuffer. Buffer contents are 16-byte aligned in the output, as the TFLite
//! converter writes them, so runtimes may read weights in place.

use flatbuffers::{FlatBufferBuilder, Push, UnionWIPOffset, WIPOffset};

use crate::error::FormatError;
use crate::generated as fb;
use crate::model::*;
use crate::options::*;
use crate::types::{Activation, BuiltinOp, Padding, TensorType};

/// A zero-sized value whose only effect when pushed is to align the builder to 16 bytes.
#[repr(C, align(16))]
struct Align16;

impl Push for Align16 {
    type Output = Align16;
    unsafe fn push(&self, _dst: &mut [u8], _written_len: usize) {}
}

impl Model {
    /// Serializes the model to `.tflite` bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, FormatError> {
        let mut fbb = FlatBufferBuilder::with_capacity(
            self.buffers
                .iter()
                .map(|b| b.data.len() + 32)
                .sum::<usize>()
                + 64 * 1024,
        );
        // Buffers first: they are the bulk of the file, and writing them first places them at
        // the end of the output, after the small tables.
        let buffers: Vec<_> = self
            .buffers
            .iter()
            .map(|buffer| {
                let data = (!buffer.data.is_empty())
                    .then(|| aligned_bytes(&mut fbb, buffer.data.as_slice()));
                fb::Buffer::create(
                    &mut fbb,
                    &fb::BufferArgs {
                        data,
                        offset: 0,
                        size: 0,
                    },
                )
            })
            .collect();
        let buffers = fbb.create_vector(&buffers);

        let codes: Vec<_> = self
            .operator_codes
            .iter()
            .map(|code| {
                let custom_code = code.custom_code.as_deref().map(|c| fbb.create_string(c));
                fb::OperatorCode::create(
                    &mut fbb,
                    &fb::OperatorCodeArgs {
                        deprecated_builtin_code: code
                            .builtin
                            .0
                            .min(BuiltinOp::PLACEHOLDER_FOR_GREATER_OP_CODES.0)
                            as i8,
                        custom_code,
                        version: code.version,
                        builtin_code: fb::BuiltinOperator(code.builtin.0),
                    },
                )
            })
            .collect();
        let codes = fbb.create_vector(&codes);

        let mut subgraphs = Vec::with_capacity(self.subgraphs.len());
        for (index, subgraph) in self.subgraphs.iter().enumerate() {
            subgraphs.push(write_subgraph(&mut fbb, subgraph).map_err(|e| e.in_subgraph(index))?);
        }
        let subgraphs = fbb.create_vector(&subgraphs);

        let metadata: Vec<_> = self
            .metadata
            .iter()
            .map(|m| {
                let name = Some(fbb.create_string(&m.name));
                fb::Metadata::create(
                    &mut fbb,
                    &fb::MetadataArgs {
                        name,
                        buffer: m.buffer,
                    },
                )
            })
            .collect();
        let metadata = (!metadata.is_empty()).then(|| fbb.create_vector(&metadata));

        let signature_defs: Vec<_> = self
            .signature_defs
            .iter()
            .map(|def| {
                let inputs = write_tensor_maps(&mut fbb, &def.inputs);
                let outputs = write_tensor_maps(&mut fbb, &def.outputs);
                let signature_key = Some(fbb.create_string(&def.key));
                fb::SignatureDef::create(
                    &mut fbb,
                    &fb::SignatureDefArgs {
                        inputs: Some(inputs),
                        outputs: Some(outputs),
                        signature_key,
                        subgraph_index: def.subgraph_index,
                    },
                )
            })
            .collect();
        let signature_defs =
            (!signature_defs.is_empty()).then(|| fbb.create_vector(&signature_defs));

        let description = self.description.as_deref().map(|d| fbb.create_string(d));
        let root = fb::Model::create(
            &mut fbb,
            &fb::ModelArgs {
                version: self.version,
                operator_codes: Some(codes),
                subgraphs: Some(subgraphs),
                description,
                buffers: Some(buffers),
                metadata_buffer: None,
                metadata,
                signature_defs,
            },
        );
        fb::finish_model_buffer(&mut fbb, root);
        Ok(fbb.finished_data().to_vec())
    }

    /// Writes the model to `path` atomically: a temporary file in the same directory, then a
    /// rename, so a crash never leaves a half-written model behind.
    pub fn write_file(&self, path: &std::path::Path) -> Result<(), FormatError> {
        let bytes = self.to_bytes()?;
        write_atomically(path, &bytes).map_err(|source| FormatError::Io {
            path: path.display().to_string(),
            source,
        })
    }
}

/// Writes `bytes` to `path` through a temporary sibling file and a rename.
pub fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A byte vector whose first byte lands on a 16-byte boundary of the finished buffer.
fn aligned_bytes<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    data: &[u8],
) -> WIPOffset<flatbuffers::Vector<'a, u8>> {
    // The builder writes back to front: after aligning the tail to 16, pad so that the data
    // (pushed next) ends exactly on the aligned tail and therefore starts on a multiple of 16.
    fbb.push(Align16);
    for _ in 0..(16 - data.len() % 16) % 16 {
        fbb.push(0u8);
    }
    fbb.create_vector(data)
}

fn write_tensor_maps<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    maps: &[TensorMap],
) -> WIPOffset<flatbuffers::Vector<'a, flatbuffers::ForwardsUOffset<fb::TensorMap<'a>>>> {
    let maps: Vec<_> = maps
        .iter()
        .map(|m| {
            let name = Some(fbb.create_string(&m.name));
            fb::TensorMap::create(
                fbb,
                &fb::TensorMapArgs {
                    name,
                    tensor_index: m.tensor_index,
                },
            )
        })
        .collect();
    fbb.create_vector(&maps)
}

fn write_subgraph<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    subgraph: &Subgraph,
) -> Result<WIPOffset<fb::SubGraph<'a>>, FormatError> {
    let tensors: Vec<_> = subgraph
        .tensors
        .iter()
        .map(|t| write_tensor(fbb, t))
        .collect();
    let tensors = fbb.create_vector(&tensors);
    let mut operators = Vec::with_capacity(subgraph.operators.len());
    for (index, op) in subgraph.operators.iter().enumerate() {
        operators.push(write_operator(fbb, op).map_err(|e| e.in_operator(index))?);
    }
    let operators = fbb.create_vector(&operators);
    let inputs = fbb.create_vector(&subgraph.inputs);
    let outputs = fbb.create_vector(&subgraph.outputs);
    let name = subgraph.name.as_deref().map(|n| fbb.create_string(n));
    Ok(fb::SubGraph::create(
        fbb,
        &fb::SubGraphArgs {
            tensors: Some(tensors),
            inputs: Some(inputs),
            outputs: Some(outputs),
            operators: Some(operators),
            name,
        },
    ))
}

fn write_tensor<'a>(fbb: &mut FlatBufferBuilder<'a>, tensor: &Tensor) -> WIPOffset<fb::Tensor<'a>> {
    let shape = Some(fbb.create_vector(&tensor.shape));
    let shape_signature = tensor
        .shape_signature
        .as_ref()
        .map(|s| fbb.create_vector(s));
    let name = Some(fbb.create_string(&tensor.name));
    let quantization = tensor.quantization.as_ref().map(|q| {
        let min = (!q.min.is_empty()).then(|| fbb.create_vector(&q.min));
        let max = (!q.max.is_empty()).then(|| fbb.create_vector(&q.max));
        let scale = (!q.scale.is_empty()).then(|| fbb.create_vector(&q.scale));
        let zero_point = (!q.zero_point.is_empty()).then(|| fbb.create_vector(&q.zero_point));
        fb::QuantizationParameters::create(
            fbb,
            &fb::QuantizationParametersArgs {
                min,
                max,
                scale,
                zero_point,
                details_type: fb::QuantizationDetails::NONE,
                details: None,
                quantized_dimension: q.quantized_dimension,
            },
        )
    });
    let sparsity = tensor.sparsity.as_ref().map(|s| write_sparsity(fbb, s));
    fb::Tensor::create(
        fbb,
        &fb::TensorArgs {
            shape,
            type_: fb::TensorType(tensor.dtype.code()),
            buffer: tensor.buffer,
            name,
            quantization,
            is_variable: tensor.is_variable,
            sparsity,
            shape_signature,
            has_rank: false,
        },
    )
}

fn write_sparsity<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    s: &Sparsity,
) -> WIPOffset<fb::SparsityParameters<'a>> {
    let dims: Vec<_> = s
        .dim_metadata
        .iter()
        .map(|d| match d {
            DimensionMetadata::Dense { size } => fb::DimensionMetadata::create(
                fbb,
                &fb::DimensionMetadataArgs {
                    format: fb::DimensionType::DENSE,
                    dense_size: *size,
                    ..Default::default()
                },
            ),
            DimensionMetadata::SparseCsr { segments, indices } => {
                let (segments_type, segments) = write_index_vector(fbb, segments);
                let (indices_type, indices) = write_index_vector(fbb, indices);
                fb::DimensionMetadata::create(
                    fbb,
                    &fb::DimensionMetadataArgs {
                        format: fb::DimensionType::SPARSE_CSR,
                        dense_size: 0,
                        array_segments_type: segments_type,
                        array_segments: Some(segments),
                        array_indices_type: indices_type,
                        array_indices: Some(indices),
                    },
                )
            }
        })
        .collect();
    let dim_metadata = Some(fbb.create_vector(&dims));
    let traversal_order = Some(fbb.create_vector(&s.traversal_order));
    let block_map = (!s.block_map.is_empty()).then(|| fbb.create_vector(&s.block_map));
    fb::SparsityParameters::create(
        fbb,
        &fb::SparsityParametersArgs {
            traversal_order,
            block_map,
            dim_metadata,
        },
    )
}

/// A sparse dimension's segments or indices in the narrowest vector type that holds them all
/// ([`index_width`]), as the TFLite converter writes them.
fn write_index_vector(
    fbb: &mut FlatBufferBuilder<'_>,
    values: &[i32],
) -> (fb::SparseIndexVector, WIPOffset<UnionWIPOffset>) {
    // The casts are exact: `index_width` checked every value fits.
    match index_width(values) {
        1 => {
            let bytes: Vec<u8> = values.iter().map(|&v| v as u8).collect();
            let values = Some(fbb.create_vector(&bytes));
            let vector = fb::Uint8Vector::create(fbb, &fb::Uint8VectorArgs { values });
            (fb::SparseIndexVector::Uint8Vector, vector.as_union_value())
        }
        2 => {
            let shorts: Vec<u16> = values.iter().map(|&v| v as u16).collect();
            let values = Some(fbb.create_vector(&shorts));
            let vector = fb::Uint16Vector::create(fbb, &fb::Uint16VectorArgs { values });
            (fb::SparseIndexVector::Uint16Vector, vector.as_union_value())
        }
        _ => {
            let values = Some(fbb.create_vector(values));
            let vector = fb::Int32Vector::create(fbb, &fb::Int32VectorArgs { values });
            (fb::SparseIndexVector::Int32Vector, vector.as_union_value())
        }
    }
}

fn fb_padding(p: Padding) -> fb::Padding {
    match p {
        Padding::Same => fb::Padding::SAME,
        Padding::Valid => fb::Padding::VALID,
    }
}

fn fb_act(a: Activation) -> fb::ActivationFunctionType {
    fb::ActivationFunctionType(a.code())
}

fn write_operator<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    op: &Operator,
) -> Result<WIPOffset<fb::Operator<'a>>, FormatError> {
    let (options_type, options) = write_options(fbb, &op.options)?;
    let inputs = Some(fbb.create_vector(&op.inputs));
    let outputs = Some(fbb.create_vector(&op.outputs));
    let custom_options = op.custom_options.as_ref().map(|c| fbb.create_vector(c));
    let intermediates =
        (!op.intermediates.is_empty()).then(|| fbb.create_vector(&op.intermediates));
    Ok(fb::Operator::create(
        fbb,
        &fb::OperatorArgs {
            opcode_index: op.opcode_index,
            inputs,
            outputs,
            builtin_options_type: options_type,
            builtin_options: options,
            custom_options,
            intermediates,
            ..Default::default()
        },
    ))
}

type OptionsOffset = (fb::BuiltinOptions, Option<WIPOffset<UnionWIPOffset>>);

fn write_options(
    fbb: &mut FlatBufferBuilder<'_>,
    options: &BuiltinOptions,
) -> Result<OptionsOffset, FormatError> {
    use fb::BuiltinOptions as T;
    macro_rules! table {
        ($tag:expr, $table:ident, $args:expr) => {
            ($tag, Some(fb::$table::create(fbb, &$args).as_union_value()))
        };
    }
    Ok(match options {
        BuiltinOptions::None => (T::NONE, None),
        BuiltinOptions::Conv2D(o) => table!(
            T::Conv2DOptions,
            Conv2DOptions,
            fb::Conv2DOptionsArgs {
                padding: fb_padding(o.padding),
                stride_w: o.stride_w,
                stride_h: o.stride_h,
                fused_activation_function: fb_act(o.activation),
                dilation_w_factor: o.dilation_w,
                dilation_h_factor: o.dilation_h,
                quantized_bias_type: fb::TensorType::FLOAT32,
            }
        ),
        BuiltinOptions::DepthwiseConv2D(o) => table!(
            T::DepthwiseConv2DOptions,
            DepthwiseConv2DOptions,
            fb::DepthwiseConv2DOptionsArgs {
                padding: fb_padding(o.padding),
                stride_w: o.stride_w,
                stride_h: o.stride_h,
                depth_multiplier: o.depth_multiplier,
                fused_activation_function: fb_act(o.activation),
                dilation_w_factor: o.dilation_w,
                dilation_h_factor: o.dilation_h,
            }
        ),
        BuiltinOptions::Pool2D(o) => table!(
            T::Pool2DOptions,
            Pool2DOptions,
            fb::Pool2DOptionsArgs {
                padding: fb_padding(o.padding),
                stride_w: o.stride_w,
                stride_h: o.stride_h,
                filter_width: o.filter_w,
                filter_height: o.filter_h,
                fused_activation_function: fb_act(o.activation),
            }
        ),
        BuiltinOptions::FullyConnected(o) => table!(
            T::FullyConnectedOptions,
            FullyConnectedOptions,
            fb::FullyConnectedOptionsArgs {
                fused_activation_function: fb_act(o.activation),
                weights_format: fb::FullyConnectedOptionsWeightsFormat(o.weights_format),
                keep_num_dims: o.keep_num_dims,
                asymmetric_quantize_inputs: o.asymmetric_quantize_inputs,
                quantized_bias_type: fb::TensorType::FLOAT32,
            }
        ),
        BuiltinOptions::Softmax { beta } => {
            table!(
                T::SoftmaxOptions,
                SoftmaxOptions,
                fb::SoftmaxOptionsArgs { beta: *beta }
            )
        }
        BuiltinOptions::Concatenation { axis, activation } => table!(
            T::ConcatenationOptions,
            ConcatenationOptions,
            fb::ConcatenationOptionsArgs {
                axis: *axis,
                fused_activation_function: fb_act(*activation)
            }
        ),
        BuiltinOptions::Add { activation } => table!(
            T::AddOptions,
            AddOptions,
            fb::AddOptionsArgs {
                fused_activation_function: fb_act(*activation),
                pot_scale_int16: true
            }
        ),
        BuiltinOptions::Mul { activation } => table!(
            T::MulOptions,
            MulOptions,
            fb::MulOptionsArgs {
                fused_activation_function: fb_act(*activation)
            }
        ),
        BuiltinOptions::Sub { activation } => table!(
            T::SubOptions,
            SubOptions,
            fb::SubOptionsArgs {
                fused_activation_function: fb_act(*activation),
                pot_scale_int16: true
            }
        ),
        BuiltinOptions::Reshape { new_shape } => {
            let new_shape = new_shape.as_ref().map(|s| fbb.create_vector(s));
            table!(
                T::ReshapeOptions,
                ReshapeOptions,
                fb::ReshapeOptionsArgs { new_shape }
            )
        }
        BuiltinOptions::ResizeBilinear {
            align_corners,
            half_pixel_centers,
        } => table!(
            T::ResizeBilinearOptions,
            ResizeBilinearOptions,
            fb::ResizeBilinearOptionsArgs {
                align_corners: *align_corners,
                half_pixel_centers: *half_pixel_centers
            }
        ),
        BuiltinOptions::Reducer { keep_dims } => {
            table!(
                T::ReducerOptions,
                ReducerOptions,
                fb::ReducerOptionsArgs {
                    keep_dims: *keep_dims
                }
            )
        }
        BuiltinOptions::Squeeze { squeeze_dims } => {
            let squeeze_dims = Some(fbb.create_vector(squeeze_dims));
            table!(
                T::SqueezeOptions,
                SqueezeOptions,
                fb::SqueezeOptionsArgs { squeeze_dims }
            )
        }
        BuiltinOptions::StridedSlice(o) => table!(
            T::StridedSliceOptions,
            StridedSliceOptions,
            fb::StridedSliceOptionsArgs {
                begin_mask: o.begin_mask,
                end_mask: o.end_mask,
                ellipsis_mask: o.ellipsis_mask,
                new_axis_mask: o.new_axis_mask,
                shrink_axis_mask: o.shrink_axis_mask,
                offset: o.offset,
            }
        ),
        BuiltinOptions::Shape { out_type } => table!(
            T::ShapeOptions,
            ShapeOptions,
            fb::ShapeOptionsArgs {
                out_type: fb::TensorType(TensorType::code(*out_type))
            }
        ),
        BuiltinOptions::Pack { values_count, axis } => table!(
            T::PackOptions,
            PackOptions,
            fb::PackOptionsArgs {
                values_count: *values_count,
                axis: *axis
            }
        ),
        BuiltinOptions::LeakyRelu { alpha } => {
            table!(
                T::LeakyReluOptions,
                LeakyReluOptions,
                fb::LeakyReluOptionsArgs { alpha: *alpha }
            )
        }
        BuiltinOptions::DepthToSpace { block_size } => table!(
            T::DepthToSpaceOptions,
            DepthToSpaceOptions,
            fb::DepthToSpaceOptionsArgs {
                block_size: *block_size
            }
        ),
        BuiltinOptions::Pad => table!(T::PadOptions, PadOptions, fb::PadOptionsArgs {}),
        BuiltinOptions::PadV2 => table!(T::PadV2Options, PadV2Options, fb::PadV2OptionsArgs {}),
        BuiltinOptions::Transpose => table!(
            T::TransposeOptions,
            TransposeOptions,
            fb::TransposeOptionsArgs {}
        ),
        BuiltinOptions::Dequantize => table!(
            T::DequantizeOptions,
            DequantizeOptions,
            fb::DequantizeOptionsArgs {}
        ),
        BuiltinOptions::Quantize => table!(
            T::QuantizeOptions,
            QuantizeOptions,
            fb::QuantizeOptionsArgs {}
        ),
        BuiltinOptions::HardSwish => table!(
            T::HardSwishOptions,
            HardSwishOptions,
            fb::HardSwishOptionsArgs {}
        ),
        BuiltinOptions::Densify => {
            table!(T::DensifyOptions, DensifyOptions, fb::DensifyOptionsArgs {})
        }
        BuiltinOptions::Unknown { tag } => {
            return Err(FormatError::UnwritableOptions { tag: *tag });
        }
    })
}
