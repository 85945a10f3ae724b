use thiserror::Error;

/// A convolution whose description or buffers do not fit together. The kernels check
/// everything before touching memory, so a caller's mistake is this error, never a panic.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum KernelError {
    #[error("convolution shape: {0}")]
    Shape(String),
    #[error("{buffer} holds {actual} floats, the convolution needs {expected}")]
    BufferLength {
        buffer: &'static str,
        expected: usize,
        actual: usize,
    },
}
