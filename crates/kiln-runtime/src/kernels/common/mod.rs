//! What several operators' kernels share; nothing here is one operator's kernel.
//!
//! - `binary`: NumPy broadcasting and the quantized rescaling of ADD, SUB and MUL;
//! - `block_sparse`: weights pruned in blocks kept as their non-zero blocks, and the
//!   products that skip the rest;
//! - `convolution`: CONV_2D's and DEPTHWISE_CONV_2D's operands, receptive-field geometry and
//!   arithmetic set-up;
//! - `dot`: the inner products the float and integer kernels spend their time in;
//! - `exp`: a branch-free float32 exp that vectorises;
//! - `fused_activation`: an operator's fused activation as a float clamp;
//! - `igemm`: the integer GEMM (u8 × i8 → i32) of the quantized convolutions, with weights
//!   packed at prepare for VNNI, AVX2 or portable microkernels;
//! - `layout`: element sizes, strides, strided gathers and prepare-time folding of the
//!   data-movement operators;
//! - `lut`: the one-input activations' prepare, byte tables and float maps;
//! - `parallel`: a kernel's output split across the invoke's threads;
//! - `pooling`: AVERAGE_POOL_2D's and MAX_POOL_2D's window geometry;
//! - `quant`: tensors' quantization parameters, 8-bit loads and stores, hybrid input
//!   quantization (the arithmetic itself is `kiln_tflite::quant`);
//! - `requantize`: a row of int32 accumulators to 8-bit outputs (fixed-point rescale, zero
//!   point, clamp), vectorised;
//! - `scratch`: per-thread working buffers reused across invokes;
//! - `sgemm`: the float GEMM of CONV_2D, with the filter packed at prepare for AVX-512, AVX2 +
//!   FMA or portable microkernels;
//! - `weighted`: the arithmetic of CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED (float,
//!   quantized or hybrid);
//! - `testing`: prepares and runs one kernel on hand-built tensors, for unit tests.

pub mod binary;
pub mod block_sparse;
pub mod convolution;
pub mod dot;
pub mod exp;
pub mod field_gemm;
pub mod fused_activation;
pub mod igemm;
pub mod layout;
pub mod lut;
pub mod parallel;
pub mod pooling;
pub mod quant;
pub mod requantize;
pub mod scratch;
pub mod sgemm;
#[cfg(test)]
pub mod testing;
pub mod weighted;
