//! The policy-change impact in `rampart plan`: a policy edit that widens, one that narrows and
//! a team membership change on real git histories of the example repo (text, markdown and the
//! JSON `impact` and `risks`, as snapshots); a plan that changes no rule does no impact work;
//! and the reduced question set finds exactly the flips of the brute-force one.

use crate::support::*;
use rampart::policy::impact::{self, Inputs, Mode};
use std::path::Path;

/// A production tenant's update now also needs a `platform` approval.
const NARROWING_POLICY: &str = r#"
@id("production-tenants-need-platform-approval")
@advice("Production tenants change only with an approval from a member of `platform`.")
forbid (principal, action == Rampart::Action::"updateTenant", resource)
when { resource.hasTag("env") && resource.getTag("env") == "production" }
unless { context.change in Rampart::Team::"platform" };
"#;

/// The edits of the cases, applied to a copy of the example repo.
fn edit_rules(p: &Path, case: &str) {
    let pci_unless = r#"unless { context.change in Rampart::Team::"security" };"#;
    match case {
        // a PCI tenant may now also change with a platform approval
        "widen" => edit(
            p,
            "policies/compliance.cedar",
            pci_unless,
            r#"unless { context.change in Rampart::Team::"security" || context.change in Rampart::Team::"platform" };"#,
        ),
        "narrow" => edit(
            p,
            "policies/compliance.cedar",
            pci_unless,
            &format!("{pci_unless}\n{NARROWING_POLICY}"),
        ),
        "team" => edit(
            p,
            "teams/platform.yaml",
            "    - dmitri-k\n",
            "    - dmitri-k\n    - peggy\n",
        ),
        // peggy joins platform, grace-h leaves security, and the PCI rule widens
        "combined" => {
            edit_rules(p, "widen");
            edit_rules(p, "team");
            edit(p, "teams/security.yaml", "    - grace-h\n", "");
        }
        // a policy names a login whose membership changes: every question is decided twice
        "literal-login" => {
            edit_rules(p, "team");
            edit(
                p,
                "policies/compliance.cedar",
                pci_unless,
                &format!(
                    "{pci_unless}\n@id(\"peggy-no-deletes\")\n@advice(\"no.\")\nforbid (principal, action == \
                     Rampart::Action::\"deleteTenant\", resource) when {{ Rampart::User::\"peggy\" in \
                     Rampart::Team::\"platform\" }};\n"
                ),
            );
        }
        // a permit for one login: she is the one it widens for
        "named-login" => edit(
            p,
            "policies/compliance.cedar",
            pci_unless,
            &format!(
                "{pci_unless}\n@id(\"mallory-may\")\npermit (principal == Rampart::User::\"mallory-r\", action, resource);\n"
            ),
        ),
        // an approval from payments stands in for membership: an outsider approved widens
        "approval-stands-in" => edit(
            p,
            "policies/compliance.cedar",
            pci_unless,
            &format!(
                "{pci_unless}\n@id(\"payments-approves-anything\")\npermit (principal, action, resource) when \
                 {{ context.change in Rampart::Team::\"payments\" }};\n"
            ),
        ),
        _ => unreachable!(),
    }
}

/// The widenings a pull request author would most like hidden: a permit naming them, and an
/// approval that stands in for membership.
#[test]
fn a_permit_for_one_login_and_an_approval_standing_in_are_widenings() {
    for (case, asker) in [
        ("named-login", "asked by `mallory-r`"),
        (
            "approval-stands-in",
            "asked by a non-member, approved by a member of `payments`",
        ),
    ] {
        let repo = example_history();
        let p = repo.path();
        edit_rules(p, case);
        commit(p, "Alice <alice@example.com>", "a rule\n\nApproved-by: bob\n");
        let run = rampart(&["plan", ".", "--base", "HEAD~1"], Some(p));
        assert_eq!(run.code, 0, "{case}: {}", run.stderr);
        assert!(run.stdout.contains("policy widening: "), "{case}: {}", run.stdout);
        assert!(run.stdout.contains(asker), "{case}: {}", run.stdout);
    }
}

