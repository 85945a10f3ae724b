//! Fine-tuning a pretrained backbone the way practitioners do (Keras' and timm's transfer
//! learning guides): first the new head alone on a frozen backbone — no gradients, BatchNorm
//! on the running statistics the weights came with — then the whole network, the backbone at
//! a lower learning rate so the head's first, large updates do not wash out what it learnt.
//!
//! While the backbone is frozen and the images are not augmented, each image's backbone
//! features never change: they are computed once, on the inference device, and the head
//! trains on them (seconds per epoch instead of a backbone forward pass per step).

use std::collections::HashSet;

use burn::module::{ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use kiln_data::ImageDataset;
use kiln_nn::Classifier;

use crate::TrainError;
use crate::batch::{Augment, image_tensor, images_nchw};

/// `[train]` keys of transfer learning.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TransferSettings {
    /// Epochs at the start that train only the head (0 = train everything from the start).
    pub freeze_backbone_epochs: usize,
    /// The backbone's learning rate as a fraction of the head's once it trains (1 = same).
    pub backbone_lr_scale: f64,
}

impl Default for TransferSettings {
    fn default() -> Self {
        Self {
            freeze_backbone_epochs: 0,
            backbone_lr_scale: 1.0,
        }
    }
}

impl TransferSettings {
    /// Whether the network has a backbone these settings act on, and sane values.
    pub(crate) fn validate<M: Classifier>(
        &self,
        model: &M,
        epochs: usize,
    ) -> Result<(), TrainError> {
        let invalid = |m: String| Err(TrainError::InvalidConfig(m));
        if !(self.backbone_lr_scale > 0.0 && self.backbone_lr_scale <= 1.0) {
            return invalid(format!(
                "backbone_lr_scale = {} must be in (0, 1]",
                self.backbone_lr_scale
            ));
        }
        if self.freeze_backbone_epochs > epochs {
            return invalid(format!(
                "freeze_backbone_epochs = {} is more than epochs = {epochs}",
                self.freeze_backbone_epochs
            ));
        }
        if self.is_active() && model.backbone_params().is_empty() {
            return invalid(
                "freeze_backbone_epochs and backbone_lr_scale need an architecture with a \
                 pretrained backbone (efficientnet_lite0, efficientnet_b0, mobilenet_v2)"
                    .into(),
            );
        }
        Ok(())
    }

    /// Whether training treats the backbone apart: then its BatchNorm stays on the pretrained
    /// running statistics throughout (see [`kiln_nn::BackboneMode::FineTuned`]).
    pub(crate) fn is_active(&self) -> bool {
        self.freeze_backbone_epochs > 0 || self.backbone_lr_scale != 1.0
    }

    pub(crate) fn frozen(&self, epoch: usize) -> bool {
        epoch <= self.freeze_backbone_epochs
    }
}

/// The frozen backbone's pooled features of every training image, row-major [images, width].
pub(crate) struct FeatureCache {
    values: Vec<f32>,
    width: usize,
}

impl FeatureCache {
    /// Runs the (frozen, inference-mode) backbone over `data` once, in batches on `device`.
    pub fn build<M: Classifier>(
        model: &M,
        data: &ImageDataset,
        batch_size: usize,
        device: &Device,
    ) -> Result<Self, TrainError> {
        let model = model.valid();
        let indices: Vec<usize> = (0..data.len()).collect();
        let mut values = Vec::new();
        let mut width = 0;
        for batch in indices.chunks(batch_size) {
            let pixels = images_nchw(data, batch, Augment::default(), None);
            let images = image_tensor(data, pixels, batch.len(), device);
            let features = model.backbone_features(images).ok_or_else(|| {
                TrainError::InvalidConfig("the network has no backbone to freeze".into())
            })?;
            width = features.dims()[1];
            let data = features.into_data();
            let rows = data
                .as_slice::<f32>()
                .map_err(|e| TrainError::Backend(format!("reading backbone features: {e:?}")))?;
            values.extend_from_slice(rows);
        }
        Ok(Self { values, width })
    }

    /// The cached features of `indices`, on `device`.
    pub fn batch(&self, indices: &[usize], device: &Device) -> Tensor<2> {
        let mut rows = Vec::with_capacity(indices.len() * self.width);
        for &i in indices {
            rows.extend_from_slice(&self.values[i * self.width..(i + 1) * self.width]);
        }
        Tensor::from_data(TensorData::new(rows, [indices.len(), self.width]), device)
    }
}

/// Splits `grads` into (backbone, rest) by parameter, so one optimizer can step each part at
/// its own learning rate (its per-parameter state is keyed by parameter, so two steps over
/// disjoint parts equal one step with two rates).
pub(crate) fn split_gradients<M: Module>(
    mut grads: GradientsParams,
    model: &M,
    backbone: &HashSet<ParamId>,
) -> (GradientsParams, GradientsParams) {
    struct Move<'a> {
        from: &'a mut GradientsParams,
        to: GradientsParams,
        backbone: &'a HashSet<ParamId>,
    }
    impl ModuleVisitor for Move<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if self.backbone.contains(&param.id)
                && let Some(grad) = self.from.remove::<D>(param.id)
            {
                self.to.register(param.id, grad);
            }
        }
    }
    let mut mover = Move {
        from: &mut grads,
        to: GradientsParams::new(),
        backbone,
    };
    model.visit(&mut mover);
    let backbone_grads = mover.to;
    (backbone_grads, grads)
}

