//! Validating one revision: source → load → validate, settings first, then the spec files,
//! the checks across objects, the plugin supply chain and the repo's own policies.

use crate::cache::{ParseCache, Table};
use crate::config::{Limits, SETTINGS_FILE, Settings};
use crate::diagnostic::{self, Diagnostic};
use crate::load::{self, LoadedFile};
use crate::policy::Engine;
use crate::source::{KnownRead, Source, SourceError, SourceFile};
use crate::spec::Repo;
use crate::supply;
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
    /// The repo's own Cedar policies (`policies/**/*.cedar`, their text in `files`) with the
    /// defaults, ready to authorise (`None` when they do not validate), and the problems
    /// loading them found, unresolved.
    pub engine: std::sync::Arc<(Option<Engine>, Vec<Diagnostic>)>,
    /// Wall time per phase, for `--timings` and the benchmark.
    pub timings: Timings,
    /// Files taken from the parse cache: their `text` is empty, and read from git only when a
    /// problem must be shown in them ([`Validated::texts_for`]).
    pub unread: Unread,
    /// The trusted signing keys of `keys/`.
    pub keys: Vec<supply::Key>,
    /// The plugins' and rollouts' artifacts found in the repo, by path.
    pub artifacts: std::collections::HashMap<String, Result<Vec<u8>, String>>,
    /// The day trust freshness is measured at (the commit's).
    pub as_of: Option<i64>,
    /// Integrity, signature and trust score of every plugin, by name (`None` when the checks
    /// were skipped, [`Checks::SkipKnownValid`]: see [`Validated::trust_of`]).
    pub trust: Option<std::collections::BTreeMap<String, supply::Trust>>,
    /// The blob id of every spec file (git revisions only), by path.
    pub blobs: foldhash::HashMap<String, git2::Oid>,
}

/// Files of a git revision not read (their parse was cached): blob id by path.
#[derive(Default)]
pub struct Unread {
    git_dir: Option<std::path::PathBuf>,
    blobs: std::collections::HashMap<String, git2::Oid>,
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

    /// Whether the specs are valid (every error, if any, is about the repo's Cedar
    /// policies): such a revision compiles and diffs, though it cannot authorise anything.
    pub fn specs_valid(&self) -> bool {
        !self
            .diagnostics
            .iter()
            .any(|d| d.is_error() && !d.file().is_some_and(|f| f.ends_with(".cedar")))
    }

    pub fn document_count(&self) -> usize {
        self.files.iter().map(|f| f.doc_count).sum()
    }

    /// The report summary of this revision with `diagnostics` (its own, or more), file paths
    /// prefixed with `path_prefix`.
    pub fn summary<'a>(&'a self, diagnostics: &'a [Diagnostic], path_prefix: &'a str) -> crate::report::Summary<'a> {
        crate::report::Summary {
            diagnostics,
            files: self.files.len(),
            documents: self.document_count(),
            objects: self.repo.object_count(),
            commit: self.commit.as_deref(),
            path_prefix,
            trust: None,
        }
    }

    /// Integrity, signature and trust score of the plugin `name` (computed now when the
    /// checks were skipped).
    pub fn trust_of(&self, name: &str) -> Option<supply::Trust> {
        match &self.trust {
            Some(all) => all.get(name).cloned(),
            None => supply::trust_of(&self.repo, name, &self.supply_inputs(&self.keys)),
        }
    }

    /// What the supply-chain checks of this revision's plugins read, with signatures checked
    /// against `keys` (its own, or the base's: a change does not vouch for itself).
    pub fn supply_inputs<'a>(&'a self, keys: &'a [supply::Key]) -> supply::Inputs<'a> {
        supply::Inputs {
            keys,
            artifacts: &self.artifacts,
            as_of: self.as_of,
        }
    }

    /// Every plugin's integrity, signature and trust score, by name.
    pub fn trust_all(&self) -> std::collections::BTreeMap<String, supply::Trust> {
        match &self.trust {
            Some(all) => all.clone(),
            None => supply::verify(&self.repo, &self.supply_inputs(&self.keys)).0,
        }
    }

    /// Whether `a` (of this revision) and `b` (of `other`) are the same document of the same
    /// blob at the same path, so their objects are equal.
    pub fn same_source(&self, other: &Validated, a: &crate::spec::Origin, b: &crate::spec::Origin) -> bool {
        a.doc == b.doc
            && a.file == b.file
            && self
                .blobs
                .get(&a.file)
                .is_some_and(|id| other.blobs.get(&b.file) == Some(id))
    }

    /// The text of the unread files `diags` point into, read now, to resolve spans and
    /// snippets together with `files`. A blob that cannot be read leaves its problems at
    /// the file (no line).
    pub fn texts_for(&self, diags: &[Diagnostic]) -> Vec<LoadedFile> {
        texts_for(&self.unread, diags)
    }

    /// Resolve `diags` in this revision's files (reading unread ones as needed) and sort them.
    pub fn resolve(&self, diags: &mut [Diagnostic]) {
        let extra = self.texts_for(diags);
        load::resolve(diags, self.files.iter().chain(&extra), &self.repo.settings.limits);
        diagnostic::sort(diags);
    }
}

