//! The GitHub Action as users get it: every YAML file of the examples, the action and the
//! workflows parses strictly, third-party actions are pinned by commit, and the install step
//! (`scripts/action-install`) verifies a release — signature, trusted comment, checksum —
//! before it runs anything, against a release served on loopback.

use crate::support::{self, root};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TARGET: &str = "x86_64-unknown-linux-musl";
const ASSET: &str = "rampart-x86_64-unknown-linux-musl";
const VERSION: &str = "v9.9.9";

/// `*.yml`/`*.yaml` under `dir`, recursively, sorted.
fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yml" | "yaml")) {
            out.push(path);
        }
    }
}

fn strict_parse(text: &str) -> Result<(), String> {
    rampart::load::yaml::parse(text, &rampart::config::Limits::default())
        .map(|_| ())
        .map_err(|e| format!("{}:{}: {}", e.line, e.column, e.message))
}

#[test]
fn every_yaml_file_of_the_examples_the_action_and_the_workflows_parses_strictly() {
    let root = root();
    let mut files = vec![root.join("action.yml")];
    yaml_files(&root.join("examples"), &mut files);
    yaml_files(&root.join(".github"), &mut files);
    let must = [
        "action.yml",
        "examples/workflows/rampart.yml",
        ".github/workflows/release.yml",
    ];
    for m in must {
        assert!(files.contains(&root.join(m)), "{m} is not among the checked files");
    }
    assert!(files.len() > 10, "only {} YAML files found", files.len());
    let bad: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let text = fs::read_to_string(f).unwrap();
            strict_parse(&text)
                .err()
                .map(|e| format!("{}:{e}", f.strip_prefix(&root).unwrap().display()))
        })
        .collect();
    assert!(bad.is_empty(), "not strict YAML:\n{}", bad.join("\n"));
}

/// Issue 18: `run: echo "rampart decided: $DECISION"` is a plain scalar holding `: `, which
/// GitHub refuses; the strict parse above must catch that kind of line.
#[test]
fn the_example_workflows_plain_scalar_with_a_colon_is_refused() {
    let broken = "steps:\n  - if: always()\n    run: echo \"rampart decided: $DECISION\"\n";
    let err = strict_parse(broken).expect_err("a plain scalar holding `: ` must not parse");
    assert!(err.starts_with("3:"), "{err}");
    assert!(strict_parse("run: 'echo \"rampart decided: $DECISION\"'\n").is_ok());
}

#[test]
fn third_party_actions_are_pinned_by_full_commit_with_the_version_as_a_comment() {
    let root = root();
    let mut files = vec![root.join("action.yml")];
    yaml_files(&root.join("examples/workflows"), &mut files);
    yaml_files(&root.join(".github/workflows"), &mut files);
    let mut seen = 0;
    for f in &files {
        for (n, line) in fs::read_to_string(f).unwrap().lines().enumerate() {
            let key = line.trim_start().trim_start_matches("- ");
            let Some(rest) = key.strip_prefix("uses: ") else {
                continue;
            };
            if rest.starts_with("./") {
                continue;
            }
            seen += 1;
            let (reference, comment) = rest.split_once(" # ").unwrap_or((rest, ""));
            let sha = reference.rsplit_once('@').map(|(_, s)| s).unwrap_or("");
            let pinned = sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
            assert!(
                pinned && comment.starts_with('v'),
                "{}:{}: `{rest}` is not pinned as `owner/repo@<40-hex sha> # vX.Y.Z`",
                f.display(),
                n + 1
            );
        }
    }
    assert!(seen >= 6, "only {seen} `uses:` lines found");
}

/// A release as the release workflow makes it, in a temp dir: the test binary as the asset,
/// SHA256SUMS, its minisign signature (throwaway keys) and a second, unrelated key.
struct Release {
    dir: tempfile::TempDir,
    pubkey: String,
    other_key: PathBuf,
}

