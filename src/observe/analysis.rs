//! How an SLO is judged from Prometheus' answers (pure: no IO, no clock — the time of the
//! measurement comes in as `at`).
//!
//! A **range query** over the SLO's `for` window decides, not a count of checks remembered
//! between runs, so a restarted process reaches the same verdict from Prometheus alone:
//!
//! - **fail** — the query returned exactly one series and every expected point of the
//!   window (`[at - for, at]` every `step`) is present, finite and breaches the bound
//!   (`> max`, `< min`);
//! - **breaching** — the latest point breaches, but not the whole window does yet (a gap, a
//!   passing point, or NaN inside the window while the latest point breaches is breaching,
//!   never fail); the rollout holds, and this is not inconclusive;
//! - **pass** — the latest point is finite and within the bound;
//! - **inconclusive** — Prometheus did not answer (unreachable, timeout, an error status,
//!   not its JSON, too large); no series; more than one series (the query must return one
//!   number); the latest point is missing or stale (older than two steps before `at`) or
//!   NaN/±Inf; or `minRequests` is set and the `requests` query, an instant query at `at`,
//!   gives no number or fewer requests than that.
//!
//! The checks run in that order, so too little traffic is inconclusive even when the value
//! breaches: rampart reverts only on a confirmed violation, and never promotes on no data.
//!
//! The step ([`step_for`]) is the analysis interval, but at most the window (so the window
//! has at least two points, its start and its end) and at least a 60th of it (so a long
//! window has at most 61 points).

use super::prometheus::{QueryError, Series};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The most steps a window is cut into (61 points).
pub const MAX_STEPS: u64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Pass,
    Breaching,
    Fail,
    Inconclusive,
}

/// One SLO measured once: the verdict and what it rests on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    pub slo: String,
    pub verdict: Verdict,
    /// The latest measured value; `None` when missing, NaN or infinite.
    pub value: Option<f64>,
    /// What the `requests` query measured, when it gave a finite number.
    pub requests: Option<f64>,
    /// `<= 0.05`, `>= 0.99`, or both joined by `and`.
    pub bound: String,
    /// The SLO's `for` as written.
    pub window: String,
    pub query: String,
    /// Unix seconds of the measurement.
    pub time: i64,
    /// One line, for people: why this verdict.
    pub reason: String,
}

/// The step of the range query for a window of `window` measured every `interval`:
/// `interval`, but at most `window` and at least `window / 60` (rounded up to the
/// millisecond), and at least 1 ms.
pub fn step_for(window: Duration, interval: Duration) -> Duration {
    let w = window.as_millis().min(u64::MAX as u128) as u64;
    let i = interval.as_millis().min(u64::MAX as u128) as u64;
    let step = if w == 0 { i } else { i.min(w).max(w.div_ceil(MAX_STEPS)) };
    Duration::from_millis(step.max(1))
}

/// The verdict on `slo` at `at` (unix seconds) from the range query over `window` every
/// `step` (`result`) and, when the SLO has a `requests` query, its instant query at `at`.
pub fn judge(
    slo: &crate::spec::Slo,
    at: f64,
    window: Duration,
    step: Duration,
    result: Result<Vec<Series>, QueryError>,
    requests: Option<Result<Vec<Series>, QueryError>>,
) -> Check {
    let mut check = unmeasured(slo, at, String::new());
    let counted = requests.map(|r| r.map(|series| one_number(&series)));
    if let Some(Ok(Some(n))) = counted {
        check.requests = Some(n);
    }
    let (verdict, reason) = decide(slo, at, window, step, result, counted, &mut check.value);
    check.verdict = verdict;
    check.reason = crate::diagnostic::visible(&reason, &[]);
    check
}

/// A check for an SLO that could not be measured at all (its `for` does not parse, say).
pub fn unmeasured(slo: &crate::spec::Slo, at: f64, reason: String) -> Check {
    Check {
        slo: slo.name.clone(),
        verdict: Verdict::Inconclusive,
        value: None,
        requests: None,
        bound: bound(slo),
        window: slo.for_.clone(),
        query: slo.query.clone(),
        time: at.floor() as i64,
        reason: crate::diagnostic::visible(&reason, &[]),
    }
}

