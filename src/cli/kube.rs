//! `apply --target kubernetes[:CONTEXT]` and `plan --live`: the CLI side of the Kubernetes
//! target (`crate::target::kube`).

use super::apply::{authorize_since, short};
use super::compile::{options, print_diagnostics};
use super::exit;
use crate::pipeline;
use crate::source::Source;
use crate::target::kube::{KubeTarget, Options};
use crate::target::{Apply, Record, Revision, Target};
use anyhow::Context;
use std::path::Path;

/// Apply a revision (or a working directory) to a cluster.
pub fn apply(
    path: &Path,
    rev: Option<&str>,
    steps: &[(String, usize)],
    baseline: Option<&str>,
    no_baseline: bool,
    kopts: Options,
) -> anyhow::Result<u8> {
    let ctx = || format!("applying `{}`", path.display());
    let source = match rev {
        Some(rev) => Source::git(path, rev),
        None => Source::dir(path),
    }
    .with_context(ctx)?;
    let head_v = pipeline::validate(&source, &|_, _| {}).with_context(ctx)?;
    let opts = options(steps);
    if !head_v.is_valid() {
        print_diagnostics(&head_v, &[])?;
        super::print("not applied: the revision is invalid\n")?;
        return Ok(exit::INVALID);
    }
    let mut target = KubeTarget::connect(kopts)?;
    let name = target.name();
    let held = target
        .applied()
        .with_context(|| format!("reading what {name} holds (its inventory)"))?;
    // (the change's baseline, validated, and the tenants it can affect: the cluster then gets
    // only those tenants compiled and compared, when its inventory holds the baseline)
    let mut authorized: Option<super::apply::Authorized> = None;
    let (policy_note, decision, from) = match &source {
        Source::Dir { .. } => (
            match &held.commit {
                Some(c) => format!(
                    "policy: NOT checked (a working directory carries no author); the baseline stays {}",
                    short(c)
                ),
                None => "policy: not checked (applying a directory; only revisions carry authors)".to_owned(),
            },
            "workdir",
            held.commit.clone(),
        ),
        Source::Git { .. } => {
            let baseline = match (baseline, &held.commit) {
                (None, Some(c)) if no_baseline => {
                    super::print(&format!(
                        "not applied: {name} records its baseline {}; --no-baseline is only for a target that records none\n",
                        short(c)
                    ))?;
                    return Ok(exit::ERROR);
                }
                (Some(b), Some(c)) => {
                    super::print(&format!(
                        "not applied: {name} records its baseline {}; --baseline is only for a target that records none (given `{b}`)\n",
                        short(c)
                    ))?;
                    return Ok(exit::ERROR);
                }
                (Some(b), None) => {
                    let base = Source::git(path, b).with_context(|| format!("reading the baseline {b}"))?;
                    let id = base.commit().expect("a revision has a commit");
                    // (the revision being applied is a baseline too: if the cluster holds exactly
                    // it, re-recording it authorises nothing new — the way back from a lost
                    // inventory when the cluster is up to date)
                    // the cluster's inventory must hold what the baseline compiles to, or it is
                    // not the baseline: any other revision would let its differences through
                    let base_v = pipeline::validate(&base, &|_, _| {})?;
                    let holds = base_v.specs_valid()
                        && target.holds(&Revision {
                            head: &base_v,
                            base: None,
                            affected: None,
                            opts: &opts,
                        })? == Some(true);
                    if !holds {
                        super::print(&format!(
                            "not applied: {name}'s inventory does not hold what `{b}` compiles to, so `{b}` is not its baseline\n\
                             hint: give the revision the cluster was built from (and the same --rollout-step flags)\n"
                        ))?;
                        return Ok(exit::DENIED);
                    }
                    Some(id)
                }
                (None, Some(c)) => Some(c.clone()),
                (None, None) => None,
            };
            match &baseline {
                Some(b) if head_v.commit.as_deref() == Some(b.as_str()) => (
                    "policy: nothing changed since the last apply".to_owned(),
                    "allowed",
                    baseline.clone(),
                ),
                Some(b) => match authorize_since(path, b, &source, &head_v)? {
                    Ok(a) => {
                        authorized = Some(a);
                        (
                            authorized.as_ref().expect("set").note.clone(),
                            if held.commit.is_some() { "allowed" } else { "baseline" },
                            baseline.clone(),
                        )
                    }
                    Err(code) => return Ok(code),
                },
                None if held.unknown && !no_baseline => {
                    super::print(&format!(
                        "not applied: {name} holds objects rampart applied but records no applied commit (an unknown \
                         baseline), so this revision cannot be policy-checked against what the cluster runs\n\
                         hint: pass --baseline REV (the revision the cluster was built from; the change from it is \
                         authorised), or --no-baseline to apply without any policy check (unsafe)\n"
                    ))?;
                    return Ok(exit::DENIED);
                }
                None if held.unknown => {
                    eprintln!(
                        "WARNING: --no-baseline: applying to {name} WITHOUT a policy check; \
                         whatever this revision holds reaches the cluster, approved or not"
                    );
                    ("policy: NOT checked (--no-baseline)".to_owned(), "no-baseline", None)
                }
                None => (
                    "policy: first apply to this cluster (nothing to compare with)".to_owned(),
                    "first-apply",
                    None,
                ),
            }
        }
    };
    let commit = head_v.commit.clone();
    let record = Record {
        source: commit.clone().unwrap_or_else(|| "workdir".to_owned()),
        from,
        decision: decision.to_owned(),
        author: None,
        approvers: Vec::new(),
        pull_request: None,
        commits: commit.iter().cloned().collect(),
        time: crate::target::now_rfc3339(),
    };
    let rev = Revision {
        head: &head_v,
        base: authorized.as_ref().map(|a| &a.base),
        affected: authorized.as_ref().and_then(|a| a.affected.as_ref()),
        opts: &opts,
    };
    let started = std::time::Instant::now();
    let result = target.apply(&held, &rev, &record);
    let took = started.elapsed();
    for w in &target.warnings {
        eprintln!("warning: {}", crate::diagnostic::visible(w, &[]));
    }
    let at = commit
        .as_deref()
        .or(held.commit.as_deref())
        .map(|c| format!(" at {}", short(c)))
        .unwrap_or_default();
    let code = match result {
        Ok(Apply::Done(o)) if o.noop => {
            super::print(&format!("no changes: {name} already holds{at}\n{policy_note}\n"))?;
            exit::OK
        }
        Ok(Apply::Done(o)) => {
            super::print(&format!(
                "applied{at} to {name}: {} objects applied, {} pruned ({:.2} s)\n{policy_note}\n",
                o.written,
                o.removed,
                took.as_secs_f64()
            ))?;
            exit::OK
        }
        Ok(Apply::Invalid(diags)) => {
            print_diagnostics(&head_v, &diags)?;
            super::print("not applied: the revision does not compile\n")?;
            exit::INVALID
        }
        Ok(Apply::Moved { now }) if now.commit == held.commit => {
            super::print(&format!(
                "not applied: another process claimed {name}'s inventory first (an apply in progress)\n\
                 hint: run the apply again once it is done (it is decided anew)\n"
            ))?;
            exit::ERROR
        }
        Ok(Apply::Moved { now }) => {
            super::print(&format!(
                "not applied: another process applied {} to {name} meanwhile\nhint: run the apply again (it is decided anew)\n",
                now.commit.as_deref().map_or("another revision", short)
            ))?;
            exit::ERROR
        }
        Err(e) => {
            super::print(&format!("not applied completely: {e:#}\n"))?;
            exit::ERROR
        }
    };
    std::mem::forget(head_v);
    Ok(code)
}

