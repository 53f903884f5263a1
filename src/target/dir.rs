//! The `dir:PATH` target: a directory holding exactly the compiled files and a
//! `kustomization.yaml`, its applied commit in the state file beside it
//! (`PATH.rampart-state.json`, see [`crate::apply::dir`]).
//!
//! A whole tree (first apply, a change that reaches every tenant) is written into a sibling
//! and swapped in atomically. A change to some tenants rewrites only their files, each
//! replaced atomically (write + rename), then the listing, then removals, then the state: a
//! crash at any point leaves the state at the previous commit, and the next reconcile writes
//! the same files again (idempotent). Readers that follow the listing see the old set of
//! files or the new one. One lock file (`PATH.rampart-lock`, `flock`) makes read-decide-write a
//! compare-and-swap between processes.

use super::{Applied, Apply, LISTING, Outcome, Record, Rendered, Revision, Target};
use crate::apply::dir::{self as writer, State};
use anyhow::Context;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long an apply waits for another process's lock on the same directory.
const LOCK_WAIT: Duration = Duration::from_secs(60);

pub struct DirTarget {
    out: PathBuf,
    /// The config repo, as the state file names it.
    source: String,
}

impl DirTarget {
    pub fn new(out: &Path, source: &str) -> DirTarget {
        DirTarget {
            out: out.to_owned(),
            source: source.to_owned(),
        }
    }

