//! Colour management: variants are sRGB. A source with an embedded ICC profile (Display P3,
//! Adobe RGB, ProPhoto…) has its resized pixels converted from that profile to sRGB with
//! `moxcms` (perceptual intent, the profile's own rendering), so the picture keeps its colours in
//! browsers that assume untagged images are sRGB; the output carries no profile.
//!
//! The conversion runs on the *output* pixels (after resizing), so it costs `O(output)`.
//! Grey, CMYK and malformed profiles are ignored (the pixels are taken as they are), as is any
//! profile on an animation.

use std::io::Cursor;

use image::ImageDecoder;
use moxcms::{ColorProfile, DataColorSpace, Layout as CmsLayout, TransformOptions};

use super::Format;

/// The ICC profile embedded in `bytes`, if any: JPEG APP2 `ICC_PROFILE` segments (joined in
/// sequence order) read here, PNG `iCCP`, WebP `ICCP` and TIFF tags through the `image` decoders.
pub(crate) fn source_icc(bytes: &[u8], format: Format) -> Option<Vec<u8>> {
    match format {
        Format::Jpeg => jpeg_icc(bytes),
        Format::Png | Format::Webp | Format::Tiff => {
            let mut decoder =
                image::ImageReader::with_format(Cursor::new(bytes), format.image_format())
                    .into_decoder()
                    .ok()?;
            decoder.icc_profile().ok().flatten()
        }
        Format::Gif | Format::Bmp | Format::Avif => None,
    }
}

/// JPEG: APP2 segments starting `ICC_PROFILE\0`, then a 1-based sequence number and a count.
fn jpeg_icc(b: &[u8]) -> Option<Vec<u8>> {
    let mut parts: Vec<(u8, &[u8])> = Vec::new();
    let mut pos = 2;
    while pos + 4 <= b.len() {
        if b[pos] != 0xFF {
            return None;
        }
        let marker = b[pos + 1];
        if marker == 0xFF {
            pos += 1;
            continue;
        }
        if matches!(marker, 0xD0..=0xD8 | 0x01) {
            pos += 2;
            continue;
        }
        if matches!(marker, 0xDA | 0xD9) {
            break; // scan data: every APPn came before it
        }
        let len = usize::from(u16::from_be_bytes([b[pos + 2], b[pos + 3]]));
        let seg = b.get(pos + 4..pos + 2 + len)?;
        if marker == 0xE2 && seg.len() > 14 && seg.starts_with(b"ICC_PROFILE\0") {
            parts.push((seg[12], &seg[14..]));
        }
        pos += 2 + len;
    }
    if parts.is_empty() {
        return None;
    }
    parts.sort_by_key(|(seq, _)| *seq);
    Some(
        parts
            .into_iter()
            .flat_map(|(_, d)| d.iter().copied())
            .collect(),
    )
}

/// Converts tightly packed RGB (`channels` 3) or RGBA (4) pixels from `icc` to sRGB; `None`
/// when there is nothing to do (grey or non-RGB data, unusable profile).
pub(crate) fn to_srgb(data: &[u8], channels: usize, icc: &[u8]) -> Option<Vec<u8>> {
    let layout = match channels {
        3 => CmsLayout::Rgb,
        4 => CmsLayout::Rgba,
        _ => return None,
    };
    let src = ColorProfile::new_from_slice(icc).ok()?;
    if src.color_space != DataColorSpace::Rgb {
        return None;
    }
    let dst = ColorProfile::new_srgb();
    let transform = src
        .create_transform_8bit(layout, &dst, layout, TransformOptions::default())
        .ok()?;
    let mut out = vec![0u8; data.len()];
    transform.transform(data, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p3_icc() -> Vec<u8> {
        ColorProfile::new_display_p3()
            .encode()
            .unwrap_or_else(|e| panic!("encode P3 profile: {e:?}"))
    }

    #[test]
    fn jpeg_icc_segments_are_joined_in_order() {
        // SOI, APP2 #2 of 2, APP2 #1 of 2, SOS.
        let seg = |seq: u8, data: &[u8]| {
            let mut s = b"ICC_PROFILE\0".to_vec();
            s.extend_from_slice(&[seq, 2]);
            s.extend_from_slice(data);
            let mut out = vec![0xFF, 0xE2];
            out.extend_from_slice(&u16::try_from(s.len() + 2).unwrap_or(0).to_be_bytes());
            out.extend_from_slice(&s);
            out
        };
        let mut jpeg = vec![0xFF, 0xD8];
        jpeg.extend(seg(2, b"world"));
        jpeg.extend(seg(1, b"hello "));
        jpeg.extend_from_slice(&[0xFF, 0xDA, 0, 2]);
        assert_eq!(jpeg_icc(&jpeg).as_deref(), Some(&b"hello world"[..]));
        assert_eq!(jpeg_icc(&[0xFF, 0xD8, 0xFF, 0xDA, 0, 2]), None);
    }

    #[test]
    fn p3_green_becomes_a_less_saturated_srgb_green() {
        let icc = p3_icc();
        let out = to_srgb(&[120, 200, 100], 3, &icc).unwrap_or_default();
        // Expected from the P3 → XYZ → sRGB matrices: about (89, 201, 84).
        assert_eq!(out.len(), 3);
        assert!(
            out[0].abs_diff(89) <= 3 && out[1].abs_diff(201) <= 3 && out[2].abs_diff(84) <= 3,
            "{out:?}"
        );
        // Alpha is kept.
        let out = to_srgb(&[120, 200, 100, 77], 4, &icc).unwrap_or_default();
        assert_eq!(out.get(3), Some(&77));
        // Grey data and garbage profiles are left alone.
        assert_eq!(to_srgb(&[1, 2], 2, &icc), None);
        assert_eq!(to_srgb(&[1, 2, 3], 3, b"not a profile"), None);
    }
}
