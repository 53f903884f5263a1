//! `rampart check --base REV [--head REV] [--author LOGIN] [--approved-by LOGIN]…`.

use super::exit;
use super::repo::{self, Instead};
use crate::pipeline::{self, CheckOutcome, Principals};
use crate::report::check::{CheckFormat, CheckReport, render};
use crate::source;
use anyhow::Context;
use std::io::IsTerminal;
use std::path::PathBuf;

/// Authorise every change between two revisions with Cedar policies.
///
/// The head is validated first (its errors block the policy step); team membership, owners
/// and policies come from the base. Exit 0 all allowed, 2 any denied, 3 invalid head, 1
/// could not run.
#[derive(clap::Args)]
pub struct Args {
    /// Any path inside the git repository (the config repo's directory when it is a
    /// subdirectory of the work tree).
    #[arg(default_value = ".", value_parser = super::repo::repo_arg)]
    path: PathBuf,
    /// The revision the change starts from (e.g. the pull request's base branch).
    #[arg(long, value_name = "REV")]
    base: String,
    /// The revision under review.
    #[arg(long, value_name = "REV", default_value = "HEAD")]
    head: String,
    /// The change's author (a GitHub login). With it, the approvals are exactly the
    /// --approved-by flags (none without them) and commit metadata is not read. Default: the
    /// head commit's author, matched to a team member by login, email or name, and its
    /// `Approved-by:` trailers — commit metadata anyone can write, so CI should pass the
    /// pull request's author and approvals instead.
    #[arg(long, value_name = "LOGIN")]
    author: Option<String>,
    /// A login that approved the change (repeatable; needs --author).
    #[arg(long = "approved-by", value_name = "LOGIN", requires = "author")]
    approved_by: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    format: CheckFormat,
    /// Print the time spent building entities and deciding to stderr.
    #[arg(long)]
    timings: bool,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let ctx = || format!("checking `{}` from {} to {}", args.path.display(), args.base, args.head);
    let base = repo::git_revision(&args.path, &args.base, Instead::Check).with_context(ctx)?;
    let head = repo::git_revision(&args.path, &args.head, Instead::Check).with_context(ctx)?;
    if args.head == "HEAD" {
        repo::warn_uncommitted(&args.path, "check");
    }
    let who = Principals::logins(args.author.as_deref(), &args.approved_by);
    let cache = super::parse_cache(&head);
    let checked = pipeline::check(&base, &head, &who, cache.as_ref()).with_context(ctx)?;
    if args.timings {
        eprintln!(
            "timings: policy {:.1} ms for {} changes",
            checked.auth.policy_time.as_secs_f64() * 1e3,
            checked.auth.changes.len()
        );
    }
    let prefix = match args.format {
        CheckFormat::Github => source::workdir_prefix(&args.path),
        _ => String::new(),
    };
    let v = &checked.head;
    let blocked = match checked.auth.outcome {
        CheckOutcome::Decided => None,
        CheckOutcome::HeadInvalid => Some("the head revision is invalid; fix the errors above first"),
    };
    let lines = match args.format {
        CheckFormat::Github => field_lines(v, &checked),
        _ => Vec::new(),
    };
    let report = CheckReport {
        validation: v.summary(&v.diagnostics, &prefix),
        base: checked.auth.base_commit.as_deref(),
        author: &checked.auth.who.author,
        approvers: &checked.auth.who.approvers,
        changes: &checked.auth.changes,
        decisions: &checked.auth.decisions,
        diagnostics: &checked.auth.diagnostics,
        blocked,
        lines: &lines,
    };
    let color = args.format == CheckFormat::Human && std::io::stdout().is_terminal() && !super::no_color();
    super::print(&render(args.format, &report, color))?;
    Ok(match checked.auth.outcome {
        CheckOutcome::HeadInvalid => exit::INVALID,
        CheckOutcome::Decided if checked.auth.denied() > 0 => exit::DENIED,
        CheckOutcome::Decided => exit::OK,
    })
}

/// The line each change's first changed field is on in the head (0: only the file is known),
/// its pointer's nearest ancestor the YAML spells out when the field itself only defaults.
fn field_lines(v: &pipeline::Validated, checked: &pipeline::Checked) -> Vec<u32> {
    use crate::diagnostic::{Anchor, Code, Diagnostic};
    let mut asks: Vec<Diagnostic> = Vec::new();
    for (i, (c, field)) in checked.auth.changes.iter().zip(&checked.fields).enumerate() {
        let Some(pointer) = field else { continue };
        let mut p = pointer.as_str();
        loop {
            asks.push(Diagnostic::new(
                Code::ALL[0],
                Anchor::Node {
                    file: c.file.clone(),
                    doc: c.doc,
                    pointer: p.to_owned(),
                },
                format!("{i} {}", p.len()),
            ));
            match p.rfind('/') {
                Some(at) if at > 0 => p = &p[..at],
                _ => break,
            }
        }
    }
    v.resolve(&mut asks);
    let mut lines = vec![0u32; checked.auth.changes.len()];
    let mut depth = vec![0usize; checked.auth.changes.len()];
    for d in &asks {
        let (Some(l), Some((i, len))) = (&d.location, d.message.split_once(' ')) else {
            continue;
        };
        let (Ok(i), Ok(len)) = (i.parse::<usize>(), len.parse::<usize>()) else {
            continue;
        };
        if l.line > 0 && len > depth[i] {
            lines[i] = l.line;
            depth[i] = len;
        }
    }
    lines
}
