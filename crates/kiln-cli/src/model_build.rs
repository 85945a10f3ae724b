//! A config's [model] table (or a recipe's student table) built into a network.

use anyhow::{Context, Result};
use burn::prelude::Device;
use kiln_nn::{AnyClassifier, BlockActivation, EfficientNetLiteConfig, SmallCnnConfig};

use crate::config::{ActivationConfig, Architecture, ModelConfig};

/// The network `model` describes, for `input` ([height, width, channels]) images and
/// `classes` classes, with its parameters on `device`.
pub fn build_model(
    model: &ModelConfig,
    input: [usize; 3],
    classes: usize,
    device: &Device,
) -> Result<AnyClassifier> {
    Ok(match model.architecture {
        Architecture::SmallCnn => {
            let mut c = SmallCnnConfig::new(input, classes);
            if let Some(filters) = &model.conv_filters {
                c.conv_filters = filters.clone();
            }
            c.dense_units = model.dense_units.unwrap_or(c.dense_units);
            c.init(device).context("cannot build the model")?.into()
        }
        Architecture::EfficientnetLite => {
            let mut c = EfficientNetLiteConfig::new(input, classes);
            c.width_multiplier = model.width_multiplier.unwrap_or(c.width_multiplier);
            c.depth_multiplier = model.depth_multiplier.unwrap_or(c.depth_multiplier);
            c.se_ratio = model.se_ratio.or(c.se_ratio);
            c.dropout = model.dropout.unwrap_or(c.dropout);
            if let Some(activation) = model.activation {
                c.activation = match activation {
                    ActivationConfig::Relu6 => BlockActivation::Relu6,
                    ActivationConfig::Swish => BlockActivation::Swish,
                    ActivationConfig::HardSwish => BlockActivation::HardSwish,
                };
            }
            c.init(device).context("cannot build the model")?.into()
        }
    })
}
