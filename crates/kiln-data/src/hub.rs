//! Datasets from the Hugging Face Hub: the parquet files of one split of a dataset repository
//! at a revision, downloaded with `hf-hub` into the standard Hugging Face cache (shared with
//! Python's `huggingface_hub` and `datasets`), so a second run downloads nothing.
//!
//! Environment, as the Hugging Face tools read it: `HF_ENDPOINT` (mirror or test server),
//! `HF_HOME` / `HF_HUB_CACHE` (cache location), `HF_TOKEN` (gated and private datasets) and
//! `HF_HUB_OFFLINE=1` (serve from the cache with no network request at all; `hf-hub` itself
//! does not read that one, so it is mapped here).

use std::path::{Path, PathBuf};

use hf_hub::{HFClient, HFClientSync, HFError};

use crate::DataError;

/// A dataset repository at a revision (branch, tag or commit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubDataset {
    /// `owner/name`, e.g. `microsoft/cats_vs_dogs`.
    pub repo: String,
    /// Branch, tag or commit; `main` by default.
    pub revision: String,
}

/// The two kinds of repository Kiln reads: datasets and models.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RepoKind {
    Dataset,
    Model,
}

impl RepoKind {
    fn noun(self) -> &'static str {
        match self {
            Self::Dataset => "dataset",
            Self::Model => "model",
        }
    }
}

/// A repository at a revision, as the cache and the error messages name it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RepoRef<'a> {
    pub kind: RepoKind,
    pub repo: &'a str,
    pub revision: &'a str,
}

impl HubDataset {
    fn as_ref(&self) -> RepoRef<'_> {
        RepoRef {
            kind: RepoKind::Dataset,
            repo: &self.repo,
            revision: &self.revision,
        }
    }
}

/// Where and how to reach the Hub. [`HubSettings::from_env`] is what users get; tests set
/// the fields directly so parallel tests do not share process environment.
#[derive(Clone, Debug, Default)]
pub struct HubSettings {
    /// Base URL; `None` = `HF_ENDPOINT` or https://huggingface.co.
    pub endpoint: Option<String>,
    /// Hub cache directory; `None` = `HF_HUB_CACHE`, else `HF_HOME/hub`, else
    /// `~/.cache/huggingface/hub`.
    pub cache_dir: Option<PathBuf>,
    /// Access token; `None` = `HF_TOKEN` or the token file under `HF_HOME`.
    pub token: Option<String>,
    /// Never touch the network (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
}

impl HubSettings {
    /// Settings from the environment: everything but `offline` is left to `hf-hub`, which
    /// reads the same variables.
    pub fn from_env() -> Self {
        Self {
            offline: offline_from_env(),
            ..Self::default()
        }
    }
}

/// `HF_HUB_OFFLINE` as `huggingface_hub` interprets it: 1, ON, YES or TRUE (any case).
fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| is_truthy(&v))
}

fn is_truthy(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_uppercase().as_str(),
        "1" | "ON" | "YES" | "TRUE"
    )
}

/// The parquet files of `split`, resolved to a commit and present in the local cache.
#[derive(Clone, Debug)]
pub struct SplitFiles {
    /// The commit the files belong to: the cache key for anything derived from them.
    pub commit: String,
    /// Repository paths, sorted (e.g. `data/train-00000-of-00002.parquet`).
    pub repo_paths: Vec<String>,
    /// Local paths in the Hugging Face cache, in `repo_paths` order.
    pub local_paths: Vec<PathBuf>,
}

