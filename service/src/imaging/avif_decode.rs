//! AVIF (still image) decoding through libavif's decoder API (issue 14).
//!
//! The `image` crate's AV1 decoder needs dav1d ≥ 1.3 (`dav1d-sys`), which Debian 12 (dav1d
//! 1.0) cannot link. Debian's `libavif15` (libavif 0.11.1, built against its dav1d and aom)
//! is loaded at run time instead, like `turbo` loads libjpeg-turbo: `dlopen("libavif.so.15")`,
//! never linked, so a build needs no system package. Where the library is missing (or
//! `SIS_AVIF_DECODE=off`) [`available`] is false and AVIF sources stay undecodable
//! (uploads answer 415, see [`super::Format::can_decode`]).
//!
//! Entry points used: `avifDecoderCreate`, `avifDecoderReadMemory`, `avifImageCreateEmpty`,
//! `avifRGBImageSetDefaults`, `avifImageYUVToRGB`, `avifResultToString`, `avifImageDestroy`,
//! `avifDecoderDestroy`. The structs touched are laid out here exactly as libavif 0.11.1's
//! `avif.h` declares them (the SONAME `libavif.so.15` is that ABI): the leading input fields
//! of `avifDecoder` (to lower its size limits and skip Exif/XMP), the leading
//! `width`/`height`/`depth` of `avifImage`, and the whole of `avifRGBImage` (56 bytes), whose
//! pixel buffer is a `Vec` of ours sized from the decoded image's own dimensions.
//!
//! The first frame of a sequence is decoded; `irot`/`imir`/`clap` transforms are not applied
//! (the dimensions must match the `ispe` size the probe read, else the file is corrupt).

// The FFI boundary of AVIF decoding: function pointers from dlsym, called with structs laid
// out as libavif 0.11.1 declares them and buffers whose sizes are checked here first.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::OnceLock;

use image::{DynamicImage, RgbImage, RgbaImage};

use super::ImagingError;

type AvifResult = c_int;
const AVIF_RESULT_OK: AvifResult = 0;
/// `AVIF_RGB_FORMAT_RGBA`.
const AVIF_RGB_FORMAT_RGBA: c_int = 1;

/// The leading (input) fields of libavif 0.11.1's `avifDecoder`, in declaration order; only
/// ever accessed through a pointer to a decoder the library allocated.
#[repr(C)]
struct DecoderInputs {
    codec_choice: c_int,
    max_threads: c_int,
    requested_source: c_int,
    allow_progressive: c_int,
    allow_incremental: c_int,
    ignore_exif: c_int,
    ignore_xmp: c_int,
    image_size_limit: u32,
    image_dimension_limit: u32,
    image_count_limit: u32,
    strict_flags: u32,
}

/// The leading fields of libavif 0.11.1's `avifImage`.
#[repr(C)]
struct ImageHead {
    width: u32,
    height: u32,
    depth: u32,
}

/// libavif 0.11.1's `avifRGBImage`, every field (56 bytes on LP64).
#[repr(C)]
struct RgbImageC {
    width: u32,
    height: u32,
    depth: u32,
    format: c_int,
    chroma_upsampling: c_int,
    chroma_downsampling: c_int,
    avoid_lib_yuv: c_int,
    ignore_alpha: c_int,
    alpha_premultiplied: c_int,
    is_float: c_int,
    pixels: *mut u8,
    row_bytes: u32,
}

type Decoder = c_void;
type Image = c_void;

struct Api {
    decoder_create: unsafe extern "C" fn() -> *mut Decoder,
    decoder_destroy: unsafe extern "C" fn(*mut Decoder),
    decoder_read_memory:
        unsafe extern "C" fn(*mut Decoder, *mut Image, *const u8, usize) -> AvifResult,
    image_create_empty: unsafe extern "C" fn() -> *mut Image,
    image_destroy: unsafe extern "C" fn(*mut Image),
    rgb_set_defaults: unsafe extern "C" fn(*mut RgbImageC, *const Image),
    yuv_to_rgb: unsafe extern "C" fn(*const Image, *mut RgbImageC) -> AvifResult,
    result_to_string: unsafe extern "C" fn(AvifResult) -> *const c_char,
}

