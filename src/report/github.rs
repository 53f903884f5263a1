//! The `github` format: GitHub Actions workflow commands, one annotation per diagnostic.
//!
//! Escaping follows the runner's rules (actions/toolkit `command.ts`): data escapes `%`,
//! `\r`, `\n`; property values also escape `:` and `,`. A crafted file name or value can
//! therefore never start a second command.

use super::Summary;
use crate::diagnostic::{Severity, counts};
use std::fmt::Write;

pub fn render(s: &Summary<'_>) -> String {
    let mut out = String::new();
    for d in s.diagnostics {
        let level = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut props = Vec::new();
        if let Some(loc) = &d.location {
            props.push(format!("file={}", property(&s.path(&loc.file))));
            if loc.line > 0 {
                props.push(format!("line={}", loc.line));
                props.push(format!("col={}", loc.column));
            }
        }
        props.push(format!("title={}", property(&format!("{} {}", d.code, d.code.title()))));
        let mut msg = d.message.clone();
        if let Some(h) = &d.hint {
            msg.push_str("\nhelp: ");
            msg.push_str(h);
        }
        let _ = writeln!(out, "::{level} {}::{}", props.join(","), data(&msg));
    }
    let c = counts(s.diagnostics);
    let n = |k: usize, what: &str| format!("{k} {what}{}", if k == 1 { "" } else { "s" });
    let _ = writeln!(
        out,
        "rampart: {}, {}: {}, {}",
        n(s.files, "file"),
        n(s.objects, "object"),
        n(c.errors, "error"),
        n(c.warnings, "warning")
    );
    out
}

/// A warning annotation that points at no file.
pub fn warning(title: &str, message: &str) -> String {
    format!("::warning title={}::{}\n", property(title), data(message))
}

/// `text` folded in the job log under `title`, with workflow commands stopped while it prints
/// (it may hold text from a pull request). `token` must be one the text cannot contain.
pub fn folded(title: &str, text: &str, token: &str) -> String {
    format!(
        "::group::{}\n::stop-commands::{token}\n{}\n::{token}::\n::endgroup::\n",
        data(title),
        text.trim_end()
    )
}

/// Escape a command's message; other control and bidirectional characters (a file name's
/// ESC) are written as escapes, so the log shows them instead of obeying them.
pub fn data(s: &str) -> String {
    crate::diagnostic::visible(&s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A"), &[])
}

/// Escape a command's property value.
pub fn property(s: &str) -> String {
    data(s).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_cannot_forge_commands() {
        assert_eq!(super::property("a,b:c\n::error::x"), "a%2Cb%3Ac%0A%3A%3Aerror%3A%3Ax");
        assert_eq!(super::data("50% done\r\n::x"), "50%25 done%0D%0A::x");
        assert_eq!(super::property("a\u{1b}[2J\u{202e}b"), "a\\u{1b}[2J\\u{202e}b");
    }
}
