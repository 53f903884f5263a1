//! Prometheus' HTTP API (IO): the only module that knows its JSON. `query_range` and `query`
//! send the PromQL as a form parameter of a `POST` (percent-encoded by `form_urlencoded`, never
//! spliced into a URL or another string), read at most [`MAX_BODY`] bytes of the answer, keep
//! at most [`MAX_SERIES`] series of at most [`MAX_POINTS`] points, and parse it with serde_json
//! (its recursion limit on). Values keep Prometheus' `NaN`, `+Inf` and `-Inf`.
//!
//! The bearer token goes into the `Authorization` header only (marked sensitive); it is never
//! part of an error message or of `Debug` output, and a response that echoes it has it
//! replaced by `<token>`.

use crate::http_client::{Endpoint, Failure, UrlRules};
use hyper::header::{AUTHORIZATION, HeaderName, HeaderValue};
use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

/// The most bytes of an answer read; more is `too-large`.
pub const MAX_BODY: usize = 4 << 20;
/// The most series kept from one answer; more is `too-large`.
pub const MAX_SERIES: usize = 1000;
/// The most points kept per series (Prometheus' own limit per range query); more is
/// `too-large`.
pub const MAX_POINTS: usize = 11_000;

/// A Prometheus server, reached over HTTP/1 (`http://` or `https://`, a path prefix kept).
/// Cheap to share between threads: each call runs on the client's own current-thread runtime.
pub struct Client {
    endpoint: Endpoint,
    /// The URL as given (it holds no credentials: those are refused).
    url: String,
    prefix: String,
    auth: Option<HeaderValue>,
    token: Option<String>,
    rt: tokio::runtime::Runtime,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// One series of an answer: its labels and its `(unix time, value)` points, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(f64, f64)>,
}

/// Why a query gave no answer. `kind` is one of `unreachable`, `timeout`, `http-status`,
/// `bad-query` (Prometheus refused the PromQL), `bad-response` (not Prometheus' JSON) and
/// `too-large`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryError {
    pub kind: &'static str,
    pub message: String,
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for QueryError {}

fn error(kind: &'static str, message: impl Into<String>) -> QueryError {
    QueryError {
        kind,
        message: message.into(),
    }
}

