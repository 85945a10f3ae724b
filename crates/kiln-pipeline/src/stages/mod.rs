//! The stages a recipe can name, one file each, and the registry that lists them in the
//! only order a recipe may run them.
//!
//! To add a stage: write `stages/<name>.rs` with a type implementing
//! [`Stage`](crate::stage::Stage) and a `pub const KIND: StageKind` (its name, its parameter
//! table, whether later stages may start from its model, the stages it needs before it),
//! then add its module to the `stages!` list below, where it belongs in the order.

mod fine_tune;
mod tflite_teacher;

use crate::stage::StageKind;

macro_rules! stages {
    ($($module:ident),+ $(,)?) => {
        $(pub mod $module;)+

        /// Every stage, in the order a recipe runs them.
        pub const STAGES: &[StageKind] = &[$($module::KIND),+];
    };
}

// One entry per stage, in recipe order.
stages![train, distill, prune, cluster, qat, export, verify, report];

/// The registered stage named `name`, with its place in [`STAGES`].
pub fn kind(name: &str) -> Option<(usize, &'static StageKind)> {
    STAGES.iter().enumerate().find(|(_, k)| k.name == name)
}

/// "train → distill → … → report", for messages.
pub fn order() -> String {
    STAGES
        .iter()
        .map(|k| k.name)
        .collect::<Vec<_>>()
        .join(" → ")
}
