//! Report: diagnostics → `human`, `json`, `github` (workflow commands) or `sarif` (pure).
//!
//! One module per output format; each renders to a `String` so the driver decides where it
//! goes. User-controlled text is escaped for the format it lands in.

pub mod github;
pub mod human;
pub mod json;
pub mod sarif;

use crate::diagnostic::Diagnostic;

/// Output format of `validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Readable text with source snippets; coloured only on a terminal.
    Human,
    /// Stable JSON (documented in the README).
    Json,
    /// GitHub Actions workflow commands (`::error file=…,line=…,col=…::`).
    Github,
    /// SARIF 2.1.0, for GitHub code scanning.
    Sarif,
}

/// What a report is about.
pub struct Summary<'a> {
    pub diagnostics: &'a [Diagnostic],
    pub files: usize,
    pub documents: usize,
    pub objects: usize,
    pub commit: Option<&'a str>,
    /// Prepended to every file path (the config repo's place in its git work tree), so
    /// annotations and SARIF point at files GitHub knows.
    pub path_prefix: &'a str,
}

impl Summary<'_> {
    pub fn valid(&self) -> bool {
        !self.diagnostics.iter().any(Diagnostic::is_error)
    }

    pub fn path(&self, file: &str) -> String {
        if self.path_prefix.is_empty() {
            file.to_owned()
        } else {
            format!("{}/{file}", self.path_prefix.trim_end_matches('/'))
        }
    }
}

pub fn render(format: Format, s: &Summary<'_>, color: bool) -> String {
    match format {
        Format::Human => human::render(s, color),
        Format::Json => json::render(s),
        Format::Github => github::render(s),
        Format::Sarif => sarif::render(s),
    }
}
