//! Source: the bytes of a config repo, from a directory or from a git revision (IO).
//!
//! Only the settings file and the kind directories are read. Nothing is ever followed:
//! symlinks, special files, hard links and submodules are refused with a diagnostic, and
//! git blobs are read raw through libgit2 — no checkout, so no filters, hooks or submodule
//! commands ever run. Sizes and counts are checked *before* bytes are read.

use crate::config::{Limits, SETTINGS_FILE};
use crate::diagnostic::{Code, Diagnostic};
use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The directories rampart reads specs from, in the order files are listed.
pub const KIND_DIRS: [&str; 4] = ["teams", "tenants", "plugins", "rollouts"];

/// One file's bytes, by its repo-relative, `/`-separated path.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: String,
    pub bytes: Vec<u8>,
}

/// What was read, and every entry that was refused.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub files: Vec<SourceFile>,
    pub diagnostics: Vec<Diagnostic>,
    /// The commit read, when reading a git revision.
    pub commit: Option<String>,
}

/// Sizes of the blobs a caller already knows, by (path, blob id): see
/// [`Source::read_specs_known`].
pub type Known<'a> = &'a (dyn Fn(&str, git2::Oid) -> Option<u64> + Sync);

/// What [`Source::read_specs_known`] read, and what it admitted without reading.
#[derive(Debug, Default)]
pub struct KnownRead {
    pub snapshot: Snapshot,
    /// Admitted files the caller knows, unread: (path, blob id), in walk order.
    pub known: Vec<(String, git2::Oid)>,
    /// The blob id of every file read, by path (git only).
    pub ids: HashMap<String, git2::Oid>,
}

/// Who made a commit and who approved it, as recorded in the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    pub id: String,
    pub author_name: String,
    pub author_email: String,
    /// Values of `Approved-by:` trailers, in order.
    pub approved_by: Vec<String>,
}

/// Could not run at all (as opposed to a refused entry, which is a diagnostic).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("config repo `{path}` could not be opened: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error(
        "`{0}` holds no config repo: no rampart.yaml and no YAML files under teams/, tenants/, plugins/ or rollouts/"
    )]
    Empty(PathBuf),
    #[error("config repo `{0}` is not a directory")]
    NotADirectory(PathBuf),
    #[error("git repository for `{path}` could not be opened: {message}")]
    GitOpen { path: PathBuf, message: String },
    #[error("`{0}` does not exist")]
    Missing(PathBuf),
    #[error("`{0}` is not inside a git repository (nor is any directory above it)")]
    NotARepo(PathBuf),
    #[error("revision `{rev}` not found in `{repo}`")]
    RevNotFound { rev: String, repo: PathBuf },
    #[error("revision `{rev}` could not be resolved: {message}")]
    GitRev { rev: String, message: String },
    #[error("`{path}` is not a directory in revision `{rev}`")]
    NotInRev { rev: String, path: PathBuf },
    #[error("reading revision `{rev}` failed: {message}")]
    GitRead { rev: String, message: String },
}

/// Where a config repo is read from.
pub enum Source {
    Dir(PathBuf),
    Git {
        repo: git2::Repository,
        tree: git2::Oid,
        commit: git2::Oid,
        rev: String,
        /// The config repo's directory, for messages (the subdirectory of the work tree it
        /// is, not the work tree's root).
        dir: PathBuf,
    },
}

impl Source {
    /// A working directory.
    pub fn dir(path: &Path) -> Result<Source, SourceError> {
        let meta = fs::metadata(path).map_err(|e| SourceError::Open {
            path: path.to_owned(),
            reason: io_reason(&e),
        })?;
        if !meta.is_dir() {
            return Err(SourceError::NotADirectory(path.to_owned()));
        }
        Ok(Source::Dir(path.to_owned()))
    }

    /// A revision of the git repository containing `path`; when `path` is a subdirectory of
    /// the work tree, the config repo is that subdirectory of the revision's tree.
    pub fn git(path: &Path, rev: &str) -> Result<Source, SourceError> {
        let repo = discover(path)?;
        let (tree, commit) = resolve_tree(&repo, path, rev)?;
        Ok(Source::Git {
            repo,
            tree,
            commit,
            rev: rev.to_owned(),
            dir: path.canonicalize().unwrap_or_else(|_| path.to_owned()),
        })
    }

    /// A commit of a (bare) repository at `git_dir`, the config repo being the subdirectory
    /// `subdir` of its tree (`""` for the whole tree): what `serve` reads from its mirror.
    pub fn commit_in(git_dir: &Path, commit: &str, subdir: &str) -> Result<Source, SourceError> {
        let repo = git2::Repository::open_bare(git_dir).map_err(|e| SourceError::GitOpen {
            path: git_dir.to_owned(),
            message: e.message().to_owned(),
        })?;
        let rev_err = |e: git2::Error| SourceError::GitRev {
            rev: commit.to_owned(),
            message: e.message().to_owned(),
        };
        let (tree, commit_id) = {
            let c = git2::Oid::from_str(commit)
                .and_then(|id| repo.find_commit(id))
                .map_err(rev_err)?;
            let mut tree = c.tree().map_err(rev_err)?;
            let sub = subdir.trim_matches('/');
            if !sub.is_empty() {
                let missing = || SourceError::NotInRev {
                    rev: commit.to_owned(),
                    path: PathBuf::from(sub),
                };
                let entry = tree.get_path(Path::new(sub)).map_err(|_| missing())?;
                tree = repo.find_tree(entry.id()).map_err(|_| missing())?;
            }
            (tree.id(), c.id())
        };
        Ok(Source::Git {
            repo,
            tree,
            commit: commit_id,
            rev: commit.to_owned(),
            dir: git_dir.join(subdir.trim_matches('/')),
        })
    }

