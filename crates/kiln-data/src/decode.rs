//! Decoding one encoded image into packed 8-bit pixels.
//!
//! A pure per-row function with no shared state, so the reader can later run it on many
//! rows at once (rayon) without changing it.

use image::imageops::{self, FilterType};

use crate::resize::{Window, resample};

/// How many channels the model wants; inputs are converted whatever they were stored as
/// (grayscale, RGB, RGBA, CMYK JPEG, 16-bit PNG).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
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

/// How an image of another aspect ratio is fitted to the target size.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// Scale the shorter side to fit, then cut the centre (keeps proportions; what Keras'
    /// `crop_to_aspect_ratio=True` and torchvision's Resize + CenterCrop do).
    #[default]
    CenterCrop,
    /// Stretch to the target size (distorts proportions; `tf.image.resize`'s default).
    Squash,
}

/// What decoding produces: channel count, and optionally a fixed size and how to reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DecodeSpec {
    pub color: ColorMode,
    /// (height, width); `None` keeps each image's own size.
    pub size: Option<(usize, usize)>,
    pub resize: ResizeMode,
}

impl DecodeSpec {
    pub fn new(color: ColorMode, size: Option<(usize, usize)>, resize: ResizeMode) -> Self {
        Self {
            color,
            size,
            resize,
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

/// Decodes `bytes` (PNG or JPEG), converts to `color`, and fits it to `size` = (height,
/// width) by `resize` when given and different.
///
/// Errors are plain strings because a bad row is not fatal: the caller skips it and keeps
/// the message as a warning.
pub(crate) fn decode_image(
    bytes: &[u8],
    color: ColorMode,
    size: Option<(u32, u32)>,
    resize: ResizeMode,
) -> Result<DecodedImage, String> {
    if bytes.is_empty() {
        return Err("zero-byte image".to_owned());
    }
    let img = image::load_from_memory(bytes).map_err(|e| format!("cannot decode image: {e}"))?;
    let (pixels, width, height) = match color {
        ColorMode::Grayscale => {
            let buf = fit(img.into_luma8(), size, resize);
            let (w, h) = buf.dimensions();
            (buf.into_raw(), w, h)
        }
        ColorMode::Rgb => {
            let buf = fit(img.into_rgb8(), size, resize);
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

/// Fits `image` to `size` = (height, width). Centre-crop resamples the largest centred
/// window with the target's aspect ratio, so no pixel outside it is filtered.
fn fit<P>(
    image: image::ImageBuffer<P, Vec<u8>>,
    size: Option<(u32, u32)>,
    resize: ResizeMode,
) -> image::ImageBuffer<P, Vec<u8>>
where
    P: image::Pixel<Subpixel = u8> + 'static,
{
    let Some((h, w)) = size else { return image };
    let (src_w, src_h) = image.dimensions();
    if (src_h, src_w) == (h, w) || src_w == 0 || src_h == 0 {
        return image;
    }
    let full = Window {
        x: 0,
        y: 0,
        width: src_w as usize,
        height: src_h as usize,
    };
    let window = match resize {
        ResizeMode::Squash => full,
        ResizeMode::CenterCrop => {
            // Compare aspect ratios exactly: src_w / src_h against w / h.
            let (sw, sh, tw, th) = (
                u64::from(src_w),
                u64::from(src_h),
                u64::from(w),
                u64::from(h),
            );
            let (crop_w, crop_h) = if sw * th > sh * tw {
                ((sh * tw / th).max(1), sh)
            } else {
                (sw, (sw * th / tw).max(1))
            };
            Window {
                x: ((sw - crop_w) / 2) as usize,
                y: ((sh - crop_h) / 2) as usize,
                width: crop_w as usize,
                height: crop_h as usize,
            }
        }
    };
    let channels = usize::from(P::CHANNEL_COUNT);
    let pixels = resample(
        image.as_raw(),
        src_w as usize,
        channels,
        window,
        w as usize,
        h as usize,
    );
    // The length is right by construction; the fallback only guards the invariant.
    image::ImageBuffer::from_raw(w, h, pixels)
        .unwrap_or_else(|| imageops::resize(&image, w, h, FilterType::Triangle))
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
        let d = decode_image(&rgb_png(2, 3), ColorMode::Rgb, None, ResizeMode::Squash).unwrap();
        assert_eq!((d.height, d.width), (2, 3));
        // Row 1, column 2 → (x=2, y=1, 7).
        let at = (3 + 2) * 3;
        assert_eq!(&d.pixels[at..at + 3], &[2, 1, 7]);
    }

    #[test]
    fn grayscale_input_becomes_three_equal_channels() {
        let d = decode_image(
            &gray_png(4, 4, 200),
            ColorMode::Rgb,
            None,
            ResizeMode::Squash,
        )
        .unwrap();
        assert_eq!(d.pixels.len(), 4 * 4 * 3);
        assert!(d.pixels.iter().all(|&p| p == 200));
    }

    #[test]
    fn rgb_input_becomes_one_channel() {
        let d = decode_image(
            &rgb_png(4, 5),
            ColorMode::Grayscale,
            None,
            ResizeMode::Squash,
        )
        .unwrap();
        assert_eq!(d.pixels.len(), 4 * 5);
    }

    #[test]
    fn resizes_to_requested_height_and_width() {
        let d = decode_image(
            &rgb_png(8, 6),
            ColorMode::Rgb,
            Some((3, 5)),
            ResizeMode::Squash,
        )
        .unwrap();
        assert_eq!((d.height, d.width), (3, 5));
        assert_eq!(d.pixels.len(), 3 * 5 * 3);
    }

    #[test]
    fn centre_crop_keeps_the_middle_and_squash_keeps_everything() {
        // 4 rows × 8 columns, pixel (y, x) = (x, y, 7): a 2×2 centre crop of the square
        // middle (columns 2..6) then a downscale keeps x in 2..6 only.
        let crop = decode_image(
            &rgb_png(4, 8),
            ColorMode::Rgb,
            Some((2, 2)),
            ResizeMode::CenterCrop,
        )
        .unwrap();
        let xs: Vec<u8> = crop.pixels.chunks(3).map(|p| p[0]).collect();
        assert!(xs.iter().all(|&x| (2..6).contains(&x)), "{xs:?}");
        let squash = decode_image(
            &rgb_png(4, 8),
            ColorMode::Rgb,
            Some((2, 2)),
            ResizeMode::Squash,
        )
        .unwrap();
        let squashed: Vec<u8> = squash.pixels.chunks(3).map(|p| p[0]).collect();
        // Squash averages all 8 columns: its left column reaches further left, its right
        // column further right, than the crop's.
        assert!(
            squashed[0] < xs[0] && squashed[1] > xs[1],
            "{squashed:?} vs {xs:?}"
        );
        // Already the right aspect ratio: centre-crop equals squash.
        assert_eq!(
            decode_image(
                &rgb_png(8, 8),
                ColorMode::Rgb,
                Some((4, 4)),
                ResizeMode::CenterCrop
            ),
            decode_image(
                &rgb_png(8, 8),
                ColorMode::Rgb,
                Some((4, 4)),
                ResizeMode::Squash
            )
        );
    }

    #[test]
    fn bad_bytes_are_errors_not_panics() {
        assert_eq!(
            decode_image(&[], ColorMode::Rgb, None, ResizeMode::Squash).unwrap_err(),
            "zero-byte image"
        );
        assert!(decode_image(b"not an image", ColorMode::Rgb, None, ResizeMode::Squash).is_err());
        let png = rgb_png(16, 16);
        assert!(
            decode_image(
                &png[..png.len() / 2],
                ColorMode::Rgb,
                None,
                ResizeMode::Squash
            )
            .is_err()
        );
    }
}
