//! GitHub webhooks: verify `X-Hub-Signature-256`, refuse replays, decode the events rampart
//! acts on. The HTTP server (the service) mounts [`Verifier::accept`]; this module owns the
//! webhook JSON.
//!
//! Order matters: the body is capped while it is read ([`read_body`]), its HMAC is checked
//! before a byte of it is parsed, and a delivery id is remembered only once its signature
//! verified (so forged requests cannot fill the replay window).

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use std::collections::{HashSet, VecDeque};
use std::io::Read;
use std::sync::Mutex;

/// GitHub caps webhook payloads at 25 MB.
pub const MAX_BODY: u64 = 25 << 20;

/// How many delivery ids are remembered for replay detection.
pub const REPLAY_WINDOW: usize = 10_000;

/// Why a delivery was refused. Messages never contain the secret, the signature sent or the
/// body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("no webhook secret is configured: every delivery is refused (set the secret GitHub signs with)")]
    NoSecret,
    #[error("the request has no X-Hub-Signature-256 header")]
    MissingSignature,
    #[error("X-Hub-Signature-256 is not `sha256=` and 64 hex digits")]
    MalformedSignature,
    #[error("X-Hub-Signature-256 does not match the body (wrong secret, or the body was changed)")]
    BadSignature,
    #[error("the body is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the body could not be read: {0}")]
    Read(String),
    #[error("the request has no X-GitHub-Delivery header")]
    MissingDelivery,
    #[error("delivery {0} was already accepted (a replay)")]
    Replayed(String),
    #[error("the same body was already accepted under another delivery id than {0} (a replay)")]
    ReplayedBody(String),
    #[error("the request has no X-GitHub-Event header")]
    MissingEvent,
    #[error("the `{event}` payload is not what GitHub sends: {reason}")]
    Payload { event: String, reason: String },
}

/// The headers of one delivery.
#[derive(Debug, Clone, Default)]
pub struct Headers<'a> {
    /// `X-GitHub-Event`.
    pub event: Option<&'a str>,
    /// `X-GitHub-Delivery`.
    pub delivery: Option<&'a str>,
    /// `X-Hub-Signature-256`.
    pub signature: Option<&'a str>,
}

/// A repository, as events name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    pub full_name: String,
    pub clone_url: String,
}

/// An event rampart acts on, decoded into rampart's own types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    PullRequest(PullRequest),
    Review(Review),
    Push(Push),
    /// Any other event (or a `ping`): acknowledged and ignored.
    Ignored {
        event: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub action: String,
    pub number: u64,
    pub repo: Repo,
    pub author: String,
    pub base_ref: String,
    pub base_sha: String,
    pub head_ref: String,
    pub head_sha: String,
    pub draft: bool,
    pub installation: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    pub action: String,
    pub number: u64,
    pub repo: Repo,
    pub reviewer: String,
    /// `approved`, `changes_requested`, `commented`, `dismissed` (lower case, as webhooks send).
    pub state: String,
    /// The commit the review was made on.
    pub commit_id: String,
    pub installation: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    pub repo: Repo,
    pub git_ref: String,
    pub before: String,
    pub after: String,
    pub pusher: String,
    pub installation: Option<u64>,
}

