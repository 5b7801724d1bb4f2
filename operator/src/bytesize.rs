//! Byte sizes: Kubernetes quantities in, `sis --cache-size` values out.
//!
//! A SisCluster says `cacheSize: 256Mi` (a Kubernetes quantity); the `sis` CLI accepts `0`,
//! `512KiB`, `100MiB`, `1GiB` or a plain byte count. [`ByteSize::parse_quantity`] turns the
//! former into an exact number of bytes (fixed point, no floats) and [`ByteSize::to_cli`] picks
//! the largest binary unit that divides it exactly, else plain bytes, so the conversion never
//! rounds.

use std::fmt;

/// An exact number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// Why a quantity is not a byte size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("{0:?} is not a Kubernetes quantity")]
    Syntax(String),
    #[error("{0:?} is negative")]
    Negative(String),
    #[error("{0:?} is not a whole number of bytes")]
    Fractional(String),
    #[error("{0:?} is too large")]
    TooLarge(String),
}

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

impl ByteSize {
    /// Parse a Kubernetes quantity (`0`, `1024`, `256Mi`, `1.5Gi`, `1G`, `1e9`) into bytes.
    ///
    /// # Errors
    /// When the text is not a quantity, is negative, does not denote a whole number of bytes
    /// (`1.5`, `100m`) or does not fit in 64 bits.
    pub fn parse_quantity(text: &str) -> Result<ByteSize, QuantityError> {
        let syntax = || QuantityError::Syntax(text.to_owned());
        let s = text.trim();
        if s.starts_with('-') {
            return Err(QuantityError::Negative(text.to_owned()));
        }
        let s = s.strip_prefix('+').unwrap_or(s);
        let number_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, suffix) = s.split_at(number_end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(syntax());
        }
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        // value = digits / 10^frac_len * multiplier, computed in u128 and checked for exactness.
        let digits: String = format!("{int_part}{frac_part}");
        let mantissa: u128 = if digits.is_empty() {
            0
        } else {
            digits
                .parse()
                .map_err(|_| QuantityError::TooLarge(text.to_owned()))?
        };
        let mut denominator_pow10: u32 = u32::try_from(frac_part.len()).map_err(|_| syntax())?;
        let mut multiplier: u128 = 1;
        match suffix {
            "" => {}
            "Ki" => multiplier = 1 << 10,
            "Mi" => multiplier = 1 << 20,
            "Gi" => multiplier = 1 << 30,
            "Ti" => multiplier = 1 << 40,
            "Pi" => multiplier = 1 << 50,
            "Ei" => multiplier = 1 << 60,
            "n" => denominator_pow10 += 9,
            "u" => denominator_pow10 += 6,
            "m" => denominator_pow10 += 3,
            "k" => multiplier = 10u128.pow(3),
            "M" => multiplier = 10u128.pow(6),
            "G" => multiplier = 10u128.pow(9),
            "T" => multiplier = 10u128.pow(12),
            "P" => multiplier = 10u128.pow(15),
            "E" => multiplier = 10u128.pow(18),
            exp if exp.starts_with(['e', 'E']) => {
                let e: i32 = exp[1..].parse().map_err(|_| syntax())?;
                if e >= 0 {
                    let e = u32::try_from(e).map_err(|_| syntax())?;
                    if e > 30 {
                        return Err(QuantityError::TooLarge(text.to_owned()));
                    }
                    multiplier = 10u128.pow(e);
                } else {
                    denominator_pow10 += e.unsigned_abs();
                }
            }
            _ => return Err(syntax()),
        }
        if denominator_pow10 > 30 {
            return if mantissa == 0 {
                Ok(ByteSize(0))
            } else {
                Err(QuantityError::Fractional(text.to_owned()))
            };
        }
        let numerator = mantissa
            .checked_mul(multiplier)
            .ok_or_else(|| QuantityError::TooLarge(text.to_owned()))?;
        let denominator = 10u128.pow(denominator_pow10);
        if numerator % denominator != 0 {
            return Err(QuantityError::Fractional(text.to_owned()));
        }
        u64::try_from(numerator / denominator)
            .map(ByteSize)
            .map_err(|_| QuantityError::TooLarge(text.to_owned()))
    }

    /// The size as the `sis` CLI spells it: `0`, `NGiB`, `NMiB`, `NKiB` or plain bytes.
    pub fn to_cli(self) -> String {
        let b = self.0;
        if b == 0 {
            "0".to_owned()
        } else if b.is_multiple_of(GIB) {
            format!("{}GiB", b / GIB)
        } else if b.is_multiple_of(MIB) {
            format!("{}MiB", b / MIB)
        } else if b.is_multiple_of(KIB) {
            format!("{}KiB", b / KIB)
        } else {
            b.to_string()
        }
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_cli())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(q: &str) -> String {
        match ByteSize::parse_quantity(q) {
            Ok(b) => b.to_cli(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn binary_suffixes_map_to_sis_units() {
        assert_eq!(cli("0"), "0");
        assert_eq!(cli("256Mi"), "256MiB");
        assert_eq!(cli("1Gi"), "1GiB");
        assert_eq!(cli("1024Mi"), "1GiB");
        assert_eq!(cli("512Ki"), "512KiB");
        assert_eq!(cli("1.5Gi"), "1536MiB");
        assert_eq!(cli("2Ti"), "2048GiB");
    }

    #[test]
    fn decimal_suffixes_become_plain_bytes_unless_binary_multiples() {
        assert_eq!(cli("1G"), "1000000000");
        assert_eq!(cli("100M"), "100000000");
        assert_eq!(cli("1k"), "1000");
        assert_eq!(cli("1e3"), "1000");
        assert_eq!(cli("1024"), "1KiB");
        assert_eq!(cli("1048576"), "1MiB");
        assert_eq!(cli("1000"), "1000");
        assert_eq!(cli("+5Mi"), "5MiB");
        assert_eq!(cli("0.5Ki"), "512");
        assert_eq!(cli("2000m"), "2");
    }

    #[test]
    fn rejects_what_is_not_a_whole_non_negative_byte_count() {
        assert!(matches!(
            ByteSize::parse_quantity("-1Mi"),
            Err(QuantityError::Negative(_))
        ));
        assert!(matches!(
            ByteSize::parse_quantity("1.5"),
            Err(QuantityError::Fractional(_))
        ));
        assert!(matches!(
            ByteSize::parse_quantity("100m"),
            Err(QuantityError::Fractional(_))
        ));
        assert!(matches!(
            ByteSize::parse_quantity("12MB"),
            Err(QuantityError::Syntax(_))
        ));
        assert!(matches!(
            ByteSize::parse_quantity("abc"),
            Err(QuantityError::Syntax(_))
        ));
        assert!(matches!(
            ByteSize::parse_quantity(""),
            Err(QuantityError::Syntax(_))
        ));
        assert!(matches!(
            ByteSize::parse_quantity("1..2"),
            Err(QuantityError::Syntax(_))
        ));
        assert!(matches!(
            ByteSize::parse_quantity("100Ei"),
            Err(QuantityError::TooLarge(_))
        ));
    }
}
