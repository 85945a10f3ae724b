//! Every kernel against the naive f64 convolution, on random shapes, strides, padding,
//! dilation and groups (tract's property tests are the model).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{
    Conv2dShape, conv2d_bias_grad, conv2d_forward, conv2d_forward_vec, conv2d_input_grad,
    conv2d_input_grad_vec, conv2d_weight_grad, reference,
};

fn random(rng: &mut StdRng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// Every value within 1e-4, relative, of the f64 reference's.
pub(crate) fn assert_close(kind: &str, shape: &Conv2dShape, actual: &[f32], expected: &[f32]) {
    assert_eq!(actual.len(), expected.len());
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= 1e-4 * (1.0 + e.abs()),
            "{kind} [{i}]: {a} vs {e} for {shape:?}"
        );
    }
}

fn check(shape: &Conv2dShape, rng: &mut StdRng) {
    shape.validate().unwrap();
    let x = random(rng, shape.input_len().unwrap());
    let w = random(rng, shape.weight_len().unwrap());
    let b = random(rng, shape.out_channels);
    let dy = random(rng, shape.output_len().unwrap());

    let mut y = vec![f32::NAN; dy.len()];
    conv2d_forward(shape, &x, &w, Some(&b), &mut y).unwrap();
    assert_close(
        "forward",
        shape,
        &y,
        &reference::forward(shape, &x, &w, Some(&b)),
    );
    conv2d_forward(shape, &x, &w, None, &mut y).unwrap();
    assert_close(
        "forward without bias",
        shape,
        &y,
        &reference::forward(shape, &x, &w, None),
    );

    // The allocating forms (never zeroed first) give the slice forms' bits.
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    for bias in [None, Some(&b[..])] {
        conv2d_forward(shape, &x, &w, bias, &mut y).unwrap();
        let allocated = conv2d_forward_vec(shape, &x, &w, bias).unwrap();
        assert_eq!(bits(&allocated), bits(&y), "{shape:?} forward_vec");
    }

    let mut dx = vec![f32::NAN; x.len()];
    conv2d_input_grad(shape, &w, &dy, &mut dx).unwrap();
    assert_close(
        "input gradient",
        shape,
        &dx,
        &reference::input_grad(shape, &w, &dy),
    );
    let allocated = conv2d_input_grad_vec(shape, &w, &dy).unwrap();
    assert_eq!(bits(&allocated), bits(&dx), "{shape:?} input_grad_vec");

    let mut dw = vec![f32::NAN; w.len()];
    conv2d_weight_grad(shape, &x, &dy, &mut dw).unwrap();
    assert_close(
        "weight gradient",
        shape,
        &dw,
        &reference::weight_grad(shape, &x, &dy),
    );

    let mut db = vec![f32::NAN; b.len()];
    conv2d_bias_grad(shape, &dy, &mut db).unwrap();
    assert_close(
        "bias gradient",
        shape,
        &db,
        &reference::bias_grad(shape, &dy),
    );
}

fn random_shape(rng: &mut StdRng, depthwise: bool) -> Conv2dShape {
    let groups = if depthwise {
        rng.random_range(1..6)
    } else {
        [1, 1, 2, 3][rng.random_range(0..4)]
    };
    let in_channels = if depthwise {
        groups
    } else {
        groups * rng.random_range(1..5)
    };
    let out_channels = if depthwise {
        groups
    } else {
        groups * rng.random_range(1..5)
    };
    let kernel = [rng.random_range(1..6), rng.random_range(1..6)];
    let dilation = [rng.random_range(1..3), rng.random_range(1..3)];
    let stride = [rng.random_range(1..4), rng.random_range(1..4)];
    let padding = [
        (rng.random_range(0..3), rng.random_range(0..3)),
        (rng.random_range(0..3), rng.random_range(0..3)),
    ];
    let reach = |axis: usize| dilation[axis] * (kernel[axis] - 1) + 1;
    let in_size = [0, 1].map(|axis| reach(axis) + rng.random_range(0..9));
    Conv2dShape {
        batch: rng.random_range(1..11),
        in_channels,
        in_size,
        out_channels,
        kernel,
        stride,
        padding,
        dilation,
        groups,
    }
}

#[test]
fn dense_and_grouped_kernels_match_the_naive_convolution() {
    let mut rng = StdRng::seed_from_u64(1);
    for _ in 0..150 {
        let shape = random_shape(&mut rng, false);
        check(&shape, &mut rng);
    }
}

#[test]
fn depthwise_kernels_match_the_naive_convolution() {
    let mut rng = StdRng::seed_from_u64(2);
    for _ in 0..150 {
        let shape = random_shape(&mut rng, true);
        assert!(shape.is_depthwise());
        check(&shape, &mut rng);
    }
}