    fn lock_path(&self) -> PathBuf {
        let mut name = self
            .out
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "out".into());
        name.push(".rampart-lock");
        self.out.with_file_name(name)
    }

    /// Take the directory's lock (released when the file is dropped).
    fn lock(&self) -> anyhow::Result<fs::File> {
        let path = self.lock_path();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).with_context(|| format!("creating `{}`", parent.display()))?;
        }
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening the lock `{}`", path.display()))?;
        let start = Instant::now();
        loop {
            // SAFETY: `f` is an open file descriptor for the duration of the call.
            let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(f);
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(anyhow::anyhow!("locking `{}`: {e}", path.display()));
            }
            if start.elapsed() > LOCK_WAIT {
                anyhow::bail!(
                    "`{}` is locked by another process applying to {} (waited {} s)",
                    path.display(),
                    self.name(),
                    LOCK_WAIT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn read(&self) -> anyhow::Result<Applied> {
        let state = writer::read_state(&self.out)?;
        match state.and_then(|s| s.commit) {
            Some(c) if super::is_commit_id(&c) => Ok(Applied {
                commit: Some(c),
                unknown: false,
            }),
            Some(c) => anyhow::bail!(
                "the state file `{}` records {} as the applied commit, which is not a commit id",
                writer::state_path(&self.out).display(),
                crate::diagnostic::quote(&c)
            ),
            None => Ok(Applied {
                commit: None,
                unknown: writer::holds_files(&self.out)?,
            }),
        }
    }

    /// Rewrite only the files that change, each atomically; then the listing, removals, state.
    fn write_files(&self, rendered: Rendered, state: &State) -> anyhow::Result<Outcome> {
        let Rendered::Files {
            upserts,
            removes,
            added,
        } = rendered
        else {
            unreachable!("only called with files")
        };
        let listing_path = self.out.join(LISTING);
        let old_listing =
            fs::read_to_string(&listing_path).with_context(|| format!("reading `{}`", listing_path.display()))?;
        let old_paths =
            super::listing_paths(&old_listing).with_context(|| format!("reading `{}`", listing_path.display()))?;
        let listing = super::updated_listing(&old_paths, &removes, &added);
        let mut out = Outcome::default();
        for (path, text) in &upserts {
            if put_file(&self.out, path, text)? {
                out.written += 1;
            }
        }
        if listing != old_listing {
            put_file(&self.out, LISTING, &listing)?;
        }
        for path in &removes {
            let file = self.out.join(path);
            match fs::remove_file(&file) {
                Ok(()) => out.removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(anyhow::anyhow!("removing `{}`: {e}", file.display())),
            }
            if let Some(dir) = file.parent().filter(|d| *d != self.out) {
                // (only when empty: another object of the namespace may still be there)
                let _ = fs::remove_dir(dir);
            }
        }
        let state_changed = writer::read_state(&self.out)?.is_none_or(|old| old != *state);
        out.noop = out.written == 0 && out.removed == 0 && listing == old_listing && !state_changed;
        if !out.noop {
            // (each file was synced before its rename: a few files, so no `syncfs` of the
            // whole file system, which waits for every other writer's data too)
            for dir in upserts
                .keys()
                .chain(&removes)
                .filter_map(|p| self.out.join(p).parent().map(Path::to_owned))
                .collect::<std::collections::BTreeSet<_>>()
            {
                if let Ok(d) = fs::File::open(&dir) {
                    let _ = d.sync_all();
                }
            }
            writer::write_state(&self.out, state)?;
        }
        Ok(out)
    }
}

/// Replace one file atomically (a sibling written, then renamed over it); `false` when it
/// already held `text`.
fn put_file(root: &Path, path: &str, text: &str) -> anyhow::Result<bool> {
    let file = root.join(path);
    if fs::read(&file).is_ok_and(|old| old == text.as_bytes()) {
        return Ok(false);
    }
    if let Some(dir) = file.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating `{}`", dir.display()))?;
    }
    let mut tmp = file.clone().into_os_string();
    tmp.push(".rampart-tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = fs::File::create(&tmp).with_context(|| format!("writing `{}`", tmp.display()))?;
    std::io::Write::write_all(&mut f, text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing `{}`", tmp.display()))?;
    fs::rename(&tmp, &file).with_context(|| format!("replacing `{}`", file.display()))?;
    Ok(true)
}

impl Target for DirTarget {
    fn name(&self) -> String {
        format!("dir:{}", self.out.display())
    }

    fn applied(&mut self) -> anyhow::Result<Applied> {
        let _lock = self.lock()?;
        self.read()
    }

    fn apply(&mut self, expected: &Applied, rev: &Revision<'_>, record: &Record) -> anyhow::Result<Apply> {
        let _lock = self.lock()?;
        let now = self.read()?;
        if now != *expected {
            return Ok(Apply::Moved { now });
        }
        let rendered = match super::render(rev) {
            Ok(r) => r,
            Err(diags) => return Ok(Apply::Invalid(diags)),
        };
        let state = |objects| State {
            version: 1,
            commit: Some(record.source.clone()),
            source: self.source.clone(),
            objects,
            workdir: false,
        };
        // a delta needs the listing it updates; without one, the whole tree is written
        let has_listing = self.out.join(LISTING).is_file();
        match rendered {
            Rendered::Files { .. } if has_listing => {
                let objects = {
                    let text = fs::read_to_string(self.out.join(LISTING)).unwrap_or_default();
                    let Rendered::Files { removes, added, .. } = &rendered else {
                        unreachable!()
                    };
                    let old = super::listing_paths(&text).unwrap_or_default();
                    old.len() - old.intersection(removes).count() + added.difference(&old).count()
                };
                Ok(Apply::Done(self.write_files(rendered, &state(objects))?))
            }
            _ => {
                let w = writer::Writer::begin(&self.out)?;
                let paths = std::sync::Mutex::new(Vec::new());
                let put = |path: &str, text: &str| {
                    paths.lock().expect("not poisoned").push(path.to_owned());
                    if path == LISTING {
                        w.put_listing(path, text)
                    } else {
                        w.put(path, text)
                    }
                };
                let objects = match super::stream(rev, &put) {
                    Ok(Ok(n)) => n,
                    Ok(Err(diags)) => {
                        w.abort();
                        return Ok(Apply::Invalid(diags));
                    }
                    Err(e) => {
                        w.abort();
                        return Err(e);
                    }
                };
                let paths = paths.into_inner().expect("not poisoned");
                let written = w.finish(&paths, Some(&state(objects)))?;
                Ok(Apply::Done(Outcome {
                    written: written.added + written.changed,
                    removed: written.removed,
                    noop: written.is_noop(),
                    rendered: None,
                }))
            }
        }
    }
}
