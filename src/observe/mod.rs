//! SLO analysis: measure an SLO in Prometheus and judge it (pass, breaching, fail,
//! inconclusive). `analysis` is pure (the rules; see its module comment for how an SLO is
//! judged), `prometheus` the IO (Prometheus' HTTP API); `measure` joins them.

pub mod analysis;
pub mod prometheus;

use std::time::Duration;

/// Measure one SLO now (the queries, then `judge`): the range query over the SLO's `for`
/// window ending at `at` (unix seconds), with the step [`analysis::step_for`] picks for the
/// analysis `interval`, and the SLO's `requests` query as an instant query at `at` when it
/// has one. `timeout` bounds each query. Blocks the calling thread (not to be called from
/// async code).
pub fn measure(
    client: &prometheus::Client,
    slo: &crate::spec::Slo,
    at: f64,
    interval: Duration,
    timeout: Duration,
) -> analysis::Check {
    let window = match crate::units::Duration::parse(&slo.for_) {
        Ok(d) => Duration::from_millis(d.millis),
        Err(e) => return analysis::unmeasured(slo, at, format!("{}: `for`: {e}", slo.name)),
    };
    let step = analysis::step_for(window, interval);
    let result = client.query_range(&slo.query, at, window, step, timeout);
    let requests = slo.requests.as_ref().map(|q| client.query(q, at, timeout));
    analysis::judge(slo, at, window, step, result, requests)
}
