//! Guarding variants: which resize requests a node renders, decided before any variant
//! parameter is parsed. Without it any client can make the server render thousands of
//! distinct variants of every image.
//!
//! - **Presets**: named parameter sets (`--preset thumb=w:300,h:200,fit:cover`), used as
//!   `?preset=thumb`; a request's own `format` (e.g. `format=auto`) may be combined with one.
//!   `public` in a preset (`thumb=public,w:300`) lets it through the `signed` policy unsigned.
//! - **Signed URLs**: `sig` = hex HMAC-SHA256, under any of the `--sign-key`s (several for
//!   rotation), of the [canonical](canonical_request) request: the path and the sorted
//!   parameters without `sig`; an optional `exp` (Unix seconds, signed like any parameter)
//!   ends its validity. A valid signature admits any parameters under every policy.
//! - **Policy** (`--variants`): `open` (the default: anything, as before), `presets` (only
//!   presets, plus `format`), `signed` (a valid signature, or a public preset).
//!
//! Refusals are 403 with a code naming the reason ([`Refusal`]), counted in
//! `sis_variant_refusals_total{reason}`. Requests for originals (no variant parameters) are
//! never refused. This module does not parse variant values: it hands the admitted
//! parameters (presets expanded, `sig`/`exp` removed) to [`super::params`], so a preset and
//! the same explicit parameters share one cache entry and one ETag.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{KeyInit, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode};

use crate::error::Error;
use crate::id::URL_COMPONENT;
use crate::imaging::Limits;
use crate::state::AppState;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Decoded query parameters, in request order.
pub type Pairs<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

/// Query parameter carrying the signature.
pub const SIG: &str = "sig";
/// Query parameter carrying the expiry (Unix seconds).
pub const EXP: &str = "exp";
/// Query parameter naming a preset.
pub const PRESET: &str = "preset";
/// The parameter a request may add to a preset (format negotiation).
const WITH_PRESET: &[&str] = &["format"];

/// Which variants a node renders (`--variants`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Policy {
    /// Any parameters (the behaviour before policies existed).
    #[default]
    Open,
    /// Only `?preset=NAME` (plus `format`), or a signed URL.
    Presets,
    /// Only signed URLs, or presets marked `public`.
    Signed,
}

/// Why a variant request was refused: a 403 whose code is [`Refusal::reason`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "this server renders only signed variant URLs (or public presets); sign the URL with `sis sign`"
    )]
    SignatureRequired,
    #[error(
        "the URL's signature does not match (wrong key, or the path or parameters changed after signing)"
    )]
    BadSignature,
    #[error("the signed URL expired")]
    Expired,
    #[error("unknown preset {0:?}")]
    UnknownPreset(String),
    #[error("{0}: only presets are allowed here (?preset=NAME, optionally with format)")]
    ParamsNotAllowed(String),
}

/// Every [`Refusal::reason`], for the metric's zero series.
pub const REFUSAL_REASONS: [&str; 5] = [
    "signature-required",
    "bad-signature",
    "expired",
    "unknown-preset",
    "params-not-allowed",
];

impl Refusal {
    /// The JSON `code` and the metric's `reason` label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::SignatureRequired => REFUSAL_REASONS[0],
            Self::BadSignature => REFUSAL_REASONS[1],
            Self::Expired => REFUSAL_REASONS[2],
            Self::UnknownPreset(_) => REFUSAL_REASONS[3],
            Self::ParamsNotAllowed(_) => REFUSAL_REASONS[4],
        }
    }
}

/// A named parameter set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preset {
    pub params: Vec<(String, String)>,
    /// Served unsigned under the `signed` policy.
    pub public: bool,
}

/// The node's variant policy, presets and signing keys. Built once at start-up.
#[derive(Clone, Default)]
pub struct VariantGuard {
    policy: Policy,
    presets: BTreeMap<String, Preset>,
    keys: Vec<Arc<[u8]>>,
}

