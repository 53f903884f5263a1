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
/// How long a connection may take to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one connection may live (keep-alive included).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
/// Connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 256;
/// Webhook bodies read at once (each may be up to 25 MB before its signature can be checked).
pub const MAX_WEBHOOK_BODIES: usize = 4;

/// Serve `app` on `listener` until `stop` resolves: every connection bounded in number, in the
/// time its headers take and in its lifetime, so idle or slow clients hold nothing for long.
pub async fn serve(listener: tokio::net::TcpListener, app: Router, stop: impl std::future::Future<Output = ()>) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let connections = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(stop);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // (out of file descriptors, say: wait a little instead of spinning)
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => return,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
            let conn = http.serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
            drop(permit);
        });
    }
}

pub struct HttpState {
    pub shared: Arc<Shared>,
    /// Webhook bodies being read (see [`MAX_WEBHOOK_BODIES`]).
    pub bodies: tokio::sync::Semaphore,
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
    // (bodies are read whole before their signature can be checked: only a few at once)
    let Ok(_reading) = s.bodies.try_acquire() else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many webhook deliveries are being read at once; GitHub retries".to_owned(),
        );
    };
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
        Ok(Event::Ignored { event: e }) if e == "ping" => {
            s.shared.metrics.webhook(&event, "ignored");
            (
                StatusCode::OK,
                "pong: the webhook reaches rampart and its signature checks out\n",
            )
                .into_response()
        }
        Ok(_) => {
            s.shared.metrics.webhook(&event, "ignored");
            (StatusCode::OK, "ignored: not a push to the tracked branch\n").into_response()
        }
        Err(e @ (WebhookError::Replayed(_) | WebhookError::ReplayedBody(_))) => {
            refuse(StatusCode::CONFLICT, e.to_string())
        }
        Err(e @ (WebhookError::MissingSignature | WebhookError::MalformedSignature | WebhookError::BadSignature)) => {
            refuse(StatusCode::UNAUTHORIZED, e.to_string())
        }
        Err(e) => refuse(StatusCode::BAD_REQUEST, e.to_string()),
    }
}
