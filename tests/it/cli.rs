//! CLI habits: the config repo found upward like git, completions and the man page, `NO_COLOR`,
//! errors outside a git repository and for unknown revisions, the warning about uncommitted
//! edits, and the schemas' absolute `$id`s as another JSON Schema tool resolves them.

use crate::support::{Run, commit, edit, git_as, rampart, repo_with, root, write};
use std::path::Path;

const ALICE: &str = "Alice <alice@example.com>";

/// Every subcommand a user can type (`help` aside).
const SUBCOMMANDS: [&str; 14] = [
    "init",
    "validate",
    "check",
    "policy",
    "compile",
    "plan",
    "apply",
    "plugins",
    "ci",
    "serve",
    "rollout",
    "audit",
    "completions",
    "man",
];

/// A config repo committed as the first commit of branch `main`.
fn committed_repo() -> tempfile::TempDir {
    let repo = repo_with(None);
    git_as(repo.path(), ALICE, &["init", "-q", "-b", "main"]);
    commit(repo.path(), ALICE, "import");
    repo
}

fn no_git_internals(run: &Run) {
    for raw in ["class=", "code=", "revspec", "(-3)"] {
        assert!(
            !run.stderr.contains(raw),
            "libgit2's text leaked ({raw}):\n{}",
            run.stderr
        );
    }
}

#[test]
fn the_config_repo_is_found_above_the_current_directory() {
    let repo = committed_repo();
    let at_root = rampart(&["validate", "--format", "json"], Some(repo.path()));
    assert_eq!(at_root.code, 0, "{}", at_root.stderr);
    assert!(!at_root.stderr.contains("note:"), "{}", at_root.stderr);

    let deep = repo.path().join("tenants/notes");
    std::fs::create_dir_all(&deep).unwrap();
    let below = rampart(&["validate", "--format", "json"], Some(&deep));
    assert_eq!(below.code, 0, "{}", below.stderr);
    assert_eq!(below.stdout, at_root.stdout, "the same repo is validated");
    assert_eq!(below.stderr, "note: using the config repo `../..`\n");

    // the commands that read revisions find it too, and an explicit path is taken as given
    let check = rampart(&["check", "--base", "HEAD", "--format", "json"], Some(&deep));
    assert_eq!(check.code, 0, "{}", check.stderr);
    let explicit = rampart(&["validate", "tenants"], Some(repo.path()));
    assert_eq!(explicit.code, 1, "{}", explicit.stderr);
    assert!(explicit.stderr.contains("holds no config repo"), "{}", explicit.stderr);
}

#[test]
fn the_search_for_the_config_repo_stops_at_the_git_work_tree() {
    let outer = repo_with(None);
    let inner = outer.path().join("unrelated");
    std::fs::create_dir_all(&inner).unwrap();
    git_as(&inner, ALICE, &["init", "-q", "-b", "main"]);
    let run = rampart(&["validate"], Some(&inner));
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("`.` holds no config repo"), "{}", run.stderr);
}

#[test]
fn check_and_plan_outside_a_git_repository_name_the_directory_flags() {
    let dir = repo_with(None);
    for args in [
        &["check", "--base", "main"][..],
        &["plan", "--base", "main", "--format", "json"],
    ] {
        let run = rampart(args, Some(dir.path()));
        assert_eq!(run.code, 1, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains("`.` is not inside a git repository"),
            "{}",
            run.stderr
        );
        assert!(run.stderr.contains("--base-path DIR --head-path DIR"), "{}", run.stderr);
        assert!(run.stdout.is_empty(), "{}", run.stdout);
        no_git_internals(&run);
    }
}

#[test]
fn git_errors_are_plain_sentences_with_a_hint() {
    let repo = committed_repo();
    let run = rampart(&["check", "--base", "no-such-branch"], Some(repo.path()));
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("revision `no-such-branch` not found in `"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("\nhint: name a branch, tag or commit"),
        "{}",
        run.stderr
    );
    no_git_internals(&run);

    let run = rampart(&["validate", "/no/such/dir", "--rev", "HEAD"], None);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("`/no/such/dir` does not exist"), "{}", run.stderr);
    no_git_internals(&run);

    let empty = tempfile::tempdir().unwrap();
    git_as(empty.path(), ALICE, &["init", "-q", "-b", "main"]);
    let run = rampart(&["validate", ".", "--rev", "HEAD"], Some(empty.path()));
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("revision `HEAD`"), "{}", run.stderr);
    no_git_internals(&run);
}

