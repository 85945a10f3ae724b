//! Quantization-aware training (Jacob et al., "Quantization and Training of Neural Networks
//! for Efficient Integer-Arithmetic-Only Inference", CVPR 2018 — TF-MOT's `quantize_model`):
//! the model trains through fake-quant — values rounded to the int8 grid they will have in
//! the exported file and back to float — so it learns weights that survive the rounding.
//!
//! The grids are the int8 exporter's:
//! - weights (BatchNorm folded in, see kiln-nn's `conv_bn_hooked`): symmetric, [−127, 127],
//!   one scale max|w|/127 per output channel (convolutions, depthwise and dense layers);
//! - activations: asymmetric per tensor, [−128, 127], with the parameters kiln-export derives
//!   from a range ([`kiln_tflite::quant::asymmetric_int8_params`]); each range is an exponential
//!   moving average of the training batches' min and max, started at the first batch's.
//!
//! Gradients pass straight through the rounding (the straight-through estimator), and are
//! zero where an activation was clamped to its range, as TensorFlow's `FakeQuantWithMinMaxVars`.
//! In inference, each conv and dense layer computes exactly what its int8 kernel computes
//! (integer weights, bias and accumulators, the kernel's requantization: [`int8_layer`]),
//! so the fake-quant model's outputs are the int8 file's, step for step.
//! The observers live in the module (like BatchNorm's running statistics), so checkpoints
//! and `--resume` carry them.

use std::cell::RefCell;

use burn::module::RunningState;
use burn::prelude::*;
use kiln_nn::{
    BatchNormMode, Classifier, LayerCall, LowerError, QuantHooks, QuantizableClassifier,
};
use kiln_tflite::quant::{QParams, Range, asymmetric_int8_params};
use serde::{Deserialize, Serialize};

use crate::TrainError;

mod fake_quant;
mod int8_layer;

use fake_quant::{fake_quant_asymmetric, fake_quant_symmetric};
use int8_layer::int8_layer;

/// When fake-quant starts and what stops moving, in training steps of the QAT run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QatSettings {
    /// Weight of the old range in each moving-average update (TF-MOT uses 0.999 for long
    /// runs; short fine-tunes want ranges that follow the weights within a hundred steps).
    pub ema_decay: f64,
    /// Steps that only observe ranges before fake-quant switches on (TF's `quant_delay`).
    pub quant_delay: usize,
    /// From this step on, the activation ranges stay as they are.
    pub freeze_observers: Option<usize>,
    /// From this step on, BatchNorm normalises with its running statistics, which stop
    /// updating — the folded arithmetic of the exported model.
    pub freeze_batch_norm: Option<usize>,
}

impl Default for QatSettings {
    fn default() -> Self {
        Self {
            ema_decay: 0.99,
            quant_delay: 0,
            freeze_observers: None,
            freeze_batch_norm: None,
        }
    }
}

impl QatSettings {
    pub fn validate(&self) -> Result<(), TrainError> {
        if !(0.0..1.0).contains(&self.ema_decay) {
            return Err(TrainError::InvalidConfig(format!(
                "QAT ema_decay = {} must be in [0, 1)",
                self.ema_decay
            )));
        }
        Ok(())
    }
}

/// One activation's moving-average range: `[min, max, updates]`.
#[derive(Module, Debug)]
pub struct RangeObserver {
    state: RunningState<Tensor<1>>,
}

impl RangeObserver {
    fn new(device: &Device) -> Self {
        Self {
            state: RunningState::new(Tensor::zeros([3], device)),
        }
    }

    /// The range, once a batch was observed.
    fn read(&self) -> Option<Range> {
        let [min, max, updates] = self.read_raw()?;
        (updates > 0.0).then_some(Range { min, max })
    }

    /// Folds a batch's extremes into the average (the first batch sets it); returns it.
    fn update(&self, batch: Range, decay: f64, device: &Device) -> Range {
        let (min, max, updates) = match self.read_raw() {
            Some([min, max, n]) if n > 0.0 => {
                let blend = |old: f32, new: f32| {
                    (decay * f64::from(old) + (1.0 - decay) * f64::from(new)) as f32
                };
                (blend(min, batch.min), blend(max, batch.max), n + 1.0)
            }
            _ => (batch.min, batch.max, 1.0),
        };
        self.state
            .update(Tensor::from_floats([min, max, updates], device));
        Range { min, max }
    }

    fn read_raw(&self) -> Option<[f32; 3]> {
        let data = self.state.value_sync().into_data();
        data.as_slice::<f32>().ok()?.try_into().ok()
    }
}

