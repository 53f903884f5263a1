//! `rampart policy test [PATH] [--rev REV] [--format human|json]`.

use super::exit;
use crate::pipeline;
use crate::report::policy_test::{TestFormat, TestReport, render};
use crate::source::Source;
use anyhow::Context;
use std::io::IsTerminal;
use std::path::PathBuf;

/// Work with the config repo's Cedar policies.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(clap::Subcommand)]
enum PolicyCommand {
    Test(TestArgs),
}

/// Run the repo's policy tests (`policies/tests/*.yaml`, kind `PolicyTest`).
///
/// Each case is decided with the repo's policies and rampart's defaults, like `opa test`.
/// Exit 0 all passed, 1 any failed or could not run, 3 the repo or a test file is invalid.
#[derive(clap::Args)]
struct TestArgs {
    /// The config repo (a directory; with --rev, any path inside the git repository).
    #[arg(default_value = ".", value_parser = super::repo::repo_arg)]
    path: PathBuf,
    /// Test this git revision without checking it out.
    #[arg(long, value_name = "REV")]
    rev: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    format: TestFormat,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let PolicyCommand::Test(args) = args.command;
    let ctx = || format!("testing the policies of `{}`", args.path.display());
    let source = match &args.rev {
        Some(rev) => Source::git(&args.path, rev),
        None => Source::dir(&args.path),
    }
    .with_context(ctx)?;
    let run = pipeline::policy_test(&source).with_context(ctx)?;
    let v = &run.validated;
    let report = TestReport {
        validation: v.summary(&v.diagnostics, ""),
        results: &run.results,
        diagnostics: &run.diagnostics,
        test_files: run.test_files,
    };
    let color = args.format == TestFormat::Human && std::io::stdout().is_terminal() && !super::no_color();
    super::print(&render(args.format, &report, color))?;
    Ok(if !v.is_valid() || run.diagnostics.iter().any(|d| d.is_error()) {
        exit::INVALID
    } else if run.results.iter().any(|c| !c.passed) {
        exit::ERROR
    } else {
        exit::OK
    })
}
