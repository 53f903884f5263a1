//! Remotes (IO): fetch and push through the `git` command line, as cargo's
//! `net.git-fetch-with-cli` does — https with a token, ssh keys, `file://` and every transport
//! git itself speaks, with its proxies and TLS settings. Reading and writing objects stays in
//! libgit2 (`source`, `target`).
//!
//! Credentials never reach a command line, a config file or a log: a token goes to git as an
//! `http.extraHeader` through `GIT_CONFIG_*` environment variables of the child alone, and every
//! message git prints is cleaned of the token and of any `user:password@` in a URL before it is
//! shown. Nothing may prompt (no terminal, no askpass, no credential helper), every call has
//! a deadline, and only the `file`, `http(s)`, `ssh` and `git` transports are allowed.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How a remote is reached.
#[derive(Clone, Default)]
pub struct Auth {
    /// A GitHub token (personal, Actions, or a GitHub App installation token), sent as HTTP
    /// basic auth `x-access-token:TOKEN` on https. Shared by every remote of the service, so
    /// a refreshed installation token reaches them all.
    pub token: Option<Token>,
    /// An ssh private key file for `ssh://` / `git@host:` remotes.
    pub ssh_key: Option<PathBuf>,
    /// A `known_hosts` file to check ssh host keys against (strict when given).
    pub known_hosts: Option<PathBuf>,
}

/// A token that can be replaced while it is in use (GitHub App installation tokens expire
/// after an hour).
#[derive(Clone, Default)]
pub struct Token(std::sync::Arc<std::sync::RwLock<String>>);

impl Token {
    pub fn new(value: String) -> Token {
        Token(std::sync::Arc::new(std::sync::RwLock::new(value)))
    }

    pub fn set(&self, value: String) {
        *self.0.write().expect("not poisoned") = value;
    }

    pub fn get(&self) -> String {
        self.0.read().expect("not poisoned").clone()
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("ssh_key", &self.ssh_key)
            .field("known_hosts", &self.known_hosts)
            .finish()
    }
}

/// A remote repository.
#[derive(Clone)]
pub struct Remote {
    /// The URL git is given: never with `user:password@` (that goes to git as a header).
    url: String,
    /// `user:password` taken out of the URL as written.
    userinfo: Option<String>,
    pub auth: Auth,
    /// The deadline of one fetch or push.
    pub timeout: Duration,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("url", &self.display())
            .field("auth", &self.auth)
            .finish()
    }
}

/// Why a git command failed. The message is cleaned of credentials.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{what} {url}: {message}")]
    Failed { what: String, url: String, message: String },
    #[error("{what} {url}: no answer within {secs} s")]
    Timeout { what: String, url: String, secs: u64 },
    #[error("{what}: could not run git: {message}")]
    Spawn { what: String, message: String },
}

/// How a push ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Ok,
    /// The remote refused it (not a fast-forward: the branch moved).
    Rejected(String),
}

impl Remote {
    /// A remote at `url`: a URL git understands, or a local path (made `file://`, the path
    /// canonical). `user:password@` in an http(s) URL is taken out and sent as a header, so it
    /// never reaches a command line. A URL that could be read as an option is refused.
    pub fn new(url: &str, auth: Auth) -> Result<Remote, String> {
        if url.starts_with('-') || url.is_empty() || url.chars().any(char::is_control) {
            return Err(format!("`{}` is not a repository URL or path", redact_url(url)));
        }
        let (url, userinfo) = if let Some(path) = url.strip_prefix("file://") {
            (format!("file://{}", canonical(path)), None)
        } else if let Some((scheme, rest)) = url.split_once("://") {
            let end = rest.find('/').unwrap_or(rest.len());
            match rest[..end].rfind('@') {
                Some(at) if scheme.starts_with("http") => {
                    (format!("{scheme}://{}", &rest[at + 1..]), Some(rest[..at].to_owned()))
                }
                _ => (url.to_owned(), None),
            }
        } else if url.contains('@') && url.contains(':') {
            // scp-like ssh (`git@host:org/repo.git`)
            (url.to_owned(), None)
        } else {
            (format!("file://{}", canonical(url)), None)
        };
        Ok(Remote {
            url,
            userinfo,
            auth,
            timeout: Duration::from_secs(120),
        })
    }