/// A classifier in quantization-aware training: the model, an observer per quantized
/// activation (by the lowered graph's tensor names), and the step counter the schedule
/// reads. Train it like any [`Classifier`]; export `model` with [`Qat::ranges`].
#[derive(Module, Debug)]
pub struct Qat<M> {
    pub model: M,
    observers: Vec<RangeObserver>,
    steps: RunningState<Tensor<1>>,
    #[module(skip)]
    names: Vec<String>,
    #[module(skip)]
    settings: QatSettings,
}

impl<M: QuantizableClassifier> Qat<M> {
    /// Wraps `model` (parameters on any device). The activations to observe are found by one
    /// inference pass of an `input` ([height, width, channels]) image on `eval_device`.
    pub fn new(
        model: M,
        settings: QatSettings,
        input: [usize; 3],
        eval_device: &Device,
    ) -> Result<Self, TrainError> {
        settings.validate()?;
        let [h, w, c] = input;
        let recorder = NameRecorder::default();
        let _ = model
            .valid()
            .forward_with(Tensor::zeros([1, c, h, w], eval_device), &recorder);
        let names = recorder.names.into_inner();
        let device = model_device(&model).unwrap_or_else(|| eval_device.clone());
        Ok(Self {
            observers: names.iter().map(|_| RangeObserver::new(&device)).collect(),
            steps: RunningState::new(Tensor::zeros([1], &device)),
            model,
            names,
            settings,
        })
    }
}

impl<M> Qat<M> {
    /// The observed range of every quantized activation, by tensor name (those not observed
    /// yet are left out).
    pub fn ranges(&self) -> Vec<(String, Range)> {
        self.names
            .iter()
            .zip(&self.observers)
            .filter_map(|(name, o)| o.read().map(|r| (name.clone(), r)))
            .collect()
    }

    /// Training steps taken so far.
    pub fn steps(&self) -> usize {
        let data = self.steps.value_sync().into_data();
        data.as_slice::<f32>()
            .ok()
            .and_then(|v| v.first().copied())
            .map_or(0, |v| v as usize)
    }
}

impl<M: QuantizableClassifier + burn::module::ModuleDisplay> Classifier for Qat<M> {
    fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let device = images.device();
        let training = device.is_autodiff();
        let mut step = self.steps();
        if training {
            step += 1;
            self.steps
                .update(Tensor::from_floats([step as f32], &device));
        }
        // The step being taken, counted from 0.
        let current = step.saturating_sub(usize::from(training));
        let settings = &self.settings;
        let reached = |at: Option<usize>| at.is_some_and(|s| current >= s);
        let hooks = FakeQuant {
            qat: self,
            observe: training && !reached(settings.freeze_observers),
            quantize: current >= settings.quant_delay || !training,
            frozen_batch_norm: !training || reached(settings.freeze_batch_norm),
            exact: !training,
            device,
            last_input: RefCell::new(None),
        };
        self.model.forward_with(images, &hooks)
    }

    fn lower(&self, description: &str) -> Result<kiln_tflite::Model, LowerError> {
        self.model.lower(description)
    }
}

/// One activation of a [`Qat::trace`].
#[derive(Clone, Debug, PartialEq)]
pub struct TracedActivation {
    /// The tensor's name in the lowered graph.
    pub tensor: String,
    /// Burn's shape (NCHW for images).
    pub shape: Vec<usize>,
    /// The fake-quantized values.
    pub values: Vec<f32>,
}

impl<M: QuantizableClassifier> Qat<M> {
    /// Runs inference (on a plain device) and returns every quantized activation as the
    /// int8 model should hold it, for per-tensor comparison with the exported file.
    pub fn trace(&self, images: Tensor<4>) -> Vec<TracedActivation> {
        let hooks = Tracing {
            inner: FakeQuant {
                qat: self,
                observe: false,
                quantize: true,
                frozen_batch_norm: true,
                exact: true,
                device: images.device(),
                last_input: RefCell::new(None),
            },
            seen: RefCell::new(Vec::new()),
        };
        let _ = self.model.forward_with(images, &hooks);
        hooks.seen.into_inner()
    }
}

/// Fake-quant hooks that also keep each activation they return.
struct Tracing<'a, M> {
    inner: FakeQuant<'a, M>,
    seen: RefCell<Vec<TracedActivation>>,
}

