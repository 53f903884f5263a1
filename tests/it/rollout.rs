//! Rollouts end to end: the real `rampart serve` against a bare remote, the real Prometheus
//! (Debian's) scraping `slo_exporter`, whose error ratio and traffic the tests set. A healthy
//! rollout walks every step and is promoted by a commit; an error spike reverts it by a
//! commit with its evidence, which is then applied and stays applied; Prometheus gone, no
//! traffic or too little traffic hold and pause but never revert; a SIGKILL in a step
//! resumes the same step, from the state directory or, with an empty one, from the notes.
//! Landing the commits themselves (a branch that moves, a conflicting revert, a protected
//! branch → a pull request) is `rollback.rs`.

use crate::prometheus::Prometheus;
use crate::serve::{Fixture, Service};
use crate::slo_exporter::SloExporter;
use crate::support::*;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ALICE: &str = "Alice <alice@example.com>";
const ROLLOUT: &str = "rollouts/techdocs-1-13-0.yaml";
const NAME: &str = "techdocs-1-13-0";

/// The example's techdocs rollout (its signed artifact kept) with test-sized steps, SLOs
/// on the exporter's metrics and a 1 s analysis interval.
fn rollout(steps: &str) -> String {
    let original = std::fs::read_to_string(root().join("examples/platform-config").join(ROLLOUT)).unwrap();
    let head = &original[..original
        .find("  strategy:")
        .expect("the example rollout has a strategy")];
    format!(
        "{head}  strategy: canary
  steps:
{steps}
  slos:
    - name: error-ratio
      query: sum(rate(http_requests_total{{code=\"500\"}}[3s])) / sum(rate(http_requests_total[3s]))
      requests: sum(increase(http_requests_total[3s]))
      minRequests: 5
      max: 0.1
      for: 3s
  analysis:
    interval: 1s
    inconclusiveLimit: 3
  onViolation: revert
"
    )
}

const QUICK: &str = "    - weight: 25\n      pause: 3s\n    - weight: 100\n      pause: 3s";

struct World {
    fx: Fixture,
    exporter: SloExporter,
    prom: Option<Prometheus>,
    /// The commit that added the rollout.
    added: String,
}

impl World {
    /// The example without its rollouts (applied), Prometheus scraping an exporter serving
    /// `rps` requests a second with `errors` of them failing.
    fn new(rps: f64, errors: f64) -> World {
        let exporter = SloExporter::start(rps, errors);
        let prom = Prometheus::start(&[&exporter.target()]);
        prom.wait_up(&exporter.target(), Duration::from_secs(15)).unwrap();
        let fx = Fixture::new();
        fx.push(ALICE, "no example rollouts", |w| {
            std::fs::remove_dir_all(w.join("rollouts")).unwrap();
            std::fs::create_dir(w.join("rollouts")).unwrap();
            std::fs::write(w.join("rollouts/.keep"), "").unwrap();
        });
        World {
            fx,
            exporter,
            prom: Some(prom),
            added: String::new(),
        }
    }

    fn prometheus(&self) -> String {
        format!("http://{}", self.prom.as_ref().expect("prometheus runs").addr)
    }

    fn start(&self, state: &str, extra: &[&str]) -> Service {
        let (remote, state, out, prom) = (
            self.fx.remote(),
            self.fx.path(state),
            self.fx.path("out"),
            self.prometheus(),
        );
        let mut args = vec![
            "--repo",
            &remote,
            "--state-dir",
            state.to_str().unwrap(),
            "--target",
            "dir:out",
            "--interval",
            "1s",
            "--prometheus",
            &prom,
        ];
        args.extend_from_slice(extra);
        let _ = out;
        Service::start(self.fx.dir.path(), &args, &[])
    }

    /// Push the test rollout with `steps`.
    fn add_rollout(&mut self, steps: &str) -> String {
        let text = rollout(steps);
        self.added = self.fx.push(ALICE, "roll techdocs 1.13.0 out", |w| {
            std::fs::write(w.join(ROLLOUT), &text).unwrap();
        });
        self.added.clone()
    }

    /// Git in the bare remote.
    fn remote_git(&self, args: &[&str]) -> String {
        let git_dir = self.fx.path("remote.git");
        let mut all = vec!["--git-dir", git_dir.to_str().unwrap()];
        all.extend_from_slice(args);
        git_as(self.fx.dir.path(), ALICE, &all)
    }

    fn remote_tip(&self) -> String {
        self.remote_git(&["rev-parse", "main"])
    }

    /// Every commit message on the remote's main, newest first.
    fn messages(&self) -> Vec<String> {
        self.remote_git(&["log", "--format=%B%x00", "main"])
            .split('\0')
            .map(|m| m.trim().to_owned())
            .filter(|m| !m.is_empty())
            .collect()
    }

    /// How many commits on the remote's main carry `trailer`.
    fn count(&self, trailer: &str) -> usize {
        self.messages().iter().filter(|m| m.contains(trailer)).count()
    }

    fn out(&self, file: &str) -> Option<String> {
        std::fs::read_to_string(self.fx.path("out").join(file)).ok()
    }
}

/// This rollout in the service's status for the dir target.
fn state(s: &Service) -> Value {
    s.target("dir:out")["rollouts"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["rollout"] == NAME).cloned())
        .unwrap_or(Value::Null)
}

/// The canary's weight in hackweek's HTTPRoute (None: no canary there).
fn canary_weight(w: &World) -> Option<i64> {
    let route = w.out("hackweek/httproute-portal.yaml")?;
    let v: Value = serde_saphyr::from_str(&route).ok()?;
    v["spec"]["rules"][0]["backendRefs"]
        .as_array()?
        .iter()
        .find(|b| b["name"] == "c-techdocs-1-13-0")
        .and_then(|b| b["weight"].as_i64())
}

#[test]
fn a_healthy_rollout_walks_every_step_and_is_promoted_by_a_commit() {
    let mut w = World::new(50.0, 0.0);
    let mut s = w.start("state", &[]);
    let base = w.fx.head();
    s.wait_applied("dir:out", &base, Duration::from_secs(30));
    let added = w.add_rollout(QUICK);
    s.wait_applied("dir:out", &added, Duration::from_secs(30));
    assert_eq!(canary_weight(&w), Some(25), "step 1 is applied with the commit");
    assert!(
        w.out("hackweek/configmap-canary-techdocs-1-13-0.yaml")
            .is_some_and(|c| c.contains("sha512-rndFUnhz")),
        "the canary carries the rollout's integrity"
    );
    // watch the weights while it walks
    let seen = Arc::new(Mutex::new(Vec::new()));
    s.wait("the promote commit on the remote", Duration::from_secs(60), |s| {
        if let Some(wt) = canary_weight(&w) {
            let mut v = seen.lock().unwrap();
            if v.last() != Some(&wt) {
                v.push(wt);
            }
        }
        let _ = s;
        w.messages()[0].contains(&format!("Rampart-Promote-Of: {added}"))
    });
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.first(), Some(&25), "{seen:?}");
    assert!(
        seen.contains(&100),
        "the last step was applied before the promotion: {seen:?}"
    );
    let promote = w.remote_tip();
    s.wait_applied("dir:out", &promote, Duration::from_secs(30));
    // Git declares what runs: the plugin at the new version with the rollout's artifact, no rollout
    let plugin = w.remote_git(&["show", "main:plugins/techdocs.yaml"]);
    assert!(plugin.contains("\"1.13.0\""), "{plugin}");
    assert!(plugin.contains("@backstage/plugin-techdocs@1.13.0"), "{plugin}");
    assert!(
        w.remote_git(&["ls-tree", "--name-only", "main", "rollouts/"])
            .lines()
            .all(|l| !l.contains(NAME))
    );
    assert_eq!(canary_weight(&w), None, "no canary once promoted");
    let portal = w.out("hackweek/configmap-dynamic-plugins.yaml").unwrap();
    assert!(portal.contains("@backstage/plugin-techdocs@1.13.0"), "{portal}");
    // the promotion was judged as rampart's own, and recorded
    let logs = s.logs();
    assert!(!logs.contains("judged as any commit"), "{logs}");
    assert_eq!(s.metric("rampart_promotions_total", ""), Some(1.0));
    assert_eq!(s.metric("rampart_reverts_total", ""), Some(0.0), "no false revert");
    assert!(s.metric("rampart_slo_checks_total", "result=\"pass\"").unwrap_or(0.0) >= 2.0);
    assert_eq!(w.count("Rampart-Revert-Of"), 0, "no false revert");
    let status = rampart(
        &["rollout", "status", "--state-dir", w.fx.path("state").to_str().unwrap()],
        None,
    );
    assert_eq!(status.code, 0, "{}", transcript(&status));
    assert!(status.stdout.contains("promoted"), "{}", status.stdout);
}

#[test]
fn an_error_spike_reverts_by_a_commit_with_its_evidence_and_the_revert_stays() {
    let received = Arc::new(Mutex::new(Vec::<Value>::new()));
    let sink = received.clone();
    let hooks = serve(axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let sink = sink.clone();
            async move {
                sink.lock()
                    .unwrap()
                    .push(serde_json::from_str(&body).unwrap_or(Value::Null));
                "ok"
            }
        }),
    ));
    let hook = format!("{}/hook", hooks.url());
    let mut w = World::new(50.0, 0.0);
    // a long first step: only the spike can end it
    let mut s = w.start("state", &["--notify", &hook]);
    let added = w.add_rollout("    - weight: 25\n      pause: 10m\n    - weight: 100");
    s.wait_applied("dir:out", &added, Duration::from_secs(30));
    s.wait("a passing check", Duration::from_secs(30), |s| {
        state(s)["checks"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["verdict"] == "pass"))
    });
    w.exporter.set(50.0, 0.5);
    let spike = Instant::now();
    s.wait("the revert commit on the remote", Duration::from_secs(60), |_| {
        w.messages()[0].contains(&format!("Rampart-Revert-Of: {added}"))
    });
    let to_commit = spike.elapsed();
    let revert = w.remote_tip();
    let message = &w.messages()[0];
    for t in [
        "Rampart-Rollout: techdocs-1-13-0",
        "Rampart-SLO: error-ratio",
        "Rampart-Evidence: slo=error-ratio value=0.5",
        "bound=\"<= 0.1\"",
        "window=3s",
    ] {
        assert!(message.contains(t), "`{t}` missing from the revert:\n{message}");
    }
    assert_eq!(
        w.remote_git(&["log", "-1", "--format=%an <%ae>", "main"]).trim(),
        "rampart <rampart@localhost>"
    );
    s.wait_applied("dir:out", &revert, Duration::from_secs(30));
    assert!(to_commit < Duration::from_secs(20), "the revert took {to_commit:?}");
    assert_eq!(canary_weight(&w), None, "the canary is gone");
    assert!(w.out("hackweek/configmap-canary-techdocs-1-13-0.yaml").is_none());
    assert_eq!(s.metric("rampart_reverts_total", ""), Some(1.0));
    assert!(!s.logs().contains("judged as any commit"), "{}", s.logs());
    // an unrelated commit later does not bring it back
    w.exporter.set(50.0, 0.0);
    git_as(&w.fx.work(), ALICE, &["pull", "-q", "--ff-only", "origin", "main"]);
    let later = w.fx.push(ALICE, "describe the sandbox", |p| {
        edit(
            p,
            "tenants/sandbox.yaml",
            "description: ",
            "description: Still a sandbox. ",
        )
    });
    s.wait_applied("dir:out", &later, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(canary_weight(&w), None);
    assert_eq!(w.count("Rampart-Revert-Of"), 1, "one revert, never two");
    assert_eq!(s.metric("rampart_reverts_total", ""), Some(1.0));
    // the status says so, and exits 4 for the reverted rollout
    let st = rampart(
        &[
            "rollout",
            "status",
            NAME,
            "--state-dir",
            w.fx.path("state").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(st.code, 4, "{}", transcript(&st));
    assert!(st.stdout.contains("reverted"), "{}", st.stdout);
    // the same version again: held by the circuit breaker, until a platform member clears it
    let text = rollout("    - weight: 25\n      pause: 10m\n    - weight: 100");
    let again = w.fx.push(ALICE, "roll techdocs 1.13.0 out again", |p| {
        std::fs::write(p.join(ROLLOUT), &text).unwrap();
    });
    s.wait_applied("dir:out", &again, Duration::from_secs(30));
    s.wait("the rollout held", Duration::from_secs(10), |s| {
        state(s)["status"] == "held"
    });
    assert!(
        state(&s)["reason"].as_str().unwrap().contains("circuit breaker"),
        "{}",
        state(&s)
    );
    assert_eq!(canary_weight(&w), None, "a held rollout runs no canary");
    let clear = w.fx.push(
        ALICE,
        "techdocs 1.13.0 may try again\n\nRampart-Clear-Breaker: techdocs",
        |p| edit(p, "tenants/sandbox.yaml", "Still a sandbox. ", "Still a sandbox! "),
    );
    s.wait_applied("dir:out", &clear, Duration::from_secs(30));
    s.wait("the rollout running again", Duration::from_secs(20), |s| {
        state(s)["status"] == "running"
    });
    s.wait("its canary", Duration::from_secs(10), |_| canary_weight(&w) == Some(25));
    // the webhook heard about it, with a Slack-compatible text
    let deadline = Instant::now() + Duration::from_secs(10);
    while !received.lock().unwrap().iter().any(|e| e["kind"] == "revert") {
        assert!(
            Instant::now() < deadline,
            "no revert event: {:?}",
            received.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let events = received.lock().unwrap().clone();
    let e = events.iter().find(|e| e["kind"] == "revert").unwrap();
    assert!(e["text"].as_str().is_some_and(|t| t.contains("techdocs-1-13-0")), "{e}");
}

#[test]
fn no_data_holds_and_pauses_but_never_reverts() {
    // no traffic at all: 0/0 is NaN and there are fewer requests than minRequests
    let mut w = World::new(0.0, 0.0);
    let mut s = w.start("state", &[]);
    let added = w.add_rollout(QUICK);
    s.wait_applied("dir:out", &added, Duration::from_secs(30));
    s.wait("the rollout to pause", Duration::from_secs(30), |s| {
        state(s)["status"] == "paused"
    });
    let st = state(&s);
    assert_eq!(st["step"], 1, "{st}");
    assert!(st["reason"].as_str().unwrap().contains("inconclusive"), "{st}");
    assert_eq!(canary_weight(&w), Some(25), "a paused rollout keeps its step");
    // Prometheus gone: still nothing but holding
    let mut w2 = World::new(50.0, 0.0);
    let mut s2 = w2.start("state", &[]);
    let added2 = w2.add_rollout("    - weight: 25\n      pause: 10m\n    - weight: 100");
    s2.wait_applied("dir:out", &added2, Duration::from_secs(30));
    s2.wait("a passing check", Duration::from_secs(30), |s| {
        state(s)["checks"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["verdict"] == "pass"))
    });
    w2.exporter.set(50.0, 0.9);
    w2.prom = None; // killed
    s2.wait("the rollout to pause", Duration::from_secs(30), |s| {
        state(s)["status"] == "paused"
    });
    assert!(
        state(&s2)["checks"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .take(3)
            .all(|c| c["verdict"] == "inconclusive")
    );
    std::thread::sleep(Duration::from_secs(2));
    for (w, s) in [(&w, &s), (&w2, &s2)] {
        assert_eq!(w.count("Rampart-Revert-Of"), 0, "no false revert");
        assert_eq!(s.metric("rampart_reverts_total", ""), Some(0.0));
    }
    assert!(
        s.metric("rampart_slo_checks_total", "result=\"inconclusive\"")
            .unwrap_or(0.0)
            >= 3.0
    );
}

#[test]
fn a_sigkill_in_a_step_resumes_the_same_step_from_the_state_dir_or_the_notes() {
    let mut w = World::new(50.0, 0.0);
    let steps = "    - weight: 25\n      pause: 2s\n    - weight: 50\n      pause: 10m\n    - weight: 100";
    let mut s = w.start("state", &[]);
    let added = w.add_rollout(steps);
    s.wait_applied("dir:out", &added, Duration::from_secs(30));
    s.wait("step 2", Duration::from_secs(30), |s| state(s)["step"] == 2);
    let since = state(&s)["since"].clone();
    // wait until the step is in the remote's notes too
    s.wait("step 2 in the remote's notes", Duration::from_secs(20), |_| {
        let notes = w.remote_git(&["notes", "--ref", "rampart", "show", &added]);
        notes.contains("\"step\": 2")
    });
    unsafe { libc::kill(s.pid() as i32, libc::SIGKILL) };
    drop(s);
    for state_dir in ["state", "fresh-state"] {
        let mut again = w.start(state_dir, &[]);
        again.wait("the rollout's state", Duration::from_secs(30), |s| !state(s).is_null());
        std::thread::sleep(Duration::from_secs(2));
        let st = state(&again);
        assert_eq!(st["step"], 2, "{state_dir}: {st}");
        if state_dir == "state" {
            assert_eq!(st["since"], since, "{state_dir}: the step's clock did not restart");
        } else {
            // from the notes (which anyone who can push may write): the same step, its hold
            // from now — a note may claim a step, not that its window passed
            assert!(st["since"].as_i64() > since.as_i64(), "{state_dir}: {st}");
        }
        assert_eq!(canary_weight(&w), Some(50), "{state_dir}");
        unsafe { libc::kill(again.pid() as i32, libc::SIGKILL) };
    }
    assert_eq!(w.count("Rampart-Revert-Of") + w.count("Rampart-Promote-Of"), 0);
}

#[test]
fn a_promotion_the_policies_would_deny_pauses_instead_of_blocking_the_branch() {
    let mut w = World::new(50.0, 0.0);
    let mut s = w.start("state", &[]);
    // unsigned: fine for the rollout's own (team and free) tenants, but promoting it would make
    // every enterprise tenant that runs techdocs run an unsigned version
    let signed = rollout(QUICK);
    let start = signed.find("  signature: |").unwrap();
    let end = signed.find("  tenants:").unwrap();
    let unsigned = format!("{}{}", &signed[..start], &signed[end..]);
    w.added = w.fx.push(ALICE, "roll an unsigned techdocs 1.13.0 out", |p| {
        std::fs::write(p.join(ROLLOUT), &unsigned).unwrap();
    });
    let added = w.added.clone();
    s.wait_applied("dir:out", &added, Duration::from_secs(30));
    s.wait("the rollout to pause", Duration::from_secs(40), |s| {
        state(s)["status"] == "paused"
    });
    let st = state(&s);
    let reason = st["reason"].as_str().unwrap();
    assert!(reason.contains("promotion would be denied"), "{st}");
    assert!(reason.contains("enterprise-tenants-run-trusted-signed-plugins"), "{st}");
    assert_eq!(w.remote_tip(), added, "nothing was written into the branch");
    assert_eq!(w.count("Rampart-Promote-Of"), 0);
    assert!(s.target("dir:out")["blocked"].is_null(), "the target is not blocked");
}
