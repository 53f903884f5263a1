//! `rampart init [DIR] [--platform-team LOGIN,…] [--force]`: scaffold a config repo that
//! validates, passes its policy tests and plans straight away.
//!
//! [`scaffold`] is the pure part (which files, with what in them); `run` asks for the logins,
//! refuses to overwrite or to write through a symbolic link, writes, and `git init`s.

use super::exit;
use crate::diagnostic::quote;
use anyhow::{Context, bail};
use std::fs;
use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Scaffold a config repo: rampart.yaml with the tier bounds written out, a `platform` team,
/// an example tenant, an example policy with its tests, keys/, the GitHub workflow, a README
/// for the repo's editors, and JSON Schemas for editors in .rampart/schemas/.
///
/// Refuses to overwrite any file it would write (and writes nothing then) unless --force;
/// never writes through a symbolic link. Initialises a git repository in DIR when DIR is not
/// inside one. Exit 0 written, 1 could not run (refused, a bad login, no logins).
#[derive(clap::Args)]
pub struct Args {
    /// Where to write the config repo (created when missing).
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// GitHub logins of the `platform` team, comma-separated (e.g. `alice,bob`). Asked for
    /// when stdin is a terminal; required when it is not.
    #[arg(long, value_name = "LOGIN,…")]
    platform_team: Option<String>,
    /// Overwrite the files init writes when they exist (never through a symbolic link).
    #[arg(long)]
    force: bool,
}

/// What the scaffold is made for.
pub struct Options<'a> {
    /// The `platform` team's logins, valid and distinct ([`parse_logins`]), at least one.
    pub platform_team: &'a [String],
}

const RAMPART_YAML: &str = include_str!("init/rampart.yaml");
const TEAM: &str = include_str!("init/team.yaml");
const TENANT: &str = include_str!("init/tenant.yaml");
const POLICY: &str = include_str!("init/example.cedar");
const POLICY_TESTS: &str = include_str!("init/policy-tests.yaml");
const KEYS_README: &str = include_str!("init/keys-README.md");
const WORKFLOW: &str = include_str!("init/workflow.yml");
const README: &str = include_str!("init/README.md");

/// Where the schemas for editors go; the modelines of the templates point here.
const SCHEMA_DIR: &str = ".rampart/schemas";

/// The files of a new config repo: `/`-separated paths relative to its root, and contents.
pub fn scaffold(opts: &Options<'_>) -> Vec<(String, String)> {
    let team = opts.platform_team;
    let settings = crate::config::Settings::default();
    let mut tiers = String::new();
    for tier in crate::config::TIERS {
        let b = &settings.tiers[tier];
        tiers.push_str(&format!(
            "    {tier}:\n      cpu: {}\n      memory: {}\n      pods: {}\n      storage: {}\n",
            b.cpu, b.memory, b.pods, b.storage
        ));
    }
    let members: String = team.iter().map(|l| format!("    - {}\n", yaml_login(l))).collect();
    let author = team.first().map(|l| yaml_login(l)).unwrap_or_default();
    let outsider = outsider(team);
    let mut files: Vec<(String, String)> = [
        ("rampart.yaml", RAMPART_YAML.replace("{{tiers}}\n", &tiers)),
        ("teams/platform.yaml", TEAM.replace("{{members}}\n", &members)),
        ("tenants/sandbox.yaml", TENANT.to_owned()),
        ("policies/example.cedar", POLICY.to_owned()),
        (
            "policies/tests/example.yaml",
            POLICY_TESTS
                .replace("{{author}}", &author)
                .replace("{{outsider}}", &outsider),
        ),
        ("keys/README.md", KEYS_README.to_owned()),
        (".github/workflows/rampart.yml", WORKFLOW.to_owned()),
        ("README.md", README.to_owned()),
    ]
    .into_iter()
    .map(|(p, t)| (p.to_owned(), t))
    .collect();
    files.extend(
        crate::validate::schema::SCHEMAS
            .iter()
            .map(|(name, text)| (format!("{SCHEMA_DIR}/{name}"), local_schema(text))),
    );
    files
}

