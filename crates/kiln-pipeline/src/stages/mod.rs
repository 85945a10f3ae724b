//! The stages a recipe can name, one file each, and the registry that lists them in the
//! only order a recipe may run them.
//!
//! To add a stage: write `stages/<name>.rs` with a type implementing
//! [`Stage`](crate::stage::Stage) and a `pub const KIND: StageKind` (its name, its parameter
//! table, whether later stages may start from its model), then add one line to [`STAGES`]
//! where it belongs in the order.

pub mod distill;
pub mod export;
mod fine_tune;
pub mod prune;
pub mod qat;
pub mod report;
pub mod train;
pub mod verify;

use crate::stage::StageKind;

/// Every stage, in the order a recipe runs them.
pub const STAGES: &[StageKind] = &[
    train::KIND,
    distill::KIND,
    prune::KIND,
    qat::KIND,
    export::KIND,
    verify::KIND,
    report::KIND,
];

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
