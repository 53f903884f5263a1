//! `validate --rev`: read a revision straight from the object database — no checkout, so
//! no filters, hooks or submodules ever run (reliability.md §7 item 18).

use crate::support::*;
use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn init(dir: &Path) {
    git(dir, &["init", "-q", "-b", "main"]);
}

#[test]
fn validates_a_revision_without_checkout() {
    let repo = repo_with(None);
    let p = repo.path();
    init(p);
    git(p, &["add", "-A"]);
    git(p, &["commit", "-qm", "base"]);
    let good = git(p, &["rev-parse", "HEAD"]);
    copy_tree(&root().join("testdata/invalid/R301-unknown-team"), p);
    git(p, &["add", "-A"]);
    git(p, &["commit", "-qm", "break"]);
    // the working tree is broken further, but --rev never looks at it
    write(&p.join("teams/platform.yaml"), "not: [valid\n");

    let old = rampart(&["validate", ".", "--rev", &good], Some(p));
    assert_eq!(old.code, 0, "{}", old.stdout);
    assert!(old.stdout.contains(&format!("at {}", &good[..12])), "{}", old.stdout);
    let head = rampart(&["validate", ".", "--rev", "main", "--format", "json"], Some(p));
    assert_eq!(head.code, 3, "{}", head.stdout);
    let v: serde_json::Value = serde_json::from_str(&head.stdout).unwrap();
    assert_eq!(v["commit"].as_str().unwrap(), git(p, &["rev-parse", "HEAD"]));
    let codes: Vec<&str> = v["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["R301", "R301"]);
    let workdir = rampart(&["validate", "."], Some(p));
    assert!(codes_of(&workdir).contains(&"R112".to_owned()));
}

fn codes_of(run: &Run) -> Vec<String> {
    codes(&run.stdout)
}

#[test]
fn a_subdirectory_of_the_repository_is_the_config_repo() {
    let outer = tempfile::tempdir().unwrap();
    let p = outer.path();
    init(p);
    std::fs::create_dir_all(p.join("config")).unwrap();
    copy_tree(&root().join("testdata/base"), &p.join("config"));
    copy_tree(&root().join("testdata/invalid/R303-unknown-tenant"), &p.join("config"));
    git(p, &["add", "-A"]);
    git(p, &["commit", "-qm", "config in a subdirectory"]);
    let run = rampart(&["validate", "config", "--rev", "HEAD", "--format", "github"], Some(p));
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    // a directory that exists in the work tree but not in the revision
    std::fs::create_dir_all(p.join("uncommitted")).unwrap();
    let missing = rampart(&["validate", "uncommitted", "--rev", "HEAD"], Some(p));
    assert_eq!(missing.code, 1);
    assert!(
        missing
            .stderr
            .contains("`uncommitted` is not a directory in revision `HEAD`"),
        "{}",
        missing.stderr
    );
    // annotations name the file as GitHub knows it: relative to the repository root
    assert!(run.stdout.contains("file=config/rollouts/ghost.yaml"), "{}", run.stdout);
}

#[test]
fn filters_hooks_symlinks_and_submodules_never_run() {
    let repo = repo_with(None);
    let p = repo.path();
    init(p);
    let marker = p.join("../rampart-filter-ran");
    let _ = std::fs::remove_file(&marker);
    let touch = format!("touch {}", marker.display());
    git(p, &["config", "filter.evil.smudge", &touch]);
    git(p, &["config", "filter.evil.clean", "cat"]);
    git(p, &["config", "filter.evil.required", "true"]);
    write(&p.join(".gitattributes"), "*.yaml filter=evil\n");
    write(&p.join(".git/hooks/post-checkout"), format!("#!/bin/sh\n{touch}\n"));
    std::os::unix::fs::symlink("/etc/passwd", p.join("teams/passwd.yaml")).unwrap();
    git(p, &["add", "-A"]);
    git(p, &["commit", "-qm", "base", "--no-verify"]);
    // a submodule entry (gitlink) pointing at some commit
    let sha = git(p, &["rev-parse", "HEAD"]);
    git(
        p,
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{sha},tenants/vendored"),
        ],
    );
    git(p, &["commit", "-qm", "submodule", "--no-verify"]);
    let _ = std::fs::remove_file(&marker);

    let run = rampart(&["validate", ".", "--rev", "HEAD"], Some(p));
    assert_bounded(&run, "git hostile");
    assert_eq!(run.code, 3, "{}", run.stdout);
    assert_eq!(codes_of(&run), ["R104", "R105"], "{}", run.stdout);
    assert!(!marker.exists(), "a filter or hook ran");
    let head = git(p, &["rev-parse", "HEAD"]);
    snapshot(
        "git/filters-symlinks-submodules.txt",
        &transcript(&run).replace(&head[..12], "<sha>"),
    )
    .unwrap();
}

#[test]
fn an_unknown_revision_cannot_run() {
    let repo = repo_with(None);
    init(repo.path());
    let run = rampart(&["validate", ".", "--rev", "no-such-branch"], Some(repo.path()));
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("revision `no-such-branch` not found"),
        "{}",
        run.stderr
    );
    let not_git = tempfile::tempdir().unwrap();
    let run = rampart(&["validate", ".", "--rev", "HEAD"], Some(not_git.path()));
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("git repository"), "{}", run.stderr);
}
