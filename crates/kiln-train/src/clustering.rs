//! Weight clustering (TF-MOT's `cluster_weights`; Han et al., "Deep Compression", 2016): each
//! selected layer's weights share `clusters` values. The centroids start from k-means over
//! the layer's weights (linear or k-means++ initialisation), every weight is replaced by its
//! cluster's centroid, and fine-tuning trains the centroids: after each optimizer step a
//! centroid becomes the mean of its weights (the step's mean update — TF-MOT sums the
//! weights' gradients into the centroid) and every weight is snapped back to it. The
//! assignment stays fixed, as in TF-MOT's fine-tuning. With sparsity preserved, weights that
//! are exactly zero stay zero and join no cluster (TF-MOT's sparsity-preserving clustering).
//! Exported, a layer holds at most `clusters` distinct values (plus 0), which gzip and
//! palette-aware storage compress.

use std::collections::HashMap;

use burn::module::{ModuleMapper, Param, ParamId};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::pruning::{prunable_weights, selects_layer};

/// How the centroids start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CentroidInit {
    /// Evenly spaced between the layer's smallest and largest weight (TF-MOT's default).
    #[default]
    Linear,
    /// k-means++: each next centroid drawn with probability ∝ squared distance (seeded).
    KmeansPlusPlus,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusteringSettings {
    pub clusters: usize,
    pub init: CentroidInit,
    /// Keep exact zeros at zero, outside the clusters.
    pub preserve_sparsity: bool,
    /// Layer-name patterns (`*` wildcard) to cluster; empty = every conv and dense layer.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub seed: u64,
}

impl ClusteringSettings {
    pub fn validate(&self) -> Result<(), TrainError> {
        if !(2..=256).contains(&self.clusters) {
            return Err(TrainError::InvalidConfig(format!(
                "clusters = {} must be between 2 and 256",
                self.clusters
            )));
        }
        Ok(())
    }

    pub fn selects_layer(&self, layer: &str) -> bool {
        selects_layer(&self.include, &self.exclude, layer)
    }
}

/// One clustered weight: which cluster each value belongs to (`None`: a preserved zero).
struct Clustered {
    assignment: Vec<Option<u16>>,
    clusters: usize,
}

/// The clusters of every selected weight, by parameter.
#[derive(Default)]
pub struct Clusterer {
    layers: HashMap<ParamId, Clustered>,
}

impl Clusterer {
    /// k-means over each selected layer's weights. A model whose layers already hold at most
    /// `clusters` distinct values (a resumed run) gets one cluster per value, so its weights
    /// and the clusters are exactly the interrupted run's.
    pub fn new<M: Module>(model: &M, settings: &ClusteringSettings) -> Self {
        let mut layers = HashMap::new();
        for weight in prunable_weights(model) {
            if !settings.selects_layer(&weight.layer) {
                continue;
            }
            let kept = |v: f32| !(settings.preserve_sparsity && v == 0.0);
            let values: Vec<f32> = weight.values.iter().copied().filter(|&v| kept(v)).collect();
            if values.is_empty() {
                continue;
            }
            let centroids = centroids(&values, settings);
            let assignment = weight
                .values
                .iter()
                .map(|&v| kept(v).then(|| nearest(&centroids, v) as u16))
                .collect();
            layers.insert(
                weight.id,
                Clustered {
                    assignment,
                    clusters: centroids.len(),
                },
            );
        }
        Self { layers }
    }

    /// `model` with every clustered weight set to its cluster's centroid, each centroid the
    /// mean of its weights now.
    pub fn apply<M: Module>(&self, model: M) -> M {
        if self.layers.is_empty() {
            return model;
        }
        model.map(&mut Snapper {
            layers: &self.layers,
        })
    }
}

struct Snapper<'a> {
    layers: &'a HashMap<ParamId, Clustered>,
}

