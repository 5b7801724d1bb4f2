//! Test-only image builders: every test image is generated in code (no binary fixtures),
//! including the hand-made bombs and the EXIF segment.

use std::io::Cursor;

use image::{DynamicImage, Rgb, RgbImage, Rgba, RgbaImage};

use super::Format;

/// A smooth colour gradient with a little texture, `w` × `h`.
pub fn gradient(w: u32, h: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            (x * 255 / w.max(1)) as u8,
            (y * 255 / h.max(1)) as u8,
            ((x ^ y) & 0xFF) as u8,
        ])
    }))
}

/// Deterministic noise: compresses badly, so JPEG quality shows in the size.
pub fn noise(w: u32, h: u32) -> DynamicImage {
    let mut state = 0x2545_F491_u32;
    DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |_, _| {
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state & 0xFF) as u8
        };
        Rgb([next(), next(), next()])
    }))
}

/// Left half red, right half blue: shows where a rotation put things.
pub fn halves(w: u32, h: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, _| {
        if x < w / 2 {
            Rgb([255, 0, 0])
        } else {
            Rgb([0, 0, 255])
        }
    }))
}

/// Semi-transparent RGBA image.
pub fn translucent(w: u32, h: u32) -> DynamicImage {
    DynamicImage::ImageRgba8(RgbaImage::from_fn(w, h, |x, y| {
        Rgba([
            200,
            (x % 256) as u8,
            (y % 256) as u8,
            if x < w / 2 { 0 } else { 255 },
        ])
    }))
}

pub fn encode(img: &DynamicImage, format: Format) -> Vec<u8> {
    let mut out = Vec::new();
    let img = if format == Format::Jpeg {
        DynamicImage::ImageRgb8(img.to_rgb8())
    } else {
        img.clone()
    };
    match img.write_to(Cursor::new(&mut out), format.image_format()) {
        Ok(()) => out,
        Err(e) => panic!("encoding test image as {format}: {e}"),
    }
}

/// A JPEG whose APP1 EXIF segment (built by hand, little-endian TIFF) says `orientation`.
pub fn jpeg_with_orientation(img: &DynamicImage, orientation: u16) -> Vec<u8> {
    let jpeg = encode(img, Format::Jpeg);
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"II*\0");
    tiff.extend_from_slice(&8u32.to_le_bytes()); // IFD0 right after the header
    tiff.extend_from_slice(&1u16.to_le_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_le_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_le_bytes()); // count
    tiff.extend_from_slice(&orientation.to_le_bytes());
    tiff.extend_from_slice(&[0, 0]); // value padding
    tiff.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let len = u16::try_from(app1.len() + 2).unwrap_or(u16::MAX);
    let mut out = jpeg[..2].to_vec(); // SOI
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(0).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A ~70-byte, well-formed PNG whose IHDR declares `w` × `h` RGBA pixels.
pub fn png_declaring(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    // A stored (uncompressed) zlib stream of one zero byte; the image data is "short".
    png_chunk(
        &mut out,
        b"IDAT",
        &[
            0x78, 0x01, 0x01, 0x01, 0x00, 0xFE, 0xFF, 0x00, 0x00, 0x01, 0x00, 0x01,
        ],
    );
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// A GIF with a `screen_w` × `screen_h` logical screen and `frames` 1×1 frames.
pub fn gif_declaring(screen_w: u16, screen_h: u16, frames: usize) -> Vec<u8> {
    let mut out = b"GIF89a".to_vec();
    out.extend_from_slice(&screen_w.to_le_bytes());
    out.extend_from_slice(&screen_h.to_le_bytes());
    // Global colour table of 2 entries (black, white).
    out.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF]);
    for _ in 0..frames {
        // Graphic control extension (delay 0).
        out.extend_from_slice(&[0x21, 0xF9, 4, 0, 0, 0, 0, 0]);
        // Image descriptor: 1×1 at (0, 0), no local table.
        out.extend_from_slice(&[0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0]);
        // LZW min code size 2, one sub-block: clear, index 0, end.
        out.extend_from_slice(&[2, 2, 0x44, 0x01, 0]);
    }
    out.push(0x3B);
    out
}

/// Mean absolute difference per channel between two same-sized RGB images.
pub fn mean_abs_diff(a: &DynamicImage, b: &DynamicImage) -> f64 {
    let (a, b) = (a.to_rgb8(), b.to_rgb8());
    assert_eq!(a.dimensions(), b.dimensions());
    let total: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    total as f64 / a.as_raw().len() as f64
}

/// Decodes an output; AVIF through libavif (the `image` crate has no AV1 decoder here).
pub fn decode(bytes: &[u8]) -> DynamicImage {
    if super::sniff(bytes) == Some(Format::Avif) {
        return match super::avif_decode::decode(bytes, u64::MAX) {
            Ok(img) => img,
            Err(e) => panic!("decoding AVIF output: {e}"),
        };
    }
    match image::load_from_memory(bytes) {
        Ok(img) => img,
        Err(e) => panic!("decoding output: {e}"),
    }
}
