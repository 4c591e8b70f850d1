//! projected volumes (pkg/volume/projected): configMap, secret, downwardAPI and
//! serviceAccountToken sources merged into one atomically written set of files. Tokens come from
//! the TokenRequest API, bound to the pod, and are cached until 80 % of their lifetime (or 24 h)
//! has passed, as upstream's token manager (pkg/kubelet/token).

use super::NodeFacts;
use super::atomic_writer::{FileProjection, Payload};
use super::{configmap, downward_api, ownership};
use crate::api::DynApi;
use crate::api::objects::Objects;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ProjectedVolumeSource, ServiceAccountTokenProjection};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Upstream's maximum token age before a refresh.
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// The API's default `expirationSeconds`.
const DEFAULT_EXPIRATION: i64 = 3600;

/// Why a projected volume has no content; every failing source is reported ([`Error::Sources`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("serviceAccountToken: no API server to request a token from")]
    NoApi,
    #[error("failed to fetch token: serviceaccounts \"{service_account}\": {source}")]
    Token { service_account: String, source: crate::api::ApiError },
    #[error("failed to fetch token: serviceaccounts \"{0}\": empty token")]
    EmptyToken(String),
    #[error("clusterTrustBundle projections are not supported yet")]
    ClusterTrustBundle,
    #[error(transparent)]
    Object(#[from] configmap::Error),
    #[error(transparent)]
    DownwardApi(#[from] downward_api::Error),
    #[error("{}", downward_api::join(.0, ", "))]
    Sources(Vec<Error>),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Cached tokens by pod UID and request.
#[derive(Clone, Default)]
pub struct Tokens(Arc<Mutex<HashMap<String, (String, TokenRequest)>>>);

impl Tokens {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, TokenRequest)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets the tokens of a pod that is gone.
    pub fn forget_pod(&self, uid: &str) {
        self.lock().retain(|_, (u, _)| u != uid);
    }
}

/// Whether a cached token must be renewed: older than 24 h, or in the last 20 % of its life.
pub fn requires_refresh(tr: &TokenRequest, now: SystemTime) -> bool {
    let Some(secs) = tr.spec.as_ref().and_then(|s| s.expiration_seconds) else { return false };
    let Some(exp) = tr.status.as_ref().and_then(|s| s.expiration_timestamp.as_ref()) else { return true };
    let Ok(exp_nanos) = u64::try_from(exp.0.as_nanosecond()) else { return true };
    let exp = SystemTime::UNIX_EPOCH + Duration::from_nanos(exp_nanos);
    let ttl = Duration::from_secs(secs.max(0) as u64);
    let iat = exp.checked_sub(ttl).unwrap_or(SystemTime::UNIX_EPOCH);
    now > iat + MAX_TTL || now > exp.checked_sub(ttl / 5).unwrap_or(SystemTime::UNIX_EPOCH)
}

async fn token(
    api: Option<&DynApi>,
    tokens: &Tokens,
    pod: &Pod,
    src: &ServiceAccountTokenProjection,
    now: SystemTime,
) -> Result<String> {
    let api = api.ok_or(Error::NoApi)?;
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into());
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let audiences: Vec<String> = src.audience.iter().filter(|a| !a.is_empty()).cloned().collect();
    let expiration = src.expiration_seconds.unwrap_or(DEFAULT_EXPIRATION);
    let key = format!("{sa}/{ns}/{}/{expiration}/{uid}", audiences.join(","));
    if let Some((_, tr)) = tokens.lock().get(&key)
        && !requires_refresh(tr, now)
        && let Some(t) = tr.status.as_ref().and_then(|s| s.token.clone())
    {
        return Ok(t);
    }
    let req = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(audiences.clone()),
            expiration_seconds: Some(expiration),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut tr = api
        .create_token(&ns, &sa, &req)
        .await
        .map_err(|source| Error::Token { service_account: sa.clone(), source })?;
    // The answer's spec may omit what was asked; the cache needs the lifetime.
    let spec = tr.spec.get_or_insert_with(Default::default);
    spec.expiration_seconds = spec.expiration_seconds.or(Some(expiration));
    let value = tr.status.as_ref().and_then(|s| s.token.clone()).filter(|t| !t.is_empty());
    let value = value.ok_or_else(|| Error::EmptyToken(sa.clone()))?;
    tokens.lock().insert(key, (uid, tr));
    Ok(value)
}