impl std::fmt::Debug for VariantGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("VariantGuard")
            .field("policy", &self.policy)
            .field("presets", &self.presets)
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// Parses one preset definition `NAME=k:v,k:v[,public]`.
///
/// # Errors
/// A message naming the preset and what is wrong.
pub fn parse_preset(def: &str) -> Result<(String, Preset), String> {
    let def = def.trim();
    let (name, spec) = def
        .split_once('=')
        .ok_or_else(|| format!("preset {def:?}: want NAME=key:value,key:value[,public]"))?;
    let name = name.trim();
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!("preset {name:?}: a name is 1-64 of [A-Za-z0-9_-]"));
    }
    let mut preset = Preset {
        params: Vec::new(),
        public: false,
    };
    for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        if item == "public" {
            preset.public = true;
            continue;
        }
        let (k, v) = item
            .split_once(':')
            .ok_or_else(|| format!("preset {name:?}: {item:?} is not key:value"))?;
        if matches!(k, PRESET | SIG | EXP) {
            return Err(format!("preset {name:?}: {k} cannot be part of a preset"));
        }
        preset
            .params
            .push((k.trim().to_owned(), v.trim().to_owned()));
    }
    if preset.params.is_empty() {
        return Err(format!("preset {name:?}: no parameters"));
    }
    Ok((name.to_owned(), preset))
}

impl VariantGuard {
    /// Builds the guard from preset definitions (see [`parse_preset`]; each is checked with
    /// the `/v1` parameter rules against `limits`) and signing keys.
    ///
    /// # Errors
    /// A bad or duplicate preset, an empty key, or a policy that cannot work (`signed`
    /// without keys).
    pub fn new(
        policy: Policy,
        preset_defs: &[String],
        keys: &[String],
        limits: &Limits,
    ) -> Result<Self, String> {
        let mut presets = BTreeMap::new();
        for def in preset_defs {
            let (name, preset) = parse_preset(def)?;
            super::params::v1(&preset.params, limits)
                .map_err(|e| format!("preset {name:?}: {e}"))?;
            if presets.insert(name.clone(), preset).is_some() {
                return Err(format!("preset {name:?} is defined twice"));
            }
        }
        if keys.iter().any(|k| k.is_empty()) {
            return Err("--sign-key: a key cannot be empty".into());
        }
        if policy == Policy::Signed && keys.is_empty() {
            return Err("--variants signed needs at least one --sign-key".into());
        }
        Ok(Self {
            policy,
            presets,
            keys: keys.iter().map(|k| Arc::from(k.as_bytes())).collect(),
        })
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Whether this guard can change anything (an open policy without presets or keys
    /// passes every request through untouched).
    pub fn is_inert(&self) -> bool {
        self.policy == Policy::Open && self.presets.is_empty() && self.keys.is_empty()
    }

    /// Admits a request for `path` with (decoded) query `pairs` at `now` (Unix seconds).
    /// `addressing` names parameters that select the image rather than a variant (the
    /// legacy API's `md5`, `file_name`): always passed through, and signed like the rest.
    /// Returns the parameters to parse: presets expanded, `sig`/`exp` removed.
    ///
    /// # Errors
    /// The [`Refusal`].
    pub fn admit<'a>(
        &self,
        path: &str,
        pairs: Pairs<'a>,
        addressing: &[&str],
        now: u64,
    ) -> Result<Pairs<'a>, Refusal> {
        let is_variant = |k: &str| !addressing.contains(&k);
        if !pairs.iter().any(|(k, _)| is_variant(k)) {
            return Ok(pairs);
        }
        let get = |key: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_ref())
        };
        let signed = match get(SIG) {
            Some(sig) => {
                self.verify(path, &pairs, sig)?;
                if let Some(exp) = get(EXP) {
                    let exp: u64 = exp.parse().map_err(|_| Refusal::BadSignature)?;
                    if now > exp {
                        return Err(Refusal::Expired);
                    }
                }
                true
            }
            None => false,
        };
        let preset = match get(PRESET) {
            Some(name) => Some(
                self.presets
                    .get(name)
                    .ok_or_else(|| Refusal::UnknownPreset(name.to_owned()))?,
            ),
            None => None,
        };
        if !signed {
            let extra = pairs.iter().map(|(k, _)| k.as_ref()).find(|k| {
                is_variant(k) && *k != PRESET && (preset.is_none() || !WITH_PRESET.contains(k))
            });
            match self.policy {
                Policy::Open => {}
                Policy::Presets => {
                    if let Some(k) = extra {
                        return Err(Refusal::ParamsNotAllowed(k.to_owned()));
                    }
                }
                Policy::Signed => {
                    if extra.is_some() || !preset.is_some_and(|p| p.public) {
                        return Err(Refusal::SignatureRequired);
                    }
                }
            }
        }
        let mut out: Pairs<'a> = pairs
            .into_iter()
            .filter(|(k, _)| {
                // Signature parameters only go when the signature was checked (else a
                // stray `exp` is the parameter parser's to refuse, as before).
                !(k == PRESET || (signed && (k == SIG || k == EXP)))
            })
            .collect();
        if let Some(p) = preset {
            for (k, v) in &p.params {
                // The request's own value (e.g. `format=auto`) wins over the preset's.
                if !out.iter().any(|(ok, _)| ok == k) {
                    out.push((Cow::Owned(k.clone()), Cow::Owned(v.clone())));
                }
            }
        }
        Ok(out)
    }

    fn verify(
        &self,
        path: &str,
        pairs: &[(Cow<'_, str>, Cow<'_, str>)],
        sig: &str,
    ) -> Result<(), Refusal> {
        let given = hex::decode(sig).map_err(|_| Refusal::BadSignature)?;
        let message = canonical_request(path, pairs);
        for key in &self.keys {
            let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
                continue;
            };
            mac.update(message.as_bytes());
            // Constant-time comparison.
            if mac.verify_slice(&given).is_ok() {
                return Ok(());
            }
        }
        Err(Refusal::BadSignature)
    }
}

