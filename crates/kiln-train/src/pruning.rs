//! Magnitude pruning (Zhu & Gupta, "To prune, or not to prune", 2017 — TF-MOT's
//! `prune_low_magnitude`): masks on the weights of convolutions and dense layers (never
//! biases or BatchNorm), recomputed from weight magnitudes on a sparsity schedule and applied
//! after every optimizer step, so pruned weights stay exactly zero through training and
//! export.
//!
//! Layers are Burn modules named by their path (`convs.0`, `fc1`, `blocks.3.depthwise.conv`);
//! a parameter is prunable when it is a layer's `weight` of rank ≥ 2.

use std::collections::HashMap;

use burn::module::{ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::TrainError;

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SparsitySchedule {
    #[default]
    /// TF-MOT's PolynomialDecay: s(t) = s_f + (s_i − s_f)·(1 − (t − t₀)/(t₁ − t₀))^power,
    /// updated every `frequency` steps between `begin_step` and `end_step`.
    Polynomial,
    /// `final_sparsity` from `begin_step` on, updated every `frequency` steps.
    Constant,
    /// Prune once, to `final_sparsity`, at `begin_step`.
    OneShot,
}

/// Which weights compete when ranking by magnitude.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PruningScope {
    #[default]
    /// Every layer reaches the target sparsity on its own.
    PerLayer,
    /// One threshold over all prunable weights (layers end up unevenly sparse).
    Global,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PruningSettings {
    pub schedule: SparsitySchedule,
    pub initial_sparsity: f64,
    pub final_sparsity: f64,
    /// Global steps (of this training run) where pruning starts and reaches its target.
    pub begin_step: usize,
    pub end_step: usize,
    pub power: f64,
    /// Steps between mask updates.
    pub frequency: usize,
    pub scope: PruningScope,
    /// Layer-name patterns (`*` matches any run of characters) to prune; empty = all.
    pub include: Vec<String>,
    /// Layer-name patterns never pruned (e.g. the classifier: `fc2`).
    pub exclude: Vec<String>,
}

impl PruningSettings {
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::InvalidConfig(m));
        for (name, s) in [
            ("initial_sparsity", self.initial_sparsity),
            ("final_sparsity", self.final_sparsity),
        ] {
            if !(0.0..1.0).contains(&s) {
                return bad(format!("pruning {name} = {s} must be in [0, 1)"));
            }
        }
        if self.frequency == 0 {
            return bad("pruning frequency must be at least 1 step".into());
        }
        if self.schedule == SparsitySchedule::Polynomial && self.end_step <= self.begin_step {
            return bad(format!(
                "pruning end_step {} must come after begin_step {}",
                self.end_step, self.begin_step
            ));
        }
        if !(self.power > 0.0 && self.power.is_finite()) {
            return bad(format!("pruning power = {} must be positive", self.power));
        }
        Ok(())
    }

    /// The target sparsity when `step` is a mask-update step, else `None`.
    pub fn update_at(&self, step: usize) -> Option<f64> {
        if step < self.begin_step {
            return None;
        }
        match self.schedule {
            SparsitySchedule::OneShot => (step == self.begin_step).then_some(self.final_sparsity),
            SparsitySchedule::Constant => ((step - self.begin_step).is_multiple_of(self.frequency))
                .then_some(self.final_sparsity),
            SparsitySchedule::Polynomial => {
                let on_grid = (step - self.begin_step).is_multiple_of(self.frequency);
                if step >= self.end_step {
                    // The last update lands exactly on the target.
                    return (step == self.end_step || on_grid).then_some(self.final_sparsity);
                }
                on_grid.then(|| self.sparsity_at(step))
            }
        }
    }

    /// The schedule's sparsity at `step` (for plots and reports).
    pub fn sparsity_at(&self, step: usize) -> f64 {
        if step < self.begin_step {
            return 0.0;
        }
        match self.schedule {
            SparsitySchedule::OneShot | SparsitySchedule::Constant => self.final_sparsity,
            SparsitySchedule::Polynomial => {
                let span = (self.end_step - self.begin_step) as f64;
                let progress = ((step - self.begin_step) as f64 / span).min(1.0);
                self.final_sparsity
                    + (self.initial_sparsity - self.final_sparsity)
                        * (1.0 - progress).powf(self.power)
            }
        }
    }

    /// Whether the include/exclude patterns select `layer` for pruning.
    pub fn selects_layer(&self, layer: &str) -> bool {
        self.selects(layer)
    }

    fn selects(&self, layer: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| glob(p, layer)))
            && !self.exclude.iter().any(|p| glob(p, layer))
    }
}