    /// A second handle on the same revision or directory, for reading it on another thread
    /// (a git repository handle must not be shared between threads).
    pub fn reopen(&self) -> Result<Source, SourceError> {
        match self {
            Source::Dir(p) => Ok(Source::Dir(p.clone())),
            Source::Git {
                repo,
                tree,
                commit,
                rev,
                dir,
            } => Ok(Source::Git {
                repo: git2::Repository::open(repo.path()).map_err(|e| SourceError::GitOpen {
                    path: repo.path().to_owned(),
                    message: e.message().to_owned(),
                })?,
                tree: *tree,
                commit: *commit,
                rev: rev.clone(),
                dir: dir.clone(),
            }),
        }
    }

    /// Read the settings file alone (it holds the limits for everything else). `None` when
    /// the repo has no settings file.
    pub fn read_settings(&self, limits: &Limits) -> Result<Snapshot, SourceError> {
        let mut walk = Walk::new(limits);
        match self {
            Source::Dir(root) => {
                if fs::symlink_metadata(root.join(SETTINGS_FILE)).is_ok_and(|m| m.is_dir()) {
                    walk.refuse(settings_not_a_file());
                } else {
                    walk.dir_file(root, SETTINGS_FILE);
                }
                let pending = std::mem::take(&mut walk.pending);
                read_pending(root, pending, limits, &mut walk.snapshot);
            }
            Source::Git { repo, tree, rev, .. } => {
                let tree = repo.find_tree(*tree).map_err(|e| read_err(rev, e))?;
                if tree.get_name(SETTINGS_FILE).is_some_and(|e| e.filemode() == GIT_TREE) {
                    walk.refuse(settings_not_a_file());
                } else if let Some(entry) = tree.get_name(SETTINGS_FILE) {
                    walk.git_entry(repo, SETTINGS_FILE, entry.id(), entry.filemode(), &mut Vec::new())
                        .map_err(|e| read_err(rev, e))?;
                }
                let blobs = std::mem::take(&mut walk.blobs);
                if !walk.stopped {
                    let files = read_blobs(repo, blobs).map_err(|e| read_err(rev, e))?;
                    walk.snapshot.files.extend(files);
                }
            }
        }
        Ok(walk.finish(self.commit()))
    }

    /// Read every candidate spec file under the kind directories.
    pub fn read_specs(&self, limits: &Limits) -> Result<Snapshot, SourceError> {
        Ok(self.read_dirs(&KIND_DIRS, is_spec_file, limits, None)?.snapshot)
    }

    /// [`Source::read_specs`], except that the blobs `known` knows (a parse cache; it gives
    /// their size) are admitted against the limits exactly as if read, but not read. A
    /// directory has no blob ids: everything is read.
    pub fn read_specs_known(&self, limits: &Limits, known: Known<'_>) -> Result<KnownRead, SourceError> {
        self.read_dirs(&KIND_DIRS, is_spec_file, limits, Some(known))
    }

    /// The text of blobs by id (files [`Source::read_specs_known`] skipped, when a problem
    /// must be shown in them). Empty for a directory.
    pub fn read_known(&self, blobs: Vec<(String, git2::Oid)>) -> Result<Vec<SourceFile>, SourceError> {
        match self {
            Source::Dir(_) => Ok(Vec::new()),
            Source::Git { repo, rev, .. } => read_blobs(repo, blobs).map_err(|e| read_err(rev, e)),
        }
    }

    /// Read the repo's own Cedar policies (`policies/**/*.cedar`).
    pub fn read_policies(&self, limits: &Limits) -> Result<Snapshot, SourceError> {
        Ok(self.read_dirs(&[POLICY_DIR], is_policy_file, limits, None)?.snapshot)
    }

    /// Read the signing keys (`keys/**/*.yaml`).
    pub fn read_keys(&self, limits: &Limits) -> Result<Snapshot, SourceError> {
        Ok(self.read_dirs(&[KEY_DIR], is_yaml_path, limits, None)?.snapshot)
    }

    /// Read single files by repo path (plugin artifacts), with the walk's checks (size,
    /// links, special files); a file that is absent or refused maps to why, in words.
    pub fn read_paths(
        &self,
        paths: &[String],
        limits: &Limits,
    ) -> Result<HashMap<String, Result<Vec<u8>, String>>, SourceError> {
        let mut out = HashMap::new();
        for path in paths {
            if out.contains_key(path) {
                continue;
            }
            let mut walk = Walk::new(limits);
            walk.wanted = |_| true;
            match self {
                Source::Dir(root) => {
                    walk.dir_file(root, path);
                    let pending = std::mem::take(&mut walk.pending);
                    read_pending(root, pending, limits, &mut walk.snapshot);
                }
                Source::Git { repo, tree, rev, .. } => {
                    let tree = repo.find_tree(*tree).map_err(|e| read_err(rev, e))?;
                    if let Ok(entry) = tree.get_path(Path::new(path)) {
                        walk.git_entry(repo, path, entry.id(), entry.filemode(), &mut Vec::new())
                            .map_err(|e| read_err(rev, e))?;
                    }
                    let blobs = std::mem::take(&mut walk.blobs);
                    let files = read_blobs(repo, blobs).map_err(|e| read_err(rev, e))?;
                    walk.snapshot.files.extend(files);
                }
            }
            let snap = walk.finish(None);
            let result = match (snap.files.into_iter().next(), snap.diagnostics.first()) {
                (Some(f), _) => Ok(f.bytes),
                (None, Some(d)) => Err(d.message.clone()),
                (None, None) => Err("not in the repository".to_owned()),
            };
            out.insert(path.clone(), result);
        }
        Ok(out)
    }

