//! imagePullSecrets: `kubernetes.io/dockerconfigjson` (and legacy `dockercfg`) secrets turned into
//! CRI AuthConfigs for the image's registry, tried in order as upstream's keyring does.

use crate::api::objects::Data;
use crate::cri::api::AuthConfig;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keyring(Vec<(String, AuthConfig)>);

#[derive(serde::Deserialize)]
struct DockerConfigJson {
    auths: BTreeMap<String, DockerAuth>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct DockerAuth {
    username: String,
    password: String,
    auth: String,
    #[serde(rename = "identitytoken")]
    identity_token: String,
}

/// The registry host of an image reference ("docker.io" when it names none).
pub fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first.to_string(),
        _ => "docker.io".into(),
    }
}

/// A credential's key normalised to a host ("https://index.docker.io/v1/" → "docker.io").
fn host_of(key: &str) -> String {
    let k = key.trim_start_matches("https://").trim_start_matches("http://");
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        h => h.to_string(),
    }
}

fn decode_basic(auth: &str) -> Option<(String, String)> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD.decode(auth.trim()).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

impl Keyring {
    /// Adds the credentials of one secret (its decoded data); a malformed secret is an error
    /// naming it.
    pub fn add_secret(&mut self, name: &str, data: &Data) -> Result<(), String> {
        let auths: BTreeMap<String, DockerAuth> = if let Some(j) = data.get(".dockerconfigjson") {
            serde_json::from_slice::<DockerConfigJson>(j)
                .map_err(|e| format!("secret {name}: .dockerconfigjson: {e}"))?
                .auths
        } else if let Some(j) = data.get(".dockercfg") {
            serde_json::from_slice(j).map_err(|e| format!("secret {name}: .dockercfg: {e}"))?
        } else {
            return Err(format!("secret {name}: no .dockerconfigjson or .dockercfg"));
        };
        for (key, a) in auths {
            let (username, password) = if a.username.is_empty() && !a.auth.is_empty() {
                decode_basic(&a.auth).unwrap_or_default()
            } else {
                (a.username, a.password)
            };
            // No server_address: the credentials were matched to the image's registry here, and
            // containerd would otherwise URL-parse a bare "host:port" key and drop them.
            self.0.push((
                host_of(&key),
                AuthConfig { username, password, identity_token: a.identity_token, ..Default::default() },
            ));
        }
        Ok(())
    }

    /// The credentials that apply to `image`, in order.
    pub fn for_image(&self, image: &str) -> Vec<AuthConfig> {
        let reg = registry_of(image);
        self.0.iter().filter(|(h, _)| *h == reg).map(|(_, a)| a.clone()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(key: &str, json: &str) -> Data {
        Data::from([(key.to_string(), json.as_bytes().to_vec())])
    }

    #[test]
    fn docker_config_json_matches_the_image_registry() {
        let mut k = Keyring::default();
        // "dXNlcjpwYXNz" is base64 of "user:pass".
        k.add_secret("regcred", &secret(".dockerconfigjson", r#"{"auths":{"127.0.0.1:5001":{"auth":"dXNlcjpwYXNz"},"https://index.docker.io/v1/":{"username":"a","password":"b"}}}"#))
            .unwrap();
        let local = k.for_image("127.0.0.1:5001/private:1");
        assert_eq!(local.len(), 1);
        assert_eq!((local[0].username.as_str(), local[0].password.as_str()), ("user", "pass"));
        assert_eq!(k.for_image("busybox:1.36")[0].username, "a");
        assert!(k.for_image("quay.io/x/y").is_empty());
    }

    #[test]
    fn a_malformed_secret_is_named() {
        let mut k = Keyring::default();
        let err = k.add_secret("regcred", &secret(".dockerconfigjson", "{nope")).unwrap_err();
        assert!(err.starts_with("secret regcred: .dockerconfigjson:"), "{err}");
    }
}
