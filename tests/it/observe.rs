//! SLO analysis against the real Prometheus scraping `slo_exporter`, the Prometheus client
//! against a fake that answers what real servers may (errors, junk, too much, nothing), and
//! webhook notifications against loopback receivers.

use crate::prometheus::Prometheus;
use crate::slo_exporter::SloExporter;
use crate::support::serve;
use axum::http::{HeaderMap, StatusCode};
use rampart::notify::{Event, Notifier};
use rampart::observe::analysis::{Check, Verdict};
use rampart::observe::{measure, prometheus::Client};
use rampart::spec::Slo;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

const SEC: Duration = Duration::from_secs(1);

fn now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn error_ratio(instance: &str) -> String {
    format!(
        "sum(rate(http_requests_total{{instance=\"{instance}\",code=\"500\"}}[3s])) / \
         sum(rate(http_requests_total{{instance=\"{instance}\"}}[3s]))"
    )
}

fn slo(name: &str, query: &str, max: f64, for_: &str) -> Slo {
    Slo {
        name: name.into(),
        query: query.into(),
        max: Some(max),
        min: None,
        for_: for_.into(),
        min_requests: None,
        requests: None,
    }
}

/// Measure every 250 ms until `done` holds for a check (or 20 s pass): every check, in order.
fn measure_until(client: &Client, slo: &Slo, done: impl Fn(&Check) -> bool) -> Vec<(Instant, Check)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let check = measure(client, slo, now(), SEC, Duration::from_secs(5));
        let stop = done(&check);
        seen.push((Instant::now(), check));
        if stop {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "gave up; checks: {:#?}",
            seen.iter().map(|s| &s.1).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn slo_passes_then_breaches_then_fails_after_its_window() {
    let app = SloExporter::start(50.0, 0.0);
    let prom = Prometheus::start(&[&app.target()]);
    prom.wait_up(&app.target(), Duration::from_secs(15)).unwrap();
    let client = Client::new(&format!("http://{}", prom.addr), None).unwrap();

    let errors = slo("error-rate", &error_ratio(&app.target()), 0.05, "3s");
    let pass = measure_until(&client, &errors, |c| c.verdict == Verdict::Pass);
    let c = &pass.last().unwrap().1;
    assert_eq!(
        (c.value, c.bound.as_str(), c.window.as_str()),
        (Some(0.0), "<= 0.05", "3s")
    );
    let latency = slo(
        "p90-latency",
        "histogram_quantile(0.9, sum by (le) (rate(http_request_duration_seconds_bucket[3s])))",
        0.1,
        "3s",
    );
    measure_until(&client, &latency, |c| c.verdict == Verdict::Pass);
    app.set_latency(0.3);
    measure_until(&client, &latency, |c| c.verdict != Verdict::Pass);

    app.set(50.0, 0.5);
    let seen = measure_until(&client, &errors, |c| c.verdict == Verdict::Fail);
    let verdicts: Vec<Verdict> = seen.iter().map(|s| s.1.verdict).collect();
    let first_breach = verdicts
        .iter()
        .position(|v| *v == Verdict::Breaching)
        .expect("breaching before fail");
    assert!(
        verdicts[first_breach..]
            .iter()
            .all(|v| matches!(v, Verdict::Breaching | Verdict::Fail)),
        "{verdicts:?}"
    );
    let (failed_at, fail) = seen.last().unwrap();
    assert!(
        failed_at.duration_since(seen[first_breach].0) >= Duration::from_secs(2),
        "failed before the 3 s window breached: {verdicts:?}"
    );
    let value = fail.value.unwrap();
    assert!((0.3..=0.7).contains(&value), "{fail:?}");
    assert!(
        fail.reason.starts_with("error-rate 0.") && fail.reason.ends_with(" > 0.05 for 3s"),
        "{fail:?}"
    );
    // a restarted process decides the same from Prometheus alone
    assert_eq!(measure(&client, &errors, now(), SEC, SEC).verdict, Verdict::Fail);
}

#[test]
fn slo_is_inconclusive_without_enough_data() {
    let idle = SloExporter::start(0.0, 0.0);
    let quiet = SloExporter::start(2.0, 0.0);
    let prom = Prometheus::start(&[&idle.target(), &quiet.target()]);
    prom.wait_up(&idle.target(), Duration::from_secs(15)).unwrap();
    prom.wait_up(&quiet.target(), Duration::from_secs(15)).unwrap();
    let client = Client::new(&format!("http://{}/", prom.addr), None).unwrap();
    let inconclusive = |c: &Check, reason: &str| c.verdict == Verdict::Inconclusive && c.reason.contains(reason);

    // 0/0 with no traffic: NaN (before the rate has two samples, there is no data at all)
    let nan = slo("error-rate", &error_ratio(&idle.target()), 0.05, "3s");
    measure_until(&client, &nan, |c| inconclusive(c, "the latest value is NaN"));

    let missing = slo("missing", "sum(rate(no_such_metric_total[3s]))", 1.0, "3s");
    let c = measure(&client, &missing, now(), SEC, SEC);
    assert!(inconclusive(&c, "the query returned no data"), "{c:?}");

    let two = slo("per-instance", "http_requests_total{code=\"200\"}", 1e9, "3s");
    let c = measure(&client, &two, now(), SEC, SEC);
    assert!(
        inconclusive(&c, "returned 2 series; the query must return one number"),
        "{c:?}"
    );

    let broken = slo("broken", "sum(rate(", 1.0, "3s");
    let c = measure(&client, &broken, now(), SEC, SEC);
    assert!(inconclusive(&c, "prometheus bad-query: "), "{c:?}");

    // 2 requests/s: about 6 in the window, fewer than 1000
    let mut few = slo("error-rate", &error_ratio(&quiet.target()), 0.05, "3s");
    few.min_requests = Some(1000);
    few.requests = Some(format!(
        "sum(increase(http_requests_total{{instance=\"{}\"}}[3s]))",
        quiet.target()
    ));
    let seen = measure_until(&client, &few, |c| inconclusive(c, "fewer than minRequests 1000"));
    let c = &seen.last().unwrap().1;
    assert!(c.requests.is_some_and(|n| n < 20.0), "{c:?}");
    assert_eq!(c.value, Some(0.0), "{c:?}");
    few.min_requests = Some(1);
    measure_until(&client, &few, |c| c.verdict == Verdict::Pass);
}

#[test]
fn slo_is_inconclusive_when_prometheus_is_down() {
    let app = SloExporter::start(50.0, 0.0);
    let prom = Prometheus::start(&[&app.target()]);
    let client = Client::new(&format!("http://{}", prom.addr), None).unwrap();
    let errors = slo("error-rate", &error_ratio(&app.target()), 0.05, "3s");
    let c = measure(&client, &errors, now(), SEC, SEC);
    assert!(!c.reason.contains("prometheus"), "{c:?}");
    drop(prom);
    let c = measure(&client, &errors, now(), SEC, SEC);
    assert_eq!(c.verdict, Verdict::Inconclusive);
    assert!(
        c.reason
            .starts_with("error-rate: prometheus unreachable: http://127.0.0.1:"),
        "{c:?}"
    );
}

/// What the fake Prometheus saw: the form of each call, and its Authorization header.
type Seen = Arc<Mutex<Vec<(String, HashMap<String, String>, Option<String>)>>>;

/// A fake Prometheus under `/prom` whose answer depends on the query's text.
fn fake_prometheus(seen: Seen) -> crate::support::Served {
    let handler = move |uri: axum::http::Uri,
                        headers: HeaderMap,
                        axum::Form(form): axum::Form<HashMap<String, String>>| {
        let auth = headers.get("authorization").map(|v| v.to_str().unwrap().to_owned());
        seen.lock()
            .unwrap()
            .push((uri.path().to_owned(), form.clone(), auth.clone()));
        async move {
            let query = form.get("query").cloned().unwrap_or_default();
            let json = |status: u16, body: String| {
                (
                    StatusCode::from_u16(status).unwrap(),
                    [("content-type", "application/json")],
                    body,
                )
            };
            match query.as_str() {
                "bad" => json(400, r#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#.into()),
                "down" => json(503, "upstream \u{1b}[31mdown".into()),
                "junk" => json(200, "<html>not prometheus</html>".into()),
                "huge" => json(200, format!(r#"{{"status":"success","data":{{"resultType":"vector","result":[],"pad":"{}"}}}}"#, "x".repeat(5 << 20))),
                "echo" => json(401, format!("unauthorized: {}", auth.unwrap_or_default())),
                "slow" => {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    json(200, String::new())
                }
                _ => json(
                    200,
                    r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"a":"b"},"values":[[10,"0.5"],[11,"NaN"],[12,"+Inf"]]}]}}"#.into(),
                ),
            }
        }
    };
    serve(
        axum::Router::new()
            .route("/prom/api/v1/query_range", axum::routing::post(handler.clone()))
            .route("/prom/api/v1/query", axum::routing::post(handler)),
    )
}

