//! Animated GIF and WebP through a resize: every frame is decoded (composited onto the full
//! canvas by the `image` crate's decoders), cropped and scaled with the same plan, given the same
//! effects, and re-encoded with its delay; the loop count is kept. GIF ↔ WebP conversions stay
//! animated. Other outputs (JPEG, PNG, AVIF) and `frames=1` get the first frame only.
//!
//! # Limits
//! Frames are counted from headers ([`super::MAX_FRAMES`], checked by `probe`). Before any frame
//! is decoded, the work is bounded from the header and the plan: `frames × canvas` must stay
//! within [`MAX_ANIMATION_PIXELS`] (decoding cost) and `frames × output` within
//! [`MAX_ANIMATION_OUTPUT_PIXELS`] (the output frames are held until encoded). Over either, the
//! request fails with [`ImagingError::TooLarge`] (HTTP 422) saying so — never a silent still.
//!
//! Frames stream through: one decoded canvas and one output frame exist at a time, each output
//! frame going straight into the GIF encoder or into a still WebP, so only compressed output
//! accumulates. Animated WebP is written by [`mux_webp`] (each frame a full-canvas ANMF without
//! blending), so every frame keeps its exact duration.

use std::io::Cursor;

use image::{AnimationDecoder, DynamicImage, RgbaImage, metadata::LoopCount};

use super::probe::Header;
use super::resize::{
    Layout, Pixels, encode_webp_lossy, finish, map_image_error, place_smart, plan, resize_pixels,
};
use super::{Format, ImagingError, Limits, ResizeSpec};

/// Most decoded source pixels over all frames (`frames × canvas`) of one animation.
pub const MAX_ANIMATION_PIXELS: u64 = 400_000_000;
/// Most output pixels over all frames (`frames × output size`) of one animation.
pub const MAX_ANIMATION_OUTPUT_PIXELS: u64 = 60_000_000;

/// Where finished frames go, one at a time: only compressed output accumulates.
enum Sink<'a> {
    Gif(image::codecs::gif::GifEncoder<&'a mut Vec<u8>>),
    /// Still WebPs of each frame with their delays, muxed at the end.
    Webp(Vec<(Vec<u8>, u32)>),
}

impl Sink<'_> {
    fn push(
        &mut self,
        image: RgbaImage,
        delay_ms: u32,
        spec: &ResizeSpec,
    ) -> Result<(), ImagingError> {
        match self {
            Sink::Gif(enc) => enc
                .encode_frame(image::Frame::from_parts(
                    image,
                    0,
                    0,
                    image::Delay::from_numer_denom_ms(delay_ms, 1),
                ))
                .map_err(|e| ImagingError::Internal(format!("encode gif frame: {e}"))),
            Sink::Webp(frames) => {
                frames.push((encode_webp_still(image, spec)?, delay_ms));
                Ok(())
            }
        }
    }
}

