//! Stripping metadata from originals without re-encoding them: the pixels, their compressed
//! bytes and the colour profile stay exactly as uploaded, only metadata segments change.
//!
//! - [`Strip::Gps`]: the EXIF GPS IFD is removed (its pointer dropped from IFD0, its entries and
//!   out-of-line values zeroed in place) and XMP packets, which may repeat the location, are
//!   dropped. JPEG (APP1), PNG (`eXIf`, XMP `iTXt`) and WebP (`EXIF`, `XMP `).
//! - [`Strip::All`]: EXIF, XMP, IPTC/Photoshop (APP13), comments and text chunks go; what
//!   decides how the image *looks* stays: the ICC profile (APP2 / `iCCP` / `ICCP`), JFIF, Adobe
//!   APP14 (the colour transform of CMYK JPEGs), PNG `gAMA`/`cHRM`/`sRGB`/`pHYs`, and the EXIF
//!   orientation, rewritten as a minimal EXIF holding only that tag.
//!
//! GIF, BMP and TIFF originals are returned unchanged (GIF and BMP carry no location; TIFF's
//! metadata is its structure, which this module does not rewrite). Pure byte surgery: bounded by
//! the input length, no decoding.

use super::Format;

/// What to strip.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Strip {
    /// Location only: the EXIF GPS IFD and XMP packets.
    Gps,
    /// Every metadata segment that does not change how the image looks.
    All,
}

/// `bytes` (already sniffed as `format`) with the metadata `what` says removed; `None` when
/// nothing had to change (the caller keeps the original bytes and MD5).
pub fn strip_metadata(bytes: &[u8], format: Format, what: Strip) -> Option<Vec<u8>> {
    let out = match format {
        Format::Jpeg => strip_jpeg(bytes, what)?,
        Format::Png => strip_png(bytes, what)?,
        Format::Webp => strip_webp(bytes, what)?,
        Format::Gif | Format::Bmp | Format::Tiff | Format::Avif => return None,
    };
    (out != bytes).then_some(out)
}

const XMP_JPEG: &[u8] = b"http://ns.adobe.com/xap/1.0/\0";
const XMP_EXT_JPEG: &[u8] = b"http://ns.adobe.com/xmp/extension/\0";

fn strip_jpeg(b: &[u8], what: Strip) -> Option<Vec<u8>> {
    if !b.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut out = Vec::with_capacity(b.len());
    out.extend_from_slice(&b[..2]);
    let mut pos = 2;
    let mut orientation = None;
    let mut wrote_exif = false;
    loop {
        if pos + 4 > b.len() || b[pos] != 0xFF {
            return None; // malformed: leave the file alone
        }
        let marker = b[pos + 1];
        if matches!(marker, 0xDA | 0xD9) || !(0xC0..=0xFE).contains(&marker) {
            // Scan (or EOI, or fill): everything from here on is image data.
            break;
        }
        let len = usize::from(u16::from_be_bytes([b[pos + 2], b[pos + 3]]));
        let end = pos + 2 + len;
        if len < 2 || end > b.len() {
            return None;
        }
        let seg = &b[pos + 4..end];
        let is_exif = marker == 0xE1 && seg.starts_with(b"Exif\0\0");
        let is_xmp = marker == 0xE1 && (seg.starts_with(XMP_JPEG) || seg.starts_with(XMP_EXT_JPEG));
        let keep = match what {
            Strip::Gps => !is_xmp,
            Strip::All => match marker {
                0xE0 => seg.starts_with(b"JFIF\0") || seg.starts_with(b"JFXX\0"),
                0xE2 => seg.starts_with(b"ICC_PROFILE\0"),
                0xEE => seg.starts_with(b"Adobe"),
                0xE1 | 0xE3..=0xED | 0xEF | 0xFE => false,
                _ => true,
            },
        };
        if is_exif && what == Strip::Gps {
            let mut tiff = seg[6..].to_vec();
            remove_gps(&mut tiff);
            out.extend_from_slice(&b[pos..pos + 4]);
            out.extend_from_slice(b"Exif\0\0");
            out.extend_from_slice(&tiff);
        } else if is_exif {
            orientation = orientation.or_else(|| tiff_orientation(&seg[6..]));
        } else if keep {
            out.extend_from_slice(&b[pos..end]);
        }
        // A minimal EXIF keeps the orientation, right after the leading APP0/APP1 position.
        if what == Strip::All && !wrote_exif && is_exif {
            if let Some(o) = orientation.filter(|&o| o != 1) {
                out.extend_from_slice(&minimal_exif_segment(o));
            }
            wrote_exif = true;
        }
        pos = end;
    }
    out.extend_from_slice(&b[pos..]);
    Some(out)
}

