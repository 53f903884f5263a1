//! `rampart::rollback::land` called directly against real repositories: a bare remote over
//! `file://` (with hooks for a branch that moves under the push and a protected branch), the
//! service's bare mirror, and the local GitHub API for the pull requests.

use crate::github_fake::{self, OpenedPull, World};
use crate::support::*;
use rampart::remote::{Auth, Remote};
use rampart::rollback::{
    self, Author, Change, GitHubPulls, Landed, Landing, PROMOTE_TRAILER, PullRequests, REVERT_TRAILER, edit,
};
use std::path::PathBuf;

const ALICE: &str = "Alice <alice@example.com>";

/// A config repo pushed to a bare remote, and an empty mirror.
struct Fixture {
    _dir: tempfile::TempDir,
    work: PathBuf,
    bare: PathBuf,
    mirror: PathBuf,
    remote: Remote,
}

impl Fixture {
    /// `files` committed as the first commit of `main` and pushed.
    fn new(files: &[(&str, &str)]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (work, bare, mirror) = (
            dir.path().join("work"),
            dir.path().join("remote.git"),
            dir.path().join("mirror.git"),
        );
        std::fs::create_dir_all(&work).unwrap();
        git_as(dir.path(), ALICE, &["init", "-q", "--bare", "-b", "main", "remote.git"]);
        git_as(&work, ALICE, &["init", "-q", "-b", "main"]);
        git_as(&work, ALICE, &["remote", "add", "origin", bare.to_str().unwrap()]);
        for (path, text) in files {
            write(&work.join(path), text);
        }
        commit(&work, ALICE, "import");
        git_as(&work, ALICE, &["push", "-q", "origin", "main"]);
        git2::Repository::init_bare(&mirror).unwrap();
        let remote = Remote::new(bare.to_str().unwrap(), Auth::default()).unwrap();
        Fixture {
            _dir: dir,
            work,
            bare,
            mirror,
            remote,
        }
    }

    /// Commit in the work tree (`file` = `text`) and push; the new commit's id.
    fn push(&self, message: &str, file: &str, text: &str) -> String {
        write(&self.work.join(file), text);
        commit(&self.work, ALICE, message);
        git_as(&self.work, ALICE, &["push", "-q", "origin", "main"]);
        self.head()
    }

    fn head(&self) -> String {
        git_as(&self.work, ALICE, &["rev-parse", "HEAD"])
    }

    fn remote_git(&self, args: &[&str]) -> String {
        let mut all = vec!["--git-dir", self.bare.to_str().unwrap()];
        all.extend_from_slice(args);
        git_as(&self.work, ALICE, &all)
    }

