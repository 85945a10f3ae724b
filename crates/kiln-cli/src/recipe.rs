//! Stage recipes (`pipelines/*.toml`): the ordered stages a config runs.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Train,
    Export,
    Verify,
    Report,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub description: Option<String>,
    pub stages: Vec<Stage>,
}

pub fn load(path: &Path) -> Result<Recipe> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the pipeline recipe {} (named by the config's `pipeline` key)",
            path.display()
        )
    })?;
    let recipe: Recipe = toml::from_str(&text).with_context(|| {
        format!(
            "invalid pipeline recipe {} (known stages: train, export, verify, report)",
            path.display()
        )
    })?;
    let order = [Stage::Train, Stage::Export, Stage::Verify, Stage::Report];
    let positions: Vec<usize> = recipe
        .stages
        .iter()
        .map(|s| order.iter().position(|o| o == s).unwrap_or(usize::MAX))
        .collect();
    if recipe.stages.is_empty() || positions.windows(2).any(|w| w[0] >= w[1]) {
        bail!(
            "{}: stages must be a non-empty subsequence of train → export → verify → report",
            path.display()
        );
    }
    if recipe.stages[0] != Stage::Train {
        bail!(
            "{}: the first stage must be `train` (resuming from a run directory is not supported yet)",
            path.display()
        );
    }
    Ok(recipe)
}
