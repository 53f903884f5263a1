//! Secrets in plugin config: which keys name one, and the Secret references that replace
//! literal values — each rendered as an env var of the portal container (pure).
//!
//! A reference is `{secretKeyRef: {name: SECRET, key: KEY}}` in place of a value. The portal
//! gets the env var `RAMPART_PLUGIN_<PLUGIN>_<PATH>` from the Kubernetes Secret, and the
//! rendered `pluginConfig` holds `${RAMPART_PLUGIN_<PLUGIN>_<PATH>}`, which Backstage
//! substitutes when it reads its config. The value itself never passes through rampart.

use serde_json::{Map, Value};

/// The field of a reference object.
pub const REF_FIELD: &str = "secretKeyRef";

/// Last words of a key that holds a secret, after splitting it into words.
const SECRET_WORDS: [&str; 7] = [
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "credential",
    "credentials",
];
/// Last two words of a key that holds a secret (`key` alone is too common: `sortKey`).
const SECRET_PAIRS: [[&str; 2]; 4] = [["api", "key"], ["private", "key"], ["access", "key"], ["secret", "key"]];

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

/// Whether a config key names a secret: its last word is one of [`SECRET_WORDS`] or its last
/// two are one of [`SECRET_PAIRS`] (`apiKey`, `clientSecret`, `GITHUB_TOKEN`, `privateKey`),
/// so a key *about* a secret (`tokenTtl`, `passwordPolicy`, `secretName`) is not one.
pub fn is_secret_key(key: &str) -> bool {
    // most keys name no secret: rule them out without splitting
    let has = |stem: &str| {
        key.as_bytes()
            .windows(stem.len())
            .any(|w| w.eq_ignore_ascii_case(stem.as_bytes()))
    };
    if !["pass", "secret", "token", "credential", "key"].into_iter().any(has) {
        return false;
    }
    let w = words(key);
    match w.as_slice() {
        [] => false,
        [.., a, b] if SECRET_PAIRS.iter().any(|[x, y]| a == x && b == y) => true,
        [.., last] => SECRET_WORDS.contains(&last.as_str()),
    }
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
/// joined by `_`.
fn env_name(plugin: &str, path: &[String]) -> String {
    let mut parts = vec!["RAMPART".to_owned(), "PLUGIN".to_owned()];
    parts.extend(words(plugin).into_iter().map(|w| w.to_uppercase()));
    for seg in path {
        parts.extend(words(seg).into_iter().map(|w| w.to_uppercase()));
    }
    parts.join("_")
}

/// `config` with every reference replaced by its `${ENV}` placeholder, and the env vars the
/// portal needs for them. Keys are visited in sorted order, so two paths that spell the same
/// name (`apiKey`, `api_key`) get `_2`, `_3`… the same way every time.
pub fn substitute(plugin: &str, config: &Value) -> (Value, Vec<SecretEnv>) {
    let mut envs = Vec::new();
    let out = walk(plugin, config, &mut Vec::new(), &mut envs);
    (out, envs)
}

fn walk(plugin: &str, v: &Value, path: &mut Vec<String>, envs: &mut Vec<SecretEnv>) -> Value {
    if let Some((secret, key)) = reference(v) {
        let base = env_name(plugin, path);
        let taken = |n: &str| envs.iter().any(|e: &SecretEnv| e.env == n);
        let env = (1..)
            .map(|i| if i == 1 { base.clone() } else { format!("{base}_{i}") })
            .find(|n| !taken(n))
            .expect("a free name");
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
                done.insert(k, walk(plugin, &m[k], path, envs));
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
                    let y = walk(plugin, x, path, envs);
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
        let (out, envs) = substitute("tech-docs", &config);
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
}