/// `*` matches any run of characters; everything else literally.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            text.starts_with(head)
                && (0..=text.len() - head.len()).any(|skip| {
                    text.is_char_boundary(head.len() + skip)
                        && glob(rest, &text[head.len() + skip..])
                })
        }
    }
}

/// One prunable weight as found in the model.
struct Weight {
    layer: String,
    id: ParamId,
    values: Vec<f32>,
    device: Device,
}

/// Collects the prunable weights with their layer names.
#[derive(Default)]
struct Collector {
    path: Vec<String>,
    weights: Vec<Weight>,
}

impl ModuleVisitor for Collector {
    // An enum of architectures enters its variant like a field; layer names leave it out
    // (`convs.0`, not `SmallCnn.convs.0`), so patterns do not depend on the wrapping.
    fn enter_module(&mut self, name: &str, container: &str) {
        if !container.starts_with("Enum:") {
            self.path.push(name.to_owned());
        }
    }

    fn exit_module(&mut self, _name: &str, container: &str) {
        if !container.starts_with("Enum:") {
            self.path.pop();
        }
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        // The module holding the parameter is entered under the parameter's field name.
        if D < 2 || self.path.last().map(String::as_str) != Some("weight") {
            return;
        }
        let layer = self.path[..self.path.len() - 1].join(".");
        let tensor = param.val();
        let device = tensor.device();
        let data = tensor.into_data();
        if let Ok(values) = data.as_slice::<f32>() {
            self.weights.push(Weight {
                layer,
                id: param.id,
                values: values.to_vec(),
                device,
            });
        }
    }
}

/// Per-layer result of pruning.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerSparsity {
    pub layer: String,
    pub weights: usize,
    pub zeros: usize,
    pub sparsity: f64,
}

/// The current masks (1 = keep, 0 = pruned), by parameter: flat tensors on the parameter's
/// device, built at each update so that applying them every step copies nothing.
#[derive(Default)]
pub struct Pruner {
    masks: HashMap<ParamId, Tensor<1>>,
}

fn mask_tensor(mask: Vec<f32>, device: &Device) -> Tensor<1> {
    let len = mask.len();
    Tensor::from_data(TensorData::new(mask, [len]), device)
}

impl Pruner {
    /// Recomputes the masks so each selected layer (or all together, for global scope) has
    /// `sparsity` of its weights — the smallest magnitudes — pruned.
    pub fn update<M: Module>(&mut self, model: &M, settings: &PruningSettings, sparsity: f64) {
        let mut collector = Collector::default();
        model.visit(&mut collector);
        let selected: Vec<Weight> = collector
            .weights
            .into_iter()
            .filter(|w| settings.selects(&w.layer))
            .collect();
        // Round up (with slack for float error): a layer never ends below its target.
        let prune_count = |n: usize| ((sparsity * n as f64 - 1e-9).ceil().max(0.0) as usize).min(n);
        match settings.scope {
            PruningScope::PerLayer => {
                for weight in &selected {
                    let order = magnitude_order(&weight.values);
                    let mut mask = vec![1.0f32; weight.values.len()];
                    for &i in &order[..prune_count(order.len())] {
                        mask[i] = 0.0;
                    }
                    self.masks
                        .insert(weight.id, mask_tensor(mask, &weight.device));
                }
            }
            PruningScope::Global => {
                let mut all: Vec<(f32, usize, usize)> = selected
                    .iter()
                    .enumerate()
                    .flat_map(|(w, weight)| {
                        weight
                            .values
                            .iter()
                            .enumerate()
                            .map(move |(i, v)| (v.abs(), w, i))
                    })
                    .collect();
                all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
                let mut masks: Vec<Vec<f32>> =
                    selected.iter().map(|w| vec![1.0; w.values.len()]).collect();
                for &(_, w, i) in &all[..prune_count(all.len())] {
                    masks[w][i] = 0.0;
                }
                for (weight, mask) in selected.iter().zip(masks) {
                    self.masks
                        .insert(weight.id, mask_tensor(mask, &weight.device));
                }
            }
        }
    }