    /// Every commit on the remote's `main`, newest first.
    fn history(&self) -> Vec<String> {
        self.remote_git(&["rev-list", "main"])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn hook(&self, name: &str, script: &str) {
        let path = self.bare.join("hooks").join(name);
        write(&path, format!("#!/bin/sh\n{script}\n"));
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn landing<'a>(&'a self, key: (&'a str, &'a str), trailers: &'a [(String, String)]) -> Landing<'a> {
        static AUTHOR: std::sync::OnceLock<Author> = std::sync::OnceLock::new();
        Landing {
            mirror: &self.mirror,
            remote: &self.remote,
            branch: "main",
            author: AUTHOR.get_or_init(|| Author {
                name: "rampart-bot".into(),
                email: "rampart@larkspur.example".into(),
            }),
            subject: "Revert \"roll out techdocs 1.13\"",
            body: "The SLO `error-rate` failed at step 2 of rollout techdocs-1-13.",
            trailers,
            key,
            github: None,
        }
    }
}

fn trailers(sha: &str) -> Vec<(String, String)> {
    vec![
        ("Rampart-Revert-Of".into(), sha.into()),
        ("Rampart-Rollout".into(), "techdocs-1-13".into()),
        ("Rampart-SLO".into(), "error-rate".into()),
        ("Rampart-Evidence".into(), "0.031 > 0.01\nfor 5m".into()),
    ]
}

const TENANT: &str = "name: payments\nreplicas: 2\n";
const PLUGIN: &str = "name: techdocs\nversion: 1.12.0\n";

/// base (tenant, plugin) → the rollout's commit (plugin 1.13.0) → a human's commit (tenant).
fn three_commits() -> (Fixture, String, String) {
    let f = Fixture::new(&[("tenants/payments.yaml", TENANT), ("plugins/techdocs.yaml", PLUGIN)]);
    let rollout = f.push(
        "roll out techdocs 1.13",
        "plugins/techdocs.yaml",
        "name: techdocs\nversion: 1.13.0\n",
    );
    let human = f.push(
        "more replicas",
        "tenants/payments.yaml",
        "name: payments\nreplicas: 3\n",
    );
    (f, rollout, human)
}

fn message_of(f: &Fixture, commit: &str) -> String {
    f.remote_git(&["log", "-1", "--format=%an <%ae>|%cn <%ce>|%B", commit])
}

#[test]
fn a_revert_lands_on_the_tip_once_and_loses_nothing() {
    let (f, rollout, human) = three_commits();
    let before = f.history();
    let t = trailers(&rollout);
    let l = f.landing((REVERT_TRAILER, &rollout), &t);
    let landed = rollback::land(&l, &Change::Revert { of: &rollout }).unwrap();
    let Landed::Pushed { commit, attempts: 1 } = landed else {
        panic!("{landed:?}")
    };
    // on the tip, every commit the branch had still there
    assert_eq!(f.remote_git(&["rev-parse", "main"]), commit);
    assert_eq!(f.remote_git(&["rev-parse", &format!("{commit}^")]), human);
    let after = f.history();
    assert!(before.iter().all(|c| after.contains(c)), "{before:?} {after:?}");
    assert_eq!(after.len(), before.len() + 1);
    // the rollout's change undone, the human's kept
    assert_eq!(f.remote_git(&["show", "main:plugins/techdocs.yaml"]), PLUGIN.trim());
    assert_eq!(
        f.remote_git(&["show", "main:tenants/payments.yaml"]),
        "name: payments\nreplicas: 3"
    );
    assert_eq!(
        message_of(&f, &commit),
        format!(
            "rampart-bot <rampart@larkspur.example>|rampart-bot <rampart@larkspur.example>|\
             Revert \"roll out techdocs 1.13\"\n\n\
             The SLO `error-rate` failed at step 2 of rollout techdocs-1-13.\n\n\
             Rampart-Revert-Of: {rollout}\nRampart-Rollout: techdocs-1-13\nRampart-SLO: error-rate\n\
             Rampart-Evidence: 0.031 > 0.01 for 5m"
        )
    );
    // the mirror's tracking ref moves only with fetches
    let mirror = git2::Repository::open_bare(&f.mirror).unwrap();
    assert_eq!(
        mirror.refname_to_id("refs/remotes/origin/main").unwrap().to_string(),
        human
    );

    // the same key again: nothing to do, nothing pushed
    let again = rollback::land(&l, &Change::Revert { of: &rollout }).unwrap();
    assert_eq!(again, Landed::AlreadyThere { commit: commit.clone() });
    // a restart with a new, empty mirror after the push (a crash before anything was recorded)
    std::fs::remove_dir_all(&f.mirror).unwrap();
    git2::Repository::init_bare(&f.mirror).unwrap();
    let again = rollback::land(&l, &Change::Revert { of: &rollout }).unwrap();
    assert_eq!(again, Landed::AlreadyThere { commit: commit.clone() });
    // …also after more human commits on top
    git_as(&f.work, ALICE, &["pull", "-q", "--ff-only", "origin", "main"]);
    f.push("docs", "README.md", "hello\n");
    let again = rollback::land(&l, &Change::Revert { of: &rollout }).unwrap();
    assert_eq!(again, Landed::AlreadyThere { commit });
    assert_eq!(f.history().len(), before.len() + 2);
}

#[test]
fn a_revert_is_rebuilt_on_the_tip_when_the_branch_moves_under_the_push() {
    let (f, rollout, human) = three_commits();
    // a human commit, in the remote but not yet on `main`…
    write(&f.work.join("tenants/payments.yaml"), "name: payments\nreplicas: 4\n");
    commit(&f.work, ALICE, "even more replicas");
    let late = f.head();
    git_as(&f.work, ALICE, &["push", "-q", "origin", "HEAD:refs/pending/late"]);
    // …lands on `main` while rampart's first push is under way (which is refused)
    f.hook(
        "update",
        &format!(
            "if [ \"$1\" = refs/heads/main ] && [ ! -e moved ]; then touch moved; \
             git update-ref refs/heads/main {late} {human}; echo 'someone pushed first' >&2; exit 1; fi"
        ),
    );
    let t = trailers(&rollout);
    let landed = rollback::land(
        &f.landing((REVERT_TRAILER, &rollout), &t),
        &Change::Revert { of: &rollout },
    )
    .unwrap();
    let Landed::Pushed { commit, attempts: 2 } = landed else {
        panic!("{landed:?}")
    };
    assert!(f.bare.join("moved").exists(), "the hook ran");
    assert_eq!(f.remote_git(&["rev-parse", &format!("{commit}^")]), late);
    assert!(f.history().contains(&human));
    assert_eq!(f.remote_git(&["show", "main:plugins/techdocs.yaml"]), PLUGIN.trim());
    assert_eq!(
        f.remote_git(&["show", "main:tenants/payments.yaml"]),
        "name: payments\nreplicas: 4"
    );
}

#[test]
fn a_revert_of_a_commit_no_longer_on_the_branch_does_nothing() {
    let (f, rollout, _) = three_commits();
    let first = f.remote_git(&["rev-list", "--max-parents=0", "main"]);
    // a human force-push drops the rollout's commit
    f.remote_git(&["update-ref", "refs/heads/main", &first]);
    let t = trailers(&rollout);
    let err = rollback::land(
        &f.landing((REVERT_TRAILER, &rollout), &t),
        &Change::Revert { of: &rollout },
    )
    .unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("is no longer on `main`") && err.contains("rewritten"),
        "{err}"
    );
    assert_eq!(f.history(), [first]);
}

/// The rollout's commit changes the line a later human commit changes again.
fn conflicting() -> (Fixture, String, String) {
    let f = Fixture::new(&[("plugins/techdocs.yaml", PLUGIN)]);
    let rollout = f.push(
        "roll out techdocs 1.13",
        "plugins/techdocs.yaml",
        "name: techdocs\nversion: 1.13.0\n",
    );
    let human = f.push(
        "techdocs 1.13.1",
        "plugins/techdocs.yaml",
        "name: techdocs\nversion: 1.13.1\n",
    );
    (f, rollout, human)
}

fn github() -> (GitHubPulls, github_fake::Shared) {
    let (api, world) = github_fake::start(World::default());
    let pulls = GitHubPulls::connect(
        &api,
        rampart::github::client::Auth::Token("ghp_testtoken".into()),
        "larkspur/platform-config",
    )
    .unwrap();
    (pulls, world)
}

#[test]
fn a_conflicting_revert_becomes_a_pull_request() {
    let (f, rollout, human) = conflicting();
    let t = trailers(&rollout);
    // without GitHub: an error that says what happened, and nothing pushed
    let err = rollback::land(
        &f.landing((REVERT_TRAILER, &rollout), &t),
        &Change::Revert { of: &rollout },
    )
    .unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains(&format!(
            "the revert of {} conflicts with `plugins/techdocs.yaml`",
            &rollout[..12]
        )) && err.contains("nothing was pushed")
            && err.contains("by hand"),
        "{err}"
    );
    assert_eq!(
        f.remote_git(&["for-each-ref", "--format=%(refname)", "refs/heads"]),
        "refs/heads/main"
    );

