//! Reading an image's format and size from its headers, without decoding pixels.
//!
//! This is the decompression-bomb gate: every check here runs on a few header bytes (plus a
//! linear walk over block headers for GIF and WebP to count frames), so a 50,000 × 50,000 PNG
//! or a GIF with thousands of frames is rejected in microseconds, before any pixel buffer
//! exists. [`super::resize`] calls [`probe`] first, so it inherits the same guarantees.

use super::{Format, ImagingError, Limits, sniff};

/// Most frames an animated GIF or WebP may declare: more is a bomb aimed at whoever renders it
/// (sis itself decodes every frame only for animated `/v1` variants, within its own limits).
pub const MAX_FRAMES: usize = 1000;

/// What the headers say about an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub format: Format,
    /// Displayed width: after EXIF orientation (a JPEG rotated by 90° reports its sides swapped).
    pub width: u32,
    /// Displayed height, see `width`.
    pub height: u32,
}

/// Header facts shared with the resize pipeline.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Header {
    pub format: Format,
    /// Stored (not displayed) dimensions.
    pub width: u32,
    pub height: u32,
    /// EXIF orientation 1..=8 when the format's header told us (JPEG); 1 otherwise.
    pub exif_orientation: u8,
    /// Frames counted from block headers (GIF image descriptors, WebP ANMF chunks); 1 for
    /// still formats.
    pub frames: usize,
}

impl Header {
    pub fn swaps_sides(&self) -> bool {
        matches!(self.exif_orientation, 5..=8)
    }
}

/// Reads format and displayed dimensions from headers only.
///
/// # Errors
/// [`ImagingError::Unsupported`] when the magic bytes are unknown, [`ImagingError::Corrupt`]
/// when the headers are truncated or malformed, [`ImagingError::TooLarge`] when the declared
/// size exceeds `limits.max_input_pixels` (or an animation declares more than [`MAX_FRAMES`]).
pub fn probe(bytes: &[u8], limits: &Limits) -> Result<Probe, ImagingError> {
    let h = read_header(bytes, limits)?;
    let (width, height) = if h.swaps_sides() {
        (h.height, h.width)
    } else {
        (h.width, h.height)
    };
    Ok(Probe {
        format: h.format,
        width,
        height,
    })
}

pub(crate) fn read_header(bytes: &[u8], limits: &Limits) -> Result<Header, ImagingError> {
    let format = sniff(bytes).ok_or(ImagingError::Unsupported)?;
    let mut exif_orientation = 1;
    let mut frames = 1;
    let (width, height) = match format {
        Format::Png => png_size(bytes)?,
        Format::Gif => {
            let (w, h, n) = gif_size(bytes, limits)?;
            frames = n;
            (w, h)
        }
        Format::Jpeg => {
            let j = jpeg_info(bytes)?;
            exif_orientation = j.orientation;
            (j.width, j.height)
        }
        Format::Webp => {
            let (w, h, n) = webp_size(bytes, limits)?;
            frames = n;
            (w, h)
        }
        Format::Bmp => bmp_size(bytes)?,
        Format::Tiff => tiff_size(bytes, limits)?,
        Format::Avif => avif_size(bytes)?,
    };
    if width == 0 || height == 0 {
        return Err(ImagingError::Corrupt(format!(
            "{format} declares an empty {width}x{height} image"
        )));
    }
    check_input(width, height, limits)?;
    Ok(Header {
        format,
        width,
        height,
        exif_orientation,
        frames,
    })
}

fn check_input(width: u32, height: u32, limits: &Limits) -> Result<(), ImagingError> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_input_pixels {
        return Err(ImagingError::TooLarge(format!(
            "source is {width}x{height} = {pixels} px, limit is {} px",
            limits.max_input_pixels
        )));
    }
    Ok(())
}

fn corrupt(format: Format, what: &str) -> ImagingError {
    ImagingError::Corrupt(format!("{format}: {what}"))
}

