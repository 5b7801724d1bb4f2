//! Effects applied to the resized, oriented image before encoding: blur, sharpen, padding to
//! the requested box, rotation and flips, and flattening alpha onto a background.
//!
//! Every effect works on the *output* pixels (already within the output limits), so its cost is
//! bounded by `max_output_pixels` and the bounds on its parameter, never by the source size.

use image::{DynamicImage, GenericImageView, Rgba, RgbaImage, imageops};

/// Largest accepted blur sigma (`blur=`): a box-blur approximation of a Gaussian whose cost
/// does not grow with sigma.
pub const MAX_BLUR: f32 = 100.0;
/// Largest accepted sharpen sigma (`sharpen=`): an unsharp mask whose Gaussian kernel grows
/// with sigma, hence the tighter bound.
pub const MAX_SHARPEN: f32 = 10.0;

/// Post-resize effects. Sigmas are kept in tenths so the spec stays `Eq + Hash`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Effects {
    /// Clockwise rotation in degrees: 0, 90, 180 or 270; applied last, after padding.
    pub rotate: u16,
    /// Mirror left-right (after rotation).
    pub flip_h: bool,
    /// Mirror top-bottom (after rotation).
    pub flip_v: bool,
    /// Gaussian-like blur sigma in tenths of a pixel (1..=1000).
    pub blur_tenths: Option<u16>,
    /// Unsharp-mask sigma in tenths of a pixel (1..=100).
    pub sharpen_tenths: Option<u16>,
}

impl Effects {
    /// Whether any effect changes pixels.
    pub fn is_identity(&self) -> bool {
        *self == Self::default()
    }
}

/// An RGBA colour, e.g. the `bg=` parameter.
pub type Rgba8 = [u8; 4];

/// Blur, then sharpen (both on the output size).
pub(crate) fn filter(img: DynamicImage, fx: &Effects) -> DynamicImage {
    let mut img = img;
    if let Some(b) = fx.blur_tenths {
        img = img.fast_blur((f32::from(b) / 10.0).min(MAX_BLUR));
    }
    if let Some(s) = fx.sharpen_tenths {
        img = img.unsharpen((f32::from(s) / 10.0).min(MAX_SHARPEN), 1);
    }
    img
}

/// Rotation, then flips.
pub(crate) fn turn(img: DynamicImage, fx: &Effects) -> DynamicImage {
    let mut img = match fx.rotate {
        90 => img.rotate90(),
        180 => img.rotate180(),
        270 => img.rotate270(),
        _ => img,
    };
    if fx.flip_h {
        img = img.fliph();
    }
    if fx.flip_v {
        img = img.flipv();
    }
    img
}

/// Centres `img` on a `width` × `height` canvas of `bg`. The result has an alpha channel only
/// when `img` or `bg` is not opaque.
pub(crate) fn pad(img: DynamicImage, width: u32, height: u32, bg: Rgba8) -> DynamicImage {
    if img.dimensions() == (width, height) {
        return img;
    }
    let x = i64::from(width.saturating_sub(img.width()) / 2);
    let y = i64::from(height.saturating_sub(img.height()) / 2);
    let opaque = bg[3] == 255 && !img.color().has_alpha();
    if opaque {
        let mut canvas =
            image::RgbImage::from_pixel(width, height, image::Rgb([bg[0], bg[1], bg[2]]));
        imageops::replace(&mut canvas, &img.to_rgb8(), x, y);
        DynamicImage::ImageRgb8(canvas)
    } else {
        let mut canvas = RgbaImage::from_pixel(width, height, Rgba(bg));
        imageops::overlay(&mut canvas, &img.to_rgba8(), x, y);
        DynamicImage::ImageRgba8(canvas)
    }
}

/// Blends an alpha channel onto the opaque colour `bg` (JPEG has no transparency).
pub(crate) fn flatten(img: &DynamicImage, bg: Rgba8) -> DynamicImage {
    let blend = |c: u8, a: u8, b: u8| -> u8 {
        let (c, a, b) = (u32::from(c), u32::from(a), u32::from(b));
        ((c * a + b * (255 - a) + 127) / 255) as u8
    };
    match img {
        DynamicImage::ImageLumaA8(buf) if bg[0] == bg[1] && bg[1] == bg[2] => {
            let out = image::GrayImage::from_fn(buf.width(), buf.height(), |x, y| {
                let p = buf.get_pixel(x, y).0;
                image::Luma([blend(p[0], p[1], bg[0])])
            });
            DynamicImage::ImageLuma8(out)
        }
        other if other.color().has_alpha() => {
            let buf = other.to_rgba8();
            let out = image::RgbImage::from_fn(buf.width(), buf.height(), |x, y| {
                let p = buf.get_pixel(x, y).0;
                image::Rgb([
                    blend(p[0], p[3], bg[0]),
                    blend(p[1], p[3], bg[1]),
                    blend(p[2], p[3], bg[2]),
                ])
            });
            DynamicImage::ImageRgb8(out)
        }
        other => other.clone(),
    }
}

