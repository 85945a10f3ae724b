//! Calibration: the float32 model runs in kiln-runtime over a representative set while an
//! observer records every tensor's min and max — how TFLite's calibrator works (its MinMax
//! statistics: the global extremes over all samples). Full-integer quantization turns these
//! ranges into int8 parameters; quantization-aware training can supply [`TensorRanges`]
//! directly instead.

use kiln_runtime::Interpreter;
use kiln_tflite::quant::Range;
use kiln_tflite::{Model, TensorType};

use crate::error::ExportError;

/// Observed value ranges, by tensor index of the model's subgraph.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorRanges {
    ranges: Vec<Option<Range>>,
    samples: usize,
}

impl TensorRanges {
    /// No ranges yet, for a subgraph of `tensors` tensors.
    pub fn new(tensors: usize) -> Self {
        Self {
            ranges: vec![None; tensors],
            samples: 0,
        }
    }

    /// The range of tensor `index`, if it was observed (or set).
    pub fn get(&self, index: usize) -> Option<Range> {
        self.ranges.get(index).copied().flatten()
    }

    /// Sets a tensor's range, e.g. from quantization-aware training's observers.
    pub fn set(&mut self, index: usize, range: Range) {
        if index >= self.ranges.len() {
            self.ranges.resize(index + 1, None);
        }
        self.ranges[index] = Some(range);
    }

    /// Widens tensor `index`'s range to cover `values` (NaNs are ignored).
    pub fn observe(&mut self, index: usize, values: impl IntoIterator<Item = f32>) {
        let (mut min, mut max) = self
            .get(index)
            .map_or((f32::INFINITY, f32::NEG_INFINITY), |r| (r.min, r.max));
        for v in values {
            min = min.min(v);
            max = max.max(v);
        }
        if min <= max {
            self.set(index, Range { min, max });
        }
    }

    /// How many samples the ranges were observed over.
    pub fn samples(&self) -> usize {
        self.samples
    }
}

/// Runs a float32 model on representative inputs and records the range of every float32
/// tensor it computes (graph inputs included).
pub struct Calibrator {
    interpreter: Interpreter,
    ranges: TensorRanges,
}

impl Calibrator {
    /// Prepares `model` (float32 inputs) in kiln-runtime.
    pub fn new(model: &Model) -> Result<Self, ExportError> {
        let interpreter = Interpreter::new(model.clone())?;
        for i in 0..interpreter.input_count() {
            let info = interpreter.input_info(i)?;
            if info.dtype != TensorType::Float32 {
                return Err(ExportError::Calibration(format!(
                    "input {i} ('{}') is {}; calibration runs the float32 model",
                    info.name, info.dtype
                )));
            }
        }
        let tensors = model.subgraphs.first().map_or(0, |s| s.tensors.len());
        Ok(Self {
            interpreter,
            ranges: TensorRanges::new(tensors),
        })
    }

    /// Runs one sample: `inputs[i]` holds input `i`'s values (row-major, its full shape).
    pub fn observe(&mut self, inputs: &[&[f32]]) -> Result<(), ExportError> {
        if inputs.len() != self.interpreter.input_count() {
            return Err(ExportError::Calibration(format!(
                "a sample has {} input(s); the model takes {}",
                inputs.len(),
                self.interpreter.input_count()
            )));
        }
        for (i, values) in inputs.iter().enumerate() {
            self.interpreter.set_input_f32(i, values)?;
        }
        let ranges = &mut self.ranges;
        self.interpreter.invoke_with(|t, info, bytes| {
            if info.dtype == TensorType::Float32 {
                ranges.observe(
                    t,
                    bytes
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                );
            }
        })?;
        self.ranges.samples += 1;
        Ok(())
    }

    /// The ranges observed so far; an error when no sample ran.
    pub fn finish(self) -> Result<TensorRanges, ExportError> {
        if self.ranges.samples == 0 {
            return Err(ExportError::Calibration(
                "no representative samples: give at least one (e.g. export.calibration_samples ≥ 1)"
                    .into(),
            ));
        }
        Ok(self.ranges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_model::{input_len, sample, small_cnn};

    #[test]
    fn ranges_cover_every_float_tensor_the_model_computes() {
        let model = small_cnn();
        let mut calibrator = Calibrator::new(&model).unwrap();
        for seed in 0..4 {
            calibrator.observe(&[&sample(seed)]).unwrap();
        }
        let ranges = calibrator.finish().unwrap();
        assert_eq!(ranges.samples(), 4);
        let subgraph = &model.subgraphs[0];
        for (t, tensor) in subgraph.tensors.iter().enumerate() {
            let computed = model.tensor_data(tensor).is_empty();
            assert_eq!(ranges.get(t).is_some(), computed, "{}", tensor.name);
        }
        // The input's range is the samples' extremes.
        let all: Vec<f32> = (0..4).flat_map(sample).collect();
        let input = ranges.get(subgraph.inputs[0] as usize).unwrap();
        assert_eq!(input.min, all.iter().copied().fold(f32::INFINITY, f32::min));
        assert_eq!(
            input.max,
            all.iter().copied().fold(f32::NEG_INFINITY, f32::max)
        );
        // ReLU outputs never go below 0.
        let conv1 = subgraph
            .tensors
            .iter()
            .position(|t| t.name == "conv1")
            .unwrap();
        assert!(ranges.get(conv1).unwrap().min >= 0.0);
    }

    #[test]
    fn bad_samples_and_no_samples_are_errors() {
        let mut calibrator = Calibrator::new(&small_cnn()).unwrap();
        assert!(calibrator.observe(&[]).is_err());
        assert!(calibrator.observe(&[&vec![0.0; input_len() - 1]]).is_err());
        let message = calibrator.finish().unwrap_err().to_string();
        assert!(message.contains("calibration_samples"), "{message}");
    }

    #[test]
    fn observe_ignores_nan_and_merges() {
        let mut ranges = TensorRanges::new(1);
        ranges.observe(0, [1.0, f32::NAN, -2.0]);
        ranges.observe(0, [3.0]);
        assert_eq!(
            ranges.get(0),
            Some(Range {
                min: -2.0,
                max: 3.0
            })
        );
        ranges.observe(0, []);
        assert_eq!(
            ranges.get(0),
            Some(Range {
                min: -2.0,
                max: 3.0
            })
        );
        assert_eq!(ranges.get(5), None);
    }
}
