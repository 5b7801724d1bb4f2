//! Decode and resize of arbitrary bytes with small limits: [`probe`] and [`resize`] never
//! panic, never allocate past the limits (libFuzzer's `-rss_limit_mb` and `-malloc_limit_mb`
//! catch that), and agree: what the probe refuses, resize refuses too; what resize produces
//! fits the limits.
//!
//! Input layout: bytes 0..4 pick the spec (width, height, fit, format/quality), the rest is
//! the image. Their low bits also pick the `/v1` extras: animation kept or not, rotation,
//! smart gravity, padding, lossless WebP and enlargement.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sis::imaging::{Effects, Fit, Format, Gravity, Limits, ResizeSpec, probe, resize, sniff};

const LIMITS: Limits = Limits { max_side: 256, max_output_pixels: 65_536, max_input_pixels: 1 << 20 };

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (head, bytes) = data.split_at(4);
    let side = |b: u8| match b {
        0 => None,
        // Mostly small, sometimes at or past the limit.
        250..=255 => Some(LIMITS.max_side - 2 + u32::from(b - 250)),
        b => Some(u32::from(b)),
    };
    let spec = ResizeSpec {
        width: side(head[0]),
        height: side(head[1]),
        fit: [Fit::Contain, Fit::Cover, Fit::Fill, Fit::Stretch][usize::from(head[2] & 3)],
        format: [
            None,
            Some(Format::Jpeg),
            Some(Format::Png),
            Some(Format::Gif),
            Some(Format::Webp),
            Some(Format::Avif),
        ][usize::from(head[2] >> 2) % 6],
        quality: match head[3] {
            0 => None,
            q => Some(q % 101),
        },
        gravity: if head[2] & 0x80 != 0 { Gravity::Smart } else { Gravity::CENTER },
        pad: head[3] & 1 != 0,
        enlarge: head[3] & 4 == 0,
        lossless: head[3] & 2 == 0,
        still: head[0] & 1 == 0,
        to_srgb: true,
        effects: Effects { rotate: [0, 90, 180, 270][usize::from(head[1] & 3)], ..Effects::default() },
        ..ResizeSpec::default()
    };
    let probed = probe(bytes, &LIMITS);
    if let Ok(p) = &probed {
        assert_eq!(Some(p.format), sniff(bytes));
        assert!(u64::from(p.width) * u64::from(p.height) <= LIMITS.max_input_pixels);
    }
    match resize(bytes, &spec, &LIMITS) {
        Ok(out) => {
            assert!(probed.is_ok(), "resize accepted what probe refused: {probed:?}");
            assert!(!out.bytes.is_empty());
            assert_eq!(sniff(&out.bytes), Some(out.format));
            let unbounded = Limits { max_input_pixels: u64::MAX, ..LIMITS };
            let o = probe(&out.bytes, &unbounded).expect("resize output probes");
            assert!(o.width <= LIMITS.max_side && o.height <= LIMITS.max_side, "{o:?}");
            assert!(u64::from(o.width) * u64::from(o.height) <= LIMITS.max_output_pixels);
        }
        Err(_) => {}
    }
});
