//! The arithmetic CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED share: an op with weights
//! runs in float32, in int8/uint8 (integer accumulation, then a per-channel rescale into the
//! output's quantization), or hybrid (float activations, int8 weights, the input quantized on
//! the fly). This module checks the tensor types once and holds each mode's parameters.

use kiln_tflite::quant::Rescale;
use kiln_tflite::{Activation, TensorType};

use super::fused_activation::FloatClamp;
use super::quant::{activation_range, filter_quantization, per_tensor};
use crate::error::RuntimeError;
use crate::kernels::{In, Prep};
use crate::tensor::TensorInfo;

#[derive(Debug)]
pub struct Quantized {
    pub input_offset: i32,
    pub filter_offset: i32,
    pub output_offset: i32,
    pub rescale: Rescale,
    pub range: (i32, i32),
    pub input_signed: bool,
    pub filter_signed: bool,
}

impl Quantized {
    /// The output value (clamped, in the output type's range) of accumulator `acc` + bias.
    #[inline]
    pub fn finish(&self, acc: i32, bias: i32, channel: usize) -> i32 {
        let scaled = self.rescale.apply(acc.wrapping_add(bias), channel);
        scaled
            .saturating_add(self.output_offset)
            .clamp(self.range.0, self.range.1)
    }

    /// `out[i] = finish(sums[i] + offsets[c], bias[c], c)` as bytes over rows of `channels`
    /// (c = i mod channels), `offsets` being each channel's correction: eight channels per
    /// instruction where the rescale is in double precision (FULLY_CONNECTED) and the CPU has
    /// AVX-512, one at a time elsewhere.
    pub fn finish_rows(
        &self,
        sums: &[i32],
        offsets: &[i32],
        bias: Option<&[i32]>,
        channels: usize,
        out: &mut [u8],
    ) {
        assert!(offsets.len() >= channels && bias.is_none_or(|b| b.len() >= channels));
        #[cfg(target_arch = "x86_64")]
        if let Rescale::Double(scales) = &self.rescale
            && scales.len() >= channels
            && std::arch::is_x86_feature_detected!("avx512f")
        {
            for (sums, out) in sums
                .chunks_exact(channels)
                .zip(out.chunks_exact_mut(channels))
            {
                // SAFETY: the CPU has AVX-512F; the slices are as long as `channels`.
                unsafe { self.finish_row_double(sums, offsets, bias, scales, out) };
            }
            return;
        }
        for (i, (&sum, out)) in sums.iter().zip(out.iter_mut()).enumerate() {
            let c = i % channels;
            let acc = sum.wrapping_add(offsets[c]);
            *out = self.finish(acc, bias.map_or(0, |b| b[c]), c) as u8;
        }
    }

    /// One row of [`Self::finish_rows`], eight channels at a time: the product in double
    /// precision as the scalar one, rounded half away from zero (the truncation plus one
    /// step where the fraction's magnitude is at least a half), the zero point added and the
    /// activation's clamp applied, exact in double precision (the scalar path's saturation
    /// to i32 changes nothing the clamp leaves).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn finish_row_double(
        &self,
        sums: &[i32],
        offsets: &[i32],
        bias: Option<&[i32]>,
        scales: &[f64],
        out: &mut [u8],
    ) {
        use std::arch::x86_64::*;
        let n = out.len().min(sums.len());
        let whole = n / 8 * 8;
        let (half, one, minus_one) = (
            _mm512_set1_pd(0.5),
            _mm512_set1_pd(1.0),
            _mm512_set1_pd(-1.0),
        );
        let offset = _mm512_set1_pd(f64::from(self.output_offset));
        let (min, max) = (
            _mm512_set1_pd(f64::from(self.range.0)),
            _mm512_set1_pd(f64::from(self.range.1)),
        );
        for c in (0..whole).step_by(8) {
            // SAFETY: c + 8 ≤ n, within every slice (asserted by the caller for offsets, bias
            // and scales; n bounds sums and out).
            unsafe {
                let load = |v: &[i32]| _mm256_loadu_si256(v.as_ptr().add(c).cast());
                let mut acc = _mm256_add_epi32(load(sums), load(offsets));
                if let Some(bias) = bias {
                    acc = _mm256_add_epi32(acc, load(bias));
                }
                let x = _mm512_mul_pd(
                    _mm512_cvtepi32_pd(acc),
                    _mm512_loadu_pd(scales.as_ptr().add(c)),
                );
                let truncated =
                    _mm512_roundscale_pd::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(x);
                let fraction = _mm512_sub_pd(x, truncated);
                let away = _mm512_cmp_pd_mask::<_CMP_GE_OQ>(_mm512_abs_pd(fraction), half);
                // ±1 with x's sign.
                let negative = _mm512_cmp_pd_mask::<_CMP_LT_OQ>(x, _mm512_setzero_pd());
                let step = _mm512_mask_blend_pd(negative, one, minus_one);
                let rounded = _mm512_mask_add_pd(truncated, away, truncated, step);
                let value = _mm512_add_pd(rounded, offset);
                let value = _mm512_min_pd(_mm512_max_pd(value, min), max);
                let bytes = _mm512_cvtepi32_epi8(_mm512_castsi256_si512(_mm512_cvtpd_epi32(value)));
                _mm_storel_epi64(out.as_mut_ptr().add(c).cast(), bytes);
            }
        }
        for c in whole..n {
            let acc = sums[c].wrapping_add(offsets[c]);
            out[c] = self.finish(acc, bias.map_or(0, |b| b[c]), c) as u8;
        }
    }
}

