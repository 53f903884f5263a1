//! The library's GitHub client (`rampart::github::client`) called directly, against the local
//! GitHub API (tests/it/github_fake.rs): calls no command makes yet (who merged a commit).

use crate::github_fake::{self, FakePull, Shared, World};
use rampart::github::client::{Auth, Client, MergedPull};

const REPO: &str = "larkspur/platform-config";

/// Run `f` with a token client for the fake at `api`, on a runtime of its own.
fn with_client<T>(api: &str, f: impl AsyncFnOnce(&Client) -> T) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = Client::new(api, Auth::Token("ghp_testtoken".into()), REPO)
            .await
            .expect("client");
        f(&client).await
    })
}

/// The calls the fake saw, after checking it found no problem in them.
fn calls(world: &Shared) -> Vec<String> {
    let w = world.lock().unwrap();
    assert!(w.problems.is_empty(), "{:#?}", w.problems);
    github_fake::routes(&w)
}

fn merged(number: u64, author: &str, base: &str, merge_commit: &str, commits: &[&str]) -> FakePull {
    FakePull {
        number,
        author: author.into(),
        head_sha: format!("head{number}"),
        base_ref: base.into(),
        merge_commit_sha: Some(merge_commit.into()),
        merged: true,
        commits: commits.iter().map(|c| c.to_string()).collect(),
    }
}

fn open(number: u64, commits: &[&str]) -> FakePull {
    FakePull {
        number,
        author: "someone".into(),
        head_sha: format!("head{number}"),
        base_ref: "main".into(),
        // (GitHub's test merge of an open pull request)
        merge_commit_sha: Some(format!("testmerge{number}")),
        merged: false,
        commits: commits.iter().map(|c| c.to_string()).collect(),
    }
}

#[test]
fn the_merged_pull_request_and_its_approvers_are_who_made_a_commit() {
    let (api, world) = github_fake::start(World {
        pulls: vec![
            // an open pull request that carries the same commit does not count
            open(3, &["c1"]),
            merged(8, "Dave", "main", "m8", &["c1"]),
        ],
        reviews: vec![
            ("Carol".into(), "APPROVED".into(), "head8".into()),
            // an approval of an older commit does not count
            ("erin".into(), "APPROVED".into(), "old".into()),
            ("frank".into(), "CHANGES_REQUESTED".into(), "head8".into()),
        ],
        ..World::default()
    });
    let who = with_client(&api, async |c| c.identity_of("m8").await).expect("identity");
    let (pull, approvers) = who.expect("a merged pull request");
    assert_eq!(
        pull,
        MergedPull {
            number: 8,
            author: "dave".into(),
            head_sha: "head8".into(),
            base_ref: "main".into(),
            merge_commit_sha: Some("m8".into()),
        }
    );
    assert_eq!(approvers, ["carol"]);
    assert_eq!(calls(&world), ["GET /commits/m8/pulls", "GET /pulls/8/reviews"]);
}

#[test]
fn a_rebased_commit_is_the_pull_request_merged_into_the_default_branch() {
    // c2 is one commit of a rebase merge (not the merge commit) in two merged pull requests:
    // a backport into `release` and the one into `main`, the default branch
    let (api, world) = github_fake::start(World {
        pulls: vec![
            merged(4, "backporter", "release", "m4", &["c2"]),
            merged(5, "Alice", "main", "m5", &["c1", "c2"]),
        ],
        ..World::default()
    });
    let pull = with_client(&api, async |c| c.pull_request_of("c2").await).unwrap();
    assert_eq!(pull.map(|p| (p.number, p.author)), Some((5, "alice".to_owned())));
    // the merge commit of the backport is the backport's
    let pull = with_client(&api, async |c| c.pull_request_of("m4").await).unwrap();
    assert_eq!(pull.map(|p| p.number), Some(4));
    assert_eq!(calls(&world).len(), 2);
}

#[test]
fn a_direct_push_has_no_pull_request_and_asks_for_no_reviews() {
    let (api, world) = github_fake::start(World {
        pulls: vec![open(3, &["c1"])],
        ..World::default()
    });
    assert_eq!(with_client(&api, async |c| c.identity_of("c1").await).unwrap(), None);
    assert_eq!(
        with_client(&api, async |c| c.identity_of("nowhere").await).unwrap(),
        None
    );
    assert_eq!(calls(&world), ["GET /commits/c1/pulls", "GET /commits/nowhere/pulls"]);
}

#[test]
fn every_page_of_pull_requests_is_read() {
    // 100 open pull requests fill the first page; the merged one is on the second
    let mut pulls: Vec<FakePull> = (1..=100).map(|n| open(n, &["c9"])).collect();
    pulls.push(merged(200, "bob", "main", "m200", &["c9"]));
    let (api, world) = github_fake::start(World {
        pulls,
        ..World::default()
    });
    let (pull, requests) = with_client(&api, async |c| (c.pull_request_of("c9").await, c.calls()));
    assert_eq!(pull.unwrap().map(|p| p.number), Some(200));
    assert_eq!(requests, 2);
    assert_eq!(calls(&world), ["GET /commits/c9/pulls", "GET /commits/c9/pulls"]);
}

#[test]
fn a_refused_listing_is_an_error_naming_the_call() {
    let (api, _world) = github_fake::start(World {
        fail_with: Some(404),
        ..World::default()
    });
    let err = with_client(&api, async |c| c.identity_of("abc").await).unwrap_err();
    assert_eq!(err.status, Some(404));
    assert!(
        err.to_string().contains("listing the pull requests of commit abc"),
        "{err}"
    );
}

#[test]
fn a_pull_request_whose_answer_was_lost_is_found_not_opened_twice() {
    let (api, world) = github_fake::start(World {
        lose_answer_once: Some("POST /pulls".into()),
        ..World::default()
    });
    let opened = with_client(&api, async |c| {
        c.create_pull_request("rampart/revert-x", "main", "Revert x", "why")
            .await
    })
    .expect("pull request");
    assert_eq!(
        opened,
        (100, "https://github.com/larkspur/platform-config/pull/100".to_owned())
    );
    assert_eq!(calls(&world), ["POST /pulls", "GET /pulls"]);
    assert_eq!(world.lock().unwrap().opened.len(), 1);
}
