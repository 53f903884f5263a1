//! Secrets in plugin config: which keys name one, and the Secret references that replace
//! literal values — each rendered as an env var of the portal container (pure).
//!
//! A reference is `{secretKeyRef: {name: SECRET, key: KEY}}` in place of a value. The portal
//! gets the env var `RAMPART_PLUGIN_<PLUGIN>_<PATH>` from the Kubernetes Secret, and the
//! rendered `pluginConfig` holds `${RAMPART_PLUGIN_<PLUGIN>_<PATH>}`, which Backstage
//! substitutes when it reads its config. The value itself never passes through rampart.

use crate::spec::EnabledPlugin;
use serde_json::{Map, Value};
use std::collections::HashSet;

/// The field of a reference object.
pub const REF_FIELD: &str = "secretKeyRef";

/// Last words of a key that hold a secret besides those with a [`SECRET_ENDINGS`] ending.
const SECRET_WORDS: [&str; 2] = ["authorization", "bearer"];
/// Endings of a last word that holds a secret: the word itself (`token`) or a key written
/// without word breaks (`adminpassword`, `githubtoken`, `clientsecret`, `apikey`).
const SECRET_ENDINGS: [&str; 9] = [
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "credential",
    "apikey",
    "privatekey",
    "accesskey",
];
/// Last two words of a key that holds a secret (`key` alone is too common: `sortKey`).
const SECRET_PAIRS: [[&str; 2]; 4] = [["api", "key"], ["private", "key"], ["access", "key"], ["secret", "key"]];

