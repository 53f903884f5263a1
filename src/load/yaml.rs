//! YAML text → JSON values, built straight from the parser's events under a budget (pure).
//!
//! The event parser (granit-parser, the pure-Rust parser under serde-saphyr) does the syntax;
//! this module does the rest of YAML loading the way rampart wants it, in one pass:
//!
//! - scalars resolve by the YAML 1.2 core schema, strictly: only `true`/`false` are booleans,
//!   numbers with leading zeros or underscores stay strings, `.nan`/`.inf` are errors;
//! - only the JSON-compatible core tags are accepted; anything else is an error, never run;
//! - duplicate keys are errors; `<<` merge keys are applied (explicit keys win);
//! - depth, nodes and bytes (alias expansions and anchor copies included), aliases,
//!   documents and scalar size are capped *while* parsing, so an alias bomb, a string bomb or
//!   a deep nest through aliases stops before it costs anything;
//! - on request ([`spans`]), the `line:col` of the nodes on the way to some wanted JSON
//!   pointers is recorded by the same walk that builds the values, so pointers and document
//!   numbers always agree. Nodes inside an alias expansion are not recorded: they are located
//!   at the alias (see [`locate`]).
//!
//! Empty documents (a bare `---`, a file of comments) are skipped and not numbered.

use super::escape_pointer;
use crate::config::Limits;
use crate::diagnostic::{Code, quote};
use granit_parser::{Event, Parser, ScalarStyle, Span, Tag};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Positions of one document: `nodes` by JSON pointer, `keys` the mapping keys themselves.
#[derive(Debug, Default, Clone)]
pub struct Spans {
    pub nodes: HashMap<String, (u32, u32)>,
    pub keys: HashMap<String, (u32, u32)>,
}

/// Why a file is not loadable YAML, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub code: Code,
    pub message: String,
    pub hint: String,
    pub line: u32,
    pub column: u32,
}

/// Parse every document of `text`.
pub fn parse(text: &str, limits: &Limits) -> Result<Vec<Value>, YamlError> {
    run(text, limits, None).map(|(docs, _)| docs)
}

/// A plain scalar that is text here (YAML 1.2) but something else to a YAML 1.1 tool, by
/// document index and JSON pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Yaml11Note {
    pub doc: usize,
    pub pointer: String,
    pub text: String,
    pub reading: Yaml11,
}

/// [`parse`], and the plain scalars YAML 1.1 tools would read differently (see [`yaml11`]).
/// Quoted scalars are not noted: quoting is how a value says it is text.
pub fn parse_noting(text: &str, limits: &Limits) -> Result<(Vec<Value>, Vec<Yaml11Note>), YamlError> {
    run(text, limits, None)
}

/// What a YAML 1.1 tool reads a plain scalar as, where rampart (YAML 1.2) reads text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Yaml11 {
    /// `yes`, `no`, `on`, `off`, `y`, `n` in any of their spellings
    Boolean(bool),
    /// `0755` (octal), `1_000`, `0b101`, `1:30` (base 60); `None` when it does not fit 64 bits
    Integer(Option<i64>),
}

/// The hint for a YAML 1.1 boolean spelling where rampart wants a boolean.
pub const BOOLEAN_HINT: &str =
    "write `true` or `false`; YAML 1.1 spellings such as `yes`, `no`, `on` and `off` are text in rampart";
/// The hint for a number YAML 1.2 reads as text where rampart wants a number.
pub const NUMBER_HINT: &str = "zero-padded, underscored or quoted numbers are text in YAML 1.2; write the plain number";

