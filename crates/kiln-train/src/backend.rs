//! Which Burn backend trains the model. Burn 0.22's `Device` is a runtime value, so switching
//! backends needs no generic code.

use burn::prelude::Device;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Burn's pure-Rust CPU backend (SIMD + rayon): the default.
    Flex,
    /// Burn's ndarray CPU backend: deprecated upstream and much slower; kept for comparison.
    Ndarray,
}

impl BackendKind {
    /// The plain (inference) device.
    pub fn device(self) -> Device {
        match self {
            BackendKind::Flex => Device::flex(),
            #[allow(deprecated)]
            BackendKind::Ndarray => Device::ndarray(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Flex => "flex",
            BackendKind::Ndarray => "ndarray",
        }
    }
}
