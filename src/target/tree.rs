//! The directory tree of the `dir` target (IO): a directory holding exactly the desired
//! files, replaced atomically, with a small state file beside it recording what was applied.
//! (`dir.rs` is the target itself; `apply --target dir:` and `serve` both write through this.)
//!
//! The new tree is written into a temporary sibling directory (and flushed to disk with one
//! `syncfs`), then swapped with the old one in one `renameat2(RENAME_EXCHANGE)` — readers see
//! the old tree or the new one, never a mix — and the old tree is removed. Files of objects
//! no longer desired are gone because the new tree never had them. When the desired files
//! equal what is there, nothing is written at all.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// What was recorded by the last apply to a directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub version: u32,
    /// The commit applied, when a git revision was applied.
    pub commit: Option<String>,
    /// The config repo applied (as given on the command line).
    pub source: String,
    pub objects: usize,
    /// The tree came from a working directory (not policy-checked), applied over `commit`,
    /// which stays the baseline the next revision is authorised from.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub workdir: bool,
}

impl State {
    /// Whether recording `new` over `self` would change nothing worth a write: equal, or a
    /// working-directory apply that keeps the same baseline and object count (a no-op apply
    /// leaves the state untouched).
    pub fn same_as(&self, new: &State) -> bool {
        self == new || (new.workdir && self.commit == new.commit && self.objects == new.objects)
    }
}

/// Whether `out` exists and holds any file (an output directory written before, perhaps by
/// an older rampart or by hand, whose state file is gone).
pub fn holds_files(out: &Path) -> anyhow::Result<bool> {
    match fs::read_dir(out) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(ctx("listing", out, e)),
    }
}

/// How the directory changed. The counts are of objects; the listing (`kustomization.yaml`)
/// is not one of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Written {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    pub unchanged: usize,
    /// The listing is new or differs from the one there.
    pub listing_changed: bool,
}

impl Written {
    pub fn is_noop(&self) -> bool {
        self.added == 0 && self.changed == 0 && self.removed == 0 && !self.listing_changed
    }
}

/// The state file of an output directory: `<dir>.rampart-state.json`, beside it (inside, a
/// JSON file could be taken for a manifest).
pub fn state_path(out: &Path) -> PathBuf {
    let mut name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "out".into());
    name.push(".rampart-state.json");
    out.with_file_name(name)
}

pub fn read_state(out: &Path) -> anyhow::Result<Option<State>> {
    let path = state_path(out);
    match fs::read(&path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|e| {
            anyhow::anyhow!("state file `{}` is not rampart's: {e}", path.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("reading state file `{}`: {e}", path.display())),
    }
}

/// How many files differ between `out` and `want` (relative path → content): missing,
/// extra or changed. Used to check that a target holds what a claimed baseline compiles to.
pub fn differences(out: &Path, want: &std::collections::BTreeMap<String, String>) -> anyhow::Result<usize> {
    let have = if out.exists() { current(out)? } else { BTreeSet::new() };
    let mut n = have.iter().filter(|p| !want.contains_key(p.as_str())).count();
    for (path, text) in want {
        if !have.contains(path) {
            n += 1;
            continue;
        }
        let file = out.join(path);
        let bytes = fs::read(&file).map_err(|e| ctx("reading", &file, e))?;
        if bytes != text.as_bytes() {
            n += 1;
        }
    }
    Ok(n)
}

/// The files now in `out` (relative paths), listed without following links.
fn current(out: &Path) -> anyhow::Result<BTreeSet<String>> {
    let mut files = BTreeSet::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = out.join(&rel);
        for entry in fs::read_dir(&dir).map_err(|e| anyhow::anyhow!("listing `{}`: {e}", dir.display()))? {
            let entry = entry?;
            let child = rel.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                stack.push(child);
            } else {
                // a link or special file in the output is not ours: the new tree replaces it
                files.insert(String::from_utf8_lossy(child.as_os_str().as_bytes()).into_owned());
            }
        }
    }
    Ok(files)
}

fn ctx(what: &str, p: &Path, e: std::io::Error) -> anyhow::Error {
    anyhow::anyhow!("{what} `{}`: {e}", p.display())
}

/// A new tree being written next to `out`; [`Writer::finish`] swaps it in (or throws it
/// away when it equals what is there). Files may be put from several threads.
pub struct Writer {
    out: PathBuf,
    tmp: PathBuf,
    parent: PathBuf,
    exists: bool,
    added: AtomicUsize,
    changed: AtomicUsize,
    unchanged: AtomicUsize,
    listing_changed: AtomicBool,
    dirs: Mutex<BTreeSet<PathBuf>>,
}

/// A file of the new tree against the file at its path in `out`.
enum Compared {
    New,
    Changed,
    Same,
}

