//! Shared pieces of the element-wise activations: the one-input/one-output prepare they all
//! start with, a 256-entry byte table for int8/uint8 tensors (every quantized activation here
//! maps each of the 256 possible input bytes to one output byte, so prepare evaluates the exact
//! integer arithmetic of the reference kernel once per byte value and eval is a lookup), and a
//! float32 map.

use kiln_tflite::TensorType;

use crate::error::RuntimeError;
use crate::kernels::{In, Kernel, OpKernel, Out, Prep};
use crate::tensor::{TensorInfo, as_f32, as_f32_mut};

/// Checks one input and one output of the same type and gives the output the input's shape
/// (TFLite's GenericPrepare). Returns (input, output).
pub fn unary<'a>(
    prep: &Prep<'a>,
    allowed: &[TensorType],
) -> Result<(&'a TensorInfo, &'a TensorInfo), RuntimeError> {
    prep.expect_arity(1..=1, 1)?;
    let (input, output) = (prep.input(0)?, prep.output(0)?);
    prep.require_type(input, allowed)?;
    if input.dtype != output.dtype {
        return Err(prep.bad(&format!(
            "input '{}' is {} but output '{}' is {}",
            input.name, input.dtype, output.name, output.dtype
        )));
    }
    prep.set_output_shape(0, input.shape.clone());
    Ok((input, output))
}

/// Output byte for every input byte, indexed by the byte's bit pattern (an int8 value `v` sits
/// at `v as u8`).
#[derive(Clone)]
pub struct ByteTable {
    table: [u8; 256],
    len: usize,
}

impl std::fmt::Debug for ByteTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByteTable").field("len", &self.len).finish()
    }
}

impl ByteTable {
    /// Tabulates `f` (quantized input value → quantized output value, already clamped to the
    /// type's range) over every int8 (`signed`) or uint8 value, for a tensor of `len` elements.
    pub fn new(signed: bool, len: usize, f: impl Fn(i32) -> i32) -> Self {
        let mut table = [0u8; 256];
        for (byte, entry) in table.iter_mut().enumerate() {
            let value = if signed {
                i32::from(byte as u8 as i8)
            } else {
                byte as i32
            };
            *entry = f(value) as u8;
        }
        Self { table, len }
    }

    pub fn boxed(self) -> Kernel {
        Box::new(self)
    }

    /// The output value for quantized input `value` (tests).
    #[cfg(test)]
    pub fn lookup(&self, signed: bool, value: i32) -> i32 {
        let out = self.table[value as u8 as usize];
        if signed {
            i32::from(out as i8)
        } else {
            i32::from(out)
        }
    }
}

impl OpKernel for ByteTable {
    fn eval(&self, inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]) {
        let Some(input) = &inputs[0] else {
            unreachable!("prepared")
        };
        for (o, &i) in outputs[0].data[..self.len]
            .iter_mut()
            .zip(&input.data[..self.len])
        {
            *o = self.table[usize::from(i)];
        }
    }
}

/// A float32 element-wise function.
pub struct FloatMap<F> {
    name: &'static str,
    len: usize,
    f: F,
}

impl<F> std::fmt::Debug for FloatMap<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FloatMap")
            .field("name", &self.name)
            .field("len", &self.len)
            .finish()
    }
}

impl<F: Fn(f32) -> f32 + Send + Sync + 'static> FloatMap<F> {
    pub fn boxed(name: &'static str, len: usize, f: F) -> Kernel {
        Box::new(Self { name, len, f })
    }
}

impl<F: Fn(f32) -> f32 + Send + Sync> OpKernel for FloatMap<F> {
    fn eval(&self, inputs: &[Option<In<'_>>], outputs: &mut [Out<'_>]) {
        let Some(input) = &inputs[0] else {
            unreachable!("prepared")
        };
        let input = &as_f32(input.data)[..self.len];
        let output = &mut as_f32_mut(outputs[0].data)[..self.len];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { map_avx512(&self.f, input, output) };
        }
        map(&self.f, input, output);
    }
}

#[inline(always)]
fn map(f: &impl Fn(f32) -> f32, input: &[f32], output: &mut [f32]) {
    for (o, &x) in output.iter_mut().zip(input) {
        *o = f(x);
    }
}

/// The same loop with 16 lanes: branch-free functions (`exp`-based LOGISTIC and TANH, the
/// clamps) vectorise; nothing is fused, so the bits are the baseline's.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn map_avx512(f: &impl Fn(f32) -> f32, input: &[f32], output: &mut [f32]) {
    map(f, input, output);
}

