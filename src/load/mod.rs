//! Load: bytes → YAML documents as JSON values, under budgets; and anchors → `line:col` (pure).
//!
//! The fast path parses each file once, straight into `serde_json::Value` ([`yaml`]). Spans
//! are only needed for files that have problems, so [`resolve`] re-parses just those files,
//! with the same builder recording every node's pointer, to map JSON pointers back to
//! `line:col`: document numbers and pointers agree by construction.
//!
//! On top of the YAML rules of [`yaml`], keys that differ only in case are errors, and
//! integral floats (`1e3`) become integers, as JSON Schema counts them.

mod mask;
pub mod yaml;

use crate::config::Limits;
use crate::diagnostic::{Anchor, Code, Diagnostic, Location, quote};
use crate::source::SourceFile;
use serde_json::Value;
use std::collections::HashMap;

/// One file after loading: its text (empty when it is not valid UTF-8) and its documents.
#[derive(Debug, Clone)]
pub struct LoadedFile {
    pub path: String,
    pub text: String,
    /// Non-empty documents in order; empty documents are skipped (and so not counted).
    /// Validation moves them into the typed model.
    pub docs: Vec<Value>,
    /// How many documents the file held.
    pub doc_count: usize,
}

/// Decode and parse one file. Problems come back as diagnostics; the file's documents are
/// empty when it could not be parsed.
pub fn load_file(file: SourceFile, limits: &Limits) -> (LoadedFile, Vec<Diagnostic>) {
    let mut out = LoadedFile {
        path: file.path,
        text: String::new(),
        docs: Vec::new(),
        doc_count: 0,
    };
    let mut diags = Vec::new();
    // the bytes become the text without a copy
    out.text = match String::from_utf8(file.bytes) {
        Ok(t) => t,
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let (line, column) = line_col_of_byte(e.as_bytes(), valid);
            diags.push(
                Diagnostic::new(
                    Code::InvalidUtf8,
                    Anchor::Position {
                        file: out.path.clone(),
                        line,
                        column,
                    },
                    format!("file is not valid UTF-8 (byte {} is invalid)", valid + 1),
                )
                .with_hint("save the file as UTF-8; other encodings (UTF-16, Latin-1) are not read"),
            );
            return (out, diags);
        }
    };
    let (text, path) = (out.text.as_str(), out.path.as_str());
    if let Some(i) = text.find('\0') {
        let (line, column) = line_col_of_byte(text.as_bytes(), i);
        diags.push(
            Diagnostic::new(
                Code::NulByte,
                Anchor::Position {
                    file: path.to_owned(),
                    line,
                    column,
                },
                "file contains a NUL byte",
            )
            .with_hint("a config file is text; remove the NUL byte (was a binary file committed by mistake?)"),
        );
        return (out, diags);
    }
    if let Some(i) = text
        .match_indices('\r')
        .map(|(i, _)| i)
        .find(|&i| text.as_bytes().get(i + 1) != Some(&b'\n'))
    {
        let (line, column) = line_col_of_byte(text.as_bytes(), i);
        diags.push(
            Diagnostic::new(
                Code::YamlSyntax,
                Anchor::Position {
                    file: path.to_owned(),
                    line,
                    column,
                },
                "carriage return without a line feed (old Mac line ending)",
            )
            .with_hint("save the file with LF or CRLF line endings"),
        );
        return (out, diags);
    }
    match yaml::parse_noting(text, limits) {
        Ok((docs, notes)) => {
            let mut docs = docs;
            for (doc, value) in docs.iter_mut().enumerate() {
                check_value(value, path, doc, &mut String::new(), &mut diags);
            }
            yaml11_in_plugin_config(&docs, &notes, path, &mut diags);
            out.doc_count = docs.len();
            if !diags.iter().any(Diagnostic::is_error) {
                out.docs = docs;
            }
        }
        Err(e) => diags.push(
            Diagnostic::new(
                e.code,
                Anchor::Position {
                    file: path.to_owned(),
                    line: e.line,
                    column: e.column,
                },
                e.message,
            )
            .with_hint(e.hint),
        ),
    }
    (out, diags)
}

