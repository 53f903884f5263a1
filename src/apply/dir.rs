//! The `dir` target (IO): a directory holding exactly the desired files, replaced
//! atomically, with a small state file beside it recording what was applied.
//!
//! The new tree is written into a temporary sibling directory (every file and the directory
//! fsynced), then swapped with the old one in one `renameat2(RENAME_EXCHANGE)` — readers see
//! the old tree or the new one, never a mix — and the old tree is removed. Files of objects
//! no longer desired are gone because the new tree never had them. When the desired files
//! equal what is there, nothing is written at all.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

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
}

/// How the directory changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Written {
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    pub unchanged: usize,
}

impl Written {
    pub fn is_noop(&self) -> bool {
        self.added == 0 && self.changed == 0 && self.removed == 0
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

/// The files now in `out` (relative paths), read without following links.
fn current(out: &Path) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = out.join(&rel);
        for entry in fs::read_dir(&dir).map_err(|e| anyhow::anyhow!("listing `{}`: {e}", dir.display()))? {
            let entry = entry?;
            let ft = entry.file_type()?;
            let child = rel.join(entry.file_name());
            if ft.is_dir() {
                stack.push(child);
            } else if ft.is_file() {
                let key = String::from_utf8_lossy(child.as_os_str().as_bytes()).into_owned();
                files.insert(key, fs::read(entry.path())?);
            } else {
                // a link or special file in the output is not ours: the new tree replaces it
                let key = String::from_utf8_lossy(child.as_os_str().as_bytes()).into_owned();
                files.insert(key, Vec::new());
            }
        }
    }
    Ok(files)
}

/// Make `out` hold exactly `files` (relative path → content), atomically, and record
/// `state` (if any) beside it. Refuses an `out` that exists and is not a directory.
pub fn write(out: &Path, files: &BTreeMap<String, String>, state: Option<&State>) -> anyhow::Result<Written> {
    let ctx = |what: &str, p: &Path, e: std::io::Error| anyhow::anyhow!("{what} `{}`: {e}", p.display());
    match fs::symlink_metadata(out) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => anyhow::bail!("output `{}` exists and is not a directory", out.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ctx("inspecting output", out, e)),
    }
    let exists = out.is_dir();
    let before = if exists { current(out)? } else { BTreeMap::new() };
    let mut w = Written::default();
    for (path, text) in files {
        match before.get(path) {
            None => w.added += 1,
            Some(old) if old == text.as_bytes() => w.unchanged += 1,
            Some(_) => w.changed += 1,
        }
    }
    w.removed = before.keys().filter(|k| !files.contains_key(*k)).count();
    let same_state = state.is_none_or(|s| read_state(out).ok().flatten().as_ref() == Some(s));
    if exists && w.is_noop() && same_state {
        return Ok(w);
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
    fs::create_dir(&tmp).map_err(|e| ctx("creating", &tmp, e))?;
    let result = (|| -> anyhow::Result<()> {
        let mut dirs = std::collections::BTreeSet::new();
        for (path, text) in files {
            let target = tmp.join(path);
            if let Some(d) = target.parent()
                && dirs.insert(d.to_owned())
            {
                fs::create_dir_all(d).map_err(|e| ctx("creating", d, e))?;
            }
            let mut f = fs::File::create(&target).map_err(|e| ctx("writing", &target, e))?;
            f.write_all(text.as_bytes()).map_err(|e| ctx("writing", &target, e))?;
            f.sync_all().map_err(|e| ctx("syncing", &target, e))?;
        }
        for d in dirs.iter().chain(std::iter::once(&tmp)) {
            fs::File::open(d)
                .and_then(|f| f.sync_all())
                .map_err(|e| ctx("syncing", d, e))?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if exists {
        exchange(&tmp, out).map_err(|e| {
            let _ = fs::remove_dir_all(&tmp);
            ctx("replacing", out, e)
        })?;
        // `tmp` now holds the old tree
        fs::remove_dir_all(&tmp).map_err(|e| ctx("removing the previous tree at", &tmp, e))?;
    } else {
        fs::rename(&tmp, out).map_err(|e| ctx("moving the new tree to", out, e))?;
    }
    if let Some(state) = state {
        write_state(out, state)?;
    }
    fs::File::open(&parent)
        .and_then(|f| f.sync_all())
        .map_err(|e| ctx("syncing", &parent, e))?;
    Ok(w)
}

fn write_state(out: &Path, state: &State) -> anyhow::Result<()> {
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
    // SAFETY: both paths are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::renameat2(
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
