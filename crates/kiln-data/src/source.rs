//! One entry point for every dataset source — local parquet files, a Hugging Face Hub
//! dataset split, an image folder — with the decoded-image cache in front of decoding.

use std::path::{Path, PathBuf};

use crate::cache::{DecodedCache, cache_key, file_identity};
use crate::hub::{HubDataset, HubSettings, fetch_split};
use crate::{ColumnNames, DataError, DecodeSpec, ImageDataset, read_image_folder};

/// Where one split's images come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SplitSource {
    /// Local parquet files in the Hugging Face image layout.
    Parquet(Vec<PathBuf>),
    /// The parquet files of `split` in a Hub dataset repository.
    Hub { dataset: HubDataset, split: String },
    /// `root/<class>/*.{jpg,png}`.
    Folder(PathBuf),
}

/// A loaded split and where it came from.
#[derive(Debug)]
pub struct LoadedSplit {
    pub dataset: ImageDataset,
    /// Local files read (parquet shards; the root for a folder).
    pub files: Vec<PathBuf>,
    /// The Hub commit, for Hub sources.
    pub commit: Option<String>,
    /// Repository paths of the files, for Hub sources.
    pub repo_paths: Vec<String>,
    /// Whether the decoded images came from the cache (no image was decoded).
    pub cache_hit: bool,
}

/// Loads `source` with `decode`, using `cache` (when given) to skip decoding a split that
/// was decoded before with the same settings.
pub fn load_split(
    source: &SplitSource,
    columns: &ColumnNames,
    decode: DecodeSpec,
    hub: &HubSettings,
    cache: Option<&DecodedCache>,
) -> Result<LoadedSplit, DataError> {
    let settings = format!(
        "{:?} {:?} {:?} columns {} {}",
        decode.color, decode.size, decode.resize, columns.image, columns.label
    );
    let (files, commit, repo_paths, identity) = match source {
        SplitSource::Parquet(paths) => {
            let identity = paths
                .iter()
                .map(|p| file_identity(p).map_err(|e| missing(p, e)))
                .collect::<Result<Vec<_>, _>>()?;
            (paths.clone(), None, Vec::new(), identity)
        }
        SplitSource::Hub { dataset, split } => {
            let fetched = fetch_split(dataset, split, hub)?;
            let mut identity = vec![format!("hub {} {} {split}", dataset.repo, fetched.commit)];
            identity.extend(fetched.repo_paths.iter().cloned());
            (
                fetched.local_paths,
                Some(fetched.commit),
                fetched.repo_paths,
                identity,
            )
        }
        SplitSource::Folder(root) => {
            let listing = crate::folder::list_image_folder(root)?;
            let identity = listing
                .files
                .iter()
                .map(|(p, label)| file_identity(p).map(|id| format!("{label} {id}")))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| missing(root, e))?;
            (vec![root.clone()], None, Vec::new(), identity)
        }
    };
    let key = cache.map(|_| {
        let mut parts = vec![settings];
        parts.extend(identity);
        cache_key(&parts)
    });
    if let (Some(cache), Some(key)) = (cache, &key)
        && let Some(dataset) = cache.load(key)
    {
        return Ok(LoadedSplit {
            dataset,
            files,
            commit,
            repo_paths,
            cache_hit: true,
        });
    }
    let mut dataset = match source {
        SplitSource::Parquet(_) | SplitSource::Hub { .. } => {
            crate::read_parquet_images(&files, columns, decode)?
        }
        SplitSource::Folder(root) => read_image_folder(root, decode)?,
    };
    if let (Some(cache), Some(key)) = (cache, &key) {
        // A cache that cannot be written only costs speed next time; say so and go on.
        if let Err(e) = cache.store(key, &dataset) {
            dataset.warnings.push(format!(
                "cannot write the decoded-image cache in {}: {e}; the next run decodes again",
                cache.dir().display()
            ));
        }
    }
    Ok(LoadedSplit {
        dataset,
        files,
        commit,
        repo_paths,
        cache_hit: false,
    })
}

fn missing(path: &Path, e: std::io::Error) -> DataError {
    match e.kind() {
        std::io::ErrorKind::NotFound => DataError::FileMissing {
            path: path.to_owned(),
        },
        _ => DataError::Open {
            path: path.to_owned(),
            source: e,
        },
    }
}
