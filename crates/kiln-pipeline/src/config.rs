//! Experiment configs (`configs/*.toml`): strict parsing (unknown keys are errors naming the
//! key and file) and `--set key=value` overrides applied before validation.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use kiln_data::{ColorMode, ResizeMode};
use kiln_export::IoType;
use kiln_nn::ModelConfig;
use kiln_train::{BackendKind, OptimizerKind};
use serde::{Deserialize, Serialize};

use crate::digest::sha256_hex;

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
    pub export: ExportConfig,
    #[serde(default)]
    pub verify: VerifyConfig,
}

/// The `[data]` table: one source (local parquet files, a Hub dataset or an image folder),
/// how images are decoded, split and normalised.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Local parquet files in the Hugging Face image layout, relative to the config file.
    #[serde(default)]
    pub train: Vec<PathBuf>,
    /// Local test parquet files; without them the train files are split by `split`.
    #[serde(default)]
    pub test: Vec<PathBuf>,
    /// A Hugging Face Hub dataset (parquet), downloaded into the Hugging Face cache.
    #[serde(default)]
    pub hub: Option<HubConfig>,
    /// An image folder, `root/<class>/*.{jpg,png}`.
    #[serde(default)]
    pub folder: Option<FolderConfig>,
    #[serde(default = "default_image_column")]
    pub image_column: String,
    #[serde(default = "default_label_column")]
    pub label_column: String,
    pub color: ColorMode,
    /// [height, width] to resize to; omitted = keep the images' own size.
    #[serde(default)]
    pub image_size: Option<[usize; 2]>,
    /// How images of another aspect ratio reach `image_size`.
    #[serde(default)]
    pub resize: ResizeMode,
    /// [train, validation, test] fractions when the source has no test split: a stratified
    /// split seeded by `seed`.
    #[serde(default = "default_split")]
    pub split: [f64; 3],
    /// When the source has its own test split: the fraction of train held out (stratified)
    /// for validation; 0 = none.
    #[serde(default)]
    pub validation_fraction: f64,
    /// Use only N training rows (a seeded sample, after splitting); for quick runs and tests.
    #[serde(default)]
    pub limit_train: Option<usize>,
    #[serde(default)]
    pub limit_test: Option<usize>,
    /// Per-channel normalisation of pixels scaled to [0, 1], `(x - mean) / std`: one value
    /// for all channels or one per channel. Written into the exported models' metadata.
    #[serde(default = "default_mean")]
    pub mean: Vec<f32>,
    #[serde(default = "default_std")]
    pub std: Vec<f32>,
    /// Keep decoded, resized images on disk (`~/.cache/kiln/decoded`, or `KILN_CACHE_DIR`)
    /// so later runs never decode the same images again.
    #[serde(default = "default_true")]
    pub cache: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// `owner/name` of a dataset repository, e.g. `microsoft/cats_vs_dogs`.
    pub repo: String,
    /// Branch, tag or commit.
    #[serde(default = "default_revision")]
    pub revision: String,
    #[serde(default = "default_train_split")]
    pub train_split: String,
    /// The split to test on; omitted = carve the test set out of `train_split`.
    #[serde(default)]
    pub test_split: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FolderConfig {
    /// `root/<class>/*` for training, relative to the config file.
    pub train: PathBuf,
    /// The same layout for testing; omitted = carve the test set out of `train`.
    #[serde(default)]
    pub test: Option<PathBuf>,
}

/// Where a run's images come from: exactly one of the `[data]` table's sources.
#[derive(Clone, Copy, Debug)]
pub enum DataSource<'a> {
    /// `train = [...]` (and optionally `test = [...]`) parquet files.
    Parquet {
        train: &'a [PathBuf],
        test: &'a [PathBuf],
    },
    /// `[data.hub]`.
    Hub(&'a HubConfig),
    /// `[data.folder]`.
    Folder(&'a FolderConfig),
}

impl DataConfig {
    pub fn normalization(&self) -> kiln_data::Normalization {
        kiln_data::Normalization {
            mean: self.mean.clone(),
            std: self.std.clone(),
        }
    }

    /// The table's one source.
    pub fn source(&self) -> Result<DataSource<'_>> {
        if self.train.is_empty() && !self.test.is_empty() {
            bail!("`test` parquet files need `train` parquet files next to them");
        }
        let parquet = (!self.train.is_empty()).then_some(DataSource::Parquet {
            train: &self.train,
            test: &self.test,
        });
        let given: Vec<DataSource<'_>> = [
            parquet,
            self.hub.as_ref().map(DataSource::Hub),
            self.folder.as_ref().map(DataSource::Folder),
        ]
        .into_iter()
        .flatten()
        .collect();
        match given.as_slice() {
            [source] => Ok(*source),
            found => bail!(
                "give exactly one data source: `train = [parquet files]`, a `[data.hub]` table or a `[data.folder]` table (found {})",
                found.len()
            ),
        }
    }

    fn validate(&self) -> Result<()> {
        self.source()?;
        let [train, val, test] = self.split;
        if [train, val, test].iter().any(|f| !(0.0..=1.0).contains(f))
            || (train + val + test - 1.0).abs() > 1e-6
            || train == 0.0
        {
            bail!(
                "split = {:?} must be three fractions [train, validation, test] in [0, 1] summing to 1, train > 0 (e.g. [0.8, 0.1, 0.1])",
                self.split
            );
        }
        if !(0.0..1.0).contains(&self.validation_fraction) {
            bail!(
                "validation_fraction = {} must be in [0, 1)",
                self.validation_fraction
            );
        }
        self.normalization()
            .validate(self.color.channels())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    }
}