    /// The day (since 1970-01-01, UTC) trust freshness is measured at: the revision's commit
    /// time, or for a directory the commit checked out in the git work tree it is in (`None`
    /// outside git). Never the wall clock, so a result does not change by itself.
    pub fn as_of_day(&self) -> Option<i64> {
        let seconds = match self {
            Source::Git { repo, commit, .. } => repo.find_commit(*commit).ok()?.time().seconds(),
            Source::Dir(root) => {
                let repo = git2::Repository::discover(root).ok()?;
                repo.head().ok()?.peel_to_commit().ok()?.time().seconds()
            }
        };
        Some(seconds.div_euclid(86_400))
    }

    /// Read the policy tests (`policies/tests/**/*.yaml`).
    pub fn read_policy_tests(&self, limits: &Limits) -> Result<Snapshot, SourceError> {
        Ok(self.read_dirs(&[POLICY_TEST_DIR], is_yaml_path, limits, None)?.snapshot)
    }

    /// Read every file that changes what rampart trusts or enforces: `rampart.yaml`,
    /// `policies/**` and `keys/**` (their changes are authorised as `File` changes).
    ///
    /// From a git revision, every tree entry counts — hidden ones, links, submodules, files of
    /// any size or name — as its mode and object id (the "bytes" of each entry), so no edit
    /// under a guarded directory can go unseen. From a directory, the files are read with the
    /// usual checks (used by policy tests, which only need the names).
    pub fn read_guarded(&self, limits: &Limits) -> Result<Snapshot, SourceError> {
        if let Source::Git { repo, tree, rev, .. } = self {
            return guarded_entries(repo, *tree, limits).map_err(|e| read_err(rev, e));
        }
        let mut snap = self.read_dirs(&GUARDED_DIRS, |_| true, limits, None)?.snapshot;
        let settings = self.read_settings(limits)?;
        snap.files.extend(settings.files);
        snap.diagnostics.extend(settings.diagnostics);
        snap.files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(snap)
    }

    /// Read the files under `dirs` that `wanted` accepts, with every check of the walk.
    fn read_dirs(
        &self,
        dirs: &[&str],
        wanted: fn(&str) -> bool,
        limits: &Limits,
        known: Option<Known<'_>>,
    ) -> Result<KnownRead, SourceError> {
        let mut walk = Walk::new(limits);
        walk.wanted = wanted;
        walk.known = known;
        let mut ids = HashMap::new();
        match self {
            Source::Dir(root) => {
                for dir in dirs.iter().copied() {
                    walk.dir_tree(root, dir);
                }
                let pending = std::mem::take(&mut walk.pending);
                read_pending(root, pending, limits, &mut walk.snapshot);
            }
            Source::Git { repo, tree, rev, .. } => {
                let tree = repo.find_tree(*tree).map_err(|e| read_err(rev, e))?;
                for dir in dirs.iter().copied() {
                    if let Ok(entry) = tree.get_path(Path::new(dir)) {
                        let mut stack = Vec::new();
                        walk.git_entry(repo, dir, entry.id(), entry.filemode(), &mut stack)
                            .map_err(|e| read_err(rev, e))?;
                        while let Some((path, id, mode)) = stack.pop() {
                            if walk.stopped {
                                break;
                            }
                            walk.git_entry(repo, &path, id, mode, &mut stack)
                                .map_err(|e| read_err(rev, e))?;
                        }
                    }
                }
                let blobs = std::mem::take(&mut walk.blobs);
                if !walk.stopped {
                    ids.extend(blobs.iter().cloned());
                    let files = read_blobs(repo, blobs).map_err(|e| read_err(rev, e))?;
                    walk.snapshot.files.extend(files);
                }
            }
        }
        let mut known = std::mem::take(&mut walk.hits);
        if walk.stopped {
            known.clear();
            ids.clear();
        }
        Ok(KnownRead {
            snapshot: walk.finish(self.commit()),
            known,
            ids,
        })
    }

    /// The author and `Approved-by:` trailers of the revision's commit (`None` for a
    /// directory).
    pub fn commit_info(&self) -> Option<CommitInfo> {
        let Source::Git { repo, commit, .. } = self else {
            return None;
        };
        let commit = repo.find_commit(*commit).ok()?;
        let author = commit.author();
        let message = String::from_utf8_lossy(commit.message_bytes()).into_owned();
        let approved_by = git2::message_trailers_strs(&message)
            .map(|t| {
                t.iter()
                    .filter(|(k, _)| k.eq_ignore_ascii_case("approved-by"))
                    .map(|(_, v)| v.to_owned())
                    .collect()
            })
            .unwrap_or_default();
        Some(CommitInfo {
            id: commit.id().to_string(),
            author_name: String::from_utf8_lossy(author.name_bytes()).into_owned(),
            author_email: String::from_utf8_lossy(author.email_bytes()).into_owned(),
            approved_by,
        })
    }