/// A schema as the repo's editors get it: without its absolute `$id`, so its relative
/// `$ref`s (`common.schema.json#/$defs/…`) resolve next to the file. With the id, an editor
/// that does not map ids to local files (yaml-language-server) fetches
/// `https://rampart.dev/schemas/v1/…` and fails; tools that load schemas by id (ajv,
/// check-jsonschema) use `schemas/` from rampart's source, which keeps them.
fn local_schema(text: &str) -> String {
    text.lines()
        .filter(|l| !(l.starts_with("  \"$id\": ") && l.contains("https://")))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// A login as a YAML scalar: quoted where a plain scalar would read as a number or a boolean
/// (`1234`, `1e3`, `true`), or as a string in YAML 1.1 (`yes`, `on`) for other tools.
fn yaml_login(login: &str) -> String {
    let lower = login.to_ascii_lowercase();
    let plain = login.starts_with(|c: char| c.is_ascii_alphabetic())
        && !["true", "false", "null", "yes", "no", "on", "off", "y", "n"].contains(&lower.as_str());
    if plain {
        login.to_owned()
    } else {
        format!("\"{login}\"")
    }
}

/// A login in no team, for the policy test of an outsider: `someone-else`, unless the
/// platform team has it.
fn outsider(team: &[String]) -> String {
    let taken = |l: &str| team.iter().any(|m| m.eq_ignore_ascii_case(l));
    (0..)
        .map(|i| {
            if i == 0 {
                "someone-else".to_owned()
            } else {
                format!("someone-else-{i}")
            }
        })
        .find(|l| !taken(l))
        .expect("a free login")
}

/// The logins in `text` (separated by commas or white space), checked with the rule of the
/// Team schema's members (`githubLogin`), duplicates (ignoring case) dropped.
pub fn parse_logins(text: &str) -> Result<Vec<String>, String> {
    let mut logins: Vec<String> = Vec::new();
    for login in text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|l| !l.is_empty())
    {
        if !is_login(login) {
            return Err(format!(
                "{} is not a GitHub login: letters, digits and inner hyphens, at most 39 characters",
                quote(login)
            ));
        }
        if !logins.iter().any(|l| l.eq_ignore_ascii_case(login)) {
            logins.push(login.to_owned());
        }
    }
    if logins.is_empty() {
        return Err("give at least one GitHub login for the `platform` team".to_owned());
    }
    Ok(logins)
}

/// `^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$`, at most 39 characters (common.schema.json).
fn is_login(s: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric();
    s.len() <= 39 && s.starts_with(ok) && s.ends_with(ok) && s.chars().all(|c| ok(c) || c == '-')
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let team = match &args.platform_team {
        Some(list) => parse_logins(list).map_err(anyhow::Error::msg)?,
        None if std::io::stdin().is_terminal() => ask_logins()?,
        None => bail!("no platform team: pass `--platform-team LOGIN,…` (the GitHub logins of its members)"),
    };
    let files = scaffold(&Options { platform_team: &team });
    let dir = &args.dir;
    if !dir.exists() {
        fs::create_dir_all(dir).with_context(|| format!("creating `{}`", dir.display()))?;
    }
    let root = fs::canonicalize(dir).with_context(|| format!("opening `{}`", dir.display()))?;
    if !root.is_dir() {
        bail!("`{}` is not a directory", dir.display());
    }
    let existing = check_targets(&root, &files)?;
    if !existing.is_empty() && !args.force {
        bail!(
            "`{}` already has {} of the files init writes, and nothing was written: {} (--force overwrites them)",
            dir.display(),
            existing.len(),
            existing.iter().map(|p| quote(p)).collect::<Vec<_>>().join(", ")
        );
    }
    for (path, text) in &files {
        write_file(&root, path, text, args.force)
            .with_context(|| format!("writing `{}`", root.join(path).display()))?;
    }
    let git_init = match git2::Repository::discover(&root) {
        Ok(_) => false,
        Err(e) if e.code() == git2::ErrorCode::NotFound => {
            // on `main`, which the workflow and the README it writes name (git's own default
            // may still be `master`)
            git2::Repository::init_opts(&root, git2::RepositoryInitOptions::new().initial_head("main"))
                .with_context(|| format!("initialising a git repository in `{}`", root.display()))?;
            true
        }
        Err(e) => return Err(e).with_context(|| format!("looking for the git repository of `{}`", root.display())),
    };
    super::print(&summary(dir, &files, existing.len(), &team, git_init))?;
    Ok(exit::OK)
}

/// Ask on the terminal until the answer holds valid logins; end of input gives up.
fn ask_logins() -> anyhow::Result<Vec<String>> {
    let mut stdin = std::io::stdin().lock();
    loop {
        eprint!("GitHub logins of the `platform` team (comma-separated): ");
        std::io::stderr().flush().context("writing the prompt")?;
        let mut line = String::new();
        if stdin.read_line(&mut line).context("reading the logins")? == 0 {
            bail!("no platform team given: type its logins, or pass `--platform-team LOGIN,…`");
        }
        match parse_logins(&line) {
            Ok(team) => return Ok(team),
            Err(e) => eprintln!("{e}"),
        }
    }
}

