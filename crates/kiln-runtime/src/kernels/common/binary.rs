//! Shared machinery of the element-wise binary operators (ADD, SUB, MUL): NumPy-style
//! broadcasting and the quantized rescaling ADD and SUB use (inputs brought to a common
//! scale with a left shift of 20, as TFLite's reference kernels do).

use kiln_tflite::quant::{
    QuantizedMultiplier, multiply_by_quantized_multiplier_smaller_than_one, quantize_multiplier,
};
use kiln_tflite::{Activation, BuiltinOptions, TensorType};

use super::fused_activation::FloatClamp;
use super::quant::{activation_range, load_q, per_tensor};
use super::requantize::{ChannelRescale, OutputRange};
use super::scratch::Scratch;
use crate::error::RuntimeError;
use crate::kernels::{In, Out, Prep};
use crate::tensor::{TensorInfo, as_f32, as_f32_mut};

/// For each output element, the indices of the two inputs it combines (NumPy broadcasting),
/// computed on the fly so no index table proportional to the output is allocated.
#[derive(Debug)]
pub struct Broadcast {
    pub output_shape: Vec<usize>,
    strides_a: Vec<usize>,
    strides_b: Vec<usize>,
}

impl Broadcast {
    pub fn new(prep: &Prep<'_>, a: &TensorInfo, b: &TensorInfo) -> Result<Self, RuntimeError> {
        let rank = a.shape.len().max(b.shape.len());
        let pad = |shape: &[usize]| -> Vec<usize> {
            let mut padded = vec![1; rank - shape.len()];
            padded.extend_from_slice(shape);
            padded
        };
        let (sa, sb) = (pad(&a.shape), pad(&b.shape));
        let mut output_shape = Vec::with_capacity(rank);
        for (&x, &y) in sa.iter().zip(&sb) {
            output_shape.push(match (x, y) {
                (x, y) if x == y => x,
                (1, y) => y,
                (x, 1) => x,
                _ => {
                    return Err(prep.bad(&format!(
                        "cannot broadcast '{}' {:?} with '{}' {:?}",
                        a.name, a.shape, b.name, b.shape
                    )));
                }
            });
        }
        let strides = |shape: &[usize]| -> Vec<usize> {
            let mut strides = vec![0; rank];
            let mut step = 1;
            for d in (0..rank).rev() {
                strides[d] = if shape[d] == 1 { 0 } else { step };
                step *= shape[d];
            }
            strides
        };
        Ok(Self {
            strides_a: strides(&sa),
            strides_b: strides(&sb),
            output_shape,
        })
    }

    /// Whether both inputs have the output's shape (no broadcasting: index i maps to i).
    pub fn is_flat(&self) -> bool {
        let contiguous = |strides: &[usize]| {
            let mut step = 1;
            strides
                .iter()
                .zip(&self.output_shape)
                .rev()
                .all(|(&s, &d)| {
                    let ok = s == step || d == 1;
                    step *= d;
                    ok
                })
        };
        contiguous(&self.strides_a) && contiguous(&self.strides_b)
    }

    /// Calls `f(output index, a index, b index)` for every output element in order. The
    /// innermost dimension runs as a tight loop; outer dimensions advance an odometer.
    #[inline]
    pub fn for_each(&self, mut f: impl FnMut(usize, usize, usize)) {
        self.for_each_row(|o, len, (a, step_a), (b, step_b)| {
            for k in 0..len {
                f(o + k, a + k * step_a, b + k * step_b);
            }
        });
    }

    /// Calls `f(first output index, length, (a index, a step), (b index, b step))` for every
    /// run of [`Self::runs`].
    #[inline(always)]
    pub fn for_each_row(&self, mut f: impl FnMut(usize, usize, (usize, usize), (usize, usize))) {
        for Run { first, len, a, b } in self.runs() {
            f(first, len, a, b);
        }
    }

