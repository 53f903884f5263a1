//! Bad inputs that cannot be committed as files: links, special files, huge files, many
//! files, odd file names (reliability.md §7 items 3, 4, 10 and 17). Each gets a clean
//! error, stays within time and memory bounds, and prints what its snapshot says.

use crate::support::*;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;

fn team(name: &str) -> String {
    format!("apiVersion: rampart.dev/v1\nkind: Team\nmetadata:\n  name: {name}\nspec:\n  members: [dave]\n")
}

fn check(name: &str, repo: &tempfile::TempDir, want_exit: i32, want_codes: &[&str]) -> Run {
    let run = rampart(&["validate", "."], Some(repo.path()));
    assert_bounded(&run, name);
    assert_eq!(run.code, want_exit, "{name}\n{}{}", run.stdout, run.stderr);
    let codes = codes(&run.stdout);
    for c in want_codes {
        assert!(
            codes.iter().any(|x| x == c),
            "{name}: want {c}, got {codes:?}\n{}",
            run.stdout
        );
    }
    snapshot(&format!("hostile/{name}.txt"), &transcript(&run)).unwrap();
    run
}

#[test]
fn symlinks_are_refused_never_followed() {
    let repo = repo_with(None);
    let p = repo.path();
    symlink("/etc/passwd", p.join("teams/passwd.yaml")).unwrap();
    write(&p.join("../rampart-sibling-secret.yaml"), team("stolen"));
    symlink("../../rampart-sibling-secret.yaml", p.join("teams/sibling.yaml")).unwrap();
    symlink("loop-b.yaml", p.join("teams/loop-a.yaml")).unwrap();
    symlink("loop-a.yaml", p.join("teams/loop-b.yaml")).unwrap();
    symlink("does-not-exist.yaml", p.join("teams/dangling.yaml")).unwrap();
    symlink("/etc", p.join("tenants/etc")).unwrap();
    let run = check("symlinks", &repo, 3, &["R104"]);
    assert!(!run.stdout.contains("root:"), "file contents must never be echoed");
    assert!(!run.stdout.contains("stolen"));
    assert_eq!(codes(&run.stdout).len(), 6);
    // a kind directory that is itself a link
    let repo = repo_with(None);
    fs::rename(repo.path().join("teams"), repo.path().join("real-teams")).unwrap();
    symlink("real-teams", repo.path().join("teams")).unwrap();
    check("symlinked-kind-dir", &repo, 3, &["R104"]);
}