#[test]
fn network_shapes_match_the_naive_convolution() {
    let mut rng = StdRng::seed_from_u64(3);
    let conv = |batch, cin, size, cout, k: usize, stride: usize, groups| {
        let pad = k / 2;
        Conv2dShape {
            batch,
            in_channels: cin,
            in_size: [size, size],
            out_channels: cout,
            kernel: [k, k],
            stride: [stride, stride],
            // TensorFlow's SAME at stride 2 pads less at the top-left
            padding: if stride == 2 {
                [(pad - 1.min(pad), pad); 2]
            } else {
                [(pad, pad); 2]
            },
            dilation: [1, 1],
            groups,
        }
    };
    for shape in [
        conv(3, 1, 28, 32, 3, 1, 1),   // the quickstart CNN
        conv(2, 3, 33, 16, 3, 2, 1),   // a stem
        conv(2, 24, 17, 24, 3, 1, 24), // depthwise 3×3
        conv(2, 40, 18, 40, 5, 2, 40), // depthwise 5×5 stride 2
        conv(2, 32, 9, 48, 1, 1, 1),   // pointwise
        conv(1, 16, 19, 64, 3, 1, 1),  // one image: products over the pool
        conv(17, 8, 6, 12, 3, 1, 2),   // more images than partial sums
    ] {
        check(&shape, &mut rng);
    }
}

#[test]
fn results_are_bit_identical_run_to_run() {
    let mut rng = StdRng::seed_from_u64(4);
    for depthwise in [false, true] {
        let mut shape = random_shape(&mut rng, depthwise);
        shape.batch = 13;
        let x = random(&mut rng, shape.input_len().unwrap());
        let dy = random(&mut rng, shape.output_len().unwrap());
        let grad = || {
            let mut dw = vec![0.0; shape.weight_len().unwrap()];
            conv2d_weight_grad(&shape, &x, &dy, &mut dw).unwrap();
            dw
        };
        let first = grad();
        for _ in 0..5 {
            assert_eq!(grad(), first);
        }
    }
}

#[test]
fn mismatched_buffers_are_errors_not_panics() {
    let shape = Conv2dShape {
        batch: 2,
        in_channels: 3,
        in_size: [5, 5],
        out_channels: 4,
        kernel: [3, 3],
        stride: [1, 1],
        padding: [(0, 0), (0, 0)],
        dilation: [1, 1],
        groups: 1,
    };
    let x = vec![0.0; shape.input_len().unwrap()];
    let w = vec![0.0; shape.weight_len().unwrap()];
    let mut y = vec![0.0; shape.output_len().unwrap() - 1];
    let err = conv2d_forward(&shape, &x, &w, None, &mut y).unwrap_err();
    assert!(err.to_string().contains("output holds"), "{err}");
    let mut bad = shape;
    bad.groups = 2;
    assert!(conv2d_forward(&bad, &x, &w, None, &mut y).is_err());
}

#[test]
fn both_depthwise_layouts_match_the_naive_convolution() {
    let mut rng = StdRng::seed_from_u64(5);
    for _ in 0..60 {
        let s = random_shape(&mut rng, true);
        let x = random(&mut rng, s.input_len().unwrap());
        let w = random(&mut rng, s.weight_len().unwrap());
        let b = random(&mut rng, s.out_channels);
        let dy = random(&mut rng, s.output_len().unwrap());
        let (y_ref, dx_ref, dw_ref) = (
            reference::forward(&s, &x, &w, Some(&b)),
            reference::input_grad(&s, &w, &dy),
            reference::weight_grad(&s, &x, &dy),
        );
        let mut y = vec![f32::NAN; dy.len()];
        let mut dx = vec![f32::NAN; x.len()];
        let mut dw = vec![f32::NAN; w.len()];
        crate::depthwise::forward(&s, &x, &w, Some(&b), &mut y);
        crate::depthwise::input_grad(&s, &w, &dy, &mut dx);
        crate::depthwise::weight_grad(&s, &x, &dy, &mut dw);
        assert_close("per-plane forward", &s, &y, &y_ref);
        assert_close("per-plane input gradient", &s, &dx, &dx_ref);
        assert_close("per-plane weight gradient", &s, &dw, &dw_ref);
        crate::depthwise_nhwc::forward(&s, &x, &w, Some(&b), &mut y);
        crate::depthwise_nhwc::input_grad(&s, &w, &dy, &mut dx);
        crate::depthwise_nhwc::weight_grad(&s, &x, &dy, &mut dw);
        assert_close("channels-last forward", &s, &y, &y_ref);
        assert_close("channels-last input gradient", &s, &dx, &dx_ref);
        assert_close("channels-last weight gradient", &s, &dw, &dw_ref);
    }
}