impl ModuleMapper for Snapper<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(clustered) = self.layers.get(&param.id) else {
            return param;
        };
        param.map(|tensor| {
            let shape = tensor.shape();
            let device = tensor.device();
            let required = tensor.is_require_grad();
            let Ok(values) = tensor.clone().into_data().try_to_vec::<f32>() else {
                return tensor;
            };
            if values.len() != clustered.assignment.len() {
                return tensor;
            }
            let mut sums = vec![0.0f64; clustered.clusters];
            let mut counts = vec![0usize; clustered.clusters];
            for (&v, cluster) in values.iter().zip(&clustered.assignment) {
                if let Some(c) = cluster {
                    sums[usize::from(*c)] += f64::from(v);
                    counts[usize::from(*c)] += 1;
                }
            }
            let centroids: Vec<f32> = sums
                .iter()
                .zip(&counts)
                .map(|(&s, &n)| (s / n.max(1) as f64) as f32)
                .collect();
            let snapped: Vec<f32> = clustered
                .assignment
                .iter()
                .map(|cluster| cluster.map_or(0.0, |c| centroids[usize::from(c)]))
                .collect();
            Tensor::<D>::from_data(TensorData::new(snapped, shape), &device)
                .set_require_grad(required)
        })
    }
}

/// The index of the centroid closest to `v` (the first of equals).
fn nearest(centroids: &[f32], v: f32) -> usize {
    let mut best = 0;
    for (i, &c) in centroids.iter().enumerate() {
        if (c - v).abs() < (centroids[best] - v).abs() {
            best = i;
        }
    }
    best
}

/// One-dimensional k-means (Lloyd's iterations until nothing moves, at most 50) from the
/// settings' initialisation; a layer with at most `clusters` distinct values gets exactly
/// those.
fn centroids(values: &[f32], settings: &ClusteringSettings) -> Vec<f32> {
    let k = settings.clusters;
    let mut distinct: Vec<f32> = values.to_vec();
    distinct.sort_by(f32::total_cmp);
    distinct.dedup();
    if distinct.len() <= k {
        return distinct;
    }
    let (lo, hi) = (distinct[0], distinct[distinct.len() - 1]);
    let mut centroids: Vec<f32> = match settings.init {
        CentroidInit::Linear => (0..k)
            .map(|i| lo + (hi - lo) * i as f32 / (k - 1) as f32)
            .collect(),
        CentroidInit::KmeansPlusPlus => kmeans_plus_plus(values, k, settings.seed),
    };
    for _ in 0..50 {
        let mut sums = vec![0.0f64; centroids.len()];
        let mut counts = vec![0usize; centroids.len()];
        for &v in values {
            let c = nearest(&centroids, v);
            sums[c] += f64::from(v);
            counts[c] += 1;
        }
        let next: Vec<f32> = centroids
            .iter()
            .zip(sums.iter().zip(&counts))
            .map(|(&old, (&s, &n))| if n == 0 { old } else { (s / n as f64) as f32 })
            .collect();
        if next == centroids {
            break;
        }
        centroids = next;
    }
    centroids
}

/// k-means++ seeding with a seeded generator (runs are reproducible).
fn kmeans_plus_plus(values: &[f32], k: usize, seed: u64) -> Vec<f32> {
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut uniform = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut centroids = vec![values[(uniform() * values.len() as f64) as usize % values.len()]];
    while centroids.len() < k {
        let weights: Vec<f64> = values
            .iter()
            .map(|&v| {
                let d = f64::from(v - centroids[nearest(&centroids, v)]);
                d * d
            })
            .collect();
        let total: f64 = weights.iter().sum();
        if total <= 0.0 {
            break;
        }
        let mut target = uniform() * total;
        let mut chosen = values.len() - 1;
        for (i, &w) in weights.iter().enumerate() {
            if target < w {
                chosen = i;
                break;
            }
            target -= w;
        }
        centroids.push(values[chosen]);
    }
    centroids.sort_by(f32::total_cmp);
    centroids
}

