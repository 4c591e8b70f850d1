//! Request routing: authentication, discovery, and the REST verbs on stored resources.
// Early-return helpers carry the ready error response in Err.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use crate::auth::{Identity, Policy, Tokens};
use crate::discovery::{self, ResourceDef};
use crate::patch::{self, PatchType};
use crate::respond::{Body, error, ok, store_error};
use crate::selectors::Selector;
use crate::store::{Key, Store, StoreError};
use crate::watch::{self, WatchParams};

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("reading request body: {0}")]
    Body(#[from] hyper::Error),
}

pub struct App {
    pub store: Arc<Store>,
    pub tokens: Tokens,
    pub policy: Policy,
    pub bind_unscheduled_to: Option<String>,
    pub server_addr: String,
    pub kubelet_tls: Arc<rustls::ClientConfig>,
    pub bookmark_every: Duration,
    /// `--fault-file`: an injected failure status for node identities while the file exists.
    pub fault_file: Option<std::path::PathBuf>,
    /// The shortest `expirationSeconds` a CertificateSigningRequest may ask for.
    pub csr_min_expiration: Duration,
}

/// A parsed resource request path.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub def: &'static ResourceDef,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// Path after the subresource (nodes/{n}/proxy/...).
    pub rest: String,
    pub watch_path: bool,
}

