//! The data stage of a run: the `[data]` source (local parquet, Hub dataset or image folder)
//! loaded through kiln-data's decoded cache, split into train / validation / test (stratified,
//! seeded), limited and normalised — and what was read, for the report.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use kiln_data::{
    ColumnNames, DecodeSpec, DecodedCache, HubDataset, HubSettings, ImageDataset, LoadedSplit,
    SplitSource, load_split,
};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use tracing::{info, warn};

use crate::config::{DataSource, LoadedConfig};

/// The three splits a run uses and where they came from.
pub struct Splits {
    pub train: ImageDataset,
    /// Empty when the config holds none out.
    pub validation: ImageDataset,
    pub test: ImageDataset,
    pub provenance: Provenance,
}

/// What was read: the source, its files, undecodable rows per source split.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Provenance {
    /// `parquet`, `hub` or `folder`.
    pub source: String,
    /// For Hub sources: `owner/name`, the revision asked for and the commit it resolved to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hub: Option<HubProvenance>,
    /// Local files read, as given (parquet shards, Hub cache paths, folder roots).
    pub files: Vec<PathBuf>,
    /// Rows skipped because their image could not be decoded, per source split.
    pub skipped: BTreeMap<String, usize>,
    /// Splits served from the decoded-image cache (no image decoded).
    pub cache_hits: Vec<String>,
    /// The files' digests, computed once (the report and the manifest both record them;
    /// datasets can be gigabytes).
    #[serde(skip)]
    digests: std::sync::OnceLock<Vec<crate::digest::FileDigest>>,
}

