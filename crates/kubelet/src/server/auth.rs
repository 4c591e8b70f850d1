//! Authentication and authorization of requests to the kubelet server on 10250, as upstream:
//! a verified client certificate (CN = user, O = groups), else a bearer token checked with a
//! TokenReview (cached for `authentication.webhook.cacheTTL`), else `system:anonymous` when
//! anonymous requests are enabled, else 401. Then `AlwaysAllow`, or SubjectAccessReviews for
//! `nodes/<subresource>` of this node — the fine-grained subresource first, then `proxy`, for
//! the paths that have one (answers cached for the authorized/unauthorized TTLs), else 403.

use crate::api::DynApi;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl User {
    fn anonymous() -> Self {
        User { name: "system:anonymous".into(), uid: String::new(), groups: vec!["system:unauthenticated".into()] }
    }

    fn authenticated(name: String, uid: String, mut groups: Vec<String>) -> Self {
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        User { name, uid, groups }
    }
}

/// The identity of a connection's verified client certificate, put in each request's extensions.
#[derive(Debug, Clone, Default)]
pub struct PeerCert(pub Option<(String, Vec<String>)>);

/// What is being asked for: upstream's `nodes/<subresource>` attributes for a path and method.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attributes {
    pub verb: &'static str,
    pub subresource: &'static str,
}

/// The attributes to try in order, the request allowed when any is (pkg/kubelet/server/auth.go
/// GetRequestAttributes with KubeletFineGrainedAuthz, on by default since 1.33): the verb from the
/// HTTP method; `/stats`, `/metrics`, `/logs`, `/checkpoint` map to their own subresource only;
/// `/pods` and `/runningpods` to `pods`, `/healthz` to `healthz`, `/configz` to `configz`, each
/// then falling back to `proxy`; everything else is `proxy`.
pub fn attributes(method: &Method, path: &str) -> Vec<Attributes> {
    let verb = match *method {
        Method::POST => "create",
        Method::GET | Method::HEAD => "get",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    };
    let under = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}/"));
    let only = [("/stats", "stats"), ("/metrics", "metrics"), ("/logs", "log"), ("/checkpoint", "checkpoint")];
    let fine = [("/pods", "pods"), ("/runningpods", "pods"), ("/healthz", "healthz"), ("/configz", "configz")];
    let mut subresources = Vec::with_capacity(2);
    if let Some((_, sub)) = only.iter().find(|(prefix, _)| under(prefix)) {
        subresources.push(*sub);
    } else {
        subresources.extend(fine.iter().find(|(prefix, _)| under(prefix)).map(|(_, sub)| *sub));
        subresources.push("proxy");
    }
    subresources.into_iter().map(|subresource| Attributes { verb, subresource }).collect()
}

/// A map with per-entry expiry, bounded so a flood of distinct tokens cannot grow it without end.
pub struct TtlCache<K, V> {
    entries: HashMap<K, (Instant, V)>,
    cap: usize,
}

impl<K: std::hash::Hash + Eq, V: Clone> TtlCache<K, V> {
    fn new(cap: usize) -> Self {
        Self { entries: HashMap::new(), cap }
    }

    fn get(&mut self, k: &K, now: Instant) -> Option<V> {
        match self.entries.get(k) {
            Some((exp, v)) if *exp > now => Some(v.clone()),
            Some(_) => {
                self.entries.remove(k);
                None
            }
            None => None,
        }
    }

    fn put(&mut self, k: K, v: V, ttl: Duration, now: Instant) {
        if ttl.is_zero() {
            return;
        }
        if self.entries.len() >= self.cap {
            self.entries.retain(|_, (exp, _)| *exp > now);
            if self.entries.len() >= self.cap {
                self.entries.clear();
            }
        }
        self.entries.insert(k, (now + ttl, v));
    }
}

/// How bearer tokens are checked.
pub struct TokenWebhook {
    api: DynApi,
    ttl: Duration,
    cache: Mutex<TtlCache<String, Option<User>>>,
}

impl TokenWebhook {
    pub fn new(api: DynApi, ttl: Duration) -> Self {
        Self { api, ttl, cache: Mutex::new(TtlCache::new(4096)) }
    }