    /// Where the repo is, for messages: the directory, or `<directory> at <rev>` for a
    /// revision (the config repo's own directory, a subdirectory of the work tree or not).
    pub fn path(&self) -> PathBuf {
        match self {
            Source::Dir(p) => p.clone(),
            Source::Git { dir, rev, .. } => PathBuf::from(format!("{} at {rev}", dir.display())),
        }
    }

    /// The commit id read, for a git revision.
    pub fn commit(&self) -> Option<String> {
        match self {
            Source::Dir(_) => None,
            Source::Git { commit, .. } => Some(commit.to_string()),
        }
    }
}

/// The tree (and commit) of `rev`, narrowed to `path`'s subdirectory of the work tree.
fn resolve_tree(repo: &git2::Repository, path: &Path, rev: &str) -> Result<(git2::Oid, git2::Oid), SourceError> {
    let rev_err = |e: git2::Error| match e.code() {
        git2::ErrorCode::NotFound => SourceError::RevNotFound {
            rev: rev.to_owned(),
            repo: repo.workdir().unwrap_or(repo.path()).to_owned(),
        },
        _ => SourceError::GitRev {
            rev: rev.to_owned(),
            message: git_reason(&e),
        },
    };
    let commit = repo
        .revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(rev_err)?;
    let mut tree = commit.tree().map_err(rev_err)?;
    if let Some(workdir) = repo.workdir() {
        let (abs, wd) = (fs::canonicalize(path), fs::canonicalize(workdir));
        if let (Ok(abs), Ok(wd)) = (abs, wd)
            && let Ok(prefix) = abs.strip_prefix(&wd)
            && !prefix.as_os_str().is_empty()
        {
            let missing = || SourceError::NotInRev {
                rev: rev.to_owned(),
                path: prefix.to_owned(),
            };
            let entry = tree.get_path(prefix).map_err(|_| missing())?;
            tree = repo.find_tree(entry.id()).map_err(|_| missing())?;
        }
    }
    Ok((tree.id(), commit.id()))
}

/// Read admitted blobs on every core: a `Repository` is not `Sync`, so each worker opens
/// its own handle on the same object database.
fn read_blobs(repo: &git2::Repository, blobs: Vec<(String, git2::Oid)>) -> Result<Vec<SourceFile>, git2::Error> {
    use rayon::prelude::*;
    if blobs.len() < 64 {
        return blobs
            .into_iter()
            .map(|(path, id)| {
                Ok(SourceFile {
                    path,
                    bytes: repo.find_blob(id)?.content().to_vec(),
                })
            })
            .collect();
    }
    let git_dir = repo.path().to_owned();
    let chunk = blobs.len().div_ceil(rayon::current_num_threads().max(1) * 4);
    blobs
        .par_chunks(chunk)
        .map(|part| {
            let repo = git2::Repository::open(&git_dir)?;
            part.iter()
                .map(|(path, id)| {
                    Ok(SourceFile {
                        path: path.clone(),
                        bytes: repo.find_blob(*id)?.content().to_vec(),
                    })
                })
                .collect::<Result<Vec<_>, git2::Error>>()
        })
        .collect::<Result<Vec<Vec<_>>, _>>()
        .map(|v| v.into_iter().flatten().collect())
}

/// Every entry under the guarded paths of a tree, as `(path, "mode oid")`.
fn guarded_entries(repo: &git2::Repository, tree: git2::Oid, limits: &Limits) -> Result<Snapshot, git2::Error> {
    let tree = repo.find_tree(tree)?;
    let mut snap = Snapshot::default();
    let mut stack: Vec<(String, git2::Oid, i32)> = Vec::new();
    for top in std::iter::once(SETTINGS_FILE).chain(GUARDED_DIRS) {
        if let Some(e) = tree.get_name(top) {
            stack.push((top.to_owned(), e.id(), e.filemode()));
        }
    }
    let mut entries = 0u64;
    while let Some((path, id, mode)) = stack.pop() {
        entries += 1;
        if entries > limits.max_files {
            return Err(git2::Error::from_str(&format!(
                "more than {} entries under rampart.yaml, policies/ and keys/",
                limits.max_files
            )));
        }
        if path.len() > MAX_PATH {
            return Err(git2::Error::from_str(&format!(
                "a path under policies/ or keys/ is longer than {MAX_PATH} bytes"
            )));
        }
        if mode == GIT_TREE {
            for e in repo.find_tree(id)?.iter() {
                let name = String::from_utf8_lossy(e.name_bytes()).escape_debug().to_string();
                stack.push((format!("{path}/{name}"), e.id(), e.filemode()));
            }
        } else {
            snap.files.push(SourceFile {
                path,
                bytes: format!("{mode:06o} {id}").into_bytes(),
            });
        }
    }
    snap.files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(snap)
}