fn texts_for(unread: &Unread, diags: &[Diagnostic]) -> Vec<LoadedFile> {
    let Some(git_dir) = &unread.git_dir else {
        return Vec::new();
    };
    let mut wanted: Vec<(String, git2::Oid)> = diags
        .iter()
        .filter_map(|d| match &d.anchor {
            diagnostic::Anchor::File { file }
            | diagnostic::Anchor::Position { file, .. }
            | diagnostic::Anchor::Node { file, .. } => unread.blobs.get(file).map(|id| (file.clone(), *id)),
            diagnostic::Anchor::None => None,
        })
        .collect();
    wanted.sort();
    wanted.dedup();
    let Ok(repo) = git2::Repository::open(git_dir) else {
        return Vec::new();
    };
    wanted
        .into_iter()
        .filter_map(|(path, id)| {
            let text = String::from_utf8(repo.find_blob(id).ok()?.content().to_vec()).ok()?;
            Some(LoadedFile {
                path,
                text,
                docs: Vec::new(),
                doc_count: 0,
            })
        })
        .collect()
}

/// Progress callback: called with the number of files parsed so far and the total.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

/// Read, load and validate one revision. `Err` only when the repo could not be read at all.
pub fn validate(source: &Source, progress: Progress<'_>) -> Result<Validated, SourceError> {
    validate_cached(source, progress, None)
}

/// [`validate`], taking the outcome of every blob `cache` knows instead of parsing it, and
/// teaching it the clean files it did not know (git revisions only).
pub fn validate_cached(
    source: &Source,
    progress: Progress<'_>,
    cache: Option<&ParseCache>,
) -> Result<Validated, SourceError> {
    validate_checked(source, progress, cache, Checks::All)
}

/// Which checks a revision read runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checks {
    /// Every check: the revision's problems are reported.
    All,
    /// When the cache knows the revision's tree is valid (this build validated it before),
    /// the checks across objects, signatures and compatibility are skipped: the revision is
    /// valid, its problems (warnings) are not reported, and trust is computed when asked
    /// ([`Validated::trust_of`]). For the base of a change, whose validity is all that counts.
    /// The base may also hold no config repo at all: the change creates it (`rampart init`'s
    /// first commit), planned and judged against nothing. A head is never allowed to be empty.
    SkipKnownValid,
}

fn validate_checked(
    source: &Source,
    progress: Progress<'_>,
    cache: Option<&ParseCache>,
    checks: Checks,
) -> Result<Validated, SourceError> {
    let tree = match source {
        Source::Git { tree, .. } => Some(*tree),
        Source::Dir(_) => None,
    };
    let day = source.as_of_day();
    let known_valid =
        checks == Checks::SkipKnownValid && matches!((cache, tree), (Some(c), Some(t)) if c.known_valid(t, day));
    let mut timings = Timings::default();
    let t = Instant::now();
    let (settings_file, settings, mut diags) = read_settings(source)?;
    let limits = settings.limits;

    let table = cache
        .filter(|_| matches!(source, Source::Git { .. }))
        .map(|c| c.table(&limits));
    let specs = read_specs(
        source,
        &limits,
        table.as_deref(),
        settings_file.as_ref(),
        checks,
        &mut diags,
    )?;
    timings.read = t.elapsed();
    let t = Instant::now();
    let (loaded, reread) = parse_specs(
        source,
        specs.files,
        &specs.known,
        &specs.ids,
        table.as_deref(),
        &limits,
        progress,
    )?;
    let mut files = Vec::with_capacity(loaded.len() + 1);
    let mut outcomes = Vec::with_capacity(loaded.len());
    for (f, d, o) in loaded {
        diags.extend(d);
        files.push(f);
        outcomes.push(o);
    }
    timings.parse = t.elapsed();
    let t = Instant::now();
    let repo = check_across_objects(outcomes, settings, known_valid, &mut diags);
    let as_of = day;
    let chain = check_supply_chain(source, &repo, &limits, known_valid, as_of, &mut files, &mut diags)?;
    let engine = load_policies(source, &repo, &limits, &mut files, &mut diags)?;
    timings.validate = t.elapsed();
    let t = Instant::now();
    if let Some(s) = settings_file {
        debug_assert_eq!(s.path, SETTINGS_FILE);
        files.push(s);
    }
    let unread = left_unread(source, specs.known, &reread);
    if let (Some(c), Some(t)) = (cache, tree)
        && !known_valid
        && !diags.iter().any(Diagnostic::is_error)
    {
        c.remember_valid(t, day);
    }
    let diags = resolve_and_sort(diags, &unread, &files, &limits);
    timings.resolve = t.elapsed();
    Ok(Validated {
        repo,
        files,
        diagnostics: diags,
        commit: specs.commit,
        engine: std::sync::Arc::new(engine),
        timings,
        unread,
        keys: chain.keys,
        artifacts: chain.artifacts,
        as_of,
        trust: chain.trust,
        blobs: specs.blobs,
    })
}

