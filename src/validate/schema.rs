//! JSON Schema validation of one document against its kind's schema (pure).
//!
//! The schemas in `schemas/` are embedded at build time and resolved offline through an
//! in-memory registry: no `$ref` ever reaches the network or the file system. Patterns use
//! the linear-time `regex` engine.

use crate::diagnostic::{Code, Diagnostic, edit_distance, quote};
use crate::load::{escape_pointer, yaml};
use jsonschema::error::{TypeKind, ValidationErrorKind as K};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::OnceLock;

const BASE: &str = "https://rampart.dev/schemas/v1/";

/// The shipped schemas, by file name.
pub const SCHEMAS: [(&str, &str); 8] = [
    ("common.schema.json", include_str!("../../schemas/common.schema.json")),
    ("team.schema.json", include_str!("../../schemas/team.schema.json")),
    ("tenant.schema.json", include_str!("../../schemas/tenant.schema.json")),
    ("plugin.schema.json", include_str!("../../schemas/plugin.schema.json")),
    ("rollout.schema.json", include_str!("../../schemas/rollout.schema.json")),
    (
        "settings.schema.json",
        include_str!("../../schemas/settings.schema.json"),
    ),
    (
        "policy-test.schema.json",
        include_str!("../../schemas/policy-test.schema.json"),
    ),
    (
        "signing-key.schema.json",
        include_str!("../../schemas/signing-key.schema.json"),
    ),
];

/// Which schema a document is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Team,
    Tenant,
    Plugin,
    Rollout,
    Settings,
    PolicyTest,
    SigningKey,
}

impl Target {
    fn file(self) -> &'static str {
        match self {
            Target::Team => "team.schema.json",
            Target::Tenant => "tenant.schema.json",
            Target::Plugin => "plugin.schema.json",
            Target::Rollout => "rollout.schema.json",
            Target::Settings => "settings.schema.json",
            Target::PolicyTest => "policy-test.schema.json",
            Target::SigningKey => "signing-key.schema.json",
        }
    }
}

struct Compiled {
    validators: Vec<(Target, jsonschema::Validator)>,
    /// Every property name any schema declares, for "did you mean" hints.
    fields: BTreeSet<String>,
}

fn parse(name: &str, text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("embedded schema {name} is not JSON: {e}"))
}

fn compiled() -> &'static Compiled {
    static COMPILED: OnceLock<Compiled> = OnceLock::new();
    COMPILED.get_or_init(|| {
        let common = parse("common", SCHEMAS[0].1);
        let registry = jsonschema::Registry::new()
            .add(format!("{BASE}common.schema.json"), common)
            .and_then(|r| r.prepare())
            .expect("embedded common schema registers");
        let mut fields = BTreeSet::new();
        let validators = [
            Target::Team,
            Target::Tenant,
            Target::Plugin,
            Target::Rollout,
            Target::Settings,
            Target::PolicyTest,
            Target::SigningKey,
        ]
        .into_iter()
        .map(|t| {
            let text = SCHEMAS.iter().find(|(n, _)| *n == t.file()).expect("schema listed").1;
            let schema = parse(t.file(), text);
            collect_fields(&schema, &mut fields);
            let v = jsonschema::draft202012::options()
                .offline()
                .with_registry(&registry)
                .with_base_uri(format!("{BASE}{}", t.file()))
                .with_pattern_options(jsonschema::PatternOptions::regex())
                .should_validate_formats(true)
                .with_format("semver", |s: &str| semver::Version::parse(s).is_ok())
                .with_format("semver-range", |s: &str| semver::VersionReq::parse(s).is_ok())
                .build(&schema)
                .unwrap_or_else(|e| panic!("embedded schema {} compiles: {e}", t.file()));
            (t, v)
        })
        .collect();
        collect_fields(&parse("common", SCHEMAS[0].1), &mut fields);
        Compiled { validators, fields }
    })
}

