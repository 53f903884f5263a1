//! A service's metrics for SLO tests: a loopback `/metrics` (Prometheus text format 0.0.4)
//! with the counter `http_requests_total{code="200"|"500"}` and the histogram
//! `http_request_duration_seconds`, whose request rate, error ratio and latency the test sets
//! while it runs. The counters grow with wall time (at each scrape, by rate × the time since
//! the last one), so `rate()` and `increase()` over them give what was set.
//!
//! ```ignore
//! let app = SloExporter::start(50.0, 0.0);          // 50 requests/s, no errors
//! let prom = Prometheus::start(&[&app.target()]);
//! app.set(50.0, 0.5);                              // from now on, half of them fail
//! // sum(rate(http_requests_total{code="500"}[3s])) / sum(rate(http_requests_total[3s]))
//! ```

use crate::support::{Served, serve};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The histogram's buckets (seconds).
const BUCKETS: [f64; 5] = [0.05, 0.1, 0.25, 0.5, 1.0];

/// A running exporter; it stops when dropped.
pub(crate) struct SloExporter {
    served: Served,
    state: Arc<Mutex<State>>,
}

struct State {
    rps: f64,
    error_ratio: f64,
    latency: f64,
    ok: f64,
    errors: f64,
    /// Sum of the latencies of all requests counted so far.
    latency_sum: f64,
    /// Requests counted per bucket (not cumulative), and above the last.
    buckets: [f64; BUCKETS.len() + 1],
    since: Instant,
}

impl State {
    /// Count the requests since the last call at the current settings.
    fn advance(&mut self) {
        let now = Instant::now();
        let n = self.rps * now.duration_since(self.since).as_secs_f64();
        self.since = now;
        self.errors += n * self.error_ratio;
        self.ok += n * (1.0 - self.error_ratio);
        self.latency_sum += n * self.latency;
        let bucket = BUCKETS
            .iter()
            .position(|le| self.latency <= *le)
            .unwrap_or(BUCKETS.len());
        self.buckets[bucket] += n;
    }

    fn render(&self) -> String {
        let mut out = String::from("# HELP http_requests_total Requests served.\n# TYPE http_requests_total counter\n");
        out += &format!("http_requests_total{{code=\"200\"}} {}\n", self.ok);
        out += &format!("http_requests_total{{code=\"500\"}} {}\n", self.errors);
        out += "# HELP http_request_duration_seconds Request latency.\n";
        out += "# TYPE http_request_duration_seconds histogram\n";
        let mut cumulative = 0.0;
        for (le, n) in BUCKETS.iter().zip(self.buckets) {
            cumulative += n;
            out += &format!("http_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}\n");
        }
        let count = cumulative + self.buckets[BUCKETS.len()];
        out += &format!("http_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}\n");
        out += &format!("http_request_duration_seconds_sum {}\n", self.latency_sum);
        out += &format!("http_request_duration_seconds_count {count}\n");
        out
    }
}

impl SloExporter {
    /// Serve `rps` requests per second of which `error_ratio` (0–1) fail, each taking 20 ms.
    pub(crate) fn start(rps: f64, error_ratio: f64) -> SloExporter {
        let state = Arc::new(Mutex::new(State {
            rps,
            error_ratio,
            latency: 0.02,
            ok: 0.0,
            errors: 0.0,
            latency_sum: 0.0,
            buckets: [0.0; BUCKETS.len() + 1],
            since: Instant::now(),
        }));
        let shared = state.clone();
        let served = serve(axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let body = {
                    let mut s = shared.lock().unwrap();
                    s.advance();
                    s.render()
                };
                async move { ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], body) }
            }),
        ));
        SloExporter { served, state }
    }

    /// From now on, `rps` requests per second of which `error_ratio` fail.
    pub(crate) fn set(&self, rps: f64, error_ratio: f64) {
        let mut s = self.state.lock().unwrap();
        s.advance();
        (s.rps, s.error_ratio) = (rps, error_ratio);
    }

    /// From now on, every request takes `seconds`.
    pub(crate) fn set_latency(&self, seconds: f64) {
        let mut s = self.state.lock().unwrap();
        s.advance();
        s.latency = seconds;
    }

    /// `127.0.0.1:PORT`, as Prometheus' target (its `instance` label).
    pub(crate) fn target(&self) -> String {
        self.served.addr.to_string()
    }
}
