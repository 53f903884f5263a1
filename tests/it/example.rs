//! The bundled example validates clean: the README's main command.

use crate::support::*;

#[test]
fn example_platform_config_is_valid() {
    let run = rampart(&["validate", "examples/platform-config"], Some(&root()));
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.starts_with("ok: "), "{}", run.stdout);
    let json = rampart(
        &["validate", "examples/platform-config", "--format", "json"],
        Some(&root()),
    );
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert!(v["summary"]["objects"].as_u64().unwrap() >= 5 + 8 + 6 + 2);
}

/// The README's quick start runs as written: the main job applies the example, and applying it
/// again changes nothing.
#[test]
fn readme_quick_start_applies_the_example() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.starts_with("cargo run -- "))
        .expect("a `cargo run --` line in the quick start");
    let command = line["cargo run -- ".len()..].split('#').next().unwrap().trim();
    let out = tempfile::tempdir().unwrap();
    let args: Vec<String> = command
        .split_whitespace()
        .map(|a| a.replace("dir:target/platform", &format!("dir:{}/platform", out.path().display())))
        .collect();
    assert!(args.iter().any(|a| a.starts_with("dir:")), "{command}");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = rampart(&args, Some(&root()));
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    assert!(first.stdout.starts_with("applied"), "{}", first.stdout);
    let again = rampart(&args, Some(&root()));
    assert!(again.stdout.starts_with("no changes"), "{}", again.stdout);
}

/// The numbers the READMEs give for the example are the example's: the quick start said 33
/// policy tests while the policy-test section said 31, and the example's README said it had
/// no policies, keys or signatures after they were added.
#[test]
fn readme_numbers_match_the_example() {
    let source = rampart::source::Source::dir(&root().join("examples/platform-config")).unwrap();
    let run = rampart::pipeline::policy_test(&source).unwrap();
    let repo = &run.validated.repo;
    let signed = repo.plugins.iter().filter(|p| p.spec.signature.is_some()).count();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let quick_start = section(&readme, "## Quick start");
    let example = std::fs::read_to_string(root().join("examples/platform-config/README.md")).unwrap();
    let mut wrong = Vec::new();
    for (text, what, actual) in [
        (quick_start, "teams", repo.teams.len()),
        (quick_start, "tenants", repo.tenants.len()),
        (quick_start, "plugins", repo.plugins.len()),
        (quick_start, "rollouts", repo.rollouts.len()),
        (quick_start, "policy tests", run.results.len()),
        (section(&readme, "### `rampart policy test"), "cases", run.results.len()),
        (&example, "teams", repo.teams.len()),
        (&example, "portals", repo.tenants.len()),
        (&example, "dynamic plugins", repo.plugins.len()),
        (&example, "canary rollouts", repo.rollouts.len()),
        (&example, "cases", run.results.len()),
        (&example, "minisign public keys", 3),
        (&example, "carry a minisign", signed),
        (&example, "plugins are signed", signed),
    ] {
        let said = counts_before(text, what);
        if said.is_empty() {
            wrong.push(format!("no count of {what:?} found"));
        }
        for n in said.into_iter().filter(|&n| n != actual) {
            wrong.push(format!("says {n} {what}, the example has {actual}"));
        }
    }
    assert_eq!(
        std::fs::read_dir(root().join("examples/platform-config/keys"))
            .unwrap()
            .count(),
        3
    );
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// The text of the Markdown section starting at the heading line beginning with `heading`.
fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let start = text.find(&format!("\n{heading}")).expect(heading) + 1;
    let level = heading.split(' ').next().unwrap();
    let end = text[start + 1..]
        .find(&format!("\n{level} "))
        .map_or(text.len(), |e| start + 1 + e);
    &text[start..end]
}

/// The numbers written (as digits or as words) right before each `what` in `text`.
fn counts_before(text: &str, what: &str) -> Vec<usize> {
    const WORDS: [&str; 13] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    ];
    let text = text.replace('\n', " ");
    text.match_indices(&format!(" {what}"))
        .filter_map(|(i, _)| {
            let word = text[..i].rsplit(' ').next()?.to_lowercase();
            word.parse().ok().or_else(|| WORDS.iter().position(|w| *w == word))
        })
        .collect()
}

#[test]
fn usage_errors_exit_1_and_help_exits_0() {
    assert_eq!(rampart(&["validate", "--format", "xml"], None).code, 1);
    assert_eq!(rampart(&["frobnicate"], None).code, 1);
    let help = rampart(&["validate", "--help"], None);
    assert_eq!(help.code, 0);
    assert!(help.stdout.contains("--rev"));
    assert_eq!(rampart(&["validate", "/nonexistent/repo"], None).code, 1);
}

/// The shipped schemas: draft 2020-12, `additionalProperties: false` on every object with
/// properties, and a description on every property — what editors show on hover.
#[test]
fn schemas_describe_every_field() {
    fn walk(v: &serde_json::Value, at: &str, problems: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(serde_json::Value::Object(props)) = m.get("properties") {
                    if m.get("additionalProperties") != Some(&serde_json::Value::Bool(false)) {
                        problems.push(format!("{at}: object without `additionalProperties: false`"));
                    }
                    for (k, p) in props {
                        if p.get("description").and_then(|d| d.as_str()).is_none_or(str::is_empty) {
                            problems.push(format!("{at}/properties/{k}: no description"));
                        }
                    }
                }
                for (k, x) in m {
                    walk(x, &format!("{at}/{k}"), problems);
                }
            }
            serde_json::Value::Array(xs) => xs
                .iter()
                .enumerate()
                .for_each(|(i, x)| walk(x, &format!("{at}/{i}"), problems)),
            _ => {}
        }
    }
    let mut problems = Vec::new();
    for entry in std::fs::read_dir(root().join("schemas")).unwrap() {
        let path = entry.unwrap().path();
        let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        assert_eq!(
            schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{name}"
        );
        assert!(schema["description"].is_string(), "{name}: no top-level description");
        walk(&schema, &name, &mut problems);
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// ARCHITECTURE.md's invariants that a grep can hold: every source file says what it is for
/// in a `//!` line, and the pure stages touch no file system, network, process or git.
#[test]
fn architecture_invariants() {
    let mut stack = vec![root().join("src")];
    let mut files = Vec::new();
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p)
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p)
            }
        }
    }
    let pure = [
        "src/load/",
        "src/validate/",
        "src/spec/",
        "src/report/",
        "src/policy/",
        "src/change.rs",
        "src/compile/",
        "src/plan/",
        "src/units.rs",
        "src/diagnostic.rs",
        "src/observe/analysis",
        "src/rollout/",
        "src/rollback/edit",
        "src/audit/mod.rs",
    ];
    let io = [
        "std::fs",
        "std::net",
        "std::process",
        "std::env",
        "git2",
        "tokio",
        "reqwest",
        "Instant::now",
        "SystemTime",
    ];
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let rel = f.strip_prefix(root()).unwrap().to_string_lossy().into_owned();
        assert!(
            text.starts_with("//! "),
            "{rel} does not open with a `//!` line saying what it is for"
        );
        if pure.iter().any(|p| rel.starts_with(p)) {
            for word in io {
                assert!(!text.contains(word), "{rel} is a pure stage but mentions `{word}`");
            }
        }
    }
}
