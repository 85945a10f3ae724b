//! The interpreter: loads a model, validates it, prepares kernels, plans the arena, and runs.

use std::time::Instant;

use kiln_tflite::{Model, SharedBytes, TensorType};

use crate::arena::{self, AlignedBytes, ArenaPlan, Lifetime};
use crate::error::RuntimeError;
use crate::kernels::common::parallel;
use crate::kernels::{self, In, Kernel, Out};
use crate::profile::OpProfile;
use crate::tensor::{TensorInfo, as_f32, is_aligned_for_words};
use crate::validate::{MAX_TENSOR_BYTES, extent, validate};

/// Where a tensor's bytes live.
enum Storage {
    /// Constant data borrowed from the model file.
    Borrowed(SharedBytes),
    /// Constant data copied because the file did not align it.
    Copied(AlignedBytes),
    /// A range of the arena.
    Arena { offset: usize, len: usize },
    /// Neither constant nor used by the graph.
    None,
}

struct Step {
    /// The operator's index in the subgraph (operators folded at prepare have no step).
    op_index: usize,
    kernel: Kernel,
    inputs: Vec<Option<usize>>,
    outputs: Vec<usize>,
    /// This operator and the max pooling after it as one kernel, which writes the pool's
    /// outputs: a plain invoke runs it and skips the pool; an observed one runs both, so that
    /// the intermediate value is there to see.
    fused: Option<FusedStep>,
    /// Skipped by a plain invoke: the step before computes this one's outputs (`fused`).
    folded_into_previous: bool,
}

struct FusedStep {
    kernel: Kernel,
    outputs: Vec<usize>,
}

/// Folds each max pooling into the operator before it where that operator's kernel can
/// compute both ([`kernels::OpKernel::fused_with_max_pool`]) and nothing else reads the
/// value between them.
fn fuse_max_pools(steps: &mut [Step], graph_outputs: &[usize], tensors: usize) {
    let mut readers = vec![0usize; tensors];
    for step in steps.iter() {
        for &t in step.inputs.iter().flatten() {
            readers[t] += 1;
        }
    }
    for i in 1..steps.len() {
        let (head, tail) = steps.split_at_mut(i);
        let (producer, pool) = (&mut head[i - 1], &mut tail[0]);
        let [value] = producer.outputs[..] else {
            continue;
        };
        // The fused kernel reads the producer's inputs while it writes the pool's outputs:
        // they must be distinct tensors (as one operator's inputs and outputs are).
        let aliased = pool
            .outputs
            .iter()
            .any(|t| producer.inputs.contains(&Some(*t)));
        if producer.folded_into_previous
            || aliased
            || pool.inputs.first() != Some(&Some(value))
            || readers[value] != 1
            || graph_outputs.contains(&value)
        {
            continue;
        }
        let Some(spec) = pool.kernel.tiling_max_pool() else {
            continue;
        };
        if let Some(kernel) = producer.kernel.fused_with_max_pool(&spec) {
            producer.fused = Some(FusedStep {
                kernel,
                outputs: pool.outputs.clone(),
            });
            pool.folded_into_previous = true;
        }
    }
}

/// Bytes an interpreter holds (see [`Interpreter::memory`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memory {
    /// Activations: every intermediate tensor, placed by the arena plan.
    pub arena: usize,
    /// Weights the kernels prepared from the model's constants.
    pub prepared_weights: usize,
    /// Constants copied out of the model's bytes (misaligned in the file).
    pub copied_constants: usize,
    /// The model's constant tensors at four bytes per element (the yardstick: a float32
    /// model's weights).
    pub float32_weights: usize,
}

impl Memory {
    /// The interpreter's peak beyond the model's bytes: arena + prepared weights + copies.
    pub fn peak(&self) -> usize {
        self.arena + self.prepared_weights + self.copied_constants
    }
}

pub struct Interpreter {
    model: Model,
    tensors: Vec<TensorInfo>,
    storage: Vec<Storage>,
    steps: Vec<Step>,
    inputs: Vec<usize>,
    outputs: Vec<usize>,
    plan: ArenaPlan,
    arena: AlignedBytes,
    /// Worker threads for the kernels that split their output; `None` runs on the caller's.
    pool: Option<rayon::ThreadPool>,
}

impl Interpreter {
    /// Reads, validates and prepares a `.tflite` file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, RuntimeError> {
        Self::new(Model::read_file(path)?)
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, RuntimeError> {
        Self::new(Model::from_bytes(bytes)?)
    }

