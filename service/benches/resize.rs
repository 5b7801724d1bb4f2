//! Cold-resize micro-benchmark for `sis::imaging` (a plain harness: no criterion, quick to build).
//!
//! Run: `cargo bench -p sis --bench resize` (optionally `-- --quick`).
//!
//! Every case is timed three ways in the same run, on images generated here (photo-like:
//! smooth gradients plus sensor-like noise, encoded as JPEG q85 / PNG):
//! - `sis`: [`resize`], the production path (JPEG shrink-on-load, SIMD resize, fast encoder);
//! - `full`: [`resize_reference`], the same pipeline with a full-size JPEG decode;
//! - `naive`: the `image` crate alone: `load_from_memory` + `DynamicImage::resize` (Lanczos3 via
//!   `imageops`) + its own JPEG encoder, i.e. what a straightforward implementation does.
//!
//! It prints the median time per call of each and the ratios full/sis and naive/sis (higher
//! means `sis` is faster). No assertion on timings: this is information, not a test.
//!
//! A second table times the `/v1` pipeline's heavier features on the production path only:
//! animated GIF resize (100 frames of 480x270 → 240 px, into GIF and into WebP), thumbnail
//! encodes (JPEG, lossy and lossless WebP, AVIF), smart versus centred cover crops, blur and
//! sharpen, and the BlurHash/dominant-colour placeholder.

use std::hint::black_box;
use std::io::Cursor;
use std::time::{Duration, Instant};

use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use sis::imaging::{
    Effects, Fit, Format, Gravity, Limits, ResizeSpec, placeholder, resize, resize_reference,
};

/// A deterministic "photo": gradients, a few soft shapes and noise, so that JPEG entropy and
/// decode cost resemble a real picture more than a flat gradient would.
fn photo(w: u32, h: u32) -> DynamicImage {
    let mut state = 0x9E37_79B9_u32;
    DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state & 0x1F) as i32 - 16;
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let ring = (((fx - 0.5).powi(2) + (fy - 0.4).powi(2)).sqrt() * 40.0).sin() * 40.0;
        let c = |v: f32| (v as i32 + n).clamp(0, 255) as u8;
        Rgb([
            c(60.0 + 150.0 * fx + ring),
            c(90.0 + 120.0 * fy - ring),
            c(140.0 + 60.0 * (fx * fy * 9.0).sin()),
        ])
    }))
}

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    if let Err(e) = img.write_to(Cursor::new(&mut out), format) {
        panic!("encode corpus: {e}");
    }
    out
}

fn jpeg_q85(img: &DynamicImage) -> Vec<u8> {
    let mut out = Vec::new();
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85);
    if let Err(e) = img.write_with_encoder(encoder) {
        panic!("encode corpus: {e}");
    }
    out
}

/// `n` frames of `w`×`h`, each a shifted "photo", 40 ms apart, looping forever.
fn animated_gif(w: u32, h: u32, n: u32) -> Vec<u8> {
    let base = photo(w * 2, h).to_rgba8();
    let mut out = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new_with_speed(&mut out, 30);
        if let Err(e) = enc.set_repeat(image::codecs::gif::Repeat::Infinite) {
            panic!("encode corpus: {e}");
        }
        let frames = (0..n).map(|i| {
            let dx = i * w / n;
            let img = image::imageops::crop_imm(&base, dx, 0, w, h).to_image();
            image::Frame::from_parts(img, 0, 0, image::Delay::from_numer_denom_ms(40, 1))
        });
        if let Err(e) = enc.encode_frames(frames) {
            panic!("encode corpus: {e}");
        }
    }
    out
}

