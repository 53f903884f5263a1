//! The plugin supply chain on real git histories: trust facts reach Cedar, keys a change adds
//! do not vouch for it, freshness is measured at the commit, signatures made by the real
//! `minisign` tool verify, and `rampart plugins verify|tree`.

use crate::support::*;
use std::path::Path;

fn check(p: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["check", ".", "--base", "HEAD~1"];
    args.extend_from_slice(extra);
    rampart(&args, Some(p))
}

fn enable(p: &Path, tenant: &str, plugin: &str) {
    edit(
        p,
        &format!("tenants/{tenant}.yaml"),
        "  plugins:\n",
        &format!("  plugins:\n    - name: {plugin}\n"),
    );
}

/// Enterprise tenants take only signed plugins with trust ≥ 70: the verdict follows the
/// computed facts, not a constant.
#[test]
fn trust_and_signatures_reach_the_policies() {
    let repo = example_history();
    let p = repo.path();
    // cost-insights: unsigned, trust 65
    enable(p, "payments-prod", "cost-insights");
    commit(p, "Alice <alice@example.com>", "payments-prod: cost insights");
    // (payments-prod is PCI: security approves)
    let approved = ["--author", "alice", "--approved-by", "erin"];
    let run = check(p, &approved);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stdout.contains("enterprise-plugins-trusted-and-signed"),
        "{}",
        run.stdout
    );

    // scaffolder: signed by the backstage key, trust 100
    git_as(p, "Alice <alice@example.com>", &["reset", "-q", "--hard", "HEAD~1"]);
    enable(p, "payments-prod", "scaffolder");
    commit(p, "Alice <alice@example.com>", "payments-prod: scaffolder");
    let run = check(p, &approved);
    assert_eq!(run.code, 0, "{}", run.stdout);
}

/// A key added by the change under review does not make the change's plugins verified: the
/// facts Cedar sees are checked with the base revision's keys.
#[test]
fn a_key_the_change_adds_does_not_vouch_for_it() {
    let repo = example_history();
    let p = repo.path();
    let Some(key) = trusted_key(p, "community", "backstage-community") else {
        return;
    };
    sign(&key.path().join("k.key"), &p.join("plugins/cost-insights.yaml"));
    enable(p, "payments-prod", "cost-insights");
    commit(
        p,
        "Alice <alice@example.com>",
        "trust the community key, use cost insights\n\nApproved-by: erin\nApproved-by: bob\n",
    );
    // the head on its own: the new key verifies the new signature
    let verify = rampart(
        &["plugins", "verify", ".", "--rev", "HEAD", "--format", "json"],
        Some(p),
    );
    assert_eq!(verify.code, 0, "{}", verify.stdout);
    let v: serde_json::Value = serde_json::from_str(&verify.stdout).unwrap();
    let ci = v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "cost-insights")
        .unwrap();
    assert_eq!(ci["signedBy"], "community", "{ci}");
    // …but the policy step judges it with the keys already merged
    let run = check(p, &[]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stdout.contains("allow create File keys/community.yaml"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("enterprise-plugins-trusted-and-signed"),
        "{}",
        run.stdout
    );
}

/// Freshness is measured at the commit's time, never the clock; a release date after the
/// commit earns nothing and is flagged.
#[test]
fn freshness_is_measured_at_the_commit() {
    let repo = example_history();
    let p = repo.path();
    edit(
        p,
        "plugins/catalog.yaml",
        "lastRelease: \"2026-10-14\"",
        "lastRelease: \"2027-01-01\"",
    );
    commit(p, "Alice <alice@example.com>", "catalog: a release from the future");
    let run = rampart(&["validate", ".", "--rev", "HEAD", "--format", "json"], Some(p));
    assert_eq!(run.code, 0, "{}", run.stdout);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["diagnostics"][0]["code"], "R639", "{}", run.stdout);
    let plugins = v["plugins"].as_array().unwrap();
    let of = |name: &str| plugins.iter().find(|x| x["name"] == name).unwrap()["factors"]["freshness"].clone();
    assert_eq!(of("catalog"), 0);
    // commit 2026-11-20: techdocs released 2026-09-30 (fresh), tech-radar 2026-04-08 (226 days)
    assert_eq!(of("techdocs"), 15);
    assert_eq!(of("tech-radar"), 5);
    snapshot(
        "supply/validate-example.json",
        &run.stdout.replace(env!("CARGO_PKG_VERSION"), "VERSION"),
    )
    .unwrap();
}

/// A new minisign key pair whose public key `repo` trusts as `keys/NAME.yaml` for
/// `publisher`; the directory holding the secret key `k.key` (`None`: no minisign here).
fn trusted_key(repo: &Path, name: &str, publisher: &str) -> Option<tempfile::TempDir> {
    let key = tempfile::tempdir().unwrap();
    if !minisign_keypair(key.path()) {
        return None;
    }
    let public = std::fs::read_to_string(key.path().join("k.pub")).unwrap();
    write(
        &repo.join(format!("keys/{name}.yaml")),
        format!(
            "apiVersion: rampart.dev/v1\nkind: SigningKey\nmetadata:\n  name: {name}\nspec:\n  publicKey: {}\n  publishers: [{publisher}]\n",
            public.lines().nth(1).unwrap()
        ),
    );
    Some(key)
}

