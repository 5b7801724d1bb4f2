//! JPEG decoding at 1/1, 1/2, 1/4 and 1/8 scale through libjpeg-turbo's TurboJPEG API
//! (issue 13): its Huffman decoder and its scaled IDCTs (SIMD colour conversion and
//! upsampling included) are what PIL's draft mode uses, and 2-4x faster than `jpeg-decoder`'s
//! scaled decode on camera photos; baseline and progressive alike.
//!
//! The library is loaded at run time (`dlopen("libturbojpeg.so.0")`, Debian's `libturbojpeg0`),
//! not linked: a build needs no system package, and where the library is missing (or
//! `SIS_TURBOJPEG=off`) [`decode`] answers `None` and the caller keeps its pure-Rust decoders.
//! The TurboJPEG 2.x entry points used here (`tjInitDecompress`, `tjDecompressHeader3`,
//! `tjDecompress2`, `tjGetErrorStr2`, `tjDestroy`) are exported unchanged by libjpeg-turbo
//! 2.0 through 3.x.
//!
//! An accelerator only, never a judge: any error *or warning* from libjpeg-turbo (corrupt
//! data, a truncated scan, more than 500 progressive scans with `TJFLAG_LIMITSCANS`, ...)
//! makes [`decode`] decline, and the caller's own decoder decides what the file is. So a file
//! is accepted or refused exactly as before; only the pixels of good files come faster.
//! CMYK/YCCK files are declined too (the caller converts them).

// The one FFI boundary of the imaging code: function pointers from dlsym, called with
// buffers whose sizes are checked here first.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::ffi::{CStr, c_char, c_int, c_uchar, c_ulong, c_void};
use std::sync::OnceLock;

type Handle = *mut c_void;

// TurboJPEG 2.x constants (turbojpeg.h).
const TJPF_RGB: c_int = 0;
const TJPF_GRAY: c_int = 6;
const TJCS_RGB: c_int = 0;
const TJCS_YCBCR: c_int = 1;
const TJCS_GRAY: c_int = 2;
/// Treat warnings (corrupt data libjpeg would paper over) as errors.
const TJFLAG_STOPONWARNING: c_int = 8192;
/// Refuse progressive files with more than 500 scans (a CPU bomb).
const TJFLAG_LIMITSCANS: c_int = 32768;

struct Api {
    init_decompress: unsafe extern "C" fn() -> Handle,
    decompress_header3: unsafe extern "C" fn(
        Handle,
        *const c_uchar,
        c_ulong,
        *mut c_int,
        *mut c_int,
        *mut c_int,
        *mut c_int,
    ) -> c_int,
    decompress2: unsafe extern "C" fn(
        Handle,
        *const c_uchar,
        c_ulong,
        *mut c_uchar,
        c_int,
        c_int,
        c_int,
        c_int,
        c_int,
    ) -> c_int,
    get_error_str2: unsafe extern "C" fn(Handle) -> *mut c_char,
    destroy: unsafe extern "C" fn(Handle) -> c_int,
}

// SAFETY: the table holds plain function pointers into a library that stays loaded for the
// life of the process (never dlclose'd); TurboJPEG handles are per thread (see `HANDLE`).
unsafe impl Send for Api {}
unsafe impl Sync for Api {}

fn api() -> Option<&'static Api> {
    static API: OnceLock<Option<Api>> = OnceLock::new();
    API.get_or_init(load).as_ref()
}

/// Whether libjpeg-turbo was found (and not switched off with `SIS_TURBOJPEG=off`).
pub(crate) fn available() -> bool {
    api().is_some()
}

