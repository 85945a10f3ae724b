//! Per-layer lowering: one Burn layer → TFLite operators and constants.

use burn::nn::Linear;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use kiln_tflite::{Activation, Padding};

use super::LowerError;
use super::builder::{GraphBuilder, TensorId};
use super::layout::{oihw_to_ohwi, transpose_2d};

/// A parameter's values as f32, row-major in Burn's layout.
pub fn param_values<const D: usize>(
    layer: &str,
    tensor: Tensor<D>,
) -> Result<Vec<f32>, LowerError> {
    let data = tensor.into_data();
    data.as_slice::<f32>()
        .map(<[f32]>::to_vec)
        .map_err(|e| LowerError::Weights {
            layer: layer.to_owned(),
            reason: format!("{e:?}"),
        })
}

fn padding(layer: &str, config: &PaddingConfig2d) -> Result<Padding, LowerError> {
    match config {
        PaddingConfig2d::Valid => Ok(Padding::Valid),
        PaddingConfig2d::Same => Ok(Padding::Same),
        other => Err(LowerError::Unsupported {
            layer: layer.to_owned(),
            reason: format!("padding {other:?} has no TFLite equivalent; use Valid or Same"),
        }),
    }
}

/// CONV_2D from a Burn `Conv2d` (groups 1, dilation 1), with `activation` fused.
pub fn lower_conv2d(
    graph: &mut GraphBuilder,
    name: &str,
    conv: &Conv2d,
    input: TensorId,
    activation: Activation,
) -> Result<TensorId, LowerError> {
    if conv.groups != 1 || conv.dilation != [1, 1] {
        return Err(LowerError::Unsupported {
            layer: name.to_owned(),
            reason: format!(
                "groups {} / dilation {:?} are not lowered yet",
                conv.groups, conv.dilation
            ),
        });
    }
    let weight = conv.weight.val();
    let [o, i, h, w] = weight.dims();
    let filter = oihw_to_ohwi(&param_values(name, weight)?, [o, i, h, w]);
    let filter = graph.constant(&format!("{name}/filter"), &[o, h, w, i], &filter);
    let bias = match &conv.bias {
        Some(bias) => Some(graph.constant(
            &format!("{name}/bias"),
            &[o],
            &param_values(name, bias.val())?,
        )),
        None => None,
    };
    let padding = padding(name, &conv.padding)?;
    Ok(graph.conv2d(name, input, filter, bias, conv.stride, padding, activation))
}

/// Maps Burn's [in, out] dense weight (and the output width) to TFLite's [out, in] weight.
pub type WeightReorder<'a> = &'a dyn Fn(&[f32], usize) -> Vec<f32>;

/// FULLY_CONNECTED from a Burn `Linear`. `reorder` maps Burn's [in, out] weight to TFLite's
/// [out, in] when the input features are not in the same order on both sides (after a flatten).
pub fn lower_linear(
    graph: &mut GraphBuilder,
    name: &str,
    linear: &Linear,
    input: TensorId,
    activation: Activation,
    reorder: Option<WeightReorder<'_>>,
) -> Result<TensorId, LowerError> {
    let weight = linear.weight.val();
    let [rows, cols] = weight.dims();
    let values = param_values(name, weight)?;
    // Kiln's models build `Linear` with Burn's default Row layout: `val()` is [in, out].
    let (in_features, out_features) = (rows, cols);
    let weights = match reorder {
        Some(reorder) => reorder(&values, out_features),
        None => transpose_2d(&values, in_features, out_features),
    };
    let weights = graph.constant(
        &format!("{name}/weights"),
        &[out_features, in_features],
        &weights,
    );
    let bias = match &linear.bias {
        Some(bias) => Some(graph.constant(
            &format!("{name}/bias"),
            &[out_features],
            &param_values(name, bias.val())?,
        )),
        None => None,
    };
    Ok(graph.fully_connected(name, input, weights, bias, activation))
}