    async fn review(&self, token: &str) -> crate::api::Result<Option<User>> {
        let now = Instant::now();
        if let Some(hit) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&token.to_string(), now) {
            return Ok(hit);
        }
        let review =
            TokenReview { spec: TokenReviewSpec { token: token.to_string(), audiences: None }, ..Default::default() };
        let out = self.api.create_token_review(&review).await?;
        let st = out.status.unwrap_or_default();
        let user = if st.authenticated == Some(true) {
            let u = st.user.unwrap_or_default();
            Some(User::authenticated(
                u.username.unwrap_or_default(),
                u.uid.unwrap_or_default(),
                u.groups.unwrap_or_default(),
            ))
        } else {
            None
        };
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).put(token.to_string(), user.clone(), self.ttl, now);
        Ok(user)
    }
}

/// Authorization mode.
pub enum Authorizer {
    AlwaysAllow,
    Webhook {
        api: DynApi,
        authorized_ttl: Duration,
        unauthorized_ttl: Duration,
        cache: Mutex<TtlCache<(User, Attributes), bool>>,
    },
    /// `Webhook` configured without an API server to ask: every request is refused, with this reason.
    DenyAll(String),
}

impl Authorizer {
    pub fn webhook(api: DynApi, authorized_ttl: Duration, unauthorized_ttl: Duration) -> Self {
        Authorizer::Webhook { api, authorized_ttl, unauthorized_ttl, cache: Mutex::new(TtlCache::new(4096)) }
    }

    async fn allowed(&self, user: &User, attrs: &Attributes, node: &str) -> crate::api::Result<bool> {
        match self {
            Authorizer::AlwaysAllow => Ok(true),
            Authorizer::DenyAll(_) => Ok(false),
            Authorizer::Webhook { api, authorized_ttl, unauthorized_ttl, cache } => {
                let now = Instant::now();
                let key = (user.clone(), attrs.clone());
                if let Some(hit) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key, now) {
                    return Ok(hit);
                }
                let review = SubjectAccessReview {
                    spec: SubjectAccessReviewSpec {
                        user: Some(user.name.clone()),
                        uid: Some(user.uid.clone()).filter(|u| !u.is_empty()),
                        groups: Some(user.groups.clone()),
                        resource_attributes: Some(ResourceAttributes {
                            verb: Some(attrs.verb.into()),
                            group: Some(String::new()),
                            version: Some("v1".into()),
                            resource: Some("nodes".into()),
                            subresource: Some(attrs.subresource.into()),
                            name: Some(node.into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                let out = api.create_subject_access_review(&review).await?;
                let allowed = out.status.is_some_and(|s| s.allowed && s.denied != Some(true));
                let ttl = if allowed { *authorized_ttl } else { *unauthorized_ttl };
                cache.lock().unwrap_or_else(|p| p.into_inner()).put(key, allowed, ttl, now);
                Ok(allowed)
            }
        }
    }
}

/// Everything the auth middleware needs.
pub struct Auth {
    pub node_name: String,
    pub anonymous: bool,
    /// Client certificates are trusted (a client CA is configured).
    pub x509: bool,
    pub tokens: Option<TokenWebhook>,
    pub authorizer: Authorizer,
}

fn unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, "Unauthorized").into_response()
}

impl Auth {
    /// Who is asking, or None for 401.
    async fn authenticate(&self, headers: &HeaderMap, peer: Option<&PeerCert>) -> crate::api::Result<Option<User>> {
        if self.x509
            && let Some(PeerCert(Some((cn, groups)))) = peer
        {
            return Ok(Some(User::authenticated(cn.clone(), String::new(), groups.clone())));
        }
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        if let Some(token) = bearer {
            // A token that is present but not accepted is a 401 even with anonymous enabled
            // (upstream's fail-on-error union before the anonymous authenticator).
            return match &self.tokens {
                Some(w) => w.review(token).await,
                None => Ok(None),
            };
        }
        Ok(self.anonymous.then(User::anonymous))
    }
}

/// The axum middleware: 401 without an identity, 403 without permission, 500 when the webhook fails.
pub async fn middleware(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<PeerCert>().cloned();
    let user = match auth.authenticate(req.headers(), peer.as_ref()).await {
        Ok(Some(u)) => u,
        Ok(None) => return unauthorized(),
        Err(e) => {
            tracing::warn!(error = %e, "authentication webhook failed");
            return unauthorized();
        }
    };
    let attrs = attributes(req.method(), req.uri().path());
    // The first allowed attribute lets the request through; an authorizer error on any is a 500
    // naming that attribute (upstream's InstallAuthFilter).
    for a in &attrs {
        match auth.authorizer.allowed(&user, a, &auth.node_name).await {
            Ok(true) => return next.run(req).await,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, user = %user.name, "authorization webhook failed");
                let msg = format!(
                    "Authorization error (user={}, verb={}, resource=nodes, subresource={})",
                    user.name, a.verb, a.subresource
                );
                return (StatusCode::INTERNAL_SERVER_ERROR, msg).into_response();
            }
        }
    }
    if let Authorizer::DenyAll(why) = &auth.authorizer {
        tracing::debug!(user = %user.name, "{why}");
    }
    // Upstream lists every subresource tried, Go-slice style, and ends the body with a newline.
    let subresources: Vec<&str> = attrs.iter().map(|a| a.subresource).collect();
    let verb = attrs.first().map_or("", |a| a.verb);
    let msg = format!(
        "Forbidden (user={}, verb={verb}, resource=nodes, subresource(s)=[{}])\n",
        user.name,
        subresources.join(" ")
    );
    (StatusCode::FORBIDDEN, msg).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fake::FakeApi;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    #[test]
    fn upstream_attribute_mapping() {
        let a = |m: Method, p: &str| {
            let x = attributes(&m, p);
            (x[0].verb, x.iter().map(|a| a.subresource).collect::<Vec<_>>())
        };
        assert_eq!(a(Method::GET, "/stats/summary"), ("get", vec!["stats"]));
        assert_eq!(a(Method::GET, "/stats"), ("get", vec!["stats"]));
        assert_eq!(a(Method::GET, "/metrics/cadvisor"), ("get", vec!["metrics"]));
        assert_eq!(a(Method::GET, "/logs/syslog"), ("get", vec!["log"]));
        assert_eq!(a(Method::POST, "/checkpoint/ns/p/c"), ("create", vec!["checkpoint"]));
        assert_eq!(a(Method::POST, "/exec/ns/p/c"), ("create", vec!["proxy"]));
        assert_eq!(a(Method::GET, "/containerLogs/ns/p/c"), ("get", vec!["proxy"]));
        // Fine-grained first, then nodes/proxy.
        assert_eq!(a(Method::GET, "/pods"), ("get", vec!["pods", "proxy"]));
        assert_eq!(a(Method::GET, "/runningpods/"), ("get", vec!["pods", "proxy"]));
        assert_eq!(a(Method::PUT, "/healthz"), ("update", vec!["healthz", "proxy"]));
        assert_eq!(a(Method::GET, "/healthz/ping"), ("get", vec!["healthz", "proxy"]));
        assert_eq!(a(Method::GET, "/configz"), ("get", vec!["configz", "proxy"]));
        assert_eq!(a(Method::PATCH, "/x"), ("patch", vec!["proxy"]));
        assert_eq!(a(Method::DELETE, "/x"), ("delete", vec!["proxy"]));
        // A path that only starts with the prefix's letters is not that subresource.
        assert_eq!(a(Method::GET, "/statsx"), ("get", vec!["proxy"]));
        assert_eq!(a(Method::GET, "/podsx"), ("get", vec!["proxy"]));
    }