#[derive(Debug)]
pub enum Arithmetic {
    Float {
        clamp: FloatClamp,
    },
    Quantized(Quantized),
    Hybrid {
        filter_scales: Vec<f32>,
        asymmetric_inputs: bool,
        clamp: FloatClamp,
    },
}

/// What differs between the three operators.
pub struct WeightedOp<'a> {
    pub input: &'a TensorInfo,
    pub filter: &'a TensorInfo,
    pub bias: Option<&'a TensorInfo>,
    pub output: &'a TensorInfo,
    pub activation: Activation,
    pub channels: usize,
    /// The filter dimension that indexes output channels (per-channel scales lie along it).
    pub channel_axis: usize,
    /// FULLY_CONNECTED rescales in double precision; the convolutions in fixed point.
    pub double_precision_rescale: bool,
    /// Whether hybrid inputs are quantized asymmetrically (per op and options in TFLite).
    pub hybrid_asymmetric: bool,
}

pub fn prepare(prep: &Prep<'_>, op: &WeightedOp<'_>) -> Result<Arithmetic, RuntimeError> {
    use TensorType::{Float32, Int8, Int32, UInt8};
    let check_bias = |dtype: TensorType| -> Result<(), RuntimeError> {
        if let Some(bias) = op.bias {
            prep.require_type(bias, &[dtype])?;
            prep.require_shape(bias, &[op.channels])?;
        }
        Ok(())
    };
    match (op.input.dtype, op.filter.dtype) {
        (Float32, Float32) => {
            prep.require_type(op.output, &[Float32])?;
            check_bias(Float32)?;
            Ok(Arithmetic::Float { clamp: FloatClamp::prepare(prep, op.activation)? })
        }
        (Float32, Int8) => {
            prep.require_type(op.output, &[Float32])?;
            check_bias(Float32)?;
            Ok(Arithmetic::Hybrid {
                filter_scales: filter_quantization(prep, op.filter, op.channel_axis, op.channels)?.scales,
                asymmetric_inputs: op.hybrid_asymmetric,
                clamp: FloatClamp::prepare(prep, op.activation)?,
            })
        }
        (Int8 | UInt8, Int8 | UInt8) => {
            prep.require_type(op.output, &[op.input.dtype])?;
            check_bias(Int32)?;
            let (input_scale, input_zero) = per_tensor(prep, op.input)?;
            let (output_scale, output_zero) = per_tensor(prep, op.output)?;
            let filter_q = filter_quantization(prep, op.filter, op.channel_axis, op.channels)?;
            let rescale = Rescale::new(
                op.double_precision_rescale,
                input_scale,
                &filter_q.scales,
                output_scale,
            );
            Ok(Arithmetic::Quantized(Quantized {
                input_offset: -input_zero,
                filter_offset: -filter_q.zero_point,
                output_offset: output_zero,
                rescale,
                range: activation_range(prep, op.activation, op.output)?,
                input_signed: op.input.dtype == Int8,
                filter_signed: op.filter.dtype == Int8,
            }))
        }
        (input, filter) => Err(prep.unsupported(&format!(
            "input {input} with weights {filter} (supported: FLOAT32 with FLOAT32, INT8/UINT8 quantized, FLOAT32 with INT8 hybrid)"
        ))),
    }
}

/// The bias input's bytes at eval time (input 2), when the operator was prepared with one.
pub fn bias<'b>(inputs: &[Option<In<'b>>], has_bias: bool) -> Option<&'b [u8]> {
    if has_bias {
        inputs.get(2).and_then(Option::as_ref).map(|b| b.data)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectorised rows give `finish`'s bytes: ties of both signs (scales of a half and a
    /// quarter), sums that overflow i32 after the rescale (saturation), both clamps, a row
    /// length that leaves a scalar tail, and a bias.
    #[test]
    fn finished_rows_equal_the_scalar_finish() {
        let scales = vec![0.5, 0.25, 1.5, 1e-3, 3e9, 0.75, 2.5, 0.125, 7.0, 0.3, 0.5];
        let channels = scales.len();
        for (offset, range) in [(3, (-128, 127)), (-20, (0, 255)), (0, (-5, 6))] {
            let q = Quantized {
                input_offset: 0,
                filter_offset: 0,
                output_offset: offset,
                rescale: Rescale::Double(scales.clone()),
                range,
                input_signed: true,
                filter_signed: true,
            };
            let sums: Vec<i32> = (0..40 * channels as i32)
                .map(|i| match i % 7 {
                    0 => i32::MAX - i,
                    1 => i32::MIN + i,
                    _ => (i * 37) % 501 - 250,
                })
                .collect();
            let offsets: Vec<i32> = (0..channels as i32).map(|c| c * 3 - 7).collect();
            let bias: Vec<i32> = (0..channels as i32).map(|c| 11 - c * 5).collect();
            for bias in [None, Some(&bias[..])] {
                let mut got = vec![0u8; sums.len()];
                q.finish_rows(&sums, &offsets, bias, channels, &mut got);
                for (i, (&sum, &got)) in sums.iter().zip(&got).enumerate() {
                    let c = i % channels;
                    let acc = sum.wrapping_add(offsets[c]);
                    let want = q.finish(acc, bias.map_or(0, |b| b[c]), c) as u8;
                    assert_eq!(got, want, "sum {sum}, channel {c}, offset {offset}");
                }
            }
        }
    }
}
