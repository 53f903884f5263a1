//! `rampart plan` and `rampart apply` on real git histories of the example repo: the four
//! changes a reviewer meets most (quota raise, tenant delete, plugin enable, rollout step),
//! as text and markdown snapshots; the comment-size limit; atomic, idempotent applies that
//! refuse invalid and denied revisions.

use crate::support::*;
use std::path::Path;

/// The four reviewed changes, each as one commit on top of the example.
fn change(p: &Path, case: &str) {
    match case {
        "quota-raise" => {
            edit(p, "tenants/mobile-apps.yaml", "cpu: 6", "cpu: 14");
            commit(
                p,
                "Peggy <peggy@example.com>",
                "mobile: more cpu\n\nApproved-by: alice\n",
            );
        }
        "tenant-delete" => {
            std::fs::remove_file(p.join("tenants/data-notebooks.yaml")).unwrap();
            commit(
                p,
                "Niaj <niaj@example.com>",
                "retire the notebooks portal\n\nApproved-by: olivia-w\n",
            );
        }
        "plugin-enable" => {
            edit(
                p,
                "tenants/storefront.yaml",
                "    - name: techdocs\n",
                "    - name: techdocs\n    - name: tech-radar\n",
            );
            commit(p, "Rupert <rupert@example.com>", "storefront: tech radar");
        }
        "rollout-step" => {
            edit(
                p,
                "rollouts/techdocs-1-13-0.yaml",
                "    - weight: 10\n      pause: 5m\n",
                "    - weight: 20\n      pause: 5m\n",
            );
            commit(p, "Peggy <peggy@example.com>", "techdocs: start at 20%");
        }
        // a new signing key: compiles to nothing, shows its own diff
        "new-key" => {
            std::fs::write(
                p.join("keys/backstage-2027.yaml"),
                "apiVersion: rampart.dev/v1\nkind: SigningKey\nmetadata:\n  name: backstage-2027\nspec:\n  \
                 publicKey: RWRcd9f9j1HtDOBY573G+iak+4JO2zF8DasFSsBxc0a6zh+8dHFGCHln\n  publishers: [backstage]\n",
            )
            .unwrap();
            commit(
                p,
                "Bob <bob@example.com>",
                "keys: backstage's 2027 key\n\nApproved-by: alice\n",
            );
        }
        // the same tenant under a new name: a delete and a create Kubernetes sees, one rename
        "rename" => {
            let text = std::fs::read_to_string(p.join("tenants/data-notebooks.yaml")).unwrap();
            std::fs::remove_file(p.join("tenants/data-notebooks.yaml")).unwrap();
            std::fs::write(
                p.join("tenants/notebooks.yaml"),
                text.replacen("name: data-notebooks", "name: notebooks", 1),
            )
            .unwrap();
            commit(
                p,
                "Niaj <niaj@example.com>",
                "notebooks: a shorter name\n\nApproved-by: olivia-w\n",
            );
        }
        // a new tenant with its own same-tenant NetworkPolicy: no network widening
        "new-tenant" => {
            let text = std::fs::read_to_string(p.join("tenants/sandbox.yaml")).unwrap();
            std::fs::write(
                p.join("tenants/sandbox-2.yaml"),
                text.replacen("name: sandbox", "name: sandbox-2", 1),
            )
            .unwrap();
            commit(p, "Alice <alice@example.com>", "a second sandbox\n\nApproved-by: bob\n");
        }
        _ => unreachable!(),
    }
}

/// Every case of [`change`].
const CASES: [&str; 7] = [
    "quota-raise",
    "tenant-delete",
    "plugin-enable",
    "rollout-step",
    "new-key",
    "rename",
    "new-tenant",
];