    let (pulls, world) = github();
    let l = Landing {
        github: Some(&pulls),
        ..f.landing((REVERT_TRAILER, &rollout), &t)
    };
    let landed = rollback::land(&l, &Change::Revert { of: &rollout }).unwrap();
    let expected = Landed::PullRequest {
        number: 100,
        url: "https://github.com/larkspur/platform-config/pull/100".into(),
        branch: "rampart/revert-techdocs-1-13".into(),
        why: "the revert conflicts with `plugins/techdocs.yaml` on the tip".into(),
    };
    assert_eq!(landed, expected);
    // main untouched; the branch holds the revert on top of the reverted commit
    assert_eq!(f.remote_git(&["rev-parse", "main"]), human);
    let pr = f.remote_git(&["rev-parse", "rampart/revert-techdocs-1-13"]);
    assert_eq!(f.remote_git(&["rev-parse", &format!("{pr}^")]), rollout);
    assert_eq!(
        f.remote_git(&["show", &format!("{pr}:plugins/techdocs.yaml")]),
        PLUGIN.trim()
    );
    assert!(message_of(&f, &pr).contains(&format!("Rampart-Revert-Of: {rollout}")));
    {
        let w = world.lock().unwrap();
        assert!(w.problems.is_empty(), "{:#?}", w.problems);
        assert_eq!(w.opened.len(), 1);
        let OpenedPull {
            head,
            base,
            title,
            body,
            ..
        } = &w.opened[0];
        assert_eq!((head.as_str(), base.as_str()), ("rampart/revert-techdocs-1-13", "main"));
        assert_eq!(title, "Revert \"roll out techdocs 1.13\"");
        assert!(body.starts_with("The SLO `error-rate` failed"), "{body}");
        assert!(body.contains("conflicts with `plugins/techdocs.yaml`"), "{body}");
    }
    // again (a restart): the same branch and pull request, none made twice
    let again = rollback::land(&l, &Change::Revert { of: &rollout }).unwrap();
    assert_eq!(again, expected);
    let w = world.lock().unwrap();
    assert!(w.problems.is_empty(), "{:#?}", w.problems);
    assert_eq!(w.opened.len(), 1);
    assert_eq!(
        github_fake::routes(&w),
        ["POST /pulls", "POST /pulls", "GET /pulls"],
        "the second create found the open one"
    );
    drop(w);
    assert_eq!(
        f.remote_git(&["for-each-ref", "--format=%(refname)", "refs/heads"]),
        "refs/heads/main\nrefs/heads/rampart/revert-techdocs-1-13"
    );
}

