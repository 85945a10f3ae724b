//! Stage recipes (`pipelines/*.toml`): the ordered stages a config runs and their parameter
//! tables, checked against the stage registry (`stages::STAGES`): known names in the
//! registry's order, each stage's table present exactly when it takes one, `from = "…"`
//! naming a model-making stage before it, and a first stage that makes a model on its own.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};

use crate::stage::{Stage, StageTable};
use crate::stages;

pub struct Recipe {
    pub path: PathBuf,
    pub description: Option<String>,
    /// The stages, in the order they run.
    pub stages: Vec<Box<dyn Stage>>,
}

impl std::fmt::Debug for Recipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recipe")
            .field("path", &self.path)
            .field("description", &self.description)
            .field("stages", &self.stage_names())
            .finish()
    }
}

impl Recipe {
    pub fn stage_names(&self) -> Vec<&'static str> {
        self.stages.iter().map(|s| s.name()).collect()
    }
}

pub fn load(path: &Path) -> Result<Recipe> {
    load_with(path, |_| Ok(()))
}

/// Loads the recipe at `path` after `edit` changed its TOML (`pipeline run --seeds N` sets
/// `distill.seeds`), so edits are checked like the file itself.
pub fn load_with(path: &Path, edit: impl FnOnce(&mut toml::Table) -> Result<()>) -> Result<Recipe> {
    let order = stages::order();
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the pipeline recipe {} (named by the config's `pipeline` key)",
            path.display()
        )
    })?;
    let mut table: toml::Table = toml::from_str(&text).with_context(|| {
        format!(
            "invalid pipeline recipe {} (stages, in order: {order})",
            path.display()
        )
    })?;
    edit(&mut table)?;
    let fail = |message: String| anyhow!("{}: {message}", path.display());

    let description = match table.remove("description") {
        None => None,
        Some(toml::Value::String(text)) => Some(text),
        Some(_) => return Err(fail("`description` must be a string".into())),
    };
    let names: Vec<String> = table
        .remove("stages")
        .ok_or_else(|| fail(format!("no `stages` list (in order: {order})")))?
        .try_into()
        .map_err(|_| fail(format!("`stages` must be a list of stage names ({order})")))?;
    let mut kinds = Vec::with_capacity(names.len());
    for name in &names {
        let kind = stages::kind(name).ok_or_else(|| {
            fail(format!(
                "unknown stage `{name}` (stages, in order: {order})"
            ))
        })?;
        kinds.push(kind);
    }
    if kinds.is_empty() || kinds.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(fail(format!(
            "stages must be a non-empty subsequence of {order}"
        )));
    }
    for key in table.keys() {
        if stages::kind(key).is_none() {
            return Err(fail(format!(
                "unknown key `{key}` (a recipe holds `description`, `stages` and one table per stage that takes parameters)"
            )));
        }
        if !names.contains(key) {
            return Err(fail(format!(
                "a [{key}] table without a `{key}` stage in `stages`"
            )));
        }
    }

    let mut parsed: Vec<Box<dyn Stage>> = Vec::with_capacity(kinds.len());
    for (position, (_, kind)) in kinds.iter().enumerate() {
        let name = kind.name;
        let before = &names[..position];
        if let Some(needed) = kind.needs.iter().find(|n| !before.iter().any(|b| b == *n)) {
            return Err(fail(format!("`{name}` needs `{needed}` before it")));
        }
        let params = table.remove(name);
        match (&kind.table, &params) {
            (StageTable::Required { keys }, None) => {
                return Err(fail(format!(
                    "the `{name}` stage needs a [{name}] table ({keys})"
                )));
            }
            (StageTable::None, Some(_)) => {
                return Err(fail(format!(
                    "the `{name}` stage takes no parameters; remove [{name}]"
                )));
            }
            _ => {}
        }
        let stage =
            (kind.parse)(params).map_err(|reason| fail(format!("stage `{name}`: {reason}")))?;
        if let Some(from) = stage.from() {
            let makes_models = stages::kind(from).is_some_and(|(_, k)| k.makes_source);
            if !makes_models {
                return Err(fail(format!(
                    "stage `{name}`: from = \"{from}\" names no stage that makes a model ({})",
                    stages::STAGES
                        .iter()
                        .filter(|k| k.makes_source)
                        .map(|k| k.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            if !before.iter().any(|b| b == from) {
                return Err(fail(format!(
                    "stage `{name}`: from = \"{from}\" needs the `{from}` stage before it"
                )));
            }
        }
        parsed.push(stage);
    }
    if let Some(first) = parsed.first()
        && !first.can_start()
    {
        return Err(fail(format!(
            "the first stage, `{}`, needs a model from an earlier stage: start with `train` (or `distill` with a [distill] teacher_run)",
            first.name()
        )));
    }
    Ok(Recipe {
        path: path.to_path_buf(),
        description,
        stages: parsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(name: &str, text: &str) -> Result<Recipe> {
        load_text_with(name, text, |_| Ok(()))
    }

    /// `text` written to a scratch file and loaded through `load_with(edit)`.
    fn load_text_with(
        name: &str,
        text: &str,
        edit: impl FnOnce(&mut toml::Table) -> Result<()>,
    ) -> Result<Recipe> {
        let dir = std::env::temp_dir().join(format!("kiln-recipe-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.toml");
        std::fs::write(&path, text).unwrap();
        let result = load_with(&path, edit);
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
    fn a_prune_recipe_loads() {
        let recipe = load_text("ok", PRUNE).unwrap();
        assert_eq!(recipe.stage_names(), ["train", "prune", "export"]);
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
    fn qat_and_distill_recipes_load() {
        let recipe = load_text("qat-ok", QAT_AND_DISTILL).unwrap();
        assert_eq!(recipe.stage_names(), ["train", "distill", "qat", "export"]);
        assert_eq!(recipe.stages[2].from(), None);
        let told = QAT_AND_DISTILL.replace("epochs = 2", "epochs = 2\nfrom = \"train\"");
        let recipe = load_text("qat-from", &told).unwrap();
        assert_eq!(recipe.stages[2].from(), Some("train"));
    }

    #[test]
    fn stage_order_needs_and_starts_are_checked() {
        let cases = [
            (
                "stages = [\"train\", \"verify\"]\n",
                "`verify` needs `export` before it",
            ),
            (
                "stages = [\"export\"]\n",
                "the first stage, `export`, needs a model",
            ),
            (
                "stages = [\"train\", \"polish\"]\n",
                "unknown stage `polish`",
            ),
            (
                "stages = [\"train\"]\n[train]\nepochs = 1\n",
                "takes no parameters",
            ),
            ("stages = [\"train\"]\nextra = 1\n", "unknown key `extra`"),
            (
                "stages = [\"train\", \"prune\"]\n[prune]\nfrom = \"export\"\nfinal_sparsity = 0.5\nepochs = 1\nend_epoch = 1\nlearning_rate = 0.1\n",
                "from = \"export\" names no stage that makes a model",
            ),
        ];
        for (i, (text, needle)) in cases.iter().enumerate() {
            let err = format!("{:#}", load_text(&format!("order{i}"), text).unwrap_err());
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn edits_apply_before_the_checks() {
        let err = load_text_with("edit", QAT_AND_DISTILL, |table| {
            let distill = table.get_mut("distill").and_then(toml::Value::as_table_mut);
            distill
                .unwrap()
                .insert("alpha".into(), toml::Value::Float(3.0));
            Ok(())
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("alpha = 3"), "{err:#}");
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
