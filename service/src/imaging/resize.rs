//! The pure, CPU-bound resize pipeline: plan → decode → resize → orient → encode.
//!
//! 1. **Plan** the output in displayed (EXIF-oriented) space from the header alone, so bad
//!    parameters and limit violations fail before any decoding.
//! 2. **Decode**. JPEG uses shrink-on-load: when the output is at most a quarter of the
//!    source per side, the decoder's DCT scaling produces the image directly at 1/4 or 1/8
//!    size (the smallest that still covers the output), so a 12 MP photo is never expanded to
//!    full size for a thumbnail. (At 1/2 the full-size SIMD decode measured as fast.) At 1/8 a DC-only decoder (`jpeg_dc`) skips the AC coefficients altogether. Other formats (and JPEG at scale 1) decode through the `image` crate; GIF and
//!    WebP animations yield their first frame unless every frame is asked for
//!    ([`ResizeSpec::still`] `false`, see `animation`).
//! 3. **Resize** with `fast_image_resize` (SIMD, Catmull-Rom, alpha-aware), cropping in the
//!    same pass for [`Fit::Cover`].
//! 4. **Orient**: EXIF rotation/flip is applied to the small result, not the big source.
//! 5. **Encode**: JPEG with `jpeg-encoder` (AVX2 when available), PNG with fast deflate, GIF
//!    with a fast quantiser, WebP lossless.
//!
//! Nothing here blocks on I/O or touches the async runtime; see [`super::ResizePool`].

use std::io::Cursor;

use bytes::Bytes;
use fast_image_resize as fir;
use image::{DynamicImage, ImageDecoder, metadata::Orientation};

use super::effects::{self, Effects, Rgba8};
use super::geometry::{self, Gravity, PixelView};
use super::probe::{Header, jpeg_info, read_header};
use super::{Format, ImagingError, Limits};

/// How the output box is filled when both width and height are given.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Fit {
    /// Fit inside the box, keeping the aspect ratio (one side may be shorter than asked).
    #[default]
    Contain,
    /// Fill the box exactly, keeping the aspect ratio by cropping the centre.
    Cover,
    /// Exactly the box, aspect ratio ignored.
    Fill,
    /// Same as [`Fit::Fill`]; the legacy `/stretch_*` API's name for it.
    Stretch,
}

impl Fit {
    /// Parses a `fit=` query value (`contain|cover|fill|stretch`, case-insensitive).
    pub fn from_param(s: &str) -> Option<Fit> {
        match s.to_ascii_lowercase().as_str() {
            "contain" => Some(Self::Contain),
            "cover" => Some(Self::Cover),
            "fill" => Some(Self::Fill),
            "stretch" => Some(Self::Stretch),
            _ => None,
        }
    }

    /// The query value for this mode.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Contain => "contain",
            Self::Cover => "cover",
            Self::Fill => "fill",
            Self::Stretch => "stretch",
        }
    }
}

/// What to produce. With only one of `width`/`height`, the other follows the aspect ratio
/// (whatever `fit` says); with neither, the image keeps its size (re-encoded, oriented).
///
/// [`ResizeSpec::default`] is the legacy behaviour: contain, may enlarge, centred crops, no
/// effects, lossless WebP, animations reduced to their first frame, ICC profiles dropped
/// without converting.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResizeSpec {
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fit: Fit,
    /// Output format; `None` keeps the source's ([`Format::default_output`]).
    pub format: Option<Format>,
    /// 1..=100 for lossy outputs (JPEG, lossy WebP, AVIF); `None` means [`DEFAULT_QUALITY`].
    pub quality: Option<u8>,
    /// Where a [`Fit::Cover`] crop is anchored (displayed coordinates).
    pub gravity: Gravity,
    /// [`Fit::Contain`] with both sides: centre the image on a canvas of exactly the box.
    pub pad: bool,
    /// Colour of the padding and of what transparency is flattened onto for JPEG. `None`:
    /// white for JPEG, transparent for formats with alpha.
    pub background: Option<Rgba8>,
    /// Whether the output may be larger than the source. When `false`, a request beyond the
    /// source's size gives the source's size (same aspect as asked for cover and fill).
    pub enlarge: bool,
    /// Blur, sharpen, rotation and flips, applied to the output pixels.
    pub effects: Effects,
    /// Progressive (multi-scan) JPEG output.
    pub progressive: bool,
    /// WebP output: lossless (`true`) or lossy at `quality`.
    pub lossless: bool,
    /// Animated sources: encode the first frame only.
    pub still: bool,
    /// Convert pixels of a source with an embedded ICC profile to sRGB (the output carries no
    /// profile). `false` (the legacy behaviour) drops the profile and keeps the pixel values.
    pub to_srgb: bool,
}

impl Default for ResizeSpec {
    fn default() -> Self {
        Self {
            width: None,
            height: None,
            fit: Fit::Contain,
            format: None,
            quality: None,
            gravity: Gravity::CENTER,
            pad: false,
            background: None,
            enlarge: true,
            effects: Effects::default(),
            progressive: false,
            lossless: true,
            still: true,
            to_srgb: false,
        }
    }
}

/// JPEG quality used when the request does not give one.
pub const DEFAULT_QUALITY: u8 = 80;

/// An encoded image, ready to send.
#[derive(Clone, Debug)]
pub struct Encoded {
    pub bytes: Bytes,
    pub format: Format,
}

/// Output geometry in a given coordinate space.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Plan {
    /// Size of the scaled image (before padding).
    pub(super) width: u32,
    pub(super) height: u32,
    /// Source region (left, top, width, height) to scale into the output; `None` = all of it.
    pub(super) crop: Option<(f64, f64, f64, f64)>,
    /// Padding canvas in displayed space (applied after orientation).
    pub(super) canvas: Option<(u32, u32)>,
    /// The crop's offset is chosen from the pixels after decoding ([`Gravity::Smart`]).
    pub(super) smart: bool,
}

impl Plan {
    /// The same plan seen in stored space, before `o` is applied to a `sw` × `sh` source: sides
    /// swap for quarter turns and the crop box moves with the pixels it covers.
    fn to_stored(self, o: Orientation, sw: f64, sh: f64) -> Plan {
        let swaps = matches!(
            o,
            Orientation::Rotate90
                | Orientation::Rotate270
                | Orientation::Rotate90FlipH
                | Orientation::Rotate270FlipH
        );
        let crop = self.crop.map(|(x, y, w, h)| match o {
            Orientation::NoTransforms => (x, y, w, h),
            Orientation::FlipHorizontal => (sw - x - w, y, w, h),
            Orientation::Rotate180 => (sw - x - w, sh - y - h, w, h),
            Orientation::FlipVertical => (x, sh - y - h, w, h),
            Orientation::Rotate90FlipH => (y, x, h, w),
            Orientation::Rotate90 => (y, sh - x - w, h, w),
            Orientation::Rotate270FlipH => (sw - y - h, sh - x - w, h, w),
            Orientation::Rotate270 => (sw - y - h, x, h, w),
        });
        let (width, height) = if swaps {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        };
        Plan {
            width,
            height,
            crop,
            ..self
        }
    }
}

/// The output size [`resize`] would produce for a source of `src_width` × `src_height`
/// displayed pixels, without touching any image. Useful to validate a request early.
///
/// # Errors
/// [`ImagingError::InvalidParams`] for a zero side, [`ImagingError::TooLarge`] when the
/// request or the result exceeds `limits`.
pub fn plan_output(
    src_width: u32,
    src_height: u32,
    spec: &ResizeSpec,
    limits: &Limits,
) -> Result<(u32, u32), ImagingError> {
    plan(src_width, src_height, spec, limits).map(|p| (p.width, p.height))
}

