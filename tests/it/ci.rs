//! `rampart ci` as a process with a full GitHub Actions environment, against the local
//! GitHub API (tests/it/github_fake.rs) and a real `pull_request` payload.

use crate::github_fake::{self, World, routes};
use crate::support::*;
use std::path::Path;

const TOKEN: &str = "ghs_16C7e42F292c6912E7710c838347Ae178B4a";

fn pr_event(dir: &Path, number: u64, author: &str, base: &str, head: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(root().join(".ci/npm/webhooks-examples.json")).unwrap();
    let all: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let mut e = all.iter().find(|e| e["name"] == "pull_request").unwrap()["examples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["action"] == "opened")
        .unwrap()
        .clone();
    e["number"] = number.into();
    e["pull_request"]["number"] = number.into();
    e["pull_request"]["user"]["login"] = author.into();
    e["pull_request"]["base"]["sha"] = base.into();
    e["pull_request"]["head"]["sha"] = head.into();
    let path = dir.join("event.json");
    std::fs::write(&path, serde_json::to_vec(&e).unwrap()).unwrap();
    path
}

/// A `push` event (GitHub's own example) from `before` to `after`.
fn push_event(dir: &Path, before: &str, after: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(root().join(".ci/npm/webhooks-examples.json")).unwrap();
    let all: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let mut e = all.iter().find(|e| e["name"] == "push").unwrap()["examples"][0].clone();
    e["before"] = before.into();
    e["after"] = after.into();
    let path = dir.join("push.json");
    std::fs::write(&path, serde_json::to_vec(&e).unwrap()).unwrap();
    path
}

struct Job {
    run: Run,
    outputs: String,
    summary: String,
}

fn ci(repo: &Path, api: &str, event: &Path, extra: &[&str]) -> Job {
    ci_as(repo, api, event, extra, &[("GITHUB_TOKEN", TOKEN)])
}

fn ci_as(repo: &Path, api: &str, event: &Path, extra: &[&str], auth: &[(&str, &str)]) -> Job {
    let tmp = tempfile::tempdir().unwrap();
    let (summary, outputs) = (tmp.path().join("summary.md"), tmp.path().join("outputs"));
    let mut args = vec!["ci"];
    args.extend_from_slice(extra);
    let mut env = vec![
        ("GITHUB_EVENT_NAME", "pull_request"),
        ("GITHUB_EVENT_PATH", event.to_str().unwrap()),
        ("GITHUB_REPOSITORY", "larkspur/platform-config"),
        ("GITHUB_API_URL", api),
        ("GITHUB_STEP_SUMMARY", summary.to_str().unwrap()),
        ("GITHUB_OUTPUT", outputs.to_str().unwrap()),
        ("GITHUB_WORKSPACE", repo.to_str().unwrap()),
        ("RUNNER_TEMP", tmp.path().to_str().unwrap()),
    ];
    env.extend_from_slice(auth);
    let run = rampart_env(&args, Some(repo), &env);
    assert!(
        !run.stdout.contains(TOKEN) && !run.stderr.contains(TOKEN),
        "the token leaked"
    );
    Job {
        outputs: std::fs::read_to_string(outputs).unwrap_or_default(),
        summary: std::fs::read_to_string(summary).unwrap_or_default(),
        run,
    }
}

/// The example repo with one more commit by `committer` giving the sandbox more cpu, and the
/// `pull_request` event (number `number`, by `author`) proposing it.
struct SandboxPr {
    repo: tempfile::TempDir,
    _events: tempfile::TempDir,
    event: std::path::PathBuf,
    head: String,
    base: String,
}

fn sandbox_pr(number: u64, committer: &str, author: &str) -> SandboxPr {
    let repo = example_history();
    let p = repo.path();
    edit(p, "tenants/sandbox.yaml", "cpu: 1", "cpu: 2");
    commit(p, committer, "give the sandbox more cpu");
    let (head, base) = head_and_base(p);
    let events = tempfile::tempdir().unwrap();
    let event = pr_event(events.path(), number, author, &base, &head);
    SandboxPr {
        repo,
        _events: events,
        event,
        head,
        base,
    }
}

/// The `pull_request` event (number `number`, by `author`) for the last commit of `p`; the
/// directory holding it goes with it.
fn open_pr(p: &Path, number: u64, author: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let (head, base) = head_and_base(p);
    let events = tempfile::tempdir().unwrap();
    let event = pr_event(events.path(), number, author, &base, &head);
    (events, event)
}

fn head_and_base(p: &Path) -> (String, String) {
    (
        git_as(p, "CI <ci@example.com>", &["rev-parse", "HEAD"]),
        git_as(p, "CI <ci@example.com>", &["rev-parse", "HEAD~1"]),
    )
}

#[test]
fn a_pull_request_gets_one_comment_a_check_run_and_outputs() {
    let pr = sandbox_pr(7, "Eve <eve@evil.example>", "eve");
    let (p, event, head, base) = (pr.repo.path(), &pr.event, &pr.head, &pr.base);
    let (api, world) = github_fake::start(World {
        // an approval of an older commit and a dismissed one do not count
        reviews: vec![
            ("alice".into(), "APPROVED".into(), base.clone()),
            ("bob".into(), "DISMISSED".into(), head.clone()),
        ],
        // someone else's comment that copies the marker is never edited
        comments: vec![(5, "mallory".into(), "<!-- rampart:plan -->\nfake plan".into())],
        ..World::default()
    });

    let job = ci(p, &api, event, &[]);
    assert_eq!(job.run.code, 2, "{}\n{}", job.run.stdout, job.run.stderr);
    assert!(job.outputs.contains("decision=deny\n"), "{}", job.outputs);
    assert!(job.outputs.contains("valid=true\nchanged=true\n"), "{}", job.outputs);
    assert!(job.outputs.contains("plan-json="), "{}", job.outputs);
    assert!(job.summary.contains("sandbox"), "{}", job.summary);
    assert!(
        job.run
            .stdout
            .contains("::group::rampart plan (full)\n::stop-commands::"),
        "{}",
        job.run.stdout
    );
    {
        let w = world.lock().unwrap();
        assert!(w.problems.is_empty(), "{:#?}", w.problems);
        assert_eq!(
            routes(&w),
            [
                "GET /pulls/7/reviews",
                // the Actions token may not read its user: the comment author is the Actions bot
                "GET /user",
                "GET /issues/7/comments",
                "POST /issues/7/comments",
                "POST /check-runs",
            ]
        );
        let run = &w.calls[4].body;
        assert_eq!(run["name"], "rampart");
        assert_eq!(run["head_sha"], head.as_str());
        assert_eq!(run["conclusion"], "failure");
        assert_eq!(w.comments.len(), 2);
        assert_eq!(w.comments[0].2, "<!-- rampart:plan -->\nfake plan");
        assert!(
            w.comments[1].2.starts_with("<!-- rampart:plan -->\n"),
            "{}",
            w.comments[1].2
        );
        assert!(w.comments[1].2.contains("sandbox"));
    }

    // the second run edits the same comment
    let job = ci(p, &api, event, &["--fail-on", "never"]);
    assert_eq!(job.run.code, 0, "{}\n{}", job.run.stdout, job.run.stderr);
    let w = world.lock().unwrap();
    assert!(w.problems.is_empty(), "{:#?}", w.problems);
    assert_eq!(w.comments.len(), 2, "edited, not duplicated");
    assert_eq!(&routes(&w)[8], "POST /issues/comments/1001");
    assert_eq!(routes(&w).len(), 10, "{:?}", routes(&w));
}

#[test]
fn an_approval_of_the_head_counts_and_a_token_without_checks_sets_a_status() {
    // a platform member authors; bob's approval is of the current head, so it counts
    let pr = sandbox_pr(8, "Eve <eve@evil.example>", "alice");
    let (p, event, head) = (pr.repo.path(), &pr.event, &pr.head);
    let (api, world) = github_fake::start(World {
        reviews: vec![("bob".into(), "APPROVED".into(), head.clone())],
        no_checks: true,
        ..World::default()
    });
    let job = ci(p, &api, event, &["--comment", "false"]);
    assert_eq!(job.run.code, 0, "{}\n{}", job.run.stdout, job.run.stderr);
    assert!(job.outputs.contains("decision=allow\n"), "{}", job.outputs);
    let w = world.lock().unwrap();
    assert!(w.problems.is_empty(), "{:#?}", w.problems);
    assert_eq!(
        routes(&w),
        [
            "GET /pulls/8/reviews",
            "POST /check-runs",
            &format!("POST /statuses/{head}"),
        ]
    );
    assert_eq!(w.calls[2].body["state"], "success");
}

#[test]
fn an_invalid_head_is_annotated_fifty_at_a_time() {
    let repo = example_history();
    let p = repo.path();
    for i in 0..55 {
        write(
            &p.join(format!("tenants/orphan-{i:02}.yaml")),
            format!(
                "apiVersion: rampart.dev/v1\nkind: Tenant\nmetadata:\n  name: orphan-{i:02}\nspec:\n  owners: [nobody]\n  tier: free\n  isolation: shared\n  quota: {{cpu: 1, memory: 1Gi, pods: 1, storage: 1Gi}}\n"
            ),
        );
    }
    commit(p, "Alice <alice@example.com>", "55 tenants nobody owns");
    let (_events, event) = open_pr(p, 9, "alice");
    let (api, world) = github_fake::start(World::default());
    let job = ci(p, &api, &event, &[]);
    assert_eq!(job.run.code, 3, "{}\n{}", job.run.stdout, job.run.stderr);
    assert!(
        job.outputs.contains("decision=invalid\nvalid=false\n"),
        "{}",
        job.outputs
    );
    assert!(
        job.run.stdout.contains("::error file=tenants/orphan-00.yaml,line=6"),
        "{}",
        job.run.stdout
    );
    let w = world.lock().unwrap();
    assert!(w.problems.is_empty(), "{:#?}", w.problems);
    assert_eq!(
        routes(&w),
        [
            "GET /pulls/9/reviews",
            "GET /user",
            "GET /issues/9/comments",
            "POST /issues/9/comments",
            "POST /check-runs",
            "PATCH /check-runs/77",
        ]
    );
    assert_eq!(w.calls[4].body["output"]["annotations"].as_array().unwrap().len(), 50);
    assert_eq!(w.calls[5].body["output"]["annotations"].as_array().unwrap().len(), 5);
    assert!(w.comments[0].2.contains("is invalid"), "{}", w.comments[0].2);
}

#[test]
fn bad_environments_are_clear_errors() {
    let repo = example_history();
    let p = repo.path();
    let run = rampart_env(&["ci"], Some(p), &[("GITHUB_EVENT_NAME", "")]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("GITHUB_EVENT_NAME is not set"), "{}", run.stderr);

    let events = tempfile::tempdir().unwrap();
    let broken = events.path().join("broken.json");
    std::fs::write(&broken, "{\"action\": \"opened\"").unwrap();
    let env = |event: &str, path: &Path| {
        rampart_env(
            &["ci"],
            Some(p),
            &[
                ("GITHUB_EVENT_NAME", event),
                ("GITHUB_EVENT_PATH", path.to_str().unwrap()),
                ("GITHUB_REPOSITORY", "larkspur/platform-config"),
                ("GITHUB_API_URL", "http://127.0.0.1:9"),
                ("GITHUB_TOKEN", TOKEN),
                ("GITHUB_WORKSPACE", p.to_str().unwrap()),
            ],
        )
    };
    let run = env("pull_request", &broken);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("decoding the `pull_request` event"),
        "{}",
        run.stderr
    );
    let run = env("pull_request", &events.path().join("missing.json"));
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("reading the event file"), "{}", run.stderr);
    // a base commit the shallow checkout does not have
    let event = pr_event(
        events.path(),
        3,
        "alice",
        "1111111111111111111111111111111111111111",
        &git_as(p, "CI <ci@example.com>", &["rev-parse", "HEAD"]),
    );
    let run = env("pull_request", &event);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("fetch-depth: 0"), "{}", run.stderr);
    assert!(!run.stderr.contains(TOKEN) && !run.stdout.contains(TOKEN));
    // another event: acknowledged
    let run = env("issues", &broken);
    assert_eq!(run.code, 0, "{}", run.stderr);
}

