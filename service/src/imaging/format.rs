//! Image formats we accept, and recognising them from magic bytes.
//!
//! Sniffing never trusts a file name or a `Content-Type`; it looks at the first bytes only and
//! does not validate the rest (that is [`super::probe`]'s job).

/// A raster format sis stores and can decode.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    Jpeg,
    Png,
    Gif,
    Webp,
    Bmp,
    Tiff,
    /// AV1 in HEIF (`ftyp` brand `avif`/`avis`). Written by sis; decoded only where libavif is
    /// installed (see [`Format::can_decode`]).
    Avif,
}

impl Format {
    /// Every format sis recognises, in declaration order.
    pub const ALL: [Format; 7] = [
        Format::Jpeg,
        Format::Png,
        Format::Gif,
        Format::Webp,
        Format::Bmp,
        Format::Tiff,
        Format::Avif,
    ];

    /// The `Content-Type` for this format.
    pub fn mime(&self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
            Self::Gif => "image/gif",
            Self::Webp => "image/webp",
            Self::Bmp => "image/bmp",
            Self::Tiff => "image/tiff",
            Self::Avif => "image/avif",
        }
    }

    /// The usual file extension, without the dot.
    pub fn extension(&self) -> &'static str {
        match self {
            Self::Jpeg => "jpg",
            Self::Png => "png",
            Self::Gif => "gif",
            Self::Webp => "webp",
            Self::Bmp => "bmp",
            Self::Tiff => "tiff",
            Self::Avif => "avif",
        }
    }

    /// Parses a `format=` query value (`jpeg`/`jpg`/`png`/`gif`/`webp`, case-insensitive).
    /// `auto` and anything else give `None`; content negotiation is the HTTP layer's job.
    pub fn from_param(s: &str) -> Option<Format> {
        match s.to_ascii_lowercase().as_str() {
            "jpeg" | "jpg" => Some(Self::Jpeg),
            "png" => Some(Self::Png),
            "gif" => Some(Self::Gif),
            "webp" => Some(Self::Webp),
            "avif" => Some(Self::Avif),
            _ => None,
        }
    }

    /// Whether sis can write this format (`format=` accepts it).
    pub fn can_encode(self) -> bool {
        matches!(
            self,
            Self::Jpeg | Self::Png | Self::Gif | Self::Webp | Self::Avif
        )
    }

    /// Whether sis can decode this format's pixels. AVIF needs an AV1 decoder: the `image`
    /// crate's is dav1d ≥ 1.3 through `dav1d-sys`, which Debian 12 (dav1d 1.0) cannot link,
    /// so AVIF goes through libavif (`libavif.so.15`, Debian's `libavif15`) loaded at run
    /// time; without it (or with `SIS_AVIF_DECODE=off`) AVIF originals are refused at upload
    /// (415).
    pub fn can_decode(self) -> bool {
        !matches!(self, Self::Avif) || super::avif_decode::available()
    }

    /// Whether this format can hold an animation sis keeps through a resize.
    pub fn can_animate(self) -> bool {
        matches!(self, Self::Gif | Self::Webp)
    }

    /// The `format=` values for every format sis writes, `|`-separated.
    pub fn output_names() -> String {
        Self::ALL
            .iter()
            .filter(|f| f.can_encode())
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join("|")
    }

    /// The format a resize produces when the caller did not ask for one: the source format
    /// where we can encode it well, PNG for BMP and TIFF.
    pub fn default_output(self) -> Format {
        match self {
            Self::Bmp | Self::Tiff => Self::Png,
            other => other,
        }
    }

    pub(crate) fn image_format(self) -> image::ImageFormat {
        match self {
            Self::Jpeg => image::ImageFormat::Jpeg,
            Self::Png => image::ImageFormat::Png,
            Self::Gif => image::ImageFormat::Gif,
            Self::Webp => image::ImageFormat::WebP,
            Self::Bmp => image::ImageFormat::Bmp,
            Self::Tiff => image::ImageFormat::Tiff,
            Self::Avif => image::ImageFormat::Avif,
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Jpeg => "jpeg",
            Self::Png => "png",
            Self::Gif => "gif",
            Self::Webp => "webp",
            Self::Bmp => "bmp",
            Self::Tiff => "tiff",
            Self::Avif => "avif",
        })
    }
}

