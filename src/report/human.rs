//! The `human` format: rustc-style messages with a source line and a caret.

use super::Summary;
use crate::diagnostic::{Diagnostic, Severity, counts};
use std::fmt::Write;

struct Paint {
    on: bool,
}

impl Paint {
    fn wrap(&self, code: &str, s: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_owned()
        }
    }
}

pub fn render(s: &Summary<'_>, color: bool) -> String {
    let p = Paint { on: color };
    let mut out = String::new();
    for d in s.diagnostics {
        one(&mut out, d, s, &p);
    }
    let c = counts(s.diagnostics);
    let what = format!(
        "{} file{}, {} document{}, {} object{}",
        s.files,
        plural(s.files),
        s.documents,
        plural(s.documents),
        s.objects,
        plural(s.objects)
    );
    let at = s
        .commit
        .map(|c| format!(" at {}", &c[..c.len().min(12)]))
        .unwrap_or_default();
    if c.errors == 0 {
        let warn = if c.warnings > 0 {
            format!(" with {} warning{}", c.warnings, plural(c.warnings))
        } else {
            String::new()
        };
        let _ = writeln!(out, "{} {what}{at}: valid{warn}", p.wrap("1;32", "ok:"));
    } else {
        let _ = writeln!(
            out,
            "{} {what}{at}: {} error{}, {} warning{}",
            p.wrap("1;31", "invalid:"),
            c.errors,
            plural(c.errors),
            c.warnings,
            plural(c.warnings)
        );
    }
    out
}

/// One diagnostic, rendered as in [`render`].
pub fn render_one(d: &Diagnostic, s: &Summary<'_>, color: bool) -> String {
    let mut out = String::new();
    one(&mut out, d, s, &Paint { on: color });
    out
}

/// User-controlled text made safe for a terminal (control characters replaced).
pub fn neutralize(s: &str) -> String {
    visible(s)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn one(out: &mut String, d: &Diagnostic, s: &Summary<'_>, p: &Paint) {
    let (label, color) = match d.severity {
        Severity::Error => ("error", "1;31"),
        Severity::Warning => ("warning", "1;33"),
    };
    let _ = writeln!(
        out,
        "{}: {}",
        p.wrap(color, &format!("{label}[{}]", d.code)),
        p.wrap("1", &d.message)
    );
    if let Some(loc) = &d.location {
        // (a name with a tab or a newline is shown escaped: it must read as exactly one name)
        let file = crate::diagnostic::visible(&s.path(&loc.file), &[]);
        let place = if loc.line > 0 {
            format!("{file}:{}:{}", loc.line, loc.column)
        } else {
            file
        };
        let _ = writeln!(out, "  {} {place}", p.wrap("1;34", "-->"));
        if let Some(line) = &d.snippet {
            let num = loc.line.to_string();
            let pad = " ".repeat(num.len());
            let shown = visible(line);
            let caret_at = d.snippet_column.saturating_sub(1) as usize;
            let width = token_width(&shown, caret_at);
            let _ = writeln!(out, "  {pad} {}", p.wrap("1;34", "|"));
            let _ = writeln!(
                out,
                "  {} {} {}",
                p.wrap("1;34", &num),
                p.wrap("1;34", "|"),
                shown.trim_end()
            );
            let _ = writeln!(
                out,
                "  {pad} {} {}{}",
                p.wrap("1;34", "|"),
                " ".repeat(caret_at),
                p.wrap(color, &"^".repeat(width))
            );
        }
    }
    if let Some(h) = &d.hint {
        let _ = writeln!(out, "  {} {}", p.wrap("1;36", "= help:"), h);
    }
    out.push('\n');
}

/// One character per character, control characters replaced, so a crafted file cannot send
/// escape sequences to the terminal and the caret stays aligned.
fn visible(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == '\t' {
                ' '
            } else if crate::diagnostic::is_hidden(c) {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}

/// Width of the token starting at `start` (in chars), at least 1: a quoted string, or a plain
/// scalar up to a flow indicator, a `: ` (a key) or a comment; inner spaces belong to it.
fn token_width(line: &str, start: usize) -> usize {
    let chars: Vec<char> = line.chars().collect();
    let mut n = 0;
    let mut quote: Option<char> = None;
    for (i, &c) in chars.iter().enumerate().skip(start) {
        let next = chars.get(i + 1).copied();
        match quote {
            Some(q) => {
                n += 1;
                if c == q && i > start {
                    break;
                }
            }
            None if n == 0 && (c == '"' || c == '\'') => {
                quote = Some(c);
                n += 1;
            }
            None => {
                let comment = c.is_whitespace() && next == Some('#');
                if comment || matches!(c, ',' | ']' | '}') || (c == ':' && next.is_none_or(char::is_whitespace)) {
                    break;
                }
                n += 1;
            }
        }
    }
    // trailing blanks are not part of the token
    let trailing = chars
        .iter()
        .skip(start)
        .take(n)
        .rev()
        .take_while(|c| c.is_whitespace())
        .count();
    (n - trailing).clamp(1, 80)
}

#[cfg(test)]
mod tests {
    use super::token_width;

    #[test]
    fn carets_cover_the_token() {
        assert_eq!(token_width("  - paymnts", 4), 7);
        assert_eq!(token_width("  cpu: \"64\"  # x", 2), 3);
        assert_eq!(token_width("  cpu: \"64\"  # x", 7), 4);
        assert_eq!(token_width("a: [x, y]", 4), 1);
        assert_eq!(token_width("", 0), 1);
        assert_eq!(token_width("  isolation: dedicated nodes  # x", 13), 15);
        assert_eq!(token_width("  extra: 1", 2), 5);
    }
}