#[test]
fn prometheus_client_sends_the_query_as_a_form_and_classifies_failures() {
    let seen: Seen = Arc::default();
    let fake = fake_prometheus(seen.clone());
    let client = Client::new(&format!("{}/prom/", fake.url()), Some("s3cret".into())).unwrap();
    let t = Duration::from_secs(2);

    let promql = "sum(rate(x{code=~\"5..\",a=\"&b=c+d %\"}[1m])) # \u{e9}";
    let series = client
        .query_range(promql, 100.5, Duration::from_secs(30), Duration::from_millis(1500), t)
        .unwrap();
    assert_eq!(series.len(), 1);
    assert_eq!(series[0].labels["a"], "b");
    let p = &series[0].points;
    assert_eq!((p[0], p[2]), ((10.0, 0.5), (12.0, f64::INFINITY)));
    assert!(p[1].1.is_nan());
    {
        let seen = seen.lock().unwrap();
        let (path, form, auth) = &seen[0];
        assert_eq!(path, "/prom/api/v1/query_range");
        assert_eq!(form["query"], promql);
        assert_eq!(
            (form["start"].as_str(), form["end"].as_str(), form["step"].as_str()),
            ("70.5", "100.5", "1.5")
        );
        assert_eq!(auth.as_deref(), Some("Bearer s3cret"));
    }
    client.query("up", 7.0, t).unwrap();
    assert_eq!(seen.lock().unwrap()[1].1["time"], "7");

    for (query, kind, message) in [
        ("bad", "bad-query", "HTTP 400: bad_data: parse error at char 5"),
        ("down", "http-status", "HTTP 503: upstream \\u{1b}[31mdown"),
        ("junk", "bad-response", "not Prometheus' JSON"),
        ("huge", "too-large", "larger than 4194304 bytes"),
        ("echo", "http-status", "HTTP 401: unauthorized: Bearer <token>"),
    ] {
        let err = client.query(query, 1.0, t).unwrap_err();
        assert_eq!(err.kind, kind, "{query}: {err}");
        assert!(err.message.contains(message), "{query}: {err}");
        assert!(!err.message.contains("s3cret"), "{query}: {err}");
    }
    let started = Instant::now();
    let err = client.query("slow", 1.0, Duration::from_millis(300)).unwrap_err();
    assert_eq!(err.kind, "timeout", "{err}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

fn event() -> Event {
    Event {
        kind: "revert".into(),
        rollout: "search-canary".into(),
        plugin: "search 1.2.0 → 1.3.0".into(),
        target: "dir:/out".into(),
        commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        message: String::new(),
        checks: vec![Check {
            slo: "error-rate".into(),
            verdict: Verdict::Fail,
            value: Some(0.12),
            requests: Some(480.0),
            bound: "<= 0.05".into(),
            window: "30s".into(),
            query: "sum(rate(errors[1m]))".into(),
            time: 1_700_000_000,
            reason: "error-rate 0.12 > 0.05 for 30s".into(),
        }],
        time: "2023-11-14T22:13:20Z".into(),
    }
}

/// A webhook receiver answering each POST with the next of `statuses` (then 200), after
/// `delay`: the bodies it got.
fn receiver(statuses: Vec<u16>, delay: Duration) -> (crate::support::Served, Arc<Mutex<Vec<String>>>) {
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let answers = Arc::new(Mutex::new(statuses.into_iter()));
    let seen = got.clone();
    let served = serve(axum::Router::new().route(
        "/hooks/T0/SECRET",
        axum::routing::post(move |body: String| {
            seen.lock().unwrap().push(body);
            let status = answers.lock().unwrap().next().unwrap_or(200);
            async move {
                tokio::time::sleep(delay).await;
                StatusCode::from_u16(status).unwrap()
            }
        }),
    ));
    (served, got)
}

#[test]
fn notifications_are_retried_after_a_503_and_carry_the_event_and_text() {
    let (hook, got) = receiver(vec![503], Duration::ZERO);
    let (refusing, refused) = receiver(vec![404], Duration::ZERO);
    let urls = vec![
        format!("{}/hooks/T0/SECRET", hook.url()),
        format!("{}/hooks/T0/SECRET", refusing.url()),
    ];
    let notifier = Notifier::new(urls, Duration::from_secs(2)).unwrap();
    notifier.send(event());
    assert!(notifier.flush(Duration::from_secs(10)));
    assert_eq!((notifier.delivered(), notifier.failed(), notifier.dropped()), (1, 1, 0));
    // a 404 is not retried
    assert_eq!(refused.lock().unwrap().len(), 1);

    let got = got.lock().unwrap();
    assert_eq!(got.len(), 2, "one 503, then the delivery");
    assert_eq!(got[0], got[1]);
    let body: serde_json::Value = serde_json::from_str(&got[1]).unwrap();
    assert_eq!(body["kind"], "revert");
    assert_eq!(body["rollout"], "search-canary");
    assert_eq!(body["commit"], "0123456789abcdef0123456789abcdef01234567");
    assert_eq!(body["checks"][0]["verdict"], "fail");
    assert_eq!(body["checks"][0]["requests"], 480.0);
    assert_eq!(
        body["text"],
        "rampart reverted rollout `search-canary` (plugin search 1.2.0 → 1.3.0) on dir:/out: \
         SLO error-rate 0.12 &gt; 0.05 for 30s"
    );
}

#[test]
fn notifications_to_a_dead_receiver_fail_without_blocking() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let notifier = Notifier::new(vec![format!("http://127.0.0.1:{port}/hooks/T0/SECRET")], SEC).unwrap();
    let started = Instant::now();
    notifier.send(event());
    assert!(started.elapsed() < Duration::from_millis(50), "{:?}", started.elapsed());
    assert!(notifier.flush(Duration::from_secs(10)));
    assert_eq!((notifier.delivered(), notifier.failed()), (0, 1));

    // a slow receiver and a burst: the queue keeps the newest, the caller never waits
    let (slow, _) = receiver(vec![], Duration::from_secs(1));
    let notifier = Notifier::new(vec![format!("{}/hooks/T0/SECRET", slow.url())], Duration::from_secs(5)).unwrap();
    let started = Instant::now();
    for _ in 0..rampart::notify::QUEUE + 20 {
        notifier.send(event());
    }
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
    assert!(notifier.dropped() >= 19, "{}", notifier.dropped());
}
