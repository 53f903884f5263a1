//! `rampart completions SHELL` and `rampart man [--out DIR]`: generated from the same
//! `clap` definition the parser uses, so they cannot drift from the flags.

use anyhow::Context;
use std::path::{Path, PathBuf};

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
        Some(dir) => write_pages(cmd, &dir)?,
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

/// `rampart.1` and a page per (visible) subcommand into `dir`, as `clap_mangen::generate_to`
/// names them, but never through a symbolic link (a link planted at `DIR/rampart.1` would
/// have had its target overwritten): each page is opened with `O_NOFOLLOW`.
fn write_pages(cmd: clap::Command, dir: &Path) -> anyhow::Result<()> {
    use anyhow::bail;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(m) if m.file_type().is_symlink() && std::fs::metadata(dir).is_ok_and(|t| t.is_dir()) => {}
        Ok(_) => bail!(
            "`{}` exists and is not a directory: `--out` names the directory the pages go into (choose another, or remove it)",
            dir.display()
        ),
        Err(_) => std::fs::create_dir_all(dir).with_context(|| format!("creating `{}`", dir.display()))?,
    }
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    let mut todo = vec![cmd];
    while let Some(c) = todo.pop() {
        todo.extend(c.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
        pages.push(clap_mangen::Man::new(c));
    }
    for page in pages {
        let path = dir.join(page.get_filename());
        let mut text = Vec::new();
        page.render(&mut text).context("rendering a man page")?;
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path);
        let mut file = match opened {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => bail!(
                "`{}` is a symbolic link: man writes no page through one (remove it, or choose another `--out`)",
                path.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("writing `{}`", path.display())),
        };
        file.write_all(&text)
            .with_context(|| format!("writing `{}`", path.display()))?;
    }
    Ok(())
}
