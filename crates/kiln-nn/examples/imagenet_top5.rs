//! Published ImageNet weights in Kiln's architectures, end to end: load a weights file with
//! its 1000-class classifier, classify one photo with the Burn model and with the lowered
//! float32 `.tflite` in kiln-runtime, and print the top-5 ImageNet class indices of each.
//!
//! ```sh
//! cargo run -p kiln-nn --example imagenet_top5 -- efficientnet_lite0 WEIGHTS.pth cat.png \
//!     [tensorflow|pytorch] [MEAN STD]
//! ```
//!
//! The image is resized (shorter side to 224 × 256/224, centre crop 224, bilinear) and
//! normalised as `(pixel / 255 − mean) / std` per channel (default ImageNet's mean and std).

use std::error::Error;
use std::path::Path;

use burn::prelude::*;
use image::imageops::FilterType;
use kiln_nn::lowering::chw_to_hwc;
use kiln_nn::{Classifier, ClassifierWeights, ModelConfig};
use kiln_runtime::Interpreter;

const SIDE: u32 = 224;

fn top5(logits: &[f32]) -> Vec<(usize, f32)> {
    let max = logits.iter().copied().fold(f32::MIN, f32::max);
    let sum: f32 = logits.iter().map(|v| (v - max).exp()).sum();
    let mut scored: Vec<(usize, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, v)| (i, (v - max).exp() / sum))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored.truncate(5);
    scored
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [architecture, weights, photo, rest @ ..] = args.as_slice() else {
        return Err("usage: imagenet_top5 ARCHITECTURE WEIGHTS IMAGE [STYLE] [MEAN STD]".into());
    };
    let style = rest.first().map_or("tensorflow", String::as_str);
    let (mean, std) = match rest {
        [_, mean, std] => (vec![mean.parse::<f32>()?; 3], vec![std.parse::<f32>()?; 3]),
        _ => (vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225]),
    };
    let config: ModelConfig = serde_json::from_value(serde_json::json!({
        "architecture": architecture, "weight_style": style,
    }))?;
    let device = Device::flex();
    let mut model = config.build([SIDE as usize, SIDE as usize, 3], 1000, &device)?;
    let loaded = model.load_pretrained("", Path::new(weights), ClassifierWeights::Load)?;
    eprintln!(
        "loaded {} tensors ({:?} layout)",
        loaded.tensors, loaded.layout
    );

    let image = image::open(photo)?.to_rgb8();
    let short = image.width().min(image.height()) as f32;
    let scale = (SIDE as f32 * 256.0 / 224.0) / short;
    let (w, h) = (
        (image.width() as f32 * scale).round() as u32,
        (image.height() as f32 * scale).round() as u32,
    );
    let resized = image::imageops::resize(&image, w, h, FilterType::Triangle);
    let cropped =
        image::imageops::crop_imm(&resized, (w - SIDE) / 2, (h - SIDE) / 2, SIDE, SIDE).to_image();
    let side = SIDE as usize;
    let mut chw = vec![0.0f32; 3 * side * side];
    for (x, y, pixel) in cropped.enumerate_pixels() {
        for c in 0..3 {
            chw[c * side * side + y as usize * side + x as usize] =
                (f32::from(pixel[c]) / 255.0 - mean[c]) / std[c];
        }
    }
    let input = Tensor::<4>::from_data(TensorData::new(chw.clone(), [1, 3, side, side]), &device);
    let logits = model.forward(input).into_data().try_to_vec::<f32>()?;
    println!("Burn top-5 (class, probability): {:?}", top5(&logits));

    let bytes = model.lower("imagenet")?.to_bytes()?;
    let mut interpreter = Interpreter::from_bytes(bytes)?;
    interpreter.set_input_f32(0, &chw_to_hwc(&chw, [3, side, side]))?;
    interpreter.invoke()?;
    println!(
        "kiln-runtime fp32 top-5: {:?}",
        top5(interpreter.output_f32(0)?)
    );
    Ok(())
}