/// A plugin's `config` (`/spec/plugins/N/config/…` of a Tenant) goes to a tool rampart does
/// not control, and YAML 1.1 tools read some plain scalars there differently from rampart:
/// each gets a warning saying how (R122), and quoting the value says it is text.
fn yaml11_in_plugin_config(docs: &[Value], notes: &[yaml::Yaml11Note], file: &str, diags: &mut Vec<Diagnostic>) {
    for n in notes {
        let in_config = n
            .pointer
            .strip_prefix("/spec/plugins/")
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(i, rest)| i.bytes().all(|b| b.is_ascii_digit()) && rest.starts_with("config/"));
        if !in_config || docs.get(n.doc).and_then(|d| d.get("kind")).and_then(Value::as_str) != Some("Tenant") {
            continue;
        }
        let shown = quote(&n.text);
        let (reading, hint) = match n.reading {
            yaml::Yaml11::Boolean(b) => (format!("the boolean `{b}`"), yaml::BOOLEAN_HINT),
            yaml::Yaml11::Integer(Some(i)) => (format!("the number `{i}`"), yaml::NUMBER_HINT),
            yaml::Yaml11::Integer(None) => ("a number".to_owned(), yaml::NUMBER_HINT),
        };
        diags.push(
            Diagnostic::at_node(
                Code::Yaml11Scalar,
                file,
                n.doc,
                &n.pointer,
                format!("{shown} is the text {shown} to rampart, but YAML 1.1 tools read it as {reading}"),
            )
            .with_hint(format!(
                "{hint}; quote it (`\"{}\"`) if the plugin should get the text",
                n.text
            )),
        );
    }
}

/// Keys equal but for case are errors. Integral floats (`1e3`) become integers, as JSON
/// Schema counts them as integers: the typed model then reads them where one is expected.
fn check_value(v: &mut Value, file: &str, doc: usize, ptr: &mut String, diags: &mut Vec<Diagnostic>) {
    if let Value::Number(n) = v
        && let Some(f) = n.as_f64()
        && n.is_f64()
        && f.fract() == 0.0
        && f.abs() < 9.0e15
    {
        *v = Value::from(f as i64);
        return;
    }
    match v {
        Value::Array(xs) => {
            for (i, x) in xs.iter_mut().enumerate() {
                let len = ptr.len();
                ptr.push('/');
                ptr.push_str(&i.to_string());
                check_value(x, file, doc, ptr, diags);
                ptr.truncate(len);
            }
        }
        Value::Object(map) => {
            // unique keys without capitals cannot differ only in case: skip the common case
            if map.len() > 1
                && map.keys().any(|k| {
                    k.chars()
                        .any(|c| !c.is_lowercase() && c.to_lowercase().next() != Some(c))
                })
            {
                let mut seen: HashMap<String, &str> = HashMap::with_capacity(map.len());
                for k in map.keys() {
                    if let Some(first) = seen.insert(k.to_lowercase(), k)
                        && first != k
                    {
                        diags.push(
                            Diagnostic::at_node(
                                Code::CaseDuplicateKey,
                                file,
                                doc,
                                &format!("{ptr}/{}#key", escape_pointer(k)),
                                format!("keys `{first}` and `{k}` differ only in case"),
                            )
                            .with_hint("keep one of them; keys that differ only in case are almost always a typo"),
                        );
                    }
                }
            }
            for (k, x) in map.iter_mut() {
                let len = ptr.len();
                ptr.push('/');
                ptr.push_str(&escape_pointer(k));
                check_value(x, file, doc, ptr, diags);
                ptr.truncate(len);
            }
        }
        _ => {}
    }
}

/// RFC 6901 escaping of one pointer token.
pub fn escape_pointer(token: &str) -> String {
    if token.contains(['~', '/']) {
        token.replace('~', "~0").replace('/', "~1")
    } else {
        token.to_owned()
    }
}

fn line_col_of_byte(bytes: &[u8], offset: usize) -> (u32, u32) {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[line_start..]).chars().count() + 1;
    (line as u32, column as u32)
}

// ---------------------------------------------------------------------------------------
// Spans: pointer → line:col, computed only for files that have diagnostics.

/// Most diagnostics shown per file; past it, one warning says how many more there were, so
/// a pathological file cannot make a report (or its rendering) grow without bound.
pub const MAX_PER_FILE: usize = 100;

