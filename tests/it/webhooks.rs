//! Webhook verification and decoding on the payloads GitHub really sent (npm
//! `@octokit/webhooks-examples`, fetched by scripts/test), each signed as GitHub signs it.

use crate::support::*;
use rampart::github::webhook::{Event, Headers, Verifier, WebhookError, sign};

fn examples() -> Vec<(String, Vec<serde_json::Value>)> {
    let path = root().join(".ci/npm/webhooks-examples.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (scripts/test fetches it)", path.display()));
    let all: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    all.into_iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["examples"].as_array().unwrap().clone(),
            )
        })
        .collect()
}

const SECRET: &[u8] = b"rampart webhook test secret";

#[test]
fn every_real_payload_verifies_and_decodes() {
    let v = Verifier::new(Some(SECRET));
    let mut delivery = 0;
    let mut decoded = [0usize; 3];
    for (event, payloads) in examples() {
        for p in payloads {
            let body = serde_json::to_vec(&p).unwrap();
            delivery += 1;
            let id = format!("72d3162e-cc78-11e3-81ab-{delivery:012}");
            let headers = Headers {
                event: Some(&event),
                delivery: Some(&id),
                signature: Some(&sign(SECRET, &body)),
            };
            let got = v
                .accept(&headers, &body)
                .unwrap_or_else(|e| panic!("{event} {id}: {e}"));
            match (&*event, got) {
                ("pull_request", Event::PullRequest(pr)) => {
                    decoded[0] += 1;
                    assert_eq!(pr.number, p["number"].as_u64().unwrap());
                    assert_eq!(pr.head_sha, p["pull_request"]["head"]["sha"].as_str().unwrap());
                    assert_eq!(pr.base_ref, p["pull_request"]["base"]["ref"].as_str().unwrap());
                    assert_eq!(pr.author, p["pull_request"]["user"]["login"].as_str().unwrap());
                    assert_eq!(pr.repo.full_name, p["repository"]["full_name"].as_str().unwrap());
                }
                ("pull_request_review", Event::Review(r)) => {
                    decoded[1] += 1;
                    assert_eq!(r.reviewer, p["review"]["user"]["login"].as_str().unwrap());
                    assert_eq!(r.state, p["review"]["state"].as_str().unwrap().to_lowercase());
                    assert_eq!(r.commit_id, p["review"]["commit_id"].as_str().unwrap());
                }
                ("push", Event::Push(push)) => {
                    decoded[2] += 1;
                    assert_eq!(push.after, p["after"].as_str().unwrap());
                    assert_eq!(push.git_ref, p["ref"].as_str().unwrap());
                }
                (_, Event::Ignored { event: e }) => assert_eq!(e, event),
                (e, other) => panic!("{e} decoded as {other:?}"),
            }
            // the same delivery again is a replay; a changed body fails its signature
            assert_eq!(v.accept(&headers, &body), Err(WebhookError::Replayed(id.clone())));
            let mut forged = body.clone();
            forged.extend_from_slice(b" ");
            let fresh = format!("{id}-forged");
            let h2 = Headers {
                delivery: Some(&fresh),
                ..headers.clone()
            };
            assert_eq!(v.accept(&h2, &forged), Err(WebhookError::BadSignature));
            // (a refused delivery is not remembered: its id is still free for a genuine one)
            let mut other = body.clone();
            other.push(b'\n');
            let signed = sign(SECRET, &other);
            let h3 = Headers {
                delivery: Some(&fresh),
                signature: Some(&signed),
                ..headers.clone()
            };
            assert_eq!(
                v.accept(&h3, &other).map(|_| ()),
                Ok(()),
                "a forged delivery must not burn its id"
            );
            // the id is not signed: for the events rampart acts on, the same body under a new
            // id is a replay too
            if matches!(&*event, "pull_request" | "pull_request_review" | "push") {
                let again = format!("{id}-again");
                let h4 = Headers {
                    delivery: Some(&again),
                    ..headers.clone()
                };
                assert_eq!(v.accept(&h4, &body), Err(WebhookError::ReplayedBody(again.clone())));
            }
        }
    }
    assert!(decoded.iter().all(|n| *n > 0), "decoded {decoded:?}");
}

#[test]
fn malformed_payloads_are_errors_not_panics() {
    let v = Verifier::new(Some(SECRET));
    for (i, (event, body)) in [
        ("pull_request", &b"{}"[..]),
        ("pull_request", b"not json"),
        ("push", b"[1,2,3]"),
        ("pull_request_review", b"{\"action\": 1}"),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("bad-{i}");
        let h = Headers {
            event: Some(event),
            delivery: Some(&id),
            signature: Some(&sign(SECRET, body)),
        };
        let e = v.accept(&h, body).unwrap_err();
        assert!(matches!(e, WebhookError::Payload { .. }), "{e}");
        assert!(!e.to_string().contains(std::str::from_utf8(SECRET).unwrap()));
    }
    let h = Headers {
        event: None,
        delivery: Some("x"),
        signature: Some(&sign(SECRET, b"{}")),
    };
    assert_eq!(v.accept(&h, b"{}"), Err(WebhookError::MissingEvent));
}
