//! Magnitude pruning (Zhu & Gupta, "To prune, or not to prune", 2017 — TF-MOT's
//! `prune_low_magnitude`): masks on the weights of convolutions and dense layers (never
//! biases or BatchNorm), recomputed from weight magnitudes on a sparsity schedule and applied
//! after every optimizer step, so pruned weights stay exactly zero through training and
//! export.
//!
//! Layers are Burn modules named by their path (`convs.0`, `fc1`, `blocks.3.depthwise.conv`);
//! a parameter is prunable when it is a layer's `weight` of rank ≥ 2.
//!
//! What is pruned together is a [`SparsityPattern`] in the layout the weight is exported in,
//! seen as [outputs, inputs] (a dense layer's TFLite [out, in]; a convolution's OHWI as
//! [out, kh·kw·in]): single values, blocks of outputs × consecutive inputs ranked by their
//! mean magnitude (what sparse kernels skip: LiteRT's FULLY_CONNECTED reads 1×4 and 1×16
//! blocks), or m of every n consecutive inputs (TF-MOT's `sparsity_m_by_n`).

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

/// What is pruned together, in each weight's exported [outputs, inputs] layout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SparsityPattern {
    #[default]
    Unstructured,
    /// Blocks of `rows` outputs × `cols` consecutive inputs, ranked by mean |w| (blocks at
    /// the edges may be smaller).
    Block { rows: usize, cols: usize },
    /// In every run of `n` consecutive inputs of an output only the `m` largest |w| stay
    /// (TF-MOT's `sparsity_m_by_n`): sparsity 1 − m/n at every mask update, whatever the
    /// schedule's target.
    MByN { m: usize, n: usize },
}

impl SparsityPattern {
    /// The pattern a weight of Burn `shape` gets: this one where the weight has an
    /// [outputs, inputs] view (dense layers, convolutions over several channels), else
    /// single values (depthwise and single-channel convolutions).
    pub fn for_weight(self, shape: &[usize]) -> Self {
        if ExportedGrid::of(shape, None).is_some() {
            self
        } else {
            Self::Unstructured
        }
    }
}

impl std::fmt::Display for SparsityPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unstructured => f.write_str("unstructured"),
            Self::Block { rows, cols } => write!(f, "{rows}x{cols} blocks"),
            Self::MByN { m, n } => write!(f, "{m}:{n}"),
        }
    }
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
    #[serde(default)]
    pub pattern: SparsityPattern,
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
        match self.pattern {
            SparsityPattern::Block { rows, cols } if rows == 0 || cols == 0 => {
                return bad(format!(
                    "pruning block [{rows}, {cols}] needs sizes of at least 1"
                ));
            }
            SparsityPattern::MByN { m, n } if m == 0 || m >= n => {
                return bad(format!(
                    "pruning m_by_n [{m}, {n}] needs 0 < m < n (keep m of every n)"
                ));
            }
            _ => {}
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
        selects_layer(&self.include, &self.exclude, layer)
    }
}

/// Whether `layer` matches one of `include` (all layers when empty) and none of `exclude`
/// (`*` patterns): the layer selection pruning and clustering share.
pub(crate) fn selects_layer(include: &[String], exclude: &[String], layer: &str) -> bool {
    (include.is_empty() || include.iter().any(|p| glob(p, layer)))
        && !exclude.iter().any(|p| glob(p, layer))
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
pub(crate) struct Weight {
    pub(crate) layer: String,
    pub(crate) id: ParamId,
    pub(crate) values: Vec<f32>,
    /// Burn's shape: [in, out] for a dense layer, [out, in/groups, kh, kw] for a convolution.
    shape: Vec<usize>,
    device: Device,
}

/// The prunable weights of `model` (also what clustering shares out), with their layer
/// names.
pub(crate) fn prunable_weights<M: Module>(model: &M) -> Vec<Weight> {
    let mut collector = Collector::default();
    model.visit(&mut collector);
    collector.weights
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
        let shape = tensor.shape().dims::<D>().to_vec();
        let data = tensor.into_data();
        if let Ok(values) = data.as_slice::<f32>() {
            self.weights.push(Weight {
                layer,
                id: param.id,
                values: values.to_vec(),
                shape,
                device,
            });
        }
    }
}

