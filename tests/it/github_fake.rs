//! A local GitHub REST API over real HTTP (axum) for `rampart ci`: it answers with the
//! examples of GitHub's own OpenAPI description (npm `@octokit/openapi`, fetched by
//! scripts/test), adjusted to the test; records every call; and checks every response it
//! sends and every request body it receives against that description's schemas, so the fake
//! cannot drift from the real API.

use crate::support::{root, serve};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use std::sync::{Arc, Mutex, OnceLock};

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub body: Value,
    /// The `Authorization` header's scheme and the credential's first characters.
    pub auth: String,
}

/// What the fake knows and how it behaves.
#[derive(Default)]
pub struct World {
    pub calls: Vec<Call>,
    /// Comments on the pull request: (id, author login, body).
    pub comments: Vec<(u64, String, String)>,
    /// Reviews: (reviewer, state as GitHub spells it, commit id).
    pub reviews: Vec<(String, String, String)>,
    /// Answer 403 to check-run creation (a token without `checks: write`).
    pub no_checks: bool,
    /// Answer every call with this status and GitHub's error body.
    pub fail_with: Option<u16>,
    /// The `message` of that error body (default `fake failure <status>`).
    pub fail_message: Option<String>,
    /// Answer the first call with a secondary rate limit (403, `retry-after: 1`).
    pub rate_limited_once: bool,
    /// The login of a personal access token's user (`GET /user`); `None`: the Actions
    /// token, which `GET /user` refuses.
    pub pat_user: Option<String>,
    /// Check runs created: `(id, name, head_sha, external_id)`.
    pub check_runs: Vec<(u64, String, String, String)>,
    /// Carry out the first call to this route (`POST /check-runs`, as [`Call`]s are shown
    /// by `ci::routes`) but answer it 502, as when a proxy loses GitHub's answer.
    pub lose_answer_once: Option<String>,
    /// Pull requests, listed for a commit by `GET /repos/{o}/{r}/commits/{sha}/pulls`.
    pub pulls: Vec<FakePull>,
    /// Pull requests opened through `POST /repos/{o}/{r}/pulls`, listed (open ones) by
    /// `GET /repos/{o}/{r}/pulls`.
    pub opened: Vec<OpenedPull>,
    /// Problems found in the traffic (schema mismatches, unknown routes).
    pub problems: Vec<String>,
}

/// A pull request of the fake repository (whose default branch is `main`). GitHub lists it
/// for a commit that is its merge commit or one of its commits.
#[derive(Debug, Clone, Default)]
pub struct FakePull {
    pub number: u64,
    /// Its author's login, spelled as GitHub would show it.
    pub author: String,
    pub head_sha: String,
    pub base_ref: String,
    pub merge_commit_sha: Option<String>,
    /// Merged (`merged_at` set, closed); otherwise open.
    pub merged: bool,
    pub commits: Vec<String>,
}

/// A pull request opened through the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedPull {
    pub number: u64,
    /// The branch, as sent (`rampart/revert-x`, or `owner:branch`).
    pub head: String,
    pub base: String,
    pub title: String,
    pub body: String,
}

pub type Shared = Arc<Mutex<World>>;

/// The OpenAPI description, parsed once.
fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = root().join(".ci/npm/github-openapi.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (scripts/test fetches it)", path.display()));
        serde_json::from_str(&text).expect("the OpenAPI description is JSON")
    })
}

fn example(name: &str) -> Value {
    spec()["components"]["examples"][name]["value"].clone()
}

/// OpenAPI 3.0 schema → JSON Schema: component refs point into `$defs`, `nullable` becomes
/// "or null".
fn convert(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, x) in m {
                match k.as_str() {
                    "$ref" => {
                        let r = x
                            .as_str()
                            .unwrap_or_default()
                            .replace("#/components/schemas/", "#/$defs/");
                        out.insert(k.clone(), Value::String(r));
                    }
                    "nullable" | "example" | "examples" | "discriminator" | "xml" | "externalDocs" => {}
                    "properties" | "patternProperties" => {
                        let props = x
                            .as_object()
                            .map(|p| p.iter().map(|(n, s)| (n.clone(), convert(s))).collect())
                            .unwrap_or_default();
                        out.insert(k.clone(), Value::Object(props));
                    }
                    _ => {
                        out.insert(k.clone(), convert(x));
                    }
                }
            }
            if m.get("nullable") == Some(&Value::Bool(true)) {
                json!({"anyOf": [Value::Object(out), {"type": "null"}]})
            } else {
                Value::Object(out)
            }
        }
        Value::Array(a) => Value::Array(a.iter().map(convert).collect()),
        other => other.clone(),
    }
}

