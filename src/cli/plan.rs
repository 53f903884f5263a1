//! `rampart plan [PATH] --base REV [--head REV] | --base-path DIR --head-path DIR`.

use super::compile::{options, parse_step, print_problems};
use super::exit;
use super::repo::{self, Instead};
use crate::pipeline::{self, Principals};
use crate::plan;
use crate::report::plan::{MARKDOWN_LIMIT, PlanFormat, PlanReport, Verdicts, render};
use crate::source::Source;
use anyhow::Context;
use std::path::PathBuf;

/// Show what a change does to the cluster: compile base and head and diff them per object.
///
/// Summary first (counts by tenant and kind, risk flags, the policy verdicts of the change
/// set), then a unified diff per object; secret-like plugin config values are shown as
/// digests. Exit 0 (with or without changes), 2 with --detailed-exitcode when something
/// changes, 3 the head is invalid, 1 could not run.
#[derive(clap::Args)]
pub struct Args {
    /// Any path inside the git repository (the config repo's directory when it is a
    /// subdirectory of the work tree).
    #[arg(default_value = ".", value_parser = super::repo::repo_arg)]
    path: PathBuf,
    /// The revision the change starts from.
    #[arg(long, value_name = "REV", conflicts_with_all = ["base_path", "head_path"])]
    base: Option<String>,
    /// The revision under review.
    #[arg(long, value_name = "REV", default_value = "HEAD")]
    head: String,
    /// Compare two directories instead of two revisions (no policy verdicts: directories
    /// have no authors).
    #[arg(long, value_name = "DIR", requires = "head_path")]
    base_path: Option<PathBuf>,
    /// The directory under review (with --base-path).
    #[arg(long, value_name = "DIR", requires = "base_path")]
    head_path: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: PlanFormat,
    /// Exit 2 when the plan has changes (like `terraform plan -detailed-exitcode`).
    #[arg(long)]
    detailed_exitcode: bool,
    /// The change's author (see `rampart check --author`).
    #[arg(long, value_name = "LOGIN")]
    author: Option<String>,
    /// A login that approved the change (repeatable; needs --author).
    #[arg(long = "approved-by", value_name = "LOGIN", requires = "author")]
    approved_by: Vec<String>,
    /// The current step (1-based) of a rollout in progress (repeatable; default: step 1).
    #[arg(long = "rollout-step", value_name = "ROLLOUT=N", value_parser = parse_step)]
    rollout_steps: Vec<(String, usize)>,
    /// Print the wall time of each phase to stderr.
    #[arg(long)]
    timings: bool,
    /// Plan against a live cluster instead of a base revision: a server-side dry run of each
    /// object of --head against the object the cluster holds (managedFields, status and
    /// server-set metadata left out), and the objects its inventory would prune. Needs
    /// --target kubernetes[:CONTEXT].
    #[arg(long, requires = "target", conflicts_with_all = ["base", "base_path", "head_path"])]
    live: bool,
    /// With --live: the cluster (`kubernetes[:CONTEXT]`).
    #[arg(long, value_name = "TARGET", requires = "live")]
    target: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    if args.live {
        let context = match args.target.as_deref() {
            Some("kubernetes") => None,
            Some(t) if t.starts_with("kubernetes:") => {
                Some(t["kubernetes:".len()..].to_owned()).filter(|c| !c.is_empty())
            }
            _ => anyhow::bail!("--live plans against a cluster: --target kubernetes[:CONTEXT]"),
        };
        return super::kube::plan_live(
            &args.path,
            &args.head,
            &args.rollout_steps,
            args.format,
            args.detailed_exitcode,
            context,
        );
    }
    let (base, head, base_name, head_name) = match (&args.base, &args.base_path, &args.head_path) {
        (Some(b), _, _) => {
            let ctx = || format!("planning `{}` from {b} to {}", args.path.display(), args.head);
            if args.head == "HEAD" {
                repo::warn_uncommitted(&args.path, "plan");
            }
            (
                repo::git_revision(&args.path, b, Instead::Plan).with_context(ctx)?,
                repo::git_revision(&args.path, &args.head, Instead::Plan).with_context(ctx)?,
                b.clone(),
                args.head.clone(),
            )
        }
        (None, Some(b), Some(h)) => (
            Source::dir(b).with_context(|| format!("planning from `{}`", b.display()))?,
            Source::dir(h).with_context(|| format!("planning to `{}`", h.display()))?,
            b.display().to_string(),
            h.display().to_string(),
        ),
        _ => anyhow::bail!("give --base REV (and optionally --head REV), or --base-path DIR and --head-path DIR"),
    };
    let mut opts = options(&args.rollout_steps);
    opts.redact = true;
    let who = Principals::logins(args.author.as_deref(), &args.approved_by);
    let names = (base_name.as_str(), head_name.as_str());
    let sides = Sides {
        base: &base,
        head: &head,
        rules: None,
    };
    match compute(sides, names, &who, &opts, &[args.format], MARKDOWN_LIMIT)? {
        Outcome::Invalid(problems) => {
            match args.format {
                PlanFormat::Text => print_problems(&problems)?,
                PlanFormat::Markdown => super::print(&crate::report::plan::invalid_markdown(
                    &problems.all_diagnostics(),
                    MARKDOWN_LIMIT,
                ))?,
                PlanFormat::Json => super::print(&invalid_json(&problems, names, base.commit()))?,
            }
            Ok(exit::INVALID)
        }
        Outcome::Planned(p) => {
            super::print(&p.rendered[0])?;
            if args.timings {
                eprintln!("{}", p.timings);
            }
            Ok(if args.detailed_exitcode && p.changed {
                exit::DENIED
            } else {
                exit::OK
            })
        }
    }
}

