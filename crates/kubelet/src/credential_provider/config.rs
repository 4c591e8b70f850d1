//! `--image-credential-provider-config`: CredentialProviderConfig (kubelet.config.k8s.io/v1,
//! also v1beta1 / v1alpha1), decoded strictly and validated as upstream's
//! validateCredentialProviderConfig (every bad field at once), each plugin binary checked in
//! `--image-credential-provider-bin-dir`.

use std::path::{Path, PathBuf};

use kubelet_config::Duration;
use serde::Deserialize;

const CONFIG_API_VERSIONS: &[&str] =
    &["kubelet.config.k8s.io/v1", "kubelet.config.k8s.io/v1beta1", "kubelet.config.k8s.io/v1alpha1"];
/// The exec protocol versions a provider may speak.
pub const PLUGIN_API_VERSIONS: &[&str] = &[
    "credentialprovider.kubelet.k8s.io/v1",
    "credentialprovider.kubelet.k8s.io/v1beta1",
    "credentialprovider.kubelet.k8s.io/v1alpha1",
];

/// Errors loading the config; the start-up error names the file and the fields.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read credential provider config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("failed to decode credential provider config {path}: {source}")]
    Decode { path: PathBuf, source: serde_yaml::Error },
    #[error("credential provider config {path}: {}", errors.join("; "))]
    Invalid { path: PathBuf, errors: Vec<String> },
    #[error("--image-credential-provider-config and --image-credential-provider-bin-dir must be given together")]
    Incomplete,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct File {
    api_version: String,
    kind: String,
    #[serde(default)]
    providers: Vec<ProviderSpec>,
}

/// One `providers` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProviderSpec {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub match_images: Vec<String>,
    pub default_cache_duration: Option<Duration>,
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// Service account tokens for the plugin (KubeletServiceAccountTokenForCredentialProviders);
    /// this kubelet cannot supply them, so a provider asking for them is refused.
    #[serde(default)]
    pub token_attributes: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

/// A validated provider with its binary's path.
#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    pub spec: ProviderSpec,
    pub binary: PathBuf,
    pub default_cache_duration: std::time::Duration,
}

/// Reads, validates and resolves the providers of `config` against `bin_dir`.
pub fn load(config: &Path, bin_dir: &Path) -> Result<Vec<Provider>, Error> {
    let text = std::fs::read_to_string(config).map_err(|source| Error::Read { path: config.into(), source })?;
    let file: File = serde_yaml::from_str(&text).map_err(|source| Error::Decode { path: config.into(), source })?;
    let errors = validate(&file, bin_dir);
    if !errors.is_empty() {
        return Err(Error::Invalid { path: config.into(), errors });
    }
    Ok(file
        .providers
        .into_iter()
        .map(|spec| Provider {
            binary: bin_dir.join(&spec.name),
            default_cache_duration: spec.default_cache_duration.and_then(Duration::to_std).unwrap_or_default(),
            spec,
        })
        .collect())
}

