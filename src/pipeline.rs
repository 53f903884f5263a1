//! Pipeline: source → load → validate for one revision of a config repo — the sequence every
//! command starts with. The only place that joins the IO stage to the pure ones.

use crate::config::{Limits, SETTINGS_FILE};
use crate::diagnostic::{self, Diagnostic};
use crate::load::{self, LoadedFile};
use crate::source::{Source, SourceError};
use crate::spec::Repo;
use crate::validate;
use rayon::prelude::*;
use std::time::{Duration, Instant};

/// A validated revision: the typed repo, its files (for spans and snippets) and every
/// problem, resolved to `file:line:col` and sorted.
pub struct Validated {
    pub repo: Repo,
    pub files: Vec<LoadedFile>,
    pub diagnostics: Vec<Diagnostic>,
    /// The commit read, when a git revision was read.
    pub commit: Option<String>,
    /// Wall time per phase, for `--timings` and the benchmark.
    pub timings: Timings,
}

/// Wall time of each phase of [`validate`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Timings {
    /// Walking the repo and reading files.
    pub read: Duration,
    /// Parsing YAML and checking each document against its schema (in parallel).
    pub parse: Duration,
    /// Checks across objects (names, references, bounds).
    pub validate: Duration,
    /// Mapping problems to `line:col`, sorting.
    pub resolve: Duration,
}

impl Validated {
    pub fn is_valid(&self) -> bool {
        !self.diagnostics.iter().any(Diagnostic::is_error)
    }

    pub fn document_count(&self) -> usize {
        self.files.iter().map(|f| f.doc_count).sum()
    }
}

/// Progress callback: called with the number of files parsed so far and the total.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

/// Read, load and validate one revision. `Err` only when the repo could not be read at all.
pub fn validate(source: &Source, progress: Progress<'_>) -> Result<Validated, SourceError> {
    let mut timings = Timings::default();
    let t = Instant::now();
    // settings first: they hold the limits for everything else
    let defaults = Limits::default();
    let snap = source.read_settings(&defaults)?;
    let mut diags = snap.diagnostics;
    let settings_file = snap.files.into_iter().next().map(|f| {
        let (loaded, d) = load::load_file(f, &defaults);
        diags.extend(d);
        loaded
    });
    let (settings, d) = validate::settings(settings_file.as_ref());
    diags.extend(d);
    let limits = settings.limits;

    let snap = source.read_specs(&limits)?;
    if settings_file.is_none() && snap.files.is_empty() && snap.diagnostics.is_empty() && diags.is_empty() {
        // a wrong path in CI must not pass as "0 files: valid"
        return Err(SourceError::Empty(source.path()));
    }
    diags.extend(snap.diagnostics);
    timings.read = t.elapsed();
    let t = Instant::now();
    let total = snap.files.len() as u64;
    let done = std::sync::atomic::AtomicU64::new(0);
    validate::schema::warm_up();
    // parse and check each file in one go, so its documents are freed (moved into the typed
    // model) before the next file is parsed: memory stays near the size of the model
    let loaded: Vec<(LoadedFile, Vec<Diagnostic>, validate::FileOutcome)> = snap
        .files
        .into_par_iter()
        .map(|f| {
            let (mut file, d) = load::load_file(f, &limits);
            let outcome = validate::file(&mut file);
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if n.is_multiple_of(256) || n == total {
                progress(n, total);
            }
            (file, d, outcome)
        })
        .collect();
    let mut files = Vec::with_capacity(loaded.len() + 1);
    let mut outcomes = Vec::with_capacity(loaded.len());
    for (f, d, o) in loaded {
        diags.extend(d);
        files.push(f);
        outcomes.push(o);
    }
    timings.parse = t.elapsed();
    let t = Instant::now();
    let (repo, d) = validate::assemble(outcomes, settings);
    diags.extend(d);
    timings.validate = t.elapsed();
    let t = Instant::now();
    if let Some(s) = settings_file {
        debug_assert_eq!(s.path, SETTINGS_FILE);
        files.push(s);
    }
    let mut diags = load::cap_per_file(diags);
    load::resolve(&mut diags, &files, &limits);
    diagnostic::sort(&mut diags);
    timings.resolve = t.elapsed();
    Ok(Validated {
        repo,
        files,
        diagnostics: diags,
        commit: snap.commit,
        timings,
    })
}
