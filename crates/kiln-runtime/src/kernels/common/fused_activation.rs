//! Activations fused into an operator's output, applied in place.

use kiln_tflite::Activation;

use crate::error::RuntimeError;
use crate::kernels::Prep;

#[derive(Clone, Copy, Debug)]
pub struct FloatClamp {
    pub min: f32,
    pub max: f32,
}

impl FloatClamp {
    pub fn prepare(prep: &Prep<'_>, activation: Activation) -> Result<Self, RuntimeError> {
        let (min, max) = match activation {
            Activation::None => (f32::NEG_INFINITY, f32::INFINITY),
            Activation::Relu => (0.0, f32::INFINITY),
            Activation::ReluN1To1 => (-1.0, 1.0),
            Activation::Relu6 => (0.0, 6.0),
            other => {
                return Err(prep.unsupported(&format!(
                    "fused activation {} is not supported",
                    other.name()
                )));
            }
        };
        Ok(Self { min, max })
    }

    pub fn apply(self, x: f32) -> f32 {
        x.max(self.min).min(self.max)
    }
}