/// How YAML 1.1 reads `s`, when that differs from YAML 1.2's text (its bool and int
/// resolvers; YAML 1.2 already reads the rest alike).
pub fn yaml11(s: &str) -> Option<Yaml11> {
    // called on every plain string scalar: most are words, ruled out by their first byte
    match s.as_bytes().first()? {
        b'y' | b'Y' | b'n' | b'N' | b'o' | b'O' if s.len() <= 3 => {}
        b'0'..=b'9' | b'-' | b'+' => {}
        _ => return None,
    }
    match s {
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => return Some(Yaml11::Boolean(true)),
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => return Some(Yaml11::Boolean(false)),
        _ => {}
    }
    let (negative, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let digits = |t: &str, radix: u32| -> Option<Option<i64>> {
        let t: String = t.chars().filter(|&c| c != '_').collect();
        (!t.is_empty() && t.chars().all(|c| c.is_digit(radix))).then(|| {
            i64::from_str_radix(&t, radix)
                .ok()
                .map(|n| if negative { -n } else { n })
        })
    };
    let read = if let Some(b) = body.strip_prefix("0b") {
        digits(b, 2)
    } else if body.len() > 1 && body.starts_with('0') && !body.starts_with("0x") && !body.starts_with("0o") {
        digits(&body[1..], 8)
    } else if body.contains(':') {
        // base 60: `1:30` is 90; the first part starts with 1-9, the rest are 0-59
        let mut parts = body.split(':');
        let first = parts.next()?;
        let ok = first.starts_with(|c: char| ('1'..='9').contains(&c))
            && first.bytes().all(|b| b.is_ascii_digit() || b == b'_')
            && parts.clone().all(|p| {
                (1..=2).contains(&p.len())
                    && p.bytes().all(|b| b.is_ascii_digit())
                    && p.parse::<u8>().is_ok_and(|n| n < 60)
            });
        ok.then(|| {
            body.split(':')
                .try_fold(0i64, |acc, p| {
                    acc.checked_mul(60)?.checked_add(p.replace('_', "").parse().ok()?)
                })
                .map(|n| if negative { -n } else { n })
        })
    } else if body.contains('_') && body.starts_with(|c: char| c.is_ascii_digit()) {
        digits(body, 10)
    } else {
        None
    };
    read.map(Yaml11::Integer)
}

/// The positions of the nodes on the way to `wanted` pointers, per document index. Cost is
/// bounded by the wanted paths, not by the file: nothing off those paths is recorded.
pub fn spans(text: &str, limits: &Limits, wanted: &HashMap<usize, Vec<String>>) -> Vec<Spans> {
    let mut rec = Recorder {
        wanted,
        tables: Vec::new(),
        ptrs: Vec::new(),
    };
    let _ = run(text, limits, Some(&mut rec));
    rec.tables
}

/// The position of `pointer` (a key's when `key`), or of its nearest recorded ancestor:
/// a missing field is reported at its parent, a node inside an alias at the alias.
pub fn locate(spans: &Spans, pointer: &str, key: bool) -> Option<(u32, u32)> {
    if key && let Some(p) = spans.keys.get(pointer) {
        return Some(*p);
    }
    if let Some(p) = spans.nodes.get(pointer) {
        return Some(*p);
    }
    let mut ptr = pointer;
    loop {
        ptr = &ptr[..ptr.rfind('/')?];
        if let Some(p) = spans.keys.get(ptr).or_else(|| spans.nodes.get(ptr)) {
            return Some(*p);
        }
    }
}

type Parsed = (Vec<Value>, Vec<Yaml11Note>);

fn run(text: &str, limits: &Limits, rec: Option<&mut Recorder<'_>>) -> Result<Parsed, YamlError> {
    let mut b = Builder {
        limits,
        max_bytes: limits.max_file_bytes.saturating_mul(2),
        stack: Vec::new(),
        anchors: HashMap::new(),
        nodes: 0,
        bytes: 0,
        aliases: 0,
        documents: 0,
        out: Vec::new(),
        notes: Vec::new(),
        rec,
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
            use granit_parser::ErrorKind as E;
            match e.kind() {
                E::RecursionLimitExceeded => too_deep(limits, here),
                E::TabNotAllowed | E::TabInBlockIndentation | E::TabInPlainScalar => tab(text, here)
                    .unwrap_or_else(|| err(Code::YamlSyntax, here, e.info(), "fix the YAML syntax at this position")),
                // a tab in the indentation at or before the error is its likely cause, though the
                // parser may read it as content and stumble only lines later
                _ if let Some(t) = indentation_tab_before(text, here) => t,
                E::ExpectedBlockMappingKey | E::ExpectedBlockSequenceEntry | E::InvalidIndentation => {
                    indentation(text, here, &e.info())
                }
                _ => err(Code::YamlSyntax, here, e.info(), "fix the YAML syntax at this position"),
            }
        })?;
        b.event(ev, span)?;
    }
    Ok((b.out, b.notes))
}