fn collect_fields(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::Object(props)) = m.get("properties") {
                out.extend(props.keys().cloned());
            }
            m.values().for_each(|x| collect_fields(x, out));
        }
        Value::Array(xs) => xs.iter().for_each(|x| collect_fields(x, out)),
        _ => {}
    }
}

/// Compile the schemas now (they are otherwise compiled on first use).
pub fn warm_up() {
    compiled();
}

/// Validate one document, appending diagnostics; true when it is valid.
pub fn check(target: Target, value: &Value, file: &str, doc: usize, diags: &mut Vec<Diagnostic>) -> bool {
    let c = compiled();
    let validator = &c
        .validators
        .iter()
        .find(|(t, _)| *t == target)
        .expect("validator compiled")
        .1;
    if validator.is_valid(value) {
        return true;
    }
    let before = diags.len();
    let errors: Vec<_> = validator.iter_errors(value).collect();
    // a misspelled required field is one mistake, not two: the unknown key's "did you mean"
    // names the required field, and "missing required field" is not said as well
    let mut missing: HashMap<String, BTreeSet<String>> = HashMap::new();
    for e in &errors {
        if let K::Required { property } = e.kind() {
            let name = property.as_str().unwrap_or_default().to_owned();
            missing
                .entry(e.instance_path().as_str().to_owned())
                .or_default()
                .insert(name);
        }
    }
    let mut misspelled: HashSet<(String, String)> = HashSet::new();
    for e in &errors {
        if let K::AdditionalProperties { unexpected } | K::UnevaluatedProperties { unexpected } = e.kind()
            && let Some(names) = missing.get(e.instance_path().as_str())
        {
            for key in unexpected {
                if let Some(f) = closest(key, names) {
                    misspelled.insert((e.instance_path().as_str().to_owned(), f.to_owned()));
                }
            }
        }
    }
    for e in &errors {
        let ptr = e.instance_path().as_str().to_owned();
        if let K::Required { property } = e.kind()
            && misspelled.contains(&(ptr.clone(), property.as_str().unwrap_or_default().to_owned()))
        {
            continue;
        }
        let fields = missing.get(&ptr).filter(|m| !m.is_empty()).map(|m| (m, &c.fields));
        // a value under a secret key is never quoted in a message (the snippet masks it too)
        let hidden = ptr
            .split('/')
            .any(|seg| crate::compile::secret::hides_value(&seg.replace("~1", "/").replace("~0", "~")));
        let masked;
        let instance: &Value = if hidden {
            masked = mask(e.instance().as_ref());
            &masked
        } else {
            e.instance().as_ref()
        };
        diags.extend(describe(
            e.kind(),
            instance,
            &ptr,
            file,
            doc,
            fields.unwrap_or((&c.fields, &c.fields)),
        ));
    }
    // `oneOf` failures repeat what the branches said; keep them only when alone
    let added = diags.len() - before;
    if added == 0 {
        diags.push(Diagnostic::at_node(
            Code::SchemaViolation,
            file,
            doc,
            "",
            "document does not match its schema",
        ));
    }
    false
}

/// `v` with every string replaced by the mask reports use for secrets.
fn mask(v: &Value) -> Value {
    match v {
        Value::String(_) => Value::String("********".to_owned()),
        Value::Array(xs) => Value::Array(xs.iter().map(mask).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), mask(x))).collect()),
        other => other.clone(),
    }
}

