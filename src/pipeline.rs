//! Pipeline: source → load → validate for one revision of a config repo — the sequence every
//! command starts with. The only place that joins the IO stage to the pure ones.

use crate::cache::ParseCache;
use crate::change::{self, Change};
use crate::config::{Limits, SETTINGS_FILE};
use crate::diagnostic::{self, Diagnostic};
use crate::load::{self, LoadedFile};
use crate::policy::Engine;
use crate::policy::decide::{self, Decision, Identity};
use crate::policy::model::{self, Who};
use crate::policy::tests::CaseResult;
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
    pub engine: (Option<Engine>, Vec<Diagnostic>),
    /// Wall time per phase, for `--timings` and the benchmark.
    pub timings: Timings,
    /// Files taken from the parse cache: their `text` is empty, and read from git only when a
    /// problem must be shown in them ([`Validated::texts_for`]).
    pub unread: Unread,
    /// The trusted signing keys of `keys/`.
    pub keys: Vec<supply::Key>,
    /// The plugins' artifacts found in the repo, by path.
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

    let table = cache
        .filter(|_| matches!(source, Source::Git { .. }))
        .map(|c| c.table(&limits));
    let read = match &table {
        Some(t) => source.read_specs_known(&limits, &|path, id| t.size(path, id))?,
        None => KnownRead {
            snapshot: source.read_specs(&limits)?,
            ..KnownRead::default()
        },
    };
    let (snap, known, ids) = (read.snapshot, read.known, read.ids);
    let blobs: foldhash::HashMap<String, git2::Oid> = ids
        .iter()
        .chain(known.iter().map(|(p, id)| (p, id)))
        .map(|(p, id)| (p.clone(), *id))
        .collect();
    if settings_file.is_none()
        && snap.files.is_empty()
        && known.is_empty()
        && snap.diagnostics.is_empty()
        && diags.is_empty()
    {
        // a wrong path in CI must not pass as "0 files: valid"
        return Err(SourceError::Empty(source.path()));
    }
    diags.extend(snap.diagnostics);
    timings.read = t.elapsed();
    let t = Instant::now();
    let total = (snap.files.len() + known.len()) as u64;
    let done = std::sync::atomic::AtomicU64::new(0);
    validate::schema::warm_up();
    // files in path order, whether read or known
    enum Job {
        Read(SourceFile),
        Known(String, git2::Oid),
    }
    let mut jobs: Vec<Job> = snap
        .files
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
        let (mut file, d) = load::load_file(f, &limits);
        let outcome = validate::file(&mut file);
        if d.is_empty()
            && let (Some(t), Some(id)) = (&table, ids.get(&file.path))
        {
            t.record(&file.path, *id, size, file.doc_count, &outcome);
        }
        (file, d, outcome)
    };
    type Checked = (LoadedFile, Vec<Diagnostic>, validate::FileOutcome);
    let mut damaged = Vec::new();
    let mut loaded: Vec<Result<Checked, (String, git2::Oid)>> = jobs
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
    let loaded: Vec<Checked> = loaded
        .into_iter()
        .filter_map(|r| r.ok().or_else(|| unparsed.next()))
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
    let (repo, d) = if known_valid {
        (validate::assemble_unchecked(outcomes, settings), Vec::new())
    } else {
        validate::assemble(outcomes, settings)
    };
    diags.extend(d);
    // the plugin supply chain: keys, artifacts, signatures, trust, compatibility
    let snap = source.read_keys(&limits)?;
    diags.extend(snap.diagnostics);
    let key_files = load_all(snap.files, &limits, &mut diags);
    let (docs, d) = validate::keys(&key_files);
    diags.extend(d);
    let (keys, d) = supply::keys(docs);
    diags.extend(d);
    files.extend(key_files);
    let paths: Vec<String> = repo
        .plugins
        .iter()
        .filter_map(|p| p.spec.artifact.path.clone())
        .filter(|p| validate::semantic::check_repo_path(p).is_ok())
        .collect();
    let artifacts = source.read_paths(&paths, &limits)?;
    let mut trust = None;
    let as_of = day;
    if !known_valid {
        let (all, d) = supply::verify(
            &repo,
            &supply::Inputs {
                keys: &keys,
                artifacts: &artifacts,
                as_of,
            },
        );
        trust = Some(all);
        diags.extend(d);
        diags.extend(supply::compatibility(&repo));
    }
    // the repo's policies parse and validate against the schema, or the repo is invalid
    let policies = source.read_policies(&limits)?;
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
    timings.validate = t.elapsed();
    let t = Instant::now();
    if let Some(s) = settings_file {
        debug_assert_eq!(s.path, SETTINGS_FILE);
        files.push(s);
    }
    let unread = Unread {
        git_dir: match source {
            Source::Git { repo, .. } if !known.is_empty() => Some(repo.path().to_owned()),
            _ => None,
        },
        blobs: known.into_iter().filter(|(p, _)| !reread.contains(p)).collect(),
    };
    if let (Some(c), Some(t)) = (cache, tree)
        && !known_valid
        && !diags.iter().any(Diagnostic::is_error)
    {
        c.remember_valid(t, day);
    }
    let mut diags = load::cap_per_file(diags);
    let extra = texts_for(&unread, &diags);
    load::resolve(&mut diags, files.iter().chain(&extra), &limits);
    diagnostic::sort(&mut diags);
    timings.resolve = t.elapsed();
    Ok(Validated {
        repo,
        files,
        diagnostics: diags,
        commit: snap.commit,
        engine,
        timings,
        unread,
        keys,
        artifacts,
        as_of,
        trust,
        blobs,
    })
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
fn load_all(files: Vec<SourceFile>, limits: &Limits, diags: &mut Vec<Diagnostic>) -> Vec<LoadedFile> {
    files
        .into_iter()
        .map(|f| {
            let (loaded, d) = load::load_file(f, limits);
            diags.extend(d);
            loaded
        })
        .collect()
}