#[test]
fn plans_show_what_policy_and_team_changes_decide_differently() {
    for case in ["widen", "narrow", "team"] {
        let repo = example_history();
        let p = repo.path();
        edit_rules(p, case);
        commit(
            p,
            "Alice <alice@example.com>",
            &format!("rules: {case}\n\nApproved-by: bob\n"),
        );
        let text = rampart(&["plan", ".", "--base", "HEAD~1"], Some(p));
        assert_eq!(text.code, 0, "{case}: {}{}", text.stdout, text.stderr);
        snapshot(&format!("impact/{case}.txt"), &text.stdout).unwrap();
        let md = rampart(&["plan", ".", "--base", "HEAD~1", "--format", "markdown"], Some(p));
        assert_eq!(md.code, 0, "{case}");
        snapshot(&format!("impact/{case}.md"), &md.stdout).unwrap();
        let json = rampart(&["plan", ".", "--base", "HEAD~1", "--format", "json"], Some(p));
        let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
        let part = serde_json::json!({"impact": v["impact"], "risks": v["risks"]});
        snapshot(
            &format!("impact/{case}.json"),
            &(serde_json::to_string_pretty(&part).unwrap() + "\n"),
        )
        .unwrap();
        let (widening, narrowing) = (
            v["impact"]["widening"].as_u64().unwrap(),
            v["impact"]["narrowing"].as_u64().unwrap(),
        );
        let flagged = v["risks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["kind"] == "policy-widening");
        match case {
            "widen" | "team" => assert!(widening > 0 && narrowing == 0 && flagged, "{case}: {v}"),
            _ => assert!(widening == 0 && narrowing > 0 && !flagged, "{case}: {v}"),
        }
    }
}

/// The policy tests decide under both rules too: a test that expected the old rule flips.
#[test]
fn policy_tests_that_flip_are_listed() {
    let repo = example_history();
    let p = repo.path();
    edit(
        p,
        "policies/compliance.cedar",
        r#"resource.getTag("compliance") == "pci-dss""#,
        r#"resource.getTag("compliance") == "pci-dss-v4""#,
    );
    commit(p, "Alice <alice@example.com>", "pci: only v4");
    let json = rampart(&["plan", ".", "--base", "HEAD~1", "--format", "json"], Some(p));
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let tests = v["impact"]["tests"].as_array().unwrap();
    assert!(
        tests
            .iter()
            .any(|t| t["widening"] == true && t["file"] == "policies/tests/tenants.yaml"),
        "{v}"
    );
}

#[test]
fn plans_without_policy_or_team_changes_have_no_impact() {
    let repo = example_history();
    let p = repo.path();
    edit(p, "tenants/mobile-apps.yaml", "cpu: 6", "cpu: 14");
    commit(p, "Peggy <peggy@example.com>", "mobile: more cpu");
    let text = rampart(&["plan", ".", "--base", "HEAD~1", "--timings"], Some(p));
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(!text.stdout.contains("policy impact"), "{}", text.stdout);
    // (no impact work: the timings name none)
    assert!(
        text.stderr.contains("timings:") && !text.stderr.contains("impact"),
        "{}",
        text.stderr
    );
    let json = rampart(&["plan", ".", "--base", "HEAD~1", "--format", "json"], Some(p));
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert!(v.get("impact").is_none(), "{v}");
    let md = rampart(&["plan", ".", "--base", "HEAD~1", "--format", "markdown"], Some(p));
    assert!(!md.stdout.contains("Policy impact"), "{}", md.stdout);
}

/// Validate a copy of the example, with `case`'s edits when given.
fn revision(case: Option<&str>) -> (tempfile::TempDir, rampart::pipeline::Validated) {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&root().join("examples/platform-config"), dir.path());
    if let Some(c) = case {
        edit_rules(dir.path(), c);
    }
    let source = rampart::source::Source::dir(dir.path()).unwrap();
    let v = rampart::pipeline::validate(&source, &|_, _| {}).unwrap();
    assert!(v.is_valid(), "{case:?}: {:?}", v.diagnostics);
    (dir, v)
}

/// The reduction (only questions a changed policy or a changed membership can touch) never
/// misses a flip: on every kind of rule change, the flips are those of the whole set.
#[test]
fn reduced_question_set_finds_the_brute_force_flips() {
    let (_b, base) = revision(None);
    let files: Vec<String> = ["rampart.yaml", "policies/compliance.cedar", "keys/backstage.yaml"]
        .map(String::from)
        .to_vec();
    for case in [
        "widen",
        "narrow",
        "team",
        "combined",
        "literal-login",
        "named-login",
        "approval-stands-in",
    ] {
        let (_h, head) = revision(Some(case));
        let inputs = Inputs {
            base: &base.repo,
            head: &head.repo,
            base_engine: base.engine.0.as_ref().unwrap(),
            head_engine: head.engine.0.as_ref().unwrap(),
            files: &files,
            facts: &rampart::policy::model::no_facts,
        };
        let (reduced, questions, evaluated) = impact::flips(&inputs, Mode::Reduced).unwrap();
        let (all, questions_all, evaluated_all) = impact::flips(&inputs, Mode::BruteForce).unwrap();
        assert!(!all.is_empty(), "{case}: the edit flips something");
        assert_eq!(reduced, all, "{case}");
        assert_eq!(questions, questions_all, "{case}: the same question set");
        assert_eq!(
            evaluated_all, questions_all,
            "{case}: brute force decides every question"
        );
        match case {
            "literal-login" => assert_eq!(evaluated, questions, "{case}: falls back to every question"),
            // (a policy edit alone: only the questions the edited policy reads)
            "widen" | "narrow" => assert!(evaluated * 10 < questions, "{case}: {evaluated} of {questions}"),
            _ => assert!(evaluated < questions, "{case}: {evaluated} of {questions}"),
        }
    }
}

/// Two directories have no authors, but the questions need none: their plan has the impact too.
#[test]
fn directories_get_the_impact_too() {
    let (base, head) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    copy_tree(&root().join("examples/platform-config"), base.path());
    copy_tree(&root().join("examples/platform-config"), head.path());
    edit_rules(head.path(), "widen");
    let (b, h) = (base.path().to_str().unwrap(), head.path().to_str().unwrap());
    let json = rampart(&["plan", "--base-path", b, "--head-path", h, "--format", "json"], None);
    assert_eq!(json.code, 0, "{}", json.stderr);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert!(v["policy"].is_null(), "no verdicts without authors");
    assert_eq!(v["impact"]["widening"], 2, "{v}");
}