/// Problems of `instance` against `schema` (an OpenAPI schema object), as text.
fn check(schema: &Value, instance: &Value) -> Vec<String> {
    static DEFS: OnceLock<Value> = OnceLock::new();
    let defs = DEFS.get_or_init(|| convert(&spec()["components"]["schemas"]));
    let mut root = convert(schema);
    if let Value::Object(m) = &mut root {
        m.insert("$defs".to_owned(), defs.clone());
    }
    let validator = jsonschema::draft4::options()
        .should_validate_formats(false)
        .build(&root)
        .expect("the converted schema compiles");
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .take(5)
        .collect()
}

/// The schema of an operation's response (`status`) or request body (`None`).
fn schema_of(path: &str, method: &str, status: Option<u16>) -> Value {
    let op = &spec()["paths"][path][method];
    match status {
        Some(s) => {
            let mut r = op["responses"][s.to_string()].clone();
            if let Some(reference) = r.get("$ref").and_then(Value::as_str) {
                let name = reference.rsplit('/').next().unwrap_or_default();
                r = spec()["components"]["responses"][name].clone();
            }
            r["content"]["application/json"]["schema"].clone()
        }
        None => op["requestBody"]["content"]["application/json"]["schema"].clone(),
    }
}

fn user(login: &str) -> Value {
    let mut u = example("issue-comment")["user"].clone();
    u["login"] = json!(login);
    u["type"] = json!(if login.ends_with("[bot]") { "Bot" } else { "User" });
    u
}

/// The GitHub App of the fake (`GET /app`): the example's, slug `octoapp`.
const APP_SLUG: &str = "octoapp";

/// Who a credential acts as: the app's bot for an installation token, the PAT's user, or
/// the Actions bot.
fn author(world: &World, auth: &str) -> String {
    if auth.starts_with("Bearer ghs_ins") {
        format!("{APP_SLUG}[bot]")
    } else {
        world
            .pat_user
            .clone()
            .unwrap_or_else(|| "github-actions[bot]".to_owned())
    }
}

fn check_run(id: u64, name: &str, head_sha: &str, external_id: &str) -> Value {
    let mut run = example("check-run");
    run["id"] = json!(id);
    run["name"] = json!(name);
    run["head_sha"] = json!(head_sha);
    run["external_id"] = json!(external_id);
    run
}

/// A `pull-request-simple`: the example's, adjusted to `p`.
fn pull_simple(p: &FakePull) -> Value {
    let mut v = example("pull-request-simple-items")[0].clone();
    let url = format!(
        "https://api.github.com/repos/larkspur/platform-config/pulls/{}",
        p.number
    );
    v["number"] = json!(p.number);
    v["url"] = json!(url);
    v["user"] = user(&p.author);
    v["state"] = json!(if p.merged { "closed" } else { "open" });
    v["merged_at"] = if p.merged {
        json!("2026-11-20T10:00:00Z")
    } else {
        Value::Null
    };
    v["closed_at"] = v["merged_at"].clone();
    v["merge_commit_sha"] = json!(p.merge_commit_sha);
    v["head"]["ref"] = json!(format!("topic-{}", p.number));
    v["head"]["sha"] = json!(p.head_sha);
    v["head"]["label"] = json!(format!("larkspur:topic-{}", p.number));
    v["base"]["ref"] = json!(p.base_ref);
    v["base"]["label"] = json!(format!("larkspur:{}", p.base_ref));
    // (the example's team lacks `type`, which its own schema requires)
    v["requested_teams"] = json!([]);
    for side in ["head", "base"] {
        v[side]["repo"]["default_branch"] = json!("main");
        v[side]["repo"]["full_name"] = json!("larkspur/platform-config");
    }
    v
}

