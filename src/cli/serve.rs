//! `rampart serve --repo URL --target dir:OUT|branch:NAME[@REMOTE] …`.

use super::exit;
use crate::remote::{Auth, Remote};
use crate::serve::{self, Config, Shared, Status, http, reconcile};
use crate::target::Target;
use crate::target::branch::BranchTarget;
use crate::target::dir::DirTarget;
use crate::target::kube::KubeTarget;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Watch one branch of a config repo and apply what is approved: the reconciler service.
///
/// Tracks --branch of --repo in a bare mirror under --state-dir. On every trigger — a poll
/// every --interval (with jitter) and each verified GitHub `push` webhook to the branch — it
/// fetches, and for each target walks the first-parent commits since the one the target holds,
/// authorising each commit's change as `check` does (the parent's policies and teams; the
/// merged pull request's author and approving reviews when GitHub is configured, the commit's
/// author and `Approved-by:` trailers otherwise). It applies up to the last allowed commit; a
/// denied or invalid commit stops the target there — never skipped, until a later commit
/// reverts it — and the status API, logs and metrics say which, why, and the way out. Each apply is recorded in the target
/// (state file, deploy-branch trailers) and as a note under refs/notes/rampart.
///
/// HTTP on --listen: /healthz, /readyz, /metrics (OpenMetrics), GET /api/v1/status, POST
/// /webhook/github. Credentials come from the environment (GITHUB_TOKEN, RAMPART_APP_*,
/// RAMPART_WEBHOOK_SECRET) or files, never from flags or the config repo.
/// SIGTERM/SIGINT: stop taking triggers, let the current reconcile finish (at most
/// --shutdown-grace), exit 0.
#[derive(clap::Args)]
pub struct Args {
    /// The config repo: an https, ssh or file:// URL, or a local path.
    #[arg(long, env = "RAMPART_REPO", value_name = "URL|PATH")]
    repo: String,
    /// The branch to track.
    #[arg(long, env = "RAMPART_BRANCH", default_value = "main")]
    branch: String,
    /// The config repo's subdirectory inside the repository.
    #[arg(long, env = "RAMPART_PATH", default_value = "", value_name = "DIR")]
    path: String,
    /// Where the mirror and caches live (may start empty: targets record what they hold).
    #[arg(long, env = "RAMPART_STATE_DIR", default_value = "rampart-state", value_name = "DIR")]
    state_dir: PathBuf,
    /// Where to apply (repeatable, or comma-separated in RAMPART_TARGETS): `dir:OUT`,
    /// `branch:NAME[@REMOTE]` (a deploy branch of the config repo, or of REMOTE), or
    /// `kubernetes[:CONTEXT]` (a cluster: that kubeconfig context, else the current one or
    /// the in-cluster service account; the inventory there records the applied commit).
    #[arg(
        long = "target",
        env = "RAMPART_TARGETS",
        value_delimiter = ',',
        required = true,
        value_name = "TARGET"
    )]
    targets: Vec<String>,
    /// HTTP address for health, metrics, status and webhooks.
    #[arg(long, env = "RAMPART_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// How often to poll the remote (jittered by ±10 %).
    #[arg(long, env = "RAMPART_INTERVAL", default_value = "60s", value_parser = parse_interval)]
    interval: Duration,
    /// A file holding the GitHub webhook secret (or set RAMPART_WEBHOOK_SECRET). Without
    /// one, POST /webhook/github answers 404 and only polling triggers reconciles.
    #[arg(long, env = "RAMPART_WEBHOOK_SECRET_FILE", value_name = "FILE")]
    webhook_secret_file: Option<PathBuf>,
    /// The GitHub repository (OWNER/REPO) to read pull requests and reviews from; with a
    /// token (GITHUB_TOKEN) or GitHub App settings (RAMPART_APP_ID, RAMPART_APP_PRIVATE_KEY,
    /// RAMPART_APP_INSTALLATION) in the environment.
    #[arg(long, env = "RAMPART_GITHUB_REPOSITORY", value_name = "OWNER/REPO")]
    github_repo: Option<String>,
    /// GitHub's API URL (GitHub Enterprise Server: https://HOST/api/v3).
    #[arg(
        long,
        env = "GITHUB_API_URL",
        default_value = "https://api.github.com",
        value_name = "URL"
    )]
    github_api_url: String,
    /// With GitHub configured, deny a commit that no merged pull request brought in
    /// (its author and trailers could be written by anyone who can push).
    #[arg(long, env = "RAMPART_REQUIRE_PULL_REQUEST", default_value = "true", action = clap::ArgAction::Set)]
    require_pull_request: bool,
    /// Push refs/notes/rampart (the apply records) to the remote.
    #[arg(long, env = "RAMPART_PUSH_NOTES", default_value = "true", action = clap::ArgAction::Set)]
    push_notes: bool,
    /// An ssh private key for ssh remotes.
    #[arg(long, env = "RAMPART_SSH_KEY", value_name = "FILE")]
    ssh_key: Option<PathBuf>,
    /// A known_hosts file for ssh remotes (host keys checked strictly).
    #[arg(long, env = "RAMPART_SSH_KNOWN_HOSTS", value_name = "FILE")]
    ssh_known_hosts: Option<PathBuf>,
    /// For a target that holds objects but records no applied commit: authorise the change
    /// from this commit (the one the target was built from).
    #[arg(long, value_name = "COMMIT")]
    baseline: Option<String>,
    /// Log format.
    #[arg(long, env = "RAMPART_LOG_FORMAT", value_enum, default_value = "pretty")]
    log_format: LogFormat,
    /// How long SIGTERM waits for the current reconcile before exiting.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    shutdown_grace: Duration,
    /// kubernetes targets: take over fields another field manager owns (off: such a conflict
    /// is an error naming the object, the field and the manager; the apply is retried at each
    /// reconcile and fails until the field is given back or this flag is set).
    #[arg(long, env = "RAMPART_FORCE_CONFLICTS")]
    force_conflicts: bool,
    /// kubernetes targets: how often to compare the live objects with the applied revision
    /// (a server-side dry run of each; `rampart_drift_objects`, the status API). Off unless given.
    #[arg(long, env = "RAMPART_DRIFT_INTERVAL", value_parser = parse_interval, value_name = "DURATION")]
    drift_interval: Option<Duration>,
    /// With --drift-interval: re-apply drifted objects, taking their fields back from whoever
    /// changed them (server-side apply with force).
    #[arg(long, env = "RAMPART_SELF_HEAL", requires = "drift_interval")]
    self_heal: bool,
    /// Prometheus' base URL for rollout analysis (`http://prometheus:9090`, a path prefix is
    /// kept). Without it every SLO check is inconclusive: rollouts with SLOs hold and pause.
    #[arg(long, env = "RAMPART_PROMETHEUS_URL", value_name = "URL")]
    prometheus: Option<String>,
    /// A file holding a bearer token for Prometheus (read at start; never logged). Or set
    /// RAMPART_PROMETHEUS_TOKEN.
    #[arg(long, env = "RAMPART_PROMETHEUS_TOKEN_FILE", value_name = "FILE")]
    prometheus_token_file: Option<PathBuf>,
    /// A webhook told of rollout events (revert, promote, pause, step) as JSON with a
    /// Slack-compatible `text` field; repeatable, or comma-separated in RAMPART_NOTIFY (prefer
    /// the variable: such URLs are secrets, and arguments show in `ps`).
    #[arg(
        long = "notify",
        env = "RAMPART_NOTIFY",
        value_delimiter = ',',
        value_name = "URL",
        hide_env_values = true
    )]
    notify: Vec<String>,
    /// Author and committer of rampart's revert and promote commits. Its email is how serve
    /// recognises its own commits (with its records), so keep it for the repo's life.
    #[arg(
        long,
        env = "RAMPART_COMMIT_AUTHOR",
        default_value = "rampart <rampart@localhost>",
        value_name = "NAME <EMAIL>"
    )]
    commit_author: String,
    /// Reconcile once and exit (no HTTP): 0 every target holds the tip, 2 a target is blocked
    /// by policy, 3 by an invalid commit, 1 anything else stopped a target.
    #[arg(long)]
    once: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Json,
    Pretty,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = crate::units::Duration::parse(s).map_err(|e| e.to_string())?;
    if d.millis == 0 {
        return Err("must be more than 0".into());
    }
    Ok(Duration::from_millis(d.millis))
}