/// Per-layer result of pruning.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerSparsity {
    pub layer: String,
    /// The weight's Burn shape.
    #[serde(default)]
    pub shape: Vec<usize>,
    pub weights: usize,
    pub zeros: usize,
    pub sparsity: f64,
}

/// The current masks (1 = keep, 0 = pruned), by parameter: flat tensors on the parameter's
/// device, built at each update so that applying them every step copies nothing.
#[derive(Default)]
pub struct Pruner {
    masks: HashMap<ParamId, Tensor<1>>,
    /// Per layer path, the exported input index of each Burn input index, where they differ
    /// (`Classifier::exported_input_orders`).
    input_orders: HashMap<String, Vec<usize>>,
}

fn mask_tensor(mask: Vec<f32>, device: &Device) -> Tensor<1> {
    let len = mask.len();
    Tensor::from_data(TensorData::new(mask, [len]), device)
}

impl Pruner {
    /// A pruner that makes structured patterns in the exported input order `orders` gives
    /// for some layers (see [`Pruner::input_orders`]).
    pub fn with_input_orders(orders: Vec<(String, Vec<usize>)>) -> Self {
        Self {
            masks: HashMap::new(),
            input_orders: orders.into_iter().collect(),
        }
    }

    /// Recomputes the masks so each selected layer (or all together, for global scope) has
    /// `sparsity` of its weights — the smallest magnitudes, alone or in the settings'
    /// pattern — pruned.
    pub fn update<M: Module>(&mut self, model: &M, settings: &PruningSettings, sparsity: f64) {
        let selected: Vec<Weight> = prunable_weights(model)
            .into_iter()
            .filter(|w| settings.selects(&w.layer))
            .collect();
        // What is pruned together, per weight: single values (unstructured, and weights
        // with no [outputs, inputs] view), blocks, or the runs m-of-n picks within.
        let groups: Vec<Groups> = selected
            .iter()
            .map(|w| {
                let grid = ExportedGrid::of(&w.shape, self.input_orders.get(&w.layer));
                match (grid, settings.pattern) {
                    (Some(grid), SparsityPattern::Block { rows, cols }) => grid.blocks(rows, cols),
                    (Some(grid), SparsityPattern::MByN { n, .. }) => grid.blocks(1, n),
                    _ => Groups::singles(w.values.len()),
                }
            })
            .collect();
        let mut masks: Vec<Vec<f32>> = selected.iter().map(|w| vec![1.0; w.values.len()]).collect();
        if let SparsityPattern::MByN { m, .. } = settings.pattern {
            for ((weight, groups), mask) in selected.iter().zip(&groups).zip(&mut masks) {
                for g in 0..groups.len() {
                    let mut order = groups.get(g).to_vec();
                    order.sort_by(|&a, &b| {
                        weight.values[b]
                            .abs()
                            .total_cmp(&weight.values[a].abs())
                            .then(a.cmp(&b))
                    });
                    for &i in order.iter().skip(m) {
                        mask[i] = 0.0;
                    }
                }
            }
        } else {
            // (mean |w|, weight, group), pruned smallest first (ties by weight, then group,
            // so masks are deterministic) until the target count: per layer, or over all
            // selected layers together for global scope.
            let ranked = |w: usize| {
                let (weight, groups) = (&selected[w], &groups[w]);
                (0..groups.len()).map(move |g| {
                    let group = groups.get(g);
                    let sum: f32 = group.iter().map(|&i| weight.values[i].abs()).sum();
                    (sum / group.len().max(1) as f32, w, g)
                })
            };
            let pools: Vec<Vec<(f32, usize, usize)>> = match settings.scope {
                PruningScope::PerLayer => {
                    (0..selected.len()).map(|w| ranked(w).collect()).collect()
                }
                PruningScope::Global => vec![(0..selected.len()).flat_map(ranked).collect()],
            };
            for mut pool in pools {
                pool.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
                let total: usize = pool.iter().map(|&(_, w, g)| groups[w].get(g).len()).sum();
                // Round up (with slack for float error): a layer never ends below its target.
                let target = ((sparsity * total as f64 - 1e-9).ceil().max(0.0) as usize).min(total);
                let mut pruned = 0;
                for &(_, w, g) in &pool {
                    if pruned >= target {
                        break;
                    }
                    for &i in groups[w].get(g) {
                        masks[w][i] = 0.0;
                    }
                    pruned += groups[w].get(g).len();
                }
            }
        }
        for (weight, mask) in selected.iter().zip(masks) {
            self.masks
                .insert(weight.id, mask_tensor(mask, &weight.device));
        }
    }