/// API failures end the job with the call that failed and GitHub's answer, never the token.
#[test]
fn api_errors_name_the_call_not_the_token() {
    let pr = sandbox_pr(11, "Alice <alice@example.com>", "alice");
    let (p, event) = (pr.repo.path(), &pr.event);
    for status in [401, 404, 422, 500] {
        let (api, world) = github_fake::start(World {
            fail_with: Some(status),
            ..World::default()
        });
        let job = ci(p, &api, event, &[]);
        assert_eq!(job.run.code, 1, "{status}: {}", job.run.stderr);
        assert!(
            job.run.stderr.contains("listing the reviews of pull request #11"),
            "{status}: {}",
            job.run.stderr
        );
        let calls = world.lock().unwrap().calls.len();
        if status == 500 {
            // server errors are retried
            assert!(calls > 1, "{calls}");
        } else {
            assert!(
                job.run.stderr.contains(&format!("GitHub answered {status}")),
                "{}",
                job.run.stderr
            );
            assert_eq!(calls, 1, "a client error is not retried");
        }
    }
}

/// A secondary rate limit is waited out (`retry-after`), then the job goes on.
#[test]
fn a_rate_limit_is_waited_out() {
    let pr = sandbox_pr(12, "Alice <alice@example.com>", "alice");
    let (p, event) = (pr.repo.path(), &pr.event);
    let (api, world) = github_fake::start(World {
        rate_limited_once: true,
        ..World::default()
    });
    let job = ci(p, &api, event, &["--comment", "false"]);
    assert_eq!(job.run.code, 0, "{}", job.run.stderr);
    assert!(
        job.run.elapsed >= std::time::Duration::from_secs(1),
        "waited {:?}",
        job.run.elapsed
    );
    let w = world.lock().unwrap();
    assert_eq!(
        routes(&w),
        ["GET /pulls/12/reviews", "GET /pulls/12/reviews", "POST /check-runs"]
    );
}

