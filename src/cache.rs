//! The parse cache: what loading and checking one file produced, keyed by its path and git
//! blob id, so reading a revision re-parses only the blobs it has not seen before (`plan`
//! and `check` read two revisions that share almost every blob).
//!
//! Only files with no problem are kept: their typed documents are all a later stage needs
//! (a file with problems is parsed again, for its spans and snippets). An entry is valid only
//! for the same path (the kind directory is checked against it), the same limits and the
//! same rampart build, which name the cache file; the blob id names the content.
//!
//! On disk: `<git dir>/rampart/parse-cache-<key>.jsonl`, one JSON object per line, appended
//! with one `write` per run. A line that does not parse (a write cut short) is skipped, so a
//! damaged cache costs time, never correctness. When most lines are no longer used it is
//! rewritten (temp file + rename) with the used ones. `RAMPART_CACHE=off` disables it (read
//! by `cli`).
//! Nothing here is trusted beyond the repository's own `.git`: whoever can write there can
//! rewrite the repository itself.

use crate::config::Limits;
use crate::spec::{
    EnabledPlugin, Metadata, Object, Origin, PluginConfig, PluginSpec, RolloutSpec, TeamSpec, TenantSpec,
};
use crate::validate::{FileOutcome, Parsed};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Bumped whenever the line format changes.
const FORMAT: u32 = 1;

/// A cache file larger than this is ignored and replaced.
const MAX_BYTES: u64 = 4 << 30;

/// The parse caches of one git repository (one table per limits).
pub struct ParseCache {
    dir: PathBuf,
    build: String,
    tables: Mutex<HashMap<String, Arc<Table>>>,
    /// Trees this build found valid (see [`ParseCache::known_valid`]), loaded on first use.
    valid: std::sync::OnceLock<ValidTrees>,
}

/// `<git dir>/rampart/valid-trees-<build>.txt`: the config trees this build validated with no
/// error, one `TREE DAY` per line. A tree id names the whole config (settings and limits
/// included); the day is the commit's (trust freshness and R639 are measured at it), `-` when
/// none.
struct ValidTrees {
    file: PathBuf,
    known: foldhash::HashSet<(Key, Option<i64>)>,
    fresh: Mutex<Vec<(git2::Oid, Option<i64>)>>,
}

/// Valid trees remembered at most (the file is cut to the newest half past this).
const MAX_VALID_TREES: usize = 4096;

/// The entries valid for one set of limits.
pub struct Table {
    file: PathBuf,
    /// By blob id, then path (a blob id is hashed without allocating a key).
    entries: Entries,
    /// Entries learnt by this run (the second revision of a `plan` uses them too).
    fresh: Mutex<Entries>,
    /// Entries learnt by this process and already written to the file: a long-running
    /// process (`serve`) keeps finding them after a flush.
    flushed: Mutex<Entries>,
    /// The file had lines that do not parse, or could not be read: rewrite it.
    damaged: AtomicBool,
    /// There was no file yet (a new build or new limits): the caches of other builds are
    /// removed when this one is written.
    new_file: AtomicBool,
}

/// One line, `BLOB SIZE DOCS PATH\tOBJECTS\n`: the blob id (hex), the file's size, its
/// document count, its path as a JSON string, a tab, and its typed documents as a JSON array.
/// Only the part before the tab is read when the cache is opened; the documents are parsed
/// when first needed (in parallel, once per run).
struct Entry {
    size: u64,
    doc_count: usize,
    line: Line,
    /// Byte offset of the documents in the line.
    body: usize,
    /// The typed documents, shared by every revision that has this blob at this path.
    objects: std::sync::OnceLock<Option<Vec<Parsed>>>,
    used: AtomicBool,
}

/// A line's text: a range of the cache file as read (not copied line by line), or a line
/// this run made.
enum Line {
    Read {
        file: Arc<Vec<u8>>,
        start: usize,
        end: usize,
    },
    Made(String),
}

impl Line {
    fn text(&self) -> &str {
        match self {
            // (checked when the line was read)
            Line::Read { file, start, end } => file
                .get(*start..*end)
                .and_then(|l| std::str::from_utf8(l).ok())
                .unwrap_or_default(),
            Line::Made(s) => s,
        }
    }
}

