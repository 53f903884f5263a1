//! `rampart apply [PATH] [--rev REV] --target dir:OUT`.

use super::compile::{options, parse_step, print_diagnostics};
use super::exit;
use crate::apply::dir::{self, State};
use crate::pipeline::{self, CheckOutcome, Principals};
use crate::source::Source;
use anyhow::Context;
use std::path::PathBuf;

/// Apply the config repo to a target: validate, authorise, compile, write.
///
/// `--target dir:OUT` (the embedded target) replaces OUT atomically with the compiled
/// objects and a kustomization, removes what is no longer desired, and records the applied
/// commit in `OUT.rampart-state.json`. A second apply of the same revision writes nothing.
/// An invalid revision (exit 3) or one the policies deny (exit 2) is never applied; with
/// --rev, the change since the last applied commit is authorised with that commit's
/// policies and teams, the head commit's author and its `Approved-by:` trailers.
#[derive(clap::Args)]
pub struct Args {
    /// The config repo (a directory; with --rev, any path inside the git repository).
    #[arg(default_value = ".")]
    path: PathBuf,
    /// Apply this git revision without checking it out.
    #[arg(long, value_name = "REV")]
    rev: Option<String>,
    /// Where to apply: `dir:OUT` (a directory).
    #[arg(long, value_name = "TARGET", value_parser = parse_target)]
    target: PathBuf,
    /// The current step (1-based) of a rollout in progress (repeatable; default: step 1).
    #[arg(long = "rollout-step", value_name = "ROLLOUT=N", value_parser = parse_step)]
    rollout_steps: Vec<(String, usize)>,
}

fn parse_target(s: &str) -> Result<PathBuf, String> {
    match s.split_once(':') {
        Some(("dir", p)) if !p.is_empty() => Ok(PathBuf::from(p)),
        Some((kind, _)) if kind == "branch" || kind == "kubernetes" => {
            Err(format!("the `{kind}` target is not available yet; use dir:OUT"))
        }
        _ => Err("expected dir:OUT".into()),
    }
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let ctx = || format!("applying `{}`", args.path.display());
    let source = match &args.rev {
        Some(rev) => Source::git(&args.path, rev),
        None => Source::dir(&args.path),
    }
    .with_context(ctx)?;
    let out = &args.target;
    let previous = dir::read_state(out)?;
    let head_v = pipeline::validate(&source, &|_, _| {}).with_context(ctx)?;
    let opts = options(&args.rollout_steps);
    if !head_v.is_valid() {
        print_diagnostics(&head_v, &[])?;
        super::print("not applied: the revision is invalid\n")?;
        return Ok(exit::INVALID);
    }
    // authorise the change since the last applied commit, when both are commits
    let mut policy_note = "policy: not checked (applying a directory; only revisions carry authors)".to_owned();
    if let (Source::Git { .. }, Some(commit)) = (&source, previous.as_ref().and_then(|s| s.commit.clone())) {
        if head_v.commit.as_deref() != Some(commit.as_str()) {
            let base = Source::git(&args.path, &commit)
                .with_context(|| format!("reading the last applied commit {commit}"))?;
            let base_v = pipeline::validate(&base, &|_, _| {})?;
            let a = pipeline::authorize(&base, &source, &base_v, &head_v, &Principals::default())?;
            if a.outcome == CheckOutcome::BasePoliciesInvalid {
                super::print("not applied: the last applied commit's policies do not validate\n")?;
                return Ok(exit::ERROR);
            }
            let denied = a.denied();
            if denied > 0 {
                let mut text = format!(
                    "not applied: {denied} of {} changes denied by policy\n",
                    a.changes.len()
                );
                for (c, d) in a.changes.iter().zip(&a.decisions).filter(|(_, d)| !d.allowed) {
                    text.push_str(&format!(
                        "  deny {} {} {} [{}] {}\n",
                        c.action.as_str(),
                        c.subject.as_str(),
                        c.name,
                        d.policies.join(", "),
                        d.way_out.as_ref().map(|w| w.describe()).unwrap_or_default()
                    ));
                }
                super::print(&text)?;
                return Ok(exit::DENIED);
            }
            policy_note = format!("policy: {} changes allowed since {}", a.changes.len(), &commit[..12]);
        } else {
            policy_note = "policy: nothing changed since the last apply".to_owned();
        }
    } else if matches!(source, Source::Git { .. }) {
        policy_note = "policy: first apply to this target (nothing to compare with)".to_owned();
    }
    let source_name = args.path.display().to_string();
    let commit = head_v.commit.clone();
    let tree = pipeline::compile_into(&head_v, &opts, out, |objects| {
        Some(State {
            version: 1,
            commit: commit.clone(),
            source: source_name.clone(),
            objects,
        })
    })
    .with_context(|| format!("applying to `{}`", out.display()))?;
    let Some(w) = tree.written else {
        print_diagnostics(&head_v, &tree.diagnostics)?;
        super::print("not applied: the revision does not compile\n")?;
        return Ok(exit::INVALID);
    };
    let state = State {
        version: 1,
        commit,
        source: source_name,
        objects: tree.objects,
    };
    let at = state
        .commit
        .as_deref()
        .map(|c| format!(" at {}", &c[..12]))
        .unwrap_or_default();
    let text = if w.is_noop() && previous.as_ref() == Some(&state) {
        format!(
            "no changes: dir:{} already holds{at} ({} objects)\n{policy_note}\n",
            out.display(),
            state.objects
        )
    } else {
        format!(
            "applied{at} to dir:{}: {} added, {} changed, {} removed, {} unchanged\n{policy_note}\n",
            out.display(),
            w.added,
            w.changed,
            w.removed,
            w.unchanged
        )
    };
    super::print(&text)?;
    std::mem::forget(head_v);
    Ok(exit::OK)
}
