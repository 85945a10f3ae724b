//! `kTensorArenaSize` for TFLite Micro: kiln-runtime's arena plan for the activations, plus
//! what TFLM itself allocates from the same arena, plus a margin.
//!
//! TFLM's arena has a head (activations and kernels' scratch buffers, planned by a greedy
//! planner like kiln-runtime's: largest first, reusing memory between tensors that are not
//! alive together) and a tail of persistent allocations (`micro_allocator.cc`): a
//! `TfLiteEvalTensor` per tensor, a `NodeAndRegistration` per operator, each kernel's op data
//! (for quantized convolutions and fully connected layers, a multiplier and a shift per output
//! channel), `TfLiteTensor`s with quantization for the inputs and outputs, and the allocator's
//! own objects. While `AllocateTensors()` plans, the planner also borrows about 72 bytes per
//! tensor from the free space. The estimate takes 64-bit hosts' struct sizes (the largest:
//! 24-byte eval tensors, 64-byte node records), kiln-runtime's 64-byte tensor alignment (TFLM
//! needs 16), CMSIS-NN's im2col scratch for convolutions, and adds 10%; it is an upper bound
//! to start from — `MicroInterpreter::arena_used_bytes()` on the target gives the exact need.

use kiln_tflite::{BuiltinOp, Model};
use serde::Serialize;

/// The parts of the estimate, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ArenaEstimate {
    /// kiln-runtime's arena plan: every activation, input and output tensor.
    pub activations: usize,
    /// The largest kernel scratch buffer (CMSIS-NN's int16 im2col of a convolution).
    pub scratch: usize,
    /// TFLM's persistent allocations and the planner's working memory.
    pub bookkeeping: usize,
    /// The sum with a 10% margin, rounded up to a multiple of 1 KiB.
    pub total: usize,
}

const EVAL_TENSOR: usize = 24;
const NODE_AND_REGISTRATION: usize = 64;
/// Builtin options plus a kernel's op data struct (without per-channel arrays).
const OPERATOR_DATA: usize = 192;
/// The greedy planner's per-buffer record and its allocation info, during planning.
const PLANNER_PER_TENSOR: usize = 72;
/// An input's or output's `TfLiteTensor` with its affine quantization.
const IO_TENSOR: usize = 64 + 24 + 16;
/// The allocator, the planner and the subgraph records.
const FIXED: usize = 1024;

/// The arena TFLM needs for `model`, given kiln-runtime's plan of `activation_bytes`.
pub fn estimate(model: &Model, activation_bytes: usize) -> ArenaEstimate {
    let mut scratch = 0usize;
    let mut bookkeeping = FIXED;
    for subgraph in &model.subgraphs {
        let shape = |t: i32| -> Vec<usize> {
            usize::try_from(t)
                .ok()
                .and_then(|t| subgraph.tensors.get(t))
                .map(|t| t.shape.iter().map(|&d| d.max(0) as usize).collect())
                .unwrap_or_default()
        };
        bookkeeping += subgraph.tensors.len() * (EVAL_TENSOR + PLANNER_PER_TENSOR);
        bookkeeping += (subgraph.inputs.len() + subgraph.outputs.len()) * IO_TENSOR;
        for op in &subgraph.operators {
            bookkeeping += NODE_AND_REGISTRATION + OPERATOR_DATA;
            let Some(code) = model.opcode_of(op) else {
                continue;
            };
            let per_channel = [
                BuiltinOp::CONV_2D,
                BuiltinOp::DEPTHWISE_CONV_2D,
                BuiltinOp::FULLY_CONNECTED,
            ]
            .contains(&code.builtin);
            if !per_channel {
                continue;
            }
            let output_channels = op
                .outputs
                .first()
                .map_or(0, |&t| shape(t).last().copied().unwrap_or(0));
            // int32 multiplier + int32 shift per output channel.
            bookkeeping += 8 * output_channels;
            // [out, kh, kw, in] filters (depthwise: [1, kh, kw, channels]); im2col of one
            // output position's window as int16, for two positions (CMSIS-NN's s8 kernels).
            let filter = op.inputs.get(1).map(|&t| shape(t)).unwrap_or_default();
            if let [_, kh, kw, depth] = filter[..]
                && code.builtin != BuiltinOp::FULLY_CONNECTED
            {
                scratch = scratch.max(2 * 2 * kh * kw * depth);
            }
        }
    }
    let sum = activation_bytes + scratch + bookkeeping;
    let total = (sum + sum / 10).div_ceil(1024) * 1024;
    ArenaEstimate {
        activations: activation_bytes,
        scratch,
        bookkeeping,
        total,
    }
}
