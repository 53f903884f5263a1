//! `rampart completions SHELL` and `rampart man [--out DIR]`: generated from the same
//! `clap` definition the parser uses, so they cannot drift from the flags.

use anyhow::Context;
use std::path::PathBuf;

/// Print a shell completion script to stdout.
///
/// bash: `rampart completions bash > ~/.local/share/bash-completion/completions/rampart`;
/// zsh: `rampart completions zsh > ~/.zfunc/_rampart` (with `~/.zfunc` in `fpath`);
/// fish: `rampart completions fish > ~/.config/fish/completions/rampart.fish`.
#[derive(clap::Args)]
pub struct CompletionsArgs {
    /// The shell to write the completion script for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Print the man page (roff) to stdout, or write one page per command to a directory.
///
/// `rampart man | man -l -` reads it; `rampart man --out DIR` writes `rampart.1` and
/// `rampart-SUBCOMMAND.1` for every subcommand (for packagers: install them in `man1/`).
#[derive(clap::Args)]
pub struct ManArgs {
    /// Write `rampart.1` and one page per subcommand into this directory (created when
    /// missing) instead of printing the top-level page.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

pub fn completions(args: CompletionsArgs) -> anyhow::Result<u8> {
    let mut cmd = super::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "rampart", &mut script);
    super::print(&String::from_utf8_lossy(&script))?;
    Ok(super::exit::OK)
}

pub fn man(args: ManArgs) -> anyhow::Result<u8> {
    let cmd = super::command();
    match args.out {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating `{}`", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir)
                .with_context(|| format!("writing the man pages into `{}`", dir.display()))?;
        }
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut page)
                .context("rendering the man page")?;
            super::print(&String::from_utf8_lossy(&page))?;
        }
    }
    Ok(super::exit::OK)
}