/// Downloads (or finds in the cache) the parquet files of `split`.
pub fn fetch_split(
    dataset: &HubDataset,
    split: &str,
    settings: &HubSettings,
) -> Result<SplitFiles, DataError> {
    let (owner, name) = dataset.repo.split_once('/').ok_or_else(|| {
        DataError::Hub(format!(
            "dataset repo '{}' must look like owner/name (e.g. microsoft/cats_vs_dogs)",
            dataset.repo
        ))
    })?;
    let (client, cache_dir) = client(settings)?;
    let repo = client.dataset(owner, name);
    let (commit, files) = if settings.offline {
        cached_snapshot(&cache_dir, dataset.as_ref())?
    } else {
        let info = repo
            .info()
            .revision(dataset.revision.clone())
            .send()
            .map_err(|e| hub_error(dataset.as_ref(), None, e))?;
        let commit = info.sha.clone().ok_or_else(|| {
            DataError::Hub(format!(
                "the Hub did not report a commit for {}@{}",
                dataset.repo, dataset.revision
            ))
        })?;
        let files = match info.siblings {
            Some(siblings) => siblings.into_iter().map(|s| s.rfilename).collect(),
            None => repo
                .list_tree()
                .revision(commit.clone())
                .recursive(true)
                .send()
                .map_err(|e| hub_error(dataset.as_ref(), None, e))?
                .into_iter()
                .filter_map(|entry| match entry {
                    hf_hub::repository::RepoTreeEntry::File { path, .. } => Some(path),
                    _ => None,
                })
                .collect(),
        };
        (commit, files)
    };
    let repo_paths = split_files(&files, split);
    if repo_paths.is_empty() {
        let available = available_splits(&files);
        return Err(DataError::Hub(format!(
            "dataset {}@{} has no parquet files for split '{split}'; its splits are: {}. Fix the split name in the config",
            dataset.repo,
            dataset.revision,
            if available.is_empty() {
                "none (no parquet files at all — is this a parquet dataset?)".to_owned()
            } else {
                available.join(", ")
            }
        )));
    }
    if !settings.offline && commit != dataset.revision {
        // Files are fetched by commit (so a moving branch cannot mix shards), which leaves the
        // branch → commit link unwritten; offline runs resolve the branch through it, the way
        // huggingface_hub records it.
        record_ref(&cache_dir, dataset.as_ref(), &commit).map_err(|e| {
            DataError::Hub(format!(
                "cannot write to the Hugging Face cache {}: {e}; check HF_HUB_CACHE / HF_HOME",
                cache_dir.display()
            ))
        })?;
    }
    let mut local_paths = Vec::with_capacity(repo_paths.len());
    for path in &repo_paths {
        let local = repo
            .download_file()
            .filename(path.clone())
            .revision(commit.clone())
            .local_files_only(settings.offline)
            .send()
            .map_err(|e| hub_error(dataset.as_ref(), Some(path), e))?;
        local_paths.push(local);
    }
    Ok(SplitFiles {
        commit,
        repo_paths,
        local_paths,
    })
}

/// The blocking client and the cache directory it uses.
pub(crate) fn client(settings: &HubSettings) -> Result<(HFClientSync, PathBuf), DataError> {
    let mut builder = HFClient::builder();
    if let Some(endpoint) = &settings.endpoint {
        builder = builder.endpoint(endpoint.clone());
    }
    if let Some(dir) = &settings.cache_dir {
        builder = builder.cache_dir(dir.clone());
    }
    if let Some(token) = &settings.token {
        builder = builder.token(token.clone());
    }
    let setup =
        |e: HFError| DataError::Hub(format!("cannot set up the Hugging Face Hub client: {e}"));
    let client = builder.build().map_err(setup)?;
    let cache_dir = client.cache_dir().to_owned();
    Ok((HFClientSync::from_inner(client).map_err(setup)?, cache_dir))
}