/// APP1 with a little-endian TIFF holding one IFD entry: Orientation.
fn minimal_exif_segment(orientation: u16) -> Vec<u8> {
    let mut tiff = b"II*\0".to_vec();
    tiff.extend_from_slice(&8u32.to_le_bytes());
    tiff.extend_from_slice(&1u16.to_le_bytes());
    tiff.extend_from_slice(&0x0112u16.to_le_bytes());
    tiff.extend_from_slice(&3u16.to_le_bytes());
    tiff.extend_from_slice(&1u32.to_le_bytes());
    tiff.extend_from_slice(&orientation.to_le_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_le_bytes());
    let mut seg = vec![0xFF, 0xE1];
    seg.extend_from_slice(&((tiff.len() + 8) as u16).to_be_bytes());
    seg.extend_from_slice(b"Exif\0\0");
    seg.extend_from_slice(&tiff);
    seg
}

struct Tiff<'a> {
    b: &'a [u8],
    le: bool,
}

impl Tiff<'_> {
    fn u16(&self, at: usize) -> Option<u16> {
        let s: [u8; 2] = self.b.get(at..at.checked_add(2)?)?.try_into().ok()?;
        Some(if self.le {
            u16::from_le_bytes(s)
        } else {
            u16::from_be_bytes(s)
        })
    }
    fn u32(&self, at: usize) -> Option<u32> {
        let s: [u8; 4] = self.b.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if self.le {
            u32::from_le_bytes(s)
        } else {
            u32::from_be_bytes(s)
        })
    }
}

fn tiff_endian(b: &[u8]) -> Option<bool> {
    match b.get(..4)? {
        b"II*\0" => Some(true),
        b"MM\0*" => Some(false),
        _ => None,
    }
}

/// The Orientation tag (0x0112) of IFD0, if any.
fn tiff_orientation(b: &[u8]) -> Option<u16> {
    let t = Tiff {
        b,
        le: tiff_endian(b)?,
    };
    let ifd = t.u32(4)? as usize;
    let n = usize::from(t.u16(ifd)?);
    (0..n).find_map(|i| {
        let e = ifd + 2 + 12 * i;
        (t.u16(e)? == 0x0112).then(|| t.u16(e + 8)).flatten()
    })
}

/// Bytes a TIFF field type takes per value.
fn type_size(kind: u16) -> usize {
    match kind {
        1 | 2 | 6 | 7 => 1,
        3 | 8 => 2,
        4 | 9 | 11 => 4,
        5 | 10 | 12 => 8,
        _ => 1,
    }
}

