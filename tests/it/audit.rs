//! `rampart audit` on real histories: a config repo served by `rampart serve` (notes pushed
//! to a bare remote and fetched back by the audit), squash and merge commits with and
//! without approvals, a direct push, a self-approval, forged and broken notes, a revert with
//! evidence trailers, a rewritten history and a shallow clone. Every finding code has a case;
//! the JSON is checked against `schemas/audit-report.schema.json`, the CSV with Python's csv
//! module.

use crate::serve::{Fixture, describe};
use crate::support::*;
use serde_json::Value;
use std::path::Path;

const ALICE: &str = "Alice <alice@example.com>";
const BOB: &str = "Bob <bob@example.com>";
const EVE: &str = "Eve <eve@evil.example>";
const TARGETS: [&str; 4] = ["--target", "dir:out", "--target", "branch:rendered"];

fn audit(dir: &Path, args: &[&str]) -> Run {
    let mut all = vec!["audit", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    rampart(&all, None)
}

fn json(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}\n{}\n{}", run.stdout, run.stderr))
}

/// The JSON report is what the schema describes.
fn check_schema(report: &Value) {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("schemas/audit-report.schema.json")).unwrap())
            .unwrap();
    let v = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = v
        .iter_errors(report)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

fn rows_of<'a>(r: &'a Value, commit: &str) -> Vec<&'a Value> {
    r["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["commit"] == commit)
        .collect()
}

