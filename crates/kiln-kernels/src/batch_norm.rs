//! Batch normalization in training: per-channel batch statistics, the normalized output, and
//! the gradients for the input, scale and shift — each a pass over the activation with
//! channels (for the sums) or planes (for the element-wise parts) in parallel. Burn's generic
//! version transposes the activation channel-first for every reduction.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::KernelError;
use crate::simd::{LANES, Math, multiversion, sum};
use crate::uninit::{as_uninit, new_output};

/// An `[batch, channels, pixels…]` activation normalized per channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchNormShape {
    pub batch: usize,
    pub channels: usize,
    /// Elements per (image, channel) plane.
    pub pixels: usize,
}

impl BatchNormShape {
    fn len(&self) -> Option<usize> {
        self.batch
            .checked_mul(self.channels)?
            .checked_mul(self.pixels)
    }

    fn check(&self, buffers: &[(&'static str, usize, usize)]) -> Result<(), KernelError> {
        let len = self
            .len()
            .ok_or_else(|| KernelError::Shape("batch norm sizes overflow usize".into()))?;
        if self.batch * self.pixels == 0 {
            return Err(KernelError::Shape(format!(
                "batch norm of {self:?} has no values to take statistics of"
            )));
        }
        for &(buffer, actual, per) in buffers {
            let expected = if per == 0 { len } else { self.channels };
            if actual != expected {
                return Err(KernelError::BufferLength {
                    buffer,
                    expected,
                    actual,
                });
            }
        }
        Ok(())
    }

    fn plane(&self, n: usize, c: usize) -> std::ops::Range<usize> {
        let start = (n * self.channels + c) * self.pixels;
        start..start + self.pixels
    }
}

/// Per channel: `mean`, the biased `variance`, and `y = (x − mean) / √(variance + ε) · γ + β`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_train_forward(
    shape: &BatchNormShape,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    epsilon: f32,
    y: &mut [f32],
    mean: &mut [f32],
    variance: &mut [f32],
) -> Result<(), KernelError> {
    forward_into(shape, x, gamma, beta, epsilon, as_uninit(y), mean, variance)
}

/// [`batch_norm_train_forward`] into a new output, never zeroed first.
pub fn batch_norm_train_forward_vec(
    shape: &BatchNormShape,
    x: &[f32],
    (gamma, beta): (&[f32], &[f32]),
    epsilon: f32,
    (mean, variance): (&mut [f32], &mut [f32]),
) -> Result<Vec<f32>, KernelError> {
    // SAFETY: `forward_into` writes every plane of `y` once its lengths check.
    unsafe {
        new_output(x.len(), |y| {
            forward_into(shape, x, gamma, beta, epsilon, y, mean, variance)
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn forward_into(
    shape: &BatchNormShape,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    epsilon: f32,
    y: &mut [MaybeUninit<f32>],
    mean: &mut [f32],
    variance: &mut [f32],
) -> Result<(), KernelError> {
    shape.check(&[
        ("input", x.len(), 0),
        ("output", y.len(), 0),
        ("gamma", gamma.len(), 1),
        ("beta", beta.len(), 1),
        ("mean", mean.len(), 1),
        ("variance", variance.len(), 1),
    ])?;
    let count = (shape.batch * shape.pixels) as f64;
    mean.par_iter_mut()
        .zip(variance.par_iter_mut())
        .enumerate()
        .for_each(|(c, (mean, variance))| {
            let planes = || (0..shape.batch).map(|n| &x[shape.plane(n, c)]);
            let m = planes().map(|p| sum(p) as f64).sum::<f64>() / count;
            let v = planes()
                .map(|p| squared_deviation(p, m as f32) as f64)
                .sum::<f64>()
                / count;
            *mean = m as f32;
            *variance = v as f32;
        });
    let (mean, variance) = (&*mean, &*variance);
    y.par_chunks_mut(shape.pixels)
        .zip(x.par_chunks(shape.pixels))
        .enumerate()
        .for_each(|(plane, (y, x))| {
            let c = plane % shape.channels;
            let scale = gamma[c] / (variance[c] + epsilon).sqrt();
            affine(x, scale, beta[c] - mean[c] * scale, y);
        });
    Ok(())
}

/// The gradients of [`batch_norm_train_forward`]'s output: `dx`, `dgamma`, `dbeta`.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_train_backward(
    shape: &BatchNormShape,
    x: &[f32],
    gamma: &[f32],
    statistics: (&[f32], &[f32]),
    epsilon: f32,
    dy: &[f32],
    dx: &mut [f32],
    gradients: (&mut [f32], &mut [f32]),
) -> Result<(), KernelError> {
    backward_into(
        shape,
        x,
        gamma,
        statistics,
        epsilon,
        dy,
        as_uninit(dx),
        gradients,
    )
}

/// [`batch_norm_train_backward`] with `dx` in a new vector, never zeroed first.
pub fn batch_norm_train_backward_vec(
    shape: &BatchNormShape,
    (x, gamma): (&[f32], &[f32]),
    statistics: (&[f32], &[f32]),
    epsilon: f32,
    dy: &[f32],
    gradients: (&mut [f32], &mut [f32]),
) -> Result<Vec<f32>, KernelError> {
    // SAFETY: `backward_into` writes every plane of `dx` once its lengths check.
    unsafe {
        new_output(x.len(), |dx| {
            backward_into(shape, x, gamma, statistics, epsilon, dy, dx, gradients)
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn backward_into(
    shape: &BatchNormShape,
    x: &[f32],
    gamma: &[f32],
    (mean, variance): (&[f32], &[f32]),
    epsilon: f32,
    dy: &[f32],
    dx: &mut [MaybeUninit<f32>],
    (dgamma, dbeta): (&mut [f32], &mut [f32]),
) -> Result<(), KernelError> {
    shape.check(&[
        ("input", x.len(), 0),
        ("output gradient", dy.len(), 0),
        ("input gradient", dx.len(), 0),
        ("gamma", gamma.len(), 1),
        ("mean", mean.len(), 1),
        ("variance", variance.len(), 1),
        ("gamma gradient", dgamma.len(), 1),
        ("beta gradient", dbeta.len(), 1),
    ])?;
    // dbeta = Σ dy, dgamma = Σ dy · x̂ with x̂ = (x − mean) · inv_std.
    dgamma
        .par_iter_mut()
        .zip(dbeta.par_iter_mut())
        .enumerate()
        .for_each(|(c, (dgamma, dbeta))| {
            let inv_std = 1.0 / (variance[c] + epsilon).sqrt();
            let (mut sum_dy, mut sum_dy_centered) = (0.0f64, 0.0f64);
            for n in 0..shape.batch {
                let range = shape.plane(n, c);
                sum_dy += sum(&dy[range.clone()]) as f64;
                sum_dy_centered += centered_dot(&dy[range.clone()], &x[range], mean[c]) as f64;
            }
            *dbeta = sum_dy as f32;
            *dgamma = (sum_dy_centered * inv_std as f64) as f32;
        });
    // dx = γ · inv_std · (dy − dbeta / count − x̂ · dgamma / count)
    let count = (shape.batch * shape.pixels) as f32;
    let (dgamma, dbeta) = (&*dgamma, &*dbeta);
    dx.par_chunks_mut(shape.pixels)
        .zip(dy.par_chunks(shape.pixels).zip(x.par_chunks(shape.pixels)))
        .enumerate()
        .for_each(|(plane, (dx, (dy, x)))| {
            let c = plane % shape.channels;
            let inv_std = 1.0 / (variance[c] + epsilon).sqrt();
            let k = gamma[c] * inv_std;
            // dx = k·dy − k·dbeta/count − k·inv_std·dgamma/count · (x − mean)
            let slope = k * inv_std * dgamma[c] / count;
            let offset = -k * dbeta[c] / count + slope * mean[c];
            input_grad_plane(dy, x, k, -slope, offset, dx);
        });
    Ok(())
}

/// `y = x · scale[c] + shift[c]` per channel: batch normalization with fixed statistics
/// (inference, or a frozen backbone's BatchNorm while the rest trains).
pub fn channel_affine_forward(
    shape: &BatchNormShape,
    x: &[f32],
    scale: &[f32],
    shift: &[f32],
    y: &mut [f32],
) -> Result<(), KernelError> {
    affine_forward_into(shape, x, scale, shift, as_uninit(y))
}

/// [`channel_affine_forward`] into a new output, never zeroed first.
pub fn channel_affine_forward_vec(
    shape: &BatchNormShape,
    x: &[f32],
    scale: &[f32],
    shift: &[f32],
) -> Result<Vec<f32>, KernelError> {
    // SAFETY: `affine_forward_into` writes every plane of `y` once its lengths check.
    unsafe { new_output(x.len(), |y| affine_forward_into(shape, x, scale, shift, y)) }
}

fn affine_forward_into(
    shape: &BatchNormShape,
    x: &[f32],
    scale: &[f32],
    shift: &[f32],
    y: &mut [MaybeUninit<f32>],
) -> Result<(), KernelError> {
    shape.check(&[
        ("input", x.len(), 0),
        ("output", y.len(), 0),
        ("scale", scale.len(), 1),
        ("shift", shift.len(), 1),
    ])?;
    y.par_chunks_mut(shape.pixels)
        .zip(x.par_chunks(shape.pixels))
        .enumerate()
        .for_each(|(plane, (y, x))| {
            let c = plane % shape.channels;
            affine(x, scale[c], shift[c], y);
        });
    Ok(())
}

/// The gradients of [`channel_affine_forward`]: `dx = dy · scale[c]`, `dscale = Σ dy · x`,
/// `dshift = Σ dy`.
pub fn channel_affine_backward(
    shape: &BatchNormShape,
    x: &[f32],
    scale: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    gradients: (&mut [f32], &mut [f32]),
) -> Result<(), KernelError> {
    affine_backward_into(shape, x, scale, dy, as_uninit(dx), gradients)
}

/// [`channel_affine_backward`] with `dx` in a new vector, never zeroed first.
pub fn channel_affine_backward_vec(
    shape: &BatchNormShape,
    (x, scale): (&[f32], &[f32]),
    dy: &[f32],
    gradients: (&mut [f32], &mut [f32]),
) -> Result<Vec<f32>, KernelError> {
    // SAFETY: `affine_backward_into` writes every plane of `dx` once its lengths check.
    unsafe {
        new_output(x.len(), |dx| {
            affine_backward_into(shape, x, scale, dy, dx, gradients)
        })
    }
}

fn affine_backward_into(
    shape: &BatchNormShape,
    x: &[f32],
    scale: &[f32],
    dy: &[f32],
    dx: &mut [MaybeUninit<f32>],
    (dscale, dshift): (&mut [f32], &mut [f32]),
) -> Result<(), KernelError> {
    shape.check(&[
        ("input", x.len(), 0),
        ("output gradient", dy.len(), 0),
        ("input gradient", dx.len(), 0),
        ("scale", scale.len(), 1),
        ("scale gradient", dscale.len(), 1),
        ("shift gradient", dshift.len(), 1),
    ])?;
    dscale
        .par_iter_mut()
        .zip(dshift.par_iter_mut())
        .enumerate()
        .for_each(|(c, (dscale, dshift))| {
            let (mut sum_dy, mut sum_dy_x) = (0.0f64, 0.0f64);
            for n in 0..shape.batch {
                let range = shape.plane(n, c);
                sum_dy += sum(&dy[range.clone()]) as f64;
                sum_dy_x += centered_dot(&dy[range.clone()], &x[range], 0.0) as f64;
            }
            *dshift = sum_dy as f32;
            *dscale = sum_dy_x as f32;
        });
    dx.par_chunks_mut(shape.pixels)
        .zip(dy.par_chunks(shape.pixels))
        .enumerate()
        .for_each(|(plane, (dx, dy))| affine(dy, scale[plane % shape.channels], 0.0, dx));
    Ok(())
}

multiversion!(fn squared_deviation_into(values: &[f32], mean: f32, total: &mut f32) => squared_deviation_body);

#[inline(always)]
fn squared_deviation_body<M: Math>(values: &[f32], mean: f32, total: &mut f32) {
    let mut lanes = [0.0f32; LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for i in 0..LANES {
            let d = chunk[i] - mean;
            lanes[i] = M::mul_add(d, d, lanes[i]);
        }
    }
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    *total = lanes.iter().sum::<f32>() + tail;
}

fn squared_deviation(values: &[f32], mean: f32) -> f32 {
    let mut total = 0.0;
    squared_deviation_into(values, mean, &mut total);
    total
}

multiversion!(fn centered_dot_into(a: &[f32], x: &[f32], mean: f32, total: &mut f32) => centered_dot_body);

/// Σ a · (x − mean)
#[inline(always)]
fn centered_dot_body<M: Math>(a: &[f32], x: &[f32], mean: f32, total: &mut f32) {
    let mut lanes = [0.0f32; LANES];
    let mut a_chunks = a.chunks_exact(LANES);
    let mut x_chunks = x.chunks_exact(LANES);
    for (a, x) in (&mut a_chunks).zip(&mut x_chunks) {
        for i in 0..LANES {
            lanes[i] = M::mul_add(a[i], x[i] - mean, lanes[i]);
        }
    }
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(x_chunks.remainder())
        .map(|(a, x)| a * (x - mean))
        .sum();
    *total = lanes.iter().sum::<f32>() + tail;
}

fn centered_dot(a: &[f32], x: &[f32], mean: f32) -> f32 {
    let mut total = 0.0;
    centered_dot_into(a, x, mean, &mut total);
    total
}

multiversion!(fn affine(x: &[f32], scale: f32, shift: f32, y: &mut [MaybeUninit<f32>]) => affine_body);

#[inline(always)]
fn affine_body<M: Math>(x: &[f32], scale: f32, shift: f32, y: &mut [MaybeUninit<f32>]) {
    for (y, x) in y.iter_mut().zip(x) {
        y.write(M::mul_add(*x, scale, shift));
    }
}

multiversion!(fn input_grad_plane(dy: &[f32], x: &[f32], k: f32, slope: f32, offset: f32, dx: &mut [MaybeUninit<f32>]) => input_grad_plane_body);

/// dx = k·dy + slope·x + offset
#[inline(always)]
fn input_grad_plane_body<M: Math>(
    dy: &[f32],
    x: &[f32],
    k: f32,
    slope: f32,
    offset: f32,
    dx: &mut [MaybeUninit<f32>],
) {
    for ((dx, dy), x) in dx.iter_mut().zip(dy).zip(x) {
        dx.write(M::mul_add(k, *dy, M::mul_add(slope, *x, offset)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_output_and_gradients_match_the_definition() {
        let shape = BatchNormShape {
            batch: 3,
            channels: 4,
            pixels: 37,
        };
        let len = 3 * 4 * 37;
        let x: Vec<f32> = (0..len)
            .map(|i| ((i * 7919) % 113) as f32 / 20.0 - 2.0)
            .collect();
        let dy: Vec<f32> = (0..len)
            .map(|i| ((i * 104729) % 97) as f32 / 30.0 - 1.5)
            .collect();
        let gamma = [0.5, 1.5, -1.0, 2.0];
        let beta = [0.1, -0.2, 0.3, 0.0];
        let eps = 1e-3;
        let (mut y, mut mean, mut var) = (vec![0.0; len], [0.0; 4], [0.0; 4]);
        batch_norm_train_forward(&shape, &x, &gamma, &beta, eps, &mut y, &mut mean, &mut var)
            .unwrap();
        let (mut dx, mut dgamma, mut dbeta) = (vec![0.0; len], [0.0; 4], [0.0; 4]);
        batch_norm_train_backward(
            &shape,
            &x,
            &gamma,
            (&mean, &var),
            eps,
            &dy,
            &mut dx,
            (&mut dgamma, &mut dbeta),
        )
        .unwrap();
        // the loss Σ dy·y, differentiated numerically in f64
        let loss = |x: &[f64], gamma: &[f64; 4], beta: &[f64; 4]| -> f64 {
            let mut total = 0.0;
            for c in 0..4 {
                let idx: Vec<usize> = (0..3)
                    .flat_map(|n| (0..37).map(move |p| (n * 4 + c) * 37 + p))
                    .collect();
                let m = idx.iter().map(|&i| x[i]).sum::<f64>() / idx.len() as f64;
                let v = idx.iter().map(|&i| (x[i] - m).powi(2)).sum::<f64>() / idx.len() as f64;
                for &i in &idx {
                    total +=
                        dy[i] as f64 * ((x[i] - m) / (v + eps as f64).sqrt() * gamma[c] + beta[c]);
                }
            }
            total
        };
        let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let g64 = gamma.map(|v| v as f64);
        let b64 = beta.map(|v| v as f64);
        let h = 1e-4;
        for i in [0, 5, 77, 200, len - 1] {
            let (mut up, mut down) = (x64.clone(), x64.clone());
            up[i] += h;
            down[i] -= h;
            let numeric = (loss(&up, &g64, &b64) - loss(&down, &g64, &b64)) / (2.0 * h);
            assert!(
                (dx[i] as f64 - numeric).abs() < 1e-3,
                "dx[{i}] {} vs {numeric}",
                dx[i]
            );
        }
        for c in 0..4 {
            let (mut up, mut down) = (g64, g64);
            up[c] += h;
            down[c] -= h;
            let numeric = (loss(&x64, &up, &b64) - loss(&x64, &down, &b64)) / (2.0 * h);
            assert!((dgamma[c] as f64 - numeric).abs() < 1e-3, "dgamma[{c}]");
            let expected_dbeta: f64 = (0..3)
                .flat_map(|n| (0..37).map(move |p| (n * 4 + c) * 37 + p))
                .map(|i| dy[i] as f64)
                .sum();
            assert!(
                (dbeta[c] as f64 - expected_dbeta).abs() < 1e-3,
                "dbeta[{c}]"
            );
        }
        assert!(
            batch_norm_train_forward(
                &shape,
                &x,
                &gamma,
                &beta,
                eps,
                &mut y[1..],
                &mut mean,
                &mut var
            )
            .is_err()
        );
        // The allocating forms (never zeroed first) give the same bits, and the same errors.
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        let (mut mean2, mut var2) = ([0.0; 4], [0.0; 4]);
        let y2 =
            batch_norm_train_forward_vec(&shape, &x, (&gamma, &beta), eps, (&mut mean2, &mut var2))
                .unwrap();
        assert_eq!((bits(&y2), mean2, var2), (bits(&y), mean, var));
        let (mut dgamma2, mut dbeta2) = ([0.0; 4], [0.0; 4]);
        let dx2 = batch_norm_train_backward_vec(
            &shape,
            (&x, &gamma),
            (&mean, &var),
            eps,
            &dy,
            (&mut dgamma2, &mut dbeta2),
        )
        .unwrap();
        assert_eq!((bits(&dx2), dgamma2, dbeta2), (bits(&dx), dgamma, dbeta));
        let mut affine_y = vec![0.0; len];
        channel_affine_forward(&shape, &x, &gamma, &beta, &mut affine_y).unwrap();
        let affine_y2 = channel_affine_forward_vec(&shape, &x, &gamma, &beta).unwrap();
        assert_eq!(bits(&affine_y2), bits(&affine_y));
        let (mut affine_dx, mut dscale, mut dshift) = (vec![0.0; len], [0.0; 4], [0.0; 4]);
        channel_affine_backward(
            &shape,
            &x,
            &gamma,
            &dy,
            &mut affine_dx,
            (&mut dscale, &mut dshift),
        )
        .unwrap();
        let (mut dscale2, mut dshift2) = ([0.0; 4], [0.0; 4]);
        let affine_dx2 =
            channel_affine_backward_vec(&shape, (&x, &gamma), &dy, (&mut dscale2, &mut dshift2))
                .unwrap();
        assert_eq!(
            (bits(&affine_dx2), dscale2, dshift2),
            (bits(&affine_dx), dscale, dshift)
        );
        assert!(channel_affine_forward_vec(&shape, &x[1..], &gamma, &beta).is_err());
        assert!(
            batch_norm_train_forward_vec(
                &shape,
                &x[1..],
                (&gamma, &beta),
                eps,
                (&mut mean2, &mut var2)
            )
            .is_err()
        );
    }
}