/// Who is asking, when given explicitly. With an `author`, the approvers are exactly
/// `approvers` (none when `None`); without one, the author and the `Approved-by:` trailers of
/// the head commit are used and `approvers` must be `None`.
#[derive(Debug, Clone, Default)]
pub struct Principals {
    pub author: Option<Identity>,
    pub approvers: Option<Vec<Identity>>,
}

impl Principals {
    /// Given as logins: `approvers` count only with an `author` (without one, the head
    /// commit says who).
    pub fn logins(author: Option<&str>, approvers: &[String]) -> Principals {
        Principals {
            author: author.map(Identity::login),
            approvers: author.map(|_| approvers.iter().map(|a| Identity::login(a)).collect()),
        }
    }
}

/// How a policy check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Every change was decided (allowed or denied).
    Decided,
    /// The head revision is invalid: the policy step did not run.
    HeadInvalid,
}

/// The result of [`check`]: the head's validation and, when it is valid, the verdicts.
pub struct Checked {
    pub head: Validated,
    /// `outcome` is `HeadInvalid` (and the rest empty) when the head is invalid.
    pub auth: Authorized,
}

/// Validate `head`, then authorise every change from `base` to `head` with the base
/// revision's policies and team membership. The head's problems block the policy step.
pub fn check(base: &Source, head: &Source, who: &Principals, cache: Option<&ParseCache>) -> anyhow::Result<Checked> {
    let (head_v, base_v) = validate_pair(head, base, cache)?;
    if !head_v.is_valid() {
        return Ok(Checked {
            head: head_v,
            auth: Authorized {
                // (the base it knows, even when the head blocks the rest)
                base_commit: base_v.as_ref().ok().and_then(|b| b.commit.clone()),
                changes: Vec::new(),
                decisions: Vec::new(),
                diagnostics: Vec::new(),
                outcome: CheckOutcome::HeadInvalid,
                who: Who::default(),
                policy_time: Duration::ZERO,
            },
        });
    }
    let auth = authorize(base, head, &base_v?, &head_v, who, None)?;
    Ok(Checked { head: head_v, auth })
}

/// The policy verdicts on the change from `base_v` to `head_v` (both already validated; the
/// head valid).
pub struct Authorized {
    pub base_commit: Option<String>,
    pub changes: Vec<Change>,
    pub decisions: Vec<Decision>,
    pub diagnostics: Vec<Diagnostic>,
    pub outcome: CheckOutcome,
    pub who: Who,
    pub policy_time: Duration,
}

impl Authorized {
    pub fn denied(&self) -> usize {
        self.decisions.iter().filter(|d| !d.allowed).count()
    }
}

