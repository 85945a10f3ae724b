//! Kiln's convolution against Burn's own, through autodiff on the flex backend: the same
//! outputs and the same gradients for the input, weight and bias, on random shapes, strides,
//! padding, dilation and groups.

use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};

use super::{conv2d, max_pool2d};

/// Deterministic pseudo-random values in [-1, 1): Burn's seeded generator is global, and tests
/// run concurrently.
fn values<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let len = shape.iter().product();
    let data: Vec<f32> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    Tensor::from_data(TensorData::new(data, shape), device)
}

struct Case {
    batch: usize,
    in_channels: usize,
    out_channels: usize,
    size: [usize; 2],
    kernel: [usize; 2],
    options: ConvOptions<2>,
    bias: bool,
}

fn max_error(a: Tensor<4>, b: Tensor<4>) -> f32 {
    let scale = b.clone().abs().max().into_scalar::<f32>().max(1.0);
    (a - b).abs().max().into_scalar::<f32>() / scale
}

fn grads_of(
    conv: impl Fn(Tensor<4>, Tensor<4>, Option<Tensor<1>>) -> Tensor<4>,
    case: &Case,
    device: &Device,
    seed: u64,
) -> (Tensor<4>, Tensor<4>, Tensor<4>, Option<Tensor<1>>) {
    let [h, w] = case.size;
    let x = values([case.batch, case.in_channels, h, w], seed, device).require_grad();
    let weight_shape = [
        case.out_channels,
        case.in_channels / case.options.groups,
        case.kernel[0],
        case.kernel[1],
    ];
    let weight = values(weight_shape, seed + 1, device).require_grad();
    let bias = case
        .bias
        .then(|| values([case.out_channels], seed + 2, device).require_grad());
    let y = conv(x.clone(), weight.clone(), bias.clone());
    let probe = values(y.dims(), seed + 3, device);
    let grads = (y.clone() * probe).sum().backward();
    let dx = x.grad(&grads).expect("input gradient");
    let dw = weight.grad(&grads).expect("weight gradient");
    let db = bias.and_then(|b| b.grad(&grads));
    (
        y.inner(),
        Tensor::from_inner(dx),
        Tensor::from_inner(dw),
        db.map(Tensor::from_inner),
    )
}

fn check(case: &Case, seed: u64) {
    let device = Device::flex().autodiff();
    let options = case.options.clone();
    let kiln = grads_of(
        |x, w, b| conv2d(x, w, b, options.clone()),
        case,
        &device,
        seed,
    );
    let burn = grads_of(
        |x, w, b| burn::tensor::module::conv2d(x, w, b, options.clone()),
        case,
        &device,
        seed,
    );
    for (name, a, b) in [
        ("output", kiln.0, burn.0),
        ("input gradient", kiln.1, burn.1),
        ("weight gradient", kiln.2, burn.2),
    ] {
        let err = max_error(a.inner(), b.inner());
        assert!(
            err < 1e-4,
            "{name}: relative error {err} for {:?} {:?}",
            case.size,
            case.options
        );
    }
    if let (Some(a), Some(b)) = (kiln.3, burn.3) {
        let err = max_error(a.inner().unsqueeze(), b.inner().unsqueeze());
        assert!(err < 1e-4, "bias gradient: relative error {err}");
    }
}

#[test]
fn gradients_equal_burns_own_convolution() {
    let mut seed = 0u64;
    let mut next = |modulo: usize| {
        // A small deterministic generator: the shapes stay the same run to run.
        seed = seed
            .wrapping_mul(6364136223846793005u64)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) as usize) % modulo
    };
    for case_index in 0..40 {
        let groups = [1, 1, 2, 3][next(4)];
        let depthwise = case_index % 3 == 0;
        let (in_channels, out_channels, groups) = if depthwise {
            let c = 1 + next(6);
            (c, c, c)
        } else {
            (groups * (1 + next(4)), groups * (1 + next(4)), groups)
        };
        let kernel = [1 + next(5), 1 + next(5)];
        let dilation = [1 + next(2), 1 + next(2)];
        let stride = [1 + next(3), 1 + next(3)];
        let padding = [(next(3), next(3)), (next(3), next(3))];
        let size = [0, 1].map(|a| dilation[a] * (kernel[a] - 1) + 1 + next(8));
        let case = Case {
            batch: 1 + next(5),
            in_channels,
            out_channels,
            size,
            kernel,
            options: ConvOptions::new_with_padding(stride, padding, dilation, groups),
            bias: next(2) == 0,
        };
        check(&case, case_index as u64);
    }
}

#[test]
fn other_backends_keep_burns_convolution() {
    #[allow(deprecated)]
    let device = Device::ndarray();
    let x = Tensor::<4>::ones([1, 2, 5, 5], &device);
    let w = Tensor::<4>::ones([3, 2, 3, 3], &device);
    let y = conv2d(x, w, None, ConvOptions::new([1, 1], [1, 1], [1, 1], 1));
    assert_eq!(y.dims(), [1, 3, 5, 5]);
    assert_eq!(y.slice([0..1, 0..1, 2..3, 2..3]).into_scalar::<f32>(), 18.0);
}