// SAFETY: plain function pointers into a library that stays loaded for the life of the
// process (never dlclose'd); every decoder and image is created and destroyed within one call.
unsafe impl Send for Api {}
unsafe impl Sync for Api {}

fn api() -> Option<&'static Api> {
    static API: OnceLock<Option<Api>> = OnceLock::new();
    API.get_or_init(load).as_ref()
}

/// Whether libavif was found (and not switched off with `SIS_AVIF_DECODE=off`).
pub(crate) fn available() -> bool {
    api().is_some()
}

fn load() -> Option<Api> {
    let lib = super::dylib::Library::open(c"libavif.so.15", "SIS_AVIF_DECODE")?;
    let sym = |name: &CStr| lib.symbol(name);
    // SAFETY: each symbol is transmuted to the signature avif.h (0.11.1) declares for it; the
    // library is never closed, so the pointers stay valid.
    unsafe {
        Some(Api {
            decoder_create: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn() -> *mut Decoder,
            >(sym(c"avifDecoderCreate")?),
            decoder_destroy: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut Decoder)>(
                sym(c"avifDecoderDestroy")?,
            ),
            decoder_read_memory: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(*mut Decoder, *mut Image, *const u8, usize) -> AvifResult,
            >(sym(c"avifDecoderReadMemory")?),
            image_create_empty: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn() -> *mut Image,
            >(sym(c"avifImageCreateEmpty")?),
            image_destroy: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut Image)>(
                sym(c"avifImageDestroy")?,
            ),
            rgb_set_defaults: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(*mut RgbImageC, *const Image),
            >(sym(c"avifRGBImageSetDefaults")?),
            yuv_to_rgb: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(*const Image, *mut RgbImageC) -> AvifResult,
            >(sym(c"avifImageYUVToRGB")?),
            result_to_string: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(AvifResult) -> *const c_char,
            >(sym(c"avifResultToString")?),
        })
    }
}

/// Owns a decoder and an image, destroyed on every path out of [`decode`].
struct Owned<'a> {
    api: &'a Api,
    decoder: *mut Decoder,
    image: *mut Image,
}

impl Drop for Owned<'_> {
    fn drop(&mut self) {
        // SAFETY: live objects from avifDecoderCreate/avifImageCreateEmpty (or null), each
        // destroyed once.
        unsafe {
            if !self.image.is_null() {
                (self.api.image_destroy)(self.image);
            }
            if !self.decoder.is_null() {
                (self.api.decoder_destroy)(self.decoder);
            }
        }
    }
}

