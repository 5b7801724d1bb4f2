//! The `/v1` image pipeline against the real `sis` binary: strict parameters, canonical
//! variants (shared ETags), geometry, effects and formats. Every output is decoded and checked
//! by size and by pixel colours at known points, never by its length.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use reqwest::StatusCode;

use common::Server;

struct Got {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    fn image(&self) -> DynamicImage {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        image::load_from_memory(&self.body).unwrap()
    }
    fn format(&self) -> ImageFormat {
        image::guess_format(&self.body).unwrap()
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

async fn get(srv: &Server, path: &str, headers: &[(&str, &str)]) -> Got {
    let mut req = reqwest::Client::new().get(srv.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    Got {
        status: resp.status(),
        headers: resp.headers().clone(),
        body: resp.bytes().await.unwrap().to_vec(),
    }
}

async fn upload(srv: &Server, name: &str, bytes: Vec<u8>) -> String {
    let resp = reqwest::Client::new()
        .post(srv.url(&format!("/v1/images?name={name}")))
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let v: serde_json::Value = resp.json().await.unwrap();
    v["images"][0]["md5"].as_str().unwrap().to_owned()
}

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// 300x100: red | green | blue thirds.
fn thirds() -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(300, 100, |x, _| match x / 100 {
        0 => Rgb([255, 0, 0]),
        1 => Rgb([0, 255, 0]),
        _ => Rgb([0, 0, 255]),
    }))
}

fn px(img: &DynamicImage, x: u32, y: u32) -> [u8; 4] {
    img.to_rgba8().get_pixel(x, y).0
}

/// Index of the strongest of R, G, B.
fn dominant(p: [u8; 4]) -> usize {
    (0..3).max_by_key(|&i| p[i]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_parameters_name_the_culprit() {
    let srv = Server::start(&[]);
    let m = upload(&srv, "t.png", encode(&thirds(), ImageFormat::Png)).await;
    for (query, param) in [
        ("w=100&width=3", "width"),
        ("w=100&w=200", "w"),
        ("w=abc", "w"),
        ("gravity=middle", "gravity"),
        ("fp=2,0", "fp"),
        ("bg=red", "bg"),
        ("rotate=45", "rotate"),
        ("blur=1000", "blur"),
        ("dpr=9", "dpr"),
        ("frames=3", "frames"),
        ("format=tiff", "format"),
    ] {
        let r = get(&srv, &format!("/v1/images/{m}?{query}"), &[]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}");
        let v = r.json();
        assert_eq!(v["code"], "invalid-params", "{query}");
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains(&format!("{param}:")), "{query}: {msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equivalent_requests_share_one_etag_and_cache_entry() {
    let srv = Server::start(&[]);
    let m = upload(&srv, "t.jpg", encode(&thirds(), ImageFormat::Jpeg)).await;
    let a = get(&srv, &format!("/v1/images/{m}?w=100"), &[]).await;
    let b = get(&srv, &format!("/v1/images/{m}?format=jpeg&w=100&q=80"), &[]).await;
    let c = get(&srv, &format!("/v1/images/{m}?w=50&dpr=2&fit=cover"), &[]).await;
    assert_eq!(a.image().width(), 100);
    assert_eq!(a.header("etag"), b.header("etag"));
    assert_eq!(a.header("etag"), c.header("etag"));
    assert_eq!(a.body, b.body);
    // A conditional request with the other spelling's ETag is answered 304.
    let r = get(
        &srv,
        &format!("/v1/images/{m}?w=100&format=jpg"),
        &[("if-none-match", a.header("etag"))],
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    // Different outputs, different ETags.
    let d = get(&srv, &format!("/v1/images/{m}?w=100&q=30"), &[]).await;
    assert_ne!(a.header("etag"), d.header("etag"));
    let fill = get(&srv, &format!("/v1/images/{m}?w=60&h=60&fit=fill"), &[]).await;
    let stretch = get(&srv, &format!("/v1/images/{m}?w=60&h=60&fit=stretch"), &[]).await;
    assert_eq!(fill.header("etag"), stretch.header("etag"));
    assert_eq!((fill.image().width(), fill.image().height()), (60, 60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geometry_gravity_pad_enlarge_and_dpr() {
    let srv = Server::start(&[]);
    let m = upload(&srv, "t.png", encode(&thirds(), ImageFormat::Png)).await;
    for (g, channel) in [("west", 0), ("center", 1), ("east", 2), ("south_east", 2)] {
        let img = get(
            &srv,
            &format!("/v1/images/{m}?w=50&h=50&fit=cover&gravity={g}"),
            &[],
        )
        .await
        .image();
        assert_eq!((img.width(), img.height()), (50, 50));
        for (x, y) in [(2, 2), (25, 25), (47, 47)] {
            assert_eq!(dominant(px(&img, x, y)), channel, "{g} ({x},{y})");
        }
    }
    let img = get(
        &srv,
        &format!("/v1/images/{m}?w=50&h=50&fit=cover&fp=0.9,0.5"),
        &[],
    )
    .await
    .image();
    assert_eq!(dominant(px(&img, 25, 25)), 2);
    // Contain + pad: exactly the box, the picture centred on bg.
    let img = get(
        &srv,
        &format!("/v1/images/{m}?w=90&h=90&fit=contain&pad=1&bg=ffff00"),
        &[],
    )
    .await
    .image();
    assert_eq!((img.width(), img.height()), (90, 90));
    assert_eq!(&px(&img, 45, 3)[..3], &[255, 255, 0]);
    assert_eq!(&px(&img, 45, 86)[..3], &[255, 255, 0]);
    assert_eq!(dominant(px(&img, 45, 45)), 1);
    // enlarge=0 keeps the source size, the default (1) enlarges.
    let img = get(&srv, &format!("/v1/images/{m}?w=600&enlarge=0"), &[])
        .await
        .image();
    assert_eq!((img.width(), img.height()), (300, 100));
    let img = get(&srv, &format!("/v1/images/{m}?w=600"), &[])
        .await
        .image();
    assert_eq!((img.width(), img.height()), (600, 200));
    // dpr multiplies the requested size.
    let img = get(&srv, &format!("/v1/images/{m}?w=60&h=20&dpr=2.5"), &[])
        .await
        .image();
    assert_eq!((img.width(), img.height()), (150, 50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smart_crop_keeps_the_subject() {
    let srv = Server::start(&[]);
    // A textured red subject at the far left of a plain 600x150 picture.
    let img = DynamicImage::ImageRgb8(RgbImage::from_fn(600, 150, |x, y| {
        if (20..120).contains(&x) && (25..125).contains(&y) {
            Rgb([210, if (x / 3 + y / 3) % 2 == 0 { 20 } else { 110 }, 30])
        } else {
            Rgb([225, 230, 235])
        }
    }));
    let m = upload(&srv, "s.jpg", encode(&img, ImageFormat::Jpeg)).await;
    let out = get(
        &srv,
        &format!("/v1/images/{m}?w=150&h=150&fit=cover&gravity=smart"),
        &[],
    )
    .await
    .image();
    assert_eq!((out.width(), out.height()), (150, 150));
    let subject = out
        .to_rgb8()
        .pixels()
        .filter(|p| p.0[0] > 150 && p.0[2] < 100)
        .count();
    assert!(
        subject > 8000,
        "subject pixels in the smart crop: {subject}"
    );
    let centred = get(&srv, &format!("/v1/images/{m}?w=150&h=150&fit=cover"), &[])
        .await
        .image();
    let subject = centred
        .to_rgb8()
        .pixels()
        .filter(|p| p.0[0] > 150 && p.0[2] < 100)
        .count();
    assert_eq!(subject, 0, "a centred crop misses it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn effects_rotate_flip_blur_sharpen_and_bg() {
    let srv = Server::start(&[]);
    let m = upload(&srv, "t.png", encode(&thirds(), ImageFormat::Png)).await;
    let img = get(&srv, &format!("/v1/images/{m}?w=150&rotate=90"), &[])
        .await
        .image();
    assert_eq!((img.width(), img.height()), (50, 150));
    assert_eq!(dominant(px(&img, 25, 5)), 0, "red on top after 90° CW");
    assert_eq!(dominant(px(&img, 25, 145)), 2);
    let img = get(&srv, &format!("/v1/images/{m}?w=150&rotate=270"), &[])
        .await
        .image();
    assert_eq!(dominant(px(&img, 25, 5)), 2);
    let img = get(&srv, &format!("/v1/images/{m}?w=150&flip=h"), &[])
        .await
        .image();
    assert_eq!(dominant(px(&img, 5, 25)), 2);
    let img = get(
        &srv,
        &format!("/v1/images/{m}?w=150&flip=v&rotate=180"),
        &[],
    )
    .await
    .image();
    assert_eq!(
        dominant(px(&img, 5, 25)),
        2,
        "180° then a vertical flip mirrors left-right"
    );
    let sharp = get(&srv, &format!("/v1/images/{m}?w=150"), &[])
        .await
        .image();
    let blurred = get(&srv, &format!("/v1/images/{m}?w=150&blur=5"), &[])
        .await
        .image();
    let (a, b) = (px(&sharp, 50, 25), px(&blurred, 50, 25));
    assert!(a[0] > 200 || a[1] > 200, "{a:?}");
    assert!(
        b[0] > 60 && b[1] > 60,
        "blur mixes red and green at the border: {b:?}"
    );
    let sharpened = get(&srv, &format!("/v1/images/{m}?w=150&sharpen=2"), &[]).await;
    assert_eq!(sharpened.image().width(), 150);
    // Alpha flattened onto bg for JPEG.
    let translucent = DynamicImage::ImageRgba8(RgbaImage::from_fn(40, 40, |x, _| {
        if x < 20 {
            Rgba([255, 0, 0, 0])
        } else {
            Rgba([0, 255, 0, 255])
        }
    }));
    let t = upload(&srv, "a.png", encode(&translucent, ImageFormat::Png)).await;
    let r = get(&srv, &format!("/v1/images/{t}?format=jpeg&bg=0000ff"), &[]).await;
    assert_eq!(r.format(), ImageFormat::Jpeg);
    let img = r.image();
    let p = px(&img, 5, 20);
    assert!(p[2] > 230 && p[0] < 30, "transparent became the bg: {p:?}");
    let p = px(
        &get(&srv, &format!("/v1/images/{t}?format=jpeg"), &[])
            .await
            .image(),
        5,
        20,
    );
    assert!(
        p.iter().take(3).all(|&c| c > 240),
        "default bg is white: {p:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progressive_jpeg_on_request() {
    let srv = Server::start(&[]);
    let m = upload(&srv, "t.png", encode(&thirds(), ImageFormat::Png)).await;
    let sof2 = |b: &[u8]| b.windows(2).any(|w| w == [0xFF, 0xC2]);
    let base = get(&srv, &format!("/v1/images/{m}?w=100&format=jpeg"), &[]).await;
    let prog = get(
        &srv,
        &format!("/v1/images/{m}?w=100&format=jpeg&progressive=1"),
        &[],
    )
    .await;
    assert!(!sof2(&base.body));
    assert!(sof2(&prog.body));
    assert_ne!(base.header("etag"), prog.header("etag"));
    let img = prog.image();
    assert_eq!((img.width(), img.height()), (100, 33));
    assert_eq!(dominant(px(&img, 50, 16)), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formats_lossy_webp_avif_and_negotiation() {
    let srv = Server::start(&[]);
    let m = upload(&srv, "t.png", encode(&thirds(), ImageFormat::Png)).await;
    // Lossy WebP at q (a `VP8 ` chunk) next to lossless (`VP8L`).
    let lossy = get(&srv, &format!("/v1/images/{m}?w=150&format=webp&q=60"), &[]).await;
    let lossless = get(
        &srv,
        &format!("/v1/images/{m}?w=150&format=webp&lossless=1"),
        &[],
    )
    .await;
    assert_eq!(&lossy.body[12..16], b"VP8 ");
    assert_eq!(&lossless.body[12..16], b"VP8L");
    assert_eq!(lossy.header("content-type"), "image/webp");
    for r in [&lossy, &lossless] {
        let img = r.image();
        assert_eq!((img.width(), img.height()), (150, 50));
        assert_eq!(dominant(px(&img, 25, 25)), 0);
        assert_eq!(dominant(px(&img, 75, 25)), 1);
        assert_eq!(dominant(px(&img, 125, 25)), 2);
    }
    // AVIF output: the header's size (sis reads AVIF headers; pixels need an AV1 decoder).
    let avif = get(&srv, &format!("/v1/images/{m}?w=90&format=avif&q=50"), &[]).await;
    assert_eq!(avif.status, StatusCode::OK);
    assert_eq!(avif.header("content-type"), "image/avif");
    let p = sis::imaging::probe(&avif.body, &sis::imaging::Limits::default()).unwrap();
    assert_eq!(
        (p.format, p.width, p.height),
        (sis::imaging::Format::Avif, 90, 30)
    );
    // format=auto: AVIF > WebP > the source's format, with Vary: Accept.
    let path = format!("/v1/images/{m}?w=90&format=auto");
    for (accept, mime) in [
        ("image/avif,image/webp,*/*", "image/avif"),
        ("image/webp,*/*;q=0.8", "image/webp"),
        ("image/avif;q=0,image/webp", "image/webp"),
        ("*/*", "image/png"),
    ] {
        let r = get(&srv, &path, &[("accept", accept)]).await;
        assert_eq!(r.status, StatusCode::OK, "{accept}");
        assert_eq!(r.header("content-type"), mime, "{accept}");
        assert_eq!(r.header("vary"), "Accept", "{accept}");
    }
    // Same bytes, same ETag: auto resolved to WebP = format=webp.
    let auto = get(&srv, &path, &[("accept", "image/webp")]).await;
    let fixed = get(&srv, &format!("/v1/images/{m}?w=90&format=webp"), &[]).await;
    assert_eq!(auto.header("etag"), fixed.header("etag"));
}

/// Whether `libavif.so.15` (Debian's `libavif15`, which sis loads to decode AVIF) is
/// installed; missing under `CI=true` is a failure (scripts/test.sh installs it).
fn libavif_installed() -> bool {
    let found = std::process::Command::new("ldconfig")
        .arg("-p")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("libavif.so.15"));
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "libavif.so.15 missing under CI=true (scripts/test.sh installs libavif15)"
        );
        eprintln!("libavif.so.15 not installed: AVIF decoding not checked");
    }
    found
}

async fn post_avif(srv: &Server, avif: Vec<u8>) -> reqwest::Response {
    reqwest::Client::new()
        .post(srv.url("/v1/images?name=a.avif"))
        .body(avif)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avif_uploads_decode_through_libavif_else_415() {
    let mut avif = Vec::new();
    thirds()
        .write_to(&mut Cursor::new(&mut avif), ImageFormat::Avif)
        .unwrap();
    // Without the library (here: switched off) AVIF originals are refused as before.
    let off = Server::start_env(
        tempfile::tempdir().unwrap(),
        &[],
        &[("SIS_AVIF_DECODE", "off")],
    );
    let resp = post_avif(&off, avif.clone()).await;
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "unsupported-media-type");
    drop(off);
    if !libavif_installed() {
        return;
    }
    let srv = Server::start(&[]);
    let resp = post_avif(&srv, avif.clone()).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let v: serde_json::Value = resp.json().await.unwrap();
    let md5 = v["images"][0]["md5"].as_str().unwrap().to_owned();
    // A JPEG variant of the AVIF source, with its size and colours.
    let got = get(&srv, &format!("/v1/images/{md5}?w=150&format=jpeg"), &[]).await;
    assert_eq!(got.header("content-type"), "image/jpeg");
    let img = got.image();
    assert_eq!(got.format(), ImageFormat::Jpeg);
    assert_eq!((img.width(), img.height()), (150, 50));
    for (x, want) in [(25, 0), (75, 1), (125, 2)] {
        assert_eq!(dominant(px(&img, x, 25)), want, "x={x}");
    }
    // And into PNG, with a crop.
    let got = get(
        &srv,
        &format!("/v1/images/{md5}?w=60&h=60&fit=cover&format=png"),
        &[],
    )
    .await;
    let img = got.image();
    assert_eq!(
        (got.format(), img.width(), img.height()),
        (ImageFormat::Png, 60, 60)
    );
    assert_eq!(
        dominant(px(&img, 30, 30)),
        1,
        "cover keeps the centre (green)"
    );
    // A truncated AVIF is refused at upload, not stored.
    let resp = post_avif(&srv, avif[..avif.len() * 2 / 3].to_vec()).await;
    assert!(resp.status().is_client_error(), "{}", resp.status());
}

fn animated_gif(w: u32, h: u32, n: u32) -> Vec<u8> {
    let colours = [[255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 255]];
    let mut out = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new(&mut out);
        enc.set_repeat(image::codecs::gif::Repeat::Finite(4))
            .unwrap();
        enc.encode_frames((0..n).map(|i| {
            image::Frame::from_parts(
                RgbaImage::from_pixel(w, h, Rgba(colours[i as usize % 3])),
                0,
                0,
                image::Delay::from_numer_denom_ms(50 + 10 * i, 1),
            )
        }))
        .unwrap();
    }
    out
}

/// Frames (buffer, delay ms) and loop count (0 = forever) of an animated GIF or WebP.
fn frames_of(bytes: &[u8]) -> (Vec<(RgbaImage, u32)>, u32) {
    use image::AnimationDecoder;
    use image::metadata::LoopCount;
    let (loops, frames) = match image::guess_format(bytes).unwrap() {
        ImageFormat::Gif => {
            let d = image::codecs::gif::GifDecoder::new(Cursor::new(bytes)).unwrap();
            (d.loop_count(), d.into_frames().collect_frames().unwrap())
        }
        ImageFormat::WebP => {
            let d = image::codecs::webp::WebPDecoder::new(Cursor::new(bytes)).unwrap();
            (d.loop_count(), d.into_frames().collect_frames().unwrap())
        }
        other => panic!("{other:?}"),
    };
    let loops = match loops {
        LoopCount::Infinite => 0,
        LoopCount::Finite(n) => n.get(),
    };
    let frames = frames
        .into_iter()
        .map(|f| {
            let (n, d) = f.delay().numer_denom_ms();
            (f.into_buffer(), n / d.max(1))
        })
        .collect();
    (frames, loops)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn animations_stay_animated_through_resize_and_conversion() {
    let srv = Server::start(&[]);
    let m = upload(&srv, "a.gif", animated_gif(120, 60, 5)).await;
    for (query, format) in [
        ("w=40", ImageFormat::Gif),
        ("w=40&format=webp", ImageFormat::WebP),
        ("w=40&format=webp&lossless=1", ImageFormat::WebP),
    ] {
        let r = get(&srv, &format!("/v1/images/{m}?{query}"), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{query}");
        assert_eq!(r.format(), format, "{query}");
        let (frames, loops) = frames_of(&r.body);
        assert_eq!(frames.len(), 5, "{query}");
        assert_eq!(loops, 4, "{query}");
        for (i, (img, delay)) in frames.iter().enumerate() {
            assert_eq!(img.dimensions(), (40, 20), "{query} frame {i}");
            let p = img.get_pixel(20, 10).0;
            assert!(p[i % 3] > 200, "{query} frame {i}: {p:?}");
            assert_eq!(*delay, 50 + 10 * i as u32, "{query} frame {i}");
        }
        // ...and back: the WebP re-read as a source keeps its frames too.
        if format == ImageFormat::WebP {
            let w = upload(&srv, "a.webp", r.body.clone()).await;
            let back = get(&srv, &format!("/v1/images/{w}?w=20&format=gif"), &[]).await;
            let (frames, loops) = frames_of(&back.body);
            assert_eq!((frames.len(), loops), (5, 4));
            assert_eq!(frames[0].0.dimensions(), (20, 10));
        }
    }
    // frames=1: a still, with its own ETag.
    let still = get(&srv, &format!("/v1/images/{m}?w=40&frames=1"), &[]).await;
    let anim = get(&srv, &format!("/v1/images/{m}?w=40"), &[]).await;
    assert_eq!(frames_of(&still.body).0.len(), 1);
    assert_ne!(still.header("etag"), anim.header("etag"));
    // A still format gets the first frame.
    let png = get(&srv, &format!("/v1/images/{m}?w=40&format=png"), &[])
        .await
        .image();
    assert!(px(&png, 20, 10)[0] > 200);
    // The legacy API keeps its behaviour: the first frame only.
    let legacy = reqwest::get(srv.url(&format!("/stretch_simple_down?md5={m}&w=40&h=20")))
        .await
        .unwrap();
    assert_eq!(legacy.status(), StatusCode::OK);
    let body = legacy.bytes().await.unwrap();
    assert_eq!(frames_of(&body).0.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn animations_over_the_limit_are_a_clear_422() {
    let srv = Server::start(&[]);
    // 40 frames of 100x100 (cheap to decode), but at 1300x1300 = 67.6 MP of output.
    let m = upload(&srv, "big.gif", animated_gif(100, 100, 40)).await;
    let r = get(&srv, &format!("/v1/images/{m}?w=1300"), &[]).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let v = r.json();
    assert_eq!(v["code"], "unprocessable-image");
    assert!(v["error"].as_str().unwrap().contains("frames=1"), "{v}");
    let r = get(
        &srv,
        &format!("/v1/images/{m}?w=1300&frames=1&format=jpeg"),
        &[],
    )
    .await;
    assert_eq!(r.image().width(), 1300);
    let r = get(&srv, &format!("/v1/images/{m}?w=50"), &[]).await;
    assert_eq!(frames_of(&r.body).0.len(), 40);
}

/// A JPEG of `img` with a hand-built EXIF APP1 saying `orientation`.
fn jpeg_with_orientation(img: &DynamicImage, orientation: u16) -> Vec<u8> {
    let jpeg = encode(img, ImageFormat::Jpeg);
    let mut tiff = b"II*\0".to_vec();
    tiff.extend_from_slice(&8u32.to_le_bytes());
    tiff.extend_from_slice(&1u16.to_le_bytes());
    tiff.extend_from_slice(&0x0112u16.to_le_bytes());
    tiff.extend_from_slice(&3u16.to_le_bytes());
    tiff.extend_from_slice(&1u32.to_le_bytes());
    tiff.extend_from_slice(&orientation.to_le_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&u16::try_from(app1.len() + 2).unwrap().to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_exif_orientation_displays_upright_in_every_format() {
    let srv = Server::start(&[]);
    // Displayed 120x60: red | green on top, blue | white below.
    let displayed =
        DynamicImage::ImageRgb8(RgbImage::from_fn(120, 60, |x, y| match (x < 60, y < 30) {
            (true, true) => Rgb([255, 0, 0]),
            (false, true) => Rgb([0, 255, 0]),
            (true, false) => Rgb([0, 0, 255]),
            (false, false) => Rgb([255, 255, 255]),
        }));
    for o in 1..=8u16 {
        let stored = match o {
            2 => displayed.fliph(),
            3 => displayed.rotate180(),
            4 => displayed.flipv(),
            5 => displayed.rotate90().fliph(),
            6 => displayed.rotate270(),
            7 => displayed.rotate270().fliph(),
            8 => displayed.rotate90(),
            _ => displayed.clone(),
        };
        let m = upload(
            &srv,
            &format!("o{o}.jpg"),
            jpeg_with_orientation(&stored, o),
        )
        .await;
        for format in ["jpeg", "png", "gif", "webp", "avif"] {
            let r = get(&srv, &format!("/v1/images/{m}?w=60&format={format}"), &[]).await;
            assert_eq!(r.status, StatusCode::OK, "{o} {format}");
            if format == "avif" {
                let p = sis::imaging::probe(&r.body, &sis::imaging::Limits::default()).unwrap();
                assert_eq!((p.width, p.height), (60, 30), "{o} avif");
                continue;
            }
            let img = r.image();
            assert_eq!((img.width(), img.height()), (60, 30), "{o} {format}");
            assert_eq!(dominant(px(&img, 15, 7)), 0, "{o} {format} top-left");
            assert_eq!(dominant(px(&img, 45, 7)), 1, "{o} {format} top-right");
            assert_eq!(dominant(px(&img, 15, 22)), 2, "{o} {format} bottom-left");
            assert!(
                px(&img, 45, 22)[..3].iter().all(|&c| c > 200),
                "{o} {format}"
            );
        }
    }
}

/// sRGB / Display P3 transfer function (they share it), decoding to linear.
fn to_linear(v: u8) -> f64 {
    let v = f64::from(v) / 255.0;
    if v <= 0.04045 {
        v / 12.92
    } else {
        ((v + 0.055) / 1.055).powf(2.4)
    }
}

fn mul(m: [[f64; 3]; 3], v: [f64; 3]) -> [f64; 3] {
    [0, 1, 2].map(|r| m[r][0] * v[0] + m[r][1] * v[1] + m[r][2] * v[2])
}

const P3_TO_XYZ: [[f64; 3]; 3] = [
    [0.486_570_9, 0.265_667_7, 0.198_217_3],
    [0.228_974_6, 0.691_738_5, 0.079_286_9],
    [0.0, 0.045_113_4, 1.043_944_4],
];
const SRGB_TO_XYZ: [[f64; 3]; 3] = [
    [0.412_456_4, 0.357_576_1, 0.180_437_5],
    [0.212_672_9, 0.715_152_2, 0.072_175_0],
    [0.019_333_9, 0.119_192_0, 0.950_304_1],
];

/// CIE L*a*b* (D65) of XYZ.
fn lab(xyz: [f64; 3]) -> [f64; 3] {
    let f = |t: f64| {
        if t > 0.008_856 {
            t.cbrt()
        } else {
            7.787 * t + 16.0 / 116.0
        }
    };
    let (x, y, z) = (f(xyz[0] / 0.950_47), f(xyz[1]), f(xyz[2] / 1.088_83));
    [116.0 * y - 16.0, 500.0 * (x - y), 200.0 * (y - z)]
}

fn delta_e(a: [f64; 3], b: [f64; 3]) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn display_p3_sources_keep_their_colour_in_srgb_variants() {
    let srv = Server::start(&[]);
    let patches: [[u8; 3]; 4] = [
        [120, 200, 100],
        [200, 70, 60],
        [70, 90, 190],
        [128, 128, 128],
    ];
    // 4 vertical bands, 400x100, tagged Display P3.
    let img = RgbImage::from_fn(400, 100, |x, _| Rgb(patches[(x / 100) as usize]));
    let icc = moxcms::ColorProfile::new_display_p3().encode().unwrap();
    let tagged = |format: ImageFormat| {
        use image::ImageEncoder;
        let mut out = Vec::new();
        match format {
            ImageFormat::Png => {
                let mut e = image::codecs::png::PngEncoder::new(&mut out);
                e.set_icc_profile(icc.clone()).unwrap();
                e.write_image(img.as_raw(), 400, 100, image::ExtendedColorType::Rgb8)
                    .unwrap();
            }
            _ => {
                let mut e = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 98);
                e.set_icc_profile(icc.clone()).unwrap();
                e.write_image(img.as_raw(), 400, 100, image::ExtendedColorType::Rgb8)
                    .unwrap();
            }
        }
        out
    };
    for (source, name) in [(ImageFormat::Png, "p3.png"), (ImageFormat::Jpeg, "p3.jpg")] {
        let m = upload(&srv, name, tagged(source)).await;
        for query in [
            "w=200&format=png",
            "w=40&format=png",
            "w=200&format=webp&lossless=1",
            "w=200&format=jpeg&q=95",
        ] {
            let out = get(&srv, &format!("/v1/images/{m}?{query}"), &[])
                .await
                .image();
            let w = out.width();
            for (i, p3) in patches.iter().enumerate() {
                let expected = lab(mul(P3_TO_XYZ, p3.map(to_linear)));
                let got = px(&out, w * (2 * i as u32 + 1) / 8, out.height() / 2);
                let got_lab = lab(mul(SRGB_TO_XYZ, [got[0], got[1], got[2]].map(to_linear)));
                let de = delta_e(expected, got_lab);
                assert!(
                    de < 3.0,
                    "{name} {query} patch {p3:?}: got {got:?}, ΔE {de:.2}"
                );
            }
        }
        // Without conversion the green patch would be far off: the test can tell.
        let naive = lab(mul(SRGB_TO_XYZ, patches[0].map(to_linear)));
        let real = lab(mul(P3_TO_XYZ, patches[0].map(to_linear)));
        assert!(delta_e(naive, real) > 8.0);
    }
}

/// The value of a metric line starting with `prefix` (0 when absent).
async fn metric(srv: &Server, prefix: &str) -> f64 {
    let text = reqwest::get(srv.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_has_a_blurhash_and_dominant_colour_computed_once() {
    let srv = Server::start(&[]);
    // 70% teal on the left, orange on the right.
    let img = DynamicImage::ImageRgb8(RgbImage::from_fn(200, 100, |x, _| {
        if x < 140 {
            Rgb([20, 160, 150])
        } else {
            Rgb([250, 140, 20])
        }
    }));
    let m = upload(&srv, "p.jpg", encode(&img, ImageFormat::Jpeg)).await;
    let misses = r#"sis_cache_misses_total{kind="variant"}"#;
    let before = metric(&srv, misses).await;
    let v = get(&srv, &format!("/v1/images/{m}/meta"), &[]).await.json();
    let hash = v["blurhash"].as_str().unwrap().to_owned();
    assert_eq!(hash.len(), 6 + 2 * (4 * 3 - 1), "{v}");
    let dominant = v["dominant_color"].as_str().unwrap();
    let rgb: Vec<u8> = (0..3)
        .map(|i| u8::from_str_radix(&dominant[1 + 2 * i..3 + 2 * i], 16).unwrap())
        .collect();
    for (got, want) in rgb.iter().zip([20u8, 160, 150]) {
        assert!(got.abs_diff(want) < 12, "{dominant}");
    }
    // The BlurHash decodes to teal on the left and orange on the right.
    let back = blurhash::decode(&hash, 20, 10, 1.0).unwrap();
    let at = |x: usize| &back[(5 * 20 + x) * 4..(5 * 20 + x) * 4 + 3];
    assert!(at(2)[1] > at(2)[0] + 60, "left: {:?}", at(2));
    assert!(at(18)[0] > at(18)[2] + 60, "right: {:?}", at(18));
    let after_first = metric(&srv, misses).await;
    assert_eq!(
        after_first,
        before + 1.0,
        "the placeholder was computed once"
    );
    // Asked again: the same answer from the cache, nothing recomputed.
    let again = get(&srv, &format!("/v1/images/{m}/meta"), &[]).await.json();
    assert_eq!(again["blurhash"], v["blurhash"]);
    assert_eq!(again["dominant_color"], v["dominant_color"]);
    assert_eq!(metric(&srv, misses).await, after_first);
}
