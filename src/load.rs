//! Load: bytes → YAML documents as JSON values, under budgets; and anchors → `line:col` (pure).
//!
//! The fast path parses each file once, straight into `serde_json::Value`. Spans are only
//! needed for files that have problems, so [`resolve`] re-parses just those files with
//! [`serde_saphyr::Spanned`] nodes to map JSON pointers back to `line:col`. Both parses use
//! the same options, so document indices and pointers agree.
//!
//! Scalar rules (YAML 1.2 core, strict): only `true`/`false` are booleans (`on`, `no`, `NO`
//! stay strings), numbers with leading zeros or underscores stay strings (`0755`, `1_000`),
//! `.nan`/`.inf` are errors, timestamps stay strings. Duplicate keys, keys that differ only
//! in case, and tags other than the core ones are errors.

use crate::config::Limits;
use crate::diagnostic::{Anchor, Code, Diagnostic, Location};
use crate::source::SourceFile;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_saphyr::Spanned;
use std::collections::HashMap;
use std::fmt;

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

fn options(limits: &Limits) -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = limits.max_depth as usize;
    budget.flow_nesting_limit = limits.max_depth as usize;
    budget.max_nodes = limits.max_nodes as usize;
    budget.max_events = (limits.max_nodes as usize).saturating_mul(4);
    budget.max_aliases = limits.max_aliases as usize;
    budget.max_documents = limits.max_documents as usize;
    budget.max_total_scalar_bytes = limits.max_file_bytes.saturating_mul(2) as usize;
    let mut alias_limits = serde_saphyr::options::AliasLimits::default();
    alias_limits.max_total_replayed_events = limits.max_nodes as usize;
    serde_saphyr::options! {
        budget: Some(budget),
        alias_limits: alias_limits,
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        reject_unsupported_tags: true,
        with_snippet: false,
    }
}

/// Decode and parse one file. Problems come back as diagnostics; the file's documents are
/// empty when it could not be parsed.
pub fn load_file(file: &SourceFile, limits: &Limits) -> (LoadedFile, Vec<Diagnostic>) {
    let mut out = LoadedFile {
        path: file.path.clone(),
        text: String::new(),
        docs: Vec::new(),
        doc_count: 0,
    };
    let mut diags = Vec::new();
    let text = match std::str::from_utf8(&file.bytes) {
        Ok(t) => t,
        Err(e) => {
            let (line, column) = line_col_of_byte(&file.bytes, e.valid_up_to());
            diags.push(
                Diagnostic::new(
                    Code::InvalidUtf8,
                    Anchor::Position {
                        file: file.path.clone(),
                        line,
                        column,
                    },
                    format!("file is not valid UTF-8 (byte {} is invalid)", e.valid_up_to() + 1),
                )
                .with_hint("save the file as UTF-8; other encodings (UTF-16, Latin-1) are not read"),
            );
            return (out, diags);
        }
    };
    out.text = text.to_owned();
    if let Some(i) = text.find('\0') {
        let (line, column) = line_col_of_byte(text.as_bytes(), i);
        diags.push(
            Diagnostic::new(
                Code::NulByte,
                Anchor::Position {
                    file: file.path.clone(),
                    line,
                    column,
                },
                "file contains a NUL byte",
            )
            .with_hint("a config file is text; remove the NUL byte (was a binary file committed by mistake?)"),
        );
        return (out, diags);
    }
    match serde_saphyr::from_multiple_with_options::<Value>(text, options(limits)) {
        Ok(docs) => {
            let mut docs = docs;
            for (doc, value) in docs.iter_mut().enumerate() {
                check_value(value, &file.path, doc, limits, &mut String::new(), &mut diags);
            }
            if text.contains("!!") || text.contains("!<") {
                core_tags(text, &file.path, &mut diags);
            }
            out.doc_count = docs.len();
            if diags.is_empty() {
                out.docs = docs;
            }
        }
        Err(e) => diags.push(yaml_error(&file.path, &e, limits)),
    }
    (out, diags)
}