#[test]
fn uncommitted_config_edits_are_warned_about_on_stderr_only() {
    let repo = committed_repo();
    let p = repo.path();
    let clean = rampart(&["plan", "--base", "HEAD", "--format", "json"], Some(p));
    assert_eq!(clean.code, 0, "{}", clean.stderr);
    assert!(!clean.stderr.contains("warning"), "{}", clean.stderr);

    // two config files (one edited, one new), and files that are not config
    edit(
        p,
        "teams/platform.yaml",
        "  name: platform",
        "  name: platform # edited",
    );
    let team = std::fs::read_to_string(p.join("teams/platform.yaml")).unwrap();
    write(
        &p.join("teams/copy.yaml"),
        team.replace("name: platform", "name: platform-copy"),
    );
    write(&p.join("NOTES.txt"), "not config");
    write(&p.join("docs/x.yaml"), "not config either");

    for (args, command) in [
        (&["plan", "--base", "HEAD", "--format", "json"][..], "plan"),
        (&["check", "--base", "HEAD", "--format", "json"], "check"),
        (&["plan", "--base", "HEAD", "--format", "markdown"], "plan"),
    ] {
        let run = rampart(args, Some(p));
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains(&format!(
                "warning: 2 config files have uncommitted changes that `rampart {command}` does not see"
            )),
            "{args:?}: {}",
            run.stderr
        );
        assert!(run.stderr.contains("--head-path ."), "{}", run.stderr);
        assert!(!run.stdout.contains("uncommitted"), "{args:?}: {}", run.stdout);
        if args.contains(&"json") {
            serde_json::from_str::<serde_json::Value>(&run.stdout).expect("stdout is JSON alone");
        }
    }

    // from a subdirectory the hint names the config repo as found, so its command works there
    let run = rampart(
        &["plan", "--base", "HEAD", "--format", "json"],
        Some(&p.join("tenants")),
    );
    assert!(run.stderr.contains("--head-path ..`"), "{}", run.stderr);

    // a head other than HEAD is not the work tree's business
    let run = rampart(
        &["plan", "--base", "HEAD", "--head", "main", "--format", "json"],
        Some(p),
    );
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);

    commit(p, ALICE, "commit the edits");
    let run = rampart(&["plan", "--base", "HEAD~1", "--format", "json"], Some(p));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);
}

#[test]
fn bash_completions_parse_and_every_shell_names_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let run = rampart(&["completions", shell], None);
        assert_eq!(run.code, 0, "{shell}: {}", run.stderr);
        for sub in SUBCOMMANDS {
            assert!(run.stdout.contains(sub), "{shell} completions lack `{sub}`");
        }
        if shell == "bash" {
            let dir = tempfile::tempdir().unwrap();
            let script = dir.path().join("rampart.bash");
            write(&script, &run.stdout);
            let out = std::process::Command::new("bash")
                .arg("-n")
                .arg(&script)
                .output()
                .expect("bash runs");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let run = rampart(&["completions", "tcsh"], None);
    assert_eq!(run.code, 1);
}

#[test]
fn the_man_pages_render_every_subcommand() {
    let run = rampart(&["man"], None);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.starts_with(".ie \\n(.g") || run.stdout.contains("\n.TH rampart 1"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(".TH rampart 1"), "{}", run.stdout);
    for sub in SUBCOMMANDS {
        assert!(
            run.stdout.contains(&format!("rampart\\-{sub}(1)")),
            "the page lacks `{sub}`"
        );
    }

    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("man1");
    let run = rampart(&["man", "--out", dir.to_str().unwrap()], None);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for sub in SUBCOMMANDS {
        let page = std::fs::read_to_string(dir.join(format!("rampart-{sub}.1"))).expect("a page per subcommand");
        assert!(page.contains(&format!(".TH rampart-{sub} 1")), "{sub}: {page}");
    }
    let plan = std::fs::read_to_string(dir.join("rampart-plan.1")).unwrap();
    assert!(plan.contains("head\\-path"), "{plan}");
}

