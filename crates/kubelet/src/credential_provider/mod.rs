//! Image credential provider plugins (pkg/credentialprovider/plugin): for an image that a
//! provider's `matchImages` match, the provider's binary is run with a CredentialProviderRequest
//! on stdin; the CredentialProviderResponse's `auth` entries whose keys match the image become
//! pull credentials, after the pod's imagePullSecrets (upstream's UnionDockerKeyring). Answers
//! are cached per provider for `cacheDuration` (else the provider's `defaultCacheDuration`;
//! 0 = not cached) under the image, its registry or one global key, per `cacheKeyType`.
//! Concurrent pulls of an uncached image each run the plugin (upstream deduplicates them).

mod config;
pub mod matching;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cri::api::AuthConfig;
pub use config::{Error as ConfigError, Provider, ProviderSpec, load};
use serde::Deserialize;

/// How long a plugin may run (upstream's exec timeout).
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);
const GLOBAL_KEY: &str = "global";

/// Errors running a plugin; logged, the pull goes on without its credentials.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("credential provider {provider}: failed to run {binary}: {source}")]
    Spawn { provider: String, binary: String, source: std::io::Error },
    #[error("credential provider {provider}: timed out after {PLUGIN_TIMEOUT:?}")]
    Timeout { provider: String },
    #[error("credential provider {provider}: exited with {status}: {stderr}")]
    Exit { provider: String, status: std::process::ExitStatus, stderr: String },
    #[error("credential provider {provider}: error decoding the response: {source}")]
    Decode { provider: String, source: serde_json::Error },
    #[error("credential provider {provider}: {what}")]
    Response { provider: String, what: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    kind: String,
    api_version: String,
    #[serde(default)]
    cache_key_type: String,
    #[serde(default)]
    cache_duration: Option<kubelet_config::Duration>,
    #[serde(default)]
    auth: HashMap<String, ResponseAuth>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct ResponseAuth {
    username: String,
    password: String,
}

/// A cached answer: the auth entries (pattern, credentials) until `expires`.
#[derive(Debug, Clone)]
struct Cached {
    auth: Vec<(String, AuthConfig)>,
    expires: Instant,
}

/// The node's credential providers; cheap to clone (the cache is shared).
#[derive(Debug, Clone, Default)]
pub struct Providers {
    providers: Arc<Vec<Provider>>,
    /// Per provider index: cache key → answer.
    cache: Arc<Mutex<HashMap<(usize, String), Cached>>>,
}

impl Providers {
    pub fn new(providers: Vec<Provider>) -> Self {
        Self { providers: Arc::new(providers), cache: Arc::default() }
    }

    /// The credentials the providers give for `image`, most specific pattern first; a plugin
    /// that fails is logged and skipped.
    pub async fn credentials(&self, image: &str) -> Vec<AuthConfig> {
        let mut found: Vec<(String, AuthConfig)> = Vec::new();
        for (i, provider) in self.providers.iter().enumerate() {
            if !provider.spec.match_images.iter().any(|m| matching::matches(m, image)) {
                continue;
            }
            let auth = match self.cached(i, image) {
                Some(auth) => auth,
                None => match self.run(i, provider, image).await {
                    Ok(auth) => auth,
                    Err(e) => {
                        tracing::warn!(image, error = %e, "failed to get credentials from the credential provider plugin");
                        continue;
                    }
                },
            };
            found.extend(auth.into_iter().filter(|(pattern, _)| matching::matches(pattern, image)));
        }
        // As the docker keyring's lookup: longer (more specific) keys first.
        found.sort_by(|a, b| b.0.cmp(&a.0));
        found.into_iter().map(|(_, auth)| auth).collect()
    }

    fn cached(&self, i: usize, image: &str) -> Option<Vec<(String, AuthConfig)>> {
        let mut cache = self.cache.lock().ok()?;
        let now = Instant::now();
        cache.retain(|_, c| c.expires > now);
        [image.to_string(), crate::pull_secrets::registry_of(image), GLOBAL_KEY.to_string()]
            .into_iter()
            .find_map(|key| cache.get(&(i, key)).map(|c| c.auth.clone()))
    }

    async fn run(&self, i: usize, provider: &Provider, image: &str) -> Result<Vec<(String, AuthConfig)>, Error> {
        let name = &provider.spec.name;
        let response = exec(provider, image).await?;
        if response.kind != "CredentialProviderResponse" {
            return Err(Error::Response {
                provider: name.clone(),
                what: format!("unexpected kind {:?}", response.kind),
            });
        }
        if response.api_version != provider.spec.api_version {
            return Err(Error::Response {
                provider: name.clone(),
                what: format!(
                    "apiVersion from credential plugin response did not match expected apiVersion:{}, actual apiVersion:{}",
                    provider.spec.api_version, response.api_version
                ),
            });
        }
        let key = match response.cache_key_type.as_str() {
            "Image" => image.to_string(),
            "Registry" => crate::pull_secrets::registry_of(image),
            "Global" => GLOBAL_KEY.to_string(),
            other => {
                return Err(Error::Response {
                    provider: name.clone(),
                    what: format!("invalid cacheKeyType {other:?}: must be Image, Registry or Global"),
                });
            }
        };
        let auth: Vec<(String, AuthConfig)> = response
            .auth
            .into_iter()
            .map(|(pattern, a)| {
                (pattern, AuthConfig { username: a.username, password: a.password, ..Default::default() })
            })
            .collect();
        let ttl = response
            .cache_duration
            .and_then(kubelet_config::Duration::to_std)
            .unwrap_or(provider.default_cache_duration);
        if !ttl.is_zero()
            && let Ok(mut cache) = self.cache.lock()
        {
            cache.insert((i, key), Cached { auth: auth.clone(), expires: Instant::now() + ttl });
        }
        Ok(auth)
    }
}

/// Runs the plugin: args and env from the config (over the kubelet's environment), the request
/// on stdin, the response from stdout.
async fn exec(provider: &Provider, image: &str) -> Result<Response, Error> {
    use tokio::io::AsyncWriteExt;
    let name = provider.spec.name.clone();
    let request = serde_json::json!({
        "kind": "CredentialProviderRequest",
        "apiVersion": provider.spec.api_version,
        "image": image,
    });
    let mut child = tokio::process::Command::new(&provider.binary)
        .args(&provider.spec.args)
        .envs(provider.spec.env.iter().map(|e| (&e.name, &e.value)))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| Error::Spawn {
            provider: name.clone(),
            binary: provider.binary.display().to_string(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(request.to_string().as_bytes()).await;
    }
    let output = tokio::time::timeout(PLUGIN_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| Error::Timeout { provider: name.clone() })?
        .map_err(|source| Error::Spawn {
            provider: name.clone(),
            binary: provider.binary.display().to_string(),
            source,
        })?;
    if !output.status.success() {
        return Err(Error::Exit {
            provider: name,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    serde_json::from_slice(&output.stdout).map_err(|source| Error::Decode { provider: name, source })
}

#[cfg(test)]
mod tests;