#[test]
fn plans_of_the_reviewed_changes() {
    for case in CASES {
        let repo = example_history();
        let p = repo.path();
        change(p, case);
        let text = rampart(&["plan", ".", "--base", "HEAD~1"], Some(p));
        assert_eq!(text.code, 0, "{case}: {}{}", text.stdout, text.stderr);
        snapshot(&format!("plan/{case}.txt"), &text.stdout).unwrap();
        let md = rampart(&["plan", ".", "--base", "HEAD~1", "--format", "markdown"], Some(p));
        assert_eq!(md.code, 0, "{case}");
        snapshot(&format!("plan/{case}.md"), &md.stdout).unwrap();
        let json = rampart(
            &[
                "plan",
                ".",
                "--base",
                "HEAD~1",
                "--format",
                "json",
                "--detailed-exitcode",
            ],
            Some(p),
        );
        assert_eq!(json.code, 2, "{case}: changes with --detailed-exitcode");
        snapshot(&format!("plan/{case}.json"), &json.stdout).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
        assert!(
            v["totals"]["added"].as_u64().unwrap()
                + v["totals"]["changed"].as_u64().unwrap()
                + v["totals"]["removed"].as_u64().unwrap()
                + v["files"].as_array().unwrap().len() as u64
                > 0
        );
        // every decision is listed, allowed ones too
        let policy = &v["policy"];
        assert_eq!(
            policy["decisions"].as_array().unwrap().len(),
            text.stdout.matches("\n  allow ").count() + text.stdout.matches("\n  deny ").count(),
            "{case}"
        );
    }
}

#[test]
fn plan_flags_risks_and_hides_secrets() {
    let repo = example_history();
    let p = repo.path();
    change(p, "tenant-delete");
    let run = rampart(&["plan", ".", "--base", "HEAD~1", "--format", "json"], Some(p));
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let kinds: Vec<&str> = v["risks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    // (the removed tenant's RoleBindings go with it: one deletion, not also an RBAC risk)
    assert_eq!(kinds, ["deletion"], "{kinds:?}");
    assert_eq!(v["policy"]["decision"], "deny", "a delete needs a platform approval");

    // a literal secret in a plugin config is refused (R325), and no format repeats it
    edit(
        p,
        "tenants/storefront.yaml",
        "    - name: techdocs\n",
        "    - name: techdocs\n      config:\n        techdocs:\n          builder: local\n          githubToken: ghp_SUPERSECRETVALUE123\n",
    );
    commit(p, "Rupert <rupert@example.com>", "token");
    for format in ["text", "markdown", "json"] {
        let run = rampart(&["plan", ".", "--base", "HEAD~1", "--format", format], Some(p));
        assert_eq!(run.code, 3, "{format}: {}", run.stdout);
        assert!(run.stdout.contains("R325"), "{format}: {}", run.stdout);
        assert!(!run.stdout.contains("SUPERSECRET"), "{format}: leaked\n{}", run.stdout);
    }
    // the way out, a Secret reference, is shown and applied as its placeholder: no value
    edit(
        p,
        "tenants/storefront.yaml",
        "ghp_SUPERSECRETVALUE123",
        "{secretKeyRef: {name: github, key: token}}",
    );
    commit(p, "Rupert <rupert@example.com>", "reference");
    hides(p, "HEAD~2", &["SUPERSECRET"]);
    let run = rampart(&["plan", ".", "--base", "HEAD~2"], Some(p));
    let placeholder = "${RAMPART_PLUGIN_TECHDOCS_TECHDOCS_GITHUB_TOKEN}";
    assert!(
        run.stdout.contains(&format!("githubToken: {placeholder}")),
        "{}",
        run.stdout
    );
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("out");
    let run = rampart(
        &["apply", ".", "--target", &format!("dir:{}", target.display())],
        Some(p),
    );
    assert_eq!(run.code, 0, "{}", run.stdout);
    let cm = std::fs::read_to_string(target.join("storefront/configmap-dynamic-plugins.yaml")).unwrap();
    assert!(cm.contains(placeholder), "{cm}");
}

/// A change to every tenant still makes a comment GitHub accepts: summary first, diffs while
/// they fit, and a note saying how much was left out.
#[test]
fn markdown_stays_within_the_comment_limit() {
    let repo = example_history();
    let p = repo.path();
    // a new platform version changes every tenant's portal
    edit(p, "rampart.yaml", "version: \"1.4.0\"", "version: \"1.4.1\"");
    // and make the diffs large: many plugin config lines per tenant
    let big: String = (0..400)
        .map(|i| format!("            key{i}: value-{i}-{}\n", "x".repeat(40)))
        .collect();
    edit(
        p,
        "tenants/storefront.yaml",
        "    - name: techdocs\n",
        &format!("    - name: techdocs\n      config:\n        techdocs:\n          extra:\n{big}"),
    );
    commit(p, "Alice <alice@example.com>", "everything");
    let run = rampart(&["plan", ".", "--base", "HEAD~1", "--format", "markdown"], Some(p));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.chars().count() <= 65_536,
        "{} chars",
        run.stdout.chars().count()
    );
    assert!(
        run.stdout
            .contains("left out to stay within GitHub's 65536-character comment limit")
    );
    assert!(run.stdout.starts_with("### rampart plan:"));
}