/// A tab where the parser refused one, reported at the tab itself: the parser notices some
/// tabs only at the end of the line before (a plain scalar might have continued), so the
/// tab is looked for on the error's line and the next. A tab in a line's indentation is the
/// one meant — a tab inside a value earlier on the line (`description: a<TAB>b`) is legal —
/// and only without one is the first tab taken.
fn tab(text: &str, here: (u32, u32)) -> Option<YamlError> {
    let first = here.0.max(1) as usize - 1;
    let lines = || text.split('\n').enumerate().skip(first).take(2);
    if let Some((n, column)) = lines().find_map(|(n, l)| Some((n, indentation_tab(l)?))) {
        return Some(tab_error(n, column, true));
    }
    let (n, line, i) = lines().find_map(|(n, l)| Some((n, l, l.find('\t')?)))?;
    let indenting = line[..i].bytes().all(|b| b == b' ' || b == b'\t');
    Some(tab_error(n, line[..i].chars().count() as u32 + 1, indenting))
}

/// The error for a tab at 0-based line `n`, 1-based `column`.
fn tab_error(n: usize, column: u32, indenting: bool) -> YamlError {
    let message = if indenting {
        "tab used for indentation"
    } else {
        "tab where YAML does not allow one"
    };
    err(
        Code::YamlSyntax,
        (n as u32 + 1, column),
        message,
        "YAML does not allow tabs for indentation; use spaces",
    )
}

/// The 1-based column of a tab in `line`'s indentation: its leading blanks and the block
/// indicators among them (`-<TAB>- a`, `? `, `: `). A line of only blanks or a comment has
/// none (a tab there is allowed).
fn indentation_tab(line: &str) -> Option<u32> {
    let chars: Vec<char> = line.chars().collect();
    let mut tab = None;
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\t' => tab = tab.or(Some(i as u32 + 1)),
            ' ' => {}
            '-' | '?' | ':' if chars.get(i + 1).is_some_and(|n| *n == ' ' || *n == '\t') => {}
            '#' => return None,
            '\r' if i + 1 == chars.len() => return None,
            _ => return tab,
        }
        i += 1;
    }
    None
}

/// The nearest tab in the indentation of a line at or before the error's, as a tab error.
fn indentation_tab_before(text: &str, here: (u32, u32)) -> Option<YamlError> {
    let lines: Vec<&str> = text.split('\n').take(here.0.max(1) as usize).collect();
    let (n, column) = lines
        .iter()
        .enumerate()
        .rev()
        .find_map(|(n, l)| Some((n, indentation_tab(l)?)))?;
    Some(tab_error(n, column, true))
}

/// A block the parser could not continue: almost always a line indented less (or more) than
/// its siblings. A dedented line says so, at the line's first character.
fn indentation(text: &str, here: (u32, u32), info: &str) -> YamlError {
    let indent = |l: &str| l.len() - l.trim_start_matches(' ').len();
    let content = |l: &str| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with('#')
    };
    let lines: Vec<&str> = text.split('\n').take(here.0 as usize).collect();
    let hint = "check the indentation of this line and the one above";
    let (Some(line), Some(above)) = (
        lines.last().filter(|l| content(l)),
        lines.iter().rev().skip(1).find(|l| content(l)),
    ) else {
        return err(Code::YamlSyntax, here, info, hint);
    };
    let (n, m) = (indent(line), indent(above));
    if n < m {
        let message = format!(
            "line indented by {n} space{} after a line indented by {m}: the block above cannot continue here",
            if n == 1 { "" } else { "s" }
        );
        return err(Code::YamlSyntax, (here.0, n as u32 + 1), message, hint);
    }
    err(Code::YamlSyntax, here, info, hint)
}

/// What a node costs: nodes, bytes of text, and height (0 for a scalar).
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    nodes: u64,
    bytes: u64,
    height: u64,
}

enum Frame {
    Seq {
        items: Vec<Value>,
        anchor: usize,
        start: Cost,
        height: u64,
    },
    Map {
        map: Map<String, Value>,
        key: Option<Key>,
        merges: Vec<Value>,
        anchor: usize,
        start: Cost,
        height: u64,
    },
}

struct Key {
    text: String,
    merge: bool,
}

struct Anchored {
    value: Value,
    cost: Cost,
}

/// Span recording state: the wanted pointers, the tables, and the pointer of each open
/// collection (`None` once off every wanted path).
struct Recorder<'w> {
    wanted: &'w HashMap<usize, Vec<String>>,
    tables: Vec<Spans>,
    ptrs: Vec<Option<String>>,
}

