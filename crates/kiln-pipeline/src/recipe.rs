//! Stage recipes (`pipelines/*.toml`): the ordered stages a config runs.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

pub use crate::distill_stage::DistillStage;
pub use crate::qat_stage::QatStage;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Train,
    /// Train a student against a teacher's soft targets (`[distill]`).
    Distill,
    /// Fine-tune a model with magnitude pruning on a schedule (`[prune]`).
    Prune,
    /// Quantization-aware fine-tuning (`[qat]`); exports `…qat_int8` with the QAT ranges.
    Qat,
    Export,
    Verify,
    Report,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub description: Option<String>,
    pub stages: Vec<Stage>,
    /// Parameters of the `distill` stage.
    pub distill: Option<DistillStage>,
    /// Parameters of the `prune` stage.
    pub prune: Option<PruneStage>,
    /// Parameters of the `qat` stage.
    pub qat: Option<QatStage>,
}

/// A stage whose model a later compression stage can start from (`from = "…"`).
#[derive(Clone, Copy, Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Train,
    Distill,
    Prune,
}

impl Source {
    pub fn stage(self) -> Stage {
        match self {
            Self::Train => Stage::Train,
            Self::Distill => Stage::Distill,
            Self::Prune => Stage::Prune,
        }
    }
}

impl Recipe {
    /// The model a compression stage `stage` starts from: `from` when given, else the latest
    /// model-making stage before it.
    pub fn source_of(&self, stage: Stage, from: Option<Source>) -> Source {
        from.unwrap_or_else(|| {
            [Source::Prune, Source::Distill, Source::Train]
                .into_iter()
                .filter(|s| s.stage() < stage)
                .find(|s| self.stages.contains(&s.stage()))
                .unwrap_or(Source::Train)
        })
    }
}

/// `[prune]`: fine-tuning with magnitude pruning (TF-MOT's `prune_low_magnitude` schedule).
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PruneStage {
    /// The model to prune: "train" or "distill" (default: the latest before `prune`).
    #[serde(default)]
    pub from: Option<Source>,
    /// Fraction of each prunable layer's weights that are zero at the end.
    pub final_sparsity: f64,
    #[serde(default)]
    pub initial_sparsity: f64,
    /// Fine-tuning epochs.
    pub epochs: usize,
    /// Epoch (of the fine-tuning, 0-based) where pruning starts.
    #[serde(default)]
    pub begin_epoch: usize,
    /// Epoch by whose end the final sparsity is reached (≤ epochs).
    pub end_epoch: usize,
    #[serde(default = "default_power")]
    pub power: f64,
    /// Steps between mask updates.
    #[serde(default = "default_frequency")]
    pub frequency: usize,
    #[serde(default)]
    pub schedule: PruneSchedule,
    #[serde(default)]
    pub scope: PruneScope,
    /// Layer-name patterns to prune (`*` wildcard; empty = every conv and dense layer).
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Fine-tuning learning rate, decayed along a half cosine to zero.
    pub learning_rate: f64,
    /// Variants of the pruned model to export, named pruned<percent>_<variant>.
    #[serde(default = "default_prune_variants")]
    pub variants: Vec<crate::config::Variant>,
}

fn default_power() -> f64 {
    3.0
}

fn default_frequency() -> usize {
    10
}

fn default_prune_variants() -> Vec<crate::config::Variant> {
    vec![crate::config::Variant::Int8]
}

#[derive(Clone, Copy, Debug, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PruneSchedule {
    #[default]
    Polynomial,
    Constant,
    OneShot,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PruneScope {
    #[default]
    PerLayer,
    Global,
}

impl PruneStage {
    /// The kiln-train settings for `steps_per_epoch` steps per epoch.
    pub fn settings(&self, steps_per_epoch: usize) -> kiln_train::PruningSettings {
        kiln_train::PruningSettings {
            schedule: match self.schedule {
                PruneSchedule::Polynomial => kiln_train::SparsitySchedule::Polynomial,
                PruneSchedule::Constant => kiln_train::SparsitySchedule::Constant,
                PruneSchedule::OneShot => kiln_train::SparsitySchedule::OneShot,
            },
            initial_sparsity: self.initial_sparsity,
            final_sparsity: self.final_sparsity,
            begin_step: self.begin_epoch * steps_per_epoch,
            end_step: (self.end_epoch * steps_per_epoch).max(1) - 1,
            power: self.power,
            frequency: self.frequency,
            scope: match self.scope {
                PruneScope::PerLayer => kiln_train::PruningScope::PerLayer,
                PruneScope::Global => kiln_train::PruningScope::Global,
            },
            include: self.include.clone(),
            exclude: self.exclude.clone(),
        }
    }