fn minisign_keypair(dir: &Path) -> bool {
    let status = std::process::Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(dir.join("k.pub"))
        .arg("-s")
        .arg(dir.join("k.key"))
        .output();
    match status {
        Ok(o) => {
            assert!(
                o.status.success(),
                "minisign -G: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            true
        }
        // .ci/run installs minisign; a developer machine without it skips loudly
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("minisign not installed ({e}): skipped");
            false
        }
        Err(e) => panic!("minisign is needed in CI (apt-get install minisign): {e}"),
    }
}

fn sign(key: &Path, plugin: &Path) {
    let out = std::process::Command::new(root().join("scripts/sign-plugin"))
        .arg(key)
        .arg(plugin)
        .output()
        .expect("scripts/sign-plugin runs");
    assert!(
        out.status.success(),
        "sign-plugin: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Signatures made by the real minisign tool (through `scripts/sign-plugin`) verify, and a
/// digest edited after signing does not.
#[test]
fn minisign_signatures_verify_and_tampering_shows() {
    let repo = repo_with(None);
    let p = repo.path();
    let Some(key) = trusted_key(p, "release", "backstage") else {
        return;
    };
    sign(&key.path().join("k.key"), &p.join("plugins/catalog.yaml"));
    let run = rampart(&["plugins", "verify", "."], Some(p));
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(run.stdout.contains("verified (release)"), "{}", run.stdout);

    edit(p, "plugins/catalog.yaml", "integrity: sha256-4", "integrity: sha256-5");
    let run = rampart(&["plugins", "verify", "."], Some(p));
    assert_eq!(run.code, 3, "{}", run.stdout);
    assert!(run.stdout.contains("error[R613]"), "{}", run.stdout);
    assert!(run.stdout.contains("plugins/catalog.yaml:"), "{}", run.stdout);
}

#[test]
fn plugins_verify_and_tree_on_the_example() {
    let example = root().join("examples/platform-config");
    let example = example.to_str().unwrap();
    let run = rampart(&["plugins", "tree", "payments-prod", example], None);
    assert_eq!(run.code, 0, "{}", run.stderr);
    snapshot("supply/tree-payments-prod.txt", &run.stdout).unwrap();
    let run = rampart(&["plugins", "tree", "payments-prd", example], None);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("did you mean `payments-prod`?"), "{}", run.stderr);

    // a tenant missing a requirement: the tree says which and why
    let repo = repo_with(Some(&root().join("testdata/invalid/R631-requirement-missing")));
    let run = rampart(&["plugins", "tree", "web", "."], Some(repo.path()));
    assert_eq!(run.code, 3, "{}", run.stdout);
    snapshot("supply/tree-missing.txt", &run.stdout).unwrap();
}

/// The plan names the trust of each plugin the change touches.
#[test]
fn the_plan_shows_what_a_change_does_to_trust() {
    let repo = example_history();
    let p = repo.path();
    edit(p, "plugins/catalog.yaml", "maintainers: 14", "maintainers: 1");
    commit(p, "Alice <alice@example.com>", "catalog: the maintainers left");
    // the second run knows the base is valid and skips its checks: its trust is computed
    // on demand, the same
    for _ in 0..2 {
        let run = rampart(&["plan", ".", "--base", "HEAD~1", "--format", "markdown"], Some(p));
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(
            run.stdout.contains(
                "plugin `catalog`: 2.3.1 trust 100 \\(signed by backstage-release\\) → 2.3.1 trust 94 \\(signed by backstage-release\\)"
            ),
            "{}",
            run.stdout
        );
    }
}

/// Trust facts live in the plugin's own YAML: a change can lower what the base trusts, never
/// raise it. Dropping open advisories in the same change that enables the plugin for an
/// enterprise tenant does not pass the enterprise rule.
#[test]
fn a_change_cannot_raise_a_plugins_trust_for_itself() {
    let repo = example_history();
    let p = repo.path();
    edit(
        p,
        "plugins/scaffolder.yaml",
        "  advisories:\n",
        "  advisories:\n    - {id: CVE-2026-0001, severity: critical}\n    - {id: CVE-2026-0002, severity: critical}\n",
    );
    edit(
        p,
        "plugins/scaffolder.yaml",
        "lastRelease: \"2026-10-02\"",
        "lastRelease: \"2024-01-02\"",
    );
    commit(
        p,
        "Alice <alice@example.com>",
        "scaffolder: two open critical advisories, no release since 2024",
    );
    // (trust 60 in the base: security 0, freshness 0)
    edit(
        p,
        "plugins/scaffolder.yaml",
        "  advisories:\n    - {id: CVE-2026-0001, severity: critical}\n    - {id: CVE-2026-0002, severity: critical}\n",
        "  advisories:\n",
    );
    edit(
        p,
        "plugins/scaffolder.yaml",
        "lastRelease: \"2024-01-02\"",
        "lastRelease: \"2026-10-02\"",
    );
    enable(p, "payments-prod", "scaffolder");
    commit(
        p,
        "Alice <alice@example.com>",
        "scaffolder is fine now, use it for payments",
    );
    // (twice: the second check skips the base's checks, its trust computed on demand)
    for _ in 0..2 {
        let run = check(p, &["--author", "alice", "--approved-by", "erin"]);
        assert_eq!(run.code, 2, "{}", run.stdout);
        assert!(
            run.stdout.contains("enterprise-plugins-trusted-and-signed"),
            "{}",
            run.stdout
        );
    }
}

/// A rollout to the enterprise tenant `payments-prod` (three steps, an SLO), its new
/// version's artifact signed with `key` (a secret key file) when given.
fn canary_to_enterprise(p: &Path, key: Option<&Path>) {
    let file = p.join("rollouts/techdocs-1-14-0.yaml");
    write(
        &file,
        "apiVersion: rampart.dev/v1\nkind: Rollout\nmetadata:\n  name: techdocs-1-14-0\nspec:\n  plugin: techdocs\n  \
         toVersion: \"1.14.0\"\n  artifact:\n    package: \"@backstage/plugin-techdocs@1.14.0\"\n    \
         integrity: sha256-LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=\n  tenants:\n    names: [payments-prod]\n  \
         steps:\n    - weight: 10\n    - weight: 50\n    - weight: 100\n  slos:\n    - name: errors\n      \
         query: sum(rate(http_requests_total{code=~\"5..\"}[5m]))\n      max: 1\n      for: 5m\n",
    );
    if let Some(key) = key {
        sign(key, &file);
    }
}

/// A canary runs the rollout's own artifact, judged like a plugin's: signed by a key already
/// merged (and trusted enough), it may reach an enterprise tenant; unsigned, or signed by a
/// key the same change adds, it may not.
#[test]
fn a_signed_canary_may_reach_an_enterprise_tenant() {
    let repo = example_history();
    let p = repo.path();
    // the key is merged before the rollout comes
    let key = trusted_key(p, "canaries", "backstage");
    let Some(secret) = key.as_ref().map(|k| k.path().join("k.key")) else {
        return;
    };
    commit(p, "Alice <alice@example.com>", "trust the canary key");
    // commit as alice and check (payments-prod is PCI: security approves); the exit code
    let judge = |message: &str| {
        commit(p, "Alice <alice@example.com>", message);
        let run = check(p, &["--author", "alice", "--approved-by", "erin"]);
        let untrusted = run.stdout.contains("enterprise-tenants-run-trusted-signed-plugins");
        assert_eq!(run.code == 2, untrusted, "{}", run.stdout);
        run.code
    };

    canary_to_enterprise(p, None);
    assert_eq!(judge("techdocs 1.14.0 to payments-prod, unsigned"), 2);

    git_as(p, "Alice <alice@example.com>", &["reset", "-q", "--hard", "HEAD~1"]);
    canary_to_enterprise(p, Some(&secret));
    assert_eq!(judge("techdocs 1.14.0 to payments-prod, signed"), 0);

    // the same signature, by a key this change adds: not yet trusted
    git_as(p, "Alice <alice@example.com>", &["reset", "-q", "--hard", "HEAD~2"]);
    let Some(late) = trusted_key(p, "canaries", "backstage") else {
        return;
    };
    canary_to_enterprise(p, Some(&late.path().join("k.key")));
    assert_eq!(
        judge("trust a key and sign the canary with it\n\nApproved-by: bob\n"),
        2
    );
}

/// Signing a plugin an enterprise tenant already runs is the fix the denial asks for: the
/// signature (verified with a key already merged) counts in the change that adds it, while
/// the self-reported factors still count with the lower of the two revisions.
#[test]
fn signing_a_running_plugin_raises_its_trust_in_the_same_change() {
    let repo = example_history();
    let p = repo.path();
    let Some(key) = trusted_key(p, "community-vetted", "backstage-community") else {
        return;
    };
    commit(
        p,
        "Alice <alice@example.com>",
        "trust the community key\n\nApproved-by: bob\n",
    );
    sign(&key.path().join("k.key"), &p.join("plugins/tech-radar.yaml"));
    commit(p, "Alice <alice@example.com>", "sign tech-radar\n\nApproved-by: bob\n");
    let run = check(p, &["--author", "alice", "--approved-by", "bob"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    // (that the self-reported factors cannot rise: a_change_cannot_raise_a_plugins_trust_for_itself)
}
