//! TensorBoard logs of every training run in `RUN_DIR/tensorboard/<stage>/{train,validation}`,
//! laid out as Keras' `TensorBoard` callback lays them out (the same tags, `epoch_accuracy` in
//! both runs so the curves overlay): `tensorboard --logdir artifacts/` shows a run's stages side
//! by side and several runs against each other.
//!
//! The files are TFRecord streams of `tensorflow.Event` protocol buffers, written by hand
//! (a dozen fields of two messages; no protobuf dependency): [`event_file`] writes them,
//! [`read`] reads them back (tests, and anyone checking a log without Python).

pub mod event_file;
pub mod read;
mod training_log;

pub use event_file::EventFile;
pub use training_log::TrainingLog;