/// What [`compute`] found.
pub enum Outcome {
    /// The head is invalid (or does not compile): its problems, nothing planned.
    Invalid(Box<pipeline::Compiled>),
    Planned(Box<Planned>),
}

/// A plan, rendered.
pub struct Planned {
    /// One rendering per format asked for, in order.
    pub rendered: Vec<String>,
    /// Whether any object changes.
    pub changed: bool,
    /// The policy verdicts (two revisions only).
    pub verdicts: Option<pipeline::Authorized>,
    /// The phase timings line (`--timings`).
    pub timings: String,
}

/// The revisions a plan compares, and the one whose policies, teams and keys decide.
pub struct Sides<'a> {
    pub base: &'a Source,
    pub head: &'a Source,
    /// The revision whose rules are in force when it is not `base` (a pull request that
    /// branched off an older commit is decided by the base branch's tip).
    pub rules: Option<&'a Source>,
}

/// Validate, authorise, compile and diff `base` → `head`; render the plan in `formats`.
/// Directories get no verdicts (no authors).
pub fn compute(
    Sides { base, head, rules }: Sides<'_>,
    (base_name, head_name): (&str, &str),
    who: &Principals,
    opts: &crate::compile::Options,
    formats: &[PlanFormat],
    markdown_limit: usize,
) -> anyhow::Result<Outcome> {
    let start = std::time::Instant::now();
    let cache = super::parse_cache(head);
    let (head_v, base_v) = pipeline::validate_pair(head, base, cache.as_ref()).context("reading the head")?;
    if !head_v.is_valid() {
        return Ok(Outcome::Invalid(Box::new(pipeline::compile_validated(head_v, opts))));
    }
    let base_v = base_v.context("reading the base")?;
    let t_read = start.elapsed();
    let mut notes = Vec::new();
    let rules_v = match rules {
        Some(r) => {
            Some(pipeline::validate_cached(r, &|_, _| {}, cache.as_ref()).context("reading the base branch's tip")?)
        }
        None => None,
    };
    let verdicts = match base {
        Source::Git { .. } if base_v.is_valid() || base_v.repo.object_count() > 0 => Some(pipeline::authorize(
            base,
            head,
            &base_v,
            &head_v,
            who,
            rules_v.as_ref(),
        )?),
        _ => None,
    };
    let t_policy = start.elapsed();
    // a base invalid only because of its Cedar policies still compiles: the plan shows the
    // real diff (the policy fix), and the verdicts say why they are break-glass
    let base_valid = base_v.specs_valid();
    if base_valid && !base_v.is_valid() {
        notes.push(
            "the base revision's policies do not validate: its specs are compiled and diffed as usual, but no \
             verdict is possible under its rules — break-glass: rampart's default policies alone decide, and \
             only changes to rampart.yaml, policies/ and keys/ can be allowed (R407)"
                .to_owned(),
        );
    }
    // only the tenants the change can touch are compiled
    let changes = match &verdicts {
        Some(a) => a.changes.clone(),
        None => {
            let bg = base.read_guarded(&base_v.repo.settings.limits)?;
            let hg = head.read_guarded(&head_v.repo.settings.limits)?;
            let same = |a: &crate::spec::Origin, b: &crate::spec::Origin| base_v.same_source(&head_v, a, b);
            crate::change::diff(&base_v.repo, &head_v.repo, &bg.files, &hg.files, &same)
        }
    };
    // what the change's own policies and teams decide differently (only when it changes them;
    // directories too: the questions need no author)
    let impact = pipeline::impact(base, head, &base_v, &head_v, &changes)?;
    if impact.is_none() && pipeline::touches_rules(&changes) {
        notes.push(
            "no policy-change impact: one side's policies do not validate, so there is nothing to compare \
             the other with — read the policy diff by hand"
                .to_owned(),
        );
    }
    let affected = if base_valid {
        plan::affected(&changes, &base_v.repo, &head_v.repo)
    } else {
        None
    };
    let total_tenants = head_v.repo.tenants.len().max(base_v.repo.tenants.len());
    // (a change that can touch no tenant — policies, teams, keys — needs no such note)
    if let Some(a) = &affected
        && !a.is_empty()
        && a.len() < total_tenants
    {
        notes.push(format!(
            "{} of {} tenants can be affected by this change; only they were compiled",
            a.len(),
            total_tenants
        ));
    }
    // the supply-chain facts of every plugin the change creates or updates, its signatures
    // checked with the base's keys (as the policies see them)
    let inputs = head_v.supply_inputs(&base_v.keys);
    for c in changes
        .iter()
        .filter(|c| c.subject == crate::change::Subject::Object(crate::spec::Kind::Plugin))
    {
        let facts = |t: &crate::supply::Trust| {
            format!(
                "{} trust {} ({})",
                t.version,
                t.trust_score,
                match &t.signed_by {
                    Some(k) => format!("signed by {k}"),
                    None => t.signature.to_owned(),
                }
            )
        };
        match (
            base_v.trust_of(&c.name).as_ref(),
            crate::supply::trust_of(&head_v.repo, &c.name, &inputs).as_ref(),
        ) {
            (Some(old), Some(new)) if old != new => {
                notes.push(format!("plugin `{}`: {} → {}", c.name, facts(old), facts(new)))
            }
            (None, Some(new)) => notes.push(format!("plugin `{}` (new): {}", c.name, facts(new))),
            _ => {}
        }
    }
    // base and head compiled and diffed tenant by tenant: only the diffs are kept
    let base_repo = base_valid.then_some(&base_v.repo);
    let mut streamed = plan::stream::plan(base_repo, &head_v.repo, affected.as_ref(), opts);
    if streamed
        .head_diagnostics
        .iter()
        .any(crate::diagnostic::Diagnostic::is_error)
    {
        let mut diagnostics = streamed.head_diagnostics;
        head_v.resolve(&mut diagnostics);
        return Ok(Outcome::Invalid(Box::new(pipeline::Compiled {
            validated: head_v,
            manifests: Vec::new(),
            diagnostics,
        })));
    }
    if base_repo.is_none()
        || streamed
            .base_diagnostics
            .iter()
            .any(crate::diagnostic::Diagnostic::is_error)
    {
        notes.push("the base revision is invalid, so the plan compares the head with nothing".to_owned());
        if base_repo.is_some() {
            // (rare: a base that validates but does not compile) planned again against nothing
            streamed = plan::stream::plan(None, &head_v.repo, affected.as_ref(), opts);
        }
    }
    let mut plan = streamed.value;
    // guarded files compile to nothing: their own diffs, and deletes + creates that are renames
    if changes.iter().any(|c| c.subject == crate::change::Subject::File) {
        let paths: Vec<String> = changes
            .iter()
            .filter(|c| c.subject == crate::change::Subject::File)
            .map(|c| c.name.clone())
            .collect();
        let old = base.read_paths(&paths, &base_v.repo.settings.limits)?;
        let new = head.read_paths(&paths, &head_v.repo.settings.limits)?;
        plan.files = plan::file_changes(&changes, &old, &new);
    }
    plan.renames = plan::likely_renames(&changes, &base_v.repo, &head_v.repo);
    plan.teams = plan::team_changes(&changes, &base_v.repo, &head_v.repo);
    plan.risks.extend(plan::key_risks(&plan.files));
    plan.risks.sort();
    if let Some(i) = impact.as_ref().map(|i| &i.impact).filter(|i| i.widening > 0) {
        plan.risks.push(plan::Risk {
            kind: plan::RiskKind::PolicyWidening,
            tenant: String::new(),
            path: String::new(),
            within_tenant: false,
            detail: format!(
                "{} decision{} the base's policies and teams deny {} allowed by the head's (see the policy impact)",
                i.widening,
                if i.widening == 1 { "" } else { "s" },
                if i.widening == 1 { "is" } else { "are" }
            ),
        });
        plan.risks.sort();
    }
    let t_diff = start.elapsed();
    let report = PlanReport {
        plan: &plan,
        base: base_name,
        head: head_name,
        commits: (base_v.commit.as_deref(), head_v.commit.as_deref()),
        notes: &notes,
        verdicts: verdicts.as_ref().map(|a| Verdicts {
            changes: &a.changes,
            decisions: &a.decisions,
            author: &a.who.author,
            approvers: &a.who.approvers,
        }),
        impact: impact.as_ref().map(|i| &i.impact),
    };
    let rendered = formats
        .iter()
        .map(|f| match f {
            PlanFormat::Markdown => crate::report::plan::markdown(&report, markdown_limit),
            other => render(*other, &report),
        })
        .collect();
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let mut timings = format!(
        "timings: read+validate {:.1} ms, policy {:.1} ms, compile+diff {:.1} ms, render {:.1} ms",
        ms(t_read),
        ms(t_policy - t_read),
        ms(t_diff - t_policy),
        ms(start.elapsed() - t_diff)
    );
    if let Some(i) = &impact {
        // (part of the compile+diff phase)
        timings.push_str(&format!(
            "; impact {:.1} ms ({} questions, {} decided under both rules)",
            ms(i.time),
            i.impact.questions,
            i.impact.evaluated
        ));
    }
    // (a guarded file is a change too: the reviewer has its diff to read)
    let changed = plan.totals.total() > 0 || !plan.files.is_empty() || !plan.teams.is_empty();
    // freeing the models and the parse cache object by object costs more than the process exit
    std::mem::forget(head_v);
    std::mem::forget(base_v);
    std::mem::forget(cache);
    Ok(Outcome::Planned(Box::new(Planned {
        rendered,
        changed,
        verdicts,
        timings,
    })))
}

/// The plan JSON of an invalid head: the head's validation report (`valid: false`, its
/// diagnostics) with the revisions compared, so `jq` and workflows read one format.
fn invalid_json(c: &pipeline::Compiled, (base, head): (&str, &str), base_commit: Option<String>) -> String {
    let all = c.all_diagnostics();
    let summary = c.validated.summary(&all, "");
    let mut v = crate::report::json::value(&summary);
    if let Some(o) = v.as_object_mut() {
        o.insert("base".into(), base.into());
        o.insert("head".into(), head.into());
        o.insert("baseCommit".into(), base_commit.into());
        o.insert("headCommit".into(), c.validated.commit.clone().into());
    }
    let mut out = serde_json::to_string_pretty(&v).expect("json");
    out.push('\n');
    out
}
