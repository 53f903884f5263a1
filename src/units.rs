//! Units users write in specs: Kubernetes quantities (`500m`, `4Gi`, `1e3`) and durations
//! (`30s`, `1h30m`). Strict grammars, checked arithmetic, no floating point.

use std::fmt;

/// A Kubernetes quantity, kept as written and as an exact count of nano-units so that
/// `1Gi` and `1073741824` compare equal and `0.5` equals `500m`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity {
    pub text: String,
    pub nanos: i128,
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.nanos.cmp(&other.nanos))
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why a quantity did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("`{0}` is not a Kubernetes quantity")]
    Syntax(String),
    #[error("`{0}` is too large")]
    Overflow(String),
    #[error("`{0}` is negative")]
    Negative(String),
}

impl Quantity {
    /// Parse the Kubernetes quantity grammar:
    /// `<number>[<binarySI> | <decimalSI> | e<exponent>]`, non-negative.
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        let syntax = || QuantityError::Syntax(s.to_owned());
        let overflow = || QuantityError::Overflow(s.to_owned());
        let body = s.strip_prefix('+').unwrap_or(s);
        if body.starts_with('-') {
            return Err(QuantityError::Negative(s.to_owned()));
        }
        let num_end = body
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(body.len());
        let (number, suffix) = body.split_at(num_end);
        let (int_part, frac_part) = match number.split_once('.') {
            Some((i, f)) => (i, f),
            None => (number, ""),
        };
        if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
            return Err(syntax());
        }
        // (decimal exponent, binary exponent)
        let (dec, bin): (i32, u32) = match suffix {
            "" => (0, 0),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            e if e.starts_with(['e', 'E']) => {
                let exp = &e[1..];
                let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
                if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(syntax());
                }
                let v: i32 = exp.parse().map_err(|_| syntax())?;
                (v, 0)
            }
            _ => return Err(syntax()),
        };
        if int_part.len() + frac_part.len() > 30 {
            return Err(overflow());
        }
        // mantissa = int_part.frac_part as an integer, scaled down by 10^len(frac)
        let digits = format!("{int_part}{frac_part}");
        let mantissa: i128 = digits.parse().map_err(|_| syntax())?;
        let exp10 = 9 + dec - frac_part.len() as i32;
        let mut nanos = mantissa;
        if exp10 >= 0 {
            let p = 10i128.checked_pow(exp10 as u32).ok_or_else(overflow)?;
            nanos = nanos.checked_mul(p).ok_or_else(overflow)?;
        } else {
            // below one nano-unit: round up, as Kubernetes does
            let p = 10i128.checked_pow((-exp10) as u32).unwrap_or(i128::MAX);
            nanos = (nanos + p - 1) / p;
        }
        nanos = nanos.checked_mul(1i128 << bin).ok_or_else(overflow)?;
        if nanos > (1i128 << 100) {
            return Err(overflow());
        }
        Ok(Quantity {
            text: s.to_owned(),
            nanos,
        })
    }

    /// The quantity from a YAML/JSON value: a string or a non-negative number.
    pub fn from_json(v: &serde_json::Value) -> Result<Quantity, QuantityError> {
        match v {
            serde_json::Value::String(s) => Quantity::parse(s),
            serde_json::Value::Number(n) => {
                let text = n.to_string();
                Quantity::parse(&text)
            }
            other => Err(QuantityError::Syntax(other.to_string())),
        }
    }
}

/// A duration written as `<n><unit>…` with units `d`, `h`, `m`, `s`, `ms`, each at most once
/// and from largest to smallest (the Prometheus grammar): `90s`, `1h30m`, `250ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration {
    pub millis: u64,
}

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("`{0}` is not a duration like `30s`, `5m` or `1h30m`")]
    Syntax(String),
    #[error("`{0}` repeats a unit or lists units out of order (largest first: d, h, m, s, ms)")]
    Order(String),
    #[error("`{0}` is too long")]
    Overflow(String),
}

impl Duration {
    pub fn parse(s: &str) -> Result<Duration, DurationError> {
        const UNITS: [(&str, u64); 5] = [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("ms", 1),
            ("m", 60_000),
            ("s", 1000),
        ];
        // rank: position in the largest-first order d, h, m, s, ms
        let rank = |u: &str| match u {
            "d" => 0,
            "h" => 1,
            "m" => 2,
            "s" => 3,
            _ => 4,
        };
        if s.is_empty() {
            return Err(DurationError::Syntax(s.to_owned()));
        }
        let mut rest = s;
        let mut total: u64 = 0;
        let mut last_rank: i32 = -1;
        while !rest.is_empty() {
            let n_end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            if n_end == 0 || n_end > 12 {
                return Err(if n_end > 12 {
                    DurationError::Overflow(s.to_owned())
                } else {
                    DurationError::Syntax(s.to_owned())
                });
            }
            let n: u64 = rest[..n_end].parse().map_err(|_| DurationError::Syntax(s.to_owned()))?;
            rest = &rest[n_end..];
            let (unit, factor) = UNITS
                .iter()
                .find(|(u, _)| rest.starts_with(u))
                .ok_or_else(|| DurationError::Syntax(s.to_owned()))?;
            rest = &rest[unit.len()..];
            let r = rank(unit);
            if r <= last_rank {
                return Err(DurationError::Order(s.to_owned()));
            }
            last_rank = r;
            total = n
                .checked_mul(*factor)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| DurationError::Overflow(s.to_owned()))?;
        }
        Ok(Duration { millis: total })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> i128 {
        Quantity::parse(s).unwrap().nanos
    }

    #[test]
    fn quantities() {
        assert_eq!(q("1"), 1_000_000_000);
        assert_eq!(q("500m"), q("0.5"));
        assert_eq!(q("1Ki"), q("1024"));
        assert_eq!(q("1e3"), q("1k"));
        assert_eq!(q("1.5Gi"), q("1536Mi"));
        assert_eq!(q("1n"), 1);
        for bad in ["", "Gi", "1.2.3", "1GB", "-1", "1e", "1e1000", "1..", "abc", "1 Gi"] {
            assert!(Quantity::parse(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            Quantity::parse("99999999999999999999999999999Ei"),
            Err(QuantityError::Overflow(_))
        ));
    }

    #[test]
    fn durations() {
        let d = |s| Duration::parse(s).map(|d| d.millis);
        assert_eq!(d("30s"), Ok(30_000));
        assert_eq!(d("1h30m"), Ok(5_400_000));
        assert_eq!(d("250ms"), Ok(250));
        assert_eq!(d("1m30s500ms"), Ok(90_500));
        assert!(matches!(d("30m1h"), Err(DurationError::Order(_))));
        assert!(matches!(d("1s1s"), Err(DurationError::Order(_))));
        for bad in ["", "s", "1", "1x", "1.5s", " 1s", "1S"] {
            assert!(matches!(d(bad), Err(DurationError::Syntax(_))), "{bad}");
        }
        assert!(matches!(d("9999999999999999d"), Err(DurationError::Overflow(_))));
    }
}
