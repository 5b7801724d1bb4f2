//! Resize parameters from query strings, checked against the configured limits.
//!
//! Legacy `/stretch_*`: `w` and `h`, both required, each in `[5, max_side]`, their
//! product at most `max_output_pixels`; anything else in the query is ignored (sis 1.x).
//!
//! `/v1` is strict: every key must be one of [`V1_KEYS`], given once, with a well-formed value
//! in its bounds; otherwise 400 `invalid-params` with a message starting with the parameter's
//! name. [`V1Params::resolve`] then *normalises* the request against the source's format and
//! the client's `Accept`, dropping what cannot change the output (e.g. `fit` with one side,
//! `q` for PNG, `gravity` without a cover crop) and spelling out defaults (the output format,
//! `q=80`), so requests that produce the same bytes share one cache entry and one ETag.
//! Pure functions; the imaging module validates again defensively.

use crate::error::Error;
use crate::imaging::{
    Effects, Fit, Format, Gravity, Limits, MAX_BLUR, MAX_SHARPEN, ResizeSpec, Rgba8, parse_color,
};

use super::query_get;

/// Smallest accepted side.
pub const MIN_SIDE: u32 = 5;
/// Largest accepted device pixel ratio (`dpr=`).
pub const MAX_DPR: f64 = 4.0;
/// Every `/v1` query parameter; anything else is refused.
pub const V1_KEYS: [&str; 18] = [
    "w",
    "h",
    "fit",
    "format",
    "q",
    "gravity",
    "fp",
    "pad",
    "bg",
    "enlarge",
    "dpr",
    "rotate",
    "flip",
    "blur",
    "sharpen",
    "progressive",
    "lossless",
    "frames",
];

/// The output format a `/v1` request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatChoice {
    /// Keep the original's format (the default).
    Keep,
    /// `format=auto`: the best format `Accept` allows (see [`Accepts`]).
    Auto,
    Fixed(Format),
}

/// Which optional output formats a client's `Accept` header allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accepts {
    pub avif: bool,
    pub webp: bool,
}

impl Accepts {
    /// Reads `Accept`: a media type counts when listed explicitly with a non-zero `q`
    /// (wildcards do not count: `*/*` says nothing about AVIF support).
    pub fn from_header(accept: Option<&str>) -> Accepts {
        let mut out = Accepts::default();
        let Some(accept) = accept else {
            return out;
        };
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let zero = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f64>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            if zero {
                continue;
            }
            match media.as_str() {
                "image/avif" => out.avif = true,
                "image/webp" => out.webp = true,
                _ => {}
            }
        }
        out
    }
}

/// Parsed `/v1` transform parameters (before normalisation; `dpr` already applied to the
/// sides).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Params {
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fit: Fit,
    pub format: FormatChoice,
    pub quality: Option<u8>,
    pub gravity: Gravity,
    pub pad: bool,
    pub background: Option<Rgba8>,
    pub enlarge: bool,
    pub effects: Effects,
    pub progressive: bool,
    pub lossless: bool,
    /// `frames=1`: first frame of an animation only.
    pub still: bool,
}

impl V1Params {
    /// The normalised spec for a source of format `source` and a client accepting `accepts`,
    /// and the canonical string that keys the cache and the ETag.
    pub fn resolve(&self, accepts: Accepts, source: Format) -> (ResizeSpec, String) {
        let format = match self.format {
            FormatChoice::Keep => None,
            // AVIF cannot hold an animation sis writes: GIF and WebP sources (which may be
            // animated) negotiate WebP or keep their format.
            FormatChoice::Auto if accepts.avif && !source.can_animate() => Some(Format::Avif),
            FormatChoice::Auto if accepts.webp => Some(Format::Webp),
            FormatChoice::Auto => None,
            FormatChoice::Fixed(f) => Some(f),
        };
        let spec = normalise(
            ResizeSpec {
                width: self.width,
                height: self.height,
                fit: self.fit,
                format,
                quality: self.quality,
                gravity: self.gravity,
                pad: self.pad,
                background: self.background,
                enlarge: self.enlarge,
                effects: self.effects,
                progressive: self.progressive,
                lossless: self.lossless,
                still: self.still,
                // /v1 variants are sRGB: colour-managed sources are converted.
                to_srgb: true,
            },
            source,
        );
        let key = v1_canonical(&spec);
        (spec, key)
    }
}

