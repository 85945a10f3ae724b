//! The `pipeline` subcommands besides `run`: each takes its parsed arguments and prints its
//! result (a table, or JSON with `--json`).

pub mod bench;
pub mod bench_decode;
pub mod bench_train;
pub mod compare;
pub mod infer;
pub mod inspect;
pub mod micro;
pub mod verify_run;