fn describe(
    kind: &K,
    instance: &Value,
    ptr: &str,
    file: &str,
    doc: usize,
    // the fields to suggest for a typo: those missing here first, then every known field
    (missing, fields): (&BTreeSet<String>, &BTreeSet<String>),
) -> Vec<Diagnostic> {
    let at = |code: Code, p: &str, msg: String| Diagnostic::at_node(code, file, doc, p, msg);
    let field = field_name(ptr);
    let d = match kind {
        K::AdditionalProperties { unexpected } | K::UnevaluatedProperties { unexpected } => {
            return unexpected
                .iter()
                .map(|key| {
                    let mut d = at(
                        Code::UnknownField,
                        &format!("{ptr}/{}#key", escape_pointer(key)),
                        format!("unknown field {} in {}", quote(key), where_(ptr)),
                    );
                    d.hint = Some(match closest(key, missing).or_else(|| closest(key, fields)) {
                        Some(s) if s == key => format!(
                            "`{key}` is a field of another object here: check its indentation"
                        ),
                        Some(s) => format!("did you mean `{s}`? unknown fields are errors, so typos fail closed"),
                        None => "remove it; unknown fields are errors, so typos fail closed".to_owned(),
                    });
                    d
                })
                .collect();
        }
        K::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            at(Code::MissingField, &format!("{ptr}/{}", escape_pointer(name)), format!("missing required field `{name}` in {}", where_(ptr)))
                .with_hint(format!("add `{name}`; see the schema for what it holds"))
        }
        K::Type { kind } => {
            let name = |t: String| match t.as_str() {
                "object" => "mapping".to_owned(),
                "array" => "list".to_owned(),
                _ => t,
            };
            let expected = match kind {
                TypeKind::Single(t) => name(format!("{t}")),
                TypeKind::Multiple(ts) => ts.iter().map(|t| name(format!("{t}"))).collect::<Vec<_>>().join(" or "),
            };
            let numeric_text = instance.as_str().is_some_and(|s| !s.is_empty() && s.trim_start_matches(['-', '+']).bytes().all(|b| b.is_ascii_digit() || b == b'_' || b == b'.'))
                // (`1:30` too: base 60 to YAML 1.1, text here)
                || instance.as_str().and_then(yaml::yaml11).is_some_and(|r| matches!(r, yaml::Yaml11::Integer(_)));
            let hint = if expected.contains("string") && (instance.is_number() || instance.is_boolean()) {
                format!("quote the value (`\"{}\"`) if it is meant as text", instance)
            } else if expected == "boolean" && instance.is_string() {
                yaml::BOOLEAN_HINT.to_owned()
            } else if (expected == "integer" || expected == "number") && numeric_text {
                yaml::NUMBER_HINT.to_owned()
            } else if expected.contains("integer") && instance.is_number() {
                "write a whole number".to_owned()
            } else {
                format!("write {} {expected}", article(&expected))
            };
            let found = match instance {
                Value::Array(_) | Value::Object(_) => short(instance),
                _ => format!("{} {}", json_type(instance), short(instance)),
            };
            at(Code::TypeMismatch, ptr, format!("{field} must be {} {expected}, found {found}", article(&expected))).with_hint(hint)
        }
        K::Enum { options } => {
            let opts: Vec<String> = options.as_array().map(|a| a.iter().map(short).collect()).unwrap_or_default();
            let hint = match opts.iter().find(|o| instance.as_str().is_some_and(|s| o.trim_matches('`').eq_ignore_ascii_case(s))) {
                Some(o) => format!("did you mean {o}? values are case-sensitive"),
                None => format!("use one of {}", opts.join(", ")),
            };
            at(Code::NotAllowed, ptr, format!("{field} is {}, not one of {}", short(instance), opts.join(", "))).with_hint(hint)
        }
        K::Constant { expected_value } => at(
            Code::NotAllowed,
            ptr,
            format!("{field} must be {}, found {}", short(expected_value), short(instance)),
        )
        .with_hint(format!("write {}", short(expected_value))),
        K::Pattern { .. } if ptr.ends_with("/secretKeyRef/name") => at(
            Code::BadFormat,
            ptr,
            format!("{field} {} is not a valid Secret name", short(instance)),
        )
        .with_hint("Secret names are DNS subdomains: lowercase letters, digits, `-` and `.`, at most 253 characters"),
        K::Pattern { .. } | K::Not { .. } if ptr.ends_with("/secretKeyRef/key") => at(
            Code::BadFormat,
            ptr,
            format!("{field} {} is not a valid key of a Secret", short(instance)),
        )
        .with_hint("a Secret's keys are letters, digits, `-`, `_` and `.`, and not `.` or `..`"),
        K::Pattern { .. } | K::Format { .. } | K::MinLength { .. } if is_name_like(ptr) => at(
            Code::BadFormat,
            ptr,
            format!("{field} {} is not a valid name", short(instance)),
        )
        .with_hint("names are DNS labels: lowercase letters, digits and `-`, starting and ending with a letter or digit, at most 63 characters"),
        K::Pattern { pattern } => at(Code::BadFormat, ptr, format!("{field} {} does not match the expected format", short(instance)))
            .with_hint(format!("it must match `{pattern}`")),
        K::Format { format } => {
            let hint = match format.as_str() {
                "semver" => "write a semantic version such as `1.4.2` or `2.0.0-rc.1`".to_owned(),
                "semver-range" => "write a version range such as `^1.2`, `>=1.2, <2` or `~1.4.0`".to_owned(),
                other => format!("write a valid `{other}`"),
            };
            at(Code::BadFormat, ptr, format!("{field} {} is not a valid {format}", short(instance))).with_hint(hint)
        }
        K::PropertyNames { error } => {
            // the offending key is the instance of the inner error
            let key = error.instance().as_str().unwrap_or_default().to_owned();
            at(Code::BadFormat, &format!("{ptr}/{}#key", escape_pointer(&key)), format!("key {} in {} is not allowed", quote(&key), where_(ptr)))
                .with_hint("keys here are names: lowercase letters, digits and `-` (label keys may also have a `domain/` prefix)")
        }
        K::Minimum { limit } | K::ExclusiveMinimum { limit } => {
            at(Code::OutOfRange, ptr, format!("{field} is {}, below the minimum of {limit}", short(instance))).with_hint(format!("use a value of at least {limit}"))
        }
        K::Maximum { limit } | K::ExclusiveMaximum { limit } => {
            at(Code::OutOfRange, ptr, format!("{field} is {}, above the maximum of {limit}", short(instance))).with_hint(format!("use a value of at most {limit}"))
        }
        K::MinLength { limit } => at(Code::OutOfRange, ptr, format!("{field} is shorter than {limit} characters")).with_hint("it may not be empty"),
        K::MaxLength { limit } => at(Code::OutOfRange, ptr, format!("{field} is longer than {limit} characters")).with_hint(format!("shorten it to at most {limit} characters")),
        K::MinItems { limit } => at(Code::OutOfRange, ptr, format!("{field} needs at least {limit} item{}", plural(*limit))).with_hint("add the missing entries"),
        K::MaxItems { limit } => at(Code::OutOfRange, ptr, format!("{field} has more than {limit} items")).with_hint("split the object or remove entries"),
        K::MinProperties { limit } => at(Code::OutOfRange, ptr, format!("{field} needs at least {limit} entr{}", if *limit == 1 { "y" } else { "ies" })).with_hint("fill it in or remove it"),
        K::MaxProperties { limit } => at(Code::OutOfRange, ptr, format!("{field} has more than {limit} entries")).with_hint("remove entries"),
        K::UniqueItems => {
            // point at the repeat, not at the list
            let items = instance.as_array().map(Vec::as_slice).unwrap_or_default();
            match (1..items.len()).find(|&i| items[..i].contains(&items[i])) {
                Some(i) => at(Code::DuplicateEntry, &format!("{ptr}/{i}"), format!("{field} lists {} twice", short(&items[i]))),
                None => at(Code::DuplicateEntry, ptr, format!("{field} lists the same item twice")),
            }
            .with_hint("remove the repeated entry")
        }
        K::OneOfNotValid { .. } | K::OneOfMultipleValid { .. } if ptr.contains("/slos/") => {
            let name = instance.get("name").and_then(Value::as_str).map(quote).unwrap_or_else(|| "this SLO".to_owned());
            let both = instance.get("max").is_some() && instance.get("min").is_some();
            let (at_ptr, msg) = if both {
                (format!("{ptr}/min#key"), format!("SLO {name} has both `max` and `min`; it needs exactly one"))
            } else {
                (ptr.to_owned(), format!("SLO {name} has neither `max` nor `min`; it needs exactly one"))
            };
            at(Code::SchemaViolation, &at_ptr, msg).with_hint("keep `max` for error rates and latencies, `min` for success rates")
        }
        other => at(Code::SchemaViolation, ptr, format!("{field} does not match the schema ({})", keyword(other))),
    };
    vec![d]
}