/// Drops what cannot change the output for a `source`-format original and spells out the
/// defaults, so equivalent requests compare equal.
pub fn normalise(mut spec: ResizeSpec, source: Format) -> ResizeSpec {
    let out = spec.format.unwrap_or_else(|| source.default_output());
    spec.format = Some(out);
    let both = spec.width.is_some() && spec.height.is_some();
    if spec.fit == Fit::Stretch {
        spec.fit = Fit::Fill;
    }
    if !both {
        spec.fit = Fit::Contain;
    }
    if spec.fit != Fit::Cover {
        spec.gravity = Gravity::CENTER;
    }
    if spec.fit != Fit::Contain {
        spec.pad = false;
    }
    if spec.width.is_none() && spec.height.is_none() {
        spec.enlarge = true;
    }
    if out != Format::Webp {
        spec.lossless = true;
    }
    let lossy = match out {
        Format::Jpeg | Format::Avif => true,
        Format::Webp => !spec.lossless,
        _ => false,
    };
    spec.quality = if lossy {
        Some(spec.quality.unwrap_or(crate::imaging::DEFAULT_QUALITY))
    } else {
        None
    };
    if out != Format::Jpeg {
        spec.progressive = false;
    }
    // The background shows through padding, and under transparency flattened for JPEG.
    spec.background = match (spec.background, out) {
        (Some([255, 255, 255, _]), Format::Jpeg) | (None, Format::Jpeg) => None,
        (Some([r, g, b, _]), Format::Jpeg) => Some([r, g, b, 255]),
        (bg, _) if spec.pad => bg,
        _ => None,
    };
    // Only animated GIF and WebP sources into GIF or WebP outputs can stay animated.
    if !(source.can_animate() && out.can_animate()) {
        spec.still = true;
    }
    spec
}

/// A stable text form of a normalised `/v1` spec (cache key and ETag input).
pub fn v1_canonical(spec: &ResizeSpec) -> String {
    fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
        v.map(|v| v.to_string()).unwrap_or_default()
    }
    let gravity = match spec.gravity {
        Gravity::Focal { x, y } => format!("{x},{y}"),
        Gravity::Smart => "smart".into(),
    };
    let bg = spec
        .background
        .map(|c| format!("{:02x}{:02x}{:02x}{:02x}", c[0], c[1], c[2], c[3]))
        .unwrap_or_default();
    let fx = &spec.effects;
    format!(
        "v1;srgb;w={};h={};fit={};g={gravity};pad={};bg={bg};enlarge={};rot={};flip={}{};blur={};sharpen={};format={};q={};prog={};lossless={};still={}",
        opt(spec.width),
        opt(spec.height),
        spec.fit.as_str(),
        u8::from(spec.pad),
        u8::from(spec.enlarge),
        fx.rotate,
        u8::from(fx.flip_h),
        u8::from(fx.flip_v),
        opt(fx.blur_tenths),
        opt(fx.sharpen_tenths),
        spec.format.map(|f| f.extension()).unwrap_or(""),
        opt(spec.quality),
        u8::from(spec.progressive),
        u8::from(spec.lossless),
        u8::from(spec.still),
    )
}

/// The legacy API's canonical string (unchanged since sis 2.x: its ETags stay valid).
pub fn canonical(spec: &ResizeSpec) -> String {
    fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
        v.map(|v| v.to_string()).unwrap_or_default()
    }
    format!(
        "w={}&h={}&fit={}&format={}&q={}",
        opt(spec.width),
        opt(spec.height),
        spec.fit.as_str(),
        spec.format.map(|f| f.extension()).unwrap_or(""),
        opt(spec.quality)
    )
}