#[test]
fn apply_is_atomic_idempotent_and_gated() {
    let repo = example_history();
    let p = repo.path();
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("deploy");
    let t = format!("dir:{}", target.display());
    let first = rampart(&["apply", ".", "--rev", "HEAD", "--target", &t], Some(p));
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    assert!(first.stdout.contains("first apply"), "{}", first.stdout);
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("deploy.rampart-state.json")).unwrap()).unwrap();
    assert_eq!(state["commit"], git_as(p, "A <a@example.com>", &["rev-parse", "HEAD"]));
    let again = rampart(&["apply", ".", "--rev", "HEAD", "--target", &t], Some(p));
    assert!(again.stdout.starts_with("no changes"), "{}", again.stdout);

    // denied since the last applied commit: nothing is written
    change(p, "quota-raise");
    edit(p, "tenants/sandbox.yaml", "tier: free", "tier: team");
    commit(p, "Peggy <peggy@example.com>", "sandbox: team tier");
    let before = std::fs::read_to_string(target.join("sandbox/resourcequota-quota.yaml")).unwrap();
    let denied = rampart(&["apply", ".", "--rev", "HEAD", "--target", &t], Some(p));
    assert_eq!(denied.code, 2, "{}", denied.stdout);
    assert!(denied.stdout.contains("not applied"), "{}", denied.stdout);
    assert_eq!(
        before,
        std::fs::read_to_string(target.join("sandbox/resourcequota-quota.yaml")).unwrap()
    );

    // an invalid revision: nothing is written
    edit(p, "tenants/sandbox.yaml", "tier: team", "tier: gold");
    commit(p, "Alice <alice@example.com>", "typo");
    let invalid = rampart(&["apply", ".", "--rev", "HEAD", "--target", &t], Some(p));
    assert_eq!(invalid.code, 3, "{}", invalid.stdout);

    // the allowed revision (the quota raise, approved by alice) applies, and removes what is
    // no longer desired
    let allowed = rampart(&["apply", ".", "--rev", "HEAD~2", "--target", &t], Some(p));
    assert_eq!(allowed.code, 0, "{}", allowed.stdout);
    assert!(allowed.stdout.contains("2 changed"), "{}", allowed.stdout);
    write(&target.join("leftover.yaml"), "kind: Leftover\n");
    let cleaned = rampart(&["apply", ".", "--rev", "HEAD~2", "--target", &t], Some(p));
    assert!(cleaned.stdout.contains("1 removed"), "{}", cleaned.stdout);
    assert!(!target.join("leftover.yaml").exists());
    // no temporary directory is left behind
    let names: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn bad_targets_and_revisions() {
    let repo = example_history();
    let p = repo.path();
    let file = p.join("not-a-dir");
    write(&file, "x");
    let run = rampart(&["apply", ".", "--target", &format!("dir:{}", file.display())], Some(p));
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("is not a directory"), "{}", run.stderr);
    // (a kubeconfig that does not exist, whatever the machine has)
    let missing = p.join("no-kubeconfig");
    let run = rampart_env(
        &["apply", ".", "--target", "kubernetes:prod"],
        Some(p),
        &[("KUBECONFIG", missing.to_str().unwrap())],
    );
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("kubeconfig context `prod`"), "{}", run.stderr);
    let run = rampart(&["plan", ".", "--base", "no-such-rev"], Some(p));
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("no-such-rev"), "{}", run.stderr);
    // a base that is invalid: the head is compared with nothing, and says so
    edit(p, "tenants/sandbox.yaml", "tier: free", "tier: gold");
    commit(p, "Alice <alice@example.com>", "broken");
    edit(p, "tenants/sandbox.yaml", "tier: gold", "tier: free");
    commit(p, "Alice <alice@example.com>", "fixed");
    let run = rampart(&["plan", ".", "--base", "HEAD~1"], Some(p));
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("the base revision is invalid"), "{}", run.stdout);
}