    /// The runs of the innermost dimension in order (one run for the whole output when
    /// neither side broadcasts): a step of 1 is a contiguous operand, 0 a repeated one. An
    /// iterator rather than a callback so that a kernel compiled for wider vectors keeps the
    /// loop body in its own code.
    pub fn runs(&self) -> Runs<'_> {
        let rank = self.output_shape.len();
        let total: usize = self.output_shape.iter().product();
        let (inner, steps) = if rank == 0 {
            (1, (1, 1))
        } else if self.is_flat() {
            (total, (1, 1))
        } else {
            (
                self.output_shape[rank - 1],
                (self.strides_a[rank - 1], self.strides_b[rank - 1]),
            )
        };
        Runs {
            broadcast: self,
            index: vec![0; rank.saturating_sub(1)],
            next: (0, 0, 0),
            remaining: if rank == 0 { 1 } else { total / inner.max(1) },
            inner,
            steps,
        }
    }
}

/// One run of [`Broadcast::runs`]: `len` output elements from `first`, and for each input
/// its first index and step.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub first: usize,
    pub len: usize,
    pub a: (usize, usize),
    pub b: (usize, usize),
}

/// The iterator of [`Broadcast::runs`]: outer dimensions advance an odometer.
pub struct Runs<'a> {
    broadcast: &'a Broadcast,
    index: Vec<usize>,
    /// The next run's output index and input bases.
    next: (usize, usize, usize),
    remaining: usize,
    inner: usize,
    steps: (usize, usize),
}

impl Iterator for Runs<'_> {
    type Item = Run;

    #[inline]
    fn next(&mut self) -> Option<Run> {
        if self.remaining == 0 || self.inner == 0 {
            return None;
        }
        self.remaining -= 1;
        let (first, base_a, base_b) = self.next;
        let run = Run {
            first,
            len: self.inner,
            a: (base_a, self.steps.0),
            b: (base_b, self.steps.1),
        };
        let bc = self.broadcast;
        let (mut base_a, mut base_b) = (base_a, base_b);
        for d in (0..self.index.len()).rev() {
            self.index[d] += 1;
            base_a += bc.strides_a[d];
            base_b += bc.strides_b[d];
            if self.index[d] < bc.output_shape[d] {
                break;
            }
            base_a -= bc.strides_a[d] * self.index[d];
            base_b -= bc.strides_b[d] * self.index[d];
            self.index[d] = 0;
        }
        self.next = (first + self.inner, base_a, base_b);
        Some(run)
    }
}

