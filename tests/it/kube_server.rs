//! A real kube-apiserver + etcd per test (`scripts/kube-test-server`), and a loopback HTTP
//! proxy in front of it that logs every request and can answer some with 429 or 503.

use crate::support::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where `scripts/kube-test-server build` put the binaries.
fn cache() -> PathBuf {
    std::env::var_os("RAMPART_KUBE_CACHE").map_or_else(|| root().join(".ci/kube"), PathBuf::from)
}

/// One API server (and its etcd) in a temporary directory; stopped when dropped, also when
/// the test panics.
pub struct KubeServer {
    dir: tempfile::TempDir,
}

impl KubeServer {
    /// With the Gateway API CRDs installed (as the example's HTTPRoutes need).
    pub fn start() -> KubeServer {
        KubeServer::start_with(&[])
    }

    /// Without any CRD: the cluster does not serve HTTPRoute.
    pub fn start_without_gateway_api() -> KubeServer {
        KubeServer::start_with(&["--no-gateway-crds"])
    }

    fn start_with(extra: &[&str]) -> KubeServer {
        let bin = cache().join("bin");
        for b in ["kube-apiserver", "etcd"] {
            assert!(
                bin.join(b).is_file(),
                "{}: missing. The kube:: tests need a real kube-apiserver and etcd, built from Go modules \
                 by `scripts/kube-test-server build` (~7 min cold; scripts/test builds them before running \
                 the tests). Set RAMPART_KUBE_CACHE to use binaries built elsewhere.",
                bin.join(b).display()
            );
        }
        let dir = tempfile::Builder::new().prefix("kube-test-").tempdir().unwrap();
        let started = Instant::now();
        let out = Command::new(root().join("scripts/kube-test-server"))
            .arg("start")
            .arg(dir.path())
            .args(extra)
            .env("RAMPART_KUBE_CACHE", cache())
            .stdin(Stdio::null())
            .output()
            .expect("scripts/kube-test-server runs");
        // (from here on, Drop stops whatever the script left running)
        let server = KubeServer { dir };
        assert!(
            out.status.success(),
            "scripts/kube-test-server start failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("kube-test-server started in {:.1} s", started.elapsed().as_secs_f64());
        server
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The admin kubeconfig (contexts `test`, the current one, and `limited`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir().join("kubeconfig")
    }

    pub fn kubeconfig_str(&self) -> String {
        self.kubeconfig().to_str().unwrap().to_owned()
    }

    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.dir().join("admin.token")).unwrap()
    }