/// A blob id as a map key (comparing `git2::Oid`s calls into libgit2).
type Key = [u8; 20];

fn key_of(blob: git2::Oid) -> Key {
    let mut k = [0; 20];
    let b = blob.as_bytes();
    let n = b.len().min(20);
    k[..n].copy_from_slice(&b[..n]);
    k
}

impl Entry {
    /// Read the key and counts of the line `start..end` of `file`; `None` when it is not a
    /// line of this format.
    fn read(file: &Arc<Vec<u8>>, start: usize, end: usize) -> Option<((String, Key), Entry)> {
        // bytes, not a string: one line cut inside a character must not cost the whole file
        let line = std::str::from_utf8(file.get(start..end)?).ok()?;
        let (head, body) = line.split_once('\t')?;
        let mut parts = head.splitn(4, ' ');
        let blob = git2::Oid::from_str(parts.next()?).ok()?;
        let size = parts.next()?.parse().ok()?;
        let doc_count = parts.next()?.parse().ok()?;
        let path: String = serde_json::from_str(parts.next()?).ok()?;
        let entry = Entry {
            size,
            doc_count,
            body: line.len() - body.len(),
            line: Line::Read {
                file: file.clone(),
                start,
                end,
            },
            objects: std::sync::OnceLock::new(),
            used: AtomicBool::new(false),
        };
        Some(((path, key_of(blob)), entry))
    }

    /// The typed documents of the file at `path` (the entry's own path), parsed on first use;
    /// `None` when the line is damaged.
    fn objects(&self, path: &str) -> Option<&Vec<Parsed>> {
        self.objects
            .get_or_init(|| {
                let objects: Vec<Stored> = serde_json::from_str(self.line.text().get(self.body..)?).ok()?;
                // a config that is not JSON text cannot have been written by rampart
                let sound = objects.iter().all(|o| match o {
                    Stored::Tenant { configs, .. } => configs
                        .iter()
                        .flatten()
                        .all(|c| serde_json::from_str::<serde::de::IgnoredAny>(c).is_ok()),
                    _ => true,
                });
                sound.then(|| objects.into_iter().map(|o| o.parsed(path)).collect())
            })
            .as_ref()
    }
}

impl Stored {
    fn parsed(self, path: &str) -> Parsed {
        let origin = |doc| Origin {
            file: path.to_owned(),
            doc,
        };
        match self {
            Stored::Team { doc, metadata, spec } => Parsed::Team(Object::new(metadata, spec, origin(doc))),
            Stored::Tenant {
                doc,
                metadata,
                mut spec,
                configs,
            } => {
                for (p, c) in spec.plugins.iter_mut().zip(configs) {
                    p.config = c.map(PluginConfig::from_json_text);
                }
                Parsed::Tenant(Object::new(metadata, spec, origin(doc)))
            }
            Stored::Plugin { doc, metadata, spec } => Parsed::Plugin(Object::new(metadata, spec, origin(doc))),
            Stored::Rollout { doc, metadata, spec } => Parsed::Rollout(Object::new(metadata, spec, origin(doc))),
        }
    }
}

/// (externally tagged: an internally tagged enum makes serde buffer every document)
#[derive(Serialize, Deserialize)]
enum Stored {
    Team {
        doc: usize,
        metadata: Metadata,
        spec: TeamSpec,
    },
    Tenant {
        doc: usize,
        metadata: Metadata,
        spec: TenantSpec,
        configs: Vec<Option<String>>,
    },
    Plugin {
        doc: usize,
        metadata: Metadata,
        spec: PluginSpec,
    },
    Rollout {
        doc: usize,
        metadata: Metadata,
        spec: RolloutSpec,
    },
}

impl ParseCache {
    /// The cache of the git repository at `git_dir` (nothing is read until a table is
    /// asked for). `crate::cli::parse_cache` decides whether to use one.
    pub fn open(git_dir: &Path) -> ParseCache {
        ParseCache {
            dir: git_dir.join("rampart"),
            build: build_id(),
            tables: Mutex::new(HashMap::new()),
            valid: std::sync::OnceLock::new(),
        }
    }