/// Resizes every frame of an animated GIF or WebP `bytes` (whose `header` counted more than one
/// frame) into an animated `out` (GIF or WebP).
///
/// # Errors
/// [`ImagingError::TooLarge`] over the animation limits (checked before decoding),
/// [`ImagingError::Corrupt`] for undecodable frames, [`ImagingError::Internal`] on encoder
/// failures.
pub(crate) fn resize_animation(
    bytes: &[u8],
    header: &Header,
    spec: &ResizeSpec,
    limits: &Limits,
    out: Format,
) -> Result<Vec<u8>, ImagingError> {
    let mut raw_plan = plan(header.width, header.height, spec, limits)?;
    let frames = header.frames as u64;
    let canvas = u64::from(header.width) * u64::from(header.height);
    if frames * canvas > MAX_ANIMATION_PIXELS {
        return Err(ImagingError::TooLarge(format!(
            "animation of {frames} frames of {}x{} is {} decoded pixels, over the limit of \
             {MAX_ANIMATION_PIXELS}; ask for frames=1 to get a still",
            header.width,
            header.height,
            frames * canvas
        )));
    }
    let (ow, oh) = raw_plan.canvas.unwrap_or((raw_plan.width, raw_plan.height));
    let out_pixels = frames * u64::from(ow) * u64::from(oh);
    if out_pixels > MAX_ANIMATION_OUTPUT_PIXELS {
        return Err(ImagingError::TooLarge(format!(
            "animation of {frames} frames at {ow}x{oh} is {out_pixels} output pixels, over the \
             limit of {MAX_ANIMATION_OUTPUT_PIXELS}; ask for a smaller size or frames=1"
        )));
    }
    let err = map_image_error(header.format);
    let (loop_count, decoded) = decode(bytes, header.format, limits)?;
    let loops = match loop_count {
        LoopCount::Infinite => 0,
        LoopCount::Finite(n) => u16::try_from(n.get()).unwrap_or(u16::MAX),
    };
    let mut count = 0usize;
    let mut size = (1, 1);
    let mut gif_out = Vec::new();
    // A block, so the GIF encoder's borrow of `gif_out` ends before it is returned.
    let webp_frames = {
        let mut sink = match out {
            Format::Gif => {
                let mut enc = image::codecs::gif::GifEncoder::new_with_speed(&mut gif_out, 10);
                let repeat = match loops {
                    0 => image::codecs::gif::Repeat::Infinite,
                    n => image::codecs::gif::Repeat::Finite(n),
                };
                enc.set_repeat(repeat)
                    .map_err(|e| ImagingError::Internal(format!("encode gif: {e}")))?;
                Sink::Gif(enc)
            }
            Format::Webp => Sink::Webp(Vec::with_capacity(header.frames)),
            other => return Err(ImagingError::Internal(format!("{other} cannot animate"))),
        };
        for (i, frame) in decoded.enumerate() {
            if i >= header.frames.max(1) * 2 {
                // The decoder found far more frames than the headers declared: refuse.
                return Err(ImagingError::Corrupt(format!(
                    "{}: more frames than its headers declare",
                    header.format
                )));
            }
            let frame = frame.map_err(&err)?;
            let (num, den) = frame.delay().numer_denom_ms();
            let delay_ms = num.checked_div(den).unwrap_or(0);
            let buffer = frame.into_buffer();
            if buffer.dimensions() != (header.width, header.height) {
                return Err(ImagingError::Corrupt(format!(
                    "{}: frame of {}x{} on a {}x{} canvas",
                    header.format,
                    buffer.width(),
                    buffer.height(),
                    header.width,
                    header.height
                )));
            }
            let pixels = Pixels {
                width: buffer.width(),
                height: buffer.height(),
                data: buffer.into_raw(),
                layout: Layout::Rgba,
            };
            if i == 0 && raw_plan.smart {
                // The first frame decides where a smart crop goes, for all of them.
                raw_plan = place_smart(&pixels, raw_plan, header.width);
            }
            let resized = resize_pixels(pixels, &raw_plan, header.width)?;
            let img = RgbaImage::from_raw(resized.width, resized.height, resized.data)
                .ok_or_else(|| ImagingError::Internal("frame buffer size mismatch".into()))?;
            let img = finish(DynamicImage::ImageRgba8(img), &raw_plan, spec, out).into_rgba8();
            size = img.dimensions();
            sink.push(img, delay_ms, spec)?;
            count += 1;
        }
        if count == 0 {
            return Err(ImagingError::Corrupt(format!(
                "{}: no decodable frame",
                header.format
            )));
        }
        match sink {
            Sink::Gif(enc) => {
                drop(enc); // writes the trailer
                None
            }
            Sink::Webp(frames) => Some(frames),
        }
    };
    match webp_frames {
        None => Ok(gif_out),
        Some(frames) => mux_webp(size.0, size.1, loops, &frames),
    }
}

type FrameIter<'a> = Box<dyn Iterator<Item = image::ImageResult<image::Frame>> + 'a>;

fn decode<'a>(
    bytes: &'a [u8],
    format: Format,
    limits: &Limits,
) -> Result<(LoopCount, FrameIter<'a>), ImagingError> {
    let err = map_image_error(format);
    let cursor = Cursor::new(bytes);
    match format {
        Format::Gif => {
            let mut d = image::codecs::gif::GifDecoder::new(cursor).map_err(&err)?;
            image::ImageDecoder::set_limits(&mut d, super::resize::decoder_limits(limits))
                .map_err(&err)?;
            let lc = d.loop_count();
            Ok((lc, Box::new(d.into_frames())))
        }
        Format::Webp => {
            let mut d = image::codecs::webp::WebPDecoder::new(cursor).map_err(&err)?;
            image::ImageDecoder::set_limits(&mut d, super::resize::decoder_limits(limits))
                .map_err(&err)?;
            let lc = d.loop_count();
            Ok((lc, Box::new(d.into_frames())))
        }
        other => Err(ImagingError::Internal(format!("{other} has no frames"))),
    }
}