/// Checks deliveries with one secret and remembers the last [`REPLAY_WINDOW`] delivery ids.
pub struct Verifier {
    secret: Option<Vec<u8>>,
    seen: Mutex<(VecDeque<String>, HashSet<String>)>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never the secret
        f.debug_struct("Verifier")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Verifier {
    /// `None` (or an empty secret) refuses every delivery.
    pub fn new(secret: Option<&[u8]>) -> Verifier {
        Verifier {
            secret: secret.filter(|s| !s.is_empty()).map(<[u8]>::to_vec),
            seen: Mutex::new((VecDeque::new(), HashSet::new())),
        }
    }

    /// Verify, refuse a replay, then decode. `Ok(Event::Ignored)` for events rampart does
    /// not act on (still verified and remembered).
    pub fn accept(&self, headers: &Headers<'_>, body: &[u8]) -> Result<Event, WebhookError> {
        let secret = self.secret.as_deref().ok_or(WebhookError::NoSecret)?;
        verify(secret, headers.signature, body)?;
        let delivery = headers
            .delivery
            .filter(|d| !d.is_empty())
            .ok_or(WebhookError::MissingDelivery)?;
        let event = headers
            .event
            .filter(|e| !e.is_empty())
            .ok_or(WebhookError::MissingEvent)?;
        {
            // the delivery id is not signed: a captured body replayed under a new id is caught
            // by the body's digest, for the events rampart acts on (their bodies carry commit
            // ids and timestamps, so two genuine deliveries never share one)
            use sha2::Digest;
            let acted_on = matches!(event, "pull_request" | "pull_request_review" | "push");
            let digest = acted_on.then(|| format!("sha256:{}", hex::encode(Sha256::digest(body))));
            let mut seen = self.seen.lock().expect("not poisoned");
            let (order, set) = &mut *seen;
            if set.contains(delivery) {
                return Err(WebhookError::Replayed(crop(delivery)));
            }
            if digest.as_ref().is_some_and(|d| set.contains(d)) {
                return Err(WebhookError::ReplayedBody(crop(delivery)));
            }
            for key in std::iter::once(delivery.to_owned()).chain(digest) {
                set.insert(key.clone());
                order.push_back(key);
            }
            while order.len() > 2 * REPLAY_WINDOW {
                if let Some(old) = order.pop_front() {
                    set.remove(&old);
                }
            }
        }
        decode(event, body)
    }
}

/// Read at most `limit` bytes of a body; more is [`WebhookError::TooLarge`] (the rest is
/// never read).
pub fn read_body(reader: impl Read, limit: u64) -> Result<Vec<u8>, WebhookError> {
    let mut out = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| WebhookError::Read(e.kind().to_string()))?;
    if out.len() as u64 > limit {
        return Err(WebhookError::TooLarge { limit });
    }
    Ok(out)
}

/// Check `X-Hub-Signature-256` (HMAC-SHA256 of the raw body, constant-time comparison).
pub fn verify(secret: &[u8], header: Option<&str>, body: &[u8]) -> Result<(), WebhookError> {
    let header = header.ok_or(WebhookError::MissingSignature)?;
    let hex_digest = header
        .strip_prefix("sha256=")
        .filter(|h| h.len() == 64)
        .ok_or(WebhookError::MalformedSignature)?;
    let expected = hex::decode(hex_digest).map_err(|_| WebhookError::MalformedSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    mac.verify_slice(&expected).map_err(|_| WebhookError::BadSignature)
}

/// The `sha256=…` header GitHub would send for `body` (tests and the local test server).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn crop(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(80).collect()
}

// ---- wire format: only the fields rampart reads

#[derive(Deserialize)]
struct WireRepo {
    full_name: String,
    clone_url: String,
}

#[derive(Deserialize)]
struct WireUser {
    login: String,
}

#[derive(Deserialize)]
struct WireInstallation {
    id: u64,
}

#[derive(Deserialize)]
struct WireRef {
    #[serde(rename = "ref")]
    git_ref: String,
    sha: String,
}

#[derive(Deserialize)]
struct WirePr {
    user: WireUser,
    base: WireRef,
    head: WireRef,
    #[serde(default)]
    draft: bool,
}

#[derive(Deserialize)]
struct WirePrEvent {
    action: String,
    number: u64,
    pull_request: WirePr,
    repository: WireRepo,
    installation: Option<WireInstallation>,
}

#[derive(Deserialize)]
struct WireReview {
    user: WireUser,
    state: String,
    commit_id: String,
}

#[derive(Deserialize)]
struct WireReviewPr {
    number: u64,
}

#[derive(Deserialize)]
struct WireReviewEvent {
    action: String,
    review: WireReview,
    pull_request: WireReviewPr,
    repository: WireRepo,
    installation: Option<WireInstallation>,
}