fn codes_of(r: &Value, commit: &str) -> Vec<String> {
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["commit"] == commit)
        .map(|f| f["code"].as_str().unwrap().to_owned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Add (or replace) a note on `commit` in the remote's notes, as someone with push access
/// would: fetch them, edit, push.
fn forge_note(f: &Fixture, commit: &str, body: &str) {
    let work = f.work();
    git_as(
        &work,
        ALICE,
        &["fetch", "-q", "origin", "+refs/notes/rampart:refs/notes/rampart"],
    );
    git_as(
        &work,
        ALICE,
        &["notes", "--ref", "rampart", "add", "-f", "-m", body, commit],
    );
    git_as(&work, ALICE, &["push", "-q", "-f", "origin", "refs/notes/rampart"]);
}

#[test]
fn audit_reads_a_served_history_back_from_git() {
    let f = Fixture::new();
    let c0 = f.head();
    let run = f.once("state", &TARGETS, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // a squash merge with an approval in its trailers
    let c1 = f.push(ALICE, "sandbox: more cpu (#12)\n\nApproved-by: bob", |p| {
        edit(p, "tenants/sandbox.yaml", "cpu: 1", "cpu: 2")
    });
    // a direct push: no pull request, no trailers
    let c2 = f.push(ALICE, "sandbox: reword, pushed straight to main", describe(2));
    // approved by its own author; the subject has a comma, quotes and control characters
    let c3 = f.push(
        ALICE,
        "sandbox: \"quoted\", comma \u{1b}[31mred\u{202e}\n\nApproved-by: alice",
        describe(3),
    );
    // a pull request merged with a merge commit
    let work = f.work();
    git_as(&work, BOB, &["checkout", "-q", "-b", "feature"]);
    describe(4)(&work);
    commit(&work, BOB, "sandbox: reword again");
    git_as(&work, ALICE, &["checkout", "-q", "main"]);
    git_as(
        &work,
        ALICE,
        &[
            "merge",
            "-q",
            "--no-ff",
            "feature",
            "-m",
            "Merge pull request #13 from acme/feature\n\nApproved-by: carol-ng",
        ],
    );
    git_as(&work, ALICE, &["push", "-q", "origin", "HEAD:main"]);
    let c4 = f.head();
    let run = f.once("state", &TARGETS, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);

    // a change policy denies (an unknown author reaching an enterprise tenant with an
    // unsigned plugin): serve blocks it; then a forged note claims it was applied
    let c5 = f.push(EVE, "payments-prod: add the tech radar", |p| {
        edit(
            p,
            "tenants/payments-prod.yaml",
            "  plugins:\n    - name: catalog\n",
            "  plugins:\n    - name: tech-radar\n    - name: catalog\n",
        )
    });
    let run = f.once("state", &TARGETS, &[]);
    assert_ne!(run.code, 0, "serve applied a denied change\n{}", run.stderr);
    let forged = serde_json::json!({
        "rampart": 1,
        "applies": [{
            "target": "branch:rendered", "result": "applied", "decision": "allowed",
            "author": "rampart[revert]", "approvers": [], "pullRequest": null,
            "changes": [{"action": "update", "subject": "Tenant", "name": "payments-prod", "allowed": true}],
            "appliedAs": c5, "from": c4, "rendered": "0000000000000000000000000000000000000000",
            "time": "2026-11-20T10:05:00Z"
        }]
    });
    forge_note(&f, &c5, &forged.to_string());
    // rampart's revert of c1, with its evidence; its note does not parse
    git_as(&work, ALICE, &["revert", "--no-edit", &c1]);
    let msg = format!(
        "Revert \"sandbox: more cpu\"\n\nThe SLO error-rate failed.\n\nRampart-Revert-Of: {c1}\nRampart-Rollout: sandbox-cpu\nRampart-SLO: error-rate\nRampart-Evidence: slo=error-rate value=0.12 bound=\"<= 0.1\" window=5m\n"
    );
    git_as(
        &work,
        "rampart <rampart@localhost>",
        &["commit", "-q", "--amend", "-m", &msg],
    );
    git_as(&work, ALICE, &["push", "-q", "origin", "HEAD:main"]);
    let c6 = f.head();
    forge_note(&f, &c6, "{ not json");

    // the audit fetches the notes from the remote (the work tree's own are removed first)
    git_as(&work, ALICE, &["update-ref", "-d", "refs/notes/rampart"]);
    let run = audit(&work, &["--format", "json"]);
    assert_eq!(run.code, 2, "findings exit 2\n{}", run.stderr);
    let r = json(&run);
    check_schema(&r);
    assert_eq!(r["notes"], "refs/rampart/audit/notes", "{}", run.stderr);

    // the first commit: created, not decided, applied first
    let first = rows_of(&r, &c0);
    assert!(first.len() > 10, "{first:?}");
    assert!(first.iter().all(|x| x["decision"]["recomputed"] == "initial"));
    assert_eq!(first[0]["decision"]["recordedAs"], "first-apply");
    // squash merge: its trailers, allowed, applied to both targets, then reverted
    let r1 = rows_of(&r, &c1);
    assert_eq!(r1.len(), 1, "{r1:?}");
    let r1 = r1[0];
    assert_eq!(r1["kind"], "Tenant");
    assert_eq!(r1["name"], "sandbox");
    assert_eq!(r1["pullRequest"], 12);
    assert_eq!(r1["approvalsFrom"], "note");
    assert_eq!(r1["approvers"], serde_json::json!(["bob"]));
    assert_eq!(r1["decision"]["recomputed"], "allow", "{r1}");
    assert_eq!(r1["decision"]["recorded"], "allow", "{r1}");
    let targets: Vec<&str> = r1["applied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets.len(), 2, "{r1}");
    assert!(
        r1["applied"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["target"] == "branch:rendered")
    );
    let rev = &r1["followedBy"][0];
    assert_eq!(rev["kind"], "revert");
    assert_eq!(rev["commit"], c6.as_str());
    assert_eq!(rev["evidence"]["Rampart-SLO"], "error-rate");
    assert!(
        rev["evidence"]["Rampart-Evidence"]
            .as_str()
            .unwrap()
            .contains("value=0.12")
    );
    assert!(codes_of(&r, &c1).is_empty(), "{:?}", codes_of(&r, &c1));
    // the direct push reached the targets
    assert_eq!(codes_of(&r, &c2), ["R703"]);
    // approved by its author
    assert_eq!(codes_of(&r, &c3), ["R706"]);
    let r3 = rows_of(&r, &c3)[0];
    assert!(!r3["subject"].as_str().unwrap().contains('\u{1b}'), "{r3}");
    assert!(
        r3["subject"].as_str().unwrap().contains("\\u{1b}[31mred\\u{202e}"),
        "{r3}"
    );
    // the merge: the pull request from its subject, approved by a platform member
    let r4 = rows_of(&r, &c4)[0];
    assert_eq!(r4["pullRequest"], 13);
    assert_eq!(r4["approvers"], serde_json::json!(["carol-ng"]));
    assert!(codes_of(&r, &c4).is_empty(), "{:?}", codes_of(&r, &c4));
    // the forged note: applied though denied, recorded allow against a re-computed deny, no
    // deploy commit, a direct push, an unsigned plugin on an enterprise tenant
    let r5 = rows_of(&r, &c5)[0];
    assert!(
        r5["decision"]["reason"]
            .as_str()
            .unwrap()
            .contains("not a member of any team"),
        "{r5}"
    );
    assert_eq!(r5["decision"]["recomputed"], "deny", "{r5}");
    assert_eq!(r5["decision"]["recorded"], "allow");
    assert_eq!(codes_of(&r, &c5), ["R701", "R702", "R703", "R705", "R707"]);
    // the note that does not parse is reported, and the rest still read
    assert_eq!(codes_of(&r, &c6), ["R708"]);
    let r6 = rows_of(&r, &c6);
    assert_eq!(r6[0]["action"], "update", "{r6:?}");

    // the same from the local records (fetched by hand), in every format: human, markdown
    // and CSV carry the escaped subject
    git_as(&work, ALICE, &["fetch", "-q", "origin"]);
    git_as(
        &work,
        ALICE,
        &["fetch", "-q", "origin", "+refs/notes/rampart:refs/notes/rampart"],
    );
    let human = audit(&work, &["--no-fetch"]);
    assert_eq!(human.code, 2);
    assert!(human.stdout.contains("R705"), "{}", human.stdout);
    for out in [
        &human.stdout,
        &audit(&work, &["--no-fetch", "--format", "markdown"]).stdout,
    ] {
        assert!(!out.contains('\u{1b}') && !out.contains('\u{202e}'), "{out}");
    }
    let csv = audit(&work, &["--no-fetch", "--format", "csv"]);
    assert_eq!(csv.code, 2);
    assert!(!csv.stdout.contains('\u{1b}'));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.csv");
    std::fs::write(&file, &csv.stdout).unwrap();
    let py = std::process::Command::new("python3")
        .args([
            "-c",
            "import csv,sys\nrows=list(csv.reader(open(sys.argv[1],newline='')))\nassert all(len(r)==len(rows[0]) for r in rows), [len(r) for r in rows]\nprint(len(rows)-1)\nprint([r[4] for r in rows if r[0]==sys.argv[2]][0])",
            file.to_str().unwrap(),
            &c3,
        ])
        .output()
        .unwrap();
    assert!(py.status.success(), "{}", String::from_utf8_lossy(&py.stderr));
    let out = String::from_utf8(py.stdout).unwrap();
    let mut lines = out.lines();
    assert_eq!(lines.next().unwrap(), r["rows"].as_array().unwrap().len().to_string());
    assert_eq!(
        lines.next().unwrap(),
        "sandbox: \"quoted\", comma \\u{1b}[31mred\\u{202e}"
    );

    // filters: one tenant, one kind
    let only = json(&audit(
        &work,
        &["--no-fetch", "--format", "json", "--tenant", "payments-prod"],
    ));
    assert!(
        only["rows"].as_array().unwrap().iter().all(|x| x["name"] != "sandbox"),
        "{only}"
    );
    assert!(!rows_of(&only, &c5).is_empty());
    let since = json(&audit(&work, &["--no-fetch", "--format", "json", "--since", &c4]));
    assert!(rows_of(&since, &c4).is_empty() && !rows_of(&since, &c5).is_empty());

    // the life of the sandbox: every version with its diff, newest first
    let life = audit(&work, &["--no-fetch", "--object", "tenants/sandbox"]);
    assert_eq!(life.code, 0, "{}", life.stderr);
    let life_json = json(&audit(
        &work,
        &["--no-fetch", "--object", "Tenant/sandbox", "--format", "json"],
    ));
    let versions: Vec<&str> = life_json["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["commit"].as_str().unwrap())
        .collect();
    assert_eq!(versions, [&c6, &c4, &c3, &c2, &c1, &c0], "{life_json}");
    let v1 = &life_json["versions"][4]["diff"];
    assert!(v1.as_str().unwrap().contains("-    cpu: 1\n+    cpu: 2"), "{v1}");
}

#[test]
fn audit_finds_history_rewritten_under_an_applied_commit_and_follows_renames() {
    let f = Fixture::new();
    let c0 = f.head();
    assert_eq!(f.once("state", &TARGETS, &[]).code, 0);
    let c1 = f.push(ALICE, "more cpu\n\nApproved-by: bob", |p| {
        edit(p, "tenants/sandbox.yaml", "cpu: 1", "cpu: 2")
    });
    assert_eq!(f.once("state", &TARGETS, &[]).code, 0);
    // force-push: c1 replaced by another commit on c0; serve applies it as a rewrite
    let work = f.work();
    git_as(&work, ALICE, &["reset", "-q", "--hard", &c0]);
    edit(&work, "tenants/sandbox.yaml", "memory: 2Gi", "memory: 3Gi");
    commit(&work, ALICE, "more memory instead\n\nApproved-by: bob");
    git_as(&work, ALICE, &["push", "-q", "-f", "origin", "HEAD:main"]);
    let c1b = f.head();
    assert_eq!(f.once("state", &TARGETS, &[]).code, 0);
    // rename the sandbox (file and name) in one commit
    let c2 = f.push(ALICE, "sandbox becomes playground\n\nApproved-by: bob", |p| {
        let text = std::fs::read_to_string(p.join("tenants/sandbox.yaml")).unwrap();
        std::fs::remove_file(p.join("tenants/sandbox.yaml")).unwrap();
        write(
            &p.join("tenants/playground.yaml"),
            text.replace("name: sandbox", "name: playground"),
        );
    });

    let run = audit(&work, &["--format", "json"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let r = json(&run);
    check_schema(&r);
    // the note on c1 (no longer on main), and serve's own record of the rewrite on c1b
    assert_eq!(codes_of(&r, &c1), ["R704"]);
    assert_eq!(codes_of(&r, &c1b), ["R704"]);
    assert_eq!(rows_of(&r, &c1b)[0]["decision"]["recordedAs"], "history-rewritten");

    // the playground's life goes back through the rename to the sandbox's first version
    let life = json(&audit(
        &work,
        &["--no-fetch", "--object", "tenants/playground", "--format", "json"],
    ));
    let v: Vec<(&str, &str, &str)> = life["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["commit"].as_str().unwrap(),
                v["action"].as_str().unwrap(),
                v["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        v,
        [
            (c2.as_str(), "rename", "playground"),
            (c1b.as_str(), "update", "sandbox"),
            (c0.as_str(), "create", "sandbox")
        ],
        "{life}"
    );

    // a shallow clone says what is missing and how to fetch it
    let dir = tempfile::tempdir().unwrap();
    let shallow = dir.path().join("shallow");
    git_as(
        dir.path(),
        ALICE,
        &[
            "clone",
            "-q",
            "--depth",
            "1",
            &format!("file://{}", f.remote()),
            shallow.to_str().unwrap(),
        ],
    );
    let run = audit(&shallow, &["--format", "json"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let r = json(&run);
    let f709: Vec<&Value> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == "R709")
        .collect();
    assert_eq!(f709.len(), 1, "{r}");
    assert!(f709[0]["hint"].as_str().unwrap().contains("git fetch --unshallow"));
    // the boundary commit's parent is unknown: no change can be told there
    assert!(r["rows"].as_array().unwrap().is_empty(), "{r}");
}

/// Whoever can push notes cannot make an application disappear: notes removed on the
/// remote are R711 on the next audit and R710 for the deploy commits left without one; a
/// fetch that fails is a finding, not a silent fall-back.
#[test]
fn audit_notices_records_removed_and_records_it_cannot_fetch() {
    let f = Fixture::new();
    assert_eq!(f.once("state", &TARGETS, &[]).code, 0);
    let c1 = f.push(ALICE, "sandbox: reword, pushed straight to main", describe(1));
    assert_eq!(f.once("state", &TARGETS, &[]).code, 0);
    let work = f.work();
    let run = audit(&work, &["--format", "json", "--since", "HEAD~1"]);
    let r = json(&run);
    assert_eq!(codes_of(&r, &c1), ["R703"], "{r}");
    let deploy = r["rows"][0]["applied"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["target"] == "branch:rendered")
        .unwrap()["deployCommit"]
        .clone();
    assert!(deploy.is_string(), "the deploy commit is shown: {r}");
    // the notes are deleted on the remote
    let remote = f.remote();
    git_as(&work, ALICE, &["push", "-q", &remote, ":refs/notes/rampart"]);
    let run = audit(&work, &["--format", "json", "--since", "HEAD~1"]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    let r = json(&run);
    check_schema(&r);
    let codes = |r: &Value| -> Vec<String> {
        r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["code"].as_str().unwrap().to_owned())
            .collect()
    };
    // (the copy an earlier audit fetched is read, and the fetch that found nothing said)
    assert!(codes(&r).contains(&"R711".to_owned()), "{:?}", codes(&r));
    // with no notes anywhere, the deploy branch still says the direct push was applied
    git_as(&work, ALICE, &["update-ref", "-d", "refs/rampart/audit/notes"]);
    git_as(&work, ALICE, &["update-ref", "-d", "refs/notes/rampart"]);
    let run = audit(&work, &["--format", "json", "--since", "HEAD~1"]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    let r = json(&run);
    check_schema(&r);
    assert!(codes(&r).contains(&"R710".to_owned()), "{:?}", codes(&r));
    assert!(codes(&r).contains(&"R711".to_owned()), "{:?}", codes(&r));
    // a note removed by a fast-forward of the notes (git notes remove) is seen in the notes'
    // own history
    let f2 = Fixture::new();
    assert_eq!(f2.once("state", &TARGETS, &[]).code, 0);
    let d1 = f2.push(ALICE, "sandbox: reword, pushed straight to main", describe(1));
    assert_eq!(f2.once("state", &TARGETS, &[]).code, 0);
    let w2 = f2.work();
    git_as(
        &w2,
        ALICE,
        &["fetch", "-q", "origin", "+refs/notes/rampart:refs/notes/rampart"],
    );
    git_as(&w2, ALICE, &["notes", "--ref", "rampart", "remove", &d1]);
    git_as(&w2, ALICE, &["push", "-q", "origin", "refs/notes/rampart"]);
    let r2 = json(&audit(&w2, &["--format", "json"]));
    let removed: Vec<&Value> = r2["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == "R711" && f["commit"] == d1.as_str())
        .collect();
    assert_eq!(removed.len(), 1, "{r2}");
    assert!(removed[0]["message"].as_str().unwrap().contains("removed"), "{r2}");
    assert!(
        codes(&r).contains(&"R703".to_owned()),
        "the direct push still shows: {:?}",
        codes(&r)
    );
    // the remote cannot be reached
    git_as(
        &work,
        ALICE,
        &["remote", "set-url", "origin", "/nonexistent/remote.git"],
    );
    let run = audit(&work, &["--format", "json", "--since", "HEAD~1"]);
    assert_eq!(run.code, 2);
    let r = json(&run);
    let f711: Vec<&Value> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == "R711")
        .collect();
    assert_eq!(f711.len(), 1, "{r}");
    assert!(f711[0]["message"].as_str().unwrap().contains("could not fetch"), "{r}");
    // a bad date, an unknown kind: clear errors
    let run = audit(&work, &["--since", "2026-13-45"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("not a date"), "{}", run.stderr);
    let run = audit(&work, &["--kind", "Widget"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("not a kind"), "{}", run.stderr);
}

#[test]
fn audit_refuses_what_it_cannot_read_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let run = audit(dir.path(), &[]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("opening the git repository"), "{}", run.stderr);
    let h = example_history();
    let run = audit(h.path(), &["--since", "no-such-rev"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("no-such-rev"), "{}", run.stderr);
    let run = audit(h.path(), &["--object", "tenants"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("DIR/NAME"), "{}", run.stderr);
    // an example repo with no records: nothing applied, nothing to find
    let run = audit(h.path(), &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("no findings"), "{}", run.stdout);
}

/// A repository that gained its config repo after its first commit, a broken file, and a
/// commit whose date its author set years back: the audit starts where the config repo does,
/// gives the broken file a row, and audits the backdated commit that sits inside the range.
#[test]
fn audit_starts_where_the_config_repo_does_and_sees_through_dates() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    git_as(p, ALICE, &["init", "-q", "-b", "main"]);
    write(&p.join("README.md"), "# infra\n");
    commit(p, ALICE, "initial commit");
    copy_tree(&root().join("examples/platform-config"), p);
    commit(p, ALICE, "add the config repo");
    let c2 = git_as(p, ALICE, &["rev-parse", "HEAD"]);
    write(
        &p.join("tenants/broken.yaml"),
        "apiVersion: rampart.dev/v1\nkind: Tenant\nmetadata: {name: broken}\nspec: {tier: gold}\n",
    );
    git_as(p, ALICE, &["add", "-A"]);
    let out = std::process::Command::new("git")
        .args(["commit", "-q", "-m", "backdated"])
        .current_dir(p)
        .env("GIT_AUTHOR_NAME", "Eve")
        .env("GIT_AUTHOR_EMAIL", "eve@evil.example")
        .env("GIT_COMMITTER_NAME", "Eve")
        .env("GIT_COMMITTER_EMAIL", "eve@evil.example")
        .env("GIT_AUTHOR_DATE", "2020-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2020-01-01T00:00:00Z")
        .env("HOME", p)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let c3 = git_as(p, ALICE, &["rev-parse", "HEAD"]);
    std::fs::remove_file(p.join("tenants/broken.yaml")).unwrap();
    describe(4)(p);
    commit(p, ALICE, "sandbox: reword");
    let c4 = git_as(p, ALICE, &["rev-parse", "HEAD"]);

    let run = audit(p, &["--format", "json", "--since", "2026-11-01"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r = json(&run);
    check_schema(&r);
    let first = rows_of(&r, &c2);
    assert!(
        !first.is_empty() && first.iter().all(|x| x["decision"]["recomputed"] == "initial"),
        "{r}"
    );
    assert!(
        first[0]["decision"]["reason"]
            .as_str()
            .unwrap()
            .contains("first appears")
    );
    let broken = rows_of(&r, &c3);
    assert_eq!(broken.len(), 1, "{r}");
    assert_eq!(broken[0]["kind"], "File");
    assert_eq!(broken[0]["name"], "tenants/broken.yaml");
    assert_eq!(broken[0]["decision"]["recomputed"], "invalid");
    assert!(run.stderr.contains("dated 2020-01-01"), "{}", run.stderr);
    let sandbox = rows_of(&r, &c4).into_iter().find(|x| x["name"] == "sandbox").unwrap();
    assert_eq!(sandbox["decision"]["recomputed"], "allow", "{r}");
    // the human output shows the start of the config repo as one line
    let human = audit(p, &["--no-fetch"]);
    assert!(human.stdout.contains("start of the config repo"), "{}", human.stdout);
    assert_eq!(human.stdout.matches(&c2[..12]).count(), 1, "{}", human.stdout);
}