    /// Loads from shared bytes (e.g. a memory map): constant weights stay in those bytes.
    pub fn from_shared(bytes: SharedBytes) -> Result<Self, RuntimeError> {
        Self::new(Model::from_bytes(bytes)?)
    }

    /// Whether constant tensor `t`'s data is borrowed from the model's bytes (not copied).
    pub fn constant_is_borrowed(&self, t: usize) -> bool {
        matches!(self.storage.get(t), Some(Storage::Borrowed(_)))
    }

    pub fn new(model: Model) -> Result<Self, RuntimeError> {
        validate(&model)?;
        let subgraph = &model.subgraphs[0];
        let tensors: Vec<TensorInfo> = subgraph
            .tensors
            .iter()
            .map(|t| TensorInfo {
                name: t.name.clone(),
                shape: t.shape.iter().map(|&d| d as usize).collect(),
                dtype: t.dtype,
                quantization: t.quantization.clone().filter(|q| q.is_affine()),
                sparse: t.sparsity.is_some(),
                sparsity: t.sparsity.clone(),
            })
            .collect();
        let index = |t: i32| usize::try_from(t).ok();
        let inputs: Vec<usize> = subgraph.inputs.iter().filter_map(|&t| index(t)).collect();
        let outputs: Vec<usize> = subgraph.outputs.iter().filter_map(|&t| index(t)).collect();
        let constants = subgraph
            .tensors
            .iter()
            .map(|tensor| {
                let buffer = &model.buffers[tensor.buffer as usize].data;
                if buffer.is_empty() {
                    Storage::None
                } else if is_aligned_for_words(buffer.as_slice()) {
                    Storage::Borrowed(buffer.clone())
                } else {
                    let mut copy = AlignedBytes::zeroed(buffer.len());
                    copy.as_mut_slice().copy_from_slice(buffer.as_slice());
                    Storage::Copied(copy)
                }
            })
            .collect();
        let mut interpreter = Self {
            model,
            tensors,
            storage: constants,
            steps: Vec::new(),
            inputs,
            outputs,
            plan: ArenaPlan::default(),
            arena: AlignedBytes::zeroed(0),
            pool: None,
        };
        interpreter.allocate()?;
        Ok(interpreter)
    }

    /// Gives input `i` a new shape (e.g. a dynamic dimension the converter stored as 1) and
    /// re-prepares the graph: every operator recomputes its output shapes, as in TFLite.
    pub fn resize_input(&mut self, i: usize, shape: &[usize]) -> Result<(), RuntimeError> {
        let t = *self.inputs.get(i).ok_or(RuntimeError::NoSuchTensor {
            kind: "input",
            index: i,
            count: self.inputs.len(),
        })?;
        let declared = &self.model.subgraphs[0].tensors[t];
        let signature = declared.shape_signature.as_ref().unwrap_or(&declared.shape);
        let fits = signature.len() == shape.len()
            && signature
                .iter()
                .zip(shape)
                .all(|(&s, &d)| s == -1 || s as usize == d);
        if !fits {
            return Err(RuntimeError::BadInput {
                index: i,
                name: self.tensors[t].name.clone(),
                reason: format!(
                    "cannot resize to {shape:?}: the model's shape signature is {signature:?} (-1 = resizable)"
                ),
            });
        }
        let previous = std::mem::replace(&mut self.tensors[t].shape, shape.to_vec());
        if let Err(error) = self.allocate() {
            // Leave the interpreter as it was (prepared for the previous shape), never half
            // re-planned: a later invoke must still be safe.
            self.tensors[t].shape = previous;
            self.allocate()?;
            return Err(error);
        }
        Ok(())
    }