    fn valid_trees(&self) -> &ValidTrees {
        self.valid.get_or_init(|| {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(format!("{FORMAT}\n{}", self.build));
            let key: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
            let file = self.dir.join(format!("valid-trees-{key}.txt"));
            let known = std::fs::read_to_string(&file)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let (tree, day) = l.trim().split_once(' ')?;
                    let day = if day == "-" { None } else { Some(day.parse().ok()?) };
                    Some((key_of(git2::Oid::from_str(tree).ok()?), day))
                })
                .collect();
            ValidTrees {
                file,
                known,
                fresh: Mutex::new(Vec::new()),
            }
        })
    }

    /// Whether there is no cache file yet: then two revisions read one after the other
    /// share what the first parsed, instead of both parsing every blob at once.
    pub fn is_cold(&self) -> bool {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return true;
        };
        !dir.flatten().any(|e| {
            e.file_name().to_string_lossy().starts_with("parse-cache-") && e.metadata().is_ok_and(|m| m.len() > 0)
        })
    }

    /// Whether this build already validated the config tree `tree` at the commit day `day` and
    /// found no error: then
    /// its cross-object checks need not run again to know it is valid.
    pub fn known_valid(&self, tree: git2::Oid, day: Option<i64>) -> bool {
        self.valid_trees().known.contains(&(key_of(tree), day))
    }

    /// Remember that the config tree `tree` has no error (written by [`ParseCache::flush`]).
    pub fn remember_valid(&self, tree: git2::Oid, day: Option<i64>) {
        let v = self.valid_trees();
        if !v.known.contains(&(key_of(tree), day)) {
            v.fresh.lock().expect("not poisoned").push((tree, day));
        }
    }

    /// The table for `limits`, loaded on first use.
    pub fn table(&self, limits: &Limits) -> Arc<Table> {
        let key = self.key(limits);
        let mut tables = self.tables.lock().expect("not poisoned");
        tables
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Table::load(self.dir.join(format!("parse-cache-{key}.jsonl")))))
            .clone()
    }

    fn key(&self, limits: &Limits) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!("{FORMAT}\n{}\n{limits:?}", self.build));
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Append what was learnt, and compact tables mostly unused; best effort (a cache that
    /// cannot be written is only slower).
    pub fn flush(&self) {
        let tables = self.tables.lock().expect("not poisoned");
        // (read before the flush, which makes the file no longer new)
        let any_new = tables.values().any(|t| t.new_file.load(Ordering::Relaxed));
        for t in tables.values() {
            t.flush();
        }
        let Some(v) = self.valid.get() else { return };
        let _ = v.flush();
        // a new build: the lists of valid trees of other builds are of no use
        if any_new && let Ok(dir) = std::fs::read_dir(&self.dir) {
            for old in dir.flatten() {
                let name = old.file_name();
                let name = name.to_string_lossy();
                if old.path() != v.file && name.starts_with("valid-trees-") && name.ends_with(".txt") {
                    let _ = std::fs::remove_file(old.path());
                }
            }
        }
    }
}

/// Which build wrote an entry: the version and the executable's size and time, so a rebuilt
/// rampart (whose checks may differ) never reads another build's results.
fn build_id() -> String {
    let exe = std::env::current_exe().and_then(std::fs::metadata);
    let stamp = exe
        .map(|m| {
            let t = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            format!("{} {}", m.len(), t.map_or(0, |t| t.as_nanos()))
        })
        .unwrap_or_default();
    format!("{} {stamp}", env!("CARGO_PKG_VERSION"))
}

impl ValidTrees {
    fn flush(&self) -> std::io::Result<()> {
        let fresh = std::mem::take(&mut *self.fresh.lock().expect("not poisoned"));
        if fresh.is_empty() {
            return Ok(());
        }
        let dir = self.file.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut lines: String = fresh
            .iter()
            .map(|(t, day)| match day {
                Some(d) => format!("{t} {d}\n"),
                None => format!("{t} -\n"),
            })
            .collect();
        if self.known.len() + fresh.len() > MAX_VALID_TREES {
            // keep the newest half of the old lines
            let old = std::fs::read_to_string(&self.file).unwrap_or_default();
            let old: Vec<&str> = old.lines().collect();
            let keep = &old[old.len().saturating_sub(MAX_VALID_TREES / 2)..];
            lines = keep.iter().map(|l| format!("{l}\n")).collect::<String>() + &lines;
            let tmp = dir.join(format!(".valid-trees-{}.tmp", std::process::id()));
            std::fs::write(&tmp, lines)?;
            return std::fs::rename(&tmp, &self.file);
        }
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.file)?;
        f.write_all(lines.as_bytes())
    }
}