fn library_error(api: &Api, what: &str, rc: AvifResult) -> ImagingError {
    // SAFETY: avifResultToString returns a static string for any value.
    let msg = unsafe {
        let p = (api.result_to_string)(rc);
        if p.is_null() {
            format!("error {rc}")
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    ImagingError::Corrupt(format!("avif: {what}: {msg}"))
}

/// Decodes the first image of an AVIF file to 8-bit RGB (RGBA when any pixel is not opaque).
/// The caller has already checked the header's declared size against `max_pixels`; libavif's
/// own size limit is lowered to it as well, and the decoded size is checked again before the
/// RGB buffer is allocated.
///
/// # Errors
/// `Unsupported` without the library, `TooLarge` over `max_pixels`, `Corrupt` for anything
/// libavif (or the AV1 decoder) refuses.
pub(crate) fn decode(bytes: &[u8], max_pixels: u64) -> Result<DynamicImage, ImagingError> {
    let api = api().ok_or(ImagingError::Unsupported)?;
    // SAFETY: no arguments; null results are checked below.
    let owned = unsafe {
        Owned {
            api,
            decoder: (api.decoder_create)(),
            image: (api.image_create_empty)(),
        }
    };
    if owned.decoder.is_null() || owned.image.is_null() {
        return Err(ImagingError::Internal("avif: out of memory".into()));
    }
    // SAFETY: `decoder` points to a live avifDecoder whose leading fields are `DecoderInputs`
    // (libavif 0.11.1 layout); only those fields are read and written.
    unsafe {
        let inputs = &mut *owned.decoder.cast::<DecoderInputs>();
        let limit = u32::try_from(max_pixels.max(1)).unwrap_or(u32::MAX);
        if inputs.image_size_limit == 0 || inputs.image_size_limit > limit {
            inputs.image_size_limit = limit;
        }
        inputs.ignore_exif = 1;
        inputs.ignore_xmp = 1;
    }
    // SAFETY: `bytes` is valid for its length and outlives the decoder (destroyed with
    // `owned` before return); decoder and image are live.
    let rc = unsafe {
        (api.decoder_read_memory)(owned.decoder, owned.image, bytes.as_ptr(), bytes.len())
    };
    if rc != AVIF_RESULT_OK {
        return Err(library_error(api, "decode", rc));
    }
    // SAFETY: a live avifImage, whose leading fields are `ImageHead`.
    let (width, height, depth) = unsafe {
        let head = &*owned.image.cast::<ImageHead>();
        (head.width, head.height, head.depth)
    };
    let pixels = u64::from(width) * u64::from(height);
    if width == 0 || height == 0 {
        return Err(ImagingError::Corrupt(format!(
            "avif: decoded an empty {width}x{height} image"
        )));
    }
    if pixels > max_pixels {
        return Err(ImagingError::TooLarge(format!(
            "avif: decoded {width}x{height} = {pixels} px, limit is {max_pixels} px"
        )));
    }
    if !matches!(depth, 8 | 10 | 12) {
        return Err(ImagingError::Corrupt(format!("avif: bit depth {depth}")));
    }
    let row_bytes = width
        .checked_mul(4)
        .ok_or_else(|| ImagingError::TooLarge(format!("avif: {width} px wide")))?;
    let len = usize::try_from(u64::from(row_bytes) * u64::from(height))
        .map_err(|_| ImagingError::TooLarge(format!("avif: {width}x{height}")))?;
    let mut data = vec![0u8; len];
    let mut rgb = RgbImageC {
        width: 0,
        height: 0,
        depth: 0,
        format: 0,
        chroma_upsampling: 0,
        chroma_downsampling: 0,
        avoid_lib_yuv: 0,
        ignore_alpha: 0,
        alpha_premultiplied: 0,
        is_float: 0,
        pixels: std::ptr::null_mut(),
        row_bytes: 0,
    };
    // SAFETY: `rgb` is a complete avifRGBImage (0.11.1 layout); the image is live.
    unsafe { (api.rgb_set_defaults)(&mut rgb, owned.image) };
    rgb.width = width;
    rgb.height = height;
    rgb.depth = 8;
    rgb.format = AVIF_RGB_FORMAT_RGBA;
    rgb.alpha_premultiplied = 0;
    rgb.is_float = 0;
    rgb.pixels = data.as_mut_ptr();
    rgb.row_bytes = row_bytes;
    // SAFETY: `data` holds `height` rows of `row_bytes` = 4 * width bytes, exactly what an
    // 8-bit RGBA conversion of this `width`x`height` image writes; it outlives the call.
    let rc = unsafe { (api.yuv_to_rgb)(owned.image, &mut rgb) };
    drop(owned);
    if rc != AVIF_RESULT_OK {
        return Err(ImagingError::Corrupt(format!(
            "avif: YUV to RGB conversion failed ({rc})"
        )));
    }
    let opaque = data.chunks_exact(4).all(|p| p[3] == 255);
    let img = if opaque {
        let rgb: Vec<u8> = data
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect();
        RgbImage::from_raw(width, height, rgb).map(DynamicImage::ImageRgb8)
    } else {
        RgbaImage::from_raw(width, height, data).map(DynamicImage::ImageRgba8)
    };
    img.ok_or_else(|| ImagingError::Internal("avif: pixel buffer size".into()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::Format;
    use super::super::testdata;
    use super::*;

    /// Without the library these tests have nothing to check; under `CI=true` that is a
    /// failure (scripts/test.sh installs libavif15), elsewhere a note.
    pub(crate) fn skip_without_library() -> bool {
        if available() {
            return false;
        }
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "libavif.so.15 missing under CI=true (scripts/test.sh installs libavif15)"
        );
        eprintln!("libavif.so.15 not loaded (not installed, or SIS_AVIF_DECODE=off): skipped");
        true
    }

    fn close(a: [u8; 3], b: [u8; 3], tol: u8) -> bool {
        a.iter().zip(&b).all(|(x, y)| x.abs_diff(*y) <= tol)
    }

    #[test]
    fn decodes_the_crates_own_avif_with_its_size_and_colours() {
        if skip_without_library() {
            return;
        }
        // Flat quadrants: lossy AV1 keeps flat colours close away from the edges.
        let src = DynamicImage::ImageRgb8(RgbImage::from_fn(96, 64, |x, y| {
            image::Rgb(match (x < 48, y < 32) {
                (true, true) => [220, 30, 30],
                (false, true) => [30, 200, 40],
                (true, false) => [40, 50, 210],
                (false, false) => [240, 240, 240],
            })
        }));
        let avif = testdata::encode(&src, Format::Avif);
        let img = decode(&avif, u64::MAX).unwrap();
        assert_eq!((img.width(), img.height()), (96, 64));
        assert!(!img.color().has_alpha(), "{:?}", img.color());
        let rgb = img.to_rgb8();
        let want = src.to_rgb8();
        for (x, y) in [(12, 8), (84, 8), (12, 56), (84, 56), (24, 16), (72, 48)] {
            let (got, exp) = (rgb.get_pixel(x, y).0, want.get_pixel(x, y).0);
            assert!(close(got, exp, 12), "({x},{y}): {got:?} vs {exp:?}");
        }
        // A smooth gradient stays close on average.
        let src = testdata::gradient(120, 80);
        let img = decode(&testdata::encode(&src, Format::Avif), u64::MAX).unwrap();
        assert_eq!((img.width(), img.height()), (120, 80));
        let (a, b) = (img.to_rgb8(), src.to_rgb8());
        let (ra, rb) = (a.as_raw(), b.as_raw());
        let diff: u64 = ra
            .iter()
            .zip(rb)
            .map(|(x, y)| u64::from(x.abs_diff(*y)))
            .sum();
        let mean = diff as f64 / rb.len() as f64;
        assert!(mean < 12.0, "mean abs diff {mean}");
    }

    #[test]
    fn keeps_transparency() {
        if skip_without_library() {
            return;
        }
        let src = testdata::translucent(40, 20);
        let img = decode(&testdata::encode(&src, Format::Avif), u64::MAX).unwrap();
        assert_eq!((img.width(), img.height()), (40, 20));
        assert!(img.color().has_alpha());
        let rgba = img.to_rgba8();
        assert!(
            rgba.get_pixel(5, 10).0[3] < 20,
            "{:?}",
            rgba.get_pixel(5, 10)
        );
        assert!(
            rgba.get_pixel(35, 10).0[3] > 235,
            "{:?}",
            rgba.get_pixel(35, 10)
        );
    }

    #[test]
    fn declines_truncated_corrupt_and_oversized_input() {
        if skip_without_library() {
            return;
        }
        let avif = testdata::encode(&testdata::noise(64, 48), Format::Avif);
        assert!(matches!(
            decode(&avif, 64 * 48 - 1),
            Err(ImagingError::TooLarge(_) | ImagingError::Corrupt(_))
        ));
        for cut in [avif.len() / 2, avif.len() - 10, 40, 12, 0] {
            let r = decode(&avif[..cut], u64::MAX);
            assert!(
                matches!(r, Err(ImagingError::Corrupt(_))),
                "cut {cut}: {r:?}"
            );
        }
        assert!(decode(b"not an avif at all", u64::MAX).is_err());
        // Garbage in the middle (the AV1 payload): never a panic or crash; whatever libavif
        // says (it may still decode noise) is fine.
        let mut state = 0x9E37_79B9_u32;
        for round in 0..40 {
            let mut bad = avif.clone();
            for _ in 0..=(round % 8) {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let i = state as usize % bad.len();
                bad[i] ^= (state >> 8) as u8 | 1;
            }
            let _ = decode(&bad, u64::MAX);
        }
    }
}