/// Comments are paginated: rampart's own comment on the second page is found and edited, not
/// duplicated.
#[test]
fn its_own_comment_is_found_on_a_later_page() {
    let pr = sandbox_pr(13, "Alice <alice@example.com>", "alice");
    let (p, event) = (pr.repo.path(), &pr.event);
    let mut comments: Vec<(u64, String, String)> = (0..140)
        .map(|i| (i, "someone".into(), format!("comment {i}")))
        .collect();
    comments.push((
        140,
        "github-actions[bot]".into(),
        "<!-- rampart:plan -->\nold plan".into(),
    ));
    comments.extend((141..150).map(|i| (i, "someone".into(), format!("comment {i}"))));
    let (api, world) = github_fake::start(World {
        comments,
        ..World::default()
    });
    let job = ci(p, &api, event, &[]);
    assert_eq!(job.run.code, 0, "{}", job.run.stderr);
    let w = world.lock().unwrap();
    assert!(w.problems.is_empty(), "{:#?}", w.problems);
    assert_eq!(
        routes(&w),
        [
            "GET /pulls/13/reviews",
            "GET /user",
            "GET /issues/13/comments",
            "GET /issues/13/comments",
            "POST /issues/comments/140",
            "POST /check-runs",
        ]
    );
    assert_eq!(w.comments.len(), 150, "edited, not added");
    assert!(w.comments[140].2.contains("sandbox"), "{}", w.comments[140].2);
}