#[test]
fn frozen_weights_get_no_gradient_and_inputs_still_do() {
    let device = Device::flex().autodiff();
    let x = Tensor::<4>::ones([2, 3, 6, 6], &device).require_grad();
    let w = Tensor::<4>::ones([4, 3, 3, 3], &device);
    let y = conv2d(
        x.clone(),
        w.clone(),
        None,
        ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
    );
    let grads = y.sum().backward();
    assert!(w.grad(&grads).is_none());
    // each interior input pixel feeds 9 outputs of each of the 4 filters
    let dx = x.grad(&grads).expect("input gradient");
    assert_eq!(
        dx.slice([0..1, 0..1, 2..3, 2..3]).into_scalar::<f32>(),
        36.0
    );
}

#[test]
fn max_pooling_and_its_gradient_equal_burns() {
    let device = Device::flex().autodiff();
    for (i, (kernel, stride, padding, ceil_mode, size)) in [
        ([2, 2], [2, 2], [0, 0], false, [12, 12]),
        ([2, 2], [2, 2], [0, 0], false, [11, 13]),
        ([3, 3], [2, 2], [1, 1], false, [9, 10]),
        ([3, 2], [1, 2], [1, 0], true, [7, 9]),
    ]
    .into_iter()
    .enumerate()
    {
        let options = MaxPoolOptions::new(kernel)
            .with_stride(stride)
            .with_padding(padding)
            .with_ceil_mode(ceil_mode);
        let run = |pool: &dyn Fn(Tensor<4>) -> Tensor<4>| {
            let x = values([3, 4, size[0], size[1]], i as u64, &device).require_grad();
            let y = pool(x.clone());
            let probe = values(y.dims(), 100 + i as u64, &device);
            let grads = (y.clone() * probe).sum().backward();
            (
                y.inner(),
                Tensor::<4>::from_inner(x.grad(&grads).expect("input gradient")),
            )
        };
        let (kiln_y, kiln_dx) = run(&|x| max_pool2d(x, options.clone()));
        let (burn_y, burn_dx) = run(&|x| burn::tensor::module::max_pool2d(x, options.clone()));
        assert_eq!(kiln_y.dims(), burn_y.dims(), "case {i}");
        assert!(max_error(kiln_y, burn_y) < 1e-6, "output, case {i}");
        assert!(
            max_error(kiln_dx.inner(), burn_dx.inner()) < 1e-6,
            "input gradient, case {i}"
        );
    }
}

#[test]
fn relu6_and_its_gradient_equal_burns() {
    let device = Device::flex().autodiff();
    let run = |activation: &dyn Fn(Tensor<3>) -> Tensor<3>| {
        let x = values([4, 5, 33], 7, &device)
            .mul_scalar(8.0)
            .require_grad();
        let y = activation(x.clone());
        let grads = (y.clone() * values([4, 5, 33], 8, &device))
            .sum()
            .backward();
        let dx = Tensor::<3>::from_inner(x.grad(&grads).expect("input gradient"));
        (y.inner(), dx.inner())
    };
    for (kiln, burn) in [
        (run(&super::relu6), run(&burn::tensor::activation::relu6)),
        (run(&super::relu), run(&burn::tensor::activation::relu)),
    ] {
        assert_eq!(kiln.0.into_data(), burn.0.into_data());
        assert_eq!(kiln.1.into_data(), burn.1.into_data());
    }
}

#[test]
fn batch_norm_training_equals_burns_outputs_gradients_and_running_statistics() {
    use burn::nn::BatchNormConfig;
    let device = Device::flex().autodiff();
    let run = |forward: &dyn Fn(&burn::nn::BatchNorm, Tensor<4>) -> Tensor<4>| {
        let bn = BatchNormConfig::new(5).init(&device);
        let bn = burn::nn::BatchNorm {
            gamma: burn::module::Param::from_tensor(values([5], 11, &device).add_scalar(1.5)),
            beta: burn::module::Param::from_tensor(values([5], 12, &device)),
            ..bn
        };
        let x = values([3, 5, 7, 6], 13, &device)
            .mul_scalar(3.0)
            .add_scalar(0.5)
            .require_grad();
        let mut outputs = Vec::new();
        // two steps: the second starts from the first's running statistics
        for step in 0..2 {
            let y = forward(&bn, x.clone().mul_scalar(1.0 + step as f32));
            let grads = (y.clone() * values(y.dims(), 14, &device)).sum().backward();
            outputs.push(y.inner().into_data());
            outputs.push(
                Tensor::<4>::from_inner(x.grad(&grads).expect("x"))
                    .inner()
                    .into_data(),
            );
            outputs.push(
                Tensor::<1>::from_inner(bn.gamma.val().grad(&grads).expect("gamma")).into_data(),
            );
            outputs.push(
                Tensor::<1>::from_inner(bn.beta.val().grad(&grads).expect("beta")).into_data(),
            );
        }
        outputs.push(bn.running_mean.value().into_data());
        outputs.push(bn.running_var.value().into_data());
        outputs
    };
    let kiln = run(&|bn, x| super::batch_norm(bn, x));
    let burn = run(&|bn, x| bn.forward(x));
    for (k, b) in kiln.into_iter().zip(burn) {
        k.assert_approx_eq::<f32>(&b, burn::tensor::Tolerance::absolute(2e-4));
    }
}