/// The string a signature covers: the path with each segment percent-decoded and
/// re-encoded (everything but `A-Za-z0-9-._~` as `%XX`, upper-case), `?`, then every
/// parameter but `sig`, decoded (`+` is a space) and re-encoded the same way, as `k=v`
/// sorted by key then value and joined with `&`. So `/v1/images/M/测.png?w=300&exp=9` and
/// its percent-encoded spelling sign the same:
/// `/v1/images/M/%E6%B5%8B.png?exp=9&w=300`.
pub fn canonical_request<K: AsRef<str>, V: AsRef<str>>(path: &str, pairs: &[(K, V)]) -> String {
    let segments: Vec<String> = path
        .split('/')
        .map(|s| {
            let raw: Vec<u8> = percent_decode_str(s).collect();
            percent_encoding::percent_encode(&raw, URL_COMPONENT).to_string()
        })
        .collect();
    let mut params: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| k.as_ref() != SIG)
        .map(|(k, v)| {
            (
                utf8_percent_encode(k.as_ref(), URL_COMPONENT).to_string(),
                utf8_percent_encode(v.as_ref(), URL_COMPONENT).to_string(),
            )
        })
        .collect();
    params.sort();
    let query: Vec<String> = params
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!("{}?{}", segments.join("/"), query.join("&"))
}

/// Hex HMAC-SHA256 of `message` under `key`.
pub fn hmac_hex(key: &[u8], message: &str) -> String {
    match HmacSha256::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(message.as_bytes());
            hex::encode(mac.finalize().into_bytes())
        }
        // HMAC takes keys of any length; kept total anyway.
        Err(_) => String::new(),
    }
}

/// Signs `url` (absolute `http://host/path?query` or just `/path?query`) with `key`,
/// adding `exp` when given: returns the URL with `&exp=…&sig=…` appended (an existing
/// `sig` or `exp` is replaced).
///
/// # Errors
/// A URL without a path.
pub fn sign_url(url: &str, key: &[u8], exp: Option<u64>) -> Result<String, String> {
    let path_start = match url.find("://") {
        Some(i) => url[i + 3..]
            .find('/')
            .map(|p| i + 3 + p)
            .ok_or_else(|| format!("{url:?}: no path to sign"))?,
        None if url.starts_with('/') => 0,
        None => {
            return Err(format!(
                "{url:?}: want http://HOST/PATH?QUERY or /PATH?QUERY"
            ));
        }
    };
    let (origin, rest) = url.split_at(path_start);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| {
            let k = p.split_once('=').map_or(*p, |(k, _)| k);
            !p.is_empty() && k != SIG && k != EXP
        })
        .collect();
    let mut query = kept.join("&");
    if let Some(e) = exp {
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(&format!("{EXP}={e}"));
    }
    let pairs = super::query_pairs(Some(&query));
    let sig = hmac_hex(key, &canonical_request(path, &pairs));
    let sep = if query.is_empty() { "" } else { "&" };
    Ok(format!("{origin}{path}?{query}{sep}{SIG}={sig}"))
}