impl Client {
    /// A client for the Prometheus at `url` (`http://host:9090`, `https://host/prom`), sending
    /// `token` as a bearer token when given.
    pub fn new(url: &str, token: Option<String>) -> Result<Client, String> {
        let rules = UrlRules {
            query: false,
            echo: true,
        };
        let endpoint = Endpoint::new(url, rules, CONNECT_TIMEOUT).map_err(|e| format!("prometheus URL {e}"))?;
        let token = token.filter(|t| !t.is_empty());
        let auth = match &token {
            Some(t) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {t}"))
                    .map_err(|_| "the prometheus token holds characters a header cannot".to_owned())?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let prefix = endpoint.path().trim_end_matches('/').to_owned();
        Ok(Client {
            endpoint,
            url: url.to_owned(),
            prefix,
            auth,
            token,
            rt: crate::http_client::runtime()?,
        })
    }

    /// `/api/v1/query_range` over `[end - window, end]` every `step`; values as f64
    /// (Prometheus sends strings: "NaN", "+Inf", "-Inf" kept as such).
    pub fn query_range(
        &self,
        query: &str,
        end: f64,
        window: Duration,
        step: Duration,
        timeout: Duration,
    ) -> Result<Vec<Series>, QueryError> {
        let start = end - window.as_secs_f64();
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", query)
            .append_pair("start", &seconds(start))
            .append_pair("end", &seconds(end))
            .append_pair("step", &seconds(step.as_secs_f64().max(0.001)))
            .append_pair("timeout", &seconds(timeout.as_secs_f64()))
            .finish();
        self.call("/api/v1/query_range", form, timeout)
    }

    /// `/api/v1/query` at `at` (unix seconds); each Series has one point.
    pub fn query(&self, query: &str, at: f64, timeout: Duration) -> Result<Vec<Series>, QueryError> {
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", query)
            .append_pair("time", &seconds(at))
            .append_pair("timeout", &seconds(timeout.as_secs_f64()))
            .finish();
        self.call("/api/v1/query", form, timeout)
    }

    fn call(&self, api: &str, form: String, timeout: Duration) -> Result<Vec<Series>, QueryError> {
        let headers: Vec<(HeaderName, HeaderValue)> = self.auth.iter().map(|v| (AUTHORIZATION, v.clone())).collect();
        let path = format!("{}{api}", self.prefix);
        let answer = self.rt.block_on(self.endpoint.post(
            &path,
            "application/x-www-form-urlencoded",
            &headers,
            form.into_bytes(),
            timeout,
            MAX_BODY,
        ));
        let at = format!("{}{path}", self.endpoint.origin());
        let response = answer.map_err(|f| match f {
            Failure::Unreachable(m) => error("unreachable", format!("{at}: {}", self.clean(&m))),
            Failure::Timeout => error("timeout", format!("{at}: no answer within {timeout:?}")),
            Failure::TooLarge { status, limit } => error(
                "too-large",
                format!("{at}: HTTP {status}: the answer is larger than {limit} bytes"),
            ),
        })?;
        let parsed = serde_json::from_slice::<Answer>(&response.body);
        let ok = (200..300).contains(&response.status);
        match parsed {
            Ok(Answer {
                status,
                data: Some(data),
                ..
            }) if ok && status == "success" => series(data).map_err(|n| {
                error(
                    "too-large",
                    format!("{at}: the answer has more than {n} series or points"),
                )
            }),
            Ok(Answer {
                error_type,
                error: message,
                ..
            }) if error_type.is_some() || message.is_some() => {
                let message = excerpt(&self.clean(message.as_deref().unwrap_or("")));
                let kind = match (response.status, error_type.as_deref()) {
                    (400 | 422, _) | (_, Some("bad_data" | "execution")) => "bad-query",
                    (_, Some("timeout" | "canceled")) => "timeout",
                    _ if ok => "bad-response",
                    _ => "http-status",
                };
                Err(error(
                    kind,
                    format!(
                        "{at}: HTTP {}: {}: {message}",
                        response.status,
                        error_type.as_deref().unwrap_or("error")
                    ),
                ))
            }
            _ if !ok => Err(error(
                "http-status",
                format!(
                    "{at}: HTTP {}: {}",
                    response.status,
                    excerpt(&self.clean(&String::from_utf8_lossy(&response.body)))
                ),
            )),
            Ok(_) => Err(error("bad-response", format!("{at}: a success without data"))),
            Err(e) => Err(error(
                "bad-response",
                format!(
                    "{at}: not Prometheus' JSON ({e}): {}",
                    excerpt(&self.clean(&String::from_utf8_lossy(&response.body)))
                ),
            )),
        }
    }

    /// `text` made safe for a message: one line, hidden characters visible, the token gone.
    fn clean(&self, text: &str) -> String {
        let mut out = crate::diagnostic::visible(text, &[]);
        if let Some(t) = &self.token {
            out = out.replace(t.as_str(), "<token>");
        }
        redact_bearer(&out)
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Seconds as Prometheus reads them (a decimal, to the millisecond).
fn seconds(s: f64) -> String {
    let text = format!("{s:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The start of a text already cleaned (the token is redacted in the whole text first, so a
/// cut cannot leave part of it), for a message.
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// `Bearer <credential>` in a text, whoever's credential it is, replaced by `Bearer <token>`.
fn redact_bearer(text: &str) -> String {
    // (ASCII lowercasing keeps every byte where it was)
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while let Some(i) = lower[at..].find("bearer ") {
        let start = at + i + 7;
        out.push_str(&text[at..start]);
        let after = &text[start..];
        let end = after
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(after.len());
        if end > 0 {
            out.push_str("<token>");
        }
        at = start + end;
    }
    out.push_str(&text[at..]);
    out
}

/// Prometheus' envelope (`status`, `data`, `errorType`, `error`; `warnings` ignored).
#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Matrix(Bounded<RawSeries, MAX_SERIES>),
    Vector(Bounded<RawSeries, MAX_SERIES>),
    Scalar(RawPoint),
    String(IgnoredAny),
}

#[derive(Deserialize)]
struct RawSeries {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    #[serde(default)]
    values: Bounded<RawPoint, MAX_POINTS>,
    #[serde(default)]
    value: Option<RawPoint>,
}

/// `[1700000000.123, "0.5"]`.
#[derive(Deserialize)]
struct RawPoint(f64, String);

impl RawPoint {
    fn point(&self) -> (f64, f64) {
        (self.0, value(&self.1))
    }
}

/// A sample value as Prometheus writes it; anything else is NaN (no data).
fn value(s: &str) -> f64 {
    match s {
        "NaN" => f64::NAN,
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => s.parse().unwrap_or(f64::NAN),
    }
}

/// The series of an answer, or the bound that was exceeded.
fn series(data: Data) -> Result<Vec<Series>, usize> {
    let one = |raw: RawSeries| -> Result<Series, usize> {
        if raw.values.overflow {
            return Err(MAX_POINTS);
        }
        let mut points: Vec<(f64, f64)> = raw.values.items.iter().map(RawPoint::point).collect();
        points.extend(raw.value.as_ref().map(RawPoint::point));
        Ok(Series {
            labels: raw.metric,
            points,
        })
    };
    match data {
        Data::Matrix(list) | Data::Vector(list) => {
            if list.overflow {
                return Err(MAX_SERIES);
            }
            list.items.into_iter().map(one).collect()
        }
        Data::Scalar(p) => Ok(vec![Series {
            labels: BTreeMap::new(),
            points: vec![p.point()],
        }]),
        Data::String(_) => Ok(vec![]),
    }
}

/// A JSON array of which at most `N` elements are kept; the rest are skipped unparsed and
/// `overflow` is set.
struct Bounded<T, const N: usize> {
    items: Vec<T>,
    overflow: bool,
}

impl<T, const N: usize> Default for Bounded<T, N> {
    fn default() -> Self {
        Bounded {
            items: Vec::new(),
            overflow: false,
        }
    }
}

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for Bounded<T, N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Seq<T, const N: usize>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for Seq<T, N> {
            type Value = Bounded<T, N>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Bounded::default();
                while out.items.len() < N {
                    match seq.next_element()? {
                        Some(item) => out.items.push(item),
                        None => return Ok(out),
                    }
                }
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    out.overflow = true;
                }
                Ok(out)
            }
        }
        d.deserialize_seq(Seq::<T, N>(PhantomData))
    }
}