/// Distinct non-zero values per layer of `model` (clustered layers hold at most `clusters`).
pub fn layer_clusters<M: Module>(model: &M) -> Vec<(String, usize)> {
    prunable_weights(model)
        .into_iter()
        .map(|w| {
            let mut values: Vec<f32> = w.values.into_iter().filter(|&v| v != 0.0).collect();
            values.sort_by(f32::total_cmp);
            values.dedup();
            (w.layer, values.len())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};

    #[derive(Module, Debug)]
    struct Two {
        a: Linear,
        b: Linear,
    }

    fn settings(init: CentroidInit) -> ClusteringSettings {
        ClusteringSettings {
            clusters: 16,
            init,
            preserve_sparsity: true,
            include: vec![],
            exclude: vec!["b".into()],
            seed: 7,
        }
    }

    /// Both initialisations: the selected layer ends with at most 16 distinct values, each
    /// weight near its original (k-means keeps the error small), zeros stay zero, the
    /// excluded layer is untouched, and applying again after a change moves the centroids to
    /// their weights' mean.
    #[test]
    fn layers_share_at_most_k_values_and_keep_their_zeros() {
        for init in [CentroidInit::Linear, CentroidInit::KmeansPlusPlus] {
            let device = Device::flex();
            let model = Two {
                a: LinearConfig::new(40, 30).init(&device),
                b: LinearConfig::new(30, 4).init(&device),
            };
            // A pruned weight: every third value zero.
            let a = model
                .a
                .weight
                .val()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            let pruned: Vec<f32> = a
                .iter()
                .enumerate()
                .map(|(i, &v)| if i % 3 == 0 { 0.0 } else { v })
                .collect();
            let model = Two {
                a: Linear {
                    weight: Param::from_tensor(Tensor::from_data(
                        TensorData::new(pruned.clone(), [40, 30]),
                        &device,
                    )),
                    bias: model.a.bias.clone(),
                },
                b: model.b,
            };
            let clusterer = Clusterer::new(&model, &settings(init));
            let clustered = clusterer.apply(model.clone());
            let layers = layer_clusters(&clustered);
            assert!(layers[0].1 <= 16 && layers[0].1 >= 8, "{layers:?}");
            assert!(layers[1].1 > 100, "b is excluded: {layers:?}");
            let after = clustered
                .a
                .weight
                .val()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            let spread = pruned.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (i, (&before, &now)) in pruned.iter().zip(&after).enumerate() {
                if before == 0.0 {
                    assert_eq!(now, 0.0, "zero {i} kept");
                } else {
                    assert!((before - now).abs() <= spread / 8.0, "{before} → {now}");
                }
            }
            // Moving every weight by +0.01 moves each centroid by +0.01 (its mean).
            let shifted: Vec<f32> = after
                .iter()
                .map(|&v| if v == 0.0 { 0.0 } else { v + 0.01 })
                .collect();
            let moved = Two {
                a: Linear {
                    weight: Param::initialized(
                        clustered.a.weight.id,
                        Tensor::from_data(TensorData::new(shifted.clone(), [40, 30]), &device),
                    ),
                    bias: clustered.a.bias.clone(),
                },
                b: clustered.b.clone(),
            };
            let again = clusterer
                .apply(moved)
                .a
                .weight
                .val()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            for (s, a) in shifted.iter().zip(&again) {
                assert!((s - a).abs() < 1e-5, "{s} vs {a}");
            }
            // A resumed run (already clustered weights) rebuilds the same clusters.
            let rebuilt = Clusterer::new(&clustered, &settings(init)).apply(clustered.clone());
            assert_eq!(
                rebuilt
                    .a
                    .weight
                    .val()
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap(),
                after
            );
        }
    }

    #[test]
    fn cluster_counts_are_validated() {
        let mut s = settings(CentroidInit::Linear);
        s.clusters = 1;
        assert!(s.validate().unwrap_err().to_string().contains("clusters"));
    }
}