/// A file name no report could show as it is: a control, bidirectional or invisible
/// character (a tab, a newline, U+202E), or a backslash, which escaping uses — `ev\til` and
/// `ev<TAB>il` would read the same. Refused like a non-UTF-8 name, so every file rampart
/// reads has a name a reviewer sees exactly.
fn odd_name(dir: &str, name: &str) -> Option<Diagnostic> {
    if !name.chars().any(|c| crate::diagnostic::is_hidden(c) || c == '\\') {
        return None;
    }
    Some(
        Diagnostic::at_file(
            Code::BadPath,
            &format!("{dir}/{name}"),
            "file name holds a control, invisible or backslash character; not read",
        )
        .with_hint("rename the file with visible characters only"),
    )
}

fn read_err(rev: &str, e: git2::Error) -> SourceError {
    SourceError::GitRead {
        rev: rev.to_owned(),
        message: e.message().to_owned(),
    }
}

/// Where a config repo keeps its own Cedar policies.
pub const POLICY_DIR: &str = "policies";
/// Where signing keys live.
pub const KEY_DIR: &str = "keys";
/// Where a config repo keeps its policy tests.
pub const POLICY_TEST_DIR: &str = "policies/tests";
/// Directories whose every file is guarded by policy (besides `rampart.yaml`).
pub const GUARDED_DIRS: [&str; 2] = ["policies", "keys"];

fn is_spec_file(rel: &str) -> bool {
    rel == SETTINGS_FILE || is_yaml_path(rel)
}

fn is_yaml_path(rel: &str) -> bool {
    is_yaml(rel.rsplit('/').next().unwrap_or(rel))
}

fn is_policy_file(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    name.ends_with(".cedar") && !name.starts_with('.')
}

/// Whether a file name is one rampart reads as YAML.
pub fn is_yaml(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    (lower.ends_with(".yaml") || lower.ends_with(".yml")) && !name.starts_with('.')
}

struct Walk<'l> {
    limits: &'l Limits,
    snapshot: Snapshot,
    entries: u64,
    bytes: u64,
    stopped: bool,
    /// Files of a directory walk admitted for reading.
    pending: Vec<String>,
    /// Which files (by repo-relative path) are read; everything else is skipped unread.
    wanted: fn(&str) -> bool,
    /// Git blobs admitted for reading: (path, id).
    blobs: Vec<(String, git2::Oid)>,
    /// Blobs the caller knows: admitted by their known size, not read.
    known: Option<Known<'l>>,
    /// Known blobs admitted: (path, id).
    hits: Vec<(String, git2::Oid)>,
}

/// Longest path read from a git tree (the Linux `PATH_MAX`): deeper trees are refused, so a
/// crafted tree cannot make path building quadratic.
const MAX_PATH: usize = 4096;

const GIT_TREE: i32 = 0o040000;
const GIT_BLOB: i32 = 0o100644;
const GIT_EXEC: i32 = 0o100755;
const GIT_LINK: i32 = 0o120000;
const GIT_COMMIT: i32 = 0o160000;

impl<'l> Walk<'l> {
    fn new(limits: &'l Limits) -> Self {
        Walk {
            limits,
            snapshot: Snapshot::default(),
            entries: 0,
            bytes: 0,
            stopped: false,
            pending: Vec::new(),
            wanted: is_spec_file,
            blobs: Vec::new(),
            known: None,
            hits: Vec::new(),
        }
    }

    fn finish(mut self, commit: Option<String>) -> Snapshot {
        self.snapshot.commit = commit;
        debug_assert!(self.pending.is_empty(), "read_pending not called");
        debug_assert!(self.blobs.is_empty(), "read_blobs not called");
        if self.stopped {
            // a cap stopped the walk: validate nothing rather than an arbitrary part
            self.snapshot.files.clear();
        }
        self.snapshot.files.sort_by(|a, b| a.path.cmp(&b.path));
        self.snapshot
    }

    fn refuse(&mut self, d: Diagnostic) {
        self.snapshot.diagnostics.push(d);
    }

    /// Count one walked entry; false (and one diagnostic) once the cap is passed.
    fn count_entry(&mut self) -> bool {
        if self.stopped {
            return false;
        }
        self.entries += 1;
        if self.entries > self.limits.max_files {
            self.stopped = true;
            let max = self.limits.max_files;
            self.refuse(
                Diagnostic::new(
                    Code::TooManyFiles,
                    crate::diagnostic::Anchor::None,
                    format!("more than {max} entries under the kind directories; stopped reading"),
                )
                .with_hint("split the config repo, or raise `spec.limits.maxFiles` in rampart.yaml (ceiling 1000000)"),
            );
            return false;
        }
        true
    }

    /// Check a file's size against the per-file and whole-repo caps before reading it.
    fn admit_size(&mut self, path: &str, size: u64) -> bool {
        if size > self.limits.max_file_bytes {
            let max = self.limits.max_file_bytes;
            self.refuse(
                Diagnostic::at_file(
                    Code::FileTooLarge,
                    path,
                    format!("file is {size} bytes, above the limit of {max}; not read"),
                )
                .with_hint("split it into smaller files, or raise `spec.limits.maxFileBytes` in rampart.yaml"),
            );
            return false;
        }
        if self.bytes + size > self.limits.max_total_bytes {
            let max = self.limits.max_total_bytes;
            self.stopped = true;
            self.refuse(
                Diagnostic::at_file(
                    Code::RepoTooLarge,
                    path,
                    format!("reading this file would pass the repository limit of {max} bytes; stopped reading"),
                )
                .with_hint("raise `spec.limits.maxTotalBytes` in rampart.yaml"),
            );
            return false;
        }
        self.bytes += size;
        true
    }

