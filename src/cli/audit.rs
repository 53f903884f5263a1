//! `rampart audit [PATH]`: who changed what, who approved it, whether policy allowed it,
//! where and when it was applied, and what reverted it — from the config repo's Git history
//! and rampart's records in it. Exit 2 when there is any finding.

use crate::audit::history::{self, Bound, Options};
use crate::report::audit::AuditFormat;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Audit the config repo's history: one row per change (author, pull request, approvers, the
/// policy decision re-computed with its parent's rules next to the recorded one, where and when
/// it was applied, the revert or promotion that followed), and findings with stable codes
/// (R701–R711; exit 2 when there is any). `--object` shows one object's life instead.
#[derive(clap::Args)]
pub struct Args {
    /// The config repo (a directory in a git work tree; its subdirectory when the config
    /// repo is one).
    #[arg(default_value = ".", value_parser = super::repo::repo_arg)]
    path: PathBuf,
    /// The revision whose first-parent history is audited.
    #[arg(long, default_value = "HEAD", value_name = "REV")]
    rev: String,
    /// Only commits after REV, or at or after a date (`2026-11-01`, `2026-11-01T12:00:00Z`, UTC).
    #[arg(long, value_name = "DATE|REV")]
    since: Option<String>,
    /// Only commits up to REV (inclusive), or at or before a date (a date alone: the end of
    /// that day, UTC).
    #[arg(long, value_name = "DATE|REV")]
    until: Option<String>,
    /// Only changes that can reach this tenant: its own, its plugins' and their rollouts',
    /// its owning teams', and the guarded files (rampart.yaml, policies/, keys/).
    #[arg(long, value_name = "NAME")]
    tenant: Option<String>,
    /// Only changes of this kind (`Team`, `Tenant`, `Plugin`, `Rollout`, `File`).
    #[arg(long, value_name = "K")]
    kind: Option<String>,
    /// Only changes of objects (or guarded files) with this name.
    #[arg(long, value_name = "N")]
    name: Option<String>,
    /// The life of one object instead: every version with its diff, newest first, renames
    /// followed (`tenants/payments-prod` or `Tenant/payments-prod`).
    #[arg(long, value_name = "DIR/NAME", conflicts_with_all = ["tenant", "kind", "name", "since", "until"])]
    object: Option<String>,
    /// A deploy branch to check the notes against (repeatable): only these are then read.
    /// Without it, a deploy branch is any branch with a `Rampart-Source:` commit among its
    /// last 100, or that a note names.
    #[arg(long = "deploy-branch", value_name = "BRANCH")]
    deploy_branches: Vec<String>,
    /// Read the local notes only: do not fetch `refs/notes/rampart` and the deploy branches
    /// from the remote first.
    #[arg(long)]
    no_fetch: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    format: AuditFormat,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    // the objects are read from the local repository, which git checked when it fetched
    // them: hashing every tree and blob again would double the audit's time
    git2::opts::strict_hash_verification(false);
    let start = Instant::now();
    let bar: OnceLock<ProgressBar> = OnceLock::new();
    let interactive = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
    let progress = |done: u64, total: u64| {
        if !interactive || start.elapsed() < Duration::from_millis(300) {
            return;
        }
        let b = bar.get_or_init(|| {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template("{spinner} auditing {pos}/{len} commits {wide_bar} {elapsed}")
                    .expect("template parses"),
            );
            b
        });
        b.set_position(done);
    };
    let opts = Options {
        path: args.path.clone(),
        rev: args.rev.clone(),
        since: args
            .since
            .as_deref()
            .map(|s| Bound::parse(s, false))
            .transpose()
            .map_err(|e| anyhow::anyhow!("--since {e}"))?,
        until: args
            .until
            .as_deref()
            .map(|s| Bound::parse(s, true))
            .transpose()
            .map_err(|e| anyhow::anyhow!("--until {e}"))?,
        tenant: args.tenant.clone(),
        kind: args.kind.clone(),
        name: args.name.clone(),
        fetch: !args.no_fetch,
        deploy_branches: args.deploy_branches.clone(),
    };
    let what = format!("auditing `{}`", args.path.display());
    if let Some(obj) = &args.object {
        let Some((kind, name)) = history::parse_object(obj) else {
            anyhow::bail!(
                "--object {}: give the object as DIR/NAME, e.g. tenants/payments-prod or Tenant/payments-prod",
                crate::diagnostic::quote(obj)
            );
        };
        if args.format == AuditFormat::Csv {
            anyhow::bail!("--object shows versions with their diffs: use --format human, json or markdown");
        }
        let life = history::life(&opts, kind, &name, &progress).context(what)?;
        if let Some(b) = bar.get() {
            b.finish_and_clear();
        }
        crate::cli::print(&crate::report::audit::render_life(args.format, &life))?;
        return Ok(crate::cli::exit::OK);
    }
    let report = history::audit(&opts, &progress).context(what)?;
    if let Some(b) = bar.get() {
        b.finish_and_clear();
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    crate::cli::print(&crate::report::audit::render(args.format, &report))?;
    Ok(if report.findings.is_empty() {
        crate::cli::exit::OK
    } else {
        crate::cli::exit::DENIED
    })
}
