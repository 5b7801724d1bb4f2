//! Image work: sniffing, header probing, resizing and the bounded CPU pool.
//!
//! Everything here is pure and synchronous except [`ResizePool`], which moves the CPU-bound
//! [`resize`] off the async runtime (`spawn_blocking`) behind a semaphore and answers
//! [`ImagingError::Busy`] at once when every worker and queue slot is taken. This module does
//! no I/O, no HTTP and no metrics: callers time the work (or pass an observer to the pool) and
//! map [`ImagingError`] to responses.
//!
//! # Layout
//! - `format`: [`Format`] and [`sniff`] (magic bytes only).
//! - `probe`: [`probe`] reads dimensions from headers only and rejects decompression bombs
//!   (huge declared sizes, GIFs/WebPs with thousands of frames) before anything is allocated.
//! - `resize`: [`resize`] plans the output geometry, decodes (JPEG with DCT shrink-on-load),
//!   resizes with SIMD (`fast_image_resize`), applies EXIF orientation and encodes.
//! - `jpeg_dc`: a DC-only JPEG decoder for 1/8-scale shrink-on-load (declines anything
//!   unusual; the general decoder then takes over).
//! - `turbo`: libjpeg-turbo's TurboJPEG API, loaded at run time when installed
//!   (`libturbojpeg0`): JPEG decoding at 1/2, 1/4 and 1/8 scale, progressive files too.
//! - `avif_decode`: libavif's decoder, loaded at run time when installed (`libavif15`): AVIF
//!   sources (still images, or a sequence's first frame) to 8-bit RGB/RGBA.
//! - `geometry`: [`Gravity`], focal points and the deterministic smart-crop search.
//! - `effects`: [`Effects`] (blur, sharpen, rotate, flip), padding and alpha flattening.
//! - `animation`: every frame of an animated GIF/WebP through the same plan; a WebP muxer.
//! - `color`: embedded ICC profiles → sRGB (`moxcms`).
//! - `placeholder`: BlurHash and dominant colour from a 32 px sRGB thumbnail.
//! - `privacy`: [`strip_metadata`] removes GPS or all metadata from an original, losslessly.
//! - `pool`: [`ResizePool`].
//!
//! # Behaviour worth knowing
//! - [`Probe::width`]/[`Probe::height`] are the *displayed* dimensions: a JPEG whose EXIF
//!   orientation rotates by 90° reports its sides swapped, matching what [`resize`] produces.
//! - Animated GIF and WebP: with [`ResizeSpec::still`] (the default, and the legacy API's
//!   behaviour) only the first frame is resized; otherwise, into GIF or WebP, every frame is
//!   (`animation`), within [`MAX_ANIMATION_PIXELS`] and [`MAX_ANIMATION_OUTPUT_PIXELS`].
//!   Frames are counted from headers (without decoding) and more than [`MAX_FRAMES`] is
//!   rejected as [`ImagingError::TooLarge`].
//! - WebP output is lossless through the `image` crate's encoder when
//!   [`ResizeSpec::lossless`] (the default, and the legacy API's behaviour), else lossy through
//!   libwebp at `quality`. AVIF output goes through ravif/rav1e (speed 8, single-threaded) at
//!   `quality`; AVIF *input* is sized from its header and decoded through libavif when
//!   `libavif.so.15` is installed, else refused as unsupported (see [`Format::can_decode`]).
//!   PNG output uses fast compression.
//! - JPEG output of an image with transparency is flattened onto the background (white unless
//!   [`ResizeSpec::background`] says otherwise).
//! - Limits: `max_input_pixels` applies to the source (declared header size); `max_side`
//!   applies to each requested side and to each output side; `max_output_pixels` applies to
//!   the requested box (when both sides are given) and to the output.

mod animation;
mod avif_decode;
mod color;
mod dylib;
mod effects;
mod format;
mod geometry;
mod jpeg_dc;
mod placeholder;
mod pool;
mod privacy;
mod probe;
mod resize;
#[cfg(test)]
mod testdata;
mod turbo;

pub use animation::{MAX_ANIMATION_OUTPUT_PIXELS, MAX_ANIMATION_PIXELS};
pub use effects::{Effects, MAX_BLUR, MAX_SHARPEN, Rgba8, parse_color};
pub use format::{Format, sniff};
pub use geometry::Gravity;
pub use placeholder::{PLACEHOLDER_SIDE, Placeholder, placeholder};
pub use pool::{PoolEvent, PoolObserver, ResizePool};
pub use privacy::{Strip, strip_metadata};
pub use probe::{MAX_FRAMES, Probe, probe};
pub use resize::{
    DEFAULT_QUALITY, Encoded, Fit, ResizeSpec, check_decodes, plan_output, resize, resize_reference,
};

/// Why an image operation failed. Variant names double as metric labels (see [`Self::code`]).
#[derive(thiserror::Error, Debug)]
pub enum ImagingError {
    /// Not one of the formats we read (magic bytes unknown).
    #[error("unsupported image format")]
    Unsupported,
    /// The bytes claim a known format but are truncated or malformed.
    #[error("corrupt image: {0}")]
    Corrupt(String),
    /// The source or the requested output exceeds a configured [`Limits`] bound.
    #[error("image too large: {0}")]
    TooLarge(String),
    /// The request itself makes no sense (zero width, unencodable size...).
    #[error("invalid resize parameters: {0}")]
    InvalidParams(String),
    /// Every worker and queue slot of the [`ResizePool`] is taken; retry later (HTTP 503).
    #[error("image workers busy")]
    Busy,
    /// A bug or an unexpected failure inside the pipeline (e.g. a panicked worker).
    #[error("internal imaging error: {0}")]
    Internal(String),
}

impl ImagingError {
    /// A stable, kebab-case code for JSON errors and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unsupported => "unsupported-format",
            Self::Corrupt(_) => "corrupt-image",
            Self::TooLarge(_) => "image-too-large",
            Self::InvalidParams(_) => "invalid-params",
            Self::Busy => "busy",
            Self::Internal(_) => "internal",
        }
    }
}

/// Size bounds applied to every probe and resize.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest allowed side of a requested or produced image, in pixels.
    pub max_side: u32,
    /// Largest allowed output area (and requested box area), in pixels.
    pub max_output_pixels: u64,
    /// Largest allowed *declared* source area, checked from headers before decoding.
    pub max_input_pixels: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_side: 8192,
            max_output_pixels: 40_000_000,
            max_input_pixels: 100_000_000,
        }
    }
}
