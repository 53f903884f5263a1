//! `rampart compile [PATH] [--rev REV] --out DIR [--rollout-step ROLLOUT=N]…`.

use super::exit;
use crate::compile::Options;
use crate::pipeline;
use crate::report::{self, Format};
use crate::source::Source;
use anyhow::Context;
use std::path::PathBuf;

/// Compile the config repo into Kubernetes objects, one file each, plus a kustomization.
///
/// The output directory is replaced atomically and holds exactly the compiled objects
/// (`<namespace or _cluster>/<kind>-<name>.yaml`, kind in lower case) and `kustomization.yaml`. Exit 0 written,
/// 3 the repo is invalid (nothing written), 1 could not run.
#[derive(clap::Args)]
pub struct Args {
    /// The config repo (a directory; with --rev, any path inside the git repository).
    #[arg(default_value = ".", value_parser = super::repo::repo_arg)]
    pub path: PathBuf,
    /// Compile this git revision without checking it out.
    #[arg(long, value_name = "REV")]
    pub rev: Option<String>,
    /// Where to write the objects.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The current step (1-based) of a rollout in progress (repeatable; default: step 1).
    #[arg(long = "rollout-step", value_name = "ROLLOUT=N", value_parser = parse_step)]
    pub rollout_steps: Vec<(String, usize)>,
}

pub fn parse_step(s: &str) -> Result<(String, usize), String> {
    let (name, n) = s.split_once('=').ok_or("expected ROLLOUT=N")?;
    let n: usize = n.parse().map_err(|_| format!("`{n}` is not a step number"))?;
    if n == 0 {
        return Err("steps are numbered from 1".into());
    }
    Ok((name.to_owned(), n))
}

pub fn options(steps: &[(String, usize)]) -> Options {
    Options {
        rollout_steps: steps.iter().cloned().collect(),
        redact: false,
    }
}

/// Print the validation and compile problems of a revision (human format).
pub fn print_problems(c: &pipeline::Compiled) -> anyhow::Result<()> {
    print_diagnostics(&c.validated, &c.diagnostics)
}

/// Print a revision's validation problems and `more` (human format).
pub fn print_diagnostics(v: &pipeline::Validated, more: &[crate::diagnostic::Diagnostic]) -> anyhow::Result<()> {
    let mut all = v.diagnostics.clone();
    all.extend(more.iter().cloned());
    let summary = v.summary(&all, "");
    super::print(&report::render(Format::Human, &summary, false))
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let ctx = || format!("compiling `{}`", args.path.display());
    let source = match &args.rev {
        Some(rev) => Source::git(&args.path, rev),
        None => Source::dir(&args.path),
    }
    .with_context(ctx)?;
    let validated = pipeline::validate(&source, &|_, _| {}).with_context(ctx)?;
    if !validated.is_valid() {
        print_diagnostics(&validated, &[])?;
        return Ok(exit::INVALID);
    }
    let tree = pipeline::compile_into(&validated, &options(&args.rollout_steps), &args.out, |_| None)
        .with_context(|| format!("writing `{}`", args.out.display()))?;
    let Some(w) = tree.written else {
        print_diagnostics(&validated, &tree.diagnostics)?;
        return Ok(exit::INVALID);
    };
    super::print(&format!(
        "compiled {} objects into {}: {} added, {} changed, {} removed, {} unchanged\n",
        tree.objects,
        args.out.display(),
        w.added,
        w.changed,
        w.removed,
        w.unchanged
    ))?;
    // the process ends here: freeing a large repo's model one allocation at a time only costs time
    std::mem::forget(validated);
    Ok(exit::OK)
}
