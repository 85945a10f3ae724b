//! GFLOP/s of each convolution kernel on the layers Kiln trains: the quickstart CNN, the
//! 64×64 three-conv CNN and EfficientNet-Lite0's depthwise and pointwise layers.
//!   cargo bench -p kiln-kernels --bench conv

use std::time::Instant;

use kiln_kernels::{
    Conv2dShape, conv2d_forward, conv2d_input_grad, conv2d_relu_pool_backward,
    conv2d_relu_pool_forward, conv2d_weight_grad,
};

fn conv(
    batch: usize,
    cin: usize,
    size: usize,
    cout: usize,
    k: usize,
    stride: usize,
    groups: usize,
) -> Conv2dShape {
    let pad = if k == 1 { 0 } else { k / 2 };
    Conv2dShape {
        batch,
        in_channels: cin,
        in_size: [size, size],
        out_channels: cout,
        kernel: [k, k],
        stride: [stride, stride],
        padding: [(pad, pad); 2],
        dilation: [1, 1],
        groups,
    }
}

fn valid(mut s: Conv2dShape) -> Conv2dShape {
    s.padding = [(0, 0); 2];
    s
}

fn time(mut f: impl FnMut()) -> f64 {
    f();
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        f();
        best = best.min(start.elapsed().as_secs_f64());
    }
    best
}

fn main() {
    let cases = [
        (
            "quickstart conv1 1→32 26×26",
            valid(conv(64, 1, 28, 32, 3, 1, 1)),
        ),
        (
            "quickstart conv2 32→64 11×11",
            valid(conv(64, 32, 13, 64, 3, 1, 1)),
        ),
        ("64×64 cnn conv1 3→32", valid(conv(64, 3, 64, 32, 3, 1, 1))),
        (
            "64×64 cnn conv2 32→64",
            valid(conv(64, 32, 31, 64, 3, 1, 1)),
        ),
        (
            "64×64 cnn conv3 64→128",
            valid(conv(64, 64, 14, 128, 3, 1, 1)),
        ),
        ("lite0 dw3×3 96ch 56×56 s1", conv(16, 96, 56, 96, 3, 1, 96)),
        (
            "lite0 dw5×5 240ch 28×28 s2",
            conv(16, 240, 28, 240, 5, 2, 240),
        ),
        ("lite0 pw 144→24 56×56", conv(16, 144, 56, 24, 1, 1, 1)),
        (
            "mnv2@96 dw3×3 144ch 24×24 s2",
            conv(64, 144, 24, 144, 3, 2, 144),
        ),
        (
            "mnv2@96 dw3×3 576ch 6×6 s1",
            conv(64, 576, 6, 576, 3, 1, 576),
        ),
        (
            "mnv2@96 dw3×3 960ch 3×3 s1",
            conv(64, 960, 3, 960, 3, 1, 960),
        ),
        ("lite0 pw 672→112 14×14", conv(16, 672, 14, 112, 1, 1, 1)),
    ];
    println!(
        "{:<30} {:>12} {:>12} {:>12}   (GFLOP/s, {} threads)",
        "layer",
        "forward",
        "input grad",
        "weight grad",
        rayon::current_num_threads()
    );
    for (name, s) in cases {
        let x = vec![0.5f32; s.input_len().unwrap()];
        let w = vec![0.25f32; s.weight_len().unwrap()];
        let mut y = vec![0.0f32; s.output_len().unwrap()];
        let mut dx = x.clone();
        let mut dw = w.clone();
        let flops = 2.0 * (s.output_len().unwrap() * s.col_rows()) as f64;
        let f = time(|| conv2d_forward(&s, &x, &w, None, &mut y).unwrap());
        let dy = y.clone();
        let i = time(|| conv2d_input_grad(&s, &w, &dy, &mut dx).unwrap());
        let g = time(|| conv2d_weight_grad(&s, &x, &dy, &mut dw).unwrap());
        println!(
            "{name:<30} {:>12.1} {:>12.1} {:>12.1}",
            flops / f / 1e9,
            flops / i / 1e9,
            flops / g / 1e9
        );
    }
    fused_blocks();
}

/// The fused conv → ReLU → 2×2 pool blocks of the two CNNs, batch 64: milliseconds per
/// forward and per backward (input gradient only where training needs one: not the first
/// layer), and the GFLOP/s of their convolutions.
fn fused_blocks() {
    println!(
        "\n{:<30} {:>12} {:>12} {:>12}   (fused conv-ReLU-pool, batch 64)",
        "block", "forward ms", "backward ms", "GFLOP/s"
    );
    let blocks = [
        (
            "quickstart block 1",
            valid(conv(64, 1, 28, 32, 3, 1, 1)),
            false,
        ),
        (
            "quickstart block 2",
            valid(conv(64, 32, 13, 64, 3, 1, 1)),
            true,
        ),
        (
            "64×64 cnn block 1",
            valid(conv(64, 3, 64, 32, 3, 1, 1)),
            false,
        ),
        (
            "64×64 cnn block 2",
            valid(conv(64, 32, 31, 64, 3, 1, 1)),
            true,
        ),
        (
            "64×64 cnn block 3",
            valid(conv(64, 64, 14, 128, 3, 1, 1)),
            true,
        ),
    ];
    for (name, s, input_grad) in blocks {
        let x: Vec<f32> = (0..s.input_len().unwrap())
            .map(|i| ((i % 17) as f32 - 8.0) / 8.0)
            .collect();
        let w: Vec<f32> = (0..s.weight_len().unwrap())
            .map(|i| ((i % 13) as f32 - 6.0) / 40.0)
            .collect();
        let b = vec![0.01f32; s.out_channels];
        let (pooled, codes) = conv2d_relu_pool_forward(&s, &x, &w, Some(&b)).unwrap();
        let forward = time(|| {
            conv2d_relu_pool_forward(&s, &x, &w, Some(&b)).unwrap();
        });
        let backward = time(|| {
            conv2d_relu_pool_backward(&s, &x, &w, &codes, &pooled, input_grad).unwrap();
        });
        let product = 2.0 * (s.output_len().unwrap() * s.col_rows()) as f64;
        let flops = product * if input_grad { 3.0 } else { 2.0 };
        println!(
            "{name:<30} {:>12.2} {:>12.2} {:>12.1}",
            forward * 1e3,
            backward * 1e3,
            flops / (forward + backward) / 1e9
        );
    }
}