/// Planning compiles only the tenants a change can touch; the objects it reports changed
/// are exactly those that differ between two full compiles.
#[test]
fn the_incremental_plan_misses_nothing() {
    let repo = example_history();
    let p = repo.path();
    // a plugin change reaches every tenant enabling it; a rollout change its targets
    edit(p, "plugins/techdocs.yaml", "memory: ", "memory: 1");
    edit(
        p,
        "rollouts/catalog-2-4-0-eu-production.yaml",
        "weight: 5\n",
        "weight: 6\n",
    );
    commit(
        p,
        "Alice <alice@example.com>",
        "techdocs needs more memory; catalog starts at 6%",
    );
    let out = tempfile::tempdir().unwrap();
    let full = |rev: &str| {
        let dir = out.path().join(rev.replace('~', "-"));
        let run = rampart(&["compile", ".", "--rev", rev, "--out", dir.to_str().unwrap()], Some(p));
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        tree(&dir)
    };
    let (a, b) = (full("HEAD~1"), full("HEAD"));
    let mut differ: Vec<&String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| *k != "kustomization.yaml" && a.get(*k) != b.get(*k))
        .collect();
    differ.sort();
    differ.dedup();
    let run = rampart(&["plan", ".", "--base", "HEAD~1", "--format", "json"], Some(p));
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let planned: Vec<&str> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert!(!differ.is_empty());
    assert_eq!(planned, differ.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    assert!(
        v["notes"][0].as_str().unwrap().contains("tenants can be affected"),
        "{}",
        v["notes"]
    );
}

/// A list or a map under a secret-like key is redacted whole, not only scalars.
#[test]
fn secret_lists_and_maps_are_redacted_whole() {
    let repo = example_history();
    let p = repo.path();
    edit(
        p,
        "tenants/storefront.yaml",
        "    - name: techdocs\n",
        "    - name: techdocs\n      config:\n        techdocs:\n          apiTokens: [ghp_LISTEDSECRET111, ghp_LISTEDSECRET222]\n          auth: {bearer: MAPPEDSECRET333}\n          privateKey: {pem: NESTEDSECRET444}\n",
    );
    commit(p, "Rupert <rupert@example.com>", "tokens");
    // every literal under a key the plan would redact is an R325 (one rule for both), and no
    // format repeats one; `compile::tests` holds the redaction of lists and maps itself
    for format in ["text", "markdown", "json"] {
        let run = rampart(&["plan", ".", "--base", "HEAD~1", "--format", format], Some(p));
        assert_eq!(run.code, 3, "{format}: {}", run.stdout);
        assert!(run.stdout.contains("R325"), "{format}: {}", run.stdout);
        for secret in ["LISTEDSECRET", "MAPPEDSECRET", "NESTEDSECRET"] {
            assert!(
                !run.stdout.contains(secret),
                "{format}: {secret} leaked\n{}",
                run.stdout
            );
        }
    }
}

/// Every plan format from `base` to HEAD shows the change and none of `secrets`.
fn hides(p: &Path, base: &str, secrets: &[&str]) {
    for format in ["text", "markdown", "json"] {
        let run = rampart(&["plan", ".", "--base", base, "--format", format], Some(p));
        assert_eq!(run.code, 0, "{format}: {}", run.stderr);
        assert!(run.stdout.contains("storefront"), "{format}: {}", run.stdout);
        for secret in secrets {
            assert!(
                !run.stdout.contains(secret),
                "{format}: {secret} leaked\n{}",
                run.stdout
            );
        }
    }
}

