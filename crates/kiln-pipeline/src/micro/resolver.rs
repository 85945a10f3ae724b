//! The `MicroMutableOpResolver` registrations a model needs: one `Add…()` per builtin operator
//! it uses, named as in TFLite Micro's `micro_mutable_op_resolver.h`.

use anyhow::{Result, bail};
use kiln_tflite::{BuiltinOp, Model};

/// Every builtin TFLM registers through a method of its own: (schema name, method).
const METHODS: &[(&str, &str)] = &[
    ("ABS", "AddAbs"),
    ("ADD", "AddAdd"),
    ("ADD_N", "AddAddN"),
    ("ARG_MAX", "AddArgMax"),
    ("ARG_MIN", "AddArgMin"),
    ("ASSIGN_VARIABLE", "AddAssignVariable"),
    ("AVERAGE_POOL_2D", "AddAveragePool2D"),
    ("BATCH_MATMUL", "AddBatchMatMul"),
    ("BATCH_TO_SPACE_ND", "AddBatchToSpaceNd"),
    ("BROADCAST_ARGS", "AddBroadcastArgs"),
    ("BROADCAST_TO", "AddBroadcastTo"),
    ("CALL_ONCE", "AddCallOnce"),
    ("CAST", "AddCast"),
    ("CEIL", "AddCeil"),
    ("CONCATENATION", "AddConcatenation"),
    ("CONV_2D", "AddConv2D"),
    ("COS", "AddCos"),
    ("CUMSUM", "AddCumSum"),
    ("DEPTH_TO_SPACE", "AddDepthToSpace"),
    ("DEPTHWISE_CONV_2D", "AddDepthwiseConv2D"),
    ("DEQUANTIZE", "AddDequantize"),
    ("DIV", "AddDiv"),
    ("DYNAMIC_UPDATE_SLICE", "AddDynamicUpdateSlice"),
    ("ELU", "AddElu"),
    ("EMBEDDING_LOOKUP", "AddEmbeddingLookup"),
    ("EQUAL", "AddEqual"),
    ("EXP", "AddExp"),
    ("EXPAND_DIMS", "AddExpandDims"),
    ("FILL", "AddFill"),
    ("FLOOR", "AddFloor"),
    ("FLOOR_DIV", "AddFloorDiv"),
    ("FLOOR_MOD", "AddFloorMod"),
    ("FULLY_CONNECTED", "AddFullyConnected"),
    ("GATHER", "AddGather"),
    ("GATHER_ND", "AddGatherNd"),
    ("GREATER", "AddGreater"),
    ("GREATER_EQUAL", "AddGreaterEqual"),
    ("HARD_SWISH", "AddHardSwish"),
    ("IF", "AddIf"),
    ("L2_NORMALIZATION", "AddL2Normalization"),
    ("L2_POOL_2D", "AddL2Pool2D"),
    ("LEAKY_RELU", "AddLeakyRelu"),
    ("LESS", "AddLess"),
    ("LESS_EQUAL", "AddLessEqual"),
    ("LOG", "AddLog"),
    ("LOG_SOFTMAX", "AddLogSoftmax"),
    ("LOGICAL_AND", "AddLogicalAnd"),
    ("LOGICAL_NOT", "AddLogicalNot"),
    ("LOGICAL_OR", "AddLogicalOr"),
    ("LOGISTIC", "AddLogistic"),
    ("MAX_POOL_2D", "AddMaxPool2D"),
    ("MAXIMUM", "AddMaximum"),
    ("MEAN", "AddMean"),
    ("MINIMUM", "AddMinimum"),
    ("MIRROR_PAD", "AddMirrorPad"),
    ("MUL", "AddMul"),
    ("NEG", "AddNeg"),
    ("NOT_EQUAL", "AddNotEqual"),
    ("PACK", "AddPack"),
    ("PAD", "AddPad"),
    ("PADV2", "AddPadV2"),
    ("PRELU", "AddPrelu"),
    ("QUANTIZE", "AddQuantize"),
    ("READ_VARIABLE", "AddReadVariable"),
    ("REDUCE_ALL", "AddReduceAll"),
    ("REDUCE_MAX", "AddReduceMax"),
    ("REDUCE_MIN", "AddReduceMin"),
    ("RELU", "AddRelu"),
    ("RELU6", "AddRelu6"),
    ("RESHAPE", "AddReshape"),
    ("RESIZE_BILINEAR", "AddResizeBilinear"),
    ("RESIZE_NEAREST_NEIGHBOR", "AddResizeNearestNeighbor"),
    ("REVERSE_V2", "AddReverseV2"),
    ("ROUND", "AddRound"),
    ("RSQRT", "AddRsqrt"),
    ("SELECT_V2", "AddSelectV2"),
    ("SHAPE", "AddShape"),
    ("SIN", "AddSin"),
    ("SLICE", "AddSlice"),
    ("SOFTMAX", "AddSoftmax"),
    ("SPACE_TO_BATCH_ND", "AddSpaceToBatchNd"),
    ("SPACE_TO_DEPTH", "AddSpaceToDepth"),
    ("SPLIT", "AddSplit"),
    ("SPLIT_V", "AddSplitV"),
    ("SQRT", "AddSqrt"),
    ("SQUARE", "AddSquare"),
    ("SQUARED_DIFFERENCE", "AddSquaredDifference"),
    ("SQUEEZE", "AddSqueeze"),
    ("STRIDED_SLICE", "AddStridedSlice"),
    ("SUB", "AddSub"),
    ("SUM", "AddSum"),
    ("SVDF", "AddSvdf"),
    ("TANH", "AddTanh"),
    ("TRANSPOSE", "AddTranspose"),
    ("TRANSPOSE_CONV", "AddTransposeConv"),
    (
        "UNIDIRECTIONAL_SEQUENCE_LSTM",
        "AddUnidirectionalSequenceLSTM",
    ),
    ("UNPACK", "AddUnpack"),
    ("VAR_HANDLE", "AddVarHandle"),
    ("WHILE", "AddWhile"),
    ("ZEROS_LIKE", "AddZerosLike"),
];