#[test]
fn batch_norm_on_running_statistics_equals_burns_with_gradients() {
    use burn::module::Module;
    use burn::nn::BatchNormConfig;
    let device = Device::flex().autodiff();
    let bn = BatchNormConfig::new(4).init(&device);
    let bn = burn::nn::BatchNorm {
        gamma: burn::module::Param::from_tensor(values([4], 21, &device).add_scalar(1.5)),
        beta: burn::module::Param::from_tensor(values([4], 22, &device)),
        ..bn
    };
    bn.running_mean.update(values([4], 23, &device));
    bn.running_var
        .update(values([4], 24, &device).add_scalar(1.5));
    // BackboneMode::FineTuned: BatchNorm flags frozen (running statistics), weights trainable.
    let bn = bn.freeze().set_require_grad(true);
    let run = |forward: &dyn Fn(Tensor<4>) -> Tensor<4>| {
        let x = values([2, 4, 5, 3], 25, &device)
            .mul_scalar(2.0)
            .require_grad();
        let y = forward(x.clone());
        let grads = (y.clone() * values(y.dims(), 26, &device)).sum().backward();
        vec![
            y.inner().into_data(),
            Tensor::<4>::from_inner(x.grad(&grads).expect("x"))
                .inner()
                .into_data(),
            Tensor::<1>::from_inner(bn.gamma.val().grad(&grads).expect("gamma")).into_data(),
            Tensor::<1>::from_inner(bn.beta.val().grad(&grads).expect("beta")).into_data(),
        ]
    };
    let kiln = run(&|x| super::batch_norm(&bn, x));
    let burn = run(&|x| bn.forward(x));
    for (k, b) in kiln.into_iter().zip(burn) {
        k.assert_approx_eq::<f32>(&b, burn::tensor::Tolerance::absolute(1e-4));
    }
    // and plain inference on the flex device
    let bn = bn.valid();
    let x = values([2, 4, 5, 3], 27, &Device::flex());
    super::batch_norm(&bn, x.clone())
        .into_data()
        .assert_approx_eq::<f32>(
            &bn.forward(x).into_data(),
            burn::tensor::Tolerance::absolute(1e-5),
        );
}

/// The fused conv → ReLU → pool block against the three operations apart (Kiln's, which the
/// tests above hold to Burn's), through autodiff: the same pooled output and the same input,
/// weight and bias gradients; and no input gradient where the input needs none.
#[test]
fn fused_conv_relu_pool_equals_the_three_ops() {
    use super::{conv2d_relu_max_pool, relu};
    let device = Device::flex().autodiff();
    let pool = || MaxPoolOptions::new([2, 2]).with_stride([2, 2]);
    for (seed, (batch, cin, cout, size)) in [(2, 1, 8, [12, 13]), (3, 6, 20, [11, 9])]
        .into_iter()
        .enumerate()
    {
        let seed = seed as u64 * 10;
        let x = values([batch, cin, size[0], size[1]], seed, &device).require_grad();
        let weight = values([cout, cin, 3, 3], seed + 1, &device).require_grad();
        let bias = values([cout], seed + 2, &device).require_grad();
        let options = ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
        let head = values(
            [batch, cout, (size[0] - 2) / 2, (size[1] - 2) / 2],
            seed + 3,
            &device,
        );

        let fused = conv2d_relu_max_pool(x.clone(), weight.clone(), bias.clone(), options.clone());
        let apart = max_pool2d(
            relu(conv2d(
                x.clone(),
                weight.clone(),
                Some(bias.clone()),
                options,
            )),
            pool(),
        );
        assert!(max_error(fused.clone(), apart.clone()) < 1e-6);
        let grads_fused = (fused * head.clone()).sum().backward();
        let grads_apart = (apart * head).sum().backward();
        let grad = |g: &_, t: &Tensor<4>| t.grad(g).unwrap();
        assert!(max_error(grad(&grads_fused, &x), grad(&grads_apart, &x)) < 1e-5);
        assert!(max_error(grad(&grads_fused, &weight), grad(&grads_apart, &weight)) < 1e-5);
        let bias_error = (bias.grad(&grads_fused).unwrap() - bias.grad(&grads_apart).unwrap())
            .abs()
            .max()
            .into_scalar::<f32>();
        assert!(bias_error < 1e-4, "{bias_error}");
    }
    // A first layer: the input needs no gradient, the parameters still get theirs.
    let x = values([2, 3, 10, 10], 7, &device);
    let weight = values([16, 3, 3, 3], 8, &device).require_grad();
    let bias = values([16], 9, &device).require_grad();
    let y = conv2d_relu_max_pool(
        x.clone(),
        weight.clone(),
        bias,
        ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
    );
    let grads = y.sum().backward();
    assert!(x.grad(&grads).is_none());
    assert!(weight.grad(&grads).is_some());
}
