//! Kiln's pipeline as a library: a config and a recipe in, a run directory of verified
//! `.tflite` files and a report out. The `pipeline` binary (crates/kiln-cli) only parses
//! arguments, sets up logging and maps errors to exit codes; everything else is here, so a
//! Rust program can run a pipeline as the CLI does (see `examples/run-pipeline`).
//!
//! Layout (each module imports only those above it in this list):
//! - [`digest`]: sha256 and gzip sizes;
//! - [`config`]: the experiment config (`configs/*.toml`) and `--set` overrides;
//! - [`data`]: the `[data]` source loaded, split and normalised;
//! - [`pretrained`]: `[model] pretrained` weights found (Hub or file) and loaded;
//! - [`model_file`], [`export`], [`verify`], [`per_layer`]: writing variants and checking
//!   them against the Burn model they came from;
//! - [`tensorboard`]: TensorBoard event files of every training run;
//! - [`micro`]: TensorFlow Lite Micro sources (C array, arena size, op resolver) of a file;
//! - [`report`]: `report.json`, `report.md` and plots, with one section per stage;
//! - [`context`]: what a run has so far (data, models, exported files, report sections);
//! - [`stage`] and [`stages`]: the `Stage` trait and one file per stage, with the registry;
//! - [`recipe`]: `pipelines/*.toml`, parsed through the registry;
//! - [`run`]: `pipeline run`, a loop over the recipe's stages, then [`manifest`];
//! - [`commands`]: the other subcommands (infer, inspect, verify, bench, compare, …).

pub mod commands;
pub mod config;
pub mod context;
pub mod data;
pub mod digest;
pub mod export;
pub mod manifest;
pub mod micro;
pub mod model_file;
pub mod per_layer;
pub mod pretrained;
pub mod recipe;
pub mod report;
pub mod run;
pub mod stage;
pub mod stages;
pub mod tensorboard;
pub mod verify;

pub use config::{Config, LoadedConfig};
pub use run::{RunOptions, run};
