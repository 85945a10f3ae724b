//! The naive convolution, forward and both gradients, in f64: what every kernel is tested
//! against.

use crate::Conv2dShape;

fn taps(
    s: &Conv2dShape,
) -> impl Iterator<Item = (usize, usize, usize, usize, usize, usize, usize)> + '_ {
    let [oh_n, ow_n] = s.out_size();
    let (cin_g, cout_g) = (s.in_per_group(), s.out_per_group());
    let s = *s;
    (0..s.batch).flat_map(move |n| {
        (0..s.out_channels).flat_map(move |oc| {
            let g = oc / cout_g;
            (0..oh_n).flat_map(move |oh| {
                (0..ow_n).flat_map(move |ow| {
                    (0..cin_g).flat_map(move |ic| {
                        (0..s.kernel[0]).flat_map(move |i| {
                            (0..s.kernel[1]).filter_map(move |j| {
                                let ih = (oh * s.stride[0] + i * s.dilation[0]) as isize
                                    - s.padding[0].0 as isize;
                                let iw = (ow * s.stride[1] + j * s.dilation[1]) as isize
                                    - s.padding[1].0 as isize;
                                let inside = ih >= 0
                                    && iw >= 0
                                    && (ih as usize) < s.in_size[0]
                                    && (iw as usize) < s.in_size[1];
                                inside.then(|| {
                                    let x = ((n * s.in_channels + g * cin_g + ic) * s.in_size[0]
                                        + ih as usize)
                                        * s.in_size[1]
                                        + iw as usize;
                                    let w = ((oc * cin_g + ic) * s.kernel[0] + i) * s.kernel[1] + j;
                                    let y = ((n * s.out_channels + oc) * oh_n + oh) * ow_n + ow;
                                    (x, w, y, n, oc, oh, ow)
                                })
                            })
                        })
                    })
                })
            })
        })
    })
}

pub fn forward(s: &Conv2dShape, x: &[f32], w: &[f32], b: Option<&[f32]>) -> Vec<f32> {
    let mut y = vec![0.0f64; s.output_len().unwrap()];
    let p = s.out_pixels();
    for (i, v) in y.iter_mut().enumerate() {
        *v = b.map_or(0.0, |b| b[(i / p) % s.out_channels] as f64);
    }
    for (xi, wi, yi, ..) in taps(s) {
        y[yi] += x[xi] as f64 * w[wi] as f64;
    }
    y.into_iter().map(|v| v as f32).collect()
}

pub fn input_grad(s: &Conv2dShape, w: &[f32], dy: &[f32]) -> Vec<f32> {
    let mut dx = vec![0.0f64; s.input_len().unwrap()];
    for (xi, wi, yi, ..) in taps(s) {
        dx[xi] += dy[yi] as f64 * w[wi] as f64;
    }
    dx.into_iter().map(|v| v as f32).collect()
}

pub fn weight_grad(s: &Conv2dShape, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let mut dw = vec![0.0f64; s.weight_len().unwrap()];
    for (xi, wi, yi, ..) in taps(s) {
        dw[wi] += dy[yi] as f64 * x[xi] as f64;
    }
    dw.into_iter().map(|v| v as f32).collect()
}

pub fn bias_grad(s: &Conv2dShape, dy: &[f32]) -> Vec<f32> {
    let p = s.out_pixels();
    let mut db = vec![0.0f64; s.out_channels];
    for (i, v) in dy.iter().enumerate() {
        db[(i / p) % s.out_channels] += *v as f64;
    }
    db.into_iter().map(|v| v as f32).collect()
}