/// The commit a cached revision points at and the files of its snapshot, read from the cache
/// layout (`datasets--owner--name/refs/<revision>` and `snapshots/<commit>/…`).
pub(crate) fn cached_snapshot(
    cache_dir: &Path,
    dataset: RepoRef<'_>,
) -> Result<(String, Vec<String>), DataError> {
    let repo_dir = repo_cache_dir(cache_dir, dataset);
    let not_cached = || {
        DataError::Hub(format!(
            "HF_HUB_OFFLINE is set but {} {}@{} is not in the Hugging Face cache at {}; \
             run once online (unset HF_HUB_OFFLINE) to download it, or point HF_HUB_CACHE at a cache that has it",
            dataset.kind.noun(),
            dataset.repo,
            dataset.revision,
            cache_dir.display()
        ))
    };
    let commit = if is_commit_hash(dataset.revision) {
        dataset.revision.to_owned()
    } else {
        std::fs::read_to_string(repo_dir.join("refs").join(dataset.revision))
            .map_err(|_| not_cached())?
            .trim()
            .to_owned()
    };
    let snapshot = repo_dir.join("snapshots").join(&commit);
    if !snapshot.is_dir() {
        return Err(not_cached());
    }
    let mut files = Vec::new();
    walk(&snapshot, &snapshot, &mut files).map_err(|e| {
        DataError::Hub(format!(
            "cannot read the cached snapshot {}: {e}",
            snapshot.display()
        ))
    })?;
    Ok((commit, files))
}

fn repo_cache_dir(cache_dir: &Path, dataset: RepoRef<'_>) -> PathBuf {
    cache_dir.join(format!(
        "{}s--{}",
        dataset.kind.noun(),
        dataset.repo.replace('/', "--")
    ))
}

/// Writes `refs/<revision>` = `commit` in the repo's cache directory (temp file + rename).
pub(crate) fn record_ref(
    cache_dir: &Path,
    dataset: RepoRef<'_>,
    commit: &str,
) -> std::io::Result<()> {
    let path = repo_cache_dir(cache_dir, dataset)
        .join("refs")
        .join(dataset.revision);
    if std::fs::read_to_string(&path).is_ok_and(|current| current.trim() == commit) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let temp = path.with_extension(format!("kiln-{}.tmp", std::process::id()));
    std::fs::write(&temp, commit)?;
    std::fs::rename(&temp, &path)
}

fn walk(root: &Path, dir: &Path, files: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(root, &path, files)?;
        } else if let Ok(relative) = path.strip_prefix(root) {
            let parts: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            files.push(parts.join("/"));
        }
    }
    Ok(())
}

