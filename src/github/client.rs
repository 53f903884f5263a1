//! The GitHub REST client (IO): reviews, the sticky plan comment, the `rampart` check run and
//! the commit-status fallback, the pull requests of rollbacks and plain comments, over octocrab.
//!
//! Token auth (`GITHUB_TOKEN`, a PAT) or GitHub App auth (app id + private key → an
//! installation token, minted and refreshed by octocrab). The base URL is configurable
//! (`GITHUB_API_URL`, GitHub Enterprise Server). Primary and secondary rate limits
//! (`retry-after`, `x-ratelimit-reset`) are waited out here, up to [`MAX_WAIT`]: the request
//! was refused, so any call may be repeated. A server error or a lost answer is retried here
//! only for calls that can be repeated (reads, edits); octocrab's own retry layer is off, since
//! it would repeat a POST that may already have made a comment or a check run. Before
//! repeating a create, rampart looks for what the first attempt may have made. Errors name the
//! call and GitHub's message (its control characters escaped), never a token.

use crate::diagnostic::visible;
use octocrab::Octocrab;
use octocrab::models::pulls::ReviewState;
use octocrab::params::checks::{
    CheckRunConclusion, CheckRunOutput, CheckRunOutputAnnotation, CheckRunOutputAnnotationLevel, CheckRunStatus,
};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The longest rampart waits for a rate limit to reset before giving up.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// GitHub accepts at most this many annotations per check-run request.
pub const ANNOTATIONS_PER_REQUEST: usize = 50;

/// Who comments with the Actions `GITHUB_TOKEN`, which may not read `GET /user`.
pub const ACTIONS_BOT: &str = "github-actions[bot]";

/// Whether a call may be sent again when its answer is lost or a server error: reads and
/// edits that set a whole value can; creates (a second comment) and check-run updates
/// (GitHub appends their annotations) cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repeat {
    Safe,
    Never,
}

/// How the client authenticates.
pub enum Auth {
    /// A token: the Actions `GITHUB_TOKEN`, a PAT or an installation token.
    Token(String),
    /// A GitHub App: its id, its private key (PEM) and the installation to act as.
    App {
        app_id: u64,
        private_key_pem: String,
        installation: u64,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Token(_) => f.write_str("Token(<redacted>)"),
            Auth::App {
                app_id, installation, ..
            } => {
                write!(
                    f,
                    "App {{ app_id: {app_id}, installation: {installation}, key: <redacted> }}"
                )
            }
        }
    }
}

/// A failed call: what rampart was doing, the HTTP status when GitHub answered, and
/// GitHub's message.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {}{message}", status.map(|s| format!("GitHub answered {s}: ")).unwrap_or_default())]
pub struct CallError {
    pub what: String,
    pub status: Option<u16>,
    pub message: String,
    /// A rate limit that did not reset in time (not a permission problem, even if 403).
    pub rate_limited: bool,
}

impl CallError {
    /// Whether the request may have taken effect although it failed: no answer, an answer
    /// rampart could not read, or a server error.
    fn maybe_done(&self) -> bool {
        !self.rate_limited && self.status.is_none_or(|s| s >= 500)
    }
}

/// One annotation of the check run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    pub path: String,
    pub line: u32,
    pub column: Option<u32>,
    pub failure: bool,
    pub title: String,
    pub message: String,
}

/// How the result was reported on the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reported {
    CheckRun {
        id: u64,
        annotations: usize,
    },
    /// The token may not create check runs (a PAT): a commit status instead.
    Status,
}

/// The merged pull request that brought a commit in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedPull {
    pub number: u64,
    /// Its author's login, lowercase (GitHub's logins are case-insensitive); `ghost` for a
    /// deleted account.
    pub author: String,
    /// The head commit the reviews approved.
    pub head_sha: String,
    /// The branch it was merged into.
    pub base_ref: String,
    pub merge_commit_sha: Option<String>,
}