/// One frame as a still WebP: lossless through the `image` crate, or lossy through libwebp.
fn encode_webp_still(image: RgbaImage, spec: &ResizeSpec) -> Result<Vec<u8>, ImagingError> {
    if spec.lossless {
        let mut out = Vec::new();
        image::codecs::webp::WebPEncoder::new_lossless(&mut out)
            .encode(
                image.as_raw(),
                image.width(),
                image.height(),
                image::ExtendedColorType::Rgba8,
            )
            .map_err(|e| ImagingError::Internal(format!("encode webp frame: {e}")))?;
        Ok(out)
    } else {
        let quality = spec.quality.unwrap_or(super::DEFAULT_QUALITY);
        encode_webp_lossy(&DynamicImage::ImageRgba8(image), quality)
    }
}

fn le24(v: u32) -> [u8; 3] {
    let b = v.to_le_bytes();
    [b[0], b[1], b[2]]
}

fn chunk(out: &mut Vec<u8>, fourcc: &[u8; 4], payload: &[u8]) -> Result<(), ImagingError> {
    let len = u32::try_from(payload.len())
        .map_err(|_| ImagingError::TooLarge("WebP chunk over 4 GiB".into()))?;
    out.extend_from_slice(fourcc);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
    if payload.len() % 2 == 1 {
        out.push(0);
    }
    Ok(())
}

