use super::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A plugin script that appends its stdin to `calls` and answers `response`.
fn plugin(dir: &Path, name: &str, response: &str) -> Provider {
    let calls = dir.join(format!("{name}.calls"));
    let script =
        format!("#!/bin/sh\ncat >> {}\necho >> {}\ncat <<'EOF'\n{response}\nEOF\n", calls.display(), calls.display());
    let binary = dir.join(name);
    std::fs::write(&binary, script).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    Provider {
        spec: ProviderSpec {
            name: name.into(),
            match_images: vec!["127.0.0.1:5001".into(), "*.example.com".into()],
            default_cache_duration: None,
            api_version: "credentialprovider.kubelet.k8s.io/v1".into(),
            args: vec![],
            env: vec![],
            token_attributes: None,
        },
        binary,
        default_cache_duration: Duration::from_secs(60),
    }
}

fn calls(dir: &Path, name: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join(format!("{name}.calls")))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const REGISTRY_ANSWER: &str = r#"{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Registry","auth":{"127.0.0.1:5001":{"username":"kubelet","password":"e2e-secret"},"other.io":{"username":"x","password":"y"}}}"#;

#[tokio::test]
async fn matching_images_get_the_plugins_credentials_cached_per_registry() {
    let dir = tempfile::tempdir().unwrap();
    let providers = Providers::new(vec![plugin(dir.path(), "p", REGISTRY_ANSWER)]);
    let creds = providers.credentials("127.0.0.1:5001/private:1").await;
    assert_eq!(creds.len(), 1, "only the auth entry matching the image");
    assert_eq!((creds[0].username.as_str(), creds[0].password.as_str()), ("kubelet", "e2e-secret"));
    let sent = calls(dir.path(), "p");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["kind"], "CredentialProviderRequest");
    assert_eq!(sent[0]["apiVersion"], "credentialprovider.kubelet.k8s.io/v1");
    assert_eq!(sent[0]["image"], "127.0.0.1:5001/private:1");

    // Same registry, another image: the Registry cache key answers without running the plugin.
    assert_eq!(providers.credentials("127.0.0.1:5001/other:2").await.len(), 1);
    assert_eq!(calls(dir.path(), "p").len(), 1);
    // An image no matchImages entry matches never runs it.
    assert!(providers.credentials("127.0.0.1:5000/busybox:1.36").await.is_empty());
    assert_eq!(calls(dir.path(), "p").len(), 1);
}

#[tokio::test]
async fn image_keys_cache_per_image_and_zero_duration_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let answer = r#"{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Image","cacheDuration":"0s","auth":{"*.example.com":{"username":"u","password":"p"}}}"#;
    let providers = Providers::new(vec![plugin(dir.path(), "p", answer)]);
    assert_eq!(providers.credentials("reg.example.com/a:1").await.len(), 1);
    assert_eq!(providers.credentials("reg.example.com/a:1").await.len(), 1);
    assert_eq!(calls(dir.path(), "p").len(), 2, "cacheDuration 0s: every pull asks");
}

#[tokio::test]
async fn a_bad_answer_gives_no_credentials() {
    let dir = tempfile::tempdir().unwrap();
    for (name, answer) in [
        ("version", REGISTRY_ANSWER.replace("k8s.io/v1\",\"cache", "k8s.io/v1beta1\",\"cache")),
        ("key", REGISTRY_ANSWER.replace("Registry", "Node")),
        ("junk", "not json".to_string()),
    ] {
        let providers = Providers::new(vec![plugin(dir.path(), name, &answer)]);
        assert!(providers.credentials("127.0.0.1:5001/private:1").await.is_empty(), "{name}");
    }
}