    /// Masks that keep every prunable weight that is zero now at zero: fine-tuning a pruned
    /// model (QAT, say) then cannot lose its sparsity.
    pub fn keeping_zeros<M: Module>(model: &M) -> Self {
        let masks = prunable_weights(model)
            .into_iter()
            .filter(|w| w.values.contains(&0.0))
            .map(|w| {
                let mask = w.values.iter().map(|&v| f32::from(v != 0.0)).collect();
                (w.id, mask_tensor(mask, &w.device))
            })
            .collect();
        Self {
            masks,
            input_orders: HashMap::new(),
        }
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

/// A Burn weight seen in its exported layout as [outputs, inputs]: for each exported
/// (output, input), the Burn flat index.
struct ExportedGrid {
    inputs: usize,
    /// Burn flat index of exported element `output · inputs + input`.
    burn: Vec<usize>,
}

impl ExportedGrid {
    /// Dense layers ([in, out] in Burn, TFLite [out, in]) and convolutions over more than one
    /// input channel ([out, in, kh, kw], TFLite OHWI: inputs ordered (kh, kw, in)); `None`
    /// for other weights (depthwise and single-channel convolutions, whose exported inputs
    /// are taps). `order` maps a dense layer's Burn input index to its exported one.
    fn of(shape: &[usize], order: Option<&Vec<usize>>) -> Option<Self> {
        match *shape {
            [inputs, outputs] => {
                let order = order.filter(|o| o.len() == inputs);
                let mut burn = vec![0; inputs * outputs];
                for i in 0..inputs {
                    let exported = order.map_or(i, |o| o[i]);
                    if exported >= inputs {
                        return None;
                    }
                    for o in 0..outputs {
                        burn[o * inputs + exported] = i * outputs + o;
                    }
                }
                Some(Self { inputs, burn })
            }
            [outputs, channels, kh, kw] if channels > 1 => {
                let inputs = kh * kw * channels;
                let mut burn = vec![0; outputs * inputs];
                for o in 0..outputs {
                    for c in 0..channels {
                        for y in 0..kh {
                            for x in 0..kw {
                                let exported = (y * kw + x) * channels + c;
                                burn[o * inputs + exported] =
                                    ((o * channels + c) * kh + y) * kw + x;
                            }
                        }
                    }
                }
                Some(Self { inputs, burn })
            }
            _ => None,
        }
    }

    /// Blocks of `rows` outputs × `cols` consecutive inputs (smaller at the edges), each as
    /// its Burn flat indices.
    fn blocks(&self, rows: usize, cols: usize) -> Groups {
        let outputs = self.burn.len() / self.inputs.max(1);
        let mut groups = Groups {
            indices: Vec::with_capacity(self.burn.len()),
            starts: vec![0],
        };
        for r0 in (0..outputs).step_by(rows.max(1)) {
            for c0 in (0..self.inputs).step_by(cols.max(1)) {
                for r in r0..(r0 + rows).min(outputs) {
                    for c in c0..(c0 + cols).min(self.inputs) {
                        groups.indices.push(self.burn[r * self.inputs + c]);
                    }
                }
                groups.starts.push(groups.indices.len());
            }
        }
        groups
    }
}

/// A weight's Burn flat indices cut into the groups pruned together: group g is
/// `indices[starts[g]..starts[g + 1]]` (flat, so single values cost no allocation each).
struct Groups {
    indices: Vec<usize>,
    starts: Vec<usize>,
}

impl Groups {
    /// Every value on its own.
    fn singles(n: usize) -> Self {
        Self {
            indices: (0..n).collect(),
            starts: (0..=n).collect(),
        }
    }

    fn len(&self) -> usize {
        self.starts.len() - 1
    }

    fn get(&self, g: usize) -> &[usize] {
        &self.indices[self.starts[g]..self.starts[g + 1]]
    }
}

/// Zeros per prunable layer of `model` (all layers with a rank ≥ 2 weight).
pub fn layer_sparsity<M: Module>(model: &M) -> Vec<LayerSparsity> {
    prunable_weights(model)
        .into_iter()
        .map(|w| {
            let zeros = w.values.iter().filter(|&&v| v == 0.0).count();
            LayerSparsity {
                layer: w.layer,
                shape: w.shape,
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
            pattern: SparsityPattern::Unstructured,
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

    /// A dense layer seen as TFLite's [out, in], with and without a reordered input, and a
    /// convolution as OHWI: each exported element names the Burn value it is.
    #[test]
    fn exported_grids_follow_the_lowering_layouts() {
        // Burn [in 3, out 2]: value i·2 + o.
        let dense = ExportedGrid::of(&[3, 2], None).unwrap();
        assert_eq!(dense.burn, vec![0, 2, 4, 1, 3, 5]);
        // Exported input of Burn input i: [2, 0, 1].
        let reordered = ExportedGrid::of(&[3, 2], Some(&vec![2, 0, 1])).unwrap();
        assert_eq!(reordered.burn, vec![2, 4, 0, 3, 5, 1]);
        // Burn [out 1, in 2, kh 1, kw 2] → OHWI inputs (x, c): (0,0) (0,1) (1,0) (1,1).
        let conv = ExportedGrid::of(&[1, 2, 1, 2], None).unwrap();
        assert_eq!(conv.burn, vec![0, 2, 1, 3]);
        let blocks = conv.blocks(1, 2);
        assert_eq!(
            (blocks.len(), blocks.get(0), blocks.get(1)),
            (2, &[0, 2][..], &[1, 3][..])
        );
        // Depthwise / single-channel filters have no input dimension to block.
        assert!(ExportedGrid::of(&[8, 1, 3, 3], None).is_none());
        assert_eq!(
            SparsityPattern::Block { rows: 1, cols: 4 }.for_weight(&[8, 1, 3, 3]),
            SparsityPattern::Unstructured
        );
    }

    fn structured(pattern: SparsityPattern, sparsity: f64) -> Vec<f32> {
        use burn::nn::{Linear, LinearConfig};
        #[derive(Module, Debug)]
        struct One {
            a: Linear,
        }
        let device = Device::flex();
        // Burn [in 32, out 3].
        let model = One {
            a: LinearConfig::new(32, 3).with_bias(false).init(&device),
        };
        let mut settings = polynomial();
        settings.exclude.clear();
        settings.pattern = pattern;
        let mut pruner = Pruner::default();
        pruner.update(&model, &settings, sparsity);
        let pruned = pruner.apply(model);
        let data = pruned.a.weight.val().into_data();
        // As TFLite's [out 3, in 32].
        let burn = data.as_slice::<f32>().unwrap();
        (0..3)
            .flat_map(|o| (0..32).map(move |i| burn[i * 3 + o]))
            .collect()
    }

    #[test]
    fn blocks_of_exported_inputs_are_pruned_whole() {
        let exported = structured(SparsityPattern::Block { rows: 1, cols: 16 }, 0.5);
        let blocks: Vec<bool> = exported
            .chunks(16)
            .map(|b| {
                let zeros = b.iter().filter(|&&v| v == 0.0).count();
                assert!(zeros == 0 || zeros == 16, "a block is pruned whole: {b:?}");
                zeros == 16
            })
            .collect();
        assert_eq!(blocks.iter().filter(|&&z| z).count(), 3, "half of 6 blocks");
    }

    #[test]
    fn m_by_n_keeps_m_of_every_n_inputs() {
        let exported = structured(SparsityPattern::MByN { m: 2, n: 4 }, 0.5);
        for group in exported.chunks(4) {
            assert_eq!(group.iter().filter(|&&v| v != 0.0).count(), 2, "{group:?}");
        }
    }

    #[test]
    fn patterns_are_validated() {
        let mut p = polynomial();
        p.pattern = SparsityPattern::Block { rows: 0, cols: 4 };
        assert!(p.validate().unwrap_err().to_string().contains("block"));
        p.pattern = SparsityPattern::MByN { m: 4, n: 4 };
        assert!(p.validate().unwrap_err().to_string().contains("m_by_n"));
    }
}