/// The `/v1` feature table (see the module docs).
fn pipeline_table(budget: Duration, min_iters: usize, jpeg2: &[u8], jpeg12: &[u8]) {
    let limits = Limits::default();
    println!("building animated corpus (100 frames of 480x270)...");
    let gif = animated_gif(480, 270, 100);
    let thumb = |format, lossless| ResizeSpec {
        width: Some(300),
        height: Some(200),
        fit: Fit::Cover,
        format: Some(format),
        quality: Some(75),
        lossless,
        to_srgb: true,
        ..ResizeSpec::default()
    };
    let animated = |format| ResizeSpec {
        width: Some(240),
        format: Some(format),
        still: false,
        lossless: false,
        ..ResizeSpec::default()
    };
    let cover = |gravity| ResizeSpec {
        width: Some(300),
        height: Some(300),
        fit: Fit::Cover,
        gravity,
        format: Some(Format::Jpeg),
        ..ResizeSpec::default()
    };
    let effects = |fx| ResizeSpec {
        width: Some(1000),
        format: Some(Format::Jpeg),
        effects: fx,
        ..ResizeSpec::default()
    };
    let cases: Vec<(&str, &[u8], ResizeSpec)> = vec![
        ("gif 100x480x270 -> 240 gif", &gif, animated(Format::Gif)),
        ("gif 100x480x270 -> 240 webp", &gif, animated(Format::Webp)),
        (
            "jpeg 2MP -> 300x200 jpeg",
            jpeg2,
            thumb(Format::Jpeg, false),
        ),
        (
            "jpeg 2MP -> 300x200 webp q75",
            jpeg2,
            thumb(Format::Webp, false),
        ),
        (
            "jpeg 2MP -> 300x200 webp lossless",
            jpeg2,
            thumb(Format::Webp, true),
        ),
        (
            "jpeg 2MP -> 300x200 avif q75",
            jpeg2,
            thumb(Format::Avif, false),
        ),
        (
            "jpeg 12MP -> 300x300 cover centre",
            jpeg12,
            cover(Gravity::CENTER),
        ),
        (
            "jpeg 12MP -> 300x300 cover smart",
            jpeg12,
            cover(Gravity::Smart),
        ),
        (
            "jpeg 2MP -> 1000 blur 5",
            jpeg2,
            effects(Effects {
                blur_tenths: Some(50),
                ..Effects::default()
            }),
        ),
        (
            "jpeg 2MP -> 1000 sharpen 1",
            jpeg2,
            effects(Effects {
                sharpen_tenths: Some(10),
                ..Effects::default()
            }),
        ),
    ];
    println!("{:<36} {:>10} {:>10}", "v1 pipeline case", "ms", "out KB");
    for (name, bytes, spec) in cases {
        let mut size = 0;
        let t = time(budget, min_iters, || match resize(bytes, &spec, &limits) {
            Ok(e) => {
                size = e.bytes.len();
                black_box(e);
            }
            Err(e) => panic!("{name}: {e}"),
        });
        println!(
            "{:<36} {:>10.2} {:>10.1}",
            name,
            ms(t),
            size as f64 / 1024.0
        );
    }
    let t = time(budget, min_iters, || match placeholder(jpeg12, &limits) {
        Ok(p) => {
            black_box(p);
        }
        Err(e) => panic!("placeholder: {e}"),
    });
    println!(
        "{:<36} {:>10.2} {:>10}",
        "jpeg 12MP placeholder",
        ms(t),
        "-"
    );
}

/// The straightforward implementation: everything through the `image` crate.
fn naive(bytes: &[u8], w: u32, h: u32, fit: Fit, out: ImageFormat) -> Vec<u8> {
    let img = match image::load_from_memory(bytes) {
        Ok(img) => img,
        Err(e) => panic!("naive decode: {e}"),
    };
    let filter = image::imageops::FilterType::Lanczos3;
    let resized = match fit {
        Fit::Contain => img.resize(w, h, filter),
        Fit::Cover => img.resize_to_fill(w, h, filter),
        Fit::Fill | Fit::Stretch => img.resize_exact(w, h, filter),
    };
    let mut buf = Vec::new();
    let result = if out == ImageFormat::Jpeg {
        resized.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(
            &mut buf, 80,
        ))
    } else {
        resized.write_to(Cursor::new(&mut buf), out)
    };
    if let Err(e) = result {
        panic!("naive encode: {e}");
    }
    buf
}