/// Unix seconds now.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The call site's door: admits the request's parameters through the node's guard (set
/// on the request by the edge; none = open) and counts refusals. `path` is the request's
/// path as sent.
///
/// # Errors
/// [`Error::VariantRefused`].
pub(crate) fn admit<'a>(
    state: &AppState,
    guard: Option<&Arc<VariantGuard>>,
    path: &str,
    pairs: Pairs<'a>,
    addressing: &[&str],
) -> Result<Pairs<'a>, Error> {
    let Some(guard) = guard else {
        return Ok(pairs);
    };
    guard
        .admit(path, pairs, addressing, now_unix())
        .map_err(|r| {
            state
                .metrics
                .variant_refusals
                .with_label_values(&[r.reason()])
                .inc();
            tracing::info!(reason = r.reason(), "variant refused");
            Error::VariantRefused(r)
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
        super::super::query_pairs(Some(q))
    }

    fn guard(policy: Policy) -> VariantGuard {
        VariantGuard::new(
            policy,
            &[
                "thumb=w:300,h:200,fit:cover".into(),
                "pub=public,w:64".into(),
            ],
            &["old-key".into(), "new-key".into()],
            &Limits::default(),
        )
        .unwrap()
    }

    fn keys(p: &[(Cow<'_, str>, Cow<'_, str>)]) -> Vec<String> {
        p.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    const PATH: &str = "/v1/images/0123456789abcdef0123456789abcdef/a.png";

    fn signed(key: &str, query: &str, exp: Option<u64>) -> String {
        let url = sign_url(&format!("{PATH}?{query}"), key.as_bytes(), exp).unwrap();
        url.split_once('?').unwrap().1.to_owned()
    }

    #[test]
    fn presets_parse_and_are_checked() {
        let (n, p) = parse_preset("thumb=w:300,h:200,fit:cover").unwrap();
        assert_eq!(n, "thumb");
        assert!(!p.public);
        assert_eq!(p.params[2], ("fit".into(), "cover".into()));
        assert!(parse_preset("x=public,w:5").unwrap().1.public);
        for bad in ["nothing", "=w:5", "a b=w:5", "x=w", "x=public", "x=sig:1"] {
            assert!(parse_preset(bad).is_err(), "{bad}");
        }
        let l = Limits::default();
        let new = |defs: &[&str]| {
            let defs: Vec<String> = defs.iter().map(|s| s.to_string()).collect();
            VariantGuard::new(Policy::Open, &defs, &[], &l)
        };
        assert!(new(&["x=w:99999"]).is_err(), "out of bounds");
        assert!(new(&["x=zoom:2"]).is_err(), "unknown parameter");
        assert!(new(&["x=w:5", "x=w:6"]).is_err(), "twice");
        assert!(VariantGuard::new(Policy::Signed, &[], &[], &l).is_err());
    }

    #[test]
    fn open_passes_everything_and_expands_presets() {
        let g = guard(Policy::Open);
        assert_eq!(keys(&g.admit(PATH, pairs("w=5"), &[], 0).unwrap()), ["w=5"]);
        assert_eq!(
            keys(
                &g.admit(PATH, pairs("preset=thumb&format=auto"), &[], 0)
                    .unwrap()
            ),
            ["format=auto", "w=300", "h=200", "fit=cover"]
        );
        // The request's own value wins over the preset's.
        assert_eq!(
            keys(&g.admit(PATH, pairs("preset=thumb&w=100"), &[], 0).unwrap()),
            ["w=100", "h=200", "fit=cover"]
        );
        assert_eq!(
            g.admit(PATH, pairs("preset=nope"), &[], 0),
            Err(Refusal::UnknownPreset("nope".into()))
        );
        // A wrong signature is refused even when open.
        assert_eq!(
            g.admit(PATH, pairs("w=5&sig=00"), &[], 0),
            Err(Refusal::BadSignature)
        );
        // Originals are never refused.
        let strict = guard(Policy::Signed);
        assert!(strict.admit(PATH, pairs(""), &[], 0).unwrap().is_empty());
        let md5 = "md5=0123456789abcdef0123456789abcdef";
        assert_eq!(
            keys(
                &strict
                    .admit("/simple_down", pairs(md5), &["md5"], 0)
                    .unwrap()
            ),
            [md5]
        );
    }

    #[test]
    fn presets_policy_refuses_other_params() {
        let g = guard(Policy::Presets);
        assert!(g.admit(PATH, pairs("preset=thumb"), &[], 0).is_ok());
        assert!(
            g.admit(PATH, pairs("preset=thumb&format=webp"), &[], 0)
                .is_ok()
        );
        assert_eq!(
            g.admit(PATH, pairs("w=300"), &[], 0),
            Err(Refusal::ParamsNotAllowed("w".into()))
        );
        assert_eq!(
            g.admit(PATH, pairs("preset=thumb&q=5"), &[], 0),
            Err(Refusal::ParamsNotAllowed("q".into()))
        );
        assert_eq!(
            g.admit(PATH, pairs("format=webp"), &[], 0),
            Err(Refusal::ParamsNotAllowed("format".into()))
        );
        // A signature is permission for anything.
        let q = signed("new-key", "w=123", None);
        assert_eq!(keys(&g.admit(PATH, pairs(&q), &[], 0).unwrap()), ["w=123"]);
    }

    #[test]
    fn signed_policy() {
        let g = guard(Policy::Signed);
        assert_eq!(
            g.admit(PATH, pairs("w=300"), &[], 0),
            Err(Refusal::SignatureRequired)
        );
        assert_eq!(
            g.admit(PATH, pairs("preset=thumb"), &[], 0),
            Err(Refusal::SignatureRequired),
            "not public"
        );
        assert_eq!(
            keys(
                &g.admit(PATH, pairs("preset=pub&format=auto"), &[], 0)
                    .unwrap()
            ),
            ["format=auto", "w=64"]
        );
        assert_eq!(
            g.admit(PATH, pairs("preset=pub&w=999"), &[], 0),
            Err(Refusal::SignatureRequired)
        );
        // Both rotation keys work; an unknown one does not.
        for key in ["old-key", "new-key"] {
            let q = signed(key, "w=300&h=100", Some(1000));
            assert_eq!(
                keys(&g.admit(PATH, pairs(&q), &[], 999).unwrap()),
                ["w=300", "h=100"]
            );
            assert_eq!(g.admit(PATH, pairs(&q), &[], 1001), Err(Refusal::Expired));
        }
        let q = signed("other", "w=300", None);
        assert_eq!(g.admit(PATH, pairs(&q), &[], 0), Err(Refusal::BadSignature));
        // Tampering with a parameter, the path or the expiry breaks the signature.
        let q = signed("new-key", "w=300", Some(1000));
        let tampered = q.replace("w=300", "w=301");
        assert_eq!(
            g.admit(PATH, pairs(&tampered), &[], 0),
            Err(Refusal::BadSignature)
        );
        let later = q.replace("exp=1000", "exp=2000");
        assert_eq!(
            g.admit(PATH, pairs(&later), &[], 0),
            Err(Refusal::BadSignature)
        );
        let other_path = PATH.replace("a.png", "b.png");
        assert_eq!(
            g.admit(&other_path, pairs(&q), &[], 0),
            Err(Refusal::BadSignature)
        );
        // Parameter order and percent-encoding do not matter.
        let q = signed("new-key", "w=300&h=100", None);
        let (wh, sig) = q.split_once("&sig=").unwrap();
        let reordered = format!("h=100&sig={sig}&{}", wh.split('&').next().unwrap());
        assert!(g.admit(PATH, pairs(&reordered), &[], 0).is_ok());
    }

    #[test]
    fn canonical_form_is_stable() {
        let p = pairs("w=300&exp=9&sig=abc&fp=0.3%2C0.6");
        assert_eq!(
            canonical_request("/v1/images/m/%E6%B5%8B.png", &p),
            "/v1/images/m/%E6%B5%8B.png?exp=9&fp=0.3%2C0.6&w=300"
        );
        assert_eq!(
            canonical_request("/v1/images/m/测.png", &p),
            canonical_request("/v1/images/m/%e6%b5%8b.png", &p)
        );
        // RFC 4231 test case 2.
        assert_eq!(
            hmac_hex(b"Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            sign_url("http://h:1/v1/images/m?w=5&sig=old", b"k", Some(7)).unwrap(),
            format!(
                "http://h:1/v1/images/m?w=5&exp=7&sig={}",
                hmac_hex(b"k", "/v1/images/m?exp=7&w=5")
            )
        );
        assert!(sign_url("h:1/x", b"k", None).is_err());
    }
}
