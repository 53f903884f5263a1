//! `rampart serve` as real processes against real Git remotes (bare repositories over
//! `file://`, and over smart HTTP through `git http-backend`), the local GitHub API and the
//! real Prometheus: pushes applied by webhook and by poll, denied commits, rewritten history,
//! unreachable remotes, crashes in the middle of an apply, concurrent services and bursts.

use crate::git_http::GitHttp;
use crate::github_fake::{self, FakePull, World};
use crate::prometheus::Prometheus;
use crate::support::*;
use rampart::github::webhook::sign;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "serve test webhook secret";
const ALICE: &str = "Alice <alice@example.com>";
const EVE: &str = "Eve <eve@evil.example>";

/// The example config repo in a work tree (`work`) with a bare remote (`remote.git`) it pushes
/// to, in one temporary directory that also holds the services' state and outputs.
pub(crate) struct Fixture {
    pub(crate) dir: tempfile::TempDir,
}

impl Fixture {
    pub(crate) fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        copy_tree(&root().join("examples/platform-config"), &work);
        git_as(&work, ALICE, &["init", "-q", "-b", "main"]);
        commit(&work, ALICE, "import the example");
        let remote = dir.path().join("remote.git");
        git_as(
            dir.path(),
            ALICE,
            &[
                "clone",
                "-q",
                "--bare",
                work.to_str().unwrap(),
                remote.to_str().unwrap(),
            ],
        );
        git_as(&work, ALICE, &["remote", "add", "origin", remote.to_str().unwrap()]);
        Fixture { dir }
    }

    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub(crate) fn work(&self) -> PathBuf {
        self.path("work")
    }

    pub(crate) fn remote(&self) -> String {
        self.path("remote.git").to_str().unwrap().to_owned()
    }

    /// The work tree's HEAD.
    pub(crate) fn head(&self) -> String {
        git_as(&self.work(), ALICE, &["rev-parse", "HEAD"])
    }

    /// Commit what `change` does to the work tree as `author`, push it; the new commit.
    pub(crate) fn push(&self, author: &str, message: &str, change: impl FnOnce(&Path)) -> String {
        change(&self.work());
        commit(&self.work(), author, message);
        git_as(&self.work(), ALICE, &["push", "-q", "origin", "HEAD:main"]);
        self.head()
    }

    /// Commit what `change` does as `author` on `base` (the history rewritten) and
    /// force-push it; the new commit.
    fn rewrite(&self, base: &str, author: &str, message: &str, change: impl FnOnce(&Path)) -> String {
        git_as(&self.work(), ALICE, &["reset", "-q", "--hard", base]);
        change(&self.work());
        commit(&self.work(), author, message);
        git_as(&self.work(), ALICE, &["push", "-q", "-f", "origin", "HEAD:main"]);
        self.head()
    }

    /// Git in the bare remote.
    fn remote_git(&self, args: &[&str]) -> String {
        let git_dir = self.path("remote.git");
        let mut all = vec!["--git-dir", git_dir.to_str().unwrap()];
        all.extend_from_slice(args);
        git_as(self.dir.path(), ALICE, &all)
    }

    /// The `Rampart-Source` of every commit on the remote's deploy branch, newest first.
    fn deploy_sources(&self, branch: &str) -> Vec<String> {
        self.remote_git(&["log", "--format=%(trailers:key=Rampart-Source,valueonly)%x00", branch])
            .split('\0')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Push a deploy commit of `tree` (evaluated after fetching the remote's `rendered` into
    /// the work tree's FETCH_HEAD) on top of `rendered`, claiming `claims` was applied.
    fn forge_deploy(&self, tree: &str, claims: &str) {
        let work = self.work();
        git_as(&work, ALICE, &["fetch", "-q", "origin", "rendered"]);
        let message = format!(
            "rampart: apply {}\n\nRampart-Source: {claims}\nRampart-Decision: allowed\n",
            &claims[..12]
        );
        let forged = git_as(&work, ALICE, &["commit-tree", tree, "-p", "FETCH_HEAD", "-m", &message]);
        git_as(
            &work,
            ALICE,
            &["push", "-q", "origin", &format!("{forged}:refs/heads/rendered")],
        );
    }

    /// The full message of the deploy branch's tip.
    fn deploy_tip_message(&self, branch: &str) -> String {
        self.remote_git(&["log", "-1", "--format=%B", branch])
    }

    /// The note on `commit` in the remote, parsed.
    fn note(&self, commit: &str) -> Value {
        let text = self.remote_git(&["notes", "--ref", "rampart", "show", commit]);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("the note on {commit}: {e}\n{text}"))
    }

    /// The commit a dir target's state file records.
    fn state_commit(&self, out: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.path(&format!("{out}.rampart-state.json"))).ok()?;
        let v: Value = serde_json::from_str(&text).unwrap();
        v["commit"].as_str().map(str::to_owned)
    }

    /// A `serve --once` process with `extra` flags (state under `state`), its stderr piped.
    fn spawn_once(&self, state: &str, extra: &[&str]) -> Child {
        let state = self.path(state);
        Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args(["serve", "--once", "--repo", &self.remote(), "--state-dir"])
            .arg(state)
            .args(extra)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// `serve --once` with the targets and flags given (state under `state`).
    pub(crate) fn once(&self, state: &str, extra: &[&str], env: &[(&str, &str)]) -> Run {
        let state = self.path(state);
        let remote = self.remote();
        let mut args = vec![
            "serve",
            "--once",
            "--repo",
            &remote,
            "--state-dir",
            state.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        rampart_env(&args, Some(self.dir.path()), env)
    }
}

/// Edit the sandbox's description (an allowed change for a platform member).
pub(crate) fn describe(n: usize) -> impl FnOnce(&Path) {
    move |p: &Path| {
        let file = p.join("tenants/sandbox.yaml");
        let text = std::fs::read_to_string(&file).unwrap();
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("  description:") {
                    format!("  description: Throwaway portal, revision {n}.")
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        write(&file, text + "\n");
    }
}

/// A loopback port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

/// A running `rampart serve`; killed (and reaped) when dropped.
pub(crate) struct Service {
    addr: String,
    child: Child,
    log: PathBuf,
    _logdir: tempfile::TempDir,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    /// Start `serve` on a free port with `args` (no `--listen`), and wait until it answers.
    pub(crate) fn start(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Service {
        let logdir = tempfile::tempdir().unwrap();
        let log = logdir.path().join("stderr");
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_rampart"))
            .arg("serve")
            .args(args)
            .args(["--listen", &addr, "--log-format", "json"])
            .current_dir(cwd)
            .env_remove("RAMPART_WEBHOOK_SECRET")
            .env_remove("GITHUB_TOKEN")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut s = Service {
            addr,
            child,
            log,
            _logdir: logdir,
        };
        s.wait("the service answers", Duration::from_secs(20), |s| {
            http_get(&s.addr, "/healthz").is_ok_and(|(c, _)| c == 200)
        });
        s
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn status(&self) -> Value {
        let (code, body) = http_get(&self.addr, "/api/v1/status").unwrap();
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    pub(crate) fn target(&self, name: &str) -> Value {
        self.status()["targets"]
            .as_array()
            .unwrap()
            .iter()
            // (a dir target is named by its absolute path)
            .find(|t| {
                t["name"].as_str().is_some_and(|n| {
                    n.ends_with(name)
                        || name
                            .strip_prefix("dir:")
                            .is_some_and(|p| n.starts_with("dir:/") && n.ends_with(&format!("/{p}")))
                })
            })
            .cloned()
            .unwrap_or(Value::Null)
    }

    pub(crate) fn metrics(&self) -> String {
        http_get(&self.addr, "/metrics").unwrap().1
    }

    /// The value of the first sample of `metric` whose line contains `filter`.
    pub(crate) fn metric(&self, metric: &str, filter: &str) -> Option<f64> {
        sample(&self.metrics(), metric, filter)
    }

    /// Wait until `cond` holds (panics with the status and logs after `timeout`).
    pub(crate) fn wait(&mut self, what: &str, timeout: Duration, cond: impl Fn(&Service) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if cond(self) {
                return;
            }
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!("serve exited ({exit}) waiting for {what}:\n{}", self.logs());
            }
            if Instant::now() > deadline {
                let status = http_get(&self.addr, "/api/v1/status").map(|r| r.1).unwrap_or_default();
                panic!("timed out waiting for {what}\nstatus: {status}\nlogs:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until target `name` holds `commit`.
    pub(crate) fn wait_applied(&mut self, name: &str, commit: &str, timeout: Duration) {
        let what = format!("{name} to hold {commit}");
        self.wait(&what, timeout, |s| s.target(name)["applied"] == commit);
    }

    /// POST a webhook delivery; the status and body.
    fn post(&self, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
        http_post(&self.addr, "/webhook/github", headers, body)
    }

    /// A signed `push` webhook for `after` on `main`, under a fresh delivery id.
    fn push_hook(&self, after: &str) -> (u16, String) {
        let body = push_payload("refs/heads/main", after);
        let sig = sign(SECRET.as_bytes(), &body);
        let id = format!("delivery-{after}-{}", free_port());
        self.post(
            &[
                ("content-type", "application/json"),
                ("x-github-event", "push"),
                ("x-github-delivery", &id),
                ("x-hub-signature-256", &sig),
            ],
            &body,
        )
    }
}

/// The value of the first sample of `metric` in OpenMetrics `text` whose line contains `filter`.
pub(crate) fn sample(text: &str, metric: &str, filter: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(metric) && l.contains(filter))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// `POST path` over a plain HTTP/1.0 connection; the status and body. The body is written
/// while the answer is read, so a server that answers early (413) is seen.
fn http_post(addr: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    // (a server that refused the body may close before it is all sent)
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, body.to_owned())
}

/// GitHub's own `push` example, for `git_ref` at `after`.
fn push_payload(git_ref: &str, after: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(root().join(".ci/npm/webhooks-examples.json")).unwrap();
    let all: Vec<Value> = serde_json::from_str(&text).unwrap();
    let mut e = all.iter().find(|e| e["name"] == "push").unwrap()["examples"][0].clone();
    e["ref"] = git_ref.into();
    e["after"] = after.into();
    serde_json::to_vec(&e).unwrap()
}

/// Write the webhook secret to a file in `dir`; its path.
fn secret_file(dir: &Path) -> String {
    let f = dir.join("webhook-secret");
    write(&f, SECRET);
    f.to_str().unwrap().to_owned()
}

/// The sandbox's compiled quota in a dir target (or a checked-out deploy branch).
fn sandbox_quota(out: &Path) -> String {
    let files = tree(out);
    let (path, text) = files
        .iter()
        .find(|(p, t)| p.starts_with("sandbox/") && t.contains("kind: ResourceQuota"))
        .unwrap_or_else(|| panic!("no sandbox quota among {:?}", files.keys().collect::<Vec<_>>()));
    format!("{path}\n{text}")
}

/// A service and its two targets on the fixture: `dir:out` and `branch:rendered`.
fn service(f: &Fixture, extra: &[&str]) -> Service {
    let (remote, state) = (f.remote(), f.path("state"));
    let mut args = vec![
        "--repo",
        &remote,
        "--state-dir",
        state.to_str().unwrap(),
        "--target",
        "dir:out",
        "--target",
        "branch:rendered",
    ];
    args.extend_from_slice(extra);
    Service::start(f.dir.path(), &args, &[])
}

#[test]
fn serve_applies_a_push_on_webhook_and_on_poll() {
    let f = Fixture::new();
    let c0 = f.head();
    let secret = secret_file(f.dir.path());
    let mut s = service(&f, &["--interval", "60s", "--webhook-secret-file", &secret]);
    s.wait_applied("dir:out", &c0, Duration::from_secs(20));
    s.wait_applied("branch:rendered", &c0, Duration::from_secs(20));
    assert_eq!(s.status()["ready"], true);
    assert!(
        f.deploy_tip_message("rendered")
            .contains("Rampart-Decision: first-apply")
    );

    // webhook: the interval is a minute, so only the delivery can trigger this
    let c1 = f.push(ALICE, "more cpu for the sandbox", |p| {
        edit(p, "tenants/sandbox.yaml", "cpu: 1", "cpu: 2");
    });
    let (code, body) = s.push_hook(&c1);
    assert_eq!(code, 202, "{body}");
    s.wait_applied("dir:out", &c1, Duration::from_secs(20));
    s.wait_applied("branch:rendered", &c1, Duration::from_secs(20));
    let t = s.target("dir:out");
    assert_eq!(t["lastResult"], "applied", "{t}");
    assert_eq!(t["behind"], 0, "{t}");
    assert!(t["blocked"].is_null(), "{t}");
    let quota = sandbox_quota(&f.path("out"));
    assert!(quota.contains("requests.cpu: \"2\""), "{quota}");
    assert_eq!(f.state_commit("out").as_deref(), Some(c1.as_str()));
    let msg = f.deploy_tip_message("rendered");
    assert!(msg.contains(&format!("Rampart-Source: {c1}")), "{msg}");
    assert!(msg.contains("Rampart-Decision: allowed"), "{msg}");
    assert_eq!(f.deploy_sources("rendered"), [c1.clone(), c0.clone()]);
    // the notes are pushed after both targets: wait for them
    s.wait("the note on the commit", Duration::from_secs(10), |_| {
        f.remote_git(&["notes", "--ref", "rampart", "list"]).contains(&c1)
    });
    let note = f.note(&c1);
    let applies = note["applies"].as_array().unwrap();
    let targets: Vec<&str> = applies.iter().map(|a| a["target"].as_str().unwrap()).collect();
    assert_eq!(applies.len(), 2, "{note}");
    assert!(
        targets.iter().any(|t| t.starts_with("dir:")) && targets.contains(&"branch:rendered"),
        "{note}"
    );
    for a in applies {
        assert_eq!(a["decision"], "allowed", "{note}");
        assert_eq!(a["author"], "alice", "{note}");
        assert_eq!(a["appliedAs"], c1.as_str(), "{note}");
        assert_eq!(a["from"], c0.as_str(), "{note}");
    }
    drop(s);

    // poll: no secret, a one-second interval
    let mut s = service(&f, &["--interval", "1s"]);
    s.wait_applied("dir:out", &c1, Duration::from_secs(20));
    let (code, _) = s.push_hook(&c1);
    assert_eq!(code, 404, "no secret: the webhook route is off");
    let c2 = f.push(ALICE, "describe the sandbox", describe(2));
    s.wait_applied("dir:out", &c2, Duration::from_secs(20));
    s.wait_applied("branch:rendered", &c2, Duration::from_secs(20));
    assert_eq!(f.state_commit("out").as_deref(), Some(c2.as_str()));
    assert_eq!(f.deploy_sources("rendered"), [c2, c1, c0]);
}

/// Eve (in no team) gives the sandbox more cpu: only platform may.
fn eve_raises_the_sandbox(p: &Path) {
    edit(p, "tenants/sandbox.yaml", "cpu: 1", "cpu: 2");
}

#[test]
fn serve_stops_at_a_denied_commit_and_never_skips_it() {
    let f = Fixture::new();
    let c0 = f.head();
    let mut s = service(&f, &["--interval", "1s"]);
    s.wait_applied("branch:rendered", &c0, Duration::from_secs(20));
    let denied = f.push(EVE, "more cpu for my sandbox", eve_raises_the_sandbox);
    let later = f.push(ALICE, "describe the sandbox", describe(1));
    s.wait("the denied commit to block", Duration::from_secs(20), |s| {
        s.target("dir:out")["blocked"]["commit"] == denied.as_str()
            && s.target("branch:rendered")["blocked"]["commit"] == denied.as_str()
    });
    let t = s.target("dir:out");
    let b = &t["blocked"];
    assert_eq!(b["kind"], "denied", "{t}");
    let reasons = b["reasons"].as_array().unwrap();
    assert!(
        reasons
            .iter()
            .any(|r| r.as_str().unwrap().contains("sandbox") && r.as_str().unwrap().contains("denied by")),
        "{t}"
    );
    assert!(!b["wayOut"].as_str().unwrap().is_empty(), "{t}");
    assert_eq!(t["applied"], c0.as_str(), "{t}");
    assert_eq!(t["behind"], 2, "{t}");
    // several reconciles later, the one denied commit is counted once per target
    let seen = s.status()["reconciles"].as_u64().unwrap();
    s.wait("three more reconciles", Duration::from_secs(20), |s| {
        s.status()["reconciles"].as_u64().unwrap() >= seen + 3
    });
    assert_eq!(
        s.metric("rampart_policy_denials_total", "dir:"),
        Some(1.0),
        "{}",
        s.metrics()
    );
    assert_eq!(
        s.metric("rampart_policy_denials_total", "branch:rendered"),
        Some(1.0),
        "{}",
        s.metrics()
    );
    // nothing after it was applied, though the later commit is fine
    assert_eq!(f.state_commit("out").as_deref(), Some(c0.as_str()));
    assert_eq!(f.deploy_sources("rendered"), std::slice::from_ref(&c0));
    assert!(!f.remote_git(&["notes", "--ref", "rampart", "list"]).contains(&later));

    // a revert fixes it: the change from the last applied commit to the revert (Alice's
    // description, Eve's cpu undone) is judged with the revert's author and applied as one;
    // the denied commit is recorded as superseded, never applied on its own
    git_as(&f.work(), ALICE, &["revert", "--no-edit", &denied]);
    git_as(&f.work(), ALICE, &["push", "-q", "origin", "HEAD:main"]);
    let revert = f.head();
    s.wait_applied("dir:out", &revert, Duration::from_secs(20));
    s.wait_applied("branch:rendered", &revert, Duration::from_secs(20));
    let t = s.target("dir:out");
    assert!(t["blocked"].is_null(), "{t}");
    let quota = sandbox_quota(&f.path("out"));
    assert!(quota.contains("requests.cpu: \"1\""), "{quota}");
    assert!(f.deploy_tip_message("rendered").contains("Rampart-Decision: fixes"));
    assert_eq!(f.deploy_sources("rendered"), [revert.clone(), c0.clone()]);
    s.wait("the notes", Duration::from_secs(10), |_| {
        f.remote_git(&["notes", "--ref", "rampart", "list"]).contains(&denied)
    });
    let note = f.note(&denied);
    for a in note["applies"].as_array().unwrap() {
        assert_eq!(a["result"], "superseded", "{note}");
        assert_eq!(a["appliedAs"], revert.as_str(), "{note}");
    }
    let note = f.note(&later);
    assert!(
        note["applies"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["result"] == "applied"),
        "{note}"
    );
}

#[test]
fn serve_does_not_let_an_unrelated_commit_fix_a_denied_one() {
    // Alice (platform) edits another field of the same tenant after Eve's denied change:
    // her commit does not touch Eve's value, so it fixes nothing, however privileged she is
    let f = Fixture::new();
    let c0 = f.head();
    let run = f.once("state", &["--target", "dir:out"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let denied = f.push(EVE, "more cpu for my sandbox", eve_raises_the_sandbox);
    f.push(ALICE, "more memory", |p| {
        edit(p, "tenants/sandbox.yaml", "memory: 2Gi", "memory: 3Gi")
    });
    f.push(ALICE, "describe the sandbox", describe(1));
    let run = f.once("state", &["--target", "dir:out"], &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(f.state_commit("out").as_deref(), Some(c0.as_str()));
    assert!(run.stderr.contains(&denied[..12]), "{}", run.stderr);
    let quota = sandbox_quota(&f.path("out"));
    assert!(quota.contains("requests.cpu: \"1\""), "{quota}");
}

#[test]
fn serve_applies_a_rewritten_history_as_one_flagged_change() {
    let f = Fixture::new();
    let c0 = f.head();
    let run = f.once("state", &["--target", "dir:out", "--target", "branch:rendered"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let c1 = f.push(ALICE, "more cpu", |p| {
        edit(p, "tenants/sandbox.yaml", "cpu: 1", "cpu: 2")
    });
    let run = f.once("state", &["--target", "dir:out", "--target", "branch:rendered"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // rewrite: c1 is replaced by another commit on c0
    let c1b = f.rewrite(&c0, ALICE, "more memory instead", |p| {
        edit(p, "tenants/sandbox.yaml", "memory: 2Gi", "memory: 3Gi")
    });
    assert_ne!(c1, c1b);
    let mut s = service(&f, &["--interval", "60s"]);
    s.wait_applied("dir:out", &c1b, Duration::from_secs(20));
    s.wait_applied("branch:rendered", &c1b, Duration::from_secs(20));
    for name in ["dir:out", "branch:rendered"] {
        let t = s.target(name);
        assert_eq!(t["historyRewritten"], true, "{t}");
    }
    let msg = f.deploy_tip_message("rendered");
    assert!(msg.contains("Rampart-Decision: history-rewritten"), "{msg}");
    assert!(msg.contains(&format!("Rampart-Source: {c1b}")), "{msg}");
    // one deploy commit for the whole rewrite
    assert_eq!(f.deploy_sources("rendered"), [c1b.clone(), c1.clone(), c0]);
    s.wait("the note", Duration::from_secs(10), |_| {
        f.remote_git(&["notes", "--ref", "rampart", "list"]).contains(&c1b)
    });
    let note = f.note(&c1b);
    for a in note["applies"].as_array().unwrap() {
        assert_eq!(a["decision"], "history-rewritten", "{note}");
        assert_eq!(a["from"], c1.as_str(), "{note}");
    }
    // the rewritten content is what the targets hold
    let quota = sandbox_quota(&f.path("out"));
    assert!(quota.contains("requests.cpu: \"1\""), "{quota}");
    assert!(quota.contains("requests.memory: 3Gi"), "{quota}");
}

#[test]
fn serve_survives_an_unreachable_remote() {
    let f = Fixture::new();
    let c0 = f.head();
    let away = f.path("remote.away");
    std::fs::rename(f.path("remote.git"), &away).unwrap();
    // (a relative path, as an operator would give it, that does not exist yet)
    let state = f.path("state");
    let mut s = Service::start(
        f.dir.path(),
        &[
            "--repo",
            "remote.git",
            "--state-dir",
            state.to_str().unwrap(),
            "--target",
            "dir:out",
            "--target",
            "branch:rendered",
            "--interval",
            "1s",
        ],
        &[],
    );
    s.wait("a failed fetch", Duration::from_secs(20), |s| {
        !s.status()["fetchError"].is_null()
    });
    let (code, body) = http_get(&s.addr, "/readyz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("not ready"), "{body}");
    assert!(s.metric("rampart_fetch_errors_total", "").unwrap() >= 1.0);
    // back: ready, applied
    std::fs::rename(&away, f.path("remote.git")).unwrap();
    s.wait_applied("dir:out", &c0, Duration::from_secs(20));
    s.wait("ready", Duration::from_secs(10), |s| {
        http_get(&s.addr, "/readyz").is_ok_and(|(c, _)| c == 200)
    });
    assert!(s.status()["fetchError"].is_null());
    // gone again after it was up: stale but ready, the error shown, still serving
    std::fs::rename(f.path("remote.git"), &away).unwrap();
    let errors = s.metric("rampart_fetch_errors_total", "").unwrap();
    s.wait("another failed fetch", Duration::from_secs(20), |s| {
        !s.status()["fetchError"].is_null() && s.metric("rampart_fetch_errors_total", "").unwrap() > errors
    });
    assert_eq!(http_get(&s.addr, "/readyz").unwrap().0, 200);
    assert_eq!(http_get(&s.addr, "/healthz").unwrap().0, 200);
    assert_eq!(s.target("dir:out")["applied"], c0.as_str());
    assert!(s.child.try_wait().unwrap().is_none(), "serve exited");
}

/// What `--once` on a fresh state directory and a fresh dir target writes for the remote's tip.
fn clean_apply(f: &Fixture, name: &str) -> std::collections::BTreeMap<String, String> {
    let run = f.once(&format!("{name}-state"), &["--target", &format!("dir:{name}")], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    tree(&f.path(name))
}

/// The deploy branch holds each source commit once, and `tip` at its tip; the dir target
/// holds exactly what a clean apply of `tip` writes.
fn assert_consistent(f: &Fixture, tip: &str) {
    let sources = f.deploy_sources("rendered");
    assert_eq!(sources.first().map(String::as_str), Some(tip), "{sources:?}");
    let unique: std::collections::BTreeSet<&String> = sources.iter().collect();
    assert_eq!(
        unique.len(),
        sources.len(),
        "a source commit deployed twice: {sources:?}"
    );
    assert_eq!(f.state_commit("out").as_deref(), Some(tip));
    let expected = clean_apply(f, "clean");
    assert_eq!(
        tree(&f.path("out")),
        expected,
        "the dir target differs from a clean apply"
    );
    // the deploy branch's tree is the same files
    let checkout = f.path("deploy-checkout");
    let _ = std::fs::remove_dir_all(&checkout);
    std::fs::create_dir_all(&checkout).unwrap();
    f.remote_git(&[
        &format!("--work-tree={}", checkout.display()),
        "checkout",
        "rendered",
        "--",
        ".",
    ]);
    assert_eq!(
        tree(&checkout),
        expected,
        "the deploy branch differs from a clean apply"
    );
}

#[test]
fn serve_killed_in_an_apply_resumes_with_an_empty_state_dir() {
    let f = Fixture::new();
    let targets = ["--target", "dir:out", "--target", "branch:rendered"];
    let mut tip = f.head();
    for round in 0..6u64 {
        if round > 0 {
            tip = f.push(ALICE, &format!("round {round}"), describe(round as usize));
        }
        let mut child = f.spawn_once(&format!("state-{round}"), &targets);
        // a different moment of the apply each round (pseudo-random, 0–750 ms)
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64;
        std::thread::sleep(Duration::from_millis((nanos ^ (round * 7919)) % 750));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
    }
    // a new process, an empty state directory: it ends at the tip, each commit deployed once
    let run = f.once("state-final", &targets, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_consistent(&f, &tip);
    let run = f.once("state-final-2", &targets, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        f.deploy_sources("rendered").first(),
        Some(&tip),
        "a second run changes nothing"
    );
    let n = f.deploy_sources("rendered").len();
    let run = f.once("state-final-3", &targets, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(f.deploy_sources("rendered").len(), n);
}

#[test]
fn serve_two_processes_on_the_same_targets_apply_each_commit_once() {
    let f = Fixture::new();
    let targets = ["--target", "dir:out", "--target", "branch:rendered"];
    let mut tip = f.head();
    for round in 0..4usize {
        if round > 0 {
            f.push(ALICE, &format!("round {round} a"), describe(round * 10));
            tip = f.push(ALICE, &format!("round {round} b"), describe(round * 10 + 1));
        }
        // both run to the end before anything is asserted (no process is left behind)
        let (a, b) = (
            f.spawn_once(&format!("a-{round}"), &targets),
            f.spawn_once(&format!("b-{round}"), &targets),
        );
        let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
        for out in outs {
            assert!(
                out.status.success(),
                "round {round}: {:?}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert_eq!(f.deploy_sources("rendered").first(), Some(&tip), "round {round}");
    }
    assert_consistent(&f, &tip);
    // the notes hold one entry per target and applied commit
    for line in f.remote_git(&["notes", "--ref", "rampart", "list"]).lines() {
        let commit = line.split_whitespace().nth(1).unwrap();
        let note = f.note(commit);
        let keys: Vec<(String, String)> = note["applies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a["target"].to_string(), a["appliedAs"].to_string()))
            .collect();
        let unique: std::collections::BTreeSet<&(String, String)> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len(), "{note}");
    }
}

#[test]
fn serve_coalesces_a_burst_of_pushes() {
    let f = Fixture::new();
    let c0 = f.head();
    let secret = secret_file(f.dir.path());
    let mut s = service(&f, &["--interval", "2s", "--webhook-secret-file", &secret]);
    s.wait_applied("branch:rendered", &c0, Duration::from_secs(20));
    let mut commits = vec![c0.clone()];
    for n in 1..=100 {
        let c = f.push(ALICE, &format!("burst {n}"), describe(n));
        let (code, body) = s.push_hook(&c);
        assert_eq!(code, 202, "{body}");
        commits.push(c);
    }
    let tip = commits.last().unwrap().clone();
    s.wait_applied("dir:out", &tip, Duration::from_secs(120));
    s.wait_applied("branch:rendered", &tip, Duration::from_secs(60));
    let sources = f.deploy_sources("rendered");
    assert!(sources.len() < 60, "not coalesced: {} deploy commits", sources.len());
    let unique: std::collections::BTreeSet<&String> = sources.iter().collect();
    assert_eq!(unique.len(), sources.len(), "{sources:?}");
    assert!(sources.iter().all(|c| commits.contains(c)));
    assert_eq!(f.state_commit("out").as_deref(), Some(tip.as_str()));
    // every commit of the burst was authorised (a note on each), none skipped
    s.wait("the notes", Duration::from_secs(20), |_| {
        f.remote_git(&["notes", "--ref", "rampart", "list"]).contains(&tip)
    });
    let listed = f.remote_git(&["notes", "--ref", "rampart", "list"]);
    for c in &commits {
        assert!(listed.contains(c.as_str()), "no note on {c}");
    }
}

#[test]
fn serve_refuses_forged_replayed_and_oversized_webhooks() {
    let f = Fixture::new();
    let c0 = f.head();
    let secret = secret_file(f.dir.path());
    let mut s = service(&f, &["--interval", "60s", "--webhook-secret-file", &secret]);
    s.wait_applied("dir:out", &c0, Duration::from_secs(20));
    let c1 = f.push(ALICE, "describe", describe(1));
    let body = push_payload("refs/heads/main", &c1);
    let good = sign(SECRET.as_bytes(), &body);
    let forged = sign(b"not the secret", &body);
    let h = |sig: &'static str, id: &'static str| -> Vec<(&'static str, &'static str)> {
        vec![
            ("content-type", "application/json"),
            ("x-github-event", "push"),
            ("x-github-delivery", id),
            ("x-hub-signature-256", sig),
        ]
    };
    let forged: &'static str = Box::leak(forged.into_boxed_str());
    let good: &'static str = Box::leak(good.into_boxed_str());
    s.wait("the first reconcile", Duration::from_secs(20), |s| {
        s.status()["reconciles"] == 1
    });
    let reconciles = s.status()["reconciles"].as_u64().unwrap();
    let (code, text) = s.post(&h(forged, "d-1"), &body);
    assert_eq!(code, 401, "{text}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        s.status()["reconciles"].as_u64().unwrap(),
        reconciles,
        "a forged delivery triggered"
    );
    assert_eq!(s.target("dir:out")["applied"], c0.as_str());
    // the genuine delivery: accepted and applied; the same one again: a replay
    let (code, text) = s.post(&h(good, "d-2"), &body);
    assert_eq!(code, 202, "{text}");
    s.wait_applied("dir:out", &c1, Duration::from_secs(20));
    let (code, text) = s.post(&h(good, "d-2"), &body);
    assert_eq!(code, 409, "{text}");
    let (code, text) = s.post(&h(good, "d-3"), &body);
    assert_eq!(code, 409, "the same body under a new id: {text}");
    // wrong content type
    let mut form = h(good, "d-4");
    form[0] = ("content-type", "application/x-www-form-urlencoded");
    let (code, text) = s.post(&form, &body);
    assert_eq!(code, 415, "{text}");
    // 30 MB
    let big = vec![b' '; 30 << 20];
    let (code, text) = s.post(&h(good, "d-5"), &big);
    assert_eq!(code, 413, "{text}");
    assert_eq!(http_get(&s.addr, "/healthz").unwrap().0, 200, "still serving");
    // an event rampart does not act on: verified, 200, ignored
    let ping = br#"{"zen":"Design for failure.","hook_id":1}"#;
    let sig = sign(SECRET.as_bytes(), ping);
    let (code, text) = s.post(
        &[
            ("content-type", "application/json"),
            ("x-github-event", "ping"),
            ("x-github-delivery", "d-6"),
            ("x-hub-signature-256", &sig),
        ],
        ping,
    );
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("pong"), "{text}");
    // a push to another branch: ignored too
    let other = push_payload("refs/heads/feature", &c1);
    let sig = sign(SECRET.as_bytes(), &other);
    let (code, _) = s.post(
        &[
            ("content-type", "application/json"),
            ("x-github-event", "push"),
            ("x-github-delivery", "d-7"),
            ("x-hub-signature-256", &sig),
        ],
        &other,
    );
    assert_eq!(code, 200);
    let m = s.metrics();
    assert!(
        sample(&m, "rampart_webhook_deliveries_total", "refused").unwrap() >= 4.0,
        "{m}"
    );
    assert!(!s.logs().contains(SECRET), "the secret leaked into the logs");
}

#[test]
fn serve_fetches_and_pushes_over_https_with_a_token() {
    const TOKEN: &str = "ghs_serveTestToken0123456789abcdefABCDEF";
    let f = Fixture::new();
    let c0 = f.head();
    let root_dir = f.path("http");
    std::fs::create_dir_all(root_dir.join("acme")).unwrap();
    std::fs::rename(f.path("remote.git"), root_dir.join("acme/config.git")).unwrap();
    let server = GitHttp::start(&root_dir, Some(TOKEN));
    let url = format!("{}acme/config.git", server.url);
    let state = f.path("state");
    let args = |state: &Path| {
        vec![
            "serve".to_owned(),
            "--once".to_owned(),
            "--repo".to_owned(),
            url.clone(),
            "--state-dir".to_owned(),
            state.to_str().unwrap().to_owned(),
            "--target".to_owned(),
            "branch:rendered".to_owned(),
        ]
    };
    let a = args(&state);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let run = rampart_env(&a, Some(f.dir.path()), &[("GITHUB_TOKEN", TOKEN)]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let bare = root_dir.join("acme/config.git");
    let git = |args: &[&str]| {
        let mut all = vec!["--git-dir", bare.to_str().unwrap()];
        all.extend_from_slice(args);
        git_as(f.dir.path(), ALICE, &all)
    };
    assert!(git(&["log", "-1", "--format=%B", "rendered"]).contains(&format!("Rampart-Source: {c0}")));
    assert!(
        git(&["notes", "--ref", "rampart", "list"]).contains(&c0),
        "notes pushed"
    );
    assert!(server.requests().iter().any(|r| r.contains("git-receive-pack")));

    // a wrong token: a clear fetch error, and no token in the logs or the status
    const WRONG: &str = "ghs_wrongToken9876543210zyxwvuZYXWVU";
    let state2 = f.path("state2");
    let a = args(&state2);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let run = rampart_env(&a, Some(f.dir.path()), &[("GITHUB_TOKEN", WRONG)]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("fetch failed"), "{}", run.stderr);
    assert!(
        run.stderr.contains("the remote refused the credentials"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains(WRONG) && !run.stderr.contains(TOKEN),
        "{}",
        run.stderr
    );
    let mut s = Service::start(
        f.dir.path(),
        &[
            "--repo",
            &url,
            "--state-dir",
            f.path("state3").to_str().unwrap(),
            "--target",
            "branch:rendered",
            "--interval",
            "1s",
        ],
        &[("GITHUB_TOKEN", WRONG)],
    );
    s.wait("the fetch error", Duration::from_secs(20), |s| {
        !s.status()["fetchError"].is_null()
    });
    let status = s.status().to_string();
    assert!(!status.contains(WRONG), "{status}");
    assert!(!s.logs().contains(WRONG), "{}", s.logs());
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{WRONG}"));
    assert!(!status.contains(&basic) && !s.logs().contains(&basic));
}

#[test]
fn serve_takes_identities_from_merged_pull_requests() {
    const TOKEN: &str = "ghs_16C7e42F292c6912E7710c838347Ae178B4a";
    let f = Fixture::new();
    let c0 = f.head();
    let targets = ["--target", "dir:out", "--target", "branch:rendered"];
    // Eve wrote it, but alice (platform) opened the pull request and merged it: GitHub says
    // who, not the commit
    let merged = f.push(EVE, "more cpu for the sandbox", eve_raises_the_sandbox);
    let direct = f.push(ALICE, "describe, pushed directly", describe(3));
    let world = World {
        pulls: vec![FakePull {
            number: 42,
            author: "alice".into(),
            head_sha: merged.clone(),
            base_ref: "main".into(),
            merge_commit_sha: Some(merged.clone()),
            merged: true,
            commits: vec![merged.clone()],
        }],
        reviews: vec![("bob".into(), "APPROVED".into(), merged.clone())],
        ..World::default()
    };
    let (api, world) = github_fake::start(world);
    let mut args = vec!["--github-repo", "larkspur/platform-config"];
    args.extend_from_slice(&targets);
    // first apply of c0, then the two commits
    let env = [("GITHUB_TOKEN", TOKEN), ("GITHUB_API_URL", api.as_str())];
    git_as(
        &f.work(),
        ALICE,
        &["push", "-q", "-f", "origin", &format!("{c0}:refs/heads/main")],
    );
    let run = f.once("state", &args, &env);
    assert_eq!(run.code, 0, "{}", run.stderr);
    git_as(&f.work(), ALICE, &["push", "-q", "-f", "origin", "HEAD:main"]);
    let run = f.once("state", &args, &env);
    assert_eq!(run.code, 2, "the direct push is blocked\n{}", run.stderr);
    assert!(run.stderr.contains("no-pull-request"), "{}", run.stderr);
    assert_eq!(f.state_commit("out").as_deref(), Some(merged.as_str()));
    assert_eq!(f.deploy_sources("rendered"), [merged.clone(), c0]);
    let note = f.note(&merged);
    for a in note["applies"].as_array().unwrap() {
        assert_eq!(a["pullRequest"], 42, "{note}");
        assert_eq!(a["author"], "alice", "{note}");
        assert_eq!(a["approvers"], serde_json::json!(["bob"]), "{note}");
    }
    assert!(f.deploy_tip_message("rendered").contains("pull request #42"));
    assert!(!f.remote_git(&["notes", "--ref", "rampart", "list"]).contains(&direct));
    let w = world.lock().unwrap();
    assert!(w.problems.is_empty(), "{:?}", w.problems);
}

#[test]
fn serve_metrics_are_scraped_by_prometheus() {
    let f = Fixture::new();
    let c0 = f.head();
    let mut s = service(&f, &["--interval", "60s"]);
    s.wait_applied("branch:rendered", &c0, Duration::from_secs(20));
    let prom = Prometheus::start(&[s.addr.as_str()]);
    prom.wait_up(&s.addr, Duration::from_secs(20)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = prom.query("rampart_applies_total").unwrap();
        let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
        if let Some(r) = result.iter().find(|r| r["metric"]["result"] == "applied") {
            let value: f64 = r["value"][1].as_str().unwrap().parse().unwrap();
            assert!(value >= 1.0, "{v}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no rampart_applies_total: {v}\n{}",
            prom.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let up = prom.query("up").unwrap();
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");
}

#[test]
fn serve_deploy_branch_builds_with_kubectl_kustomize() {
    let f = Fixture::new();
    let run = f.once("state", &["--target", "branch:rendered"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let checkout = f.path("checkout");
    std::fs::create_dir_all(&checkout).unwrap();
    f.remote_git(&[
        &format!("--work-tree={}", checkout.display()),
        "checkout",
        "rendered",
        "--",
        ".",
    ]);
    let out = Command::new(kubectl())
        .arg("kustomize")
        .arg(&checkout)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let yaml = String::from_utf8(out.stdout).unwrap();
    for kind in ["kind: Namespace", "kind: ResourceQuota", "kind: Deployment"] {
        assert!(yaml.contains(kind), "no {kind}");
    }
    assert!(yaml.contains("name: sandbox"));
}

#[test]
fn serve_bad_input_fails_clearly() {
    let f = Fixture::new();
    // a branch that does not exist
    let run = f.once("state", &["--branch", "nope", "--target", "dir:out"], &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("the branch `nope` does not exist"),
        "{}",
        run.stderr
    );
    // a state directory that cannot be written (its parent is a file: this holds as root too)
    write(&f.path("a-file"), "x");
    let run = f.once("a-file/state", &["--target", "dir:out"], &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("state directory"), "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    // a deploy branch someone else wrote: unknown baseline, nothing pushed
    let stranger = f.path("stranger");
    std::fs::create_dir_all(&stranger).unwrap();
    git_as(&stranger, ALICE, &["init", "-q", "-b", "rendered"]);
    write(&stranger.join("kustomization.yaml"), "resources: []\n");
    commit(&stranger, "Bob <bob@example.com>", "hand-written manifests");
    git_as(&stranger, ALICE, &["push", "-q", &f.remote(), "rendered:rendered"]);
    let before = f.remote_git(&["rev-parse", "rendered"]);
    let run = f.once("state2", &["--target", "branch:rendered"], &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("unknown-baseline"), "{}", run.stderr);
    assert_eq!(f.remote_git(&["rev-parse", "rendered"]), before, "something was pushed");
}

#[test]
fn serve_a_forged_or_deleted_deploy_record_does_not_skip_a_denied_commit() {
    let f = Fixture::new();
    let targets = ["--target", "dir:out", "--target", "branch:rendered"];
    let c0 = f.head();
    let run = f.once("state", &targets, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let denied = f.push(EVE, "more cpu for my sandbox", eve_raises_the_sandbox);
    let run = f.once("state", &targets, &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);

    // someone with push access writes a deploy commit claiming the denied commit is applied
    // (no manifest changes: invisible in a diff review), then an allowed change follows
    f.forge_deploy("FETCH_HEAD^{tree}", &denied);
    f.push(ALICE, "more memory", |p| {
        edit(p, "tenants/sandbox.yaml", "memory: 2Gi", "memory: 3Gi")
    });
    let run = f.once("state2", &targets, &[]);
    assert_eq!(run.code, 2, "the forged record is not believed: {}", run.stderr);
    assert!(run.stderr.contains("not believed"), "{}", run.stderr);
    let rendered = f.remote_git(&["show", "rendered:sandbox/resourcequota-quota.yaml"]);
    assert!(rendered.contains("requests.cpu: \"1\""), "{rendered}");

    // deleting the deploy branch and the dir target's state does not make a first apply
    f.remote_git(&["update-ref", "-d", "refs/heads/rendered"]);
    std::fs::remove_file(f.path("out.rampart-state.json")).unwrap();
    std::fs::remove_dir_all(f.path("out")).unwrap();
    let run = f.once("state3", &targets, &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(f.remote_git(&["branch", "--list", "rendered"]).trim().is_empty());
    assert!(!f.path("out").exists());
    let _ = c0;
}

#[test]
fn serve_rewrites_a_listing_edited_by_hand() {
    let f = Fixture::new();
    let run = f.once("state", &["--target", "dir:out"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let listing = f.path("out/kustomization.yaml");
    let text = std::fs::read_to_string(&listing).unwrap();
    std::fs::write(
        &listing,
        text.replace("resources:\n", "resources:\n- https://evil.example/backdoor.yaml\n"),
    )
    .unwrap();
    f.push(ALICE, "more memory", |p| {
        edit(p, "tenants/sandbox.yaml", "memory: 2Gi", "memory: 3Gi")
    });
    let run = f.once("state", &["--target", "dir:out"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let text = std::fs::read_to_string(&listing).unwrap();
    assert!(!text.contains("evil"), "{text}");
    assert!(sandbox_quota(&f.path("out")).contains("requests.memory: 3Gi"));
}

#[test]
fn serve_does_not_believe_a_tree_that_merely_equals_a_denied_commits_output() {
    let f = Fixture::new();
    let targets = ["--target", "branch:rendered"];
    let run = f.once("state", &targets, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let denied = f.push(EVE, "more cpu for my sandbox", eve_raises_the_sandbox);
    // Eve renders her own commit elsewhere (a first apply judges nothing) …
    let scratch = f.path("scratch.git");
    git_as(
        f.dir.path(),
        ALICE,
        &["init", "-q", "--bare", scratch.to_str().unwrap()],
    );
    git_as(
        &f.work(),
        ALICE,
        &[
            "push",
            "-q",
            scratch.to_str().unwrap(),
            &format!("{denied}:refs/heads/main"),
        ],
    );
    let remote = scratch.to_str().unwrap().to_owned();
    let mut args = vec!["serve", "--once", "--repo", &remote, "--state-dir"];
    let state = f.path("scratch-state");
    args.push(state.to_str().unwrap());
    args.extend_from_slice(&targets);
    let run = rampart_env(&args, Some(f.dir.path()), &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // … and pushes that very tree to the real deploy branch, claiming her commit
    let work = f.work();
    git_as(&work, ALICE, &["fetch", "-q", &remote, "rendered"]);
    let tree = git_as(&work, ALICE, &["rev-parse", "FETCH_HEAD^{tree}"]);
    f.forge_deploy(tree.trim(), &denied);
    f.push(ALICE, "more memory", |p| {
        edit(p, "tenants/sandbox.yaml", "memory: 2Gi", "memory: 3Gi")
    });
    let run = f.once("fresh-state", &targets, &[]);
    assert_eq!(
        run.code, 2,
        "the tree shows what is held, not that it was allowed: {}",
        run.stderr
    );
    assert!(run.stderr.contains("not believed"), "{}", run.stderr);
}