impl Release {
    fn new() -> Release {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        fs::create_dir(&keys).unwrap();
        for name in ["release", "other"] {
            let (p, s) = (keys.join(format!("{name}.pub")), keys.join(format!("{name}.sec")));
            run_ok(
                Command::new("minisign")
                    .args(["-G", "-W", "-p"])
                    .arg(&p)
                    .arg("-s")
                    .arg(&s),
            );
        }
        let pubkey = fs::read_to_string(keys.join("release.pub"))
            .unwrap()
            .lines()
            .nth(1)
            .unwrap()
            .to_string();
        let release = Release {
            other_key: keys.join("other.sec"),
            dir,
            pubkey,
        };
        let tag = release.tag_dir(VERSION);
        fs::create_dir_all(&tag).unwrap();
        // stripped, as a release binary is: the debug build's symbols weigh ~0.5 GB, over the
        // install step's size bound
        run_ok(
            Command::new("strip")
                .arg("-o")
                .arg(tag.join(ASSET))
                .arg(env!("CARGO_BIN_EXE_rampart")),
        );
        release.sign(VERSION, &keys.join("release.sec"), VERSION);
        release
    }

    fn tag_dir(&self, tag: &str) -> PathBuf {
        self.dir.path().join("download").join(tag)
    }

    /// Write SHA256SUMS of `tag`'s assets and sign it with `key`, trusted comment `rampart COMMENT_TAG`.
    fn sign(&self, tag: &str, key: &Path, comment_tag: &str) {
        let dir = self.tag_dir(tag);
        let sums = run_ok(Command::new("sha256sum").arg(ASSET).current_dir(&dir));
        fs::write(dir.join("SHA256SUMS"), sums.stdout).unwrap();
        run_ok(
            Command::new("minisign")
                .args(["-S", "-s"])
                .arg(key)
                .args(["-m", "SHA256SUMS", "-t", &format!("rampart {comment_tag}")])
                .current_dir(&dir),
        );
    }

    /// Serve `download/` as GitHub serves release assets: `GET /TAG/NAME`, 404 otherwise.
    fn serve(&self) -> support::Served {
        let base = self.dir.path().join("download");
        let app = axum::Router::new().route(
            "/{tag}/{name}",
            axum::routing::get(
                move |axum::extract::Path((tag, name)): axum::extract::Path<(String, String)>| {
                    let file = base.join(&tag).join(&name);
                    async move {
                        if tag.contains("..") || name.contains("..") {
                            return Err(axum::http::StatusCode::NOT_FOUND);
                        }
                        fs::read(&file).map_err(|_| axum::http::StatusCode::NOT_FOUND)
                    }
                },
            ),
        );
        support::serve(app)
    }
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

struct Install {
    code: i32,
    stderr: String,
    output: String,
}

/// Run `scripts/action-install install` as action.yml does, with the cache in `cache`.
fn install(release: &Release, url: &str, version: &str, cache: &Path) -> Install {
    let github_output = cache.join("github-output");
    let _ = fs::remove_file(&github_output);
    let out = Command::new("bash")
        .arg(root().join("scripts/action-install"))
        .arg("install")
        .env_remove("GITHUB_ACTIONS")
        .env("RAMPART_VERSION", version)
        .env("RAMPART_RELEASE_PUBKEY", &release.pubkey)
        .env("RAMPART_RELEASE_URL", format!("{url}/{version}"))
        .env("RAMPART_CACHE_DIR", cache.join("tool-cache"))
        .env("RAMPART_TARGET", TARGET)
        .env("GITHUB_OUTPUT", &github_output)
        .output()
        .unwrap();
    Install {
        code: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        output: fs::read_to_string(&github_output).unwrap_or_default(),
    }
}

fn installed(cache: &Path, version: &str) -> PathBuf {
    cache.join("tool-cache").join(version).join(TARGET).join(ASSET)
}

fn assert_refused(run: &Install, message: &str, cache: &Path, version: &str) {
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("::error title=rampart install::"), "{}", run.stderr);
    assert!(run.stderr.contains(message), "expected `{message}` in:\n{}", run.stderr);
    assert!(run.output.is_empty(), "an output was written: {}", run.output);
    assert!(
        !installed(cache, version).exists(),
        "an unverified binary is in the cache"
    );
    let left: Vec<_> = fs::read_dir(cache.join("tool-cache"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.iter().all(|n| !n.to_string_lossy().starts_with(".download")),
        "{left:?}"
    );
}

#[test]
fn a_good_release_is_verified_installed_cached_and_runs() {
    let release = Release::new();
    let server = release.serve();
    let cache = tempfile::tempdir().unwrap();

    let run = install(&release, &server.url(), VERSION, cache.path());
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("signature and checksum verified"), "{}", run.stderr);
    let bin = installed(cache.path(), VERSION);
    assert_eq!(run.output, format!("bin={}\n", bin.display()));
    let version = run_ok(Command::new(&bin).arg("--version"));
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("rampart "));

    // warm: no download (the server is gone), verified again from the cached copies
    drop(server);
    let run = install(&release, "http://127.0.0.1:9", VERSION, cache.path());
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("from the cache, verified"), "{}", run.stderr);

    // a cached binary changed afterwards is refused, not run
    let mut bytes = fs::read(&bin).unwrap();
    bytes.push(0);
    fs::write(&bin, bytes).unwrap();
    let run = install(&release, "http://127.0.0.1:9", VERSION, cache.path());
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("refusing to run it"), "{}", run.stderr);
}