/// The files that exist already; `Err` when a file or a directory on the way is a symbolic
/// link or not what it must be (--force or not: init never writes through a link).
fn check_targets(root: &Path, files: &[(String, String)]) -> anyhow::Result<Vec<String>> {
    let mut existing = Vec::new();
    let mut blocked = std::collections::BTreeSet::new();
    for (path, _) in files {
        let parts: Vec<&str> = path.split('/').collect();
        for i in 1..=parts.len() {
            let rel = parts[..i].join("/");
            let last = i == parts.len();
            match fs::symlink_metadata(root.join(&rel)) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) => return Err(e).with_context(|| format!("inspecting `{}`", root.join(&rel).display())),
                Ok(m) if m.file_type().is_symlink() => {
                    blocked.insert(format!("{} is a symbolic link", quote(&rel)));
                    break;
                }
                Ok(m) if !last && !m.is_dir() => {
                    blocked.insert(format!("{} is not a directory", quote(&rel)));
                    break;
                }
                Ok(m) if last && !m.is_file() => {
                    blocked.insert(format!("{} is not a regular file", quote(&rel)));
                }
                Ok(_) if last => existing.push(path.clone()),
                Ok(_) => {}
            }
        }
    }
    if !blocked.is_empty() {
        bail!(
            "init writes no file through a symbolic link or over something else, and nothing was written: {}",
            blocked.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(existing)
}

/// Write one file under `root`, creating its directories; no component may be a link (checked
/// again here, and the file itself opened with `O_NOFOLLOW`).
fn write_file(root: &Path, path: &str, text: &str, force: bool) -> anyhow::Result<()> {
    let mut at = root.to_path_buf();
    let parts: Vec<&str> = path.split('/').collect();
    for dir in &parts[..parts.len() - 1] {
        at.push(dir);
        match fs::create_dir(&at) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let m = fs::symlink_metadata(&at)?;
                if m.file_type().is_symlink() || !m.is_dir() {
                    bail!("`{}` is not a directory (or is a symbolic link)", at.display());
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    at.push(parts[parts.len() - 1]);
    let mut options = fs::OpenOptions::new();
    options.write(true).custom_flags(libc::O_NOFOLLOW);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(&at)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// What was written, and the next steps.
fn summary(dir: &Path, files: &[(String, String)], overwritten: usize, team: &[String], git_init: bool) -> String {
    let shown = dir.display().to_string();
    let arg = if shown == "." {
        String::new()
    } else {
        format!(" {}", shell_word(&shown))
    };
    let overwritten = match overwritten {
        0 => String::new(),
        n => format!(" ({n} overwritten)"),
    };
    let mut out = format!(
        "wrote {} files to `{shown}`{overwritten}; platform team: {}\n",
        files.len(),
        team.join(", ")
    );
    if team.len() == 1 {
        out.push_str(
            "note: rampart.yaml, policies/ and keys/ change only with an approval from a second platform member: add one to teams/platform.yaml\n",
        );
    }
    if git_init {
        out.push_str(&format!(
            "initialised a git repository in `{shown}` (it was not inside one)\n"
        ));
    }
    let git = if shown == "." {
        "git".to_owned()
    } else {
        format!("git -C {}", shell_word(&shown))
    };
    let head = if shown == "." {
        ".".to_owned()
    } else {
        shell_word(&shown)
    };
    out.push_str(&format!(
        "\nnext steps:\n  \
         rampart validate{arg}\n  \
         rampart policy test{arg}\n  \
         rampart plan --base-path \"$(mktemp -d)\" --head-path {head}    # what it compiles to, from nothing\n  \
         {git} add . && {git} commit -m \"rampart init\"\n\
         then pin the action in .github/workflows/rampart.yml to a commit SHA, push, and review changes as pull requests\n"
    ));
    out
}

/// `s` as one shell word (single-quoted unless it needs no quoting).
fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c)) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins() {
        let ok = |s: &str, want: &[&str]| assert_eq!(parse_logins(s).unwrap(), want, "{s}");
        ok("alice,bob", &["alice", "bob"]);
        ok(" alice , bob\n", &["alice", "bob"]);
        ok("alice Alice a-b 1234", &["alice", "a-b", "1234"]);
        let long = "a".repeat(40);
        for bad in ["-alice", "alice-", "al_ice", "al.ice", "", " , ", long.as_str()] {
            assert!(parse_logins(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scaffold_quotes_logins_yaml_would_read_as_numbers_or_booleans() {
        let team = ["1234".to_owned(), "true".to_owned(), "alice".to_owned()];
        let files = scaffold(&Options { platform_team: &team });
        let text = |p: &str| &files.iter().find(|(q, _)| q == p).unwrap().1;
        assert!(text("teams/platform.yaml").contains("    - \"1234\"\n    - \"true\"\n    - alice\n"));
        assert!(text("policies/tests/example.yaml").contains("author: \"1234\"\n"));
        assert!(text("rampart.yaml").contains("    enterprise:\n      cpu: 256\n      memory: 1Ti\n"));
    }

    #[test]
    fn outsider_is_in_no_team() {
        assert_eq!(outsider(&["alice".to_owned()]), "someone-else");
        assert_eq!(outsider(&["Someone-Else".to_owned()]), "someone-else-1");
    }
}
