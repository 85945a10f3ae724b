//! Runs one kernel's prepare and eval on hand-built tensors, for the kernels' unit tests.

use kiln_tflite::{BuiltinOptions, Operator, Quantization, TensorType};

use crate::error::RuntimeError;
use crate::kernels::{In, Kernel, Out, Prep};
use crate::tensor::TensorInfo;

/// A test tensor: its facts and, for constants, its bytes.
pub struct Tensor {
    pub info: TensorInfo,
    pub value: Option<Vec<u8>>,
}

pub fn tensor(dtype: TensorType, shape: &[usize]) -> Tensor {
    Tensor {
        info: TensorInfo {
            name: "t".into(),
            shape: shape.to_vec(),
            dtype,
            quantization: None,
            sparse: false,
            sparsity: None,
        },
        value: None,
    }
}

pub fn constant(dtype: TensorType, shape: &[usize], bytes: Vec<u8>) -> Tensor {
    Tensor {
        value: Some(bytes),
        ..tensor(dtype, shape)
    }
}

pub fn i32s(values: &[i32]) -> Tensor {
    constant(
        TensorType::Int32,
        &[values.len()],
        values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
}

pub fn quantized(mut t: Tensor, scale: f32, zero_point: i64) -> Tensor {
    t.info.quantization = Some(Quantization {
        scale: vec![scale],
        zero_point: vec![zero_point],
        ..Quantization::default()
    });
    t
}

/// `t` quantized per output channel (axis 0): one scale per channel, one zero point for all.
pub fn per_channel(mut t: Tensor, scales: Vec<f32>, zero_point: i64) -> Tensor {
    let channels = scales.len();
    t.info.quantization = Some(Quantization {
        scale: scales,
        zero_point: vec![zero_point; channels],
        ..Quantization::default()
    });
    t
}

/// A seeded generator of integers below `n`, for random test cases.
pub fn seeded(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed;
    move |n| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % n
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct Run {
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
    /// The value declared at prepare time, if the kernel folded it.
    pub folded: Option<Vec<u8>>,
    /// The prepared kernel (its `Debug` form tells which path it took).
    pub kernel: Kernel,
}

/// Prepares with `inputs` (`None` = omitted) and `output`, then evaluates with each
/// input's value or, for non-constants, the matching entry of `data`.
pub fn run(
    prepare: fn(&Prep<'_>) -> Result<Kernel, RuntimeError>,
    options: BuiltinOptions,
    inputs: Vec<Option<Tensor>>,
    output: Tensor,
    data: &[&[u8]],
) -> Result<Run, RuntimeError> {
    let mut tensors = Vec::new();
    let mut values = Vec::new();
    let mut op_inputs = Vec::new();
    for t in &inputs {
        match t {
            Some(t) => {
                op_inputs.push(tensors.len() as i32);
                tensors.push(t.info.clone());
                values.push(t.value.clone());
            }
            None => op_inputs.push(-1),
        }
    }
    let out_index = tensors.len() as i32;
    tensors.push(output.info.clone());
    values.push(None);
    let op = Operator {
        opcode_index: 0,
        inputs: op_inputs,
        outputs: vec![out_index],
        options,
        custom_options: None,
        intermediates: Vec::new(),
    };
    let prep = Prep::new(0, "TEST".into(), 1, &op, &tensors, &values, &[]);
    let kernel = prepare(&prep)?;
    let prepared = prep.into_outputs().remove(0);
    let shape = prepared.shape.expect("the kernel sets its output shape");
    let elem = output.info.dtype.element_size().expect("fixed size");
    let mut out = vec![0xA5u8; shape.iter().product::<usize>() * elem];
    let mut runtime = data.iter();
    let eval_inputs: Vec<Option<In<'_>>> = inputs
        .iter()
        .map(|t| {
            t.as_ref().map(|t| In {
                data: match &t.value {
                    Some(v) => v.as_slice(),
                    None => runtime.next().expect("data for each non-constant input"),
                },
            })
        })
        .collect();
    kernel.eval(&eval_inputs, &mut [Out { data: &mut out }]);
    Ok(Run {
        shape,
        data: out,
        folded: prepared.value,
        kernel,
    })
}