/// Keep the first [`MAX_PER_FILE`] diagnostics of each file, and say how many were dropped.
pub fn cap_per_file(diags: Vec<Diagnostic>) -> Vec<Diagnostic> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(diags.len().min(1 << 16));
    for d in diags {
        let Some(file) = d.file().map(str::to_owned) else {
            out.push(d);
            continue;
        };
        let n = seen.entry(file).or_default();
        *n += 1;
        if *n <= MAX_PER_FILE {
            out.push(d);
        }
    }
    let mut over: Vec<(String, usize)> = seen.into_iter().filter(|(_, n)| *n > MAX_PER_FILE).collect();
    over.sort();
    for (file, n) in over {
        out.push(
            Diagnostic::at_file(
                Code::TooManyProblems,
                &file,
                format!("{} more problems in this file are not shown", n - MAX_PER_FILE),
            )
            .with_hint("fix the problems shown and run again; the rest are often the same mistake repeated"),
        );
    }
    out
}

/// Fill `location` and `snippet` of every diagnostic. Pointers resolve to the nearest
/// recorded ancestor (a missing field is reported at its parent's key, a node inside an
/// alias at the alias); a `…#key` suffix asks for the key rather than its value.
pub fn resolve<'f>(diags: &mut [Diagnostic], files: impl IntoIterator<Item = &'f LoadedFile>, limits: &Limits) {
    use rayon::prelude::*;
    // (a later file of the same path wins: texts read for files the parse cache skipped)
    let by_path: HashMap<&str, &LoadedFile> = files.into_iter().map(|f| (f.path.as_str(), f)).collect();
    // the pointers each file's documents need, so span recording stays on those paths
    let mut wanted: HashMap<&str, HashMap<usize, Vec<String>>> = HashMap::new();
    for d in diags.iter() {
        if let Anchor::Node { file, doc, pointer } = &d.anchor
            && let Some((path, _)) = by_path.get_key_value(file.as_str())
        {
            let base = pointer.strip_suffix("#key").unwrap_or(pointer).to_owned();
            wanted.entry(path).or_default().entry(*doc).or_default().push(base);
        }
    }
    // span tables of the files that need one, built on both cores
    let tables: HashMap<&str, Vec<yaml::Spans>> = wanted
        .into_par_iter()
        .map(|(path, w)| (path, yaml::spans(&by_path[path].text, limits, &w)))
        .collect();
    // line starts of the files that need snippets, computed once per file
    let mut lines: HashMap<&str, Vec<usize>> = HashMap::new();
    for d in diags.iter_mut() {
        let (file, line, column) = match &d.anchor {
            Anchor::None => continue,
            Anchor::File { file } => (file.clone(), 0, 0),
            Anchor::Position { file, line, column } => (file.clone(), *line, *column),
            Anchor::Node { file, doc, pointer } => {
                let (base, key) = match pointer.strip_suffix("#key") {
                    Some(b) => (b, true),
                    None => (pointer.as_str(), false),
                };
                let (line, column) = tables
                    .get(file.as_str())
                    .and_then(|t| t.get(*doc))
                    .and_then(|t| yaml::locate(t, base, key))
                    .unwrap_or((0, 0));
                (file.clone(), line, column)
            }
        };
        if line > 0
            && let Some((path, f)) = by_path.get_key_value(file.as_str())
        {
            let starts = lines.entry(path).or_insert_with(|| line_starts(&f.text));
            if starts.get(line as usize - 1).is_some() {
                // a secret is in git already; no report copies it further, whatever the code
                let lines = mask::Lines { text: &f.text, starts };
                let (text, column) = mask::mask_line(&lines, line as usize - 1, column);
                let (snippet, col) = crop(&text, column);
                // a tab shows as `→` (one character, so the caret stays aligned): a tab is
                // often the mistake, and as white space it would be invisible
                let snippet = snippet.replace('\t', "→");
                d.snippet = Some(snippet);
                d.snippet_column = col;
            }
        }
        d.location = Some(Location { file, line, column });
    }
}

