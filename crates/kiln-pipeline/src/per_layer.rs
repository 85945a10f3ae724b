//! Per-layer parity: the float model and a variant run side by side in kiln-runtime on the
//! same images, and every tensor the two share (by name: the transforms keep the float model's
//! tensor names) is compared — max abs error, RMSE and cosine similarity of the variant's
//! (dequantized) values against the float values — so a user sees which layer loses accuracy,
//! as TFLite's QuantizationDebugger does.

use std::collections::HashMap;

use anyhow::{Result, ensure};
use kiln_runtime::{Interpreter, TensorInfo};
use kiln_tflite::TensorType;
use serde::Serialize;

use kiln_runtime::real_io;

/// One tensor's error over all images, in the variant's execution order.
#[derive(Clone, Debug, Serialize)]
pub struct LayerError {
    pub tensor: String,
    /// The variant's element type for this tensor (e.g. INT8 after full-integer export).
    pub dtype: String,
    /// The variant tensor's quantization step (its scale), when it is quantized.
    pub step: Option<f32>,
    pub max_abs: f64,
    pub rmse: f64,
    /// cos∠(float, variant) over all elements of all images; 1 = same direction.
    pub cosine: f64,
}

#[derive(Default)]
struct Accumulator {
    count: usize,
    max_abs: f64,
    sum_sq: f64,
    dot: f64,
    norm_float: f64,
    norm_variant: f64,
}

impl Accumulator {
    fn add(&mut self, float: &[f32], variant: &[f32]) {
        for (&a, &b) in float.iter().zip(variant) {
            let (a, b) = (f64::from(a), f64::from(b));
            self.count += 1;
            self.max_abs = self.max_abs.max((a - b).abs());
            self.sum_sq += (a - b) * (a - b);
            self.dot += a * b;
            self.norm_float += a * a;
            self.norm_variant += b * b;
        }
    }

    fn cosine(&self) -> f64 {
        let norms = (self.norm_float * self.norm_variant).sqrt();
        if norms > 0.0 {
            self.dot / norms
        } else if self.norm_float == self.norm_variant {
            1.0 // both all zero
        } else {
            0.0
        }
    }
}

/// A computed tensor's values as reals (int8/uint8 dequantized per tensor), or `None` for
/// types and quantizations without a real-valued reading (int32 shapes, per-channel...).
fn real_values(info: &TensorInfo, bytes: &[u8]) -> Option<Vec<f32>> {
    let per_tensor = info
        .quantization
        .as_ref()
        .is_none_or(|q| q.scale.len() == 1);
    match info.dtype {
        TensorType::Float32 | TensorType::Int8 | TensorType::UInt8 if per_tensor => {
            real_io::decode_output(info, bytes).ok()
        }
        _ => None,
    }
}

/// Compares every tensor `variant` shares with `float`, over `images` (each the models'
/// single float input as real values; quantized inputs are quantized as verify does).
pub fn compare(
    float: &mut Interpreter,
    variant: &mut Interpreter,
    images: &[&[f32]],
) -> Result<Vec<LayerError>> {
    ensure!(
        !images.is_empty(),
        "per-layer parity needs at least one image"
    );
    let mut order: Vec<String> = Vec::new();
    let mut stats: HashMap<String, (String, Option<f32>, Accumulator)> = HashMap::new();
    for image in images {
        let mut reference: HashMap<String, Vec<f32>> = HashMap::new();
        real_io::set_input(float, 0, image)?;
        float.invoke_with(|_, info, bytes| {
            if info.dtype == TensorType::Float32
                && let Some(values) = real_values(info, bytes)
            {
                reference.insert(info.name.clone(), values);
            }
        })?;
        real_io::set_input(variant, 0, image)?;
        variant.invoke_with(|_, info, bytes| {
            let Some(expected) = reference.get(&info.name) else {
                return;
            };
            let Some(values) = real_values(info, bytes).filter(|v| v.len() == expected.len())
            else {
                return;
            };
            let entry = stats.entry(info.name.clone()).or_insert_with(|| {
                order.push(info.name.clone());
                let step = info
                    .quantization
                    .as_ref()
                    .and_then(|q| q.scale.first().copied());
                (info.dtype.name(), step, Accumulator::default())
            });
            entry.2.add(expected, &values);
        })?;
    }
    Ok(order
        .into_iter()
        .filter_map(|name| {
            let (dtype, step, acc) = stats.remove(&name)?;
            Some(LayerError {
                tensor: name,
                dtype,
                step,
                max_abs: acc.max_abs,
                rmse: (acc.sum_sq / acc.count.max(1) as f64).sqrt(),
                cosine: acc.cosine(),
            })
        })
        .collect())
}

/// The table `pipeline verify --per-layer` prints.
pub fn table(rows: &[LayerError]) -> String {
    let width = rows
        .iter()
        .map(|r| r.tensor.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut text = format!(
        "{:<width$}  {:<7}  {:>10}  {:>10}  {:>10}  {:>9}  {:>9}\n",
        "tensor", "type", "step", "max abs", "RMSE", "max/step", "cosine"
    );
    for r in rows {
        let step = r.step.map_or("—".into(), |s| format!("{s:.3e}"));
        let in_steps = r
            .step
            .filter(|&s| s > 0.0)
            .map_or("—".into(), |s| format!("{:.1}", r.max_abs / f64::from(s)));
        text += &format!(
            "{:<width$}  {:<7}  {:>10}  {:>10.3e}  {:>10.3e}  {:>9}  {:>9.6}\n",
            r.tensor, r.dtype, step, r.max_abs, r.rmse, in_steps, r.cosine
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accumulated_errors() {
        let mut acc = Accumulator::default();
        acc.add(&[1.0, 0.0], &[1.0, 0.5]);
        acc.add(&[2.0], &[1.0]);
        assert_eq!(acc.count, 3);
        assert_eq!(acc.max_abs, 1.0);
        assert!((acc.sum_sq - 1.25).abs() < 1e-12);
        let cosine = 3.0 / (5.0f64.sqrt() * 2.25f64.sqrt());
        assert!((acc.cosine() - cosine).abs() < 1e-12);
        assert_eq!(Accumulator::default().cosine(), 1.0);
    }
}
