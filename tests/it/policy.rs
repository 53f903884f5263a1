//! `rampart check` on real git histories of the example repo, and `rampart policy test`.
//!
//! Commits are made with fixed names and dates, so their ids (and the snapshots that show
//! them) are the same on every run.

use crate::support::*;
use std::path::Path;

fn check(p: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["check", ".", "--base", "HEAD~1"];
    args.extend_from_slice(extra);
    rampart(&args, Some(p))
}

#[test]
fn trailers_approvals_and_the_way_out() {
    let repo = example_history();
    let p = repo.path();
    edit(p, "tenants/mobile-apps.yaml", "pods: 80", "pods: 170");
    std::fs::remove_file(p.join("tenants/hackweek.yaml")).unwrap();
    edit(p, "rollouts/techdocs-1-13-0.yaml", "      - hackweek\n", "");
    // a GitHub noreply address names the login
    commit(
        p,
        "Peggy Olson <4242+peggy@users.noreply.github.com>",
        "mobile: more pods, retire the hack-week portal\n\n\
         Approved-by: quentin-l\nApproved-by: Mallory <mallory@example.com>\nApproved-by: peggy\n",
    );
    let run = check(p, &[]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert_eq!(codes(&run.stdout), ["R421", "R422"]);
    snapshot("policy/check-denied.txt", &transcript(&run)).unwrap();

    // the way out, taken: a platform approval on the command line
    let run = check(
        p,
        &[
            "--author",
            "peggy",
            "--approved-by",
            "alice",
            "--approved-by",
            "quentin-l",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(run.stdout.contains("allowed: 3 allowed, 0 denied"), "{}", run.stdout);

    for format in ["json", "markdown", "github"] {
        let run = check(p, &["--format", format]);
        assert_eq!(run.code, 2, "{format}: {}", run.stdout);
        snapshot(&format!("policy/check-denied.{format}"), &run.stdout).unwrap();
    }
    let run = check(p, &["--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["author"], "peggy");
    assert_eq!(v["changes"][0]["action"], "delete");
    assert_eq!(
        v["changes"][0]["wayOut"]["options"][0]["approvals"][0]["team"],
        "platform"
    );
}

#[test]
fn an_unknown_author_is_denied_and_told_who_may() {
    let repo = example_history();
    let p = repo.path();
    edit(p, "tenants/sandbox.yaml", "cpu: 1", "cpu: 2");
    commit(p, "Eve <eve@evil.example>", "give the sandbox more cpu");
    let run = check(p, &[]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert_eq!(codes(&run.stdout), ["R420"]);
    assert!(
        run.stdout
            .contains("no approval can help: only a member of `platform` may make this change"),
        "{}",
        run.stdout
    );
    snapshot("policy/check-unknown-author.txt", &transcript(&run)).unwrap();
}

/// A pull request cannot grant itself rights: policies and team membership come from the
/// base revision, and changing them is itself a change that needs platform.
#[test]
fn the_head_cannot_rewrite_its_own_rules() {
    let repo = example_history();
    let p = repo.path();
    write(
        &p.join("policies/open-door.cedar"),
        "@id(\"open-door\")\npermit (principal, action, resource);\n",
    );
    edit(p, "teams/platform.yaml", "- alice", "- alice\n    - rupert");
    edit(p, "tenants/data-lake.yaml", "cpu: 128", "cpu: 256");
    commit(
        p,
        "Rupert <rupert@example.com>",
        "make myself platform and take the data lake's cpu",
    );
    let run = check(p, &[]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    snapshot("policy/check-self-granted.txt", &transcript(&run)).unwrap();
    for line in [
        "deny  update Team platform",
        "deny  update Tenant data-lake",
        "deny  create File policies/open-door.cedar",
    ] {
        assert!(run.stdout.contains(line), "missing {line:?}\n{}", run.stdout);
    }
}

/// An object moved to another file (and edited) is one update, not a delete and a create;
/// moved unchanged, it is no change at all.
#[test]
fn renames_are_updates() {
    let repo = example_history();
    let p = repo.path();
    std::fs::create_dir_all(p.join("tenants/data")).unwrap();
    git_as(
        p,
        "A <a@example.com>",
        &["mv", "tenants/data-lake.yaml", "tenants/data/lake.yaml"],
    );
    git_as(
        p,
        "A <a@example.com>",
        &["mv", "tenants/data-notebooks.yaml", "tenants/data/notebooks.yaml"],
    );
    edit(p, "tenants/data/lake.yaml", "cpu: 128", "cpu: 120");
    commit(p, "Niaj <niaj@example.com>", "group the data tenants");
    let run = check(p, &["--format", "json"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let changes = v["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{changes:#?}");
    assert_eq!(changes[0]["action"], "update");
    assert_eq!(changes[0]["name"], "data-lake");
    assert_eq!(changes[0]["file"], "tenants/data/lake.yaml");
}

#[test]
fn an_invalid_head_blocks_the_policy_step() {
    let repo = example_history();
    let p = repo.path();
    edit(p, "tenants/sandbox.yaml", "tier: free", "tier: freee");
    commit(p, "Alice <alice@example.com>", "typo");
    let run = check(p, &[]);
    assert_eq!(run.code, 3, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("policy check not run: the head revision is invalid")
    );
    let run = check(p, &["--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["decision"], "invalid");
    assert_eq!(v["changes"].as_array().unwrap().len(), 0);
}

/// Cedar skips a policy whose evaluation errors; for a forbid that would be an accidental
/// allow. rampart denies and says which policy failed.
#[test]
fn an_erroring_policy_denies() {
    let repo = example_history();
    let p = repo.path();
    write(
        &p.join("policies/overflow.cedar"),
        "@id(\"quota-growth-guard\")\n@advice(\"Quota growth is capped.\")\n\
         forbid (principal, action == Rampart::Action::\"updateTenant\", resource)\n\
         when { context.quotaPercent.max * 100000000000000000 > 1 };\n",
    );
    commit(p, "Alice <alice@example.com>", "add a guard that overflows");
    edit(p, "tenants/sandbox.yaml", "cpu: 1", "cpu: 2");
    commit(p, "Alice <alice@example.com>", "sandbox cpu");
    // 200 (percent) × 1e17 overflows a Cedar Long: the forbid errors, and the change is denied
    let run = check(p, &["--author", "alice", "--approved-by", "bob"]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(run.stdout.contains("policy error (denies)"), "{}", run.stdout);
    assert!(run.stdout.contains("quota-growth-guard"), "{}", run.stdout);
}

/// A base whose own policies do not validate could authorise nothing, not even its fix:
/// break-glass lets rampart's default policies alone decide, and only guarded files change.
#[test]
fn invalid_base_policies_allow_only_the_fix_with_four_eyes() {
    let repo = example_history();
    let p = repo.path();
    write(
        &p.join("policies/broken.cedar"),
        "permit (principal, action, resource) when { 1 + };\n",
    );
    // committed straight to main, bypassing review: the next check cannot trust its rules
    commit(p, "Alice <alice@example.com>", "broken policy");
    std::fs::remove_file(p.join("policies/broken.cedar")).unwrap();
    commit(p, "Alice <alice@example.com>", "remove it");
    let run = check(p, &[]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stdout.contains("base revision: Cedar policy does not parse"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("policies/broken.cedar:1:"), "{}", run.stdout);
    assert!(run.stdout.contains("R407"), "{}", run.stdout);
    assert!(run.stdout.contains("guarded-files-need-four-eyes"), "{}", run.stdout);
    // the fix, approved by another platform member
    let run = check(p, &["--author", "alice", "--approved-by", "bob"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    // anything else waits for the fix, whoever approves
    edit(p, "tenants/sandbox.yaml", "cpu: 1", "cpu: 2");
    commit(p, "Alice <alice@example.com>", "remove it and more cpu");
    let run = rampart(
        &[
            "check",
            ".",
            "--base",
            "HEAD~2",
            "--author",
            "alice",
            "--approved-by",
            "bob",
        ],
        Some(p),
    );
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(run.stdout.contains("break-glass"), "{}", run.stdout);

    // plan compiles the base's specs anyway: the diff is the real one, not everything added
    let run = rampart(&["plan", ".", "--base", "HEAD~2", "--format", "json"], Some(p));
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["totals"]["added"], 0, "{}", run.stdout);
    assert_eq!(
        v["totals"]["changed"], 2,
        "the sandbox's quota and limits: {}",
        run.stdout
    );
    assert!(v["notes"].to_string().contains("R407"), "{}", run.stdout);
}

#[test]
fn no_changes_is_allowed() {
    let repo = example_history();
    let p = repo.path();
    git_as(
        p,
        "Alice <alice@example.com>",
        &["commit", "-q", "--allow-empty", "-m", "nothing"],
    );
    let run = check(p, &[]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(run.stdout.contains("0 changes"), "{}", run.stdout);
}

#[test]
fn bad_revisions_and_flags_exit_1() {
    let repo = example_history();
    let run = check(repo.path(), &["--head", "no-such-branch"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("no-such-branch"), "{}", run.stderr);
    let run = rampart(&["check", "."], Some(repo.path()));
    assert_eq!(run.code, 1, "--base is required");
}

#[test]
fn the_example_policy_tests_pass() {
    let run = rampart(&["policy", "test", "examples/platform-config"], Some(&root()));
    assert_eq!(run.code, 0, "{}", run.stdout);
    snapshot("policy/example-tests.txt", &transcript(&run)).unwrap();
    // every default policy is exercised by a case that names it
    let tests: String = ["tenants.yaml", "plugins-rollouts-teams.yaml"]
        .iter()
        .map(|f| std::fs::read_to_string(root().join("examples/platform-config/policies/tests").join(f)).unwrap())
        .collect();
    let defaults = std::fs::read_to_string(root().join("policies/defaults.cedar")).unwrap();
    for line in defaults.lines().filter(|l| l.starts_with("@id(\"")) {
        let id = &line[5..line.len() - 2];
        assert!(tests.contains(id), "no policy test names `{id}`");
    }
}

#[test]
fn a_failing_expectation_shows_the_actual_decision() {
    let repo = tempfile::tempdir().unwrap();
    copy_tree(&root().join("examples/platform-config"), repo.path());
    copy_tree(&root().join("testdata/policy-tests/failing"), repo.path());
    let run = rampart(&["policy", "test", "."], Some(repo.path()));
    assert_eq!(run.code, 1, "{}", run.stdout);
    snapshot("policy/failing-tests.txt", &transcript(&run)).unwrap();
}

#[test]
fn malformed_policy_tests_are_located() {
    let repo = tempfile::tempdir().unwrap();
    copy_tree(&root().join("examples/platform-config"), repo.path());
    copy_tree(&root().join("testdata/policy-tests/malformed"), repo.path());
    let run = rampart(&["policy", "test", "."], Some(repo.path()));
    assert_eq!(run.code, 3, "{}", run.stdout);
    assert!(codes(&run.stdout).contains(&"R430".to_owned()), "{}", run.stdout);
    snapshot("policy/malformed-tests.txt", &transcript(&run)).unwrap();
}

/// The review's reproductions: explicit identities never mix with commit metadata.
#[test]
fn an_explicit_author_ignores_the_commit_trailers() {
    let repo = example_history();
    let p = repo.path();
    edit(p, "tenants/sandbox.yaml", "tier: free", "tier: team");
    commit(p, "Peggy <peggy@example.com>", "raise\n\nApproved-by: bob\n");
    // the trailer names a platform member, but with --author only --approved-by counts
    let run = check(p, &["--author", "alice"]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(run.stdout.contains("author alice, no approvals"), "{}", run.stdout);
    let run = check(p, &["--approved-by", "carol-ng"]);
    assert_eq!(run.code, 1, "--approved-by needs --author: {}", run.stderr);
    // a noreply-looking address on another domain is not read as one
    git_as(
        p,
        "Mallory <4242+alice@evil.example>",
        &["commit", "-q", "--allow-empty", "-m", "x"],
    );
    let run = rampart(&["check", ".", "--base", "HEAD~2"], Some(p));
    assert!(run.stdout.contains("R420"), "{}", run.stdout);
}

/// An object whose base definition is invalid cannot be judged against it: denied, and the
/// message says why (a broken base must be fixed first).
#[test]
fn a_change_to_an_object_invalid_in_the_base_is_denied() {
    let repo = example_history();
    let p = repo.path();
    edit(
        p,
        "tenants/payments-prod.yaml",
        "  isolation: dedicated-nodes",
        "  isolation: dedicated-nodes\n  colour: blue",
    );
    commit(p, "Alice <alice@example.com>", "broken on main");
    edit(p, "tenants/payments-prod.yaml", "\n  colour: blue", "");
    edit(p, "tenants/payments-prod.yaml", "    - payments\n", "    - mobile\n");
    edit(p, "tenants/payments-prod.yaml", "cpu: 96", "cpu: 250");
    commit(p, "Peggy <peggy@example.com>", "take it over");
    let run = check(p, &["--author", "peggy"]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stdout.contains("deny  update Tenant payments-prod"),
        "{}",
        run.stdout
    );
    // judged as its creation: from nothing, so platform (and, for a PCI tenant, security)
    assert!(
        run.stdout.contains("quota-above-2x-needs-platform-approval"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("tier-raise-needs-platform-approval"),
        "{}",
        run.stdout
    );
}

/// Review of issue 12: an object invalid in the base (here by the new exact-number rule, R121)
/// could never be fixed through the gate; its fix is judged as its creation.
#[test]
fn an_object_invalid_in_the_base_can_be_fixed_with_platform() {
    let repo = example_history();
    let p = repo.path();
    edit(
        p,
        "tenants/mobile-apps.yaml",
        "    cpu: 6\n",
        "    cpu: 6.0000000000000001\n",
    );
    commit(p, "Peggy <peggy@example.com>", "valid before R121");
    edit(
        p,
        "tenants/mobile-apps.yaml",
        "    cpu: 6.0000000000000001\n",
        "    cpu: 6\n",
    );
    commit(p, "Peggy <peggy@example.com>", "exact cpu");
    let run = check(p, &["--author", "peggy"]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stdout.contains("`platform`"),
        "the way out names platform: {}",
        run.stdout
    );
    let run = check(p, &["--author", "peggy", "--approved-by", "alice"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
}

/// Every entry under policies/ and keys/ is a guarded change, hidden or not, whatever it is.
#[test]
fn every_entry_under_guarded_directories_is_a_change() {
    let repo = example_history();
    let p = repo.path();
    write(&p.join("keys/.trusted/evil.pub"), "untrusted key\n");
    write(
        &p.join("policies/.x/p.cedar"),
        "permit (principal, action, resource);\n",
    );
    // (a link where keys are read would be refused, R104: this one is in a hidden directory,
    // which no walk enters, yet it is still a change)
    std::fs::create_dir_all(p.join("keys/.links")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", p.join("keys/.links/link.pub")).unwrap();
    write(&p.join("keys/big.pub"), vec![b'k'; 5_000_000]);
    commit(p, "Peggy <peggy@example.com>", "sneak");
    let run = check(p, &["--author", "peggy", "--format", "json"]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let names: Vec<&str> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "keys/.links/link.pub",
            "keys/.trusted/evil.pub",
            "keys/big.pub",
            "policies/.x/p.cedar"
        ]
    );
    assert!(v["changes"].as_array().unwrap().iter().all(|c| c["decision"] == "deny"));
}

/// Two teams' approvals together are a way out (the example's PCI policy plus the 2x quota
/// rule), and a team named like a hypothetical user breaks nothing.
#[test]
fn approvals_from_two_teams_are_a_way_out() {
    let repo = example_history();
    let p = repo.path();
    write(
        &p.join("teams/anyone.yaml"),
        "apiVersion: rampart.dev/v1\nkind: Team\nmetadata:\n  name: anyone\nspec:\n  members: [zed]\n",
    );
    commit(p, "Alice <alice@example.com>", "a team called anyone");
    edit(p, "tenants/payments-prod.yaml", "cpu: 96", "cpu: 250");
    commit(p, "Heidi <heidi@example.com>", "grow");
    let run = check(p, &[]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stdout.contains(
            "way out: needs an approval from a member of `platform` (alice, bob, carol-ng, dmitri-k) \
             and one from a member of `security` (erin, frank-o, grace-h)"
        ),
        "{}",
        run.stdout
    );
    let run = check(
        p,
        &["--author", "heidi", "--approved-by", "alice", "--approved-by", "erin"],
    );
    assert_eq!(run.code, 0, "{}", run.stdout);
}

/// The way-out search asks Cedar once for all the teams no decision can tell apart (a
/// stand-in), yet names each of them, and keeps the teams a decision can tell apart (a
/// tenant's owners, teams a policy names) apart.
#[test]
fn the_way_out_names_every_team_that_would_do() {
    let repo = example_history();
    let p = repo.path();
    // an unknown author: only the tenant's owners (named by the tenant) or platform may
    edit(p, "tenants/mobile-apps.yaml", "pods: 80", "pods: 90");
    commit(p, "Eve <eve@evil.example>", "more pods");
    let run = check(p, &[]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("no approval can help: only a member of `platform` or `mobile` may make this change"),
        "{}",
        run.stdout
    );

    // any one approval: every team with a member left to approve would do
    let p2 = example_history();
    let p2 = p2.path();
    write(
        &p2.join("policies/one-approval.cedar"),
        "@id(\"plugins-need-an-approval\")\nforbid (principal, action == Rampart::Action::\"updatePlugin\", resource)\n\
         unless { context.change.approvals >= 1 };\n",
    );
    commit(p2, "Alice <alice@example.com>", "plugin changes need a review");
    edit(
        p2,
        "plugins/cost-insights.yaml",
        "description: Cloud cost per team",
        "description: Cloud cost per squad",
    );
    commit(p2, "Alice <alice@example.com>", "wording");
    let run = check(p2, &["--format", "json"]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    // (every team would do: said once, not as a list of every team)
    assert_eq!(
        v["changes"][0]["wayOut"]["options"],
        serde_json::json!([{"approvals": [], "plusAnyone": true}]),
        "{}",
        run.stdout
    );
    assert_eq!(
        v["changes"][0]["wayOutText"], "needs one more approval from anyone in a team",
        "{}",
        run.stdout
    );
}

/// Users are in the Cedar model only when a request can reach them; a user a policy names is
/// one of them, teams included.
#[test]
fn a_user_a_policy_names_keeps_their_teams() {
    let repo = example_history();
    let p = repo.path();
    write(
        &p.join("policies/freeze.cedar"),
        "@id(\"freeze-while-bob-is-platform\")\nforbid (principal, action == Rampart::Action::\"updateTenant\", resource)\n\
         when { Rampart::User::\"bob\" in Rampart::Team::\"platform\" };\n",
    );
    commit(p, "Alice <alice@example.com>", "freeze tenants");
    edit(p, "tenants/mobile-apps.yaml", "pods: 80", "pods: 90");
    commit(p, "Alice <alice@example.com>", "more pods");
    let run = check(p, &[]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(run.stdout.contains("freeze-while-bob-is-platform"), "{}", run.stdout);
}

/// Issue 12, 0c: a login the change itself adds to a team is no approver of that change
/// (else a team grows its own second approver for a tenant delete).
#[test]
fn a_member_added_by_the_change_does_not_approve_it() {
    let repo = example_history();
    let p = repo.path();
    edit(
        p,
        "teams/product-squads.yaml",
        "    - quentin-l\n",
        "    - quentin-l\n    - rupert\n",
    );
    std::fs::remove_file(p.join("tenants/hackweek.yaml")).unwrap();
    edit(p, "rollouts/techdocs-1-13-0.yaml", "      - hackweek\n", "");
    commit(
        p,
        "Peggy <peggy@example.com>",
        "retire hackweek, rupert joins mobile\n\nApproved-by: alice\nApproved-by: rupert\n",
    );
    let run = check(
        p,
        &["--author", "peggy", "--approved-by", "alice", "--approved-by", "rupert"],
    );
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(run.stdout.contains("R423"), "{}", run.stdout);
    assert!(
        run.stdout.contains("deny  delete Tenant hackweek") && run.stdout.contains("tenant-delete-needs-two-approvals"),
        "{}",
        run.stdout
    );
    // with a second approver who was already a member, the same change is allowed
    let run = check(
        p,
        &[
            "--author",
            "peggy",
            "--approved-by",
            "alice",
            "--approved-by",
            "quentin-l",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stdout);
}

/// Issue 12, 0d: `Alice` in an earlier-sorting team file took over `alice`'s identity.
/// Both spellings are an error, at both places.
#[test]
fn a_login_spelled_two_ways_is_an_error_at_both_places() {
    let repo = example_history();
    let p = repo.path();
    edit(
        p,
        "teams/data-platform.yaml",
        "    - mallory-r\n",
        "    - mallory-r\n    - Alice\n",
    );
    let run = rampart(&["validate", "."], Some(p));
    assert_eq!(run.code, 3, "{}", run.stdout);
    let r320: Vec<&str> = run.stdout.lines().filter(|l| l.contains("R320")).collect();
    assert_eq!(r320.len(), 2, "{}", run.stdout);
    assert!(run.stdout.contains("teams/data-platform.yaml:"), "{}", run.stdout);
    assert!(run.stdout.contains("teams/platform.yaml:"), "{}", run.stdout);

    // and an approval spelled another way still counts as the platform member's
    let repo = example_history();
    let p = repo.path();
    edit(p, "tenants/mobile-apps.yaml", "pods: 80", "pods: 170");
    commit(p, "Peggy <peggy@example.com>", "more pods");
    let run = check(p, &["--author", "Peggy", "--approved-by", "ALICE"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
}

/// Issue 12, 6: a repo policy that names a team `teams/` no longer defines never matches;
/// that is a warning where the policy names it.
#[test]
fn a_policy_naming_a_missing_team_is_a_warning() {
    let repo = example_history();
    let p = repo.path();
    write(
        &p.join("policies/auditors.cedar"),
        "@id(\"auditors-see-pci\")\n@advice(\"PCI tenants change only with an auditor.\")\n\
         forbid (principal, action == Rampart::Action::\"updateTenant\", resource)\n\
         unless { context.change in Rampart::Team::\"auditors\" };\n",
    );
    let run = rampart(&["validate", "."], Some(p));
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(run.stdout.contains("policies/auditors.cedar:4:"), "{}", run.stdout);
    assert!(run.stdout.contains("R406"), "{}", run.stdout);
}

/// Issue 12, 0: the three changes peggy got through, as `rampart check` on real commits.
#[test]
fn changes_are_judged_against_every_tenant_they_reach() {
    // a rollout to a tenant of another team
    let repo = example_history();
    let p = repo.path();
    write(
        &p.join("rollouts/sneaky.yaml"),
        "apiVersion: rampart.dev/v1\nkind: Rollout\nmetadata:\n  name: sneaky\nspec:\n  plugin: techdocs\n  \
         toVersion: \"1.14.0\"\n  artifact: {package: \"@backstage/plugin-techdocs@1.14.0\", integrity: sha256-LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=}\n  \
         tenants:\n    names: [payments-staging]\n  strategy: instant\n  steps:\n    - weight: 100\n",
    );
    commit(p, "Peggy <peggy@example.com>", "roll techdocs out to staging");
    let run = check(p, &["--author", "peggy"]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stdout.contains("reaching-a-tenant-needs-its-owners"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("(reaches tenant `payments-staging`)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("`payments`"),
        "the way out names the owners: {}",
        run.stdout
    );

    // an unsigned update of a plugin every tenant runs
    let repo = example_history();
    let p = repo.path();
    let catalog = std::fs::read_to_string(p.join("plugins/catalog.yaml")).unwrap();
    let start = catalog.find("  signature: |").unwrap();
    let end = catalog.find("  requires:").unwrap();
    let catalog = format!("{}{}", &catalog[..start], &catalog[end..])
        .replace("version: \"2.3.1\"", "version: \"2.3.2\"")
        .replace("plugin-catalog@2.3.1", "plugin-catalog@2.3.2")
        .replace("sha512-hQJ4", "sha512-AAAA");
    write(&p.join("plugins/catalog.yaml"), catalog);
    commit(p, "Peggy <peggy@example.com>", "catalog 2.3.2");
    let run = check(p, &["--author", "peggy"]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    for id in [
        "enterprise-tenants-run-trusted-signed-plugins",
        "reaching-a-tenant-needs-its-owners",
        "shared-plugins-are-platform-owned",
    ] {
        assert!(run.stdout.contains(id), "{id}: {}", run.stdout);
    }

    // a new enterprise tenant
    let repo = example_history();
    let p = repo.path();
    write(
        &p.join("tenants/mobile-big.yaml"),
        "apiVersion: rampart.dev/v1\nkind: Tenant\nmetadata:\n  name: mobile-big\nspec:\n  owners: [mobile]\n  \
         tier: enterprise\n  isolation: dedicated-nodes\n  quota: {cpu: 200, memory: 800Gi, pods: 500, storage: 1Ti}\n",
    );
    commit(p, "Peggy <peggy@example.com>", "a bigger mobile tenant");
    let run = check(p, &["--author", "peggy"]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stdout.contains("tenant-creation-needs-platform-approval"),
        "{}",
        run.stdout
    );
}

/// Review of issue 12: a tenant that only lists a plugin as disabled still gets its new
/// artifact compiled in, so its owners are reached; a selector rollout reaches only the
/// tenants it puts a canary in.
#[test]
fn reach_follows_what_is_compiled() {
    let repo = example_history();
    let p = repo.path();
    // payments-staging lists tech-radar, disabled; mobile-apps (peggy's) enables it
    edit(
        p,
        "tenants/payments-staging.yaml",
        "  plugins:\n",
        "  plugins:\n    - name: tech-radar\n      disabled: true\n",
    );
    edit(
        p,
        "tenants/mobile-apps.yaml",
        "  plugins:\n",
        "  plugins:\n    - name: tech-radar\n",
    );
    commit(
        p,
        "Alice <alice@example.com>",
        "tech-radar on mobile, listed on staging",
    );
    edit(
        p,
        "plugins/tech-radar.yaml",
        "description:",
        "description: (peggy's build)",
    );
    edit(p, "plugins/tech-radar.yaml", "version: \"1.1.0\"", "version: \"1.2.0\"");
    edit(
        p,
        "plugins/tech-radar.yaml",
        "plugin-tech-radar@1.1.0",
        "plugin-tech-radar@1.2.0",
    );
    commit(p, "Peggy <peggy@example.com>", "tech-radar 1.2.0");
    let run = check(p, &["--author", "peggy"]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(run.stdout.contains("`payments-staging`"), "{}", run.stdout);

    // a rollout selecting by region reaches only the tenants that enable the plugin
    let repo = example_history();
    let p = repo.path();
    write(
        &p.join("rollouts/sc.yaml"),
        "apiVersion: rampart.dev/v1\nkind: Rollout\nmetadata:\n  name: sc\nspec:\n  plugin: scaffolder\n  \
         toVersion: \"9.9.9\"\n  artifact: {package: \"@backstage/plugin-scaffolder@9.9.9\", integrity: sha256-LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=}\n  \
         tenants:\n    selector:\n      matchLabels: {region: us-east-1}\n  \
         slos:\n    - {name: errors, query: up, max: 1, for: 5m}\n",
    );
    commit(p, "Peggy <peggy@example.com>", "scaffolder canary in us-east-1");
    let run = check(p, &["--author", "peggy"]);
    assert!(!run.stdout.contains("data-lake"), "{}", run.stdout);
}

/// An `@advice` names the facts of the denied request; what cannot be filled stays as
/// written; values cannot break out of the markdown; a template of many braces stays fast
/// (the search for a closing brace is bounded), and a rendered advice is bounded.
#[test]
fn advice_templates_fill_in_facts_and_stay_inert() {
    let repo = example_history();
    let p = repo.path();
    write(
        &p.join("policies/templates.cedar"),
        format!(
            "@id(\"sandbox-pods\")\n\
             @advice(\"{{resource}} pods: {{context.quotaPercent.pods}} %, owners {{context.newOwners}}, \
             unknown {{context.nope}}, not a path {{ oops }}, by {{principal}}\")\n\
             forbid (principal, action == Rampart::Action::\"updateTenant\", resource)\n\
             when {{ resource == Rampart::Tenant::\"sandbox\" && context.quotaPercent.pods > 100 }};\n\
             @id(\"new-keys\")\n\
             @advice(\"key file {{resource.path}} needs a look\")\n\
             forbid (principal, action == Rampart::Action::\"createFile\", resource)\n\
             when {{ resource.path like \"keys/*.txt\" }};\n\
             @id(\"braces\")\n\
             @advice(\"zz {}\")\n\
             forbid (principal, action == Rampart::Action::\"updateTenant\", resource)\n\
             when {{ resource == Rampart::Tenant::\"sandbox\" && context.quotaPercent.pods > 100 }};\n",
            "{".repeat(60_000)
        ),
    );
    commit(p, "Alice <alice@example.com>", "policies\n\nApproved-by: bob\n");
    edit(p, "tenants/sandbox.yaml", "pods: 10", "pods: 11");
    write(&p.join("keys/z`<img src=x>@carol-ng```.txt"), "hi\n");
    commit(p, "Alice <alice@example.com>", "more pods");
    let run = check(p, &["--author", "alice"]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("sandbox pods: 110 %, owners platform, unknown {context.nope}, not a path { oops }, by alice"),
        "{}",
        run.stdout
    );
    // bounded: the 60,000 braces are cut
    assert!(run.stdout.len() < 20_000, "{}", run.stdout.len());
    let md = check(p, &["--author", "alice", "--format", "markdown"]);
    assert!(md.stdout.contains("key file keys/z"), "{}", md.stdout);
    for bad in ["<img", "@carol"] {
        assert!(!md.stdout.contains(bad), "{bad} in\n{}", md.stdout);
    }
    // (the diffs show the name as it is, inside their fences)
    let plan = rampart(
        &[
            "plan", ".", "--base", "HEAD~1", "--author", "alice", "--format", "markdown",
        ],
        Some(p),
    );
    for line in plan.stdout.lines().filter(|l| l.starts_with(['|', '-', '>', '#', '*'])) {
        for bad in ["<img", "@carol"] {
            assert!(!line.contains(bad) || line.starts_with("+++"), "{bad} in {line}");
        }
    }
}

/// An evaluation error denies in the name of the erroring policy, with its advice — not the
/// permits Cedar allowed with.
#[test]
fn an_erroring_policy_is_named_with_its_advice() {
    let repo = example_history();
    let p = repo.path();
    write(
        &p.join("policies/overflow.cedar"),
        "@id(\"overflowing\")\n@advice(\"This policy overflows.\")\n\
         forbid (principal, action == Rampart::Action::\"updateTenant\", resource)\n\
         when { context.quotaPercent.max * 9223372036854775807 > 1 };\n",
    );
    commit(p, "Alice <alice@example.com>", "policies\n\nApproved-by: bob\n");
    edit(p, "tenants/sandbox.yaml", "pods: 10", "pods: 11");
    commit(p, "Alice <alice@example.com>", "more pods");
    let run = check(p, &["--author", "alice", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let c = &v["changes"][0];
    assert_eq!(c["decision"], "deny", "{}", run.stdout);
    assert_eq!(c["policies"], serde_json::json!(["overflowing"]), "{}", run.stdout);
    assert_eq!(
        c["advice"],
        serde_json::json!(["This policy overflows."]),
        "{}",
        run.stdout
    );
}
