//! The int8 arithmetic of TFLite's quantization, in one place for everything that must agree
//! on it to the bit: the exporter (which writes scales, zero points and integer weights), the
//! runtime's quantized kernels (which requantize accumulators), and quantization-aware training
//! (which reproduces both in float).
//!
//! One file per concern:
//! - `params`: an activation's asymmetric int8 grid from an observed [`Range`] ([`QParams`]);
//! - `symmetric`: weights on the symmetric per-channel grid ([`quantize_symmetric`]);
//! - `fixed_point`: real multipliers as Q31 fixed point and the rounding multiply that
//!   applies them ([`QuantizedMultiplier`]);
//! - `requantize`: how the int32 accumulator of a weighted operator becomes an output step
//!   ([`Rescale`]: fixed point for the convolutions, double precision for FULLY_CONNECTED).

mod fixed_point;
mod params;
mod requantize;
mod symmetric;

pub use fixed_point::{
    QuantizedMultiplier, multiply_by_quantized_multiplier,
    multiply_by_quantized_multiplier_smaller_than_one, quantize_multiplier, rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
};
pub use params::{QParams, Range, asymmetric_int8_params};
pub use requantize::Rescale;
pub use symmetric::{SymmetricWeights, int8_weight_axis, quantize_symmetric};
