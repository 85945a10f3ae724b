//! BatchNorm folded into the convolution before it, as TFLite's converter does: at inference
//! BN is the per-channel affine map `y = γ (x − μ) / √(σ² + ε) + β`, so with
//! `s = γ / √(σ² + ε)` the pair conv → BN is one convolution with weights `s · W` (each output
//! channel's filter scaled) and bias `β + s · (b − μ)`. The deployed graph then carries no BN
//! op, and int8 quantization sees the folded weights it will actually run.

use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;

use super::LowerError;
use super::layers::param_values;

/// A convolution's weights (Burn's [O, I/groups, H, W] layout) and bias, BatchNorm folded in.
#[derive(Clone, Debug)]
pub struct FoldedConv {
    pub weights: Vec<f32>,
    pub shape: [usize; 4],
    pub bias: Vec<f32>,
}

/// `conv`'s weights and bias (zero when it has none), with `bn` folded in when given.
pub fn fold_batch_norm(
    name: &str,
    conv: &Conv2d,
    bn: Option<&BatchNorm>,
) -> Result<FoldedConv, LowerError> {
    let weight = conv.weight.val();
    let shape = weight.dims();
    let out_channels = shape[0];
    let mut weights = param_values(name, weight)?;
    let mut bias = match &conv.bias {
        Some(bias) => param_values(name, bias.val())?,
        None => vec![0.0; out_channels],
    };
    let Some(bn) = bn else {
        return Ok(FoldedConv {
            weights,
            shape,
            bias,
        });
    };
    let bn_name = format!("{name}/batch_norm");
    let gamma = param_values(&bn_name, bn.gamma.val())?;
    let beta = param_values(&bn_name, bn.beta.val())?;
    let mean = param_values(&bn_name, bn.running_mean.value())?;
    let var = param_values(&bn_name, bn.running_var.value())?;
    if [gamma.len(), beta.len(), mean.len(), var.len()] != [out_channels; 4] {
        return Err(LowerError::Unsupported {
            layer: bn_name,
            reason: format!(
                "normalizes {} features but the convolution has {out_channels} output channels",
                gamma.len()
            ),
        });
    }
    let per_channel = weights.len() / out_channels.max(1);
    for c in 0..out_channels {
        // In f64 so folding adds no rounding beyond the final cast to f32.
        let scale = f64::from(gamma[c]) / (f64::from(var[c]) + bn.epsilon).sqrt();
        for w in &mut weights[c * per_channel..(c + 1) * per_channel] {
            *w = (f64::from(*w) * scale) as f32;
        }
        bias[c] = (f64::from(beta[c]) + scale * (f64::from(bias[c]) - f64::from(mean[c]))) as f32;
    }
    Ok(FoldedConv {
        weights,
        shape,
        bias,
    })
}
