use super::*;
use crate::architectures::efficientnet_b0::EfficientNetB0;
use crate::architectures::efficientnet_lite0::EfficientNetLite0;
use crate::architectures::mobilenet_v2::MobileNetV2;
use crate::head::Pooling;
use crate::test_support::{lowered_relative_error, move_running_statistics, randomize_batch_norms};

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
    randomize_batch_norms(model.batch_norms(), &device);
    move_running_statistics(&model, input, 2, &device);
    model.valid()
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
        let error = lowered_relative_error(&model, input);
        assert!(
            error <= 1e-4,
            "{:?} {style:?} {head:?} {input:?}: relative error {error:e}",
            spec.activation
        );
    }
}
