//! The outgoing HTTP/1 client that `observe::prometheus` and `notify` share (IO): URL checks,
//! a connect timeout and a deadline on the whole exchange, a response body read under a byte
//! limit. Built on what kube and octocrab compile already (hyper 1, hyper-util's legacy client,
//! hyper-rustls with the system's roots), so it adds no crate to the build.
//!
//! Every exchange opens its own connection (no pool): the callers send a request every few
//! seconds at most, and the runtimes they drive this from run only while a request is in
//! flight, so a pooled connection would sit unpolled between requests anyway.

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// One checked `http://` or `https://` URL and a client able to reach it.
pub(crate) struct Endpoint {
    /// `scheme://authority`, what logs may show: no credentials, path or query.
    origin: String,
    /// The URL's path and query as written (`/`, `/prom`, `/services/T0/B0/XXX?x=1`).
    path: String,
    client: Inner,
}

enum Inner {
    Plain(Client<HttpConnector, Full<Bytes>>),
    Tls(Client<HttpsConnector<HttpConnector>, Full<Bytes>>),
}

/// What a URL may hold besides scheme, host and port.
#[derive(Clone, Copy)]
pub(crate) struct UrlRules {
    /// A query string (`?token=…`): webhooks yes, a base URL no.
    pub query: bool,
    /// Quote the URL in error messages (a Prometheus URL: yes; a webhook URL is a secret).
    pub echo: bool,
}

/// Why an exchange produced no response.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No connection, or it broke: the cause chain (never the URL's path or query).
    Unreachable(String),
    /// The connect timeout or the deadline on the whole exchange passed.
    Timeout,
    /// The body of an answer with this status exceeded `limit` bytes.
    TooLarge { status: u16, limit: usize },
}

/// A response whose body was read in full.
pub(crate) struct Response {
    pub status: u16,
    pub body: Bytes,
}

impl Endpoint {
    pub(crate) fn new(url: &str, rules: UrlRules, connect_timeout: Duration) -> Result<Endpoint, String> {
        let shown = || {
            if rules.echo {
                format!("{} ", crate::diagnostic::quote(url))
            } else {
                String::new()
            }
        };
        let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
        let tls = if lower.starts_with("https://") {
            true
        } else if lower.starts_with("http://") {
            false
        } else {
            return Err(format!("{}is not an http:// or https:// URL", shown()));
        };
        if url.contains('#') {
            return Err(format!("{}has a fragment (`#…`); remove it", shown()));
        }
        let uri: Uri = url.parse().map_err(|e| format!("{}is not a valid URL: {e}", shown()))?;
        let authority = uri
            .authority()
            .filter(|a| !a.host().is_empty())
            .ok_or_else(|| format!("{}has no host", shown()))?;
        if authority.as_str().contains('@') {
            return Err("holds credentials (`user:password@`); they are not supported in the URL".into());
        }
        if uri.query().is_some() && !rules.query {
            return Err(format!("{}has a query string (`?…`); give the base URL only", shown()));
        }
        let origin = format!("{}://{}", if tls { "https" } else { "http" }, authority.as_str());
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();

        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        let builder = || {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_max_idle_per_host(0);
            b
        };
        let client = if tls {
            http.enforce_http(false);
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_native_roots()
                .map_err(|e| format!("cannot load the system's CA certificates for https: {e}"))?
                .https_only()
                .enable_http1()
                .wrap_connector(http);
            Inner::Tls(builder().build(https))
        } else {
            Inner::Plain(builder().build(http))
        };
        Ok(Endpoint { origin, path, client })
    }

    /// `scheme://host[:port]`: all of the URL that a log line may name.
    pub(crate) fn origin(&self) -> &str {
        &self.origin
    }

    /// The URL's path (and query) as written.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// `POST` `body` to `path_and_query` (starting with `/`) on this endpoint's origin, read
    /// the answer's body up to `limit` bytes, all within `timeout`.
    pub(crate) async fn post(
        &self,
        path_and_query: &str,
        content_type: &'static str,
        headers: &[(HeaderName, HeaderValue)],
        body: Vec<u8>,
        timeout: Duration,
        limit: usize,
    ) -> Result<Response, Failure> {
        let uri: Uri = format!("{}{}", self.origin, path_and_query)
            .parse()
            .map_err(|e| Failure::Unreachable(format!("invalid request path: {e}")))?;
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(CONTENT_TYPE, content_type)
            .header(USER_AGENT, concat!("rampart/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Failure::Unreachable(format!("invalid request: {e}")))?;
        let exchange = async {
            let response = match &self.client {
                Inner::Plain(c) => c.request(request).await,
                Inner::Tls(c) => c.request(request).await,
            }
            .map_err(|e| {
                if timed_out(&e) {
                    Failure::Timeout
                } else {
                    Failure::Unreachable(chain(&e))
                }
            })?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), limit)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                        Failure::TooLarge { status, limit }
                    } else {
                        Failure::Unreachable(format!("reading the response: {e}"))
                    }
                })?
                .to_bytes();
            Ok(Response { status, body })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(Failure::Timeout))
    }
}

/// An error and its causes, `: `-joined (hyper's own message alone is "client error (Connect)").
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Whether the connect timeout (an `io::Error` of kind `TimedOut` among the causes) ended it.
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if s.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = s.source();
    }
    false
}

/// A current-thread runtime for one client's requests.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the HTTP client's runtime: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROM: UrlRules = UrlRules {
        query: false,
        echo: true,
    };
    const HOOK: UrlRules = UrlRules {
        query: true,
        echo: false,
    };

    fn new(url: &str, rules: UrlRules) -> Result<Endpoint, String> {
        Endpoint::new(url, rules, Duration::from_secs(1))
    }

    #[test]
    fn urls_are_checked() {
        let e = new("http://prom:9090/prefix/", PROM).unwrap();
        assert_eq!((e.origin(), e.path()), ("http://prom:9090", "/prefix/"));
        let e = new("HTTPS://hooks.slack.com/services/T0/B0/XXX?x=1", HOOK).unwrap();
        assert_eq!(e.origin(), "https://hooks.slack.com");
        assert_eq!(e.path(), "/services/T0/B0/XXX?x=1");
        for (url, rules, message) in [
            ("ftp://x", PROM, "`ftp://x` is not an http:// or https:// URL"),
            ("prom:9090", PROM, "is not an http:// or https:// URL"),
            ("http://", PROM, "is not a valid URL"),
            ("http://h/?a=1", PROM, "has a query string"),
            ("http://h/#x", PROM, "has a fragment"),
            ("http://u:pw@h/", PROM, "holds credentials"),
            ("https://u:secret@h/", HOOK, "holds credentials"),
            ("file:///secret-path", HOOK, "is not an http:// or https:// URL"),
        ] {
            let err = new(url, rules).err().unwrap_or_else(|| panic!("{url} accepted"));
            assert!(err.contains(message), "{url}: {err}");
            if !rules.echo {
                assert!(!err.contains("secret"), "{url}: {err}");
            }
        }
    }
}
