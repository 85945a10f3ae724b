//! `pretrained = "…"` in `[model]`: where the weights come from (a Hub model repo through
//! hf-hub and its cache, or a local file), their identity for the report, and loading them
//! into the freshly built network with its classifier replaced for the task's classes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kiln_data::{HubModel, HubSettings, fetch_model_weights};
use kiln_nn::{AnyClassifier, Classifier, ClassifierWeights, WeightStyle};
use serde::Serialize;
use tracing::info;

use crate::config::LoadedConfig;
use crate::digest::sha256_hex;

/// Which weights a run started from, as the report records them.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PretrainedSource {
    /// What the config says.
    pub spec: String,
    /// `owner/name` of a Hub model repo, when the weights came from the Hub.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The commit the revision resolved to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The weights file (its repo path for the Hub, else its path).
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
    /// Tensors loaded into the backbone.
    pub tensors: usize,
    #[serde(skip)]
    pub local_path: PathBuf,
}

const WEIGHT_EXTENSIONS: [&str; 4] = ["safetensors", "pth", "pt", "bin"];

/// Finds (downloading if needed) the weights `spec` names: a file when it exists or has a
/// weights extension (relative paths resolve against the config file), else a Hub repo id.
pub fn resolve(spec: &str, loaded: &LoadedConfig, hub: &HubSettings) -> Result<PretrainedSource> {
    let as_path = Path::new(spec);
    let local = [as_path.to_path_buf(), loaded.resolve(as_path)]
        .into_iter()
        .find(|p| p.is_file());
    let has_extension = as_path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| WEIGHT_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
    let (path, repo) = match local {
        Some(path) => (path, None),
        None if has_extension => anyhow::bail!(
            "pretrained weights '{spec}' not found (looked in the working directory and next to \
             {}); fix the path in [model] pretrained",
            loaded.path.display()
        ),
        None => {
            let model = HubModel::parse(spec)?;
            let file = fetch_model_weights(&model, hub)?;
            if let Some(config) = &file.config_json {
                check_style(spec, config, loaded.config.model.weight_style())?;
            }
            (file.local_path.clone(), Some((model, file)))
        }
    };
    let bytes = std::fs::read(&path)
        .with_context(|| format!("cannot read pretrained weights {}", path.display()))?;
    Ok(PretrainedSource {
        spec: spec.to_owned(),
        repo: repo.as_ref().map(|(m, _)| m.repo.clone()),
        revision: repo.as_ref().map(|(m, _)| m.revision.clone()),
        commit: repo.as_ref().map(|(_, f)| f.commit.clone()),
        file: repo
            .as_ref()
            .map_or_else(|| path.display().to_string(), |(_, f)| f.repo_path.clone()),
        bytes: bytes.len() as u64,
        sha256: sha256_hex(&bytes),
        tensors: 0,
        local_path: path,
    })
}

/// timm's `tf_*` weights were trained with TensorFlow's SAME padding and BatchNorm ε, its
/// others with PyTorch's: both load into either style (the shapes agree) and then compute
/// something else. The repo's `config.json` names the timm architecture; a mismatch with
/// `weight_style` is an error naming the fix.
fn check_style(spec: &str, config: &Path, style: Option<WeightStyle>) -> Result<()> {
    let Some(style) = style else { return Ok(()) };
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} of {spec} is not JSON", config.display()))?;
    let Some(architecture) = json["architecture"].as_str() else {
        return Ok(());
    };
    let expected = if architecture.starts_with("tf_") {
        WeightStyle::Tensorflow
    } else {
        WeightStyle::Pytorch
    };
    if style != expected {
        let key = match expected {
            WeightStyle::Tensorflow => "tensorflow",
            WeightStyle::Pytorch => "pytorch",
        };
        anyhow::bail!(
            "pretrained {spec} is timm's {architecture}, trained with {key}-style padding and \
             BatchNorm, but [model] builds {style:?} style: set weight_style = \"{key}\""
        );
    }
    Ok(())
}

/// Loads the config's pretrained weights (if any) into `model`, keeping its own classifier.
pub fn load_into(
    model: &mut AnyClassifier,
    loaded: &LoadedConfig,
    hub: &HubSettings,
) -> Result<Option<PretrainedSource>> {
    let Some(spec) = loaded.config.model.pretrained() else {
        return Ok(None);
    };
    let mut source = resolve(spec, loaded, hub)?;
    let weights = model
        .load_pretrained(
            model.architecture(),
            &source.local_path,
            ClassifierWeights::Replace,
        )
        .with_context(|| format!("cannot load pretrained weights '{spec}'"))?;
    source.tensors = weights.tensors;
    info!(
        "pretrained {}: {} tensors from {} ({} bytes, sha256 {}…)",
        model.architecture(),
        weights.tensors,
        source.commit.as_ref().map_or_else(
            || source.file.clone(),
            |commit| format!(
                "{}@{} ({})",
                spec,
                &commit[..commit.len().min(12)],
                source.file
            )
        ),
        source.bytes,
        &source.sha256[..12]
    );
    Ok(Some(source))
}
