//! Report: diagnostics → `human`, `json`, `github` (workflow commands) or `sarif` (pure).
//!
//! One module per output format; each renders to a `String` so the driver decides where it
//! goes. User-controlled text is escaped for the format it lands in.

pub mod audit;
pub mod check;
pub mod github;
pub mod human;
pub mod impact;
pub mod json;
pub mod plan;
pub mod policy_test;
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
#[derive(Clone, Copy)]
pub struct Summary<'a> {
    pub diagnostics: &'a [Diagnostic],
    pub files: usize,
    pub documents: usize,
    pub objects: usize,
    pub commit: Option<&'a str>,
    /// Prepended to every file path (the config repo's place in its git work tree), so
    /// annotations and SARIF point at files GitHub knows.
    pub path_prefix: &'a str,
    /// Integrity, signature and trust of each plugin (`validate --format json` shows them).
    pub trust: Option<&'a std::collections::BTreeMap<String, crate::supply::Trust>>,
}

impl Summary<'_> {
    pub fn valid(&self) -> bool {
        !self.diagnostics.iter().any(Diagnostic::is_error)
    }

    pub fn path(&self, file: &str) -> String {
        prefixed(self.path_prefix, file)
    }
}

/// `file` under `prefix` (the config repo's place in its git work tree), as GitHub names it.
pub fn prefixed(prefix: &str, file: &str) -> String {
    if prefix.is_empty() {
        file.to_owned()
    } else {
        format!("{}/{file}", prefix.trim_end_matches('/'))
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

/// User-controlled text made inert in GitHub Markdown: no HTML, no Markdown structure, no
/// @mentions or #references, no line breaks that end a table row, no control or
/// bidirectional characters (shown as U+FFFD).
pub fn markdown_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '@' => out.push_str("&#64;"),
            '#' => out.push_str("&#35;"),
            '|' => out.push_str("&#124;"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '(' | ')' | '!' | '~' | '{' | '}' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c if crate::diagnostic::is_hidden(c) => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn markdown_escape_breaks_out_of_nothing() {
        let s = super::markdown_escape("<img src=x onerror=alert(1)> @org/team #1 | `x` [a](b)\n# h");
        assert!(!s.contains('<') && !s.contains('@') && !s.contains('\n'));
        assert_eq!(s.matches('|').count(), 0);
    }
}
