//! A `.tflite` file as a distillation teacher (`[distill] teacher_tflite`): kiln-runtime runs
//! it on each training batch. Teacher logits need no gradients, so any classifier a run, the
//! TF converter or a model zoo produced can teach — float or int8 (its inputs are quantized and
//! its outputs dequantized with the file's own parameters).

use std::cell::RefCell;
use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use kiln_runtime::{Interpreter, real_io};

/// The interpreter and the shapes it was checked against.
pub struct TfliteTeacher {
    interpreter: RefCell<Interpreter>,
    /// [height, width, channels] of one image.
    input: [usize; 3],
    classes: usize,
    /// Weights in the file (elements of its constant tensors), for the report.
    pub parameters: usize,
    /// The first failure of a batch (whose logits are then zeros): the stage reports it.
    failure: RefCell<Option<String>>,
}

impl TfliteTeacher {
    /// Loads `path` and checks it takes `input` ([H, W, C]) images and gives `classes` logits.
    pub fn load(path: &Path, input: [usize; 3], classes: usize) -> Result<Self> {
        let interpreter = Interpreter::from_file(path)
            .with_context(|| format!("teacher_tflite {}", path.display()))?;
        let [h, w, c] = input;
        let input_shape = interpreter.input_info(0).map(|i| i.shape.clone());
        let output_shape = interpreter.output_info(0).map(|o| o.shape.clone());
        let (input_shape, output_shape) = match (input_shape, output_shape) {
            (Ok(i), Ok(o)) => (i, o),
            _ => bail!(
                "teacher_tflite {} has no input or no output",
                path.display()
            ),
        };
        if input_shape != [1, h, w, c] || output_shape != [1, classes] {
            bail!(
                "teacher_tflite {} takes {input_shape:?} and gives {output_shape:?}; this run's data \
                 needs [1, {h}, {w}, {c}] images and [1, {classes}] logits (same image size, \
                 colour and classes as the teacher was trained on)",
                path.display()
            );
        }
        let model = kiln_tflite::Model::read_file(path)
            .with_context(|| format!("teacher_tflite {}", path.display()))?;
        let parameters = model
            .subgraphs
            .iter()
            .flat_map(|g| &g.tensors)
            .filter(|t| {
                model
                    .buffers
                    .get(t.buffer as usize)
                    .is_some_and(|b| !b.data.is_empty())
            })
            .map(|t| {
                t.shape
                    .iter()
                    .map(|&d| d.max(0) as usize)
                    .product::<usize>()
            })
            .sum();
        Ok(Self {
            interpreter: RefCell::new(interpreter),
            input,
            classes,
            parameters,
            failure: RefCell::new(None),
        })
    }

    /// Logits [batch, classes] for NCHW `images`, on the images' device (no gradients).
    pub fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        let device = images.device();
        let [batch, ..] = images.dims();
        let values = self.run(&images.into_data().iter::<f32>().collect::<Vec<_>>(), batch);
        Tensor::from_data(TensorData::new(values, [batch, self.classes]), &device)
    }

    /// The first invoke that failed, if any (checked after each use).
    pub fn failure(&self) -> Option<String> {
        self.failure.borrow().clone()
    }

    /// Logits of `batch` NCHW images, row after row.
    pub fn run(&self, nchw: &[f32], batch: usize) -> Vec<f32> {
        let [h, w, c] = self.input;
        let mut interpreter = self.interpreter.borrow_mut();
        let mut logits = Vec::with_capacity(batch * self.classes);
        let mut nhwc = vec![0.0f32; h * w * c];
        for image in nchw.chunks_exact(h * w * c).take(batch) {
            for (i, value) in nhwc.iter_mut().enumerate() {
                let (pixel, channel) = (i / c, i % c);
                *value = image[channel * h * w + pixel];
            }
            let row = real_io::set_input(&mut interpreter, 0, &nhwc)
                .and_then(|()| interpreter.invoke())
                .and_then(|()| real_io::output(&interpreter, 0));
            match row {
                Ok(row) => logits.extend(row),
                Err(e) => {
                    self.failure.borrow_mut().get_or_insert(e.to_string());
                    logits.extend(std::iter::repeat_n(0.0, self.classes));
                }
            }
        }
        logits
    }
}