pub fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    form_urlencoded::parse(q.unwrap_or("").as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// Parses /api/v1/... and /apis/{group}/{version}/... resource paths.
pub fn parse_target(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, mut rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let mut watch_path = false;
    if rest.first() == Some(&"watch") {
        watch_path = true;
        rest = &rest[1..];
    }
    let mut namespace = None;
    if rest.len() >= 3 && rest[0] == "namespaces" && discovery::find(group, version, rest[2]).is_some() {
        namespace = Some(rest[1].to_string());
        rest = &rest[2..];
    }
    let def = discovery::find(group, version, rest.first()?)?;
    Some(Target {
        def,
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        subresource: rest.get(2).map(|s| s.to_string()),
        rest: rest.get(3..).map(|r| r.join("/")).unwrap_or_default(),
        watch_path,
    })
}

fn bearer(req: &Request<Incoming>) -> Option<String> {
    let h = req.headers().get("authorization")?.to_str().ok()?;
    h.strip_prefix("Bearer ").map(|t| t.trim().to_string())
}

pub async fn handle(app: Arc<App>, cert: Option<Identity>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    tracing::debug!(method = %req.method(), uri = %req.uri(), "request");
    match path.as_str() {
        "/healthz" | "/readyz" | "/livez" => return Response::new(crate::respond::full("ok")),
        "/version" | "/version/" => return ok(&discovery::version()),
        _ => {}
    }
    let ident = cert.or_else(|| {
        bearer(&req)
            .and_then(|t| app.tokens.lookup(&t).cloned().or_else(|| crate::csr::bootstrap_token(&app.store, &t)))
    });
    let Some(ident) = ident else {
        return error(401, "Unauthorized", "Unauthorized");
    };
    if let Some(code) = injected_fault(&app, &ident) {
        let mut r = error(code, "InjectedFault", &format!("testapi --fault-file: answering {code}"));
        if code == 429 {
            r.headers_mut().insert("retry-after", hyper::header::HeaderValue::from_static("1"));
        }
        return r;
    }
    match route(app, ident, req).await {
        Ok(r) => r,
        Err(e) => error(500, "InternalError", &e.to_string()),
    }
}

/// The status `--fault-file` holds, for node identities only (so tests can still look around).
fn injected_fault(app: &App, ident: &Identity) -> Option<u16> {
    let file = app.fault_file.as_ref()?;
    if !ident.user.starts_with("system:node:") {
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    text.trim().parse::<u16>().ok().filter(|c| (400..600).contains(c))
}

async fn route(app: Arc<App>, ident: Identity, req: Request<Incoming>) -> Result<Response<Body>, HandlerError> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    if req.method() == Method::GET {
        let doc = match path.as_str() {
            "/api" => Some(Ok(discovery::api_versions(&app.server_addr))),
            "/api/v1" => Some(discovery::resource_list("", "v1")),
            "/apis" => Some(Ok(discovery::api_group_list())),
            p if p.starts_with("/apis/") && p.matches('/').count() == 2 => Some(discovery::api_group(&p[6..])),
            p if p.starts_with("/apis/") && p.matches('/').count() == 3 => {
                let mut it = p[6..].split('/');
                Some(discovery::resource_list(it.next().unwrap_or(""), it.next().unwrap_or("")))
            }
            _ => None,
        };
        if let Some(doc) = doc {
            return Ok(match doc {
                Ok(d) => ok(&d),
                Err(e) => error(404, "NotFound", &e.to_string()),
            });
        }
        if path == "/openapi/v3" {
            return Ok(ok(&discovery::openapi_v3_root()));
        }
        if let Some(p) = path.strip_prefix("/openapi/v3/") {
            return Ok(match discovery::openapi_v3_doc(p) {
                Ok(d) => ok(&d),
                Err(e) => error(404, "NotFound", &e.to_string()),
            });
        }
        if path.starts_with("/openapi/") || path == "/swagger.json" {
            return Ok(error(404, "NotFound", "the server could not find the requested resource"));
        }
    }
    let Some(t) = parse_target(&path) else {
        return Ok(error(404, "NotFound", "the server could not find the requested resource"));
    };
    let query = parse_query(req.uri().query());
    if let Some(sub) = t.subresource.as_deref()
        && matches!(sub, "log" | "exec" | "attach" | "portforward" | "proxy")
    {
        return Ok(crate::proxy::proxy(app, t, req).await);
    }
    let table = crate::table::wants_table(req.headers().get("accept").and_then(|v| v.to_str().ok()).unwrap_or(""))
        .ok()
        .map(|_| crate::table::Include::parse(query.get("includeObject").map(String::as_str)));
    let method = req.method().clone();
    let content_type =
        req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("application/json").to_string();
    let mut body = req.into_body().collect().await?.to_bytes();
    if content_type.starts_with("application/vnd.kubernetes.protobuf") {
        match crate::protobuf::decode(&body) {
            Ok(v) => body = serde_json::to_vec(&v).unwrap_or_default().into(),
            Err(e) => return Ok(error(415, "UnsupportedMediaType", &e.to_string())),
        }
    }
    Ok(match method {
        Method::GET if t.name.is_none() || t.watch_path || query.get("watch").is_some_and(|w| w == "true") => {
            get_collection(&app, &t, &query, table)
        }
        Method::GET => get_one(&app, &t, table),
        Method::POST if t.def.is_review() => review(&app, &t, &body, &ident),
        Method::POST if t.def.plural == "serviceaccounts" && t.subresource.as_deref() == Some("token") => {
            token_request(&app, &t, &body)
        }
        Method::POST => create(&app, &t, &body, &ident),
        Method::PUT => update(&app, &t, &body),
        Method::PATCH => patch_one(&app, &t, &content_type, &body, &query, &ident),
        Method::DELETE if t.name.is_some() => delete(&app, &t, &body, &query),
        Method::DELETE => delete_collection(&app, &t, &query),
        _ => error(405, "MethodNotAllowed", "method not allowed"),
    })
}

/// The etcd key kube-apiserver would use (`/registry/pods/<ns>/<name>`), for messages that show it.
fn storage_key(t: &Target) -> String {
    let resource =
        if t.def.group.is_empty() { t.def.plural.to_string() } else { format!("{}/{}", t.def.group, t.def.plural) };
    match &t.namespace {
        Some(ns) => format!("/registry/{resource}/{ns}/{}", t.name.as_deref().unwrap_or("")),
        None => format!("/registry/{resource}/{}", t.name.as_deref().unwrap_or("")),
    }
}

fn key(t: &Target) -> Key {
    Key {
        resource: t.def.key(),
        namespace: t.namespace.clone().unwrap_or_default(),
        name: t.name.clone().unwrap_or_default(),
    }
}

fn selectors(q: &HashMap<String, String>) -> Result<(Selector, Selector), Response<Body>> {
    let labels = Selector::parse_labels(q.get("labelSelector").map(String::as_str).unwrap_or(""))
        .map_err(|e| error(400, "BadRequest", &e.to_string()))?;
    let fields = Selector::parse_fields(q.get("fieldSelector").map(String::as_str).unwrap_or(""))
        .map_err(|e| error(400, "BadRequest", &e.to_string()))?;
    Ok((labels, fields))
}

fn get_collection(
    app: &App,
    t: &Target,
    q: &HashMap<String, String>,
    table: Option<crate::table::Include>,
) -> Response<Body> {
    let (labels, mut fields) = match selectors(q) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let rv: Option<u64> = q.get("resourceVersion").and_then(|s| s.parse().ok());
    let is_watch = t.watch_path || matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
    if is_watch {
        if let Some(name) = &t.name {
            let extra = Selector::parse_fields(&format!("metadata.name={name}")).unwrap_or_default();
            fields = Selector::parse_fields(&format!(
                "metadata.name={name}{}",
                q.get("fieldSelector").map(|f| format!(",{f}")).unwrap_or_default()
            ))
            .unwrap_or(extra);
        }
        let p = WatchParams {
            resource: t.def.key(),
            namespace: t.namespace.clone(),
            labels,
            fields,
            resource_version: rv,
            bookmarks: q.get("allowWatchBookmarks").map(String::as_str) == Some("true"),
            send_initial_events: q.get("sendInitialEvents").map(String::as_str) == Some("true"),
            timeout: q.get("timeoutSeconds").and_then(|s| s.parse().ok()).map(Duration::from_secs),
            kind: t.def.kind.to_string(),
            api_version: t.def.api_version(),
            table,
        };
        return watch::watch(app.store.clone(), p, app.bookmark_every);
    }
    if q.get("resourceVersionMatch").map(String::as_str) == Some("Exact")
        && let Some(rv) = rv
        && let Err(e) = app.store.check_rv(rv)
    {
        return store_error(&e);
    }
    let (items, list_rv) = app.store.list(&t.def.key(), t.namespace.as_deref());
    let items: Vec<Value> =
        items.into_iter().filter(|o| labels.matches_labels(o) && fields.matches_fields(o)).collect();
    if let Some(include) = table {
        return ok(&crate::table::table(t.def.kind, &items, &list_rv.to_string(), include, true));
    }
    ok(&json!({
        "kind": format!("{}List", t.def.kind), "apiVersion": t.def.api_version(),
        "metadata": {"resourceVersion": list_rv.to_string()}, "items": items,
    }))
}

fn get_one(app: &App, t: &Target, table: Option<crate::table::Include>) -> Response<Body> {
    match app.store.get(&key(t)) {
        Ok(o) => match table {
            Some(include) => {
                let rv = o.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or("").to_string();
                ok(&crate::table::table(t.def.kind, std::slice::from_ref(&o), &rv, include, true))
            }
            None => ok(&o),
        },
        Err(e) => store_error(&e),
    }
}

fn parse_json(body: &[u8]) -> Result<Value, Response<Body>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err(error(400, "BadRequest", "the request body must be a JSON object")),
        Err(e) => Err(error(400, "BadRequest", &format!("error decoding request body: {e}"))),
    }
}

