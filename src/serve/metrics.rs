//! The service's metrics, in OpenMetrics text (prometheus-client). Names are stable and
//! documented in the README.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabel {
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApplyLabels {
    pub target: String,
    /// `applied`, `unchanged`, `blocked`, `failed`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub event: String,
    /// `accepted`, `ignored`, `refused`.
    pub result: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub reconcile_seconds: Histogram,
    pub applied_commit_time: Family<TargetLabel, Gauge<f64, AtomicU64>>,
    pub applies: Family<ApplyLabels, Counter>,
    pub denials: Family<TargetLabel, Counter>,
    pub webhooks: Family<WebhookLabels, Counter>,
    pub fetch_errors: Counter,
    pub behind: Family<TargetLabel, Gauge>,
    pub drift: Family<TargetLabel, Gauge>,
    pub notes_push_errors: Counter,
    pub last_fetch: Gauge<f64, AtomicU64>,
    pub rollout_steps: Family<RolloutLabels, Gauge>,
    pub slo_checks: Family<ResultLabel, Counter>,
    pub reverts: Counter,
    pub promotions: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabels {
    pub target: String,
    pub rollout: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("rampart");
        let reconcile_seconds = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]);
        registry.register(
            "reconcile_duration_seconds",
            "Wall time of one reconcile (fetch, authorise, compile, apply every target)",
            reconcile_seconds.clone(),
        );
        let applied_commit_time = Family::default();
        registry.register(
            "applied_commit_timestamp_seconds",
            "Commit time of the last source commit applied to each target",
            applied_commit_time.clone(),
        );
        let applies = Family::default();
        registry.register(
            "applies",
            "Applies by target and result (applied, unchanged, blocked, failed)",
            applies.clone(),
        );
        let denials = Family::default();
        registry.register(
            "policy_denials",
            "Commits a target stopped at because policy denied their change",
            denials.clone(),
        );
        let webhooks = Family::default();
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries by event and result (accepted, ignored, refused)",
            webhooks.clone(),
        );
        let fetch_errors = Counter::default();
        registry.register(
            "fetch_errors",
            "Fetches of the config repo that failed",
            fetch_errors.clone(),
        );
        let behind = Family::default();
        registry.register(
            "commits_behind",
            "First-parent commits between each target's applied commit and the branch tip",
            behind.clone(),
        );
        let drift = Family::default();
        registry.register(
            "drift_objects",
            "Objects whose live state differs from the applied revision at the last drift check",
            drift.clone(),
        );
        let notes_push_errors = Counter::default();
        registry.register(
            "notes_push_errors",
            "Pushes of refs/notes/rampart that failed (retried at the next reconcile)",
            notes_push_errors.clone(),
        );
        let last_fetch = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_fetch_timestamp_seconds",
            "When the config repo was last fetched successfully (alert when it grows old)",
            last_fetch.clone(),
        );
        let rollout_steps = Family::default();
        registry.register(
            "rollout_step",
            "The step each rollout is at on each target (0: not running: reverted, promoted or held)",
            rollout_steps.clone(),
        );
        let slo_checks = Family::default();
        registry.register(
            "slo_checks",
            "SLO measurements by result (pass, breaching, fail, inconclusive)",
            slo_checks.clone(),
        );
        let reverts = Counter::default();
        registry.register(
            "reverts",
            "Rollouts reverted by a commit (or a revert pull request)",
            reverts.clone(),
        );
        let promotions = Counter::default();
        registry.register(
            "promotions",
            "Rollouts promoted by a commit (or a promote pull request)",
            promotions.clone(),
        );
        Metrics {
            rollout_steps,
            slo_checks,
            reverts,
            promotions,
            last_fetch,
            registry,
            reconcile_seconds,
            applied_commit_time,
            applies,
            denials,
            webhooks,
            fetch_errors,
            behind,
            drift,
            notes_push_errors,
        }
    }

    pub fn apply(&self, target: &str, result: &str) {
        self.applies
            .get_or_create(&ApplyLabels {
                target: target.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    pub fn webhook(&self, event: &str, result: &str) {
        // (the event name is the sender's text: a fixed set of label values, so a flood of
        // made-up names cannot grow the registry)
        let event = match event {
            "push" | "ping" | "pull_request" | "pull_request_review" => event,
            _ => "other",
        };
        self.webhooks
            .get_or_create(&WebhookLabels {
                event: event.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    pub fn slo_check(&self, verdict: crate::observe::analysis::Verdict) {
        let result = serde_json::to_value(verdict)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        self.slo_checks.get_or_create(&ResultLabel { result }).inc();
    }

    pub fn rollout_step(&self, target: &str, rollout: &str, step: usize) {
        self.rollout_steps
            .get_or_create(&RolloutLabels {
                target: target.to_owned(),
                rollout: rollout.to_owned(),
            })
            .set(step as i64);
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}
