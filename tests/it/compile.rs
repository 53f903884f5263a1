//! `rampart compile`: the example's objects, checked against the upstream Kubernetes and
//! Gateway API schemas (fetched by `scripts/fetch-k8s-schemas`), deterministic output, and
//! what only compiling reveals.

use crate::support::*;
use serde_json::Value;
use std::collections::BTreeMap;

fn compile_example(extra: &[&str]) -> (Run, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("out");
    let mut args = vec!["compile", "examples/platform-config", "--out", target.to_str().unwrap()];
    args.extend_from_slice(extra);
    (rampart(&args, Some(&root())), out)
}

/// Validators for every kind rampart emits, from the fetched upstream schemas.
fn validators() -> BTreeMap<String, jsonschema::Validator> {
    let dir = root().join(".ci/k8s-schemas");
    let index: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("index.json")).expect("run scripts/fetch-k8s-schemas (scripts/test does)"),
    )
    .unwrap();
    let mut registry = jsonschema::Registry::new();
    let mut docs = BTreeMap::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".json") || name == "index.json" {
            continue;
        }
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let id = doc["$id"].as_str().unwrap().to_owned();
        registry = registry.add(id.as_str(), doc.clone()).unwrap();
        docs.insert(name, doc);
    }
    let registry = registry.prepare().unwrap();
    index
        .as_object()
        .unwrap()
        .iter()
        .map(|(gvk, entry)| {
            let doc = &docs[entry["file"].as_str().unwrap()];
            let v = jsonschema::options()
                .with_registry(&registry)
                .build(doc)
                .unwrap_or_else(|e| panic!("{gvk}: {e}"));
            (gvk.clone(), v)
        })
        .collect()
}