fn validate(file: &File, bin_dir: &Path) -> Vec<String> {
    let mut e = Vec::new();
    if !CONFIG_API_VERSIONS.contains(&file.api_version.as_str()) {
        e.push(format!(
            "apiVersion: Unsupported value: {:?}: supported values: {CONFIG_API_VERSIONS:?}",
            file.api_version
        ));
    }
    if file.kind != "CredentialProviderConfig" {
        e.push(format!("kind: Unsupported value: {:?}: must be CredentialProviderConfig", file.kind));
    }
    if file.providers.is_empty() {
        e.push("providers: Required value: at least 1 item in plugins is required".into());
    }
    for (i, p) in file.providers.iter().enumerate() {
        let at = |field: &str| format!("providers[{i}].{field}");
        if p.name.is_empty() {
            e.push(format!("{}: Required value", at("name")));
        }
        if p.name.contains('/') {
            e.push(format!("{}: Invalid value: {:?}: provider name cannot contain '/'", at("name"), p.name));
        }
        if p.name.contains(' ') {
            e.push(format!("{}: Invalid value: {:?}: provider name cannot contain spaces", at("name"), p.name));
        }
        if p.name == "." || p.name == ".." {
            e.push(format!("{}: Invalid value: {:?}: provider name cannot be '.' or '..'", at("name"), p.name));
        }
        if file.providers[..i].iter().any(|q| q.name == p.name) {
            e.push(format!("{}: Duplicate value: {:?}", at("name"), p.name));
        }
        if p.api_version.is_empty() {
            e.push(format!("{}: Required value", at("apiVersion")));
        } else if !PLUGIN_API_VERSIONS.contains(&p.api_version.as_str()) {
            e.push(format!(
                "{}: Unsupported value: {:?}: supported values: {PLUGIN_API_VERSIONS:?}",
                at("apiVersion"),
                p.api_version
            ));
        }
        if p.match_images.is_empty() {
            e.push(format!("{}: Required value: at least 1 item in matchImages is required", at("matchImages")));
        }
        for image in &p.match_images {
            if let Err(err) = super::matching::parse(image) {
                e.push(format!("{}: Invalid value: {image:?}: match image is invalid: {err}", at("matchImages")));
            }
        }
        match p.default_cache_duration {
            None => e.push(format!("{}: Required value", at("defaultCacheDuration"))),
            Some(d) if d.is_negative() => e.push(format!(
                "{}: Invalid value: {d}: must be greater than or equal to 0",
                at("defaultCacheDuration")
            )),
            Some(_) => {}
        }
        if p.token_attributes.is_some() {
            e.push(format!(
                "{}: Forbidden: service account tokens are not supported by this kubelet",
                at("tokenAttributes")
            ));
        }
        if !p.name.is_empty() && !p.name.contains('/') && !bin_dir.join(&p.name).is_file() {
            e.push(format!(
                "{}: plugin binary executable {} did not exist",
                at("name"),
                bin_dir.join(&p.name).display()
            ));
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_good_config_resolves_binaries() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "ecr", "#!/bin/sh\n");
        let cfg = write(
            dir.path(),
            "config.yaml",
            "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n\
             - name: ecr\n  matchImages: [\"*.dkr.ecr.*.amazonaws.com\", \"127.0.0.1:5001\"]\n\
             \x20 defaultCacheDuration: 12h\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n\
             \x20 args: [get-credentials]\n  env:\n  - name: AWS_PROFILE\n    value: temp\n",
        );
        let providers = load(&cfg, dir.path()).unwrap();
        assert_eq!(providers[0].binary, dir.path().join("ecr"));
        assert_eq!(providers[0].default_cache_duration, std::time::Duration::from_secs(12 * 3600));
        assert_eq!(providers[0].spec.env[0].name, "AWS_PROFILE");
    }

    #[test]
    fn every_bad_field_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = write(
            dir.path(),
            "config.yaml",
            "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n\
             - name: a/b\n  matchImages: []\n  apiVersion: credentialprovider.kubelet.k8s.io/v9\n\
             - name: missing\n  matchImages: [\"host:port\"]\n  defaultCacheDuration: -1s\n\
             \x20 apiVersion: credentialprovider.kubelet.k8s.io/v1\n",
        );
        let err = load(&cfg, dir.path()).unwrap_err().to_string();
        for part in [
            "providers[0].name: Invalid value: \"a/b\": provider name cannot contain '/'",
            "providers[0].apiVersion: Unsupported value",
            "providers[0].matchImages: Required value",
            "providers[0].defaultCacheDuration: Required value",
            "providers[1].matchImages: Invalid value: \"host:port\"",
            "providers[1].defaultCacheDuration: Invalid value: -1s",
            "plugin binary executable",
        ] {
            assert!(err.contains(part), "{part}\n in {err}");
        }
        let unknown = write(
            dir.path(),
            "u.yaml",
            "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nprovider: []\n",
        );
        assert!(load(&unknown, dir.path()).unwrap_err().to_string().contains("unknown field `provider`"));
    }
}
