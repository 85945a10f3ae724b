//! Operator kernels. Each operator is prepared once at load time (inputs, types and shapes
//! checked, parameters derived), then evaluated on every invoke without further checks.
//!
//! One file per operator (`<op>.rs`, all its element types); what several operators share
//! lives in `common/` (broadcasting, dot products, fused activations, data-movement helpers,
//! byte tables, pooling and convolution set-up, quantization parameters, the weighted
//! operators' arithmetic); `op_kernel.rs` defines a kernel and what its `prepare` sees. This
//! file is the module list and the registry.
//!
//! # Adding an operator
//!
//! 1. The format: the operator's code must be a `BuiltinOp` constant of kiln-tflite, and its
//!    options (if any) a `BuiltinOptions` variant (add both to `schema/tflite.fbs`, run
//!    `schema/regenerate.sh`, then list the name in `types.rs` and convert the options in
//!    `read.rs` / `write.rs`).
//! 2. A new file `kernels/<op>.rs`, opening with a doc comment that names the operator, the
//!    element types it runs and any deviation from TFLite's reference kernel.
//! 3. In it, `pub fn prepare(prep: &Prep<'_>) -> Result<Kernel, RuntimeError>`: check arity,
//!    options, types and shapes with `Prep`'s helpers (every problem a named error, never a
//!    panic: files are untrusted), derive the parameters, declare the output shape
//!    (`prep.set_output_shape`), and return a struct implementing [`OpKernel`] whose `eval`
//!    does no further checking. Reuse `common/` rather than copying from a sibling.
//! 4. Register it: `mod <op>;` below and one line `register(BuiltinOp::<OP>, <max version>,
//!    <op>::prepare)` in [`REGISTRY`], the highest operator version whose semantics the
//!    kernel implements.
//! 5. Unit tests in the file (`common::testing::run` prepares and runs one kernel on
//!    hand-built tensors), including the malformed inputs prepare must refuse.
//! 6. A conformance fixture: a model using the operator, converted by TF's converter with
//!    LiteRT's outputs, in `tests/fixtures/` (add it to `tests/fixtures/gen/generate.py`; see
//!    `tests/fixtures/README.md`), float32 and int8 where the operator has both, so the
//!    conformance tests compare the kernel with LiteRT's.

pub(crate) mod common;
mod op_kernel;

mod add;
mod average_pool_2d;
mod concatenation;
mod conv_2d;
mod densify;
mod depth_to_space;
mod depthwise_conv_2d;
mod dequantize;
mod fully_connected;
mod hard_swish;
mod leaky_relu;
mod logistic;
mod max_pool_2d;
mod mean;
mod mul;
mod pack;
mod pad;
mod padv2;
mod prelu;
mod quantize;
mod relu;
mod reshape;
mod resize_bilinear;
mod shape;
mod softmax;
mod squeeze;
mod strided_slice;
mod sub;
mod tanh;
mod transpose;

use kiln_tflite::{BuiltinOp, Operator, OperatorCode};

pub use op_kernel::{In, Kernel, OpKernel, Out, Prep, Prepared, TilingMaxPool};

use crate::error::RuntimeError;
use crate::tensor::TensorInfo;