/// TFLite's LUTPopulate for int8/uint8: dequantize each input value, apply `transform` in
/// float32, requantize with round-half-away-from-zero and clamp. The arithmetic is float32
/// throughout, as in the reference (`input_scale * (q - zp)`, `round(y * (1 / output_scale))`).
pub fn float_lut(
    signed: bool,
    len: usize,
    (input_scale, input_zero_point): (f32, i32),
    (output_scale, output_zero_point): (f32, i32),
    transform: impl Fn(f32) -> f32,
) -> ByteTable {
    let (min, max) = if signed { (-128, 127) } else { (0, 255) };
    let inverse_scale = 1.0f32 / output_scale;
    ByteTable::new(signed, len, |q| {
        let dequantized = input_scale * (q - input_zero_point) as f32;
        let rescaled = (transform(dequantized) * inverse_scale).round();
        // C++'s float → int32 conversion; out-of-range (or NaN) floats saturate here where
        // C++ is undefined, which only matters for degenerate scales.
        let quantized = (rescaled + output_zero_point as f32) as i32;
        quantized.clamp(min, max)
    })
}

/// A quantized tensor's scale and zero point, requiring a positive finite scale (every
/// kernel here divides by it).
pub fn scale_and_zero_point(
    prep: &Prep<'_>,
    tensor: &TensorInfo,
) -> Result<(f32, i32), RuntimeError> {
    let (scale, zero_point) = super::quant::per_tensor(prep, tensor)?;
    if !(scale.is_finite() && scale > 0.0) {
        return Err(prep.bad(&format!(
            "tensor '{}' has quantization scale {scale}; a positive scale is required",
            tensor.name
        )));
    }
    let (min, max) = super::quant::type_range(tensor.dtype).unwrap_or((i32::MIN, i32::MAX));
    if zero_point < min || zero_point > max {
        return Err(prep.bad(&format!(
            "tensor '{}' has zero point {zero_point}, outside the {} range",
            tensor.name, tensor.dtype
        )));
    }
    Ok((scale, zero_point))
}

/// A quantized multiplier usable by `multiply_by_quantized_multiplier` (a shift TFLite's
/// kernels can apply: between -31 and 30), or an error naming what it rescales.
pub fn checked_multiplier(
    prep: &Prep<'_>,
    what: &str,
    real: f64,
) -> Result<kiln_tflite::quant::QuantizedMultiplier, RuntimeError> {
    let m = kiln_tflite::quant::quantize_multiplier(real);
    if !real.is_finite() || m.shift > 30 || m.shift < -31 {
        return Err(prep.unsupported(&format!(
            "the {what} rescaling factor {real} is out of the range TFLite's fixed-point kernels support"
        )));
    }
    Ok(m)
}

/// Calls `f(element index, strided index)` for every element of `shape` in row-major order,
/// where the strided index is `Σ index[d] · strides[d]` (a broadcast operand's element, or
/// the output slot a reduction accumulates into).
pub fn walk_strided(shape: &[usize], strides: &[usize], mut f: impl FnMut(usize, usize)) {
    let total: usize = shape.iter().product();
    if total == 0 {
        return;
    }
    let Some((&inner, outer_dims)) = shape.split_last() else {
        f(0, 0);
        return;
    };
    let inner_stride = strides.last().copied().unwrap_or(0);
    let mut index = vec![0usize; outer_dims.len()];
    let mut element = 0;
    loop {
        let base: usize = index.iter().zip(strides).map(|(i, s)| i * s).sum();
        for k in 0..inner {
            f(element, base + k * inner_stride);
            element += 1;
        }
        // Odometer over the outer dimensions.
        let mut d = outer_dims.len();
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            index[d] += 1;
            if index[d] < outer_dims[d] {
                break;
            }
            index[d] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_walk_visits_every_element() {
        let mut seen = Vec::new();
        walk_strided(&[2, 3, 2], &[0, 1, 0], |i, j| seen.push((i, j)));
        let alphas: Vec<usize> = seen.iter().map(|&(_, j)| j).collect();
        assert_eq!(alphas, vec![0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2]);
        assert!(seen.iter().enumerate().all(|(k, &(i, _))| k == i));
        let mut scalar = Vec::new();
        walk_strided(&[], &[], |i, j| scalar.push((i, j)));
        assert_eq!(scalar, vec![(0, 0)]);
    }
}