    /// Prepares every operator in order (each computes its outputs' shapes from its inputs'),
    /// then plans the arena for the resulting sizes.
    fn allocate(&mut self) -> Result<(), RuntimeError> {
        let model = &self.model;
        let subgraph = &model.subgraphs[0];
        // Values known before running: small integer constants (shapes, axes, paddings), sparse
        // constants (DENSIFY expands them at prepare) and whatever operators such as SHAPE
        // compute at prepare time.
        let mut values: Vec<Option<Vec<u8>>> = subgraph
            .tensors
            .iter()
            .map(|t| {
                let data = model.tensor_data(t);
                let small_int = matches!(t.dtype, TensorType::Int32 | TensorType::Int64)
                    && data.len() <= 1 << 16;
                ((small_int || t.sparsity.is_some()) && !data.is_empty()).then(|| data.to_vec())
            })
            .collect();
        let index = |t: i32| usize::try_from(t).ok();
        let mut steps = Vec::with_capacity(subgraph.operators.len());
        let mut folded_outputs = Vec::new();
        // The file's constants, which kernels may read while preparing (e.g. to dequantize
        // float16 weights once instead of on every invoke).
        let constants: Vec<Option<&[u8]>> = subgraph
            .tensors
            .iter()
            .map(|t| Some(model.tensor_data(t)).filter(|d| !d.is_empty()))
            .collect();
        for (op_index, op) in subgraph.operators.iter().enumerate() {
            let code = model
                .opcode_of(op)
                .ok_or_else(|| RuntimeError::InvalidModel("bad opcode".into()))?;
            let prepared =
                kernels::prepare(op_index, code, op, &self.tensors, &values, &constants)?;
            // An operator whose every output is known at prepare (SHAPE and the integer ops
            // that follow it, DENSIFY) is folded: its outputs become constants and it never
            // runs — as TFLite evaluates such operators only once.
            let folded =
                !prepared.outputs.is_empty() && prepared.outputs.iter().all(|o| o.value.is_some());
            for (&t, out) in op.outputs.iter().zip(prepared.outputs) {
                let Some(t) = index(t) else { continue };
                if let Some(shape) = out.shape {
                    self.tensors[t].shape = shape;
                    // Before a later operator sizes loops or buffers by it.
                    check_size(t, &self.tensors[t])?;
                }
                if let Some(value) = out.value {
                    if folded {
                        folded_outputs.push((t, aligned_copy(&value)?));
                    }
                    values[t] = Some(value);
                }
            }
            if !folded {
                steps.push(Step {
                    op_index,
                    kernel: prepared.kernel,
                    inputs: op.inputs.iter().map(|&t| index(t)).collect(),
                    outputs: op.outputs.iter().filter_map(|&t| index(t)).collect(),
                    fused: None,
                    folded_into_previous: false,
                });
            }
        }
        fuse_max_pools(&mut steps, &self.outputs, self.tensors.len());
        // Tensors without file data get their storage anew: arena ranges and folded values
        // both depend on the shapes just prepared.
        for (t, storage) in self.storage.iter_mut().enumerate() {
            if model.tensor_data(&subgraph.tensors[t]).is_empty() {
                *storage = Storage::None;
            }
        }
        for (t, bytes) in folded_outputs {
            // A folded value (a DENSIFY'd weight) that every kernel reading it has copied
            // into its own layout is freed: an empty constant.
            let read = self.outputs.contains(&t)
                || steps.iter().any(|step| {
                    step.inputs
                        .iter()
                        .enumerate()
                        .any(|(i, &input)| input == Some(t) && step.kernel.reads_input(i))
                });
            self.storage[t] = if read {
                Storage::Copied(bytes)
            } else {
                Storage::Copied(AlignedBytes::zeroed(0))
            };
        }
        let lifetimes = lifetimes(
            &self.tensors,
            &self.storage,
            &steps,
            &self.inputs,
            &self.outputs,
        );
        // Every size is bounded before the plan adds them up (graph inputs included, which
        // `resize_input` may have grown): unchecked, a few huge tensors overflow the offsets.
        for life in &lifetimes {
            check_size(life.tensor, &self.tensors[life.tensor])?;
        }
        let plan = arena::plan(self.tensors.len(), &lifetimes);
        let arena = AlignedBytes::try_zeroed(plan.size).map_err(|_| {
            RuntimeError::InvalidModel(format!(
                "cannot allocate the {}-byte arena the model needs",
                plan.size
            ))
        })?;
        for life in &lifetimes {
            if let Some(offset) = plan.offsets[life.tensor] {
                self.storage[life.tensor] = Storage::Arena {
                    offset,
                    len: life.bytes,
                };
            }
        }
        self.arena = arena;
        self.plan = plan;
        self.steps = steps;
        Ok(())
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Bytes of the one arena holding every intermediate tensor.
    pub fn arena_bytes(&self) -> usize {
        self.plan.size
    }

    /// What the interpreter holds besides the model's bytes: the arena, the weights kernels
    /// prepared (packed or densified), and constants copied out of the file for alignment.
    pub fn memory(&self) -> Memory {
        let copied_constants = self
            .storage
            .iter()
            .map(|s| match s {
                Storage::Copied(bytes) => bytes.len(),
                _ => 0,
            })
            .sum();
        let subgraph = &self.model.subgraphs[0];
        // Every constant tensor's elements at four bytes: the model's weights as float32.
        let float32_weights = subgraph
            .tensors
            .iter()
            .zip(&self.tensors)
            .filter(|(t, _)| {
                self.model
                    .buffers
                    .get(t.buffer as usize)
                    .is_some_and(|b| !b.data.is_empty())
            })
            .map(|(_, info)| info.shape.iter().product::<usize>() * 4)
            .sum();
        Memory {
            arena: self.plan.size,
            prepared_weights: self.steps.iter().map(|s| s.kernel.prepared_bytes()).sum(),
            copied_constants,
            float32_weights,
        }
    }

    pub fn input_count(&self) -> usize {
        self.inputs.len()
    }

    pub fn output_count(&self) -> usize {
        self.outputs.len()
    }

    pub fn input_info(&self, i: usize) -> Result<&TensorInfo, RuntimeError> {
        let t = self.inputs.get(i).ok_or(RuntimeError::NoSuchTensor {
            kind: "input",
            index: i,
            count: self.inputs.len(),
        })?;
        Ok(&self.tensors[*t])
    }

    pub fn output_info(&self, i: usize) -> Result<&TensorInfo, RuntimeError> {
        let t = self.outputs.get(i).ok_or(RuntimeError::NoSuchTensor {
            kind: "output",
            index: i,
            count: self.outputs.len(),
        })?;
        Ok(&self.tensors[*t])
    }

    /// Copies raw little-endian bytes into input `i`; the length must match exactly.
    pub fn set_input(&mut self, i: usize, bytes: &[u8]) -> Result<(), RuntimeError> {
        let info = self.input_info(i)?;
        if bytes.len() != info.byte_size() {
            return Err(RuntimeError::BadInput {
                index: i,
                name: info.name.clone(),
                reason: format!(
                    "got {} bytes; the input is {} {:?} ({} bytes)",
                    bytes.len(),
                    info.dtype,
                    info.shape,
                    info.byte_size()
                ),
            });
        }
        let t = self.inputs[i];
        match self.storage[t] {
            Storage::Arena { offset, len } => {
                self.arena.as_mut_slice()[offset..offset + len].copy_from_slice(bytes)
            }
            _ => {
                return Err(RuntimeError::InvalidModel(format!(
                    "input tensor {t} has no arena storage"
                )));
            }
        }
        Ok(())
    }

    pub fn set_input_f32(&mut self, i: usize, values: &[f32]) -> Result<(), RuntimeError> {
        let info = self.input_info(i)?;
        if info.dtype != TensorType::Float32 {
            return Err(RuntimeError::BadInput {
                index: i,
                name: info.name.clone(),
                reason: format!("the input is {}, not FLOAT32", info.dtype),
            });
        }
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.set_input(i, &bytes)
    }

    /// The bytes of output `i` after the last invoke.
    pub fn output(&self, i: usize) -> Result<&[u8], RuntimeError> {
        self.output_info(i)?;
        Ok(self.tensor_bytes(self.outputs[i]))
    }

    pub fn output_f32(&self, i: usize) -> Result<&[f32], RuntimeError> {
        let info = self.output_info(i)?;
        if info.dtype != TensorType::Float32 {
            return Err(RuntimeError::NoSuchTensor {
                kind: "FLOAT32 output",
                index: i,
                count: 0,
            });
        }
        Ok(as_f32(self.output(i)?))
    }

    fn tensor_bytes(&self, t: usize) -> &[u8] {
        match &self.storage[t] {
            Storage::Borrowed(bytes) => bytes.as_slice(),
            Storage::Copied(bytes) => bytes.as_slice(),
            Storage::Arena { offset, len } => &self.arena.as_slice()[*offset..*offset + *len],
            Storage::None => &[],
        }
    }

    /// Runs the kernels on `threads` threads (1, the default, runs on the caller's; 0 takes
    /// every core). The convolutions split their output pixels across them; every value is
    /// computed as on one thread, so the outputs are the same bits.
    pub fn set_threads(&mut self, threads: usize) -> Result<(), RuntimeError> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            threads
        };
        // The invoking thread works too: the pool holds the others.
        self.pool = if threads > 1 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads - 1)
                .thread_name(|i| format!("kiln-runtime-{i}"))
                .build()
                .map_err(|e| RuntimeError::Threads {
                    threads,
                    reason: e.to_string(),
                })?;
            Some(pool)
        } else {
            None
        };
        Ok(())
    }

    /// Multiply-accumulates per invoke of the convolutions and fully connected layers (the
    /// operators whose work is not bounded by their tensors' sizes): for deciding, before
    /// running an untrusted model, whether it is worth the time.
    pub fn multiply_accumulates(&self) -> usize {
        self.steps.iter().fold(0usize, |sum, s| {
            sum.saturating_add(s.kernel.multiply_accumulates())
        })
    }

    /// Operators a plain invoke runs folded into the one before them (max poolings).
    pub fn fused_operators(&self) -> usize {
        self.steps.iter().filter(|s| s.folded_into_previous).count()
    }

    /// The fused kernels' `Debug` forms (which path each took), for tests.
    #[cfg(test)]
    pub(crate) fn fused_kernels(&self) -> Vec<String> {
        self.steps
            .iter()
            .filter_map(|s| s.fused.as_ref().map(|f| format!("{:?}", f.kernel)))
            .collect()
    }

    /// The threads an invoke runs on.
    pub fn threads(&self) -> usize {
        self.pool
            .as_ref()
            .map_or(1, |pool| pool.current_num_threads() + 1)
    }

    /// Runs every operator once on the current inputs.
    pub fn invoke(&mut self) -> Result<(), RuntimeError> {
        // An empty observer: after inlining, the observation loop compiles away, so the
        // plain invoke pays nothing for the hook below.
        self.run::<_, _, true>(|_, _, _| {}, &mut NoClock)
    }

    /// Runs like [`invoke`](Self::invoke) and shows every intermediate value to `observe`:
    /// first each graph input, then, after each operator, each of its outputs, as
    /// `observe(tensor_index, info, bytes)` (tensor indices of the model's first subgraph,
    /// bytes little-endian in the tensor's type). Intermediate tensors share the arena, so a
    /// value is only valid during its call; this is how calibration (recording each tensor's
    /// range, as TFLite's calibrator does) and per-layer comparisons see them. Constants and
    /// the outputs of operators folded at prepare are not reported.
    pub fn invoke_with<F>(&mut self, observe: F) -> Result<(), RuntimeError>
    where
        F: FnMut(usize, &TensorInfo, &[u8]),
    {
        // Unfused: every operator's output is computed, to be seen.
        self.run::<_, _, false>(observe, &mut NoClock)
    }

    /// Runs the model once, adding each operator's time to `profile` (as LiteRT's
    /// `benchmark_model --enable_op_profiling` does): where a model's latency goes.
    pub fn invoke_profiled(&mut self, profile: &mut OpProfile) -> Result<(), RuntimeError> {
        profile.start_invoke(self.steps.iter().map(|s| s.op_index));
        let mut clock = ProfileClock {
            started: Instant::now(),
            profile,
        };
        // As a plain invoke runs: a pooling folded into the operator before it shows no time.
        self.run::<_, _, true>(|_, _, _| {}, &mut clock)
    }

    /// `(operator index, operator name, first output tensor's name)` of every operator that
    /// runs on invoke, in order: what [`OpProfile`]'s times refer to.
    pub fn operators(&self) -> Vec<(usize, String, String)> {
        let subgraph = &self.model.subgraphs[0];
        self.steps
            .iter()
            .map(|step| {
                let op = &subgraph.operators[step.op_index];
                let name = self
                    .model
                    .opcode_of(op)
                    .map_or_else(|| "?".to_owned(), kernels::operator_name);
                let output = step
                    .outputs
                    .first()
                    .map_or_else(String::new, |&t| self.tensors[t].name.clone());
                (step.op_index, name, output)
            })
            .collect()
    }

    #[inline(always)]
    fn run<F, C, const FUSED: bool>(
        &mut self,
        observe: F,
        clock: &mut C,
    ) -> Result<(), RuntimeError>
    where
        F: FnMut(usize, &TensorInfo, &[u8]),
        C: StepClock,
    {
        let pool = self.pool.take();
        let result = parallel::with_pool(pool.as_ref(), || {
            self.run_steps::<F, C, FUSED>(observe, clock)
        });
        self.pool = pool;
        result
    }

    /// `FUSED`: run fused steps' kernels (and skip the operators folded into them).
    #[inline(always)]
    fn run_steps<F, C, const FUSED: bool>(
        &mut self,
        mut observe: F,
        clock: &mut C,
    ) -> Result<(), RuntimeError>
    where
        F: FnMut(usize, &TensorInfo, &[u8]),
        C: StepClock,
    {
        for &t in &self.inputs {
            observe(t, &self.tensors[t], self.tensor_bytes(t));
        }
        let arena_ptr = self.arena.as_mut_slice().as_mut_ptr();
        let arena_len = self.arena.len();
        // Reused across operators: no allocation per operator per invoke.
        let mut inputs: Vec<Option<In<'_>>> = Vec::with_capacity(8);
        let mut outputs: Vec<Out<'_>> = Vec::with_capacity(4);
        for (step_index, step) in self.steps.iter().enumerate() {
            if FUSED && step.folded_into_previous {
                continue;
            }
            let (kernel, step_outputs) = match &step.fused {
                Some(fused) if FUSED => (&fused.kernel, &fused.outputs),
                _ => (&step.kernel, &step.outputs),
            };
            inputs.clear();
            outputs.clear();
            inputs.extend(step.inputs.iter().map(|t| {
                t.map(|t| In {
                    data: match &self.storage[t] {
                        Storage::Borrowed(bytes) => bytes.as_slice(),
                        Storage::Copied(bytes) => bytes.as_slice(),
                        // SAFETY: in bounds (planned within the arena); the plan keeps tensors
                        // live at the same step disjoint, and an operator's outputs are never its
                        // inputs (validated), so no mutable slice below aliases this one.
                        Storage::Arena { offset, len } => unsafe {
                            std::slice::from_raw_parts(arena_ptr.add(*offset).cast_const(), *len)
                        },
                        Storage::None => &[],
                    },
                })
            }));
            for &t in step_outputs {
                let Storage::Arena { offset, len } = self.storage[t] else {
                    return Err(RuntimeError::InvalidModel(format!(
                        "output tensor {t} has no arena storage"
                    )));
                };
                assert!(offset + len <= arena_len, "arena plan out of bounds");
                // SAFETY: see above; distinct outputs of one step are distinct live tensors.
                let data = unsafe { std::slice::from_raw_parts_mut(arena_ptr.add(offset), len) };
                outputs.push(Out { data });
            }
            clock.begin();
            // An operator whose every output is empty has nothing to compute; skipping it
            // keeps a zero-sized dimension from leaving the others' loops to spin (fuzzer
            // finding: a batch of 2^28 empty images took seconds in a depthwise layer).
            if outputs.iter().any(|o| !o.data.is_empty()) {
                kernel.eval(&inputs, &mut outputs);
            }
            clock.end(step_index);
            for (&t, out) in step_outputs.iter().zip(&outputs) {
                observe(t, &self.tensors[t], out.data);
            }
        }
        Ok(())
    }
}

