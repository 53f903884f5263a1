//! The promote's text edit (pure): the Plugin takes the rollout's version, artifact and
//! signature, and the Rollout document goes, every other byte of each file kept (comments,
//! key order, quoting elsewhere, the other documents).
//!
//! Values are found with the loader's own span machinery (`load::yaml::spans`: the
//! `line:col` of a JSON pointer in document *n*), so "document *n*" means what it means to
//! every other stage (empty documents not counted). A replaced scalar (plain, single- or
//! double-quoted, or a block scalar) becomes a double-quoted JSON string. Every edit is
//! checked by parsing the result: the edited document must be the old one with exactly these
//! values changed and every other document must be unchanged, else the edit is refused (an
//! anchor, an alias, a multi-line plain scalar, a flow mapping it cannot split…).

use crate::config::Limits;
use crate::load::yaml;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// What a promote changes: the Plugin (document `plugin_doc` of `plugin_file`) takes the new
/// version, artifact and signature, and the Rollout (document `rollout_doc` of
/// `rollout_file`) is removed. Paths are repo paths (`plugins/techdocs.yaml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promote {
    pub plugin_file: String,
    pub plugin_doc: usize,
    pub version: String,
    pub package: String,
    pub integrity: String,
    /// The new version's signature; `None` removes the Plugin's.
    pub signature: Option<String>,
    pub rollout_file: String,
    pub rollout_doc: usize,
}

/// The new contents of the files the promote changes (`None`: delete the file, the rollout
/// was its only document). `read` gives a file's current text by repo path. Errors say which
/// `file:line` could not be rewritten.
pub fn promote(p: &Promote, read: impl Fn(&str) -> Option<String>) -> Result<BTreeMap<String, Option<String>>, String> {
    let mut out: BTreeMap<String, Option<String>> = BTreeMap::new();
    let plugin_text = read(&p.plugin_file).ok_or_else(|| format!("`{}` is not in the tree", p.plugin_file))?;
    let (edited, plugin_name) = edit_plugin(p, &plugin_text)?;
    out.insert(p.plugin_file.clone(), Some(edited));
    let rollout_text = match out.get(&p.rollout_file) {
        Some(Some(t)) => t.clone(),
        _ => read(&p.rollout_file).ok_or_else(|| format!("`{}` is not in the tree", p.rollout_file))?,
    };
    let removed = remove_rollout(&p.rollout_file, p.rollout_doc, &rollout_text, &plugin_name)?;
    out.insert(p.rollout_file.clone(), removed);
    Ok(out)
}

fn limits() -> Limits {
    // (the files are in the repo already: they were read under its limits, at most these)
    Limits::CEILING
}

fn parse(file: &str, text: &str) -> Result<Vec<Value>, String> {
    yaml::parse(text, &limits()).map_err(|e| format!("{file}:{}: {}", e.line, e.message))
}

fn kind_of(v: &Value) -> &str {
    v.get("kind").and_then(Value::as_str).unwrap_or("")
}

