//! Convolution under autodiff: the forward is the inner backend's `kiln_conv2d`, and the
//! backward pass — registered by hand, as Burn's own convolution does — calls the inner
//! backend's Kiln gradient kernels, skipping any gradient no parameter needs (the first
//! layer's input gradient, a frozen backbone's weight gradients).

use burn::backend::Autodiff;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::tensor::ops::ConvOptions;

use super::{KilnGradients, KilnOps};

#[derive(Debug)]
struct ConvWithBias;

#[derive(Debug)]
struct ConvNoBias;

impl<B: KilnGradients> Backward<B, 3> for ConvWithBias {
    type State = (NodeId, NodeId, NodeId, ConvOptions<2>);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight, node_bias] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, weight_state, bias_state, options) = ops.state;
        let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_state);
        let weight = checkpointer.retrieve_node_output::<FloatTensor<B>>(weight_state);
        let bias = checkpointer.retrieve_node_output::<FloatTensor<B>>(bias_state);
        register_input_and_weight_grads::<B>(
            grads,
            [node_x.map(|n| n.id), node_weight.map(|n| n.id)],
            (x.clone(), weight, grad.clone()),
            options,
        );
        if let Some(node) = node_bias {
            grads.register::<B>(node.id, B::kiln_conv2d_bias_backward(x, bias, grad));
        }
    }
}

impl<B: KilnGradients> Backward<B, 2> for ConvNoBias {
    type State = (NodeId, NodeId, ConvOptions<2>);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, weight_state, options) = ops.state;
        let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_state);
        let weight = checkpointer.retrieve_node_output::<FloatTensor<B>>(weight_state);
        register_input_and_weight_grads::<B>(
            grads,
            [node_x.map(|n| n.id), node_weight.map(|n| n.id)],
            (x, weight, grad),
            options,
        );
    }
}

/// The input and weight gradients, each only if its node needs one.
fn register_input_and_weight_grads<B: KilnGradients>(
    grads: &mut Gradients,
    [x_node, weight_node]: [Option<NodeId>; 2],
    (x, weight, grad): (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>),
    options: ConvOptions<2>,
) {
    if let Some(id) = x_node {
        let dx =
            B::kiln_conv2d_x_backward(x.clone(), weight.clone(), grad.clone(), options.clone());
        grads.register::<B>(id, dx);
    }
    if let Some(id) = weight_node {
        grads.register::<B>(id, B::kiln_conv2d_weight_backward(x, weight, grad, options));
    }
}

type Tracked<B, C> = FloatTensor<Autodiff<B, C>>;

pub(super) fn conv_with_bias<B: KilnOps + KilnGradients, C: CheckpointStrategy>(
    x: Tracked<B, C>,
    weight: Tracked<B, C>,
    bias: Tracked<B, C>,
    options: ConvOptions<2>,
) -> Tracked<B, C> {
    match ConvWithBias
        .prepare::<C>([x.node(), weight.node(), bias.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let state = (
                prep.checkpoint(&x),
                prep.checkpoint(&weight),
                prep.checkpoint(&bias),
                options.clone(),
            );
            let y = B::kiln_conv2d(
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
                options,
            );
            prep.finish(state, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::kiln_conv2d(
            x.into_primitive(),
            weight.into_primitive(),
            bias.into_primitive(),
            options,
        )),
    }
}

pub(super) fn conv_no_bias<B: KilnOps + KilnGradients, C: CheckpointStrategy>(
    x: Tracked<B, C>,
    weight: Tracked<B, C>,
    options: ConvOptions<2>,
) -> Tracked<B, C> {
    match ConvNoBias
        .prepare::<C>([x.node(), weight.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let state = (
                prep.checkpoint(&x),
                prep.checkpoint(&weight),
                options.clone(),
            );
            let y = B::kiln_conv2d_no_bias(x.into_primitive(), weight.into_primitive(), options);
            prep.finish(state, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::kiln_conv2d_no_bias(
            x.into_primitive(),
            weight.into_primitive(),
            options,
        )),
    }
}