/// Times the kernels of one invoke; the plain invoke's clock does nothing and compiles away.
trait StepClock {
    fn begin(&mut self);
    fn end(&mut self, step: usize);
}

struct NoClock;

impl StepClock for NoClock {
    #[inline(always)]
    fn begin(&mut self) {}

    #[inline(always)]
    fn end(&mut self, _step: usize) {}
}

struct ProfileClock<'a> {
    started: Instant,
    profile: &'a mut OpProfile,
}

impl StepClock for ProfileClock<'_> {
    fn begin(&mut self) {
        self.started = Instant::now();
    }

    fn end(&mut self, step: usize) {
        self.profile.add(step, self.started.elapsed());
    }
}

fn aligned_copy(bytes: &[u8]) -> Result<AlignedBytes, RuntimeError> {
    let mut copy = AlignedBytes::try_zeroed(bytes.len()).map_err(|_| {
        RuntimeError::InvalidModel(format!(
            "cannot allocate {} bytes for a folded tensor",
            bytes.len()
        ))
    })?;
    copy.as_mut_slice().copy_from_slice(bytes);
    Ok(copy)
}

/// Rejects a tensor whose extent (its size, zero dimensions counted as one, saturating)
/// exceeds `MAX_TENSOR_BYTES`, as `validate` does for the file's shapes: kernels and the arena
/// plan only ever see shapes whose products cannot overflow.
fn check_size(t: usize, info: &TensorInfo) -> Result<(), RuntimeError> {
    let element_size = info.dtype.element_size().unwrap_or(1);
    if extent(info.shape.iter().copied(), element_size) > MAX_TENSOR_BYTES {
        return Err(RuntimeError::InvalidModel(format!(
            "tensor {t} '{}' ({} {:?}) exceeds {MAX_TENSOR_BYTES} bytes",
            info.name, info.dtype, info.shape
        )));
    }
    Ok(())
}