#[cfg(test)]
mod redaction {
    #[test]
    fn any_bearer_credential_is_redacted() {
        assert_eq!(
            super::redact_bearer("401: Authorization: Bearer abc.def-ghi \"x\" bearer  two BEARER z"),
            "401: Authorization: Bearer <token> \"x\" bearer  two BEARER <token>"
        );
        assert_eq!(super::excerpt(&"é".repeat(300)).chars().count(), 201);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Vec<Series>, usize> {
        let answer: Answer = serde_json::from_str(json).unwrap();
        series(answer.data.unwrap())
    }

    #[test]
    fn answers_of_every_result_type() {
        let m = parse(
            r#"{"status":"success","data":{"resultType":"matrix","result":[
                {"metric":{"job":"a"},"values":[[1.5,"1"],[2.5,"NaN"],[3.5,"+Inf"],[4.5,"-Inf"]]}]}}"#,
        )
        .unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].labels["job"], "a");
        let p = &m[0].points;
        assert_eq!(
            (p[0], p[2], p[3]),
            ((1.5, 1.0), (3.5, f64::INFINITY), (4.5, f64::NEG_INFINITY))
        );
        assert!(p[1].1.is_nan());
        let v =
            parse(r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[7,"0.25"]}]}}"#)
                .unwrap();
        assert_eq!(v[0].points, vec![(7.0, 0.25)]);
        let s = parse(r#"{"status":"success","data":{"resultType":"scalar","result":[7,"2"]}}"#).unwrap();
        assert_eq!(s[0].points, vec![(7.0, 2.0)]);
        // the order of the keys does not matter
        let late = parse(r#"{"data":{"result":[],"resultType":"vector"},"status":"success"}"#).unwrap();
        assert!(late.is_empty());
    }

    #[test]
    fn bounds_on_series_and_points() {
        let many: Vec<String> = (0..=MAX_SERIES)
            .map(|i| format!(r#"{{"metric":{{"i":"{i}"}},"value":[1,"1"]}}"#))
            .collect();
        let json = format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
            many.join(",")
        );
        assert_eq!(parse(&json), Err(MAX_SERIES));
        let points: Vec<String> = (0..=MAX_POINTS).map(|i| format!(r#"[{i},"1"]"#)).collect();
        let json = format!(
            r#"{{"status":"success","data":{{"resultType":"matrix","result":[{{"metric":{{}},"values":[{}]}}]}}}}"#,
            points.join(",")
        );
        assert_eq!(parse(&json), Err(MAX_POINTS));
    }

    #[test]
    fn seconds_to_the_millisecond() {
        assert_eq!(seconds(1_700_000_000.0), "1700000000");
        assert_eq!(seconds(1_700_000_000.123_4), "1700000000.123");
        assert_eq!(seconds(0.5), "0.5");
    }

    #[test]
    fn the_token_is_not_in_debug_output_or_errors() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = Client::new(&format!("http://127.0.0.1:{port}/prom"), Some("s3cret-token".into())).unwrap();
        let debug = format!("{client:?}");
        assert!(!debug.contains("s3cret") && debug.contains("<redacted>"), "{debug}");
        let err = client.query("up", 1.0, Duration::from_secs(2)).unwrap_err();
        assert_eq!(err.kind, "unreachable", "{err}");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert!(err.message.contains("/prom/api/v1/query"), "{err}");
        assert_eq!(client.clean("echo: Bearer s3cret-token"), "echo: Bearer <token>");
    }

    #[test]
    fn client_and_notifier_are_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<Client>();
        shared::<crate::notify::Notifier>();
    }

    #[test]
    fn urls_other_than_http_are_refused() {
        let err = Client::new("prom:9090", None).unwrap_err();
        assert_eq!(err, "prometheus URL `prom:9090` is not an http:// or https:// URL");
        assert!(Client::new("https://prom.example/prom/", None).is_ok());
    }
}