/// Builds an animated WebP (VP8X + ANIM + one full-canvas ANMF per frame) from still WebPs of
/// `width` × `height`, each with its duration in ms (WebP stores 24 bits of it).
pub(crate) fn mux_webp(
    width: u32,
    height: u32,
    loops: u16,
    frames: &[(Vec<u8>, u32)],
) -> Result<Vec<u8>, ImagingError> {
    let bad = || ImagingError::Internal("encoded WebP frame is not a RIFF WebP".into());
    let mut body = Vec::new();
    let mut vp8x = vec![0x02 | 0x10, 0, 0, 0]; // animation, alpha
    vp8x.extend_from_slice(&le24(width - 1));
    vp8x.extend_from_slice(&le24(height - 1));
    chunk(&mut body, b"VP8X", &vp8x)?;
    let mut anim = vec![0u8; 4]; // background colour: transparent
    anim.extend_from_slice(&loops.to_le_bytes());
    chunk(&mut body, b"ANIM", &anim)?;
    for (still, delay) in frames {
        if still.len() < 12 || &still[..4] != b"RIFF" || &still[8..12] != b"WEBP" {
            return Err(bad());
        }
        let mut anmf = Vec::with_capacity(still.len() + 16);
        anmf.extend_from_slice(&le24(0)); // x / 2
        anmf.extend_from_slice(&le24(0)); // y / 2
        anmf.extend_from_slice(&le24(width - 1));
        anmf.extend_from_slice(&le24(height - 1));
        anmf.extend_from_slice(&le24((*delay).min(0xFF_FFFF)));
        anmf.push(0x02); // do not blend, no disposal: every frame is the whole canvas
        // The still's chunks, minus its own VP8X header: ALPH + VP8, or VP8L.
        let mut pos = 12;
        while pos + 8 <= still.len() {
            let fourcc = &still[pos..pos + 4];
            let len = u32::from_le_bytes([
                still[pos + 4],
                still[pos + 5],
                still[pos + 6],
                still[pos + 7],
            ]) as usize;
            let end = (pos + 8).checked_add(len).ok_or_else(bad)?;
            let padded = end + (len & 1);
            if end > still.len() {
                return Err(bad());
            }
            if fourcc != b"VP8X" {
                anmf.extend_from_slice(&still[pos..end.min(still.len())]);
                if len & 1 == 1 {
                    anmf.push(0);
                }
            }
            pos = padded;
        }
        chunk(&mut body, b"ANMF", &anmf)?;
    }
    let size = u32::try_from(body.len() + 4)
        .map_err(|_| ImagingError::TooLarge("WebP over 4 GiB".into()))?;
    let mut out = Vec::with_capacity(body.len() + 12);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(b"WEBP");
    out.extend_from_slice(&body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use image::{AnimationDecoder, Delay, Frame, Rgba};

    use super::*;
    use crate::imaging::{Fit, probe, resize};

    const COLOURS: [[u8; 4]; 4] = [
        [255, 0, 0, 255],
        [0, 255, 0, 255],
        [0, 0, 255, 255],
        [255, 255, 0, 255],
    ];

    /// `n` solid frames cycling through [`COLOURS`], frame `i` lasting `(i + 1) * 100` ms.
    fn frames(w: u32, h: u32, n: usize) -> Vec<Frame> {
        (0..n)
            .map(|i| {
                let img = RgbaImage::from_pixel(w, h, Rgba(COLOURS[i % COLOURS.len()]));
                Frame::from_parts(
                    img,
                    0,
                    0,
                    Delay::from_numer_denom_ms((i as u32 + 1) * 100, 1),
                )
            })
            .collect()
    }

    pub(crate) fn animated_gif(w: u32, h: u32, n: usize, loops: u16) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut enc = image::codecs::gif::GifEncoder::new(&mut out);
            enc.set_repeat(image::codecs::gif::Repeat::Finite(loops))
                .unwrap_or_else(|e| panic!("{e}"));
            enc.encode_frames(frames(w, h, n))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        out
    }

    pub(crate) fn animated_webp(w: u32, h: u32, n: usize, loops: u16) -> Vec<u8> {
        let stills: Vec<(Vec<u8>, u32)> = frames(w, h, n)
            .into_iter()
            .enumerate()
            .map(|(i, f)| {
                let mut out = Vec::new();
                image::codecs::webp::WebPEncoder::new_lossless(&mut out)
                    .encode(f.buffer().as_raw(), w, h, image::ExtendedColorType::Rgba8)
                    .unwrap_or_else(|e| panic!("{e}"));
                (out, (i as u32 + 1) * 100)
            })
            .collect();
        mux_webp(w, h, loops, &stills).unwrap_or_else(|e| panic!("{e}"))
    }

    struct Decoded {
        frames: Vec<(RgbaImage, u32)>,
        /// 0 = forever.
        loops: u32,
    }

    fn decode_all(bytes: &[u8]) -> Decoded {
        let (loops, iter): (LoopCount, Vec<Frame>) = match crate::imaging::sniff(bytes) {
            Some(Format::Gif) => {
                let d = image::codecs::gif::GifDecoder::new(Cursor::new(bytes))
                    .unwrap_or_else(|e| panic!("{e}"));
                (
                    d.loop_count(),
                    d.into_frames()
                        .collect_frames()
                        .unwrap_or_else(|e| panic!("{e}")),
                )
            }
            Some(Format::Webp) => {
                let d = image::codecs::webp::WebPDecoder::new(Cursor::new(bytes))
                    .unwrap_or_else(|e| panic!("{e}"));
                (
                    d.loop_count(),
                    d.into_frames()
                        .collect_frames()
                        .unwrap_or_else(|e| panic!("{e}")),
                )
            }
            other => panic!("not an animation: {other:?}"),
        };
        Decoded {
            frames: iter
                .into_iter()
                .map(|f| {
                    let (n, d) = f.delay().numer_denom_ms();
                    (f.into_buffer(), n / d.max(1))
                })
                .collect(),
            loops: match loops {
                LoopCount::Infinite => 0,
                LoopCount::Finite(n) => n.get(),
            },
        }
    }

    fn spec(w: u32, format: Format) -> ResizeSpec {
        ResizeSpec {
            width: Some(w),
            format: Some(format),
            still: false,
            lossless: true,
            ..ResizeSpec::default()
        }
    }

    fn close(a: [u8; 4], b: [u8; 4]) -> bool {
        a.iter().zip(b).all(|(x, y)| x.abs_diff(y) < 24)
    }

    #[test]
    fn webp_mux_is_read_back_by_the_image_crate() {
        let webp = animated_webp(12, 8, 3, 2);
        let p = probe(&webp, &Limits::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((p.format, p.width, p.height), (Format::Webp, 12, 8));
        let d = decode_all(&webp);
        assert_eq!(d.frames.len(), 3);
        assert_eq!(d.loops, 2);
        for (i, (img, delay)) in d.frames.iter().enumerate() {
            assert_eq!(img.dimensions(), (12, 8));
            assert_eq!(img.get_pixel(6, 4).0, COLOURS[i]);
            assert_eq!(*delay, (i as u32 + 1) * 100);
        }
    }

    #[test]
    fn every_frame_is_resized_with_its_delay_and_the_loop_count() {
        let sources = [
            ("gif", animated_gif(80, 40, 5, 3)),
            ("webp", animated_webp(80, 40, 5, 3)),
        ];
        for (name, src) in &sources {
            for out in [Format::Gif, Format::Webp] {
                for lossless in [true, false] {
                    let s = ResizeSpec {
                        lossless,
                        ..spec(20, out)
                    };
                    let enc = resize(src, &s, &Limits::default())
                        .unwrap_or_else(|e| panic!("{name} -> {out}: {e}"));
                    assert_eq!(enc.format, out);
                    let d = decode_all(&enc.bytes);
                    assert_eq!(d.frames.len(), 5, "{name} -> {out}");
                    assert_eq!(d.loops, 3, "{name} -> {out}");
                    for (i, (img, delay)) in d.frames.iter().enumerate() {
                        assert_eq!(img.dimensions(), (20, 10), "{name} -> {out} frame {i}");
                        let px = img.get_pixel(10, 5).0;
                        assert!(
                            close(px, COLOURS[i % 4]),
                            "{name} -> {out} frame {i}: {px:?}"
                        );
                        assert_eq!(*delay, (i as u32 + 1) * 100, "{name} -> {out} frame {i}");
                    }
                }
            }
        }
    }

    #[test]
    fn stills_on_request_and_for_still_formats() {
        let gif = animated_gif(40, 20, 4, 0);
        let still = resize(
            &gif,
            &ResizeSpec {
                still: true,
                ..spec(20, Format::Gif)
            },
            &Limits::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(decode_all(&still.bytes).frames.len(), 1);
        let png = resize(&gif, &spec(20, Format::Png), &Limits::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(png.format, Format::Png);
        let img = image::load_from_memory(&png.bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(img.to_rgba8().get_pixel(10, 5).0, COLOURS[0]);
    }

    #[test]
    fn cover_crops_and_effects_apply_to_every_frame() {
        let gif = animated_gif(60, 30, 3, 0);
        let s = ResizeSpec {
            height: Some(20),
            fit: Fit::Cover,
            effects: crate::imaging::Effects {
                rotate: 90,
                ..Default::default()
            },
            ..spec(20, Format::Gif)
        };
        let out = resize(&gif, &s, &Limits::default()).unwrap_or_else(|e| panic!("{e}"));
        let d = decode_all(&out.bytes);
        assert_eq!(d.frames.len(), 3);
        assert!(d.frames.iter().all(|(f, _)| f.dimensions() == (20, 20)));
    }

    #[test]
    fn animations_over_the_limits_are_refused_not_flattened() {
        // 600 frames of 1000x1000 = 600 MP decoded: over the limit, refused from headers.
        let bomb = crate::imaging::testdata::gif_declaring(1000, 1000, 600);
        let r = resize(&bomb, &spec(100, Format::Gif), &Limits::default());
        assert!(
            matches!(&r, Err(ImagingError::TooLarge(m)) if m.contains("frames=1")),
            "{:?}",
            r.map(|e| e.bytes.len())
        );
        // The same file as a still is fine to plan (it then fails on its fake frame data).
        let r = resize(
            &bomb,
            &ResizeSpec {
                still: true,
                ..spec(100, Format::Gif)
            },
            &Limits::default(),
        );
        assert!(!matches!(r, Err(ImagingError::TooLarge(_))));
        // Output side: 200 frames at 800x400 = 64 MP of output.
        let gif = crate::imaging::testdata::gif_declaring(800, 400, 200);
        let r = resize(&gif, &spec(800, Format::Gif), &Limits::default());
        assert!(
            matches!(&r, Err(ImagingError::TooLarge(m)) if m.contains("output")),
            "{:?}",
            r.map(|e| e.bytes.len())
        );
    }
}