/// The plugin document edited, and the plugin's name.
fn edit_plugin(p: &Promote, text: &str) -> Result<(String, String), String> {
    let file = p.plugin_file.as_str();
    let docs = parse(file, text)?;
    let doc = docs
        .get(p.plugin_doc)
        .ok_or_else(|| format!("`{file}` has no document {}", p.plugin_doc))?;
    if kind_of(doc) != "Plugin" {
        return Err(format!("document {} of `{file}` is not a Plugin", p.plugin_doc));
    }
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let pointers = [
        "",
        "/spec",
        "/spec/version",
        "/spec/artifact",
        "/spec/artifact/package",
        "/spec/artifact/integrity",
        "/spec/signature",
    ];
    let spans = spans_of(text, p.plugin_doc, &pointers);
    let lines = Lines::new(text);
    let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    for (ptr, value) in [
        ("/spec/version", &p.version),
        ("/spec/artifact/package", &p.package),
        ("/spec/artifact/integrity", &p.integrity),
    ] {
        let range = scalar_range(file, text, &lines, &spans, ptr)?;
        edits.push((range, quoted(value)));
    }
    let had = doc.pointer("/spec/signature").is_some();
    match (had, &p.signature) {
        (true, Some(sig)) => {
            let (line, indent) = key_line(file, &lines, &spans, "/spec/signature")?;
            match block(sig, indent) {
                // (a signature reads best as the literal block `scripts/sign-plugin` writes)
                Some(b) => {
                    let end = block_end(&lines, line, indent);
                    let eol = if lines.text(end).ends_with('\r') { "\r\n" } else { "\n" };
                    edits.push((
                        lines.start(line)..lines.end_with_newline(end),
                        format!("{}signature: {}", " ".repeat(indent), b.replace('\n', eol)),
                    ));
                }
                None => {
                    let range = scalar_range(file, text, &lines, &spans, "/spec/signature")?;
                    edits.push((range, quoted(sig)));
                }
            }
        }
        (true, None) => {
            let (line, indent) = key_line(file, &lines, &spans, "/spec/signature")?;
            let end = block_end(&lines, line, indent);
            edits.push((lines.start(line)..lines.end_with_newline(end), String::new()));
        }
        (false, Some(sig)) => {
            let (line, indent) = key_line(file, &lines, &spans, "/spec/artifact")?;
            let end = block_end(&lines, line, indent);
            let at = lines.end_with_newline(end);
            let newline = if text[..at].ends_with('\n') { "" } else { "\n" };
            let eol = if lines.text(end).ends_with('\r') { "\r\n" } else { "\n" };
            let value = match block(sig, indent) {
                Some(b) => format!("{}signature: {}", " ".repeat(indent), b.replace('\n', eol)),
                None => format!("{}signature: {}{eol}", " ".repeat(indent), quoted(sig)),
            };
            edits.push((at..at, format!("{newline}{value}")));
        }
        (false, None) => {}
    }
    let new = apply(text, edits);
    // the check: exactly these values changed, nothing else
    let mut expected = docs.clone();
    let d = &mut expected[p.plugin_doc];
    d["spec"]["version"] = Value::String(p.version.clone());
    d["spec"]["artifact"]["package"] = Value::String(p.package.clone());
    d["spec"]["artifact"]["integrity"] = Value::String(p.integrity.clone());
    match &p.signature {
        Some(s) => d["spec"]["signature"] = Value::String(s.clone()),
        None => {
            if let Some(m) = d["spec"].as_object_mut() {
                m.remove("signature");
            }
        }
    }
    let got = parse(file, &new)
        .map_err(|e| format!("{e} (after rewriting the plugin's version and artifact; edit `{file}` by hand)"))?;
    if got != expected {
        let line = spans
            .nodes
            .get("/spec")
            .or_else(|| spans.nodes.get(""))
            .map_or(0, |p| p.0);
        return Err(format!(
            "{file}:{line}: the plugin's version, artifact or signature is not written as plain or quoted \
             scalars rampart can rewrite (an anchor, an alias, a flow mapping?); edit it by hand"
        ));
    }
    Ok((new, name))
}

/// The rollout document removed: the new text, or `None` when it was the file's only one.
fn remove_rollout(file: &str, index: usize, text: &str, plugin: &str) -> Result<Option<String>, String> {
    let docs = parse(file, text)?;
    let doc = docs
        .get(index)
        .ok_or_else(|| format!("`{file}` has no document {index}"))?;
    if kind_of(doc) != "Rollout" {
        return Err(format!("document {index} of `{file}` is not a Rollout"));
    }
    let rolls = doc.pointer("/spec/plugin").and_then(Value::as_str).unwrap_or_default();
    if rolls != plugin {
        return Err(format!(
            "the Rollout in document {index} of `{file}` rolls out `{rolls}`, not the plugin `{plugin}`"
        ));
    }
    if docs.len() == 1 {
        return Ok(None);
    }
    let spans = spans_of(text, index, &[""]);
    let lines = Lines::new(text);
    let root = spans
        .nodes
        .get("")
        .ok_or_else(|| format!("`{file}`: document {index} not found"))?;
    let root = root.0 as usize - 1;
    // the document runs from its `---` (or the end of the one before, or the file's start) to
    // the next `---` (or its own `...`, or the end of the file)
    let mut start = 0;
    let mut end = lines.len();
    for i in 0..lines.len() {
        let l = lines.text(i);
        if i <= root {
            if is_marker(l, "---") {
                start = i;
            } else if is_marker(l, "...") && i < root {
                start = i + 1;
            }
        } else if is_marker(l, "---") {
            end = i;
            break;
        } else if is_marker(l, "...") {
            end = i + 1;
            break;
        }
    }
    let from = lines.start(start);
    let to = if end == lines.len() {
        text.len()
    } else {
        lines.start(end)
    };
    let mut new = String::with_capacity(text.len());
    new.push_str(&text[..from]);
    new.push_str(&text[to..]);
    let mut expected = docs;
    expected.remove(index);
    match parse(file, &new) {
        Ok(got) if got == expected => Ok(Some(new)),
        _ => Err(format!(
            "{file}:{}: could not cut the Rollout document out of the file without touching the others; \
             remove it by hand",
            root + 1
        )),
    }
}

