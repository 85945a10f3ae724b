//! Adam (Kingma & Ba, "Adam: A Method for Stochastic Optimization", 2015) as one parallel pass
//! per parameter. Burn's `Adam` updates a parameter with about ten tensor operations, each a
//! single-threaded pass over it on the flex backend: 1.9 ms of every 64×64-CNN step, with the
//! other core idle. This computes the same f32 arithmetic in the same order — so the same
//! bits — in one pass split over rayon's pool, and keeps Burn's `AdamState`, so checkpoints
//! and `--resume` are unchanged. Tensors it does not take (not f32, or an AMSGrad state) go to
//! Burn's `Adam`.

use burn::optim::decay::WeightDecayConfig;
use burn::optim::{Adam, AdamConfig, AdamState, AdaptiveMomentumState, LearningRate, Optimizer};
use burn::prelude::*;
use burn::tensor::{DType, TensorData};
use rayon::prelude::*;

/// Burn's `AdamConfig` defaults, which Kiln's configs train with.
const BETA_1: f32 = 0.9;
const BETA_2: f32 = 0.999;
const EPSILON: f32 = 1e-5;

/// Values per parallel task.
const CHUNK: usize = 1 << 14;

#[derive(Clone)]
pub struct FusedAdam {
    /// L2 penalty folded into the gradient (`grad + penalty · param`), as Burn's Adam does.
    weight_decay: Option<f32>,
    reference: Adam,
}

impl FusedAdam {
    pub fn new(weight_decay: Option<f32>) -> Self {
        let config = AdamConfig::new().with_weight_decay(weight_decay.map(WeightDecayConfig::new));
        Self {
            weight_decay,
            reference: config.build(),
        }
    }
}

impl Optimizer for FusedAdam {
    type State<const D: usize> = AdamState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let fused = tensor.dtype() == DType::F32
            && grad.dtype() == DType::F32
            && state.as_ref().is_none_or(|s| {
                let m = &s.momentum;
                m.max_moment_2.is_none()
                    && m.moment_1.dtype() == DType::F32
                    && m.moment_2.dtype() == DType::F32
            });
        if !fused {
            return self.reference.step(lr, tensor, grad, state);
        }
        let (device, shape) = (tensor.device(), tensor.shape());
        let moments = state.map(|s| (s.momentum.time, s.momentum.moment_1, s.momentum.moment_2));
        let (Some(mut values), Some(grad)) = (f32s(tensor.clone()), f32s(grad.clone())) else {
            return self.reference.step(lr, tensor, grad, moments.map(rebuild));
        };
        let time = moments.as_ref().map_or(1, |(time, _, _)| time + 1);
        let previous = match moments {
            Some((_, m1, m2)) => match (f32s(m1), f32s(m2)) {
                (Some(m1), Some(m2)) => Some((m1, m2)),
                _ => None,
            },
            None => None,
        };
        // Burn's scalars, in f32 and in its order.
        let bias_correction2_sqrt = (1.0 - BETA_2.powi(time as i32)).sqrt();
        let combined_factor = bias_correction2_sqrt / (1.0 - BETA_1.powi(time as i32));
        let epsilon = EPSILON * bias_correction2_sqrt;
        let rate = lr as f32;
        let (factor_1, factor_2) = (1.0 - BETA_1, 1.0 - BETA_2);
        let len = values.len();
        let mut moment_1 = vec![0.0f32; len];
        let mut moment_2 = vec![0.0f32; len];
        let penalty = self.weight_decay;
        values
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK))
            .zip(
                moment_1
                    .par_chunks_mut(CHUNK)
                    .zip(moment_2.par_chunks_mut(CHUNK)),
            )
            .enumerate()
            .for_each(|(chunk, ((values, grad), (m1, m2)))| {
                let at = chunk * CHUNK;
                for i in 0..values.len() {
                    let g = match penalty {
                        Some(p) => values[i] * p + grad[i],
                        None => grad[i],
                    };
                    let (new_1, new_2) = match &previous {
                        Some((p1, p2)) => (
                            p1[at + i] * BETA_1 + g * factor_1,
                            p2[at + i] * BETA_2 + (g * g) * factor_2,
                        ),
                        None => (g * factor_1, (g * g) * factor_2),
                    };
                    m1[i] = new_1;
                    m2[i] = new_2;
                    let update = (new_1 * combined_factor) / (new_2.sqrt() + epsilon);
                    values[i] -= update * rate;
                }
            });
        let tensor =
            |v: Vec<f32>| Tensor::<D>::from_data(TensorData::new(v, shape.clone()), &device);
        let state = AdamState::new(AdaptiveMomentumState::new(
            time,
            tensor(moment_1),
            tensor(moment_2),
        ));
        (tensor(values), Some(state))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        <Adam as Optimizer>::to_device(state, device)
    }
}

/// The tensor's f32 values, without a copy when it holds them alone.
fn f32s<const D: usize>(t: Tensor<D>) -> Option<Vec<f32>> {
    t.into_data().try_into_vec::<f32>().ok()
}

fn rebuild<const D: usize>((time, m1, m2): (usize, Tensor<D>, Tensor<D>)) -> AdamState<D> {
    AdamState::new(AdaptiveMomentumState::new(time, m1, m2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len as u32)
            .map(|i| {
                let x = (i.wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(40_503)) % 20_001;
                (x as f32 - 10_000.0) * 1e-4
            })
            .collect()
    }

    fn bits<const D: usize>(t: &Tensor<D>) -> Vec<u32> {
        t.to_data()
            .try_to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    }

    /// Three steps on a parameter larger than one parallel chunk, with and without weight
    /// decay: every parameter and moment bit equals Burn's Adam.
    #[test]
    fn steps_equal_burns_adam_bit_for_bit() {
        let device = Device::flex();
        let shape = [3, CHUNK / 2 + 7];
        let len = shape[0] * shape[1];
        for decay in [None, Some(0.01f32)] {
            let fused = FusedAdam::new(decay);
            let burn = AdamConfig::new()
                .with_weight_decay(decay.map(WeightDecayConfig::new))
                .build();
            let start = Tensor::<2>::from_data(TensorData::new(values(len, 1), shape), &device);
            let (mut a, mut b) = (start.clone(), start);
            let (mut state_a, mut state_b) = (None, None);
            for step in 0..3u32 {
                let grad =
                    Tensor::<2>::from_data(TensorData::new(values(len, step + 2), shape), &device);
                let lr = 1e-3 * f64::from(step + 1);
                (a, state_a) = fused.step(lr, a, grad.clone(), state_a);
                (b, state_b) = burn.step(lr, b, grad, state_b);
                assert_eq!(
                    bits(&a),
                    bits(&b),
                    "parameter, step {step}, decay {decay:?}"
                );
                let (ma, mb) = (
                    &state_a.as_ref().unwrap().momentum,
                    &state_b.as_ref().unwrap().momentum,
                );
                assert_eq!(ma.time, mb.time);
                assert_eq!(bits(&ma.moment_1), bits(&mb.moment_1), "first moment");
                assert_eq!(bits(&ma.moment_2), bits(&mb.moment_2), "second moment");
            }
        }
    }
}