/// `man --out` wrote through a link planted at `DIR/rampart.1`, overwriting its target, and
/// said only "File exists (os error 17)" when `--out` was a file or a dangling link.
#[test]
fn man_out_writes_no_page_through_a_link() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, victim) = (tmp.path().join("man1"), tmp.path().join("victim"));
    std::fs::create_dir(&dir).unwrap();
    write(&victim, "keep me\n");
    std::os::unix::fs::symlink(&victim, dir.join("rampart.1")).unwrap();
    let run = rampart(&["man", "--out", dir.to_str().unwrap()], None);
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("is a symbolic link"), "{}", run.stderr);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me\n");
    // `--out` that is a file, or a link to nothing
    let file = tmp.path().join("file");
    write(&file, "x");
    let dangling = tmp.path().join("dangling");
    std::os::unix::fs::symlink(tmp.path().join("nothing"), &dangling).unwrap();
    for out in [file, dangling] {
        let run = rampart(&["man", "--out", out.to_str().unwrap()], None);
        assert_ne!(run.code, 0, "{}", run.stderr);
        assert!(run.stderr.contains("is not a directory"), "{}", run.stderr);
        assert!(!run.stderr.contains("os error"), "{}", run.stderr);
    }
}

/// no-color.org: `NO_COLOR` counts when it is set and not empty. Colour needs a terminal:
/// util-linux `script` gives the command one.
#[test]
fn no_color_counts_only_when_it_is_not_empty() {
    let repo = repo_with(Some(&root().join("testdata/invalid/R001-limit-above-ceiling")));
    let on_a_terminal = |no_color: &str| {
        let command = format!("'{}' validate .", env!("CARGO_BIN_EXE_rampart"));
        let out = std::process::Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .current_dir(repo.path())
            .env("NO_COLOR", no_color)
            .env_remove("CI")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("script (util-linux) runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        on_a_terminal("").contains("\x1b["),
        "an empty NO_COLOR leaves colour on"
    );
    let plain = on_a_terminal("1");
    assert!(plain.contains("R001"), "{plain}");
    assert!(!plain.contains("\x1b["), "NO_COLOR=1 turns colour off: {plain:?}");
}

/// ajv (npm `ajv-cli`, installed by scripts/test) loads every schema by its `$id` and resolves
/// the `$ref`s between them, then validates the example repo's documents: without absolute
/// `$id`s it cannot tell `common.schema.json` apart from the schema that refers to it.
#[test]
fn another_json_schema_tool_resolves_the_schemas_by_their_ids() {
    let ajv = root().join(".ci/npm/ajv/node_modules/.bin/ajv");
    assert!(
        ajv.exists(),
        "{}: missing; run scripts/test to install ajv-cli",
        ajv.display()
    );
    let schemas = root().join("schemas");
    let mut files: Vec<_> = std::fs::read_dir(&schemas)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".schema.json"))
        .collect();
    files.sort();
    let id_of = |p: &Path| {
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        v["$id"].as_str().unwrap_or_default().to_owned()
    };
    let ajv_run = |verb: &str, schema: &Path, data: &[std::path::PathBuf]| {
        let mut cmd = std::process::Command::new(&ajv);
        cmd.args([
            verb,
            "--spec=draft2020",
            "--strict=false",
            "--validate-formats=false",
            "-s",
        ])
        .arg(schema);
        for other in files.iter().filter(|f| *f != schema) {
            cmd.arg("-r").arg(other);
        }
        for d in data {
            cmd.arg("-d").arg(d);
        }
        let out = cmd.output().expect("ajv runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy();
        assert_eq!(id_of(f), format!("https://rampart.dev/schemas/v1/{name}"));
        let (ok, text) = ajv_run("compile", f, &[]);
        assert!(ok, "{name}: {text}");
    }
    let example = root().join("examples/platform-config");
    // (ajv reads one YAML document a file: files holding several are left out)
    let single_documents = |dir: &str| -> Vec<std::path::PathBuf> {
        let mut docs: Vec<_> = std::fs::read_dir(example.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| !std::fs::read_to_string(p).unwrap().contains("\n---"))
            .collect();
        docs.sort();
        docs
    };
    for (schema, docs) in [
        ("tenant", single_documents("tenants")),
        ("team", single_documents("teams")),
        ("plugin", single_documents("plugins")),
        ("rollout", single_documents("rollouts")),
        ("signing-key", single_documents("keys")),
        ("settings", vec![example.join("rampart.yaml")]),
    ] {
        assert!(!docs.is_empty(), "{schema}: no example");
        let (ok, text) = ajv_run("validate", &schemas.join(format!("{schema}.schema.json")), &docs);
        assert!(ok, "{schema}: {text}");
    }
    // a name that breaks common.schema.json's DNS label: only a resolved $ref can see it
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let tenant = std::fs::read_to_string(example.join("tenants/sandbox.yaml")).unwrap();
    write(&bad, tenant.replacen("name: sandbox", "name: Not_A_Label", 1));
    let (ok, text) = ajv_run("validate", &schemas.join("tenant.schema.json"), &[bad]);
    assert!(!ok && text.contains("pattern"), "{text}");
}

/// `rampart init`'s schema copies are for editors that resolve `$ref`s next to the file
/// (yaml-language-server fetched `https://rampart.dev/schemas/v1/common.schema.json` and
/// failed): no absolute `$id`, every `$ref` relative, and the file each names is there.
#[test]
fn init_schema_copies_resolve_their_refs_locally() {
    let tmp = tempfile::tempdir().unwrap();
    let run = rampart(&["init", "repo", "--platform-team", "alice"], Some(tmp.path()));
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let dir = tmp.path().join("repo/.rampart/schemas");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(v.get("$id").is_none(), "{}: has an $id", path.display());
        for r in text.split("\"$ref\": \"").skip(1).map(|r| &r[..r.find('"').unwrap()]) {
            assert!(!r.contains("://"), "{}: absolute $ref {r}", path.display());
            let file = r.split('#').next().unwrap();
            assert!(
                file.is_empty() || dir.join(file).exists(),
                "{}: $ref {r} names no sibling",
                path.display()
            );
        }
        seen += 1;
    }
    assert!(seen >= 5, "{seen} schemas");
}

