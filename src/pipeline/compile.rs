//! Compiling a validated revision: in memory, or straight into a directory.

use super::Validated;
use crate::diagnostic::Diagnostic;

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
    pub written: Option<crate::target::tree::Written>,
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
    state: impl FnOnce(usize) -> Option<crate::target::tree::State>,
) -> anyhow::Result<WrittenTree> {
    use crate::target::tree::Writer;
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
