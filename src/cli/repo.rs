//! Where the config repo is and how its revisions are opened, for every command that takes a
//! repo path: found upward from the current directory like git does, revisions opened with
//! errors that say what to do, and a warning when `HEAD` leaves edits out.

use crate::config::SETTINGS_FILE;
use crate::source::{self, KIND_DIRS, Source, SourceError};
use std::path::{Path, PathBuf};

/// The config repo a PATH argument names: PATH itself, unless it is `.` (the default) and
/// the current directory is not a config repo but lies inside one. Then the nearest
/// directory above with `rampart.yaml`, searched up to the top of the git work tree (a config
/// repo never spans two git repositories), as a relative path (`..`, `../..`), so messages
/// and reports read as they would from the repo itself. The one line on stderr says which
/// directory was taken: unlike git's, rampart's diagnostics name files relative to the config
/// repo, and that line says relative to what.
///
/// Used as a `clap` value parser, so every command's PATH is resolved the same way.
pub fn repo_arg(arg: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(arg);
    if path != Path::new(".") {
        return Ok(path);
    }
    let Ok(cwd) = std::env::current_dir() else {
        return Ok(path);
    };
    Ok(match enclosing_repo(&cwd) {
        Some(up) if up > 0 => {
            let found: PathBuf = std::iter::repeat_n("..", up).collect();
            eprintln!("note: using the config repo `{}`", found.display());
            found
        }
        _ => path,
    })
}

/// How many levels above `cwd` the nearest config repo is (0: `cwd` is one).
fn enclosing_repo(cwd: &Path) -> Option<usize> {
    if KIND_DIRS.iter().any(|d| cwd.join(d).is_dir()) {
        return Some(0);
    }
    for (up, dir) in cwd.ancestors().enumerate() {
        if dir.join(SETTINGS_FILE).is_file() {
            return Some(up);
        }
        if dir.join(".git").exists() {
            return None;
        }
    }
    None
}

/// What a command that reads git revisions can do instead when there is no repository.
pub enum Instead {
    /// `plan` compares two directories itself.
    Plan,
    /// `check` needs revisions; `plan` is the way to compare directories.
    Check,
}

/// `rev` of the repository containing `path`, its errors with a hint: what to run when
/// there is no repository, and how to find a revision that is missing.
pub fn git_revision(path: &Path, rev: &str, instead: Instead) -> anyhow::Result<Source> {
    Source::git(path, rev).map_err(|e| {
        let hint = match (&e, instead) {
            (SourceError::NotARepo(_), Instead::Plan) => {
                "to plan the change between two directories instead, give --base-path DIR --head-path DIR"
            }
            (SourceError::NotARepo(_), Instead::Check) => {
                "`check` decides the change between two git revisions; to see the change between two \
                 directories, run `rampart plan --base-path DIR --head-path DIR` (no policy verdicts: \
                 directories have no authors)"
            }
            (SourceError::RevNotFound { .. }, _) => {
                "name a branch, tag or commit of this repository (`git branch -a`, `git log`); a \
                 pull request's base branch may need fetching first (`git fetch origin BRANCH`; \
                 in GitHub Actions, actions/checkout with `fetch-depth: 0`)"
            }
            _ => return anyhow::Error::new(e),
        };
        anyhow::anyhow!("{e}\nhint: {hint}")
    })
}

/// Warn on stderr (never stdout: JSON and markdown stay clean) when the config repo at
/// `path` has edits that `command`, reading `HEAD`, leaves out.
pub fn warn_uncommitted(path: &Path, command: &str) {
    let n = source::uncommitted_config_files(path);
    if n == 0 {
        return;
    }
    let files = if n == 1 {
        "1 config file has"
    } else {
        &format!("{n} config files have")
    };
    // (`path` is the config repo as found: `..` from `tenants/`, so the hint's command works
    // where it is read)
    eprintln!(
        "warning: {files} uncommitted changes that `rampart {command}` does not see: it reads the \
         committed revision `HEAD`\nhint: commit them to include them (`git status` lists them); \
         `rampart validate` reads the work tree as it is, and `rampart plan --base-path DIR \
         --head-path {}` plans it against a checkout of the base in DIR",
        path.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_settings_file_above_is_the_repo() {
        let top = tempfile::tempdir().unwrap();
        let root = top.path();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::create_dir_all(root.join("config/tenants/deep")).unwrap();
        std::fs::write(root.join("config").join(SETTINGS_FILE), "").unwrap();
        assert_eq!(enclosing_repo(&root.join("config/tenants/deep")), Some(2));
        assert_eq!(enclosing_repo(&root.join("config")), Some(0));
        assert_eq!(enclosing_repo(root), None);
        // a directory with kind directories is a config repo without a settings file
        std::fs::create_dir_all(root.join("other/teams")).unwrap();
        assert_eq!(enclosing_repo(&root.join("other")), Some(0));
    }

    #[test]
    fn the_search_stops_at_the_top_of_the_git_work_tree() {
        let top = tempfile::tempdir().unwrap();
        std::fs::write(top.path().join(SETTINGS_FILE), "").unwrap();
        std::fs::create_dir_all(top.path().join("inner/.git")).unwrap();
        std::fs::create_dir_all(top.path().join("inner/sub")).unwrap();
        assert_eq!(enclosing_repo(&top.path().join("inner/sub")), None);
        assert_eq!(enclosing_repo(top.path()), Some(0));
    }
}
