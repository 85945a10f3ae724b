//! Fine-tuning with clustered weights: the clusters are made when training starts (or
//! rebuilt from the already clustered weights of a resumed run) and every optimizer step
//! ends with the centroids moved to their weights' mean and the weights snapped to them.

use kiln_nn::Classifier;

use crate::TrainError;
use crate::clustering::{Clusterer, ClusteringSettings};
use crate::hooks::TrainHook;

pub struct WeightClustering {
    settings: ClusteringSettings,
    clusterer: Clusterer,
}

impl WeightClustering {
    pub fn new(settings: ClusteringSettings) -> Self {
        Self {
            settings,
            clusterer: Clusterer::default(),
        }
    }
}

impl<M: Classifier> TrainHook<M> for WeightClustering {
    fn validate(&self) -> Result<(), TrainError> {
        self.settings.validate()
    }

    fn start(&mut self, model: M, _completed_steps: usize) -> Result<M, TrainError> {
        self.clusterer = Clusterer::new(&model, &self.settings);
        Ok(self.clusterer.apply(model))
    }

    fn after_step(&mut self, model: M, _step: usize) -> M {
        self.clusterer.apply(model)
    }
}