/// An opened pull request as GitHub shows it: `pull-request` (full) or, listed,
/// `pull-request-simple`.
fn opened_pull(p: &OpenedPull, full: bool) -> Value {
    let mut v = if full {
        example("pull-request")
    } else {
        example("pull-request-simple-items")[0].clone()
    };
    v["number"] = json!(p.number);
    v["url"] = json!(format!(
        "https://api.github.com/repos/larkspur/platform-config/pulls/{}",
        p.number
    ));
    v["html_url"] = json!(format!("https://github.com/larkspur/platform-config/pull/{}", p.number));
    v["title"] = json!(p.title);
    v["body"] = json!(p.body);
    v["state"] = json!("open");
    v["merged_at"] = Value::Null;
    v["closed_at"] = Value::Null;
    let branch = p.head.rsplit(':').next().unwrap_or_default();
    v["head"]["ref"] = json!(branch);
    v["head"]["label"] = json!(format!("larkspur:{branch}"));
    v["base"]["ref"] = json!(p.base);
    v["base"]["label"] = json!(format!("larkspur:{}", p.base));
    // (the example's team lacks `type`, which its own schema requires)
    v["requested_teams"] = json!([]);
    v
}

fn comment(id: u64, login: &str, body: &str) -> Value {
    let mut c = example("issue-comment");
    c["id"] = json!(id);
    c["body"] = json!(body);
    c["user"] = user(login);
    c["url"] = json!(format!(
        "https://api.github.com/repos/larkspur/platform-config/issues/comments/{id}"
    ));
    c
}

