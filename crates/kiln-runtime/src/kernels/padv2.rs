//! PADV2: PAD with the padding value given as input 2 (constant_values). TFLite runs both
//! operators with one kernel, so this one is PAD's.

use super::{Kernel, Prep};
use crate::error::RuntimeError;

pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError> {
    super::pad::prepare(prep)
}
