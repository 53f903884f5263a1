//! The parse cache (`.git/rampart/parse-cache-*.jsonl`) only skips work: every output is
//! the same with it, without it (`RAMPART_CACHE=off`) and with a damaged one.

use crate::support::*;
use std::path::{Path, PathBuf};

const OFF: &[(&str, &str)] = &[("RAMPART_CACHE", "off")];

fn cache_files(repo: &Path) -> Vec<PathBuf> {
    rampart_files(repo, "parse-cache-")
}

fn rampart_files(repo: &Path, prefix: &str) -> Vec<PathBuf> {
    let dir = repo.join(".git/rampart");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn the_parse_cache_changes_no_output() {
    let repo = example_history();
    let p = repo.path();
    edit(p, "tenants/sandbox.yaml", "cpu: 1", "cpu: 2");
    commit(p, "Alice <alice@example.com>", "sandbox: more cpu");
    let plan = ["plan", ".", "--base", "HEAD~1", "--format", "json"];
    let check = ["check", ".", "--base", "HEAD~1", "--format", "json"];

    let expected_plan = rampart_env(&plan, Some(p), OFF);
    let expected_check = rampart_env(&check, Some(p), OFF);
    assert_eq!(expected_plan.code, 0, "{}", expected_plan.stderr);
    assert!(rampart_files(p, "").is_empty(), "RAMPART_CACHE=off writes nothing");

    // cold: learns every blob (the second revision already uses the first one's)
    let cold = rampart(&plan, Some(p));
    assert_eq!(cold.stdout, expected_plan.stdout);
    let files = cache_files(p);
    assert_eq!(files.len(), 1, "{files:?}");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let lines = text.lines().count();
    let specs = ["teams", "tenants", "plugins", "rollouts"]
        .iter()
        .map(|d| std::fs::read_dir(p.join(d)).unwrap().count())
        .sum::<usize>();
    // (the sandbox file has two blobs: one per revision)
    assert_eq!(
        lines,
        specs + 1,
        "one line per spec blob of the two revisions, each once"
    );

    // both trees were found valid: the next reads skip the base's checks
    let valid = rampart_files(p, "valid-trees-");
    assert_eq!(valid.len(), 1, "{valid:?}");
    let trees: Vec<String> = ["HEAD~1^{tree}", "HEAD^{tree}"]
        .iter()
        .map(|r| git_as(p, "CI <ci@example.com>", &["rev-parse", r]))
        .collect();
    let mut known: Vec<String> = std::fs::read_to_string(&valid[0])
        .unwrap()
        .lines()
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect();
    known.sort();
    let mut want = trees.clone();
    want.sort();
    assert_eq!(known, want);

    // warm
    assert_eq!(rampart(&plan, Some(p)).stdout, expected_plan.stdout);
    assert_eq!(rampart(&check, Some(p)).stdout, expected_check.stdout);
    assert_eq!(
        std::fs::read_to_string(&files[0]).unwrap(),
        text,
        "nothing new to learn"
    );

    // damaged: a line cut short, one whose documents do not parse, one whose config is not
    // JSON, and noise; each is read from git again
    let mut damaged = String::new();
    for (i, line) in text.lines().enumerate() {
        match i % 4 {
            0 => damaged.push_str(&line[..line.len() / 2]),
            1 => damaged.push_str(&line.replacen("\"spec\"", "\"spek\"", 1)),
            2 => damaged.push_str(&line.replacen("\\\"", "\\\"}", 1)),
            _ => damaged.push_str(line),
        }
        damaged.push('\n');
    }
    damaged.push_str("not a line at all\n\u{0}\u{1}\n");
    std::fs::write(&files[0], damaged).unwrap();
    assert_eq!(rampart(&plan, Some(p)).stdout, expected_plan.stdout);
    assert_eq!(rampart(&check, Some(p)).stdout, expected_check.stdout);
}

/// A problem found across files points into a file the cache let rampart skip reading: it is
/// read then, so the problem keeps its line, column and snippet.
#[test]
fn a_problem_in_an_unread_file_keeps_its_place() {
    let repo = example_history();
    let p = repo.path();
    // learn every blob of HEAD
    assert_eq!(rampart(&["plan", ".", "--base", "HEAD"], Some(p)).code, 0);
    assert_eq!(cache_files(p).len(), 1);
    edit(p, "teams/product-squads.yaml", "name: web-storefront", "name: web-shop");
    commit(p, "Alice <alice@example.com>", "rename the storefront team");
    let check = ["check", ".", "--base", "HEAD~1"];
    let expected = rampart_env(&check, Some(p), OFF);
    assert_eq!(expected.code, 3, "{}", expected.stdout);
    assert!(
        expected.stdout.contains("tenants/storefront.yaml:13:"),
        "{}",
        expected.stdout
    );
    let run = rampart(&check, Some(p));
    assert_eq!(transcript(&run), transcript(&expected));
}

/// Only the entities a request can reach are built: the change's objects, what its context
/// names — and what a policy names literally, which is read here.
#[test]
fn a_policy_reads_an_object_it_names() {
    let repo = example_history();
    let p = repo.path();
    write(
        &p.join("policies/sandbox-open.cedar"),
        "@id(\"sandbox-open-while-payments-is-enterprise\")\n\
         permit (principal, action == Rampart::Action::\"updateTenant\", resource == Rampart::Tenant::\"sandbox\")\n\
         when { Rampart::Tenant::\"payments-prod\".tier == \"enterprise\" };\n",
    );
    commit(p, "Alice <alice@example.com>", "anyone may resize the sandbox");
    edit(p, "tenants/sandbox.yaml", "cpu: 1", "cpu: 2");
    commit(p, "Eve <eve@evil.example>", "give the sandbox more cpu");
    let run = rampart(&["check", ".", "--base", "HEAD~1"], Some(p));
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(run.stdout.contains("allow update Tenant sandbox"), "{}", run.stdout);
}
