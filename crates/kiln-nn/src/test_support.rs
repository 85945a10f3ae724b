//! What the architectures' parity tests share: BatchNorms moved away from identity, and the
//! relative error between a network's Burn forward pass and its lowered file in kiln-runtime.

use burn::module::Param;
use burn::nn::BatchNorm;
use burn::prelude::*;
use burn::tensor::Distribution;
use kiln_runtime::Interpreter;

use crate::Classifier;
use crate::lowering::chw_to_hwc;

/// Random γ and β, and a momentum that lets a few training-mode passes move the running
/// statistics far from their (0, 1) start.
pub fn randomize_batch_norms(norms: Vec<&mut BatchNorm>, device: &Device) {
    for bn in norms {
        let [n] = bn.gamma.dims();
        let uniform = |lo, hi| Tensor::<1>::random([n], Distribution::Uniform(lo, hi), device);
        bn.gamma = Param::from_tensor(uniform(0.5, 1.5));
        bn.beta = Param::from_tensor(uniform(-0.5, 0.5));
        bn.momentum = 0.6;
    }
}

/// `passes` training-mode forward passes of random [batch, C, H, W] images.
pub fn move_running_statistics<M: Classifier>(
    model: &M,
    [h, w, c]: [usize; 3],
    passes: usize,
    device: &Device,
) {
    for _ in 0..passes {
        let x = Tensor::<4>::random([4, c, h, w], Distribution::Normal(0.0, 1.0), device);
        let _ = model.forward(x);
    }
}

/// Max |Burn − kiln-runtime| over the logits of one random image, relative to the largest
/// logit's magnitude.
pub fn lowered_relative_error<M: Classifier>(model: &M, [h, w, c]: [usize; 3]) -> f32 {
    let x = Tensor::<4>::random(
        [1, c, h, w],
        Distribution::Normal(0.0, 1.0),
        &Device::flex(),
    );
    let nchw = x.to_data().try_to_vec::<f32>().expect("f32 input");
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
    assert_eq!(actual.len(), expected.len());
    let scale = expected
        .iter()
        .fold(f32::MIN_POSITIVE, |m, v| m.max(v.abs()));
    let diff = expected
        .iter()
        .zip(actual)
        .fold(0.0f32, |m, (e, a)| m.max((e - a).abs()));
    diff / scale
}
