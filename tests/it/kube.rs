//! The Kubernetes target (`apply`/`plan --live`/`serve` with `--target kubernetes`) against a
//! real kube-apiserver and etcd (`scripts/kube-test-server`), one per test, so every test has
//! a cluster — and an inventory — of its own. `.config/nextest.toml` runs at most two of
//! them at once (each server takes ~300 MB and most of a core while it starts).
//!
//! A lone API server runs no controllers, so these tests check what the API server itself
//! does and nothing that needs a controller:
//! - no namespace controller: a deleted Namespace stays `Terminating` forever (its
//!   `deletionTimestamp` is set; the objects left in it are not removed by anyone but
//!   rampart). A prune is checked by the deletionTimestamp, never by waiting for it to go;
//! - no garbage collector: nothing is deleted through ownerReferences (rampart sets none);
//! - no Deployment/ReplicaSet controller, scheduler or kubelet: Deployments never get Pods
//!   or status, so nothing here waits for a rollout or checks readiness;
//! - no Gateway API controller: HTTPRoutes are stored (their CRDs are real) but get no status.
//!
//! What is real, because it happens inside the API server: server-side apply (managedFields,
//! field managers, conflicts, `force`, dry runs), validation, RBAC, CRDs and discovery,
//! admission (a ValidatingAdmissionPolicy), and `/metrics` (`apiserver_request_total`).
//! Failures the API server does not produce on demand (429, 503) come from [`Proxy`], a
//! loopback proxy in front of it that also logs every request rampart makes (so "no write
//! call" and "only that tenant's objects" are checked on the wire).

use crate::kube_server::*;
use crate::serve::{Fixture, Service};
use crate::support::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ALICE: &str = "Alice <alice@example.com>";

/// `rampart apply REPO --rev HEAD --target TARGET` with `KUBECONFIG`.
fn apply(repo: &Path, kubeconfig: &str, target: &str, extra: &[&str]) -> Run {
    let repo = repo.to_str().unwrap();
    let mut args = vec!["apply", repo, "--rev", "HEAD", "--target", target];
    args.extend_from_slice(extra);
    rampart_env(&args, None, &[("KUBECONFIG", kubeconfig)])
}

/// What a run printed, stdout then stderr.
fn said(run: &Run) -> String {
    format!("{}{}", run.stdout, run.stderr)
}

fn assert_exit(run: &Run, code: i32, what: &str) {
    assert_eq!(
        run.code,
        code,
        "{what}: exit {} after {:.1} s\n{}",
        run.code,
        run.elapsed.as_secs_f64(),
        said(run)
    );
    assert!(!run.stderr.contains("panicked"), "{what}: panicked\n{}", run.stderr);
}

/// The objects `rampart compile` makes of the repo's HEAD, by key.
fn compiled(repo: &Path) -> BTreeMap<ObjectKey, Value> {
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("out");
    let run = rampart(
        &[
            "compile",
            repo.to_str().unwrap(),
            "--rev",
            "HEAD",
            "--out",
            dest.to_str().unwrap(),
        ],
        None,
    );
    assert_exit(&run, 0, "compile");
    tree(&dest)
        .into_iter()
        .filter(|(p, _)| p != "kustomization.yaml")
        .map(|(p, text)| {
            let v: Value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{p}: {e}"));
            (ObjectKey::of(&v), v)
        })
        .collect()
}

/// The kubectl resource names of these objects' kinds.
fn resources<'a>(keys: impl IntoIterator<Item = &'a ObjectKey>) -> BTreeSet<String> {
    keys.into_iter().map(ObjectKey::resource).collect()
}

fn head(repo: &Path) -> String {
    git_as(repo, ALICE, &["rev-parse", "HEAD"])
}

/// Each of `expected` that the cluster does not hold.
fn missing(server: &KubeServer, expected: &BTreeMap<ObjectKey, Value>) -> Vec<String> {
    let live = server.list(&resources(expected.keys()));
    expected
        .keys()
        .filter(|k| !live.contains_key(*k))
        .map(ObjectKey::display)
        .collect()
}

/// A commit that retires the data-notebooks tenant, with the approvals a tenant deletion
/// needs (two from platform, and its owners' consent).
fn retire_notebooks(repo: &Path) {
    std::fs::remove_file(repo.join("tenants/data-notebooks.yaml")).unwrap();
    commit(
        repo,
        ALICE,
        "retire the notebooks portal\n\nApproved-by: bob\nApproved-by: carol-ng\nApproved-by: olivia-w\n",
    );
}

/// A commit that takes the tech-radar plugin out of the sandbox: its ConfigMap and its
/// Deployment (the requests) change.
fn sandbox_without_tech_radar(repo: &Path) {
    edit(repo, "tenants/sandbox.yaml", "    - name: tech-radar\n", "");
    commit(repo, ALICE, "sandbox: no tech radar");
}