/// What rampart reads of GitHub's `pull-request-simple` (its own type, not octocrab's
/// model: only these fields decide, and a field GitHub adds or drops elsewhere cannot fail
/// the call).
#[derive(Debug, Clone, serde::Deserialize)]
struct ListedPull {
    number: u64,
    user: Option<ListedUser>,
    head: ListedRef,
    base: ListedRef,
    merged_at: Option<String>,
    merge_commit_sha: Option<String>,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct ListedUser {
    login: String,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct ListedRef {
    #[serde(rename = "ref")]
    name: String,
    sha: String,
    repo: Option<ListedRepo>,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct ListedRepo {
    default_branch: Option<String>,
}

/// What rampart reads of a pull request it opened or looked for.
#[derive(Debug, Clone, serde::Deserialize)]
struct Pull {
    number: u64,
    html_url: String,
}

/// The pull request that merged `sha`, among those GitHub associates with it: a merged one
/// whose merge commit is `sha` (a merge, a squash, the last commit of a rebase), else a merged
/// one into `branch`, else — `branch` unknown — the first merged one. Open and closed-unmerged
/// pull requests never count: they only propose the commit.
fn merged_pull_of(pulls: Vec<ListedPull>, sha: &str, branch: Option<&str>) -> Option<MergedPull> {
    let merged: Vec<ListedPull> = pulls.into_iter().filter(|p| p.merged_at.is_some()).collect();
    let chosen = merged
        .iter()
        .position(|p| p.merge_commit_sha.as_deref() == Some(sha))
        .or_else(|| match branch {
            Some(b) => merged.iter().position(|p| p.base.name == b),
            None => (!merged.is_empty()).then_some(0),
        })?;
    let p = merged.into_iter().nth(chosen)?;
    Some(MergedPull {
        number: p.number,
        author: p
            .user
            .map_or_else(|| "ghost".to_owned(), |u| u.login.to_ascii_lowercase()),
        head_sha: p.head.sha,
        base_ref: p.base.name,
        merge_commit_sha: p.merge_commit_sha,
    })
}

/// A repository's API, counting the calls it makes.
pub struct Client {
    gh: Octocrab,
    /// The GitHub App itself (JWT auth, for `GET /app`); `None` with a token.
    app: Option<Octocrab>,
    owner: String,
    repo: String,
    calls: AtomicUsize,
}

fn call_error(what: &str, e: octocrab::Error) -> CallError {
    match e {
        octocrab::Error::GitHub { source, .. } => CallError {
            what: what.to_owned(),
            status: Some(source.status_code.as_u16()),
            // (GitHub's message may echo what the pull request wrote)
            message: visible(&source.message.chars().take(300).collect::<String>(), &[]),
            rate_limited: false,
        },
        // (octocrab's other errors name URLs and causes, never the token)
        other => CallError {
            what: what.to_owned(),
            status: None,
            message: visible(&other.to_string().chars().take(300).collect::<String>(), &[]),
            rate_limited: false,
        },
    }
}

/// How long GitHub asks to wait before retrying, when the error is a rate limit.
fn rate_limit_wait(e: &octocrab::Error) -> Option<Duration> {
    let octocrab::Error::GitHub { source, .. } = e else {
        return None;
    };
    let status = source.status_code.as_u16();
    if status != 403 && status != 429 {
        return None;
    }
    let header = |name: &str| {
        source
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    if let Some(secs) = header("retry-after") {
        return Some(Duration::from_secs(secs));
    }
    let exhausted = header("x-ratelimit-remaining") == Some(0);
    let reset = source.rate_limit_reset.or_else(|| header("x-ratelimit-reset"));
    if exhausted || source.message.to_ascii_lowercase().contains("rate limit") {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        return Some(Duration::from_secs(reset.map_or(60, |r| r.saturating_sub(now).max(1))));
    }
    None
}

impl Client {
    /// A client for `owner/repo` at `api_url` (e.g. `https://api.github.com`).
    pub async fn new(api_url: &str, auth: Auth, repository: &str) -> Result<Client, CallError> {
        let err = |message: String| CallError {
            what: "setting up the GitHub client".to_owned(),
            status: None,
            message,
            rate_limited: false,
        };
        let (owner, repo) = repository
            .split_once('/')
            .filter(|(o, r)| !o.is_empty() && !r.is_empty() && !r.contains('/'))
            .ok_or_else(|| err(format!("`{repository}` is not OWNER/REPO")))?;
        let builder = Octocrab::builder()
            .base_uri(api_url)
            .map_err(|e| err(format!("GITHUB_API_URL `{api_url}`: {e}")))?
            .set_connect_timeout(Some(Duration::from_secs(10)))
            .set_read_timeout(Some(Duration::from_secs(30)))
            // (retries are decided per call in `call`: see the module's doc)
            .add_retry_config(octocrab::service::middleware::retry::RetryConfig::None);
        let (gh, app) = match auth {
            Auth::Token(t) => (builder.personal_token(t).build().map_err(|e| err(e.to_string()))?, None),
            Auth::App {
                app_id,
                private_key_pem,
                installation,
            } => {
                let key = octocrab::jsonwebtoken::EncodingKey::from_rsa_pem(private_key_pem.as_bytes())
                    .map_err(|_| err("the GitHub App private key is not an RSA PEM key".to_owned()))?;
                let app = builder
                    .app(app_id.into(), key)
                    .build()
                    .map_err(|e| err(e.to_string()))?;
                let inst = app.installation(installation.into()).map_err(|e| err(e.to_string()))?;
                (inst, Some(app))
            }
        };
        Ok(Client {
            gh,
            app,
            owner: owner.to_owned(),
            repo: repo.to_owned(),
            calls: AtomicUsize::new(0),
        })
    }

    /// API requests made so far (pages counted one by one).
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    /// The page after `page` (GitHub's `Link: rel="next"`), `None` after the last one.
    async fn next_page<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        page: &octocrab::Page<T>,
    ) -> Result<Option<octocrab::Page<T>>, CallError> {
        let Some(next) = page.next.clone() else {
            return Ok(None);
        };
        self.call(what, Repeat::Safe, || async {
            self.gh.get_page::<T>(&Some(next.clone())).await
        })
        .await
    }

    /// The items of `page` and of every page after it.
    async fn rest_of<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        mut page: octocrab::Page<T>,
    ) -> Result<Vec<T>, CallError> {
        let mut items = std::mem::take(&mut page.items);
        while let Some(mut next) = self.next_page(what, &page).await? {
            items.append(&mut next.items);
            page = next;
        }
        Ok(items)
    }

    /// Run one request, 3 tries at most: after a rate limit (waited out, at most
    /// [`MAX_WAIT`] in all), and after a server error or a lost answer when `repeat` allows.
    async fn call<T, F, Fut>(&self, what: &str, repeat: Repeat, f: F) -> Result<T, CallError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = octocrab::Result<T>>,
    {
        let mut waited = Duration::ZERO;
        for attempt in 0.. {
            self.calls.fetch_add(1, Ordering::Relaxed);
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) => match rate_limit_wait(&e) {
                    Some(wait) if attempt < 2 && waited + wait <= MAX_WAIT => {
                        waited += wait;
                        tokio::time::sleep(wait).await;
                    }
                    limited => {
                        let mut err = call_error(what, e);
                        err.rate_limited = limited.is_some();
                        if repeat == Repeat::Safe && attempt < 2 && err.maybe_done() {
                            tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
                            continue;
                        }
                        return Err(err);
                    }
                },
            }
        }
        unreachable!("the loop returns")
    }