pub(super) fn plan(
    sw: u32,
    sh: u32,
    spec: &ResizeSpec,
    limits: &Limits,
) -> Result<Plan, ImagingError> {
    for (name, side) in [("width", spec.width), ("height", spec.height)] {
        match side {
            Some(0) => return Err(ImagingError::InvalidParams(format!("{name} must be > 0"))),
            Some(v) if v > limits.max_side => {
                return Err(ImagingError::TooLarge(format!(
                    "requested {name} {v} exceeds {} px",
                    limits.max_side
                )));
            }
            _ => {}
        }
    }
    if let Some(q) = spec.quality
        && !(1..=100).contains(&q)
    {
        return Err(ImagingError::InvalidParams(format!(
            "quality {q} is not in 1..=100"
        )));
    }
    if sw == 0 || sh == 0 {
        return Err(ImagingError::Corrupt("empty source image".into()));
    }
    let (fw, fh) = (f64::from(sw), f64::from(sh));
    // Rounded, at least 1, computed in f64 (exact for u32 inputs).
    let scaled = |v: f64| -> u64 { (v.round() as u64).max(1) };
    let enlarge = spec.enlarge;
    let mut canvas = None;
    let mut smart = false;
    let (w, h, crop) = match (spec.width, spec.height) {
        (None, None) => (u64::from(sw), u64::from(sh), None),
        (Some(w), None) => {
            let w = if enlarge { w } else { w.min(sw) };
            (u64::from(w), scaled(fh * f64::from(w) / fw), None)
        }
        (None, Some(h)) => {
            let h = if enlarge { h } else { h.min(sh) };
            (scaled(fw * f64::from(h) / fh), u64::from(h), None)
        }
        (Some(w), Some(h)) => {
            let requested = u64::from(w) * u64::from(h);
            if requested > limits.max_output_pixels {
                return Err(ImagingError::TooLarge(format!(
                    "requested {w}x{h} = {requested} px exceeds {} px",
                    limits.max_output_pixels
                )));
            }
            let (bw, bh) = (f64::from(w), f64::from(h));
            match spec.fit {
                Fit::Fill | Fit::Stretch if enlarge => (u64::from(w), u64::from(h), None),
                Fit::Fill | Fit::Stretch => (u64::from(w.min(sw)), u64::from(h.min(sh)), None),
                Fit::Contain => {
                    let mut s = (bw / fw).min(bh / fh);
                    if !enlarge {
                        s = s.min(1.0);
                    }
                    if spec.pad {
                        canvas = Some((w, h));
                    }
                    (
                        scaled(fw * s).min(u64::from(w)),
                        scaled(fh * s).min(u64::from(h)),
                        None,
                    )
                }
                Fit::Cover => {
                    let (cw, ch, s) = if fw * bh > bw * fh {
                        // Source is wider than the box: keep full height, crop the sides.
                        (fh * bw / bh, fh, bh / fh)
                    } else {
                        (fw, fw * bh / bw, bw / fw)
                    };
                    let (fx, fy) = match spec.gravity {
                        Gravity::Focal { x, y } => (f64::from(x) / 1000.0, f64::from(y) / 1000.0),
                        Gravity::Smart => {
                            smart = true;
                            (0.5, 0.5)
                        }
                    };
                    let crop = (
                        geometry::focal_offset(fw, cw, fx),
                        geometry::focal_offset(fh, ch, fy),
                        cw,
                        ch,
                    );
                    if !enlarge && s > 1.0 {
                        // The crop at the source's scale: the box's aspect, no upscaling.
                        (
                            scaled(cw).min(u64::from(sw)),
                            scaled(ch).min(u64::from(sh)),
                            Some(crop),
                        )
                    } else {
                        (u64::from(w), u64::from(h), Some(crop))
                    }
                }
            }
        }
    };
    let max_side = u64::from(limits.max_side);
    if w > max_side || h > max_side {
        return Err(ImagingError::TooLarge(format!(
            "output {w}x{h} exceeds {} px per side",
            limits.max_side
        )));
    }
    if w * h > limits.max_output_pixels {
        return Err(ImagingError::TooLarge(format!(
            "output {w}x{h} = {} px exceeds {} px",
            w * h,
            limits.max_output_pixels
        )));
    }
    // Both fit in u32: they are at most max_side.
    Ok(Plan {
        width: w as u32,
        height: h as u32,
        crop,
        canvas,
        smart,
    })
}

/// Checks that `bytes` (already sniffed as `format`, declaring `width`×`height`) really
/// decode: a JPEG the DC-only decoder can walk to its EOI without a desync is accepted
/// without decoding pixels (see `jpeg_dc::verify`); anything else goes through a
/// thumbnail-sized resize, whose decoder reports truncated and corrupt data.
///
/// # Errors
/// Whatever that resize returns.
pub fn check_decodes(
    bytes: &[u8],
    format: Format,
    width: u32,
    height: u32,
    limits: &Limits,
) -> Result<(), ImagingError> {
    if format == Format::Jpeg && super::jpeg_dc::verify(bytes) {
        return Ok(());
    }
    let spec = ResizeSpec {
        width: Some(width.clamp(1, 8)),
        height: Some(height.clamp(1, 8)),
        fit: Fit::Fill,
        ..ResizeSpec::default()
    };
    resize(bytes, &spec, limits).map(|_| ())
}

/// Resizes `bytes` according to `spec`: pure and CPU-bound (call it from a blocking thread,
/// e.g. through [`super::ResizePool`]). Applies EXIF orientation. Animated inputs yield their
/// first frame.
///
/// # Errors
/// See [`ImagingError`]: `Unsupported`/`Corrupt` for bad input, `TooLarge` for limit
/// violations (checked before decoding), `InvalidParams` for a nonsensical spec.
pub fn resize(bytes: &[u8], spec: &ResizeSpec, limits: &Limits) -> Result<Encoded, ImagingError> {
    run(bytes, spec, limits, true)
}

/// [`resize`] without JPEG shrink-on-load (always a full-size decode). Same output size and
/// format; exists as the reference for benchmarks and tests.
///
/// # Errors
/// As [`resize`].
#[doc(hidden)]
pub fn resize_reference(
    bytes: &[u8],
    spec: &ResizeSpec,
    limits: &Limits,
) -> Result<Encoded, ImagingError> {
    run(bytes, spec, limits, false)
}

/// Decoded 8-bit pixels, tightly packed.
pub(super) struct Pixels {
    pub(super) data: Vec<u8>,
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) layout: Layout,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum Layout {
    Gray,
    GrayAlpha,
    Rgb,
    Rgba,
}

impl Layout {
    fn fir(self) -> fir::PixelType {
        match self {
            Self::Gray => fir::PixelType::U8,
            Self::GrayAlpha => fir::PixelType::U8x2,
            Self::Rgb => fir::PixelType::U8x3,
            Self::Rgba => fir::PixelType::U8x4,
        }
    }
}

fn run(
    bytes: &[u8],
    spec: &ResizeSpec,
    limits: &Limits,
    shrink_on_load: bool,
) -> Result<Encoded, ImagingError> {
    let header = decodable_header(bytes, limits)?;
    let out_format = spec
        .format
        .unwrap_or_else(|| header.format.default_output());
    if !spec.still && header.frames > 1 && out_format.can_animate() {
        let bytes = super::animation::resize_animation(bytes, &header, spec, limits, out_format)?;
        return Ok(Encoded {
            bytes: Bytes::from(bytes),
            format: out_format,
        });
    }
    let img = render(bytes, &header, spec, limits, shrink_on_load, out_format)?;
    let encoded = encode(&img, out_format, spec)?;
    Ok(Encoded {
        bytes: Bytes::from(encoded),
        format: out_format,
    })
}

/// The header of a source whose pixels sis can decode.
pub(super) fn decodable_header(bytes: &[u8], limits: &Limits) -> Result<Header, ImagingError> {
    let header = read_header(bytes, limits)?;
    if !header.format.can_decode() {
        return Err(ImagingError::Unsupported);
    }
    // Decoders differ in how they treat a JPEG cut short (some fill the rest with grey);
    // we refuse it consistently.
    if header.format == Format::Jpeg && !super::probe::jpeg_complete(bytes) {
        return Err(ImagingError::Corrupt(
            "jpeg: truncated (no end-of-image marker after the scan)".into(),
        ));
    }
    Ok(header)
}

/// A still image's pixels, ready to encode as `out_format`: decode, crop and resize, sRGB,
/// orientation, effects.
pub(super) fn render(
    bytes: &[u8],
    header: &Header,
    spec: &ResizeSpec,
    limits: &Limits,
    shrink_on_load: bool,
    out_format: Format,
) -> Result<DynamicImage, ImagingError> {
    let header = *header;
    let (pixels, orientation, mut raw_plan) = if header.format == Format::Jpeg && shrink_on_load {
        decode_jpeg_scaled(bytes, &header, spec, limits)?
    } else {
        decode_generic(bytes, &header, spec, limits)?
    };
    if raw_plan.smart {
        raw_plan = place_smart(&pixels, raw_plan, header.width);
    }

    let mut resized = resize_pixels(pixels, &raw_plan, header.width)?;
    if spec.to_srgb
        && let Some(icc) = super::color::source_icc(bytes, header.format)
    {
        let channels = match resized.layout {
            Layout::Rgb => 3,
            Layout::Rgba => 4,
            Layout::Gray | Layout::GrayAlpha => 0,
        };
        if let Some(srgb) = super::color::to_srgb(&resized.data, channels, &icc) {
            resized.data = srgb;
        }
    }
    let mut img = into_dynamic(resized)?;
    if orientation != Orientation::NoTransforms {
        img.apply_orientation(orientation);
    }
    Ok(finish(img, &raw_plan, spec, out_format))
}

