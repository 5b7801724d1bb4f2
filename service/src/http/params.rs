//! Resize parameters from query strings, checked against the configured limits.
//!
//! Legacy `/stretch_*`: `w` and `h`, both required, each in `[5, max_side]`, their
//! product at most `max_output_pixels`. `/v1`: optional `w`, `h`, `fit`, `format`,
//! `q`. Pure functions; the imaging module validates again defensively.

use crate::error::Error;
use crate::imaging::{Fit, Format, Limits, ResizeSpec};

use super::query_get;

/// Smallest accepted side.
pub const MIN_SIDE: u32 = 5;

/// The output format a `/v1` request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatChoice {
    /// Keep the original's format (the default).
    Keep,
    /// `format=auto`: WebP when `Accept` allows it.
    Auto,
    Fixed(Format),
}

/// Parsed `/v1` transform parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Params {
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fit: Fit,
    pub format: FormatChoice,
    pub quality: Option<u8>,
}

impl V1Params {
    /// The spec for a resolved output format, and the canonical string that keys
    /// the cache and the ETag.
    pub fn resolve(&self, accepts_webp: bool) -> (ResizeSpec, String) {
        let format = match self.format {
            FormatChoice::Keep => None,
            FormatChoice::Auto => accepts_webp.then_some(Format::Webp),
            FormatChoice::Fixed(f) => Some(f),
        };
        let spec = ResizeSpec {
            width: self.width,
            height: self.height,
            fit: self.fit,
            format,
            quality: self.quality,
        };
        (spec.clone(), canonical(&spec))
    }
}

/// A stable text form of a spec (cache key and ETag input).
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
        .map_err(|_| Error::InvalidParams(format!("{key} must be an integer")))?;
    if v < MIN_SIDE || v > limits.max_side {
        return Err(Error::InvalidParams(format!(
            "{key} must be in [{MIN_SIDE}, {}]",
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
            "w*h must be at most {} pixels",
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
        format: None,
        quality: None,
    })
}

/// `/v1` parameters; `None` when the request asks for the original.
///
/// # Errors
/// [`Error::InvalidParams`] for out-of-range or unknown values.
pub fn v1<K: AsRef<str>, V: AsRef<str>>(
    pairs: &[(K, V)],
    limits: &Limits,
) -> Result<Option<V1Params>, Error> {
    let width = side(pairs, "w", limits)?;
    let height = side(pairs, "h", limits)?;
    check_area(width, height, limits)?;
    let fit = match query_get(pairs, "fit") {
        None | Some("") => Fit::Contain,
        Some(f) => Fit::from_param(f)
            .ok_or_else(|| Error::InvalidParams("fit must be contain|cover|fill|stretch".into()))?,
    };
    let format =
        match query_get(pairs, "format") {
            None | Some("") => FormatChoice::Keep,
            Some(f) if f.eq_ignore_ascii_case("auto") => FormatChoice::Auto,
            Some(f) => FormatChoice::Fixed(Format::from_param(f).ok_or_else(|| {
                Error::InvalidParams("format must be jpeg|png|gif|webp|auto".into())
            })?),
        };
    let quality = match query_get(pairs, "q") {
        None | Some("") => None,
        Some(q) => match q.trim().parse::<u8>() {
            Ok(q) if (1..=100).contains(&q) => Some(q),
            _ => return Err(Error::InvalidParams("q must be in [1, 100]".into())),
        },
    };
    if width.is_none() && height.is_none() && format == FormatChoice::Keep && quality.is_none() {
        return Ok(None);
    }
    Ok(Some(V1Params {
        width,
        height,
        fit,
        format,
        quality,
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

    #[test]
    fn v1_params() {
        let l = Limits::default();
        assert_eq!(v1(&q(""), &l).unwrap(), None);
        assert_eq!(v1(&q("unrelated=1"), &l).unwrap(), None);
        let p = v1(&q("w=100&fit=cover&format=webp&q=70"), &l)
            .unwrap()
            .unwrap();
        assert_eq!(p.width, Some(100));
        assert_eq!(p.height, None);
        assert_eq!(p.fit, Fit::Cover);
        assert_eq!(p.format, FormatChoice::Fixed(Format::Webp));
        assert_eq!(p.quality, Some(70));
        let p = v1(&q("format=auto"), &l).unwrap().unwrap();
        assert_eq!(p.resolve(true).0.format, Some(Format::Webp));
        assert_eq!(p.resolve(false).0.format, None);
        assert_ne!(p.resolve(true).1, p.resolve(false).1);
        for bad in [
            "w=4",
            "h=9000",
            "fit=zoom",
            "format=bmp",
            "q=0",
            "q=101",
            "w=x",
        ] {
            assert!(v1(&q(bad), &l).is_err(), "{bad}");
        }
    }

    #[test]
    fn canonical_is_stable() {
        let l = Limits::default();
        let a = v1(&q("w=10&h=20&fit=fill"), &l)
            .unwrap()
            .unwrap()
            .resolve(false)
            .1;
        let b = v1(&q("h=20&fit=fill&w=10"), &l)
            .unwrap()
            .unwrap()
            .resolve(false)
            .1;
        assert_eq!(a, b);
        assert_eq!(a, "w=10&h=20&fit=fill&format=&q=");
    }
}