    /// A token for git over https as this client: a fresh GitHub App installation token
    /// (they expire after an hour; octocrab caches one until shortly before), or `None` for a
    /// token client (its token is used as it is).
    pub async fn git_token(&self) -> Result<Option<String>, CallError> {
        if self.app.is_none() {
            return Ok(None);
        }
        use octocrab::secrecy::ExposeSecret;
        let token = self
            .call("creating a GitHub App installation token", Repeat::Safe, || async {
                self.gh.installation_token().await
            })
            .await?;
        Ok(Some(token.expose_secret().to_owned()))
    }

    /// The login rampart comments as: `<app slug>[bot]` for a GitHub App (`GET /app`), the
    /// token's user for a personal access token (`GET /user`), and [`ACTIONS_BOT`] for the
    /// Actions `GITHUB_TOKEN`, which `GET /user` refuses (403 "Resource not accessible by
    /// integration").
    pub async fn login(&self) -> Result<String, CallError> {
        if let Some(app) = &self.app {
            let me = self
                .call("reading the GitHub App", Repeat::Safe, || async {
                    app.current().app().await
                })
                .await?;
            let slug = me.slug.ok_or_else(|| CallError {
                what: "reading the GitHub App".to_owned(),
                status: None,
                message: "GitHub did not say the app's slug".to_owned(),
                rate_limited: false,
            })?;
            return Ok(format!("{slug}[bot]"));
        }
        match self
            .call("reading the token's user", Repeat::Safe, || async {
                self.gh.current().user().await
            })
            .await
        {
            Ok(user) => Ok(user.login),
            Err(e) if e.status == Some(403) && !e.rate_limited => Ok(ACTIONS_BOT.to_owned()),
            Err(e) => Err(e),
        }
    }