/// Checks the parser does not make: keys equal but for case, and the per-scalar size cap.
/// Also normalizes integral floats (`1e3`) to integers, as JSON Schema counts them as
/// integers: the typed model then reads them where an integer is expected.
fn check_value(v: &mut Value, file: &str, doc: usize, limits: &Limits, ptr: &mut String, diags: &mut Vec<Diagnostic>) {
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
        Value::String(s) if s.len() as u64 > limits.max_scalar_bytes => {
            diags.push(
                Diagnostic::at_node(
                    Code::ScalarTooLarge,
                    file,
                    doc,
                    ptr,
                    format!(
                        "scalar is {} bytes, above the limit of {}",
                        s.len(),
                        limits.max_scalar_bytes
                    ),
                )
                .with_hint(
                    "move large content out of the config repo, or raise `spec.limits.maxScalarBytes` in rampart.yaml",
                ),
            );
        }
        Value::Array(xs) => {
            for (i, x) in xs.iter_mut().enumerate() {
                let len = ptr.len();
                ptr.push('/');
                ptr.push_str(&i.to_string());
                check_value(x, file, doc, limits, ptr, diags);
                ptr.truncate(len);
            }
        }
        Value::Object(map) => {
            if map.len() > 1 {
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
                check_value(x, file, doc, limits, ptr, diags);
                ptr.truncate(len);
            }
        }
        _ => {}
    }
}

