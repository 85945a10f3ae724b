//! Knowledge distillation (Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural
//! Network", 2015): the student learns the teacher's softened class probabilities as well as
//! the labels. Loss = α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α)·CE(s, y); the T² keeps
//! the soft term's gradients on the scale of the hard one's as T changes.

use std::fmt;
use std::rc::Rc;

use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};

use crate::TrainError;
use crate::hooks::TrainHook;

/// The teacher and the loss weights of a distilled training run.
#[derive(Clone)]
pub struct Distillation {
    /// The teacher's logits for a batch of NCHW images (on a plain device: it does not train).
    pub teacher: Rc<dyn Fn(Tensor<4>) -> Tensor<2>>,
    /// Softening temperature T (> 0; 1 = the plain softmax).
    pub temperature: f64,
    /// Weight α of the soft (teacher) term, in [0, 1].
    pub alpha: f64,
}

impl fmt::Debug for Distillation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Distillation")
            .field("temperature", &self.temperature)
            .field("alpha", &self.alpha)
            .finish_non_exhaustive()
    }
}

impl Distillation {
    pub fn validate(&self) -> Result<(), TrainError> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(TrainError::InvalidConfig(format!(
                "distillation temperature = {} must be positive",
                self.temperature
            )));
        }
        if !(0.0..=1.0).contains(&self.alpha) {
            return Err(TrainError::InvalidConfig(format!(
                "distillation alpha = {} must be in [0, 1]",
                self.alpha
            )));
        }
        Ok(())
    }

    /// The distillation loss of `student` logits on `images`, given the batch's hard-label
    /// loss `hard` (cross-entropy, with any label smoothing).
    pub fn loss(&self, student: Tensor<2>, images: Tensor<4>, hard: Tensor<1>) -> Tensor<1> {
        // The teacher runs without autodiff: its logits are constants to the student's graph.
        let teacher = (self.teacher)(images.inner());
        let soft = soft_target_kl(student, teacher, self.temperature);
        let t2 = self.temperature * self.temperature;
        soft.mul_scalar(self.alpha * t2)
            .add(hard.mul_scalar(1.0 - self.alpha))
    }
}

/// Distillation adds the soft-target term to the batch loss.
impl<M: kiln_nn::Classifier> TrainHook<M> for Distillation {
    fn validate(&self) -> Result<(), TrainError> {
        Distillation::validate(self)
    }

    fn loss(&self, loss: Tensor<1>, logits: &Tensor<2>, images: &Tensor<4>) -> Tensor<1> {
        Distillation::loss(self, logits.clone(), images.clone(), loss)
    }
}

/// Batch mean of KL(softmax(teacher/T) ‖ softmax(student/T)), summed over classes (Keras'
/// `KLDivergence` on the softened distributions).
pub fn soft_target_kl(student: Tensor<2>, teacher: Tensor<2>, temperature: f64) -> Tensor<1> {
    let teacher = teacher.div_scalar(temperature);
    let target = softmax(teacher.clone(), 1);
    let log_target = log_softmax(teacher, 1);
    let log_student = log_softmax(student.div_scalar(temperature), 1);
    target.mul(log_target.sub(log_student)).sum_dim(1).mean()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(t: Tensor<1>) -> f64 {
        f64::from(t.into_scalar::<f32>())
    }

    #[test]
    fn kl_matches_a_hand_computation() {
        let device = Device::flex();
        let student = Tensor::<2>::from_floats([[1.0, 2.0, 0.5]], &device);
        let teacher = Tensor::<2>::from_floats([[2.0, 0.0, 1.0]], &device);
        let t = 2.0f64;
        let soft = |x: [f64; 3]| {
            let e: Vec<f64> = x.iter().map(|v| (v / t).exp()).collect();
            let z: f64 = e.iter().sum();
            e.into_iter().map(|v| v / z).collect::<Vec<_>>()
        };
        let (p, q) = (soft([2.0, 0.0, 1.0]), soft([1.0, 2.0, 0.5]));
        let expected: f64 = p.iter().zip(&q).map(|(p, q)| p * (p / q).ln()).sum();
        let got = value(soft_target_kl(student.clone(), teacher, t));
        assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
        assert!(value(soft_target_kl(student.clone(), student, t)).abs() < 1e-6);
    }

    #[test]
    fn alpha_blends_soft_and_hard_terms() {
        let device = Device::flex();
        let teacher_logits = Tensor::<2>::from_floats([[3.0, -1.0]], &device);
        let d = Distillation {
            teacher: Rc::new(move |_| teacher_logits.clone()),
            temperature: 4.0,
            alpha: 0.25,
        };
        let student = Tensor::<2>::from_floats([[0.0, 1.0]], &device);
        let images = Tensor::<4>::zeros([1, 1, 2, 2], &device);
        let hard = Tensor::<1>::from_floats([0.8], &device);
        let kl = value(soft_target_kl(
            student.clone(),
            Tensor::from_floats([[3.0, -1.0]], &device),
            4.0,
        ));
        let got = value(d.loss(student, images, hard));
        assert!((got - (0.25 * 16.0 * kl + 0.75 * 0.8)).abs() < 1e-5);
        assert!(d.validate().is_ok());
        let bad = Distillation {
            alpha: 1.5,
            ..d.clone()
        };
        assert!(bad.validate().is_err());
    }
}