/// Authorise every change from `base_v` to `head_v` with the policies, members and keys of
/// `authority` — the revision whose rules are in force: the base itself for `check`, `plan`
/// and `apply` (`None`), the base branch's current tip for a pull request that branched off
/// an older commit, so a branch cannot escape what was merged since its fork point.
pub fn authorize(
    base: &Source,
    head: &Source,
    base_v: &Validated,
    head_v: &Validated,
    who: &Principals,
    authority: Option<&Validated>,
) -> anyhow::Result<Authorized> {
    let rules = authority.unwrap_or(base_v);
    let mut checked = Authorized {
        base_commit: base_v.commit.clone(),
        changes: Vec::new(),
        decisions: Vec::new(),
        diagnostics: Vec::new(),
        outcome: CheckOutcome::Decided,
        who: Who::default(),
        policy_time: Duration::ZERO,
    };
    let limits = head_v.repo.settings.limits;
    let base_guarded = base.read_guarded(&base_v.repo.settings.limits)?;
    let head_guarded = head.read_guarded(&limits)?;
    let same = |a: &crate::spec::Origin, b: &crate::spec::Origin| base_v.same_source(head_v, a, b);
    checked.changes = change::diff(
        &base_v.repo,
        &head_v.repo,
        &base_guarded.files,
        &head_guarded.files,
        &same,
    );

    let t = Instant::now();
    let (engine, d) = &rules.engine;
    let mut d = d.clone();
    for x in &mut d {
        x.message = format!("base revision: {}", x.message);
    }
    // located in the base's policy files (snippets included)
    let policy_files: Vec<LoadedFile> = rules
        .files
        .iter()
        .filter(|f| f.path.ends_with(".cedar"))
        .cloned()
        .collect();
    load::resolve(&mut d, &policy_files, &limits);
    diagnostic::sort(&mut d);
    checked.diagnostics.extend(d);
    // break-glass: when the rules in force do not validate, nothing could ever be authorised
    // again, not even the fix. Then rampart's default policies alone decide, and only
    // changes to guarded files (the fix) can be allowed — with the defaults' four eyes: an
    // approval from a `platform` member who is not the author.
    let defaults;
    let (engine, break_glass) = match engine {
        Some(e) => (e, false),
        None => {
            defaults = Engine::load(&[])
                .0
                .ok_or_else(|| anyhow::anyhow!("rampart's default policies do not validate"))?;
            checked.diagnostics.push(
                Diagnostic::new(
                    diagnostic::Code::BreakGlass,
                    diagnostic::Anchor::None,
                    "the base revision's policies do not validate: break-glass, so rampart's default \
                     policies alone decide, and only changes to rampart.yaml, policies/ and keys/ can be allowed",
                )
                .with_hint(
                    "fix the policies in a change of its own, approved by a `platform` member who is not its author",
                ),
            );
            (&defaults, true)
        }
    };

    let teams: Vec<(String, Vec<String>)> = rules
        .repo
        .teams
        .iter()
        .map(|t| (t.name().to_owned(), t.spec.members.clone()))
        .collect();
    let info = head.commit_info();
    let source = info
        .as_ref()
        .map(|c| format!("commit {}", &c.id[..12]))
        .unwrap_or_default();
    // who made and approved the change: given explicitly (both together, so an explicit
    // author is never paired with trailers the author wrote), or both from the head commit
    let (author, approvers) = match (&who.author, &info) {
        (Some(a), _) => (a.clone(), who.approvers.clone().unwrap_or_default()),
        (None, Some(c)) => (
            Identity {
                login: None,
                name: Some(c.author_name.clone()),
                email: Some(c.author_email.clone()),
            },
            c.approved_by.iter().map(|v| Identity::parse_trailer(v)).collect(),
        ),
        (None, None) => (Identity::default(), Vec::new()),
    };
    let (resolved, d) = decide::resolve_who(&teams, &author, &approvers, "");
    checked.diagnostics.extend(d.into_iter().map(|mut x| {
        if !source.is_empty() && who.author.is_none() {
            x.message = format!("{source}: {}", x.message);
        }
        x.location = None;
        x
    }));
    checked.who = resolved;
    // a login this change set adds to a team does not approve the same change (else a team
    // could grow its own second approver)
    let added = members_added(&base_v.repo, &head_v.repo, &checked.changes);
    checked.who.approvers.retain(|a| {
        let keep = !added.contains(a);
        if !keep {
            checked.diagnostics.push(
                Diagnostic::new(
                    diagnostic::Code::ApproverAddedByChange,
                    diagnostic::Anchor::None,
                    format!("`{a}` approved, but this change adds `{a}` to a team; the approval does not count"),
                )
                .with_hint("ask a member who is already in the team (or a member of `platform`) for the approval"),
            );
        }
        keep
    });
    // the head's plugins, as signed by keys already merged: a pull request that adds a key
    // does not make its own plugins verified; and a change can only lower what the base
    // already trusts: most trust facts (advisories, maintainers, release date) are written in
    // the plugin's own YAML, so a plugin the base has counts with the lower score of the two
    // revisions. Computed per plugin on demand (only the plugins the requests name).
    let inputs = head_v.supply_inputs(&rules.keys);
    let memo: std::sync::Mutex<std::collections::HashMap<String, model::PluginFacts>> = Default::default();
    let facts = |name: &str| {
        if let Some(f) = memo.lock().expect("not poisoned").get(name) {
            return *f;
        }
        let f = match supply::trust_of(&head_v.repo, name, &inputs) {
            None => model::PluginFacts::default(),
            Some(t) => {
                let mut f = model::PluginFacts {
                    trust_score: t.trust_score,
                    signature_verified: t.signature_verified,
                };
                if let Some(b) = base_v.trust_of(name) {
                    f.trust_score = f.trust_score.min(b.trust_score);
                    f.signature_verified &= b.signature_verified;
                }
                f
            }
        };
        memo.lock().expect("not poisoned").insert(name.to_owned(), f);
        f
    };
    let mut model = model::build(
        &rules.repo,
        &base_v.repo,
        &head_v.repo,
        &checked.changes,
        &checked.who,
        &facts,
        engine,
    )
    .map_err(|e| anyhow::anyhow!("building the Cedar entities of the change set failed: {e}"))?;
    if break_glass {
        // (through the model's `blocked`: denied without asking Cedar or searching a way out)
        for (p, c) in model.prepared.iter_mut().zip(&checked.changes) {
            if c.subject != change::Subject::File {
                p.blocked = Some(
                    "the base revision's policies do not validate: until they are fixed, only changes to \
                     rampart.yaml, policies/ and keys/ can be authorised (break-glass)"
                        .to_owned(),
                );
            }
        }
    }
    checked.decisions = decide::decide(engine, &mut model);
    checked.policy_time = t.elapsed();
    Ok(checked)
}