fn be_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}
fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}
fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}
fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}
fn le_u24(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(3)?)?;
    Some(u32::from(s[0]) | u32::from(s[1]) << 8 | u32::from(s[2]) << 16)
}

/// PNG: the IHDR chunk must come first (8-byte signature, then length 13, "IHDR", w, h).
fn png_size(b: &[u8]) -> Result<(u32, u32), ImagingError> {
    let bad = || corrupt(Format::Png, "missing or malformed IHDR");
    if be_u32(b, 8) != Some(13) || b.get(12..16) != Some(b"IHDR") {
        return Err(bad());
    }
    let w = be_u32(b, 16).ok_or_else(bad)?;
    let h = be_u32(b, 20).ok_or_else(bad)?;
    // The PNG spec caps each side at 2^31 - 1.
    if w > i32::MAX as u32 || h > i32::MAX as u32 || b.len() < 33 {
        return Err(bad());
    }
    Ok((w, h))
}

/// GIF: the logical screen, then a walk over blocks (skipping LZW data, never decoding it) to
/// check every frame and count them. A truncated tail after at least one complete frame
/// header is tolerated (browsers show such files); no frame at all is corrupt.
fn gif_size(b: &[u8], limits: &Limits) -> Result<(u32, u32, usize), ImagingError> {
    let f = Format::Gif;
    let screen_w = le_u16(b, 6).ok_or_else(|| corrupt(f, "truncated header"))?;
    let screen_h = le_u16(b, 8).ok_or_else(|| corrupt(f, "truncated header"))?;
    let flags = *b.get(10).ok_or_else(|| corrupt(f, "truncated header"))?;
    check_input(u32::from(screen_w), u32::from(screen_h), limits)?;
    let mut pos = 13;
    if flags & 0x80 != 0 {
        pos += 3 << ((flags & 7) + 1);
    }
    let mut frames = 0usize;
    let mut first_frame = None;
    // Skips a chain of data sub-blocks; `None` when the file ends inside it.
    let skip_sub_blocks = |mut p: usize| -> Option<usize> {
        loop {
            let len = usize::from(*b.get(p)?);
            p += 1;
            if len == 0 {
                return Some(p);
            }
            p += len;
        }
    };
    while let Some(&tag) = b.get(pos) {
        match tag {
            0x3B => break, // trailer
            0x21 => {
                // Extension: label byte, then sub-blocks.
                match skip_sub_blocks(pos + 2) {
                    Some(p) => pos = p,
                    None => break,
                }
            }
            0x2C => {
                let (Some(w), Some(h), Some(&lflags)) =
                    (le_u16(b, pos + 5), le_u16(b, pos + 7), b.get(pos + 9))
                else {
                    break;
                };
                check_input(u32::from(w), u32::from(h), limits)?;
                frames += 1;
                if frames > MAX_FRAMES {
                    return Err(ImagingError::TooLarge(format!(
                        "GIF has more than {MAX_FRAMES} frames"
                    )));
                }
                if first_frame.is_none() {
                    first_frame = Some((w, h));
                }
                let mut p = pos + 10;
                if lflags & 0x80 != 0 {
                    p += 3 << ((lflags & 7) + 1);
                }
                // LZW minimum code size, then the image data sub-blocks.
                match skip_sub_blocks(p + 1) {
                    Some(p) => pos = p,
                    None => break,
                }
            }
            _ if frames > 0 => break, // trailing garbage after real frames
            _ => return Err(corrupt(f, "unexpected block before the first frame")),
        }
    }
    let Some((fw, fh)) = first_frame else {
        return Err(corrupt(f, "no image data"));
    };
    // Some encoders write a 0x0 logical screen; decoders then use the first frame's size.
    if screen_w == 0 || screen_h == 0 {
        return Ok((u32::from(fw), u32::from(fh), frames));
    }
    Ok((u32::from(screen_w), u32::from(screen_h), frames))
}

