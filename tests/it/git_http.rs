//! A git smart-HTTP server for tests: git's own CGI program, `git http-backend`, behind a
//! small axum handler, serving the bare repositories under a root (`ROOT/acme/config.git` is
//! `URL/acme/config.git`). Fetch and push both work (receive-pack is enabled); with a token
//! it wants GitHub's form of HTTPS auth, `Authorization: Basic base64("x-access-token:TOKEN")`,
//! and answers anything else 401 with `WWW-Authenticate: Basic realm="git"`.
//!
//! ```ignore
//! let server = GitHttp::start(root, Some("s3cret"));
//! git -c http.extraHeader="Authorization: Basic …" clone {server.url}acme/config.git
//! ```

use crate::support::{Served, git_as, serve};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

/// A running server; it stops when dropped.
pub struct GitHttp {
    /// `http://127.0.0.1:PORT/`, with the trailing slash: append `owner/repo.git`.
    pub url: String,
    /// Every request, as `METHOD /path?query STATUS` (`GET /acme/config.git/info/refs?service=git-upload-pack 401`).
    pub requests: Arc<Mutex<Vec<String>>>,
    _server: Served,
}

struct Config {
    root: PathBuf,
    /// The `Authorization` header value a request must carry, when auth is on.
    expected: Option<String>,
    requests: Arc<Mutex<Vec<String>>>,
}

/// The `Authorization` header value for `token`, as GitHub takes an installation token.
pub fn basic_auth(token: &str) -> String {
    let pair = format!("x-access-token:{token}");
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
}

/// The `-c http.extraHeader=…` value that makes the git CLI send `token`.
pub fn extra_header(token: &str) -> String {
    format!("http.extraHeader=Authorization: {}", basic_auth(token))
}

impl GitHttp {
    /// Serve the repositories under `root`; with `token`, only to requests carrying it.
    pub fn start(root: &Path, token: Option<&str>) -> GitHttp {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let config = Arc::new(Config {
            root: root.to_owned(),
            expected: token.map(basic_auth),
            requests: requests.clone(),
        });
        let server = serve(axum::Router::new().fallback(handle).with_state(config));
        GitHttp {
            url: format!("{}/", server.url()),
            requests,
            _server: server,
        }
    }

    /// The requests so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

async fn handle(
    State(config): State<Arc<Config>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let line = format!("{method} {uri}");
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let response = if config.expected.is_some() && header("authorization") != config.expected {
        (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Basic realm=\"git\"")],
            "authentication required\n",
        )
            .into_response()
    } else {
        let request = Cgi {
            root: config.root.clone(),
            method: method.to_string(),
            path: uri.path().to_owned(),
            query: uri.query().unwrap_or_default().to_owned(),
            content_type: header("content-type"),
            content_encoding: header("content-encoding"),
            git_protocol: header("git-protocol"),
            body,
        };
        match tokio::task::spawn_blocking(move || request.run()).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        }
    };
    config
        .requests
        .lock()
        .unwrap()
        .push(format!("{line} {}", response.status().as_u16()));
    response
}

/// One request for `git http-backend`.
struct Cgi {
    root: PathBuf,
    method: String,
    path: String,
    query: String,
    content_type: Option<String>,
    content_encoding: Option<String>,
    git_protocol: Option<String>,
    body: Bytes,
}