/// GitHub App auth: rampart signs a JWT with the app's private key, trades it for an
/// installation token, and uses that token; the key never reaches the output.
#[test]
fn a_github_app_gets_an_installation_token() {
    let keys = tempfile::tempdir().unwrap();
    let pem_path = keys.path().join("app.pem");
    let out = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&pem_path)
        .arg("2048")
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pem = std::fs::read_to_string(&pem_path).unwrap();
    let pr = sandbox_pr(14, "Alice <alice@example.com>", "alice");
    let (p, event) = (pr.repo.path(), &pr.event);
    // the app's own comment from an earlier run: its bot login comes from `GET /app`
    let (api, world) = github_fake::start(World {
        comments: vec![(3, "octoapp[bot]".into(), "<!-- rampart:plan -->\nold plan".into())],
        ..World::default()
    });
    let job = ci_as(
        p,
        &api,
        event,
        &[],
        &[
            ("RAMPART_APP_ID", "4242"),
            ("RAMPART_APP_PRIVATE_KEY", &pem),
            ("RAMPART_APP_INSTALLATION", "77"),
        ],
    );
    assert_eq!(job.run.code, 0, "{}", job.run.stderr);
    let body = pem.lines().nth(1).unwrap();
    assert!(
        !job.run.stdout.contains(body) && !job.run.stderr.contains(body),
        "the key leaked"
    );
    let w = world.lock().unwrap();
    assert!(w.problems.is_empty(), "{:#?}", w.problems);
    let calls: Vec<(String, String)> = w
        .calls
        .iter()
        .map(|c| (format!("{} {}", c.method, c.path), c.auth.clone()))
        .collect();
    assert_eq!(calls[0].0, "POST /app/installations/77/access_tokens");
    assert!(calls[0].1.starts_with("Bearer ey"), "a JWT: {}", calls[0].1);
    assert_eq!(calls[2].0, "GET /app");
    assert!(calls[2].1.starts_with("Bearer ey"), "a JWT: {}", calls[2].1);
    assert_eq!(calls.len(), 6, "{calls:?}");
    for (i, (_, auth)) in calls.iter().enumerate().skip(1).filter(|(i, _)| *i != 2) {
        assert_eq!(auth, "Bearer ghs_ins", "{i}: the installation token");
    }
    assert_eq!(w.comments.len(), 1, "edited, not added");
    assert!(w.comments[0].2.contains("sandbox"), "{}", w.comments[0].2);
}