/// Every login a team change of `changes` adds (normalised).
fn members_added(
    base: &crate::spec::Repo,
    head: &crate::spec::Repo,
    changes: &[Change],
) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for c in changes
        .iter()
        .filter(|c| c.subject == change::Subject::Object(crate::spec::Kind::Team))
    {
        let old = c.old.map(|i| &base.teams[i].spec);
        let new = c.new.map(|i| &head.teams[i].spec);
        let (Some(o), Some(n)) = (old.or(new), new.or(old)) else {
            continue;
        };
        out.extend(model::members_changed(o, n, c.action).0);
    }
    out
}

/// The result of [`policy_test`].
pub struct TestRun {
    pub validated: Validated,
    pub results: Vec<CaseResult>,
    /// Problems of the test files (load, schema, cases that cannot be built), resolved.
    pub diagnostics: Vec<Diagnostic>,
    pub test_files: usize,
}

/// Validate the repo, then run its policy tests (`policies/tests/*.yaml`) against its own
/// policies and the defaults. No tests run when the repo is invalid.
pub fn policy_test(source: &Source) -> anyhow::Result<TestRun> {
    let validated = validate(source, &|_, _| {})?;
    let mut run = TestRun {
        results: Vec::new(),
        diagnostics: Vec::new(),
        test_files: 0,
        validated,
    };
    if !run.validated.is_valid() {
        return Ok(run);
    }
    let limits = run.validated.repo.settings.limits;
    let engine =
        (run.validated.engine.0.as_ref()).ok_or_else(|| anyhow::anyhow!("the repo's policies do not validate"))?;
    let guarded = source.read_guarded(&limits)?;
    let snap = source.read_policy_tests(&limits)?;
    let mut diags = snap.diagnostics;
    let mut files = load_all(snap.files, &limits, &mut diags);
    run.test_files = files.len();
    let (mut results, d) = crate::policy::tests::run(engine, &run.validated.repo, &guarded.files, &mut files);
    diags.extend(d);
    // each case's line, through the same span lookup as diagnostics
    let mut marks: Vec<Diagnostic> = results
        .iter()
        .map(|r| {
            let at = format!("/spec/cases/{}", r.index);
            Diagnostic::at_node(crate::diagnostic::Code::PolicyTestInvalid, &r.file, r.doc, &at, "")
        })
        .collect();
    load::resolve(&mut marks, &files, &limits);
    for (r, m) in results.iter_mut().zip(&marks) {
        r.line = m.location.as_ref().map_or(0, |l| l.line);
    }
    load::resolve(&mut diags, &files, &limits);
    diagnostic::sort(&mut diags);
    run.results = results;
    run.diagnostics = diags;
    Ok(run)
}