/// The poll interval: at least a second (each poll is a fetch from the remote).
fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(1) {
        return Err("polling more often than once a second would hammer the remote: give at least `1s`".into());
    }
    Ok(d)
}

/// A branch name git accepts, written plainly (no glob, no refspec, no `refs/` prefix, not an
/// option).
fn valid_branch(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && !name.starts_with("refs/")
        && !name.contains(['*', ':', '?', '[', '\\', '^', '~', ' '])
        && git2::Reference::is_valid_name(&format!("refs/heads/{name}"))
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn init_logs(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("RAMPART_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
        LogFormat::Pretty => builder.with_ansi(false).try_init(),
    };
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    init_logs(args.log_format);
    let secret = match (&args.webhook_secret_file, var("RAMPART_WEBHOOK_SECRET")) {
        (Some(f), _) => {
            let s = std::fs::read(f)
                .with_context(|| format!("reading the webhook secret file `{}`", f.display()))?
                .trim_ascii()
                .to_vec();
            if s.is_empty() {
                anyhow::bail!("the webhook secret file `{}` is empty", f.display());
            }
            Some(s)
        }
        (None, s) => s.map(String::into_bytes),
    }
    .filter(|s| !s.is_empty());
    if let Some(b) = &args.baseline
        && !crate::target::is_commit_id(b)
    {
        anyhow::bail!("--baseline must be a full commit id (40 hex digits), not `{b}`: a ref name would move");
    }
    // an App's installation token replaces this one before each fetch (see `GitHub::refresh`)
    let app = var("RAMPART_APP_ID").is_some();
    let token = match var("GITHUB_TOKEN") {
        Some(t) => Some(crate::remote::Token::new(t)),
        None if app && args.github_repo.is_some() => Some(crate::remote::Token::default()),
        None => None,
    };
    let auth = Auth {
        token: token.clone(),
        ssh_key: args.ssh_key.clone(),
        known_hosts: args.ssh_known_hosts.clone(),
    };
    let remote = Remote::new(&args.repo, auth.clone()).map_err(|e| anyhow::anyhow!("--repo: {e}"))?;
    if !valid_branch(&args.branch) {
        anyhow::bail!(
            "--branch `{}` is not a valid branch name",
            crate::diagnostic::visible(&args.branch, &[])
        );
    }
    let cfg = Arc::new(Config {
        repo: remote.display(),
        branch: args.branch.clone(),
        path: args.path.trim_matches('/').to_owned(),
        state_dir: args.state_dir.clone(),
        listen: args.listen,
        interval: args.interval,
        baseline: args.baseline.clone(),
        require_pull_request: args.require_pull_request,
        push_notes: args.push_notes,
        shutdown_grace: args.shutdown_grace,
        drift_interval: args.drift_interval,
        self_heal: args.self_heal,
    });
    let mirror = cfg.state_dir.join("mirror.git");
    let mut targets: Vec<Box<dyn Target>> = Vec::new();
    for raw in &args.targets {
        // (a target may carry a URL with credentials: only its cleaned form is ever shown)
        let t = &crate::remote::redact_url(raw);
        targets.push(match raw.split_once(':') {
            Some(("dir", p)) if !p.is_empty() => Box::new(DirTarget::new(std::path::Path::new(p), &cfg.repo)),
            Some(("branch", spec)) if !spec.is_empty() => {
                let (name, url) = match spec.split_once('@') {
                    Some((n, u)) if !u.is_empty() => (
                        n,
                        Remote::new(u, auth.clone()).map_err(|e| anyhow::anyhow!("--target {t}: {e}"))?,
                    ),
                    _ => (spec, remote.clone()),
                };
                let elsewhere = url.url() != remote.url();
                if !valid_branch(name) {
                    anyhow::bail!(
                        "--target {t}: `{}` is not a valid branch name",
                        crate::diagnostic::visible(name, &[])
                    );
                }
                if name == args.branch && url.url() == remote.url() {
                    anyhow::bail!(
                        "--target {t}: the deploy branch must be a branch other than the tracked one (`{}`)",
                        args.branch
                    );
                }
                Box::new(BranchTarget::new(
                    name,
                    url,
                    &mirror,
                    &reconcile::tracking(&args.branch),
                    elsewhere,
                ))
            }
            _ if raw == "kubernetes" || raw.starts_with("kubernetes:") => {
                let context = raw
                    .strip_prefix("kubernetes:")
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned);
                Box::new(
                    KubeTarget::connect(crate::target::kube::Options {
                        context,
                        force_conflicts: args.force_conflicts,
                    })
                    .with_context(|| format!("--target {t}"))?,
                )
            }
            _ => anyhow::bail!("--target {t}: expected dir:OUT, branch:NAME[@REMOTE] or kubernetes[:CONTEXT]"),
        });
    }
    let target_names: Vec<String> = targets.iter().map(|t| t.name()).collect();
    let identities = github_identities(&args, token.filter(|_| app))?;
    let status = Status {
        repo: cfg.repo.clone(),
        branch: cfg.branch.clone(),
        webhooks: secret.is_some(),
        // (listed from the start, before anything is known of them)
        targets: target_names
            .iter()
            .map(|n| serve::TargetStatus {
                name: n.clone(),
                ..serve::TargetStatus::default()
            })
            .collect(),
        ..Status::default()
    };
    let shared = Arc::new(Shared::new(status));
    let rollouts = rollout_settings(&args)?;
    let mut r =
        reconcile::Reconciler::new(cfg.clone(), shared.clone(), remote, targets, identities)?.with_rollouts(rollouts);
    if args.once {
        r.run();
        let st = shared.status();
        super::print(&once_summary(&st))?;
        return Ok(once_code(&st));
    }
    if secret.is_none() {
        tracing::warn!(
            "no webhook secret configured (RAMPART_WEBHOOK_SECRET or --webhook-secret-file): POST /webhook/github answers 404; polling every {:?}",
            cfg.interval
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(cfg.listen))
        .with_context(|| format!("listening on {}", cfg.listen))?;
    tracing::info!(
        repo = %cfg.repo,
        branch = %cfg.branch,
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        targets = ?target_names,
        "serving"
    );
    let worker = {
        let shared = shared.clone();
        let interval = cfg.interval;
        std::thread::Builder::new()
            .name("reconcile".into())
            .spawn(move || serve::reconcile_loop(r, shared, interval))
            .context("starting the reconcile thread")?
    };
    let state = Arc::new(http::HttpState {
        shared: shared.clone(),
        bodies: tokio::sync::Semaphore::new(http::MAX_WEBHOOK_BODIES),
        verifier: secret
            .as_deref()
            .map(|s| crate::github::webhook::Verifier::new(Some(s))),
        branch_ref: format!("refs/heads/{}", cfg.branch),
    });
    let app = http::router(state);
    let stopper = shared.clone();
    rt.block_on(async move {
        let stop = async move {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
            let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::info!("stopping: no new triggers; waiting for the current reconcile");
            stopper.stop();
        };
        http::serve(listener, app, stop).await;
        anyhow::Ok(())
    })?;
    // the reconcile thread stops after its current run (applies are atomic or resumable);
    // past the grace period the process exits anyway
    let deadline = std::time::Instant::now() + cfg.shutdown_grace;
    while !worker.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !worker.is_finished() {
        tracing::warn!("the current reconcile did not finish within the grace period; exiting anyway");
        // (git commands left running would outlive the process)
        crate::remote::kill_all();
    }
    tracing::info!("stopped");
    Ok(exit::OK)
}

/// What `--once` prints: one line per target (and the fetch error, if any).
fn once_summary(s: &Status) -> String {
    let mut out = String::new();
    if let Some(e) = &s.fetch_error {
        out.push_str(&format!("fetch failed: {e}\n"));
    }
    for t in &s.targets {
        let at = t
            .applied
            .as_deref()
            .map_or("nothing".to_owned(), |c| serve::decide::short(c).to_owned());
        let line = match (&t.blocked, &t.error) {
            (_, Some(e)) => format!("{}: error: {e}", t.name),
            (Some(b), None) => format!(
                "{}: holds {at}; blocked ({}) at {}: {}; way out: {}",
                t.name,
                b.kind,
                b.commit.as_deref().map(serve::decide::short).unwrap_or("-"),
                b.reasons.join("; "),
                b.way_out
            ),
            (None, None) => format!(
                "{}: holds {at} ({})",
                t.name,
                t.last_result.as_deref().unwrap_or("up to date")
            ),
        };
        out.push_str(&line);
        out.push('\n');
        if let Some(d) = t
            .drift
            .as_ref()
            .filter(|d| d.found.count > 0 || !d.found.errors.is_empty())
        {
            out.push_str(&format!(
                "{}: drift: {} object{} differ from {} ({} healed){}{}\n",
                t.name,
                d.found.count,
                if d.found.count == 1 { "" } else { "s" },
                serve::decide::short(&d.commit),
                d.found.healed,
                if d.found.objects.is_empty() {
                    String::new()
                } else {
                    format!(": {}", d.found.objects.join(", "))
                },
                if d.found.errors.is_empty() {
                    String::new()
                } else {
                    format!("; {} could not be checked or healed", d.found.errors.len())
                }
            ));
        }
    }
    out
}

/// The exit code of `--once`.
fn once_code(s: &Status) -> u8 {
    if s.fetch_error.is_some() || s.targets.iter().any(|t| t.error.is_some()) {
        return exit::ERROR;
    }
    let kinds: Vec<&str> = s
        .targets
        .iter()
        .filter_map(|t| t.blocked.as_ref().map(|b| b.kind))
        .collect();
    // (an error wins over invalid, invalid over denied)
    if kinds
        .iter()
        .any(|k| !matches!(*k, "invalid" | "denied" | "no-pull-request"))
    {
        exit::ERROR
    } else if kinds.contains(&"invalid") {
        exit::INVALID
    } else if !kinds.is_empty() {
        exit::DENIED
    } else {
        exit::OK
    }
}

/// Who merged a commit, from GitHub's pull requests and reviews.
struct GitHub {
    rt: tokio::runtime::Runtime,
    client: crate::github::client::Client,
    /// The token git uses, refreshed for a GitHub App.
    token: Option<crate::remote::Token>,
}

impl reconcile::Identities for GitHub {
    fn of(&mut self, commit: &str) -> anyhow::Result<Option<reconcile::PullIdentity>> {
        let found = self
            .rt
            .block_on(self.client.identity_of(commit))
            .with_context(|| format!("reading the pull request of commit {}", serve::decide::short(commit)))?;
        Ok(found.map(|(pull, approvers)| reconcile::PullIdentity {
            number: pull.number,
            author: pull.author,
            approvers,
        }))
    }

    fn refresh(&mut self) -> anyhow::Result<()> {
        if let Some(t) = &self.token
            && let Some(fresh) = self
                .rt
                .block_on(self.client.git_token())
                .context("refreshing the GitHub App installation token")?
        {
            t.set(fresh);
        }
        Ok(())
    }
}

/// Pull-request identities from GitHub, when a repository is configured (with a token or
/// GitHub App settings in the environment).
/// Prometheus, the webhooks and the commit author of rollouts, from the flags.
fn rollout_settings(args: &Args) -> anyhow::Result<serve::rollouts::Settings> {
    let token = match (&args.prometheus_token_file, var("RAMPART_PROMETHEUS_TOKEN")) {
        (Some(f), _) => {
            let t = std::fs::read_to_string(f)
                .with_context(|| format!("reading the Prometheus token file `{}`", f.display()))?
                .trim()
                .to_owned();
            if t.is_empty() {
                anyhow::bail!("the Prometheus token file `{}` is empty", f.display());
            }
            Some(t)
        }
        (None, t) => t,
    };
    let prometheus = args
        .prometheus
        .as_deref()
        .map(|u| crate::observe::prometheus::Client::new(u, token))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--prometheus: {e}"))?;
    let urls: Vec<String> = args
        .notify
        .iter()
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .collect();
    let notifier = if urls.is_empty() {
        None
    } else {
        Some(
            crate::notify::Notifier::new(urls, Duration::from_secs(10))
                .map_err(|e| anyhow::anyhow!("--notify: {e}"))?,
        )
    };
    let id = crate::policy::decide::Identity::parse_trailer(&args.commit_author);
    let author = match (id.name, id.email) {
        (Some(name), Some(email)) if !email.is_empty() => crate::rollback::Author { name, email },
        _ => anyhow::bail!(
            "--commit-author must be `Name <email>`, not `{}`",
            crate::diagnostic::visible(&args.commit_author, &[])
        ),
    };
    // (reverts and promotions the branch refuses become pull requests, and rollout events
    // are commented on the pull request that introduced the rollout)
    let pulls: Option<Box<dyn crate::rollback::PullRequests + Send>> = match &args.github_repo {
        Some(repo) => match super::ci::github_auth()? {
            Some(auth) => Some(Box::new(
                crate::rollback::GitHubPulls::connect(&args.github_api_url, auth, repo)
                    .with_context(|| format!("connecting to GitHub for {repo}"))?,
            )),
            None => None,
        },
        None => None,
    };
    Ok(serve::rollouts::Settings {
        prometheus,
        notifier,
        author,
        pulls,
    })
}

fn github_identities(
    args: &Args,
    token: Option<crate::remote::Token>,
) -> anyhow::Result<Option<Box<dyn reconcile::Identities>>> {
    let Some(repo) = &args.github_repo else {
        return Ok(None);
    };
    let auth = super::ci::github_auth()?.with_context(|| {
        format!("--github-repo {repo}: set GITHUB_TOKEN, or RAMPART_APP_ID, RAMPART_APP_PRIVATE_KEY and RAMPART_APP_INSTALLATION")
    })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let client = rt
        .block_on(crate::github::client::Client::new(&args.github_api_url, auth, repo))
        .with_context(|| format!("connecting to GitHub for {repo}"))?;
    Ok(Some(Box::new(GitHub { rt, client, token })))
}
