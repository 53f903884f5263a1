//! The machine formats: `json` (stable, documented), `github` annotations, and SARIF 2.1.0
//! checked against the official schema (npm `@microsoft/jest-sarif` ships it; `.ci/run`
//! installs it).

use crate::support::*;

/// Two unknown teams (errors) and a tenant allowing itself (a warning), so both levels show.
fn case() -> tempfile::TempDir {
    let repo = repo_with(Some(&root().join("testdata/invalid/R301-unknown-team")));
    copy_tree(&root().join("testdata/invalid/R318-self-reference"), repo.path());
    repo
}

#[test]
fn json_format_is_stable() {
    let repo = case();
    let run = rampart(&["validate", ".", "--format", "json"], Some(repo.path()));
    assert_eq!(run.code, 3);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["valid"], false);
    let masked = run.stdout.replace(env!("CARGO_PKG_VERSION"), "VERSION");
    snapshot("formats/unknown-team.json", &masked).unwrap();
}

#[test]
fn github_format_emits_annotations() {
    let repo = case();
    let run = rampart(&["validate", ".", "--format", "github"], Some(repo.path()));
    assert_eq!(run.code, 3);
    assert!(
        run.stdout.contains("::error file=tenants/orphan.yaml,line=6,col="),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("::warning file=tenants/self.yaml"),
        "{}",
        run.stdout
    );
    snapshot("formats/unknown-team.github", &run.stdout).unwrap();
}

#[test]
fn human_format_has_no_colour_when_piped() {
    let repo = case();
    let run = rampart(&["validate", "."], Some(repo.path()));
    assert!(!run.stdout.contains('\x1b'));
}

#[test]
fn sarif_is_valid_against_the_official_schema() {
    let repo = case();
    let run = rampart(&["validate", ".", "--format", "sarif"], Some(repo.path()));
    assert_eq!(run.code, 3);
    let log: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let schema_path = root().join(".ci/npm/sarif-2.1.0-rtm.5.json");
    let schema_text = std::fs::read_to_string(&schema_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run .ci/run (or scripts/test) to install the test data",
            schema_path.display()
        )
    });
    // the official schema's `language` pattern has a stray `]` that ECMA regexes accept and
    // the Rust engine rejects; it is unrelated to what rampart emits
    let schema_text = schema_text.replace(
        "^[a-zA-Z]{2}|^[a-zA-Z]{2}-[a-zA-Z]{2}]?$",
        "^[a-zA-Z]{2}(-[a-zA-Z]{2})?$",
    );
    let schema: serde_json::Value = serde_json::from_str(&schema_text).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&log)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // what GitHub code scanning needs beyond the schema: a rule per ruleId, a location with
    // a 1-based line on every result, relative URIs
    let run0 = &log["runs"][0];
    let rules: Vec<&str> = run0["tool"]["driver"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    for r in run0["results"].as_array().unwrap() {
        assert!(rules.contains(&r["ruleId"].as_str().unwrap()));
        let loc = &r["locations"][0]["physicalLocation"];
        assert!(loc["region"]["startLine"].as_u64().unwrap() >= 1);
        assert!(!loc["artifactLocation"]["uri"].as_str().unwrap().starts_with('/'));
    }
    let masked = run.stdout.replace(env!("CARGO_PKG_VERSION"), "VERSION");
    snapshot("formats/unknown-team.sarif", &masked).unwrap();
}
