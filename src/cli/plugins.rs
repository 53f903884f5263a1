//! `rampart plugins verify [PATH]` and `rampart plugins tree TENANT [PATH]`.

use super::exit;
use crate::diagnostic::{Code, Diagnostic, Severity};
use crate::pipeline;
use crate::report::{self, Format};
use crate::source::Source;
use crate::supply::{self, Reason};
use anyhow::Context;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The plugin supply chain: integrity, signatures, trust scores, and each tenant's plugin set.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    Verify(VerifyArgs),
    Tree(TreeArgs),
}

/// Check every plugin's artifact digest and signature (against the keys in `keys/`) and show
/// its trust score. Exit 0 when the supply-chain checks pass, 3 when they do not (or the repo
/// is invalid), 1 could not run.
#[derive(clap::Args)]
struct VerifyArgs {
    /// The config repo (a directory; with --rev, any path inside the git repository).
    #[arg(default_value = ".", value_parser = super::repo::repo_arg)]
    path: PathBuf,
    /// Verify this git revision without checking it out.
    #[arg(long, value_name = "REV")]
    rev: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: VerifyFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum VerifyFormat {
    Table,
    Json,
}

/// Show the plugin set of one tenant: each plugin with its version, and why it is there
/// (enabled by the tenant, required by another plugin and whether the version satisfies the
/// range). Exit 0, 3 when the set has a problem, 1 no such tenant.
#[derive(clap::Args)]
struct TreeArgs {
    /// The tenant.
    tenant: String,
    /// The config repo (a directory; with --rev, any path inside the git repository).
    #[arg(default_value = ".", value_parser = super::repo::repo_arg)]
    path: PathBuf,
    /// Show the plugin set at this git revision (commit, branch, tag) without checking it out.
    #[arg(long, value_name = "REV")]
    rev: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: TreeFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TreeFormat {
    Text,
    Json,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    match args.command {
        Command::Verify(a) => verify(a),
        Command::Tree(a) => tree(a),
    }
}

fn open(path: &Path, rev: Option<&str>) -> anyhow::Result<pipeline::Validated> {
    let source = match rev {
        Some(rev) => Source::git(path, rev),
        None => Source::dir(path),
    }
    .with_context(|| format!("reading `{}`", path.display()))?;
    pipeline::validate(&source, &|_, _| {}).with_context(|| format!("validating `{}`", path.display()))
}

fn supply_chain(d: &Diagnostic) -> bool {
    d.code.as_str().starts_with("R6")
}

fn verify(args: VerifyArgs) -> anyhow::Result<u8> {
    let v = open(&args.path, args.rev.as_deref())?;
    let mine: Vec<Diagnostic> = v.diagnostics.iter().filter(|d| supply_chain(d)).cloned().collect();
    let others = v
        .diagnostics
        .iter()
        .filter(|d| !supply_chain(d) && d.is_error())
        .count();
    let code = if v.is_valid() { exit::OK } else { exit::INVALID };
    let trust = v.trust_all();
    match args.format {
        VerifyFormat::Json => {
            let value = serde_json::json!({
                "version": 1,
                "valid": v.is_valid(),
                "plugins": trust.values().collect::<Vec<_>>(),
                "diagnostics": report::json::value(&v.summary(&mine, ""))["diagnostics"],
                "otherErrors": others,
            });
            super::print(&format!("{}\n", serde_json::to_string_pretty(&value)?))?;
        }
        VerifyFormat::Table => {
            let mut out = String::new();
            let rows: Vec<[String; 6]> = trust
                .values()
                .map(|t| {
                    [
                        t.name.clone(),
                        t.version.clone(),
                        t.publisher.clone(),
                        t.integrity.to_owned(),
                        match &t.signed_by {
                            Some(k) => format!("verified ({k})"),
                            None => t.signature.to_owned(),
                        },
                        format!(
                            "{:>3}  (publisher {}, security {}, community {}, quality {}, freshness {})",
                            t.trust_score,
                            t.factors.publisher,
                            t.factors.security,
                            t.factors.community,
                            t.factors.quality,
                            t.factors.freshness
                        ),
                    ]
                })
                .collect();
            let header = ["plugin", "version", "publisher", "integrity", "signature", "trust"];
            let widths: Vec<usize> = (0..6)
                .map(|i| {
                    rows.iter()
                        .map(|r| r[i].chars().count())
                        .chain([header[i].len()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            for row in std::iter::once(header.map(str::to_owned)).chain(rows) {
                let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
                writeln!(out, "{}", cells.join("  ").trim_end())?;
            }
            if !mine.is_empty() {
                out.push('\n');
                out.push_str(&report::render(Format::Human, &v.summary(&mine, ""), false));
            }
            if others > 0 {
                writeln!(
                    out,
                    "\n{others} other error{} in the repo: run `rampart validate` for them",
                    if others == 1 { "" } else { "s" }
                )?;
            }
            super::print(&out)?;
        }
    }
    Ok(code)
}

fn tree(args: TreeArgs) -> anyhow::Result<u8> {
    let v = open(&args.path, args.rev.as_deref())?;
    let Some(entries) = supply::tree(&v.repo, &args.tenant) else {
        let mut names: Vec<&str> = v.repo.tenants.iter().map(|t| t.name()).collect();
        names.sort_by_key(|n| crate::diagnostic::edit_distance(n, &args.tenant));
        anyhow::bail!(
            "no tenant `{}` in `{}`{}",
            args.tenant,
            args.path.display(),
            names
                .first()
                .map(|n| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default()
        );
    };
    let tenant = v
        .repo
        .tenants
        .iter()
        .find(|t| t.name() == args.tenant)
        .expect("tree found it");
    // this tenant's problems (its file), and the plugins'
    let problems: Vec<&Diagnostic> = v
        .diagnostics
        .iter()
        .filter(|d| d.file() == Some(tenant.origin.file.as_str()) && d.severity == Severity::Error)
        .filter(|d| {
            matches!(
                d.code,
                Code::RequirementMissing
                    | Code::RequirementConflict
                    | Code::PermissionNotAllowed
                    | Code::PluginsOverQuota
                    | Code::UnknownPlugin
            )
        })
        .collect();
    match args.format {
        TreeFormat::Json => {
            let value = serde_json::json!({
                "version": 1,
                "tenant": args.tenant,
                "tier": tenant.spec.tier,
                "plugins": entries,
                "problems": problems.iter().map(|d| &d.message).collect::<Vec<_>>(),
            });
            super::print(&format!("{}\n", serde_json::to_string_pretty(&value)?))?;
        }
        TreeFormat::Text => {
            let mut out = format!("tenant {} ({} tier)\n", args.tenant, tenant.spec.tier);
            let width = entries
                .iter()
                .map(|e| e.name.len() + e.version.as_deref().map_or(10, str::len))
                .max()
                .unwrap_or(0)
                + 2;
            for e in &entries {
                let label = format!("{} {}", e.name, e.version.as_deref().unwrap_or("(undefined)"));
                let mut why: Vec<String> = Vec::new();
                if e.disabled {
                    why.push("disabled".to_owned());
                }
                for r in &e.reasons {
                    why.push(match r {
                        Reason::Enabled => "enabled".to_owned(),
                        Reason::RequiredBy {
                            plugin,
                            range,
                            satisfied,
                        } => {
                            format!(
                                "required by {plugin} ({range}{})",
                                if *satisfied { ", satisfied" } else { ", NOT satisfied" }
                            )
                        }
                    });
                }
                if e.missing {
                    why.push("MISSING: required but not enabled".to_owned());
                }
                writeln!(out, "  {label:<width$}{}", why.join("; "))?;
            }
            for p in &problems {
                writeln!(out, "error[{}]: {}", p.code, p.message)?;
            }
            super::print(&out)?;
        }
    }
    Ok(if problems.is_empty() { exit::OK } else { exit::INVALID })
}
