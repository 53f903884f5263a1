//! Webhook notifications about rollouts (IO): each event is POSTed as JSON to every configured
//! URL from a background thread, so a slow or dead receiver never holds up the reconciler.
//!
//! The body is the [`Event`]'s JSON plus a Slack-compatible `text` field, one line
//! ("rampart reverted rollout `x` (plugin y 1.2.0 → 1.3.0) on dir:/out: SLO error-rate 0.12 >
//! 0.05 for 30s"), hidden characters escaped and `&`, `<`, `>` written as Slack wants them.
//! Delivery is tried up to 3 times (backoff from 250 ms, doubling, with jitter) on connection
//! errors, timeouts, 5xx and 429; anything else is not retried. A webhook URL is a secret
//! (Slack's are): logs and messages name only its `scheme://host:port`.
//!
//! The queue holds [`QUEUE`] events; when it is full, the oldest is dropped and counted.
//! Dropping the notifier stops the thread after the delivery in progress; call
//! [`Notifier::flush`] first to send what is queued.

use crate::http_client::{Endpoint, Failure, UrlRules};
use crate::observe::analysis::{Check, Verdict};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The most events waiting for delivery.
pub const QUEUE: usize = 256;
/// Attempts per event and URL.
pub const ATTEMPTS: u32 = 3;
/// The most bytes of a receiver's answer read (it is not looked at).
const MAX_ANSWER: usize = 64 << 10;

/// Something a rollout did, for people.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// `revert`, `promote`, `pause`, `step` or `inconclusive`.
    pub kind: String,
    pub rollout: String,
    /// Shown as is: a name, or `name 1.2.0 → 1.3.0`.
    pub plugin: String,
    pub target: String,
    pub commit: Option<String>,
    /// The detail of `text`; when empty, the checks that did not pass say it ([`summary`]).
    pub message: String,
    pub checks: Vec<Check>,
    /// RFC 3339.
    pub time: String,
}