/// Core-schema tags other than the JSON-compatible ones (`!!binary`, `!!timestamp`,
/// `!!set`, `!!omap`…) are accepted by the parser but have no place in a config spec;
/// report them. Runs only when the text spells an explicit core tag.
fn core_tags(text: &str, file: &str, diags: &mut Vec<Diagnostic>) {
    use serde_saphyr::granit_parser::{Event, Parser};
    for ev in Parser::new_from_str(text) {
        let Ok((ev, span)) = ev else { return };
        let tag = match &ev {
            Event::Scalar(_, _, _, tag) | Event::SequenceStart(_, _, tag) | Event::MappingStart(_, _, tag) => tag,
            _ => continue,
        };
        if let Some(tag) = tag
            && !tag.is_yaml_core_schema()
        {
            diags.push(
                Diagnostic::new(
                    Code::UnsupportedTag,
                    Anchor::Position {
                        file: file.to_owned(),
                        line: span.start.line() as u32,
                        column: span.start.col() as u32 + 1,
                    },
                    format!("unsupported tag `!!{}`", tag.suffix()),
                )
                .with_hint("remove the tag; specs hold plain strings, numbers, booleans, lists and mappings"),
            );
        }
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

fn yaml_error(file: &str, e: &serde_saphyr::Error, limits: &Limits) -> Diagnostic {
    use serde_saphyr::Error as E;
    use serde_saphyr::budget::BudgetBreach as B;
    let inner = match e {
        E::WithSnippet { error, .. } => error.as_ref(),
        other => other,
    };
    let (code, message, hint): (Code, String, String) = match inner {
        E::DuplicateMappingKey { key, .. } => (
            Code::DuplicateKey,
            match key {
                Some(k) => format!("duplicate key {}", crate::diagnostic::quote(k)),
                None => "duplicate key".to_owned(),
            },
            "remove one of the two entries; YAML mappings cannot repeat a key".to_owned(),
        ),
        E::UnsupportedTag { tag, .. } => (
            Code::UnsupportedTag,
            format!("unsupported tag {}", crate::diagnostic::quote(tag)),
            "remove the tag; rampart reads plain YAML and never runs or includes anything a tag names".to_owned(),
        ),
        E::NonFiniteFloat { value, .. } => (
            Code::NonFiniteNumber,
            format!("non-finite number {}", crate::diagnostic::quote(value)),
            "write a finite number, or quote the value if it is text".to_owned(),
        ),
        E::Budget { breach, .. } => match breach {
            B::Depth { .. } => (
                Code::TooDeep,
                format!("nesting is deeper than the limit of {}", limits.max_depth),
                "flatten the document, or raise `spec.limits.maxDepth` in rampart.yaml".to_owned(),
            ),
            B::Documents { .. } => (
                Code::TooManyDocuments,
                format!("more than {} documents in one file", limits.max_documents),
                "split the file, or raise `spec.limits.maxDocuments` in rampart.yaml".to_owned(),
            ),
            B::ScalarBytes { .. } => (
                Code::ScalarTooLarge,
                "scalars in this file are larger than the limit".to_owned(),
                "move large content out of the config repo".to_owned(),
            ),
            other => (
                Code::BudgetExceeded,
                format!("YAML budget exceeded ({}); aliases and anchors may not expand past the node budget", breach_name(other)),
                "remove the alias chain; rampart limits nodes and aliases so that a small file cannot expand into a huge one".to_owned(),
            ),
        },
        E::AliasReplayLimitExceeded { .. } | E::AliasExpansionLimitExceeded { .. } | E::AliasReplayStackDepthExceeded { .. } => (
            Code::BudgetExceeded,
            "YAML alias expansion exceeded the node budget".to_owned(),
            "remove the alias chain; rampart limits nodes and aliases so that a small file cannot expand into a huge one".to_owned(),
        ),
        other => {
            let msg = strip_location(&other.to_string());
            if msg.contains("recursion limit") || msg.contains("nesting") && msg.contains("limit") {
                (
                    Code::TooDeep,
                    format!("nesting is deeper than the limit of {}", limits.max_depth),
                    "flatten the document, or raise `spec.limits.maxDepth` in rampart.yaml".to_owned(),
                )
            } else if msg.contains("alias") && msg.contains("limit") || msg.contains("budget") {
                (
                    Code::BudgetExceeded,
                    "YAML alias expansion exceeded the node budget".to_owned(),
                    "remove the alias chain; rampart limits nodes and aliases so that a small file cannot expand into a huge one".to_owned(),
                )
            } else if msg.contains("tag") {
                (Code::UnsupportedTag, msg, "remove the tag; rampart reads plain YAML".to_owned())
            } else {
                (Code::YamlSyntax, msg, "fix the YAML syntax at this position".to_owned())
            }
        }
    };
    let anchor = match e.location() {
        Some(l) if l.line() > 0 => Anchor::Position {
            file: file.to_owned(),
            line: l.line() as u32,
            column: l.column() as u32,
        },
        _ => Anchor::File { file: file.to_owned() },
    };
    Diagnostic::new(code, anchor, message).with_hint(hint)
}

fn breach_name(b: &serde_saphyr::budget::BudgetBreach) -> &'static str {
    use serde_saphyr::budget::BudgetBreach as B;
    match b {
        B::Events { .. } => "events",
        B::Aliases { .. } => "aliases",
        B::Anchors { .. } => "anchors",
        B::Nodes { .. } => "nodes",
        _ => "anchor expansion",
    }
}

/// serde-saphyr messages may start with `line X column Y: `; the location is shown apart.
fn strip_location(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or(msg);
    let trimmed = match first.find(": ") {
        Some(i) if first[..i].starts_with("line ") || first.starts_with("error: line ") => &first[i + 2..],
        _ => first,
    };
    let trimmed = trimmed.trim_start_matches("error: ");
    match trimmed.find(" at line ") {
        Some(i) => trimmed[..i].to_owned(),
        None => trimmed.to_owned(),
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

enum Node {
    Leaf,
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a YAML node")
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_i128<E>(self, _: i128) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_u128<E>(self, _: u128) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element()? {
                    v.push(x)
                }
                Ok(Node::Seq(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut v = Vec::new();
                while let Some(kv) = a.next_entry()? {
                    v.push(kv)
                }
                Ok(Node::Map(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// pointer → (line, column) for every node of every document of one file.
type SpanTable = Vec<HashMap<String, (u32, u32)>>;

fn span_table(text: &str, limits: &Limits) -> SpanTable {
    let Ok(docs) = serde_saphyr::from_multiple_with_options::<Spanned<Node>>(text, options(limits)) else {
        return Vec::new();
    };
    docs.into_iter()
        .map(|root| {
            let mut at = HashMap::new();
            let mut stack = vec![(root, String::new())];
            while let Some((n, ptr)) = stack.pop() {
                at.insert(ptr.clone(), (n.referenced.line() as u32, n.referenced.column() as u32));
                match n.value {
                    Node::Leaf => {}
                    Node::Seq(xs) => {
                        for (i, x) in xs.into_iter().enumerate() {
                            stack.push((x, format!("{ptr}/{i}")));
                        }
                    }
                    Node::Map(kvs) => {
                        for (k, x) in kvs {
                            let child = format!("{ptr}/{}", escape_pointer(&k.value));
                            // a key's own position, for "unknown field" and "differ only in case"
                            at.insert(
                                format!("{child}#key"),
                                (k.referenced.line() as u32, k.referenced.column() as u32),
                            );
                            stack.push((x, child));
                        }
                    }
                }
            }
            at
        })
        .collect()
}

/// Fill `location` and `snippet` of every diagnostic. Pointers resolve to the nearest
/// existing ancestor (a missing field is reported at its parent); a `…#key` suffix asks for
/// the key rather than its value.
pub fn resolve(diags: &mut [Diagnostic], files: &[LoadedFile], limits: &Limits) {
    let by_path: HashMap<&str, &LoadedFile> = files.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut tables: HashMap<String, SpanTable> = HashMap::new();
    for d in diags.iter_mut() {
        let (file, line, column) = match &d.anchor {
            Anchor::None => continue,
            Anchor::File { file } => (file.clone(), 0, 0),
            Anchor::Position { file, line, column } => (file.clone(), *line, *column),
            Anchor::Node { file, doc, pointer } => {
                let (line, column) = match by_path.get(file.as_str()) {
                    Some(f) => {
                        let table = tables
                            .entry(file.clone())
                            .or_insert_with(|| span_table(&f.text, limits));
                        table.get(*doc).and_then(|t| locate(t, pointer)).unwrap_or((0, 0))
                    }
                    None => (0, 0),
                };
                (file.clone(), line, column)
            }
        };
        if line > 0
            && let Some(f) = by_path.get(file.as_str())
            && let Some(text) = f.text.lines().nth(line as usize - 1)
        {
            let (snippet, col) = crop(text, column);
            d.snippet = Some(snippet);
            d.snippet_column = col;
        }
        d.location = Some(Location { file, line, column });
    }
}

/// A window of at most `WIDTH` characters of `line` around `column`, with `…` marking what
/// was cut, and the column within the window.
fn crop(line: &str, column: u32) -> (String, u32) {
    const WIDTH: usize = 120;
    let n = line.chars().count();
    if n <= WIDTH {
        return (line.to_owned(), column);
    }
    let col = (column.max(1) - 1) as usize;
    let start = col.saturating_sub(WIDTH / 2).min(n.saturating_sub(WIDTH));
    let mut out: String = if start > 0 { "…".to_owned() } else { String::new() };
    out.extend(line.chars().skip(start).take(WIDTH));
    if start + WIDTH < n {
        out.push('…');
    }
    (out, (col - start + 1 + usize::from(start > 0)) as u32)
}

fn locate(table: &HashMap<String, (u32, u32)>, pointer: &str) -> Option<(u32, u32)> {
    if let Some(p) = table.get(pointer) {
        return Some(*p);
    }
    // a missing node: point at the key of its nearest existing ancestor
    let mut ptr = pointer.strip_suffix("#key").unwrap_or(pointer);
    loop {
        if let Some(p) = table.get(&format!("{ptr}#key")).or_else(|| table.get(ptr)) {
            return Some(*p);
        }
        ptr = &ptr[..ptr.rfind('/')?];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(src: &str) -> (LoadedFile, Vec<Diagnostic>) {
        load_file(
            &SourceFile {
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
