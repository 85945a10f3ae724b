//! The fused convolution → ReLU → 2×2 max-pool block under autodiff: the forward keeps the
//! input, the weight and the pooled values' window codes; the backward computes the three
//! gradients in one pass, skipping the input's when no one needs it (the first layer's).

use burn::backend::Autodiff;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::tensor::ops::ConvOptions;

use super::{KilnGradients, KilnOps};

#[derive(Debug)]
struct ConvReluPool;

impl<B: KilnGradients> Backward<B, 3> for ConvReluPool {
    type State = (NodeId, NodeId, IntTensor<B>, ConvOptions<2>);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight, node_bias] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, weight_state, codes, options) = ops.state;
        if node_x.is_none() && node_weight.is_none() && node_bias.is_none() {
            return;
        }
        let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_state);
        let weight = checkpointer.retrieve_node_output::<FloatTensor<B>>(weight_state);
        let (dx, dweight, dbias) =
            B::kiln_conv2d_relu_pool_backward(x, weight, (codes, grad), options, node_x.is_some());
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = node_weight {
            grads.register::<B>(node.id, dweight);
        }
        if let Some(node) = node_bias {
            grads.register::<B>(node.id, dbias);
        }
    }
}

pub(super) fn conv_relu_pool<B: KilnOps + KilnGradients, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    bias: FloatTensor<Autodiff<B, C>>,
    options: ConvOptions<2>,
) -> FloatTensor<Autodiff<B, C>> {
    match ConvReluPool
        .prepare::<C>([x.node(), weight.node(), bias.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let x_state = prep.checkpoint(&x);
            let weight_state = prep.checkpoint(&weight);
            let (y, codes) = B::kiln_conv2d_relu_pool_train(
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
                options.clone(),
            );
            prep.finish((x_state, weight_state, codes, options), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::kiln_conv2d_relu_pool(
            x.into_primitive(),
            weight.into_primitive(),
            bias.into_primitive(),
            options,
        )),
    }
}