    fn script(&self, cmd: &str) {
        let out = Command::new(root().join("scripts/kube-test-server"))
            .arg(cmd)
            .arg(self.dir())
            .env("RAMPART_KUBE_CACHE", cache())
            .stdin(Stdio::null())
            .output()
            .expect("scripts/kube-test-server runs");
        assert!(
            out.status.success(),
            "kube-test-server {cmd} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `kill -9` the API server (etcd keeps the data).
    pub fn kill_apiserver(&self) {
        self.script("kill-apiserver");
    }

    /// Start the API server again on the same port, and wait until it is ready.
    pub fn restart_apiserver(&self) {
        self.script("restart-apiserver");
    }

    /// Run kubectl as admin; its output, whatever the exit status.
    pub fn kubectl_output(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None)
    }

    fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = Command::new(kubectl())
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        if let Some(text) = stdin {
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Run kubectl as admin; its stdout (panics if it fails).
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = self.kubectl_output(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `kubectl apply --server-side -f -` of `yaml`, as admin.
    pub fn kubectl_apply(&self, yaml: &str) -> String {
        let out = self.kubectl_stdin(
            &["apply", "--server-side", "--field-manager=test-admin", "-f", "-"],
            Some(yaml),
        );
        assert!(
            out.status.success(),
            "kubectl apply failed: {}\n{yaml}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// One object as JSON (with its managedFields), `None` when it does not exist.
    pub fn get(&self, resource: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let mut args = vec!["get", resource, name, "-o", "json", "--show-managed-fields"];
        if let Some(ns) = namespace {
            args.extend(["-n", ns]);
        }
        let out = self.kubectl_output(&args);
        if out.status.success() {
            return Some(serde_json::from_slice(&out.stdout).unwrap());
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("NotFound") || err.contains("not found"),
            "kubectl {args:?}: {err}"
        );
        None
    }

    /// Every object of these resources (`deployments.apps`, …) in every namespace, by
    /// (kind, namespace, name).
    pub fn list(&self, resources: &BTreeSet<String>) -> BTreeMap<ObjectKey, Value> {
        let joined = resources.iter().cloned().collect::<Vec<_>>().join(",");
        let text = self.kubectl(&["get", &joined, "-A", "-o", "json", "--show-managed-fields"]);
        let list: Value = serde_json::from_str(&text).unwrap();
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| (ObjectKey::of(o), o.clone()))
            .collect()
    }

    /// The inventory: the root's data and the objects its shards list.
    pub fn inventory(&self) -> Option<(BTreeMap<String, String>, BTreeSet<ObjectKey>)> {
        let root = self.get("configmap", Some("rampart-system"), "rampart-inventory")?;
        let data: BTreeMap<String, String> = serde_json::from_value(root["data"].clone()).unwrap_or_default();
        let shards: usize = data.get("shards").map_or(0, |s| s.parse().unwrap());
        let mut objects = BTreeSet::new();
        for i in 0..shards {
            let shard = self
                .get("configmap", Some("rampart-system"), &format!("rampart-inventory-{i}"))
                .unwrap_or_else(|| panic!("inventory shard {i} missing"));
            for line in shard["data"]["objects"].as_str().unwrap_or("").lines() {
                // DIGEST APIVERSION KIND NAMESPACE NAME[ adopted]
                let f: Vec<&str> = line.split(' ').collect();
                assert!(
                    f.len() == 5 || (f.len() == 6 && f[5] == "adopted"),
                    "inventory line {line:?}"
                );
                objects.insert(ObjectKey {
                    group: group_of(f[1]).to_owned(),
                    kind: f[2].to_owned(),
                    namespace: (f[3] != "-").then(|| f[3].to_owned()),
                    name: f[4].to_owned(),
                });
            }
        }
        Some((data, objects))
    }

    /// Write requests the API server counted (`apiserver_request_total`) on these resources:
    /// every verb but GET, LIST and WATCH.
    pub fn write_requests(&self, resources: &BTreeSet<String>) -> u64 {
        let text = self.kubectl(&["get", "--raw", "/metrics"]);
        // `deployment.apps` → `deployment`; the metric says `deployments`, `networkpolicies`
        let plain: BTreeSet<&str> = resources.iter().map(|r| r.split('.').next().unwrap()).collect();
        let singular = |r: &str| match r.strip_suffix("ies") {
            Some(stem) => format!("{stem}y"),
            None => r.strip_suffix('s').unwrap_or(r).to_owned(),
        };
        text.lines()
            .filter(|l| l.starts_with("apiserver_request_total{"))
            .filter(|l| {
                let label = |k: &str| {
                    l.split_once(&format!("{k}=\""))
                        .and_then(|(_, r)| r.split_once('"'))
                        .map(|(v, _)| v.to_owned())
                        .unwrap_or_default()
                };
                !matches!(label("verb").as_str(), "GET" | "LIST" | "WATCH" | "")
                    && plain.contains(singular(&label("resource")).as_str())
                    && label("dry_run").is_empty()
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
            .sum()
    }
}

impl Drop for KubeServer {
    fn drop(&mut self) {
        let _ = Command::new(root().join("scripts/kube-test-server"))
            .arg("stop")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// An object's identity as the inventory keeps it: API group (not version), kind, namespace
/// and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectKey {
    pub group: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    pub fn of(o: &Value) -> ObjectKey {
        ObjectKey {
            group: group_of(o["apiVersion"].as_str().unwrap()).to_owned(),
            kind: o["kind"].as_str().unwrap().to_owned(),
            namespace: o["metadata"]["namespace"].as_str().map(str::to_owned),
            name: o["metadata"]["name"].as_str().unwrap().to_owned(),
        }
    }

    /// How kubectl names the resource: `deployment.apps`, `configmap`.
    pub fn resource(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_lowercase()
        } else {
            format!("{}.{}", self.kind.to_lowercase(), self.group)
        }
    }

    /// How rampart names it in messages: `Deployment.apps sandbox/portal`.
    pub fn display(&self) -> String {
        let kind = if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        };
        match &self.namespace {
            Some(ns) => format!("{kind} {ns}/{}", self.name),
            None => format!("{kind} {}", self.name),
        }
    }
}

fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

/// One request the proxy saw.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    /// Path and query.
    pub path: String,
    pub status: u16,
    /// Answered by the proxy itself (an injected failure).
    pub injected: bool,
    /// When it arrived.
    pub at: Instant,
}

impl Logged {
    /// A call that changes something (not a read, not a dry run).
    pub fn is_write(&self) -> bool {
        self.method != "GET" && !self.path.contains("dryRun=")
    }
}

type Matcher = Box<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// Requests to answer with a failure instead of forwarding them.
struct Fault {
    matches: Matcher,
    status: u16,
    retry_after: Option<u64>,
    /// How many more (`None`: forever).
    left: Option<usize>,
}

#[derive(Default)]
struct ProxyState {
    log: Mutex<Vec<Logged>>,
    faults: Mutex<Vec<Fault>>,
}

/// Plain HTTP on a loopback port, forwarded over TLS to the API server with the admin
/// token (kube's own client, trusting the server's CA).
pub struct Proxy {
    state: Arc<ProxyState>,
    stop: Arc<AtomicBool>,
    kubeconfig: tempfile::NamedTempFile,
}

impl Proxy {
    pub fn start(server: &KubeServer) -> Proxy {
        let state = Arc::new(ProxyState::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let (st, stopped, upstream) = (state.clone(), stop.clone(), server.kubeconfig());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let kc = kube::config::Kubeconfig::read_from(&upstream).unwrap();
                let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                    .await
                    .unwrap();
                let client = kube::Client::try_from(config).unwrap();
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
                    let (client, st) = (client.clone(), st.clone());
                    async move { forward(client, st, req).await }
                });
                let until_dropped = async move {
                    while !stopped.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                };
                axum::serve(listener, app)
                    .with_graceful_shutdown(until_dropped)
                    .await
                    .unwrap();
            });
        });
        let addr = rx.recv_timeout(Duration::from_secs(20)).expect("the proxy starts");
        let mut kubeconfig = tempfile::NamedTempFile::new().unwrap();
        use std::io::Write;
        write!(
            kubeconfig,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: proxy\n  cluster:\n    server: http://{addr}\n\
             users:\n- name: admin\n  user:\n    token: {}\ncontexts:\n- name: proxy\n  context:\n    cluster: proxy\n    user: admin\n\
             current-context: proxy\n",
            server.admin_token()
        )
        .unwrap();
        Proxy {
            state,
            stop,
            kubeconfig,
        }
    }

    /// A kubeconfig whose current context (`proxy`) goes through this proxy as admin.
    pub fn kubeconfig(&self) -> String {
        self.kubeconfig.path().to_str().unwrap().to_owned()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Logged> {
        self.state.log.lock().unwrap().clone()
    }

    /// Every write so far (not reads, not dry runs), injected failures included.
    pub fn writes(&self) -> Vec<Logged> {
        self.requests().into_iter().filter(Logged::is_write).collect()
    }

    /// Answer the next `n` requests (`None`: all of them, forever) that `matches(method,
    /// path)` with `status` (a Status JSON; with `retry_after`, its `details.retryAfterSeconds`
    /// and a `Retry-After` header). Faults are tried in the order they were added.
    pub fn fail(
        &self,
        n: Option<usize>,
        status: u16,
        retry_after: Option<u64>,
        matches: impl Fn(&str, &str) -> bool + Send + Sync + 'static,
    ) {
        self.state.faults.lock().unwrap().push(Fault {
            matches: Box::new(matches),
            status,
            retry_after,
            left: n,
        });
    }

    /// Forward everything again.
    pub fn heal(&self) {
        self.state.faults.lock().unwrap().clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn forward(client: kube::Client, st: Arc<ProxyState>, req: axum::extract::Request) -> axum::response::Response {
    use axum::http::{HeaderValue, StatusCode, header};
    let method = req.method().as_str().to_owned();
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    let at = Instant::now();
    let log = |status: u16, injected: bool| {
        st.log.lock().unwrap().push(Logged {
            method: method.clone(),
            path: path.clone(),
            status,
            injected,
            at,
        })
    };
    let injected = {
        let mut faults = st.faults.lock().unwrap();
        faults
            .iter_mut()
            .find(|f| f.left != Some(0) && (f.matches)(&method, &path))
            .map(|f| {
                if let Some(n) = &mut f.left {
                    *n -= 1;
                }
                (f.status, f.retry_after)
            })
    };
    if let Some((status, retry_after)) = injected {
        log(status, true);
        let reason = if status == 429 {
            "TooManyRequests"
        } else {
            "ServiceUnavailable"
        };
        let mut body = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("injected by the test proxy: {status}"), "reason": reason, "code": status,
        });
        if let Some(s) = retry_after {
            body["details"] = serde_json::json!({"retryAfterSeconds": s});
        }
        let mut resp = axum::response::Response::new(axum::body::Body::from(body.to_string()));
        *resp.status_mut() = StatusCode::from_u16(status).unwrap();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(s) = retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        return resp;
    }
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, 64 << 20).await {
        Ok(b) => b,
        Err(_) => {
            log(400, true);
            return axum::response::IntoResponse::into_response(StatusCode::BAD_REQUEST);
        }
    };
    let mut out = axum::http::Request::builder().method(parts.method).uri(&path);
    for (k, v) in &parts.headers {
        if !matches!(
            k.as_str(),
            "host" | "authorization" | "content-length" | "connection" | "accept-encoding" | "transfer-encoding"
        ) {
            out = out.header(k, v);
        }
    }
    let req = out.body(kube::client::Body::from(bytes)).unwrap();
    match client.send(req).await {
        Ok(resp) => {
            log(resp.status().as_u16(), false);
            let (parts, body) = resp.into_parts();
            axum::response::Response::from_parts(parts, axum::body::Body::new(body))
        }
        Err(e) => {
            log(502, true);
            let mut resp = axum::response::Response::new(axum::body::Body::from(format!("proxy: {e}")));
            *resp.status_mut() = StatusCode::BAD_GATEWAY;
            resp
        }
    }
}

/// Wait until `cond` holds, polling every 100 ms; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