    fn dir_file(&mut self, root: &Path, rel: &str) {
        let full = root.join(rel);
        match fs::symlink_metadata(&full) {
            Ok(meta) => self.dir_entry(rel, meta.file_type(), &mut Vec::new()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => self.refuse(Diagnostic::at_file(
                Code::ReadFailed,
                rel,
                format!("could not inspect: {}", io_reason(&e)),
            )),
        }
    }

    /// Walk one kind directory iteratively (no recursion: depth is attacker-controlled).
    fn dir_tree(&mut self, root: &Path, top: &str) {
        // a nested top (`policies/tests`) is walked only through real directories
        let mut parent = String::new();
        for part in top.split('/').take(top.matches('/').count()) {
            parent = if parent.is_empty() {
                part.to_owned()
            } else {
                format!("{parent}/{part}")
            };
            match fs::symlink_metadata(root.join(&parent)) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => return self.refuse(symlink_refused(&parent)),
                _ => return,
            }
        }
        let meta = match fs::symlink_metadata(root.join(top)) {
            Ok(m) => m,
            Err(_) => return, // a kind directory that does not exist is fine
        };
        let mut stack: Vec<String> = Vec::new();
        self.dir_entry(top, meta.file_type(), &mut stack);
        while let Some(dir) = stack.pop() {
            if self.stopped {
                return;
            }
            let iter = match fs::read_dir(root.join(&dir)) {
                Ok(it) => it,
                Err(e) => {
                    self.refuse(Diagnostic::at_file(
                        Code::ReadFailed,
                        &dir,
                        format!("directory could not be listed: {}", io_reason(&e)),
                    ));
                    continue;
                }
            };
            let mut names = Vec::new();
            for entry in iter {
                if !self.count_entry() {
                    return;
                }
                match entry {
                    // the type comes from the directory listing itself: no syscall per entry
                    Ok(entry) => match entry
                        .file_type()
                        .or_else(|_| fs::symlink_metadata(entry.path()).map(|m| m.file_type()))
                    {
                        Ok(ft) => names.push((entry.file_name(), ft)),
                        Err(e) => self.refuse(Diagnostic::at_file(
                            Code::ReadFailed,
                            &format!("{dir}/{}", entry.file_name().to_string_lossy()),
                            format!("could not inspect: {}", io_reason(&e)),
                        )),
                    },
                    Err(e) => self.refuse(Diagnostic::at_file(
                        Code::ReadFailed,
                        &dir,
                        format!("directory could not be listed: {}", io_reason(&e)),
                    )),
                }
            }
            if names.iter().any(|(n, _)| n == ".git") {
                // a nested repository: a submodule checkout, refused as in `--rev` mode
                self.refuse(
                    Diagnostic::at_file(
                        Code::NotRegularFile,
                        &dir,
                        "a nested git repository (submodule); not read",
                    )
                    .with_hint("commit the files into the config repo itself"),
                );
                continue;
            }
            names.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, ft) in names.into_iter().rev() {
                let Some(name) = name.to_str() else {
                    self.refuse(
                        Diagnostic::at_file(
                            Code::BadPath,
                            &format!("{dir}/{}", name.to_string_lossy()),
                            "file name is not valid UTF-8; not read",
                        )
                        .with_hint("rename the file using UTF-8"),
                    );
                    continue;
                };
                if let Some(d) = odd_name(&dir, name) {
                    self.refuse(d);
                    continue;
                }
                let rel = format!("{dir}/{name}");
                self.dir_entry(&rel, ft, &mut stack);
            }
        }
    }

    /// Classify one walked entry; regular YAML files are queued for [`read_pending`], which
    /// checks links, size and type again on the opened file.
    fn dir_entry(&mut self, rel: &str, ft: fs::FileType, stack: &mut Vec<String>) {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        if ft.is_symlink() {
            self.refuse(symlink_refused(rel));
        } else if ft.is_dir() {
            if !name.starts_with('.') {
                stack.push(rel.to_owned());
            }
        } else if !(self.wanted)(rel) {
            // not ours: READMEs, policies, keys…
        } else if !ft.is_file() {
            self.refuse(not_regular(rel));
        } else {
            self.pending.push(rel.to_owned());
        }
    }

    /// One git tree entry: subtrees are pushed on `stack`, blobs are read.
    fn git_entry(
        &mut self,
        repo: &git2::Repository,
        rel: &str,
        id: git2::Oid,
        mode: i32,
        stack: &mut Vec<(String, git2::Oid, i32)>,
    ) -> Result<(), git2::Error> {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        match mode {
            GIT_TREE => {
                if name.starts_with('.') {
                    return Ok(());
                }
                if rel.len() > MAX_PATH {
                    self.refuse(
                        Diagnostic::at_file(
                            Code::BadPath,
                            &rel[..rel.floor_char_boundary(200)],
                            format!("path longer than {MAX_PATH} bytes; not read"),
                        )
                        .with_hint("shorten the directory names"),
                    );
                    return Ok(());
                }
                let tree = repo.find_tree(id)?;
                let mut children = Vec::new();
                for entry in tree.iter() {
                    if !self.count_entry() {
                        return Ok(());
                    }
                    let Ok(child) = std::str::from_utf8(entry.name_bytes()) else {
                        self.refuse(
                            Diagnostic::at_file(
                                Code::BadPath,
                                &format!("{rel}/{}", String::from_utf8_lossy(entry.name_bytes())),
                                "file name is not valid UTF-8; not read",
                            )
                            .with_hint("rename the file using UTF-8"),
                        );
                        continue;
                    };
                    if let Some(d) = odd_name(rel, child) {
                        self.refuse(d);
                        continue;
                    }
                    children.push((format!("{rel}/{child}"), entry.id(), entry.filemode()));
                }
                children.reverse();
                stack.extend(children);
            }
            GIT_LINK => self.refuse(symlink_refused(rel)),
            GIT_COMMIT => self.refuse(
                Diagnostic::at_file(Code::NotRegularFile, rel, "submodules are not supported; not read")
                    .with_hint("commit the files into the config repo itself"),
            ),
            GIT_BLOB | GIT_EXEC if (self.wanted)(rel) => {
                if let Some(size) = self.known.and_then(|k| k(rel, id)) {
                    if self.admit_size(rel, size) {
                        self.hits.push((rel.to_owned(), id));
                    }
                    return Ok(());
                }
                let (size, _) = repo.odb()?.read_header(id)?;
                if self.admit_size(rel, size as u64) {
                    // read later, in parallel (inflating 10k blobs one by one is the slow part)
                    self.blobs.push((rel.to_owned(), id));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Read the queued files of a directory walk, in parallel (opening thousands of small files
/// is syscall-bound). Each file is opened without following links and without blocking, and
/// its type, link count and size are checked on the open file before a byte is read; the
/// repository-wide byte budget is reserved before reading too.
fn read_pending(root: &Path, pending: Vec<String>, limits: &Limits, snapshot: &mut Snapshot) {
    use rayon::prelude::*;
    use std::sync::atomic::AtomicU64;
    let total = AtomicU64::new(0);
    let real_root = fs::canonicalize(root).ok();
    let results: Vec<(String, Result<Vec<u8>, ReadFailure>)> = pending
        .into_par_iter()
        .map(|rel| {
            let r = read_nofollow(&root.join(&rel), real_root.as_deref(), limits, &total);
            (rel, r)
        })
        .collect();
    let mut repo_full = false;
    for (rel, r) in results {
        let d = match r {
            Ok(bytes) => {
                snapshot.files.push(SourceFile { path: rel, bytes });
                continue;
            }
            Err(ReadFailure::Io(e)) => {
                Diagnostic::at_file(Code::ReadFailed, &rel, format!("could not read: {}", io_reason(&e)))
            }
            Err(ReadFailure::Changed) => Diagnostic::at_file(
                Code::NotRegularFile,
                &rel,
                "file changed into a link while it was read; not read",
            )
            .with_hint("do not modify the config repo while rampart reads it"),
            Err(ReadFailure::NotRegular) => not_regular(&rel),
            Err(ReadFailure::Escaped) => Diagnostic::at_file(
                Code::Symlink,
                &rel,
                "the opened file is outside the repository root (a directory was swapped for a link while reading); not read",
            )
            .with_hint("do not modify the config repo while rampart reads it"),
            Err(ReadFailure::HardLinks(n)) => Diagnostic::at_file(
                Code::NotRegularFile,
                &rel,
                format!("file has {n} hard links; not read, its contents may belong to another file"),
            )
            .with_hint("replace the hard link with a copy of the file"),
            Err(ReadFailure::TooLarge(size)) => Diagnostic::at_file(
                Code::FileTooLarge,
                &rel,
                format!(
                    "file is {size} bytes, above the limit of {}; not read",
                    limits.max_file_bytes
                ),
            )
            .with_hint("split it into smaller files, or raise `spec.limits.maxFileBytes` in rampart.yaml"),
            Err(ReadFailure::Grew) => Diagnostic::at_file(
                Code::FileTooLarge,
                &rel,
                format!(
                    "file grew past the limit of {} bytes while it was read; not read",
                    limits.max_file_bytes
                ),
            ),
            Err(ReadFailure::RepoFull) if !repo_full => {
                repo_full = true;
                Diagnostic::new(
                    Code::RepoTooLarge,
                    crate::diagnostic::Anchor::None,
                    format!(
                        "the files pass the repository limit of {} bytes; nothing was validated",
                        limits.max_total_bytes
                    ),
                )
                .with_hint("raise `spec.limits.maxTotalBytes` in rampart.yaml")
            }
            Err(ReadFailure::RepoFull) => continue,
        };
        snapshot.diagnostics.push(d);
    }
    if repo_full {
        // which files fit depends on thread timing: validate none rather than a random part
        snapshot.files.clear();
    }
}

/// A `rampart.yaml` that is a directory: silently ignored, the repo would run on default
/// settings (limits, approvals) without anyone noticing.
fn settings_not_a_file() -> Diagnostic {
    Diagnostic::at_file(
        Code::NotRegularFile,
        SETTINGS_FILE,
        "is a directory, not the settings file; not read",
    )
    .with_hint(format!(
        "`{SETTINGS_FILE}` must be a plain file at the repo's root; rename the directory"
    ))
}

fn not_regular(rel: &str) -> Diagnostic {
    Diagnostic::at_file(
        Code::NotRegularFile,
        rel,
        "not a regular file (a FIFO, socket or device); not read",
    )
    .with_hint("config files must be plain files committed to the repository")
}

fn symlink_refused(rel: &str) -> Diagnostic {
    Diagnostic::at_file(
        Code::Symlink,
        rel,
        "symbolic link refused; links are never followed, since they could escape the repository root",
    )
    .with_hint("replace the link with the file it points to")
}

enum ReadFailure {
    Io(std::io::Error),
    Changed,
    NotRegular,
    Escaped,
    HardLinks(u64),
    TooLarge(u64),
    Grew,
    RepoFull,
}

/// Open without following a final symlink and without blocking on a FIFO, check the opened
/// file (regular, one link, small enough, room left in the repository budget), then read at
/// most `max_file_bytes + 1` bytes.
fn read_nofollow(
    path: &Path,
    real_root: Option<&Path>,
    limits: &Limits,
    total: &std::sync::atomic::AtomicU64,
) -> Result<Vec<u8>, ReadFailure> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                ReadFailure::Changed
            } else {
                ReadFailure::Io(e)
            }
        })?;
    // O_NOFOLLOW guards the last component only: ask the kernel where the opened file really
    // is, so a parent directory swapped for a link cannot lead outside the repo
    if let (Some(root), Ok(real)) = (real_root, fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())))
        && !real.starts_with(root)
    {
        return Err(ReadFailure::Escaped);
    }
    let meta = file.metadata().map_err(ReadFailure::Io)?;
    if !meta.is_file() {
        return Err(ReadFailure::NotRegular);
    }
    if meta.nlink() > 1 {
        return Err(ReadFailure::HardLinks(meta.nlink()));
    }
    let max = limits.max_file_bytes;
    if meta.len() > max {
        return Err(ReadFailure::TooLarge(meta.len()));
    }
    let before = total.fetch_add(meta.len(), std::sync::atomic::Ordering::Relaxed);
    if before + meta.len() > limits.max_total_bytes {
        return Err(ReadFailure::RepoFull);
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1).read_to_end(&mut bytes).map_err(ReadFailure::Io)?;
    if bytes.len() as u64 > max {
        return Err(ReadFailure::Grew);
    }
    Ok(bytes)
}

