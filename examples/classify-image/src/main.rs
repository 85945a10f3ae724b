//! Embedding kiln-runtime: classify an image with a `.tflite` image classifier — load the
//! model, set its input, invoke, read its output — the way an app ships a Kiln (or TFLite
//! converter) model.
//!
//! ```sh
//! cargo run -p classify-image -- artifacts/quickstart/model_int8.tflite photo.png
//! ```
//!
//! The image is resized to the model's input, normalised as the model's metadata says (Kiln
//! writes it; converter files without metadata get pixels scaled to [0, 1]), quantized when
//! the input is int8/uint8, and the top classes are printed with the labels packed in the
//! model file (`labels.txt`), or class indices when it has none.

use std::error::Error;
use std::path::Path;

use image::imageops::FilterType;
use kiln_runtime::{Interpreter, associated_files, real_io};
use kiln_tflite::metadata::{ModelMetadata, TFLITE_METADATA};

/// One class's score.
#[derive(Debug, PartialEq)]
struct Prediction {
    class: usize,
    label: Option<String>,
    score: f32,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, image] = args.as_slice() else {
        eprintln!("usage: classify-image MODEL.tflite IMAGE");
        std::process::exit(2);
    };
    match classify(Path::new(model), Path::new(image), 5) {
        Ok(predictions) => {
            for p in predictions {
                let label = p.label.unwrap_or_else(|| format!("class {}", p.class));
                println!("{:>7.3}  {label}", p.score);
            }
        }
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(1);
        }
    }
}

/// The `top` highest-scoring classes of `image_path` under the model at `model_path`.
fn classify(
    model_path: &Path,
    image_path: &Path,
    top: usize,
) -> Result<Vec<Prediction>, Box<dyn Error>> {
    let bytes = std::fs::read(model_path)
        .map_err(|e| format!("cannot read {}: {e}", model_path.display()))?;
    let labels = labels(&bytes)?;
    let mut interpreter = Interpreter::from_bytes(bytes)?;
    let (mean, std) = normalization(&interpreter);

    let shape = interpreter.input_info(0)?.shape.clone();
    let &[1, height, width, channels] = shape.as_slice() else {
        return Err(
            format!("expected an image input [1, height, width, channels], got {shape:?}").into(),
        );
    };
    let image = image::open(image_path)
        .map_err(|e| format!("cannot decode {}: {e}", image_path.display()))?
        .resize_exact(width as u32, height as u32, FilterType::Triangle);
    let pixels: Vec<u8> = match channels {
        1 => image.to_luma8().into_raw(),
        3 => image.to_rgb8().into_raw(),
        other => return Err(format!("a {other}-channel input is not an image").into()),
    };
    let input: Vec<f32> = pixels
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            let c = i % channels;
            let pick = |v: &[f32]| v.get(c).or(v.first()).copied().unwrap_or(0.0);
            (f32::from(p) - pick(&mean)) / pick(&std)
        })
        .collect();

    // Quantizes for int8/uint8 inputs with the input's scale and zero point.
    real_io::set_input(&mut interpreter, 0, &input)?;
    interpreter.invoke()?;
    let scores = real_io::output(&interpreter, 0)?;

    let mut predictions: Vec<Prediction> = scores
        .iter()
        .enumerate()
        .map(|(class, &score)| Prediction {
            class,
            label: labels.get(class).cloned(),
            score,
        })
        .collect();
    predictions.sort_by(|a, b| b.score.total_cmp(&a.score));
    predictions.truncate(top);
    Ok(predictions)
}

/// The `(mean, std)` that map 0–255 pixels to the model's input, per channel: from the
/// model's TFLite metadata, else scaling to [0, 1].
fn normalization(interpreter: &Interpreter) -> (Vec<f32>, Vec<f32>) {
    interpreter
        .model()
        .metadata_bytes(TFLITE_METADATA)
        .and_then(|bytes| ModelMetadata::from_bytes(bytes).ok())
        .and_then(|metadata| metadata.inputs.into_iter().next())
        .and_then(|input| input.normalization)
        .map_or((vec![0.0], vec![255.0]), |n| (n.mean, n.std))
}

/// The class names packed after the model (`labels.txt`), one per line; none without.
fn labels(model_bytes: &[u8]) -> Result<Vec<String>, Box<dyn Error>> {
    Ok(associated_files(model_bytes)?
        .into_iter()
        .find(|(name, _)| name == "labels.txt")
        .map(|(_, text)| {
            String::from_utf8_lossy(&text)
                .lines()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A converter-made uint8 classifier from the conformance fixtures, on a generated image.
    #[test]
    fn classifies_an_image_with_a_converter_model() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let model = root.join("tests/fixtures/smallnet_uint8_io/model.tflite");
        let dir = std::env::temp_dir().join(format!("classify-image-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let image_path = dir.join("gradient.png");
        image::RgbImage::from_fn(40, 30, |x, y| {
            image::Rgb([(x * 6) as u8, (y * 8) as u8, 90])
        })
        .save(&image_path)
        .unwrap();
        let predictions = classify(&model, &image_path, 3).unwrap();
        assert_eq!(predictions.len(), 3);
        assert!(predictions.windows(2).all(|w| w[0].score >= w[1].score));
        assert!(predictions.iter().all(|p| p.score.is_finite()));

        let not_an_image = dir.join("broken.png");
        std::fs::write(&not_an_image, b"not a png").unwrap();
        let error = classify(&model, &not_an_image, 3).unwrap_err().to_string();
        assert!(error.contains("broken.png"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
