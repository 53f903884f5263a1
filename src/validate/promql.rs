//! A lint of PromQL text, not a parser (pure): size, control characters, and brackets
//! `()[]{}` that pair up outside string literals and comments, nested at most
//! [`MAX_DEPTH`] deep. Enough to catch a query cut short or mangled by YAML folding before a
//! rollout runs, without owning PromQL's grammar (Prometheus answers for the rest).

/// Most bytes a query may have (the schema's `maxLength` counts characters).
pub const MAX_BYTES: usize = 4096;
/// Deepest bracket nesting accepted.
pub const MAX_DEPTH: usize = 64;

/// Why a query is refused, and where: the 1-based byte column inside the query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub column: usize,
    pub message: String,
}

fn problem(column: usize, message: impl Into<String>) -> Problem {
    Problem {
        column,
        message: message.into(),
    }
}

/// Check one query; the first problem found. Tabs and line breaks are whitespace to PromQL
/// (a YAML literal block keeps them); every other control character is refused.
pub fn lint(query: &str) -> Result<(), Problem> {
    if query.len() > MAX_BYTES {
        return Err(problem(
            MAX_BYTES + 1,
            format!("is {} bytes, more than {MAX_BYTES}", query.len()),
        ));
    }
    if let Some((i, c)) = query
        .char_indices()
        .find(|&(_, c)| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Err(problem(i + 1, format!("has a control character (U+{:04X})", c as u32)));
    }
    // (iterative: one stack of open brackets, bounded by MAX_DEPTH)
    let mut open: Vec<(u8, usize)> = Vec::new();
    let bytes = query.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'"' | b'\'' | b'`' => {
                // PromQL: `"…"` and `'…'` take backslash escapes, backticks are raw
                let start = i;
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => {
                            return Err(problem(
                                start + 1,
                                format!("has a string opened by `{}` that never closes", b as char),
                            ));
                        }
                        Some(&c) if c == b => break,
                        Some(b'\\') if b != b'`' => i += 2,
                        Some(_) => i += 1,
                    }
                }
            }
            b'#' => {
                // a comment runs to the end of the line
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                if open.len() == MAX_DEPTH {
                    return Err(problem(i + 1, format!("nests brackets more than {MAX_DEPTH} deep")));
                }
                open.push((b, i));
            }
            b')' | b']' | b'}' => {
                let want = match b {
                    b')' => b'(',
                    b']' => b'[',
                    _ => b'{',
                };
                match open.pop() {
                    Some((o, _)) if o == want => {}
                    Some((o, at)) => {
                        return Err(problem(
                            i + 1,
                            format!(
                                "closes the `{}` opened at byte {} with `{}`",
                                o as char,
                                at + 1,
                                b as char
                            ),
                        ));
                    }
                    None => return Err(problem(i + 1, format!("has a `{}` that closes nothing", b as char))),
                }
            }
            _ => {}
        }
        i += 1;
    }
    match open.pop() {
        Some((o, at)) => Err(problem(at + 1, format!("has a `{}` that never closes", o as char))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(query: &str, expected: Option<(usize, &str)>) {
        match (lint(query), expected) {
            (Ok(()), None) => {}
            (Err(p), Some((column, text))) => {
                assert_eq!(p.column, column, "{query}: {p:?}");
                assert!(p.message.contains(text), "{query}: {p:?}");
            }
            (got, want) => panic!("{query}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn queries_that_pair_up_pass() {
        check(
            r#"sum(rate(http_requests_total{code=~"5.."}[5m])) / sum(rate(x[5m]))"#,
            None,
        );
        check("histogram_quantile(0.99,\n  sum by (le) (rate(b[5m])))", None);
        check(r#"x{a="(", b='[', c=`{\`}"#, None);
        check(r#"x{a="\")"}"#, None);
        check("up # a comment with ( and [\n", None);
        check("", None);
    }

    #[test]
    fn mangled_queries_name_the_byte() {
        check("sum(rate(x[5m])", Some((4, "`(` that never closes")));
        check("sum(x))", Some((7, "`)` that closes nothing")));
        check("sum(x]", Some((6, "closes the `(` opened at byte 4 with `]`")));
        check(r#"x{a="b}"#, Some((5, "string opened by `\"`")));
        check(r#"x{a="b\"}"#, Some((5, "string opened by `\"`")));
        // a backtick string is raw: its backslash escapes nothing
        check(r#"x{a=`b\`}"#, None);
        check("up\u{1b}[0m", Some((3, "control character (U+001B)")));
        check(&format!("{}{}", "(".repeat(64), ")".repeat(64)), None);
        check(&"(".repeat(65), Some((65, "more than 64 deep")));
        check(&"x".repeat(4097), Some((4097, "4097 bytes")));
        // bytes, not characters
        check(&"é".repeat(2049), Some((4097, "4098 bytes")));
    }
}