/// An IO error's reason without the path (the diagnostic already names the file).
fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_lowercase(),
        None => s.to_lowercase(),
    }
}

/// The git repository containing `path`, with errors that say what is wrong in plain words
/// (libgit2's own text names its internals: `class=Os (2); code=NotFound (-3)`).
pub fn discover(path: &Path) -> Result<git2::Repository, SourceError> {
    if fs::symlink_metadata(path).is_err() {
        return Err(SourceError::Missing(path.to_owned()));
    }
    git2::Repository::discover(path).map_err(|e| match e.code() {
        git2::ErrorCode::NotFound => SourceError::NotARepo(path.to_owned()),
        _ => SourceError::GitOpen {
            path: path.to_owned(),
            message: git_reason(&e),
        },
    })
}

/// A libgit2 error as a sentence: the message alone for the codes a user can act on.
fn git_reason(e: &git2::Error) -> String {
    match e.code() {
        git2::ErrorCode::UnbornBranch => "the branch has no commit yet".to_owned(),
        git2::ErrorCode::Ambiguous => "it names more than one object (give more of the commit id)".to_owned(),
        git2::ErrorCode::InvalidSpec => "it is not a valid revision".to_owned(),
        git2::ErrorCode::Locked => "the repository is locked by another git process".to_owned(),
        _ => e.message().to_owned(),
    }
}

