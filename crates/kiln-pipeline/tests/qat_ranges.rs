//! QAT observes exactly the tensors the int8 export quantizes: a lowered SmallCnn and
//! EfficientNet-lite quantize to full int8 with QAT's ranges alone (any name mismatch would
//! leave a tensor without a range and fail). Here, not in kiln-train, because it needs the
//! exporter, which kiln-train does not depend on.

use burn::prelude::*;
use burn::tensor::Distribution;
use kiln_export::{Int8Options, TensorRanges, quantize_int8};
use kiln_nn::{Classifier, EfficientNetLiteConfig, QuantizableClassifier, SmallCnnConfig};
use kiln_train::{Qat, QatSettings};

/// Trains `qat` a few steps on noise so every observer sees batches.
fn observe<M: QuantizableClassifier + burn::module::ModuleDisplay>(
    qat: &Qat<M>,
    input: [usize; 3],
    steps: usize,
) -> Vec<Tensor<2>> {
    let [h, w, c] = input;
    let device = Device::flex().autodiff();
    (0..steps)
        .map(|_| {
            qat.forward(Tensor::random(
                [4, c, h, w],
                Distribution::Uniform(-1.0, 1.0),
                &device,
            ))
        })
        .collect()
}

/// The observed activations are exactly the tensors the int8 exporter needs ranges for.
fn ranges_cover_the_lowered_graph<M: QuantizableClassifier + burn::module::ModuleDisplay>(
    model: M,
    input: [usize; 3],
) {
    let qat = Qat::new(model, QatSettings::default(), input, &Device::flex()).unwrap();
    observe(&qat, input, 2);
    let lowered = qat.lower("qat").unwrap();
    let tensors = &lowered.subgraphs[0].tensors;
    let mut ranges = TensorRanges::new(tensors.len());
    for (name, range) in qat.ranges() {
        let index = tensors
            .iter()
            .position(|t| t.name == name)
            .unwrap_or_else(|| panic!("observed '{name}' is not a tensor of the graph"));
        ranges.set(index, range);
    }
    quantize_int8(&lowered, &ranges, &Int8Options::default())
        .expect("every int8 activation has a QAT range");
    assert_eq!(qat.steps(), 2);
}

#[test]
fn small_cnn_observers_match_its_lowered_tensors() {
    let device = Device::flex().autodiff();
    let model = SmallCnnConfig::new([12, 12, 1], 3).init(&device).unwrap();
    ranges_cover_the_lowered_graph(model, [12, 12, 1]);
}

#[test]
fn efficientnet_lite_observers_match_its_lowered_tensors() {
    let device = Device::flex().autodiff();
    let model = EfficientNetLiteConfig::new([32, 32, 3], 4)
        .init(&device)
        .unwrap();
    ranges_cover_the_lowered_graph(model, [32, 32, 3]);
}