/// A personal access token comments as its user (`GET /user`): that user's comment is the
/// one edited, not one by the Actions bot.
#[test]
fn a_personal_token_edits_its_own_users_comment() {
    let pr = sandbox_pr(20, "Alice <alice@example.com>", "alice");
    let (p, event) = (pr.repo.path(), &pr.event);
    let (api, world) = github_fake::start(World {
        pat_user: Some("platform-bot".into()),
        comments: vec![
            (
                4,
                "github-actions[bot]".into(),
                "<!-- rampart:plan -->\nnot ours".into(),
            ),
            (5, "platform-bot".into(), "<!-- rampart:plan -->\nold plan".into()),
        ],
        ..World::default()
    });
    let job = ci_as(
        p,
        &api,
        event,
        &[],
        &[("GITHUB_TOKEN", "ghp_patforthetests0000000000000000000000")],
    );
    assert_eq!(job.run.code, 0, "{}", job.run.stderr);
    let w = world.lock().unwrap();
    assert!(w.problems.is_empty(), "{:#?}", w.problems);
    assert_eq!(
        routes(&w),
        [
            "GET /pulls/20/reviews",
            "GET /user",
            "GET /issues/20/comments",
            "POST /issues/comments/5",
            "POST /check-runs",
        ]
    );
    assert_eq!(w.comments[0].2, "<!-- rampart:plan -->\nnot ours");
    assert!(w.comments[1].2.contains("sandbox"), "{}", w.comments[1].2);
}

/// A create whose answer is lost (502) may have been carried out: rampart looks for the
/// comment and the check run it may have made instead of posting a second one.
#[test]
fn a_lost_answer_does_not_duplicate_the_comment_or_the_check_run() {
    let pr = sandbox_pr(21, "Alice <alice@example.com>", "alice");
    let (p, event, head) = (pr.repo.path(), &pr.event, &pr.head);
    let (api, world) = github_fake::start(World {
        lose_answer_once: Some("POST /issues/21/comments".into()),
        ..World::default()
    });
    let job = ci(p, &api, event, &[]);
    assert_eq!(job.run.code, 0, "{}", job.run.stderr);
    {
        let w = world.lock().unwrap();
        assert!(w.problems.is_empty(), "{:#?}", w.problems);
        assert_eq!(w.comments.len(), 1, "{:?}", routes(&w));
        assert_eq!(
            routes(&w),
            [
                "GET /pulls/21/reviews",
                "GET /user",
                "GET /issues/21/comments",
                "POST /issues/21/comments",
                "GET /issues/21/comments",
                "POST /issues/comments/1000",
                "POST /check-runs",
            ]
        );
    }
    let (api, world) = github_fake::start(World {
        lose_answer_once: Some("POST /check-runs".into()),
        ..World::default()
    });
    let job = ci(p, &api, event, &["--comment", "false"]);
    assert_eq!(job.run.code, 0, "{}", job.run.stderr);
    let w = world.lock().unwrap();
    assert!(w.problems.is_empty(), "{:#?}", w.problems);
    assert_eq!(w.check_runs.len(), 1, "{:?}", routes(&w));
    assert_eq!(
        routes(&w),
        [
            "GET /pulls/21/reviews".to_owned(),
            "POST /check-runs".to_owned(),
            format!("GET /commits/{head}/check-runs"),
        ]
    );
    assert!(job.run.stdout.contains("check run 77"), "{}", job.run.stdout);
}

/// A push that changes a quota is planned and summarised like a pull request: the job
/// summary has the plan, `changed` is true, and no API call is made.
#[test]
fn a_push_that_changes_quotas_is_summarised() {
    let pr = sandbox_pr(15, "Alice <alice@example.com>", "alice");
    let p = pr.repo.path();
    let events = tempfile::tempdir().unwrap();
    let event = push_event(events.path(), &pr.base, &pr.head);
    let (api, world) = github_fake::start(World::default());
    // (a later variable wins: the event is a push)
    let job = ci_as(
        p,
        &api,
        &event,
        &[],
        &[("GITHUB_TOKEN", TOKEN), ("GITHUB_EVENT_NAME", "push")],
    );
    assert_eq!(job.run.code, 0, "{}\n{}", job.run.stdout, job.run.stderr);
    assert!(job.outputs.contains("valid=true\nchanged=true\n"), "{}", job.outputs);
    assert!(job.outputs.contains("plan-json="), "{}", job.outputs);
    assert!(job.summary.contains("### rampart plan: "), "{}", job.summary);
    assert!(job.summary.contains("| sandbox | "), "{}", job.summary);
    assert!(
        job.run.stdout.contains("::group::rampart plan (full)"),
        "{}",
        job.run.stdout
    );
    assert!(world.lock().unwrap().calls.is_empty(), "no API calls on push");
}

