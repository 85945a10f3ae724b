//! What an architecture provides to the registry: the keys of its `[model]` table (one
//! struct per architecture, so a key of another architecture is an error naming it) and how
//! those keys build the network for a dataset.

use burn::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Classifier, LowerError};

/// The `[model]` keys of one architecture (everything but `architecture = "…"`).
pub trait Architecture: Clone + std::fmt::Debug + Serialize + DeserializeOwned {
    type Model: Classifier;

    /// The architecture's name in model descriptions and metadata (`"SmallCnn"`).
    const TITLE: &'static str;

    /// The network for `input` ([height, width, channels]) images and `classes` classes,
    /// with its parameters on `device`.
    fn build(
        &self,
        input: [usize; 3],
        classes: usize,
        device: &Device,
    ) -> Result<Self::Model, LowerError>;

    /// The `pretrained = "…"` weights source, for architectures that load published weights.
    fn pretrained(&self) -> Option<&str> {
        None
    }

    /// The padding and BatchNorm style the network is built with, for architectures that load
    /// published weights (checked against what the weights' repo says it is).
    fn weight_style(&self) -> Option<crate::WeightStyle> {
        None
    }
}
