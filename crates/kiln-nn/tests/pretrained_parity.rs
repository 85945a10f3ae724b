//! Published weights load into Kiln's architectures and compute what their publisher's
//! framework computes. The fixtures (`tests/fixtures/pretrained/`, made by its
//! `gen/generate.py` with timm, torch and efficientnet_pytorch) are small random networks in
//! each layout with PyTorch's logits for two images; `layouts.json` lists every tensor of
//! the full-size ImageNet models.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use kiln_nn::lowering::chw_to_hwc;
use kiln_nn::{AnyClassifier, Classifier, ClassifierWeights, ModelConfig, PretrainedError};
use kiln_runtime::Interpreter;
use kiln_runtime::npy::read_npy;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pretrained")
}

fn json(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join(name)).expect("fixture");
    serde_json::from_str(&text).expect("json")
}

fn f32s(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let array = read_npy(path).expect("npy");
    let values = array
        .data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (array.shape, values)
}

fn build(model: &Value, input: [usize; 3], classes: usize) -> AnyClassifier {
    let config: ModelConfig = serde_json::from_value(model.clone()).expect("model keys");
    config
        .build(input, classes, &Device::flex())
        .expect("builds")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// Burn with the loaded weights equals PyTorch (≤ 1e-4 on the logits), and so does the
/// lowered float32 model in kiln-runtime.
#[test]
fn loaded_weights_compute_what_pytorch_computes() {
    let manifest = json("manifest.json");
    let cases = manifest["cases"].as_object().expect("cases");
    assert!(cases.len() >= 6, "one case per layout and architecture");
    for (name, case) in cases {
        let input: Vec<usize> = serde_json::from_value(case["input"].clone()).expect("input");
        let [h, w, c] = [input[0], input[1], input[2]];
        let classes = case["classes"].as_u64().expect("classes") as usize;
        let mut model = build(&case["model"], [h, w, c], classes);
        let weights = fixtures().join(case["weights"].as_str().expect("weights"));
        let loaded = model
            .load_pretrained("", &weights, ClassifierWeights::Load)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(loaded.tensors > 50, "{name}: {loaded:?}");

        let (shape, images) = f32s(&fixtures().join(case["input_npy"].as_str().unwrap()));
        let (_, expected) = f32s(&fixtures().join(case["logits_npy"].as_str().unwrap()));
        let batch = shape[0];
        let x = Tensor::<4>::from_data(
            TensorData::new(images.clone(), shape.clone()),
            &Device::flex(),
        );
        let logits = model
            .forward(x)
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        let burn_error = max_abs_diff(&logits, &expected);
        eprintln!("{name}: Burn vs PyTorch max |Δ| = {burn_error:.2e}");
        assert!(
            burn_error <= 1e-4,
            "{name}: Burn differs from PyTorch by {burn_error:e}"
        );

        let bytes = model
            .lower(name)
            .expect("lowers")
            .to_bytes()
            .expect("serializes");
        let mut interpreter = Interpreter::from_bytes(bytes).expect("loads");
        let per_image = c * h * w;
        for i in 0..batch {
            let image = &images[i * per_image..(i + 1) * per_image];
            interpreter
                .set_input_f32(0, &chw_to_hwc(image, [c, h, w]))
                .expect("input");
            interpreter.invoke().expect("runs");
            let actual = interpreter.output_f32(0).expect("output");
            let error = max_abs_diff(actual, &expected[i * classes..(i + 1) * classes]);
            assert!(
                error <= 1e-4,
                "{name} image {i}: kiln-runtime differs from PyTorch by {error:e}"
            );
        }
    }
}

/// A minimal safetensors file: zeros of every given shape (the format's header is JSON).
fn zeros_safetensors(tensors: &[(String, Vec<usize>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape) in tensors {
        let bytes = 4 * shape.iter().product::<usize>();
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let header = serde_json::to_vec(&Value::Object(header)).expect("header");
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend(header);
    file.resize(file.len() + offset, 0);
    file
}

fn layout(model: &str) -> (String, Vec<(String, Vec<usize>)>) {
    let layouts = json("layouts.json");
    let entry = &layouts[model];
    let tensors = entry["tensors"]
        .as_array()
        .expect("tensors")
        .iter()
        .map(|t| serde_json::from_value(t.clone()).expect("[name, shape]"))
        .collect();
    (
        entry["architecture"]
            .as_str()
            .expect("architecture")
            .to_owned(),
        tensors,
    )
}

fn load_layout(
    dir: &Path,
    architecture: &str,
    tensors: &[(String, Vec<usize>)],
    classifier: ClassifierWeights,
) -> Result<kiln_nn::LoadedWeights, PretrainedError> {
    let path = dir.join(format!("{architecture}-{}.safetensors", tensors.len()));
    std::fs::write(&path, zeros_safetensors(tensors)).expect("write");
    let config: ModelConfig =
        serde_json::from_value(serde_json::json!({"architecture": architecture})).expect("config");
    let mut model = config
        .build([224, 224, 3], 1000, &Device::flex())
        .expect("builds");
    model.load_pretrained("", &path, classifier)
}

/// Every tensor of timm's full-size ImageNet models has its place in Kiln's architecture.
#[test]
fn full_size_timm_layouts_load_key_for_key() {
    let dir = tempdir();
    for model in ["efficientnet_lite0", "efficientnet_b0", "mobilenetv2_100"] {
        let (architecture, tensors) = layout(model);
        let loaded = load_layout(&dir, &architecture, &tensors, ClassifierWeights::Load)
            .unwrap_or_else(|e| panic!("{model}: {e}"));
        let learnable = tensors
            .iter()
            .filter(|(n, _)| !n.ends_with("num_batches_tracked"))
            .count();
        assert_eq!(loaded.tensors, learnable, "{model}");
    }
}

#[test]
fn missing_unexpected_and_misshapen_keys_are_named() {
    let dir = tempdir();
    let (architecture, tensors) = layout("efficientnet_b0");

    let mut missing = tensors.clone();
    missing.retain(|(name, _)| name != "blocks.2.1.conv_dw.weight");
    let err = load_layout(&dir, &architecture, &missing, ClassifierWeights::Replace)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("'blocks.2.1.conv_dw.weight' is missing") && err.contains("EfficientNet-B0"),
        "{err}"
    );

    let mut extra = tensors.clone();
    extra.push(("blocks.7.0.conv_pw.weight".into(), vec![8, 8, 1, 1]));
    let err = load_layout(&dir, &architecture, &extra, ClassifierWeights::Replace)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("'blocks.7.0.conv_pw.weight' is in the file but not in the architecture"),
        "{err}"
    );

    let mut misshapen = tensors.clone();
    let stem = misshapen
        .iter_mut()
        .find(|(n, _)| n == "conv_stem.weight")
        .expect("stem");
    stem.1 = vec![24, 3, 3, 3];
    let err = load_layout(&dir, &architecture, &misshapen, ClassifierWeights::Replace)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("conv_stem.weight")
            && err.contains("[24, 3, 3, 3]")
            && err.contains("[32, 3, 3, 3]"),
        "{err}"
    );

    // The file's 1000-class classifier is replaced, not loaded, for a task's classes.
    let config: ModelConfig =
        serde_json::from_value(serde_json::json!({"architecture": "efficientnet_b0"})).unwrap();
    let mut model = config.build([224, 224, 3], 2, &Device::flex()).unwrap();
    let path = dir.join("b0.safetensors");
    std::fs::write(&path, zeros_safetensors(&tensors)).unwrap();
    model
        .load_pretrained("", &path, ClassifierWeights::Replace)
        .expect("classifier replaced");

    // Files that are not weights, and architectures without published weights.
    std::fs::write(dir.join("junk.safetensors"), b"not a safetensors file").unwrap();
    let err = model
        .load_pretrained(
            "",
            &dir.join("junk.safetensors"),
            ClassifierWeights::Replace,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("junk.safetensors"), "{err}");
    let err = model
        .load_pretrained("", &dir.join("weights.onnx"), ClassifierWeights::Replace)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("weights.onnx") && err.contains("no such file"),
        "{err}"
    );
    let small: ModelConfig =
        serde_json::from_value(serde_json::json!({"architecture": "small_cnn"})).unwrap();
    let mut small = small.build([28, 28, 1], 10, &Device::flex()).unwrap();
    let err = small
        .load_pretrained("", &path, ClassifierWeights::Replace)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("SmallCnn") && err.contains("efficientnet_lite0"),
        "{err}"
    );
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "kiln-pretrained-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