    /// Masks that keep every prunable weight that is zero now at zero: fine-tuning a pruned
    /// model (QAT, say) then cannot lose its sparsity.
    pub fn keeping_zeros<M: Module>(model: &M) -> Self {
        let mut collector = Collector::default();
        model.visit(&mut collector);
        let masks = collector
            .weights
            .into_iter()
            .filter(|w| w.values.contains(&0.0))
            .map(|w| {
                let mask = w.values.iter().map(|&v| f32::from(v != 0.0)).collect();
                (w.id, mask_tensor(mask, &w.device))
            })
            .collect();
        Self { masks }
    }

    pub fn is_active(&self) -> bool {
        !self.masks.is_empty()
    }

    /// `model` with every masked weight multiplied by its mask (pruned entries become exact
    /// zeros; gradients keep flowing to the rest).
    pub fn apply<M: Module>(&self, model: M) -> M {
        if self.masks.is_empty() {
            return model;
        }
        model.map(&mut Masker { masks: &self.masks })
    }
}

struct Masker<'a> {
    masks: &'a HashMap<ParamId, Tensor<1>>,
}

impl ModuleMapper for Masker<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(mask) = self.masks.get(&param.id) else {
            return param;
        };
        param.map(|tensor| {
            let shape = tensor.shape();
            if shape.num_elements() != mask.shape().num_elements() {
                return tensor;
            }
            let mask: Tensor<D> = mask.clone().reshape(shape);
            let required = tensor.is_require_grad();
            (tensor * mask).detach().set_require_grad(required)
        })
    }
}

/// Indices sorted by |value| ascending (ties by index, so masks are deterministic).
fn magnitude_order(values: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].abs().total_cmp(&values[b].abs()).then(a.cmp(&b)));
    order
}

