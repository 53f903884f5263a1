//! `rampart init`: the scaffold validates, passes its policy tests and plans against nothing
//! (a directory and a git root commit) straight away; it refuses to overwrite (and then
//! writes nothing) unless --force, never writes through a link, and needs valid logins (from
//! the flag, or asked for on a terminal).

use crate::support::*;
use serde_json::Value;
use std::fs;
use std::path::Path;

/// `rampart init repo --platform-team alice,bob` in a fresh temp dir; the dir and the run.
fn init(extra: &[&str]) -> (tempfile::TempDir, Run) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut args = vec!["init", "repo", "--platform-team", "alice,bob"];
    args.extend(extra);
    let run = rampart(&args, Some(tmp.path()));
    (tmp, run)
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn init_validates_passes_its_policy_tests_and_plans_from_nothing() {
    let (tmp, run) = init(&[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    snapshot("init/summary.txt", &run.stdout).unwrap();
    let repo = tmp.path().join("repo");
    assert!(
        repo.join(".git").is_dir(),
        "not inside a git repository: init makes one"
    );
    assert!(read(&repo.join("teams/platform.yaml")).contains("  members:\n    - alice\n    - bob\n"));

    let dir = repo.to_str().unwrap();
    let validate = rampart(&["validate", dir], None);
    assert_eq!(validate.code, 0, "{}{}", validate.stdout, validate.stderr);
    assert!(!validate.stdout.contains("error"), "{}", validate.stdout);
    assert!(!validate.stdout.contains("warning"), "{}", validate.stdout);

    let tests = rampart(&["policy", "test", dir], None);
    assert_eq!(tests.code, 0, "{}{}", tests.stdout, tests.stderr);
    assert!(tests.stdout.contains("6 passed"), "{}", tests.stdout);

    // against an empty directory
    let empty = tempfile::tempdir().expect("tempdir");
    let plan = rampart(
        &[
            "plan",
            "--base-path",
            empty.path().to_str().unwrap(),
            "--head-path",
            dir,
        ],
        None,
    );
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
    assert_created(&plan.stdout);

    // against the repository's empty root commit, with the policies' verdicts
    git_as(
        &repo,
        "Alice <alice@example.com>",
        &["commit", "-q", "--allow-empty", "-m", "root"],
    );
    commit(&repo, "Alice <alice@example.com>", "rampart init");
    let plan = rampart(&["plan", ".", "--base", "HEAD~1", "--author", "alice"], Some(&repo));
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
    assert_created(&plan.stdout);
    assert!(!plan.stdout.contains("policy: not checked"), "{}", plan.stdout);
}

/// The plan of the scaffold creates the example tenant's objects, and nothing else.
fn assert_created(plan: &str) {
    for line in [
        "9 objects change (9 added, 0 changed, 0 removed)",
        "  sandbox: +9 ~0 -0",
        "+++ b/_cluster/namespace-sandbox.yaml",
        "+++ b/sandbox/service-portal.yaml",
    ] {
        assert!(plan.contains(line), "plan lacks {line:?}:\n{plan}");
    }
}

#[test]
fn init_refuses_to_overwrite_names_the_files_and_writes_nothing() {
    let (tmp, run) = init(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let repo = tmp.path().join("repo");
    fs::write(repo.join("README.md"), "ours\n").unwrap();
    fs::remove_file(repo.join("tenants/sandbox.yaml")).unwrap();

    let again = rampart(&["init", "repo", "--platform-team", "carol"], Some(tmp.path()));
    assert_eq!(again.code, 1, "{}{}", again.stdout, again.stderr);
    for file in [
        "`README.md`",
        "`rampart.yaml`",
        "`teams/platform.yaml`",
        "`.github/workflows/rampart.yml`",
    ] {
        assert!(again.stderr.contains(file), "{file} not named: {}", again.stderr);
    }
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
    assert_eq!(read(&repo.join("README.md")), "ours\n");
    assert!(
        !repo.join("tenants/sandbox.yaml").exists(),
        "wrote a file although it refused"
    );
    assert!(!read(&repo.join("teams/platform.yaml")).contains("carol"));

    let forced = rampart(
        &["init", "repo", "--platform-team", "carol", "--force"],
        Some(tmp.path()),
    );
    assert_eq!(forced.code, 0, "{}{}", forced.stdout, forced.stderr);
    assert!(
        forced.stdout.contains("wrote 16 files to `repo` (15 overwritten)"),
        "{}",
        forced.stdout
    );
    assert!(read(&repo.join("README.md")).starts_with("# Platform config\n"));
    assert!(repo.join("tenants/sandbox.yaml").is_file());
    assert!(read(&repo.join("teams/platform.yaml")).contains("    - carol\n"));
    assert!(forced.stdout.contains("a second platform member"), "{}", forced.stdout);
}

#[test]
fn init_never_writes_through_a_symlink_even_with_force() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (repo, outside) = (tmp.path().join("repo"), tmp.path().join("outside"));
    fs::create_dir_all(&repo).unwrap();
    fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, repo.join("policies")).unwrap();
    std::os::unix::fs::symlink(outside.join("readme"), repo.join("README.md")).unwrap();
    let run = rampart(
        &["init", "repo", "--platform-team", "alice", "--force"],
        Some(tmp.path()),
    );
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("`policies` is a symbolic link"), "{}", run.stderr);
    assert!(run.stderr.contains("`README.md` is a symbolic link"), "{}", run.stderr);
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "wrote through the link");
    assert!(!repo.join("rampart.yaml").exists(), "wrote a file although it refused");
}