/// Sends events to webhooks; see the module comment.
pub struct Notifier {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// The worker waits on this for work.
    work: Condvar,
    /// `flush` waits on this for an empty queue.
    idle: Condvar,
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Event>,
    /// An event is being delivered.
    busy: bool,
    stop: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Notifier {
    /// A notifier for `urls` (`http://` or `https://`), each request bounded by `timeout`.
    pub fn new(urls: Vec<String>, timeout: Duration) -> Result<Notifier, String> {
        let rules = UrlRules {
            query: true,
            echo: false,
        };
        let endpoints = urls
            .iter()
            .enumerate()
            .map(|(i, url)| Endpoint::new(url, rules, timeout).map_err(|e| format!("notification URL {} {e}", i + 1)))
            .collect::<Result<Vec<_>, _>>()?;
        let rt = crate::http_client::runtime()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            idle: Condvar::new(),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let worker = shared.clone();
        std::thread::Builder::new()
            .name("rampart-notify".into())
            .spawn(move || work(&worker, &endpoints, &rt, timeout))
            .map_err(|e| format!("cannot start the notification thread: {e}"))?;
        Ok(Notifier { shared })
    }

    /// Queue the event for every URL; never blocks the caller (when the queue is full, the
    /// oldest event is dropped and counted).
    pub fn send(&self, event: Event) {
        let mut state = self.shared.lock();
        if state.queue.len() >= QUEUE {
            state.queue.pop_front();
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
        state.queue.push_back(event);
        drop(state);
        self.shared.work.notify_one();
    }

    /// Deliveries accepted (2xx), one per event and URL.
    pub fn delivered(&self) -> u64 {
        self.shared.delivered.load(Ordering::Relaxed)
    }

    /// Deliveries given up, one per event and URL.
    pub fn failed(&self) -> u64 {
        self.shared.failed.load(Ordering::Relaxed)
    }

    /// Events dropped from a full queue.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Wait until the queue is empty (and no delivery is in progress) or `deadline` passed:
    /// whether it is empty.
    pub fn flush(&self, deadline: Duration) -> bool {
        let until = Instant::now() + deadline;
        let mut state = self.shared.lock();
        while !state.queue.is_empty() || state.busy {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .shared
                .idle
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.work.notify_all();
    }
}

/// The worker thread: one event at a time, to every URL in turn.
fn work(shared: &Shared, endpoints: &[Endpoint], rt: &tokio::runtime::Runtime, timeout: Duration) {
    loop {
        let event = {
            let mut state = shared.lock();
            state.busy = false;
            loop {
                if state.stop {
                    shared.idle.notify_all();
                    return;
                }
                if let Some(event) = state.queue.pop_front() {
                    state.busy = true;
                    break event;
                }
                shared.idle.notify_all();
                state = shared.work.wait(state).unwrap_or_else(|e| e.into_inner());
            }
        };
        deliver_all(shared, endpoints, rt, timeout, &event);
    }
}

/// Send `event` to every endpoint in turn; count and log the outcome.
fn deliver_all(
    shared: &Shared,
    endpoints: &[Endpoint],
    rt: &tokio::runtime::Runtime,
    timeout: Duration,
    event: &Event,
) {
    let body = body(event);
    for endpoint in endpoints {
        let counter = match deliver(endpoint, &body, rt, timeout) {
            Ok(()) => &shared.delivered,
            Err(why) => {
                // the origin only: a webhook's path and query are its secret
                tracing::warn!(
                    url = endpoint.origin(),
                    kind = event.kind.as_str(),
                    rollout = event.rollout.as_str(),
                    "notification not delivered: {why}"
                );
                &shared.failed
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// POST `body` to `endpoint`, retrying what may pass on a second try; why it did not.
fn deliver(endpoint: &Endpoint, body: &[u8], rt: &tokio::runtime::Runtime, timeout: Duration) -> Result<(), String> {
    let mut why = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(backoff(attempt));
        }
        let answer = rt.block_on(endpoint.post(
            endpoint.path(),
            "application/json",
            &[],
            body.to_vec(),
            timeout,
            MAX_ANSWER,
        ));
        why = match answer {
            Ok(r) if (200..300).contains(&r.status) => return Ok(()),
            Ok(r) if r.status >= 500 || r.status == 429 => format!("HTTP {}", r.status),
            Ok(r) => return Err(format!("HTTP {} (not retried)", r.status)),
            // the body does not matter, the status does
            Err(Failure::TooLarge { status, .. }) if (200..300).contains(&status) => return Ok(()),
            Err(Failure::TooLarge { status, .. }) if status >= 500 || status == 429 => format!("HTTP {status}"),
            Err(Failure::TooLarge { status, .. }) => return Err(format!("HTTP {status} (not retried)")),
            Err(Failure::Timeout) => format!("no answer within {timeout:?}"),
            Err(Failure::Unreachable(m)) => crate::diagnostic::visible(&m, &[]),
        };
    }
    Err(format!("{why} after {ATTEMPTS} attempts"))
}

/// 250 ms doubling per attempt, ±50 % jitter, so receivers that came back are not hit by
/// every sender at once.
fn backoff(attempt: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let base = 250u64 << (attempt - 1).min(6);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(attempt);
    Duration::from_millis(base / 2 + h.finish() % (base + 1))
}

/// The POST body: the event's JSON and `text`.
fn body(event: &Event) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'a> {
        #[serde(flatten)]
        event: &'a Event,
        text: String,
    }
    serde_json::to_vec(&Body {
        event,
        text: text(event),
    })
    .unwrap_or_default()
}

/// The one readable line of an event: "rampart reverted rollout `x` (plugin y 1.2.0 →
/// 1.3.0) on dir:/out: SLO error-rate 0.12 > 0.05 for 30s".
pub fn text(event: &Event) -> String {
    let what = match event.kind.as_str() {
        "revert" => "reverted",
        "promote" => "promoted",
        "pause" => "paused",
        "step" => "advanced",
        "inconclusive" => "holds (analysis inconclusive)",
        other => other,
    };
    let mut line = format!(
        "rampart {what} rollout `{}` (plugin {}) on {}",
        event.rollout, event.plugin, event.target
    );
    let detail = if event.message.is_empty() {
        summary(&event.checks)
    } else {
        event.message.clone()
    };
    if !detail.is_empty() {
        line.push_str(": ");
        line.push_str(&detail);
    }
    slack_escape(&crate::diagnostic::visible(&line, &[]))
}

/// The checks that did not pass, `SLO <reason>`, `; `-joined.
pub fn summary(checks: &[Check]) -> String {
    checks
        .iter()
        .filter(|c| c.verdict != Verdict::Pass)
        .map(|c| format!("SLO {}", c.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `&`, `<` and `>` as Slack's message text wants them (`<…>` would be a link or mention).
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn event() -> Event {
        Event {
            kind: "revert".into(),
            rollout: "x".into(),
            plugin: "y 1.2.0 → 1.3.0".into(),
            target: "dir:/out".into(),
            commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            message: String::new(),
            checks: vec![Check {
                slo: "error-rate".into(),
                verdict: Verdict::Fail,
                value: Some(0.12),
                requests: None,
                bound: "<= 0.05".into(),
                window: "30s".into(),
                query: "q".into(),
                time: 1_700_000_000,
                reason: "error-rate 0.12 > 0.05 for 30s".into(),
            }],
            time: "2023-11-14T22:13:20Z".into(),
        }
    }

    #[test]
    fn text_is_one_line() {
        assert_eq!(
            text(&event()),
            "rampart reverted rollout `x` (plugin y 1.2.0 → 1.3.0) on dir:/out: SLO error-rate 0.12 &gt; 0.05 for 30s"
        );
        let mut e = event();
        e.kind = "step".into();
        e.message = "weight 25 %\nnext <@here>".into();
        e.rollout = "a\u{202e}b".into();
        assert_eq!(
            text(&e),
            "rampart advanced rollout `a\\u{202e}b` (plugin y 1.2.0 → 1.3.0) on dir:/out: weight 25 %\\nnext &lt;@here&gt;"
        );
    }

    #[test]
    fn body_is_the_event_and_text() {
        let json: serde_json::Value = serde_json::from_slice(&body(&event())).unwrap();
        assert_eq!(json["kind"], "revert");
        assert_eq!(json["checks"][0]["verdict"], "fail");
        assert_eq!(json["time"], "2023-11-14T22:13:20Z");
        assert!(json["text"].as_str().unwrap().starts_with("rampart reverted"));
    }

    #[test]
    fn backoff_grows_with_jitter() {
        for attempt in 1..ATTEMPTS {
            let base = 250u64 << (attempt - 1);
            let b = backoff(attempt).as_millis() as u64;
            assert!((base / 2..=base * 3 / 2).contains(&b), "{attempt}: {b}");
        }
    }

    #[test]
    fn failures_are_logged_without_the_secret_part_of_the_url() {
        #[derive(Clone, Default)]
        struct Log(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Log {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let log = Log::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/services/T0/B0/SECRET?token=SECRET2");
        let rules = UrlRules {
            query: true,
            echo: false,
        };
        let endpoint = Endpoint::new(&url, rules, Duration::from_secs(1)).unwrap();
        let notifier = Notifier::new(vec![], Duration::from_secs(1)).unwrap();
        let rt = crate::http_client::runtime().unwrap();
        tracing::subscriber::with_default(subscriber, || {
            deliver_all(&notifier.shared, &[endpoint], &rt, Duration::from_secs(1), &event());
        });
        assert_eq!(notifier.failed(), 1);
        let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains(&format!("url=\"http://127.0.0.1:{port}\"")), "{text}");
        assert!(text.contains("after 3 attempts"), "{text}");
        assert!(!text.contains("SECRET") && !text.contains("/services"), "{text}");
    }

    #[test]
    fn urls_are_checked_without_echoing_them() {
        let err = Notifier::new(
            vec!["https://ok/".into(), "ftp://secret-hook".into()],
            Duration::from_secs(1),
        )
        .err()
        .unwrap();
        assert_eq!(err, "notification URL 2 is not an http:// or https:// URL");
    }
}