fn decide(
    slo: &crate::spec::Slo,
    at: f64,
    window: Duration,
    step: Duration,
    result: Result<Vec<Series>, QueryError>,
    requests: Option<Result<Option<f64>, QueryError>>,
    value: &mut Option<f64>,
) -> (Verdict, String) {
    use Verdict::*;
    let name = &slo.name;
    if slo.max.is_none() && slo.min.is_none() {
        return (Inconclusive, format!("{name} has neither `max` nor `min`"));
    }
    let series = match result {
        Ok(s) => s,
        Err(e) => return (Inconclusive, format!("{name}: prometheus {e}")),
    };
    let points = match series.as_slice() {
        [] => return (Inconclusive, format!("{name}: the query returned no data")),
        [one] => &one.points,
        many => {
            return (
                Inconclusive,
                format!(
                    "{name}: the query returned {} series; the query must return one number; aggregate it, e.g. sum(...)",
                    many.len()
                ),
            );
        }
    };
    let step_s = step.as_secs_f64();
    let Some(&(latest_t, latest)) = points
        .iter()
        .filter(|(t, _)| *t <= at + 0.001)
        .max_by(|a, b| a.0.total_cmp(&b.0))
    else {
        return (Inconclusive, format!("{name}: the query returned no points"));
    };
    if at - latest_t > 2.0 * step_s + 0.001 {
        return (
            Inconclusive,
            format!(
                "{name}: stale: the latest point is {}s old (more than 2 steps of {step_s}s)",
                num(at - latest_t)
            ),
        );
    }
    if !latest.is_finite() {
        return (
            Inconclusive,
            format!(
                "{name}: the latest value is {} (no traffic, or a division by zero?)",
                num(latest)
            ),
        );
    }
    *value = Some(latest);
    if let Some(min_requests) = slo.min_requests {
        match requests {
            None => {
                return (
                    Inconclusive,
                    format!("{name}: minRequests is {min_requests} but the SLO has no `requests` query"),
                );
            }
            Some(Err(e)) => return (Inconclusive, format!("{name}: the requests query: prometheus {e}")),
            Some(Ok(None)) => {
                return (
                    Inconclusive,
                    format!("{name}: the requests query gave no number (one series, one finite value)"),
                );
            }
            Some(Ok(Some(n))) if n < min_requests as f64 => {
                return (
                    Inconclusive,
                    format!(
                        "{name}: only {} requests, fewer than minRequests {min_requests}",
                        num(n)
                    ),
                );
            }
            Some(Ok(Some(_))) => {}
        }
    }
    let Some(breach) = breach(slo, latest) else {
        return (Pass, format!("{name} {} {}", num(latest), bound(slo)));
    };
    let start = at - window.as_secs_f64();
    let expected = (window.as_millis() / step.as_millis().max(1)) as usize + 1;
    let in_window: Vec<f64> = points
        .iter()
        .filter(|(t, _)| *t >= start - 0.001 && *t <= at + 0.001)
        .map(|(_, v)| *v)
        .collect();
    let breaching = in_window
        .iter()
        .filter(|v| v.is_finite() && breach_of(slo, **v))
        .count();
    if in_window.len() >= expected && breaching == in_window.len() {
        (Fail, format!("{name} {breach} for {}", slo.for_))
    } else {
        (
            Breaching,
            format!(
                "{name} {breach}, not yet for {}: {breaching} of {expected} points of the window breach",
                slo.for_
            ),
        )
    }
}

/// `0.12 > 0.05` when `v` breaches the SLO's bound.
fn breach(slo: &crate::spec::Slo, v: f64) -> Option<String> {
    if let Some(max) = slo.max
        && v > max
    {
        return Some(format!("{} > {max}", num(v)));
    }
    if let Some(min) = slo.min
        && v < min
    {
        return Some(format!("{} < {min}", num(v)));
    }
    None
}

fn breach_of(slo: &crate::spec::Slo, v: f64) -> bool {
    slo.max.is_some_and(|m| v > m) || slo.min.is_some_and(|m| v < m)
}

fn bound(slo: &crate::spec::Slo) -> String {
    match (slo.min, slo.max) {
        (Some(min), Some(max)) => format!(">= {min} and <= {max}"),
        (Some(min), None) => format!(">= {min}"),
        (None, Some(max)) => format!("<= {max}"),
        (None, None) => String::new(),
    }
}

/// The value of an answer that is one series with a finite latest point.
fn one_number(series: &[Series]) -> Option<f64> {
    match series {
        [one] => one
            .points
            .iter()
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|p| p.1)
            .filter(|v| v.is_finite()),
        _ => None,
    }
}

/// A measured value for people: four significant digits, no exponent.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return if v.is_nan() {
            "NaN".into()
        } else if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let rounded: f64 = format!("{v:.3e}").parse().unwrap_or(v);
    format!("{rounded}")
}

#[cfg(test)]
mod tests;