pub(crate) struct JpegInfo {
    pub width: u32,
    pub height: u32,
    pub orientation: u8,
    /// Number of colour components (1 grey, 3 YCbCr, 4 CMYK/YCCK).
    pub components: u8,
}

/// JPEG: walks marker segments up to the first SOFn, collecting the EXIF orientation from APP1
/// on the way (APP1 always precedes the frame header in practice).
pub(crate) fn jpeg_info(b: &[u8]) -> Result<JpegInfo, ImagingError> {
    let f = Format::Jpeg;
    let mut pos = 2;
    let mut orientation = 1;
    loop {
        // Markers may be preceded by any number of 0xFF fill bytes.
        if b.get(pos) != Some(&0xFF) {
            return Err(corrupt(
                f,
                if pos >= b.len() {
                    "truncated before the frame header"
                } else {
                    "bad marker"
                },
            ));
        }
        while b.get(pos) == Some(&0xFF) {
            pos += 1;
        }
        let marker = *b
            .get(pos)
            .ok_or_else(|| corrupt(f, "truncated before the frame header"))?;
        pos += 1;
        match marker {
            0xD8 | 0x01 | 0xD0..=0xD7 => continue, // standalone markers
            0xD9 | 0xDA => return Err(corrupt(f, "no frame header before the scan")),
            _ => {}
        }
        let len = usize::from(
            be_u16(b, pos).ok_or_else(|| corrupt(f, "truncated before the frame header"))?,
        );
        if len < 2 {
            return Err(corrupt(f, "bad segment length"));
        }
        let seg = b
            .get(pos + 2..pos + len)
            .ok_or_else(|| corrupt(f, "truncated segment"))?;
        match marker {
            0xE1 if seg.starts_with(b"Exif\0\0") => {
                if let Some(o) = image::metadata::Orientation::from_exif_chunk(&seg[6..]) {
                    orientation = o.to_exif();
                }
            }
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                let h = be_u16(seg, 1).ok_or_else(|| corrupt(f, "short frame header"))?;
                let w = be_u16(seg, 3).ok_or_else(|| corrupt(f, "short frame header"))?;
                let components = *seg.get(5).ok_or_else(|| corrupt(f, "short frame header"))?;
                if h == 0 {
                    // DNL-defined height: legal but practically unused; we don't support it.
                    return Err(corrupt(f, "height defined by DNL is not supported"));
                }
                return Ok(JpegInfo {
                    width: u32::from(w),
                    height: u32::from(h),
                    orientation,
                    components,
                });
            }
            _ => {}
        }
        pos += len;
    }
}

/// Whether a JPEG ends its entropy-coded data with an EOI marker. Entropy data cannot contain
/// `FF D9` (0xFF bytes are stuffed), so finding it after the first scan header means the file
/// was not cut short; a search from the end finds it at once in a complete file. Segments
/// before the scan (an EXIF thumbnail has its own EOI) are skipped by length.
pub(crate) fn jpeg_complete(b: &[u8]) -> bool {
    let mut pos = 2;
    loop {
        while b.get(pos) == Some(&0xFF) && b.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        if b.get(pos) != Some(&0xFF) {
            return false;
        }
        let Some(&marker) = b.get(pos + 1) else {
            return false;
        };
        pos += 2;
        if matches!(marker, 0xD0..=0xD8 | 0x01) {
            continue;
        }
        let Some(len) = be_u16(b, pos) else {
            return false;
        };
        pos += usize::from(len);
        if marker == 0xDA {
            return b
                .get(pos..)
                .is_some_and(|rest| rest.windows(2).rev().any(|w| w == [0xFF, 0xD9]));
        }
    }
}

