//! Command-line interface: one small file per subcommand. Parses flags, builds the inputs,
//! calls the pipeline, prints, and returns the exit code.

mod apply;
mod audit;
mod check;
mod ci;
mod compile;
mod init;
mod kube;
mod plan;
mod plugins;
mod policy;
mod repo;
mod rollout;
mod serve;
mod shell;
mod validate;

use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;

/// Exit codes, stable and documented in the README.
pub mod exit {
    /// Success: valid, allowed, nothing to report.
    pub const OK: u8 = 0;
    /// Could not run: bad flags, unreadable repo, unknown revision, I/O failure.
    pub const ERROR: u8 = 1;
    /// Denied by policy.
    pub const DENIED: u8 = 2;
    /// Invalid input: the config repo has errors.
    pub const INVALID: u8 = 3;
    /// SLO violation.
    pub const SLO_VIOLATION: u8 = 4;
}

#[derive(Parser)]
#[command(
    name = "rampart",
    version,
    about = "Policy-as-code GitOps reconciler and config compiler",
    long_about = "rampart validates a config repo of teams, tenants, plugins and rollouts against JSON Schemas \
                  and semantic rules, and reports every problem at file:line:col with a stable code. \
                  `check` authorises the changes between two revisions with Cedar policies (rampart's \
                  defaults plus the repo's policies/*.cedar); `policy test` runs the repo's policy tests; \
                  `compile` turns the repo into Kubernetes objects, `plan` shows what a change does to them, \
                  and `apply --target dir:OUT|kubernetes[:CONTEXT]` writes them where Argo CD or Flux pick them up, \
                  or to a cluster; `serve` is the reconciler: it watches a branch, authorises every commit and \
                  applies what is allowed to directories, deploy branches and clusters, with metrics, a status \
                  API, drift detection and records in Git, and drives rollouts step by step on their SLOs \
                  (Prometheus), writing the revert of a failing one — or the promotion of a passed one — into \
                  Git itself; `rollout status` shows where they stand; `audit` reads it all back from Git for auditors (who \
                  changed what, who approved it, whether policy allowed it, where and when it was applied, what \
                  reverted it). `plugins verify` \
                  and `plugins tree` show the plugin supply chain (digests, signatures, trust, each tenant's \
                  plugin set); `ci` runs the whole review inside GitHub Actions (comment, check run, outputs); \
                  `init` scaffolds a new config repo.\n\n\
                  Exit codes: 0 ok, 1 could not run, 2 denied by policy, 3 invalid input, 4 SLO violation.",
    after_help = "Docs: README.md (commands, config reference, diagnostic codes, exit codes)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Init(init::Args),
    Validate(validate::Args),
    Check(check::Args),
    Policy(policy::Args),
    Compile(compile::Args),
    Plan(plan::Args),
    Apply(apply::Args),
    Plugins(plugins::Args),
    Ci(ci::Args),
    Serve(Box<serve::Args>),
    Rollout(rollout::Args),
    Audit(audit::Args),
    Completions(shell::CompletionsArgs),
    Man(shell::ManArgs),
}

/// The whole command line as `clap` sees it: for completions, the man page and tests.
pub fn command() -> clap::Command {
    Cli::command()
}

/// Whether `NO_COLOR` asks for no colour: set *and* non-empty (no-color.org; an empty
/// value is how many tools unset it).
pub(crate) fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

/// The parse cache of the repository `source` is a revision of, unless `RAMPART_CACHE=off`
/// (or `0`); `None` for a directory.
pub fn parse_cache(source: &crate::source::Source) -> Option<crate::cache::ParseCache> {
    let off = std::env::var_os("RAMPART_CACHE").is_some_and(|v| v == "off" || v == "0");
    match source {
        crate::source::Source::Git { repo, .. } if !off => Some(crate::cache::ParseCache::open(repo.path())),
        _ => None,
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::ERROR } else { exit::OK });
        }
    };
    let result = match cli.command {
        Command::Init(args) => init::run(args),
        Command::Validate(args) => validate::run(args),
        Command::Apply(args) => apply::run(args),
        Command::Plugins(args) => plugins::run(args),
        Command::Ci(args) => ci::run(args),
        Command::Check(args) => check::run(args),
        Command::Compile(args) => compile::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Policy(args) => policy::run(args),
        Command::Serve(args) => serve::run(*args),
        Command::Rollout(args) => rollout::run(args),
        Command::Audit(args) => audit::run(args),
        Command::Completions(args) => shell::completions(args),
        Command::Man(args) => shell::man(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // (an error may quote a file name or a server's answer: nothing in it may start a
            // line or a terminal sequence)
            eprintln!("error: {}", crate::diagnostic::visible(&format!("{e:#}"), &['\n']));
            ExitCode::from(exit::ERROR)
        }
    }
}

/// Write to stdout; a closed pipe (`rampart … | head`) is not a failure.
pub(crate) fn print(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

#[cfg(test)]
mod tests {
    /// Every subcommand, flag and positional says what it is for in `--help` (and so in the
    /// man page and the completions' descriptions).
    #[test]
    fn every_command_and_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    let name = match arg.get_long() {
                        Some(long) => format!("--{long}"),
                        None => format!("<{}>", id.to_uppercase()),
                    };
                    missing.push(format!("`{path} {name}`"));
                }
            }
            for sub in cmd.get_subcommands() {
                let sub_path = format!("{path} {}", sub.get_name());
                if sub.get_name() != "help" && sub.get_about().is_none() && sub.get_long_about().is_none() {
                    missing.push(format!("`{sub_path}` (the command itself)"));
                }
                walk(sub, &sub_path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::command(), "rampart", &mut missing);
        assert!(missing.is_empty(), "no help text for: {}", missing.join(", "));
    }

    #[test]
    fn the_command_line_is_consistent() {
        super::command().debug_assert();
    }
}