    /// Whether a token may be sent to this remote: over https, or plain http to this machine
    /// (a test server) — never in clear text over a network.
    fn may_send_token(&self) -> bool {
        let Some((scheme, rest)) = self.url.split_once("://") else {
            return false;
        };
        let loopback = ["127.0.0.1", "localhost", "[::1]"].iter().any(|h| {
            rest.strip_prefix(h)
                .is_some_and(|r| r.is_empty() || r.starts_with([':', '/']))
        });
        scheme == "https" || scheme == "http" && loopback
    }

    /// The URL, without any `user:password@` (for messages and the status API).
    pub fn display(&self) -> String {
        redact_url(&self.url)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Fetch `refspecs` into the bare repository at `git_dir`.
    pub fn fetch(&self, git_dir: &Path, refspecs: &[String]) -> Result<(), RemoteError> {
        let mut args = vec![
            "fetch",
            "--no-tags",
            "--no-write-fetch-head",
            "--quiet",
            "--end-of-options",
            self.url.as_str(),
        ];
        args.extend(refspecs.iter().map(String::as_str));
        self.git(git_dir, "fetching from", &args).map(|_| ())
    }

    /// Push one refspec (never forced: a refspec starting with `+` is refused here).
    pub fn push(&self, git_dir: &Path, refspec: &str) -> Result<Pushed, RemoteError> {
        assert!(!refspec.starts_with('+'), "rampart never force-pushes");
        match self.git(
            git_dir,
            "pushing to",
            &[
                "push",
                "--porcelain",
                "--quiet",
                "--end-of-options",
                self.url.as_str(),
                refspec,
            ],
        ) {
            Ok(_) => Ok(Pushed::Ok),
            Err(RemoteError::Failed { message, .. }) if rejected(&message) => Ok(Pushed::Rejected(message)),
            Err(e) => Err(e),
        }
    }

    /// Run `git` in `git_dir` with this remote's credentials; stdout on success.
    fn git(&self, git_dir: &Path, what: &str, args: &[&str]) -> Result<String, RemoteError> {
        let mut cmd = Command::new("git");
        cmd.arg("--git-dir")
            .arg(git_dir)
            .args(args)
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("HOME", git_dir)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "/bin/false")
            .env("SSH_ASKPASS", "/bin/false")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_ALLOW_PROTOCOL", "file:git:http:https:ssh")
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // its own process group: a timeout or a shutdown kills git's helpers too
            .process_group(0);
        for proxy in [
            "http_proxy",
            "https_proxy",
            "no_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "NO_PROXY",
        ] {
            if let Some(v) = std::env::var_os(proxy) {
                cmd.env(proxy, v);
            }
        }
        // configuration through the environment: seen by this child only
        let mut config: Vec<(String, String)> = vec![
            ("credential.helper".into(), String::new()),
            ("core.hooksPath".into(), "/dev/null".into()),
            ("http.lowSpeedLimit".into(), "1000".into()),
            ("http.lowSpeedTime".into(), "30".into()),
        ];
        let token = self.auth.token.as_ref().map(Token::get).filter(|t| !t.is_empty());
        let credentials = match (&self.userinfo, token) {
            (Some(u), _) => Some(u.clone()),
            (None, Some(t)) if self.may_send_token() => Some(format!("x-access-token:{t}")),
            _ => None,
        };
        if let Some(c) = credentials {
            use base64::Engine;
            let basic = base64::engine::general_purpose::STANDARD.encode(c);
            config.push(("http.extraHeader".into(), format!("Authorization: Basic {basic}")));
        }
        cmd.env("GIT_CONFIG_COUNT", config.len().to_string());
        for (i, (k, v)) in config.iter().enumerate() {
            cmd.env(format!("GIT_CONFIG_KEY_{i}"), k);
            cmd.env(format!("GIT_CONFIG_VALUE_{i}"), v);
        }
        let mut ssh = "ssh -o BatchMode=yes -o ConnectTimeout=20".to_owned();
        if let Some(k) = &self.auth.ssh_key {
            ssh.push_str(&format!(" -i '{}' -o IdentitiesOnly=yes", k.display()));
        }
        if let Some(h) = &self.auth.known_hosts {
            ssh.push_str(&format!(
                " -o UserKnownHostsFile='{}' -o StrictHostKeyChecking=yes",
                h.display()
            ));
        }
        cmd.env("GIT_SSH_COMMAND", ssh);
        let url = self.display();
        let mut child = cmd.spawn().map_err(|e| RemoteError::Spawn {
            what: what.to_owned(),
            message: e.to_string(),
        })?;
        let group = Running::new(child.id());
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        // both pipes drained on threads of their own (a full pipe would stall git), capped
        let out = std::thread::spawn(move || read_capped(&mut stdout));
        let err = std::thread::spawn(move || read_capped(&mut stderr));
        let start = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if start.elapsed() > self.timeout => {
                    group.kill();
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => {
                    return Err(RemoteError::Spawn {
                        what: what.to_owned(),
                        message: e.to_string(),
                    });
                }
            }
        };
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        match status {
            None => Err(RemoteError::Timeout {
                what: what.to_owned(),
                url,
                secs: self.timeout.as_secs(),
            }),
            Some(s) if s.success() => Ok(stdout),
            Some(_) => {
                // `push --porcelain` reports refusals on stdout
                let text = format!("{}\n{}", stderr.trim(), stdout.trim());
                let mut message = self.clean(text.trim());
                if refused_credentials(&message) {
                    message.push_str(if self.auth.token.is_some() {
                        " (the remote refused the credentials: the token is wrong, expired or has no access to this repository)"
                    } else {
                        " (the remote wants credentials: set GITHUB_TOKEN or GitHub App settings)"
                    });
                }
                Err(RemoteError::Failed {
                    what: what.to_owned(),
                    url,
                    message,
                })
            }
        }
    }

    /// A message of git's without credentials, cropped.
    fn clean(&self, text: &str) -> String {
        let mut t = redact_url(text);
        if let Some(u) = self.userinfo.as_deref().filter(|u| !u.is_empty()) {
            t = t.replace(u, "***");
        }
        if let Some(token) = self.auth.token.as_ref().map(Token::get).filter(|t| !t.is_empty()) {
            t = t.replace(&token, "***");
        }
        // (one line: git's lines joined, so logs and the status show no escaped newlines)
        let t: Vec<&str> = t.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        let t = crate::diagnostic::visible(&t.join(" | "), &[]);
        match t.char_indices().nth(2000) {
            Some((i, _)) => format!("{}…", &t[..i]),
            None => t,
        }
    }
}

