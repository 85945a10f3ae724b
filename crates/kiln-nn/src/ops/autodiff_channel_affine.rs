//! The per-channel affine of a BatchNorm with fixed statistics under autodiff: gradients for
//! the input and, through `scale` and `shift`, for gamma and beta (a frozen backbone's BatchNorm
//! while fine-tuning).

use burn::backend::Autodiff;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;

use super::{KilnGradients, KilnOps};

#[derive(Debug)]
struct ChannelAffine;

impl<B: KilnGradients> Backward<B, 3> for ChannelAffine {
    type State = (NodeId, NodeId);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_scale, node_shift] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, scale_state) = ops.state;
        let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_state);
        let scale = checkpointer.retrieve_node_output::<FloatTensor<B>>(scale_state);
        let [dx, dscale, dshift] = B::kiln_channel_affine_backward(x, scale, grad);
        for (node, grad) in [(node_x, dx), (node_scale, dscale), (node_shift, dshift)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

pub(super) fn channel_affine<B: KilnOps + KilnGradients, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    scale: FloatTensor<Autodiff<B, C>>,
    shift: FloatTensor<Autodiff<B, C>>,
) -> FloatTensor<Autodiff<B, C>> {
    match ChannelAffine
        .prepare::<C>([x.node(), scale.node(), shift.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let state = (prep.checkpoint(&x), prep.checkpoint(&scale));
            let y = B::kiln_channel_affine(
                x.into_primitive(),
                scale.into_primitive(),
                shift.into_primitive(),
            );
            prep.finish(state, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::kiln_channel_affine(
            x.into_primitive(),
            scale.into_primitive(),
            shift.into_primitive(),
        )),
    }
}
