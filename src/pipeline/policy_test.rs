//! Running the repo's policy tests against its own policies.

use super::validate::load_all;
use super::{Validated, validate};
use crate::diagnostic::{self, Diagnostic};
use crate::load;
use crate::policy::tests::CaseResult;
use crate::source::Source;

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