/// Median wall time of `f` over at least `min_iters` calls and about `budget` of time.
fn time(budget: Duration, min_iters: usize, mut f: impl FnMut()) -> Duration {
    f(); // warm-up (allocator, CPU feature detection, caches)
    let mut samples = Vec::new();
    let started = Instant::now();
    while samples.len() < min_iters || (started.elapsed() < budget && samples.len() < 200) {
        let t = Instant::now();
        f();
        samples.push(t.elapsed());
    }
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    // `cargo bench` passes `--bench`; `--quick` shortens every case.
    let quick = std::env::args().any(|a| a == "--quick");
    let budget = Duration::from_millis(if quick { 300 } else { 2000 });
    let min_iters = if quick { 3 } else { 5 };
    let limits = Limits::default();

    println!("building corpus...");
    let p2 = photo(1632, 1224); // 2 MP
    let p12 = photo(4000, 3000); // 12 MP
    let p03 = photo(640, 480); // 0.3 MP
    let jpeg2 = jpeg_q85(&p2);
    let jpeg12 = jpeg_q85(&p12);
    let jpeg03 = jpeg_q85(&p03);
    let png2 = encode(&p2, ImageFormat::Png);

    type Case<'a> = (&'static str, &'a [u8], u32, u32, Fit, ImageFormat);
    let cases: Vec<Case> = vec![
        (
            "jpeg 2MP -> 300x200 contain",
            &jpeg2,
            300,
            200,
            Fit::Contain,
            ImageFormat::Jpeg,
        ),
        (
            "jpeg 12MP -> 300x200 contain",
            &jpeg12,
            300,
            200,
            Fit::Contain,
            ImageFormat::Jpeg,
        ),
        (
            "jpeg 12MP -> 300x300 cover",
            &jpeg12,
            300,
            300,
            Fit::Cover,
            ImageFormat::Jpeg,
        ),
        (
            "jpeg 12MP -> 1200x900 contain",
            &jpeg12,
            1200,
            900,
            Fit::Contain,
            ImageFormat::Jpeg,
        ),
        (
            "jpeg 0.3MP -> 300x200 contain",
            &jpeg03,
            300,
            200,
            Fit::Contain,
            ImageFormat::Jpeg,
        ),
        (
            "jpeg 2MP -> 1000x750 contain",
            &jpeg2,
            1000,
            750,
            Fit::Contain,
            ImageFormat::Jpeg,
        ),
        (
            "png 2MP -> 300x200 contain",
            &png2,
            300,
            200,
            Fit::Contain,
            ImageFormat::Png,
        ),
    ];

    println!(
        "{:<32} {:>10} {:>10} {:>10} {:>10} {:>11}",
        "case", "sis ms", "full ms", "naive ms", "full/sis", "naive/sis"
    );
    for (name, bytes, w, h, fit, out) in cases {
        let spec = ResizeSpec {
            width: Some(w),
            height: Some(h),
            fit,
            format: Some(if out == ImageFormat::Jpeg {
                Format::Jpeg
            } else {
                Format::Png
            }),
            quality: Some(80),
            ..ResizeSpec::default()
        };
        let run = |f: fn(&[u8], &ResizeSpec, &Limits) -> _| {
            time(budget, min_iters, || match f(bytes, &spec, &limits) {
                Ok(e) => {
                    black_box(e);
                }
                Err(e) => panic!("{name}: {e}"),
            })
        };
        let ours = run(resize);
        let full = run(resize_reference);
        let plain = time(budget, min_iters, || {
            black_box(naive(bytes, w, h, fit, out));
        });
        println!(
            "{:<32} {:>10.2} {:>10.2} {:>10.2} {:>9.2}x {:>10.2}x",
            name,
            ms(ours),
            ms(full),
            ms(plain),
            full.as_secs_f64() / ours.as_secs_f64(),
            plain.as_secs_f64() / ours.as_secs_f64(),
        );
    }
    pipeline_table(budget, min_iters, &jpeg2, &jpeg12);
}
