//! The trust score, 0–100, from five factors (the README has the same table):
//!
//! | factor | points | how |
//! |---|---:|---|
//! | publisher | 30 | the signature verifies with a key of `keys/` allowed for the publisher |
//! | security | 25 | 25 minus, per advisory not fixed in this version: critical 25, high 15, moderate 8, low 3 (not below 0) |
//! | community | 15 | maintainers ≥ 3: 8, 2: 5, 1: 2; adoption ≥ 100: 7, ≥ 10: 4, ≥ 1: 1 |
//! | quality | 15 | tests 6, docs 5, a licence 4 |
//! | freshness | 15 | last release at most 90 days before the commit: 15, 180: 10, 365: 5, older, later than the commit or unknown: 0 |

use crate::spec::PluginSpec;
use serde::Serialize;

/// Points per factor.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Factors {
    pub publisher: i64,
    pub security: i64,
    pub community: i64,
    pub quality: i64,
    pub freshness: i64,
}

impl Factors {
    pub fn total(&self) -> i64 {
        self.publisher + self.security + self.community + self.quality + self.freshness
    }
}

/// Score a plugin. `as_of` is the day of the commit being checked.
pub fn score(spec: &PluginSpec, signature_verified: bool, as_of: Option<i64>) -> Factors {
    let open: i64 = spec
        .advisories
        .iter()
        .filter(|a| !a.fixed)
        .map(|a| match a.severity.as_str() {
            "critical" => 25,
            "high" => 15,
            "moderate" => 8,
            _ => 3,
        })
        .sum();
    let maintainers = match spec.maintainers.unwrap_or(0) {
        0 => 0,
        1 => 2,
        2 => 5,
        _ => 8,
    };
    let adoption = match spec.adoption.unwrap_or(0) {
        0 => 0,
        1..=9 => 1,
        10..=99 => 4,
        _ => 7,
    };
    let q = &spec.quality;
    let quality = 6 * i64::from(q.tests == Some(true))
        + 5 * i64::from(q.docs == Some(true))
        + 4 * i64::from(q.license.as_deref().is_some_and(|l| !l.trim().is_empty()));
    let freshness = match (spec.last_release.as_deref().and_then(parse_day), as_of) {
        (Some(day), Some(now)) if day <= now => match now - day {
            0..=90 => 15,
            91..=180 => 10,
            181..=365 => 5,
            _ => 0,
        },
        _ => 0,
    };
    Factors {
        publisher: if signature_verified { 30 } else { 0 },
        security: (25 - open).max(0),
        community: maintainers + adoption,
        quality,
        freshness,
    }
}

/// `YYYY-MM-DD` → days since 1970-01-01 (the schema checked the shape).
pub fn parse_day(s: &str) -> Option<i64> {
    let mut it = s.splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let d: i64 = it.next()?.parse().ok()?;
    ((1..=12).contains(&m) && (1..=31).contains(&d)).then(|| days_from_civil(y, m, d))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_count_from_the_epoch() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(parse_day("2026-11-25"), Some(20_782));
        assert_eq!(parse_day("2024-02-29").unwrap() - parse_day("2024-02-28").unwrap(), 1);
    }
}