impl<M> QuantHooks for Tracing<'_, M> {
    fn weight<const D: usize>(&self, weight: Tensor<D>, channel_axis: Option<usize>) -> Tensor<D> {
        self.inner.weight(weight, channel_axis)
    }

    fn layer<const D: usize, const O: usize>(
        &self,
        call: LayerCall<'_>,
        x: Tensor<O>,
        weight: (Tensor<D>, Option<usize>),
        bias: Option<Tensor<1>>,
        apply: impl Fn(Tensor<O>, Tensor<D>, Option<Tensor<1>>) -> Tensor<O>,
    ) -> Tensor<O> {
        self.inner.layer(call, x, weight, bias, apply)
    }

    fn activation<const D: usize>(&self, tensor: &str, x: Tensor<D>) -> Tensor<D> {
        let y = self.inner.activation(tensor, x);
        if let Ok(values) = y.clone().into_data().try_to_vec::<f32>() {
            self.seen.borrow_mut().push(TracedActivation {
                tensor: tensor.to_owned(),
                shape: y.dims().to_vec(),
                values,
            });
        }
        y
    }

    fn batch_norm(&self) -> BatchNormMode {
        self.inner.batch_norm()
    }
}

/// The hooks of one forward pass.
struct FakeQuant<'a, M> {
    qat: &'a Qat<M>,
    observe: bool,
    quantize: bool,
    frozen_batch_norm: bool,
    /// Inference: layers compute what the int8 kernels compute (see `layer`).
    exact: bool,
    device: Device,
    /// The int8 parameters of the activation quantized last: the next layer's input.
    last_input: RefCell<Option<QParams>>,
}

impl<M> FakeQuant<'_, M> {
    /// The int8 parameters of activation `tensor`, once observed.
    fn params(&self, tensor: &str) -> Option<QParams> {
        let index = self.qat.names.iter().position(|n| n == tensor)?;
        self.qat.observers[index].read().map(asymmetric_int8_params)
    }
}

impl<M> QuantHooks for FakeQuant<'_, M> {
    fn weight<const D: usize>(&self, weight: Tensor<D>, channel_axis: Option<usize>) -> Tensor<D> {
        if self.quantize {
            fake_quant_symmetric(weight, channel_axis)
        } else {
            weight
        }
    }

    fn activation<const D: usize>(&self, tensor: &str, x: Tensor<D>) -> Tensor<D> {
        let Some(index) = self.qat.names.iter().position(|n| n == tensor) else {
            return x;
        };
        let observer = &self.qat.observers[index];
        let observed = self
            .observe
            .then(|| extremes(&x))
            .flatten()
            .map(|batch| observer.update(batch, self.qat.settings.ema_decay, &self.device));
        match observed.or_else(|| observer.read()) {
            Some(range) if self.quantize => {
                let params = asymmetric_int8_params(range);
                *self.last_input.borrow_mut() = Some(params);
                fake_quant_asymmetric(x, params)
            }
            _ => x,
        }
    }

    /// In inference, the layer computes what its int8 kernel computes: see
    /// [`int8_layer`]. Training keeps the differentiable form, `apply` on the fake-quantized
    /// weight.
    fn layer<const D: usize, const O: usize>(
        &self,
        call: LayerCall<'_>,
        x: Tensor<O>,
        (weight, channel_axis): (Tensor<D>, Option<usize>),
        bias: Option<Tensor<1>>,
        apply: impl Fn(Tensor<O>, Tensor<D>, Option<Tensor<1>>) -> Tensor<O>,
    ) -> Tensor<O> {
        let input = *self.last_input.borrow();
        if let (true, true, Some(input), Some(output)) =
            (self.exact, self.quantize, input, self.params(call.output))
            && let Some(y) = int8_layer(
                call.kind,
                (x.clone(), input),
                (&weight, channel_axis),
                bias.clone(),
                output,
                &apply,
            )
        {
            return y;
        }
        let weight = self.weight(weight, channel_axis);
        apply(x, weight, bias)
    }

    fn batch_norm(&self) -> BatchNormMode {
        BatchNormMode::Folded {
            frozen: self.frozen_batch_norm,
        }
    }
}

/// The smallest and largest value of `x` (`None` for empty or non-finite tensors).
fn extremes<const D: usize>(x: &Tensor<D>) -> Option<Range> {
    let x = x.clone().detach();
    let both = Tensor::cat(vec![x.clone().min(), x.max()], 0).into_data();
    let v = both.as_slice::<f32>().ok()?;
    (v.len() == 2 && v[0].is_finite() && v[1].is_finite()).then(|| Range {
        min: v[0],
        max: v[1],
    })
}

/// Collects the activation names a forward pass hooks, in order.
#[derive(Default)]
struct NameRecorder {
    names: RefCell<Vec<String>>,
}