    /// Logins whose latest review of pull request `pr` approves `head_sha` (dismissed reviews,
    /// reviews of older commits and reviews superseded by a later one do not count).
    pub async fn approvals(&self, pr: u64, head_sha: &str) -> Result<Vec<String>, CallError> {
        let what = format!("listing the reviews of pull request #{pr}");
        let page = self
            .call(&what, Repeat::Safe, || async {
                self.gh
                    .pulls(&self.owner, &self.repo)
                    .list_reviews(pr)
                    .per_page(100)
                    .send()
                    .await
            })
            .await?;
        let reviews = self.rest_of(&what, page).await?;
        // the latest review of each user, in submission order
        let mut latest: std::collections::BTreeMap<String, (ReviewState, Option<String>)> = Default::default();
        for r in reviews {
            let (Some(user), Some(state)) = (r.user, r.state) else {
                continue;
            };
            if matches!(state, ReviewState::Commented | ReviewState::Pending) {
                // a comment does not change what a reviewer decided
                continue;
            }
            latest.insert(user.login, (state, r.commit_id));
        }
        Ok(latest
            .into_iter()
            .filter(|(_, (state, commit))| *state == ReviewState::Approved && commit.as_deref() == Some(head_sha))
            .map(|(login, _)| login)
            .collect())
    }

    /// The merged pull request that brought `sha` in (`GET /repos/{o}/{r}/commits/{sha}/pulls`,
    /// every page), chosen by [`merged_pull_of`] with the base repository's default branch as
    /// the branch; `None` when no merged pull request is associated with it (a direct push).
    pub async fn pull_request_of(&self, sha: &str) -> Result<Option<MergedPull>, CallError> {
        let what = format!("listing the pull requests of commit {}", visible(sha, &[]));
        let route = format!("/repos/{}/{}/commits/{sha}/pulls", self.owner, self.repo);
        let query = [("per_page", "100")];
        let page: octocrab::Page<ListedPull> = self
            .call(&what, Repeat::Safe, || async {
                self.gh.get(&route, Some(&query)).await
            })
            .await?;
        let pulls = self.rest_of(&what, page).await?;
        let branch = pulls
            .iter()
            .find_map(|p| p.base.repo.as_ref().and_then(|r| r.default_branch.clone()));
        Ok(merged_pull_of(pulls, sha, branch.as_deref()))
    }

    /// Who merged `sha` and who approved it: [`Client::pull_request_of`] and the
    /// [`Client::approvals`] of its head commit (lowercase, sorted). `None` for a commit no
    /// merged pull request brought in.
    pub async fn identity_of(&self, sha: &str) -> Result<Option<(MergedPull, Vec<String>)>, CallError> {
        let Some(pull) = self.pull_request_of(sha).await? else {
            return Ok(None);
        };
        let approvers = self.approvals(pull.number, &pull.head_sha).await?;
        let approvers: std::collections::BTreeSet<String> = approvers.iter().map(|l| l.to_ascii_lowercase()).collect();
        Ok(Some((pull, approvers.into_iter().collect())))
    }

    /// The id of the comment on `pr` that starts with `marker` and was written by `me`.
    async fn find_comment(&self, pr: u64, marker: &str, me: &str) -> Result<Option<u64>, CallError> {
        let what = format!("listing the comments of pull request #{pr}");
        let mut page = self
            .call(&what, Repeat::Safe, || async {
                self.gh
                    .issues(&self.owner, &self.repo)
                    .list_comments(pr)
                    .per_page(100)
                    .send()
                    .await
            })
            .await?;
        loop {
            if let Some(c) = page.items.iter().find(|c| {
                c.user.login.eq_ignore_ascii_case(me) && c.body.as_deref().is_some_and(|b| b.starts_with(marker))
            }) {
                return Ok(Some(c.id.into_inner()));
            }
            let Some(next) = self.next_page(&what, &page).await? else {
                return Ok(None);
            };
            page = next;
        }
    }