#[test]
fn a_protected_branch_gets_a_pull_request_naming_the_refusal() {
    let (f, rollout, human) = three_commits();
    f.hook(
        "pre-receive",
        "while read old new ref; do if [ \"$ref\" = refs/heads/main ]; then \
         echo 'GH006: Protected branch update failed for refs/heads/main' >&2; exit 1; fi; done",
    );
    let t = trailers(&rollout);
    let err = rollback::land(
        &f.landing((REVERT_TRAILER, &rollout), &t),
        &Change::Revert { of: &rollout },
    )
    .unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("`main` refused the push") && err.contains("GH006"),
        "{err}"
    );

    let (pulls, world) = github();
    let l = Landing {
        github: Some(&pulls),
        ..f.landing((REVERT_TRAILER, &rollout), &t)
    };
    let Landed::PullRequest {
        number, branch, why, ..
    } = rollback::land(&l, &Change::Revert { of: &rollout }).unwrap()
    else {
        panic!()
    };
    assert_eq!((number, branch.as_str()), (100, "rampart/revert-techdocs-1-13"));
    assert!(
        why.starts_with("the branch refused the push: ") && why.contains("GH006"),
        "{why}"
    );
    assert!(why.contains("pre-receive hook declined"), "{why}");
    // the pull request's commit is the revert built on the tip
    assert_eq!(f.remote_git(&["rev-parse", "main"]), human);
    assert_eq!(f.remote_git(&["rev-parse", &format!("{branch}^")]), human);
    let w = world.lock().unwrap();
    assert!(w.problems.is_empty(), "{:#?}", w.problems);
    assert_eq!(w.opened.len(), 1);
    drop(w);
    // a plain comment on it
    pulls
        .comment(number, "The rollout stays reverted until this is merged.")
        .unwrap();
    let w = world.lock().unwrap();
    assert_eq!(github_fake::routes(&w).last().unwrap(), "POST /issues/100/comments");
    assert_eq!(
        w.comments.last().unwrap().2,
        "The rollout stays reverted until this is merged."
    );
}