#[test]
fn the_example_compiles_to_valid_kubernetes_objects() {
    let (run, out) = compile_example(&[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let files = tree(&out.path().join("out"));
    let validators = validators();
    // the schemas are strict: an unknown field fails, so a passing object means something
    let broken =
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}, "spec": {"bogus": 1}});
    assert!(!validators["v1/Namespace"].is_valid(&broken));
    let mut kinds = BTreeMap::<String, usize>::new();
    let mut failures = Vec::new();
    for (path, text) in &files {
        if path == "kustomization.yaml" {
            continue;
        }
        let v: Value = serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{path}: {e}"));
        let gvk = format!("{}/{}", v["apiVersion"].as_str().unwrap(), v["kind"].as_str().unwrap());
        *kinds.entry(gvk.clone()).or_default() += 1;
        let validator = validators
            .get(&gvk)
            .unwrap_or_else(|| panic!("{path}: no schema for {gvk}"));
        for e in validator.iter_errors(&v) {
            failures.push(format!("{path}: {} at {}", e, e.instance_path()));
        }
        // every object is labelled for exact pruning
        let labels = &v["metadata"]["labels"];
        assert_eq!(labels["app.kubernetes.io/managed-by"], "rampart", "{path}");
        assert_eq!(labels["app.kubernetes.io/part-of"], "rampart-portal", "{path}");
        assert!(labels["rampart.dev/tenant"].is_string(), "{path}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // every kind the compiler emits is in the example, and checked
    assert_eq!(kinds.len(), 9, "{kinds:?}");
    // the kustomization lists exactly the object files
    let k: Value = serde_saphyr::from_str(&files["kustomization.yaml"]).unwrap();
    let listed: Vec<&str> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let objects: Vec<&str> = files
        .keys()
        .filter(|p| *p != "kustomization.yaml")
        .map(String::as_str)
        .collect();
    assert_eq!(listed, objects);
    // and the whole output is pinned
    let all: String = files.iter().map(|(p, t)| format!("# {p}\n{t}")).collect();
    snapshot("compile/example.yaml", &all).unwrap();
}

#[test]
fn compiling_is_deterministic_and_idempotent() {
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("out");
    let args = ["compile", "examples/platform-config", "--out", target.to_str().unwrap()];
    let first = rampart(&args, Some(&root()));
    assert_eq!(first.code, 0, "{}", first.stderr);
    let a = tree(&target);
    let second = rampart(&args, Some(&root()));
    assert!(
        second.stdout.contains(" 0 added, 0 changed, 0 removed"),
        "{}",
        second.stdout
    );
    assert_eq!(a, tree(&target));
    // a file that is not ours is removed, and the output holds exactly the objects again
    write(&target.join("stray/old.yaml"), "kind: Old\n");
    let third = rampart(&args, Some(&root()));
    assert!(third.stdout.contains(" 1 removed"), "{}", third.stdout);
    assert_eq!(a, tree(&target));
}

/// Every count compile and apply print is of objects: compile said "127 objects … 128 added",
/// counting the kustomization written beside them.
#[test]
fn counts_are_of_objects_not_the_kustomization() {
    let (run, out) = compile_example(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let target = out.path().join("out");
    let objects = tree(&target).len() - 1;
    assert!(target.join("kustomization.yaml").is_file());
    assert!(
        run.stdout.starts_with(&format!("compiled {objects} objects into "))
            && run
                .stdout
                .ends_with(&format!(": {objects} added, 0 changed, 0 removed, 0 unchanged\n")),
        "{}",
        run.stdout
    );
    let applied = out.path().join("applied");
    let apply = ["apply", "examples/platform-config", "--target"];
    let dir = format!("dir:{}", applied.display());
    let first = rampart(&[&apply[..], &[dir.as_str()]].concat(), Some(&root()));
    assert!(
        first
            .stdout
            .contains(&format!(": {objects} added, 0 changed, 0 removed, 0 unchanged\n")),
        "{}",
        first.stdout
    );
    let again = rampart(&[&apply[..], &[dir.as_str()]].concat(), Some(&root()));
    assert!(
        again.stdout.contains(&format!("({objects} objects)")),
        "{}",
        again.stdout
    );
    // compile over the applied tree: the objects are there, the kustomization too
    let over = rampart(
        &[
            "compile",
            "examples/platform-config",
            "--out",
            applied.to_str().unwrap(),
        ],
        Some(&root()),
    );
    assert!(
        over.stdout
            .ends_with(&format!(": 0 added, 0 changed, 0 removed, {objects} unchanged\n")),
        "{}",
        over.stdout
    );
}

/// The output paths the README gives as examples are what compile writes (it said
/// `<kind>-<name>.yaml`; the kind is in lower case).
#[test]
fn readme_output_paths_are_written() {
    let (run, out) = compile_example(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let paths: Vec<&str> = readme
        .split('`')
        .filter(|p| p.starts_with("DIR/") && p.ends_with(".yaml") && !p.contains('<'))
        .collect();
    assert!(paths.len() >= 2, "{paths:?}");
    for p in paths {
        assert!(
            out.path().join("out").join(&p["DIR/".len()..]).is_file(),
            "{p} is not written"
        );
    }
}

#[test]
fn rollout_steps_move_traffic() {
    let (run, out) = compile_example(&["--rollout-step", "catalog-2-4-0-eu-production=3"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let route = std::fs::read_to_string(out.path().join("out/payments-prod/httproute-portal.yaml")).unwrap();
    let v: Value = serde_saphyr::from_str(&route).unwrap();
    let weights: Vec<i64> = v["spec"]["rules"][0]["backendRefs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["weight"].as_i64().unwrap())
        .collect();
    assert_eq!(weights, [50, 50]);
    // the canary runs the new version
    let cm = std::fs::read_to_string(
        out.path()
            .join("out/payments-prod/configmap-canary-catalog-2-4-0-eu-production.yaml"),
    )
    .unwrap();
    assert!(cm.contains("@backstage/plugin-catalog@2.4.0"), "{cm}");

    let (run, _) = compile_example(&["--rollout-step", "catalog-2-4-0-eu-production=9"]);
    assert_eq!(run.code, 3, "{}", run.stdout);
    assert!(codes(&run.stdout).contains(&"R501".to_owned()), "{}", run.stdout);
    let (run, _) = compile_example(&["--rollout-step", "catalog-2-4-0-eu-production=0"]);
    assert_eq!(run.code, 1, "step 0 is a usage error");
}

/// Two rollouts at their last steps on one tenant would send 200% to canaries (R502); two
/// rollouts whose names share 61 characters would share a Service name (R503).
#[test]
fn what_only_compiling_reveals() {
    let repo = tempfile::tempdir().unwrap();
    copy_tree(&root().join("examples/platform-config"), repo.path());
    let long = |suffix: &str| format!("{}{suffix}", "x".repeat(61));
    for (name, plugin, version) in [(long("a1"), "techdocs", "1.13.0"), (long("b2"), "techdocs", "1.14.0")] {
        write(
            &repo.path().join(format!("rollouts/{name}.yaml")),
            format!(
                "apiVersion: rampart.dev/v1\nkind: Rollout\nmetadata:\n  name: {name}\nspec:\n  plugin: {plugin}\n  \
                 toVersion: \"{version}\"\n  artifact: {{package: \"@backstage/plugin-{plugin}@{version}\", integrity: sha256-LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=}}\n  tenants:\n    names: [mobile-apps]\n  steps:\n    - weight: 60\n    - weight: 100\n"
            ),
        );
    }
    let out = repo.path().join("out");
    let run = rampart(&["compile", ".", "--out", out.to_str().unwrap()], Some(repo.path()));
    assert_eq!(run.code, 3, "{}", run.stdout);
    let codes = codes(&run.stdout);
    assert!(
        codes.contains(&"R502".to_owned()) && codes.contains(&"R503".to_owned()),
        "{}",
        run.stdout
    );
    assert!(!out.exists(), "nothing is written when compiling fails");
}

/// A compiled directory is a kustomization `kubectl kustomize` builds as it is (what serve's
/// branch target promises), into exactly the objects compiled.
#[test]
fn kubectl_kustomize_builds_the_compiled_output_as_is() {
    let (run, out) = compile_example(&[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let dir = out.path().join("out");
    let built = std::process::Command::new(kubectl())
        .arg("kustomize")
        .arg(&dir)
        .env("HOME", out.path())
        .output()
        .expect("kubectl runs");
    let stdout = String::from_utf8(built.stdout).unwrap();
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let built: Vec<Value> = stdout
        .split("\n---\n")
        .map(|doc| serde_saphyr::from_str(doc).unwrap_or_else(|e| panic!("{e}: {doc}")))
        .collect();
    let mut compiled: Vec<Value> = tree(&dir)
        .iter()
        .filter(|(path, _)| *path != "kustomization.yaml")
        .map(|(_, text)| serde_saphyr::from_str(text).unwrap())
        .collect();
    assert!(compiled.len() > 100, "{}", compiled.len());
    assert_eq!(built.len(), compiled.len());
    // (maps compare regardless of key order: kustomize sorts keys)
    for object in &built {
        let i = compiled
            .iter()
            .position(|c| c == object)
            .unwrap_or_else(|| panic!("kustomize built an object rampart did not compile: {object}"));
        compiled.swap_remove(i);
    }
}

/// Each strategy's phases, compiled: blue-green's preview runs the canary at 0 % then takes
/// 100 %; rolling reaches the rollout's tenants one by one, in its order; instant is 100 %.
#[test]
fn strategies_compile_to_their_phases() {
    let weight = |out: &std::path::Path, tenant: &str| -> Option<i64> {
        let route = std::fs::read_to_string(out.join(format!("out/{tenant}/httproute-portal.yaml"))).ok()?;
        let v: Value = serde_saphyr::from_str(&route).unwrap();
        v["spec"]["rules"][0]["backendRefs"]
            .as_array()?
            .iter()
            .find(|b| b["name"] == "c-techdocs-1-13-0")
            .and_then(|b| b["weight"].as_i64())
    };
    let tenants = ["hackweek", "mobile-apps", "storefront"];
    let run_with = |strategy: &str, step: &str| {
        let repo = tempfile::tempdir().unwrap();
        copy_tree(&root().join("examples/platform-config"), repo.path());
        // (storefront also gets the catalog canary: one rollout at a time here)
        std::fs::remove_file(repo.path().join("rollouts/catalog-2-4-0-eu-production.yaml")).unwrap();
        edit(
            repo.path(),
            "rollouts/techdocs-1-13-0.yaml",
            "strategy: canary",
            &format!("strategy: {strategy}"),
        );
        let out = repo.path().join("compiled");
        std::fs::create_dir(&out).unwrap();
        let target = out.join("out");
        let run = rampart(
            &[
                "compile",
                repo.path().to_str().unwrap(),
                "--out",
                target.to_str().unwrap(),
                "--rollout-step",
                &format!("techdocs-1-13-0={step}"),
            ],
            None,
        );
        assert_eq!(run.code, 0, "{strategy} step {step}: {}", transcript(&run));
        let weights: Vec<Option<i64>> = tenants.iter().map(|t| weight(&out, t)).collect();
        (weights, repo)
    };
    assert_eq!(
        run_with("blueGreen", "1").0,
        [Some(0); 3],
        "the preview takes no traffic"
    );
    let (_, repo) = run_with("blueGreen", "1");
    assert!(
        repo.path()
            .join("compiled/out/storefront/deployment-canary-techdocs-1-13-0.yaml")
            .is_file(),
        "the preview runs"
    );
    assert_eq!(run_with("blueGreen", "2").0, [Some(100); 3]);
    assert_eq!(run_with("instant", "1").0, [Some(100); 3]);
    assert_eq!(run_with("rolling", "1").0, [Some(100), None, None]);
    assert_eq!(run_with("rolling", "2").0, [Some(100), Some(100), None]);
    assert_eq!(run_with("rolling", "3").0, [Some(100); 3]);
    assert_eq!(run_with("canary", "2").0, [Some(25); 3]);
}

/// A Secret reference in a plugin's config becomes an env var of the portal container (from
/// the Secret, `valueFrom.secretKeyRef`) and a `${…}` placeholder in `pluginConfig`.
#[test]
fn secret_references_render_as_env_vars() {
    let repo = repo_with(None);
    write(
        &repo.path().join("tenants/shop.yaml"),
        "apiVersion: rampart.dev/v1\nkind: Tenant\nmetadata:\n  name: shop\nspec:\n  owners: [platform]\n  tier: free\n  \
         isolation: shared\n  quota: {cpu: 500m, memory: 1Gi, pods: 10, storage: 1Gi}\n  plugins:\n    - name: catalog\n      \
         config:\n        catalog:\n          providers:\n            github:\n              \
         apiKey: {secretKeyRef: {name: github-creds, key: api-key}}\n              \
         clientSecret: {secretKeyRef: {name: github-creds, key: client-secret}}\n              organization: larkspur\n",
    );
    let out = repo.path().join("out");
    let run = rampart(&["compile", ".", "--out", out.to_str().unwrap()], Some(repo.path()));
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let read = |t: &str, f: &str| std::fs::read_to_string(out.join(t).join(f)).unwrap();
    let deployment = read("shop", "deployment-portal.yaml");
    let config_map = read("shop", "configmap-dynamic-plugins.yaml");
    let d: Value = serde_saphyr::from_str(&deployment).unwrap();
    let env = &d["spec"]["template"]["spec"]["containers"][0]["env"];
    assert_eq!(
        env[0]["name"],
        "RAMPART_PLUGIN_CATALOG_CATALOG_PROVIDERS_GITHUB_API_KEY"
    );
    assert_eq!(
        env[0]["valueFrom"]["secretKeyRef"],
        serde_json::json!({"name": "github-creds", "key": "api-key"})
    );
    let cm: Value = serde_saphyr::from_str(&config_map).unwrap();
    let plugins: Value = serde_saphyr::from_str(cm["data"]["dynamic-plugins.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(
        plugins["plugins"][0]["pluginConfig"]["catalog"]["providers"]["github"]["apiKey"],
        "${RAMPART_PLUGIN_CATALOG_CATALOG_PROVIDERS_GITHUB_API_KEY}"
    );
    // the base tenants' portals have no env: nothing changes for configs without references
    assert!(!read("web", "deployment-portal.yaml").contains("env:"));
    snapshot(
        "compile/secret-references.yaml",
        &format!("# deployment-portal.yaml\n{deployment}# configmap-dynamic-plugins.yaml\n{config_map}"),
    )
    .unwrap();
}

/// Env var names are unique across the portal container: `tech-radar` + `x` and `tech` +
/// `radar.x` both spell `RAMPART_PLUGIN_TECH_RADAR_X`, and one plugin read the other's
/// Secret. A disabled plugin's reference puts no env var on the container.
#[test]
fn secret_env_names_are_unique_across_plugins() {
    let repo = repo_with(None);
    let catalog = std::fs::read_to_string(repo.path().join("plugins/catalog.yaml")).unwrap();
    for name in ["tech", "tech-radar"] {
        write(
            &repo.path().join(format!("plugins/{name}.yaml")),
            catalog.replace("name: catalog", &format!("name: {name}")),
        );
    }
    write(
        &repo.path().join("tenants/shop.yaml"),
        "apiVersion: rampart.dev/v1\nkind: Tenant\nmetadata:\n  name: shop\nspec:\n  owners: [platform]\n  tier: free\n  \
         isolation: shared\n  quota: {cpu: 2, memory: 4Gi, pods: 10, storage: 1Gi}\n  plugins:\n    \
         - name: tech-radar\n      config:\n        x: {secretKeyRef: {name: radar-secret, key: k}}\n    \
         - name: tech\n      config:\n        radar:\n          x: {secretKeyRef: {name: tech-secret, key: k}}\n    \
         - name: catalog\n      disabled: true\n      config:\n        token: {secretKeyRef: {name: off-secret, key: k}}\n",
    );
    let out = repo.path().join("out");
    let run = rampart(&["compile", ".", "--out", out.to_str().unwrap()], Some(repo.path()));
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let read = |f: &str| std::fs::read_to_string(out.join("shop").join(f)).unwrap();
    let d: Value = serde_saphyr::from_str(&read("deployment-portal.yaml")).unwrap();
    let env: Vec<(String, String)> = d["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |v: &Value| v.as_str().unwrap().to_owned();
            (s(&e["name"]), s(&e["valueFrom"]["secretKeyRef"]["name"]))
        })
        .collect();
    assert_eq!(
        env,
        [
            ("RAMPART_PLUGIN_TECH_RADAR_X".to_owned(), "radar-secret".to_owned()),
            ("RAMPART_PLUGIN_TECH_RADAR_X_2".to_owned(), "tech-secret".to_owned()),
        ]
    );
    let cm: Value = serde_saphyr::from_str(&read("configmap-dynamic-plugins.yaml")).unwrap();
    let plugins: Value = serde_saphyr::from_str(cm["data"]["dynamic-plugins.yaml"].as_str().unwrap()).unwrap();
    let config = |i: usize| plugins["plugins"][i]["pluginConfig"].clone();
    assert_eq!(config(0)["x"], "${RAMPART_PLUGIN_TECH_RADAR_X}");
    assert_eq!(config(1)["radar"]["x"], "${RAMPART_PLUGIN_TECH_RADAR_X_2}");
}
