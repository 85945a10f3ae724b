//! Fake quantization: values rounded to an int8 grid and back to float in the forward pass,
//! with straight-through gradients in the backward pass.

use burn::prelude::*;
use kiln_tflite::quant::QParams;

/// Round half away from zero, as TFLite's quantizer does (Burn's `round` goes to even).
pub(super) fn round_half_away<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.clone().sign().mul(x.abs().add_scalar(0.5).floor())
}

/// `x` on the int8 grid of `params` in the forward pass, unchanged in the backward pass
/// where it lies inside the grid's range (zero gradient where it was clamped).
pub fn fake_quant_asymmetric<const D: usize>(x: Tensor<D>, params: QParams) -> Tensor<D> {
    let scale = f64::from(params.scale);
    let zero_point = f64::from(params.zero_point);
    let low = (-128.0 - zero_point) * scale;
    let high = (127.0 - zero_point) * scale;
    let clamped = x.clamp(low, high);
    let rounded = round_half_away(clamped.clone().div_scalar(scale)).mul_scalar(scale);
    clamped.clone() + (rounded - clamped).detach()
}

/// `weight` on the symmetric int8 grid — one scale max|w|/127 per slice along
/// `channel_axis`, or one for the tensor — with a straight-through gradient.
pub fn fake_quant_symmetric<const D: usize>(
    weight: Tensor<D>,
    channel_axis: Option<usize>,
) -> Tensor<D> {
    let dims = weight.dims();
    let magnitude = weight.clone().detach().abs();
    let max_abs: Tensor<D> = match channel_axis {
        Some(axis) if axis < D => {
            let channels = dims[axis];
            let per_channel: Tensor<2> =
                magnitude.swap_dims(0, axis).reshape([channels as i64, -1]);
            let mut shape = [1usize; D];
            shape[axis] = channels;
            per_channel.max_dim(1).reshape(shape)
        }
        _ => magnitude.max().reshape([1usize; D]),
    };
    // An all-zero channel keeps scale 1 (any scale represents it).
    let zero = max_abs.clone().equal_elem(0.0);
    let scale = max_abs.mask_fill(zero, 127.0).div_scalar(127.0);
    let quantized = round_half_away(weight.clone().div(scale.clone()))
        .clamp(-127.0, 127.0)
        .mul(scale);
    weight.clone() + (quantized - weight).detach()
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;
    use kiln_tflite::quant::{Range, asymmetric_int8_params, quantize_symmetric};

    use super::*;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn activations_land_on_the_exporters_int8_grid() {
        let device = Device::flex();
        let params = asymmetric_int8_params(Range {
            min: -0.7,
            max: 2.3,
        });
        let x = Tensor::<1>::random([4096], Distribution::Uniform(-1.5, 3.5), &device);
        let expected: Vec<f32> = values(x.clone())
            .iter()
            .map(|&v| (f32::from(params.quantize(v)) - params.zero_point as f32) * params.scale)
            .collect();
        let got = values(fake_quant_asymmetric(x, params));
        for (g, e) in got.iter().zip(&expected) {
            assert!((g - e).abs() <= 1e-6 * e.abs().max(1.0), "{g} vs {e}");
        }
    }

    #[test]
    fn weights_land_on_the_exporters_symmetric_grid() {
        let device = Device::flex();
        let w = Tensor::<4>::random([5, 3, 3, 3], Distribution::Normal(0.0, 0.2), &device);
        // A dead channel keeps its zeros.
        let w = w.slice_assign(
            [4..5, 0..3, 0..3, 0..3],
            Tensor::zeros([1, 3, 3, 3], &device),
        );
        let flat = values(w.clone());
        for axis in [Some(0), None] {
            let q = quantize_symmetric(&flat, &[5, 3, 3, 3], axis).unwrap();
            let per_channel = flat.len() / q.scales.len();
            let got = values(fake_quant_symmetric(w.clone(), axis));
            for (i, g) in got.iter().enumerate() {
                let e = f32::from(q.values[i]) * q.scales[i / per_channel];
                assert!((g - e).abs() <= 1e-6, "{axis:?} [{i}]: {g} vs {e}");
            }
        }
    }

    #[test]
    fn gradients_pass_straight_through_inside_the_range_only() {
        let device = Device::flex().autodiff();
        let params = asymmetric_int8_params(Range {
            min: -1.0,
            max: 1.0,
        });
        let x = Tensor::<1>::from_floats([-3.0, -0.5, 0.01, 0.7, 2.0], &device).require_grad();
        let y = fake_quant_asymmetric(x.clone(), params);
        let grads = y.sum().backward();
        let grad = values(x.grad(&grads).unwrap());
        assert_eq!(grad, vec![0.0, 1.0, 1.0, 1.0, 0.0]);
        let w = Tensor::<2>::from_floats([[0.3, -0.2], [0.05, 0.1]], &device).require_grad();
        let grads = fake_quant_symmetric(w.clone(), Some(0)).sum().backward();
        assert_eq!(values(w.grad(&grads).unwrap()), vec![1.0; 4]);
    }
}