    fn app(auth: Auth) -> Router {
        Router::new()
            .route("/pods", get(|| async { "pods" }))
            .route("/stats/summary", get(|| async { "stats" }))
            .route("/healthz", get(|| async { "ok" }))
            .route("/configz", get(|| async { "configz" }))
            .route("/exec/ns/p/c", get(|| async { "exec" }))
            .layer(axum::middleware::from_fn_with_state(Arc::new(auth), middleware))
    }

    async fn call(app: &Router, path: &str, token: Option<&str>, cert: Option<(&str, &[&str])>) -> (u16, String) {
        let mut req = Request::builder().uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let mut req = req.body(Body::empty()).unwrap();
        req.extensions_mut()
            .insert(PeerCert(cert.map(|(cn, o)| (cn.to_string(), o.iter().map(|g| g.to_string()).collect()))));
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn webhook_auth(api: &FakeApi, anonymous: bool) -> Auth {
        let dyn_api: DynApi = Arc::new(api.clone());
        Auth {
            node_name: "n1".into(),
            anonymous,
            x509: true,
            tokens: Some(TokenWebhook::new(dyn_api.clone(), Duration::from_secs(120))),
            authorizer: Authorizer::webhook(dyn_api, Duration::from_secs(300), Duration::from_secs(30)),
        }
    }

    #[tokio::test]
    async fn unauthenticated_is_401_unless_anonymous_is_on() {
        let api = FakeApi::new();
        let closed = app(webhook_auth(&api, false));
        assert_eq!(call(&closed, "/pods", None, None).await, (401, "Unauthorized".into()));
        // Anonymous on: authenticated as system:anonymous, then authorized like anyone else.
        let open = app(webhook_auth(&api, true));
        let (code, body) = call(&open, "/pods", None, None).await;
        assert_eq!(code, 403);
        assert_eq!(body, "Forbidden (user=system:anonymous, verb=get, resource=nodes, subresource(s)=[pods proxy])\n");
        api.allow("system:anonymous", "get", "proxy");
        // The refusal is cached (cacheUnauthorizedTTL); a fresh authorizer asks again.
        assert_eq!(call(&open, "/pods", None, None).await.0, 403);
        let open = app(webhook_auth(&api, true));
        assert_eq!(call(&open, "/pods", None, None).await, (200, "pods".into()));
        // A bad token is 401 even with anonymous enabled.
        assert_eq!(call(&open, "/pods", Some("nope"), None).await.0, 401);
    }

    #[tokio::test]
    async fn certificates_and_tokens_are_authorized_per_subresource() {
        let api = FakeApi::new();
        api.add_token("tok", "alice", &["devs"]);
        api.allow("alice", "get", "stats");
        api.allow("system:node:n1", "*", "*");
        let app = app(webhook_auth(&api, false));
        assert_eq!(call(&app, "/stats/summary", Some("tok"), None).await, (200, "stats".into()));
        let (code, body) = call(&app, "/pods", Some("tok"), None).await;
        assert_eq!(
            (code, body.as_str()),
            (403, "Forbidden (user=alice, verb=get, resource=nodes, subresource(s)=[pods proxy])\n")
        );
        assert_eq!(call(&app, "/pods", None, Some(("system:node:n1", &["system:nodes"]))).await.0, 200);
        assert_eq!(call(&app, "/pods", None, Some(("mallory", &[]))).await.0, 403);
    }

    #[tokio::test]
    async fn read_only_roles_reach_pods_healthz_and_configz_without_nodes_proxy() {
        let api = FakeApi::new();
        api.add_token("mon", "monitor", &[]);
        api.add_token("old", "legacy", &[]);
        for sub in ["pods", "healthz"] {
            api.allow("monitor", "get", sub);
        }
        api.allow("legacy", "get", "proxy");
        let app = app(webhook_auth(&api, false));
        assert_eq!(call(&app, "/pods", Some("mon"), None).await, (200, "pods".into()));
        assert_eq!(call(&app, "/healthz", Some("mon"), None).await, (200, "ok".into()));
        let (code, body) = call(&app, "/configz", Some("mon"), None).await;
        assert_eq!(
            (code, body.as_str()),
            (403, "Forbidden (user=monitor, verb=get, resource=nodes, subresource(s)=[configz proxy])\n")
        );
        // nodes/pods grants no other endpoint.
        assert_eq!(call(&app, "/exec/ns/p/c", Some("mon"), None).await.0, 403);
        // nodes/proxy still grants everything it did.
        for path in ["/pods", "/healthz", "/configz", "/exec/ns/p/c"] {
            assert_eq!(call(&app, path, Some("old"), None).await.0, 200, "{path}");
        }
    }

    #[tokio::test]
    async fn answers_are_cached_for_their_ttl() {
        let api = FakeApi::new();
        api.add_token("tok", "alice", &[]);
        api.allow("alice", "*", "*");
        let app = app(webhook_auth(&api, false));
        for _ in 0..3 {
            assert_eq!(call(&app, "/pods", Some("tok"), None).await.0, 200);
        }
        let calls = api.calls();
        assert_eq!(calls.iter().filter(|c| *c == "create_token_review").count(), 1, "{calls:?}");
        assert_eq!(calls.iter().filter(|c| *c == "create_subject_access_review").count(), 1, "{calls:?}");
    }

    #[tokio::test]
    async fn certificates_count_only_with_a_client_ca() {
        let api = FakeApi::new();
        api.allow("*", "*", "*");
        let mut auth = webhook_auth(&api, false);
        auth.x509 = false;
        let app = app(auth);
        assert_eq!(call(&app, "/pods", None, Some(("admin", &["system:masters"]))).await.0, 401);
    }

    #[tokio::test]
    async fn always_allow_and_deny_all() {
        let allow = app(Auth {
            node_name: "n1".into(),
            anonymous: true,
            x509: false,
            tokens: None,
            authorizer: Authorizer::AlwaysAllow,
        });
        assert_eq!(call(&allow, "/pods", None, None).await.0, 200);
        let deny = app(Auth {
            node_name: "n1".into(),
            anonymous: true,
            x509: false,
            tokens: None,
            authorizer: Authorizer::DenyAll("no API server".into()),
        });
        assert_eq!(call(&deny, "/pods", None, None).await.0, 403);
    }
}