fn review(app: &App, t: &Target, body: &[u8], ident: &Identity) -> Response<Body> {
    let v = match parse_json(body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let out = match t.def.plural {
        "tokenreviews" => crate::auth::token_review(&app.tokens, v),
        "selfsubjectreviews" => json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview", "metadata": {},
            "status": {"userInfo": {"username": ident.user, "uid": ident.uid, "groups": ident.groups}},
        }),
        "selfsubjectaccessreviews" => {
            let mut sar = v.clone();
            sar["spec"]["user"] = json!(ident.user);
            sar["spec"]["groups"] = json!(ident.groups);
            let mut out = crate::auth::subject_access_review(&app.policy, sar);
            out["kind"] = json!("SelfSubjectAccessReview");
            out["spec"] = v.get("spec").cloned().unwrap_or(json!({}));
            out
        }
        _ => crate::auth::subject_access_review(&app.policy, v),
    };
    crate::respond::json_response(StatusCode::CREATED, &out)
}

/// Checks the namespace of the request against the body's and that the namespace exists.
fn check_namespace(app: &App, t: &Target, obj: &Value) -> Result<(), Response<Body>> {
    let Some(ns) = &t.namespace else { return Ok(()) };
    if let Some(body_ns) = obj.pointer("/metadata/namespace").and_then(Value::as_str)
        && !body_ns.is_empty()
        && body_ns != ns
    {
        return Err(error(
            400,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let nk = Key { resource: "/v1/namespaces".into(), namespace: String::new(), name: ns.clone() };
    if !app.store.contains(&nk) {
        return Err(store_error(&StoreError::NotFound { resource: "namespaces".into(), name: ns.clone() }));
    }
    Ok(())
}

/// TokenRequest on `serviceaccounts/{name}/token` (see token_request.rs).
fn token_request(app: &App, t: &Target, body: &[u8]) -> Response<Body> {
    let req = match parse_json(body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let sa = match app.store.get(&key(t)) {
        Ok(o) => o,
        Err(e) => return store_error(&e),
    };
    let (ns, name) = (t.namespace.clone().unwrap_or_default(), t.name.clone().unwrap_or_default());
    match crate::token_request::answer(&ns, &name, &sa, &req, chrono::Utc::now()) {
        Ok(out) => crate::respond::json_response(StatusCode::CREATED, &out),
        Err(msg) => error(422, "Invalid", &msg),
    }
}

fn create(app: &App, t: &Target, body: &[u8], ident: &Identity) -> Response<Body> {
    if t.subresource.is_some() {
        return error(405, "MethodNotAllowed", "create is not supported on this subresource");
    }
    let mut obj = match parse_json(body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    if t.def.key() == crate::csr::RESOURCE
        && let Err(message) = crate::csr::prepare_create(&mut obj, ident, app.csr_min_expiration)
    {
        return error(422, "Invalid", &format!("CertificateSigningRequest.certificates.k8s.io is invalid: {message}"));
    }
    if let Err(r) = check_namespace(app, t, &obj) {
        return r;
    }
    if t.def.group.is_empty()
        && t.def.plural == "pods"
        && let Err(e) = crate::ephemeral::check_create(&obj)
    {
        return e.response();
    }
    obj["apiVersion"] = json!(t.def.api_version());
    obj["kind"] = json!(t.def.kind);
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    crate::semantics::prepare_create(t.def, &mut obj, app.bind_unscheduled_to.as_deref());
    match app.store.create(&t.def.key(), t.namespace.as_deref().unwrap_or(""), obj) {
        Ok(o) => crate::respond::json_response(StatusCode::CREATED, &o),
        Err(e) => store_error(&e),
    }
}

/// What a write to the object or one of its subresources stores: see [`restrict`]; a pod's
/// `ephemeralcontainers` subresource changes its ephemeral containers alone, its `resize`
/// subresource its containers' resources and resize policies alone, or is refused.
fn written(t: &Target, old: &Value, new: Value) -> Result<Value, Response<Body>> {
    if t.def.key() == crate::csr::RESOURCE
        && let Some(sub) = t.subresource.as_deref()
    {
        return Ok(crate::csr::subresource_write(sub, old, &new));
    }
    if t.def.group.is_empty() && t.def.plural == "pods" && t.subresource.as_deref() == Some("ephemeralcontainers") {
        return crate::ephemeral::update(old, &new).map_err(|e| e.response());
    }
    if t.def.group.is_empty() && t.def.plural == "pods" && t.subresource.as_deref() == Some("resize") {
        return crate::resize::update(old, &new).map_err(|e| e.response());
    }
    Ok(restrict(t, old, new))
}

/// Merges a write into the stored object according to the status subresource rules.
fn restrict(t: &Target, old: &Value, mut new: Value) -> Value {
    if t.subresource.as_deref() == Some("status") {
        let mut out = old.clone();
        out["status"] = new.get("status").cloned().unwrap_or(Value::Null);
        if let Some(rv) = new.pointer("/metadata/resourceVersion") {
            out["metadata"]["resourceVersion"] = rv.clone();
        }
        return out;
    }
    if t.def.status {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    }
    new["apiVersion"] = json!(t.def.api_version());
    new["kind"] = json!(t.def.kind);
    new
}

fn update(app: &App, t: &Target, body: &[u8]) -> Response<Body> {
    let obj = match parse_json(body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let k = key(t);
    let old = match app.store.get(&k) {
        Ok(o) => o,
        Err(e) => return store_error(&e),
    };
    match written(t, &old, obj) {
        Ok(obj) => finish_write(app, t, &k, obj),
        Err(r) => r,
    }
}

fn finish_write(app: &App, t: &Target, k: &Key, obj: Value) -> Response<Body> {
    if t.def.group.is_empty() && t.def.plural == "pods" && t.subresource.is_none() {
        let old = match app.store.get(k) {
            Ok(o) => o,
            Err(e) => return store_error(&e),
        };
        if let Err(message) = crate::semantics::validate_pod_update(&old, &obj) {
            return error(422, "Invalid", &message);
        }
    }
    match app.store.update(k, obj) {
        Ok(o) => {
            // A finalizer removal on an object being deleted completes the deletion.
            if crate::semantics::deletion_complete(t.def, &o) {
                let _ = app.store.delete(k);
            }
            ok(&o)
        }
        Err(e) => store_error(&e),
    }
}

fn patch_one(
    app: &App,
    t: &Target,
    ct: &str,
    body: &[u8],
    q: &HashMap<String, String>,
    ident: &Identity,
) -> Response<Body> {
    let pt = match PatchType::from_content_type(ct) {
        Ok(p) => p,
        Err(e) => return error(415, "UnsupportedMediaType", &e.to_string()),
    };
    let p = match patch::parse_body(pt, body) {
        Ok(p) => p,
        Err(e) => return error(400, "BadRequest", &e.to_string()),
    };
    let k = key(t);
    let old = match app.store.get(&k) {
        Ok(o) => o,
        Err(StoreError::NotFound { .. }) if pt == PatchType::Apply && t.subresource.is_none() => {
            let _ = q.get("fieldManager");
            return create(app, t, &serde_json::to_vec(&p).unwrap_or_default(), ident);
        }
        Err(e) => return store_error(&e),
    };
    let mut doc = old.clone();
    // Patches apply without a precondition unless they carry a resourceVersion themselves.
    if let Some(m) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    if let Err(e) = patch::apply(pt, &mut doc, &p) {
        return error(422, "Invalid", &e.to_string());
    }
    // A patch that sets metadata.uid is a precondition on the object's identity (the kubelet puts
    // the pod's UID in every status patch so a pod deleted and recreated under the same name is
    // not patched): kube-apiserver's storage answers 409 with this message.
    let (want, have) = (doc.pointer("/metadata/uid"), old.pointer("/metadata/uid"));
    if want != have {
        let msg = format!(
            "Operation cannot be fulfilled on {} \"{}\": StorageError: invalid object, Code: 4, Key: {}, \
             ResourceVersion: 0, AdditionalErrorMsg: Precondition failed: UID in precondition: {}, UID in object meta: {}",
            t.def.plural,
            k.name,
            storage_key(t),
            want.and_then(Value::as_str).unwrap_or(""),
            have.and_then(Value::as_str).unwrap_or("")
        );
        let mut s = crate::respond::store_error_status(&StoreError::Conflict {
            resource: t.def.plural.into(),
            name: k.name.clone(),
        });
        s["message"] = json!(msg);
        return crate::respond::json_response(StatusCode::CONFLICT, &s);
    }
    match written(t, &old, doc) {
        Ok(doc) => finish_write(app, t, &k, doc),
        Err(r) => r,
    }
}

fn grace_period(body: &[u8], q: &HashMap<String, String>) -> Option<i64> {
    let from_body = serde_json::from_slice::<Value>(body).ok().and_then(|v| v.get("gracePeriodSeconds")?.as_i64());
    from_body.or_else(|| q.get("gracePeriodSeconds").and_then(|s| s.parse().ok()))
}

fn delete(app: &App, t: &Target, body: &[u8], q: &HashMap<String, String>) -> Response<Body> {
    let k = key(t);
    let obj = match app.store.get(&k) {
        Ok(o) => o,
        Err(e) => return store_error(&e),
    };
    // DeleteOptions.preconditions (uid, resourceVersion), as the kubelet sends them.
    let opts = serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
    for (field, path) in [("uid", "/metadata/uid"), ("resourceVersion", "/metadata/resourceVersion")] {
        if let Some(want) = opts.pointer(&format!("/preconditions/{field}")).and_then(Value::as_str)
            && obj.pointer(path).and_then(Value::as_str) != Some(want)
        {
            let name = k.name.clone();
            let msg = format!(
                "Precondition failed: {field} in precondition: {want}, {field} in object meta: {}",
                obj.pointer(path).and_then(Value::as_str).unwrap_or("")
            );
            let mut s =
                crate::respond::store_error_status(&StoreError::Conflict { resource: t.def.plural.into(), name });
            s["message"] = json!(msg);
            return crate::respond::json_response(StatusCode::CONFLICT, &s);
        }
    }
    let grace = grace_period(body, q);
    if let Some(mut marked) = crate::semantics::graceful_delete(t.def, &obj, grace) {
        if marked == obj {
            return ok(&obj);
        }
        if let Some(m) = marked.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        return match app.store.update_deletion(&k, marked) {
            Ok(o) => ok(&o),
            Err(e) => store_error(&e),
        };
    }
    match app.store.delete(&k) {
        Ok(o) => {
            if t.def.plural == "namespaces" {
                app.store.delete_namespace_contents(&k.name);
            }
            ok(&o)
        }
        Err(e) => store_error(&e),
    }
}

fn delete_collection(app: &App, t: &Target, q: &HashMap<String, String>) -> Response<Body> {
    let (labels, fields) = match selectors(q) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (items, _) = app.store.list(&t.def.key(), t.namespace.as_deref());
    let mut deleted = Vec::new();
    for o in items.into_iter().filter(|o| labels.matches_labels(o) && fields.matches_fields(o)) {
        let name = o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
        let k = Key { name, ..key(t) };
        if let Ok(d) = app.store.delete(&k) {
            deleted.push(d);
        }
    }
    ok(&json!({"kind": format!("{}List", t.def.kind), "apiVersion": t.def.api_version(),
        "metadata": {"resourceVersion": app.store.current_rv().to_string()}, "items": deleted}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let t = parse_target("/api/v1/namespaces/default/pods/p1/status").unwrap();
        assert_eq!((t.def.plural, t.namespace.as_deref(), t.name.as_deref()), ("pods", Some("default"), Some("p1")));
        assert_eq!(t.subresource.as_deref(), Some("status"));
        let t = parse_target("/api/v1/namespaces/kube-system").unwrap();
        assert_eq!((t.def.plural, t.namespace, t.name.as_deref()), ("namespaces", None, Some("kube-system")));
        let t = parse_target("/api/v1/namespaces").unwrap();
        assert_eq!((t.def.plural, t.name), ("namespaces", None));
        let t = parse_target("/api/v1/watch/namespaces/default/pods").unwrap();
        assert!(t.watch_path && t.def.plural == "pods");
        let t = parse_target("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1").unwrap();
        assert_eq!(t.def.kind, "Lease");
        let t = parse_target("/api/v1/nodes/n1/proxy/stats/summary").unwrap();
        assert_eq!((t.subresource.as_deref(), t.rest.as_str()), (Some("proxy"), "stats/summary"));
        assert!(parse_target("/apis/foo/v1/bars").is_none());
    }

    #[test]
    fn query_decoding() {
        let q = parse_query(Some("fieldSelector=spec.nodeName%3Dn1&labelSelector=a+in+(x)&watch"));
        assert_eq!(q["fieldSelector"], "spec.nodeName=n1");
        assert_eq!(q["labelSelector"], "a in (x)");
        assert_eq!(q["watch"], "");
        assert_eq!(parse_query(Some("limit=100%"))["limit"], "100%");
    }
}