/// Read and load the settings (`rampart.yaml`) under the default limits, with their problems.
pub(super) fn read_settings(source: &Source) -> Result<(Option<LoadedFile>, Settings, Vec<Diagnostic>), SourceError> {
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
    Ok((settings_file, settings, diags))
}

/// The spec files of a revision as [`read_specs`] read them.
pub(super) struct SpecsRead {
    /// The files read.
    pub(super) files: Vec<SourceFile>,
    /// The files `table` knows, unread: (path, blob id), in walk order.
    pub(super) known: Vec<(String, git2::Oid)>,
    /// The blob id of every file read, by path (git only).
    pub(super) ids: std::collections::HashMap<String, git2::Oid>,
    /// The blob id of every spec file, read or known, by path.
    pub(super) blobs: foldhash::HashMap<String, git2::Oid>,
    /// The commit read, when a git revision was read.
    pub(super) commit: Option<String>,
}

/// Read the spec files (only the blob ids of those `table` knows); `Err` when the revision is
/// empty, unless it is the base of a change ([`Checks::SkipKnownValid`]).
pub(super) fn read_specs(
    source: &Source,
    limits: &Limits,
    table: Option<&Table>,
    settings_file: Option<&LoadedFile>,
    checks: Checks,
    diags: &mut Vec<Diagnostic>,
) -> Result<SpecsRead, SourceError> {
    let read = match table {
        Some(t) => source.read_specs_known(limits, &|path, id| t.size(path, id))?,
        None => KnownRead {
            snapshot: source.read_specs(limits)?,
            ..KnownRead::default()
        },
    };
    let (snap, known, ids) = (read.snapshot, read.known, read.ids);
    let blobs: foldhash::HashMap<String, git2::Oid> = ids
        .iter()
        .chain(known.iter().map(|(p, id)| (p, id)))
        .map(|(p, id)| (p.clone(), *id))
        .collect();
    if checks == Checks::All
        && settings_file.is_none()
        && snap.files.is_empty()
        && known.is_empty()
        && snap.diagnostics.is_empty()
        && diags.is_empty()
    {
        // a wrong path in CI must not pass as "0 files: valid"
        return Err(SourceError::Empty(source.path()));
    }
    diags.extend(snap.diagnostics);
    Ok(SpecsRead {
        files: snap.files,
        known,
        ids,
        blobs,
        commit: snap.commit,
    })
}

/// A spec file parsed and checked on its own: the file, its load problems and its outcome.
type Parsed = (LoadedFile, Vec<Diagnostic>, validate::FileOutcome);

