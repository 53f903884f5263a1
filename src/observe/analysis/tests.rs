//! `judge` rule by rule, and the step choice.

use super::*;
use crate::spec::Slo;
use std::collections::BTreeMap;

const AT: f64 = 1_700_000_100.0;
const SEC: Duration = Duration::from_secs(1);

fn slo(max: Option<f64>, min: Option<f64>) -> Slo {
    Slo {
        name: "error-rate".into(),
        query: "sum(rate(errors[1m])) / sum(rate(requests[1m]))".into(),
        max,
        min,
        for_: "5s".into(),
        min_requests: None,
        requests: None,
    }
}

fn max(m: f64) -> Slo {
    slo(Some(m), None)
}

/// One series whose points are `values`, the last at `AT`, one second apart (`None`: a gap).
fn series(values: &[Option<f64>]) -> Series {
    let n = values.len();
    let points = values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.map(|v| (AT - (n - 1 - i) as f64, v)))
        .collect();
    Series {
        labels: BTreeMap::new(),
        points,
    }
}

fn all(v: f64, n: usize) -> Vec<Option<f64>> {
    vec![Some(v); n]
}

/// `judge` over a 5 s window every 1 s (6 points expected).
fn check(slo: &Slo, result: Result<Vec<Series>, QueryError>) -> Check {
    judge(slo, AT, Duration::from_secs(5), SEC, result, None)
}

fn verdict(slo: &Slo, values: &[Option<f64>]) -> (Verdict, String) {
    let c = check(slo, Ok(vec![series(values)]));
    (c.verdict, c.reason)
}

#[test]
fn pass_when_the_latest_point_is_within_the_bound() {
    let c = check(&max(0.05), Ok(vec![series(&all(0.01, 6))]));
    assert_eq!(c.verdict, Verdict::Pass);
    assert_eq!(c.value, Some(0.01));
    assert_eq!(c.bound, "<= 0.05");
    assert_eq!(c.window, "5s");
    assert_eq!(c.time, AT as i64);
    assert_eq!(c.reason, "error-rate 0.01 <= 0.05");
    // the bound itself passes
    assert_eq!(verdict(&max(0.05), &all(0.05, 6)).0, Verdict::Pass);
    // an earlier breach does not matter
    let mut v = all(0.5, 6);
    v[5] = Some(0.0);
    assert_eq!(verdict(&max(0.05), &v).0, Verdict::Pass);
}

#[test]
fn fail_when_every_point_of_the_window_breaches() {
    let (v, reason) = verdict(&max(0.05), &all(0.12, 6));
    assert_eq!(v, Verdict::Fail);
    assert_eq!(reason, "error-rate 0.12 > 0.05 for 5s");
    // points before the window do not count, for or against
    let mut long = vec![Some(0.0); 4];
    long.extend(all(0.12, 6));
    assert_eq!(verdict(&max(0.05), &long).0, Verdict::Fail);
}

#[test]
fn breaching_when_only_part_of_the_window_breaches() {
    let mut v = all(0.12, 6);
    v[0] = Some(0.01);
    let (verdict_, reason) = verdict(&max(0.05), &v);
    assert_eq!(verdict_, Verdict::Breaching);
    assert_eq!(
        reason,
        "error-rate 0.12 > 0.05, not yet for 5s: 5 of 6 points of the window breach"
    );
    // too few points: the query started less than `for` ago
    assert_eq!(verdict(&max(0.05), &all(0.12, 3)).0, Verdict::Breaching);
}

#[test]
fn a_gap_or_nan_inside_the_window_is_breaching_never_fail() {
    let mut gap = all(0.12, 6);
    gap[2] = None;
    assert_eq!(verdict(&max(0.05), &gap).0, Verdict::Breaching);
    let mut nan = all(0.12, 6);
    nan[2] = Some(f64::NAN);
    assert_eq!(verdict(&max(0.05), &nan).0, Verdict::Breaching);
    let mut inf = all(0.12, 6);
    inf[0] = Some(f64::INFINITY);
    assert_eq!(verdict(&max(0.05), &inf).0, Verdict::Breaching);
}

#[test]
fn min_bounds() {
    let availability = slo(None, Some(0.99));
    let c = check(&availability, Ok(vec![series(&all(0.995, 6))]));
    assert_eq!((c.verdict, c.bound.as_str()), (Verdict::Pass, ">= 0.99"));
    let (v, reason) = verdict(&availability, &all(0.9, 6));
    assert_eq!((v, reason.as_str()), (Verdict::Fail, "error-rate 0.9 < 0.99 for 5s"));
    let mut v = all(0.9, 6);
    v[1] = Some(1.0);
    assert_eq!(verdict(&availability, &v).0, Verdict::Breaching);
    // both bounds
    let band = slo(Some(2.0), Some(1.0));
    assert_eq!(check(&band, Ok(vec![series(&all(1.5, 6))])).bound, ">= 1 and <= 2");
    assert_eq!(verdict(&band, &all(1.5, 6)).0, Verdict::Pass);
    assert_eq!(verdict(&band, &all(3.0, 6)).0, Verdict::Fail);
    assert_eq!(verdict(&band, &all(0.5, 6)).0, Verdict::Fail);
}

#[test]
fn inconclusive_without_one_series() {
    let c = check(&max(0.05), Ok(vec![]));
    assert_eq!(c.verdict, Verdict::Inconclusive);
    assert_eq!(c.reason, "error-rate: the query returned no data");
    let c = check(&max(0.05), Ok(vec![series(&all(0.01, 6)), series(&all(0.01, 6))]));
    assert_eq!(c.verdict, Verdict::Inconclusive);
    assert!(
        c.reason
            .contains("returned 2 series; the query must return one number; aggregate it, e.g. sum(...)")
    );
    let c = check(&max(0.05), Ok(vec![series(&[])]));
    assert_eq!(
        (c.verdict, c.reason.as_str()),
        (Verdict::Inconclusive, "error-rate: the query returned no points")
    );
}