/// What transparency becomes: `bg=` when given, else white for JPEG (which has no alpha) and
/// transparent for the rest.
fn background_for(spec: &ResizeSpec, format: Format) -> Rgba8 {
    match (spec.background, format) {
        (Some([r, g, b, _]), Format::Jpeg) => [r, g, b, 255],
        (Some(bg), _) => bg,
        (None, Format::Jpeg) => [255, 255, 255, 255],
        (None, _) => [0, 0, 0, 0],
    }
}

/// Effects on the resized, oriented image: blur/sharpen, padding, then rotation and flips.
pub(super) fn finish(
    img: DynamicImage,
    plan: &Plan,
    spec: &ResizeSpec,
    format: Format,
) -> DynamicImage {
    let mut img = img;
    if !spec.effects.is_identity() {
        img = effects::filter(img, &spec.effects);
    }
    if let Some((w, h)) = plan.canvas {
        img = effects::pad(img, w, h, background_for(spec, format));
    }
    if !spec.effects.is_identity() {
        img = effects::turn(img, &spec.effects);
    }
    img
}

/// Moves a [`Gravity::Smart`] crop (stored space, full-size coordinates) to the window with the
/// most edge energy in the decoded `pixels` (which may be DCT-reduced).
pub(super) fn place_smart(pixels: &Pixels, plan: Plan, stored_width: u32) -> Plan {
    let Some((_, _, cw, ch)) = plan.crop else {
        return plan;
    };
    let scale = f64::from(pixels.width) / f64::from(stored_width);
    let view = PixelView {
        data: &pixels.data,
        width: pixels.width,
        height: pixels.height,
        channels: match pixels.layout {
            Layout::Gray => 1,
            Layout::GrayAlpha => 2,
            Layout::Rgb => 3,
            Layout::Rgba => 4,
        },
    };
    let (l, t) = geometry::smart_offset(
        &view,
        (cw * scale).min(f64::from(pixels.width)),
        (ch * scale).min(f64::from(pixels.height)),
    );
    Plan {
        crop: Some((l / scale, t / scale, cw, ch)),
        ..plan
    }
}

/// Plans in displayed space, then maps the plan to stored (pre-orientation) space.
fn plan_for(
    header: &Header,
    orientation: Orientation,
    spec: &ResizeSpec,
    limits: &Limits,
) -> Result<Plan, ImagingError> {
    let swaps = matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    );
    let (dw, dh) = if swaps {
        (header.height, header.width)
    } else {
        (header.width, header.height)
    };
    Ok(plan(dw, dh, spec, limits)?.to_stored(
        orientation,
        f64::from(header.width),
        f64::from(header.height),
    ))
}

/// Limits handed to the `image` decoders as a second line of defence behind [`read_header`].
pub(crate) fn decoder_limits(limits: &Limits) -> image::Limits {
    let mut l = image::Limits::default();
    // 8 bytes per pixel covers 16-bit RGBA; plus slack for decoder tables and rows.
    l.max_alloc = Some(
        limits
            .max_input_pixels
            .saturating_mul(8)
            .saturating_add(64 << 20),
    );
    l
}

pub(super) fn map_image_error(format: Format) -> impl Fn(image::ImageError) -> ImagingError {
    move |e| match e {
        image::ImageError::Limits(e) => ImagingError::TooLarge(format!("{format}: {e}")),
        image::ImageError::Unsupported(e) => {
            ImagingError::Corrupt(format!("{format}: unsupported variant: {e}"))
        }
        image::ImageError::Parameter(e) => ImagingError::InvalidParams(e.to_string()),
        image::ImageError::Encoding(e) => ImagingError::Internal(e.to_string()),
        e => ImagingError::Corrupt(format!("{format}: {e}")),
    }
}

/// Any format through the `image` crate, at full size.
fn decode_generic(
    bytes: &[u8],
    header: &Header,
    spec: &ResizeSpec,
    limits: &Limits,
) -> Result<(Pixels, Orientation, Plan), ImagingError> {
    if header.format == Format::Avif {
        let raw_plan = plan_for(header, Orientation::NoTransforms, spec, limits)?;
        let img = super::avif_decode::decode(bytes, limits.max_input_pixels)?;
        if (img.width(), img.height()) != (header.width, header.height) {
            return Err(ImagingError::Corrupt(format!(
                "avif: header says {}x{}, decoder says {}x{}",
                header.width,
                header.height,
                img.width(),
                img.height()
            )));
        }
        return Ok((from_dynamic(img), Orientation::NoTransforms, raw_plan));
    }
    let err = map_image_error(header.format);
    let mut reader =
        image::ImageReader::with_format(Cursor::new(bytes), header.format.image_format());
    reader.limits(decoder_limits(limits));
    let mut decoder = reader.into_decoder().map_err(&err)?;
    let orientation = if header.format == Format::Jpeg {
        Orientation::from_exif(header.exif_orientation).unwrap_or(Orientation::NoTransforms)
    } else {
        decoder.orientation().unwrap_or(Orientation::NoTransforms)
    };
    let (dw, dh) = decoder.dimensions();
    if (dw, dh) != (header.width, header.height) {
        // Our header parser and the decoder disagree: trust neither.
        return Err(ImagingError::Corrupt(format!(
            "{}: header says {}x{}, decoder says {dw}x{dh}",
            header.format, header.width, header.height
        )));
    }
    let raw_plan = plan_for(header, orientation, spec, limits)?;
    let img = DynamicImage::from_decoder(decoder).map_err(&err)?;
    Ok((from_dynamic(img), orientation, raw_plan))
}

fn from_dynamic(img: DynamicImage) -> Pixels {
    let (width, height) = (img.width(), img.height());
    let color = img.color();
    let (data, layout) = match (color.has_color(), color.has_alpha()) {
        (false, false) => (img.into_luma8().into_raw(), Layout::Gray),
        (false, true) => (img.into_luma_alpha8().into_raw(), Layout::GrayAlpha),
        (true, false) => (img.into_rgb8().into_raw(), Layout::Rgb),
        (true, true) => (img.into_rgba8().into_raw(), Layout::Rgba),
    };
    Pixels {
        data,
        width,
        height,
        layout,
    }
}

/// The largest DCT reduction (1, 2, 4 or 8) whose output still covers `need` from `region`.
fn jpeg_reduction(region: (f64, f64), need: (u32, u32)) -> u32 {
    for r in [8u32, 4, 2] {
        let rf = f64::from(r);
        if (region.0 / rf).floor() >= f64::from(need.0)
            && (region.1 / rf).floor() >= f64::from(need.1)
        {
            return r;
        }
    }
    1
}