/// A commit that raises the sandbox's pod quota from 10 to `pods`.
fn sandbox_pods(repo: &Path, pods: u32) {
    edit(
        repo,
        "tenants/sandbox.yaml",
        "    pods: 10\n",
        &format!("    pods: {pods}\n"),
    );
    commit(repo, ALICE, "sandbox: more pods");
}

fn quota_pods(server: &KubeServer, ns: &str) -> String {
    let q = server
        .get("resourcequota", Some(ns), "quota")
        .expect("the quota exists");
    q["spec"]["hard"]["pods"].as_str().unwrap().to_owned()
}

/// The managers (and operations) of an object's managedFields.
fn managers(o: &Value) -> Vec<(String, String)> {
    o["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    (
                        m["manager"].as_str().unwrap_or("").to_owned(),
                        m["operation"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn first_apply_creates_every_object_and_a_second_writes_nothing() {
    let server = KubeServer::start();
    let repo = example_history();
    let expected = compiled(repo.path());
    assert!(
        expected.len() > 100,
        "the example compiles to {} objects",
        expected.len()
    );

    // 1. the first apply
    let run = apply(repo.path(), &server.kubeconfig_str(), "kubernetes", &[]);
    assert_exit(&run, 0, "first apply");
    assert!(
        run.stdout
            .contains(&format!("{} objects applied, 0 pruned", expected.len())),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("first apply"), "{}", run.stdout);
    let live = server.list(&resources(expected.keys()));
    let mut problems = Vec::new();
    for (k, want) in &expected {
        let Some(o) = live.get(k) else {
            problems.push(format!("{}: missing", k.display()));
            continue;
        };
        if o["metadata"]["labels"]["app.kubernetes.io/managed-by"] != "rampart" {
            problems.push(format!("{}: labels {}", k.display(), o["metadata"]["labels"]));
        }
        if !managers(o).contains(&("rampart".to_owned(), "Apply".to_owned())) {
            problems.push(format!("{}: managers {:?}", k.display(), managers(o)));
        }
        // what was applied is what was compiled (spot check: the labels and, where the
        // object has them, its data and spec.replicas)
        for field in ["data", "roleRef"] {
            if want.get(field).is_some() && o[field] != want[field] {
                problems.push(format!("{}: {field} differs", k.display()));
            }
        }
        if let Some(r) = want.pointer("/spec/replicas")
            && o.pointer("/spec/replicas") != Some(r)
        {
            problems.push(format!("{}: replicas {:?}", k.display(), o.pointer("/spec/replicas")));
        }
    }
    assert!(problems.is_empty(), "after the first apply:\n{}", problems.join("\n"));
    let kinds: BTreeSet<&str> = expected.keys().map(|k| k.kind.as_str()).collect();
    for kind in [
        "Namespace",
        "Deployment",
        "ConfigMap",
        "HTTPRoute",
        "RoleBinding",
        "NetworkPolicy",
    ] {
        assert!(kinds.contains(kind), "the example compiles no {kind}: {kinds:?}");
    }

    let (data, listed) = server.inventory().expect("the inventory exists");
    assert_eq!(data.get("commit"), Some(&head(repo.path())), "{data:?}");
    assert!(!data.contains_key("partial"), "{data:?}");
    assert!(!data.contains_key("claim"), "{data:?}");
    let record: Value = serde_json::from_str(&data["record"]).unwrap();
    assert_eq!(record["decision"], "first-apply", "{record}");
    let want: BTreeSet<ObjectKey> = expected.keys().cloned().collect();
    assert_eq!(
        listed.symmetric_difference(&want).collect::<Vec<_>>(),
        Vec::<&ObjectKey>::new(),
        "the inventory lists exactly the compiled objects"
    );

    // 2. the same revision again: not a single write call, on the wire and in the server
    let proxy = Proxy::start(&server);
    let watched = resources(expected.keys());
    let before = server.write_requests(&watched);
    assert!(
        before >= expected.len() as u64,
        "apiserver_request_total counted {before} writes for the first apply of {} objects",
        expected.len()
    );
    let run = apply(repo.path(), &proxy.kubeconfig(), "kubernetes", &[]);
    assert_exit(&run, 0, "second apply");
    assert!(run.stdout.contains("no changes"), "{}", run.stdout);
    assert!(!proxy.requests().is_empty(), "the second apply went through the proxy");
    assert_eq!(proxy.writes().len(), 0, "write calls: {:#?}", proxy.writes());
    assert_eq!(
        server.write_requests(&watched),
        before,
        "apiserver_request_total counted writes during a no-op apply"
    );
}

#[test]
fn a_one_tenant_change_writes_only_that_tenants_objects() {
    let server = KubeServer::start();
    let repo = example_history();
    assert_exit(
        &apply(repo.path(), &server.kubeconfig_str(), "kubernetes", &[]),
        0,
        "first apply",
    );
    sandbox_pods(repo.path(), 12);
    let proxy = Proxy::start(&server);
    let run = apply(repo.path(), &proxy.kubeconfig(), "kubernetes", &[]);
    assert_exit(&run, 0, "the one-tenant change");
    assert!(run.stdout.contains("1 objects applied, 0 pruned"), "{}", run.stdout);
    let writes = proxy.writes();
    let stray: Vec<_> = writes
        .iter()
        .filter(|w| {
            !w.path.starts_with("/api/v1/namespaces/sandbox/")
                && !w
                    .path
                    .starts_with("/api/v1/namespaces/rampart-system/configmaps/rampart-inventory")
        })
        .collect();
    assert!(
        stray.is_empty(),
        "writes outside the sandbox and the inventory: {stray:#?}"
    );
    assert!(
        writes
            .iter()
            .any(|w| w.method == "PATCH" && w.path.starts_with("/api/v1/namespaces/sandbox/resourcequotas/quota?")),
        "the quota was not applied: {writes:#?}"
    );
    assert_eq!(quota_pods(&server, "sandbox"), "12");
    let (data, _) = server.inventory().unwrap();
    assert_eq!(data.get("commit"), Some(&head(repo.path())));
}

#[test]
fn a_removed_tenant_is_pruned_and_nothing_else_is() {
    let server = KubeServer::start();
    let repo = example_history();
    let before = compiled(repo.path());
    assert_exit(
        &apply(repo.path(), &server.kubeconfig_str(), "kubernetes", &[]),
        0,
        "first apply",
    );
    // objects that carry rampart's label but that rampart never applied
    server.kubectl_apply(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: elsewhere\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bystander\n  namespace: elsewhere\n  labels:\n    app.kubernetes.io/managed-by: rampart\ndata:\n  a: b\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bystander\n  namespace: sandbox\n  labels:\n    app.kubernetes.io/managed-by: rampart\n    rampart.dev/tenant: sandbox\ndata:\n  a: b\n",
    );
    retire_notebooks(repo.path());
    let gone: Vec<&ObjectKey> = before
        .keys()
        .filter(|k| {
            k.namespace.as_deref() == Some("data-notebooks") || (k.kind == "Namespace" && k.name == "data-notebooks")
        })
        .collect();
    assert!(gone.len() > 5, "{gone:?}");
    let run = apply(repo.path(), &server.kubeconfig_str(), "kubernetes", &[]);
    assert_exit(&run, 0, "the tenant's removal");
    assert!(
        run.stdout
            .contains(&format!("0 objects applied, {} pruned", gone.len())),
        "{}",
        run.stdout
    );
    for k in &gone {
        let o = server.get(&k.resource(), k.namespace.as_deref(), &k.name);
        if k.kind == "Namespace" {
            // no namespace controller: it stays Terminating
            if let Some(o) = o {
                assert!(
                    o["metadata"]["deletionTimestamp"].is_string(),
                    "the namespace is not being deleted: {}",
                    o["metadata"]
                );
            }
        } else {
            assert!(o.is_none(), "{} was not pruned", k.display());
        }
    }
    assert!(server.get("configmap", Some("elsewhere"), "bystander").is_some());
    assert!(server.get("configmap", Some("sandbox"), "bystander").is_some());
    // every other tenant is untouched
    let after = compiled(repo.path());
    assert!(missing(&server, &after).is_empty(), "{:?}", missing(&server, &after));
    let (data, listed) = server.inventory().unwrap();
    assert_eq!(data.get("commit"), Some(&head(repo.path())));
    assert_eq!(listed, after.keys().cloned().collect::<BTreeSet<_>>());
}

#[test]
fn a_conflict_names_the_field_and_the_manager_and_force_takes_it_over() {
    let server = KubeServer::start();
    let repo = example_history();
    assert_exit(
        &apply(repo.path(), &server.kubeconfig_str(), "kubernetes", &[]),
        0,
        "first apply",
    );
    let applied = head(repo.path());
    server.kubectl(&["scale", "deployment", "portal", "--replicas=5", "-n", "sandbox"]);
    sandbox_without_tech_radar(repo.path());

    let run = apply(repo.path(), &server.kubeconfig_str(), "kubernetes", &[]);
    assert_exit(&run, 1, "an apply that meets a conflict");
    let text = said(&run);
    for want in [
        "error[kube-conflict]",
        "Deployment.apps sandbox/portal",
        ".spec.replicas",
        "(managed by `kubectl`)",
        "--force-conflicts",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
    let d = server.get("deployment.apps", Some("sandbox"), "portal").unwrap();
    assert_eq!(d["spec"]["replicas"], 5);
    // the commit is not recorded as applied: the inventory says where it stopped
    let (data, _) = server.inventory().unwrap();
    assert_eq!(data.get("commit"), Some(&applied), "{data:?}");
    assert_eq!(data.get("partial"), Some(&head(repo.path())), "{data:?}");

    let run = apply(
        repo.path(),
        &server.kubeconfig_str(),
        "kubernetes",
        &["--force-conflicts"],
    );
    assert_exit(&run, 0, "--force-conflicts");
    let d = server.get("deployment.apps", Some("sandbox"), "portal").unwrap();
    assert_eq!(d["spec"]["replicas"], 1, "rampart's value");
    let owner = d["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["fieldsV1"].pointer("/f:spec/f:replicas").is_some())
        .map(|m| m["manager"].clone());
    assert_eq!(
        owner,
        Some(Value::from("rampart")),
        "{}",
        d["metadata"]["managedFields"]
    );
    let (data, _) = server.inventory().unwrap();
    assert_eq!(data.get("commit"), Some(&head(repo.path())), "{data:?}");
    assert!(!data.contains_key("partial"), "{data:?}");
}

#[test]
fn drift_is_planned_reported_and_healed() {
    let server = KubeServer::start();
    let f = Fixture::new();
    let kc = server.kubeconfig_str();
    let env = [("KUBECONFIG", kc.as_str())];
    let tip = f.head();
    let state = f.path("state");
    let args = [
        "--repo",
        &f.remote(),
        "--state-dir",
        state.to_str().unwrap(),
        "--target",
        "kubernetes",
        "--drift-interval",
        "1s",
    ];
    let mut svc = Service::start(f.dir.path(), &args, &env);
    svc.wait_applied("kubernetes:test", &tip, Duration::from_secs(60));
    svc.wait("a drift check", Duration::from_secs(30), |s| {
        s.target("kubernetes:test")["drift"]["commit"] == tip.as_str()
    });
    let t = svc.target("kubernetes:test");
    assert_eq!(t["drift"]["count"], 0, "drift right after an apply: {t}");

    let plan = |format: &str| {
        rampart_env(
            &[
                "plan",
                f.work().to_str().unwrap(),
                "--live",
                "--target",
                "kubernetes",
                "--head",
                "HEAD",
                "--format",
                format,
                "--detailed-exitcode",
            ],
            None,
            &env,
        )
    };
    let run = plan("text");
    assert_exit(&run, 0, "plan --live of what the cluster holds");
    assert!(
        run.stdout.contains("0 to create, 0 to update, 0 to prune"),
        "{}",
        run.stdout
    );

    // a hand edit
    server.kubectl(&[
        "patch",
        "resourcequota",
        "quota",
        "-n",
        "sandbox",
        "--type=merge",
        "-p",
        r#"{"spec":{"hard":{"pods":"99"}}}"#,
    ]);
    // (kubectl now owns the field: the plan says what `apply` would refuse, a conflict, with
    // the diff of taking it back; exit 1)
    let run = plan("text");
    assert_exit(&run, 1, "plan --live of a drifted cluster");
    for want in [
        "0 to create, 0 to update, 0 to prune",
        "1 in conflict with another field manager",
        "! conflict ResourceQuota sandbox/quota",
        ".spec.hard.pods (managed by `kubectl-patch`)",
        "-    pods: \"99\"",
        "+    pods: \"10\"",
    ] {
        assert!(run.stdout.contains(want), "{want:?} not in:\n{}", run.stdout);
    }
    let run = plan("json");
    assert_exit(&run, 1, "plan --live --format json");
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["summary"]["conflict"], 1, "{v}");
    let objects = v["objects"].as_array().unwrap();
    assert_eq!(objects.len(), 1, "{v}");
    assert_eq!(objects[0]["object"], "ResourceQuota sandbox/quota");
    assert_eq!(objects[0]["action"], "conflict");
    assert!(objects[0]["diff"].as_str().unwrap().contains("pods"), "{v}");

    // the service sees it, and leaves it alone without --self-heal
    svc.wait("the drift to be reported", Duration::from_secs(30), |s| {
        s.target("kubernetes:test")["drift"]["count"] == 1
    });
    let t = svc.target("kubernetes:test");
    assert_eq!(
        t["drift"]["objects"],
        serde_json::json!(["ResourceQuota sandbox/quota"]),
        "{t}"
    );
    assert_eq!(t["drift"]["healed"], 0, "{t}");
    assert_eq!(
        svc.metric("rampart_drift_objects", "kubernetes:test"),
        Some(1.0),
        "{}",
        svc.metrics()
    );
    assert_eq!(quota_pods(&server, "sandbox"), "99");
    drop(svc);

    // with --self-heal it is applied back
    let mut healing: Vec<&str> = args.to_vec();
    healing.push("--self-heal");
    let mut svc = Service::start(f.dir.path(), &healing, &env);
    svc.wait("the drift to be healed", Duration::from_secs(60), |s| {
        s.target("kubernetes:test")["drift"]["healed"] == 1
    });
    assert_eq!(quota_pods(&server, "sandbox"), "10");
    assert_eq!(svc.metric("rampart_drift_objects", "kubernetes:test"), Some(0.0));
    let run = plan("text");
    assert_exit(&run, 0, "plan --live after healing");
    drop(svc);
}

#[test]
fn rbac_denial_names_the_verb_and_deploy_rbac_yaml_is_enough() {
    let server = KubeServer::start();
    let repo = example_history();
    let kc = server.kubeconfig_str();
    let run = apply(repo.path(), &kc, "kubernetes:limited", &[]);
    assert_exit(&run, 1, "an apply without RBAC");
    let text = said(&run);
    for want in [
        "kube-forbidden",
        "forbidden",
        "User \"rampart-limited\" cannot get resource \"configmaps\"",
        "in the namespace \"rampart-system\"",
        "deploy/rbac.yaml",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }

    // the shipped ClusterRole, bound to the limited user
    let rbac = std::fs::read_to_string(root().join("deploy/rbac.yaml")).expect("deploy/rbac.yaml");
    server.kubectl_apply(&rbac);
    server.kubectl_apply(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: rampart-limited\n\
         roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: rampart\n\
         subjects:\n- apiGroup: rbac.authorization.k8s.io\n  kind: User\n  name: rampart-limited\n",
    );
    let run = apply(repo.path(), &kc, "kubernetes:limited", &[]);
    assert_exit(&run, 0, "an apply with deploy/rbac.yaml's ClusterRole");
    let expected = compiled(repo.path());
    assert!(
        missing(&server, &expected).is_empty(),
        "{:?}",
        missing(&server, &expected)
    );
    // a live plan (get, and dry-run patches) and a prune (delete) need nothing more
    let run = rampart_env(
        &[
            "plan",
            repo.path().to_str().unwrap(),
            "--live",
            "--target",
            "kubernetes:limited",
            "--detailed-exitcode",
        ],
        None,
        &[("KUBECONFIG", &kc)],
    );
    assert_exit(&run, 0, "plan --live with deploy/rbac.yaml's ClusterRole");
    retire_notebooks(repo.path());
    let run = apply(repo.path(), &kc, "kubernetes:limited", &[]);
    assert_exit(&run, 0, "a prune with deploy/rbac.yaml's ClusterRole");
    assert!(run.stdout.contains("pruned"), "{}", run.stdout);
    assert!(
        server
            .get("configmap", Some("data-notebooks"), "dynamic-plugins")
            .is_none()
    );
}

/// A child process, killed (and reaped) when dropped: a failed test leaves no apply running.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The example plus `n` copies of the sandbox tenant (`load-1`…), committed.
fn big_repo(n: usize) -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    copy_tree(&root().join("examples/platform-config"), repo.path());
    let sandbox = std::fs::read_to_string(repo.path().join("tenants/sandbox.yaml")).unwrap();
    for i in 1..=n {
        write(
            &repo.path().join(format!("tenants/load-{i}.yaml")),
            sandbox.replace("  name: sandbox\n", &format!("  name: load-{i}\n")),
        );
    }
    git_as(repo.path(), ALICE, &["init", "-q", "-b", "main"]);
    commit(repo.path(), ALICE, "the example and many tenants");
    repo
}

#[test]
fn an_api_server_killed_mid_apply_fails_the_apply_and_the_next_one_completes_it() {
    let server = KubeServer::start();
    let repo = big_repo(150);
    let expected = compiled(repo.path());
    assert!(expected.len() > 1200, "{}", expected.len());
    let logs = tempfile::tempdir().unwrap();
    let mut child = Reaped(
        Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args([
                "apply",
                repo.path().to_str().unwrap(),
                "--rev",
                "HEAD",
                "--target",
                "kubernetes",
            ])
            .env("KUBECONFIG", server.kubeconfig())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(logs.path().join("out")).unwrap())
            .stderr(std::fs::File::create(logs.path().join("err")).unwrap())
            .spawn()
            .unwrap(),
    );
    let child = &mut child.0;
    wait_until("the apply to claim the inventory", Duration::from_secs(60), || {
        server
            .inventory()
            .is_some_and(|(d, _)| d.get("partial").is_some_and(|p| !p.is_empty()))
    });
    // (some objects, not all of them)
    wait_until("the apply to get going", Duration::from_secs(60), || {
        server
            .kubectl(&[
                "get",
                "configmaps",
                "-A",
                "-l",
                "app.kubernetes.io/managed-by=rampart",
                "-o",
                "name",
            ])
            .lines()
            .count()
            > 20
    });
    assert!(
        child.try_wait().unwrap().is_none(),
        "the apply finished before the API server could be killed: make the repo bigger"
    );
    server.kill_apiserver();
    let killed = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if killed.elapsed() > Duration::from_secs(180) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the apply still runs 180 s after the API server died\n{}",
                std::fs::read_to_string(logs.path().join("out")).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = killed.elapsed();
    let text = std::fs::read_to_string(logs.path().join("out")).unwrap()
        + &std::fs::read_to_string(logs.path().join("err")).unwrap();
    eprintln!(
        "the apply exited {status} {:.1} s after the kill:\n{text}",
        took.as_secs_f64()
    );
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("kube-unavailable"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    assert!(
        took < Duration::from_secs(60),
        "exited {took:?} after the kill:\n{text}"
    );

    server.restart_apiserver();
    let held = server.inventory().expect("the inventory survived");
    assert_ne!(held.0.get("commit"), Some(&head(repo.path())), "{:?}", held.0);
    let run = apply(repo.path(), &server.kubeconfig_str(), "kubernetes", &[]);
    assert_exit(&run, 0, "the apply after the restart");
    // (it may wait for the dead process's claim to expire first)
    eprintln!("the apply after the restart took {:.1} s", run.elapsed.as_secs_f64());
    assert!(
        missing(&server, &expected).is_empty(),
        "{:?}",
        missing(&server, &expected)
    );
    let (data, listed) = server.inventory().unwrap();
    assert_eq!(data.get("commit"), Some(&head(repo.path())), "{data:?}");
    assert!(!data.contains_key("partial"), "{data:?}");
    assert_eq!(listed.len(), expected.len());
}

#[test]
fn without_the_gateway_api_crds_every_other_object_is_applied() {
    let server = KubeServer::start_without_gateway_api();
    let repo = example_history();
    let expected = compiled(repo.path());
    let routes = expected.keys().filter(|k| k.kind == "HTTPRoute").count();
    assert!(routes > 0);
    let run = apply(repo.path(), &server.kubeconfig_str(), "kubernetes", &[]);
    assert_exit(&run, 1, "an apply without the Gateway API CRDs");
    let text = said(&run);
    for want in [
        "error[kube-kind-missing]",
        &format!("does not serve HTTPRoute (gateway.networking.k8s.io/v1): {routes} objects not applied"),
        "the Gateway API CRDs are not installed",
        "standard-install.yaml",
        &format!("{routes} objects not applied ({} applied", expected.len() - routes),
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
    let rest: BTreeMap<ObjectKey, Value> = expected.into_iter().filter(|(k, _)| k.kind != "HTTPRoute").collect();
    assert!(missing(&server, &rest).is_empty(), "{:?}", missing(&server, &rest));
    let (data, _) = server.inventory().unwrap();
    assert!(!data.contains_key("commit"), "not applied completely: {data:?}");
}

/// A PATCH of one of the tenants' objects (not of the inventory in rampart-system).
fn object_patch(method: &str, path: &str) -> bool {
    method == "PATCH" && !path.contains("rampart-system")
}

#[test]
fn throttling_and_unavailability_are_retried() {
    let server = KubeServer::start();
    let repo = example_history();
    let expected = compiled(repo.path());
    let proxy = Proxy::start(&server);
    proxy.fail(Some(3), 429, Some(1), object_patch);
    proxy.fail(Some(3), 503, None, object_patch);
    let run = apply(repo.path(), &proxy.kubeconfig(), "kubernetes", &[]);
    assert_exit(&run, 0, "an apply through 429s and 503s");
    assert!(
        missing(&server, &expected).is_empty(),
        "{:?}",
        missing(&server, &expected)
    );
    let log = proxy.requests();
    let injected = |code: u16| log.iter().filter(|l| l.injected && l.status == code).count();
    assert_eq!((injected(429), injected(503)), (3, 3), "{log:#?}");
    // each refused call was made again, and the 429s only after the second they asked for
    for (i, l) in log.iter().enumerate().filter(|(_, l)| l.injected) {
        let again = log[i + 1..]
            .iter()
            .find(|m| m.method == l.method && m.path == l.path)
            .unwrap_or_else(|| panic!("{} {} was not retried", l.method, l.path));
        let gap = again.at - l.at;
        // (Retry-After 1 s, or the first backoff of 250 ms; both less 10% jitter)
        let least = if l.status == 429 { 850 } else { 200 };
        assert!(
            gap >= Duration::from_millis(least),
            "{} {} retried after {gap:?}",
            l.method,
            l.path
        );
    }
    let (data, _) = server.inventory().unwrap();
    assert_eq!(data.get("commit"), Some(&head(repo.path())));
}

#[test]
fn an_api_server_that_keeps_failing_fails_the_apply_in_bounded_time() {
    let server = KubeServer::start();
    let repo = example_history();
    let proxy = Proxy::start(&server);

    // every call, the inventory's read too
    proxy.fail(None, 503, None, |_, _| true);
    let run = apply(repo.path(), &proxy.kubeconfig(), "kubernetes", &[]);
    assert_exit(&run, 1, "an apply against an API server answering 503");
    assert!(said(&run).contains("kube-unavailable"), "{}", said(&run));
    assert!(run.elapsed < Duration::from_secs(60), "took {:?}", run.elapsed);
    assert!(server.inventory().is_none());

    // the inventory can be written, no object can
    proxy.heal();
    proxy.fail(None, 503, None, object_patch);
    let run = apply(repo.path(), &proxy.kubeconfig(), "kubernetes", &[]);
    assert_exit(&run, 1, "an apply whose every object gets 503");
    let text = said(&run);
    assert!(text.contains("error[kube-unavailable]: Namespace "), "{text}");
    assert!(
        text.contains("objects not sent: the API server stopped answering"),
        "{text}"
    );
    assert!(text.contains("503"), "{text}");
    assert!(run.elapsed < Duration::from_secs(60), "took {:?}:\n{text}", run.elapsed);
    let (data, _) = server.inventory().unwrap();
    assert!(!data.contains_key("commit"), "{data:?}");

    // and once it answers again, the next apply completes
    proxy.heal();
    let run = apply(repo.path(), &proxy.kubeconfig(), "kubernetes", &[]);
    assert_exit(&run, 0, "the apply after the API server recovered");
    let expected = compiled(repo.path());
    assert!(
        missing(&server, &expected).is_empty(),
        "{:?}",
        missing(&server, &expected)
    );
}

#[test]
fn an_object_the_api_server_refuses_as_invalid_is_named() {
    let server = KubeServer::start();
    let repo = example_history();
    assert_exit(
        &apply(repo.path(), &server.kubeconfig_str(), "kubernetes", &[]),
        0,
        "first apply",
    );
    // an admission policy (evaluated inside kube-apiserver) that answers 422 Invalid
    server.kubectl_apply(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: frozen-plugins
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - apiGroups: [""]
        apiVersions: ["v1"]
        operations: ["CREATE", "UPDATE"]
        resources: ["configmaps"]
  validations:
    - expression: "object.metadata.name != 'dynamic-plugins'"
      message: "the sandbox's plugins are frozen"
      reason: Invalid
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: frozen-plugins
spec:
  policyName: frozen-plugins
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels:
        kubernetes.io/metadata.name: sandbox
"#,
    );
    // (the API server takes a moment to load a new policy)
    wait_until("the admission policy to be in force", Duration::from_secs(30), || {
        let out = server.kubectl_output(&[
            "patch",
            "configmap",
            "dynamic-plugins",
            "-n",
            "sandbox",
            "--dry-run=server",
            "--type=merge",
            "-p",
            r#"{"data":{"probe":"x"}}"#,
        ]);
        String::from_utf8_lossy(&out.stderr).contains("frozen")
    });
    sandbox_without_tech_radar(repo.path());
    let run = apply(repo.path(), &server.kubeconfig_str(), "kubernetes", &[]);
    assert_exit(&run, 1, "an apply the API server refuses");
    let text = said(&run);
    for want in [
        "1 object not applied (1 applied",
        "error[kube-invalid]: ConfigMap sandbox/dynamic-plugins: the API server refused it as invalid",
        "the sandbox's plugins are frozen",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
    // the rest of the change was applied
    let d = server.get("deployment.apps", Some("sandbox"), "portal").unwrap();
    let want = compiled(repo.path());
    let key = ObjectKey::of(&d);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["resources"],
        want[&key]["spec"]["template"]["spec"]["containers"][0]["resources"]
    );
}

#[test]
fn serve_resumes_from_the_commit_the_inventory_records() {
    let server = KubeServer::start();
    let f = Fixture::new();
    let first = f.head();
    let kc = server.kubeconfig_str();
    let run = f.once("state-1", &["--target", "kubernetes"], &[("KUBECONFIG", &kc)]);
    assert_exit(&run, 0, "serve --once on an empty cluster");
    assert!(
        run.stdout.contains(&format!("kubernetes:test: holds {}", &first[..12])),
        "{}",
        run.stdout
    );
    let (data, _) = server.inventory().unwrap();
    assert_eq!(data.get("commit"), Some(&first));
    let expected = compiled(&f.work());
    assert!(missing(&server, &expected).is_empty());

    let second = f.push(ALICE, "sandbox: more pods", |p| {
        edit(p, "tenants/sandbox.yaml", "    pods: 10\n", "    pods: 12\n")
    });
    // a fresh state directory: the inventory is the only record of what was applied
    let proxy = Proxy::start(&server);
    let run = f.once(
        "state-2",
        &["--target", "kubernetes"],
        &[("KUBECONFIG", &proxy.kubeconfig())],
    );
    assert_exit(&run, 0, "serve --once after a push");
    assert!(
        run.stdout
            .contains(&format!("kubernetes:proxy: holds {}", &second[..12])),
        "{}",
        run.stdout
    );
    let (data, _) = server.inventory().unwrap();
    assert_eq!(data.get("commit"), Some(&second));
    let record: Value = serde_json::from_str(&data["record"]).unwrap();
    assert_eq!(record["from"], first.as_str(), "{record}");
    assert_eq!(record["commits"], serde_json::json!([second]), "{record}");
    let writes = proxy.writes();
    let stray: Vec<_> = writes
        .iter()
        .filter(|w| {
            !w.path.starts_with("/api/v1/namespaces/sandbox/")
                && !w
                    .path
                    .starts_with("/api/v1/namespaces/rampart-system/configmaps/rampart-inventory")
        })
        .collect();
    assert!(stray.is_empty(), "writes outside the new commit's tenant: {stray:#?}");
    assert_eq!(quota_pods(&server, "sandbox"), "12");
}

/// A first apply that did not finish (the Gateway API CRDs missing) is the baseline of the
/// next: a change after it is judged, not waved through as another first apply.
#[test]
fn an_unfinished_first_apply_is_the_baseline_of_the_next() {
    let server = KubeServer::start_without_gateway_api();
    let repo = example_history();
    let first = apply(repo.path(), &server.kubeconfig_str(), "kubernetes", &[]);
    assert_exit(&first, 1, "a first apply without the Gateway API CRDs");
    let (data, _) = server.inventory().unwrap();
    assert_eq!(data.get("partial"), Some(&head(repo.path())), "{data:?}");
    // someone outside every team raises a PCI tenant's quota: the policies deny it
    edit(repo.path(), "tenants/payments-prod.yaml", "    cpu: ", "    cpu: 1");
    commit(repo.path(), "Mallory <mallory@example.com>", "more cpu");
    let run = apply(repo.path(), &server.kubeconfig_str(), "kubernetes", &[]);
    assert_exit(&run, 2, "a denied change after an unfinished first apply");
    assert!(said(&run).contains("denied by policy"), "{}", said(&run));
}

/// Lines added to the inventory by hand do not make objects rampart's: prune deletes only
/// what carries rampart's label and field manager, never its own inventory or the cluster's
/// namespaces; a Namespace that existed before rampart first applied it is never deleted.
#[test]
fn prune_deletes_only_what_is_rampart_s() {
    let server = KubeServer::start();
    let repo = example_history();
    // the notebooks' namespace is someone's already, with something of theirs in it
    server.kubectl_apply(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: data-notebooks\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: theirs\n  namespace: data-notebooks\ndata:\n  a: b\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata:\n  name: victim\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: important\n  namespace: victim\ndata:\n  a: b\n",
    );
    assert_exit(
        &apply(repo.path(), &server.kubeconfig_str(), "kubernetes", &[]),
        0,
        "first apply",
    );
    // forged inventory lines: someone else's objects, the inventory itself, a cluster namespace
    let shards: usize = server.inventory().unwrap().0["shards"].parse().unwrap();
    let mut forged = false;
    for i in 0..shards {
        let name = format!("rampart-inventory-{i}");
        let text = server.kubectl(&[
            "-n",
            "rampart-system",
            "get",
            "configmap",
            &name,
            "-o",
            "jsonpath={.data.objects}",
        ]);
        if forged {
            continue;
        }
        let lines = "0123456789abcdef0123 v1 ConfigMap victim important\n\
                     0123456789abcdef0123 v1 Namespace - victim\n\
                     0123456789abcdef0123 v1 Namespace - kube-public\n\
                     0123456789abcdef0123 v1 ConfigMap rampart-system rampart-inventory\n";
        let patch = serde_json::json!({"data": {"objects": format!("{text}{lines}")}}).to_string();
        server.kubectl(&[
            "-n",
            "rampart-system",
            "patch",
            "configmap",
            &name,
            "--type",
            "merge",
            "-p",
            &patch,
        ]);
        forged = true;
    }
    retire_notebooks(repo.path());
    // (applied from the work tree: every object is compared and every inventory line is a
    // prune candidate — an apply of a revision compares only the change's tenants, where no
    // forged line can be)
    let kc = server.kubeconfig_str();
    let run = rampart_env(
        &["apply", repo.path().to_str().unwrap(), "--target", "kubernetes"],
        None,
        &[("KUBECONFIG", kc.as_str())],
    );
    assert_exit(&run, 0, "the notebooks' removal");
    let text = said(&run);
    assert!(text.contains("not deleted"), "{text}");
    assert!(server.get("configmap", Some("victim"), "important").is_some());
    let victim = server.get("namespace", None, "victim").expect("victim namespace");
    assert!(
        victim["metadata"]["deletionTimestamp"].is_null(),
        "{}",
        victim["metadata"]
    );
    assert!(
        server
            .get("configmap", Some("rampart-system"), "rampart-inventory")
            .is_some()
    );
    // the adopted namespace stays, with their ConfigMap; rampart's objects in it are gone
    let ns = server
        .get("namespace", None, "data-notebooks")
        .expect("adopted namespace");
    assert!(ns["metadata"]["deletionTimestamp"].is_null(), "{}", ns["metadata"]);
    assert!(server.get("configmap", Some("data-notebooks"), "theirs").is_some());
    assert!(server.get("resourcequota", Some("data-notebooks"), "quota").is_none());
    let (data, listed) = server.inventory().unwrap();
    // (a work-tree apply keeps the baseline: the commit applied before)
    assert!(data.contains_key("commit") && !data.contains_key("partial"), "{data:?}");
    assert!(
        listed.iter().all(|k| k.namespace.as_deref() != Some("victim")),
        "{listed:?}"
    );
}