/// Float32 element-wise kernel: `f(a, b)` then the fused activation.
pub fn eval_float(
    broadcast: &Broadcast,
    clamp: FloatClamp,
    inputs: &[Option<In<'_>>],
    outputs: &mut [Out<'_>],
    f: impl Fn(f32, f32) -> f32,
) {
    let (Some(a), Some(b)) = (&inputs[0], &inputs[1]) else {
        unreachable!("prepared")
    };
    let (a, b) = (as_f32(a.data), as_f32(b.data));
    let output = as_f32_mut(outputs[0].data);
    // Contiguous or repeated operands as zipped slices, without indices: the loops vectorise.
    broadcast.for_each_row(|o, len, (ia, step_a), (ib, step_b)| {
        let out = &mut output[o..o + len];
        match (step_a, step_b) {
            (1, 1) => {
                for ((o, &x), &y) in out.iter_mut().zip(&a[ia..ia + len]).zip(&b[ib..ib + len]) {
                    *o = clamp.apply(f(x, y));
                }
            }
            (1, 0) => {
                let y = b[ib];
                for (o, &x) in out.iter_mut().zip(&a[ia..ia + len]) {
                    *o = clamp.apply(f(x, y));
                }
            }
            (0, 1) => {
                let x = a[ia];
                for (o, &y) in out.iter_mut().zip(&b[ib..ib + len]) {
                    *o = clamp.apply(f(x, y));
                }
            }
            _ => {
                for (k, o) in out.iter_mut().enumerate() {
                    *o = clamp.apply(f(a[ia + k * step_a], b[ib + k * step_b]));
                }
            }
        }
    });
}

/// Int32 element-wise kernel (shapes, indices): wrapping arithmetic, then the activation's
/// integer clamp.
pub fn eval_int32(
    broadcast: &Broadcast,
    range: (i32, i32),
    inputs: &[Option<In<'_>>],
    outputs: &mut [Out<'_>],
    f: impl Fn(i32, i32) -> i32,
) {
    let (Some(a), Some(b)) = (&inputs[0], &inputs[1]) else {
        unreachable!("prepared")
    };
    let read = |data: &[u8], i: usize| {
        i32::from_le_bytes([
            data[4 * i],
            data[4 * i + 1],
            data[4 * i + 2],
            data[4 * i + 3],
        ])
    };
    let output = &mut *outputs[0].data;
    broadcast.for_each(|o, ia, ib| {
        let value = f(read(a.data, ia), read(b.data, ib)).clamp(range.0, range.1);
        output[4 * o..4 * o + 4].copy_from_slice(&value.to_le_bytes());
    });
}

/// The integer clamp of a fused activation on an INT32 output.
pub fn int32_range(prep: &Prep<'_>, activation: Activation) -> Result<(i32, i32), RuntimeError> {
    Ok(match activation {
        Activation::None => (i32::MIN, i32::MAX),
        Activation::Relu => (0, i32::MAX),
        Activation::Relu6 => (0, 6),
        Activation::ReluN1To1 => (-1, 1),
        other => {
            return Err(prep.unsupported(&format!("fused activation {} on INT32", other.name())));
        }
    })
}

/// Quantized ADD/SUB parameters (TFLite's PrepareGeneralSubOp for 8-bit types). Each input's
/// rescale (offset, left shift 20, multiply) depends only on the input byte, so it is
/// tabulated for all 256 values at prepare; only the sum's requantization runs per element.
#[derive(Debug)]
pub struct AddSubParams {
    scaled_a: Box<[i32; 256]>,
    scaled_b: Box<[i32; 256]>,
    output_offset: i32,
    output_multiplier: QuantizedMultiplier,
    range: (i32, i32),
    /// The output multiplier for a block of sums, vectorised: the same bits as the
    /// smaller-than-one rescale when its shift is not positive (always, from the converter).
    rescale: Option<ChannelRescale>,
    /// A row of zero offsets for `rescale`, made once.
    zeros: Vec<i32>,
}

const LEFT_SHIFT: i32 = 20;

impl AddSubParams {
    pub fn new(
        prep: &Prep<'_>,
        a: &TensorInfo,
        b: &TensorInfo,
        output: &TensorInfo,
        activation: Activation,
    ) -> Result<Self, RuntimeError> {
        let (sa, za) = per_tensor(prep, a)?;
        let (sb, zb) = per_tensor(prep, b)?;
        let (so, zo) = per_tensor(prep, output)?;
        // `2 * max(float, float)` is exact in float; the divisions happen in double.
        let twice_max = f64::from(2.0 * sa.max(sb));
        let signed = output.dtype == TensorType::Int8;
        let table = |zero_point: i32, m: QuantizedMultiplier| -> Box<[i32; 256]> {
            let mut table = Box::new([0i32; 256]);
            for (byte, entry) in table.iter_mut().enumerate() {
                let q = load_q(&[byte as u8], signed, 0);
                let shifted = q.wrapping_sub(zero_point).wrapping_mul(1 << LEFT_SHIFT);
                *entry = multiply_by_quantized_multiplier_smaller_than_one(shifted, m);
            }
            table
        };
        let output_multiplier =
            quantize_multiplier(twice_max / (f64::from(1u32 << LEFT_SHIFT) * f64::from(so)));
        Ok(Self {
            scaled_a: table(za, quantize_multiplier(f64::from(sa) / twice_max)),
            scaled_b: table(zb, quantize_multiplier(f64::from(sb) / twice_max)),
            output_offset: zo,
            output_multiplier,
            range: activation_range(prep, activation, output)?,
            rescale: (output_multiplier.shift <= 0)
                .then(|| ChannelRescale::new(&[output_multiplier])),
            zeros: vec![0; 16],
        })
    }

    /// Runs ADD (`subtract` false) or SUB over 8-bit inputs.
    pub fn eval(
        &self,
        broadcast: &Broadcast,
        subtract: bool,
        inputs: &[Option<In<'_>>],
        outputs: &mut [Out<'_>],
    ) {
        let (Some(a), Some(b)) = (&inputs[0], &inputs[1]) else {
            unreachable!("prepared")
        };
        let output = &mut *outputs[0].data;
        if let Some(rescale) = &self.rescale {
            // The rescaled inputs' sums first (table lookups), then one vectorised
            // requantization of them all.
            i32::with(output.len(), |sums| {
                // Subtracting is adding the negated table of b.
                let sign = if subtract { -1 } else { 1 };
                let (ta, tb) = (&*self.scaled_a, &*self.scaled_b);
                for Run {
                    first,
                    len,
                    a: (ia, step_a),
                    b: (ib, step_b),
                } in broadcast.runs()
                {
                    let sums = &mut sums[first..first + len];
                    if (step_a, step_b) == (1, 1) {
                        let (a, b) = (&a.data[ia..ia + len], &b.data[ib..ib + len]);
                        for ((s, &x), &y) in sums.iter_mut().zip(a).zip(b) {
                            *s = ta[usize::from(x)]
                                .wrapping_add(tb[usize::from(y)].wrapping_mul(sign));
                        }
                    } else {
                        for (k, s) in sums.iter_mut().enumerate() {
                            let (x, y) = (a.data[ia + k * step_a], b.data[ib + k * step_b]);
                            *s = ta[usize::from(x)]
                                .wrapping_add(tb[usize::from(y)].wrapping_mul(sign));
                        }
                    }
                }
                let range = OutputRange {
                    offset: self.output_offset,
                    min: self.range.0,
                    max: self.range.1,
                };
                rescale.requantize(sums, &self.zeros, range, output);
            });
            return;
        }
        broadcast.for_each(|o, ia, ib| {
            let (x, y) = (
                self.scaled_a[usize::from(a.data[ia])],
                self.scaled_b[usize::from(b.data[ib])],
            );
            let raw = if subtract {
                x.wrapping_sub(y)
            } else {
                x.wrapping_add(y)
            };
            let value =
                multiply_by_quantized_multiplier_smaller_than_one(raw, self.output_multiplier)
                    .saturating_add(self.output_offset);
            output[o] = value.clamp(self.range.0, self.range.1) as u8;
        });
    }
}

/// How an element-wise operator computes, decided by its (shared) element type.
pub enum ElementwiseType {
    Float(FloatClamp),
    Int32((i32, i32)),
    /// int8 or uint8: the operator sets up its own rescaling.
    Quantized,
}

pub struct Elementwise {
    pub dtype: ElementwiseType,
    pub activation: Activation,
    pub broadcast: Broadcast,
}

/// What ADD, SUB and MUL check alike: two inputs and an output of one supported type, the
/// fused activation, and the broadcast shape (set as the output's shape).
pub fn prepare_elementwise(prep: &Prep<'_>) -> Result<Elementwise, RuntimeError> {
    use TensorType::{Float32, Int8, Int32, UInt8};
    let dtype = common_type(prep, &[Float32, Int32, Int8, UInt8])?;
    let activation = match &prep.op.options {
        BuiltinOptions::Add { activation }
        | BuiltinOptions::Sub { activation }
        | BuiltinOptions::Mul { activation } => *activation,
        BuiltinOptions::None => Activation::None,
        _ => return Err(prep.bad("unexpected options")),
    };
    let broadcast = Broadcast::new(prep, prep.input(0)?, prep.input(1)?)?;
    prep.set_output_shape(0, broadcast.output_shape.clone());
    let dtype = match dtype {
        Float32 => ElementwiseType::Float(FloatClamp::prepare(prep, activation)?),
        Int32 => ElementwiseType::Int32(int32_range(prep, activation)?),
        _ => ElementwiseType::Quantized,
    };
    Ok(Elementwise {
        dtype,
        activation,
        broadcast,
    })
}

/// Checks the two inputs and the output share a supported element type.
pub fn common_type(prep: &Prep<'_>, allowed: &[TensorType]) -> Result<TensorType, RuntimeError> {
    prep.expect_arity(2..=2, 1)?;
    let (a, b, output) = (prep.input(0)?, prep.input(1)?, prep.output(0)?);
    prep.require_type(a, allowed)?;
    if b.dtype != a.dtype || output.dtype != a.dtype {
        return Err(prep.bad(&format!(
            "inputs and output must share one type, have {}, {} and {}",
            a.dtype, b.dtype, output.dtype
        )));
    }
    Ok(a.dtype)
}
