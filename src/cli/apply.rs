//! `rampart apply [PATH] [--rev REV] --target dir:OUT`.

use super::compile::{options, parse_step, print_diagnostics};
use super::exit;
use crate::pipeline::{self, Principals};
use crate::source::Source;
use crate::target::tree::{self as dir, State};
use anyhow::Context;
use std::path::PathBuf;

/// Apply the config repo to a target: validate, authorise, compile, write.
///
/// `--target dir:OUT` (the embedded target) replaces OUT atomically with the compiled
/// objects and a kustomization, removes what is no longer desired, and records the applied
/// commit in `OUT.rampart-state.json`. A second apply of the same revision writes nothing.
/// `--target kubernetes[:CONTEXT]` applies the objects to a cluster with server-side apply
/// (field manager `rampart`; Namespaces first), prunes exactly what its inventory (ConfigMap
/// `rampart-inventory` in `rampart-system`) lists and is no longer desired, and records the
/// commit there; objects whose desired state is unchanged since the last apply are not sent.
/// An invalid revision (exit 3) or one the policies deny (exit 2) is never applied; with
/// --rev, the change since the last applied commit (the target's baseline) is authorised with
/// that commit's policies and teams, the head commit's author and its `Approved-by:`
/// trailers. A target that holds objects but records no commit has an unknown baseline: a
/// revision is applied there only with --baseline REV or (unsafe) --no-baseline. Applying a
/// working directory is not policy-checked and keeps the recorded baseline.
#[derive(clap::Args)]
pub struct Args {
    /// The config repo (a directory; with --rev, any path inside the git repository).
    #[arg(default_value = ".", value_parser = super::repo::repo_arg)]
    path: PathBuf,
    /// Apply this git revision without checking it out.
    #[arg(long, value_name = "REV")]
    rev: Option<String>,
    /// Where to apply: `dir:OUT` (a directory), or `kubernetes[:CONTEXT]` (a cluster: that
    /// kubeconfig context; without one, the current context or the in-cluster service account).
    #[arg(long, value_name = "TARGET", value_parser = parse_target)]
    target: TargetArg,
    /// kubernetes: take over fields another field manager owns (off: such a conflict is an
    /// error naming the object, the field and the manager).
    #[arg(long)]
    force_conflicts: bool,
    /// The current step (1-based) of a rollout in progress (repeatable; default: step 1).
    #[arg(long = "rollout-step", value_name = "ROLLOUT=N", value_parser = parse_step)]
    rollout_steps: Vec<(String, usize)>,
    /// With --rev, on a target that holds objects but records no applied commit (an unknown
    /// baseline): authorise the change from REV, with REV's policies and teams.
    #[arg(long, value_name = "REV", conflicts_with = "no_baseline", requires = "rev")]
    baseline: Option<String>,
    /// With --rev, on a target with an unknown baseline: apply WITHOUT any policy check.
    /// Unsafe: whatever the revision holds reaches the target, approved or not.
    #[arg(long, requires = "rev")]
    no_baseline: bool,
}

#[derive(Clone, Debug)]
pub enum TargetArg {
    Dir(PathBuf),
    Kubernetes(Option<String>),
}

pub fn parse_target(s: &str) -> Result<TargetArg, String> {
    match s.split_once(':') {
        Some(("dir", p)) if !p.is_empty() => Ok(TargetArg::Dir(PathBuf::from(p))),
        Some(("kubernetes", ctx)) => Ok(TargetArg::Kubernetes(Some(ctx.to_owned()).filter(|c| !c.is_empty()))),
        None if s == "kubernetes" => Ok(TargetArg::Kubernetes(None)),
        Some(("branch", _)) => Err("`apply` writes no deploy branch (`rampart serve` does); use dir:OUT".into()),
        _ => Err("expected dir:OUT or kubernetes[:CONTEXT]".into()),
    }
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    match args.target.clone() {
        TargetArg::Dir(out) => run_dir(args, &out),
        TargetArg::Kubernetes(context) => super::kube::apply(
            &args.path,
            args.rev.as_deref(),
            &args.rollout_steps,
            args.baseline.as_deref(),
            args.no_baseline,
            crate::target::kube::Options {
                context,
                force_conflicts: args.force_conflicts,
            },
        ),
    }
}

