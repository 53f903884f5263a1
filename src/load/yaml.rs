//! YAML text → JSON values, built straight from the parser's events under a budget (pure).
//!
//! The event parser (granit-parser, the pure-Rust parser under serde-saphyr) does the syntax;
//! this module does the rest of YAML loading the way rampart wants it, in one pass:
//!
//! - scalars resolve by the YAML 1.2 core schema, strictly: only `true`/`false` are booleans,
//!   numbers with leading zeros or underscores stay strings, `.nan`/`.inf` are errors;
//! - only the JSON-compatible core tags are accepted; anything else is an error, never run;
//! - duplicate keys are errors; `<<` merge keys are applied (explicit keys win);
//! - depth, nodes (aliases counted on every expansion), aliases, documents and scalar size are
//!   capped *while* parsing, so an alias bomb or a deep nest stops before it costs anything;
//! - optionally, every node's JSON pointer is recorded with its `line:col` — the same walk
//!   that builds the values, so pointers and document numbers always agree.
//!
//! Empty documents (a bare `---`, a file of comments) are skipped and not numbered.

use crate::config::Limits;
use crate::diagnostic::{Code, quote};
use granit_parser::{Event, Parser, ScalarStyle, Span, Tag};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// pointer → (line, column) of one document; `…#key` entries locate a mapping key itself.
pub type Spans = HashMap<String, (u32, u32)>;

/// Why a file is not loadable YAML, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub code: Code,
    pub message: String,
    pub hint: String,
    pub line: u32,
    pub column: u32,
}

/// Parse every document of `text`. With `spans`, also record each document's pointer table.
pub fn parse(text: &str, limits: &Limits, spans: Option<&mut Vec<Spans>>) -> Result<Vec<Value>, YamlError> {
    let mut b = Builder {
        limits,
        stack: Vec::new(),
        anchors: HashMap::new(),
        nodes: 0,
        aliases: 0,
        documents: 0,
        out: Vec::new(),
        spans,
        ptrs: Vec::new(),
    };
    let mut options = granit_parser::Options::default();
    // the scanner reads flow collections ahead of the events: cap its nesting too
    options.flow_nesting_limit = limits.max_depth as usize;
    options.block_nesting_limit = limits.max_depth as usize;
    // comments are not data: do not buffer them as events
    options.set_emit_comments(false);
    for ev in Parser::new_from_str_with_options(text, options) {
        let (ev, span) = ev.map_err(|e| {
            let here = (e.marker().line() as u32, e.marker().col() as u32 + 1);
            if matches!(e.kind(), granit_parser::ErrorKind::RecursionLimitExceeded) {
                too_deep(limits, here)
            } else {
                err(Code::YamlSyntax, here, e.info(), "fix the YAML syntax at this position")
            }
        })?;
        b.event(ev, span)?;
    }
    Ok(b.out)
}

enum Frame {
    Seq {
        items: Vec<Value>,
        anchor: usize,
        nodes_before: u64,
    },
    Map {
        map: Map<String, Value>,
        key: Option<Key>,
        merges: Vec<(Value, (u32, u32))>,
        anchor: usize,
        nodes_before: u64,
    },
}

struct Key {
    text: String,
    merge: bool,
}

struct Builder<'a> {
    limits: &'a Limits,
    stack: Vec<Frame>,
    /// anchor id → (value, nodes in it)
    anchors: HashMap<usize, (Value, u64)>,
    nodes: u64,
    aliases: u64,
    documents: u64,
    out: Vec<Value>,
    spans: Option<&'a mut Vec<Spans>>,
    /// pointers of the open collections (only when recording spans)
    ptrs: Vec<String>,
}

fn at(span: &Span) -> (u32, u32) {
    (span.start.line() as u32, span.start.col() as u32 + 1)
}

fn err(code: Code, at: (u32, u32), message: impl Into<String>, hint: impl Into<String>) -> YamlError {
    YamlError {
        code,
        message: message.into(),
        hint: hint.into(),
        line: at.0,
        column: at.1,
    }
}

fn too_deep(limits: &Limits, at: (u32, u32)) -> YamlError {
    err(
        Code::TooDeep,
        at,
        format!("nesting is deeper than the limit of {}", limits.max_depth),
        "flatten the document, or raise `spec.limits.maxDepth` in rampart.yaml",
    )
}

fn budget(at: (u32, u32), what: &str) -> YamlError {
    err(
        Code::BudgetExceeded,
        at,
        format!("YAML {what} budget exceeded; aliases and anchors may not expand past it"),
        "remove the alias chain; rampart limits nodes and aliases so that a small file cannot expand into a huge one",
    )
}