impl Recorder<'_> {
    /// Whether `ptr` is on the way to a wanted pointer of document `doc`.
    fn live(&self, doc: usize, ptr: &str) -> bool {
        self.wanted.get(&doc).is_some_and(|ws| {
            ws.iter()
                .any(|w| w.starts_with(ptr) && (w.len() == ptr.len() || w.as_bytes()[ptr.len()] == b'/'))
        })
    }

    fn table(&mut self, doc: usize) -> &mut Spans {
        if self.tables.len() <= doc {
            self.tables.resize_with(doc + 1, Spans::default);
        }
        &mut self.tables[doc]
    }
}

struct Builder<'a, 'r> {
    limits: &'a Limits,
    /// bytes of text (scalars and keys, expansions included) one file may produce
    max_bytes: u64,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Anchored>,
    nodes: u64,
    bytes: u64,
    aliases: u64,
    documents: u64,
    out: Vec<Value>,
    notes: Vec<Yaml11Note>,
    rec: Option<&'a mut Recorder<'r>>,
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

fn budget(at: (u32, u32), what: String) -> YamlError {
    err(
        Code::BudgetExceeded,
        at,
        format!("YAML budget exceeded: {what}"),
        "split the file or remove alias chains; rampart bounds what one file may expand into, so a small file cannot become a huge one",
    )
}

impl Builder<'_, '_> {
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
                let cost = Cost {
                    nodes: 1,
                    bytes: text.len() as u64,
                    height: 0,
                };
                self.charge(cost, here)?;
                if self.is_key_position() {
                    return self.key(&text, style, tag.as_deref(), anchor, cost, here);
                }
                let value = scalar(&text, style, tag.as_deref()).map_err(|(code, m, h)| err(code, here, m, h))?;
                if matches!(style, ScalarStyle::Plain)
                    && tag.is_none()
                    && value.is_string()
                    && let Some(reading) = yaml11(&text)
                {
                    self.notes.push(Yaml11Note {
                        doc: self.out.len(),
                        pointer: self.pointer(),
                        text: text.to_string(),
                        reading,
                    });
                }
                self.record_node(here);
                self.complete(value, anchor, cost, here)?;
            }
            Event::SequenceStart(_, anchor, tag) => {
                let start = self.open(here, tag.as_deref(), "seq")?;
                self.stack.push(Frame::Seq {
                    items: Vec::new(),
                    anchor,
                    start,
                    height: 0,
                });
            }
            Event::MappingStart(_, anchor, tag) => {
                let start = self.open(here, tag.as_deref(), "map")?;
                self.stack.push(Frame::Map {
                    map: Map::new(),
                    key: None,
                    merges: Vec::new(),
                    anchor,
                    start,
                    height: 0,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let frame = self.stack.pop().expect("parser balances collections");
                let ptr = self.rec.as_mut().and_then(|r| r.ptrs.pop()).flatten();
                let (value, anchor, start, height) = match frame {
                    Frame::Seq {
                        items,
                        anchor,
                        start,
                        height,
                    } => (Value::Array(items), anchor, start, height),
                    Frame::Map {
                        mut map,
                        merges,
                        anchor,
                        start,
                        height,
                        ..
                    } => {
                        for source in merges {
                            let added = merge_into(&mut map, source);
                            self.charge(
                                Cost {
                                    nodes: added.len() as u64,
                                    ..Cost::default()
                                },
                                here,
                            )?;
                            if let Some(p) = &ptr {
                                self.locate_merged(p, &added);
                            }
                        }
                        (Value::Object(map), anchor, start, height)
                    }
                };
                let cost = Cost {
                    nodes: self.nodes - start.nodes,
                    bytes: self.bytes - start.bytes,
                    height: height + 1,
                };
                self.complete(value, anchor, cost, here)?;
            }
            Event::Alias(id) => {
                self.aliases += 1;
                if self.aliases > self.limits.max_aliases {
                    return Err(budget(here, format!("more than {} aliases", self.limits.max_aliases)));
                }
                let Some(cost) = self.anchors.get(&id).map(|a| a.cost) else {
                    return Err(err(
                        Code::YamlSyntax,
                        here,
                        "alias refers to an unknown anchor",
                        "define the anchor (`&name`) before its use (`*name`), in the same document",
                    ));
                };
                if self.stack.len() as u64 + cost.height > self.limits.max_depth {
                    return Err(too_deep(self.limits, here));
                }
                // charge the expansion before copying anything
                self.charge(cost, here)?;
                let value = self.anchors[&id].value.clone();
                if self.is_key_position() {
                    return match &value {
                        Value::String(s) => {
                            self.key(&s.clone(), ScalarStyle::SingleQuoted, None, 0, Cost::default(), here)
                        }
                        Value::Number(_) | Value::Bool(_) | Value::Null => self.key(
                            &value.to_string(),
                            ScalarStyle::SingleQuoted,
                            None,
                            0,
                            Cost::default(),
                            here,
                        ),
                        _ => Err(err(
                            Code::YamlSyntax,
                            here,
                            "mapping keys must be scalars",
                            "use a plain string as the key",
                        )),
                    };
                }
                self.record_node(here);
                self.complete(value, 0, cost, here)?;
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

    /// Add `cost` to the file's totals; an error once a total passes its budget.
    fn charge(&mut self, cost: Cost, here: (u32, u32)) -> Result<(), YamlError> {
        self.nodes += cost.nodes;
        self.bytes += cost.bytes;
        if self.nodes > self.limits.max_nodes {
            return Err(budget(here, format!("more than {} nodes", self.limits.max_nodes)));
        }
        if self.bytes > self.max_bytes {
            return Err(budget(
                here,
                format!("more than {} bytes of text once aliases are expanded", self.max_bytes),
            ));
        }
        Ok(())
    }

    /// The JSON pointer of the value being built (only asked for the rare noted scalar: the
    /// fast path keeps no pointers).
    fn pointer(&self) -> String {
        let mut p = String::new();
        for f in &self.stack {
            p.push('/');
            match f {
                Frame::Seq { items, .. } => p.push_str(&items.len().to_string()),
                Frame::Map { key, .. } => p.push_str(&key.as_ref().map_or(String::new(), |k| escape_pointer(&k.text))),
            }
        }
        p
    }

    fn is_key_position(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }

    /// A collection starts: count it, check depth and tag, and record where it is.
    fn open(&mut self, here: (u32, u32), tag: Option<&Tag>, core: &str) -> Result<Cost, YamlError> {
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
        let start = Cost {
            nodes: self.nodes,
            bytes: self.bytes,
            height: 0,
        };
        self.charge(
            Cost {
                nodes: 1,
                ..Cost::default()
            },
            here,
        )?;
        if self.rec.is_some() {
            let p = self.pointer_of_next();
            if let Some(p) = &p {
                self.record(p.clone(), here, false);
            }
            self.rec.as_mut().expect("recording").ptrs.push(p);
        }
        Ok(start)
    }

    /// The pointer of the node about to be completed in the current container, when it is
    /// on the way to a wanted pointer.
    fn pointer_of_next(&self) -> Option<String> {
        let rec = self.rec.as_ref()?;
        let doc = self.out.len();
        let p = match (self.stack.last(), rec.ptrs.last()) {
            (None, _) => String::new(),
            (Some(_), Some(None)) => return None,
            (Some(Frame::Seq { items, .. }), Some(Some(parent))) => format!("{parent}/{}", items.len()),
            (Some(Frame::Map { key: Some(k), .. }), Some(Some(parent))) => {
                format!("{parent}/{}", super::escape_pointer(&k.text))
            }
            _ => return None,
        };
        rec.live(doc, &p).then_some(p)
    }

    fn record(&mut self, p: String, here: (u32, u32), key: bool) {
        let doc = self.out.len();
        if let Some(rec) = self.rec.as_mut() {
            let t = rec.table(doc);
            if key {
                t.keys.insert(p, here)
            } else {
                t.nodes.insert(p, here)
            };
        }
    }

    /// Record the position of the node about to be completed (span mode only).
    fn record_node(&mut self, here: (u32, u32)) {
        if let Some(p) = self.pointer_of_next() {
            self.record(p, here, false);
        }
    }

    /// Merged entries are located where their `<<` source wrote them, when it was inline.
    fn locate_merged(&mut self, map_ptr: &str, added: &[String]) {
        let doc = self.out.len();
        let Some(rec) = self.rec.as_mut() else { return };
        let t = rec.table(doc);
        for k in added {
            let (from, to) = (
                format!("{map_ptr}/<</{}", super::escape_pointer(k)),
                format!("{map_ptr}/{}", super::escape_pointer(k)),
            );
            if let Some(p) = t.keys.get(&from).copied() {
                t.keys.insert(to.clone(), p);
            }
            if let Some(p) = t.nodes.get(&from).copied() {
                t.nodes.insert(to, p);
            }
        }
    }

    fn key(
        &mut self,
        text: &str,
        style: ScalarStyle,
        tag: Option<&Tag>,
        anchor: usize,
        cost: Cost,
        here: (u32, u32),
    ) -> Result<(), YamlError> {
        if let Some(t) = tag
            && !t.is_yaml_core_schema_tag("str")
            && !t.is_yaml_core_schema_tag("merge")
        {
            return Err(unsupported_tag(t, here));
        }
        // only an untagged plain `<<` (or an explicit `!!merge`) merges
        let merge = text == "<<"
            && (tag.is_some_and(|t| t.is_yaml_core_schema_tag("merge"))
                || (tag.is_none() && matches!(style, ScalarStyle::Plain)));
        if anchor != 0 {
            self.anchors.insert(
                anchor,
                Anchored {
                    value: Value::String(text.to_owned()),
                    cost,
                },
            );
        }
        if let Some(Frame::Map { map, key, merges, .. }) = self.stack.last_mut() {
            if (!merge && map.contains_key(text)) || (merge && !merges.is_empty()) {
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
        if self.rec.is_some()
            && let Some(p) = self.pointer_of_next()
        {
            self.record(p, here, true);
        }
        Ok(())
    }

    /// A node is complete: remember its anchor, then hand it to its parent (or the output).
    fn complete(&mut self, value: Value, anchor: usize, cost: Cost, here: (u32, u32)) -> Result<(), YamlError> {
        if anchor != 0 {
            // keeping a copy costs what the node costs: nested anchors cannot multiply memory
            self.charge(Cost { height: 0, ..cost }, here)?;
            self.anchors.insert(
                anchor,
                Anchored {
                    value: value.clone(),
                    cost,
                },
            );
        }
        match self.stack.last_mut() {
            None => {
                if !value.is_null() {
                    self.out.push(value);
                } else if let Some(rec) = self.rec.as_mut() {
                    // an empty document is skipped: drop what was recorded for it
                    rec.tables.truncate(self.out.len());
                }
            }
            Some(Frame::Seq { items, height, .. }) => {
                *height = (*height).max(cost.height);
                items.push(value);
            }
            Some(Frame::Map {
                map,
                key,
                merges,
                height,
                ..
            }) => {
                *height = (*height).max(cost.height);
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
                    merges.push(value);
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
        // `! value`: the non-specific tag, which makes a scalar a string
        if t.handle() == "!" && t.suffix().is_empty() {
            return Ok(Value::String(text.to_owned()));
        }
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
                Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Value::Number(n)),
                _ => Err(bad("int")),
            }
        } else if t.is_yaml_core_schema_tag("float") {
            let Some(Value::Number(n)) = plain_number(text)? else {
                return Err(bad("float"));
            };
            match n.as_f64().and_then(serde_json::Number::from_f64) {
                // an integer above 2^53 changes on the way to a float
                Some(f) if same_value(&n.to_string(), &f.to_string()) => Ok(Value::Number(f)),
                Some(f) => Err(inexact(text, &f)),
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
    let b = s.as_bytes();
    if b.is_empty() {
        return Ok(None);
    }
    let unsigned = s.strip_prefix(['-', '+']).unwrap_or(s);
    if matches!(unsigned, ".inf" | ".Inf" | ".INF") || matches!(s, ".nan" | ".NaN" | ".NAN") {
        return Err(non_finite(s));
    }
    if let Some(hex) = s.strip_prefix("0x") {
        let ok = !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit());
        return Ok(ok.then(|| u64::from_str_radix(hex, 16).ok().map(Value::from)).flatten());
    }
    if let Some(oct) = s.strip_prefix("0o") {
        let ok = !oct.is_empty() && oct.bytes().all(|b| (b'0'..=b'7').contains(&b));
        return Ok(ok.then(|| u64::from_str_radix(oct, 8).ok().map(Value::from)).flatten());
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
        return float(s).map(Some);
    }
    if is_float(unsigned) {
        return float(s).map(Some);
    }
    Ok(None)
}

/// A decimal number (digits, `.`, exponent) as a float — only when the float holds exactly
/// the value written. What the model sees of a number is its float's shortest decimal text,
/// so `2.0000000000000001` would silently become `2.0` and `99999999999999999999999`
/// `1e23`; such a number is an error instead of a different number.
fn float(s: &str) -> Result<Value, ScalarError> {
    let f: f64 = s.parse().map_err(|_| non_finite(s))?;
    let n = serde_json::Number::from_f64(f).ok_or_else(|| non_finite(s))?;
    if !same_value(s, &n.to_string()) {
        return Err(inexact(s, &n));
    }
    Ok(Value::Number(n))
}

fn non_finite(s: &str) -> ScalarError {
    (
        Code::NonFiniteNumber,
        format!("non-finite number {}", quote(s)),
        "write a finite number, or quote the value if it is text".to_owned(),
    )
}

fn inexact(s: &str, read: &serde_json::Number) -> ScalarError {
    (
        Code::InexactNumber,
        format!(
            "number {} cannot be held exactly; it would be read as {}",
            quote(s),
            quote(&read.to_string())
        ),
        "write at most 15 significant digits; where a field takes a quantity string (`cpu`, `memory`, `storage`), quoting keeps the value exactly as written".to_owned(),
    )
}

/// Whether two decimal numbers (`-12.50`, `1.25e1`) have the same value, compared as
/// written: no float in between.
fn same_value(a: &str, b: &str) -> bool {
    decimal(a).is_some() && decimal(a) == decimal(b)
}

/// A decimal number as (negative, significant digits, exponent) with value
/// `0.DIGITS × 10^exponent`; zero is `(false, "", 0)`. `None` when the exponent does not fit.
fn decimal(s: &str) -> Option<(bool, String, i64)> {
    let negative = s.starts_with('-');
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, "0"),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all = format!("{int}{frac}");
    let digits = all.trim_start_matches('0');
    let leading = all.len() - digits.len();
    let digits = digits.trim_end_matches('0');
    if digits.is_empty() {
        return Some((false, String::new(), 0));
    }
    let exp = exp
        .parse::<i64>()
        .ok()?
        .checked_add(int.len() as i64 - leading as i64)?;
    Some((negative, digits.to_owned(), exp))
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
        parse(src, &Limits::default()).unwrap().remove(0)
    }

    fn code(src: &str) -> Code {
        parse(src, &Limits::default()).unwrap_err().code
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
        assert_eq!(
            one("a: 1e23\nb: 100000000000000000000000\n"),
            json!({"a": 1e23, "b": 1e23})
        );
        assert_eq!(
            one("a: !!str 12\nb: !!int \"7\"\nc: !!float 2\n"),
            json!({"a": "12", "b": 7, "c": 2.0})
        );
    }

    /// What a float cannot hold is an error, not a nearby number: `cpu: 2.0000000000000001`
    /// compiled to `2`, `pods: 99999999999999999999999` was echoed as `1e+23`.
    #[test]
    fn numbers_a_float_cannot_hold_are_refused() {
        for src in [
            "a: 2.0000000000000001\n",
            "a: 99999999999999999999999\n",
            "a: 18446744073709551617\n",
            "a: 0.1000000000000000000001e1\n",
            "a: 1e-400\n",
            "a: !!float 9007199254740993\n",
        ] {
            assert_eq!(code(src), Code::InexactNumber, "{src}");
        }
        let e = parse("cpu: 2.0000000000000001\n", &Limits::default()).unwrap_err();
        assert_eq!(
            e.message,
            "number `2.0000000000000001` cannot be held exactly; it would be read as `2.0`"
        );
        assert_eq!((e.line, e.column), (1, 6));
        // what a float holds exactly, however it is written, stays a number
        assert_eq!(
            one(
                "a: 0.1\nb: 2.50\nc: 1.5e3\nd: -0.0\ne: 0e99999999999999999999\nf: 123456789012345.6\ng: !!float 9007199254740992\n"
            ),
            json!({"a": 0.1, "b": 2.5, "c": 1500.0, "d": -0.0, "e": 0.0, "f": 123456789012345.6, "g": 9007199254740992.0})
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
        let src = "---\n---\na: 1\n---\nx:\n  y: [1, 2]\n  z: 3\n";
        let wanted = HashMap::from([
            (0, vec!["/a".to_owned()]),
            (1, vec!["/x/y/1".to_owned(), "/x/q".to_owned()]),
        ]);
        let spans = spans(src, &Limits::default(), &wanted);
        assert_eq!(spans.len(), 2);
        assert_eq!(locate(&spans[1], "/x/y/1", false), Some((6, 10)));
        assert_eq!(locate(&spans[1], "/x/y", true), Some((6, 3)));
        // a missing field is placed at its parent's key
        assert_eq!(locate(&spans[1], "/x/q", false), Some((5, 1)));
        assert_eq!(locate(&spans[0], "/a", false), Some((3, 4)));
        // off the wanted paths nothing is recorded
        assert!(!spans[1].nodes.contains_key("/x/z"));
    }

    #[test]
    fn expansions_are_bounded() {
        let big = "x".repeat(200_000);
        let bomb = format!("a: &a \"{big}\"\nb: [{}]\n", vec!["*a"; 100].join(", "));
        assert_eq!(code(&bomb), Code::BudgetExceeded);
        // depth through aliases
        let mut deep = String::from("a0: &a0 1\n");
        for k in 1..40 {
            deep.push_str(&format!("a{k}: &a{k} [[[*a{}]]]\n", k - 1));
        }
        assert_eq!(code(&deep), Code::TooDeep);
        // nested anchors pay for their copies
        let mut nested = String::from("a: ");
        for k in 0..60 {
            nested.push_str(&format!("&a{k} ["));
        }
        nested.push_str(&vec!["1"; 10_000].join(","));
        nested.push_str(&"]".repeat(60));
        assert_eq!(code(&nested), Code::BudgetExceeded);
    }

    #[test]
    fn yaml11_readings() {
        use Yaml11::*;
        for (s, want) in [
            ("on", Some(Boolean(true))),
            ("NO", Some(Boolean(false))),
            ("0755", Some(Integer(Some(493)))),
            ("-0_17", Some(Integer(Some(-15)))),
            ("1_000", Some(Integer(Some(1000)))),
            ("0b101", Some(Integer(Some(5)))),
            ("1:30", Some(Integer(Some(90)))),
            ("1:09:00", Some(Integer(Some(4140)))),
            ("0", None),
            ("089", None),
            ("1:60", None),
            ("12:5x", None),
            ("0x1F", None),
            ("true", None),
            ("none", None),
            ("10.0.0.1", None),
        ] {
            assert_eq!(yaml11(s), want, "{s}");
        }
        // only plain scalars are noted, each at its pointer
        let (_, notes) = parse_noting("a: [on, 'on', 7]\nb:\n  c: 0755\n  d: !!str no\n", &Limits::default()).unwrap();
        let at: Vec<_> = notes.iter().map(|n| (n.pointer.as_str(), n.text.as_str())).collect();
        assert_eq!(at, [("/a/0", "on"), ("/b/c", "0755")]);
    }

    /// A tab after a plain scalar was reported at the end of the line before it.
    #[test]
    fn tabs_are_reported_at_the_tab() {
        for (src, at) in [
            ("a:\n\tb: 1\n", (2, 1)),
            ("a:\n  b: x\n\tc: 1\n", (3, 1)),
            ("a:\n  - x\n  \t- y\n", (3, 3)),
            // a legal tab earlier on the line before is not the one blamed
            ("a:\n  description: pl\tain\n\tcontinued: 1\n", (3, 1)),
            ("a:\n  b: x\t\n\tc: 1\n", (3, 1)),
            // a tab on the first line, before a comment too
            ("\tapiVersion: rampart.dev/v1\nkind: Tenant\n", (1, 1)),
            ("# c\n\tapiVersion: rampart.dev/v1\nkind: Tenant\n", (2, 1)),
            // spaces then a tab, and a tab after a dash
            ("spec:\n  \ttier: free\n  owners: [a]\n", (2, 3)),
            ("a:\n-\t- a\n", (2, 2)),
        ] {
            let e = parse(src, &Limits::default()).unwrap_err();
            assert_eq!((e.line, e.column), at, "{src:?}");
            assert_eq!(e.message, "tab used for indentation");
            assert_eq!(e.hint, "YAML does not allow tabs for indentation; use spaces");
        }
    }

    #[test]
    fn a_dedented_line_is_reported_at_that_line() {
        let e = parse("a:\n  b:\n    c: 1\n   d: 2\n", &Limits::default()).unwrap_err();
        assert_eq!((e.line, e.column), (4, 4));
        assert!(
            e.message
                .starts_with("line indented by 3 spaces after a line indented by 4"),
            "{}",
            e.message
        );
        assert_eq!(e.hint, "check the indentation of this line and the one above");
        // a comment or a blank line between does not count as the line above
        let e = parse("a:\n  - x: 1\n\n    # note\n   y: 2\n", &Limits::default()).unwrap_err();
        assert_eq!(e.line, 5);
    }

    #[test]
    fn merge_keys_are_strict() {
        assert_eq!(code("a: {<<: {x: 1}, <<: {y: 2}}\n"), Code::DuplicateKey);
        assert_eq!(one("a: {!!str <<: 1}\n"), json!({"a": {"<<": 1}}));
    }
}