fn default_split() -> [f64; 3] {
    [0.8, 0.1, 0.1]
}

fn default_true() -> bool {
    true
}

fn default_revision() -> String {
    "main".into()
}

fn default_train_split() -> String {
    "train".into()
}

fn default_mean() -> Vec<f32> {
    vec![0.0]
}

fn default_std() -> Vec<f32> {
    vec![1.0]
}

fn default_image_column() -> String {
    "image".into()
}

fn default_label_column() -> String {
    "label".into()
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
    pub optimizer: OptimizerKind,
    /// L2 penalty (adam, sgd) or decoupled weight decay (adamw).
    #[serde(default)]
    pub weight_decay: f64,
    /// SGD momentum.
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    #[serde(default)]
    pub schedule: Schedule,
    /// Epochs of linear learning-rate warmup before the schedule.
    #[serde(default)]
    pub warmup_epochs: usize,
    /// `schedule = "step"`: multiply the rate by `step_gamma` every `step_epochs` epochs.
    #[serde(default = "default_step_epochs")]
    pub step_epochs: usize,
    #[serde(default = "default_step_gamma")]
    pub step_gamma: f64,
    /// Cross-entropy label smoothing (0 = off; 0.1 is common).
    #[serde(default)]
    pub label_smoothing: f64,
    /// Stop after this many epochs without a better validation accuracy; the best epoch's
    /// model is kept. Needs a validation split.
    #[serde(default)]
    pub early_stopping_patience: Option<usize>,
    /// Pad-and-crop augmentation: random shifts of up to this many pixels (0 = off).
    #[serde(default)]
    pub augment_shift: usize,
    /// Random left–right mirroring (photos; not digits).
    #[serde(default)]
    pub augment_flip: bool,
    /// Transfer learning: epochs at the start that train only the new head on the frozen
    /// pretrained backbone (BatchNorm on its running statistics; features cached when
    /// augmentation is off).
    #[serde(default)]
    pub freeze_backbone_epochs: usize,
    /// Transfer learning: the backbone's learning rate as a fraction of `learning_rate` once
    /// it trains (0.1 is common).
    #[serde(default = "default_backbone_lr_scale")]
    pub backbone_lr_scale: f64,
}

fn default_backbone_lr_scale() -> f64 {
    1.0
}

fn default_backend() -> BackendKind {
    BackendKind::Flex
}

fn default_momentum() -> f64 {
    0.9
}

fn default_step_epochs() -> usize {
    10
}

fn default_step_gamma() -> f64 {
    0.1
}

/// The `schedule` key. Not kiln-train's `LrSchedule` itself: the step schedule's parameters
/// are flat keys of `[train]` (`step_epochs`, `step_gamma`), as Keras users write them.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    #[default]
    Constant,
    Cosine,
    Step,
}

impl TrainConfig {
    pub fn lr_schedule(&self) -> kiln_train::LrSchedule {
        match self.schedule {
            Schedule::Constant => kiln_train::LrSchedule::Constant,
            Schedule::Cosine => kiln_train::LrSchedule::Cosine,
            Schedule::Step => kiln_train::LrSchedule::Step {
                every_epochs: self.step_epochs,
                gamma: self.step_gamma,
            },
        }
    }

    pub fn optimizer_settings(&self) -> kiln_train::OptimizerSettings {
        kiln_train::OptimizerSettings {
            kind: self.optimizer,
            weight_decay: self.weight_decay,
            momentum: self.momentum,
        }
    }
}

/// The `[export]` table: which `.tflite` variants the export stage writes.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// Variants to write, verify and report; `fp32` must be among them (every other variant
    /// is a transform of it and is compared with it).
    #[serde(default = "default_variants")]
    pub variants: Vec<Variant>,
    /// Training images (a seeded sample) the float model runs on to calibrate int8 ranges.
    #[serde(default = "default_calibration_samples")]
    pub calibration_samples: usize,
    /// Element type of the int8 model's input and output.
    #[serde(default)]
    pub int8_io: IoType,
    /// Also write TensorFlow Lite Micro sources for every int8 variant
    /// (`model_<variant>_data.cc` / `.h`: the C array, the arena size, the op resolver).
    #[serde(default)]
    pub micro: bool,
    /// Store pruned weights sparse (TFLite `SparsityParameters`: block-sparse
    /// FULLY_CONNECTED weights, or CSR behind DENSIFY) in the fp32 and int8 files wherever
    /// that makes them smaller; `false` keeps every weight dense. The report gives both
    /// sizes.
    #[serde(default = "default_sparse")]
    pub sparse: bool,
}