/// ISO-BMFF boxes in `b`: (type, payload).
fn bmff_boxes(b: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let size = be_u32(b, pos)? as usize;
        let kind: [u8; 4] = b.get(pos + 4..pos + 8)?.try_into().ok()?;
        let (header, size) = match size {
            0 => (8, b.len() - pos),
            1 => (
                16,
                usize::try_from(u64::from_be_bytes(
                    b.get(pos + 8..pos + 16)?.try_into().ok()?,
                ))
                .ok()?,
            ),
            n => (8, n),
        };
        if size < header {
            return None;
        }
        let payload = b.get(pos + header..pos.checked_add(size)?)?;
        pos += size;
        Some((kind, payload))
    })
}

/// AVIF: the largest `ispe` (image spatial extents) property under `meta/iprp/ipco`; a grid
/// image's own extent is larger than its tiles', and an alpha plane matches its colour image.
fn avif_size(b: &[u8]) -> Result<(u32, u32), ImagingError> {
    let bad = || corrupt(Format::Avif, "no image size (ispe) in meta/iprp/ipco");
    let child = |parent: &[u8], kind: &[u8; 4]| {
        bmff_boxes(parent)
            .find(|(k, _)| k == kind)
            .map(|(_, p)| p.to_vec())
    };
    // `meta` is a FullBox: 4 bytes of version and flags before its children.
    let meta = child(b, b"meta").ok_or_else(bad)?;
    let iprp = child(meta.get(4..).ok_or_else(bad)?, b"iprp").ok_or_else(bad)?;
    let ipco = child(&iprp, b"ipco").ok_or_else(bad)?;
    bmff_boxes(&ipco)
        .filter(|(k, _)| k == b"ispe")
        .filter_map(|(_, p)| Some((be_u32(p, 4)?, be_u32(p, 8)?)))
        .max_by_key(|&(w, h)| u64::from(w) * u64::from(h))
        .ok_or_else(bad)
}

