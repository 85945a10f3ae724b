//! `manifest.json`: which config, data, weights and code made which files. Written last in
//! every run directory (atomically, after every stage), it records the Kiln version and git
//! commit, the effective config and its sha256, the data source's identity (Hub repo, commit
//! and files, or paths) with each data file's size and sha256, the pretrained weights' identity,
//! and the size and sha256 of every artifact. `pipeline verify RUN_DIR` checks the artifacts
//! against it before anything else ([`check`]).
//!
//! Checkpoint directories are resume state, not artifacts (`--resume` rewrites them), and are
//! left out; so are temporary files of interrupted writes.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::context::RunContext;
use crate::data::HubProvenance;
use crate::digest::{FileDigest, file_digest, sha256_hex};
use crate::pretrained::PretrainedSource;

pub const FILE_NAME: &str = "manifest.json";

#[derive(Serialize)]
pub struct Manifest<'a> {
    pub kiln_version: &'static str,
    /// The commit the pipeline was built from, when built from a git checkout.
    pub git_commit: Option<&'static str>,
    pub created_unix_seconds: u64,
    pub config: ConfigIdentity,
    pub data: DataIdentity<'a>,
    pub pretrained: Option<&'a PretrainedSource>,
    /// Every file of the run directory but this one and the checkpoints, by path relative to
    /// the run directory (`/`-separated), sorted.
    pub artifacts: Vec<FileDigest>,
}

#[derive(Serialize)]
pub struct ConfigIdentity {
    /// The config file the run started from.
    pub file: String,
    /// sha256 of `effective` (the report's `config_sha256`).
    pub sha256: String,
    /// The config after `--set` overrides, as TOML (also `config.toml` in the run directory).
    pub effective: String,
}

#[derive(Serialize)]
pub struct DataIdentity<'a> {
    /// `parquet`, `hub` or `folder`.
    pub source: &'a str,
    pub hub: Option<&'a HubProvenance>,
    pub files: Vec<FileDigest>,
}

