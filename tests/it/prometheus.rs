//! The real Prometheus server for tests (Debian's `prometheus`, installed by .ci/run): it
//! scrapes the given `host:port` targets' `/metrics` every second, keeps its data in a
//! temporary directory, and is killed when dropped.
//!
//! ```ignore
//! let prom = Prometheus::start(&[target.as_str()]);
//! prom.wait_up(&target, Duration::from_secs(10))?;       // Err(lastError) on timeout
//! let v = prom.query("rampart_reconciles_total")?;       // /api/v1/query's JSON
//! ```

use crate::support::{http_get, serve, url_encode};
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's Prometheus binary.
pub const BINARY: &str = "/usr/bin/prometheus";

pub struct Prometheus {
    /// `127.0.0.1:PORT` of its web API.
    pub addr: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Prometheus {
    /// Start Prometheus scraping `targets` (`host:port`, path `/metrics`) every second, and
    /// wait until it is ready (`/-/ready`).
    pub fn start(targets: &[&str]) -> Prometheus {
        assert!(
            std::path::Path::new(BINARY).is_file(),
            "{BINARY}: missing (.ci/run installs Debian's prometheus)"
        );
        let dir = tempfile::tempdir().unwrap();
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: test\n    static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(BINARY)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .args(["--log.level=warn", "--web.enable-lifecycle"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        let mut prom = Prometheus { addr, child, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, _)) = http_get(&prom.addr, "/-/ready") {
                return prom;
            }
            if let Ok(Some(status)) = prom.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", prom.log());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready in 20 s:\n{}",
                prom.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What Prometheus logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// `GET path` of the web API; the JSON answer, or the status and body of a failure.
    fn api(&self, path: &str) -> Result<Value, String> {
        let (status, body) = http_get(&self.addr, path).map_err(|e| format!("GET {path}: {e}"))?;
        let json: Value = serde_json::from_str(&body).map_err(|e| format!("GET {path}: {status}: {e}: {body}"))?;
        if status != 200 || json["status"] != "success" {
            return Err(format!("GET {path}: {status}: {body}"));
        }
        Ok(json)
    }

    /// An instant query (`/api/v1/query`): the whole JSON answer
    /// (`{"status":"success","data":{"resultType":"vector","result":[…]}}`).
    pub fn query(&self, promql: &str) -> Result<Value, String> {
        self.api(&format!("/api/v1/query?query={}", url_encode(promql)))
    }

    /// The active target whose `instance` is `target` (`/api/v1/targets`), if it is listed:
    /// `health` (`up`, `down`, `unknown`), `lastError`, `lastScrape`, `scrapeUrl`, ….
    pub fn target(&self, target: &str) -> Result<Option<Value>, String> {
        let all = self.api("/api/v1/targets?state=active")?;
        Ok(all["data"]["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["labels"]["instance"] == target)
            .cloned())
    }

    /// Wait until `up{instance="target"}` is 1; on timeout, the target's `lastError` (or why
    /// there is none).
    pub fn wait_up(&self, target: &str, timeout: Duration) -> Result<(), String> {
        let query = format!("up{{instance=\"{target}\"}}");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let answer = self.query(&query)?;
            if answer["data"]["result"][0]["value"][1] == "1" {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(match self.target(target)? {
            Some(t) if t["lastError"].as_str().is_some_and(|e| !e.is_empty()) => {
                t["lastError"].as_str().unwrap().to_owned()
            }
            Some(t) => format!("not up after {timeout:?}, no scrape error: {t}"),
            None => format!("{target} is not a target"),
        })
    }

    /// Wait until a scrape of `target` failed: its `lastError` (`None` on timeout).
    pub fn wait_scrape_error(&self, target: &str, timeout: Duration) -> Result<Option<String>, String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(e) = self
                .target(target)?
                .and_then(|t| t["lastError"].as_str().map(str::to_owned))
                && !e.is_empty()
            {
                return Ok(Some(e));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(None)
    }
}

/// A `/metrics` endpoint answering `body` as OpenMetrics text.
fn exporter(body: &'static str) -> crate::support::Served {
    serve(axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || async move {
            (
                [(
                    "content-type",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                body,
            )
        }),
    ))
}

#[test]
fn prometheus_scrapes_openmetrics_and_reports_a_malformed_body() {
    let good = exporter(
        "# TYPE rampart_test_reconciles counter\n\
         # HELP rampart_test_reconciles Reconciles run.\n\
         rampart_test_reconciles_total{result=\"ok\"} 3\n\
         # EOF\n",
    );
    // (OpenMetrics requires the final `# EOF`)
    let bad = exporter("# TYPE rampart_test_broken counter\nrampart_test_broken_total 1\n");
    let (good_target, bad_target) = (good.addr.to_string(), bad.addr.to_string());
    let prom = Prometheus::start(&[&good_target, &bad_target]);

    prom.wait_up(&good_target, Duration::from_secs(15)).unwrap();
    let answer = prom.query("rampart_test_reconciles_total{result=\"ok\"}").unwrap();
    assert_eq!(answer["data"]["result"][0]["value"][1], "3", "{answer}");

    let error = prom
        .wait_scrape_error(&bad_target, Duration::from_secs(15))
        .unwrap()
        .expect("the malformed body fails its scrape");
    assert!(error.contains("EOF"), "{error}");
    let up = prom.query(&format!("up{{instance=\"{bad_target}\"}}")).unwrap();
    assert_eq!(up["data"]["result"][0]["value"][1], "0", "{up}");
    // and `wait_up` gives up with that error
    let err = prom.wait_up(&bad_target, Duration::from_millis(500)).unwrap_err();
    assert!(err.contains("EOF"), "{err}");
}