/// Issue 12, 1: a working-directory apply that changed nothing erased the recorded commit,
/// and the next revision was then applied as a "first apply", unchecked.
#[test]
fn apply_never_loses_its_policy_baseline() {
    let repo = example_history();
    let p = repo.path();
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("platform");
    let t = format!("dir:{}", target.display());
    let state = out.path().join("platform.rampart-state.json");
    let first = rampart(&["apply", ".", "--rev", "main", "--target", &t], Some(p));
    assert_eq!(first.code, 0, "{}", first.stdout);
    let recorded = std::fs::read_to_string(&state).unwrap();
    assert!(recorded.contains("\"commit\": \""), "{recorded}");

    // a working directory changing nothing leaves the state as it was
    let workdir = rampart(&["apply", ".", "--target", &t], Some(p));
    assert_eq!(workdir.code, 0, "{}", workdir.stdout);
    assert!(workdir.stdout.contains("the baseline stays"), "{}", workdir.stdout);
    assert_eq!(std::fs::read_to_string(&state).unwrap(), recorded);

    // a working directory that changes something keeps the baseline too
    edit(p, "tenants/sandbox.yaml", "cpu: 1", "cpu: 2");
    let workdir = rampart(&["apply", ".", "--target", &t], Some(p));
    assert_eq!(workdir.code, 0, "{}", workdir.stdout);
    assert!(workdir.stdout.contains("NOT checked"), "{}", workdir.stdout);
    let after: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let before: serde_json::Value = serde_json::from_str(&recorded).unwrap();
    assert_eq!(after["commit"], before["commit"]);
    assert_eq!(after["workdir"], true);
    git_as(p, "CI <ci@example.com>", &["checkout", "-q", "--", "."]);

    // the sneaky revision is judged from the baseline: denied
    git_as(p, "CI <ci@example.com>", &["checkout", "-q", "-b", "sneaky"]);
    edit(p, "tenants/mobile-apps.yaml", "memory: 24Gi", "memory: 64Gi");
    commit(p, "Peggy <peggy@example.com>", "more memory");
    let sneaky = rampart(&["apply", ".", "--rev", "sneaky", "--target", &t], Some(p));
    assert_eq!(sneaky.code, 2, "{}", sneaky.stdout);
    assert!(sneaky.stdout.contains("quota-above-2x"), "{}", sneaky.stdout);

    // back to main's tree (the working-directory edit is undone by applying main again)
    let back = rampart(&["apply", ".", "--rev", "main", "--target", &t], Some(p));
    assert_eq!(back.code, 0, "{}", back.stdout);
    // a target that holds objects but records no commit: an unknown baseline, refused
    std::fs::remove_file(&state).unwrap();
    // --baseline must name what the target holds: a side branch that compiles to something
    // else is no baseline (else its differences would pass unchecked)
    git_as(p, "CI <ci@example.com>", &["checkout", "-q", "-b", "side", "main"]);
    edit(p, "tenants/sandbox.yaml", "cpu: 1", "cpu: 2");
    commit(p, "Peggy <peggy@example.com>", "side");
    git_as(p, "CI <ci@example.com>", &["checkout", "-q", "sneaky"]);
    let lie = rampart(
        &["apply", ".", "--rev", "sneaky", "--target", &t, "--baseline", "side"],
        Some(p),
    );
    assert_eq!(lie.code, 2, "{}", lie.stdout);
    assert!(
        lie.stdout.contains("does not hold what `side` compiles to"),
        "{}",
        lie.stdout
    );
    let unknown = rampart(&["apply", ".", "--rev", "sneaky", "--target", &t], Some(p));
    assert_eq!(unknown.code, 2, "{}", unknown.stdout);
    assert!(unknown.stdout.contains("unknown baseline"), "{}", unknown.stdout);
    assert!(unknown.stdout.contains("--baseline REV"), "{}", unknown.stdout);
    // --baseline REV: authorised from REV, so denied
    let from_main = rampart(
        &["apply", ".", "--rev", "sneaky", "--target", &t, "--baseline", "main"],
        Some(p),
    );
    assert_eq!(from_main.code, 2, "{}", from_main.stdout);
    assert!(from_main.stdout.contains("quota-above-2x"), "{}", from_main.stdout);
    // --no-baseline: applied, loudly
    let unsafe_run = rampart(
        &["apply", ".", "--rev", "sneaky", "--target", &t, "--no-baseline"],
        Some(p),
    );
    assert_eq!(unsafe_run.code, 0, "{}", unsafe_run.stdout);
    assert!(
        unsafe_run.stderr.contains("WITHOUT a policy check"),
        "{}",
        unsafe_run.stderr
    );
    // --baseline over a recorded commit is a mistake
    let twice = rampart(
        &["apply", ".", "--rev", "sneaky", "--target", &t, "--baseline", "main"],
        Some(p),
    );
    assert_eq!(twice.code, 1, "{}", twice.stdout);
}

