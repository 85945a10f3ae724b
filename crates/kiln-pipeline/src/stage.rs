//! The `Stage` trait: one step of a recipe (`stages = ["train", "prune", …]` in
//! `pipelines/*.toml`). A stage reads what it needs from the [`RunContext`] (the data, the
//! models earlier stages made, the exported files), adds what it makes (models, files), and
//! returns its section of the report. Each stage lives in its own file under `stages/` and is
//! listed once in the registry there, with a [`StageKind`] saying how a recipe names it.

use anyhow::Result;

use crate::context::RunContext;
use crate::report::ReportSection;

pub trait Stage {
    /// The stage's name in `stages = [...]` (and of its parameter table).
    fn name(&self) -> &'static str;

    /// The model-making stage the recipe says this one starts from (`from = "…"`); `None`
    /// starts from the latest model made before it.
    fn from(&self) -> Option<&str> {
        None
    }

    /// Whether the stage makes a model with no stage before it (it may open a recipe).
    fn can_start(&self) -> bool {
        false
    }

    /// Runs the stage on the run so far; the report section it returns goes into
    /// `report.json` under its key and into `report.md`.
    fn run(&self, run: &mut RunContext<'_>) -> Result<Option<ReportSection>>;
}

/// How a recipe names and configures a stage.
pub struct StageKind {
    pub name: &'static str,
    /// Its `[name]` table.
    pub table: StageTable,
    /// Later stages may start from the model it makes (`from = "name"`).
    pub makes_source: bool,
    /// Stages that must come before it in a recipe.
    pub needs: &'static [&'static str],
    /// The stage, from its `[name]` table (given exactly when `table` asks for one); an error
    /// names the key and what is wrong with it.
    pub parse: ParseStage,
}

/// Builds a stage from its `[name]` table; the error says which key is wrong and why.
pub type ParseStage = fn(Option<toml::Value>) -> Result<Box<dyn Stage>, String>;

/// Whether a stage takes a parameter table.
pub enum StageTable {
    /// It has no parameters.
    None,
    /// It needs `[name]`; `keys` lists the required ones, for the error when it is missing.
    Required { keys: &'static str },
}

/// A stage whose parameter struct is the stage: its `[name]` table parsed, then `validate`d.
pub fn parse_stage<S>(
    table: Option<toml::Value>,
    validate: fn(&S) -> Result<(), String>,
) -> Result<Box<dyn Stage>, String>
where
    S: Stage + serde::de::DeserializeOwned + 'static,
{
    let stage: S = parse_table(table)?;
    validate(&stage)?;
    Ok(Box::new(stage))
}

/// A stage's `[name]` table as its parameter struct (unknown keys are errors naming them).
pub fn parse_table<T: serde::de::DeserializeOwned>(
    table: Option<toml::Value>,
) -> Result<T, String> {
    table
        .ok_or_else(|| "the stage needs its parameter table".to_owned())?
        .try_into()
        .map_err(|e: toml::de::Error| e.to_string().trim_end().to_owned())
}