/// A local path made absolute and canonical (`//` and a trailing `/` gone), so two spellings
/// of one repository compare equal.
fn canonical(path: &str) -> String {
    let p = Path::new(path);
    // a path that is not there (yet) is still made absolute: `file://relative` names a host
    let abs = std::fs::canonicalize(p)
        .or_else(|_| std::path::absolute(p))
        .unwrap_or_else(|_| p.to_owned());
    abs.display().to_string()
}

/// The process groups of the git commands running now, so a shutdown can stop them.
static RUNNING: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// A running git command's process group, forgotten when dropped.
struct Running(u32);

impl Running {
    fn new(pid: u32) -> Running {
        RUNNING.lock().expect("not poisoned").push(pid);
        Running(pid)
    }

    fn kill(&self) {
        kill_group(self.0);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.lock().expect("not poisoned").retain(|p| *p != self.0);
    }
}

fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: signalling a process group rampart created; no memory is touched.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
}

/// Kill every git command still running (and its helpers): for a shutdown that does not
/// wait for the current reconcile.
pub fn kill_all() {
    for pid in RUNNING.lock().expect("not poisoned").iter() {
        kill_group(*pid);
    }
}

/// Whether git's output says the push was refused as a non-fast-forward (the remote moved).
/// Git's ways of saying an HTTP remote answered 401 or 403 (after a 401 it asks for a user
/// name, which it may not: no terminal, no askpass).
fn refused_credentials(message: &str) -> bool {
    message.contains("could not read Username")
        || message.contains("Authentication failed")
        || message.contains("The requested URL returned error: 401")
        || message.contains("The requested URL returned error: 403")
}

