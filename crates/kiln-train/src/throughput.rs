//! Training and inference throughput on synthetic data — images/s of the training step
//! (forward, loss, backward, Adam update) and of inference — for `pipeline bench-train`,
//! which puts them next to TF-Keras measured on the same architectures in the same run.

use std::time::Instant;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::prelude::*;
use kiln_nn::Classifier;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::TrainError;

#[derive(Clone, Debug, serde::Serialize)]
pub struct Throughput {
    pub train_images_per_second: f64,
    pub infer_images_per_second: f64,
    /// Cores busy while training: the process's user + system CPU time over the wall time
    /// of the timed steps (2.0 = both of 2 cores all the time); `None` where the platform
    /// does not report CPU time.
    pub train_cores_busy: Option<f64>,
    pub batch_size: usize,
    pub timed_steps: usize,
}

/// Times `steps` training steps and `steps` inference batches of `batch_size` random images
/// of `input` = [h, w, c] (after `warmup` untimed steps of each). `device` is the autodiff
/// device the model lives on, `eval_device` the plain one.
pub fn measure_throughput<M: Classifier>(
    mut model: M,
    input: [usize; 3],
    classes: usize,
    batch_size: usize,
    (warmup, steps): (usize, usize),
    device: &Device,
    eval_device: &Device,
) -> Result<Throughput, TrainError> {
    if batch_size == 0 || steps == 0 || classes == 0 {
        return Err(TrainError::InvalidConfig(
            "batch size, steps and classes must be at least 1".into(),
        ));
    }
    let [h, w, c] = input;
    let mut rng = StdRng::seed_from_u64(7);
    let pixels: Vec<f32> = (0..batch_size * c * h * w).map(|_| rng.random()).collect();
    let labels: Vec<i64> = (0..batch_size)
        .map(|_| rng.random_range(0..classes as i64))
        .collect();
    let images = |d: &Device| {
        Tensor::<4>::from_data(TensorData::new(pixels.clone(), [batch_size, c, h, w]), d)
    };
    let targets = Tensor::<1, Int>::from_data(TensorData::new(labels, [batch_size]), device);
    // As in training (and in TensorFlow's CPU threads): denormal results flushed to zero.
    let _flush_to_zero = kiln_kernels::FlushToZero::new();
    let mut optimizer = crate::optimizer::OptimizerSettings::default().build()?;
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let train_batch = images(device);

    let mut train_step = |model: M| -> Result<M, TrainError> {
        let loss = loss_fn.forward(model.forward(train_batch.clone()), targets.clone());
        // Reading the loss waits for the step, like Keras' train_on_batch returning it.
        let value = loss.clone().into_scalar::<f32>();
        if !value.is_finite() {
            return Err(TrainError::Backend(format!("loss became {value}")));
        }
        let gradients = GradientsParams::from_grads(loss.backward(), &model);
        Ok(optimizer.step(1e-3, model, gradients))
    };
    for _ in 0..warmup {
        model = train_step(model)?;
    }
    let (started, cpu_started) = (Instant::now(), cpu_seconds());
    for _ in 0..steps {
        model = train_step(model)?;
    }
    let train_seconds = started.elapsed().as_secs_f64();
    let train_cores_busy = cpu_seconds()
        .zip(cpu_started)
        .map(|(end, start)| (end - start) / train_seconds.max(1e-9));

    let model = model.valid();
    let eval_batch = images(eval_device);
    let infer = |model: &M| -> Result<(), TrainError> {
        model
            .forward(eval_batch.clone())
            .into_data()
            .as_slice::<f32>()
            .map(|_| ())
            .map_err(|e| TrainError::Backend(format!("reading logits: {e:?}")))
    };
    for _ in 0..warmup {
        infer(&model)?;
    }
    let started = Instant::now();
    for _ in 0..steps {
        infer(&model)?;
    }
    let infer_seconds = started.elapsed().as_secs_f64();
    let images = (steps * batch_size) as f64;
    Ok(Throughput {
        train_images_per_second: images / train_seconds.max(1e-9),
        infer_images_per_second: images / infer_seconds.max(1e-9),
        train_cores_busy,
        batch_size,
        timed_steps: steps,
    })
}

/// The process's user + system CPU time so far, in seconds.
#[cfg(unix)]
fn cpu_seconds() -> Option<f64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes the struct it is given; it is read only on success.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return None;
        }
        usage.assume_init()
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    Some(seconds(usage.ru_utime) + seconds(usage.ru_stime))
}

#[cfg(not(unix))]
fn cpu_seconds() -> Option<f64> {
    None
}