type Entries = foldhash::HashMap<Key, Vec<(String, Arc<Entry>)>>;

fn find(entries: &Entries, path: &str, blob: git2::Oid) -> Option<Arc<Entry>> {
    let at = entries.get(&key_of(blob))?;
    at.iter().find(|(p, _)| p == path).map(|(_, e)| e.clone())
}

impl Table {
    fn load(file: PathBuf) -> Table {
        // bytes, not a string: one line cut inside a character must not cost the whole file
        let (bytes, mut damaged) = match std::fs::metadata(&file) {
            Ok(m) if m.len() <= MAX_BYTES => match std::fs::read(&file) {
                Ok(b) => (b, false),
                Err(_) => (Vec::new(), true),
            },
            Ok(_) => (Vec::new(), true),
            Err(_) => (Vec::new(), false),
        };
        let new_file = !file.exists();
        let file_bytes = Arc::new(bytes);
        let base = file_bytes.as_ptr() as usize;
        let read: Vec<Option<((String, Key), Entry)>> = file_bytes
            .par_split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let start = l.as_ptr() as usize - base;
                Entry::read(&file_bytes, start, start + l.len())
            })
            .collect();
        damaged |= read.iter().any(Option::is_none);
        let lines: Vec<((String, Key), Entry)> = read.into_iter().flatten().collect();
        let mut entries = Entries::default();
        for ((path, blob), e) in lines {
            let at = entries.entry(blob).or_default();
            if !at.iter().any(|(p, _)| *p == path) {
                at.push((path, Arc::new(e)));
            }
        }
        Table {
            file,
            entries,
            fresh: Mutex::new(Entries::default()),
            flushed: Mutex::new(Entries::default()),
            damaged: AtomicBool::new(damaged),
            new_file: AtomicBool::new(new_file),
        }
    }

    fn get(&self, path: &str, blob: git2::Oid) -> Option<Arc<Entry>> {
        find(&self.entries, path, blob)
            .or_else(|| find(&self.fresh.lock().expect("not poisoned"), path, blob))
            .or_else(|| find(&self.flushed.lock().expect("not poisoned"), path, blob))
    }

    /// The size of a known blob at `path` (what [`crate::source::Source::read_specs_known`]
    /// asks).
    pub fn size(&self, path: &str, blob: git2::Oid) -> Option<u64> {
        self.get(path, blob).map(|e| e.size)
    }

    /// The outcome of checking a known blob at `path`, and its document count; `None` when
    /// its line turns out damaged (then the blob must be read after all).
    pub fn outcome(&self, path: &str, blob: git2::Oid) -> Option<(FileOutcome, usize)> {
        let e = self.get(path, blob)?;
        e.used.store(true, Ordering::Relaxed);
        let parsed = e.objects(path)?.clone();
        Some((FileOutcome::clean(parsed), e.doc_count))
    }

    /// Remember a file's outcome when it is clean (no problem at all).
    pub fn record(&self, path: &str, blob: git2::Oid, size: u64, doc_count: usize, outcome: &FileOutcome) {
        if !outcome.diagnostics.is_empty() || self.get(path, blob).is_some() {
            return;
        }
        let mut objects = Vec::new();
        for (p, _) in outcome.parsed() {
            objects.push(match p {
                Parsed::Team(o) => Stored::Team {
                    doc: o.origin.doc,
                    metadata: o.metadata.clone(),
                    spec: o.spec.clone(),
                },
                Parsed::Tenant(o) => {
                    let configs = o
                        .spec
                        .plugins
                        .iter()
                        .map(|p| p.config.as_ref().map(|c| c.json_text().to_owned()))
                        .collect();
                    let plugins = o
                        .spec
                        .plugins
                        .iter()
                        .map(|p| EnabledPlugin {
                            config: None,
                            ..p.clone()
                        })
                        .collect();
                    Stored::Tenant {
                        doc: o.origin.doc,
                        metadata: o.metadata.clone(),
                        spec: TenantSpec {
                            plugins,
                            ..o.spec.clone()
                        },
                        configs,
                    }
                }
                Parsed::Plugin(o) => Stored::Plugin {
                    doc: o.origin.doc,
                    metadata: o.metadata.clone(),
                    spec: o.spec.clone(),
                },
                Parsed::Rollout(o) => Stored::Rollout {
                    doc: o.origin.doc,
                    metadata: o.metadata.clone(),
                    spec: o.spec.clone(),
                },
                // (a clean file has no invalid document)
                Parsed::Invalid => return,
            });
        }
        let (Ok(path_json), Ok(body)) = (serde_json::to_string(path), serde_json::to_string(&objects)) else {
            return;
        };
        let line = format!("{blob} {size} {doc_count} {path_json}\t{body}");
        let entry = Entry {
            size,
            doc_count,
            body: line.len() - body.len(),
            line: Line::Made(line),
            objects: std::sync::OnceLock::from(Some(outcome.parsed().iter().map(|(p, _)| p.clone()).collect())),
            used: AtomicBool::new(true),
        };
        self.fresh
            .lock()
            .expect("not poisoned")
            .entry(key_of(blob))
            .or_default()
            .push((path.to_owned(), Arc::new(entry)));
    }

    fn flush(&self) {
        let fresh = std::mem::take(&mut *self.fresh.lock().expect("not poisoned"));
        let mut pending = Vec::new();
        for (_, e) in fresh.values().flatten() {
            pending.extend_from_slice(e.line.text().as_bytes());
            pending.push(b'\n');
        }
        let all = || self.entries.values().flatten().map(|(_, e)| e);
        let used = all().filter(|e| e.used.load(Ordering::Relaxed)).count();
        let (damaged, new_file) = (
            self.damaged.load(Ordering::Relaxed),
            self.new_file.load(Ordering::Relaxed),
        );
        let written = if damaged || (new_file && !pending.is_empty()) || all().count() > 2 * used + 1024 {
            // (once rewritten, the file is neither damaged nor new: later flushes append)
            self.rewrite(&pending).inspect(|()| {
                self.damaged.store(false, Ordering::Relaxed);
                self.new_file.store(false, Ordering::Relaxed);
            })
        } else if !pending.is_empty() {
            self.append(&pending)
        } else {
            Ok(())
        };
        if written.is_ok() {
            let mut flushed = self.flushed.lock().expect("not poisoned");
            for (k, v) in fresh {
                flushed.entry(k).or_default().extend(v);
            }
        }
    }

    fn append(&self, lines: &[u8]) -> std::io::Result<()> {
        if let Some(dir) = self.file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.file)?;
        // one write: concurrent runs append whole batches
        f.write_all(lines)
    }

    /// Keep only the lines used by this run, plus the new ones; other caches of this
    /// repository (other builds, other limits) are removed.
    fn rewrite(&self, new: &[u8]) -> std::io::Result<()> {
        let dir = self.file.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut text = Vec::new();
        for (_, e) in self
            .entries
            .values()
            .flatten()
            .filter(|(_, e)| e.used.load(Ordering::Relaxed))
        {
            text.extend_from_slice(e.line.text().as_bytes());
            text.push(b'\n');
        }
        // (what this process flushed before is in the file too)
        for (_, e) in self.flushed.lock().expect("not poisoned").values().flatten() {
            text.extend_from_slice(e.line.text().as_bytes());
            text.push(b'\n');
        }
        text.extend_from_slice(new);
        let tmp = dir.join(format!(".parse-cache-{}.tmp", std::process::id()));
        std::fs::write(&tmp, &text)?;
        std::fs::rename(&tmp, &self.file)?;
        for old in std::fs::read_dir(dir)?.flatten() {
            let p = old.path();
            let name = old.file_name();
            let name = name.to_string_lossy();
            if p != self.file && name.starts_with("parse-cache-") && name.ends_with(".jsonl") {
                let _ = std::fs::remove_file(p);
            }
        }
        Ok(())
    }
}