/// Parse and schema-check every spec file in parallel, in path order (`table`'s outcome where known).
pub(super) fn parse_specs(
    source: &Source,
    files: Vec<SourceFile>,
    known: &[(String, git2::Oid)],
    ids: &std::collections::HashMap<String, git2::Oid>,
    table: Option<&Table>,
    limits: &Limits,
    progress: Progress<'_>,
) -> Result<(Vec<Parsed>, std::collections::HashSet<String>), SourceError> {
    let total = (files.len() + known.len()) as u64;
    let done = std::sync::atomic::AtomicU64::new(0);
    validate::schema::warm_up();
    // files in path order, whether read or known
    enum Job {
        Read(SourceFile),
        Known(String, git2::Oid),
    }
    let mut jobs: Vec<Job> = files
        .into_iter()
        .map(Job::Read)
        .chain(known.iter().map(|(p, id)| Job::Known(p.clone(), *id)))
        .collect();
    jobs.sort_by(|a, b| {
        let path = |j: &Job| match j {
            Job::Read(f) => f.path.clone(),
            Job::Known(p, _) => p.clone(),
        };
        path(a).cmp(&path(b))
    });
    // parse and check each file in one go, so its documents are freed (moved into the typed
    // model) before the next file is parsed: memory stays near the size of the model
    let check = |f: SourceFile| {
        let size = f.bytes.len() as u64;
        let (mut file, d) = load::load_file(f, limits);
        let outcome = validate::file(&mut file);
        if d.is_empty()
            && let (Some(t), Some(id)) = (&table, ids.get(&file.path))
        {
            t.record(&file.path, *id, size, file.doc_count, &outcome);
        }
        (file, d, outcome)
    };
    let mut damaged = Vec::new();
    let mut loaded: Vec<Result<Parsed, (String, git2::Oid)>> = jobs
        .into_par_iter()
        .map(|job| {
            let out = match job {
                Job::Known(path, id) => match table.as_ref().and_then(|t| t.outcome(&path, id)) {
                    Some((outcome, doc_count)) => Ok((
                        LoadedFile {
                            path,
                            text: String::new(),
                            docs: Vec::new(),
                            doc_count,
                        },
                        Vec::new(),
                        outcome,
                    )),
                    None => Err((path, id)),
                },
                Job::Read(f) => Ok(check(f)),
            };
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if n.is_multiple_of(256) || n == total {
                progress(n, total);
            }
            out
        })
        .collect();
    // a damaged cache line: the blob is read after all
    for r in &mut loaded {
        if let Err(blob) = r {
            damaged.push(blob.clone());
        }
    }
    let reread: std::collections::HashSet<String> = damaged.iter().map(|(p, _)| p.clone()).collect();
    let mut unparsed = source.read_known(damaged)?.into_iter().map(check);
    let loaded: Vec<Parsed> = loaded
        .into_iter()
        .filter_map(|r| r.ok().or_else(|| unparsed.next()))
        .collect();
    Ok((loaded, reread))
}

/// Assemble the typed repo, checking across objects (names, references, bounds) unless known valid.
fn check_across_objects(
    outcomes: Vec<validate::FileOutcome>,
    settings: Settings,
    known_valid: bool,
    diags: &mut Vec<Diagnostic>,
) -> Repo {
    let (repo, d) = if known_valid {
        (validate::assemble_unchecked(outcomes, settings), Vec::new())
    } else {
        validate::assemble(outcomes, settings)
    };
    diags.extend(d);
    repo
}

/// What [`check_supply_chain`] read and found.
pub(super) struct SupplyChain {
    pub(super) keys: Vec<supply::Key>,
    pub(super) artifacts: std::collections::HashMap<String, Result<Vec<u8>, String>>,
    pub(super) trust: Option<std::collections::BTreeMap<String, supply::Trust>>,
}

/// Read the trusted keys and plugin artifacts; unless known valid, check signatures, trust, compatibility.
pub(super) fn check_supply_chain(
    source: &Source,
    repo: &Repo,
    limits: &Limits,
    known_valid: bool,
    as_of: Option<i64>,
    files: &mut Vec<LoadedFile>,
    diags: &mut Vec<Diagnostic>,
) -> Result<SupplyChain, SourceError> {
    // the plugin supply chain: keys, artifacts, signatures, trust, compatibility
    let snap = source.read_keys(limits)?;
    diags.extend(snap.diagnostics);
    let key_files = load_all(snap.files, limits, diags);
    let (docs, d) = validate::keys(&key_files);
    diags.extend(d);
    let (keys, d) = supply::keys(docs);
    diags.extend(d);
    files.extend(key_files);
    let paths: Vec<String> = repo
        .plugins
        .iter()
        .filter_map(|p| p.spec.artifact.path.clone())
        .chain(
            repo.rollouts
                .iter()
                .filter_map(|r| r.spec.artifact.as_ref()?.path.clone()),
        )
        .filter(|p| validate::semantic::check_repo_path(p).is_ok())
        .collect();
    let artifacts = source.read_paths(&paths, limits)?;
    let mut trust = None;
    if !known_valid {
        let inputs = supply::Inputs {
            keys: &keys,
            artifacts: &artifacts,
            as_of,
        };
        let (all, d) = supply::verify(repo, &inputs);
        trust = Some(all);
        diags.extend(d);
        diags.extend(supply::verify_rollouts(repo, &inputs).1);
        diags.extend(supply::compatibility(repo));
    }
    Ok(SupplyChain { keys, artifacts, trust })
}