    /// Create or edit the one comment that starts with `marker` and was written by `me`
    /// (a comment by anyone else is never edited, whatever it says). Whether it was created.
    pub async fn upsert_comment(&self, pr: u64, marker: &str, body: &str, me: &str) -> Result<bool, CallError> {
        let body = format!("{marker}\n{body}");
        let edit = |id: u64| {
            let body = &body;
            async move {
                self.call(&format!("editing comment {id}"), Repeat::Safe, || async {
                    self.gh
                        .issues(&self.owner, &self.repo)
                        .update_comment(id.into(), body)
                        .await
                })
                .await
            }
        };
        if let Some(id) = self.find_comment(pr, marker, me).await? {
            edit(id).await?;
            return Ok(false);
        }
        for attempt in 0.. {
            let created = self
                .call(&format!("commenting on pull request #{pr}"), Repeat::Never, || async {
                    self.gh.issues(&self.owner, &self.repo).create_comment(pr, &body).await
                })
                .await;
            match created {
                Ok(_) => break,
                // the comment may be there: edit it rather than post a second one
                Err(e) if e.maybe_done() && attempt < 2 => {
                    if let Some(id) = self.find_comment(pr, marker, me).await? {
                        edit(id).await?;
                        break;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Open a pull request from the branch `head` of this repository into `base`; its number
    /// and web URL. A create whose answer was lost is looked for before it is sent again, and
    /// when GitHub answers that one is open already for that branch (422), that one is it.
    pub async fn create_pull_request(
        &self,
        head: &str,
        base: &str,
        title: &str,
        body: &str,
    ) -> Result<(u64, String), CallError> {
        let what = format!(
            "opening a pull request from `{}` into `{}`",
            visible(head, &[]),
            visible(base, &[])
        );
        let route = format!("/repos/{}/{}/pulls", self.owner, self.repo);
        let payload = serde_json::json!({"title": title, "head": head, "base": base, "body": body});
        let mut attempt = 0;
        loop {
            attempt += 1;
            let created: Result<Pull, CallError> = self
                .call(&what, Repeat::Never, || async {
                    self.gh.post(&route, Some(&payload)).await
                })
                .await;
            match created {
                Ok(p) => return Ok((p.number, p.html_url)),
                Err(e) if e.status == Some(422) || (e.maybe_done() && attempt < 3) => {
                    if let Some(open) = self.find_pull(head, base).await? {
                        return Ok((open.number, open.html_url));
                    }
                    if e.status == Some(422) || attempt >= 3 {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The open pull request from the branch `head` of this repository into `base`.
    async fn find_pull(&self, head: &str, base: &str) -> Result<Option<Pull>, CallError> {
        let what = format!("listing the pull requests from `{}`", visible(head, &[]));
        let route = format!("/repos/{}/{}/pulls", self.owner, self.repo);
        let head = format!("{}:{head}", self.owner);
        let query = [
            ("head", head.as_str()),
            ("base", base),
            ("state", "open"),
            ("per_page", "100"),
        ];
        let page: octocrab::Page<Pull> = self
            .call(&what, Repeat::Safe, || async {
                self.gh.get(&route, Some(&query)).await
            })
            .await?;
        Ok(self.rest_of(&what, page).await?.into_iter().next())
    }

    /// Comment `body` on pull request (or issue) `number`. A create whose answer was lost is
    /// looked for (the same body) before it is sent again.
    pub async fn comment(&self, number: u64, body: &str) -> Result<(), CallError> {
        let what = format!("commenting on pull request #{number}");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let created = self
                .call(&what, Repeat::Never, || async {
                    self.gh
                        .issues(&self.owner, &self.repo)
                        .create_comment(number, body)
                        .await
                })
                .await;
            match created {
                Ok(_) => return Ok(()),
                Err(e) if e.maybe_done() && attempt < 3 => {
                    let listing = format!("listing the comments of pull request #{number}");
                    let page = self
                        .call(&listing, Repeat::Safe, || async {
                            self.gh
                                .issues(&self.owner, &self.repo)
                                .list_comments(number)
                                .per_page(100)
                                .send()
                                .await
                        })
                        .await?;
                    let comments = self.rest_of(&listing, page).await?;
                    if comments.iter().any(|c| c.body.as_deref() == Some(body)) {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The check run `name` on `sha` whose `external_id` is `external_id`, if there is one.
    async fn find_check_run(&self, name: &str, sha: &str, external_id: &str) -> Result<Option<u64>, CallError> {
        #[derive(serde::Deserialize)]
        struct Runs {
            check_runs: Vec<Run>,
        }
        #[derive(serde::Deserialize)]
        struct Run {
            id: u64,
            external_id: Option<String>,
        }
        let route = format!("/repos/{}/{}/commits/{sha}/check-runs", self.owner, self.repo);
        let query = [("check_name", name), ("filter", "all"), ("per_page", "100")];
        let runs: Runs = self
            .call("listing the check runs of the head commit", Repeat::Safe, || async {
                self.gh.get(&route, Some(&query)).await
            })
            .await?;
        Ok(runs
            .check_runs
            .into_iter()
            .find(|r| r.external_id.as_deref() == Some(external_id))
            .map(|r| r.id))
    }

    /// Report on `sha` as the check run `name`, or — when the token may not create check runs
    /// (403) — as a commit status. Annotations go 50 per request; GitHub requires a title and
    /// a summary in every request and shows the last one, so the full `summary` goes in the
    /// first request (a run cut short by an error still shows it) and in the last, and the
    /// requests between carry a one-line one: `summary` is sent at most twice.
    pub async fn report(
        &self,
        name: &str,
        sha: &str,
        success: bool,
        title: &str,
        summary: &str,
        annotations: &[Annotation],
    ) -> Result<Reported, CallError> {
        let conclusion = if success {
            CheckRunConclusion::Success
        } else {
            CheckRunConclusion::Failure
        };
        let batches: Vec<&[Annotation]> = annotations.chunks(ANNOTATIONS_PER_REQUEST).collect();
        let requests = batches.len().max(1);
        let output = |i: usize| CheckRunOutput {
            title: title.to_owned(),
            summary: if i == 0 || i + 1 == requests {
                summary.to_owned()
            } else {
                format!("Adding annotations ({} of {requests} requests)…", i + 1)
            },
            text: None,
            annotations: batches.get(i).copied().unwrap_or(&[]).iter().map(annotation).collect(),
            images: Vec::new(),
        };
        // names this report's run, so a create whose answer was lost can be found (a run GitHub
        // makes visible only after the lookup would still be made twice: rare, and harmless)
        let external_id = format!(
            "rampart-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let mut attempt = 0;
        let id = loop {
            attempt += 1;
            let created = self
                .call("creating the check run", Repeat::Never, || async {
                    self.gh
                        .checks(&self.owner, &self.repo)
                        .create_check_run(name, sha)
                        .external_id(external_id.clone())
                        .status(CheckRunStatus::Completed)
                        .conclusion(conclusion)
                        .output(output(0))
                        .send()
                        .await
                })
                .await;
            match created {
                Ok(r) => break r.id.into_inner(),
                // the run may be there: find it rather than create a second one
                Err(e) if e.maybe_done() && attempt < 3 => {
                    if let Some(id) = self.find_check_run(name, sha, &external_id).await? {
                        break id;
                    }
                }
                Err(e) if e.status == Some(403) && !e.rate_limited => {
                    let state = if success {
                        octocrab::models::StatusState::Success
                    } else {
                        octocrab::models::StatusState::Failure
                    };
                    let description: String = title.chars().take(140).collect();
                    // (a second status with the same context replaces the first)
                    self.call(
                        "setting the commit status (the token may not create check runs)",
                        Repeat::Safe,
                        || async {
                            self.gh
                                .repos(&self.owner, &self.repo)
                                .create_status(sha.to_owned(), state)
                                .context(name.to_owned())
                                .description(description.clone())
                                .send()
                                .await
                        },
                    )
                    .await?;
                    return Ok(Reported::Status);
                }
                Err(e) => return Err(e),
            }
        };
        for i in 1..requests {
            self.call("adding annotations to the check run", Repeat::Never, || async {
                self.gh
                    .checks(&self.owner, &self.repo)
                    .update_check_run(id.into())
                    .output(output(i))
                    .send()
                    .await
            })
            .await?;
        }
        Ok(Reported::CheckRun {
            id,
            annotations: annotations.len(),
        })
    }
}

fn annotation(a: &Annotation) -> CheckRunOutputAnnotation {
    CheckRunOutputAnnotation {
        path: a.path.clone(),
        start_line: a.line.max(1),
        end_line: a.line.max(1),
        start_column: a.column,
        end_column: a.column,
        annotation_level: if a.failure {
            CheckRunOutputAnnotationLevel::Failure
        } else {
            CheckRunOutputAnnotationLevel::Warning
        },
        // (GitHub's limit is 64 KB)
        message: a.message[..a.message.floor_char_boundary(64 * 1024 - 1)].to_owned(),
        title: Some(a.title.chars().take(255).collect()),
        raw_details: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pull(number: u64, merged: bool, merge_commit: Option<&str>, base: &str) -> ListedPull {
        ListedPull {
            number,
            user: Some(ListedUser {
                login: format!("Author{number}"),
            }),
            head: ListedRef {
                name: format!("topic-{number}"),
                sha: format!("head{number}"),
                repo: None,
            },
            base: ListedRef {
                name: base.to_owned(),
                sha: "base".to_owned(),
                repo: None,
            },
            merged_at: merged.then(|| "2026-11-20T10:00:00Z".to_owned()),
            merge_commit_sha: merge_commit.map(str::to_owned),
        }
    }

    #[test]
    fn the_pull_whose_merge_commit_is_the_sha_wins() {
        let pulls = vec![
            pull(1, true, Some("other"), "main"),
            pull(2, true, Some("abc"), "release"),
            pull(3, true, Some("abc2"), "main"),
        ];
        let p = merged_pull_of(pulls, "abc", Some("main")).unwrap();
        assert_eq!(p.number, 2);
        assert_eq!(p.author, "author2", "logins are lowercase");
        assert_eq!(p.head_sha, "head2");
        assert_eq!(p.base_ref, "release");
        assert_eq!(p.merge_commit_sha.as_deref(), Some("abc"));
    }

    #[test]
    fn else_a_merged_pull_into_the_branch() {
        let pulls = vec![pull(1, true, Some("x"), "release"), pull(2, true, Some("y"), "main")];
        assert_eq!(merged_pull_of(pulls.clone(), "abc", Some("main")).unwrap().number, 2);
        assert_eq!(merged_pull_of(pulls.clone(), "abc", None).unwrap().number, 1);
        assert_eq!(merged_pull_of(pulls, "abc", Some("other")), None);
    }

    #[test]
    fn open_and_unmerged_pulls_never_count() {
        // an open pull request can name the commit too (its merge commit is a test merge)
        let pulls = vec![pull(1, false, Some("abc"), "main"), pull(2, false, None, "main")];
        assert_eq!(merged_pull_of(pulls, "abc", Some("main")), None);
        assert_eq!(merged_pull_of(Vec::new(), "abc", None), None);
    }

    #[test]
    fn a_deleted_author_is_ghost() {
        let mut p = pull(1, true, Some("abc"), "main");
        p.user = None;
        assert_eq!(merged_pull_of(vec![p], "abc", None).unwrap().author, "ghost");
    }

    #[test]
    fn a_listed_pull_reads_from_githubs_json() {
        let json = r#"{"number": 7, "user": {"login": "Octo"}, "state": "closed",
            "head": {"ref": "fix", "sha": "h", "repo": null},
            "base": {"ref": "main", "sha": "b", "repo": {"default_branch": "main"}},
            "merged_at": "2026-11-20T10:00:00Z", "merge_commit_sha": "abc"}"#;
        let p: ListedPull = serde_json::from_str(json).unwrap();
        let branch = p.base.repo.as_ref().and_then(|r| r.default_branch.clone());
        assert_eq!(branch.as_deref(), Some("main"));
        let m = merged_pull_of(vec![p], "abc", branch.as_deref()).unwrap();
        assert_eq!((m.number, m.author.as_str(), m.base_ref.as_str()), (7, "octo", "main"));
    }
}
