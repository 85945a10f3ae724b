//! Clamping activations — ReLU (`[0, ∞)`) and ReLU6 (`[0, 6]`), MobileNet's and EfficientNet-
//! Lite's — forward and backward in one vectorized pass each. (Burn's clamp and its gradient
//! go through masks: two comparisons, two mask fills and a multiply per element.) NaN stays
//! NaN forward, so a diverging model shows; its gradient is 0.

use rayon::prelude::*;

use crate::KernelError;
use crate::simd::{Math, multiversion};

/// Elements per parallel task: enough to amortize scheduling, few enough to split a layer.
const TASK: usize = 1 << 15;

/// `y = min(max(x, low), high)`.
pub fn clamp_forward(x: &[f32], low: f32, high: f32, y: &mut [f32]) -> Result<(), KernelError> {
    check(x.len(), y.len(), low, high)?;
    y.par_chunks_mut(TASK)
        .zip(x.par_chunks(TASK))
        .for_each(|(y, x)| clamp_chunk(x, low, high, y));
    Ok(())
}

/// `dx = dy` where the clamped output `y` lies strictly inside `(low, high)`, else 0.
pub fn clamp_backward(
    y: &[f32],
    dy: &[f32],
    low: f32,
    high: f32,
    dx: &mut [f32],
) -> Result<(), KernelError> {
    check(y.len(), dx.len(), low, high)?;
    check(dy.len(), dx.len(), low, high)?;
    dx.par_chunks_mut(TASK)
        .zip(y.par_chunks(TASK).zip(dy.par_chunks(TASK)))
        .for_each(|(dx, (y, dy))| clamp_grad_chunk(y, dy, low, high, dx));
    Ok(())
}

/// `x = min(max(x, low), high)` in place: for an activation no one else holds, which saves
/// the output's allocation, its zeroing and a pass over memory.
pub fn clamp_forward_in_place(x: &mut [f32], low: f32, high: f32) -> Result<(), KernelError> {
    check(x.len(), x.len(), low, high)?;
    x.par_chunks_mut(TASK)
        .for_each(|x| clamp_in_place_chunk(x, low, high));
    Ok(())
}

/// `grad` (the output's gradient on entry) becomes the input's: kept where the clamped output
/// `y` lies strictly inside `(low, high)`, else 0.
pub fn clamp_backward_in_place(
    y: &[f32],
    grad: &mut [f32],
    low: f32,
    high: f32,
) -> Result<(), KernelError> {
    check(y.len(), grad.len(), low, high)?;
    grad.par_chunks_mut(TASK)
        .zip(y.par_chunks(TASK))
        .for_each(|(grad, y)| clamp_grad_in_place_chunk(y, low, high, grad));
    Ok(())
}

fn check(input: usize, output: usize, low: f32, high: f32) -> Result<(), KernelError> {
    if low.is_nan() || high.is_nan() || low > high {
        return Err(KernelError::Shape(format!(
            "clamp bounds [{low}, {high}] are empty"
        )));
    }
    if input != output {
        return Err(KernelError::BufferLength {
            buffer: "clamp output",
            expected: input,
            actual: output,
        });
    }
    Ok(())
}

multiversion!(fn clamp_chunk(x: &[f32], low: f32, high: f32, y: &mut [f32]) => clamp_body);

#[inline(always)]
fn clamp_body<M: Math>(x: &[f32], low: f32, high: f32, y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        // Comparisons with NaN are false: NaN passes through.
        *y = if x < low {
            low
        } else if x > high {
            high
        } else {
            x
        };
    }
}

multiversion!(fn clamp_in_place_chunk(x: &mut [f32], low: f32, high: f32) => clamp_in_place_body);

#[inline(always)]
fn clamp_in_place_body<M: Math>(x: &mut [f32], low: f32, high: f32) {
    for x in x.iter_mut() {
        *x = if *x < low {
            low
        } else if *x > high {
            high
        } else {
            *x
        };
    }
}

multiversion!(fn clamp_grad_in_place_chunk(y: &[f32], low: f32, high: f32, grad: &mut [f32]) => clamp_grad_in_place_body);

#[inline(always)]
fn clamp_grad_in_place_body<M: Math>(y: &[f32], low: f32, high: f32, grad: &mut [f32]) {
    for (g, &y) in grad.iter_mut().zip(y) {
        *g = if y > low && y < high { *g } else { 0.0 };
    }
}

multiversion!(fn clamp_grad_chunk(y: &[f32], dy: &[f32], low: f32, high: f32, dx: &mut [f32]) => clamp_grad_body);

#[inline(always)]
fn clamp_grad_body<M: Math>(y: &[f32], dy: &[f32], low: f32, high: f32, dx: &mut [f32]) {
    for ((dx, &y), &g) in dx.iter_mut().zip(y).zip(dy) {
        *dx = if y > low && y < high { g } else { 0.0 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relu6_and_its_gradient() {
        let x: Vec<f32> = (0..100_000).map(|i| (i % 200) as f32 * 0.1 - 5.0).collect();
        let mut y = vec![0.0; x.len()];
        clamp_forward(&x, 0.0, 6.0, &mut y).unwrap();
        let dy: Vec<f32> = (0..x.len()).map(|i| i as f32).collect();
        let mut dx = vec![f32::NAN; x.len()];
        clamp_backward(&y, &dy, 0.0, 6.0, &mut dx).unwrap();
        for i in 0..x.len() {
            assert_eq!(y[i], x[i].clamp(0.0, 6.0));
            let inside = x[i] > 0.0 && x[i] < 6.0;
            assert_eq!(dx[i], if inside { dy[i] } else { 0.0 });
        }
        // The in-place forms give the same values.
        let mut in_place = x.clone();
        clamp_forward_in_place(&mut in_place, 0.0, 6.0).unwrap();
        assert_eq!(in_place, y);
        let mut grad = dy.clone();
        clamp_backward_in_place(&y, &mut grad, 0.0, 6.0).unwrap();
        assert_eq!(grad, dx);
    }

    #[test]
    fn nan_passes_forward_and_bad_calls_are_errors() {
        let mut y = [0.0; 3];
        clamp_forward(&[f32::NAN, -1.0, 9.0], 0.0, f32::INFINITY, &mut y).unwrap();
        assert!(y[0].is_nan());
        assert_eq!(&y[1..], &[0.0, 9.0]);
        assert!(clamp_forward(&[1.0], 1.0, 0.0, &mut [0.0]).is_err());
        assert!(clamp_forward(&[1.0, 2.0], 0.0, 1.0, &mut [0.0]).is_err());
    }
}
