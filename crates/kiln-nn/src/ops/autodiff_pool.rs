//! Max pooling under autodiff: the forward keeps each window's argmax, the backward routes
//! each output gradient to it.

use burn::backend::Autodiff;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::{FloatTensor, IntTensor};

use super::{KilnGradients, KilnOps, PoolOptions};

#[derive(Debug)]
struct MaxPool;

impl<B: KilnGradients> Backward<B, 1> for MaxPool {
    type State = (NodeId, IntTensor<B>, PoolOptions);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, indices, pool) = ops.state;
        if let Some(node) = node_x {
            let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_state);
            grads.register::<B>(node.id, B::kiln_max_pool2d_backward(x, pool, grad, indices));
        }
    }
}

pub(super) fn max_pool<B: KilnOps + KilnGradients, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    pool: PoolOptions,
) -> FloatTensor<Autodiff<B, C>> {
    match MaxPool.prepare::<C>([x.node()]).compute_bound().stateful() {
        OpsKind::Tracked(mut prep) => {
            let x_state = prep.checkpoint(&x);
            let (y, indices) = B::kiln_max_pool2d_with_indices(x.into_primitive(), pool);
            prep.finish((x_state, indices, pool), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::kiln_max_pool2d(x.into_primitive(), pool)),
    }
}