#[test]
fn inconclusive_when_the_latest_point_is_nan_inf_or_stale() {
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let c = check(&max(0.05), Ok(vec![series(&[Some(0.5), Some(0.5), Some(bad)])]));
        assert_eq!((c.verdict, c.value), (Verdict::Inconclusive, None), "{bad}");
    }
    assert!(
        verdict(&max(0.05), &[Some(0.5), Some(f64::NAN)])
            .1
            .contains("the latest value is NaN")
    );
    // the latest point 3 s (3 steps) before `at`: stale
    let (v, reason) = verdict(&max(0.05), &[Some(0.5), Some(0.5), Some(0.5), None, None, None]);
    assert_eq!(v, Verdict::Inconclusive);
    assert!(
        reason.contains("stale: the latest point is 3s old (more than 2 steps of 1s)"),
        "{reason}"
    );
    // 2 steps old is still fresh
    assert_eq!(
        verdict(&max(0.05), &[Some(0.5), Some(0.01), None, None]).0,
        Verdict::Pass
    );
}

#[test]
fn inconclusive_when_prometheus_fails() {
    for kind in [
        "unreachable",
        "timeout",
        "http-status",
        "bad-query",
        "bad-response",
        "too-large",
    ] {
        let err = QueryError {
            kind,
            message: "http://prom/api/v1/query_range: details".into(),
        };
        let c = check(&max(0.05), Err(err));
        assert_eq!(c.verdict, Verdict::Inconclusive);
        assert_eq!(
            c.reason,
            format!("error-rate: prometheus {kind}: http://prom/api/v1/query_range: details")
        );
    }
}

#[test]
fn min_requests() {
    let mut s = max(0.05);
    s.min_requests = Some(100);
    s.requests = Some("sum(increase(requests[5s]))".into());
    let breach = || Ok(vec![series(&all(0.5, 6))]);
    let counted = |n: f64| {
        Some(Ok(vec![Series {
            labels: BTreeMap::new(),
            points: vec![(AT, n)],
        }]))
    };
    let run = |requests| judge(&s, AT, Duration::from_secs(5), SEC, breach(), requests);

    let c = run(counted(99.0));
    assert_eq!((c.verdict, c.requests), (Verdict::Inconclusive, Some(99.0)));
    assert_eq!(c.reason, "error-rate: only 99 requests, fewer than minRequests 100");
    assert_eq!(run(counted(100.0)).verdict, Verdict::Fail);
    // no number: no series, NaN, two series, an error, no query at all
    assert_eq!(run(Some(Ok(vec![]))).verdict, Verdict::Inconclusive);
    assert_eq!(run(counted(f64::NAN)).verdict, Verdict::Inconclusive);
    let two = vec![series(&[Some(500.0)]), series(&[Some(500.0)])];
    assert!(run(Some(Ok(two))).reason.contains("the requests query gave no number"));
    let down = QueryError {
        kind: "timeout",
        message: "no answer".into(),
    };
    assert!(
        run(Some(Err(down)))
            .reason
            .contains("the requests query: prometheus timeout")
    );
    assert!(
        run(None)
            .reason
            .contains("minRequests is 100 but the SLO has no `requests` query")
    );
    // without minRequests, the count is reported and decides nothing
    s.min_requests = None;
    let c = judge(&s, AT, Duration::from_secs(5), SEC, breach(), counted(3.0));
    assert_eq!((c.verdict, c.requests), (Verdict::Fail, Some(3.0)));
}

#[test]
fn checks_serialize_in_camel_case_and_kebab_case() {
    let c = check(&max(0.05), Ok(vec![series(&all(0.01, 6))]));
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["verdict"], "pass");
    assert_eq!(json["slo"], "error-rate");
    assert!(json.get("requests").is_some());
    assert_eq!(serde_json::to_value(Verdict::Inconclusive).unwrap(), "inconclusive");
    assert_eq!(serde_json::from_value::<Check>(json).unwrap(), c);
}

#[test]
fn reasons_are_one_line() {
    let mut s = max(0.05);
    s.name = "bad\nname".into();
    let c = check(&s, Ok(vec![]));
    assert!(!c.reason.contains('\n'), "{}", c.reason);
}

#[test]
fn the_step_gives_2_to_61_points() {
    let ms = Duration::from_millis;
    let secs = Duration::from_secs;
    for (window, interval, step) in [
        (secs(5), secs(1), secs(1)),
        (secs(30), secs(10), secs(10)),
        (secs(5), secs(30), secs(5)),     // at most the window: 2 points
        (secs(3600), secs(10), secs(60)), // at least window / 60: 61 points
        (secs(100), secs(1), ms(1667)),   // rounded up to the millisecond
        (secs(0), secs(1), secs(1)),      // an empty window: the interval
        (ms(10), ms(0), ms(1)),           // never zero
    ] {
        let got = step_for(window, interval);
        assert_eq!(got, step, "{window:?} {interval:?}");
        if !window.is_zero() {
            let points = window.as_millis() / got.as_millis() + 1;
            assert!((2..=61).contains(&points), "{window:?} {interval:?}: {points}");
        }
    }
}

#[test]
fn numbers_for_people() {
    assert_eq!(num(0.12), "0.12");
    assert_eq!(num(0.1 + 0.2), "0.3");
    assert_eq!(num(0.0000123456), "0.00001235");
    assert_eq!(num(1234567.0), "1235000");
    assert_eq!(num(f64::NAN), "NaN");
    assert_eq!(num(f64::NEG_INFINITY), "-Inf");
}