fn keyword(k: &K) -> String {
    k.keyword().to_owned()
}

fn is_name_like(ptr: &str) -> bool {
    ptr.ends_with("/metadata/name")
        || ptr.contains("/owners/")
        || ptr.contains("/allowFrom/")
        || ptr.contains("/names/")
        || ptr.ends_with("/plugin")
        || (ptr.contains("/plugins/") && ptr.ends_with("/name"))
}

/// `/spec/quota/cpu` → `` `spec.quota.cpu` ``; the root → `the document`.
fn field_name(ptr: &str) -> String {
    if ptr.is_empty() {
        return "the document".to_owned();
    }
    let dotted: Vec<String> = ptr[1..]
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .map(|t| {
            if t.bytes().all(|b| b.is_ascii_digit()) {
                format!("[{t}]")
            } else {
                format!(".{t}")
            }
        })
        .collect();
    format!("`{}`", dotted.concat().trim_start_matches('.').replace(".[", "["))
}

fn where_(ptr: &str) -> String {
    if ptr.is_empty() {
        "the document".to_owned()
    } else {
        field_name(ptr)
    }
}

fn short(v: &Value) -> String {
    match v {
        Value::String(s) => quote(s),
        Value::Object(_) => "a mapping".to_owned(),
        Value::Array(_) => "a list".to_owned(),
        other => {
            let s = other.to_string();
            if s.len() > 40 {
                format!("`{}…`", &s[..40])
            } else {
                format!("`{s}`")
            }
        }
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "mapping",
    }
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The known field closest to `key` by edit distance, if close enough to be a typo.
fn closest<'a>(key: &str, fields: &'a BTreeSet<String>) -> Option<&'a str> {
    let lower = key.to_lowercase();
    fields
        .iter()
        .map(|f| (edit_distance(&lower, &f.to_lowercase()), f))
        .filter(|(d, f)| *d <= 2.max(f.len() / 4) && *d < f.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, f)| f.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_read_naturally() {
        assert_eq!(field_name("/spec/quota/cpu"), "`spec.quota.cpu`");
        assert_eq!(field_name("/spec/plugins/2/name"), "`spec.plugins[2].name`");
        assert_eq!(field_name(""), "the document");
    }

    /// `ownrs:` for `owners:` was reported twice: unknown `ownrs`, and missing `owners`.
    #[test]
    fn a_misspelled_required_field_is_one_error() {
        let doc = serde_json::json!({
            "apiVersion": "rampart.dev/v1", "kind": "Tenant", "metadata": {"name": "shop"},
            "spec": {"ownrs": ["platform"], "tier": "free", "isolation": "shared",
                     "quota": {"cpu": "1", "memory": "1Gi", "pods": 1, "storage": "1Gi"}}
        });
        let mut diags = Vec::new();
        assert!(!check(Target::Tenant, &doc, "t.yaml", 0, &mut diags));
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(diags[0].code, Code::UnknownField);
        assert!(diags[0].hint.as_deref().unwrap().starts_with("did you mean `owners`?"));
        // a missing field with no look-alike is still reported
        let mut doc = doc;
        doc["spec"].as_object_mut().unwrap().remove("ownrs");
        let mut diags = Vec::new();
        check(Target::Tenant, &doc, "t.yaml", 0, &mut diags);
        assert_eq!(diags.iter().map(|d| d.code).collect::<Vec<_>>(), [Code::MissingField]);
    }

    #[test]
    fn typos_find_their_field() {
        let fields: BTreeSet<String> = ["owners", "isolation", "allowFrom"].map(String::from).into();
        assert_eq!(closest("ownres", &fields), Some("owners"));
        assert_eq!(closest("isolaton", &fields), Some("isolation"));
        assert_eq!(closest("zzz", &fields), None);
    }
}