#[derive(Deserialize)]
struct WirePusher {
    name: String,
}

#[derive(Deserialize)]
struct WirePushEvent {
    #[serde(rename = "ref")]
    git_ref: String,
    before: String,
    after: String,
    pusher: WirePusher,
    repository: WireRepo,
    installation: Option<WireInstallation>,
}

/// Decode a verified payload.
pub fn decode(event: &str, body: &[u8]) -> Result<Event, WebhookError> {
    let bad = |e: serde_json::Error| WebhookError::Payload {
        event: crop(event),
        reason: e.to_string(),
    };
    let repo = |r: WireRepo| Repo {
        full_name: r.full_name,
        clone_url: r.clone_url,
    };
    Ok(match event {
        "pull_request" => {
            let e: WirePrEvent = serde_json::from_slice(body).map_err(bad)?;
            Event::PullRequest(PullRequest {
                action: e.action,
                number: e.number,
                repo: repo(e.repository),
                author: e.pull_request.user.login,
                base_ref: e.pull_request.base.git_ref,
                base_sha: e.pull_request.base.sha,
                head_ref: e.pull_request.head.git_ref,
                head_sha: e.pull_request.head.sha,
                draft: e.pull_request.draft,
                installation: e.installation.map(|i| i.id),
            })
        }
        "pull_request_review" => {
            let e: WireReviewEvent = serde_json::from_slice(body).map_err(bad)?;
            Event::Review(Review {
                action: e.action,
                number: e.pull_request.number,
                repo: repo(e.repository),
                reviewer: e.review.user.login,
                state: e.review.state.to_ascii_lowercase(),
                commit_id: e.review.commit_id,
                installation: e.installation.map(|i| i.id),
            })
        }
        "push" => {
            let e: WirePushEvent = serde_json::from_slice(body).map_err(bad)?;
            Event::Push(Push {
                repo: repo(e.repository),
                git_ref: e.git_ref,
                before: e.before,
                after: e.after,
                pusher: e.pusher.name,
                installation: e.installation.map(|i| i.id),
            })
        }
        other => Event::Ignored { event: crop(other) },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector GitHub publishes in "Validating webhook deliveries".
    #[test]
    fn githubs_published_test_vector() {
        let secret = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign(secret, body), header);
        assert_eq!(verify(secret, Some(header), body), Ok(()));
        assert_eq!(
            verify(secret, Some(header), b"Hello, World?"),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify(b"another secret", Some(header), body),
            Err(WebhookError::BadSignature)
        );
        for bad in [
            "sha1=757107ea",
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            "sha256=xyz",
            "sha256=",
        ] {
            assert_eq!(
                verify(secret, Some(bad), body),
                Err(WebhookError::MalformedSignature),
                "{bad}"
            );
        }
        assert_eq!(verify(secret, None, body), Err(WebhookError::MissingSignature));
    }

    #[test]
    fn bodies_are_capped_while_read() {
        assert_eq!(read_body(&b"12345"[..], 5).unwrap(), b"12345");
        assert_eq!(read_body(&b"123456"[..], 5), Err(WebhookError::TooLarge { limit: 5 }));
        // an endless body stops at the cap
        assert_eq!(
            read_body(std::io::repeat(b'x'), 1024),
            Err(WebhookError::TooLarge { limit: 1024 })
        );
    }

    #[test]
    fn no_secret_refuses_and_debug_hides_the_secret() {
        let v = Verifier::new(None);
        let h = Headers {
            event: Some("ping"),
            delivery: Some("1"),
            signature: Some("sha256=00"),
        };
        assert_eq!(v.accept(&h, b"{}"), Err(WebhookError::NoSecret));
        assert_eq!(Verifier::new(Some(b"")).accept(&h, b"{}"), Err(WebhookError::NoSecret));
        let v = Verifier::new(Some(b"hunter2"));
        assert!(!format!("{v:?}").contains("hunter2"));
    }
}
