//! `pipeline bench-train`: training and inference images/s of an architecture on synthetic
//! data with kiln's Burn setup — the Rust side of `bench/train_vs_keras.sh`.

use anyhow::{Context, Result, bail};
use burn::prelude::Device;
use kiln_nn::{Classifier, ModelConfig, SmallCnnConfig};
use kiln_train::{BackendKind, Throughput, measure_throughput};
use serde_json::json;

pub struct TrainBench {
    /// `small_cnn` (shaped by `conv_filters` and `dense_units`) or any registered architecture
    /// with its default `[model]` keys (`mobilenet_v2`, `efficientnet_lite0`, …).
    pub model: String,
    /// [height, width, channels].
    pub input: Vec<usize>,
    pub conv_filters: Vec<usize>,
    pub dense_units: usize,
    pub classes: usize,
    pub batch_size: usize,
    pub steps: usize,
    pub warmup: usize,
    pub backend: BackendKind,
    pub json: bool,
}

pub fn run(bench: &TrainBench) -> Result<()> {
    let &[h, w, c] = bench.input.as_slice() else {
        bail!("--input must be height,width,channels (e.g. 28,28,1)");
    };
    let device = bench.backend.device()?;
    device.seed(1);
    let autodiff = device.clone().autodiff();
    let shape = ([h, w, c], bench.classes, bench.batch_size);
    let steps = (bench.warmup, bench.steps);
    let (description, measured) = if bench.model == "small_cnn" {
        let mut config = SmallCnnConfig::new([h, w, c], bench.classes);
        config.conv_filters = bench.conv_filters.clone();
        config.dense_units = bench.dense_units;
        let model = config.init(&autodiff).context("cannot build the model")?;
        let description = format!(
            "small_cnn conv {:?} dense {}",
            bench.conv_filters, bench.dense_units
        );
        (
            description,
            throughput(model, shape, steps, &autodiff, &device)?,
        )
    } else {
        let config: ModelConfig = toml::from_str(&format!("architecture = {:?}", bench.model))
            .with_context(|| {
                format!(
                    "unknown --model '{}': use small_cnn or an architecture of `[model]` (mobilenet_v2, efficientnet_lite0, efficientnet_b0)",
                    bench.model
                )
            })?;
        let model = config
            .build([h, w, c], bench.classes, &autodiff)
            .with_context(|| format!("cannot build {} for {h}×{w}×{c}", bench.model))?;
        (
            bench.model.clone(),
            throughput(model, shape, steps, &autodiff, &device)?,
        )
    };
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let report = json!({
        "model": description,
        "input": [h, w, c],
        "backend": bench.backend.name(),
        "cores": cores,
        "batch_size": measured.batch_size,
        "timed_steps": measured.timed_steps,
        "train_images_per_second": measured.train_images_per_second,
        "infer_images_per_second": measured.infer_images_per_second,
        "train_cores_busy": measured.train_cores_busy,
    });
    if bench.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let busy = measured
            .train_cores_busy
            .map(|busy| format!(" ({busy:.2} of {cores} cores busy)"))
            .unwrap_or_default();
        println!(
            "{} on {h}×{w}×{c}, batch {}, backend {} ({cores} cores): train {:.1} images/s{busy}, inference {:.1} images/s",
            report["model"].as_str().unwrap_or_default(),
            measured.batch_size,
            bench.backend.name(),
            measured.train_images_per_second,
            measured.infer_images_per_second
        );
    }
    Ok(())
}

fn throughput<M: Classifier>(
    model: M,
    (input, classes, batch_size): ([usize; 3], usize, usize),
    steps: (usize, usize),
    autodiff: &Device,
    device: &Device,
) -> Result<Throughput> {
    Ok(measure_throughput(
        model, input, classes, batch_size, steps, autodiff, device,
    )?)
}