fn line_starts(text: &str) -> Vec<usize> {
    if text.is_empty() {
        return Vec::new(); // an undecodable file has no lines to show
    }
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

/// A window of at most `WIDTH` characters of `line` around `column`, with `…` marking what
/// was cut, and the column within the window. Only the window is scanned, so cropping is
/// cheap even on a megabyte-long line.
fn crop(line: &str, column: u32) -> (String, u32) {
    const WIDTH: usize = 120;
    if line.len() <= WIDTH {
        return (line.to_owned(), column);
    }
    let col = (column.max(1) - 1) as usize;
    let start = col.saturating_sub(WIDTH / 2);
    let mut chars = line.chars().skip(start);
    let mut out: String = if start > 0 { "…".to_owned() } else { String::new() };
    out.extend(chars.by_ref().take(WIDTH));
    if chars.next().is_some() {
        out.push('…');
    }
    (out, (col - start + 1 + usize::from(start > 0)) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(src: &str) -> (LoadedFile, Vec<Diagnostic>) {
        load_file(
            SourceFile {
                path: "t.yaml".into(),
                bytes: src.as_bytes().to_vec(),
            },
            &Limits::default(),
        )
    }

    fn codes(src: &str) -> Vec<&'static str> {
        load(src).1.iter().map(|d| d.code.as_str()).collect()
    }

    #[test]
    fn strict_scalars_stay_strings() {
        let (f, d) = load("a: NO\nb: on\nc: 0755\nd: 1_000\ne: 2001-12-14\nf: yes\ng: true\nh: 1e3\n");
        assert!(d.is_empty(), "{d:?}");
        let v = &f.docs[0];
        assert_eq!(v["a"], "NO");
        assert_eq!(v["b"], "on");
        assert_eq!(v["c"], "0755");
        assert_eq!(v["d"], "1_000");
        assert_eq!(v["e"], "2001-12-14");
        assert_eq!(v["f"], "yes");
        assert_eq!(v["g"], true);
        assert_eq!(v["h"], 1000.0);
    }

    #[test]
    fn bad_inputs_have_codes() {
        assert_eq!(codes("a: 1\na: 2\n"), ["R113"]);
        assert_eq!(codes("Name: 1\nname: 2\n"), ["R114"]);
        assert_eq!(codes("a: !!python/object x\n"), ["R115"]);
        assert_eq!(codes("a: !include other.yaml\n"), ["R115"]);
        assert_eq!(codes("a: !!binary aGVsbG8=\n"), ["R115"]);
        assert_eq!(codes("a: !!str 0755\n"), Vec::<&str>::new());
        assert_eq!(codes("a: .nan\n"), ["R120"]);
        assert_eq!(codes("a: [1, 2\n"), ["R112"]);
        assert_eq!(codes("a: \0\n"), ["R111"]);
        let deep = "[".repeat(10_000);
        assert_eq!(codes(&deep), ["R116"]);
    }

    #[test]
    fn alias_bomb_is_rejected() {
        let mut s = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
        for (i, c) in ('b'..='i').enumerate() {
            let prev = (b'a' + i as u8) as char;
            s.push_str(&format!(
                "{c}: &{c} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
            ));
        }
        let (_, d) = load(&s);
        assert_eq!(d.iter().map(|d| d.code.as_str()).collect::<Vec<_>>(), ["R117"], "{d:?}");
    }

    #[test]
    fn pointers_resolve_to_lines() {
        let src = "---\na: 1\n---\nx:\n  y: [1, 2]\n";
        let (f, d) = load(src);
        assert!(d.is_empty());
        let mut diags = vec![
            Diagnostic::at_node(Code::TypeMismatch, "t.yaml", 1, "/x/y/1", "m"),
            Diagnostic::at_node(Code::MissingField, "t.yaml", 1, "/x/z", "m"),
            Diagnostic::at_node(Code::UnknownField, "t.yaml", 1, "/x/y#key", "m"),
        ];
        resolve(&mut diags, &[f], &Limits::default());
        let at: Vec<_> = diags
            .iter()
            .map(|d| d.location.as_ref().map(|l| (l.line, l.column)).unwrap())
            .collect();
        assert_eq!(at, [(5, 10), (4, 1), (5, 3)]);
        assert_eq!(diags[0].snippet.as_deref(), Some("  y: [1, 2]"));
        assert_eq!(diags[0].snippet_column, 10);
    }

    #[test]
    fn long_lines_are_cropped_around_the_column() {
        let line = format!("{}X{}", "a".repeat(500), "b".repeat(500));
        let (s, col) = crop(&line, 501);
        assert_eq!(s.chars().count(), 122);
        assert_eq!(s.chars().nth(col as usize - 1), Some('X'));
        assert_eq!(crop("short", 3), ("short".to_owned(), 3));
    }
}