fn load() -> Option<Api> {
    let lib = super::dylib::Library::open(c"libturbojpeg.so.0", "SIS_TURBOJPEG")?;
    let sym = |name: &CStr| lib.symbol(name);
    // SAFETY: each symbol is transmuted to the signature turbojpeg.h declares for it; the
    // library is never closed, so the pointers stay valid.
    unsafe {
        Some(Api {
            init_decompress: std::mem::transmute::<*mut c_void, unsafe extern "C" fn() -> Handle>(
                sym(c"tjInitDecompress")?,
            ),
            decompress_header3: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(
                    Handle,
                    *const c_uchar,
                    c_ulong,
                    *mut c_int,
                    *mut c_int,
                    *mut c_int,
                    *mut c_int,
                ) -> c_int,
            >(sym(c"tjDecompressHeader3")?),
            decompress2: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(
                    Handle,
                    *const c_uchar,
                    c_ulong,
                    *mut c_uchar,
                    c_int,
                    c_int,
                    c_int,
                    c_int,
                    c_int,
                ) -> c_int,
            >(sym(c"tjDecompress2")?),
            get_error_str2: std::mem::transmute::<
                *mut c_void,
                unsafe extern "C" fn(Handle) -> *mut c_char,
            >(sym(c"tjGetErrorStr2")?),
            destroy: std::mem::transmute::<*mut c_void, unsafe extern "C" fn(Handle) -> c_int>(
                sym(c"tjDestroy")?,
            ),
        })
    }
}

/// One decompressor per thread (the resize workers are a fixed pool), destroyed with it.
struct Decompressor(Handle);

impl Drop for Decompressor {
    fn drop(&mut self) {
        if let Some(api) = api()
            && !self.0.is_null()
        {
            // SAFETY: a live handle from tjInitDecompress, destroyed once.
            unsafe { (api.destroy)(self.0) };
        }
    }
}

thread_local! {
    static HANDLE: RefCell<Option<Decompressor>> = const { RefCell::new(None) };
}

/// Pixels decoded by libjpeg-turbo: 8-bit RGB (`channels == 3`) or gray (`1`), rows packed.
pub(crate) struct TurboImage {
    pub data: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub channels: u8,
}

/// Why [`decode`] declined; the caller only needs "not here".
#[derive(Debug)]
pub(crate) enum Declined {
    Unavailable,
    Unsupported,
    TooLarge,
    Library(String),
}

impl std::fmt::Display for Declined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unavailable => f.write_str("libturbojpeg.so.0 not loaded"),
            Self::Unsupported => f.write_str("unsupported colour space or scale"),
            Self::TooLarge => f.write_str("over the pixel limit"),
            Self::Library(m) => write!(f, "libjpeg-turbo: {m}"),
        }
    }
}

