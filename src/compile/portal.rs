//! A tenant's portal: the Deployment, Service and `dynamic-plugins` ConfigMap in the format
//! Red Hat Developer Hub reads (pure).

use super::tenant::{NODE_LABEL, meta};
use super::{Manifest, PORTAL_IMAGE, manifest, quantity, to_yaml};
use crate::spec::{EnabledPlugin, Object, PluginSpec, TenantSpec};
use crate::units::Quantity as Q;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource, PodSpec, PodTemplateSpec,
    ResourceRequirements, SecretKeySelector, Service, ServicePort, ServiceSpec, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The port Backstage listens on.
pub const PORTAL_PORT: i32 = 7007;
/// What the portal itself requests before its plugins: 250m CPU, 512Mi memory.
const BASE_CPU: i128 = 250_000_000;
const BASE_MEMORY: i128 = 512 * (1 << 20) * 1_000_000_000;

pub type Plugins<'a> = BTreeMap<&'a str, &'a Object<PluginSpec>>;

/// One `plugins:` entry of `dynamic-plugins.yaml`; `config` is the plugin's config with its
/// Secret references already `${ENV}` placeholders ([`super::secret::substitute_tenant`]:
/// the env vars are the Deployment's, named across the tenant).
pub fn plugin_entry(
    p: &EnabledPlugin,
    config: Option<Value>,
    package: &str,
    integrity: Option<&str>,
    redact: bool,
) -> Value {
    let mut entry = serde_json::Map::new();
    entry.insert("package".into(), json!(package));
    if let Some(i) = integrity {
        entry.insert("integrity".into(), json!(i));
    }
    entry.insert("disabled".into(), json!(p.disabled));
    if let Some(v) = config {
        entry.insert("pluginConfig".into(), if redact { super::redact(&v) } else { v });
    }
    Value::Object(entry)
}

/// `dynamic-plugins.yaml` for a list of entries.
pub fn dynamic_plugins(entries: Vec<Value>) -> String {
    to_yaml(&json!({
        "includes": ["dynamic-plugins.default.yaml"],
        "plugins": entries,
    }))
}

/// Sum of the portal's base requests and its enabled plugins' resources.
fn requests(t: &TenantSpec, plugins: &Plugins<'_>) -> (i128, i128) {
    let (mut cpu, mut memory) = (BASE_CPU, BASE_MEMORY);
    for p in t.plugins.iter().filter(|p| !p.disabled) {
        if let Some(spec) = plugins.get(p.name.as_str()).map(|o| &o.spec) {
            let add = |v: &Option<Value>| v.as_ref().and_then(|v| Q::from_json(v).ok()).map_or(0, |q| q.nanos);
            cpu = cpu.saturating_add(add(&spec.resources.cpu));
            memory = memory.saturating_add(add(&spec.resources.memory));
        }
    }
    (cpu, memory)
}

/// The env vars of the Secret references in a tenant's enabled plugins' configs, by name.
fn secret_env(t: &TenantSpec) -> Option<Vec<EnvVar>> {
    let vars: Vec<EnvVar> = super::secret::enabled_env(&t.plugins)
        .into_iter()
        .map(|e| EnvVar {
            name: e.env,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: e.secret,
                    key: e.key,
                    optional: None,
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        })
        .collect();
    (!vars.is_empty()).then_some(vars)
}