/// 700 problems (7 files × 100 documents with an unknown field): at most 500 annotations are
/// sent (1 POST + 9 PATCHes), the summary says how many were left out, and the full summary
/// goes only in the first and the last request (the ones in between carry a short one, since
/// GitHub requires `output.title` and `output.summary` in every update).
#[test]
fn annotations_are_capped_and_the_summary_sent_twice_at_most() {
    let repo = example_history();
    let p = repo.path();
    for f in 0..7 {
        let docs: Vec<String> = (0..100)
            .map(|i| {
                format!(
                    "apiVersion: rampart.dev/v1\nkind: Team\nmetadata:\n  name: t-{f}-{i:03}\nspec:\n  contact: t@example.com\n  members: [erin]\n  unknownField: {i}\n"
                )
            })
            .collect();
        write(&p.join(format!("teams/bulk-{f}.yaml")), docs.join("---\n"));
    }
    commit(p, "Alice <alice@example.com>", "700 problems");
    let (_events, event) = open_pr(p, 16, "alice");
    let (api, world) = github_fake::start(World::default());
    let job = ci(p, &api, &event, &["--comment", "false"]);
    assert_eq!(job.run.code, 3, "{}\n{}", job.run.stdout, job.run.stderr);
    let w = world.lock().unwrap();
    assert!(w.problems.is_empty(), "{:#?}", w.problems);
    let runs: Vec<&github_fake::Call> = w.calls.iter().filter(|c| c.path.contains("/check-runs")).collect();
    assert_eq!(runs.len(), 10, "{:?}", routes(&w));
    let sent: usize = runs
        .iter()
        .map(|c| c.body["output"]["annotations"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(sent, 500);
    let summary = |c: &github_fake::Call| c.body["output"]["summary"].as_str().unwrap().to_owned();
    let full = summary(runs[0]);
    assert!(full.contains("200 more problems"), "{full}");
    assert_eq!(summary(runs[9]), full, "the last request restores the full summary");
    for c in &runs[1..9] {
        assert!(summary(c).len() < 300, "{}", summary(c));
    }
}

/// 1,300 new plugins and a network widening to `payments-prod`: the per-plugin notes do not
/// push the verdict, the risk or the tenant table out of the comment, the check summary or
/// the job summary, and the check fails as the verdict says.
#[test]
fn many_new_plugins_do_not_push_the_verdict_out() {
    let repo = example_history();
    let p = repo.path();
    for i in 0..1300 {
        write(
            &p.join(format!("plugins/bulk-{i:04}.yaml")),
            format!(
                "apiVersion: rampart.dev/v1\nkind: Plugin\nmetadata:\n  name: bulk-{i:04}\nspec:\n  publisher: eve\n  version: \"1.0.0\"\n  artifact:\n    package: \"@eve/bulk-{i:04}@1.0.0\"\n    integrity: sha512-hQJ4MC9a/sy98OppcOGyM5fUazs9lq+B/K+CTWBRzqLxSD6o+7id+I001W4QDYK7m9kvzuhLVd07F2WWZ89VKw==\n"
            ),
        );
    }
    edit(
        p,
        "tenants/payments-prod.yaml",
        "      - storefront\n",
        "      - storefront\n      - hackweek\n",
    );
    commit(p, "Eve <eve@evil.example>", "plugins, and a way into payments");
    let (_events, event) = open_pr(p, 17, "eve");
    let (api, world) = github_fake::start(World::default());
    let job = ci(p, &api, &event, &[]);
    assert_eq!(job.run.code, 2, "{}\n{}", job.run.stdout, job.run.stderr);
    assert!(job.outputs.contains("decision=deny\n"), "{}", job.outputs);
    let w = world.lock().unwrap();
    assert!(w.problems.is_empty(), "{:#?}", w.problems);
    let run = w
        .calls
        .iter()
        .find(|c| c.method == "POST" && c.path.ends_with("/check-runs"))
        .unwrap();
    assert_eq!(run.body["conclusion"], "failure");
    let check = run.body["output"]["summary"].as_str().unwrap();
    for (what, text) in [
        ("comment", w.comments[0].2.as_str()),
        ("check", check),
        ("job summary", job.summary.as_str()),
    ] {
        assert!(text.contains("denied by policy"), "{what}: {text}");
        assert!(text.contains("**network widening** in payments-prod"), "{what}: {text}");
        assert!(text.contains("| payments-prod |"), "{what}: {text}");
        assert!(text.contains("> … 1281 more notes"), "{what}: {text}");
        assert!(
            text.find("> plugin `bulk-0000` \\(new\\)")
                .is_some_and(|note| text.find("network widening").is_some_and(|w| w < note)),
            "{what}: notes come after\n{}",
            &text[..3000]
        );
    }
}

/// Text from a pull request or from GitHub cannot forge workflow commands, send terminal
/// sequences or reorder what a reviewer reads: ESC in a file name, bidirectional controls
/// in a value and in a file name, a newline in an API error message.
#[test]
fn hostile_text_is_made_visible_in_every_output() {
    // an invalid head: the file names reach `::error` lines and the comment's table
    let repo = example_history();
    let p = repo.path();
    let team = "apiVersion: rampart.dev/v1\nkind: Team\nmetadata:\n  name: NAME\nspec:\n  contact: t@example.com\n  members: [erin]\n  unknownField: 1\n";
    write(&p.join("teams/esc\u{1b}[2Jx.yaml"), team.replace("NAME", "esc"));
    write(&p.join("teams/bidi\u{202e}lmy.yaml"), team.replace("NAME", "bidi"));
    commit(p, "Alice <alice@example.com>", "odd names");
    let (_events, event) = open_pr(p, 18, "alice");
    let (api, world) = github_fake::start(World::default());
    let job = ci(p, &api, &event, &[]);
    assert_eq!(job.run.code, 3, "{}\n{}", job.run.stdout, job.run.stderr);
    let clean = |what: &str, s: &str| assert!(!s.contains('\u{1b}') && !s.contains('\u{202e}'), "{what}: {s:?}");
    clean("stdout", &job.run.stdout);
    assert!(
        job.run.stdout.contains("::error file=teams/esc\\u{1b}[2Jx.yaml"),
        "{}",
        job.run.stdout
    );
    clean("summary", &job.summary);
    {
        let w = world.lock().unwrap();
        clean("comment", &w.comments[0].2);
        // (an annotation's path must name the file as it is; its text is escaped)
        let run = w.calls.iter().find(|c| c.path.ends_with("/check-runs")).unwrap();
        let output = &run.body["output"];
        clean("check", output["summary"].as_str().unwrap());
        for a in output["annotations"].as_array().unwrap() {
            clean("annotation", &format!("{}{}", a["title"], a["message"]));
        }
    }

    // a valid head: a bidirectional control in a plugin config reaches the diffs
    let repo = example_history();
    let p = repo.path();
    edit(
        p,
        "tenants/storefront.yaml",
        "    - name: techdocs\n",
        "    - name: techdocs\n      config:\n        techdocs:\n          builder: \"local\u{202e}lanretxe\u{2066}\"\n",
    );
    commit(p, "Alice <alice@example.com>", "reordered text");
    let (_events, event) = open_pr(p, 19, "alice");
    let (api, world) = github_fake::start(World::default());
    let job = ci(p, &api, &event, &["--fail-on", "never"]);
    assert_eq!(job.run.code, 0, "{}\n{}", job.run.stdout, job.run.stderr);
    clean("stdout", &job.run.stdout);
    clean("summary", &job.summary);
    assert!(job.summary.contains("\\u{202e}"), "{}", job.summary);
    let w = world.lock().unwrap();
    clean("comment", &w.comments[0].2);
    drop(w);

    // GitHub's error message is data, never a workflow command
    let (api, _world) = github_fake::start(World {
        fail_with: Some(422),
        fail_message: Some("Validation Failed\n::warning::forged\u{1b}[2J".into()),
        ..World::default()
    });
    let job = ci(p, &api, &event, &[]);
    assert_eq!(job.run.code, 1, "{}", job.run.stderr);
    assert!(job.run.stderr.contains("Validation Failed"), "{}", job.run.stderr);
    assert!(!job.run.stderr.contains("\n::warning::"), "{}", job.run.stderr);
    clean("stderr", &job.run.stderr);
}

/// Issue 12, 0b: a pull request branched off before a forbid was merged was judged by its
/// fork point's policies. The diff is the branch's own change; the base tip's rules decide.
#[test]
fn a_pull_request_is_judged_by_the_base_tips_policies() {
    let repo = example_history();
    let p = repo.path();
    git_as(p, "CI <ci@example.com>", &["checkout", "-q", "-b", "widen"]);
    edit(
        p,
        "tenants/mobile-apps.yaml",
        "      - platform-portal\n",
        "      - platform-portal\n      - storefront\n",
    );
    commit(p, "Peggy <peggy@example.com>", "let the storefront call mobile");
    let head = git_as(p, "CI <ci@example.com>", &["rev-parse", "HEAD"]);
    git_as(p, "CI <ci@example.com>", &["checkout", "-q", "main"]);
    write(
        &p.join("policies/network.cedar"),
        "@id(\"network-widening-needs-platform\")\n@advice(\"Widening a tenant's network needs a platform approval.\")\n\
         forbid (principal, action == Rampart::Action::\"updateTenant\", resource)\n\
         when { context.networkWidened }\nunless { context.change in Rampart::Team::\"platform\" };\n",
    );
    commit(
        p,
        "Alice <alice@example.com>",
        "no network widening without platform\n\nApproved-by: bob\n",
    );
    let base = git_as(p, "CI <ci@example.com>", &["rev-parse", "HEAD"]);
    git_as(p, "CI <ci@example.com>", &["checkout", "-q", "widen"]);

    let events = tempfile::tempdir().unwrap();
    let event = pr_event(events.path(), 12, "peggy", &base, &head);
    let (api, world) = github_fake::start(World::default());
    let job = ci(p, &api, &event, &[]);
    assert_eq!(job.run.code, 2, "{}\n{}", job.run.stdout, job.run.stderr);
    assert!(job.outputs.contains("decision=deny\n"), "{}", job.outputs);
    assert!(
        job.summary.contains("network-widening-needs-platform"),
        "{}",
        job.summary
    );
    // what the branch changes, not the policy merged since shown as removed
    assert!(!job.summary.contains("policies/network.cedar"), "{}", job.summary);
    assert!(world.lock().unwrap().problems.is_empty());
}

/// Review of issue 12: who a pull request reaches is worked out on the base branch's tip
/// too — a tenant that enabled the plugin after the fork point runs the new artifact once
/// merged, so its owners are asked.
#[test]
fn a_pull_request_reaches_the_tenants_of_the_base_tip() {
    let repo = example_history();
    let p = repo.path();
    let radar = std::fs::read_to_string(p.join("plugins/tech-radar.yaml")).unwrap();
    write(
        &p.join("plugins/mob.yaml"),
        radar.replace("name: tech-radar", "name: mob"),
    );
    edit(
        p,
        "tenants/mobile-apps.yaml",
        "  plugins:\n",
        "  plugins:\n    - name: mob\n",
    );
    commit(p, "Alice <alice@example.com>", "mob for mobile\n\nApproved-by: bob\n");
    git_as(p, "CI <ci@example.com>", &["checkout", "-q", "-b", "feat"]);
    edit(p, "plugins/mob.yaml", "version: \"1.1.0\"", "version: \"1.2.0\"");
    edit(
        p,
        "plugins/mob.yaml",
        "plugin-tech-radar@1.1.0",
        "plugin-tech-radar@1.2.0",
    );
    commit(p, "Peggy <peggy@example.com>", "mob 1.2.0");
    let head = git_as(p, "CI <ci@example.com>", &["rev-parse", "HEAD"]);
    git_as(p, "CI <ci@example.com>", &["checkout", "-q", "main"]);
    edit(
        p,
        "tenants/payments-staging.yaml",
        "  plugins:\n",
        "  plugins:\n    - name: mob\n",
    );
    commit(
        p,
        "Heidi <heidi@example.com>",
        "mob for staging too\n\nApproved-by: judy\n",
    );
    let base = git_as(p, "CI <ci@example.com>", &["rev-parse", "HEAD"]);
    git_as(p, "CI <ci@example.com>", &["checkout", "-q", "feat"]);

    let events = tempfile::tempdir().unwrap();
    let event = pr_event(events.path(), 13, "peggy", &base, &head);
    let (api, _world) = github_fake::start(World::default());
    let job = ci(p, &api, &event, &[]);
    assert_eq!(job.run.code, 2, "{}\n{}", job.run.stdout, job.run.stderr);
    assert!(job.summary.contains("payments-staging"), "{}", job.summary);
}