#[test]
fn special_files_and_hard_links_are_refused() {
    let repo = repo_with(None);
    let p = repo.path();
    let fifo = std::ffi::CString::new(p.join("teams/fifo.yaml").as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid C string path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    write(&p.join("outside.yaml"), team("outside"));
    fs::hard_link(p.join("outside.yaml"), p.join("teams/hardlink.yaml")).unwrap();
    check("special-files", &repo, 3, &["R105"]);
}

#[test]
fn huge_files_are_refused_before_reading() {
    let repo = repo_with(None);
    let p = repo.path();
    // 1 GiB, sparse: if it were read, the test would blow the memory bound
    fs::File::create(p.join("tenants/huge.yaml"))
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    fs::File::create(p.join("tenants/big.yaml"))
        .unwrap()
        .set_len(100 << 20)
        .unwrap();
    // a 10 MB scalar is caught by the file cap first
    write(&p.join("teams/scalar.yaml"), format!("a: {}\n", "x".repeat(10 << 20)));
    // a 1M-character line fits the file cap but not the scalar cap
    write(
        &p.join("teams/line.yaml"),
        format!("{}  description: {}\n", team("line"), "y".repeat(1_000_000)).replace("kind: Team\n", "kind: Team\n"),
    );
    check("huge-files", &repo, 3, &["R101", "R119"]);
}

#[test]
fn file_count_cap_stops_the_walk() {
    let repo = repo_with(None);
    let p = repo.path();
    write(
        &p.join("rampart.yaml"),
        "apiVersion: rampart.dev/v1\nkind: Settings\nspec:\n  limits:\n    maxFiles: 200\n",
    );
    fs::create_dir_all(p.join("teams/many")).unwrap();
    for i in 0..5000 {
        fs::write(p.join(format!("teams/many/t{i}.yaml")), "").unwrap();
    }
    check("too-many-files", &repo, 3, &["R102"]);
}

#[test]
fn odd_file_names_are_handled() {
    let repo = repo_with(None);
    let p = repo.path();
    // each holds one deliberate error so the name shows up in every format
    let bad = |n: &str| team(n).replace("members: [dave]", "members: [dave]\n  extra: 1");
    write(&p.join("teams/with space.yaml"), bad("space"));
    write(&p.join("teams/new\nline.yaml"), bad("newline"));
    write(&p.join("teams/-leading-dash.yaml"), bad("dash"));
    write(&p.join("teams/ünïcödé-名前.yaml"), bad("unicode"));
    write(&p.join("teams/comma,colon:percent%.yaml"), bad("punct"));
    let name = std::ffi::OsStr::from_bytes(b"teams/latin1-\xe9.yaml");
    write(&p.join(name), team("latin"));
    let run = check("odd-file-names", &repo, 3, &["R212", "R106"]);
    // (a newline in a name is refused outright: a report could not show it as it is)
    assert_eq!(codes(&run.stdout).iter().filter(|c| *c == "R212").count(), 4);
    assert_eq!(codes(&run.stdout).iter().filter(|c| *c == "R106").count(), 2);
    // GitHub annotations: the names are escaped so no second command can be forged
    let gh = rampart(&["validate", ".", "--format", "github"], Some(p));
    snapshot("hostile/odd-file-names.github", &gh.stdout).unwrap();
    assert!(
        gh.stdout
            .lines()
            .all(|l| l.starts_with("::") || l.starts_with("rampart: ")),
        "{}",
        gh.stdout
    );
    let json = rampart(&["validate", ".", "--format", "json"], Some(p));
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let files: Vec<&str> = v["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["file"].as_str())
        .collect();
    assert!(files.contains(&"teams/new\nline.yaml"), "{files:?}");
}

#[test]
fn very_long_paths_are_reported_not_crashed_on() {
    let repo = repo_with(None);
    // 24 nested directories of 200 characters: past PATH_MAX (4096) from the repo root
    let seg = "d".repeat(200);
    let script = format!(
        "import os\nfd = os.open('teams', os.O_RDONLY)\nfor _ in range(24):\n    os.mkdir('{seg}', dir_fd=fd)\n    fd = os.open('{seg}', os.O_RDONLY, dir_fd=fd)\nos.close(os.open('deep.yaml', os.O_WRONLY | os.O_CREAT, dir_fd=fd))\n"
    );
    let ok = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .current_dir(repo.path())
        .status()
        .unwrap();
    assert!(ok.success());
    let run = rampart(&["validate", "."], Some(repo.path()));
    assert_bounded(&run, "long path");
    assert_eq!(run.code, 3, "{}", run.stdout);
    assert!(codes(&run.stdout).contains(&"R100".to_owned()), "{}", run.stdout);
    assert!(run.stdout.contains("name too long"), "{}", run.stdout);
}

#[test]
fn expansions_through_aliases_are_bounded() {
    // a 200 KB string used 9000 times: 1.8 GB if it were expanded
    let repo = repo_with(None);
    let big = "x".repeat(200_000);
    let uses = vec!["*a"; 9000].join(", ");
    write(
        &repo.path().join("teams/strings.yaml"),
        format!("a: &a \"{big}\"\nb: [{uses}]\n"),
    );
    check("string-alias-bomb", &repo, 3, &["R117"]);
    // nesting through aliases: each level wraps the previous one in 60 lists
    let repo = repo_with(None);
    let mut deep = String::from("a0: &a0 1\n");
    for k in 1..=60 {
        deep.push_str(&format!(
            "a{k}: &a{k} {}*a{}{}\n",
            "[".repeat(60),
            k - 1,
            "]".repeat(60)
        ));
    }
    write(&repo.path().join("teams/deep.yaml"), deep);
    check("alias-depth", &repo, 3, &["R116"]);
}

#[test]
fn nested_git_checkouts_are_refused() {
    // a submodule checked out in the working tree: refused as `--rev` refuses the gitlink
    let repo = repo_with(None);
    write(
        &repo.path().join("teams/vendored/.git"),
        "gitdir: ../../.git/modules/vendored\n",
    );
    write(&repo.path().join("teams/vendored/ops.yaml"), team("vendored"));
    let run = check("nested-git-checkout", &repo, 3, &["R105"]);
    assert!(!run.stdout.contains("vendored.yaml"), "{}", run.stdout);
}