/// Issue 12, 2: `plan --format json|markdown` on an invalid head printed rustc-style text;
/// plan JSON named revisions as given (`"base": "main"`), not the commits they resolved to.
#[test]
fn plan_formats_hold_on_an_invalid_head_and_name_commits() {
    let repo = example_history();
    let p = repo.path();
    let main = git_as(p, "CI <ci@example.com>", &["rev-parse", "HEAD"]);
    edit(p, "tenants/sandbox.yaml", "cpu: 1", "cpu: 2");
    commit(p, "Alice <alice@example.com>", "more cpu");
    let head = git_as(p, "CI <ci@example.com>", &["rev-parse", "HEAD"]);
    let run = rampart(&["plan", ".", "--base", "main~1", "--format", "json"], Some(p));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["base"], "main~1");
    assert_eq!(v["baseCommit"], main.as_str());
    assert_eq!(v["headCommit"], head.as_str());

    edit(p, "tenants/sandbox.yaml", "tier: free", "tier: platinum");
    commit(p, "Alice <alice@example.com>", "an invalid tier");
    let run = rampart(&["plan", ".", "--base", "HEAD~1", "--format", "json"], Some(p));
    assert_eq!(run.code, 3, "{}", run.stdout);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("plan JSON on an invalid head");
    assert_eq!(v["valid"], false);
    assert_eq!(v["baseCommit"], head.as_str());
    assert_eq!(v["diagnostics"][0]["file"], "tenants/sandbox.yaml");
    let run = rampart(&["plan", ".", "--base", "HEAD~1", "--format", "markdown"], Some(p));
    assert_eq!(run.code, 3, "{}", run.stdout);
    assert!(
        run.stdout.starts_with("### rampart: the config repo is invalid"),
        "{}",
        run.stdout
    );
    let run = rampart(&["check", ".", "--base", "HEAD~1", "--format", "json"], Some(p));
    assert_eq!(run.code, 3, "{}", run.stdout);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["base"], head.as_str(), "check JSON gives the base it knows");
}

/// Review of issue 12: a hand-edited state file naming a ref (not a commit) panicked a later
/// working-directory apply; `--baseline` naming the revision applied authorised nothing.
#[test]
fn apply_refuses_baselines_that_authorise_nothing() {
    let repo = example_history();
    let p = repo.path();
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("platform");
    let t = format!("dir:{}", target.display());
    let state = out.path().join("platform.rampart-state.json");
    assert_eq!(
        rampart(&["apply", ".", "--rev", "main", "--target", &t], Some(p)).code,
        0
    );
    let text = std::fs::read_to_string(&state).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let id = v["commit"].as_str().unwrap().to_owned();
    std::fs::write(&state, text.replace(&id, "main")).unwrap();
    for args in [
        vec!["apply", ".", "--target", &t],
        vec!["apply", ".", "--rev", "main", "--target", &t],
    ] {
        let run = rampart(&args, Some(p));
        assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
        assert!(run.stdout.contains("not a commit id"), "{}", run.stdout);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    }
    std::fs::remove_file(&state).unwrap();
    let run = rampart(
        &["apply", ".", "--rev", "main", "--target", &t, "--baseline", "HEAD"],
        Some(p),
    );
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(run.stdout.contains("would authorise nothing"), "{}", run.stdout);
}

