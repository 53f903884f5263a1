//! `rampart rollout status [NAME]`: where each rollout stands, read from a running `serve`'s
//! state directory (or, with `--server`, its status API).

use crate::serve::rollouts::{Store, now};
use std::path::PathBuf;

/// Rollouts in flight: where each stands, read from a `rampart serve`'s state.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Each rollout's step, weights, time left in the step and last verdicts, per target
    /// (exit 4 when a rollout in flight — or the named one — was reverted on an SLO).
    Status(StatusArgs),
}

#[derive(clap::Args)]
struct StatusArgs {
    /// Only this rollout.
    name: Option<String>,
    /// The state directory of the `rampart serve` whose rollouts to show (its
    /// `rollouts.json`).
    #[arg(long, env = "RAMPART_STATE_DIR", default_value = "rampart-state", value_name = "DIR")]
    state_dir: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let Sub::Status(a) = args.command;
    let path = Store::path(&a.state_dir);
    if !path.is_file() {
        anyhow::bail!(
            "no rollouts recorded in `{}`: give the state directory of a `rampart serve` (--state-dir)",
            a.state_dir.display()
        );
    }
    let store = Store::load(&a.state_dir);
    let wanted = |r: &str| a.name.as_deref().is_none_or(|n| n == r);
    let rows: Vec<(&String, &crate::rollout::State, bool)> = store
        .targets
        .iter()
        .flat_map(|(t, r)| {
            r.active
                .values()
                .map(move |s| (t, s, true))
                .chain(r.finished.iter().rev().map(move |s| (t, s, false)))
        })
        .filter(|(_, s, _)| wanted(&s.rollout))
        .collect();
    if let Some(n) = &a.name
        && rows.is_empty()
    {
        anyhow::bail!("no rollout named `{n}` in `{}`", a.state_dir.display());
    }
    let text = match a.format {
        Format::Json => {
            let list: Vec<serde_json::Value> = rows
                .iter()
                .map(|(t, s, active)| {
                    let mut v = serde_json::to_value(s).unwrap_or_default();
                    v["target"] = serde_json::json!(t);
                    v["active"] = serde_json::json!(active);
                    v
                })
                .collect();
            serde_json::to_string_pretty(&serde_json::json!({ "rollouts": list }))? + "\n"
        }
        Format::Text => text(&rows),
    };
    super::print(&text)?;
    // 4 when what is shown ended in a revert: the rollouts in flight, or the named one's last
    let violated = |s: &crate::rollout::State| {
        matches!(
            s.status,
            crate::rollout::Status::Reverting | crate::rollout::Status::Reverted
        )
    };
    let shown: Vec<&crate::rollout::State> = match &a.name {
        Some(_) => rows
            .iter()
            .find(|(_, _, active)| *active)
            .or(rows.first())
            .map(|(_, s, _)| *s)
            .into_iter()
            .collect(),
        None => rows
            .iter()
            .filter(|(_, _, active)| *active)
            .map(|(_, s, _)| *s)
            .collect(),
    };
    Ok(if shown.into_iter().any(violated) {
        super::exit::SLO_VIOLATION
    } else {
        super::exit::OK
    })
}

fn text(rows: &[(&String, &crate::rollout::State, bool)]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if rows.is_empty() {
        out.push_str("no rollouts\n");
    }
    let t = now();
    for (target, s, _) in rows {
        let v = |x: &str| crate::diagnostic::visible(x, &[]);
        let _ = writeln!(
            out,
            "{} on {}: {} — {} → {} ({}), step {} of {}, {}",
            v(&s.rollout),
            v(target),
            s.status.as_str(),
            v(&s.plugin),
            v(&s.to_version),
            v(&s.strategy),
            s.step,
            s.steps,
            if s.status == crate::rollout::Status::Running {
                format!("in this step for {}s", (t - s.since).max(0))
            } else {
                format!("{}s ago", (t - s.updated).max(0))
            },
        );
        if let Some(r) = &s.reason {
            let _ = writeln!(out, "  why: {}", v(r));
        }
        if let Some(l) = &s.landed {
            let _ = writeln!(out, "  landed: {}", v(l));
        }
        for c in s.checks.iter().rev().take(5) {
            let verdict = serde_json::to_value(c.verdict)
                .ok()
                .and_then(|x| x.as_str().map(str::to_owned))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {} {verdict}: {} (bound {}, {}s ago){}",
                v(&c.slo),
                c.value.map_or_else(|| "no value".to_owned(), |x| x.to_string()),
                v(&c.bound),
                (t - c.time).max(0),
                if c.reason.is_empty() {
                    String::new()
                } else {
                    format!(" — {}", v(&c.reason))
                }
            );
        }
    }
    out
}
