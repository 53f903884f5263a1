//! Masking of secret values in report snippets (pure): the one place a source line is
//! checked before a report copies it, whatever the diagnostic.
//!
//! A scalar is hidden when any key above it — on its own line (`flow: {token: X, on: y}`) or
//! on the lines it is nested under (`token:\n  - X`, a block scalar's lines) — holds a secret
//! or is a Secret reference ([`crate::compile::secret::hides_value`]). The check reads the
//! text, not the parsed values: a file that failed to parse (a duplicate key) still has its
//! snippet masked.

use crate::compile::secret::hides_value;

/// What a hidden scalar is shown as.
pub const MASK: &str = "********";

/// The lines of a file, by index, without building them all (a report may need a few).
pub struct Lines<'a> {
    pub text: &'a str,
    /// Byte offset of each line's start.
    pub starts: &'a [usize],
}

impl<'a> Lines<'a> {
    fn get(&self, i: usize) -> &'a str {
        let s = self.starts[i];
        let e = self.starts.get(i + 1).map_or(self.text.len(), |&e| e - 1);
        self.text[s..e.max(s)].trim_end_matches('\r')
    }
}

/// Line `index` with every scalar under a secret key replaced by [`MASK`], and `column`
/// (1-based, in characters) moved to stay on the same token.
pub fn mask_line(lines: &Lines<'_>, index: usize, column: u32) -> (String, u32) {
    let line = lines.get(index);
    let inherited = under_secret_block(lines, index);
    if !inherited && !line.bytes().any(|b| b == b':') {
        return (line.to_owned(), column);
    }
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len());
    let mut col = column;
    // (secret context, current key hides) per open flow collection; the base is the block
    let mut stack: Vec<bool> = vec![inherited];
    let mut key_hides = false;
    let mut i = 0;
    let flow = |stack: &Vec<bool>| stack.len() > 1;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '-' | '?' if !flow(&stack) && (c != '-' || chars.get(i + 1).is_none_or(|n| *n == ' ')) => {
                out.push(c);
                i += 1;
            }
            '#' if i == 0 || chars[i - 1] == ' ' || chars[i - 1] == '\t' => {
                out.extend(&chars[i..]);
                break;
            }
            '{' | '[' => {
                stack.push(*stack.last().unwrap_or(&false) || key_hides);
                key_hides = false;
                out.push(c);
                i += 1;
            }
            '}' | ']' => {
                if stack.len() > 1 {
                    stack.pop();
                }
                key_hides = false;
                out.push(c);
                i += 1;
            }
            ',' | ' ' | '\t' => {
                if c == ',' {
                    key_hides = false;
                }
                out.push(c);
                i += 1;
            }
            _ => {
                let end = scalar_end(&chars, i, flow(&stack));
                let token: String = chars[i..end].iter().collect();
                let mut j = end;
                while j < chars.len() && chars[j] == ' ' {
                    j += 1;
                }
                let is_key = j < chars.len()
                    && chars[j] == ':'
                    && chars
                        .get(j + 1)
                        .is_none_or(|n| matches!(n, ' ' | '\t' | ',' | '}' | ']'));
                let hidden = *stack.last().unwrap_or(&false) || key_hides;
                if is_key {
                    key_hides = hides_value(token.trim_matches(['"', '\'']));
                    out.extend(&chars[i..=j]);
                    i = j + 1;
                } else if hidden && !matches!(token.as_str(), "|" | ">" | "|-" | ">-" | "|+" | ">+") {
                    out.push_str(MASK);
                    let (start, len) = (i as u32 + 1, (end - i) as u32);
                    if col > start {
                        col = if col >= start + len {
                            col - len + MASK.len() as u32
                        } else {
                            start
                        };
                    }
                    i = end;
                } else {
                    out.extend(&chars[i..end]);
                    i = end;
                }
            }
        }
    }
    (out, col)
}

/// Where the scalar starting at `i` ends: a quoted one at its closing quote, a plain one
/// before `: `, ` #`, or (in a flow collection) before `,`, `]`, `}`.
fn scalar_end(chars: &[char], i: usize, flow: bool) -> usize {
    let q = chars[i];
    if q == '"' || q == '\'' {
        let mut j = i + 1;
        while j < chars.len() {
            if q == '"' && chars[j] == '\\' {
                j += 2;
                continue;
            }
            if chars[j] == q {
                if q == '\'' && chars.get(j + 1) == Some(&'\'') {
                    j += 2;
                    continue;
                }
                return j + 1;
            }
            j += 1;
        }
        return chars.len();
    }
    let mut j = i;
    while j < chars.len() {
        let c = chars[j];
        let next_blank = chars.get(j + 1).is_none_or(|n| matches!(n, ' ' | '\t'));
        if c == ':' && (next_blank || flow && chars.get(j + 1).is_some_and(|n| matches!(n, ',' | '}' | ']'))) {
            break;
        }
        if c == '#' && j > i && matches!(chars[j - 1], ' ' | '\t') {
            break;
        }
        if flow && matches!(c, ',' | '[' | ']' | '{' | '}') {
            break;
        }
        j += 1;
    }
    // (trailing blanks belong to no scalar)
    while j > i && matches!(chars[j - 1], ' ' | '\t') {
        j -= 1;
    }
    j
}