impl Cgi {
    fn run(self) -> Result<Response, String> {
        let mut cmd = Command::new("git");
        cmd.arg("http-backend")
            .env("GIT_PROJECT_ROOT", &self.root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("REQUEST_METHOD", &self.method)
            .env("PATH_INFO", &self.path)
            .env("QUERY_STRING", &self.query)
            .env("CONTENT_LENGTH", self.body.len().to_string())
            // an authenticated user: http-backend enables receive-pack (push) for it
            .env("REMOTE_USER", "x-access-token")
            .env("REMOTE_ADDR", "127.0.0.1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in [
            ("CONTENT_TYPE", &self.content_type),
            ("HTTP_CONTENT_ENCODING", &self.content_encoding),
            ("GIT_PROTOCOL", &self.git_protocol),
        ] {
            if let Some(v) = value {
                cmd.env(name, v);
            }
        }
        let mut child = cmd.spawn().map_err(|e| format!("git http-backend: {e}"))?;
        let mut stdin = child.stdin.take().expect("piped");
        let body = self.body;
        // (written from another thread: the answer may be larger than a pipe holds)
        let writer = std::thread::spawn(move || stdin.write_all(&body));
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        writer
            .join()
            .map_err(|_| "the writer panicked".to_owned())?
            .map_err(|e| format!("writing the request to git http-backend: {e}"))?;
        if !out.status.success() && out.stdout.is_empty() {
            return Err(format!(
                "git http-backend: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        cgi_response(&out.stdout)
    }
}

/// A CGI program's output → an HTTP response: header lines (`Status: 404 Not Found` sets
/// the status, 200 without it), a blank line, the body.
fn cgi_response(out: &[u8]) -> Result<Response, String> {
    let (head, body) = [&b"\r\n\r\n"[..], b"\n\n"]
        .iter()
        .filter_map(|sep| {
            out.windows(sep.len())
                .position(|w| w == *sep)
                .map(|i| (&out[..i], &out[i + sep.len()..]))
        })
        .min_by_key(|(head, _)| head.len())
        .ok_or("no end of the CGI headers")?;
    let mut response = Response::builder();
    let mut status = 200;
    for line in String::from_utf8_lossy(head).lines() {
        let (name, value) = line.split_once(':').ok_or_else(|| format!("CGI header {line:?}"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            status = value
                .split(' ')
                .next()
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("CGI status {value:?}"))?;
        } else {
            response = response.header(name, value);
        }
    }
    response
        .status(status)
        .body(Body::from(body.to_vec()))
        .map_err(|e| e.to_string())
}

/// Run git in `dir` as a client would, unable to prompt for credentials.
fn git(dir: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_ASKPASS", "")
        .env("HOME", dir)
        .output()
        .expect("git runs")
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A root with the empty bare repository `acme/config.git`, and a work tree with one commit.
fn setup() -> (tempfile::TempDir, tempfile::TempDir) {
    let root = tempfile::tempdir().unwrap();
    let bare = root.path().join("acme/config.git");
    std::fs::create_dir_all(&bare).unwrap();
    ok(git(&bare, &["init", "-q", "--bare", "-b", "main"]));
    let work = tempfile::tempdir().unwrap();
    let a = "Alice <alice@example.com>";
    git_as(work.path(), a, &["init", "-q", "-b", "main"]);
    crate::support::write(&work.path().join("teams/platform.yaml"), "kind: Team\n");
    crate::support::commit(work.path(), a, "first");
    (root, work)
}

#[test]
fn push_and_clone_with_the_token_a_wrong_token_is_refused() {
    let (root, work) = setup();
    let server = GitHttp::start(root.path(), Some("s3cret"));
    let url = format!("{}acme/config.git", server.url);
    let auth = extra_header("s3cret");

    ok(git(work.path(), &["-c", &auth, "push", "-q", &url, "main"]));
    let head = ok(git(work.path(), &["rev-parse", "HEAD"]));
    let bare = root.path().join("acme/config.git");
    assert_eq!(ok(git(&bare, &["rev-parse", "main"])), head, "the push landed");

    let clones = tempfile::tempdir().unwrap();
    ok(git(clones.path(), &["-c", &auth, "clone", "-q", &url, "copy"]));
    let copy = clones.path().join("copy");
    assert_eq!(ok(git(&copy, &["rev-parse", "HEAD"])), head);
    assert_eq!(
        std::fs::read_to_string(copy.join("teams/platform.yaml")).unwrap(),
        "kind: Team\n"
    );
    let requests = server.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("POST /acme/config.git/git-receive-pack") && r.ends_with(" 200")),
        "{requests:#?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("POST /acme/config.git/git-upload-pack") && r.ends_with(" 200")),
        "{requests:#?}"
    );
    assert!(requests.iter().all(|r| r.ends_with(" 200")), "{requests:#?}");

    // a wrong token, and none at all, are refused: nothing is read or written
    let before = requests.len();
    for args in [
        vec!["-c", &extra_header("wrong"), "ls-remote", &url],
        vec!["ls-remote", &url],
        vec!["-c", &extra_header("wrong"), "push", "-q", &url, "main:other"],
    ] {
        let out = git(work.path(), &args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("Authentication failed") || stderr.contains("could not read Username"),
            "{args:?}: {stderr}"
        );
    }
    let refused = &server.requests()[before..];
    assert!(
        !refused.is_empty() && refused.iter().all(|r| r.ends_with(" 401")),
        "{refused:#?}"
    );
    assert!(ok(git(&bare, &["branch", "--list", "other"])).is_empty());
}

#[test]
fn without_a_token_anyone_may_fetch_and_push() {
    let (root, work) = setup();
    let server = GitHttp::start(root.path(), None);
    let url = format!("{}acme/config.git", server.url);
    ok(git(work.path(), &["push", "-q", &url, "main"]));
    let remote = ok(git(work.path(), &["ls-remote", &url, "refs/heads/main"]));
    assert!(
        remote.starts_with(&ok(git(work.path(), &["rev-parse", "HEAD"]))),
        "{remote}"
    );
    // a repository that is not there is git's 404, passed through
    let out = git(work.path(), &["ls-remote", &format!("{}acme/missing.git", server.url)]);
    assert!(!out.status.success());
    assert!(
        server.requests().last().unwrap().ends_with(" 404"),
        "{:#?}",
        server.requests()
    );
}