/// Plans compile tenant by tenant, so what only compiling reveals is found while planning:
/// a head that does not compile is invalid (exit 3, its problems listed), and a base that
/// validates but does not compile is compared as nothing, like an invalid one (both as
/// before plans streamed).
#[test]
fn plans_of_revisions_that_do_not_compile() {
    let dirs = tempfile::tempdir().unwrap();
    let (good, bad) = (dirs.path().join("good"), dirs.path().join("bad"));
    copy_tree(&root().join("examples/platform-config"), &good);
    copy_tree(&root().join("examples/platform-config"), &bad);
    // two rollouts at 60% on one tenant: 120% of its traffic to canaries (R502)
    for (name, version) in [("techdocs-next", "1.13.0"), ("techdocs-later", "1.14.0")] {
        write(
            &bad.join(format!("rollouts/{name}.yaml")),
            format!(
                "apiVersion: rampart.dev/v1\nkind: Rollout\nmetadata:\n  name: {name}\nspec:\n  plugin: techdocs\n  \
                 toVersion: \"{version}\"\n  artifact: {{package: \"@backstage/plugin-techdocs@{version}\", integrity: sha256-LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=}}\n  tenants:\n    names: [mobile-apps]\n  steps:\n    - weight: 60\n    - weight: 100\n"
            ),
        );
    }
    let plan = |base: &Path, head: &Path, format: &str| {
        rampart(
            &[
                "plan",
                "--base-path",
                base.to_str().unwrap(),
                "--head-path",
                head.to_str().unwrap(),
                "--format",
                format,
            ],
            None,
        )
    };
    let run = plan(&good, &bad, "text");
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    assert!(codes(&run.stdout).contains(&"R502".to_owned()), "{}", run.stdout);
    let run = plan(&bad, &good, "json");
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(
        v["notes"].to_string().contains("the base revision is invalid"),
        "{}",
        v["notes"]
    );
    // (only the tenant the removed rollouts reached is compiled, as ever)
    let compiled = dirs.path().join("out");
    let run = rampart(
        &["compile", good.to_str().unwrap(), "--out", compiled.to_str().unwrap()],
        None,
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let objects = tree(&compiled)
        .keys()
        .filter(|k| k.starts_with("mobile-apps/") || *k == "_cluster/namespace-mobile-apps.yaml")
        .count() as u64;
    assert_eq!(
        (
            v["totals"]["added"].as_u64(),
            v["totals"]["changed"].as_u64(),
            v["totals"]["removed"].as_u64()
        ),
        (Some(objects), Some(0), Some(0)),
        "every object of the affected tenant in the head is created"
    );
}

/// A guarded file's name is shown exactly, or the file is refused: a control or backslash
/// character in it makes the head invalid, so no policy loads under a name that reads like
/// another's. A mode-only change says so; a rename that drops a label is not "equal".
#[test]
fn guarded_files_are_shown_as_they_are() {
    let repo = example_history();
    let p = repo.path();
    write(
        &p.join("policies/ev\til.cedar"),
        "@id(\"allow-all\")\npermit(principal, action, resource);\n",
    );
    commit(p, "Bob <bob@example.com>", "a policy\n\nApproved-by: alice\n");
    let run = rampart(&["plan", ".", "--base", "HEAD~1"], Some(p));
    assert_eq!(run.code, 3, "{}", run.stdout);
    assert_eq!(codes(&run.stdout), ["R106"], "{}", run.stdout);
    assert!(run.stdout.contains("policies/ev\\til.cedar"), "{}", run.stdout);
    std::fs::remove_file(p.join("policies/ev\til.cedar")).unwrap();
    commit(p, "Bob <bob@example.com>", "no such policy\n\nApproved-by: alice\n");

    // the mode alone
    let f = p.join("policies/compliance.cedar");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
    commit(p, "Bob <bob@example.com>", "executable\n\nApproved-by: alice\n");
    let run = rampart(&["plan", ".", "--base", "HEAD~1", "--format", "json"], Some(p));
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let diff = v["files"][0]["diff"].as_str().unwrap();
    assert!(diff.contains("same content; its mode or type changed"), "{diff}");

    // a rename that drops the compliance label is a delete and a create, not a rename
    let text = std::fs::read_to_string(p.join("tenants/payments-prod.yaml")).unwrap();
    std::fs::remove_file(p.join("tenants/payments-prod.yaml")).unwrap();
    let renamed = text.replacen("name: payments-prod", "name: pp2", 1);
    assert!(renamed.contains("compliance: pci-dss"));
    write(
        &p.join("tenants/pp2.yaml"),
        renamed.replacen("    compliance: pci-dss\n", "", 1),
    );
    commit(p, "Bob <bob@example.com>", "rename");
    let run = rampart(&["plan", ".", "--base", "HEAD~1", "--format", "json"], Some(p));
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["renames"], serde_json::json!([]), "{}", run.stdout);
    write(&p.join("tenants/pp2.yaml"), renamed);
    commit(p, "Bob <bob@example.com>", "keep the label");
    let run = rampart(&["plan", ".", "--base", "HEAD~2", "--format", "json"], Some(p));
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        v["renames"],
        serde_json::json!([{"kind": "Tenant", "from": "payments-prod", "to": "pp2"}]),
        "{}",
        run.stdout
    );
}