impl Default for ExportConfig {
    fn default() -> Self {
        Self {
            variants: default_variants(),
            calibration_samples: default_calibration_samples(),
            int8_io: IoType::default(),
            micro: false,
            sparse: default_sparse(),
        }
    }
}

fn default_sparse() -> bool {
    true
}

fn default_variants() -> Vec<Variant> {
    vec![
        Variant::Fp32,
        Variant::Fp16,
        Variant::Dynamic,
        Variant::Int8,
    ]
}

fn default_calibration_samples() -> usize {
    100
}

/// An exported model variant; the name is also the file's suffix (`model_<name>.tflite`).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// The float32 model as lowered.
    Fp32,
    /// float16 weights, DEQUANTIZE'd to float32 kernels.
    Fp16,
    /// Dynamic-range: int8 weights, float activations, hybrid kernels.
    Dynamic,
    /// Full integer, calibrated on training images.
    Int8,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Self::Fp32 => "fp32",
            Self::Fp16 => "fp16",
            Self::Dynamic => "dynamic",
            Self::Int8 => "int8",
        }
    }

    pub fn file_name(self) -> String {
        format!("model_{}.tflite", self.name())
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Fp32, Self::Fp16, Self::Dynamic, Self::Int8]
            .into_iter()
            .find(|v| v.name() == name)
    }
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

impl Config {
    /// Identifies everything that shapes training (seed, data, model, training settings): a
    /// checkpoint is resumed only under the same fingerprint.
    pub fn training_fingerprint(&self) -> Result<String> {
        let shaping = serde_json::to_vec(&(self.seed, &self.data, &self.model, &self.train))?;
        Ok(sha256_hex(&shaping))
    }
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
    validate_export(&config.export)
        .with_context(|| format!("invalid [export] table in {}", path.display()))?;
    config
        .data
        .validate()
        .with_context(|| format!("invalid [data] table in {}", path.display()))?;
    Ok(LoadedConfig {
        config,
        path: path.to_path_buf(),
        effective_toml,
    })
}

/// The effective config a run wrote to `run_dir/config.toml`, its relative paths resolved
/// against the config file the run started from (recorded in `run_dir/report.json`).
pub fn load_run(run_dir: &Path) -> Result<LoadedConfig> {
    let report_path = run_dir.join("report.json");
    let bytes = std::fs::read(&report_path).with_context(|| {
        format!(
            "cannot read {} (is {} a run directory of a run with the report stage?)",
            report_path.display(),
            run_dir.display()
        )
    })?;
    let report: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not JSON", report_path.display()))?;
    let original = report["config_file"].as_str().with_context(|| {
        format!(
            "{} does not name its config file (an older run?): run the pipeline again",
            report_path.display()
        )
    })?;
    let mut loaded = load(&run_dir.join("config.toml"), &[])?;
    loaded.path = PathBuf::from(original);
    Ok(loaded)
}

fn validate_export(export: &ExportConfig) -> Result<()> {
    if !export.variants.contains(&Variant::Fp32) {
        bail!(
            "export.variants must include \"fp32\": the other variants are transforms of it and are compared with it"
        );
    }
    for (i, v) in export.variants.iter().enumerate() {
        if export.variants[..i].contains(v) {
            bail!("export.variants lists \"{}\" twice", v.name());
        }
    }
    if export.variants.contains(&Variant::Int8) && export.calibration_samples == 0 {
        bail!("export.calibration_samples must be at least 1 to calibrate the int8 variant");
    }
    Ok(())
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

    #[test]
    fn export_defaults_to_all_four_variants_and_is_validated() {
        let dir = std::env::temp_dir().join(format!("kiln-config-export-{}", std::process::id()));
        let path = write(&dir, VALID);
        let export = load(&path, &[]).unwrap().config.export;
        assert_eq!(
            export.variants,
            [
                Variant::Fp32,
                Variant::Fp16,
                Variant::Dynamic,
                Variant::Int8
            ]
        );
        assert_eq!(
            (export.calibration_samples, export.int8_io),
            (100, IoType::Int8)
        );

        let set = |s: &str| load(&path, &[s.into()]);
        assert_eq!(
            set("export.int8_io=float32").unwrap().config.export.int8_io,
            IoType::Float32
        );
        for (bad, needle) in [
            ("export.variants=[\"fp16\"]", "fp32"),
            ("export.variants=[\"fp32\", \"fp32\"]", "twice"),
            ("export.variants=[\"fp32\", \"int4\"]", "int4"),
            ("export.calibration_samples=0", "calibration_samples"),
            ("export.int8_io=int16", "int16"),
            ("export.extra=1", "extra"),
        ] {
            let message = format!("{:#}", set(bad).unwrap_err());
            assert!(message.contains(needle), "{bad}: {message}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