fn side<K: AsRef<str>, V: AsRef<str>>(
    pairs: &[(K, V)],
    key: &str,
    limits: &Limits,
) -> Result<Option<u32>, Error> {
    let Some(raw) = query_get(pairs, key) else {
        return Ok(None);
    };
    let v: u32 = raw
        .trim()
        .parse()
        .map_err(|_| Error::InvalidParams(format!("{key}: must be an integer")))?;
    if v < MIN_SIDE || v > limits.max_side {
        return Err(Error::InvalidParams(format!(
            "{key}: must be in [{MIN_SIDE}, {}]",
            limits.max_side
        )));
    }
    Ok(Some(v))
}

fn check_area(w: Option<u32>, h: Option<u32>, limits: &Limits) -> Result<(), Error> {
    if let (Some(w), Some(h)) = (w, h)
        && u64::from(w) * u64::from(h) > limits.max_output_pixels
    {
        return Err(Error::InvalidParams(format!(
            "h: w*h must be at most {} pixels",
            limits.max_output_pixels
        )));
    }
    Ok(())
}

/// Legacy `w`/`h` (both required).
///
/// # Errors
/// [`Error::InvalidParams`] (answered 404 on the legacy surface).
pub fn legacy_size<K: AsRef<str>, V: AsRef<str>>(
    pairs: &[(K, V)],
    limits: &Limits,
) -> Result<ResizeSpec, Error> {
    let w = side(pairs, "w", limits)?.ok_or_else(|| Error::InvalidParams("w missing".into()))?;
    let h = side(pairs, "h", limits)?.ok_or_else(|| Error::InvalidParams("h missing".into()))?;
    check_area(Some(w), Some(h), limits)?;
    Ok(ResizeSpec {
        width: Some(w),
        height: Some(h),
        fit: Fit::Stretch,
        ..ResizeSpec::default()
    })
}

fn invalid(key: &str, why: impl std::fmt::Display) -> Error {
    Error::InvalidParams(format!("{key}: {why}"))
}

fn flag(key: &str, v: &str) -> Result<bool, Error> {
    match v {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err(invalid(key, "must be 0 or 1")),
    }
}

/// A decimal in `(0, max]` with at most one decimal place kept (tenths).
fn tenths(key: &str, v: &str, max: f32) -> Result<u16, Error> {
    let x: f32 = v
        .parse()
        .ok()
        .filter(|x: &f32| x.is_finite())
        .ok_or_else(|| invalid(key, format!("must be a number in (0, {max}]")))?;
    let t = (x * 10.0).round();
    if !(1.0..=max * 10.0).contains(&t) {
        return Err(invalid(key, format!("must be in [0.1, {max}]")));
    }
    Ok(t as u16)
}

/// `x,y` with each in `[0, 1]`, kept in thousandths.
fn focal_point(v: &str) -> Result<Gravity, Error> {
    let bad = || invalid("fp", "must be x,y with each in [0, 1], e.g. fp=0.3,0.6");
    let (x, y) = v.split_once(',').ok_or_else(bad)?;
    let one = |s: &str| -> Result<u16, Error> {
        let f: f64 = s.trim().parse().map_err(|_| bad())?;
        if !(0.0..=1.0).contains(&f) {
            return Err(bad());
        }
        Ok((f * 1000.0).round() as u16)
    };
    Ok(Gravity::Focal {
        x: one(x)?,
        y: one(y)?,
    })
}

