//! A tenant's own objects: Namespace, ResourceQuota, LimitRange, NetworkPolicies and the
//! owner teams' RoleBindings (pure).

use super::{Manifest, TENANT_LABEL, labels, manifest, quantity};
use crate::spec::{Object, TenantSpec};
use crate::units::Quantity as Q;
use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, Namespace, ResourceQuota, ResourceQuotaSpec,
};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicySpec};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use std::collections::BTreeMap;

/// The node label (and taint key) of a tenant's dedicated nodes.
pub const NODE_LABEL: &str = "rampart.dev/tenant";

pub fn meta(name: &str, namespace: Option<&str>, tenant: &str, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some(labels(tenant, component)),
        ..ObjectMeta::default()
    }
}

/// A quota value as written, normalised (`0.5` → `500m`); as written if it does not parse
/// (validation has reported it already).
pub fn q(v: &serde_json::Value) -> Quantity {
    Quantity(match Q::from_json(v) {
        Ok(q) => quantity(q.nanos),
        Err(_) => v.as_str().map_or_else(|| v.to_string(), str::to_owned),
    })
}

pub fn objects(t: &Object<TenantSpec>) -> Vec<Manifest> {
    let name = t.name();
    let ns = Some(name);
    let mut out = Vec::new();

    let mut ns_meta = meta(name, None, name, "namespace");
    if t.spec.isolation == "dedicated-nodes" {
        // enforced by the PodNodeSelector and PodTolerationRestriction admission plugins
        ns_meta.annotations = Some(BTreeMap::from([
            (
                "scheduler.alpha.kubernetes.io/node-selector".to_owned(),
                format!("{NODE_LABEL}={name}"),
            ),
            (
                "scheduler.alpha.kubernetes.io/defaultTolerations".to_owned(),
                format!(r#"[{{"key":"{NODE_LABEL}","operator":"Equal","value":"{name}","effect":"NoSchedule"}}]"#),
            ),
        ]));
    }
    ns_meta
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert("rampart.dev/isolation".to_owned(), t.spec.isolation.clone());
    out.push(manifest(
        &Namespace {
            metadata: ns_meta,
            ..Namespace::default()
        },
        name,
    ));

    let quota = &t.spec.quota;
    let hard = BTreeMap::from([
        ("requests.cpu".to_owned(), q(&quota.cpu)),
        ("limits.cpu".to_owned(), q(&quota.cpu)),
        ("requests.memory".to_owned(), q(&quota.memory)),
        ("limits.memory".to_owned(), q(&quota.memory)),
        ("requests.storage".to_owned(), q(&quota.storage)),
        ("pods".to_owned(), Quantity(quota.pods.to_string())),
    ]);
    out.push(manifest(
        &ResourceQuota {
            metadata: meta("quota", ns, name, "quota"),
            spec: Some(ResourceQuotaSpec {
                hard: Some(hard),
                ..ResourceQuotaSpec::default()
            }),
            ..ResourceQuota::default()
        },
        name,
    ));

    let pair = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])
    };
    out.push(manifest(
        &LimitRange {
            metadata: meta("defaults", ns, name, "quota"),
            spec: Some(LimitRangeSpec {
                limits: vec![LimitRangeItem {
                    type_: "Container".to_owned(),
                    default_request: Some(pair("100m", "128Mi")),
                    default: Some(pair("500m", "512Mi")),
                    max: Some(BTreeMap::from([
                        ("cpu".to_owned(), q(&quota.cpu)),
                        ("memory".to_owned(), q(&quota.memory)),
                    ])),
                    ..LimitRangeItem::default()
                }],
            }),
        },
        name,
    ));

    let policy = |policy_name: &str, ingress: Option<Vec<NetworkPolicyIngressRule>>| NetworkPolicy {
        metadata: meta(policy_name, ns, name, "network"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress,
            ..NetworkPolicySpec::default()
        }),
    };
    out.push(manifest(&policy("default-deny", None), name));
    out.push(manifest(
        &policy(
            "allow-same-tenant",
            Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    pod_selector: Some(LabelSelector::default()),
                    ..NetworkPolicyPeer::default()
                }]),
                ..NetworkPolicyIngressRule::default()
            }]),
        ),
        name,
    ));
    let mut allow: Vec<&String> = t.spec.network.allow_from.iter().filter(|a| *a != name).collect();
    allow.sort();
    allow.dedup();
    if !allow.is_empty() {
        let from = allow
            .into_iter()
            .map(|other| NetworkPolicyPeer {
                namespace_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([(TENANT_LABEL.to_owned(), other.clone())])),
                    ..LabelSelector::default()
                }),
                ..NetworkPolicyPeer::default()
            })
            .collect();
        out.push(manifest(
            &policy(
                "allow-from-tenants",
                Some(vec![NetworkPolicyIngressRule {
                    from: Some(from),
                    ..NetworkPolicyIngressRule::default()
                }]),
            ),
            name,
        ));
    }

    let mut owners: Vec<&String> = t.spec.owners.iter().collect();
    owners.sort();
    owners.dedup();
    for team in owners {
        out.push(manifest(
            &RoleBinding {
                metadata: meta(&format!("owners-{team}"), ns, name, "rbac"),
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".to_owned(),
                    kind: "ClusterRole".to_owned(),
                    name: "admin".to_owned(),
                },
                subjects: Some(vec![Subject {
                    api_group: Some("rbac.authorization.k8s.io".to_owned()),
                    kind: "Group".to_owned(),
                    name: team.clone(),
                    namespace: None,
                }]),
            },
            name,
        ));
    }
    out
}