/// Whether a line is nested (by indentation) under a block key that hides its value.
fn under_secret_block(lines: &Lines<'_>, index: usize) -> bool {
    let indent = |l: &str| l.len() - l.trim_start_matches([' ', '\t']).len();
    let here = lines.get(index);
    let mut limit = indent(here) + usize::from(here.trim_start().starts_with('-'));
    // (bounded: a deeper nesting than this is no config anyone writes)
    for l in (0..index).rev().take(10_000).map(|i| lines.get(i)) {
        if limit == 0 {
            break;
        }
        let body = l.trim_start_matches([' ', '\t']);
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        // the key of `- key: v` sits after its dashes
        let mut key_at = indent(l);
        let mut rest = body;
        while let Some(r) = rest.strip_prefix("- ").or_else(|| (rest == "-").then_some("")) {
            key_at += rest.len() - r.trim_start().len();
            rest = r.trim_start();
        }
        if key_at >= limit {
            continue;
        }
        if let Some(k) = block_key(rest)
            && hides_value(k)
        {
            return true;
        }
        limit = key_at;
    }
    false
}

/// The key of a block mapping line (`key:` or `key: value`), unquoted.
fn block_key(body: &str) -> Option<&str> {
    let chars: Vec<char> = body.chars().collect();
    if chars.is_empty() || matches!(chars[0], '{' | '[') {
        return None;
    }
    let end = scalar_end(&chars, 0, false);
    let rest = body.chars().skip(end).collect::<String>();
    let key_len: usize = chars[..end].iter().map(|c| c.len_utf8()).sum();
    rest.trim_start()
        .starts_with(':')
        .then(|| body[..key_len].trim_matches(['"', '\'']))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> (String, Vec<usize>) {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        (text.to_owned(), starts)
    }

    fn mask(text: &str, line: usize) -> String {
        let (text, starts) = lines(text);
        mask_line(
            &Lines {
                text: &text,
                starts: &starts,
            },
            line - 1,
            1,
        )
        .0
    }

    #[test]
    fn secrets_are_masked_on_their_line_and_under_their_key() {
        assert_eq!(mask("token: ghp_X\n", 1), "token: ********");
        assert_eq!(
            mask("flow: {token: FLOWLEAK, enabled: on}\n", 1),
            "flow: {token: ********, enabled: on}"
        );
        assert_eq!(
            mask("a:\n  token: {secretKeyRef: ghp_LEAK1}\n", 2),
            "  token: {secretKeyRef: ********}"
        );
        assert_eq!(
            mask("x: {secretKeyRef: {name: n, key: k, value: ghp_LEAK2}}\n", 1),
            "x: {secretKeyRef: {name: ********, key: ********, value: ********}}"
        );
        assert_eq!(mask("tokens:\n  - ghp_A\n  - ghp_B\nother: shown\n", 3), "  - ********");
        assert_eq!(mask("tokens:\n- ghp_A\n", 2), "- ********");
        assert_eq!(
            mask("privateKey: |\n  -----BEGIN KEY-----\n  BLOCKLEAK\nx: 1\n", 3),
            "  ********"
        );
        assert_eq!(mask("privateKey: |\n  BLOCK\nx: shown\n", 3), "x: shown");
        assert_eq!(mask("token: 'it''s' # note\n", 1), "token: ******** # note");
        assert_eq!(
            mask("- name: catalog\n  config:\n    token:\n      value: LEAK\n", 4),
            "      value: ********"
        );
        assert_eq!(
            mask("name: catalog\ndescription: about a token\n", 2),
            "description: about a token"
        );
    }

    #[test]
    fn the_column_stays_on_its_token() {
        let (text, starts) = lines("flow: {token: FLOWLEAK, enabled: on}");
        let lines = Lines {
            text: &text,
            starts: &starts,
        };
        let (masked, col) = mask_line(&lines, 0, 34);
        assert_eq!(masked.chars().nth(col as usize - 1), Some('o'));
        let (_, col) = mask_line(&lines, 0, 15);
        assert_eq!(col, 15);
    }
}
