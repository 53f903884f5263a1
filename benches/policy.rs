//! Policy benchmark (scenario "authorise a whole repo"): every object of a corpus is
//! authorised as changed, on one thread, and the same entities, policies and requests are
//! written out so `bench/policy.sh` can evaluate them through cedarpy in the same run.
//!
//!     cargo bench --bench policy -- CORPUS_DIR OUT_DIR
//!
//! Prints one JSON object: load times, decisions per second, p50/p99 per decision, and the
//! allow/deny counts (cedarpy's decisions are compared with these by the script).

use cedar_policy::Authorizer;
use rampart::change::{Action, Change, Subject};
use rampart::pipeline;
use rampart::policy::Engine;
use rampart::policy::decide::{self, Identity};
use rampart::policy::model::{self, PluginFacts};
use rampart::source::Source;
use rampart::spec::{Kind, Object, Repo};
use std::path::PathBuf;
use std::time::{Duration, Instant};

// the allocator of the rampart binary, so the numbers are the binary's
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn updates<S>(objects: &[Object<S>], kind: Kind, out: &mut Vec<Change>) {
    for (i, o) in objects.iter().enumerate() {
        out.push(Change {
            action: Action::Update,
            subject: Subject::Object(kind),
            name: o.name().to_owned(),
            file: o.origin.file.clone(),
            doc: o.origin.doc,
            old: Some(i),
            new: Some(i),
            base_invalid: false,
        });
    }
}

