//! Decode + resize throughput, the data path's cost per image: what `pipeline bench-decode`
//! reports. Synthetic photos stand in for a dataset when none is given: smooth gradients
//! plus noise, JPEG-encoded at the size and quality typical of cats_vs_dogs (~500×375, q90).

use std::io::Cursor;
use std::time::Instant;

use rayon::prelude::*;

use crate::decode::{DecodeSpec, decode_image};

/// A `width`×`height` RGB JPEG (quality 90) with photo-like content, deterministic in `seed`.
pub fn synthetic_photo_jpeg(width: u32, height: u32, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut noise = move || {
        // xorshift64: cheap, deterministic texture.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 56) as i32 - 128
    };
    let phase = (seed % 97) as f32 / 97.0;
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        let (fx, fy) = (x as f32 / width as f32, y as f32 / height as f32);
        let base = [
            200.0 * fx + 40.0 * (6.0 * fy + phase).sin(),
            160.0 * fy + 50.0 * (4.0 * fx - phase).cos(),
            120.0 + 80.0 * ((fx + fy) * 3.0 + phase).sin(),
        ];
        let n = noise() / 8;
        image::Rgb(base.map(|v| (v as i32 + n).clamp(0, 255) as u8))
    });
    let mut out = Cursor::new(Vec::new());
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90);
    // Encoding an in-memory RGB buffer cannot fail for these sizes; an empty result would
    // only make the benchmark report failures, never panic.
    let _ = image.write_with_encoder(encoder);
    out.into_inner()
}

/// Images per second decoding and fitting `images` with `decode`, on `threads` threads (1 =
/// sequential), and how many failed to decode.
pub fn decode_throughput(
    images: &[Vec<u8>],
    decode: DecodeSpec,
    threads: usize,
) -> Result<(f64, usize), String> {
    let target = decode
        .size
        .map(|(h, w)| (h as u32, w as u32))
        .filter(|&(h, w)| h > 0 && w > 0);
    let work = || -> usize {
        images
            .par_iter()
            .map(|bytes| {
                usize::from(decode_image(bytes, decode.color, target, decode.resize).is_err())
            })
            .sum()
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .map_err(|e| format!("cannot start {threads} decode threads: {e}"))?;
    let started = Instant::now();
    let failures = pool.install(work);
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    Ok((images.len() as f64 / seconds, failures))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ColorMode, ResizeMode};

    #[test]
    fn synthetic_photos_decode_and_the_throughput_counts_them() {
        let photos: Vec<Vec<u8>> = (0..4).map(|s| synthetic_photo_jpeg(64, 48, s)).collect();
        assert_ne!(photos[0], photos[1]);
        let spec = DecodeSpec::new(ColorMode::Rgb, Some((16, 16)), ResizeMode::CenterCrop);
        let (rate, failures) = decode_throughput(&photos, spec, 1).unwrap();
        assert_eq!(failures, 0);
        assert!(rate > 0.0);
        let mut broken = photos.clone();
        broken.push(b"not a jpeg".to_vec());
        assert_eq!(decode_throughput(&broken, spec, 2).unwrap().1, 1);
    }
}
