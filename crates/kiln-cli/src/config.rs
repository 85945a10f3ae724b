//! Experiment configs (`configs/*.toml`): strict parsing (unknown keys are errors naming the
//! key and file) and `--set key=value` overrides applied before validation.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use kiln_train::BackendKind;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Run name: the default run directory is `artifacts/<name>/`.
    pub name: String,
    pub seed: u64,
    /// The stage recipe, relative to the config file.
    pub pipeline: PathBuf,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub train: TrainConfig,
    #[serde(default)]
    pub verify: VerifyConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Parquet files in the Hugging Face image layout, relative to the config file.
    pub train: Vec<PathBuf>,
    pub test: Vec<PathBuf>,
    #[serde(default = "default_image_column")]
    pub image_column: String,
    #[serde(default = "default_label_column")]
    pub label_column: String,
    pub color: ColorConfig,
    /// [height, width] to resize to; omitted = keep the images' own size.
    #[serde(default)]
    pub image_size: Option<[usize; 2]>,
    /// Use only the first N training rows (after a seeded shuffle); for quick runs and tests.
    #[serde(default)]
    pub limit_train: Option<usize>,
    #[serde(default)]
    pub limit_test: Option<usize>,
}

fn default_image_column() -> String {
    "image".into()
}

fn default_label_column() -> String {
    "label".into()
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ColorConfig {
    Grayscale,
    Rgb,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub architecture: Architecture,
    #[serde(default)]
    pub conv1_filters: Option<usize>,
    #[serde(default)]
    pub conv2_filters: Option<usize>,
    #[serde(default)]
    pub dense_units: Option<usize>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    SmallCnn,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    #[serde(default = "default_backend")]
    pub backend: BackendKind,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    #[serde(default)]
    pub schedule: Schedule,
    #[serde(default)]
    pub augment_shift: usize,
}

fn default_backend() -> BackendKind {
    BackendKind::Flex
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    #[default]
    Constant,
    Cosine,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    /// Invocations timed for the latency figure (over the first test images).
    #[serde(default = "default_latency_runs")]
    pub latency_runs: usize,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        Self {
            latency_runs: default_latency_runs(),
        }
    }
}

fn default_latency_runs() -> usize {
    200
}

/// A parsed config with where it came from.
#[derive(Debug)]
pub struct LoadedConfig {
    pub config: Config,
    pub path: PathBuf,
    /// The effective config (after overrides) as TOML, hashed into the report.
    pub effective_toml: String,
}

impl LoadedConfig {
    /// A path from the config, resolved against the config file's directory.
    pub fn resolve(&self, relative: &Path) -> PathBuf {
        self.path.parent().unwrap_or(Path::new(".")).join(relative)
    }
}

pub fn load(path: &Path, overrides: &[String]) -> Result<LoadedConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    let mut value: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    for assignment in overrides {
        apply_override(&mut value, assignment)?;
    }
    let effective_toml = toml::to_string(&value)?;
    let config: Config = Config::deserialize(value).map_err(|e| {
        anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()).context(format!(
            "invalid config {} (overrides applied: {})",
            path.display(),
            overrides.len()
        ))
    })?;
    Ok(LoadedConfig {
        config,
        path: path.to_path_buf(),
        effective_toml,
    })
}

/// `a.b.c=value`: value parsed as TOML (number, bool, array, quoted string), else a bare string.
fn apply_override(table: &mut toml::Table, assignment: &str) -> Result<()> {
    let Some((key, raw)) = assignment.split_once('=') else {
        bail!("--set '{assignment}' must look like key=value (e.g. train.epochs=2)");
    };
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
    let parts: Vec<&str> = key.trim().split('.').collect();
    let mut current = table;
    for part in &parts[..parts.len() - 1] {
        let entry = current
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry
            .as_table_mut()
            .with_context(|| format!("--set {key}: '{part}' is not a table in the config"))?;
    }
    current.insert(parts[parts.len() - 1].to_owned(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    const VALID: &str = r#"
name = "t"
seed = 1
pipeline = "p.toml"
[data]
train = ["a.parquet"]
test = ["b.parquet"]
color = "grayscale"
[model]
architecture = "small_cnn"
[train]
epochs = 1
batch_size = 8
learning_rate = 0.001
"#;

    #[test]
    fn overrides_apply_and_unknown_keys_are_named() {
        let dir = std::env::temp_dir().join(format!("kiln-config-{}", std::process::id()));
        let path = write(&dir, VALID);
        let loaded = load(
            &path,
            &["train.epochs=3".into(), "train.backend=ndarray".into()],
        )
        .unwrap();
        assert_eq!(loaded.config.train.epochs, 3);
        assert_eq!(loaded.config.train.backend, BackendKind::Ndarray);

        let err = load(&path, &["train.epochz=3".into()]).unwrap_err();
        let message = format!("{err:#}");
        assert!(
            message.contains("epochz") && message.contains("c.toml"),
            "{message}"
        );

        let path = write(&dir, &format!("{VALID}\n[extra]\nx = 1\n"));
        let message = format!("{:#}", load(&path, &[]).unwrap_err());
        assert!(message.contains("extra"), "{message}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
