//! Decoding one encoded image into packed 8-bit pixels.
//!
//! A pure per-row function with no shared state, so the reader can later run it on many
//! rows at once (rayon) without changing it.

use image::imageops::{self, FilterType};

/// How many channels the model wants; inputs are converted whatever they were stored as
/// (grayscale, RGB, RGBA, CMYK JPEG, 16-bit PNG).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColorMode {
    /// One channel (luma).
    Grayscale,
    /// Three channels, R G B.
    Rgb,
}

impl ColorMode {
    /// Number of channels per pixel: 1 or 3.
    pub fn channels(self) -> usize {
        match self {
            ColorMode::Grayscale => 1,
            ColorMode::Rgb => 3,
        }
    }
}

/// One decoded image: `height × width × channels` bytes, row-major HWC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodedImage {
    pub height: usize,
    pub width: usize,
    pub pixels: Vec<u8>,
}

/// Decodes `bytes` (PNG or JPEG), converts to `color`, and resizes to `size` = (height,
/// width) when given and different.
///
/// Errors are plain strings because a bad row is not fatal: the caller skips it and keeps
/// the message as a warning.
pub(crate) fn decode_image(
    bytes: &[u8],
    color: ColorMode,
    size: Option<(u32, u32)>,
) -> Result<DecodedImage, String> {
    if bytes.is_empty() {
        return Err("zero-byte image".to_owned());
    }
    let img = image::load_from_memory(bytes).map_err(|e| format!("cannot decode image: {e}"))?;
    let (pixels, width, height) = match color {
        ColorMode::Grayscale => {
            let buf = img.to_luma8();
            let buf = match size {
                Some((h, w)) if (h, w) != (buf.height(), buf.width()) => {
                    imageops::resize(&buf, w, h, FilterType::Triangle)
                }
                _ => buf,
            };
            let (w, h) = buf.dimensions();
            (buf.into_raw(), w, h)
        }
        ColorMode::Rgb => {
            let buf = img.to_rgb8();
            let buf = match size {
                Some((h, w)) if (h, w) != (buf.height(), buf.width()) => {
                    imageops::resize(&buf, w, h, FilterType::Triangle)
                }
                _ => buf,
            };
            let (w, h) = buf.dimensions();
            (buf.into_raw(), w, h)
        }
    };
    if width == 0 || height == 0 {
        return Err("image has no pixels".to_owned());
    }
    Ok(DecodedImage {
        height: height as usize,
        width: width as usize,
        pixels,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use image::{GrayImage, ImageFormat, RgbImage};
    use std::io::Cursor;

    /// PNG bytes of an RGB image whose pixel (y, x) is (x, y, 7) (values wrap at 256).
    pub(crate) fn rgb_png(height: u32, width: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(width, height, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png)
            .expect("encode test PNG");
        out.into_inner()
    }

    /// PNG bytes of a single-channel image filled with `value`.
    pub(crate) fn gray_png(height: u32, width: u32, value: u8) -> Vec<u8> {
        let img = GrayImage::from_pixel(width, height, image::Luma([value]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png)
            .expect("encode test PNG");
        out.into_inner()
    }

    #[test]
    fn decodes_rgb_in_hwc_order() {
        let d = decode_image(&rgb_png(2, 3), ColorMode::Rgb, None).unwrap();
        assert_eq!((d.height, d.width), (2, 3));
        // Row 1, column 2 → (x=2, y=1, 7).
        let at = (3 + 2) * 3;
        assert_eq!(&d.pixels[at..at + 3], &[2, 1, 7]);
    }

    #[test]
    fn grayscale_input_becomes_three_equal_channels() {
        let d = decode_image(&gray_png(4, 4, 200), ColorMode::Rgb, None).unwrap();
        assert_eq!(d.pixels.len(), 4 * 4 * 3);
        assert!(d.pixels.iter().all(|&p| p == 200));
    }

    #[test]
    fn rgb_input_becomes_one_channel() {
        let d = decode_image(&rgb_png(4, 5), ColorMode::Grayscale, None).unwrap();
        assert_eq!(d.pixels.len(), 4 * 5);
    }

    #[test]
    fn resizes_to_requested_height_and_width() {
        let d = decode_image(&rgb_png(8, 6), ColorMode::Rgb, Some((3, 5))).unwrap();
        assert_eq!((d.height, d.width), (3, 5));
        assert_eq!(d.pixels.len(), 3 * 5 * 3);
    }

    #[test]
    fn bad_bytes_are_errors_not_panics() {
        assert_eq!(
            decode_image(&[], ColorMode::Rgb, None).unwrap_err(),
            "zero-byte image"
        );
        assert!(decode_image(b"not an image", ColorMode::Rgb, None).is_err());
        let png = rgb_png(16, 16);
        assert!(decode_image(&png[..png.len() / 2], ColorMode::Rgb, None).is_err());
    }
}
