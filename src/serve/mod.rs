//! `rampart serve`: the reconciler service. It tracks one branch of one config repo in a bare
//! mirror, and on every trigger (a poll every interval, with jitter; a verified GitHub `push`
//! webhook to the branch) runs one reconcile (`reconcile.rs`) on a thread of its own.
//! Triggers that arrive during a reconcile coalesce into one more run. The HTTP side
//! (`http.rs`) serves health, readiness, metrics, the status API and the webhook route; it
//! only reads what the reconcile publishes.
//!
//! The decisions are pure (`decide.rs`); the records live in the targets and in Git, so the
//! process keeps nothing that a restart with an empty state directory could not rebuild.

pub mod decide;
pub mod http;
pub mod metrics;
pub mod reconcile;
pub mod rollouts;

use decide::Block;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How the service was started (flags and environment, read by `cli::serve`).
#[derive(Debug, Clone)]
pub struct Config {
    /// The config repo's URL (or path), as given.
    pub repo: String,
    pub branch: String,
    /// The config repo's subdirectory in the repository (`""`: the whole tree).
    pub path: String,
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    pub interval: Duration,
    /// Authorise from this commit when a target holds objects but records none.
    pub baseline: Option<String>,
    /// With GitHub configured: deny commits no merged pull request brought in.
    pub require_pull_request: bool,
    /// Push `refs/notes/rampart` to the remote.
    pub push_notes: bool,
    /// How long SIGTERM waits for the current reconcile.
    pub shutdown_grace: Duration,
    /// How often targets that can drift (kubernetes) are compared with what they should hold.
    pub drift_interval: Option<Duration>,
    /// Re-apply drifted objects.
    pub self_heal: bool,
}

/// What the status API shows.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub repo: String,
    pub branch: String,
    pub ready: bool,
    /// The branch tip last fetched, and its commit time (seconds since the epoch).
    pub tip: Option<String>,
    pub tip_time: Option<i64>,
    pub last_fetch: Option<String>,
    /// Why the last fetch failed (the targets stay as they were: stale but serving).
    pub fetch_error: Option<String>,
    pub reconciles: u64,
    pub webhooks: bool,
    pub targets: Vec<TargetStatus>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetStatus {
    pub name: String,
    /// The last source commit the target holds.
    pub applied: Option<String>,
    pub applied_at: Option<String>,
    /// First-parent commits on the branch after the applied one.
    pub behind: usize,
    /// The commit the target stopped at, why, and the way out.
    pub blocked: Option<Block>,
    /// The last reconcile of this target failed (it is retried).
    pub error: Option<String>,
    /// `applied` or `unchanged`.
    pub last_result: Option<String>,
    /// The applied change was authorised from a commit the branch no longer contains.
    pub history_rewritten: bool,
    /// The last drift check (kubernetes targets, with --drift-interval).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftStatus>,
    /// The rollouts of the applied commit (and the last ones that ended).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rollouts: Vec<rollouts::RolloutStatus>,
}

/// The last drift check of a target.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftStatus {
    /// When it ran (RFC 3339).
    pub checked_at: String,
    /// The commit whose objects were compared.
    pub commit: String,
    #[serde(flatten)]
    pub found: crate::target::Drift,
}

/// What the reconcile thread and the HTTP side share.
pub struct Shared {
    pub metrics: metrics::Metrics,
    status: Mutex<Status>,
    trigger: Trigger,
    pub shutdown: AtomicBool,
}

impl Shared {
    pub fn new(status: Status) -> Shared {
        Shared {
            metrics: metrics::Metrics::new(),
            status: Mutex::new(status),
            trigger: Trigger::default(),
            shutdown: AtomicBool::new(false),
        }
    }

    pub fn status(&self) -> Status {
        self.status.lock().expect("not poisoned").clone()
    }

    pub fn update(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().expect("not poisoned"));
    }

    pub fn target_status(&self, name: &str) -> TargetStatus {
        self.status()
            .targets
            .into_iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| TargetStatus {
                name: name.to_owned(),
                ..TargetStatus::default()
            })
    }

    pub fn set_target(&self, t: TargetStatus) {
        self.update(|s| match s.targets.iter_mut().find(|x| x.name == t.name) {
            Some(x) => *x = t,
            None => s.targets.push(t),
        });
    }

    /// Ask for one more reconcile (coalesced with any already asked for).
    pub fn trigger(&self) {
        self.trigger.fire();
    }

    pub fn stop(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        self.trigger.fire();
    }

    pub fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }
}

/// A coalescing trigger: any number of fires while a run is going give one more run.
#[derive(Default)]
struct Trigger {
    pending: Mutex<bool>,
    cv: Condvar,
}

impl Trigger {
    fn fire(&self) {
        *self.pending.lock().expect("not poisoned") = true;
        self.cv.notify_all();
    }

    /// Wait until fired or `timeout` passed; clears the trigger. `true` when fired.
    fn wait(&self, timeout: Duration) -> bool {
        let guard = self.pending.lock().expect("not poisoned");
        let (mut guard, _) = self
            .cv
            .wait_timeout_while(guard, timeout, |p| !*p)
            .expect("not poisoned");
        std::mem::replace(&mut *guard, false)
    }
}

/// The poll interval with up to ±10 % jitter, so replicas and services do not poll in step.
pub fn jittered(interval: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let seed = u64::from(nanos) ^ u64::from(std::process::id()).rotate_left(17);
    let spread = interval.as_millis() as u64 / 10;
    if spread == 0 {
        return interval;
    }
    let offset = (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33) % (2 * spread + 1);
    (interval + Duration::from_millis(offset)).saturating_sub(Duration::from_millis(spread))
}

/// Run reconciles until `shared.stop()`: at once, then on every trigger or poll.
pub fn reconcile_loop(mut r: reconcile::Reconciler, shared: Arc<Shared>, interval: Duration) {
    let mut backoff = Duration::ZERO;
    loop {
        if shared.stopping() {
            return;
        }
        r.run();
        if shared.stopping() {
            return;
        }
        // an unreachable remote is retried sooner than the interval, backing off to it
        let failed = shared.status().fetch_error.is_some();
        backoff = if failed {
            (backoff * 2).clamp(Duration::from_secs(1), interval)
        } else {
            Duration::ZERO
        };
        let wait = if failed { backoff } else { jittered(interval) };
        // (a drift check due before the next poll wakes the loop for it)
        let wait = match r.drift_due_in() {
            Some(d) => wait.min(d.max(Duration::from_secs(1))),
            None => wait,
        };
        // (and so does a rollout's next measurement or step)
        let wait = match r.rollout_due_in() {
            Some(d) => wait.min(d.max(Duration::from_millis(200))),
            None => wait,
        };
        shared.trigger.wait(wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(60));
            assert!(d >= Duration::from_secs(54) && d <= Duration::from_secs(66), "{d:?}");
        }
    }

    #[test]
    fn fires_during_a_run_coalesce_into_one() {
        let t = Trigger::default();
        for _ in 0..100 {
            t.fire();
        }
        assert!(t.wait(Duration::from_millis(1)));
        assert!(!t.wait(Duration::from_millis(1)), "the hundred fires were one");
    }
}