/// A `rampart.yaml` that is a directory was ignored: validate said ok, on default settings.
#[test]
fn a_settings_file_that_is_a_directory_is_refused() {
    let repo = repo_with(None);
    let p = repo.path();
    std::fs::remove_file(p.join("rampart.yaml")).unwrap();
    write(&p.join("rampart.yaml/limits.yaml"), "maxFiles: 1\n");
    let run = rampart(&["validate", "."], Some(p));
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("error[R105]") && run.stdout.contains("rampart.yaml"),
        "{}",
        run.stdout
    );
    // the same from a commit, where it is a tree
    git_as(p, ALICE, &["init", "-q", "-b", "main"]);
    commit(p, ALICE, "settings as a directory");
    let run = rampart(&["validate", ".", "--rev", "HEAD"], Some(p));
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("error[R105]"), "{}", run.stdout);
}

/// A revision is named as `<directory> at <rev>` — the config repo's own directory — not
/// `<work tree>/@HEAD`, which named neither the directory nor the revision plainly.
#[test]
fn a_revision_is_named_in_plain_words() {
    let work = tempfile::tempdir().unwrap();
    let p = work.path();
    crate::support::copy_tree(&root().join("testdata/base"), &p.join("config"));
    write(&p.join("README.md"), "not config\n");
    git_as(p, ALICE, &["init", "-q", "-b", "main"]);
    commit(p, ALICE, "import");
    let run = rampart(&["check", ".", "--base", "HEAD"], Some(p));
    assert_ne!(run.code, 0, "{}", run.stdout);
    let shown = p.canonicalize().unwrap();
    assert!(
        run.stderr
            .contains(&format!("`{} at HEAD` holds no config repo", shown.display())),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("@HEAD"), "{}", run.stderr);
}
