//! The TensorFlow Lite model format: an owned IR of a `.tflite` file, a verifying reader and a
//! writer, and the int8 arithmetic of the format's quantization ([`quant`]) that the runtime,
//! the exporter and quantization-aware training share. No kernels live here (that is
//! `kiln-runtime`); this crate depends only on `flatbuffers`.

mod bytes;
mod error;
mod generated;
pub mod metadata;
mod model;
mod op_names;
mod options;
mod padding;
pub mod quant;
mod read;
mod types;
mod write;

pub use bytes::SharedBytes;
pub use error::FormatError;
pub use model::*;
pub use op_names::builtin_operator_name;
pub use options::*;
pub use padding::window;
pub use types::{Activation, BuiltinOp, Padding, TensorType};
pub use write::write_atomically;

#[cfg(test)]
mod tests;