fn run_dir(args: Args, out: &std::path::Path) -> anyhow::Result<u8> {
    let ctx = || format!("applying `{}`", args.path.display());
    let source = match &args.rev {
        Some(rev) => Source::git(&args.path, rev),
        None => Source::dir(&args.path),
    }
    .with_context(ctx)?;
    let previous = dir::read_state(out)?;
    let head_v = pipeline::validate(&source, &|_, _| {}).with_context(ctx)?;
    let opts = options(&args.rollout_steps);
    if !head_v.is_valid() {
        print_diagnostics(&head_v, &[])?;
        super::print("not applied: the revision is invalid\n")?;
        return Ok(exit::INVALID);
    }
    // authorise the change since the target's baseline (the last applied commit)
    // a recorded commit must be a commit id: a ref name (a hand-edited state file) would move
    // with the branch and authorise nothing
    let recorded = previous.as_ref().and_then(|s| s.commit.clone());
    if let Some(c) = &recorded
        && !crate::target::is_commit_id(c)
    {
        super::print(&format!(
            "not applied: the state file `{}` records {} as the applied commit, which is not a commit id\n\
             hint: remove the state file and apply with --baseline REV (the commit the target was built from)\n",
            dir::state_path(out).display(),
            crate::diagnostic::quote(c)
        ))?;
        return Ok(exit::ERROR);
    }
    let policy_note = match &source {
        Source::Dir { .. } => match &recorded {
            Some(c) => format!(
                "policy: NOT checked (a working directory carries no author); the baseline stays {}",
                short(c)
            ),
            None => "policy: not checked (applying a directory; only revisions carry authors)".to_owned(),
        },
        Source::Git { .. } => {
            let holds = previous.as_ref().is_some_and(|s| s.objects > 0) || dir::holds_files(out)?;
            let baseline = match (&args.baseline, &recorded) {
                (None, Some(c)) if args.no_baseline => {
                    super::print(&format!(
                        "not applied: the target records its baseline {}; --no-baseline is only for a target that records none\n",
                        short(c)
                    ))?;
                    return Ok(exit::ERROR);
                }
                (Some(b), Some(c)) => {
                    super::print(&format!(
                        "not applied: the target records its baseline {}; --baseline is only for a target that records none (given `{b}`)\n",
                        short(c)
                    ))?;
                    return Ok(exit::ERROR);
                }
                (Some(b), None) => {
                    // resolved to a commit id once, so the baseline cannot move under us
                    let id = Source::git(&args.path, b)
                        .with_context(|| format!("reading the baseline {b}"))?
                        .commit()
                        .expect("a revision has a commit");
                    if head_v.commit.as_deref() == Some(id.as_str()) {
                        super::print(&format!(
                            "not applied: --baseline `{b}` is the revision being applied, so it would authorise nothing\n\
                             hint: give the revision the target was built from\n"
                        ))?;
                        return Ok(exit::ERROR);
                    }
                    // the target must hold what the baseline compiles to, or it is not the
                    // baseline: any other revision would let its differences through unchecked
                    let differ = baseline_differences(&args.path, &id, out, &opts)?;
                    if differ > 0 {
                        super::print(&format!(
                            "not applied: dir:{} does not hold what `{b}` compiles to ({differ} files differ), \
                             so `{b}` is not its baseline\n\
                             hint: give the revision the target was built from (and the same --rollout-step flags)\n",
                            out.display()
                        ))?;
                        return Ok(exit::DENIED);
                    }
                    Some(id)
                }
                (None, Some(c)) => Some(c.clone()),
                (None, None) => None,
            };
            match baseline {
                Some(b) if head_v.commit.as_deref() == Some(b.as_str()) => {
                    "policy: nothing changed since the last apply".to_owned()
                }
                Some(b) => match authorize_since(&args.path, &b, &source, &head_v)? {
                    Ok(a) => a.note,
                    Err(code) => return Ok(code),
                },
                None if holds && !args.no_baseline => {
                    super::print(&format!(
                        "not applied: dir:{} holds objects but records no applied commit (an unknown baseline), \
                         so this revision cannot be policy-checked against what the target runs\n\
                         hint: pass --baseline REV (the revision the target was built from; the change from it is \
                         authorised), or --no-baseline to apply without any policy check (unsafe)\n",
                        out.display()
                    ))?;
                    return Ok(exit::DENIED);
                }
                None if holds => {
                    eprintln!(
                        "WARNING: --no-baseline: applying to dir:{} WITHOUT a policy check; \
                         whatever this revision holds reaches the target, approved or not",
                        out.display()
                    );
                    "policy: NOT checked (--no-baseline)".to_owned()
                }
                None => "policy: first apply to this target (nothing to compare with)".to_owned(),
            }
        }
    };
    let source_name = args.path.display().to_string();
    // a working directory keeps the target's baseline: the next revision applied is
    // authorised from the last commit that was
    let workdir = matches!(source, Source::Dir { .. });
    let commit = if workdir {
        recorded.clone()
    } else {
        head_v.commit.clone()
    };
    let tree = pipeline::compile_into(&head_v, &opts, out, |objects| {
        Some(State {
            version: 1,
            commit: commit.clone(),
            source: source_name.clone(),
            objects,
            workdir,
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
        workdir,
    };
    let at = state
        .commit
        .as_deref()
        .map(|c| format!(" at {}", short(c)))
        .unwrap_or_default();
    let text = if w.is_noop() && previous.as_ref().is_some_and(|p| p.same_as(&state)) {
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

pub(super) fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// An allowed change since a baseline.
pub(super) struct Authorized {
    /// What to print about the policy check.
    pub note: String,
    /// The baseline, validated.
    pub base: pipeline::Validated,
    /// The tenants the change can affect (`None`: every tenant).
    pub affected: Option<std::collections::BTreeSet<String>>,
}

/// Authorise the change from `baseline` to the revision being applied. `Ok` when allowed;
/// `Err(exit code)` when it was refused (and said why).
pub(super) fn authorize_since(
    path: &std::path::Path,
    baseline: &str,
    source: &Source,
    head_v: &pipeline::Validated,
) -> anyhow::Result<Result<Authorized, u8>> {
    let base = Source::git(path, baseline).with_context(|| format!("reading the baseline commit {baseline}"))?;
    let base_v = pipeline::validate(&base, &|_, _| {})?;
    let a = pipeline::authorize(&base, source, &base_v, head_v, &Principals::default(), None)?;
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
        return Ok(Err(exit::DENIED));
    }
    let from = base_v.commit.as_deref().unwrap_or(baseline);
    let note = format!("policy: {} changes allowed since {}", a.changes.len(), short(from));
    let affected = crate::plan::affected(&a.changes, &base_v.repo, &head_v.repo);
    Ok(Ok(Authorized {
        note,
        base: base_v,
        affected,
    }))
}

/// How many files of `out` differ from what revision `rev` compiles to with `opts`.
fn baseline_differences(
    path: &std::path::Path,
    rev: &str,
    out: &std::path::Path,
    opts: &crate::compile::Options,
) -> anyhow::Result<usize> {
    let source = Source::git(path, rev).with_context(|| format!("reading the baseline {rev}"))?;
    let v = pipeline::validate(&source, &|_, _| {})?;
    if !v.specs_valid() {
        anyhow::bail!("the baseline {rev} is invalid, so it cannot be what the target holds");
    }
    let (manifests, _) = crate::compile::compile(&v.repo, opts);
    let paths: Vec<String> = manifests.iter().map(|m| m.path()).collect();
    let mut files: std::collections::BTreeMap<String, String> =
        manifests.iter().map(|m| (m.path(), m.yaml())).collect();
    files.insert("kustomization.yaml".to_owned(), crate::compile::kustomization(&paths));
    dir::differences(out, &files)
}