impl QuantHooks for NameRecorder {
    fn weight<const D: usize>(&self, weight: Tensor<D>, _: Option<usize>) -> Tensor<D> {
        weight
    }

    fn activation<const D: usize>(&self, tensor: &str, x: Tensor<D>) -> Tensor<D> {
        let mut names = self.names.borrow_mut();
        if !names.iter().any(|n| n == tensor) {
            names.push(tensor.to_owned());
        }
        x
    }

    fn batch_norm(&self) -> BatchNormMode {
        BatchNormMode::Folded { frozen: true }
    }
}

/// The device of `model`'s first float parameter.
fn model_device<M: Module>(model: &M) -> Option<Device> {
    struct First(Option<Device>);
    impl burn::module::ModuleVisitor for First {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            if self.0.is_none() {
                self.0 = Some(param.val().device());
            }
        }
    }
    let mut first = First(None);
    model.visit(&mut first);
    first.0
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;
    use kiln_nn::SmallCnnConfig;

    use super::*;
    use crate::test_support::{settings, two_tone};

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn quant_delay_keeps_the_first_steps_float() {
        let device = Device::flex().autodiff();
        let input = [10, 10, 1];
        let model = SmallCnnConfig::new(input, 3).init(&device).unwrap();
        let settings = QatSettings {
            quant_delay: 1,
            ..QatSettings::default()
        };
        let qat = Qat::new(model.clone(), settings, input, &Device::flex()).unwrap();
        let x = Tensor::<4>::random([2, 1, 10, 10], Distribution::Default, &device);
        let float = values(model.forward(x.clone()));
        assert_eq!(
            values(qat.forward(x.clone())),
            float,
            "step 0 observes only"
        );
        assert_ne!(values(qat.forward(x)), float, "step 1 is fake-quantized");
        assert_eq!(qat.steps(), 2);
    }

    /// Steps are counted across optimizer updates, and frozen observers stop moving.
    #[test]
    fn the_training_loop_counts_steps_and_freezing_holds_the_ranges() {
        let eval = Device::flex();
        let device = eval.clone().autodiff();
        let data = two_tone(32, 10);
        let model = SmallCnnConfig::new([10, 10, 1], 2).init(&device).unwrap();
        let qat_settings = QatSettings {
            freeze_observers: Some(4),
            ..QatSettings::default()
        };
        let qat = Qat::new(model, qat_settings, [10, 10, 1], &eval).unwrap();
        let once = crate::train(qat, &data, None, &settings(1), &device, &eval, |_| {})
            .unwrap()
            .model;
        assert_eq!(once.steps(), 4);
        let frozen = once.ranges();
        assert_eq!(frozen.len(), 5, "{frozen:?}");
        let twice = crate::train(once, &data, None, &settings(1), &device, &eval, |_| {})
            .unwrap()
            .model;
        assert_eq!(twice.steps(), 8);
        assert_eq!(twice.ranges(), frozen);
    }

    /// A checkpoint carries the observers and the step count: QAT interrupted after an
    /// epoch and resumed ends where an uninterrupted run does.
    #[test]
    fn resumed_qat_ends_where_an_uninterrupted_run_does() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let eval = Device::flex();
        let device = eval.clone().autodiff();
        let input = [10, 10, 1];
        let data = two_tone(16, 10);
        let build = || {
            device.seed(3);
            let model = SmallCnnConfig::new(input, 2).init(&device).unwrap();
            Qat::new(model, QatSettings::default(), input, &eval).unwrap()
        };
        let whole = crate::train(build(), &data, None, &settings(2), &device, &eval, |_| {})
            .unwrap()
            .model;

        let dir = std::env::temp_dir().join(format!("kiln-qat-resume-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let stop = Arc::new(AtomicBool::new(false));
        let interrupted = crate::TrainSettings {
            checkpoint_dir: Some(dir.clone()),
            interrupt: Some(Arc::clone(&stop)),
            ..settings(2)
        };
        let first = crate::train(build(), &data, None, &interrupted, &device, &eval, |_| {
            stop.store(true, Ordering::SeqCst)
        });
        assert!(matches!(
            first,
            Err(TrainError::Interrupted { last_epoch: 1, .. })
        ));
        let resumed = crate::TrainSettings {
            checkpoint_dir: Some(dir.clone()),
            resume: true,
            ..settings(2)
        };
        let rest = crate::train(build(), &data, None, &resumed, &device, &eval, |_| {})
            .unwrap()
            .model;
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(rest.steps(), whole.steps());
        assert_eq!(rest.ranges(), whole.ranges());
    }
}