/// Removes the GPS IFD from a TIFF/EXIF block in place (same length): IFD0's GPSInfo entry is
/// dropped (later entries move up, the freed 12 bytes are zeroed) and the GPS IFD, with every
/// value it points to, is zeroed.
fn remove_gps(b: &mut [u8]) {
    let Some(le) = tiff_endian(b) else { return };
    let t = Tiff { b, le };
    let Some(ifd) = t.u32(4).map(|v| v as usize) else {
        return;
    };
    let Some(n) = t.u16(ifd).map(usize::from) else {
        return;
    };
    let Some(gps_index) = (0..n).find(|&i| t.u16(ifd + 2 + 12 * i) == Some(0x8825)) else {
        return;
    };
    let Some(gps) = t.u32(ifd + 2 + 12 * gps_index + 8).map(|v| v as usize) else {
        return;
    };
    // Zero the GPS IFD's out-of-line values, then the IFD itself (count, entries, next).
    let mut zero: Vec<(usize, usize)> = Vec::new();
    if let Some(gn) = t.u16(gps).map(usize::from) {
        for i in 0..gn {
            let e = gps + 2 + 12 * i;
            let (Some(kind), Some(count), Some(off)) = (t.u16(e + 2), t.u32(e + 4), t.u32(e + 8))
            else {
                break;
            };
            let size = type_size(kind).saturating_mul(count as usize);
            if size > 4 {
                zero.push((off as usize, size));
            }
        }
        zero.push((gps, 2 + 12 * gn + 4));
    }
    let entries_end = ifd + 2 + 12 * n;
    let entry = ifd + 2 + 12 * gps_index;
    if entries_end + 4 > b.len() {
        return;
    }
    for (start, len) in zero {
        if let Some(s) = b.get_mut(start..start.saturating_add(len)) {
            s.fill(0);
        }
    }
    // Move the later entries and the next-IFD offset up by one entry; zero the tail.
    // (The next-IFD offset moves along and now ends at `entries_end - 8`.)
    b.copy_within(entry + 12..entries_end + 4, entry);
    b[entries_end - 8..entries_end + 4].fill(0);
    let count = (n - 1) as u16;
    let bytes = if le {
        count.to_le_bytes()
    } else {
        count.to_be_bytes()
    };
    b[ifd..ifd + 2].copy_from_slice(&bytes);
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
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

fn strip_png(b: &[u8], what: Strip) -> Option<Vec<u8>> {
    if !b.starts_with(b"\x89PNG\r\n\x1a\n") {
        return None;
    }
    let mut out = b[..8].to_vec();
    let mut pos = 8;
    while pos + 12 <= b.len() {
        let len = u32::from_be_bytes(b[pos..pos + 4].try_into().ok()?) as usize;
        let end = pos.checked_add(12)?.checked_add(len)?;
        if end > b.len() {
            return None;
        }
        let kind = &b[pos + 4..pos + 8];
        let data = &b[pos + 8..pos + 8 + len];
        let is_xmp = kind == b"iTXt" && data.starts_with(b"XML:com.adobe.xmp\0");
        match (what, kind) {
            (Strip::Gps, b"eXIf") => {
                let mut tiff = data.to_vec();
                remove_gps(&mut tiff);
                out.extend_from_slice(&b[pos..pos + 8]);
                out.extend_from_slice(&tiff);
                let mut crc_input = kind.to_vec();
                crc_input.extend_from_slice(&tiff);
                out.extend_from_slice(&crc32(&crc_input).to_be_bytes());
            }
            (Strip::Gps, _) if is_xmp => {}
            (Strip::All, b"tEXt" | b"zTXt" | b"iTXt" | b"eXIf" | b"tIME") => {}
            _ => out.extend_from_slice(&b[pos..end]),
        }
        pos = end;
        if kind == b"IEND" {
            break;
        }
    }
    out.extend_from_slice(&b[pos.min(b.len())..]);
    Some(out)
}

fn strip_webp(b: &[u8], what: Strip) -> Option<Vec<u8>> {
    if b.len() < 12 || &b[..4] != b"RIFF" || &b[8..12] != b"WEBP" {
        return None;
    }
    let mut body = Vec::with_capacity(b.len());
    let mut pos = 12;
    let mut dropped = (false, false); // (exif, xmp)
    while pos + 8 <= b.len() {
        let kind = &b[pos..pos + 4];
        let len = u32::from_le_bytes(b[pos + 4..pos + 8].try_into().ok()?) as usize;
        let end = (pos + 8).checked_add(len)?;
        let padded = end + (len & 1);
        if end > b.len() {
            return None;
        }
        match (what, kind) {
            (Strip::All, b"EXIF") => dropped.0 = true,
            (_, b"XMP ") => dropped.1 = true,
            (Strip::Gps, b"EXIF") => {
                let mut tiff = b[pos + 8..end].to_vec();
                remove_gps(&mut tiff);
                body.extend_from_slice(&b[pos..pos + 8]);
                body.extend_from_slice(&tiff);
                if len & 1 == 1 {
                    body.push(0);
                }
            }
            _ => body.extend_from_slice(&b[pos..padded.min(b.len())]),
        }
        pos = padded;
    }
    if pos < b.len() {
        return None; // a truncated chunk header: malformed, leave the file alone
    }
    // Clear the VP8X flags of what was dropped (EXIF 0x08, XMP 0x04).
    if body.starts_with(b"VP8X") && body.len() > 8 {
        if dropped.0 {
            body[8] &= !0x08;
        }
        if dropped.1 {
            body[8] &= !0x04;
        }
    }
    let size = u32::try_from(body.len() + 4).ok()?;
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(b"WEBP");
    out.extend_from_slice(&body);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::{Limits, probe, testdata};

    const LAT_MARK: u32 = 0x1357_2468;

    /// Little-endian EXIF: IFD0 = Make "Canon", Orientation 6, GPSInfo → {LatitudeRef "N",
    /// Latitude (LAT_MARK/1, 30/1, 26/1)}.
    fn exif_with_gps() -> Vec<u8> {
        let mut t = b"II*\0".to_vec();
        t.extend_from_slice(&8u32.to_le_bytes());
        let entry = |t: &mut Vec<u8>, tag: u16, kind: u16, count: u32, value: u32| {
            t.extend_from_slice(&tag.to_le_bytes());
            t.extend_from_slice(&kind.to_le_bytes());
            t.extend_from_slice(&count.to_le_bytes());
            t.extend_from_slice(&value.to_le_bytes());
        };
        t.extend_from_slice(&3u16.to_le_bytes());
        entry(&mut t, 0x010F, 2, 6, 50); // Make -> offset 50
        entry(&mut t, 0x0112, 3, 1, 6); // Orientation 6
        entry(&mut t, 0x8825, 4, 1, 56); // GPS IFD at 56
        t.extend_from_slice(&0u32.to_le_bytes());
        t.extend_from_slice(b"Canon\0"); // 50..56
        t.extend_from_slice(&2u16.to_le_bytes());
        entry(&mut t, 0x0001, 2, 2, u32::from_le_bytes(*b"N\0\0\0"));
        entry(&mut t, 0x0002, 5, 3, 86); // rationals at 86
        t.extend_from_slice(&0u32.to_le_bytes());
        for (n, d) in [(LAT_MARK, 1u32), (30, 1), (26, 1)] {
            t.extend_from_slice(&n.to_le_bytes());
            t.extend_from_slice(&d.to_le_bytes());
        }
        t
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    fn tags(tiff: &[u8]) -> Vec<u16> {
        let t = Tiff { b: tiff, le: true };
        let ifd = t.u32(4).unwrap_or(0) as usize;
        let n = usize::from(t.u16(ifd).unwrap_or(0));
        (0..n).filter_map(|i| t.u16(ifd + 2 + 12 * i)).collect()
    }

    fn segment(marker: u8, payload: &[u8]) -> Vec<u8> {
        let mut s = vec![0xFF, marker];
        s.extend_from_slice(&u16::try_from(payload.len() + 2).unwrap_or(0).to_be_bytes());
        s.extend_from_slice(payload);
        s
    }

    /// A 40x20 JPEG (stored) with EXIF+GPS, XMP, an ICC APP2 and a comment.
    fn tagged_jpeg() -> Vec<u8> {
        let plain = testdata::encode(&testdata::halves(40, 20), Format::Jpeg);
        let mut exif = b"Exif\0\0".to_vec();
        exif.extend_from_slice(&exif_with_gps());
        let mut xmp = XMP_JPEG.to_vec();
        xmp.extend_from_slice(
            b"<x:xmpmeta><exif:GPSLatitude>51,30N</exif:GPSLatitude></x:xmpmeta>",
        );
        let mut icc = b"ICC_PROFILE\0\x01\x01".to_vec();
        icc.extend_from_slice(b"fake-profile-bytes");
        let mut out = plain[..2].to_vec();
        for s in [
            segment(0xE1, &exif),
            segment(0xE1, &xmp),
            segment(0xE2, &icc),
            segment(0xFE, b"shot at home"),
        ] {
            out.extend_from_slice(&s);
        }
        out.extend_from_slice(&plain[2..]);
        out
    }

    fn exif_of(jpeg: &[u8]) -> Option<Vec<u8>> {
        let mut pos = 2;
        while pos + 4 <= jpeg.len() && jpeg[pos] == 0xFF && jpeg[pos + 1] != 0xDA {
            let len = usize::from(u16::from_be_bytes([jpeg[pos + 2], jpeg[pos + 3]]));
            let seg = &jpeg[pos + 4..pos + 2 + len];
            if jpeg[pos + 1] == 0xE1 && seg.starts_with(b"Exif\0\0") {
                return Some(seg[6..].to_vec());
            }
            pos += 2 + len;
        }
        None
    }

    #[test]
    fn jpeg_gps_only() {
        let src = tagged_jpeg();
        assert!(contains(&src, &LAT_MARK.to_le_bytes()));
        let out = strip_metadata(&src, Format::Jpeg, Strip::Gps).unwrap_or_default();
        assert!(
            !contains(&out, &LAT_MARK.to_le_bytes()),
            "latitude still there"
        );
        assert!(!contains(&out, b"GPSLatitude"), "XMP still there");
        assert_eq!(
            out.len(),
            src.len()
                - segment(0xE1, &{
                    let mut x = XMP_JPEG.to_vec();
                    x.extend_from_slice(
                        b"<x:xmpmeta><exif:GPSLatitude>51,30N</exif:GPSLatitude></x:xmpmeta>",
                    );
                    x
                })
                .len()
        );
        let exif = exif_of(&out).unwrap_or_default();
        assert_eq!(tags(&exif), vec![0x010F, 0x0112]);
        assert!(contains(&out, b"Canon") && contains(&out, b"shot at home"));
        assert!(contains(&out, b"fake-profile-bytes"));
        // Still displayed rotated, same pixels.
        let p = probe(&out, &Limits::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((p.width, p.height), (20, 40));
        assert_eq!(
            testdata::mean_abs_diff(&testdata::decode(&src), &testdata::decode(&out)),
            0.0
        );
        // Nothing to strip: None.
        assert_eq!(strip_metadata(&out, Format::Jpeg, Strip::Gps), None);
    }

    #[test]
    fn jpeg_all_keeps_orientation_and_colour() {
        let src = tagged_jpeg();
        let out = strip_metadata(&src, Format::Jpeg, Strip::All).unwrap_or_default();
        for gone in [
            &b"Canon"[..],
            b"GPSLatitude",
            b"shot at home",
            &LAT_MARK.to_le_bytes(),
        ] {
            assert!(
                !contains(&out, gone),
                "{:?} still there",
                String::from_utf8_lossy(gone)
            );
        }
        assert!(contains(&out, b"fake-profile-bytes"), "ICC profile kept");
        let exif = exif_of(&out).unwrap_or_default();
        assert_eq!(tags(&exif), vec![0x0112]);
        assert_eq!(tiff_orientation(&exif), Some(6));
        let p = probe(&out, &Limits::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((p.width, p.height), (20, 40));
        assert_eq!(
            testdata::mean_abs_diff(&testdata::decode(&src), &testdata::decode(&out)),
            0.0
        );
    }

    fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(0).to_be_bytes());
        let mut c = kind.to_vec();
        c.extend_from_slice(data);
        out.extend_from_slice(&c);
        out.extend_from_slice(&crc32(&c).to_be_bytes());
    }

    #[test]
    fn png_gps_and_all() {
        let plain = testdata::encode(&testdata::gradient(16, 8), Format::Png);
        // Insert eXIf and tEXt right after IHDR (8 + 25 bytes).
        let mut src = plain[..33].to_vec();
        png_chunk(&mut src, b"eXIf", &exif_with_gps());
        png_chunk(&mut src, b"tEXt", b"Comment\0shot at home");
        src.extend_from_slice(&plain[33..]);
        let gps = strip_metadata(&src, Format::Png, Strip::Gps).unwrap_or_default();
        assert!(!contains(&gps, &LAT_MARK.to_le_bytes()));
        assert!(contains(&gps, b"shot at home") && contains(&gps, b"Canon"));
        // CRCs are valid: the png decoder checks them.
        let img = image::load_from_memory(&gps).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(img.to_rgb8(), testdata::decode(&plain).to_rgb8());
        let all = strip_metadata(&src, Format::Png, Strip::All).unwrap_or_default();
        assert!(!contains(&all, b"eXIf") && !contains(&all, b"tEXt"));
        assert_eq!(all, plain);
    }

    #[test]
    fn webp_exif_and_xmp() {
        let plain = testdata::encode(&testdata::gradient(16, 8), Format::Webp);
        // Extended format: VP8X (EXIF + XMP flags) + the image chunk + EXIF + XMP.
        let mut body = b"VP8X".to_vec();
        body.extend_from_slice(&10u32.to_le_bytes());
        body.extend_from_slice(&[0x08 | 0x04, 0, 0, 0, 15, 0, 0, 7, 0, 0]);
        body.extend_from_slice(&plain[12..]);
        let exif = exif_with_gps();
        body.extend_from_slice(b"EXIF");
        body.extend_from_slice(&u32::try_from(exif.len()).unwrap_or(0).to_le_bytes());
        body.extend_from_slice(&exif);
        let xmp = b"<x:xmpmeta>GPS</x:xmpmeta>!";
        body.extend_from_slice(b"XMP ");
        body.extend_from_slice(&u32::try_from(xmp.len()).unwrap_or(0).to_le_bytes());
        body.extend_from_slice(xmp);
        body.push(0);
        let mut src = b"RIFF".to_vec();
        src.extend_from_slice(&u32::try_from(body.len() + 4).unwrap_or(0).to_le_bytes());
        src.extend_from_slice(b"WEBP");
        src.extend_from_slice(&body);
        assert_eq!(
            probe(&src, &Limits::default())
                .map(|p| (p.width, p.height))
                .ok(),
            Some((16, 8))
        );
        let gps = strip_metadata(&src, Format::Webp, Strip::Gps).unwrap_or_default();
        assert!(!contains(&gps, &LAT_MARK.to_le_bytes()) && !contains(&gps, b"xmpmeta"));
        assert!(contains(&gps, b"Canon"));
        assert_eq!(gps[20] & 0x04, 0, "XMP flag cleared");
        let all = strip_metadata(&src, Format::Webp, Strip::All).unwrap_or_default();
        assert!(!contains(&all, b"EXIF") && !contains(&all, b"Canon"));
        assert_eq!(all[20] & 0x0C, 0);
        for out in [&gps, &all] {
            let img = image::load_from_memory(out).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(img.to_rgb8(), testdata::decode(&plain).to_rgb8());
        }
    }

    #[test]
    fn mutated_inputs_never_panic() {
        let mut state = 0x9E37_79B9_u32;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as usize
        };
        let jpeg = tagged_jpeg();
        let mut png = testdata::encode(&testdata::gradient(8, 8), Format::Png)[..33].to_vec();
        png_chunk(&mut png, b"eXIf", &exif_with_gps());
        for (src, format) in [(jpeg, Format::Jpeg), (png, Format::Png)] {
            for _ in 0..300 {
                let mut b = src.clone();
                for _ in 0..1 + next() % 4 {
                    let at = next() % b.len();
                    b[at] = next() as u8;
                }
                b.truncate(b.len() - next() % 8);
                for what in [Strip::Gps, Strip::All] {
                    let _ = strip_metadata(&b, format, what);
                }
            }
        }
    }

    #[test]
    fn other_formats_and_garbage_are_left_alone() {
        let gif = testdata::encode(&testdata::gradient(8, 8), Format::Gif);
        assert_eq!(strip_metadata(&gif, Format::Gif, Strip::All), None);
        assert_eq!(
            strip_metadata(b"\xFF\xD8\xFF", Format::Jpeg, Strip::All),
            None
        );
        assert_eq!(
            strip_metadata(b"RIFF\0\0\0\0WEBPVP8X", Format::Webp, Strip::All),
            None
        );
    }
}
