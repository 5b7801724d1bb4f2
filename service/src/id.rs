//! Validated ids (a leaf module: imports nothing of ours): an MD5 in lower-case hex and a user's file name.
//!
//! Everything that reaches the disk or the cache goes through these types, so a
//! path-traversal name or a malformed hash can never be turned into a path. This
//! module does no I/O.

use std::fmt;
use std::sync::Arc;

use percent_encoding::percent_decode_str;

/// Longest accepted file name, in bytes (the legacy API's limit).
pub const MAX_NAME_BYTES: usize = 50;

/// Characters escaped when a name goes into a URL path segment or query value:
/// everything but RFC 3986 unreserved characters (`A-Za-z0-9-._~`).
pub const URL_COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// An MD5 digest as 32 lower-case hex characters, held inline: it is part of every
/// cache key, and copying 32 bytes is cheaper than allocating a `String` per lookup.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Md5Hex([u8; 32]);

impl Md5Hex {
    /// Parses 32 hex digits; upper case is accepted and normalised to lower case.
    pub fn parse(s: &str) -> Option<Self> {
        let bytes: [u8; 32] = s.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(u8::is_ascii_hexdigit)
            .then(|| Self(bytes.map(|b| b.to_ascii_lowercase())))
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        use md5::Digest;
        let mut hex = [0u8; 32];
        // 16 bytes always encode to exactly 32 hex digits.
        let _ = hex::encode_to_slice(md5::Md5::digest(bytes), &mut hex);
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for Md5Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Md5Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Md5Hex({})", self.as_str())
    }
}

/// Why a file name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("file name is empty")]
    Empty,
    #[error("file name is longer than {MAX_NAME_BYTES} bytes")]
    TooLong,
    #[error("file name is not a bare base name")]
    NotBaseName,
}

/// A user-supplied file name that is a bare base name of at most 50 bytes. Shared, not
/// copied, when cloned (cache keys and cached entries carry it).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileName(Arc<str>);

/// Prefix of every name file on disk, so no name is ever a reserved device name
/// or starts with a dot.
const DISK_PREFIX: &str = "n_";

impl FileName {
    /// Validates a name exactly as the user sent it.
    ///
    /// # Errors
    /// Empty, longer than 50 bytes, `.`/`..`, or containing `/`, `\` or control characters.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > MAX_NAME_BYTES {
            return Err(NameError::TooLong);
        }
        if s == "." || s == ".." || s.chars().any(|c| c == '/' || c == '\\' || c.is_control()) {
            return Err(NameError::NotBaseName);
        }
        Ok(Self(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name of this file on disk: ASCII only, no separators, at most 152 bytes.
    pub fn to_disk(&self) -> String {
        disk_encode(&self.0)
    }

    /// Inverse of [`FileName::to_disk`]; `None` for files that are not name files.
    pub fn from_disk(disk: &str) -> Option<Self> {
        let rest = disk.strip_prefix(DISK_PREFIX)?;
        let decoded = percent_decode_str(rest).decode_utf8().ok()?;
        Self::parse(&decoded).ok()
    }
}

fn disk_encode(name: &str) -> String {
    let mut out = String::with_capacity(DISK_PREFIX.len() + name.len() * 3);
    out.push_str(DISK_PREFIX);
    for b in name.bytes() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FileName({:?})", self.0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn md5_parse() {
        assert!(Md5Hex::parse("d41d8cd98f00b204e9800998ecf8427e").is_some());
        assert_eq!(
            Md5Hex::parse("D41D8CD98F00B204E9800998ECF8427E")
                .unwrap()
                .as_str(),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        for bad in [
            "",
            "d41d8cd98f00b204e9800998ecf8427",
            "../../../../etc/passwd0000000000",
            "g41d8cd98f00b204e9800998ecf8427e",
            "d41d8cd98f00b204e9800998ecf8427e0",
        ] {
            assert!(Md5Hex::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(Md5Hex::of(b"").as_str(), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn name_validation() {
        assert!(FileName::parse("测试2.png").is_ok());
        assert!(FileName::parse(&"a".repeat(50)).is_ok());
        assert_eq!(FileName::parse(&"a".repeat(51)), Err(NameError::TooLong));
        // 17 three-byte characters = 51 bytes
        assert_eq!(FileName::parse(&"测".repeat(17)), Err(NameError::TooLong));
        for bad in [
            "..",
            ".",
            "a/b.png",
            "..\\x.png",
            "a\nb",
            "a\0b",
            "/etc/passwd",
        ] {
            assert_eq!(FileName::parse(bad), Err(NameError::NotBaseName), "{bad:?}");
        }
        assert_eq!(FileName::parse(""), Err(NameError::Empty));
        assert!(FileName::parse("..png").is_ok());
    }

    #[test]
    fn disk_names_round_trip_and_are_safe() {
        for name in [
            "测试2.png",
            "A.png",
            "a.png",
            "con",
            "..png",
            "x y%z?.gif",
            "CON.PNG",
        ] {
            let n = FileName::parse(name).unwrap();
            let disk = n.to_disk();
            assert!(disk.bytes().all(|b| b.is_ascii_graphic()), "{disk}");
            assert!(!disk.contains('/') && !disk.contains('\\'));
            assert!(
                !disk
                    .bytes()
                    .any(|b| b.is_ascii_uppercase() && !b.is_ascii_hexdigit())
            );
            assert!(disk.len() <= 152);
            assert_eq!(FileName::from_disk(&disk).unwrap(), n);
        }
        assert_ne!(
            FileName::parse("A.png")
                .unwrap()
                .to_disk()
                .to_ascii_lowercase(),
            FileName::parse("a.png")
                .unwrap()
                .to_disk()
                .to_ascii_lowercase()
        );
        assert!(FileName::from_disk("tmp123").is_none());
    }
}