/// Route one request; `(operation path, method, status, body)`.
fn answer(
    world: &mut World,
    method: &Method,
    path: &str,
    query: &std::collections::HashMap<String, String>,
    body: &Value,
    auth: &str,
) -> Option<(&'static str, &'static str, u16, Value)> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("POST", ["repos", owner, _, "pulls"]) => {
            let text = |k: &str| body[k].as_str().unwrap_or_default().to_owned();
            let (head, base) = (text("head"), text("base"));
            let branch = head.rsplit(':').next().unwrap_or_default().to_owned();
            if world
                .opened
                .iter()
                .any(|p| p.head.rsplit(':').next() == Some(branch.as_str()) && p.base == base)
            {
                let message = format!("A pull request already exists for {owner}:{branch}.");
                return Some((
                    "/repos/{owner}/{repo}/pulls",
                    "post",
                    422,
                    json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest", "code": "custom", "message": message}], "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request"}),
                ));
            }
            let p = OpenedPull {
                number: 100 + world.opened.len() as u64,
                head,
                base,
                title: text("title"),
                body: text("body"),
            };
            world.opened.push(p.clone());
            Some(("/repos/{owner}/{repo}/pulls", "post", 201, opened_pull(&p, true)))
        }
        ("GET", ["repos", _, _, "pulls"]) => {
            let list = world
                .opened
                .iter()
                .filter(|p| {
                    let branch = p.head.rsplit(':').next().unwrap_or_default();
                    query.get("head").is_none_or(|h| h == &format!("larkspur:{branch}"))
                        && query.get("base").is_none_or(|b| b == &p.base)
                })
                .map(|p| opened_pull(p, false))
                .collect();
            Some(("/repos/{owner}/{repo}/pulls", "get", 200, Value::Array(list)))
        }
        ("GET", ["repos", _, _, "pulls", _, "reviews"]) => {
            let template = example("pull-request-review-items")[0].clone();
            let reviews = world
                .reviews
                .iter()
                .enumerate()
                .map(|(i, (login, state, commit))| {
                    let mut r = template.clone();
                    r["id"] = json!(100 + i);
                    r["user"] = user(login);
                    r["state"] = json!(state);
                    r["commit_id"] = json!(commit);
                    r
                })
                .collect();
            Some((
                "/repos/{owner}/{repo}/pulls/{pull_number}/reviews",
                "get",
                200,
                Value::Array(reviews),
            ))
        }
        ("GET", ["repos", _, _, "issues", _, "comments"]) => {
            let list = world
                .comments
                .iter()
                .map(|(id, login, b)| comment(*id, login, b))
                .collect();
            Some((
                "/repos/{owner}/{repo}/issues/{issue_number}/comments",
                "get",
                200,
                Value::Array(list),
            ))
        }
        ("POST", ["repos", _, _, "issues", _, "comments"]) => {
            let id = 1000 + world.comments.len() as u64;
            let text = body["body"].as_str().unwrap_or_default().to_owned();
            let login = author(world, auth);
            world.comments.push((id, login.clone(), text.clone()));
            Some((
                "/repos/{owner}/{repo}/issues/{issue_number}/comments",
                "post",
                201,
                comment(id, &login, &text),
            ))
        }
        // (octocrab edits with POST; GitHub's documented method is PATCH: both are routed)
        ("POST" | "PATCH", ["repos", _, _, "issues", "comments", id]) => {
            let id: u64 = id.parse().ok()?;
            let text = body["body"].as_str().unwrap_or_default().to_owned();
            let c = world.comments.iter_mut().find(|c| c.0 == id)?;
            c.2 = text.clone();
            let login = c.1.clone();
            Some((
                "/repos/{owner}/{repo}/issues/comments/{comment_id}",
                "patch",
                200,
                comment(id, &login, &text),
            ))
        }
        ("POST", ["repos", _, _, "check-runs"]) => {
            if world.no_checks {
                return Some((
                    "/repos/{owner}/{repo}/check-runs",
                    "post",
                    403,
                    json!({"message": "Resource not accessible by integration", "documentation_url": "https://docs.github.com/rest/checks/runs#create-a-check-run"}),
                ));
            }
            let id = 77 + world.check_runs.len() as u64;
            let text = |k: &str| body[k].as_str().unwrap_or_default().to_owned();
            world
                .check_runs
                .push((id, text("name"), text("head_sha"), text("external_id")));
            let mut run = check_run(id, &text("name"), &text("head_sha"), &text("external_id"));
            run["conclusion"] = body["conclusion"].clone();
            Some(("/repos/{owner}/{repo}/check-runs", "post", 201, run))
        }
        ("PATCH", ["repos", _, _, "check-runs", id]) => {
            let id: u64 = id.parse().ok()?;
            let (_, name, sha, external) = world.check_runs.iter().find(|r| r.0 == id)?;
            Some((
                "/repos/{owner}/{repo}/check-runs/{check_run_id}",
                "patch",
                200,
                check_run(id, name, sha, external),
            ))
        }
        ("GET", ["repos", _, _, "commits", sha, "pulls"]) => {
            let list = world
                .pulls
                .iter()
                .filter(|p| p.merge_commit_sha.as_deref() == Some(*sha) || p.commits.iter().any(|c| c == sha))
                .map(pull_simple)
                .collect();
            Some((
                "/repos/{owner}/{repo}/commits/{commit_sha}/pulls",
                "get",
                200,
                Value::Array(list),
            ))
        }
        ("GET", ["repos", _, _, "commits", sha, "check-runs"]) => {
            let runs: Vec<Value> = world
                .check_runs
                .iter()
                .filter(|r| r.2 == *sha)
                .map(|(id, name, sha, external)| check_run(*id, name, sha, external))
                .collect();
            Some((
                "/repos/{owner}/{repo}/commits/{ref}/check-runs",
                "get",
                200,
                json!({"total_count": runs.len(), "check_runs": runs}),
            ))
        }
        // who the credential is: a PAT's user; the Actions token may not ask
        ("GET", ["user"]) => Some(match &world.pat_user {
            Some(login) => {
                let mut u = example("private-user");
                u["login"] = json!(login);
                ("/user", "get", 200, u)
            }
            None => (
                "/user",
                "get",
                403,
                json!({"message": "Resource not accessible by integration", "documentation_url": "https://docs.github.com/rest/users/users#get-the-authenticated-user", "status": "403"}),
            ),
        }),
        // the GitHub App itself (JWT auth)
        ("GET", ["app"]) => {
            let mut app = example("integration");
            app["slug"] = json!(APP_SLUG);
            Some(("/app", "get", 200, app))
        }
        // GitHub App auth: an installation token for the app's JWT
        ("POST", ["app", "installations", _, "access_tokens"]) => {
            let mut t = example("installation-token");
            t["token"] = json!("ghs_installationtokenfortests000000000");
            t["expires_at"] = json!("2099-01-01T00:00:00Z");
            Some(("/app/installations/{installation_id}/access_tokens", "post", 201, t))
        }
        ("POST", ["repos", _, _, "statuses", _]) => {
            let mut s = example("status");
            s["state"] = body["state"].clone();
            s["context"] = body["context"].clone();
            Some(("/repos/{owner}/{repo}/statuses/{sha}", "post", 201, s))
        }
        _ => None,
    }
}

