//! The optimizers a config can name, built as Burn's type-erased `ModuleOptimizer` so the loop
//! and its checkpoints do not depend on which one runs.

use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamWConfig, ModuleOptimizer, SgdConfig};
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::fused_adam::FusedAdam;

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    #[default]
    /// Adam (Kingma & Ba) with L2 weight decay folded into the gradient when set.
    Adam,
    /// AdamW: Adam with decoupled weight decay (Loshchilov & Hutter).
    AdamW,
    /// SGD with (Nesterov-less) momentum and L2 weight decay.
    Sgd,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimizerSettings {
    pub kind: OptimizerKind,
    /// L2 penalty (Adam, SGD) or decoupled decay (AdamW); 0 = none.
    pub weight_decay: f64,
    /// SGD momentum; ignored by the Adam family.
    pub momentum: f64,
}

impl Default for OptimizerSettings {
    fn default() -> Self {
        Self {
            kind: OptimizerKind::Adam,
            weight_decay: 0.0,
            momentum: 0.9,
        }
    }
}

impl OptimizerSettings {
    pub fn build(&self) -> Result<ModuleOptimizer, TrainError> {
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(TrainError::InvalidConfig(format!(
                "weight_decay = {} must be 0 or positive",
                self.weight_decay
            )));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(TrainError::InvalidConfig(format!(
                "momentum = {} must be in [0, 1)",
                self.momentum
            )));
        }
        let decay =
            (self.weight_decay > 0.0).then(|| WeightDecayConfig::new(self.weight_decay as f32));
        Ok(match self.kind {
            // Burn's Adam, bit for bit, in one parallel pass per parameter.
            OptimizerKind::Adam => ModuleOptimizer::from(FusedAdam::new(
                (self.weight_decay > 0.0).then_some(self.weight_decay as f32),
            )),
            OptimizerKind::AdamW => AdamWConfig::new()
                .with_weight_decay(self.weight_decay as f32)
                .init(),
            OptimizerKind::Sgd => SgdConfig::new()
                .with_weight_decay(decay)
                .with_momentum((self.momentum > 0.0).then(|| {
                    MomentumConfig::new()
                        .with_momentum(self.momentum)
                        .with_dampening(0.0)
                }))
                .init(),
        })
    }
}