/// Load the repo's own Cedar policies with the defaults, and check that the teams they name exist.
pub(super) fn load_policies(
    source: &Source,
    repo: &Repo,
    limits: &Limits,
    files: &mut Vec<LoadedFile>,
    diags: &mut Vec<Diagnostic>,
) -> Result<(Option<Engine>, Vec<Diagnostic>), SourceError> {
    // the repo's policies parse and validate against the schema, or the repo is invalid
    let policies = source.read_policies(limits)?;
    diags.extend(policies.diagnostics);
    let engine = Engine::load(&policies.files);
    diags.extend(engine.1.iter().cloned());
    if let Some(e) = &engine.0 {
        let teams: std::collections::HashSet<&str> = repo.teams.iter().map(|t| t.name()).collect();
        diags.extend(crate::policy::missing_teams(e, &policies.files, &teams));
    }
    for f in &policies.files {
        files.push(LoadedFile {
            path: f.path.clone(),
            text: String::from_utf8_lossy(&f.bytes).into_owned(),
            docs: Vec::new(),
            doc_count: 0,
        });
    }
    Ok(engine)
}

/// The spec files left unread: those the cache knew, less those read after all.
fn left_unread(source: &Source, known: Vec<(String, git2::Oid)>, reread: &std::collections::HashSet<String>) -> Unread {
    Unread {
        git_dir: match source {
            Source::Git { repo, .. } if !known.is_empty() => Some(repo.path().to_owned()),
            _ => None,
        },
        blobs: known.into_iter().filter(|(p, _)| !reread.contains(p)).collect(),
    }
}

/// Cap the problems per file, resolve them to `file:line:col` (reading unread files as needed), sort them.
fn resolve_and_sort(diags: Vec<Diagnostic>, unread: &Unread, files: &[LoadedFile], limits: &Limits) -> Vec<Diagnostic> {
    let mut diags = load::cap_per_file(diags);
    let extra = texts_for(unread, &diags);
    load::resolve(&mut diags, files.iter().chain(&extra), limits);
    diagnostic::sort(&mut diags);
    diags
}

/// [`validate_cached`] of `head` and `base` at once: the base on a thread of its own (with its
/// own handle on the repository), the head on this one. Most of a revision's checks run on
/// one thread, so two revisions take about the time of one on two cores. (With a cache that
/// is still empty, one after the other: the base then parses only what the head did not.) The base is read
/// even when the head turns out invalid; then its result, error included, goes unused, so
/// the base's outcome is the inner `Result`.
pub type Pair = (Validated, Result<Validated, SourceError>);

/// See [`Pair`].
pub fn validate_pair(head: &Source, base: &Source, cache: Option<&ParseCache>) -> Result<Pair, SourceError> {
    let no_progress = |_: u64, _: u64| {};
    if cache.is_some_and(ParseCache::is_cold) {
        // nothing cached yet: the base takes what reading the head taught the cache
        let head_v = validate_cached(head, &no_progress, cache)?;
        let base_v = validate_checked(base, &no_progress, cache, Checks::SkipKnownValid);
        if let Some(c) = cache {
            c.flush();
        }
        return Ok((head_v, base_v));
    }
    let base = base.reopen()?;
    let (head_v, base_v) = std::thread::scope(|s| {
        let worker = s.spawn(move || validate_checked(&base, &no_progress, cache, Checks::SkipKnownValid));
        let head_v = validate_cached(head, &no_progress, cache);
        let base_v = worker.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        (head_v, base_v)
    });
    if let Some(c) = cache {
        c.flush();
    }
    Ok((head_v?, base_v))
}

/// Load every file read (one by one: keys and policy tests are few), their problems into
/// `diags`.
pub(super) fn load_all(files: Vec<SourceFile>, limits: &Limits, diags: &mut Vec<Diagnostic>) -> Vec<LoadedFile> {
    files
        .into_iter()
        .map(|f| {
            let (loaded, d) = load::load_file(f, limits);
            diags.extend(d);
            loaded
        })
        .collect()
}
