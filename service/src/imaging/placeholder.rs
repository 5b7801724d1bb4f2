//! Placeholders a page can show before an image loads: a BlurHash string and the dominant
//! colour, both from one small sRGB thumbnail of the (EXIF-oriented) first frame.
//!
//! # Dominant colour
//! The thumbnail's opaque-enough pixels (alpha ≥ 128) are binned by their top four bits per
//! channel (4096 bins); the fullest bin wins (ties: the lowest bin index) and its pixels'
//! average is the colour. Deterministic; a fully transparent image gives white.

use super::resize::{decodable_header, render};
use super::{Fit, Format, ImagingError, Limits, ResizeSpec};

/// Longest side of the thumbnail placeholders are computed from.
pub const PLACEHOLDER_SIDE: u32 = 32;

/// A BlurHash and a dominant colour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placeholder {
    /// BlurHash with 4×3 components (3×4 for portrait images).
    pub blurhash: String,
    /// Dominant colour, sRGB.
    pub dominant: [u8; 3],
}

impl Placeholder {
    /// `#rrggbb`.
    pub fn dominant_hex(&self) -> String {
        let [r, g, b] = self.dominant;
        format!("#{r:02x}{g:02x}{b:02x}")
    }
}

/// Computes the placeholder of an image (CPU-bound: run it on the resize pool).
///
/// # Errors
/// As [`super::resize`] for the source: unsupported, corrupt, too large.
pub fn placeholder(bytes: &[u8], limits: &Limits) -> Result<Placeholder, ImagingError> {
    let header = decodable_header(bytes, limits)?;
    let spec = ResizeSpec {
        width: Some(PLACEHOLDER_SIDE),
        height: Some(PLACEHOLDER_SIDE),
        fit: Fit::Contain,
        enlarge: false,
        to_srgb: true,
        format: Some(Format::Png),
        ..ResizeSpec::default()
    };
    let img = render(bytes, &header, &spec, limits, true, Format::Png)?.into_rgba8();
    let (w, h) = img.dimensions();
    let (cx, cy) = if w >= h { (4, 3) } else { (3, 4) };
    let blurhash = blurhash::encode(cx, cy, w, h, img.as_raw())
        .map_err(|e| ImagingError::Internal(format!("blurhash: {e}")))?;
    Ok(Placeholder {
        blurhash,
        dominant: dominant(img.as_raw()),
    })
}

fn dominant(rgba: &[u8]) -> [u8; 3] {
    let mut count = vec![0u32; 4096];
    let mut sum = vec![[0u64; 3]; 4096];
    for p in rgba.chunks_exact(4) {
        if p[3] < 128 {
            continue;
        }
        let bin =
            (usize::from(p[0] >> 4) << 8) | (usize::from(p[1] >> 4) << 4) | usize::from(p[2] >> 4);
        count[bin] += 1;
        for c in 0..3 {
            sum[bin][c] += u64::from(p[c]);
        }
    }
    let mut best = 0usize;
    for (i, &n) in count.iter().enumerate() {
        if n > count[best] {
            best = i;
        }
    }
    let n = u64::from(count[best]);
    if n == 0 {
        return [255, 255, 255];
    }
    sum[best].map(|s| ((s + n / 2) / n) as u8)
}

#[cfg(test)]
mod tests {
    use image::{DynamicImage, RgbImage, Rgba, RgbaImage};

    use super::*;
    use crate::imaging::testdata;

    #[test]
    fn dominant_colour_is_the_biggest_area() {
        // 70% teal, 30% orange.
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(100, 50, |x, _| {
            if x < 70 {
                image::Rgb([20, 160, 150])
            } else {
                image::Rgb([250, 140, 20])
            }
        }));
        for format in [Format::Png, Format::Jpeg, Format::Webp] {
            let p = placeholder(&testdata::encode(&img, format), &Limits::default())
                .unwrap_or_else(|e| panic!("{format}: {e}"));
            for (got, want) in p.dominant.iter().zip([20u8, 160, 150]) {
                assert!(got.abs_diff(want) < 10, "{format}: {:?}", p.dominant);
            }
            assert_eq!(p.dominant_hex().len(), 7);
        }
    }

    #[test]
    fn blurhash_decodes_back_to_the_picture() {
        // Left half red, right half blue.
        let png = testdata::encode(&testdata::halves(120, 60), Format::Png);
        let p = placeholder(&png, &Limits::default()).unwrap_or_else(|e| panic!("{e}"));
        // 4x3 components: 1 size char, 1 max-AC char, 4 DC chars, 2 per AC component.
        assert_eq!(p.blurhash.len(), 6 + 2 * (4 * 3 - 1));
        let back = blurhash::decode(&p.blurhash, 40, 20, 1.0).unwrap_or_default();
        let at = |x: usize, y: usize| &back[(y * 40 + x) * 4..(y * 40 + x) * 4 + 3];
        let (left, right) = (at(3, 10), at(36, 10));
        assert!(left[0] > left[2] + 60, "left is red: {left:?}");
        assert!(right[2] > right[0] + 60, "right is blue: {right:?}");
        // Portrait: 3x4 components.
        let png = testdata::encode(&testdata::halves(40, 90), Format::Png);
        let p = placeholder(&png, &Limits::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.blurhash.len(), 6 + 2 * (3 * 4 - 1));
        // Deterministic.
        assert_eq!(placeholder(&png, &Limits::default()).ok(), Some(p));
    }

    #[test]
    fn transparent_pixels_do_not_count() {
        let img = DynamicImage::ImageRgba8(RgbaImage::from_fn(40, 40, |x, _| {
            if x < 30 {
                Rgba([255, 0, 0, 0])
            } else {
                Rgba([0, 0, 255, 255])
            }
        }));
        let p = placeholder(&testdata::encode(&img, Format::Png), &Limits::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            p.dominant[2] > 200 && p.dominant[0] < 40,
            "{:?}",
            p.dominant
        );
        let clear = DynamicImage::ImageRgba8(RgbaImage::from_pixel(8, 8, Rgba([0, 0, 0, 0])));
        let p = placeholder(&testdata::encode(&clear, Format::Png), &Limits::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.dominant, [255, 255, 255]);
    }
}
