//! Which Burn backend trains the model. Burn 0.22's `Device` is a runtime value, so switching
//! backends needs no generic code.

use burn::prelude::Device;

use crate::TrainError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Burn's pure-Rust CPU backend (SIMD + rayon): the default.
    Flex,
    /// Burn's ndarray CPU backend: deprecated upstream and much slower; kept for comparison.
    Ndarray,
    /// GPU through wgpu (Vulkan, Metal, DX12; lavapipe runs it on a CPU). Needs a build with
    /// the `wgpu` cargo feature, kept out of the default build for its ~30-minute compile.
    Wgpu,
}

impl BackendKind {
    /// The plain (inference) device.
    pub fn device(self) -> Result<Device, TrainError> {
        match self {
            BackendKind::Flex => Ok(Device::flex()),
            #[allow(deprecated)]
            BackendKind::Ndarray => Ok(Device::ndarray()),
            BackendKind::Wgpu => wgpu_device(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Flex => "flex",
            BackendKind::Ndarray => "ndarray",
            BackendKind::Wgpu => "wgpu",
        }
    }
}

#[cfg(feature = "wgpu")]
fn wgpu_device() -> Result<Device, TrainError> {
    // The adapter wgpu prefers (a discrete GPU when there is one; CUBECL_WGPU_DEFAULT_DEVICE
    // overrides). The device comes up lazily, on first use.
    Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_device() -> Result<Device, TrainError> {
    Err(TrainError::InvalidConfig(
        "backend = \"wgpu\" needs a build with the wgpu feature: `cargo run --features wgpu -p kiln-cli --bin pipeline -- run CONFIG` (a long first compile); or use backend = \"flex\"".into(),
    ))
}

#[cfg(all(test, not(feature = "wgpu")))]
mod tests {
    use super::*;

    #[test]
    fn wgpu_without_the_feature_says_how_to_get_it() {
        let err = BackendKind::Wgpu.device().unwrap_err().to_string();
        assert!(err.contains("--features wgpu"), "{err}");
        assert!(BackendKind::Flex.device().is_ok());
    }
}