#[cfg(test)]
mod tests {
    use kiln_nn::ModelConfig;

    use super::*;
    use crate::test_support::{settings, two_tone};

    fn family(device: &Device) -> kiln_nn::AnyClassifier {
        let mut options = kiln_nn::architectures::mobilenet_v2::MobileNetV2Options::default();
        options.width_multiplier = Some(0.25);
        options.depth_multiplier = Some(0.34);
        ModelConfig::MobileNetV2(options)
            .build([20, 20, 1], 2, device)
            .expect("builds")
    }

    /// Every backbone parameter's values and the BatchNorm statistics, flattened.
    fn backbone_values(model: &kiln_nn::AnyClassifier) -> Vec<f32> {
        struct All<'a>(&'a HashSet<ParamId>, Vec<f32>);
        impl ModuleVisitor for All<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                if self.0.contains(&param.id) {
                    self.1.extend(param.val().into_data().iter::<f32>());
                }
            }
        }
        let ids: HashSet<ParamId> = model.backbone_params().into_iter().collect();
        let mut all = All(&ids, Vec::new());
        model.visit(&mut all);
        // Running statistics are not parameters: the features show whether they moved.
        let x = Tensor::<4>::ones([1, 1, 20, 20], &Device::flex());
        all.1.extend(
            model
                .valid()
                .backbone_features(x)
                .unwrap()
                .into_data()
                .iter::<f32>(),
        );
        all.1
    }

    #[test]
    fn a_frozen_backbone_stays_as_it_was_and_the_head_trains() {
        let eval = Device::flex();
        let device = eval.clone().autodiff();
        let data = two_tone(32, 20);
        let model = family(&device);
        let before = backbone_values(&model);
        let mut frozen = settings(2);
        frozen.transfer.freeze_backbone_epochs = 2;
        let outcome = crate::train(model, &data, None, &frozen, &device, &eval, |_| {}).unwrap();
        assert_eq!(
            backbone_values(&outcome.model),
            before,
            "backbone moved while frozen"
        );
        assert!(
            outcome.history[1].loss < outcome.history[0].loss,
            "{:?}",
            outcome.history
        );

        // Unfrozen afterwards: a further epoch moves the backbone (at a tenth of the rate).
        let mut whole = settings(1);
        whole.transfer.backbone_lr_scale = 0.1;
        let outcome =
            crate::train(outcome.model, &data, None, &whole, &device, &eval, |_| {}).unwrap();
        assert_ne!(backbone_values(&outcome.model), before);
    }

    /// Fine-tuning after a frozen phase keeps BatchNorm on the pretrained statistics: with a
    /// vanishing learning rate the backbone computes what it computed before (in train mode
    /// its running statistics would move toward this data's batches).
    #[test]
    fn fine_tuning_keeps_the_backbone_batch_norm_statistics() {
        let eval = Device::flex();
        let device = eval.clone().autodiff();
        let data = two_tone(32, 20);
        let initial = family(&device);
        // Independent copies: a clone would share BatchNorm's running statistics.
        let copy = || initial.valid().train();
        let x = || Tensor::<4>::ones([1, 1, 20, 20], &Device::flex());
        let features = |m: &kiln_nn::AnyClassifier| -> Vec<f32> {
            m.valid()
                .backbone_features(x())
                .unwrap()
                .into_data()
                .iter::<f32>()
                .collect()
        };
        let before = features(&initial);
        let mut tune = settings(2);
        tune.learning_rate = 1e-12;
        tune.transfer.backbone_lr_scale = 0.5;
        let outcome = crate::train(copy(), &data, None, &tune, &device, &eval, |_| {}).unwrap();
        let after = features(&outcome.model);
        let moved = before
            .iter()
            .zip(&after)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(moved < 1e-4, "the backbone's statistics moved by {moved}");

        // Trained whole (no transfer settings), the same epochs do move them.
        let mut whole = settings(2);
        whole.learning_rate = 1e-12;
        let outcome = crate::train(copy(), &data, None, &whole, &device, &eval, |_| {}).unwrap();
        let after = features(&outcome.model);
        let moved = before
            .iter()
            .zip(&after)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            moved > 1e-3,
            "batch statistics should move the running ones: {moved}"
        );
    }

    #[test]
    fn transfer_settings_need_a_backbone_and_sane_values() {
        let eval = Device::flex();
        let device = eval.clone().autodiff();
        let data = two_tone(8, 20);
        let small = kiln_nn::SmallCnnConfig::new([20, 20, 1], 2)
            .init(&device)
            .unwrap();
        let mut s = settings(2);
        s.transfer.freeze_backbone_epochs = 1;
        let err = crate::train(small, &data, None, &s, &device, &eval, |_| {})
            .err()
            .expect("no backbone")
            .to_string();
        assert!(err.contains("pretrained backbone"), "{err}");
        for (freeze, scale, expected) in [(3, 1.0, "more than epochs"), (0, 0.0, "(0, 1]")] {
            let mut s = settings(2);
            s.transfer = TransferSettings {
                freeze_backbone_epochs: freeze,
                backbone_lr_scale: scale,
            };
            let err = crate::train(family(&device), &data, None, &s, &device, &eval, |_| {})
                .err()
                .expect("rejected")
                .to_string();
            assert!(err.contains(expected), "{err}");
        }
    }
}