/// How many config files (the settings file and everything under the kind, policy and key
/// directories) of the config repo at `path` differ in the work tree from `HEAD`, or are
/// new and not ignored: what a command reading `HEAD` does not see. `0` outside a work tree.
pub fn uncommitted_config_files(path: &Path) -> usize {
    let Ok(repo) = git2::Repository::discover(path) else {
        return 0;
    };
    if repo.is_bare() {
        return 0;
    }
    let prefix = workdir_prefix(path);
    let mut opts = git2::StatusOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false)
        .exclude_submodules(true);
    let under = |p: &str| {
        if prefix.is_empty() {
            p.to_owned()
        } else {
            format!("{prefix}/{p}")
        }
    };
    opts.pathspec(under(SETTINGS_FILE));
    for dir in KIND_DIRS.iter().chain(GUARDED_DIRS.iter()) {
        opts.pathspec(under(dir));
    }
    repo.statuses(Some(&mut opts)).map_or(0, |s| {
        s.iter()
            .filter(|e| !e.status().is_empty() && !e.status().is_ignored())
            .count()
    })
}

/// Where `path` sits inside its git work tree (`""` at the top or outside any repo), so
/// reports can name files as GitHub knows them.
pub fn workdir_prefix(path: &Path) -> String {
    let Ok(repo) = git2::Repository::discover(path) else {
        return String::new();
    };
    let Some(workdir) = repo.workdir() else {
        return String::new();
    };
    match (fs::canonicalize(path), fs::canonicalize(workdir)) {
        (Ok(abs), Ok(wd)) => abs
            .strip_prefix(&wd)
            .ok()
            .and_then(|p| p.to_str())
            .unwrap_or_default()
            .to_owned(),
        _ => String::new(),
    }
}