    /// `pruned80` for a final sparsity of 0.8.
    pub fn variant_prefix(&self) -> String {
        format!("pruned{:.0}", 100.0 * self.final_sparsity)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.epochs == 0
            || self.end_epoch > self.epochs
            || self.begin_epoch >= self.end_epoch.max(1)
        {
            return Err(format!(
                "epochs = {}, begin_epoch = {}, end_epoch = {}: need begin_epoch < end_epoch ≤ epochs",
                self.epochs, self.begin_epoch, self.end_epoch
            ));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(format!(
                "learning_rate = {} must be positive",
                self.learning_rate
            ));
        }
        // The real step counts depend on the data; any epoch length checks the rest.
        self.settings(1000).validate().map_err(|e| e.to_string())
    }
}

const ORDER: &str = "train → distill → prune → qat → export → verify → report";
const PRUNE_KEYS: &str = "final_sparsity, epochs, end_epoch, learning_rate";
const QAT_KEYS: &str = "epochs, learning_rate";
const DISTILL_KEYS: &str = "a [distill.student] model table";

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Distill => "distill",
            Self::Prune => "prune",
            Self::Qat => "qat",
            Self::Export => "export",
            Self::Verify => "verify",
            Self::Report => "report",
        }
    }
}

/// A stage and its parameter table come together.
fn table_matches_stage(
    path: &Path,
    recipe: &Recipe,
    stage: Stage,
    has_table: bool,
    required: &str,
) -> Result<()> {
    let name = stage.name();
    match (recipe.stages.contains(&stage), has_table) {
        (true, false) => bail!(
            "{}: the `{name}` stage needs a [{name}] table ({required})",
            path.display()
        ),
        (false, true) => bail!(
            "{}: a [{name}] table without a `{name}` stage in `stages`",
            path.display()
        ),
        _ => Ok(()),
    }
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
            "invalid pipeline recipe {} (stages, in order: {ORDER})",
            path.display()
        )
    })?;
    table_matches_stage(
        path,
        &recipe,
        Stage::Prune,
        recipe.prune.is_some(),
        PRUNE_KEYS,
    )?;
    table_matches_stage(path, &recipe, Stage::Qat, recipe.qat.is_some(), QAT_KEYS)?;
    table_matches_stage(
        path,
        &recipe,
        Stage::Distill,
        recipe.distill.is_some(),
        DISTILL_KEYS,
    )?;
    let checks = [
        (
            Stage::Prune,
            recipe.prune.as_ref().map(PruneStage::validate),
        ),
        (Stage::Qat, recipe.qat.as_ref().map(QatStage::validate)),
        (
            Stage::Distill,
            recipe.distill.as_ref().map(DistillStage::validate),
        ),
    ];
    for (stage, check) in checks {
        if let Some(Err(reason)) = check {
            bail!("{}: stage `{}`: {reason}", path.display(), stage.name());
        }
    }
    let sources = [
        (Stage::Prune, recipe.prune.as_ref().and_then(|p| p.from)),
        (Stage::Qat, recipe.qat.as_ref().and_then(|q| q.from)),
    ];
    for (stage, from) in sources {
        if let Some(from) = from
            && recipe.stages.contains(&stage)
            && !(recipe.stages.contains(&from.stage()) && from.stage() < stage)
        {
            bail!(
                "{}: stage `{}`: from = \"{}\" needs the `{}` stage before it",
                path.display(),
                stage.name(),
                from.stage().name(),
                from.stage().name()
            );
        }
    }
    if recipe.stages.is_empty() || recipe.stages.windows(2).any(|w| w[0] >= w[1]) {
        bail!(
            "{}: stages must be a non-empty subsequence of {ORDER}",
            path.display()
        );
    }
    let teacher_from_a_run = recipe
        .distill
        .as_ref()
        .is_some_and(|d| d.teacher_run.is_some());
    match recipe.stages[0] {
        Stage::Train => {}
        Stage::Distill if teacher_from_a_run => {}
        _ => bail!(
            "{}: the first stage must be `train`, or `distill` with a [distill] teacher_run",
            path.display()
        ),
    }
    Ok(recipe)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(name: &str, text: &str) -> Result<Recipe> {
        let dir = std::env::temp_dir().join(format!("kiln-recipe-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.toml");
        std::fs::write(&path, text).unwrap();
        let result = load(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        result
    }

    const PRUNE: &str = r#"
stages = ["train", "prune", "export"]
[prune]
final_sparsity = 0.8
epochs = 4
end_epoch = 3
learning_rate = 0.0005
"#;

    #[test]
    fn a_prune_recipe_loads_with_defaults() {
        let recipe = load_text("ok", PRUNE).unwrap();
        let prune = recipe.prune.unwrap();
        assert_eq!((prune.power, prune.frequency), (3.0, 10));
        assert_eq!(prune.variant_prefix(), "pruned80");
        let settings = prune.settings(100);
        assert_eq!((settings.begin_step, settings.end_step), (0, 299));
    }

    #[test]
    fn malformed_recipes_name_the_stage_and_key() {
        let cases = [
            (
                PRUNE.replace("final_sparsity", "final_sparsty"),
                "final_sparsty",
            ),
            (PRUNE.replace("end_epoch = 3", "end_epoch = 9"), "end_epoch"),
            (PRUNE.replace("0.8", "1.5"), "final_sparsity"),
            (
                PRUNE.replace("[prune]", "[prune]\nschedule = \"cubic\""),
                "cubic",
            ),
            (
                "stages = [\"train\", \"prune\"]\n".to_owned(),
                "needs a [prune] table",
            ),
            (PRUNE.replace("\"prune\", ", ""), "without a `prune` stage"),
            (
                PRUNE.replace(
                    "[\"train\", \"prune\", \"export\"]",
                    "[\"train\", \"export\", \"prune\"]",
                ),
                "stages must be a non-empty subsequence",
            ),
        ];
        for (i, (text, needle)) in cases.iter().enumerate() {
            let err = format!("{:#}", load_text(&i.to_string(), text).unwrap_err());
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    const QAT_AND_DISTILL: &str = r#"
stages = ["train", "distill", "qat", "export"]
[distill]
student = { architecture = "small_cnn", conv_filters = [8, 16] }
[qat]
epochs = 2
learning_rate = 0.0001
"#;

    #[test]
    fn qat_starts_from_the_latest_model_unless_told() {
        let recipe = load_text("qat-ok", QAT_AND_DISTILL).unwrap();
        let qat = recipe.qat.as_ref().unwrap();
        assert_eq!(recipe.source_of(Stage::Qat, qat.from), Source::Distill);
        assert_eq!(
            recipe.source_of(Stage::Qat, Some(Source::Train)),
            Source::Train
        );
        let distill = recipe.distill.unwrap();
        assert_eq!(
            (distill.temperature, distill.alpha, distill.seeds),
            (4.0, 0.9, 1)
        );
        assert_eq!(qat.settings(10).quant_delay, 0);
    }

    #[test]
    fn malformed_qat_and_distill_tables_name_the_stage_and_key() {
        let cases = [
            (
                QAT_AND_DISTILL.replace("epochs = 2", "epochs = 2\nquant_delay = 1"),
                "quant_delay",
            ),
            (
                QAT_AND_DISTILL.replace("epochs = 2", "epochs = 2\nfreeze_observers_epoch = 5"),
                "freeze_observers_epoch",
            ),
            (
                QAT_AND_DISTILL.replace("epochs = 2", "epochs = 2\nfrom = \"prune\""),
                "needs the `prune` stage",
            ),
            (
                QAT_AND_DISTILL.replace("conv_filters", "conv_filterz"),
                "conv_filterz",
            ),
            (
                QAT_AND_DISTILL.replace("[distill]", "[distill]\nalpha = 2.0"),
                "stage `distill`: alpha",
            ),
            (
                QAT_AND_DISTILL.replace("\"qat\", ", ""),
                "a [qat] table without a `qat` stage",
            ),
            (
                "stages = [\"train\", \"distill\"]\n".to_owned(),
                "needs a [distill] table",
            ),
            (
                QAT_AND_DISTILL.replace("[distill]", "[distill]\nteacher_run = \"/no/such/run\""),
                "stage `distill`: teacher_run = \"/no/such/run\" is not a run directory",
            ),
            (
                QAT_AND_DISTILL.replace(
                    "[\"train\", \"distill\", \"qat\"",
                    "[\"train\", \"qat\", \"distill\"",
                ),
                "stages must be a non-empty subsequence",
            ),
        ];
        for (i, (text, needle)) in cases.iter().enumerate() {
            let err = format!("{:#}", load_text(&format!("qd{i}"), text).unwrap_err());
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }
}