fn is_commit_hash(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The parquet files of `split`, sorted: a file belongs to it when a directory on its path
/// is named after it (`train/0000.parquet`, `default/train/…`) or its file name is the split
/// name followed by `-`, `_` or `.` (`data/train-00000-of-00002.parquet`, `train.parquet`) —
/// the layouts the Hub's parquet datasets and its parquet conversions use.
pub fn split_files(files: &[String], split: &str) -> Vec<String> {
    let mut selected: Vec<String> = files
        .iter()
        .filter(|path| {
            path.ends_with(".parquet") && {
                let (dirs, prefix) = path_parts(path);
                dirs.contains(&split) || prefix == split
            }
        })
        .cloned()
        .collect();
    selected.sort();
    selected
}

/// A parquet path's directories and its file name up to the first `-`, `_` or `.`.
fn path_parts(path: &str) -> (Vec<&str>, &str) {
    let mut dirs: Vec<&str> = path.split('/').collect();
    let file = dirs.pop().unwrap_or_default();
    let prefix = file.split(['-', '_', '.']).next().unwrap_or_default();
    (dirs, prefix)
}

/// Split names for an error message: file-name prefixes, or the innermost directory when the
/// file name is a bare number (`default/train/0000.parquet`).
fn available_splits(files: &[String]) -> Vec<String> {
    let mut splits: Vec<String> = files
        .iter()
        .filter(|p| p.ends_with(".parquet"))
        .filter_map(|p| {
            let (dirs, prefix) = path_parts(p);
            let numbered = prefix.is_empty() || prefix.bytes().all(|b| b.is_ascii_digit());
            if numbered {
                dirs.last().map(|d| (*d).to_owned())
            } else {
                Some(prefix.to_owned())
            }
        })
        .collect();
    splits.sort();
    splits.dedup();
    splits
}

/// A Hub failure as a message that says what went wrong and how to fix it.
pub(crate) fn hub_error(dataset: RepoRef<'_>, file: Option<&str>, error: HFError) -> DataError {
    let noun = dataset.kind.noun();
    let what = match file {
        Some(file) => format!("{file} of {noun} {}@{}", dataset.repo, dataset.revision),
        None => format!("{noun} {}@{}", dataset.repo, dataset.revision),
    };
    let repo_missing = match &error {
        HFError::AuthRequired { context }
        | HFError::Forbidden { context }
        | HFError::Http { context } => context.error_code.as_deref() == Some("RepoNotFound"),
        HFError::RevisionNotFound { context, .. } | HFError::EntryNotFound { context, .. } => {
            context.as_ref().and_then(|c| c.error_code.as_deref()) == Some("RepoNotFound")
        }
        HFError::RepoNotFound { .. } => true,
        _ => false,
    };
    let message = match &error {
        // The Hub answers 401 (anonymous) or 404 for a repo that does not exist or that the
        // token cannot see, with the error code RepoNotFound.
        _ if repo_missing => format!(
            "{noun} {} does not exist on the Hub, or it is private and HF_TOKEN does not grant access (Hub error RepoNotFound): check the repo name in the config",
            dataset.repo
        ),
        HFError::AuthRequired { .. } | HFError::Forbidden { .. } => format!(
            "the Hub refused access to {what} (401/403: gated or private): accept the {noun}'s terms on its Hub page, then set HF_TOKEN to a token with read access"
        ),
        HFError::RevisionNotFound { .. } => format!(
            "{what}: revision '{}' does not exist (404): check the revision in the config",
            dataset.revision
        ),
        HFError::EntryNotFound { .. } => {
            format!(
                "{what} is not in the repository (404): the repo's file list changed; run again"
            )
        }
        HFError::LocalEntryNotFound { .. } => format!(
            "HF_HUB_OFFLINE is set but {what} is not in the Hugging Face cache: run once online to download it"
        ),
        _ => format!(
            "cannot fetch {what} from the Hub: {error}. Check the network, HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use the cache"
        ),
    };
    DataError::Hub(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(paths: &[&str]) -> Vec<String> {
        paths.iter().map(|p| (*p).to_owned()).collect()
    }

    #[test]
    fn split_files_follow_the_hub_layouts() {
        let repo = files(&[
            "README.md",
            "data/train-00001-of-00002.parquet",
            "data/train-00000-of-00002.parquet",
            "data/test-00000-of-00001-5a2b.parquet",
            "default/validation/0000.parquet",
            "plain/train.parquet",
        ]);
        assert_eq!(
            split_files(&repo, "train"),
            [
                "data/train-00000-of-00002.parquet",
                "data/train-00001-of-00002.parquet",
                "plain/train.parquet"
            ]
        );
        assert_eq!(
            split_files(&repo, "test"),
            ["data/test-00000-of-00001-5a2b.parquet"]
        );
        assert_eq!(
            split_files(&repo, "validation"),
            ["default/validation/0000.parquet"]
        );
        assert!(split_files(&repo, "tra").is_empty());
        assert_eq!(available_splits(&repo), ["test", "train", "validation"]);
    }

    #[test]
    fn offline_flag_reads_like_huggingface_hub() {
        for (value, offline) in [
            ("1", true),
            ("true", true),
            (" YES", true),
            ("on", true),
            ("0", false),
            ("", false),
            ("no", false),
        ] {
            assert_eq!(is_truthy(value), offline, "{value:?}");
        }
    }

    #[test]
    fn offline_without_a_cached_copy_says_how_to_fix_it() {
        let dir = std::env::temp_dir().join(format!("kiln-hub-empty-{}", std::process::id()));
        let settings = HubSettings {
            cache_dir: Some(dir.clone()),
            offline: true,
            ..HubSettings::default()
        };
        let dataset = HubDataset {
            repo: "microsoft/cats_vs_dogs".into(),
            revision: "main".into(),
        };
        let err = fetch_split(&dataset, "train", &settings)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("HF_HUB_OFFLINE") && err.contains("not in the Hugging Face cache"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