/// One registration of the resolver: the operator and the method that adds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub operator: String,
    pub method: &'static str,
}

/// The registrations `model`'s operators need, one per distinct operator, in the order the
/// operators first appear (TFLM rejects adding an operator twice). An operator TFLM has no
/// builtin kernel for (DENSIFY, a custom op) is an error naming it.
pub fn registrations(model: &Model) -> Result<Vec<Registration>> {
    let mut needed: Vec<Registration> = Vec::new();
    for subgraph in &model.subgraphs {
        for op in &subgraph.operators {
            let Some(code) = model.opcode_of(op) else {
                bail!(
                    "an operator refers to operator code {}, which the file does not have",
                    op.opcode_index
                );
            };
            if code.builtin == BuiltinOp::CUSTOM {
                bail!(
                    "the model uses the custom operator '{}', which TFLite Micro's builtin \
                     resolver cannot register: add it with AddCustom() by hand",
                    code.custom_code.as_deref().unwrap_or("?")
                );
            }
            let operator = code.builtin.name();
            let Some(&(_, method)) = METHODS.iter().find(|(name, _)| *name == operator) else {
                bail!(
                    "TFLite Micro has no kernel for {operator}; export a variant without it (for \
                     sparse weights: keep them dense) to run the model on a microcontroller"
                );
            };
            if !needed.iter().any(|r| r.operator == operator) {
                needed.push(Registration { operator, method });
            }
        }
    }
    Ok(needed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_is_tflms_name_for_its_operator() {
        for (operator, method) in METHODS {
            // AddConv2D for CONV_2D, AddBatchToSpaceNd for BATCH_TO_SPACE_ND, …: the method is
            // the operator in camel case (TFLM keeps "2D", "LSTM" and "V2" upper case).
            let camel: String = operator
                .split('_')
                .map(|word| {
                    let lower = word.to_ascii_lowercase();
                    let mut chars = lower.chars();
                    chars.next().map_or(String::new(), |first| {
                        first.to_ascii_uppercase().to_string() + chars.as_str()
                    })
                })
                .collect();
            let normalize = |s: &str| s.to_ascii_lowercase().replace('_', "");
            assert_eq!(
                normalize(&format!("Add{camel}")),
                normalize(method),
                "{operator}"
            );
        }
        let names: std::collections::HashSet<_> = METHODS.iter().map(|(name, _)| name).collect();
        assert_eq!(names.len(), METHODS.len(), "an operator is listed twice");
    }
}
