//! A Burn `Conv2d` (optionally followed by `BatchNorm`) → CONV_2D or DEPTHWISE_CONV_2D, BN
//! folded, padding resolved for the input's size, the activation fused.

use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use kiln_tflite::Activation;

use super::LowerError;
use super::batch_norm::fold_batch_norm;
use super::builder::{GraphBuilder, TensorId};
use super::layout::{depthwise_oihw_to_1hwo, oihw_to_ohwi};
use super::padding::lower_padding;

/// Lowers `conv` (then `bn`, when given) applied to the NHWC tensor `input`. Groups 1 become
/// CONV_2D; groups equal to the input channels (one input channel per group) become
/// DEPTHWISE_CONV_2D. `activation` is fused into the convolution.
pub fn lower_conv_bn(
    graph: &mut GraphBuilder,
    name: &str,
    conv: &Conv2d,
    bn: Option<&BatchNorm>,
    input: TensorId,
    activation: Activation,
) -> Result<TensorId, LowerError> {
    let unsupported = |reason: String| LowerError::Unsupported {
        layer: name.to_owned(),
        reason,
    };
    if conv.dilation != [1, 1] {
        return Err(unsupported(format!(
            "dilation {:?} is not lowered",
            conv.dilation
        )));
    }
    let in_channels = graph.shape(input).get(3).copied().unwrap_or(0);
    let folded = fold_batch_norm(name, conv, bn)?;
    let [o, i, kh, kw] = folded.shape;
    let depthwise = conv.groups > 1 && i == 1 && conv.groups == in_channels;
    if !depthwise && (conv.groups != 1 || i != in_channels) {
        return Err(unsupported(format!(
            "filter [{o}, {i}, {kh}, {kw}] with groups {} on {in_channels} input channels: only \
             plain (groups 1) and depthwise (groups = input channels) convolutions lower",
            conv.groups
        )));
    }
    let (input, padding) = lower_padding(graph, name, &conv.padding, input, [kh, kw], conv.stride)?;
    let bias = graph.constant(&format!("{name}/bias"), &[o], &folded.bias);
    let output = if depthwise {
        let filter = depthwise_oihw_to_1hwo(&folded.weights, [o, kh, kw]);
        let filter = graph.constant(&format!("{name}/filter"), &[1, kh, kw, o], &filter);
        graph.depthwise_conv2d(
            name,
            input,
            filter,
            Some(bias),
            conv.stride,
            padding,
            activation,
        )
    } else {
        let filter = oihw_to_ohwi(&folded.weights, folded.shape);
        let filter = graph.constant(&format!("{name}/filter"), &[o, kh, kw, i], &filter);
        graph.conv2d(
            name,
            input,
            filter,
            Some(bias),
            conv.stride,
            padding,
            activation,
        )
    };
    Ok(output)
}

#[cfg(test)]
mod tests {
    use burn::module::{Param, RunningState};
    use burn::nn::conv::Conv2dConfig;
    use burn::nn::{BatchNormConfig, PaddingConfig2d};
    use burn::prelude::*;
    use burn::tensor::Distribution;
    use kiln_runtime::Interpreter;
    use kiln_tflite::BuiltinOp;

    use super::*;
    use crate::lowering::chw_to_hwc;

    /// Conv → BN (non-trivial statistics) in Burn against the lowered graph in kiln-runtime,
    /// with symmetric explicit padding on an even input at stride 2, which SAME cannot
    /// express: it must lower as PAD + VALID.
    fn check_symmetric_stride_two(groups: usize) {
        let device = Device::flex();
        let (c, side) = (4, 8);
        let conv = Conv2dConfig::new([c, c], [3, 3])
            .with_stride([2, 2])
            .with_groups(groups)
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(&device);
        let mut bn = BatchNormConfig::new(c).init(&device);
        let random = |lo, hi| Tensor::<1>::random([c], Distribution::Uniform(lo, hi), &device);
        bn.gamma = Param::from_tensor(random(0.5, 1.5));
        bn.beta = Param::from_tensor(random(-0.5, 0.5));
        bn.running_mean = RunningState::new(random(-0.5, 0.5));
        bn.running_var = RunningState::new(random(0.5, 2.0));
        let x = Tensor::<4>::random([1, c, side, side], Distribution::Normal(0.0, 1.0), &device);
        let input = x.to_data().try_to_vec::<f32>().expect("f32");
        let expected = bn.forward(conv.forward(x));
        let [_, _, oh, ow] = expected.dims();
        let expected = expected.into_data().try_to_vec::<f32>().expect("f32");

        let mut graph = GraphBuilder::new("test");
        let image = graph.activation("x", &[1, side, side, c]);
        let y = lower_conv_bn(
            &mut graph,
            "conv",
            &conv,
            Some(&bn),
            image,
            Activation::None,
        )
        .expect("lowers");
        assert_eq!(graph.shape(y), vec![1, oh, ow, c]);
        let model = graph.finish(&[("x", image)], &[("y", y)]);
        assert!(
            model
                .operator_codes
                .iter()
                .any(|o| o.builtin == BuiltinOp::PAD)
        );
        let mut interpreter = Interpreter::new(model).expect("loads");
        interpreter
            .set_input_f32(0, &chw_to_hwc(&input, [c, side, side]))
            .expect("input");
        interpreter.invoke().expect("runs");
        let actual = interpreter.output_f32(0).expect("output");
        let expected = chw_to_hwc(&expected, [c, oh, ow]);
        let diff = expected
            .iter()
            .zip(actual)
            .fold(0.0f32, |m, (e, a)| m.max((e - a).abs()));
        assert!(diff < 1e-5, "groups {groups}: max difference {diff}");
    }

    #[test]
    fn padded_plain_conv_matches_burn() {
        check_symmetric_stride_two(1);
    }

    #[test]
    fn padded_depthwise_conv_matches_burn() {
        check_symmetric_stride_two(4);
    }
}