fn rejected(message: &str) -> bool {
    message.lines().any(|l| l.starts_with('!'))
        || message.contains("[rejected]")
        || message.contains("non-fast-forward")
        || message.contains("fetch first")
        || message.contains("cannot lock ref")
}

/// Read at most 64 KiB of a pipe, discarding the rest (so the child never blocks on it).
fn read_capped(r: &mut impl Read) -> String {
    let mut buf = Vec::new();
    let _ = r.by_ref().take(64 << 10).read_to_end(&mut buf);
    let _ = std::io::copy(r, &mut std::io::sink());
    String::from_utf8_lossy(&buf).into_owned()
}

/// `text` with the user information of every URL in it (`https://user:secret@host`) replaced.
pub fn redact_url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '/' || c == '\'' || c == '"')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***@");
                out.push_str(&authority[at + 1..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Whether a failed fetch says the ref does not exist on the remote (as opposed to the remote
/// being unreachable).
pub fn missing_ref(e: &RemoteError) -> bool {
    matches!(e, RemoteError::Failed { message, .. } if message.contains("couldn't find remote ref"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            redact_url("fatal: https://x-access-token:ghs_abc@github.com/o/r.git not found"),
            "fatal: https://***@github.com/o/r.git not found"
        );
        assert_eq!(redact_url("file:///tmp/a b"), "file:///tmp/a b");
        assert_eq!(redact_url("ssh://git@host:22/r"), "ssh://***@host:22/r");
    }

    #[test]
    fn tokens_are_cleaned_from_messages() {
        let r = Remote::new(
            "https://example.com/r.git",
            Auth {
                token: Some(Token::new("sekrit".into())),
                ..Auth::default()
            },
        )
        .unwrap();
        assert_eq!(r.clean("bad header: Basic sekrit"), "bad header: Basic ***");
        assert!(!format!("{:?}", r).contains("sekrit"));
    }

    #[test]
    fn credentials_leave_the_url_and_options_are_refused() {
        let r = Remote::new("https://bob:pw@example.com/r.git", Auth::default()).unwrap();
        assert_eq!(r.url(), "https://example.com/r.git");
        assert_eq!(r.userinfo.as_deref(), Some("bob:pw"));
        assert_eq!(r.clean("auth failed for bob:pw"), "auth failed for ***");
        assert!(Remote::new("--upload-pack=touch x;:@x:y", Auth::default()).is_err());
        assert!(Remote::new("", Auth::default()).is_err());
        let ssh = Remote::new("git@github.com:acme/cfg.git", Auth::default()).unwrap();
        assert_eq!(ssh.url(), "git@github.com:acme/cfg.git");
    }

    #[test]
    fn tokens_go_only_over_https_or_to_this_machine() {
        let r = |u: &str| Remote::new(u, Auth::default()).unwrap().may_send_token();
        assert!(r("https://github.com/a/b.git"));
        assert!(r("http://127.0.0.1:8080/a/b.git"));
        assert!(!r("http://example.com/a/b.git"));
        assert!(!r("http://[2001:db8::1]/a/b.git"));
        assert!(!r("http://127.0.0.1.evil.example/a/b.git"));
        assert!(r("http://[::1]:8080/a/b.git"));
        assert!(!r("ssh://git@example.com/a/b.git"));
    }

    #[test]
    fn refusals_are_recognised() {
        assert!(rejected(
            "To file:///r\n!\trefs/heads/x:refs/heads/x\t[rejected] (fetch first)\nDone"
        ));
        assert!(!rejected("fatal: repository not found"));
    }
}
