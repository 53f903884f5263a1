//! The GitHub REST client (IO): reviews, the sticky plan comment, the `rampart` check run and
//! the commit-status fallback, over octocrab.
//!
//! Token auth (`GITHUB_TOKEN`, a PAT) or GitHub App auth (app id + private key → an
//! installation token, minted and refreshed by octocrab). The base URL is configurable
//! (`GITHUB_API_URL`, GitHub Enterprise Server). Server errors are retried by octocrab's retry
//! layer; primary and secondary rate limits (`retry-after`, `x-ratelimit-reset`) are waited
//! out here, up to [`MAX_WAIT`]. Errors name the call and GitHub's message, never a token.

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

/// A repository's API, counting the calls it makes.
pub struct Client {
    gh: Octocrab,
    owner: String,
    repo: String,
    calls: AtomicUsize,
}

fn call_error(what: &str, e: octocrab::Error) -> CallError {
    match e {
        octocrab::Error::GitHub { source, .. } => CallError {
            what: what.to_owned(),
            status: Some(source.status_code.as_u16()),
            message: source.message.chars().take(300).collect(),
            rate_limited: false,
        },
        // (octocrab's other errors name URLs and causes, never the token)
        other => CallError {
            what: what.to_owned(),
            status: None,
            message: other.to_string().chars().take(300).collect(),
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
            .set_read_timeout(Some(Duration::from_secs(30)));
        let gh = match auth {
            Auth::Token(t) => builder.personal_token(t).build().map_err(|e| err(e.to_string()))?,
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
                app.installation(installation.into()).map_err(|e| err(e.to_string()))?
            }
        };
        Ok(Client {
            gh,
            owner: owner.to_owned(),
            repo: repo.to_owned(),
            calls: AtomicUsize::new(0),
        })
    }

    /// API requests made so far (pages counted one by one).
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    /// Run one request, waiting out rate limits (at most [`MAX_WAIT`] in all, 3 tries).
    /// The page after `page` (GitHub's `Link: rel="next"`), `None` after the last one.
    async fn next_page<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        page: &octocrab::Page<T>,
    ) -> Result<Option<octocrab::Page<T>>, CallError> {
        let Some(next) = page.next.clone() else {
            return Ok(None);
        };
        self.call(what, || async { self.gh.get_page::<T>(&Some(next.clone())).await })
            .await
    }

    async fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T, CallError>
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
                        return Err(err);
                    }
                },
            }
        }
        unreachable!("the loop returns")
    }

    /// Logins whose latest review of pull request `pr` approves `head_sha` (dismissed reviews,
    /// reviews of older commits and reviews superseded by a later one do not count).
    pub async fn approvals(&self, pr: u64, head_sha: &str) -> Result<Vec<String>, CallError> {
        let what = format!("listing the reviews of pull request #{pr}");
        let mut page = self
            .call(&what, || async {
                self.gh
                    .pulls(&self.owner, &self.repo)
                    .list_reviews(pr)
                    .per_page(100)
                    .send()
                    .await
            })
            .await?;
        let mut reviews = std::mem::take(&mut page.items);
        while let Some(mut next) = self.next_page(&what, &page).await? {
            reviews.append(&mut next.items);
            page = next;
        }
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

    /// Create or edit the one comment that starts with `marker` and was written by `me`
    /// (a comment by anyone else is never edited, whatever it says).
    pub async fn upsert_comment(&self, pr: u64, marker: &str, body: &str, me: &str) -> Result<bool, CallError> {
        let what = format!("listing the comments of pull request #{pr}");
        let mut page = self
            .call(&what, || async {
                self.gh
                    .issues(&self.owner, &self.repo)
                    .list_comments(pr)
                    .per_page(100)
                    .send()
                    .await
            })
            .await?;
        let mut mine = None;
        loop {
            if let Some(c) = page.items.iter().find(|c| {
                c.user.login.eq_ignore_ascii_case(me) && c.body.as_deref().is_some_and(|b| b.starts_with(marker))
            }) {
                mine = Some(c.id);
                break;
            }
            let Some(next) = self.next_page(&what, &page).await? else {
                break;
            };
            page = next;
        }
        let body = format!("{marker}\n{body}");
        match mine {
            Some(id) => {
                self.call(&format!("editing comment {id}"), || async {
                    self.gh.issues(&self.owner, &self.repo).update_comment(id, &body).await
                })
                .await?;
                Ok(false)
            }
            None => {
                self.call(&format!("commenting on pull request #{pr}"), || async {
                    self.gh.issues(&self.owner, &self.repo).create_comment(pr, &body).await
                })
                .await?;
                Ok(true)
            }
        }
    }

    /// Report on `sha` as the check run `name` (annotations 50 per request), or — when the
    /// token may not create check runs (403) — as a commit status.
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
        let output = |batch: &[Annotation]| CheckRunOutput {
            title: title.to_owned(),
            summary: summary.to_owned(),
            text: None,
            annotations: batch.iter().map(annotation).collect(),
            images: Vec::new(),
        };
        let mut batches = annotations.chunks(ANNOTATIONS_PER_REQUEST);
        let first = batches.next().unwrap_or(&[]);
        let created = self
            .call("creating the check run", || async {
                self.gh
                    .checks(&self.owner, &self.repo)
                    .create_check_run(name, sha)
                    .status(CheckRunStatus::Completed)
                    .conclusion(conclusion)
                    .output(output(first))
                    .send()
                    .await
            })
            .await;
        let run = match created {
            Ok(run) => run,
            Err(e) if e.status == Some(403) && !e.rate_limited => {
                let state = if success {
                    octocrab::models::StatusState::Success
                } else {
                    octocrab::models::StatusState::Failure
                };
                let description: String = title.chars().take(140).collect();
                self.call(
                    "setting the commit status (the token may not create check runs)",
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
        };
        for batch in batches {
            self.call("adding annotations to the check run", || async {
                self.gh
                    .checks(&self.owner, &self.repo)
                    .update_check_run(run.id)
                    .output(output(batch))
                    .send()
                    .await
            })
            .await?;
        }
        Ok(Reported::CheckRun {
            id: run.id.into_inner(),
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
