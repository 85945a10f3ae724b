//! Model weights from the Hugging Face Hub: one weights file of a model repository at a
//! revision, through the same client, cache and environment as datasets ([`crate::hub`]) —
//! `HF_ENDPOINT`, `HF_HUB_CACHE`/`HF_HOME`, `HF_TOKEN`, and `HF_HUB_OFFLINE=1` with no request.

use std::path::PathBuf;

use crate::DataError;
use crate::hub::{HubSettings, RepoKind, RepoRef, cached_snapshot, client, hub_error, record_ref};

/// The weights files a model repo may hold, in the order they are preferred (safetensors
/// first: no pickle to trust, and memory-mappable).
pub const WEIGHTS_FILES: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];

/// A model repository at a revision: `owner/name`, optionally `owner/name@revision`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubModel {
    pub repo: String,
    pub revision: String,
}

impl HubModel {
    /// Parses `owner/name[@revision]` (revision `main` when omitted).
    pub fn parse(spec: &str) -> Result<Self, DataError> {
        let (repo, revision) = spec.split_once('@').unwrap_or((spec, "main"));
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        match repo.split_once('/') {
            Some((owner, name)) if valid(owner) && valid(name) && !revision.is_empty() => {
                Ok(Self {
                    repo: repo.to_owned(),
                    revision: revision.to_owned(),
                })
            }
            _ => Err(DataError::Hub(format!(
                "pretrained '{spec}' is neither an existing file nor a Hub model repo id: give \
                 owner/name or owner/name@revision (e.g. timm/tf_efficientnet_lite0.in1k), or \
                 the path of a .safetensors, .pth or .bin file"
            ))),
        }
    }

    fn as_ref(&self) -> RepoRef<'_> {
        RepoRef {
            kind: RepoKind::Model,
            repo: &self.repo,
            revision: &self.revision,
        }
    }
}

/// A weights file of a model repo, present in the local cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelFile {
    /// The commit the revision resolved to.
    pub commit: String,
    /// The file's path in the repo (`model.safetensors`).
    pub repo_path: String,
    pub local_path: PathBuf,
    /// The repo's `config.json` (timm writes its architecture name there), when it has one.
    pub config_json: Option<PathBuf>,
}

/// Downloads (or finds in the cache) the repo's weights: the first of [`WEIGHTS_FILES`] it has.
pub fn fetch_model_weights(
    model: &HubModel,
    settings: &HubSettings,
) -> Result<ModelFile, DataError> {
    let (owner, name) = model.repo.split_once('/').ok_or_else(|| {
        DataError::Hub(format!(
            "model repo '{}' must look like owner/name",
            model.repo
        ))
    })?;
    let (client, cache_dir) = client(settings)?;
    let repo = client.model(owner, name);
    let (commit, files) = if settings.offline {
        cached_snapshot(&cache_dir, model.as_ref())?
    } else {
        let info = repo
            .info()
            .revision(model.revision.clone())
            .send()
            .map_err(|e| hub_error(model.as_ref(), None, e))?;
        let commit = info.sha.clone().ok_or_else(|| {
            DataError::Hub(format!(
                "the Hub did not report a commit for model {}@{}",
                model.repo, model.revision
            ))
        })?;
        let files = info
            .siblings
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.rfilename)
            .collect();
        (commit, files)
    };
    let repo_path = WEIGHTS_FILES
        .iter()
        .find(|f| files.iter().any(|have| have == *f))
        .ok_or_else(|| {
            DataError::Hub(format!(
                "model {}@{} has no weights Kiln reads ({}); its files: {}",
                model.repo,
                model.revision,
                WEIGHTS_FILES.join(", "),
                files.join(", ")
            ))
        })?
        .to_string();
    if !settings.offline && commit != model.revision {
        record_ref(&cache_dir, model.as_ref(), &commit).map_err(|e| {
            DataError::Hub(format!(
                "cannot write to the Hugging Face cache {}: {e}; check HF_HUB_CACHE / HF_HOME",
                cache_dir.display()
            ))
        })?;
    }
    let download = |path: &str| {
        repo.download_file()
            .filename(path.to_owned())
            .revision(commit.clone())
            .local_files_only(settings.offline)
            .send()
            .map_err(|e| hub_error(model.as_ref(), Some(path), e))
    };
    let local_path = download(&repo_path)?;
    let config_json = match files.iter().any(|f| f == "config.json") {
        true => Some(download("config.json")?),
        false => None,
    };
    Ok(ModelFile {
        commit,
        repo_path,
        local_path,
        config_json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_parse_with_and_without_revision() {
        let m = HubModel::parse("timm/efficientnet_b0.ra_in1k").unwrap();
        assert_eq!(
            (m.repo.as_str(), m.revision.as_str()),
            ("timm/efficientnet_b0.ra_in1k", "main")
        );
        let m = HubModel::parse("timm/mobilenetv2_100.ra_in1k@v1.0").unwrap();
        assert_eq!(m.revision, "v1.0");
        for bad in ["weights.pth", "timm/", "a/b/c", "timm/x@", "/abs/path"] {
            let err = HubModel::parse(bad).unwrap_err().to_string();
            assert!(err.contains(bad) && err.contains("owner/name"), "{err}");
        }
    }
}