/// Decodes `bytes` at 1/`reduction` scale (1, 2, 4 or 8): `ceil(w / r) x ceil(h / r)`, the
/// size `jpeg-decoder` and `jpeg_dc` give for the same reduction. Declines (see the module
/// docs) rather than failing; `max_pixels` bounds the stored size before anything is
/// allocated.
pub(crate) fn decode(
    bytes: &[u8],
    reduction: u32,
    max_pixels: u64,
) -> Result<TurboImage, Declined> {
    let api = api().ok_or(Declined::Unavailable)?;
    if !matches!(reduction, 1 | 2 | 4 | 8) {
        return Err(Declined::Unsupported);
    }
    let len = c_ulong::try_from(bytes.len()).map_err(|_| Declined::TooLarge)?;
    HANDLE.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            // SAFETY: no arguments; a null result is handled below.
            let h = unsafe { (api.init_decompress)() };
            if h.is_null() {
                return Err(Declined::Library("tjInitDecompress failed".into()));
            }
            *slot = Some(Decompressor(h));
        }
        let h = slot.as_ref().map_or(std::ptr::null_mut(), |d| d.0);
        let error = || {
            // SAFETY: a live handle; the string is owned by the library, copied at once.
            let msg = unsafe { CStr::from_ptr((api.get_error_str2)(h)) };
            Declined::Library(msg.to_string_lossy().into_owned())
        };
        let (mut w, mut hgt, mut subsamp, mut colorspace) = (0, 0, 0, 0);
        // SAFETY: `bytes` is valid for `len` bytes; the out-pointers are live locals.
        let rc = unsafe {
            (api.decompress_header3)(
                h,
                bytes.as_ptr(),
                len,
                &mut w,
                &mut hgt,
                &mut subsamp,
                &mut colorspace,
            )
        };
        if rc != 0 {
            return Err(error());
        }
        let (channels, format) = match colorspace {
            TJCS_YCBCR | TJCS_RGB => (3u8, TJPF_RGB),
            TJCS_GRAY => (1u8, TJPF_GRAY),
            _ => return Err(Declined::Unsupported),
        };
        let (sw, sh) = (u32::try_from(w), u32::try_from(hgt));
        let (Ok(sw), Ok(sh)) = (sw, sh) else {
            return Err(Declined::Unsupported);
        };
        if sw == 0 || sh == 0 || u64::from(sw) * u64::from(sh) > max_pixels {
            return Err(Declined::TooLarge);
        }
        let (ow, oh) = (sw.div_ceil(reduction), sh.div_ceil(reduction));
        let pitch = ow as usize * usize::from(channels);
        let mut data = vec![0u8; pitch * oh as usize];
        // Sides and pitch fit in c_int: JPEG sides are u16.
        // SAFETY: `data` holds exactly `pitch * oh` bytes and the library writes `oh` rows of
        // `pitch` bytes: asked for `ow x oh`, it picks the largest scaling factor whose
        // output fits (1/reduction gives exactly that size) and fails otherwise.
        let rc = unsafe {
            (api.decompress2)(
                h,
                bytes.as_ptr(),
                len,
                data.as_mut_ptr(),
                ow as c_int,
                pitch as c_int,
                oh as c_int,
                format,
                TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS,
            )
        };
        if rc != 0 {
            return Err(error());
        }
        Ok(TurboImage {
            data,
            width: ow,
            height: oh,
            channels,
        })
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Instant;

    use super::super::Format;
    use super::super::testdata;
    use super::*;

    fn decoder_scaled(bytes: &[u8], r: u32) -> (Vec<u8>, u16, u16) {
        let mut d = jpeg_decoder::Decoder::new(bytes);
        d.read_info().unwrap();
        let info = d.info().unwrap();
        let (ew, eh) = (
            u32::from(info.width).div_ceil(r) as u16,
            u32::from(info.height).div_ceil(r) as u16,
        );
        let (w, h) = d.scale(ew, eh).unwrap();
        (d.decode().unwrap(), w, h)
    }

    /// Without the library these tests have nothing to check; under `CI=true` that is a
    /// failure (scripts/test.sh installs libturbojpeg0), elsewhere a note.
    fn skip_without_library() -> bool {
        if available() {
            return false;
        }
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "libturbojpeg.so.0 missing under CI=true (scripts/test.sh installs libturbojpeg0)"
        );
        eprintln!("libturbojpeg.so.0 not installed: skipped");
        true
    }

    #[test]
    fn matches_jpeg_decoder_at_every_scale() {
        if skip_without_library() {
            return;
        }
        // smooth content: the two decoders' scaled IDCTs and upsampling agree closely (on
        // pixel noise they legitimately differ: each averages it away its own way)
        for img in [testdata::gradient(803, 611), testdata::halves(640, 480)] {
            let bytes = testdata::encode(&img, Format::Jpeg);
            for r in [1, 2, 4, 8] {
                let t = decode(&bytes, r, u64::MAX).unwrap();
                let (want, w, h) = decoder_scaled(&bytes, r);
                assert_eq!((t.width, t.height), (u32::from(w), u32::from(h)), "1/{r}");
                assert_eq!(t.channels, 3);
                let diff: u64 = t
                    .data
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| u64::from(a.abs_diff(*b)))
                    .sum();
                let mean = diff as f64 / want.len() as f64;
                assert!(mean < 3.0, "1/{r}: mean abs diff {mean}");
            }
        }
    }

    #[test]
    fn progressive_and_gray_decode() {
        if skip_without_library() {
            return;
        }
        let img = testdata::gradient(500, 300);
        let mut bytes = Vec::new();
        let mut enc = jpeg_encoder::Encoder::new(&mut bytes, 90);
        enc.set_progressive(true);
        let rgb = img.to_rgb8();
        enc.encode(rgb.as_raw(), 500, 300, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        let t = decode(&bytes, 4, u64::MAX).unwrap();
        assert_eq!((t.width, t.height, t.channels), (125, 75, 3));
        let mut bytes = Vec::new();
        let luma = img.to_luma8();
        jpeg_encoder::Encoder::new(&mut bytes, 90)
            .encode(luma.as_raw(), 500, 300, jpeg_encoder::ColorType::Luma)
            .unwrap();
        let t = decode(&bytes, 8, u64::MAX).unwrap();
        assert_eq!((t.width, t.height, t.channels), (63, 38, 1));
        assert_eq!(t.data.len(), 63 * 38);
    }

    #[test]
    fn declines_corrupt_truncated_and_oversized_input() {
        if skip_without_library() {
            return;
        }
        let bytes = testdata::encode(&testdata::noise(320, 240), Format::Jpeg);
        assert!(matches!(decode(&bytes, 4, 1000), Err(Declined::TooLarge)));
        let cut = decode(&bytes[..bytes.len() / 2], 4, u64::MAX);
        assert!(
            matches!(&cut, Err(Declined::Library(_))),
            "{}",
            cut.err().map(|e| e.to_string()).unwrap_or_default()
        );
        assert!(decode(b"not a jpeg", 4, u64::MAX).is_err());
        let mut bad = bytes.clone();
        let mid = bad.len() / 2;
        for b in &mut bad[mid..mid + 64] {
            *b = 0xFF;
        }
        // never a panic; a warning or an error declines
        let _ = decode(&bad, 2, u64::MAX);
        assert!(matches!(
            decode(&bytes, 3, u64::MAX),
            Err(Declined::Unsupported)
        ));
    }

    /// libjpeg-turbo vs `jpeg_dc` (1/8) and `jpeg-decoder` (1/4, 1/8) on the files in
    /// `$SIS_TIMING_JPEGS` (a directory, e.g. the bench corpus), or a synthetic photo:
    /// `SIS_TIMING_JPEGS=~/.cache/sis/bench/corpus-v2 cargo test --release -p sis turbo_timing -- --ignored --nocapture`
    #[test]
    #[ignore = "timing information, run by hand in release mode"]
    fn turbo_timing() {
        let files: Vec<Vec<u8>> = match std::env::var("SIS_TIMING_JPEGS") {
            Ok(dir) => {
                let mut names: Vec<_> = std::fs::read_dir(dir)
                    .unwrap()
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
                    .collect();
                names.sort();
                names.iter().map(|p| std::fs::read(p).unwrap()).collect()
            }
            Err(_) => vec![testdata::encode(&testdata::noise(1728, 1152), Format::Jpeg)],
        };
        let time = |f: &dyn Fn()| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        };
        for bytes in &files {
            let mut d = jpeg_decoder::Decoder::new(&bytes[..]);
            d.read_info().unwrap();
            let info = d.info().unwrap();
            let mut line = format!("{}x{} {} KB:", info.width, info.height, bytes.len() / 1024);
            for r in [8u32, 4, 2] {
                let turbo = (0..3)
                    .map(|_| time(&|| drop(decode(bytes, r, u64::MAX))))
                    .fold(f64::MAX, f64::min);
                let jd = (0..3)
                    .map(|_| time(&|| drop(decoder_scaled(bytes, r))))
                    .fold(f64::MAX, f64::min);
                line += &format!(" 1/{r}: turbo {turbo:.1} ms, jpeg-decoder {jd:.1} ms;");
            }
            let dc = (0..3)
                .map(|_| time(&|| drop(super::super::jpeg_dc::decode(bytes))))
                .fold(f64::MAX, f64::min);
            let has_dc = super::super::jpeg_dc::decode(bytes).is_some();
            line += &format!(
                " dc-only {}",
                if has_dc {
                    format!("{dc:.1} ms")
                } else {
                    "declined".into()
                }
            );
            println!("{line}");
        }
    }
}
