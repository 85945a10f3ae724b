//! Adam (Kingma & Ba, "Adam: A Method for Stochastic Optimization", 2015) as one parallel pass
//! per parameter. Burn's `Adam` updates a parameter with about ten tensor operations, each a
//! single-threaded pass over it on the flex backend: 1.9 ms of every 64×64-CNN step, with the
//! other core idle. This computes the same f32 arithmetic in the same order — so the same
//! bits — in one pass split over rayon's pool, and keeps Burn's `AdamState`, so checkpoints
//! and `--resume` are unchanged. What it does not take (storage not readable as f32, an
//! AMSGrad state) goes to Burn's `Adam`.

use burn::optim::decay::WeightDecayConfig;
use burn::optim::{Adam, AdamConfig, AdamState, AdaptiveMomentumState, LearningRate, Optimizer};
use burn::prelude::*;
use burn::tensor::TensorData;
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
        // AMSGrad's running maximum is Burn's to carry.
        if state
            .as_ref()
            .is_some_and(|s| s.momentum.max_moment_2.is_some())
        {
            return self.reference.step(lr, tensor, grad, state);
        }
        let (device, shape) = (tensor.device(), tensor.shape());
        let (mut values, grad) = (tensor.into_data(), grad.into_data());
        let (time, first, mut m1, mut m2) = match state {
            Some(s) => (
                s.momentum.time + 1,
                false,
                s.momentum.moment_1.into_data(),
                s.momentum.moment_2.into_data(),
            ),
            None => {
                let zeros = || TensorData::new(vec![0.0f32; shape.num_elements()], shape.clone());
                (1, true, zeros(), zeros())
            }
        };
        let tensor = |data: TensorData| Tensor::<D>::from_data(data, &device);
        let step = (lr, time, first);
        if update(
            self.weight_decay,
            step,
            (&mut values, &grad),
            (&mut m1, &mut m2),
        ) {
            let momentum = AdaptiveMomentumState::new(time, tensor(m1), tensor(m2));
            return (tensor(values), Some(AdamState::new(momentum)));
        }
        // Storage the pass cannot borrow as f32 (nothing was changed): Burn's Adam.
        let state = (!first)
            .then(|| AdamState::new(AdaptiveMomentumState::new(time - 1, tensor(m1), tensor(m2))));
        self.reference.step(lr, tensor(values), tensor(grad), state)
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        <Adam as Optimizer>::to_device(state, device)
    }
}

/// One Adam step over f32 buffers, in Burn's arithmetic and order: the parameter and the
/// moments updated in place (the moments' old values ignored on the `first` step). `false`,
/// with nothing changed, when a buffer is not readable as f32 or the lengths differ.
fn update(
    weight_decay: Option<f32>,
    (lr, time, first): (LearningRate, usize, bool),
    (values, grad): (&mut TensorData, &TensorData),
    (m1, m2): (&mut TensorData, &mut TensorData),
) -> bool {
    let (Ok(values), Ok(grad), Ok(m1), Ok(m2)) = (
        values.as_mut_slice::<f32>(),
        grad.as_slice::<f32>(),
        m1.as_mut_slice::<f32>(),
        m2.as_mut_slice::<f32>(),
    ) else {
        return false;
    };
    if [values.len(), m1.len(), m2.len()] != [grad.len(); 3] {
        return false;
    }
    // Burn's scalars, in f32 and in its order.
    let bias_correction2_sqrt = (1.0 - BETA_2.powi(time as i32)).sqrt();
    let combined_factor = bias_correction2_sqrt / (1.0 - BETA_1.powi(time as i32));
    let epsilon = EPSILON * bias_correction2_sqrt;
    let rate = lr as f32;
    let (factor_1, factor_2) = (1.0 - BETA_1, 1.0 - BETA_2);
    values
        .par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(m1.par_chunks_mut(CHUNK).zip(m2.par_chunks_mut(CHUNK)))
        .for_each(|((values, grad), (m1, m2))| {
            for (((value, &grad), m1), m2) in values.iter_mut().zip(grad).zip(m1).zip(m2) {
                let g = match weight_decay {
                    Some(penalty) => *value * penalty + grad,
                    None => grad,
                };
                if first {
                    (*m1, *m2) = (g * factor_1, (g * g) * factor_2);
                } else {
                    *m1 = *m1 * BETA_1 + g * factor_1;
                    *m2 = *m2 * BETA_2 + (g * g) * factor_2;
                }
                let update = (*m1 * combined_factor) / (m2.sqrt() + epsilon);
                *value -= update * rate;
            }
        });
    true
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
