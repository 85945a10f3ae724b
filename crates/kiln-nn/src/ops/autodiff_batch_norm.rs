//! Batch normalization in training under autodiff: gradients for the input, gamma and beta
//! from the inner backend's kernels; the batch statistics come back without gradient (they
//! only feed the running averages).

use burn::backend::Autodiff;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;

use super::{BatchStatistics, KilnGradients, KilnOps};

#[derive(Debug)]
struct BatchNormTrain;

impl<B: KilnGradients> Backward<B, 3> for BatchNormTrain {
    type State = (NodeId, NodeId, FloatTensor<B>, FloatTensor<B>, f64);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, gamma_state, mean, variance, epsilon) = ops.state;
        let x = checkpointer.retrieve_node_output::<FloatTensor<B>>(x_state);
        let gamma = checkpointer.retrieve_node_output::<FloatTensor<B>>(gamma_state);
        let [dx, dgamma, dbeta] =
            B::kiln_batch_norm_train_backward(x, gamma, (mean, variance), epsilon, grad);
        for (node, grad) in [(node_x, dx), (node_gamma, dgamma), (node_beta, dbeta)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

pub(super) fn batch_norm_train<B: KilnOps + KilnGradients, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    gamma: FloatTensor<Autodiff<B, C>>,
    beta: FloatTensor<Autodiff<B, C>>,
    epsilon: f64,
) -> BatchStatistics<Autodiff<B, C>> {
    let untracked = FloatTensor::<Autodiff<B, C>>::new;
    match BatchNormTrain
        .prepare::<C>([x.node(), gamma.node(), beta.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let x_state = prep.checkpoint(&x);
            let gamma_state = prep.checkpoint(&gamma);
            let result = B::kiln_batch_norm_train(
                x.into_primitive(),
                gamma.into_primitive(),
                beta.into_primitive(),
                epsilon,
            );
            let state = (
                x_state,
                gamma_state,
                result.mean.clone(),
                result.variance.clone(),
                epsilon,
            );
            BatchStatistics {
                output: prep.finish(state, result.output),
                mean: untracked(result.mean),
                variance: untracked(result.variance),
            }
        }
        OpsKind::UnTracked(prep) => {
            let result = B::kiln_batch_norm_train(
                x.into_primitive(),
                gamma.into_primitive(),
                beta.into_primitive(),
                epsilon,
            );
            BatchStatistics {
                output: prep.finish(result.output),
                mean: untracked(result.mean),
                variance: untracked(result.variance),
            }
        }
    }
}