/// WebP: RIFF container; the size comes from VP8X (canvas), VP8 (lossy) or VP8L (lossless).
/// Animated files are walked chunk by chunk to count ANMF frames.
fn webp_size(b: &[u8], limits: &Limits) -> Result<(u32, u32, usize), ImagingError> {
    let f = Format::Webp;
    let bad = |what| corrupt(f, what);
    let fourcc = b.get(12..16).ok_or_else(|| bad("truncated header"))?;
    let data = 20;
    match fourcc {
        b"VP8 " => {
            // 3-byte frame tag, start code 9d 01 2a, then 14-bit sizes (2 scale bits each).
            if b.get(data + 3..data + 6) != Some(&[0x9d, 0x01, 0x2a]) {
                return Err(bad("bad VP8 start code"));
            }
            let w = le_u16(b, data + 6).ok_or_else(|| bad("truncated VP8 header"))? & 0x3FFF;
            let h = le_u16(b, data + 8).ok_or_else(|| bad("truncated VP8 header"))? & 0x3FFF;
            Ok((u32::from(w), u32::from(h), 1))
        }
        b"VP8L" => {
            if b.get(data) != Some(&0x2F) {
                return Err(bad("bad VP8L signature"));
            }
            let bits = le_u32(b, data + 1).ok_or_else(|| bad("truncated VP8L header"))?;
            Ok(((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, 1))
        }
        b"VP8X" => {
            let flags = *b.get(data).ok_or_else(|| bad("truncated VP8X header"))?;
            let w = le_u24(b, data + 4).ok_or_else(|| bad("truncated VP8X header"))? + 1;
            let h = le_u24(b, data + 7).ok_or_else(|| bad("truncated VP8X header"))? + 1;
            check_input(w, h, limits)?;
            let mut frames = 1usize;
            if flags & 0x02 != 0 {
                // Animated: count ANMF chunks without touching their payloads.
                let mut pos: usize = 12;
                frames = 0;
                while let (Some(tag), Some(len)) = (
                    b.get(pos..pos.saturating_add(4)),
                    le_u32(b, pos.saturating_add(4)),
                ) {
                    if tag == b"ANMF" {
                        frames += 1;
                        if frames > MAX_FRAMES {
                            return Err(ImagingError::TooLarge(format!(
                                "WebP has more than {MAX_FRAMES} frames"
                            )));
                        }
                    }
                    let len = usize::try_from(len).unwrap_or(usize::MAX);
                    pos = pos
                        .saturating_add(8)
                        .saturating_add(len)
                        .saturating_add(len & 1);
                }
                frames = frames.max(1);
            }
            Ok((w, h, frames))
        }
        _ => Err(bad("unknown first chunk")),
    }
}

/// BMP: BITMAPCOREHEADER (12 bytes, u16 sides) or BITMAPINFOHEADER and later (i32 sides, a
/// negative height meaning top-down rows).
fn bmp_size(b: &[u8]) -> Result<(u32, u32), ImagingError> {
    let f = Format::Bmp;
    let dib = le_u32(b, 14).ok_or_else(|| corrupt(f, "truncated header"))?;
    if dib == 12 {
        let w = le_u16(b, 18).ok_or_else(|| corrupt(f, "truncated header"))?;
        let h = le_u16(b, 20).ok_or_else(|| corrupt(f, "truncated header"))?;
        return Ok((u32::from(w), u32::from(h)));
    }
    let w = le_u32(b, 18).ok_or_else(|| corrupt(f, "truncated header"))? as i32;
    let h = le_u32(b, 22).ok_or_else(|| corrupt(f, "truncated header"))? as i32;
    if w <= 0 || h == 0 || h == i32::MIN {
        return Err(corrupt(f, "bad dimensions"));
    }
    Ok((w.unsigned_abs(), h.unsigned_abs()))
}

/// TIFF: the `tiff` crate (via `image`) reads the first IFD; its own limits cap what that
/// allocates, and no strip is decoded.
fn tiff_size(b: &[u8], limits: &Limits) -> Result<(u32, u32), ImagingError> {
    let mut reader =
        image::ImageReader::with_format(std::io::Cursor::new(b), image::ImageFormat::Tiff);
    reader.limits(super::resize::decoder_limits(limits));
    reader.into_dimensions().map_err(|e| match e {
        image::ImageError::Limits(e) => ImagingError::TooLarge(format!("tiff: {e}")),
        e => corrupt(Format::Tiff, &e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::imaging::testdata;

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn probe_reads_dimensions_of_every_format() {
        let img = testdata::gradient(37, 21);
        for format in Format::ALL {
            let bytes = testdata::encode(&img, format);
            let p = probe(&bytes, &limits()).unwrap_or_else(|e| panic!("{format}: {e}"));
            assert_eq!(
                p,
                Probe {
                    format,
                    width: 37,
                    height: 21
                },
                "{format}"
            );
        }
    }

    #[test]
    fn probe_reads_lossy_and_extended_webp_headers() {
        // VP8 (lossy) key frame header, hand-made: only the header fields matter to probe.
        let mut vp8 = b"RIFF\0\0\0\0WEBPVP8 \x10\0\0\0".to_vec();
        vp8.extend_from_slice(&[0x50, 0x01, 0x00, 0x9d, 0x01, 0x2a]);
        vp8.extend_from_slice(&640u16.to_le_bytes());
        vp8.extend_from_slice(&480u16.to_le_bytes());
        vp8.extend_from_slice(&[0; 6]);
        let p = probe(&vp8, &limits()).map(|p| (p.width, p.height));
        assert_eq!(p.ok(), Some((640, 480)));

        // VP8X canvas 20000 x 20000 (400 MP): rejected from the header.
        let mut vp8x = b"RIFF\0\0\0\0WEBPVP8X\x0a\0\0\0".to_vec();
        vp8x.extend_from_slice(&[0x02, 0, 0, 0]);
        vp8x.extend_from_slice(&[0x1F, 0x4E, 0x00, 0x1F, 0x4E, 0x00]);
        assert!(matches!(
            probe(&vp8x, &limits()),
            Err(ImagingError::TooLarge(_))
        ));
    }

    #[test]
    fn probe_reports_displayed_size_of_rotated_jpeg() {
        let img = testdata::gradient(40, 20);
        let rotated = testdata::jpeg_with_orientation(&img, 6);
        let p = probe(&rotated, &limits()).map(|p| (p.width, p.height));
        assert_eq!(p.ok(), Some((20, 40)));
        let flipped = testdata::jpeg_with_orientation(&img, 3);
        let p = probe(&flipped, &limits()).map(|p| (p.width, p.height));
        assert_eq!(p.ok(), Some((40, 20)));
    }

    fn assert_fast_too_large(bytes: &[u8]) {
        let started = Instant::now();
        let result = probe(bytes, &limits());
        // Generous bound: the point is "no decoding happened", not a benchmark.
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(
            matches!(result, Err(ImagingError::TooLarge(_))),
            "expected TooLarge, got {result:?}"
        );
    }

    #[test]
    fn png_bomb_is_rejected_from_the_header() {
        let bomb = testdata::png_declaring(50_000, 50_000);
        assert!(bomb.len() < 100);
        assert_fast_too_large(&bomb);
        // Just under the limit is fine for probe (it never decodes).
        assert!(probe(&testdata::png_declaring(10_000, 10_000), &limits()).is_ok());
    }

    #[test]
    fn gif_bombs_are_rejected_from_the_header() {
        assert_fast_too_large(&testdata::gif_declaring(50_000, 50_000, 1));
        assert_fast_too_large(&testdata::gif_declaring(10, 10, 5_000));
        let ok = probe(&testdata::gif_declaring(10, 10, MAX_FRAMES), &limits());
        assert_eq!(ok.ok().map(|p| (p.width, p.height)), Some((10, 10)));
    }

    #[test]
    fn tighter_limits_apply() {
        let small = Limits {
            max_input_pixels: 100,
            ..Limits::default()
        };
        let bytes = testdata::encode(&testdata::gradient(11, 10), Format::Png);
        assert!(matches!(
            probe(&bytes, &small),
            Err(ImagingError::TooLarge(_))
        ));
        let bytes = testdata::encode(&testdata::gradient(10, 10), Format::Png);
        assert!(probe(&bytes, &small).is_ok());
    }

    #[test]
    fn garbage_and_truncated_headers() {
        assert!(matches!(
            probe(&[], &limits()),
            Err(ImagingError::Unsupported)
        ));
        assert!(matches!(
            probe(&[0; 100], &limits()),
            Err(ImagingError::Unsupported)
        ));
        assert!(matches!(
            probe(b"definitely not an image", &limits()),
            Err(ImagingError::Unsupported)
        ));
        let img = testdata::gradient(30, 30);
        for format in [
            Format::Jpeg,
            Format::Png,
            Format::Gif,
            Format::Bmp,
            Format::Webp,
        ] {
            let bytes = testdata::encode(&img, format);
            for cut in [4, 12, 20] {
                let r = probe(&bytes[..cut], &limits());
                assert!(
                    matches!(r, Err(ImagingError::Corrupt(_) | ImagingError::Unsupported)),
                    "{format} cut at {cut}: {r:?}"
                );
            }
        }
        // A JPEG with its SOF cut off, and a GIF with no frame.
        let jpeg = testdata::encode(&img, Format::Jpeg);
        let sof = jpeg
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .unwrap_or_else(|| panic!("no SOF0 in test JPEG"));
        for cut in [sof, sof + 4, sof + 8] {
            let r = probe(&jpeg[..cut], &limits());
            assert!(
                matches!(r, Err(ImagingError::Corrupt(_))),
                "cut at {cut}: {r:?}"
            );
        }
        let gif = testdata::gif_declaring(10, 10, 0);
        assert!(matches!(
            probe(&gif, &limits()),
            Err(ImagingError::Corrupt(_))
        ));
        // Zero-sized declarations.
        assert!(matches!(
            probe(&testdata::png_declaring(0, 10), &limits()),
            Err(ImagingError::Corrupt(_))
        ));
    }
}