impl Builder<'_> {
    fn event(&mut self, ev: Event<'_>, span: Span) -> Result<(), YamlError> {
        let here = at(&span);
        match ev {
            Event::DocumentStart(..) => {
                self.documents += 1;
                if self.documents > self.limits.max_documents {
                    return Err(err(
                        Code::TooManyDocuments,
                        here,
                        format!("more than {} documents in one file", self.limits.max_documents),
                        "split the file, or raise `spec.limits.maxDocuments` in rampart.yaml",
                    ));
                }
                // anchors are scoped to their document
                self.anchors.clear();
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.count_node(here)?;
                if text.len() as u64 > self.limits.max_scalar_bytes {
                    return Err(err(
                        Code::ScalarTooLarge,
                        here,
                        format!(
                            "scalar is {} bytes, above the limit of {}",
                            text.len(),
                            self.limits.max_scalar_bytes
                        ),
                        "move large content out of the config repo, or raise `spec.limits.maxScalarBytes` in rampart.yaml",
                    ));
                }
                if self.is_key_position() {
                    return self.key(&text, style, tag.as_deref(), anchor, here);
                }
                let value = scalar(&text, style, tag.as_deref()).map_err(|(code, m, h)| err(code, here, m, h))?;
                self.record(here);
                self.complete(value, anchor, 1, here)?;
            }
            Event::SequenceStart(_, anchor, tag) => {
                self.open(here, tag.as_deref(), "seq")?;
                self.stack.push(Frame::Seq {
                    items: Vec::new(),
                    anchor,
                    nodes_before: self.nodes - 1,
                });
            }
            Event::MappingStart(_, anchor, tag) => {
                self.open(here, tag.as_deref(), "map")?;
                self.stack.push(Frame::Map {
                    map: Map::new(),
                    key: None,
                    merges: Vec::new(),
                    anchor,
                    nodes_before: self.nodes - 1,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let frame = self.stack.pop().expect("parser balances collections");
                let ptr = if self.spans.is_some() { self.ptrs.pop() } else { None };
                let (value, anchor, nodes_before) = match frame {
                    Frame::Seq {
                        items,
                        anchor,
                        nodes_before,
                    } => (Value::Array(items), anchor, nodes_before),
                    Frame::Map {
                        mut map,
                        merges,
                        anchor,
                        nodes_before,
                        ..
                    } => {
                        for (source, at) in merges {
                            let added = merge_into(&mut map, source);
                            // merged entries are located at their `<<`
                            if let Some(p) = &ptr {
                                for k in added {
                                    let sub = format!("{p}/{}", super::escape_pointer(&k));
                                    self.record_subtree(&sub, &map[&k], at);
                                }
                            }
                        }
                        (Value::Object(map), anchor, nodes_before)
                    }
                };
                self.complete(value, anchor, self.nodes - nodes_before, here)?;
            }
            Event::Alias(id) => {
                self.aliases += 1;
                if self.aliases > self.limits.max_aliases {
                    return Err(budget(here, "alias"));
                }
                let Some(count) = self.anchors.get(&id).map(|a| a.1) else {
                    return Err(err(
                        Code::YamlSyntax,
                        here,
                        "alias refers to an unknown anchor",
                        "define the anchor (`&name`) before its use (`*name`), in the same document",
                    ));
                };
                // charge the expansion before copying anything
                self.nodes += count;
                if self.nodes > self.limits.max_nodes {
                    return Err(budget(here, "node"));
                }
                let value = self.anchors[&id].0.clone();
                if self.is_key_position() {
                    match &value {
                        Value::String(s) => return self.key(&s.clone(), ScalarStyle::SingleQuoted, None, 0, here),
                        _ => {
                            return Err(err(
                                Code::YamlSyntax,
                                here,
                                "mapping keys must be scalars",
                                "use a plain string as the key",
                            ));
                        }
                    }
                }
                if self.spans.is_some() {
                    // every node of the expansion is located at the alias
                    let p = self.pointer_of_next();
                    self.record_subtree(&p, &value, here);
                }
                self.complete(value, 0, count, here)?;
            }
            Event::UnresolvedAlias(name) => {
                return Err(err(
                    Code::YamlSyntax,
                    here,
                    format!("alias {} refers to an unknown anchor", quote(&name)),
                    "define the anchor (`&name`) before its use (`*name`), in the same document",
                ));
            }
            _ => {}
        }
        Ok(())
    }

    fn count_node(&mut self, here: (u32, u32)) -> Result<(), YamlError> {
        self.nodes += 1;
        if self.nodes > self.limits.max_nodes {
            Err(budget(here, "node"))
        } else {
            Ok(())
        }
    }

    fn is_key_position(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }

    /// A collection starts: count it, check depth and tag, and record where it is.
    fn open(&mut self, here: (u32, u32), tag: Option<&Tag>, core: &str) -> Result<(), YamlError> {
        self.count_node(here)?;
        if self.is_key_position() {
            return Err(err(
                Code::YamlSyntax,
                here,
                "mapping keys must be scalars",
                "use a plain string as the key",
            ));
        }
        if self.stack.len() as u64 >= self.limits.max_depth {
            return Err(too_deep(self.limits, here));
        }
        if let Some(t) = tag
            && !t.is_yaml_core_schema_tag(core)
        {
            return Err(unsupported_tag(t, here));
        }
        if self.spans.is_some() {
            let p = self.pointer_of_next();
            self.record(here);
            self.ptrs.push(p);
        }
        Ok(())
    }

    /// The pointer of the node about to be completed in the current container.
    fn pointer_of_next(&self) -> String {
        let parent = self.ptrs.last().map(String::as_str).unwrap_or("");
        match self.stack.last() {
            None => String::new(),
            Some(Frame::Seq { items, .. }) => format!("{parent}/{}", items.len()),
            Some(Frame::Map { key: Some(k), .. }) => format!("{parent}/{}", super::escape_pointer(&k.text)),
            Some(Frame::Map { key: None, .. }) => parent.to_owned(),
        }
    }

    /// Record the position of the node about to be completed (span mode only).
    fn record(&mut self, here: (u32, u32)) {
        if self.spans.is_none() {
            return;
        }
        let p = self.pointer_of_next();
        self.table().insert(p, here);
    }

    /// Record `value` and everything under it at one place (alias expansions, merged keys).
    fn record_subtree(&mut self, base: &str, value: &Value, here: (u32, u32)) {
        let mut todo = vec![(base.to_owned(), value)];
        while let Some((p, v)) = todo.pop() {
            match v {
                Value::Array(xs) => todo.extend(xs.iter().enumerate().map(|(i, x)| (format!("{p}/{i}"), x))),
                Value::Object(m) => {
                    todo.extend(m.iter().map(|(k, x)| (format!("{p}/{}", super::escape_pointer(k)), x)))
                }
                _ => {}
            }
            self.table().entry(p).or_insert(here);
        }
    }

    fn table(&mut self) -> &mut Spans {
        let spans = self.spans.as_mut().expect("span mode");
        if spans.len() <= self.out.len() {
            spans.resize_with(self.out.len() + 1, HashMap::new);
        }
        &mut spans[self.out.len()]
    }

    fn key(
        &mut self,
        text: &str,
        style: ScalarStyle,
        tag: Option<&Tag>,
        anchor: usize,
        here: (u32, u32),
    ) -> Result<(), YamlError> {
        if let Some(t) = tag
            && !t.is_yaml_core_schema_tag("str")
            && !t.is_yaml_core_schema_tag("merge")
        {
            return Err(unsupported_tag(t, here));
        }
        let merge = text == "<<" && matches!(style, ScalarStyle::Plain);
        if anchor != 0 {
            self.anchors.insert(anchor, (Value::String(text.to_owned()), 1));
        }
        if let Some(Frame::Map { map, key, .. }) = self.stack.last_mut() {
            if !merge && map.contains_key(text) {
                return Err(err(
                    Code::DuplicateKey,
                    here,
                    format!("duplicate key {}", quote(text)),
                    "remove one of the two entries; YAML mappings cannot repeat a key",
                ));
            }
            *key = Some(Key {
                text: text.to_owned(),
                merge,
            });
        }
        if self.spans.is_some() && !merge {
            let p = format!("{}#key", self.pointer_of_next());
            self.table().insert(p, here);
        }
        Ok(())
    }

    /// A node is complete: remember its anchor, then hand it to its parent (or the output).
    fn complete(&mut self, value: Value, anchor: usize, count: u64, here: (u32, u32)) -> Result<(), YamlError> {
        if anchor != 0 {
            self.anchors.insert(anchor, (value.clone(), count));
        }
        match self.stack.last_mut() {
            None => {
                if !value.is_null() {
                    self.out.push(value);
                } else if let Some(spans) = self.spans.as_mut() {
                    // an empty document is skipped: drop what was recorded for it
                    spans.truncate(self.out.len());
                }
            }
            Some(Frame::Seq { items, .. }) => items.push(value),
            Some(Frame::Map { map, key, merges, .. }) => {
                let k = key.take().expect("value follows its key");
                if k.merge {
                    let ok = match &value {
                        Value::Object(_) => true,
                        Value::Array(xs) => xs.iter().all(Value::is_object),
                        _ => false,
                    };
                    if !ok {
                        return Err(err(
                            Code::YamlSyntax,
                            here,
                            "a merge key (`<<`) takes a mapping or a list of mappings",
                            "merge an anchored mapping: `<<: *defaults`",
                        ));
                    }
                    merges.push((value, here));
                } else {
                    map.insert(k.text, value);
                }
            }
        }
        Ok(())
    }
}

/// Apply one merge source: keys already present (explicit or from an earlier source) win.
/// Returns the keys it added.
fn merge_into(map: &mut Map<String, Value>, source: Value) -> Vec<String> {
    let mut added = Vec::new();
    match source {
        Value::Object(m) => {
            for (k, v) in m {
                if !map.contains_key(&k) {
                    added.push(k.clone());
                    map.insert(k, v);
                }
            }
        }
        Value::Array(xs) => {
            for x in xs {
                added.extend(merge_into(map, x));
            }
        }
        _ => {}
    }
    added
}

fn unsupported_tag(t: &Tag, here: (u32, u32)) -> YamlError {
    let shown = if t.handle() == "tag:yaml.org,2002:" {
        format!("!!{}", t.suffix())
    } else {
        format!("{}{}", t.handle(), t.suffix())
    };
    err(
        Code::UnsupportedTag,
        here,
        format!("unsupported tag {}", quote(&shown)),
        "remove the tag; specs hold plain strings, numbers, booleans, lists and mappings, and rampart never runs or includes anything a tag names",
    )
}

type ScalarError = (Code, String, String);

/// Resolve one scalar by the YAML 1.2 core schema, strictly.
fn scalar(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> Result<Value, ScalarError> {
    let bad = |what: &str| {
        (
            Code::UnsupportedTag,
            format!("{} is not a valid {what}", quote(text)),
            format!("remove the `!!{what}` tag or fix the value"),
        )
    };
    if let Some(t) = tag {
        return if t.is_yaml_core_schema_tag("str") {
            Ok(Value::String(text.to_owned()))
        } else if t.is_yaml_core_schema_tag("null") {
            if plain_null(text) {
                Ok(Value::Null)
            } else {
                Err(bad("null"))
            }
        } else if t.is_yaml_core_schema_tag("bool") {
            plain_bool(text).map(Value::Bool).ok_or_else(|| bad("bool"))
        } else if t.is_yaml_core_schema_tag("int") {
            match plain_number(text)? {
                Some(v @ Value::Number(_)) if !text.contains(['.', 'e', 'E']) => Ok(v),
                _ => Err(bad("int")),
            }
        } else if t.is_yaml_core_schema_tag("float") {
            match plain_number(text)?
                .as_ref()
                .and_then(Value::as_f64)
                .and_then(serde_json::Number::from_f64)
            {
                Some(n) => Ok(Value::Number(n)),
                None => Err(bad("float")),
            }
        } else {
            let e = unsupported_tag(t, (0, 0));
            Err((e.code, e.message, e.hint))
        };
    }
    if !matches!(style, ScalarStyle::Plain) {
        return Ok(Value::String(text.to_owned()));
    }
    if plain_null(text) {
        return Ok(Value::Null);
    }
    if let Some(b) = plain_bool(text) {
        return Ok(Value::Bool(b));
    }
    Ok(plain_number(text)?.unwrap_or_else(|| Value::String(text.to_owned())))
}

fn plain_null(s: &str) -> bool {
    matches!(s, "" | "~" | "null" | "Null" | "NULL")
}

fn plain_bool(s: &str) -> Option<bool> {
    match s {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// A number by the core schema; `Ok(None)` when the text is not one (it stays a string).
fn plain_number(s: &str) -> Result<Option<Value>, ScalarError> {
    let non_finite = || {
        (
            Code::NonFiniteNumber,
            format!("non-finite number {}", quote(s)),
            "write a finite number, or quote the value if it is text".to_owned(),
        )
    };
    let b = s.as_bytes();
    if b.is_empty() {
        return Ok(None);
    }
    let unsigned = s.strip_prefix(['-', '+']).unwrap_or(s);
    if matches!(unsigned, ".inf" | ".Inf" | ".INF") || matches!(s, ".nan" | ".NaN" | ".NAN") {
        return Err(non_finite());
    }
    if let Some(hex) = s.strip_prefix("0x") {
        return Ok(u64::from_str_radix(hex, 16).ok().map(Value::from));
    }
    if let Some(oct) = s.strip_prefix("0o") {
        return Ok(u64::from_str_radix(oct, 8).ok().map(Value::from));
    }
    let digits = unsigned.as_bytes();
    if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) {
        if digits.len() > 1 && digits[0] == b'0' {
            return Ok(None); // `0755`: text, never octal
        }
        if let Ok(i) = s.parse::<i64>() {
            return Ok(Some(Value::from(i)));
        }
        if let Ok(u) = s.parse::<u64>() {
            return Ok(Some(Value::from(u)));
        }
        // too large for 64 bits: a float, as JSON would read it
        let f: f64 = s.parse().map_err(|_| non_finite())?;
        return Ok(serde_json::Number::from_f64(f).map(Value::Number));
    }
    if is_float(unsigned) {
        let f: f64 = s.parse().map_err(|_| non_finite())?;
        if !f.is_finite() {
            return Err(non_finite());
        }
        return Ok(serde_json::Number::from_f64(f).map(Value::Number));
    }
    Ok(None)
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?` with at least a `.` or an exponent.
fn is_float(s: &str) -> bool {
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((i, f)) => {
            i.bytes().all(|b| b.is_ascii_digit())
                && f.bytes().all(|b| b.is_ascii_digit())
                && !(i.is_empty() && f.is_empty())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|b| b.is_ascii_digit()),
    };
    let exp_ok = match exp {
        Some(e) => {
            let d = e.strip_prefix(['-', '+']).unwrap_or(e);
            !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())
        }
        None => true,
    };
    mantissa_ok && exp_ok && (mantissa.contains('.') || exp.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(src: &str) -> Value {
        parse(src, &Limits::default(), None).unwrap().remove(0)
    }

    fn code(src: &str) -> Code {
        parse(src, &Limits::default(), None).unwrap_err().code
    }

    #[test]
    fn core_schema_scalars() {
        assert_eq!(
            one(
                "a: 1\nb: -2\nc: 1.5\nd: 1e3\ne: true\nf: ~\ng: '1'\nh: 0x1F\ni: 0o17\nj: 0755\nk: 1_000\nl: yes\nm: 18446744073709551615\n"
            ),
            json!({"a": 1, "b": -2, "c": 1.5, "d": 1000.0, "e": true, "f": null, "g": "1", "h": 31, "i": 15,
                   "j": "0755", "k": "1_000", "l": "yes", "m": 18446744073709551615u64})
        );
        assert_eq!(one("a: 18446744073709551616\n")["a"], json!(18446744073709551616.0));
        assert_eq!(
            one("a: !!str 12\nb: !!int \"7\"\nc: !!float 2\n"),
            json!({"a": "12", "b": 7, "c": 2.0})
        );
    }

    #[test]
    fn merges_and_aliases() {
        let v = one("base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  y: 3\nd: *b\n");
        assert_eq!(v["c"], json!({"x": 1, "y": 3}));
        assert_eq!(v["d"], json!({"x": 1, "y": 2}));
        let v = one("a: &a {p: 1}\nb: &b {p: 2, q: 2}\nc: {<<: [*a, *b]}\n");
        assert_eq!(v["c"], json!({"p": 1, "q": 2}));
    }

    #[test]
    fn errors() {
        assert_eq!(code("a: 1\na: 2\n"), Code::DuplicateKey);
        assert_eq!(code("a: !!binary aGk=\n"), Code::UnsupportedTag);
        assert_eq!(code("a: !Ref x\n"), Code::UnsupportedTag);
        assert_eq!(code("a: .nan\n"), Code::NonFiniteNumber);
        assert_eq!(code("a: 1e999\n"), Code::NonFiniteNumber);
        assert_eq!(code("a: *nope\n"), Code::YamlSyntax);
        assert_eq!(code("[a]: 1\n"), Code::YamlSyntax);
        assert_eq!(code(&"[".repeat(100_000)), Code::TooDeep);
        assert_eq!(code("<<: 1\n"), Code::YamlSyntax);
    }

    #[test]
    fn spans_follow_pointers() {
        let mut spans = Vec::new();
        let docs = parse(
            "---\n---\na: 1\n---\nx:\n  y: [1, 2]\n",
            &Limits::default(),
            Some(&mut spans),
        )
        .unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[1]["/x/y/1"], (6, 10));
        assert_eq!(spans[1]["/x/y#key"], (6, 3));
        assert_eq!(spans[0]["/a"], (3, 4));
    }
}