impl Writer {
    /// Start a new tree for `out`. Refuses an `out` that exists and is not a directory.
    pub fn begin(out: &Path) -> anyhow::Result<Writer> {
        match fs::symlink_metadata(out) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => anyhow::bail!("output `{}` exists and is not a directory", out.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ctx("inspecting output", out, e)),
        }
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).map_err(|e| ctx("creating", &parent, e))?;
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = parent.join(format!(".{name}.rampart-{}", std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| ctx("removing stale", &tmp, e))?;
        }
        // trees left by a process that died while writing (its pid no longer runs)
        let prefix = format!(".{name}.rampart-");
        for entry in fs::read_dir(&parent).map_err(|e| ctx("listing", &parent, e))?.flatten() {
            let file = entry.file_name();
            let Some(pid) = file.to_str().and_then(|f| f.strip_prefix(&prefix)) else {
                continue;
            };
            if pid
                .parse::<u32>()
                .is_ok_and(|p| !Path::new(&format!("/proc/{p}")).exists())
            {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        fs::create_dir(&tmp).map_err(|e| ctx("creating", &tmp, e))?;
        Ok(Writer {
            exists: out.is_dir(),
            out: out.to_owned(),
            tmp,
            parent,
            added: AtomicUsize::new(0),
            changed: AtomicUsize::new(0),
            unchanged: AtomicUsize::new(0),
            listing_changed: AtomicBool::new(false),
            dirs: Mutex::new(BTreeSet::new()),
        })
    }

    /// Write the file of one object (`path` is relative, `/`-separated, made by rampart).
    pub fn put(&self, path: &str, text: &str) -> anyhow::Result<()> {
        let counter = match self.write(path, text)? {
            Compared::Same => &self.unchanged,
            Compared::Changed => &self.changed,
            Compared::New => &self.added,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Write the listing of the objects (`kustomization.yaml`): compared like an object, so a
    /// new listing is still swapped in, but not counted as one.
    pub fn put_listing(&self, path: &str, text: &str) -> anyhow::Result<()> {
        if !matches!(self.write(path, text)?, Compared::Same) {
            self.listing_changed.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    fn write(&self, path: &str, text: &str) -> anyhow::Result<Compared> {
        let target = self.tmp.join(path);
        if let Some(d) = target.parent() {
            // created under the lock: another thread must not write into it before it exists
            let mut dirs = self.dirs.lock().expect("not poisoned");
            if !dirs.contains(d) {
                fs::create_dir_all(d).map_err(|e| ctx("creating", d, e))?;
                dirs.insert(d.to_owned());
            }
        }
        fs::write(&target, text.as_bytes()).map_err(|e| ctx("writing", &target, e))?;
        Ok(match self.exists.then(|| fs::read(self.out.join(path))) {
            Some(Ok(old)) if old == text.as_bytes() => Compared::Same,
            Some(Ok(_)) => Compared::Changed,
            _ => Compared::New,
        })
    }

    /// Throw the new tree away.
    pub fn abort(self) {
        let _ = fs::remove_dir_all(&self.tmp);
    }

    /// Swap the new tree in — unless it holds exactly what `out` holds and the state is the
    /// same, in which case nothing is touched — and record `state` beside it. `paths` are all
    /// the files that were put.
    pub fn finish(self, paths: &[String], state: Option<&State>) -> anyhow::Result<Written> {
        let mut w = Written {
            added: self.added.load(Ordering::Relaxed),
            changed: self.changed.load(Ordering::Relaxed),
            unchanged: self.unchanged.load(Ordering::Relaxed),
            removed: 0,
            listing_changed: self.listing_changed.load(Ordering::Relaxed),
        };
        if self.exists {
            let wanted: BTreeSet<&str> = paths.iter().map(String::as_str).collect();
            w.removed = current(&self.out)?
                .iter()
                .filter(|p| !wanted.contains(p.as_str()))
                .count();
        }
        let same_state = state.is_none_or(|s| read_state(&self.out).ok().flatten().is_some_and(|old| old.same_as(s)));
        if self.exists && w.is_noop() && same_state {
            self.abort();
            return Ok(w);
        }
        // one flush of the file system instead of an fsync per file (135k files on M)
        sync_fs(&self.tmp).map_err(|e| ctx("syncing", &self.tmp, e))?;
        if self.exists {
            if let Err(e) = exchange(&self.tmp, &self.out) {
                let err = ctx("replacing", &self.out, e);
                self.abort();
                return Err(err);
            }
            // the temporary path now holds the old tree
            fs::remove_dir_all(&self.tmp).map_err(|e| ctx("removing the previous tree at", &self.tmp, e))?;
        } else {
            fs::rename(&self.tmp, &self.out).map_err(|e| ctx("moving the new tree to", &self.out, e))?;
        }
        if let Some(state) = state {
            write_state(&self.out, state)?;
        }
        fs::File::open(&self.parent)
            .and_then(|f| f.sync_all())
            .map_err(|e| ctx("syncing", &self.parent, e))?;
        Ok(w)
    }
}

/// Flush everything written on the file system holding `path` (Linux `syncfs`).
pub fn sync_fs(path: &Path) -> std::io::Result<()> {
    let f = fs::File::open(path)?;
    // SAFETY: `f` is an open file descriptor for the duration of the call.
    let rc = unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f)) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

pub fn write_state(out: &Path, state: &State) -> anyhow::Result<()> {
    let path = state_path(out);
    let tmp = path.with_extension("json.tmp");
    let mut text = serde_json::to_string_pretty(state)?;
    text.push('\n');
    let mut f = fs::File::create(&tmp).map_err(|e| anyhow::anyhow!("writing `{}`: {e}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, &path).map_err(|e| anyhow::anyhow!("writing `{}`: {e}", path.display()))?;
    Ok(())
}

/// Swap two directories in one step (Linux `renameat2(RENAME_EXCHANGE)`).
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    let ca = CString::new(a.as_os_str().as_bytes())?;
    let cb = CString::new(b.as_os_str().as_bytes())?;
    // The raw system call, not libc's `renameat2` wrapper: musl (the static release binaries)
    // has no such function, and the link fails.
    // SAFETY: both paths are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