/// The steps during which each non-constant tensor must keep its value. Step 0 is the first
/// operator; graph inputs are live from the start, graph outputs to the end.
fn lifetimes(
    tensors: &[TensorInfo],
    storage: &[Storage],
    steps: &[Step],
    inputs: &[usize],
    outputs: &[usize],
) -> Vec<Lifetime> {
    let end = steps.len();
    let mut span: Vec<Option<(usize, usize)>> = vec![None; tensors.len()];
    let mut touch = |t: usize, step: usize| {
        if matches!(storage[t], Storage::None) {
            let (first, last) = span[t].get_or_insert((step, step));
            *first = (*first).min(step);
            *last = (*last).max(step);
        }
    };
    // Inputs stay intact for the whole invoke, as TFLite preserves them: invoking again
    // without setting them anew gives the same outputs.
    for &t in inputs {
        touch(t, 0);
        touch(t, end);
    }
    for (i, step) in steps.iter().enumerate() {
        for &t in step.inputs.iter().flatten() {
            touch(t, i);
        }
        for &t in &step.outputs {
            touch(t, i);
        }
        // A fused step writes the next step's outputs already.
        for &t in step.fused.iter().flat_map(|f| &f.outputs) {
            touch(t, i);
        }
    }
    for &t in outputs {
        touch(t, end);
    }
    span.iter()
        .enumerate()
        .filter_map(|(t, s)| {
            s.map(|(first_step, last_step)| Lifetime {
                tensor: t,
                bytes: tensors[t].byte_size(),
                first_step,
                last_step,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use kiln_tflite::{BuiltinOp, BuiltinOptions, Operator, Subgraph, Tensor};

    use super::*;
    use crate::tensor::as_f32;

    fn float_tensor(name: &str) -> Tensor {
        Tensor::new(name, &[1, 4], TensorType::Float32, 0)
    }

    /// x → RELU → h → RELU6 → y.
    fn two_relus() -> Model {
        let mut model = Model::new("observer test");
        let relu = model.intern_opcode(BuiltinOp::RELU, 1);
        let relu6 = model.intern_opcode(BuiltinOp::RELU6, 1);
        let op = |opcode_index, input, output| Operator {
            opcode_index,
            inputs: vec![input],
            outputs: vec![output],
            options: BuiltinOptions::None,
            custom_options: None,
            intermediates: Vec::new(),
        };
        model.subgraphs.push(Subgraph {
            name: None,
            tensors: vec![float_tensor("x"), float_tensor("h"), float_tensor("y")],
            inputs: vec![0],
            outputs: vec![2],
            operators: vec![op(relu, 0, 1), op(relu6, 1, 2)],
        });
        model
    }

    #[test]
    fn invoke_with_shows_the_inputs_then_each_operator_output() {
        let mut interpreter = Interpreter::new(two_relus()).unwrap();
        interpreter
            .set_input_f32(0, &[-1.0, 0.5, 7.0, 2.0])
            .unwrap();
        let mut seen = Vec::new();
        interpreter
            .invoke_with(|t, info, bytes| {
                seen.push((t, info.name.clone(), as_f32(bytes).to_vec()));
            })
            .unwrap();
        assert_eq!(
            seen,
            vec![
                (0, "x".to_owned(), vec![-1.0, 0.5, 7.0, 2.0]),
                (1, "h".to_owned(), vec![0.0, 0.5, 7.0, 2.0]),
                (2, "y".to_owned(), vec![0.0, 0.5, 6.0, 2.0]),
            ]
        );
        // The plain invoke computes the same result.
        interpreter.invoke().unwrap();
        assert_eq!(interpreter.output_f32(0).unwrap(), &[0.0, 0.5, 6.0, 2.0]);
    }
}

#[cfg(test)]
mod size_limits {
    use kiln_tflite::{BuiltinOp, BuiltinOptions, Operator, Subgraph, Tensor};

    use super::*;

    /// A float input of `shape` (batch resizable) feeding `outputs` RELUs, each a graph output.
    fn relus(shape: &[i32], outputs: usize) -> Model {
        let mut model = Model::new("relus");
        let relu = model.intern_opcode(BuiltinOp::RELU, 1);
        let tensor = |name: String| Tensor {
            name,
            shape: shape.to_vec(),
            shape_signature: Some([&[-1], &shape[1..]].concat()),
            dtype: TensorType::Float32,
            buffer: 0,
            quantization: None,
            sparsity: None,
            is_variable: false,
        };
        let tensors = (0..=outputs).map(|i| tensor(format!("t{i}"))).collect();
        let operators = (1..=outputs as i32)
            .map(|o| Operator {
                opcode_index: relu,
                inputs: vec![0],
                outputs: vec![o],
                options: BuiltinOptions::None,
                custom_options: None,
                intermediates: Vec::new(),
            })
            .collect();
        model.subgraphs.push(Subgraph {
            name: None,
            tensors,
            inputs: vec![0],
            outputs: (1..=outputs as i32).collect(),
            operators,
        });
        model
    }

    /// Fuzzer finding: an input of shape [1, 1717986919, 107374182, 4] (2.9e18 bytes, which
    /// still fits a usize) feeding several live outputs overflowed the arena plan's offsets
    /// before the size limit was checked.
    #[test]
    fn tensors_over_the_size_limit_are_errors_not_overflows() {
        let model = relus(&[1, 1_717_986_919, 107_374_182, 4], 7);
        let err = Interpreter::new(model).err().expect("rejected");
        assert!(err.to_string().contains("too large"), "{err}");
        assert!(Interpreter::new(relus(&[1, 1 << 29], 1)).is_ok());
        assert!(Interpreter::new(relus(&[1, 1 << 30], 1)).is_err());
        // Empty, but its other dimensions multiply past the limit (and past usize).
        let err = Interpreter::new(relus(&[0, i32::MAX, i32::MAX, i32::MAX], 1))
            .err()
            .expect("rejected");
        assert!(err.to_string().contains("too large"), "{err}");
        assert!(Interpreter::new(relus(&[0, 4], 1)).is_ok());
    }

    /// Found with the RESHAPE overflow: an operator may compute an empty shape whose other
    /// dimensions multiply past usize, which later kernels would multiply out.
    #[test]
    fn computed_empty_shapes_are_bounded_too() {
        let info = |shape: &[usize]| TensorInfo {
            name: "t".into(),
            shape: shape.to_vec(),
            dtype: TensorType::Float32,
            quantization: None,
            sparse: false,
            sparsity: None,
        };
        assert!(check_size(0, &info(&[0, 1 << 30, 1 << 30, 1 << 30])).is_err());
        assert!(check_size(0, &info(&[0, 1 << 20])).is_ok());
        assert!(check_size(0, &info(&[1 << 29])).is_ok());
        assert!(check_size(0, &info(&[(1 << 29) + 1])).is_err());
    }

    #[test]
    fn resizing_an_input_past_the_size_limit_is_an_error() {
        let mut interpreter = Interpreter::new(relus(&[1, 4], 2)).expect("valid");
        for batch in [usize::MAX / 2, 1 << 30] {
            let err = interpreter.resize_input(0, &[batch, 4]).unwrap_err();
            assert!(err.to_string().contains("exceeds"), "{err}");
            // A failed resize leaves the interpreter prepared for its previous shape.
            assert_eq!(interpreter.input_info(0).unwrap().shape, vec![1, 4]);
            interpreter.set_input(0, &[0u8; 16]).unwrap();
            interpreter.invoke().unwrap();
        }
    }

    /// Fuzzer finding: a depthwise layer over a batch of empty images (a zero width) spun
    /// through every batch, row and tap of the nothing it had to compute. Operators whose
    /// outputs are all empty are skipped: here 131 072 images × 4096 rows × a 4096-tap filter,
    /// which the loops would have taken hours over, run at once.
    #[test]
    fn operators_with_empty_outputs_do_not_run() {
        use kiln_tflite::{Activation, DepthwiseConv2DOptions, Padding};
        let mut model = Model::new("empty depthwise");
        let taps = 4096;
        let filter = model.push_buffer(vec![0u8; taps * 4]);
        let depthwise = model.intern_opcode(BuiltinOp::DEPTHWISE_CONV_2D, 1);
        let tensor = |name: &str, shape: &[usize], buffer: u32| {
            Tensor::new(name, shape, TensorType::Float32, buffer)
        };
        model.subgraphs.push(Subgraph {
            name: None,
            tensors: vec![
                tensor("images", &[131_072, 4096, 0, 1], 0),
                tensor("filter", &[1, taps, 1, 1], filter),
                tensor("out", &[131_072, 4096, 0, 1], 0),
            ],
            inputs: vec![0],
            outputs: vec![2],
            operators: vec![Operator {
                opcode_index: depthwise,
                inputs: vec![0, 1],
                outputs: vec![2],
                options: BuiltinOptions::DepthwiseConv2D(DepthwiseConv2DOptions {
                    padding: Padding::Same,
                    stride_w: 1,
                    stride_h: 1,
                    depth_multiplier: 1,
                    activation: Activation::None,
                    dilation_w: 1,
                    dilation_h: 1,
                }),
                custom_options: None,
                intermediates: Vec::new(),
            }],
        });
        let mut interpreter = Interpreter::new(model).expect("an empty batch is valid");
        interpreter.invoke().expect("nothing to compute");
        assert_eq!(interpreter.output_info(0).unwrap().num_elements(), 0);
    }
}
