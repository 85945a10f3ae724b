//! Layer by layer, the int8 file QAT exports computes what the fake-quant Burn model computes
//! in inference: every quantized activation of kiln-runtime's run, dequantized, is the value
//! Burn's fake-quant produced — no element a step apart, through SmallCnn and through
//! EfficientNet-lite's ~35 layers (BatchNorm folded, depthwise, residual ADD, MEAN).

use burn::prelude::*;
use burn::tensor::Distribution;
use kiln_export::{Int8Options, TensorRanges, quantize_int8};
use kiln_nn::{AnyClassifier, Classifier, EfficientNetLiteConfig, SmallCnnConfig};
use kiln_runtime::Interpreter;
use kiln_tflite::TensorType;
use kiln_tflite::quant::QParams;
use kiln_train::{Qat, QatSettings};

/// How far the int8 file's activations are from fake-quant's, in quantization steps.
#[derive(Debug, Default)]
struct Gap {
    compared: usize,
    /// Elements more than half a step apart (after dequantizing).
    off: usize,
    max_steps: f64,
}

/// Trains `model`'s observers (and BatchNorm statistics) on noise, exports int8 with the QAT
/// ranges, and compares every quantized activation on `rows` inputs.
fn gaps(model: AnyClassifier, input: [usize; 3], rows: usize) -> Vec<(String, Gap)> {
    let [h, w, c] = input;
    let eval = Device::flex();
    eval.seed(7);
    let train = eval.clone().autodiff();
    let qat = Qat::new(model, QatSettings::default(), input, &eval).unwrap();
    for _ in 0..8 {
        let images = Tensor::<4>::random([8, c, h, w], Distribution::Uniform(0.0, 1.0), &train);
        let _ = qat.forward(images);
    }
    let qat = qat.valid();
    let lowered = qat.lower("parity").unwrap();
    let tensors = &lowered.subgraphs[0].tensors;
    let mut ranges = TensorRanges::new(tensors.len());
    for (name, range) in qat.ranges() {
        ranges.set(tensors.iter().position(|t| t.name == name).unwrap(), range);
    }
    let int8 = quantize_int8(&lowered, &ranges, &Int8Options::default()).unwrap();
    let mut interpreter = Interpreter::new(int8).unwrap();
    let mut gaps: Vec<(String, Gap)> = Vec::new();
    for row in 0..rows {
        let images = Tensor::<4>::random([1, c, h, w], Distribution::Uniform(0.0, 1.0), &eval);
        let nhwc = images.clone().permute([0, 2, 3, 1]).into_data();
        let input = interpreter
            .input_info(0)
            .unwrap()
            .quantization
            .clone()
            .unwrap();
        let params = QParams {
            scale: input.scale[0],
            zero_point: input.zero_point[0] as i32,
        };
        let bytes: Vec<u8> = nhwc
            .as_slice::<f32>()
            .unwrap()
            .iter()
            .map(|&v| params.quantize(v) as u8)
            .collect();
        interpreter.set_input(0, &bytes).unwrap();
        let traced = qat.trace(images);
        interpreter
            .invoke_with(|_, info, bytes| {
                let Some(activation) = traced.iter().find(|a| a.tensor == info.name) else {
                    return;
                };
                let (name, shape, burn) =
                    (&activation.tensor, &activation.shape, &activation.values);
                let (Some(q), TensorType::Int8) = (&info.quantization, info.dtype) else {
                    return;
                };
                let (scale, zero_point) = (f64::from(q.scale[0]), q.zero_point[0] as f64);
                // Burn's activations are NCHW; the file's NHWC.
                let nchw_index = |i: usize| match shape[..] {
                    [_, ch, hh, ww] => {
                        let (y, x, k) = ((i / ch) / ww, (i / ch) % ww, i % ch);
                        (k * hh + y) * ww + x
                    }
                    _ => i,
                };
                let gap = match gaps.iter_mut().find(|(n, _)| n == name) {
                    Some((_, gap)) => gap,
                    None => {
                        gaps.push((name.clone(), Gap::default()));
                        &mut gaps.last_mut().unwrap().1
                    }
                };
                for (i, &b) in bytes.iter().enumerate() {
                    let ours = (f64::from(b as i8) - zero_point) * scale;
                    let steps = (ours - f64::from(burn[nchw_index(i)])).abs() / scale;
                    gap.compared += 1;
                    gap.off += usize::from(steps > 0.5);
                    gap.max_steps = gap.max_steps.max(steps);
                }
            })
            .unwrap();
        let _ = row;
    }
    gaps
}

/// Every quantized activation was compared, and every element is the same int8 value.
fn check(gaps: &[(String, Gap)], tensors: usize) {
    for (name, gap) in gaps {
        eprintln!("{name}: {gap:?}");
    }
    assert_eq!(gaps.len(), tensors, "{gaps:?}");
    for (name, gap) in gaps {
        assert_eq!(gap.off, 0, "{name}: {gap:?}");
        assert!(gap.max_steps < 1e-3, "{name}: {gap:?}");
    }
}

#[test]
fn small_cnn_int8_activations_match_fake_quant() {
    let device = Device::flex().autodiff();
    let model = SmallCnnConfig::new([28, 28, 1], 10).init(&device).unwrap();
    // image, conv1, conv2, dense1, logits.
    check(&gaps(AnyClassifier::SmallCnn(model), [28, 28, 1], 8), 5);
}

/// Thirty-odd layers, BatchNorm folded in f32 here and in f64 by the exporter: still the
/// same int8 values everywhere.
#[test]
fn efficientnet_lite_int8_activations_match_fake_quant() {
    let device = Device::flex().autodiff();
    let model = EfficientNetLiteConfig::new([28, 28, 1], 10)
        .init(&device)
        .unwrap();
    check(
        &gaps(AnyClassifier::EfficientNetLite(model), [28, 28, 1], 8),
        37,
    );
}