/// A word without what does not change its meaning here: trailing digits (`password1`,
/// `token2`) and a plural `s` (`tokens`, `secrets`, `keys`).
fn word_stem(w: &str) -> &str {
    let w = w.trim_end_matches(|c: char| c.is_ascii_digit());
    match w.strip_suffix('s') {
        Some(one) if one.ends_with("key") || SECRET_ENDINGS.iter().any(|e| one.ends_with(e)) => one,
        _ => w,
    }
}
/// `apiKey`, `api_key`, `API-Key`, `clientSECRET` → lowercase words (`api`, `key`): split at
/// `_`, `-`, `.`, spaces, and where the case turns from lower to upper (an acronym ends
/// before its last capital: `APIKey` → `api`, `key`).
pub fn words(key: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let chars: Vec<char> = key.chars().collect();
    let mut cur = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        let prev = i.checked_sub(1).map(|j| chars[j]);
        let next = chars.get(i + 1);
        let boundary = c.is_uppercase() && prev.is_some_and(|p| p.is_lowercase() || p.is_ascii_digit())
            || c.is_uppercase() && prev.is_some_and(char::is_uppercase) && next.is_some_and(|n| n.is_lowercase());
        if boundary && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        cur.extend(c.to_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Whether a config key names a secret — the one rule both R325 (a literal under such a key
/// is an error) and the plan's redaction (its value is shown as a digest) use. The key is
/// split into [`words`], each taken without trailing digits or a plural `s`; it names a
/// secret when its last word ends with one of [`SECRET_ENDINGS`] (`token`, `adminpassword`)
/// or is one of [`SECRET_WORDS`], or its last two are one of [`SECRET_PAIRS`]
/// (`apiKey`, `clientSecret`, `GITHUB_TOKEN`, `privateKey`, `Authorization`, `tokens`,
/// `password1`). So a key *about* a secret (`tokenTtl`, `passwordPolicy`, `secretName`) is
/// not one, and neither is Backstage's `auth` section (its secret leaves are).
pub fn is_secret_key(key: &str) -> bool {
    // most keys name no secret: rule them out without splitting
    let has = |stem: &str| {
        key.as_bytes()
            .windows(stem.len())
            .any(|w| w.eq_ignore_ascii_case(stem.as_bytes()))
    };
    if ![
        "pass",
        "secret",
        "token",
        "credential",
        "key",
        "authorization",
        "bearer",
    ]
    .into_iter()
    .any(has)
    {
        return false;
    }
    let w = words(key);
    let stems: Vec<&str> = w.iter().map(|x| word_stem(x)).collect();
    match stems.as_slice() {
        [] => false,
        [.., a, b] if SECRET_PAIRS.iter().any(|[x, y]| a == x && b == y) => true,
        [.., last] => SECRET_WORDS.contains(last) || SECRET_ENDINGS.iter().any(|e| last.ends_with(e)),
    }
}

/// Whether a string holds a real `${NAME}` substitution somewhere (`Bearer ${TOKEN}`): the
/// value is filled from the environment, so it is not a literal secret. A `${` alone
/// (`abc${`) is no substitution.
pub fn has_env_reference(s: &str) -> bool {
    s.match_indices("${").any(|(i, _)| {
        let rest = &s[i + 2..];
        rest.find('}')
            .is_some_and(|end| end > 0 && rest[..end].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    })
}

/// Whether a value under a secret key is a literal secret: a non-blank string without a
/// `${NAME}` substitution, or a number. Booleans and null hold no secret.
pub fn is_literal_secret(v: &Value) -> bool {
    match v {
        Value::String(s) => !s.trim().is_empty() && !has_env_reference(s),
        Value::Number(_) => true,
        _ => false,
    }
}

/// Whether everything under `key` is kept out of reports (snippets, messages): a secret key,
/// or a Secret reference (its fields are where a secret pasted by mistake would be).
pub fn hides_value(key: &str) -> bool {
    key == REF_FIELD || is_secret_key(key)
}

/// Whether `v` is a Secret reference object (`{secretKeyRef: …}`), well-formed or not.
pub fn is_reference(v: &Value) -> bool {
    v.as_object().is_some_and(|m| m.contains_key(REF_FIELD))
}

/// Whether a string is already an env reference Backstage substitutes (`${NAME}`): not a
/// literal secret.
pub fn is_env_reference(s: &str) -> bool {
    s.strip_prefix("${")
        .and_then(|r| r.strip_suffix('}'))
        .is_some_and(|name| !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
}

/// One reference of a plugin's config, as the portal container gets it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretEnv {
    pub env: String,
    pub secret: String,
    pub key: String,
}

/// The `(name, key)` of a reference object, if `v` is one (the schema checked its shape).
fn reference(v: &Value) -> Option<(&str, &str)> {
    let m = v.as_object().filter(|m| m.len() == 1)?.get(REF_FIELD)?;
    Some((m.get("name")?.as_str()?, m.get("key")?.as_str()?))
}

/// `RAMPART_PLUGIN_<PLUGIN>_<PATH>`: the plugin's name and the path's words, upper case,
/// joined by `_`. An env var name Kubernetes accepts is `[A-Z0-9_]`: a character outside
/// ASCII is written as `U` and its code point in hex (`ключ` → `U043AU043BU044EU0447`), so
/// the name stays readable where it can and distinct where it cannot.
fn env_name(plugin: &str, path: &[String]) -> String {
    let mut parts = vec!["RAMPART".to_owned(), "PLUGIN".to_owned()];
    let upper = |w: String| -> String {
        w.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase().to_string()
                } else {
                    format!("U{:04X}", u32::from(c))
                }
            })
            .collect()
    };
    parts.extend(words(plugin).into_iter().map(upper));
    for seg in path {
        parts.extend(words(seg).into_iter().map(upper));
    }
    parts.join("_")
}

/// Each plugin's `config` (in the tenant's order) with every reference replaced by its
/// `${ENV}` placeholder, and the env vars the portal needs for them. Names are unique across
/// the tenant — one portal container gets them all, so two plugins whose name and path
/// spell the same words (`tech-radar` + `x`, `tech` + `radar.x`) must not share one:
/// plugins are taken in the tenant's order and keys in sorted order, and a name already
/// taken gets `_2`, `_3`… the same way every time. A disabled plugin takes its names too
/// (enabling or disabling one never renames another's), but [`enabled_env`] leaves its env
/// vars off the container.
pub fn substitute_tenant(plugins: &[EnabledPlugin]) -> Vec<Option<(Value, Vec<SecretEnv>)>> {
    let mut taken = HashSet::new();
    plugins
        .iter()
        .map(|p| {
            let config = p.config.as_ref()?.value();
            let mut envs = Vec::new();
            let out = walk(&p.name, &config, &mut Vec::new(), &mut envs, &mut taken);
            Some((out, envs))
        })
        .collect()
}

/// The env vars the tenant's enabled plugins need, sorted by name.
pub fn enabled_env(plugins: &[EnabledPlugin]) -> Vec<SecretEnv> {
    let mut envs: Vec<SecretEnv> = plugins
        .iter()
        .zip(substitute_tenant(plugins))
        .filter(|(p, _)| !p.disabled)
        .filter_map(|(_, s)| s)
        .flat_map(|(_, e)| e)
        .collect();
    envs.sort();
    envs
}

fn walk(
    plugin: &str,
    v: &Value,
    path: &mut Vec<String>,
    envs: &mut Vec<SecretEnv>,
    taken: &mut HashSet<String>,
) -> Value {
    if let Some((secret, key)) = reference(v) {
        let base = env_name(plugin, path);
        let env = (1..)
            .map(|i| if i == 1 { base.clone() } else { format!("{base}_{i}") })
            .find(|n| !taken.contains(n))
            .expect("a free name");
        taken.insert(env.clone());
        let placeholder = Value::String(format!("${{{env}}}"));
        envs.push(SecretEnv {
            env,
            secret: secret.to_owned(),
            key: key.to_owned(),
        });
        return placeholder;
    }
    match v {
        Value::Object(m) => {
            // (visited in sorted order for the names; written in the order the user wrote
            // them, as the rest of the plugin config is)
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut done: std::collections::HashMap<&String, Value> = std::collections::HashMap::new();
            for k in keys {
                path.push(k.clone());
                done.insert(k, walk(plugin, &m[k], path, envs, taken));
                path.pop();
            }
            let mut out = Map::new();
            for k in m.keys() {
                if let Some(v) = done.remove(k) {
                    out.insert(k.clone(), v);
                }
            }
            Value::Object(out)
        }
        Value::Array(xs) => Value::Array(
            xs.iter()
                .enumerate()
                .map(|(i, x)| {
                    path.push(i.to_string());
                    let y = walk(plugin, x, path, envs, taken);
                    path.pop();
                    y
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_split_into_words() {
        assert_eq!(words("apiKey"), ["api", "key"]);
        assert_eq!(words("APIKey"), ["api", "key"]);
        assert_eq!(words("client_secret"), ["client", "secret"]);
        assert_eq!(words("x-api-key"), ["x", "api", "key"]);
        assert_eq!(words("oauth2Token"), ["oauth2", "token"]);
    }

    #[test]
    fn secret_keys_are_the_ones_that_hold_a_secret() {
        for k in [
            "token",
            "apiKey",
            "api_key",
            "API-KEY",
            "password",
            "passwd",
            "clientSecret",
            "privateKey",
            "credentials",
            "authToken",
            "GITHUB_TOKEN",
            "secretAccessKey",
            // (the plan redacted these while R325 let them pass)
            "Authorization",
            "apikey",
            "APIKEY",
            "adminpassword",
            "password1",
            "tokens",
            "token2",
            "bearer",
            "clientsecret",
            "apiKeys",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in [
            "tokenTtl",
            "passwordPolicy",
            "secretName",
            "key",
            "sortKey",
            "author",
            "tokenUrl",
            "baseUrl",
            "auth",
            "keys",
            "monkeys",
            "passes",
        ] {
            assert!(!is_secret_key(k), "{k}");
        }
    }

    #[test]
    fn references_become_env_placeholders() {
        let config = json!({
            "techdocs": {"apiKey": {"secretKeyRef": {"name": "techdocs-creds", "key": "api-key"}}, "builder": "local"},
            "api_key": {"secretKeyRef": {"name": "a", "key": "b"}},
            "apiKey": {"secretKeyRef": {"name": "c", "key": "d"}},
            "list": [{"token": {"secretKeyRef": {"name": "e", "key": "f"}}}]
        });
        let (out, envs) = substitute_tenant(&[plugin("tech-docs", &config, false)])[0]
            .clone()
            .unwrap();
        assert_eq!(
            out["techdocs"]["apiKey"],
            "${RAMPART_PLUGIN_TECH_DOCS_TECHDOCS_API_KEY}"
        );
        assert_eq!(out["techdocs"]["builder"], "local");
        // `apiKey` sorts before `api_key`: it keeps the plain name
        assert_eq!(out["apiKey"], "${RAMPART_PLUGIN_TECH_DOCS_API_KEY}");
        assert_eq!(out["api_key"], "${RAMPART_PLUGIN_TECH_DOCS_API_KEY_2}");
        assert_eq!(out["list"][0]["token"], "${RAMPART_PLUGIN_TECH_DOCS_LIST_0_TOKEN}");
        assert_eq!(envs.len(), 4);
        assert!(envs.contains(&SecretEnv {
            env: "RAMPART_PLUGIN_TECH_DOCS_TECHDOCS_API_KEY".into(),
            secret: "techdocs-creds".into(),
            key: "api-key".into()
        }));
        assert!(is_env_reference("${RAMPART_PLUGIN_X}") && !is_env_reference("${}") && !is_env_reference("abc"));
    }

    fn plugin(name: &str, config: &Value, disabled: bool) -> EnabledPlugin {
        EnabledPlugin {
            name: name.into(),
            disabled,
            config: Some(crate::spec::PluginConfig::new(config)),
        }
    }

    fn reference_to(secret: &str) -> Value {
        json!({"secretKeyRef": {"name": secret, "key": "k"}})
    }

    #[test]
    fn two_plugins_that_spell_the_same_env_name_get_distinct_ones() {
        // `tech-radar` + `x` and `tech` + `radar.x` both spell RAMPART_PLUGIN_TECH_RADAR_X
        let ps = [
            plugin("tech-radar", &json!({"x": reference_to("radar-secret")}), false),
            plugin("tech", &json!({"radar": {"x": reference_to("tech-secret")}}), false),
        ];
        let subs = substitute_tenant(&ps);
        let (radar, radar_env) = subs[0].clone().unwrap();
        let (tech, tech_env) = subs[1].clone().unwrap();
        assert_eq!(radar["x"], "${RAMPART_PLUGIN_TECH_RADAR_X}");
        assert_eq!(tech["radar"]["x"], "${RAMPART_PLUGIN_TECH_RADAR_X_2}");
        assert_eq!(
            (radar_env[0].secret.as_str(), tech_env[0].secret.as_str()),
            ("radar-secret", "tech-secret")
        );
        let env = enabled_env(&ps);
        assert_eq!(
            env.iter()
                .map(|e| (e.env.as_str(), e.secret.as_str()))
                .collect::<Vec<_>>(),
            [
                ("RAMPART_PLUGIN_TECH_RADAR_X", "radar-secret"),
                ("RAMPART_PLUGIN_TECH_RADAR_X_2", "tech-secret")
            ]
        );
    }

    #[test]
    fn env_names_are_what_kubernetes_accepts() {
        let ps = [plugin(
            "catalog",
            &json!({"ключ": reference_to("s"), "0x": reference_to("t")}),
            false,
        )];
        for e in enabled_env(&ps) {
            assert!(
                e.env
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                e.env
            );
            assert!(!e.env.starts_with(|c: char| c.is_ascii_digit()), "{}", e.env);
        }
        assert!(
            enabled_env(&ps)
                .iter()
                .any(|e| e.env == "RAMPART_PLUGIN_CATALOG_U043AU043BU044EU0447")
        );
    }

    #[test]
    fn a_disabled_plugins_secret_stays_off_the_container() {
        let ps = [
            plugin("a", &json!({"token": reference_to("a-secret")}), true),
            plugin("b", &json!({"token": reference_to("b-secret")}), false),
        ];
        let env = enabled_env(&ps);
        assert_eq!(env.len(), 1);
        assert_eq!(env[0].secret, "b-secret");
    }

    #[test]
    fn only_a_real_placeholder_is_a_substitution() {
        assert!(has_env_reference("Bearer ${TOKEN}"));
        assert!(!has_env_reference("abc${"));
        assert!(!has_env_reference("abc${}"));
        assert!(!has_env_reference("abc${a b}"));
        assert!(is_literal_secret(&json!("abc${")) && is_literal_secret(&json!(1234)));
        assert!(
            !is_literal_secret(&json!("${X}")) && !is_literal_secret(&json!(true)) && !is_literal_secret(&json!(" "))
        );
    }
}