#[test]
fn a_promote_sets_the_plugin_and_removes_the_rollout_and_validates() {
    let repo = repo_with(None);
    let f = Fixture::new(&[]);
    copy_tree(repo.path(), &f.work);
    std::fs::remove_file(f.work.join("rollouts/techdocs.yaml")).unwrap();
    f.push("the config", "README.md", "config\n");
    let rollout = f.push(
        "roll out techdocs 1.13",
        "rollouts/techdocs.yaml",
        &std::fs::read_to_string(repo.path().join("rollouts/techdocs.yaml")).unwrap(),
    );
    let p = edit::Promote {
        plugin_file: "plugins/techdocs.yaml".into(),
        plugin_doc: 0,
        version: "1.13.0".into(),
        package: "@backstage/plugin-techdocs@1.13.0".into(),
        integrity: "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=".into(),
        signature: None,
        rollout_file: "rollouts/techdocs.yaml".into(),
        rollout_doc: 0,
    };
    let t = vec![("Rampart-Rollout".to_owned(), "techdocs-1-13".to_owned())];
    let l = Landing {
        subject: "Promote techdocs 1.13.0",
        body: "Every step of rollout techdocs-1-13 passed its SLOs.",
        ..f.landing((PROMOTE_TRAILER, &rollout), &t)
    };
    let Landed::Pushed { commit, .. } = rollback::land(&l, &Change::Promote { edit: &p, of: &rollout }).unwrap() else {
        panic!()
    };
    assert_eq!(f.remote_git(&["rev-parse", &format!("{commit}^")]), rollout);
    assert_eq!(
        f.remote_git(&["diff", "--name-status", &rollout, &commit]),
        "M\tplugins/techdocs.yaml\nD\trollouts/techdocs.yaml"
    );
    let plugin = f.remote_git(&["show", &format!("{commit}:plugins/techdocs.yaml")]);
    assert!(plugin.contains("  version: \"1.13.0\"\n"), "{plugin}");
    assert!(
        plugin.contains("    package: \"@backstage/plugin-techdocs@1.13.0\"\n"),
        "{plugin}"
    );
    assert!(message_of(&f, &commit).ends_with(&format!(
        "Rampart-Rollout: techdocs-1-13\nRampart-Promote-Of: {rollout}"
    )));
    // the result is a valid config repo
    let checkout = tempfile::tempdir().unwrap();
    git_as(
        checkout.path(),
        ALICE,
        &["clone", "-q", f.bare.to_str().unwrap(), "promoted"],
    );
    let run = rampart(&["validate", "promoted"], Some(checkout.path()));
    assert_eq!(run.code, 0, "{}", transcript(&run));
    // and not promoted twice
    assert_eq!(
        rollback::land(&l, &Change::Promote { edit: &p, of: &rollout }).unwrap(),
        Landed::AlreadyThere { commit }
    );
}

#[test]
fn a_promote_that_cannot_be_edited_pushes_nothing() {
    let f = Fixture::new(&[("plugins/techdocs.yaml", PLUGIN)]);
    let head = f.head();
    let p = edit::Promote {
        plugin_file: "plugins/techdocs.yaml".into(),
        plugin_doc: 0,
        version: "1.13.0".into(),
        package: "x".into(),
        integrity: "sha256-x".into(),
        signature: None,
        rollout_file: "rollouts/techdocs.yaml".into(),
        rollout_doc: 0,
    };
    let t = vec![];
    let err = rollback::land(
        &f.landing((PROMOTE_TRAILER, &head), &t),
        &Change::Promote { edit: &p, of: &head },
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("is not a Plugin"), "{err:#}");
    assert_eq!(f.history(), [head]);
}

#[test]
fn a_revert_undone_by_hand_already_is_not_made_again() {
    let (f, rollout, _) = three_commits();
    let undone = f.push("back to techdocs 1.12", "plugins/techdocs.yaml", PLUGIN);
    let t = trailers(&rollout);
    let landed = rollback::land(
        &f.landing((REVERT_TRAILER, &rollout), &t),
        &Change::Revert { of: &rollout },
    )
    .unwrap();
    assert_eq!(landed, Landed::AlreadyThere { commit: undone.clone() });
    assert_eq!(f.history()[0], undone);
}

/// A commit someone else wrote with the revert's trailer (a decoy: a typo fix carrying
/// `Rampart-Revert-Of:`) is not the revert: land writes the real one.
#[test]
fn a_decoy_with_the_revert_trailer_does_not_stand_in_for_the_revert() {
    let (f, rollout, _) = three_commits();
    let decoy = f.push(
        &format!("fix a typo\n\nRampart-Revert-Of: {rollout}"),
        "tenants/payments.yaml",
        "name: payments\nreplicas: 3 # three\n",
    );
    let t = trailers(&rollout);
    let l = f.landing((REVERT_TRAILER, &rollout), &t);
    let landed = rollback::land(&l, &Change::Revert { of: &rollout }).unwrap();
    let Landed::Pushed { commit, .. } = landed else {
        panic!("the decoy was taken for the revert: {landed:?}")
    };
    assert_ne!(commit, decoy);
    assert_eq!(f.remote_git(&["show", "main:plugins/techdocs.yaml"]), PLUGIN.trim());
}
