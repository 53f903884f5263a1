//! The `sarif` format: SARIF 2.1.0 as GitHub code scanning accepts it — one run, a rule per
//! diagnostic code, results with repo-relative, percent-encoded URIs under `%SRCROOT%`.

use super::Summary;
use crate::diagnostic::{Code, Severity};
use serde_json::{Value, json};

pub fn render(s: &Summary<'_>) -> String {
    let mut used: Vec<Code> = s.diagnostics.iter().map(|d| d.code).collect();
    used.sort();
    used.dedup();
    let rules: Vec<Value> = used
        .iter()
        .map(|c| {
            json!({
                "id": c.as_str(),
                "name": rule_name(c.title()),
                "shortDescription": { "text": c.title() },
                "fullDescription": { "text": format!("rampart diagnostic {}: {}", c.as_str(), c.title()) },
                "helpUri": format!("https://github.com/rampart-dev/rampart/blob/main/README.md#{}", c.as_str().to_lowercase()),
                "defaultConfiguration": { "level": level(c.severity()) },
                "properties": { "tags": ["config", "rampart"] }
            })
        })
        .collect();
    let results: Vec<Value> = s
        .diagnostics
        .iter()
        .map(|d| {
            let (file, line, column) = match &d.location {
                Some(l) => (
                    s.path(&l.file),
                    l.line.max(1),
                    if l.line > 0 { l.column.max(1) } else { 1 },
                ),
                // repository-wide problems are reported on the settings file
                None => (s.path(crate::config::SETTINGS_FILE), 1, 1),
            };
            let mut text = d.message.clone();
            if let Some(h) = &d.hint {
                text.push_str("\nhelp: ");
                text.push_str(h);
            }
            json!({
                "ruleId": d.code.as_str(),
                "ruleIndex": used.iter().position(|c| *c == d.code).unwrap_or(0),
                "level": level(d.severity),
                "message": { "text": text },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": uri(&file), "uriBaseId": "%SRCROOT%" },
                        "region": { "startLine": line, "startColumn": column }
                    }
                }]
            })
        })
        .collect();
    let log = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "rampart",
                "informationUri": "https://github.com/rampart-dev/rampart",
                "semanticVersion": env!("CARGO_PKG_VERSION"),
                "rules": rules
            }},
            "columnKind": "unicodeCodePoints",
            "results": results
        }]
    });
    let mut out = serde_json::to_string_pretty(&log).expect("sarif serializes");
    out.push('\n');
    out
}

fn level(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

/// `unknown team` → `UnknownTeam`.
fn rule_name(title: &str) -> String {
    title
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Percent-encode a relative path for a SARIF URI (RFC 3986), keeping `/`.
fn uri(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn uris_are_encoded() {
        assert_eq!(super::uri("tenants/a b\n.yaml"), "tenants/a%20b%0A.yaml");
        assert_eq!(
            super::rule_name("node or alias budget exceeded"),
            "NodeOrAliasBudgetExceeded"
        );
    }
}
