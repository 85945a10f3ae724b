//! The `pipeline` command's library: config, stages, verification, reports and numeric I/O.
//! The binary (`main.rs`) only parses arguments and reports errors.

pub mod bench;
pub mod bench_decode;
pub mod bench_train;
pub mod compare;
pub mod config;
pub mod data;
pub mod distill_stage;
pub mod export;
pub mod fine_tune;
pub mod infer;
pub mod inspect;
pub mod model_build;
pub mod model_file;
pub mod npy;
pub mod per_layer;
pub mod plots;
pub mod prune_stage;
pub mod qat_stage;
pub mod real_io;
pub mod recipe;
pub mod report;
pub mod run;
pub mod verify;
pub mod verify_run;
