//! ReLU / ReLU6 under autodiff: the backward needs only the output, which the forward keeps.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;

use super::{KilnGradients, KilnOps};

#[derive(Debug)]
struct Clamp;

impl<B: KilnGradients> Backward<B, 1> for Clamp {
    type State = (FloatTensor<B>, f32, f32);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (y, low, high) = ops.state;
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::kiln_clamp_backward(y, grad, low, high));
        }
    }
}

pub(super) fn clamp<B: KilnOps + KilnGradients, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    low: f32,
    high: f32,
) -> FloatTensor<Autodiff<B, C>> {
    match Clamp.prepare::<C>([x.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let y = B::kiln_clamp(x.into_primitive(), low, high);
            prep.finish((y.clone(), low, high), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::kiln_clamp(x.into_primitive(), low, high)),
    }
}