/// Whether a line is the document marker `---` / `...` (alone or followed by a space).
fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r']))
}

fn spans_of(text: &str, doc: usize, pointers: &[&str]) -> yaml::Spans {
    let wanted: HashMap<usize, Vec<String>> =
        HashMap::from([(doc, pointers.iter().map(|p| (*p).to_owned()).collect())]);
    yaml::spans(text, &limits(), &wanted)
        .into_iter()
        .nth(doc)
        .unwrap_or_default()
}

/// A multi-line value as a YAML literal block under a key indented `indent` (`|` and its
/// lines, each ending in a newline), when every line can be written as is: printable, not
/// empty, no leading space. `None`: write it quoted.
fn block(value: &str, indent: usize) -> Option<String> {
    let (body, chomp) = match value.strip_suffix('\n') {
        Some(b) => (b, "|"),
        None => (value, "|-"),
    };
    let lines: Vec<&str> = body.split('\n').collect();
    let plain = |l: &&str| {
        !l.is_empty() && !l.starts_with([' ', '#']) && !l.ends_with(' ') && l.chars().all(|c| !c.is_control())
    };
    if lines.len() < 2 || !lines.iter().all(plain) {
        return None;
    }
    let pad = " ".repeat(indent + 2);
    let mut out = format!("{chomp}\n");
    for l in lines {
        out.push_str(&pad);
        out.push_str(l);
        out.push('\n');
    }
    Some(out)
}

/// A value as a YAML double-quoted scalar (JSON's escapes are YAML's).
fn quoted(s: &str) -> String {
    Value::String(s.to_owned()).to_string()
}

/// Apply non-overlapping edits (byte ranges of `text`).
fn apply(text: &str, mut edits: Vec<(std::ops::Range<usize>, String)>) -> String {
    edits.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
    let mut out = text.to_owned();
    for (r, with) in edits {
        out.replace_range(r, &with);
    }
    out
}

/// The lines of a text, with their byte offsets.
struct Lines<'t> {
    text: &'t str,
    starts: Vec<usize>,
}

impl<'t> Lines<'t> {
    fn new(text: &'t str) -> Lines<'t> {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        if starts.last() == Some(&text.len()) && !text.is_empty() {
            starts.pop();
        }
        Lines { text, starts }
    }

    fn len(&self) -> usize {
        self.starts.len()
    }

    fn start(&self, i: usize) -> usize {
        self.starts[i]
    }

    /// Line `i` without its line feed.
    fn text(&self, i: usize) -> &'t str {
        let end = self.starts.get(i + 1).map_or(self.text.len(), |e| e - 1);
        &self.text[self.starts[i]..end]
    }

    /// The byte after line `i`'s line feed (or the end of the text).
    fn end_with_newline(&self, i: usize) -> usize {
        self.starts.get(i + 1).copied().unwrap_or(self.text.len())
    }