/// Every object as an update of itself: the requests carry real attributes and contexts
/// (quota ratios of 100 %, no plugins added), and the policies decide on owners and teams.
fn all_changes(repo: &Repo) -> Vec<Change> {
    let mut out = Vec::new();
    updates(&repo.teams, Kind::Team, &mut out);
    updates(&repo.tenants, Kind::Tenant, &mut out);
    updates(&repo.plugins, Kind::Plugin, &mut out);
    updates(&repo.rollouts, Kind::Rollout, &mut out);
    out
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let [corpus, out] = &args[..] else {
        eprintln!("usage: cargo bench --bench policy -- CORPUS_DIR OUT_DIR");
        std::process::exit(1);
    };
    let out = PathBuf::from(out);
    std::fs::create_dir_all(&out).expect("create OUT_DIR");

    let t = Instant::now();
    let source = Source::dir(corpus.as_ref()).expect("corpus opens");
    let validated = pipeline::validate(&source, &|_, _| {}).expect("corpus reads");
    let read_yaml = t.elapsed();
    let policy_files = source
        .read_policies(&validated.repo.settings.limits)
        .expect("policies read")
        .files;
    let repo = validated.repo;

    let t = Instant::now();
    let (engine, diags) = Engine::load(&policy_files);
    let engine = engine.unwrap_or_else(|| panic!("policies do not load: {diags:#?}"));
    let load_policies = t.elapsed();

    // the author: a member of the first tenant's first owner team; two approvers from two
    // other teams, so owners, approvals and teams all take part in the decisions
    let teams: Vec<(String, Vec<String>)> = repo
        .teams
        .iter()
        .map(|t| (t.name().to_owned(), t.spec.members.clone()))
        .collect();
    let owner = &repo.tenants[0].spec.owners[0];
    let author = repo
        .teams
        .iter()
        .find(|t| &t.metadata.name == owner)
        .map(|t| t.spec.members[0].clone())
        .expect("owner team exists");
    let approvers: Vec<Identity> = teams
        .iter()
        .filter(|(n, _)| n != owner)
        .take(2)
        .map(|(_, m)| Identity::login(&m[0]))
        .collect();
    let (who, _) = decide::resolve_who(&teams, &Identity::login(&author), &approvers, "");
    let changes = all_changes(&repo);
    let facts = |of: model::FactsOf<'_>| {
        let (model::FactsOf::Plugin(name) | model::FactsOf::Rollout(name)) = of;
        PluginFacts {
            trust_score: (name.len() as i64 * 7) % 101,
            signature_verified: !name.len().is_multiple_of(3),
        }
    };

    let t = Instant::now();
    let m = model::build(&repo, &repo, &repo, &changes, &who, &facts, &engine).expect("model builds");
    let build_entities = t.elapsed();
    let t = Instant::now();
    let change = model::uid("Change", model::CHANGE_ID);
    let requests: Vec<_> = m
        .prepared
        .iter()
        .map(|p| p.request(&change, &engine.schema).expect("request matches the schema"))
        .collect();
    let build_requests = t.elapsed();

    let authorizer = Authorizer::new();
    // warm-up, and the decisions cedarpy must reproduce
    let decisions: Vec<bool> = requests
        .iter()
        .map(|r| decide::evaluate(&engine, &authorizer, r, &m).allowed)
        .collect();
    // throughput: the whole batch, three rounds, the best one; timed as rampart decides (the
    // policies sliced by action, evaluation errors turned into denials, advice looked up)
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        for r in &requests {
            std::hint::black_box(decide::evaluate(&engine, &authorizer, r, &m));
        }
        best = best.min(t.elapsed());
    }
    // latency: each decision timed on its own
    let mut each: Vec<Duration> = requests
        .iter()
        .map(|r| {
            let t = Instant::now();
            std::hint::black_box(decide::evaluate(&engine, &authorizer, r, &m));
            t.elapsed()
        })
        .collect();
    each.sort_unstable();

    // what a change reaches besides its objects (rampart only; cedarpy gets the requests
    // above): every plugin's version bumped at once, so each plugin change reaches every
    // tenant that lists it — one `reachTenant` request per class of alike tenants
    let mut head = repo.clone();
    head.plugins = repo
        .plugins
        .iter()
        .map(|p| {
            let mut spec = p.spec.clone();
            spec.version.push_str("-next");
            Object::new(p.metadata.clone(), spec, p.origin.clone())
        })
        .collect();
    let mut bumps = Vec::new();
    updates(&repo.plugins, Kind::Plugin, &mut bumps);
    let t = Instant::now();
    let bumped = model::build(&repo, &repo, &head, &bumps, &who, &facts, &engine).expect("model builds");
    let reach_build = t.elapsed();
    let reach: Vec<_> = bumped
        .prepared
        .iter()
        .flat_map(|p| p.reach.iter().map(|r| p.reach_request(r, &change, &engine.schema)))
        .map(|r| r.expect("reach request matches the schema"))
        .collect();
    let reached_names: usize = bumped
        .prepared
        .iter()
        .flat_map(|p| &p.reach)
        .map(|r| r.names.len())
        .sum();
    let t = Instant::now();
    for r in &reach {
        std::hint::black_box(decide::evaluate(&engine, &authorizer, r, &bumped));
    }
    let reach_time = t.elapsed();

    // the same inputs for cedarpy
    let policies: String = [rampart::policy::DEFAULTS.to_owned()]
        .into_iter()
        .chain(
            policy_files
                .iter()
                .map(|f| String::from_utf8_lossy(&f.bytes).into_owned()),
        )
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(out.join("policies.cedar"), policies).expect("write policies");
    std::fs::write(out.join("schema.cedarschema"), rampart::policy::SCHEMA).expect("write schema");
    let entities = m.entities.to_json_value().expect("entities serialize");
    std::fs::write(out.join("entities.json"), entities.to_string()).expect("write entities");
    let reqs: Vec<serde_json::Value> = requests
        .iter()
        .map(|r| {
            serde_json::json!({
                "principal": r.principal().expect("known").to_string(),
                "action": r.action().expect("known").to_string(),
                "resource": r.resource().expect("known").to_string(),
                "context": r.context().expect("known").to_json_value().expect("context serializes"),
            })
        })
        .collect();
    std::fs::write(out.join("requests.json"), serde_json::Value::Array(reqs).to_string()).expect("write requests");
    std::fs::write(
        out.join("decisions.json"),
        serde_json::to_string(&decisions).expect("decisions serialize"),
    )
    .expect("write decisions");

    let n = requests.len();
    let allowed = decisions.iter().filter(|d| **d).count();
    let ms = |d: Duration| (d.as_secs_f64() * 1e4).round() / 10.0;
    let report = serde_json::json!({
        "requests": n,
        "entities": entities.as_array().map_or(0, Vec::len),
        "allowed": allowed,
        "denied": n - allowed,
        "readYamlMs": ms(read_yaml),
        "loadPoliciesMs": ms(load_policies),
        "buildEntitiesMs": ms(build_entities),
        "buildRequestsMs": ms(build_requests),
        "decisionsPerSecond": (n as f64 / best.as_secs_f64()).round(),
        "p50Us": (percentile(&each, 0.50) * 100.0).round() / 100.0,
        "p99Us": (percentile(&each, 0.99) * 100.0).round() / 100.0,
        "maxUs": (percentile(&each, 1.0) * 100.0).round() / 100.0,
        "reachPluginBumps": bumps.len(),
        "reachRequests": reach.len(),
        "reachedTenants": reached_names,
        "reachBuildMs": ms(reach_build),
        "reachDecideMs": ms(reach_time),
    });
    println!("{report}");
}