/// Zeros per prunable layer of `model` (all layers with a rank ≥ 2 weight).
pub fn layer_sparsity<M: Module>(model: &M) -> Vec<LayerSparsity> {
    let mut collector = Collector::default();
    model.visit(&mut collector);
    collector
        .weights
        .into_iter()
        .map(|w| {
            let zeros = w.values.iter().filter(|&&v| v == 0.0).count();
            LayerSparsity {
                layer: w.layer,
                weights: w.values.len(),
                zeros,
                sparsity: zeros as f64 / w.values.len().max(1) as f64,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn polynomial() -> PruningSettings {
        PruningSettings {
            schedule: SparsitySchedule::Polynomial,
            initial_sparsity: 0.0,
            final_sparsity: 0.8,
            begin_step: 10,
            end_step: 110,
            power: 3.0,
            frequency: 10,
            scope: PruningScope::PerLayer,
            include: vec![],
            exclude: vec!["fc2".into()],
        }
    }

    #[test]
    fn polynomial_decay_follows_tf_mot() {
        let p = polynomial();
        assert_eq!(p.update_at(5), None);
        assert_eq!(p.update_at(10), Some(0.0));
        assert_eq!(p.update_at(15), None);
        // Halfway: 0.8 + (0 − 0.8)·0.5³ = 0.7.
        assert!((p.update_at(60).unwrap() - 0.7).abs() < 1e-12);
        assert_eq!(p.update_at(110), Some(0.8));
        assert_eq!(p.update_at(120), Some(0.8));
        assert_eq!(p.update_at(125), None);
        assert!((1..200).all(|s| p.sparsity_at(s) >= p.sparsity_at(s - 1)));
    }

    #[test]
    fn one_shot_and_constant_schedules() {
        let mut p = polynomial();
        p.schedule = SparsitySchedule::OneShot;
        assert_eq!(p.update_at(10), Some(0.8));
        assert_eq!(p.update_at(20), None);
        p.schedule = SparsitySchedule::Constant;
        assert_eq!(p.update_at(30), Some(0.8));
        assert_eq!(p.update_at(31), None);
    }

    #[test]
    fn patterns_select_layers() {
        let p = polynomial();
        assert!(p.selects("convs.0") && p.selects("fc1"));
        assert!(!p.selects("fc2"));
        assert!(glob("blocks.*.depthwise*", "blocks.3.depthwise.conv"));
        assert!(!glob("blocks.*.project", "blocks.3.expand"));
        assert!(glob("*", ""));
    }

    #[test]
    fn invalid_settings_are_named() {
        let mut p = polynomial();
        p.final_sparsity = 1.0;
        assert!(
            p.validate()
                .unwrap_err()
                .to_string()
                .contains("final_sparsity")
        );
        let mut p = polynomial();
        p.end_step = 5;
        assert!(p.validate().unwrap_err().to_string().contains("end_step"));
    }

    #[test]
    fn masks_zero_the_smallest_magnitudes_per_layer_and_globally() {
        use burn::nn::{Linear, LinearConfig};
        #[derive(Module, Debug)]
        struct Two {
            a: Linear,
            b: Linear,
        }
        let device = Device::flex();
        let model = Two {
            a: LinearConfig::new(8, 4).init(&device),
            b: LinearConfig::new(4, 2).with_bias(false).init(&device),
        };
        let mut settings = polynomial();
        settings.exclude.clear();
        let mut pruner = Pruner::default();
        pruner.update(&model, &settings, 0.75);
        let pruned = pruner.apply(model.clone());
        let layers = layer_sparsity(&pruned);
        assert_eq!(layers.len(), 2, "{layers:?}");
        for l in &layers {
            assert_eq!(l.zeros, l.weights * 3 / 4, "{l:?}");
        }
        // Biases are never pruned.
        let bias = pruned.a.bias.as_ref().unwrap().val().into_data();
        assert!(bias.as_slice::<f32>().unwrap().iter().all(|&v| v != 0.0));
        // The kept weights are the largest of the original.
        let before = model.a.weight.val().into_data();
        let after = pruned.a.weight.val().into_data();
        let (before, after) = (
            before.as_slice::<f32>().unwrap(),
            after.as_slice::<f32>().unwrap(),
        );
        let smallest_kept = after
            .iter()
            .zip(before)
            .filter(|(a, _)| **a != 0.0)
            .map(|(_, b)| b.abs())
            .fold(f32::MAX, f32::min);
        let largest_pruned = after
            .iter()
            .zip(before)
            .filter(|(a, _)| **a == 0.0)
            .map(|(_, b)| b.abs())
            .fold(0.0, f32::max);
        assert!(largest_pruned <= smallest_kept);

        settings.scope = PruningScope::Global;
        let mut global = Pruner::default();
        global.update(&model, &settings, 0.5);
        let layers = layer_sparsity(&global.apply(model));
        let zeros: usize = layers.iter().map(|l| l.zeros).sum();
        assert_eq!(zeros, (32 + 8) / 2);
    }

    #[test]
    fn kept_zeros_survive_weight_updates() {
        use burn::nn::{Linear, LinearConfig};
        let device = Device::flex();
        let layer: Linear = LinearConfig::new(6, 3).init(&device);
        let mut settings = polynomial();
        settings.exclude.clear();
        let mut pruner = Pruner::default();
        pruner.update(&layer, &settings, 0.5);
        let pruned = pruner.apply(layer);
        let keeper = Pruner::keeping_zeros(&pruned);
        // What an optimizer step does to every weight.
        let stepped = pruned.clone().map(&mut Shift);
        assert_eq!(layer_sparsity(&stepped)[0].zeros, 0);
        let kept = keeper.apply(stepped);
        let (before, after) = (
            pruned.weight.val().into_data(),
            kept.weight.val().into_data(),
        );
        for (b, a) in before
            .as_slice::<f32>()
            .unwrap()
            .iter()
            .zip(after.as_slice::<f32>().unwrap())
        {
            assert_eq!(*b == 0.0, *a == 0.0);
        }
        assert_eq!(layer_sparsity(&kept)[0].zeros, 9);
    }

    struct Shift;

    impl ModuleMapper for Shift {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            param.map(|t| t.add_scalar(0.125))
        }
    }
}
