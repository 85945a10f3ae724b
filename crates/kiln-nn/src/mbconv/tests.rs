use burn::module::Param;
use burn::tensor::Distribution;
use kiln_runtime::Interpreter;

use super::*;
use crate::architectures::efficientnet_b0::EfficientNetB0;
use crate::architectures::efficientnet_lite0::EfficientNetLite0;
use crate::architectures::mobilenet_v2::MobileNetV2;
use crate::head::Pooling;
use crate::lowering::chw_to_hwc;

/// Trainable parameters (Burn's count includes BatchNorm's running mean and variance).
fn trainable(model: &mut MbConvNet) -> usize {
    let running: usize = model
        .batch_norms()
        .iter()
        .map(|bn| 2 * bn.gamma.dims()[0])
        .sum();
    model.num_params() - running
}

/// The parameter counts timm reports for the 1000-class ImageNet models (`sum(p.numel())`).
#[test]
fn parameter_counts_equal_timms() {
    let device = Device::flex();
    let head = HeadOptions::default();
    for (spec, expected) in [
        (EfficientNetLite0::spec(), 4_652_008),
        (EfficientNetB0::spec(), 5_288_548),
        (MobileNetV2::spec(), 3_504_872),
    ] {
        let mut model = spec
            .init(WeightStyle::Pytorch, &head, [224, 224, 3], 1000, &device)
            .expect("valid");
        assert_eq!(trainable(&mut model), expected, "{spec:?}");
    }
}

#[test]
fn squeeze_excitation_is_sized_from_the_block_input() {
    let plan = EfficientNetB0::spec().plan();
    // timm: the first block squeezes 32 → 8; a stage-2 block 16·6 = 96 → 4.
    assert_eq!(plan[0][0].squeezed, Some(8));
    assert_eq!(plan[1][0].squeezed, Some(4));
    assert_eq!(plan[1][0].expanded, 96);
    assert_eq!(plan[6][0].squeezed, Some(48));
    let strides: Vec<usize> = plan.iter().map(|s| s[0].stride).collect();
    assert_eq!(strides, vec![1, 2, 2, 2, 1, 2, 1]);
}

#[test]
fn too_small_inputs_and_bad_heads_are_errors() {
    let device = Device::flex();
    let spec = MobileNetV2::spec();
    let rejected = |head: &HeadOptions, input| match spec.init(
        WeightStyle::Pytorch,
        head,
        input,
        2,
        &device,
    ) {
        Ok(_) => panic!("{head:?} at {input:?} should be rejected"),
        Err(e) => e.to_string(),
    };
    let err = rejected(&HeadOptions::default(), [16, 16, 3]);
    assert!(err.contains("too small") && err.contains("17×17"), "{err}");
    let head = HeadOptions {
        dense: vec![8, 0],
        ..HeadOptions::default()
    };
    let err = rejected(&head, [32, 32, 3]);
    assert!(err.contains("dense"), "{err}");
}

/// A model whose BatchNorms are far from identity, as after training.
fn with_statistics(
    spec: &FamilySpec,
    style: WeightStyle,
    head: &HeadOptions,
    input: [usize; 3],
) -> MbConvNet {
    let device = Device::flex().autodiff();
    let mut model = spec.init(style, head, input, 5, &device).expect("valid");
    for bn in model.batch_norms() {
        let [n] = bn.gamma.dims();
        let uniform = |lo, hi| Tensor::<1>::random([n], Distribution::Uniform(lo, hi), &device);
        bn.gamma = Param::from_tensor(uniform(0.5, 1.5));
        bn.beta = Param::from_tensor(uniform(-0.5, 0.5));
        bn.momentum = 0.6;
    }
    let [h, w, c] = input;
    for _ in 0..2 {
        let x = Tensor::<4>::random([3, c, h, w], Distribution::Normal(0.0, 1.0), &device);
        let _ = model.forward(x);
    }
    model.valid()
}

/// Max |Burn − kiln-runtime| over the logits, relative to the largest logit.
fn lowered_error(model: &MbConvNet) -> f32 {
    let [h, w, c] = model.input();
    let device = Device::flex();
    let x = Tensor::<4>::random([1, c, h, w], Distribution::Normal(0.0, 1.0), &device);
    let nchw = x.to_data().try_to_vec::<f32>().expect("f32");
    let expected = model
        .forward(x)
        .into_data()
        .try_to_vec::<f32>()
        .expect("f32");
    let bytes = model
        .lower("parity")
        .expect("lowers")
        .to_bytes()
        .expect("serializes");
    let mut interpreter = Interpreter::from_bytes(bytes).expect("loads");
    interpreter
        .set_input_f32(0, &chw_to_hwc(&nchw, [c, h, w]))
        .expect("input");
    interpreter.invoke().expect("runs");
    let actual = interpreter.output_f32(0).expect("output");
    let scale = expected
        .iter()
        .fold(f32::MIN_POSITIVE, |m, v| m.max(v.abs()));
    expected
        .iter()
        .zip(actual)
        .fold(0.0f32, |m, (e, a)| m.max((e - a).abs()))
        / scale
}

#[test]
fn every_member_lowers_to_what_burn_computes() {
    let notebook_head = HeadOptions {
        dense: vec![24, 8],
        batch_norm: true,
        dropout: 0.2,
        pooling: Pooling::Max,
    };
    let cases = [
        (
            EfficientNetLite0::spec(),
            WeightStyle::Tensorflow,
            HeadOptions::default(),
            [64, 64, 3],
        ),
        (
            EfficientNetB0::spec(),
            WeightStyle::Pytorch,
            notebook_head.clone(),
            [64, 48, 3],
        ),
        (
            MobileNetV2::spec(),
            WeightStyle::Pytorch,
            HeadOptions::default(),
            [35, 35, 3],
        ),
        (
            EfficientNetB0::spec(),
            WeightStyle::Tensorflow,
            HeadOptions::default(),
            [33, 33, 1],
        ),
        (
            MobileNetV2::spec(),
            WeightStyle::Tensorflow,
            notebook_head,
            [64, 64, 3],
        ),
    ];
    for (spec, style, head, input) in cases {
        let model = with_statistics(&spec, style, &head, input);
        let error = lowered_error(&model);
        assert!(
            error <= 1e-4,
            "{:?} {style:?} {head:?} {input:?}: relative error {error:e}",
            spec.activation
        );
    }
}
