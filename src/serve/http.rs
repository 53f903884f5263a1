//! The service's HTTP side (axum): `/healthz`, `/readyz`, `/metrics` (OpenMetrics),
//! `GET /api/v1/status` and `POST /webhook/github`. Every request has a deadline, bodies are
//! capped while they are read, and unknown routes are 404. The webhook route verifies the
//! HMAC before reading a byte of the payload (`github::webhook`), and a push to the tracked
//! branch only *triggers* a reconcile: what is applied is always decided from Git itself.

use super::Shared;
use crate::github::webhook::{self, Event, Headers, Verifier, WebhookError};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;
use std::time::Duration;

/// The deadline of one request (reading the body included).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub struct HttpState {
    pub shared: Arc<Shared>,
    /// `None`: no webhook secret configured, the route answers 404.
    pub verifier: Option<Verifier>,
    /// The tracked branch, as a ref (`refs/heads/main`).
    pub branch_ref: String,
}

pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .route("/webhook/github", post(webhook))
        .layer(middleware::from_fn(deadline))
        .with_state(state)
}

async fn deadline(req: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => (StatusCode::REQUEST_TIMEOUT, "request timed out\n").into_response(),
    }
}

async fn readyz(State(s): State<Arc<HttpState>>) -> Response {
    let st = s.shared.status();
    if st.ready {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let why = st
            .fetch_error
            .unwrap_or_else(|| "the first fetch has not finished".to_owned());
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")).into_response()
    }
}

async fn metrics(State(s): State<Arc<HttpState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.shared.metrics.encode(),
    )
        .into_response()
}

async fn status(State(s): State<Arc<HttpState>>) -> Response {
    axum::Json(s.shared.status()).into_response()
}

async fn webhook(State(s): State<Arc<HttpState>>, headers: HeaderMap, body: Body) -> Response {
    let Some(verifier) = &s.verifier else {
        return (
            StatusCode::NOT_FOUND,
            "webhooks are off: no webhook secret is configured (RAMPART_WEBHOOK_SECRET or --webhook-secret-file)\n",
        )
            .into_response();
    };
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let event = h("x-github-event").unwrap_or("").to_owned();
    let refuse = |code: StatusCode, msg: String| {
        s.shared.metrics.webhook(&event, "refused");
        tracing::warn!(event = %crate::diagnostic::visible(&event, &[]), status = code.as_u16(), reason = %msg, "webhook refused");
        (code, format!("{msg}\n")).into_response()
    };
    // GitHub's other content type (form-encoded `payload=`) is signed differently: say so
    let json = h("content-type").is_some_and(|c| {
        c.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    });
    if !json {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the webhook's content type must be application/json (set it in the webhook's settings)".to_owned(),
        );
    }
    if h("content-length")
        .and_then(|l| l.parse::<u64>().ok())
        .is_some_and(|l| l > webhook::MAX_BODY)
    {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            WebhookError::TooLarge {
                limit: webhook::MAX_BODY,
            }
            .to_string(),
        );
    }
    let bytes = match axum::body::to_bytes(body, webhook::MAX_BODY as usize).await {
        Ok(b) => b,
        Err(_) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                WebhookError::TooLarge {
                    limit: webhook::MAX_BODY,
                }
                .to_string(),
            );
        }
    };
    let hdrs = Headers {
        event: h("x-github-event"),
        delivery: h("x-github-delivery"),
        signature: h("x-hub-signature-256"),
    };
    match verifier.accept(&hdrs, &bytes) {
        Ok(Event::Push(p)) if p.git_ref == s.branch_ref => {
            s.shared.metrics.webhook(&event, "accepted");
            tracing::info!(after = %crate::diagnostic::visible(&p.after, &[]), "push to the tracked branch: reconciling");
            s.shared.trigger();
            (StatusCode::ACCEPTED, "reconcile triggered\n").into_response()
        }
        Ok(_) => {
            s.shared.metrics.webhook(&event, "ignored");
            (StatusCode::OK, "ignored: not a push to the tracked branch\n").into_response()
        }
        Err(e @ WebhookError::Replayed(_)) => refuse(StatusCode::CONFLICT, e.to_string()),
        Err(e @ (WebhookError::MissingSignature | WebhookError::MalformedSignature | WebhookError::BadSignature)) => {
            refuse(StatusCode::UNAUTHORIZED, e.to_string())
        }
        Err(e) => refuse(StatusCode::BAD_REQUEST, e.to_string()),
    }
}