/// Parses `RRGGBB` or `RRGGBBAA` (hex, case-insensitive, no `#`).
pub fn parse_color(s: &str) -> Option<Rgba8> {
    if !(s.len() == 6 || s.len() == 8) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let byte = |i: usize| u8::from_str_radix(s.get(i..i + 2)?, 16).ok();
    let a = if s.len() == 8 { byte(6)? } else { 255 };
    Some([byte(0)?, byte(2)?, byte(4)?, a])
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::RgbImage;

    fn corners(w: u32, h: u32) -> DynamicImage {
        // Red top-left quadrant, the rest black.
        DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
            if x < w / 2 && y < h / 2 {
                image::Rgb([255, 0, 0])
            } else {
                image::Rgb([0, 0, 0])
            }
        }))
    }

    #[test]
    fn colours_parse_strictly() {
        assert_eq!(parse_color("ff0080"), Some([255, 0, 128, 255]));
        assert_eq!(parse_color("FF008040"), Some([255, 0, 128, 64]));
        for bad in [
            "",
            "fff",
            "#ff0080",
            "ff00zz",
            "ff008",
            "ff0080001",
            "+f0080",
        ] {
            assert_eq!(parse_color(bad), None, "{bad}");
        }
    }

    #[test]
    fn rotation_and_flips_move_the_red_corner() {
        let red = |img: &DynamicImage, x: u32, y: u32| img.to_rgb8().get_pixel(x, y).0[0] > 200;
        let base = corners(40, 20);
        let r90 = turn(
            base.clone(),
            &Effects {
                rotate: 90,
                ..Effects::default()
            },
        );
        assert_eq!(r90.dimensions(), (20, 40));
        assert!(red(&r90, 15, 5), "90° CW puts top-left at top-right");
        let r180 = turn(
            base.clone(),
            &Effects {
                rotate: 180,
                ..Effects::default()
            },
        );
        assert!(red(&r180, 35, 15));
        let r270 = turn(
            base.clone(),
            &Effects {
                rotate: 270,
                ..Effects::default()
            },
        );
        assert_eq!(r270.dimensions(), (20, 40));
        assert!(red(&r270, 5, 35));
        let h = turn(
            base.clone(),
            &Effects {
                flip_h: true,
                ..Effects::default()
            },
        );
        assert!(red(&h, 35, 5) && !red(&h, 5, 5));
        let v = turn(
            base,
            &Effects {
                flip_v: true,
                ..Effects::default()
            },
        );
        assert!(red(&v, 5, 15) && !red(&v, 5, 5));
    }

    #[test]
    fn blur_softens_and_sharpen_steepens_an_edge() {
        let edge = DynamicImage::ImageRgb8(RgbImage::from_fn(40, 10, |x, _| {
            if x < 20 {
                image::Rgb([0, 0, 0])
            } else {
                image::Rgb([255, 255, 255])
            }
        }));
        let blurred = filter(
            edge.clone(),
            &Effects {
                blur_tenths: Some(30),
                ..Effects::default()
            },
        );
        let v = blurred.to_rgb8().get_pixel(19, 5).0[0];
        assert!(v > 40 && v < 215, "edge pixel after blur: {v}");
        let soft = filter(
            edge,
            &Effects {
                blur_tenths: Some(20),
                ..Effects::default()
            },
        );
        let sharp = filter(
            soft.clone(),
            &Effects {
                sharpen_tenths: Some(20),
                ..Effects::default()
            },
        );
        let (a, b) = (
            soft.to_rgb8().get_pixel(18, 5).0[0],
            sharp.to_rgb8().get_pixel(18, 5).0[0],
        );
        assert!(
            b < a,
            "unsharp mask darkens the dark side of the edge: {a} -> {b}"
        );
    }

    #[test]
    fn pad_centres_on_the_background() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(10, 4, image::Rgb([0, 255, 0])));
        let out = pad(img.clone(), 10, 10, [0, 0, 255, 255]);
        assert_eq!(out.dimensions(), (10, 10));
        assert!(!out.color().has_alpha());
        let px = out.to_rgb8();
        assert_eq!(px.get_pixel(5, 0).0, [0, 0, 255]);
        assert_eq!(px.get_pixel(5, 5).0, [0, 255, 0]);
        assert_eq!(px.get_pixel(5, 9).0, [0, 0, 255]);
        let out = pad(img, 12, 4, [0, 0, 0, 0]);
        assert!(out.color().has_alpha());
        assert_eq!(out.to_rgba8().get_pixel(0, 2).0[3], 0);
        assert_eq!(out.to_rgba8().get_pixel(6, 2).0, [0, 255, 0, 255]);
    }

    #[test]
    fn flatten_uses_the_background() {
        let img = DynamicImage::ImageRgba8(RgbaImage::from_pixel(2, 2, Rgba([255, 0, 0, 0])));
        let out = flatten(&img, [0, 0, 255, 255]);
        assert_eq!(out.to_rgb8().get_pixel(0, 0).0, [0, 0, 255]);
        let half = DynamicImage::ImageRgba8(RgbaImage::from_pixel(2, 2, Rgba([255, 0, 0, 128])));
        let p = flatten(&half, [255, 255, 255, 255])
            .to_rgb8()
            .get_pixel(0, 0)
            .0;
        assert_eq!(p, [255, 127, 127]);
    }
}