/// A validated and compiled revision.
pub struct Compiled {
    pub validated: Validated,
    pub manifests: Vec<crate::compile::Manifest>,
    /// Problems only compiling reveals (resolved).
    pub diagnostics: Vec<Diagnostic>,
}

impl Compiled {
    pub fn is_valid(&self) -> bool {
        self.validated.is_valid() && !self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// Whether the specs are valid and compiled without error (the repo's Cedar policies
    /// may still be invalid; see [`Validated::specs_valid`]).
    pub fn specs_valid(&self) -> bool {
        self.validated.specs_valid() && !self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// The revision's problems and those only compiling revealed, in one list.
    pub fn all_diagnostics(&self) -> Vec<Diagnostic> {
        let mut all = self.validated.diagnostics.clone();
        all.extend(self.diagnostics.iter().cloned());
        all
    }
}

/// Compile an already validated revision (nothing when it is invalid).
pub fn compile_validated(validated: Validated, opts: &crate::compile::Options) -> Compiled {
    compile_validated_tenants(validated, opts, &|_| true)
}

/// [`compile_validated`], for the tenants `wanted` accepts only.
pub fn compile_validated_tenants(
    validated: Validated,
    opts: &crate::compile::Options,
    wanted: &(dyn Fn(&str) -> bool + Sync),
) -> Compiled {
    if !validated.specs_valid() {
        return Compiled {
            validated,
            manifests: Vec::new(),
            diagnostics: Vec::new(),
        };
    }
    let (manifests, mut diags) = crate::compile::compile_tenants(&validated.repo, opts, wanted);
    validated.resolve(&mut diags);
    Compiled {
        validated,
        manifests,
        diagnostics: diags,
    }
}

/// What [`compile_into`] did.
pub struct WrittenTree {
    /// `None` when compiling found errors: nothing was written.
    pub written: Option<crate::apply::dir::Written>,
    pub objects: usize,
    /// Problems only compiling reveals (resolved).
    pub diagnostics: Vec<Diagnostic>,
}

/// Compile a valid revision straight into the directory `out`, object by object on every
/// core, so the compiled repo is never held in memory; replace `out` atomically, or leave it
/// untouched when compiling finds an error.
pub fn compile_into(
    validated: &Validated,
    opts: &crate::compile::Options,
    out: &std::path::Path,
    state: impl FnOnce(usize) -> Option<crate::apply::dir::State>,
) -> anyhow::Result<WrittenTree> {
    use crate::apply::dir::Writer;
    let writer = Writer::begin(out)?;
    let failure: std::sync::Mutex<Option<anyhow::Error>> = std::sync::Mutex::new(None);
    let (mut paths, mut diags) = crate::compile::compile_each(&validated.repo, opts, &|_| true, &|m| {
        if let Err(e) = writer.put(&m.path(), &m.yaml()) {
            failure.lock().expect("not poisoned").get_or_insert(e);
        }
    });
    if let Some(e) = failure.into_inner().expect("not poisoned") {
        writer.abort();
        return Err(e);
    }
    validated.resolve(&mut diags);
    let objects = paths.len();
    if diags.iter().any(Diagnostic::is_error) {
        writer.abort();
        return Ok(WrittenTree {
            written: None,
            objects,
            diagnostics: diags,
        });
    }
    let kustomization = crate::compile::kustomization(&paths);
    if let Err(e) = writer.put_listing("kustomization.yaml", &kustomization) {
        writer.abort();
        return Err(e);
    }
    paths.push("kustomization.yaml".to_owned());
    let state = state(objects);
    let written = writer.finish(&paths, state.as_ref())?;
    Ok(WrittenTree {
        written: Some(written),
        objects,
        diagnostics: diags,
    })
}