/// Writes `run_dir/manifest.json` for the run so far (call it after the last stage).
pub fn write(run: &RunContext<'_>) -> Result<()> {
    let provenance = &run.splits.provenance;
    let data_files = provenance.file_digests()?;
    let manifest = Manifest {
        kiln_version: env!("CARGO_PKG_VERSION"),
        git_commit: option_env!("KILN_GIT_COMMIT"),
        created_unix_seconds: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        config: ConfigIdentity {
            file: std::path::absolute(run.config_path)
                .unwrap_or_else(|_| run.config_path.to_path_buf())
                .display()
                .to_string(),
            sha256: sha256_hex(run.loaded.effective_toml.as_bytes()),
            effective: run.loaded.effective_toml.clone(),
        },
        data: DataIdentity {
            source: &provenance.source,
            hub: provenance.hub.as_ref(),
            files: data_files,
        },
        pretrained: run.pretrained.as_ref(),
        artifacts: artifacts(run.run_dir)?,
    };
    let json = serde_json::to_vec_pretty(&manifest).context("cannot serialise manifest.json")?;
    let path = run.run_dir.join(FILE_NAME);
    kiln_tflite::write_atomically(&path, &json)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The digests of `run_dir`'s artifacts (see [`Manifest::artifacts`]).
pub fn artifacts(run_dir: &Path) -> Result<Vec<FileDigest>> {
    let mut found = Vec::new();
    collect(run_dir, "", &mut found)?;
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

fn collect(dir: &Path, prefix: &str, found: &mut Vec<FileDigest>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let relative = format!("{prefix}{name}");
        let path = entry.path();
        let kind = entry
            .file_type()
            .with_context(|| format!("cannot stat {}", path.display()))?;
        if kind.is_dir() {
            if !(prefix.is_empty() && name.starts_with("checkpoint")) {
                collect(&path, &format!("{relative}/"), found)?;
            }
        } else if !is_temporary(&name) && relative != FILE_NAME {
            found.push(
                file_digest(&path, relative)
                    .with_context(|| format!("cannot read {}", path.display()))?,
            );
        }
    }
    Ok(())
}

/// `write_atomically`'s temporary files (`.NAME.tmp-PID`), left by a killed process.
fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// What `manifest.json` says of the artifacts (the rest is for people).
#[derive(Deserialize)]
struct RecordedArtifacts {
    artifacts: Vec<FileDigest>,
}

/// How a run directory's files compare with its manifest.
#[derive(Debug, Default, PartialEq)]
pub struct ManifestCheck {
    /// Artifacts whose bytes match.
    pub matching: usize,
    /// `(path, what changed)`.
    pub changed: Vec<(String, String)>,
    pub missing: Vec<String>,
    /// Files the manifest does not list.
    pub added: Vec<String>,
}

impl ManifestCheck {
    pub fn is_intact(&self) -> bool {
        self.changed.is_empty() && self.missing.is_empty() && self.added.is_empty()
    }

    /// One line per file that differs from the manifest.
    pub fn problems(&self) -> Vec<String> {
        let changed = self
            .changed
            .iter()
            .map(|(path, how)| format!("{path}: changed ({how})"));
        let missing = self.missing.iter().map(|path| format!("{path}: missing"));
        let added = self
            .added
            .iter()
            .map(|path| format!("{path}: not in the manifest"));
        changed.chain(missing).chain(added).collect()
    }
}

/// Compares `run_dir`'s artifacts with its `manifest.json`.
pub fn check(run_dir: &Path) -> Result<ManifestCheck> {
    let path = run_dir.join(FILE_NAME);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{} has no {FILE_NAME}: the run did not finish, or an older Kiln made it; rerun it \
             (`pipeline run CONFIG --out {}`) to verify its files",
            run_dir.display(),
            run_dir.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let recorded: RecordedArtifacts = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a Kiln manifest", path.display()))?;
    let present = artifacts(run_dir)?;
    let mut result = ManifestCheck::default();
    for expected in &recorded.artifacts {
        match present.iter().find(|p| p.path == expected.path) {
            None => result.missing.push(expected.path.clone()),
            Some(actual) if actual.sha256 == expected.sha256 && actual.bytes == expected.bytes => {
                result.matching += 1;
            }
            Some(actual) => result.changed.push((
                expected.path.clone(),
                format!(
                    "{} bytes, sha256 {} in the manifest; now {} bytes, sha256 {}",
                    expected.bytes, expected.sha256, actual.bytes, actual.sha256
                ),
            )),
        }
    }
    result.added = present
        .iter()
        .filter(|p| !recorded.artifacts.iter().any(|e| e.path == p.path))
        .map(|p| p.path.clone())
        .collect();
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("kiln-manifest-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tensorboard/train")).unwrap();
        std::fs::create_dir_all(dir.join("checkpoint-prune")).unwrap();
        std::fs::write(dir.join("model_int8.tflite"), b"TFL3 weights").unwrap();
        std::fs::write(dir.join("report.md"), b"# run").unwrap();
        std::fs::write(dir.join("tensorboard/train/events.out.tfevents.1"), b"log").unwrap();
        std::fs::write(dir.join("checkpoint-prune/state.json"), b"{}").unwrap();
        std::fs::write(dir.join(".report.md.tmp-99"), b"half").unwrap();
        dir
    }

    fn write_manifest(dir: &Path) {
        let manifest = serde_json::json!({ "artifacts": artifacts(dir).unwrap() });
        std::fs::write(dir.join(FILE_NAME), manifest.to_string()).unwrap();
    }

    #[test]
    fn artifacts_skip_checkpoints_temporaries_and_the_manifest() {
        let dir = run_dir("list");
        write_manifest(&dir);
        let paths: Vec<String> = artifacts(&dir)
            .unwrap()
            .into_iter()
            .map(|a| a.path)
            .collect();
        assert_eq!(
            paths,
            [
                "model_int8.tflite",
                "report.md",
                "tensorboard/train/events.out.tfevents.1"
            ]
        );
        let check = check(&dir).unwrap();
        assert!(check.is_intact(), "{check:?}");
        assert_eq!(check.matching, 3);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_changed_missing_or_added_file_is_named() {
        let dir = run_dir("tamper");
        write_manifest(&dir);
        // One byte changed, same length.
        std::fs::write(dir.join("model_int8.tflite"), b"TFL3 weighus").unwrap();
        std::fs::remove_file(dir.join("report.md")).unwrap();
        std::fs::write(dir.join("tensorboard/extra.txt"), b"new").unwrap();
        // Resume state may change freely.
        std::fs::write(dir.join("checkpoint-prune/state.json"), b"{\"epoch\":2}").unwrap();
        let check = check(&dir).unwrap();
        assert_eq!(check.matching, 1);
        assert_eq!(check.changed.len(), 1);
        assert_eq!(check.changed[0].0, "model_int8.tflite");
        assert_eq!(check.missing, ["report.md"]);
        assert_eq!(check.added, ["tensorboard/extra.txt"]);
        let problems = check.problems().join("\n");
        assert!(
            problems.contains("model_int8.tflite: changed"),
            "{problems}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_run_without_a_manifest_says_how_to_get_one() {
        let dir = run_dir("none");
        let error = check(&dir).unwrap_err().to_string();
        assert!(error.contains("has no manifest.json"), "{error}");
        assert!(error.contains("pipeline run"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
