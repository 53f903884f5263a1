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

/// A resolved author as a reviewer reads it: a login, or the commit's identity marked as
/// matching no team member (`resolve_who` keeps it as `?unknown:<identity>`).
pub fn author_text(author: &str) -> String {
    match author.strip_prefix("?unknown:") {
        Some(who) => format!("{who} (not a team member)"),
        None => author.to_owned(),
    }
}

/// Text rampart wrote, with user values inside its own `code spans`: the spans render as
/// code (their content made inert: no line break, no pipe that ends a table cell, no control
/// or bidirectional character), everything else is escaped as [`markdown_escape`]. Text with
/// an odd number of backticks, or a run of two or more, has no spans it can trust and is
/// escaped whole.
pub fn markdown_text(s: &str) -> String {
    // (CommonMark pairs backtick runs of equal length: only single ones are trusted)
    if s.matches('`').count() % 2 == 1 || s.contains("``") {
        return markdown_escape(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for (i, part) in s.split('`').enumerate() {
        if i % 2 == 0 {
            out.push_str(&markdown_escape(part));
        } else {
            let inert: String = part
                .chars()
                .map(|c| match c {
                    '\n' | '\r' => ' ',
                    c if crate::diagnostic::is_hidden(c) => '\u{fffd}',
                    c => c,
                })
                .collect();
            out.push('`');
            out.push_str(&inert.replace('|', "\\|"));
            out.push('`');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn code_spans_stay_code_and_the_rest_is_escaped() {
        assert_eq!(
            super::markdown_text("quota `limits.cpu` 6 → 14 in <b>"),
            "quota `limits.cpu` 6 → 14 in &lt;b&gt;"
        );
        assert_eq!(super::markdown_text("`a|b` @x"), "`a\\|b` &#64;x");
        // an odd backtick: nothing is trusted
        assert_eq!(super::markdown_text("a ` b"), "a \\` b");
        assert!(!super::markdown_text("`a\nb`").contains('\n'));
        // a run of backticks pairs only with a run of the same length: nothing is trusted
        assert!(!super::markdown_text("`x` and `y<img>```").contains('<'));
    }

    #[test]
    fn markdown_escape_breaks_out_of_nothing() {
        let s = super::markdown_escape("<img src=x onerror=alert(1)> @org/team #1 | `x` [a](b)\n# h");
        assert!(!s.contains('<') && !s.contains('@') && !s.contains('\n'));
        assert_eq!(s.matches('|').count(), 0);
    }
}