/// Upstream's collectData: every source's files, later sources winning on the same path; all
/// failures reported together.
pub async fn payload(
    api: Option<&DynApi>,
    objects: Option<&Objects>,
    tokens: &Tokens,
    pod: &Pod,
    src: &ProjectedVolumeSource,
    node: &NodeFacts,
    now: SystemTime,
) -> Result<Payload> {
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let default_mode = src.default_mode.unwrap_or(configmap::DEFAULT_MODE);
    let mut out = Payload::new();
    let mut errors = Vec::new();
    for s in src.sources.iter().flatten() {
        let part = if let Some(c) = &s.config_map {
            let optional = c.optional.unwrap_or(false);
            match configmap::read(objects, uid, "configmap", &ns, &c.name, optional).await {
                Ok(d) => {
                    configmap::payload(c.items.as_deref(), &d, default_mode, optional, "configmap").map_err(Error::from)
                }
                Err(e) => Err(e.into()),
            }
        } else if let Some(c) = &s.secret {
            let optional = c.optional.unwrap_or(false);
            match configmap::read(objects, uid, "secret", &ns, &c.name, optional).await {
                Ok(d) => {
                    configmap::payload(c.items.as_deref(), &d, default_mode, optional, "secret").map_err(Error::from)
                }
                Err(e) => Err(e.into()),
            }
        } else if let Some(d) = &s.downward_api {
            downward_api::payload(pod, d.items.as_deref().unwrap_or_default(), default_mode, node).map_err(Error::from)
        } else if let Some(t) = &s.service_account_token {
            token(api, tokens, pod, t, now).await.map(|tok| {
                // Upstream's collectData: with an fsUser or fsGroup the token is 0600 (fsGroup
                // ownership then makes it 0640) and owned by the fsUser.
                let fs_user = ownership::fs_user(pod);
                let fs_group = pod.spec.as_ref().and_then(|s| s.security_context.as_ref()).and_then(|s| s.fs_group);
                let mode = if fs_user.is_some() || fs_group.is_some() { 0o600 } else { default_mode & 0o7777 };
                let file = FileProjection { data: tok.into_bytes(), mode: mode as u32, fs_user };
                Payload::from([(t.path.clone(), file)])
            })
        } else if s.cluster_trust_bundle.is_some() {
            Err(Error::ClusterTrustBundle)
        } else {
            Ok(Payload::new())
        };
        match part {
            Ok(p) => out.extend(p),
            Err(e) => errors.push(e),
        }
    }
    match errors.len() {
        0 => Ok(out),
        1 => Err(errors.remove(0)),
        _ => Err(Error::Sources(errors)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fake::FakeApi;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use std::collections::BTreeMap;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1", "labels": {"app": "web"}},
            "spec": {"serviceAccountName": "robot", "containers": [{"name": "c", "image": "i"}]}
        }))
        .unwrap()
    }

    fn source() -> ProjectedVolumeSource {
        serde_json::from_value(serde_json::json!({
            "defaultMode": 0o440,
            "sources": [
                {"configMap": {"name": "cfg", "items": [{"key": "color", "path": "cfg/color"}]}},
                {"secret": {"name": "creds"}},
                {"downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                {"serviceAccountToken": {"path": "token", "audience": "vault", "expirationSeconds": 600}}
            ]
        }))
        .unwrap()
    }

    fn fake() -> FakeApi {
        let fake = FakeApi::new();
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some("cfg".into());
        cm.metadata.namespace = Some("ns".into());
        cm.data = Some(BTreeMap::from([("color".into(), "blue".into())]));
        fake.put_config_map(cm);
        let mut s = Secret::default();
        s.metadata.name = Some("creds".into());
        s.metadata.namespace = Some("ns".into());
        s.data = Some(BTreeMap::from([("pw".into(), k8s_openapi::ByteString(b"x".to_vec()))]));
        fake.put_secret(s);
        fake
    }

    #[tokio::test]
    async fn all_sources_are_merged_with_the_default_mode_and_tokens_are_cached() {
        let fake = fake();
        let api: DynApi = Arc::new(fake.clone());
        let objects = Objects::new(api.clone());
        let tokens = Tokens::default();
        let now = SystemTime::now();
        let (node, pod, source) = (NodeFacts::default(), pod(), source());
        let at = |now| payload(Some(&api), Some(&objects), &tokens, &pod, &source, &node, now);
        let p = at(now).await.unwrap();
        assert_eq!(p.keys().collect::<Vec<_>>(), ["cfg/color", "labels", "pw", "token"]);
        assert!(p.values().all(|f| f.mode == 0o440));
        assert_eq!(p["labels"].data, b"app=\"web\"");
        let tok = String::from_utf8(p["token"].data.clone()).unwrap();
        assert_eq!(tok.split('.').count(), 3, "JWT-shaped: {tok}");
        let reqs = fake.token_requests();
        assert_eq!(reqs.len(), 1);
        let (ns, sa, req) = &reqs[0];
        assert_eq!((ns.as_str(), sa.as_str()), ("ns", "robot"));
        let spec = req.spec.as_ref().unwrap();
        assert_eq!(spec.audiences.as_deref(), Some(&["vault".to_string()][..]));
        assert_eq!(spec.expiration_seconds, Some(600));
        let bound = spec.bound_object_ref.as_ref().unwrap();
        assert_eq!((bound.kind.as_deref(), bound.uid.as_deref()), (Some("Pod"), Some("u1")));
        // Within its lifetime the cached token is used; near the end a new one is requested.
        at(now + Duration::from_secs(60)).await.unwrap();
        assert_eq!(fake.token_requests().len(), 1);
        at(now + Duration::from_secs(500)).await.unwrap();
        assert_eq!(fake.token_requests().len(), 2);
        tokens.forget_pod("u1");
        assert!(tokens.lock().is_empty());
    }

    #[tokio::test]
    async fn failures_of_every_source_are_reported() {
        let api: DynApi = Arc::new(FakeApi::new());
        let objects = Objects::new(api.clone());
        let e = payload(
            Some(&api),
            Some(&objects),
            &Tokens::default(),
            &pod(),
            &source(),
            &NodeFacts::default(),
            SystemTime::now(),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("configmap \"cfg\" not found") && e.contains("secret \"creds\" not found"), "{e}");
    }

    #[test]
    fn refresh_after_eighty_percent_of_the_lifetime() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let exp = now + Duration::from_secs(1000);
        let t = |secs: i64| TokenRequest {
            spec: Some(TokenRequestSpec { expiration_seconds: Some(secs), ..Default::default() }),
            status: Some(k8s_openapi::api::authentication::v1::TokenRequestStatus {
                token: Some("t".into()),
                expiration_timestamp: Some(crate::meta::time(exp)),
            }),
            ..Default::default()
        };
        // Issued 0 s ago with 1000 s to live.
        assert!(!requires_refresh(&t(1000), now));
        assert!(!requires_refresh(&t(1000), now + Duration::from_secs(799)));
        assert!(requires_refresh(&t(1000), now + Duration::from_secs(801)));
    }
}