type PrepareFn = fn(&Prep<'_>) -> Result<Kernel, RuntimeError>;

/// An operator this runtime implements, up to the highest version it understands (versions
/// grow when TFLite adds types or options, so a newer one may mean semantics we would get
/// wrong). Each operator's kernels (all element types) live in one file.
struct Registration {
    op: BuiltinOp,
    max_version: i32,
    prepare: PrepareFn,
}

const fn register(op: BuiltinOp, max_version: i32, prepare: PrepareFn) -> Registration {
    Registration {
        op,
        max_version,
        prepare,
    }
}

const REGISTRY: &[Registration] = &[
    register(BuiltinOp::QUANTIZE, 3, quantize::prepare),
    register(BuiltinOp::DEQUANTIZE, 6, dequantize::prepare),
    register(BuiltinOp::AVERAGE_POOL_2D, 3, average_pool_2d::prepare),
    register(BuiltinOp::ADD, 5, add::prepare),
    register(BuiltinOp::SUB, 5, sub::prepare),
    register(BuiltinOp::MUL, 7, mul::prepare),
    register(BuiltinOp::CONV_2D, 8, conv_2d::prepare),
    register(BuiltinOp::DEPTHWISE_CONV_2D, 7, depthwise_conv_2d::prepare),
    register(BuiltinOp::FULLY_CONNECTED, 13, fully_connected::prepare),
    register(BuiltinOp::MAX_POOL_2D, 3, max_pool_2d::prepare),
    register(BuiltinOp::RESHAPE, 1, reshape::prepare),
    register(BuiltinOp::SHAPE, 1, shape::prepare),
    // Data-movement operators.
    register(BuiltinOp::SQUEEZE, 2, squeeze::prepare),
    register(BuiltinOp::TRANSPOSE, 9, transpose::prepare),
    register(BuiltinOp::STRIDED_SLICE, 8, strided_slice::prepare),
    register(BuiltinOp::PACK, 5, pack::prepare),
    register(BuiltinOp::CONCATENATION, 7, concatenation::prepare),
    register(BuiltinOp::PAD, 6, pad::prepare),
    register(BuiltinOp::PADV2, 6, padv2::prepare),
    register(BuiltinOp::DEPTH_TO_SPACE, 2, depth_to_space::prepare),
    register(BuiltinOp::DENSIFY, 1, densify::prepare),
    // Activations, SOFTMAX, MEAN and RESIZE_BILINEAR.
    register(BuiltinOp::HARD_SWISH, 1, hard_swish::prepare),
    register(BuiltinOp::LEAKY_RELU, 2, leaky_relu::prepare),
    register(BuiltinOp::LOGISTIC, 3, logistic::prepare),
    register(BuiltinOp::MEAN, 3, mean::prepare),
    register(BuiltinOp::PRELU, 1, prelu::prepare),
    register(BuiltinOp::RELU, 3, relu::prepare_relu),
    register(BuiltinOp::RELU6, 3, relu::prepare_relu6),
    register(BuiltinOp::RELU_N1_TO_1, 1, relu::prepare_relu_n1_to_1),
    register(BuiltinOp::RESIZE_BILINEAR, 4, resize_bilinear::prepare),
    register(BuiltinOp::SOFTMAX, 4, softmax::prepare),
    register(BuiltinOp::TANH, 3, tanh::prepare),
];

/// Prepares operator `op_index` for execution, or names why it cannot run. `values` holds
/// the bytes of every tensor whose value is known before running (small integer constants
/// and the outputs of operators such as SHAPE).
pub fn prepare(
    op_index: usize,
    code: &OperatorCode,
    op: &Operator,
    tensors: &[TensorInfo],
    values: &[Option<Vec<u8>>],
    constants: &[Option<&[u8]>],
) -> Result<Prepared, RuntimeError> {
    let prep = Prep::new(
        op_index,
        operator_name(code),
        code.version,
        op,
        tensors,
        values,
        constants,
    );
    if code.builtin == BuiltinOp::CUSTOM {
        return Err(prep.unsupported("custom operators are not supported"));
    }
    let Some(registration) = REGISTRY.iter().find(|r| r.op == code.builtin) else {
        return Err(prep.unsupported("kiln-runtime does not implement this operator"));
    };
    // Sparse constants are only meaningful to operators that decode them: DENSIFY, and
    // FULLY_CONNECTED's weights (input 1).
    let reads_sparse = |slot: usize| match code.builtin {
        BuiltinOp::DENSIFY => true,
        BuiltinOp::FULLY_CONNECTED => slot == 1,
        _ => false,
    };
    if let Some(sparse) = (0..op.inputs.len())
        .filter(|&slot| !reads_sparse(slot))
        .filter_map(|slot| prep.optional_input(slot))
        .find(|t| t.sparse)
    {
        return Err(prep.unsupported(&format!(
            "input '{}' is stored sparse; only DENSIFY and FULLY_CONNECTED weights may be",
            sparse.name
        )));
    }
    if code.version < 1 || code.version > registration.max_version {
        return Err(prep.unsupported(&format!(
            "kiln-runtime implements versions 1 to {}",
            registration.max_version
        )));
    }
    let kernel = (registration.prepare)(&prep)?;
    Ok(Prepared {
        kernel,
        outputs: prep.into_outputs(),
    })
}

/// The microkernels this CPU runs, as the report and `pipeline bench` state them: the float
/// GEMM's and the int8 GEMM's instruction sets.
pub fn kernel_sets() -> String {
    use common::igemm::Isa;
    use common::sgemm::FloatIsa;
    let float = match FloatIsa::detect() {
        FloatIsa::Avx512 => "AVX-512F",
        FloatIsa::Avx2Fma => "AVX2+FMA",
        FloatIsa::Portable => "portable",
    };
    let int8 = match Isa::detect() {
        Isa::Vnni => "AVX-512 VNNI",
        Isa::Avx2 => "AVX2",
        Isa::Portable => "portable",
    };
    format!("float32 GEMM {float}, int8 GEMM {int8}")
}

pub fn operator_name(code: &OperatorCode) -> String {
    match (&code.custom_code, code.builtin) {
        (Some(custom), BuiltinOp::CUSTOM) => format!("CUSTOM '{custom}'"),
        (_, builtin) => builtin.name(),
    }
}
