//! SUB: element-wise a − b; the same kernel as ADD with the sign flipped (TFLite's reference
//! kernels share the rescaling too).

use super::{Kernel, Prep};
use crate::error::RuntimeError;

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    super::add::prepare_add_or_sub(prep, true)
}