#[test]
fn init_without_a_terminal_needs_platform_team() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let run = rampart(&["init", "repo"], Some(tmp.path()));
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("--platform-team"), "{}", run.stderr);
    assert!(!tmp.path().join("repo").exists());
}

#[test]
fn init_refuses_a_bad_login() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let run = rampart(
        &["init", "repo", "--platform-team", "alice,not_a_login"],
        Some(tmp.path()),
    );
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("`not_a_login` is not a GitHub login"),
        "{}",
        run.stderr
    );
    assert!(!tmp.path().join("repo").exists());
}

/// The workflow is strict YAML (examples/workflows/rampart.yml's last line was not) and keeps
/// the example's least privilege.
#[test]
fn init_workflow_is_valid_yaml_with_least_privilege() {
    let (tmp, run) = init(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let text = read(&tmp.path().join("repo/.github/workflows/rampart.yml"));
    let w: Value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(
        w["permissions"],
        serde_json::json!({"contents": "read", "pull-requests": "write", "checks": "write"})
    );
    assert!(w["on"].get("pull_request").is_some() && w["on"].get("pull_request_target").is_none());
    let steps = w["jobs"]["rampart"]["steps"].as_array().unwrap();
    assert_eq!(steps[0]["uses"], "actions/checkout@v4");
    assert_eq!(steps[0]["with"]["persist-credentials"], false);
    let uses = steps[1]["uses"].as_str().unwrap();
    let (_, sha) = uses.split_once('@').unwrap();
    assert!(sha.len() == 40 && sha.chars().all(|c| c.is_ascii_hexdigit()), "{uses}");
    assert_eq!(steps[2]["run"], "echo \"rampart decided: $DECISION\"");
}

/// On a terminal (util-linux `script` gives it one), init asks until the answer holds valid
/// logins.
#[test]
fn init_asks_for_logins_on_a_terminal() {
    use std::io::Write;
    let tmp = tempfile::tempdir().expect("tempdir");
    let command = format!("'{}' init repo", env!("CARGO_BIN_EXE_rampart"));
    let mut child = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(tmp.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"not_a_login\nalice, bob\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("`not_a_login` is not a GitHub login"), "{text}");
    assert!(read(&tmp.path().join("repo/teams/platform.yaml")).contains("  members:\n    - alice\n    - bob\n"));
}