/// JPEG with shrink-on-load through `jpeg-decoder`'s DCT scaling; falls back to
/// [`decode_generic`] when no reduction helps or the colour model needs it (CMYK, 16-bit).
fn decode_jpeg_scaled(
    bytes: &[u8],
    header: &Header,
    spec: &ResizeSpec,
    limits: &Limits,
) -> Result<(Pixels, Orientation, Plan), ImagingError> {
    let orientation =
        Orientation::from_exif(header.exif_orientation).unwrap_or(Orientation::NoTransforms);
    let raw_plan = plan_for(header, orientation, spec, limits)?;
    let region = raw_plan.crop.map_or(
        (f64::from(header.width), f64::from(header.height)),
        |(_, _, w, h)| (w, h),
    );
    let r = jpeg_reduction(region, (raw_plan.width, raw_plan.height));
    let info = jpeg_info(bytes)?;
    // At 1/2 the scaled decoder saves less than its slower entropy decoding costs compared
    // with the `image` crate's SIMD decoder plus a SIMD resize (see `benches/resize.rs`).
    // With libjpeg-turbo (`turbo`) 1/2 pays too: its scaled IDCT is cheaper than a full decode.
    let turbo = super::turbo::available();
    if (r < 4 && !(r == 2 && turbo)) || !matches!(info.components, 1 | 3) {
        return decode_generic(bytes, header, spec, limits);
    }
    // At 1/8 the DC-only decoder beats jpeg-decoder's scaled decode on photos and on
    // near-noise data alike (~1.8x on both, measured by `jpeg_dc_timing`).
    if r == 8
        && let Some(dc) = super::jpeg_dc::decode(bytes)
    {
        let pixels = Pixels {
            data: dc.data,
            width: dc.width,
            height: dc.height,
            layout: if dc.channels == 1 {
                Layout::Gray
            } else {
                Layout::Rgb
            },
        };
        return Ok((pixels, orientation, raw_plan));
    }
    // libjpeg-turbo when installed (progressive files too); it declines anything it would
    // only warn about, and the decoders below decide those files as before.
    if turbo && let Ok(t) = super::turbo::decode(bytes, r, limits.max_input_pixels) {
        let layout = if t.channels == 1 {
            Layout::Gray
        } else {
            Layout::Rgb
        };
        let (data, width, height) = (t.data, t.width, t.height);
        let pixels = Pixels {
            data,
            width,
            height,
            layout,
        };
        return Ok((pixels, orientation, raw_plan));
    }
    if r == 2 {
        return decode_generic(bytes, header, spec, limits);
    }
    let expect = |v: u32| v.div_ceil(r);
    let (ew, eh) = (expect(header.width), expect(header.height));
    let mut dec = jpeg_decoder::Decoder::new(bytes);
    dec.set_max_decoding_buffer_size(
        usize::try_from(limits.max_input_pixels.saturating_mul(4)).unwrap_or(usize::MAX),
    );
    let corrupt = |e: jpeg_decoder::Error| ImagingError::Corrupt(format!("jpeg: {e}"));
    // Sides fit in u16: JPEG headers store them as u16.
    let (sw, sh) = dec.scale(ew as u16, eh as u16).map_err(corrupt)?;
    let data = dec.decode().map_err(corrupt)?;
    let Some(info) = dec.info() else {
        return Err(ImagingError::Internal("jpeg: no info after decode".into()));
    };
    let layout = match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => Layout::Gray,
        jpeg_decoder::PixelFormat::RGB24 => Layout::Rgb,
        _ => return decode_generic(bytes, header, spec, limits),
    };
    let pixels = Pixels {
        data,
        width: u32::from(sw),
        height: u32::from(sh),
        layout,
    };
    Ok((pixels, orientation, raw_plan))
}

/// Scales (and crops) `src` to the plan with SIMD convolution. `stored_width` is the source's
/// full stored width, to map crop coordinates onto a DCT-reduced decode.
pub(super) fn resize_pixels(
    src: Pixels,
    plan: &Plan,
    stored_width: u32,
) -> Result<Pixels, ImagingError> {
    let scale = f64::from(src.width) / f64::from(stored_width);
    if plan.crop.is_none() && (src.width, src.height) == (plan.width, plan.height) {
        return Ok(src);
    }
    let internal = |e: &dyn std::fmt::Display| ImagingError::Internal(format!("resize: {e}"));
    let pt = src.layout.fir();
    let src_view = fir::images::ImageRef::new(src.width, src.height, &src.data, pt)
        .map_err(|e| internal(&e))?;
    let mut dst = fir::images::Image::new(plan.width, plan.height, pt);
    let mut options = fir::ResizeOptions::new()
        .resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::CatmullRom));
    if let Some((l, t, w, h)) = plan.crop {
        let (sw, sh) = (f64::from(src.width), f64::from(src.height));
        // Whole source pixels: with a fractional crop box, fast_image_resize 5 can compute
        // convolution bounds that are not increasing and then underflows (`b.start -=
        // x_first` in `Resizer::do_convolution`; found by the `decode_resize` fuzz target).
        // Rounding moves the box by less than one source pixel.
        let l = (l * scale).round().clamp(0.0, sw - 1.0);
        let t = (t * scale).round().clamp(0.0, sh - 1.0);
        let (w, h) = (
            (w * scale).round().clamp(1.0, sw - l),
            (h * scale).round().clamp(1.0, sh - t),
        );
        options = options.crop(l, t, w, h);
    }
    fir::Resizer::new()
        .resize(&src_view, &mut dst, &options)
        .map_err(|e| internal(&e))?;
    Ok(Pixels {
        width: plan.width,
        height: plan.height,
        data: dst.into_vec(),
        layout: src.layout,
    })
}

fn into_dynamic(p: Pixels) -> Result<DynamicImage, ImagingError> {
    let bad = || ImagingError::Internal("pixel buffer size mismatch".into());
    let (w, h) = (p.width, p.height);
    Ok(match p.layout {
        Layout::Gray => {
            DynamicImage::ImageLuma8(image::ImageBuffer::from_raw(w, h, p.data).ok_or_else(bad)?)
        }
        Layout::GrayAlpha => {
            DynamicImage::ImageLumaA8(image::ImageBuffer::from_raw(w, h, p.data).ok_or_else(bad)?)
        }
        Layout::Rgb => {
            DynamicImage::ImageRgb8(image::ImageBuffer::from_raw(w, h, p.data).ok_or_else(bad)?)
        }
        Layout::Rgba => {
            DynamicImage::ImageRgba8(image::ImageBuffer::from_raw(w, h, p.data).ok_or_else(bad)?)
        }
    })
}

fn encode(img: &DynamicImage, format: Format, spec: &ResizeSpec) -> Result<Vec<u8>, ImagingError> {
    let quality = spec.quality.unwrap_or(DEFAULT_QUALITY);
    let internal =
        |e: &dyn std::fmt::Display| ImagingError::Internal(format!("encode {format}: {e}"));
    let mut out = Vec::with_capacity(64 * 1024);
    match format {
        Format::Jpeg => {
            let flat;
            let img = if img.color().has_alpha() {
                flat = effects::flatten(img, background_for(spec, Format::Jpeg));
                &flat
            } else {
                img
            };
            let (w, h) = (
                u16::try_from(img.width()).map_err(|_| {
                    ImagingError::TooLarge("JPEG sides are at most 65535 px".into())
                })?,
                u16::try_from(img.height()).map_err(|_| {
                    ImagingError::TooLarge("JPEG sides are at most 65535 px".into())
                })?,
            );
            let color = if img.color().has_color() {
                jpeg_encoder::ColorType::Rgb
            } else {
                jpeg_encoder::ColorType::Luma
            };
            let mut encoder = jpeg_encoder::Encoder::new(&mut out, quality);
            encoder.set_progressive(spec.progressive);
            encoder
                .encode(img.as_bytes(), w, h, color)
                .map_err(|e| internal(&e))?;
        }
        Format::Png => {
            let encoder = image::codecs::png::PngEncoder::new_with_quality(
                &mut out,
                image::codecs::png::CompressionType::Fast,
                image::codecs::png::FilterType::Adaptive,
            );
            img.write_with_encoder(encoder).map_err(|e| internal(&e))?;
        }
        Format::Gif => {
            let mut encoder = image::codecs::gif::GifEncoder::new_with_speed(&mut out, 10);
            if img.color().has_alpha() {
                let rgba = img.to_rgba8();
                encoder.encode(
                    rgba.as_raw(),
                    rgba.width(),
                    rgba.height(),
                    image::ExtendedColorType::Rgba8,
                )
            } else {
                let rgb = img.to_rgb8();
                encoder.encode(
                    rgb.as_raw(),
                    rgb.width(),
                    rgb.height(),
                    image::ExtendedColorType::Rgb8,
                )
            }
            .map_err(|e| internal(&e))?;
        }
        Format::Webp if spec.lossless => {
            let encoder = image::codecs::webp::WebPEncoder::new_lossless(&mut out);
            img.write_with_encoder(encoder).map_err(|e| internal(&e))?;
        }
        Format::Webp => {
            out = encode_webp_lossy(img, quality)?;
        }
        Format::Avif => {
            // Speed 8 of rav1e's 1 (slowest) ..= 10: ~4x faster than the default 4 for ~5%
            // larger files; single-threaded (no rayon), so the resize pool's bound holds.
            let encoder = image::codecs::avif::AvifEncoder::new_with_speed_quality(
                &mut out, AVIF_SPEED, quality,
            );
            if img.color().has_alpha() {
                img.to_rgba8().write_with_encoder(encoder)
            } else {
                img.to_rgb8().write_with_encoder(encoder)
            }
            .map_err(|e| internal(&e))?;
        }
        Format::Bmp | Format::Tiff => {
            img.write_to(Cursor::new(&mut out), format.image_format())
                .map_err(|e| internal(&e))?;
        }
    }
    Ok(out)
}

/// rav1e speed preset for AVIF output (see [`encode`]).
const AVIF_SPEED: u8 = 8;