impl Provenance {
    /// Size and sha256 of each local data file (folder roots, being directories, are left
    /// out), recorded by the path the config gave.
    pub fn file_digests(&self) -> Result<Vec<crate::digest::FileDigest>> {
        if let Some(digests) = self.digests.get() {
            return Ok(digests.clone());
        }
        let digests: Vec<_> = self
            .files
            .iter()
            .filter(|path| path.is_file())
            .map(|path| {
                crate::digest::file_digest(path, path.display().to_string())
                    .with_context(|| format!("cannot read the data file {}", path.display()))
            })
            .collect::<Result<_>>()?;
        Ok(self.digests.get_or_init(|| digests).clone())
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct HubProvenance {
    pub repo: String,
    pub revision: String,
    pub commit: String,
    /// Repository paths of the files read.
    pub files: Vec<String>,
}

/// A source's splits as kiln-data reads them, with the names the report gives them.
struct SourceSplits {
    /// `parquet`, `hub` or `folder`.
    kind: &'static str,
    train: NamedSplit,
    /// Without one, the test set is carved out of train.
    test: Option<NamedSplit>,
}

struct NamedSplit {
    name: String,
    source: SplitSource,
}

impl SourceSplits {
    /// The one place that knows every kind of `[data]` source.
    fn of(loaded: &LoadedConfig) -> Result<Self> {
        let named = |name: &str, source| NamedSplit {
            name: name.to_owned(),
            source,
        };
        Ok(match loaded.config.data.source()? {
            DataSource::Parquet { train, test } => {
                let resolve = |paths: &[PathBuf]| paths.iter().map(|p| loaded.resolve(p)).collect();
                Self {
                    kind: "parquet",
                    train: named("train", SplitSource::Parquet(resolve(train))),
                    test: (!test.is_empty())
                        .then(|| named("test", SplitSource::Parquet(resolve(test)))),
                }
            }
            DataSource::Hub(hub) => {
                let split = |name: &str| {
                    let dataset = HubDataset {
                        repo: hub.repo.clone(),
                        revision: hub.revision.clone(),
                    };
                    named(
                        name,
                        SplitSource::Hub {
                            dataset,
                            split: name.to_owned(),
                        },
                    )
                };
                Self {
                    kind: "hub",
                    train: split(&hub.train_split),
                    test: hub.test_split.as_deref().map(split),
                }
            }
            DataSource::Folder(folder) => Self {
                kind: "folder",
                train: named("train", SplitSource::Folder(loaded.resolve(&folder.train))),
                test: folder
                    .test
                    .as_ref()
                    .map(|t| named("test", SplitSource::Folder(loaded.resolve(t)))),
            },
        })
    }
}

/// Loads the run's data as its config says.
pub fn load_data(loaded: &LoadedConfig) -> Result<Splits> {
    let data = &loaded.config.data;
    let seed = loaded.config.seed;
    let columns = ColumnNames {
        image: data.image_column.clone(),
        label: data.label_column.clone(),
    };
    let decode = DecodeSpec::new(
        data.color,
        data.image_size.map(|[h, w]| (h, w)),
        data.resize,
    );
    let hub_settings = HubSettings::from_env();
    let cache = data.cache.then(DecodedCache::default_location);

    let sources = SourceSplits::of(loaded)?;

    let load = |source: &SplitSource, name: &str| -> Result<LoadedSplit> {
        let split = load_split(source, &columns, decode, &hub_settings, cache.as_ref())
            .with_context(|| format!("loading the {name} split"))?;
        for warning in &split.dataset.warnings {
            warn!("{name}: {warning}");
        }
        if split.cache_hit {
            info!(
                "{name}: {} images from the decoded-image cache (no decoding)",
                split.dataset.len()
            );
        }
        Ok(split)
    };
    let train_loaded = load(&sources.train.source, &sources.train.name)?;
    let test_loaded = sources
        .test
        .as_ref()
        .map(|test| load(&test.source, &test.name))
        .transpose()?;

    let mut provenance = Provenance {
        source: sources.kind.into(),
        hub: data.hub.as_ref().map(|hub| HubProvenance {
            repo: hub.repo.clone(),
            revision: hub.revision.clone(),
            commit: train_loaded.commit.clone().unwrap_or_default(),
            files: Vec::new(),
        }),
        files: Vec::new(),
        skipped: BTreeMap::new(),
        cache_hits: Vec::new(),
        digests: std::sync::OnceLock::new(),
    };
    let mut record = |name: &str, split: &LoadedSplit| {
        provenance.files.extend(split.files.iter().cloned());
        provenance
            .skipped
            .insert(name.to_owned(), split.dataset.skipped);
        if split.cache_hit {
            provenance.cache_hits.push(name.to_owned());
        }
    };
    record(&sources.train.name, &train_loaded);
    if let (Some(test), Some(named)) = (&test_loaded, &sources.test) {
        record(&named.name, test);
    }
    if let Some(hub) = &mut provenance.hub {
        hub.files = train_loaded.repo_paths.clone();
        if let Some(test) = &test_loaded {
            hub.files.extend(test.repo_paths.iter().cloned());
        }
    }

    let full_train = train_loaded.dataset;
    let (mut train, mut validation, mut test) = match test_loaded {
        // No validation split wanted: keep the training set as it is, without copying it.
        Some(test) if data.validation_fraction == 0.0 => {
            let validation = full_train.subset(&[]);
            (full_train, validation, test.dataset)
        }
        Some(test) => {
            let fraction = data.validation_fraction;
            let [train, validation] =
                parts(full_train.split_stratified(&[1.0 - fraction, fraction], seed)?)?;
            (train, validation, test.dataset)
        }
        None => {
            let [train, validation, test] = parts(full_train.split_stratified(&data.split, seed)?)?;
            (train, validation, test)
        }
    };
    // The class list is the longest seen (a test split may name classes train lacks).
    if test.class_names.len() > train.class_names.len() {
        train.class_names = test.class_names.clone();
        validation.class_names = test.class_names.clone();
    } else {
        test.class_names = train.class_names.clone();
    }
    train = limit(train, data.limit_train, seed);
    test = limit(test, data.limit_test, seed.wrapping_add(1));
    if train.is_empty() || test.is_empty() {
        bail!(
            "the train and test splits must both hold at least one decodable image (train {}, test {}): check the source and `split`",
            train.len(),
            test.len()
        );
    }
    let normalization = data.normalization();
    for set in [&mut train, &mut validation, &mut test] {
        set.normalize(&normalization)
            .context("invalid [data] mean/std")?;
    }
    Ok(Splits {
        train,
        validation,
        test,
        provenance,
    })
}

/// The `N` parts of a split as an array (a split returns one part per fraction).
fn parts<const N: usize>(split: Vec<ImageDataset>) -> Result<[ImageDataset; N]> {
    split.try_into().map_err(|parts: Vec<ImageDataset>| {
        anyhow::anyhow!("expected {N} splits, got {}", parts.len())
    })
}

/// A seeded sample of `n` rows (kept in dataset order), or all rows.
fn limit(data: ImageDataset, n: Option<usize>, seed: u64) -> ImageDataset {
    match n {
        Some(n) if n < data.len() => {
            let mut indices: Vec<usize> = (0..data.len()).collect();
            indices.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
            indices.truncate(n);
            indices.sort_unstable();
            data.subset(&indices)
        }
        _ => data,
    }
}