    /// The byte offset of (1-based) `line:col`, the column counted in characters.
    fn offset(&self, line: u32, col: u32) -> usize {
        let i = line as usize - 1;
        let l = self.text(i);
        self.starts[i] + l.char_indices().nth(col as usize - 1).map_or(l.len(), |(b, _)| b)
    }
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// The 0-based line of the key `ptr` and its indentation; the key must begin its line.
fn key_line(file: &str, lines: &Lines<'_>, spans: &yaml::Spans, ptr: &str) -> Result<(usize, usize), String> {
    let (line, col) = spans
        .keys
        .get(ptr)
        .ok_or_else(|| format!("`{file}`: `{ptr}` not found"))?;
    let i = *line as usize - 1;
    let l = lines.text(i);
    let indent = indent_of(l);
    if col - 1 != indent as u32 {
        return Err(format!(
            "{file}:{line}: the key of `{ptr}` is not at the start of its line (a flow mapping?); edit it by hand"
        ));
    }
    Ok((i, indent))
}

/// The last line of the block that starts with the key on line `key`: the lines after it
/// indented deeper (blank lines and shallower comments in between do not end it).
fn block_end(lines: &Lines<'_>, key: usize, indent: usize) -> usize {
    let mut last = key;
    for i in key + 1..lines.len() {
        let l = lines.text(i);
        let t = l.trim();
        if t.is_empty() {
            continue;
        }
        let deeper = indent_of(l) > indent;
        if t.starts_with('#') && !deeper {
            continue;
        }
        if !deeper {
            break;
        }
        last = i;
    }
    last
}

/// The bytes of the scalar at `ptr`: from its first character to its last (a quoted one's
/// closing quote; a block scalar's last line).
fn scalar_range(
    file: &str,
    text: &str,
    lines: &Lines<'_>,
    spans: &yaml::Spans,
    ptr: &str,
) -> Result<std::ops::Range<usize>, String> {
    let (line, col) = *spans
        .nodes
        .get(ptr)
        .ok_or_else(|| format!("`{file}`: `{ptr}` not found"))?;
    let not =
        |what: &str| format!("{file}:{line}: `{ptr}` is {what}, not a scalar rampart can rewrite; edit it by hand");
    // a block scalar's node starts at its first line of content: it runs from the `|` or `>`
    // after its key to the end of the key's block
    if let Some(&(key_line_no, key_col)) = spans.keys.get(ptr)
        && key_line_no < line
    {
        let at = lines.offset(key_line_no, key_col);
        let after = &text[at..lines.end_with_newline(key_line_no as usize - 1)];
        if let Some(colon) = after.find(':') {
            let value = after[colon + 1..].trim_start_matches([' ', '\t']);
            if value.starts_with(['|', '>']) {
                let start = at + after.len() - after[colon + 1..].len() + (after[colon + 1..].len() - value.len());
                let (key, indent) = key_line(file, lines, spans, ptr)?;
                let last = block_end(lines, key, indent);
                return Ok(start..lines.start(last) + lines.text(last).trim_end_matches('\r').len());
            }
        }
    }
    let start = lines.offset(line, col);
    let rest = &text[start..];
    let end = match rest.chars().next() {
        Some('"') => {
            let mut escaped = false;
            let close = rest[1..]
                .char_indices()
                .find(|&(_, c)| {
                    let done = c == '"' && !escaped;
                    escaped = c == '\\' && !escaped;
                    done
                })
                .ok_or_else(|| not("an unterminated string"))?;
            start + 1 + close.0 + 1
        }
        Some('\'') => {
            let b = rest.as_bytes();
            let mut i = 1;
            loop {
                match b.get(i) {
                    None => return Err(not("an unterminated string")),
                    Some(b'\'') if b.get(i + 1) == Some(&b'\'') => i += 2,
                    Some(b'\'') => break start + i + 1,
                    Some(_) => i += 1,
                }
            }
        }
        Some('&' | '!') => return Err(not("anchored or tagged")),
        Some('*') => return Err(not("an alias")),
        Some('[' | '{') => return Err(not("a collection")),
        None => return Err(not("missing")),
        Some(_) => {
            // a plain scalar ends at the line's end or a comment, and in a flow collection
            // also at `,`, `]` or `}`
            let parent = &ptr[..ptr.rfind('/').unwrap_or(0)];
            let flow = ancestors(parent).any(|a| {
                spans
                    .nodes
                    .get(a)
                    .is_some_and(|&(l, c)| matches!(text[lines.offset(l, c)..].chars().next(), Some('{' | '[')))
            });
            let line_end = rest.find(['\n', '\r']).unwrap_or(rest.len());
            let mut end = line_end;
            if let Some(i) = rest[..line_end].find(" #").or_else(|| rest[..line_end].find("\t#")) {
                end = end.min(i);
            }
            if flow && let Some(i) = rest[..line_end].find([',', ']', '}']) {
                end = end.min(i);
            }
            start + rest[..end].trim_end().len()
        }
    };
    Ok(start..end)
}

/// `ptr` and every pointer above it, up to the document's root (`""`).
fn ancestors(ptr: &str) -> impl Iterator<Item = &str> {
    let mut next = Some(ptr);
    std::iter::from_fn(move || {
        let cur = next?;
        next = cur.rfind('/').map(|i| &cur[..i]);
        Some(cur)
    })
}

#[cfg(test)]
mod tests;
