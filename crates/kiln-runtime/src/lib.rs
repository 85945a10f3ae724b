//! kiln-runtime: a pure-Rust interpreter for TensorFlow Lite models, the crate a deployment
//! embeds. It depends on `kiln-tflite` only. A model is validated (indices, shapes, buffer
//! sizes, operator order) and every operator prepared before anything runs; intermediate
//! tensors share one arena planned from their lifetimes; constant weights are borrowed from
//! the file's bytes.

mod arena;
mod associated_files;
mod error;
mod interpreter;
mod kernels;
pub mod npy;
mod profile;
pub mod real_io;
pub mod rows;
mod tensor;
mod validate;

pub use arena::ARENA_ALIGNMENT;
pub use associated_files::associated_files;
pub use error::RuntimeError;
pub use interpreter::{Interpreter, Memory};
pub use kernels::{kernel_sets, operator_name};
pub use profile::{OpProfile, OperatorTime};
pub use tensor::TensorInfo;