/// `/v1` parameters; `None` when the request asks for the original (no parameters).
///
/// # Errors
/// [`Error::InvalidParams`] for an unknown, repeated, malformed or out-of-range parameter; the
/// message starts with the parameter's name.
pub fn v1<K: AsRef<str>, V: AsRef<str>>(
    pairs: &[(K, V)],
    limits: &Limits,
) -> Result<Option<V1Params>, Error> {
    for (i, (k, _)) in pairs.iter().enumerate() {
        let k = k.as_ref();
        if !V1_KEYS.contains(&k) {
            return Err(invalid(
                k,
                format!("unknown parameter (known: {})", V1_KEYS.join(", ")),
            ));
        }
        if pairs[..i].iter().any(|(p, _)| p.as_ref() == k) {
            return Err(invalid(k, "given more than once"));
        }
    }
    if pairs.is_empty() {
        return Ok(None);
    }
    let get = |k: &str| query_get(pairs, k);
    let mut width = side(pairs, "w", limits)?;
    let mut height = side(pairs, "h", limits)?;
    check_area(width, height, limits)?;
    if let Some(d) = get("dpr") {
        let dpr: f64 = d
            .parse()
            .ok()
            .filter(|d: &f64| (1.0..=MAX_DPR).contains(d))
            .ok_or_else(|| invalid("dpr", format!("must be a number in [1, {MAX_DPR}]")))?;
        let times = |v: Option<u32>| -> Result<Option<u32>, Error> {
            let Some(v) = v else { return Ok(None) };
            let s = (f64::from(v) * dpr).round();
            if s > f64::from(limits.max_side) {
                return Err(invalid(
                    "dpr",
                    format!("the size times dpr exceeds {} px", limits.max_side),
                ));
            }
            Ok(Some(s as u32))
        };
        width = times(width)?;
        height = times(height)?;
        check_area(width, height, limits).map_err(|_| {
            invalid(
                "dpr",
                format!("w*h times dpr² exceeds {} pixels", limits.max_output_pixels),
            )
        })?;
    }
    let fit = match get("fit") {
        None => Fit::Contain,
        // `stretch` is an alias of `fill` on /v1 (both: exactly the box, aspect ignored).
        Some(f) => match Fit::from_param(f) {
            Some(Fit::Stretch) => Fit::Fill,
            Some(f) => f,
            None => return Err(invalid("fit", "must be contain|cover|fill|stretch")),
        },
    };
    let format = match get("format") {
        None => FormatChoice::Keep,
        Some(f) if f.eq_ignore_ascii_case("auto") => FormatChoice::Auto,
        Some(f) => FormatChoice::Fixed(
            Format::from_param(f)
                .filter(|f| f.can_encode())
                .ok_or_else(|| {
                    invalid("format", format!("must be {}|auto", Format::output_names()))
                })?,
        ),
    };
    let quality = match get("q") {
        None => None,
        Some(q) => match q.parse::<u8>() {
            Ok(q) if (1..=100).contains(&q) => Some(q),
            _ => return Err(invalid("q", "must be an integer in [1, 100]")),
        },
    };
    let gravity = match (get("gravity"), get("fp")) {
        (Some(_), Some(_)) => return Err(invalid("fp", "give either gravity or fp, not both")),
        (Some(g), None) => Gravity::from_param(g).ok_or_else(|| {
            invalid(
                "gravity",
                "must be center|north|south|east|west|north_east|north_west|south_east|south_west|smart",
            )
        })?,
        (None, Some(fp)) => focal_point(fp)?,
        (None, None) => Gravity::CENTER,
    };
    let pad = get("pad")
        .map(|v| flag("pad", v))
        .transpose()?
        .unwrap_or(false);
    let background = get("bg")
        .map(|v| parse_color(v).ok_or_else(|| invalid("bg", "must be RRGGBB or RRGGBBAA (hex)")))
        .transpose()?;
    let enlarge = get("enlarge")
        .map(|v| flag("enlarge", v))
        .transpose()?
        .unwrap_or(true);
    let rotate = match get("rotate") {
        None | Some("0") => 0,
        Some("90") => 90,
        Some("180") => 180,
        Some("270") => 270,
        Some(_) => return Err(invalid("rotate", "must be 0|90|180|270")),
    };
    let (flip_h, flip_v) = match get("flip") {
        None => (false, false),
        Some("h") => (true, false),
        Some("v") => (false, true),
        Some("hv") | Some("vh") => (true, true),
        Some(_) => return Err(invalid("flip", "must be h|v|hv")),
    };
    let blur_tenths = get("blur")
        .map(|v| tenths("blur", v, MAX_BLUR))
        .transpose()?;
    let sharpen_tenths = get("sharpen")
        .map(|v| tenths("sharpen", v, MAX_SHARPEN))
        .transpose()?;
    let progressive = get("progressive")
        .map(|v| flag("progressive", v))
        .transpose()?
        .unwrap_or(false);
    let lossless = get("lossless")
        .map(|v| flag("lossless", v))
        .transpose()?
        .unwrap_or(false);
    let still = match get("frames") {
        None | Some("all") => false,
        Some("1") => true,
        Some(_) => return Err(invalid("frames", "must be 1 (first frame only) or all")),
    };
    Ok(Some(V1Params {
        width,
        height,
        fit,
        format,
        quality,
        gravity,
        pad,
        background,
        enlarge,
        effects: Effects {
            rotate,
            flip_h,
            flip_v,
            blur_tenths,
            sharpen_tenths,
        },
        progressive,
        lossless,
        still,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn q(s: &str) -> Vec<(std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)> {
        super::super::query_pairs(Some(s))
    }

    #[test]
    fn legacy_bounds() {
        let l = Limits::default();
        let spec = legacy_size(&q("w=5&h=8192"), &l).unwrap();
        assert_eq!(
            (spec.width, spec.height, spec.fit),
            (Some(5), Some(8192), Fit::Stretch)
        );
        for bad in [
            "w=4&h=10",
            "w=10&h=8193",
            "w=10",
            "w=abc&h=10",
            "w=-5&h=10",
            "w=8192&h=8192",
            "",
        ] {
            assert!(legacy_size(&q(bad), &l).is_err(), "{bad}");
        }
    }

    fn p(s: &str) -> V1Params {
        v1(&q(s), &Limits::default())
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .unwrap_or_else(|| panic!("{s}: no params"))
    }

    fn err(s: &str) -> String {
        match v1(&q(s), &Limits::default()) {
            Err(Error::InvalidParams(m)) => m,
            other => panic!("{s}: expected invalid-params, got {other:?}"),
        }
    }

    fn key(s: &str, accepts: Accepts, source: Format) -> String {
        p(s).resolve(accepts, source).1
    }

    #[test]
    fn v1_params() {
        let l = Limits::default();
        assert_eq!(v1(&q(""), &l).unwrap(), None);
        let p1 = p("w=100&fit=cover&format=webp&q=70");
        assert_eq!(p1.width, Some(100));
        assert_eq!(p1.height, None);
        assert_eq!(p1.fit, Fit::Cover);
        assert_eq!(p1.format, FormatChoice::Fixed(Format::Webp));
        assert_eq!(p1.quality, Some(70));
        let auto = p("format=auto");
        let webp = Accepts {
            webp: true,
            ..Accepts::default()
        };
        assert_eq!(auto.resolve(webp, Format::Png).0.format, Some(Format::Webp));
        assert_eq!(
            auto.resolve(Accepts::default(), Format::Png).0.format,
            Some(Format::Png)
        );
        assert_ne!(
            auto.resolve(webp, Format::Png).1,
            auto.resolve(Accepts::default(), Format::Png).1
        );
        let both = Accepts {
            avif: true,
            webp: true,
        };
        assert_eq!(
            auto.resolve(both, Format::Jpeg).0.format,
            Some(Format::Avif)
        );
        // Possibly animated sources never negotiate AVIF (it would drop the animation).
        assert_eq!(auto.resolve(both, Format::Gif).0.format, Some(Format::Webp));
        let avif_only = Accepts {
            avif: true,
            webp: false,
        };
        assert_eq!(
            auto.resolve(avif_only, Format::Gif).0.format,
            Some(Format::Gif)
        );
    }

    #[test]
    fn unknown_repeated_and_malformed_parameters_name_the_parameter() {
        for (query, param) in [
            ("unrelated=1", "unrelated"),
            ("w=100&W=100", "W"),
            ("w=100&w=200", "w"),
            ("w=4", "w"),
            ("w=", "w"),
            ("h=9000", "h"),
            ("w=x", "w"),
            ("w=8192&h=8192", "h"),
            ("fit=zoom", "fit"),
            ("format=bmp", "format"),
            ("format=", "format"),
            ("q=0", "q"),
            ("q=101", "q"),
            ("q=5.5", "q"),
            ("gravity=middle", "gravity"),
            ("fp=0.5", "fp"),
            ("fp=1.5,0.5", "fp"),
            ("fp=-0.1,0.5", "fp"),
            ("fp=a,b", "fp"),
            ("gravity=north&fp=0.5,0.5", "fp"),
            ("pad=2", "pad"),
            ("pad=true", "pad"),
            ("bg=fff", "bg"),
            ("bg=%23ffffff", "bg"),
            ("bg=gggggg", "bg"),
            ("enlarge=yes", "enlarge"),
            ("dpr=0.5", "dpr"),
            ("dpr=4.5", "dpr"),
            ("dpr=x", "dpr"),
            ("dpr=NaN", "dpr"),
            ("w=3000&dpr=3", "dpr"),
            ("w=5000&h=5000&dpr=1.5", "dpr"),
            ("rotate=45", "rotate"),
            ("rotate=-90", "rotate"),
            ("flip=x", "flip"),
            ("blur=0", "blur"),
            ("blur=100.1", "blur"),
            ("blur=-1", "blur"),
            ("blur=inf", "blur"),
            ("sharpen=0.01", "sharpen"),
            ("sharpen=10.5", "sharpen"),
            ("progressive=2", "progressive"),
            ("lossless=on", "lossless"),
            ("frames=2", "frames"),
        ] {
            let m = err(query);
            assert!(m.starts_with(&format!("{param}:")), "{query}: {m}");
        }
    }

    #[test]
    fn every_parameter_at_its_bounds() {
        for ok in [
            "w=5",
            "w=8192",
            "h=5",
            "q=1",
            "q=100",
            "fp=0,1",
            "fp=1,0",
            "blur=0.1",
            "blur=100",
            "sharpen=0.1",
            "sharpen=10",
            "dpr=1",
            "dpr=4",
            "w=2048&dpr=4",
            "rotate=0",
            "rotate=270",
            "flip=hv",
            "frames=all",
            "bg=00000000",
            "bg=FFaa00",
        ] {
            p(ok);
        }
        let d = p("w=100&h=50&dpr=2.5");
        assert_eq!((d.width, d.height), (Some(250), Some(125)));
        let g = p("gravity=south_east");
        assert_eq!(g.gravity, Gravity::Focal { x: 1000, y: 1000 });
        assert_eq!(p("fp=0.3,0.6").gravity, Gravity::Focal { x: 300, y: 600 });
        assert_eq!(p("gravity=smart").gravity, Gravity::Smart);
        assert_eq!(p("bg=ff000080").background, Some([255, 0, 0, 128]));
        assert_eq!(p("blur=2.5").effects.blur_tenths, Some(25));
        assert_eq!(p("sharpen=1").effects.sharpen_tenths, Some(10));
        assert_eq!(p("rotate=90").effects.rotate, 90);
        let f = p("flip=v").effects;
        assert!(f.flip_v && !f.flip_h);
        assert!(p("frames=1").still);
        assert!(!p("frames=all").still);
        assert!(p("progressive=1").progressive);
        assert!(p("lossless=1").lossless);
        assert!(!p("enlarge=0").enlarge);
        assert!(p("w=10").enlarge, "enlarge defaults to 1");
        assert!(p("pad=1").pad);
        assert_eq!(p("fit=stretch").fit, Fit::Fill);
    }

    #[test]
    fn equivalent_requests_share_one_key() {
        let none = Accepts::default();
        let same = |a: &str, b: &str, src: Format| {
            assert_eq!(key(a, none, src), key(b, none, src), "{a} vs {b} on {src}");
        };
        let differ = |a: &str, b: &str, src: Format| {
            assert_ne!(key(a, none, src), key(b, none, src), "{a} vs {b} on {src}");
        };
        same("w=100", "w=100&format=jpeg", Format::Jpeg);
        same("w=100", "format=jpg&w=100&q=80", Format::Jpeg);
        same("w=100", "w=100&fit=cover", Format::Jpeg);
        same("w=100", "w=100&gravity=north", Format::Png);
        same("w=100", "w=100&q=30", Format::Png);
        same("w=100", "w=100&bg=ff0000", Format::Png);
        same("w=100", "w=100&progressive=1", Format::Png);
        same("w=100", "w=100&format=auto", Format::Jpeg);
        same("w=100", "w=100&frames=1", Format::Jpeg);
        same("w=100", "w=50&dpr=2", Format::Jpeg);
        same("w=10&h=10&fit=fill", "w=10&h=10&fit=stretch", Format::Png);
        same(
            "w=10&h=10&fit=cover&gravity=north",
            "w=10&h=10&fit=cover&fp=0.5,0",
            Format::Png,
        );
        same(
            "w=10&h=10&fit=cover",
            "w=10&h=10&fit=cover&gravity=center",
            Format::Png,
        );
        same("w=10&h=10&pad=1", "w=10&h=10&pad=1&bg=ffffff", Format::Jpeg);
        same(
            "w=10&h=10&fit=fill&pad=1",
            "w=10&h=10&fit=fill",
            Format::Png,
        );
        same("rotate=0", "format=png", Format::Png);
        same(
            "format=webp&lossless=1&q=20",
            "format=webp&lossless=1",
            Format::Png,
        );
        differ("w=100", "w=100&q=30", Format::Jpeg);
        differ("w=100", "w=100&format=png", Format::Jpeg);
        differ("w=100", "w=100&frames=1", Format::Gif);
        differ("w=100", "w=100&progressive=1", Format::Jpeg);
        differ(
            "w=100&format=webp",
            "w=100&format=webp&lossless=1",
            Format::Jpeg,
        );
        differ(
            "w=10&h=10&fit=cover",
            "w=10&h=10&fit=cover&gravity=north",
            Format::Png,
        );
        differ(
            "w=10&h=10&fit=cover",
            "w=10&h=10&fit=cover&gravity=smart",
            Format::Png,
        );
        differ("w=10&h=10&pad=1", "w=10&h=10", Format::Png);
        differ("w=10&h=10&pad=1", "w=10&h=10&pad=1&bg=ff0000", Format::Png);
        differ("w=100", "w=100&enlarge=0", Format::Png);
        differ("w=100", "w=100&blur=1", Format::Png);
        differ("w=100", "w=100&sharpen=1", Format::Png);
        differ("w=100", "w=100&rotate=90", Format::Png);
        differ("w=100", "w=100&flip=h", Format::Png);
        // format=auto: the key follows what Accept resolved to.
        let webp = Accepts {
            webp: true,
            ..Accepts::default()
        };
        assert_eq!(
            key("w=100&format=auto", webp, Format::Jpeg),
            key("w=100&format=webp", none, Format::Jpeg)
        );
    }

    #[test]
    fn normalising_is_idempotent() {
        let all = Accepts {
            avif: true,
            webp: true,
        };
        for query in [
            "w=100",
            "w=10&h=10&fit=cover&gravity=smart&q=5",
            "w=10&h=10&pad=1&bg=ff000080&format=webp",
            "format=auto&frames=1&blur=2",
            "h=50&format=jpeg&bg=00ff00&progressive=1",
        ] {
            for source in Format::ALL {
                let (spec, key) = p(query).resolve(all, source);
                assert_eq!(
                    v1_canonical(&normalise(spec, source)),
                    key,
                    "{query} on {source}"
                );
            }
        }
    }

    #[test]
    fn accept_header_parsing() {
        let a = Accepts::from_header(Some("image/avif,image/webp,image/apng,*/*;q=0.8"));
        assert!(a.avif && a.webp);
        let a = Accepts::from_header(Some("image/webp;q=0, */*"));
        assert!(!a.webp && !a.avif);
        let a = Accepts::from_header(Some("*/*"));
        assert_eq!(a, Accepts::default());
        assert_eq!(Accepts::from_header(None), Accepts::default());
        assert!(Accepts::from_header(Some("IMAGE/WEBP; q=0.5")).webp);
    }

    #[test]
    fn canonical_is_stable() {
        let l = Limits::default();
        let spec = legacy_size(&q("w=10&h=20"), &l).unwrap();
        assert_eq!(canonical(&spec), "w=10&h=20&fit=stretch&format=&q=");
        let a = key("w=10&h=20&fit=fill", Accepts::default(), Format::Png);
        let b = key("h=20&fit=fill&w=10", Accepts::default(), Format::Png);
        assert_eq!(a, b);
    }
}