async fn handle(
    State(world): State<Shared>,
    method: Method,
    uri: Uri,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    let mut w = world.lock().unwrap();
    let path = uri.path().to_owned();
    let auth: String = headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .map(|h| h.chars().take(14).collect())
        .unwrap_or_default();
    w.calls.push(Call {
        method: method.to_string(),
        path: path.clone(),
        body: body.clone(),
        auth: auth.clone(),
    });
    if w.rate_limited_once {
        w.rate_limited_once = false;
        let reply = json!({"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.", "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"});
        return (StatusCode::FORBIDDEN, [("retry-after", "1")], axum::Json(reply)).into_response();
    }
    if let Some(status) = w.fail_with {
        let message = w
            .fail_message
            .clone()
            .unwrap_or_else(|| format!("fake failure {status}"));
        let reply = json!({"message": message, "documentation_url": "https://docs.github.com/rest"});
        return (StatusCode::from_u16(status).unwrap(), axum::Json(reply)).into_response();
    }
    let query: std::collections::HashMap<String, String> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect();
    let Some((op, op_method, status, reply)) = answer(&mut w, &method, &path, &query, &body, &auth) else {
        w.problems.push(format!("unexpected call {method} {path}"));
        return (StatusCode::NOT_FOUND, axum::Json(json!({"message": "Not Found"}))).into_response();
    };
    if !body.is_null() {
        for p in check(&schema_of(op, op_method, None), &body) {
            w.problems.push(format!("request {method} {path}: {p}"));
        }
    }
    if status < 300 {
        for p in check(&schema_of(op, op_method, Some(status)), &reply) {
            w.problems.push(format!("response to {method} {path}: {p}"));
        }
    }
    let route = format!(
        "{method} {}",
        path.trim_start_matches("/repos/larkspur/platform-config")
    );
    if w.lose_answer_once.as_deref() == Some(route.as_str()) {
        w.lose_answer_once = None;
        let reply = json!({"message": "Server Error"});
        return (StatusCode::BAD_GATEWAY, axum::Json(reply)).into_response();
    }
    // lists are paginated as GitHub does: `per_page` (default 30), `page`, a `Link` header
    let (reply, link) = match reply {
        Value::Array(items) if method == Method::GET => {
            let per_page: usize = query.get("per_page").and_then(|v| v.parse().ok()).unwrap_or(30);
            let page: usize = query.get("page").and_then(|v| v.parse().ok()).unwrap_or(1).max(1);
            let start = (page - 1) * per_page;
            let slice: Vec<Value> = items.iter().skip(start).take(per_page).cloned().collect();
            let link = (start + per_page < items.len()).then(|| {
                let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
                format!(
                    "<http://{host}{path}?per_page={per_page}&page={}>; rel=\"next\"",
                    page + 1
                )
            });
            (Value::Array(slice), link)
        }
        other => (other, None),
    };
    let mut response = (StatusCode::from_u16(status).unwrap(), axum::Json(reply)).into_response();
    if let Some(link) = link {
        response.headers_mut().insert("link", link.parse().unwrap());
    }
    response
}

/// `%3A` → `:` (query values as clients encode them).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The calls made, as `METHOD path` with the repository's prefix cut (`GET /pulls/7/reviews`).
pub fn routes(world: &World) -> Vec<String> {
    world
        .calls
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c.method,
                c.path.trim_start_matches("/repos/larkspur/platform-config")
            )
        })
        .collect()
}

/// Start the fake on a free loopback port; its base URL and its world. It runs until the
/// test process ends.
pub fn start(world: World) -> (String, Shared) {
    let shared: Shared = Arc::new(Mutex::new(world));
    let server = serve(axum::Router::new().fallback(handle).with_state(shared.clone()));
    let url = server.url();
    std::mem::forget(server);
    (url, shared)
}
