//! `rampart validate [PATH] [--rev REV] [--format human|json|github|sarif]`.

use super::exit;
use crate::pipeline;
use crate::report::{self, Format, Summary};
use crate::source::{self, Source};
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Validate a config repo: schemas, references, quotas, rollouts. Exit 0 valid, 3 invalid,
/// 1 could not run.
#[derive(clap::Args)]
pub struct Args {
    /// The config repo (a directory; with --rev, any path inside the git repository).
    #[arg(default_value = ".", value_parser = super::repo::repo_arg)]
    path: PathBuf,
    /// Validate this git revision (commit, branch, tag) without checking it out.
    #[arg(long, value_name = "REV")]
    rev: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    format: Format,
    /// Print the wall time of each phase (read, parse+schema, semantic, resolve) to stderr.
    #[arg(long)]
    timings: bool,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let source = match &args.rev {
        Some(rev) => Source::git(&args.path, rev),
        None => Source::dir(&args.path),
    }
    .with_context(|| format!("validating `{}`", args.path.display()))?;

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
                ProgressStyle::with_template("{spinner} parsing {pos}/{len} files {wide_bar} {elapsed}")
                    .expect("template parses"),
            );
            b
        });
        b.set_position(done);
    };
    let validated =
        pipeline::validate(&source, &progress).with_context(|| format!("validating `{}`", args.path.display()))?;
    if let Some(b) = bar.get() {
        b.finish_and_clear();
    }
    if args.timings {
        let t = validated.timings;
        eprintln!(
            "timings: read {:.1} ms, parse+schema {:.1} ms, semantic {:.1} ms, resolve {:.1} ms",
            t.read.as_secs_f64() * 1e3,
            t.parse.as_secs_f64() * 1e3,
            t.validate.as_secs_f64() * 1e3,
            t.resolve.as_secs_f64() * 1e3
        );
    }

    let prefix = match args.format {
        Format::Github | Format::Sarif => source::workdir_prefix(&args.path),
        _ => String::new(),
    };
    let trust = validated.trust_all();
    let summary = Summary {
        trust: Some(&trust),
        ..validated.summary(&validated.diagnostics, &prefix)
    };
    let color = args.format == Format::Human && std::io::stdout().is_terminal() && !super::no_color();
    super::print(&report::render(args.format, &summary, color))?;
    let code = if validated.is_valid() { exit::OK } else { exit::INVALID };
    // the process ends here: freeing a large repo's documents one by one only costs time
    std::mem::forget(validated);
    Ok(code)
}