/// `plan --live`: the head's objects dry-run against the cluster, per object.
pub fn plan_live(
    path: &Path,
    head: &str,
    steps: &[(String, usize)],
    format: crate::report::plan::PlanFormat,
    detailed_exitcode: bool,
    context: Option<String>,
) -> anyhow::Result<u8> {
    use crate::report::plan::PlanFormat;
    let source = Source::git(path, head).with_context(|| format!("planning `{}` at {head}", path.display()))?;
    let head_v = pipeline::validate(&source, &|_, _| {})?;
    if !head_v.is_valid() {
        print_diagnostics(&head_v, &[])?;
        super::print("no plan: the revision is invalid\n")?;
        return Ok(exit::INVALID);
    }
    let mut opts = options(steps);
    opts.redact = false;
    let mut target = KubeTarget::connect(Options {
        context,
        force_conflicts: false,
    })?;
    let name = target.name();
    let rev = Revision {
        head: &head_v,
        base: None,
        affected: None,
        opts: &opts,
    };
    let diffs = match target.live_diff(&rev, false)? {
        Ok(d) => d,
        Err(diags) => {
            print_diagnostics(&head_v, &diags)?;
            super::print("no plan: the revision does not compile\n")?;
            return Ok(exit::INVALID);
        }
    };
    let count = |a: &str| diffs.iter().filter(|d| d.action == a).count();
    let (create, update, delete, unchanged, errors, conflicts, release) = (
        count("create"),
        count("update"),
        count("delete"),
        count("unchanged"),
        count("error"),
        count("conflict"),
        count("release"),
    );
    let changes = create + update + delete + conflicts + release;
    let held = target.applied()?;
    let warning = if held.unknown {
        Some(format!(
            "warning: {name} holds rampart's objects but its inventory records no applied commit (lost, or written by \
             hand): `apply --rev` will refuse it as an unknown baseline, and prune knows nothing to delete"
        ))
    } else if held.commit.is_none() {
        Some(format!(
            "note: rampart has not applied to {name} yet (no inventory): every object is new to it"
        ))
    } else {
        None
    };
    let text = match format {
        PlanFormat::Json => {
            let shown: Vec<_> = diffs.iter().filter(|d| d.action != "unchanged").collect();
            format!(
                "{}\n",
                serde_json::to_string_pretty(&serde_json::json!({
                    "target": name,
                    "head": head_v.commit,
                    "applied": held.commit,
                    "warning": warning,
                    "summary": {"create": create, "update": update, "delete": delete, "release": release,
                                "conflict": conflicts, "unchanged": unchanged, "error": errors},
                    "objects": shown,
                }))?
            )
        }
        PlanFormat::Text | PlanFormat::Markdown => {
            let md = matches!(format, PlanFormat::Markdown);
            let mut t = format!(
                "{}live plan of {} against {name}: {create} to create, {update} to update, {delete} to prune, \
                 {unchanged} unchanged{}{}{}\n",
                if md { "### " } else { "" },
                head_v.commit.as_deref().map_or(head, short),
                if conflicts > 0 {
                    format!(", {conflicts} in conflict with another field manager")
                } else {
                    String::new()
                },
                if release > 0 {
                    format!(", {release} released (kept, no longer managed)")
                } else {
                    String::new()
                },
                if errors > 0 {
                    format!(", {errors} could not be planned")
                } else {
                    String::new()
                }
            );
            if let Some(w) = &warning {
                t.push_str(w);
                t.push('\n');
            }
            for d in diffs.iter().filter(|d| d.action != "unchanged") {
                let sign = match d.action.as_str() {
                    "create" => "+",
                    "update" => "~",
                    "delete" => "-",
                    "release" => "=",
                    _ => "!",
                };
                t.push_str(&format!("\n{sign} {} {}\n", d.action, d.object));
                if let Some(e) = &d.error {
                    t.push_str(e);
                    t.push('\n');
                }
                if !d.diff.is_empty() {
                    if md {
                        t.push_str("```diff\n");
                    }
                    t.push_str(&d.diff);
                    if md {
                        t.push_str("```\n");
                    }
                }
            }
            t
        }
    };
    super::print(&text)?;
    std::mem::forget(head_v);
    Ok(if errors > 0 || conflicts > 0 {
        exit::ERROR
    } else if detailed_exitcode && changes > 0 {
        exit::DENIED
    } else {
        exit::OK
    })
}