/// Serve `release`, install it into an empty cache: it must be refused with `message`.
fn assert_release_refused(release: &Release, message: &str) -> (support::Served, tempfile::TempDir) {
    let server = release.serve();
    let cache = tempfile::tempdir().unwrap();
    let run = install(release, &server.url(), VERSION, cache.path());
    assert_refused(&run, message, cache.path(), VERSION);
    (server, cache)
}

#[test]
fn a_tampered_binary_is_refused_and_never_run() {
    let release = Release::new();
    // after signing, the asset becomes a script that would leave a mark if anything ran it
    let marker = release.dir.path().join("ran");
    let asset = release.tag_dir(VERSION).join(ASSET);
    fs::write(&asset, format!("#!/bin/sh\ntouch '{}'\n", marker.display())).unwrap();
    assert_release_refused(&release, "but the signed SHA256SUMS says");
    assert!(!marker.exists(), "the tampered binary was executed");
}

#[test]
fn sums_signed_by_another_key_are_refused() {
    let release = Release::new();
    release.sign(VERSION, &release.other_key, VERSION);
    assert_release_refused(&release, "does not verify against the public key in action.yml");
}

#[test]
fn another_releases_signed_sums_are_refused() {
    // v9.9.8's assets, validly signed for v9.9.8, served as v9.9.9 (a downgrade)
    let release = Release::new();
    release.sign(VERSION, &release.dir.path().join("keys/release.sec"), "v9.9.8");
    assert_release_refused(&release, "is signed for `rampart v9.9.8`, not `rampart v9.9.9`");
}

#[test]
fn a_missing_asset_is_a_clear_error() {
    let release = Release::new();
    fs::remove_file(release.tag_dir(VERSION).join(ASSET)).unwrap();
    let (server, cache) = assert_release_refused(&release, &format!("/{VERSION}/{ASSET}`: HTTP 404"));

    // and a release that does not exist at all
    let run = install(&release, &server.url(), "v1.0.0", cache.path());
    assert_refused(&run, "/v1.0.0/SHA256SUMS`: HTTP 404", cache.path(), "v1.0.0");
}

#[test]
fn a_version_that_is_not_a_release_tag_never_reaches_a_url() {
    let release = Release::new();
    let cache = tempfile::tempdir().unwrap();
    for bad in ["latest", "v1.2", "v1.2.3/../../evil", "1.2.3"] {
        let run = install(&release, "http://127.0.0.1:9", bad, cache.path());
        assert_eq!(run.code, 1, "{bad}: {}", run.stderr);
        assert!(run.stderr.contains("is not a release tag"), "{bad}: {}", run.stderr);
    }
}

#[test]
fn the_version_input_resolves_to_the_actions_tag_or_source() {
    let resolve = |version: &str, action_ref: &str| {
        let out = Command::new("bash")
            .arg(root().join("scripts/action-install"))
            .arg("resolve")
            .env_remove("GITHUB_OUTPUT")
            .env("RAMPART_VERSION", version)
            .env("ACTION_REF", action_ref)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let sha = "11bd71901bbe5b1630ceea73d27597364c9af683";
    assert_eq!(resolve("auto", "v0.3.1"), (0, "version=v0.3.1\n".into()));
    assert_eq!(resolve("", "v0.3.1-rc.1"), (0, "version=v0.3.1-rc.1\n".into()));
    assert_eq!(resolve("auto", sha), (0, "version=source\n".into()));
    assert_eq!(resolve("auto", "main"), (0, "version=source\n".into()));
    assert_eq!(resolve("v0.2.0", sha), (0, "version=v0.2.0\n".into()));
    assert_eq!(resolve("source", "v0.3.1"), (0, "version=source\n".into()));
    assert_eq!(resolve("latest", sha).0, 1);
}