/// Lossy WebP through libwebp (`webp` crate): `quality` 1..=100 as libwebp's `-q`.
pub(super) fn encode_webp_lossy(img: &DynamicImage, quality: u8) -> Result<Vec<u8>, ImagingError> {
    let (w, h) = (img.width(), img.height());
    if w > 16383 || h > 16383 {
        return Err(ImagingError::TooLarge(
            "WebP sides are at most 16383 px".into(),
        ));
    }
    let q = f32::from(quality);
    let mem = if img.color().has_alpha() {
        let rgba = img.to_rgba8();
        webp::Encoder::from_rgba(rgba.as_raw(), w, h).encode_simple(false, q)
    } else {
        let rgb = img.to_rgb8();
        webp::Encoder::from_rgb(rgb.as_raw(), w, h).encode_simple(false, q)
    }
    .map_err(|e| ImagingError::Internal(format!("encode webp: {e:?}")))?;
    Ok(mem.to_vec())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::imaging::{probe, sniff, testdata};

    /// Cover crops of tiny sources land on fractional boxes; fast_image_resize 5 underflowed
    /// on some of them (the fuzz target's first find was a 9x5 PNG covered to 9x10).
    #[test]
    fn cover_and_fill_of_tiny_sources_never_panic() {
        let limits = Limits::default();
        for sw in 1..10 {
            for sh in 1..10 {
                let png = testdata::encode(&testdata::gradient(sw, sh), Format::Png);
                for (dw, dh) in [(1, 2), (3, 2), (2, 3), (5, 9), (9, 10), (10, 9), (17, 3)] {
                    for fit in [Fit::Cover, Fit::Fill] {
                        let out = resize(&png, &spec(Some(dw), Some(dh), fit), &limits);
                        assert!(out.is_ok(), "{sw}x{sh} -> {dw}x{dh} {fit:?}: {out:?}");
                    }
                }
            }
        }
    }

    fn spec(width: Option<u32>, height: Option<u32>, fit: Fit) -> ResizeSpec {
        ResizeSpec {
            width,
            height,
            fit,
            ..ResizeSpec::default()
        }
    }

    impl ResizeSpec {
        fn with_format(self, format: Format) -> ResizeSpec {
            ResizeSpec {
                format: Some(format),
                ..self
            }
        }
    }

    fn ok(bytes: &[u8], spec: &ResizeSpec) -> Encoded {
        resize(bytes, spec, &Limits::default()).unwrap_or_else(|e| panic!("resize {spec:?}: {e}"))
    }

    fn dims(e: &Encoded) -> (u32, u32) {
        let p = probe(&e.bytes, &Limits::default()).unwrap_or_else(|err| panic!("probe: {err}"));
        assert_eq!(p.format, e.format);
        assert_eq!(sniff(&e.bytes), Some(e.format));
        (p.width, p.height)
    }

    #[test]
    fn fit_modes_give_exact_dimensions() {
        let src = testdata::encode(&testdata::gradient(400, 200), Format::Png);
        let cases = [
            (Some(100), Some(100), Fit::Contain, (100, 50)),
            (Some(100), Some(10), Fit::Contain, (20, 10)),
            (Some(100), Some(100), Fit::Cover, (100, 100)),
            (Some(30), Some(90), Fit::Cover, (30, 90)),
            (Some(100), Some(100), Fit::Fill, (100, 100)),
            (Some(30), Some(90), Fit::Stretch, (30, 90)),
            (Some(800), Some(800), Fit::Contain, (800, 400)),
            (Some(100), None, Fit::Contain, (100, 50)),
            (Some(100), None, Fit::Cover, (100, 50)),
            (None, Some(50), Fit::Stretch, (100, 50)),
            (Some(333), None, Fit::Fill, (333, 167)),
            (None, None, Fit::Contain, (400, 200)),
        ];
        for (w, h, fit, expected) in cases {
            let out = ok(&src, &spec(w, h, fit));
            assert_eq!(out.format, Format::Png);
            assert_eq!(dims(&out), expected, "{w:?}x{h:?} {fit:?}");
        }
    }

    #[test]
    fn plan_output_matches_and_checks_limits() {
        let limits = Limits::default();
        assert_eq!(
            plan_output(
                4000,
                3000,
                &spec(Some(300), Some(200), Fit::Contain),
                &limits
            )
            .ok(),
            Some((267, 200))
        );
        let err = |w, h, fit| plan_output(100, 50, &spec(w, h, fit), &limits).err();
        assert!(matches!(
            err(Some(0), None, Fit::Contain),
            Some(ImagingError::InvalidParams(_))
        ));
        assert!(matches!(
            err(None, Some(0), Fit::Fill),
            Some(ImagingError::InvalidParams(_))
        ));
        assert!(matches!(
            err(Some(8193), None, Fit::Fill),
            Some(ImagingError::TooLarge(_))
        ));
        assert!(err(Some(8192), Some(4000), Fit::Fill).is_none());
        assert!(matches!(
            err(Some(8192), Some(8192), Fit::Contain),
            Some(ImagingError::TooLarge(_))
        ));
        // One side given: the other follows the aspect ratio and must fit the limits too.
        assert!(matches!(
            plan_output(1, 100, &spec(Some(100), None, Fit::Contain), &limits).err(),
            Some(ImagingError::TooLarge(_))
        ));
        let q0 = ResizeSpec {
            quality: Some(0),
            ..spec(Some(10), None, Fit::Contain)
        };
        assert!(matches!(
            plan_output(100, 50, &q0, &limits).err(),
            Some(ImagingError::InvalidParams(_))
        ));
    }

    #[test]
    fn keeps_source_format_by_default_and_converts_on_request() {
        let img = testdata::gradient(120, 80);
        for (src, expected) in [
            (Format::Jpeg, Format::Jpeg),
            (Format::Png, Format::Png),
            (Format::Gif, Format::Gif),
            (Format::Webp, Format::Webp),
            (Format::Bmp, Format::Png),
            (Format::Tiff, Format::Png),
        ] {
            let bytes = testdata::encode(&img, src);
            let out = ok(&bytes, &spec(Some(60), None, Fit::Contain));
            assert_eq!(out.format, expected, "from {src}");
            assert_eq!(dims(&out), (60, 40), "from {src}");
        }
        let png = testdata::encode(&img, Format::Png);
        for target in Format::ALL {
            let out = ok(
                &png,
                &ResizeSpec {
                    format: Some(target),
                    ..spec(Some(30), Some(30), Fit::Cover)
                },
            );
            assert_eq!(out.format, target);
            assert_eq!(dims(&out), (30, 30), "to {target}");
        }
    }

    #[test]
    fn transparency_survives_png_and_webp_and_is_flattened_for_jpeg() {
        let png = testdata::encode(&testdata::translucent(64, 32), Format::Png);
        for target in [Format::Png, Format::Webp] {
            let out = ok(
                &png,
                &ResizeSpec {
                    format: Some(target),
                    ..spec(Some(32), None, Fit::Contain)
                },
            );
            let img = testdata::decode(&out.bytes);
            assert!(img.color().has_alpha(), "{target}");
            assert_eq!(img.to_rgba8().get_pixel(2, 2).0[3], 0, "{target}");
        }
        let out = ok(
            &png,
            &ResizeSpec {
                format: Some(Format::Jpeg),
                ..spec(Some(32), None, Fit::Contain)
            },
        );
        // The transparent half became white.
        let px = testdata::decode(&out.bytes).to_rgb8().get_pixel(2, 8).0;
        assert!(px.iter().all(|&c| c > 240), "{px:?}");
    }

    #[test]
    fn exif_orientation_6_rotates_clockwise() {
        // Stored 200x100, left half red, right half blue; orientation 6 = rotate 90° CW, so
        // the displayed image is 100x200 with red on top.
        for (stored, target) in [((200, 100), None), ((800, 400), Some(50))] {
            let img = testdata::halves(stored.0, stored.1);
            let jpeg = testdata::jpeg_with_orientation(&img, 6);
            let out = ok(&jpeg, &spec(target, None, Fit::Contain));
            let decoded = testdata::decode(&out.bytes).to_rgb8();
            let (w, h) = decoded.dimensions();
            assert_eq!(
                (w, h),
                (target.unwrap_or(100), target.map_or(200, |t| t * 2))
            );
            let top = decoded.get_pixel(w / 2, h / 10).0;
            let bottom = decoded.get_pixel(w / 2, h - h / 10).0;
            assert!(top[0] > 200 && top[2] < 60, "top should be red: {top:?}");
            assert!(
                bottom[2] > 200 && bottom[0] < 60,
                "bottom should be blue: {bottom:?}"
            );
        }
    }

    #[test]
    fn cover_crops_the_centre() {
        // Thirds: red | green | blue; a square cover crop keeps only green.
        let img =
            image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(300, 100, |x, _| {
                match x / 100 {
                    0 => image::Rgb([255, 0, 0]),
                    1 => image::Rgb([0, 255, 0]),
                    _ => image::Rgb([0, 0, 255]),
                }
            }));
        for format in [Format::Png, Format::Jpeg] {
            let bytes = testdata::encode(&img, format);
            let out = ok(&bytes, &spec(Some(50), Some(50), Fit::Cover));
            let decoded = testdata::decode(&out.bytes).to_rgb8();
            for (x, y) in [(1, 1), (48, 1), (25, 25), (1, 48), (48, 48)] {
                let px = decoded.get_pixel(x, y).0;
                assert!(
                    px[1] > 200 && px[0] < 60 && px[2] < 60,
                    "{format} ({x},{y}): {px:?}"
                );
            }
        }
    }

    #[test]
    fn quality_changes_jpeg_size() {
        let bytes = testdata::encode(&testdata::noise(256, 256), Format::Png);
        let at = |q| {
            ok(
                &bytes,
                &ResizeSpec {
                    format: Some(Format::Jpeg),
                    quality: Some(q),
                    ..spec(Some(200), None, Fit::Contain)
                },
            )
            .bytes
            .len()
        };
        let (low, high) = (at(10), at(95));
        assert!(low * 2 < high, "q10 {low} bytes vs q95 {high} bytes");
    }

    #[test]
    fn shrink_on_load_matches_the_full_decode() {
        let src = testdata::encode(&testdata::gradient(1600, 1200), Format::Jpeg);
        for (w, h, fit) in [
            (Some(200), None, Fit::Contain),
            (Some(150), Some(150), Fit::Cover),
            (Some(100), Some(300), Fit::Fill),
            (Some(900), None, Fit::Contain), // scale 1: same path in both
        ] {
            let s = spec(w, h, fit);
            let fast = ok(&src, &s);
            let reference = resize_reference(&src, &s, &Limits::default())
                .unwrap_or_else(|e| panic!("reference: {e}"));
            assert_eq!(dims(&fast), dims(&reference));
            let diff = testdata::mean_abs_diff(
                &testdata::decode(&fast.bytes),
                &testdata::decode(&reference.bytes),
            );
            assert!(diff < 6.0, "{s:?}: mean abs diff {diff}");
        }
    }

    #[test]
    fn jpeg_reduction_covers_the_output() {
        assert_eq!(jpeg_reduction((4000.0, 3000.0), (300, 200)), 8);
        assert_eq!(jpeg_reduction((4000.0, 3000.0), (600, 200)), 4);
        assert_eq!(jpeg_reduction((4000.0, 3000.0), (2000, 1500)), 2);
        assert_eq!(jpeg_reduction((4000.0, 3000.0), (2001, 10)), 1);
        assert_eq!(jpeg_reduction((100.0, 100.0), (100, 100)), 1);
    }

    #[test]
    fn animated_gif_resizes_its_first_frame() {
        let gif = testdata::gif_declaring(8, 6, 3);
        let out = ok(&gif, &spec(Some(4), None, Fit::Contain));
        assert_eq!(out.format, Format::Gif);
        assert_eq!(dims(&out), (4, 3));
    }

    #[test]
    fn bombs_are_rejected_before_decoding() {
        for bomb in [
            testdata::png_declaring(50_000, 50_000),
            testdata::gif_declaring(50_000, 50_000, 1),
            testdata::gif_declaring(10, 10, 5_000),
        ] {
            let started = Instant::now();
            let r = resize(
                &bomb,
                &spec(Some(100), None, Fit::Contain),
                &Limits::default(),
            );
            assert!(started.elapsed() < Duration::from_secs(1));
            assert!(matches!(r, Err(ImagingError::TooLarge(_))), "{r:?}");
        }
    }

    #[test]
    fn truncated_and_corrupt_images_are_corrupt() {
        let img = testdata::noise(200, 150);
        let s = spec(Some(50), None, Fit::Contain);
        for format in [Format::Jpeg, Format::Png, Format::Gif] {
            let bytes = testdata::encode(&img, format);
            for cut in [bytes.len() / 10, bytes.len() / 2, bytes.len() - 40] {
                let r = resize(&bytes[..cut], &s, &Limits::default());
                assert!(
                    matches!(r, Err(ImagingError::Corrupt(_))),
                    "{format} cut at {cut}/{}: {:?}",
                    bytes.len(),
                    r.map(|e| e.bytes.len())
                );
            }
            // Same length, scrambled body.
            let mut scrambled = bytes.clone();
            let header = scrambled.len() / 3;
            for (i, b) in scrambled[header..].iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(31) ^ 0xA5;
            }
            let r = resize(&scrambled, &s, &Limits::default());
            assert!(r.is_err(), "{format} scrambled decoded fine");
        }
        let r = resize(&[], &s, &Limits::default());
        assert!(matches!(r, Err(ImagingError::Unsupported)));
        let r = resize(b"GIF89a", &s, &Limits::default());
        assert!(matches!(r, Err(ImagingError::Corrupt(_))));
    }

    #[test]
    fn mutated_inputs_never_panic() {
        // A tiny deterministic fuzz pass: flip bytes of valid files (headers included) and
        // check every outcome is a value, never a panic. `cargo fuzz` targets go further.
        let img = testdata::gradient(40, 24);
        let s = spec(Some(8), Some(8), Fit::Cover);
        let mut state = 0x1234_5678_u32;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as usize
        };
        for format in [
            Format::Jpeg,
            Format::Png,
            Format::Gif,
            Format::Webp,
            Format::Bmp,
        ] {
            let original = testdata::encode(&img, format);
            for _ in 0..60 {
                let mut bytes = original.clone();
                for _ in 0..1 + next() % 4 {
                    let at = next() % bytes.len();
                    bytes[at] = next() as u8;
                }
                let _ = probe(&bytes, &Limits::default());
                let _ = resize(&bytes, &s, &Limits::default());
            }
        }
    }

    /// 300x100: red | green | blue thirds.
    fn thirds() -> DynamicImage {
        DynamicImage::ImageRgb8(image::RgbImage::from_fn(300, 100, |x, _| match x / 100 {
            0 => image::Rgb([255, 0, 0]),
            1 => image::Rgb([0, 255, 0]),
            _ => image::Rgb([0, 0, 255]),
        }))
    }

    fn rgb_at(e: &Encoded, x: u32, y: u32) -> [u8; 3] {
        testdata::decode(&e.bytes).to_rgb8().get_pixel(x, y).0
    }

    fn dominant(px: [u8; 3]) -> usize {
        (0..3).max_by_key(|&i| px[i]).unwrap_or(0)
    }

    #[test]
    fn gravity_and_focal_points_move_cover_crops() {
        let png = testdata::encode(&thirds(), Format::Png);
        for (gravity, channel) in [
            (Gravity::from_param("west"), 0),
            (Gravity::from_param("center"), 1),
            (Gravity::from_param("east"), 2),
            (Gravity::from_param("north_east"), 2),
            (Gravity::from_param("south_west"), 0),
            (Some(Gravity::Focal { x: 150, y: 500 }), 0),
            (Some(Gravity::Focal { x: 850, y: 500 }), 2),
        ] {
            let g = gravity.unwrap_or_default();
            let out = ok(
                &png,
                &ResizeSpec {
                    gravity: g,
                    ..spec(Some(40), Some(40), Fit::Cover)
                },
            );
            assert_eq!(dims(&out), (40, 40));
            for (x, y) in [(2, 2), (37, 37), (20, 20)] {
                assert_eq!(dominant(rgb_at(&out, x, y)), channel, "{g:?} at ({x},{y})");
            }
        }
    }

    #[test]
    fn gravity_is_in_displayed_space_for_every_orientation() {
        // Displayed image: 300x100 thirds (red | green | blue). Stored as the inverse of each
        // EXIF orientation, so every orientation displays the same picture.
        let displayed = thirds();
        for o in 1..=8u8 {
            let inverse = match o {
                6 => displayed.rotate270(),
                8 => displayed.rotate90(),
                5 => displayed.rotate90().fliph(),
                7 => displayed.rotate270().fliph(),
                2 => displayed.fliph(),
                3 => displayed.rotate180(),
                4 => displayed.flipv(),
                _ => displayed.clone(),
            };
            let jpeg = testdata::jpeg_with_orientation(&inverse, u16::from(o));
            for (g, channel) in [("west", 0), ("east", 2), ("center", 1)] {
                let out = ok(
                    &jpeg,
                    &ResizeSpec {
                        gravity: Gravity::from_param(g).unwrap_or_default(),
                        ..spec(Some(30), Some(30), Fit::Cover)
                    },
                );
                assert_eq!(dims(&out), (30, 30), "orientation {o}");
                assert_eq!(
                    dominant(rgb_at(&out, 15, 15)),
                    channel,
                    "orientation {o} {g}"
                );
            }
        }
    }

    #[test]
    fn smart_crop_keeps_an_off_centre_subject() {
        // A flat light background with a textured subject in the right fifth.
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_fn(500, 100, |x, y| {
            if (400..480).contains(&x) && (10..90).contains(&y) {
                image::Rgb([200, if (x + y) % 6 < 3 { 30 } else { 120 }, 40])
            } else {
                image::Rgb([230, 230, 230])
            }
        }));
        for format in [Format::Png, Format::Jpeg] {
            let bytes = testdata::encode(&img, format);
            let smart = ResizeSpec {
                gravity: Gravity::Smart,
                ..spec(Some(100), Some(100), Fit::Cover)
            };
            let out = ok(&bytes, &smart);
            assert_eq!(dims(&out), (100, 100));
            // The subject (x 400..480 of 500, the window is 100 wide) is in frame.
            let decoded = testdata::decode(&out.bytes).to_rgb8();
            let reddish = decoded
                .pixels()
                .filter(|p| p.0[0] > 150 && p.0[2] < 100)
                .count();
            assert!(reddish > 4000, "{format}: subject pixels {reddish}");
            // A centred crop would show only background.
            let centred = ok(&bytes, &spec(Some(100), Some(100), Fit::Cover));
            let px = rgb_at(&centred, 50, 50);
            assert!(px.iter().all(|&c| c > 200), "{px:?}");
            // Deterministic.
            assert_eq!(ok(&bytes, &smart).bytes, out.bytes);
        }
    }

    #[test]
    fn contain_pads_to_the_exact_box() {
        let png = testdata::encode(&thirds(), Format::Png);
        let padded = |format, bg| {
            ok(
                &png,
                &ResizeSpec {
                    pad: true,
                    background: bg,
                    format: Some(format),
                    ..spec(Some(60), Some(60), Fit::Contain)
                },
            )
        };
        let out = padded(Format::Png, Some([255, 0, 255, 255]));
        assert_eq!(dims(&out), (60, 60));
        // Image 60x20 centred: rows 20..40.
        assert_eq!(rgb_at(&out, 30, 5), [255, 0, 255]);
        assert_eq!(rgb_at(&out, 30, 55), [255, 0, 255]);
        assert_eq!(dominant(rgb_at(&out, 30, 30)), 1);
        // Default padding: transparent for PNG, white for JPEG.
        let out = padded(Format::Png, None);
        assert_eq!(
            testdata::decode(&out.bytes).to_rgba8().get_pixel(30, 5).0[3],
            0
        );
        let out = padded(Format::Jpeg, None);
        assert_eq!(dims(&out), (60, 60));
        assert!(rgb_at(&out, 30, 5).iter().all(|&c| c > 245));
        // Without pad, contain keeps the aspect.
        assert_eq!(
            dims(&ok(&png, &spec(Some(60), Some(60), Fit::Contain))),
            (60, 20)
        );
    }

    #[test]
    fn enlarge_0_never_exceeds_the_source() {
        let png = testdata::encode(&testdata::gradient(100, 50), Format::Png);
        let no = |w, h, fit| ResizeSpec {
            enlarge: false,
            ..spec(w, h, fit)
        };
        for (s, expected) in [
            (no(Some(400), None, Fit::Contain), (100, 50)),
            (no(None, Some(400), Fit::Contain), (100, 50)),
            (no(Some(50), None, Fit::Contain), (50, 25)),
            (no(Some(400), Some(400), Fit::Contain), (100, 50)),
            (no(Some(400), Some(400), Fit::Fill), (100, 50)),
            (no(Some(80), Some(400), Fit::Fill), (80, 50)),
            // Cover: the box's aspect at the source's scale.
            (no(Some(400), Some(400), Fit::Cover), (50, 50)),
            (no(Some(40), Some(40), Fit::Cover), (40, 40)),
            (spec(Some(400), None, Fit::Contain), (400, 200)),
        ] {
            assert_eq!(dims(&ok(&png, &s)), expected, "{s:?}");
        }
        // Padding still gives the exact box without enlarging the picture.
        let padded = ok(
            &png,
            &ResizeSpec {
                pad: true,
                ..no(Some(300), Some(300), Fit::Contain)
            },
        );
        assert_eq!(dims(&padded), (300, 300));
        let rgba = testdata::decode(&padded.bytes).to_rgba8();
        assert_eq!(
            rgba.get_pixel(150, 120).0[3],
            0,
            "padding above the 100x50 image"
        );
        assert_eq!(rgba.get_pixel(150, 150).0[3], 255);
    }

    #[test]
    fn effects_run_in_the_pipeline() {
        let png = testdata::encode(&testdata::halves(200, 100), Format::Png);
        let with = |fx: Effects| ResizeSpec {
            effects: fx,
            ..spec(Some(100), None, Fit::Contain)
        };
        let r90 = ok(
            &png,
            &with(Effects {
                rotate: 90,
                ..Effects::default()
            }),
        );
        // Rotation is applied after the resize: w/h describe the unrotated output.
        assert_eq!(dims(&r90), (50, 100));
        assert_eq!(dominant(rgb_at(&r90, 25, 10)), 0, "red on top after 90° CW");
        let flipped = ok(
            &png,
            &with(Effects {
                flip_h: true,
                ..Effects::default()
            }),
        );
        assert_eq!(dominant(rgb_at(&flipped, 5, 25)), 2, "blue on the left");
        let blurred = ok(
            &png,
            &with(Effects {
                blur_tenths: Some(40),
                ..Effects::default()
            }),
        );
        let edge = rgb_at(&blurred, 50, 25);
        assert!(
            edge[0] > 40 && edge[2] > 40,
            "edge mixes both halves: {edge:?}"
        );
        let plain = ok(&png, &with(Effects::default()));
        let sharp = ok(
            &png,
            &with(Effects {
                sharpen_tenths: Some(20),
                ..Effects::default()
            }),
        );
        assert_ne!(plain.bytes, sharp.bytes);
    }

    #[test]
    fn jpeg_flattens_onto_bg_and_can_be_progressive() {
        let png = testdata::encode(&testdata::translucent(64, 32), Format::Png);
        let out = ok(
            &png,
            &ResizeSpec {
                format: Some(Format::Jpeg),
                background: Some([0, 0, 255, 255]),
                ..spec(Some(32), None, Fit::Contain)
            },
        );
        let px = rgb_at(&out, 2, 8);
        assert!(px[2] > 230 && px[0] < 30 && px[1] < 30, "{px:?}");
        let is_progressive = |b: &[u8]| b.windows(2).any(|w| w == [0xFF, 0xC2]);
        let base = ok(
            &png,
            &spec(Some(32), None, Fit::Contain).with_format(Format::Jpeg),
        );
        assert!(!is_progressive(&base.bytes));
        let prog = ok(
            &png,
            &ResizeSpec {
                progressive: true,
                ..spec(Some(32), None, Fit::Contain).with_format(Format::Jpeg)
            },
        );
        assert!(is_progressive(&prog.bytes));
        assert_eq!(dims(&prog), (32, 16));
    }

    /// The first chunk after the RIFF/WEBP header (`VP8 ` lossy, `VP8L` lossless, `VP8X`).
    fn webp_chunk(b: &[u8]) -> &[u8] {
        &b[12..16]
    }

    #[test]
    fn webp_is_lossy_at_q_or_lossless_on_request() {
        let src = testdata::encode(&testdata::noise(200, 200), Format::Png);
        let webp = |q, lossless| {
            ok(
                &src,
                &ResizeSpec {
                    format: Some(Format::Webp),
                    quality: Some(q),
                    lossless,
                    ..spec(Some(160), None, Fit::Contain)
                },
            )
        };
        let (low, high, lossless) = (webp(10, false), webp(90, false), webp(80, true));
        assert_eq!(webp_chunk(&low.bytes), b"VP8 ");
        assert_eq!(webp_chunk(&lossless.bytes), b"VP8L");
        assert!(
            low.bytes.len() * 2 < high.bytes.len(),
            "q10 {} vs q90 {}",
            low.bytes.len(),
            high.bytes.len()
        );
        for e in [&low, &high, &lossless] {
            assert_eq!(dims(e), (160, 160));
        }
        // Lossy keeps the picture: a flat colour comes back close.
        let flat = testdata::encode(
            &DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
                64,
                64,
                image::Rgb([200, 40, 90]),
            )),
            Format::Png,
        );
        let out = ok(
            &flat,
            &ResizeSpec {
                format: Some(Format::Webp),
                lossless: false,
                ..spec(Some(32), None, Fit::Contain)
            },
        );
        let p = rgb_at(&out, 16, 16);
        for (got, want) in p.iter().zip([200u8, 40, 90]) {
            assert!(got.abs_diff(want) < 8, "{p:?}");
        }
        // Lossy WebP keeps alpha.
        let png = testdata::encode(&testdata::translucent(64, 32), Format::Png);
        let out = ok(
            &png,
            &ResizeSpec {
                format: Some(Format::Webp),
                lossless: false,
                ..spec(Some(32), None, Fit::Contain)
            },
        );
        let img = testdata::decode(&out.bytes).to_rgba8();
        assert!(img.get_pixel(2, 8).0[3] < 10 && img.get_pixel(30, 8).0[3] > 245);
    }

    #[test]
    fn avif_output_has_the_planned_size_and_quality_matters() {
        let src = testdata::encode(&testdata::noise(64, 48), Format::Png);
        let avif = |q| {
            ok(
                &src,
                &ResizeSpec {
                    format: Some(Format::Avif),
                    quality: Some(q),
                    ..spec(Some(32), None, Fit::Contain)
                },
            )
        };
        let (low, high) = (avif(20), avif(90));
        assert_eq!(low.format, Format::Avif);
        assert_eq!(dims(&low), (32, 24));
        assert_eq!(dims(&high), (32, 24));
        assert!(low.bytes.len() < high.bytes.len());
        // With alpha too (an auxiliary alpha image of the same extent).
        let png = testdata::encode(&testdata::translucent(40, 20), Format::Png);
        let out = ok(
            &png,
            &ResizeSpec {
                format: Some(Format::Avif),
                ..spec(Some(20), None, Fit::Contain)
            },
        );
        assert_eq!(dims(&out), (20, 10));
    }

    #[test]
    fn avif_input_decodes_through_libavif_or_is_unsupported() {
        let avif = testdata::encode(&testdata::gradient(16, 16), Format::Avif);
        assert_eq!(sniff(&avif), Some(Format::Avif));
        let r = resize(
            &avif,
            &spec(Some(8), None, Fit::Contain),
            &Limits::default(),
        );
        if !super::super::avif_decode::available() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "libavif.so.15 missing under CI=true (scripts/test.sh installs libavif15)"
            );
            assert!(matches!(r, Err(ImagingError::Unsupported)), "{r:?}");
            return;
        }
        let out = r.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((out.format, dims(&out)), (Format::Avif, (8, 8)));
        // An AVIF source into every output format, with its colours where they were.
        let src = testdata::encode(&thirds(), Format::Avif);
        for format in [
            Format::Jpeg,
            Format::Png,
            Format::Gif,
            Format::Webp,
            Format::Avif,
        ] {
            let out = ok(
                &src,
                &spec(Some(60), None, Fit::Contain).with_format(format),
            );
            assert_eq!((out.format, dims(&out)), (format, (60, 20)), "{format}");
            for (x, want) in [(10, 0usize), (30, 1), (50, 2)] {
                assert_eq!(dominant(rgb_at(&out, x, 10)), want, "{format} at x={x}");
            }
        }
        // The header's size is checked before decoding.
        let small = Limits {
            max_input_pixels: 100,
            ..Limits::default()
        };
        let r = resize(&src, &spec(Some(8), None, Fit::Contain), &small);
        assert!(matches!(r, Err(ImagingError::TooLarge(_))), "{r:?}");
        // Truncated: corrupt, never a panic.
        let r = resize(
            &src[..src.len() * 2 / 3],
            &spec(Some(8), None, Fit::Contain),
            &Limits::default(),
        );
        assert!(matches!(r, Err(ImagingError::Corrupt(_))), "{r:?}");
    }

    /// 160x80 displayed: quadrants red (top-left), green (top-right), blue (bottom-left),
    /// white (bottom-right): every one of the eight orientations tells apart.
    fn quadrants() -> DynamicImage {
        DynamicImage::ImageRgb8(image::RgbImage::from_fn(160, 80, |x, y| {
            match (x < 80, y < 40) {
                (true, true) => image::Rgb([255, 0, 0]),
                (false, true) => image::Rgb([0, 255, 0]),
                (true, false) => image::Rgb([0, 0, 255]),
                (false, false) => image::Rgb([255, 255, 255]),
            }
        }))
    }

    /// The stored image that EXIF orientation `o` displays as `displayed`.
    fn stored_for(displayed: &DynamicImage, o: u8) -> DynamicImage {
        match o {
            2 => displayed.fliph(),
            3 => displayed.rotate180(),
            4 => displayed.flipv(),
            5 => displayed.rotate90().fliph(),
            6 => displayed.rotate270(),
            7 => displayed.rotate270().fliph(),
            8 => displayed.rotate90(),
            _ => displayed.clone(),
        }
    }

    #[test]
    fn all_eight_orientations_on_every_output_format() {
        let displayed = quadrants();
        let outputs = [
            (Format::Jpeg, true),
            (Format::Png, true),
            (Format::Gif, true),
            (Format::Webp, true),
            (Format::Webp, false),
            (Format::Avif, false),
        ];
        for o in 1..=8u8 {
            let jpeg = testdata::jpeg_with_orientation(&stored_for(&displayed, o), u16::from(o));
            // The header already reports displayed dimensions.
            let p = probe(&jpeg, &Limits::default()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!((p.width, p.height), (160, 80), "orientation {o}");
            for (format, lossless) in outputs {
                for (target, shrink) in [(80, true), (160, false)] {
                    let s = ResizeSpec {
                        format: Some(format),
                        lossless,
                        ..spec(Some(target), None, Fit::Contain)
                    };
                    let out = if shrink {
                        ok(&jpeg, &s)
                    } else {
                        resize_reference(&jpeg, &s, &Limits::default())
                            .unwrap_or_else(|e| panic!("{e}"))
                    };
                    let what =
                        format!("orientation {o} -> {format} (lossless {lossless}) w={target}");
                    assert_eq!(dims(&out), (target, target / 2), "{what}");
                    if format == Format::Avif && !super::super::avif_decode::available() {
                        continue; // no AV1 decoder to look at the pixels (see Format::can_decode)
                    }
                    let (w, h) = (target, target / 2);
                    for ((x, y), want) in [
                        ((w / 4, h / 4), 0usize),
                        ((3 * w / 4, h / 4), 1),
                        ((w / 4, 3 * h / 4), 2),
                    ] {
                        assert_eq!(dominant(rgb_at(&out, x, y)), want, "{what} at ({x},{y})");
                    }
                    let white = rgb_at(&out, 3 * w / 4, 3 * h / 4);
                    assert!(white.iter().all(|&c| c > 200), "{what}: {white:?}");
                }
            }
        }
    }

    #[test]
    fn crops_map_to_stored_space_for_every_orientation() {
        let plan = Plan {
            width: 10,
            height: 10,
            crop: Some((10.0, 20.0, 30.0, 40.0)),
            canvas: None,
            smart: false,
        };
        // Stored 200x100 for the non-swapping ones; 100x200 displayed as 200x100 otherwise.
        for (o, expect) in [
            (Orientation::NoTransforms, (10.0, 20.0, 30.0, 40.0)),
            (Orientation::FlipHorizontal, (160.0, 20.0, 30.0, 40.0)),
            (Orientation::Rotate180, (160.0, 40.0, 30.0, 40.0)),
            (Orientation::FlipVertical, (10.0, 40.0, 30.0, 40.0)),
        ] {
            assert_eq!(plan.to_stored(o, 200.0, 100.0).crop, Some(expect), "{o:?}");
        }
        for (o, expect) in [
            (Orientation::Rotate90FlipH, (20.0, 10.0, 40.0, 30.0)),
            (Orientation::Rotate90, (20.0, 160.0, 40.0, 30.0)),
            (Orientation::Rotate270FlipH, (40.0, 160.0, 40.0, 30.0)),
            (Orientation::Rotate270, (40.0, 10.0, 40.0, 30.0)),
        ] {
            assert_eq!(plan.to_stored(o, 100.0, 200.0).crop, Some(expect), "{o:?}");
        }
    }

    #[test]
    fn png_declaring_more_than_it_holds_is_corrupt() {
        let r = resize(
            &testdata::png_declaring(100, 100),
            &spec(Some(10), None, Fit::Contain),
            &Limits::default(),
        );
        assert!(matches!(r, Err(ImagingError::Corrupt(_))), "{r:?}");
    }
}