/// The portal Deployment of a tenant, stable or canary.
pub fn deployment(
    t: &Object<TenantSpec>,
    plugins: &Plugins<'_>,
    version: &str,
    track: &str,
    config_map: &str,
    extra_labels: &BTreeMap<String, String>,
) -> Deployment {
    let name = t.name();
    let deploy_name = if track == "stable" {
        "portal".to_owned()
    } else {
        format!("portal-{track}")
    };
    let mut selector = BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "portal".to_owned()),
        ("rampart.dev/track".to_owned(), track.to_owned()),
    ]);
    selector.extend(extra_labels.clone());
    let mut pod_labels = super::labels(name, "portal");
    pod_labels.extend(selector.clone());
    let mut m = meta(&deploy_name, Some(name), name, "portal");
    m.labels.get_or_insert_with(BTreeMap::new).extend(selector.clone());
    let (cpu, memory) = requests(&t.spec, plugins);
    let res = |cpu: i128, memory: i128| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(quantity(cpu))),
            ("memory".to_owned(), Quantity(quantity(memory))),
        ])
    };
    let dedicated = t.spec.isolation == "dedicated-nodes";
    let replicas = match (track, t.spec.tier.as_str()) {
        ("stable", "enterprise") => 3,
        ("stable", "team") => 2,
        _ => 1,
    };
    Deployment {
        metadata: m,
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "backstage".to_owned(),
                        image: Some(format!("{PORTAL_IMAGE}:{version}")),
                        env: secret_env(&t.spec),
                        ports: Some(vec![ContainerPort {
                            name: Some("http".to_owned()),
                            container_port: PORTAL_PORT,
                            ..ContainerPort::default()
                        }]),
                        resources: Some(ResourceRequirements {
                            requests: Some(res(cpu, memory)),
                            limits: Some(res(cpu.saturating_mul(2), memory.saturating_mul(2))),
                            ..ResourceRequirements::default()
                        }),
                        volume_mounts: Some(vec![VolumeMount {
                            name: "dynamic-plugins".to_owned(),
                            mount_path: "/opt/app-root/src/dynamic-plugins.yaml".to_owned(),
                            sub_path: Some("dynamic-plugins.yaml".to_owned()),
                            read_only: Some(true),
                            ..VolumeMount::default()
                        }]),
                        ..Container::default()
                    }],
                    volumes: Some(vec![Volume {
                        name: "dynamic-plugins".to_owned(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: config_map.to_owned(),
                            ..ConfigMapVolumeSource::default()
                        }),
                        ..Volume::default()
                    }]),
                    node_selector: dedicated.then(|| BTreeMap::from([(NODE_LABEL.to_owned(), name.to_owned())])),
                    tolerations: dedicated.then(|| {
                        vec![Toleration {
                            key: Some(NODE_LABEL.to_owned()),
                            operator: Some("Equal".to_owned()),
                            value: Some(name.to_owned()),
                            effect: Some("NoSchedule".to_owned()),
                            ..Toleration::default()
                        }]
                    }),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

pub fn service(tenant: &str, name: &str, track: &str) -> Service {
    Service {
        metadata: meta(name, Some(tenant), tenant, "portal"),
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([
                ("app.kubernetes.io/name".to_owned(), "portal".to_owned()),
                ("rampart.dev/track".to_owned(), track.to_owned()),
            ])),
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                port: 80,
                target_port: Some(IntOrString::String("http".to_owned())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

pub fn config_map(tenant: &str, name: &str, text: String) -> ConfigMap {
    ConfigMap {
        metadata: meta(name, Some(tenant), tenant, "portal"),
        data: Some(BTreeMap::from([("dynamic-plugins.yaml".to_owned(), text)])),
        ..ConfigMap::default()
    }
}

pub fn objects(t: &Object<TenantSpec>, plugins: &Plugins<'_>, version: &str, redact: bool) -> Vec<Manifest> {
    let name = t.name();
    let entries = t
        .spec
        .plugins
        .iter()
        .zip(super::secret::substitute_tenant(&t.spec.plugins))
        .filter_map(|(p, config)| {
            let spec = &plugins.get(p.name.as_str())?.spec;
            Some(plugin_entry(
                p,
                config.map(|c| c.0),
                &spec.artifact.package,
                Some(&spec.artifact.integrity),
                redact,
            ))
        })
        .collect();
    vec![
        manifest(
            &deployment(t, plugins, version, "stable", "dynamic-plugins", &BTreeMap::new()),
            name,
        ),
        manifest(&service(name, "portal", "stable"), name),
        manifest(&config_map(name, "dynamic-plugins", dynamic_plugins(entries)), name),
    ]
}
