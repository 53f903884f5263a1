//! `rampart ci`: the GitHub Action's entry point, driven by the Actions environment.

use super::exit;
use crate::diagnostic::{Diagnostic, Severity, quote};
use crate::github::client::{Annotation, Auth, Client, Reported};
use crate::github::webhook;
use crate::pipeline::{self, Principals};
use crate::report;
use crate::report::plan::{MARKDOWN_LIMIT, PlanFormat};
use crate::source::{self, Source};
use anyhow::Context;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The hidden first line of rampart's pull-request comment.
pub const MARKER: &str = "<!-- rampart:plan -->";

/// Annotations sent to the check run at most (GitHub takes 50 per request).
const MAX_ANNOTATIONS: usize = 500;

/// GitHub's limit on a check run's `output.summary`.
const SUMMARY_LIMIT: usize = 65_535;

/// Run in a GitHub Actions job: on `pull_request`, validate the head, authorise the change
/// (the PR author, the approvals of the current head), plan it; write the job summary,
/// annotations and outputs, upsert one PR comment and the `rampart` check run (a commit
/// status when the token may not create check runs). On `push`, plan the pushed range the
/// same way into the job summary and outputs (no API calls). Exit 0, 2 denied, 3 invalid
/// (per --fail-on), 1 could not run.
#[derive(clap::Args)]
pub struct Args {
    /// The config repo, relative to GITHUB_WORKSPACE.
    #[arg(long, default_value = ".")]
    path: PathBuf,
    /// Post (or edit) the plan comment on the pull request.
    #[arg(long, default_value = "true", action = clap::ArgAction::Set)]
    comment: bool,
    /// What fails the job: a denial or an invalid head (`deny`), only an invalid head
    /// (`invalid`), nothing (`never`).
    #[arg(long, value_enum, default_value = "deny")]
    fail_on: FailOn,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FailOn {
    Deny,
    Invalid,
    Never,
}

/// The Actions environment.
struct Env {
    event_name: String,
    event_path: PathBuf,
    repository: String,
    api_url: String,
    workspace: PathBuf,
    summary: Option<PathBuf>,
    output: Option<PathBuf>,
    temp: PathBuf,
    /// `RAMPART_BOT_LOGIN`: whose comment to edit, when not derived from the credential.
    me: Option<String>,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Env {
    fn read() -> anyhow::Result<Env> {
        let need = |name: &str| {
            var(name).with_context(|| format!("{name} is not set: `rampart ci` runs inside GitHub Actions"))
        };
        Ok(Env {
            event_name: need("GITHUB_EVENT_NAME")?,
            event_path: need("GITHUB_EVENT_PATH")?.into(),
            repository: need("GITHUB_REPOSITORY")?,
            api_url: var("GITHUB_API_URL").unwrap_or_else(|| "https://api.github.com".to_owned()),
            workspace: var("GITHUB_WORKSPACE").map_or_else(|| PathBuf::from("."), PathBuf::from),
            summary: var("GITHUB_STEP_SUMMARY").map(PathBuf::from),
            output: var("GITHUB_OUTPUT").map(PathBuf::from),
            temp: var("RUNNER_TEMP").map_or_else(std::env::temp_dir, PathBuf::from),
            me: var("RAMPART_BOT_LOGIN"),
        })
    }

    /// See [`github_auth`].
    fn auth(&self) -> anyhow::Result<Auth> {
        github_auth()?.context("GITHUB_TOKEN is not set (pass `token: ${{ github.token }}` to the action)")
    }
}

/// GitHub App auth when `RAMPART_APP_ID`, `RAMPART_APP_PRIVATE_KEY` and
/// `RAMPART_APP_INSTALLATION` are set, else token auth (`GITHUB_TOKEN`); `None` without either.
pub(super) fn github_auth() -> anyhow::Result<Option<Auth>> {
    if let (Some(id), Some(key), Some(inst)) = (
        var("RAMPART_APP_ID"),
        var("RAMPART_APP_PRIVATE_KEY"),
        var("RAMPART_APP_INSTALLATION"),
    ) {
        return Ok(Some(Auth::App {
            app_id: id.parse().context("RAMPART_APP_ID is not a number")?,
            private_key_pem: key,
            installation: inst.parse().context("RAMPART_APP_INSTALLATION is not a number")?,
        }));
    }
    Ok(var("GITHUB_TOKEN").map(Auth::Token))
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let env = Env::read()?;
    let file = std::fs::File::open(&env.event_path)
        .with_context(|| format!("reading the event file `{}`", env.event_path.display()))?;
    let body = webhook::read_body(file, webhook::MAX_BODY)
        .with_context(|| format!("reading the event file `{}`", env.event_path.display()))?;
    let event = webhook::decode(&env.event_name, &body).with_context(|| {
        format!(
            "decoding the `{}` event in `{}`",
            env.event_name,
            env.event_path.display()
        )
    })?;
    let repo_path = env.workspace.join(&args.path);
    match event {
        webhook::Event::PullRequest(pr) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(pull_request(&args, &env, &repo_path, &pr))
        }
        webhook::Event::Push(push) => push_range(&args, &env, &repo_path, &push),
        _ => {
            println!("rampart ci: nothing to do on `{}` events", env.event_name);
            Ok(exit::OK)
        }
    }
}

/// A revision of the checkout, or what to set in `actions/checkout` when it is missing.
fn revision(path: &Path, sha: &str, which: &str) -> anyhow::Result<Source> {
    Source::git(path, sha).with_context(|| {
        format!(
            "the {which} commit {sha} is not in the checkout: check out with `fetch-depth: 0` \
             (actions/checkout), so both sides of the pull request are there"
        )
    })
}

/// The base and head revisions of a pull request, and the base branch's tip when it is not
/// the base. The base is where it branched off: the merge base of the base branch's tip and
/// the head (GitHub's "three-dot" diff); diffing against the tip would show everything merged
/// since as undone by the pull request. But the tip's policies, teams and keys decide: a
/// branch forked before a forbid or a team removal was merged does not escape it.
fn sides(path: &Path, base: &str, head: &str) -> anyhow::Result<(Source, Source, Option<Source>, String)> {
    let head_s = revision(path, head, "head")?;
    let tip = revision(path, base, "base")?;
    let (Source::Git { repo, commit: h, .. }, Source::Git { commit: b, .. }) = (&head_s, &tip) else {
        unreachable!("revisions are git sources");
    };
    let fork = repo
        .merge_base(*b, *h)
        .with_context(|| format!("the base {base} and the head {head} have no common history"))?;
    if fork == *b {
        return Ok((tip, head_s, None, fork.to_string()));
    }
    let base_s = revision(path, &fork.to_string(), "base")?;
    Ok((base_s, head_s, Some(tip), fork.to_string()))
}

/// What one planned range comes to: the verdict, the plan as markdown (comment, job summary,
/// check summary) and JSON, and the annotations for the check run.
struct Ran {
    decision: &'static str,
    valid: bool,
    changed: bool,
    markdown: String,
    json: Option<String>,
    annotations: Vec<Annotation>,
    /// The policy verdicts, when the head was valid and the base could be checked.
    verdicts: Option<pipeline::Authorized>,
}

/// Plan `base` → `head` (shown as `names`) for `who`, within `limit` characters of markdown;
/// print the workflow commands (an invalid head's problems, or the full text plan, folded).
fn plan_range(
    sides: super::plan::Sides<'_>,
    names: (&str, &str),
    who: &Principals,
    prefix: &str,
    limit: usize,
) -> anyhow::Result<Ran> {
    let mut opts = super::compile::options(&[]);
    opts.redact = true;
    let outcome = super::plan::compute(
        sides,
        names,
        who,
        &opts,
        &[PlanFormat::Markdown, PlanFormat::Json, PlanFormat::Text],
        limit,
    )?;
    Ok(match outcome {
        super::plan::Outcome::Invalid(c) => {
            let all = c.all_diagnostics();
            let markdown = report::plan::invalid_markdown(&all, limit);
            let annotations = annotations_of(&all, prefix);
            // workflow commands too, so the job log and the diff carry them
            print!("{}", report::github::render(&c.validated.summary(&all, prefix)));
            Ran {
                decision: "invalid",
                valid: false,
                changed: false,
                markdown,
                json: None,
                annotations,
                verdicts: None,
            }
        }
        super::plan::Outcome::Planned(p) => {
            let mut rendered = p.rendered.into_iter();
            let markdown = rendered.next().unwrap_or_default();
            let json = rendered.next();
            // the whole plan in the job log, folded (the comment may be cut to fit), with
            // workflow commands stopped around it: the plan holds text from the pull request
            if let Some(text) = rendered.next() {
                use sha2::Digest;
                let seed = format!("{:?}{}{}", std::time::SystemTime::now(), std::process::id(), text.len());
                let token = hex::encode(&sha2::Sha256::digest(seed.as_bytes())[..16]);
                print!("{}", report::github::folded("rampart plan (full)", &text, &token));
            }
            let (decision, annotations) = match &p.verdicts {
                Some(a) => {
                    let denied: Vec<Annotation> = a
                        .decisions
                        .iter()
                        .zip(&a.changes)
                        .filter(|(d, _)| !d.allowed)
                        .filter_map(|(_, c)| {
                            let file = c.file.as_str();
                            (!file.is_empty()).then(|| Annotation {
                                path: report::prefixed(prefix, file),
                                line: 1,
                                column: None,
                                failure: true,
                                title: "rampart: denied by policy".to_owned(),
                                message: format!(
                                    "{} {} {} is denied by policy; see the plan comment",
                                    c.action.as_str(),
                                    c.subject.as_str(),
                                    quote(&c.name)
                                ),
                            })
                        })
                        .collect();
                    (if a.denied() > 0 { "deny" } else { "allow" }, denied)
                }
                None => ("allow", Vec::new()),
            };
            Ran {
                decision,
                valid: true,
                changed: p.changed,
                markdown,
                json,
                annotations,
                verdicts: p.verdicts,
            }
        }
    })
}

/// The plan JSON (as `plan_json`), the job summary and the step outputs of `ran`.
fn write_job(env: &Env, ran: &Ran, plan_json: &Path) -> anyhow::Result<()> {
    if let Some(j) = &ran.json {
        std::fs::write(plan_json, j).with_context(|| format!("writing `{}`", plan_json.display()))?;
    }
    if let Some(summary) = &env.summary {
        append(summary, &format!("{}\n", ran.markdown))?;
    }
    if let Some(output) = &env.output {
        let mut lines = format!(
            "decision={}\nvalid={}\nchanged={}\n",
            ran.decision, ran.valid, ran.changed
        );
        if ran.json.is_some() {
            lines.push_str(&format!("plan-json={}\n", plan_json.display()));
        }
        append(output, &lines)?;
    }
    Ok(())
}

/// The first 12 characters of a commit id.
fn short(sha: &str) -> String {
    sha.chars().take(12).collect()
}

async fn pull_request(args: &Args, env: &Env, path: &Path, pr: &webhook::PullRequest) -> anyhow::Result<u8> {
    let (base, head, tip, fork) = sides(path, &pr.base_sha, &pr.head_sha)?;
    let client = Client::new(&env.api_url, env.auth()?, &env.repository).await?;
    let approvals = client.approvals(pr.number, &pr.head_sha).await?;
    let who = Principals::logins(Some(&pr.author), &approvals);
    // room for the marker line
    let limit = MARKDOWN_LIMIT - MARKER.len() - 1;
    let prefix = source::workdir_prefix(path);
    let sides = super::plan::Sides {
        base: &base,
        head: &head,
        rules: tip.as_ref(),
    };
    let ran = plan_range(sides, (&short(&fork), &short(&pr.head_sha)), &who, &prefix, limit)?;
    write_job(env, &ran, &env.temp.join(format!("rampart-plan-{}.json", pr.number)))?;
    let Ran {
        decision,
        changed,
        markdown,
        annotations,
        ..
    } = ran;

    // a pull request from a fork gets a read-only token: say so, and keep the verdict
    let read_only = |e: &crate::github::client::CallError| {
        print!(
            "{}",
            report::github::warning(
                "rampart",
                &format!("{e} (a pull request from a fork gets a read-only token; the job summary has the plan)")
            )
        )
    };
    if args.comment {
        let me = match &env.me {
            Some(me) => me.clone(),
            None => client.login().await?,
        };
        match client.upsert_comment(pr.number, MARKER, &markdown, &me).await {
            Ok(created) => println!(
                "rampart ci: {} the plan comment on #{}",
                if created { "posted" } else { "updated" },
                pr.number
            ),
            Err(e) if e.status == Some(403) && !e.rate_limited => read_only(&e),
            Err(e) => return Err(e.into()),
        }
    }
    let title = match decision {
        "invalid" => "The config repo is invalid".to_owned(),
        "deny" => "Denied by policy".to_owned(),
        _ if changed => "Allowed: the plan has changes".to_owned(),
        _ => "Allowed: no changes".to_owned(),
    };
    // every 50 annotations cost a request against the repository's rate limit: a pull request
    // with thousands of problems gets the first MAX_ANNOTATIONS, and the summary says so
    let left_out = annotations.len().saturating_sub(MAX_ANNOTATIONS);
    let annotations = &annotations[..annotations.len().min(MAX_ANNOTATIONS)];
    let note = if left_out > 0 {
        format!(
            "\n> {left_out} more problem{} not annotated (at most {MAX_ANNOTATIONS} are); the job log has every one.\n",
            if left_out == 1 { " is" } else { "s are" }
        )
    } else {
        String::new()
    };
    let mut summary: String = markdown.chars().take(SUMMARY_LIMIT - note.chars().count()).collect();
    summary.push_str(&note);
    match client
        .report(
            "rampart",
            &pr.head_sha,
            decision == "allow",
            &title,
            &summary,
            annotations,
        )
        .await
    {
        Ok(Reported::CheckRun { id, annotations }) => {
            println!("rampart ci: check run {id} ({annotations} annotations)")
        }
        Ok(Reported::Status) => {
            println!("rampart ci: the token may not create check runs; set a commit status instead")
        }
        Err(e) if e.status == Some(403) && !e.rate_limited => read_only(&e),
        Err(e) => return Err(e.into()),
    }
    println!("rampart ci: {decision} ({} GitHub API calls)", client.calls());
    Ok(code(args.fail_on, decision))
}

fn code(fail_on: FailOn, decision: &str) -> u8 {
    match (fail_on, decision) {
        (FailOn::Never, _) => exit::OK,
        (_, "invalid") => exit::INVALID,
        (FailOn::Deny, "deny") => exit::DENIED,
        _ => exit::OK,
    }
}

/// On `push`: validate the pushed head, authorise and plan the pushed range (no API calls),
/// and summarise it as a pull request run does: job summary, full plan in the log, outputs.
/// Only an invalid head fails the job: merge commits carry no approvals, so a denial here is
/// an audit note (a warning), not a gate.
fn push_range(args: &Args, env: &Env, path: &Path, push: &webhook::Push) -> anyhow::Result<u8> {
    let head = revision(path, &push.after, "pushed")?;
    let prefix = source::workdir_prefix(path);
    let plan_json = env.temp.join(format!("rampart-plan-{}.json", short(&push.after)));
    if push.before.chars().all(|c| c == '0') {
        // a new branch: nothing to compare with
        let v = pipeline::validate(&head, &|_, _| {})?;
        print!("{}", report::github::render(&v.summary(&v.diagnostics, &prefix)));
        let valid = v.is_valid();
        let markdown = if valid {
            format!(
                "### rampart: {} is valid\n\nA new branch: there is no earlier commit to plan from.\n",
                short(&push.after)
            )
        } else {
            report::plan::invalid_markdown(&v.diagnostics, MARKDOWN_LIMIT)
        };
        let ran = Ran {
            decision: if valid { "allow" } else { "invalid" },
            valid,
            changed: false,
            markdown,
            json: None,
            annotations: Vec::new(),
            verdicts: None,
        };
        write_job(env, &ran, &plan_json)?;
        return Ok(code(args.fail_on, ran.decision));
    }
    let base = revision(path, &push.before, "previous")?;
    let names = (short(&push.before), short(&push.after));
    let sides = super::plan::Sides {
        base: &base,
        head: &head,
        rules: None,
    };
    let ran = plan_range(
        sides,
        (&names.0, &names.1),
        &Principals::default(),
        &prefix,
        MARKDOWN_LIMIT,
    )?;
    for (d, c) in ran.verdicts.iter().flat_map(|a| a.decisions.iter().zip(&a.changes)) {
        if !d.allowed {
            // (a warning: GitHub's merge commits carry no approvals, so a merged, approved
            // pull request looks unapproved here; the gate is the pull request's check)
            print!(
                "{}",
                report::github::warning(
                    "rampart: not authorised by the commits",
                    &format!(
                        "{} {} {} was pushed without the approvals policy asks for in its commits (Approved-by: trailers); the pull request's `rampart` check is the gate",
                        c.action.as_str(),
                        c.subject.as_str(),
                        quote(&c.name)
                    )
                )
            );
        }
    }
    write_job(env, &ran, &plan_json)?;
    // only an invalid push fails the job (see above)
    Ok(code(
        args.fail_on,
        if ran.decision == "invalid" { "invalid" } else { "allow" },
    ))
}

fn append(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("writing `{}`", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing `{}`", path.display()))
}

fn annotations_of(diags: &[Diagnostic], prefix: &str) -> Vec<Annotation> {
    diags
        .iter()
        .filter_map(|d| {
            let loc = d.location.as_ref()?;
            Some(Annotation {
                path: report::prefixed(prefix, &loc.file),
                line: loc.line.max(1),
                column: (loc.line > 0 && loc.column > 0).then_some(loc.column),
                failure: d.severity == Severity::Error,
                title: format!("{} {}", d.code, d.code.title()),
                message: match &d.hint {
                    Some(h) => format!("{}\nhelp: {h}", d.message),
                    None => d.message.clone(),
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_on_decides_the_exit_code() {
        assert_eq!(code(FailOn::Deny, "deny"), exit::DENIED);
        assert_eq!(code(FailOn::Deny, "invalid"), exit::INVALID);
        assert_eq!(code(FailOn::Invalid, "deny"), exit::OK);
        assert_eq!(code(FailOn::Invalid, "invalid"), exit::INVALID);
        assert_eq!(code(FailOn::Never, "invalid"), exit::OK);
        assert_eq!(code(FailOn::Deny, "allow"), exit::OK);
    }
}