/// Recognises the format from magic bytes only. `None` for anything else, including empty
/// input.
pub fn sniff(bytes: &[u8]) -> Option<Format> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Format::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Format::Png)
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some(Format::Gif)
    } else if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP" {
        Some(Format::Webp)
    } else if is_bmp(bytes) {
        Some(Format::Bmp)
    } else if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
        Some(Format::Tiff)
    } else if is_avif(bytes) {
        Some(Format::Avif)
    } else {
        None
    }
}

/// An ISO-BMFF `ftyp` box first whose major or a compatible brand is `avif` (still) or `avis`
/// (sequence). HEIC and other HEIF brands are not AVIF.
fn is_avif(bytes: &[u8]) -> bool {
    if bytes.len() < 16 || &bytes[4..8] != b"ftyp" {
        return false;
    }
    let size = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let end = size.min(bytes.len());
    if size < 16 {
        return false;
    }
    let brand = |b: &[u8]| b == b"avif" || b == b"avis";
    brand(&bytes[8..12]) || bytes[16..end].chunks_exact(4).any(brand)
}

/// "BM" alone is too weak (plenty of text starts with it): also require a known DIB header size.
fn is_bmp(bytes: &[u8]) -> bool {
    if bytes.len() < 18 || !bytes.starts_with(b"BM") {
        return false;
    }
    let dib = u32::from_le_bytes([bytes[14], bytes[15], bytes[16], bytes[17]]);
    matches!(dib, 12 | 16 | 40 | 52 | 56 | 64 | 108 | 124)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_param_accepts_aliases() {
        assert_eq!(Format::from_param("jpg"), Some(Format::Jpeg));
        assert_eq!(Format::from_param("JPEG"), Some(Format::Jpeg));
        assert_eq!(Format::from_param("png"), Some(Format::Png));
        assert_eq!(Format::from_param("gif"), Some(Format::Gif));
        assert_eq!(Format::from_param("webp"), Some(Format::Webp));
        assert_eq!(Format::from_param("auto"), None);
        assert_eq!(Format::from_param("bmp"), None);
        assert_eq!(Format::from_param("AVIF"), Some(Format::Avif));
        assert_eq!(Format::from_param(""), None);
    }

    #[test]
    fn mime_and_extension() {
        assert_eq!(Format::Jpeg.mime(), "image/jpeg");
        assert_eq!(Format::Webp.mime(), "image/webp");
        assert_eq!(Format::Jpeg.extension(), "jpg");
        assert_eq!(Format::Tiff.extension(), "tiff");
        assert_eq!(Format::Bmp.default_output(), Format::Png);
        assert_eq!(Format::Gif.default_output(), Format::Gif);
    }

    #[test]
    fn sniff_rejects_garbage() {
        assert_eq!(sniff(&[]), None);
        assert_eq!(sniff(&[0u8; 64]), None);
        assert_eq!(sniff(b"hello world, this is not an image"), None);
        assert_eq!(sniff(b"BM but not a bitmap at all"), None);
        assert_eq!(sniff(b"RIFF\0\0\0\0WAVEfmt "), None);
        assert_eq!(sniff(&[0xFF, 0xD8]), None);
        // HEIC is HEIF but not AVIF.
        assert_eq!(sniff(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic"), None);
        assert_eq!(
            sniff(b"\0\0\0\x1cftypmif1\0\0\0\0mif1avifmiaf"),
            Some(Format::Avif)
        );
    }
}

#[cfg(test)]
mod sniff_tests {
    use super::*;
    use crate::imaging::testdata;

    #[test]
    fn sniff_each_generated_format() {
        let img = testdata::gradient(16, 8);
        for format in Format::ALL {
            let bytes = testdata::encode(&img, format);
            assert_eq!(sniff(&bytes), Some(format), "{format}");
        }
    }
}
