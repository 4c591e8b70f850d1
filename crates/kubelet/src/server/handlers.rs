//! The kubelet API on 10250 (behind [`super::auth`]): pods, running pods, exec/attach/port-forward
//! through the runtime's streaming server, run, container and node logs, configz.
//! `enableDebuggingHandlers: false` turns the debugging endpoints into 405s, as upstream.

use super::streaming;
use crate::cri::labels::{CONTAINER_NAME, POD_NAME, POD_NAMESPACE, POD_UID};
use crate::cri::{DynRuntime, api};
use crate::status_manager::Statuses;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use k8s_openapi::api::core::v1::Pod;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What the handlers read.
#[derive(Clone)]
pub struct ApiState {
    pub statuses: Statuses,
    pub runtime: DynRuntime,
    /// `/configz`: the configuration in effect.
    pub configz: Arc<serde_json::Value>,
    /// `/run` commands are bounded by this (runtimeRequestTimeout).
    pub exec_timeout: Duration,
    /// `/logs/` serves this directory (/var/log).
    pub node_log_dir: PathBuf,
    /// Pod log directory (podLogsDir), for `/containerLogs`.
    pub pod_logs_dir: PathBuf,
}

fn err(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, msg.into()).into_response()
}

/// An error answer before a response exists (small, unlike `Response`).
#[derive(Debug)]
struct HttpError(StatusCode, String);

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

/// Repeated query parameters, in order (`command=ls&command=-l`), percent- and `+`-decoded.
fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(q.unwrap_or("").as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

fn flag(pairs: &[(String, String)], names: &[&str]) -> bool {
    pairs.iter().any(|(k, v)| names.contains(&k.as_str()) && matches!(v.as_str(), "1" | "true" | "True" | ""))
}

fn find_pod(st: &ApiState, ns: &str, name: &str, uid: Option<&str>) -> Result<Arc<Pod>, HttpError> {
    let pod = st
        .statuses
        .find(ns, name)
        .ok_or_else(|| HttpError(StatusCode::NOT_FOUND, format!("pod {name:?} does not exist\n")))?;
    if let Some(uid) = uid
        && pod.metadata.uid.as_deref() != Some(uid)
    {
        return Err(HttpError(StatusCode::NOT_FOUND, format!("pod {name:?} with uid {uid} does not exist\n")));
    }
    Ok(pod)
}

/// The runtime id of the pod's current instance of `container`.
fn container_id(pod: &Pod, container: &str) -> Result<String, HttpError> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let spec = pod.spec.as_ref();
    let known = spec.is_some_and(|s| {
        s.containers.iter().any(|c| c.name == container)
            || s.init_containers.iter().flatten().any(|c| c.name == container)
            || s.ephemeral_containers.iter().flatten().any(|c| c.name == container)
    });
    if !known {
        return Err(HttpError(StatusCode::NOT_FOUND, format!("container {container:?} not found in pod {name:?}\n")));
    }
    let st = pod.status.as_ref();
    let all = st.into_iter().flat_map(|s| {
        s.container_statuses
            .iter()
            .flatten()
            .chain(s.init_container_statuses.iter().flatten())
            .chain(s.ephemeral_container_statuses.iter().flatten())
    });
    all.filter(|c| c.name == container)
        .find_map(|c| c.container_id.as_deref())
        .and_then(|id| id.split_once("://").map(|(_, id)| id.to_string()).or(Some(id.to_string())))
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            HttpError(StatusCode::NOT_FOUND, format!("container {container:?} in pod {name:?} has not been created\n"))
        })
}

async fn pods(State(st): State<ApiState>) -> impl IntoResponse {
    let pods = st.statuses.list();
    let items: Vec<&Pod> = pods.iter().map(|p| &**p).collect();
    axum::Json(serde_json::json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}))
}

/// `/runningpods/`: pods as the runtime sees them (sandboxes and containers that are running).
async fn running_pods(State(st): State<ApiState>) -> Response {
    let ready = api::PodSandboxStateValue { state: api::PodSandboxState::SandboxReady as i32 };
    let running = api::ContainerStateValue { state: api::ContainerState::ContainerRunning as i32 };
    let sandboxes =
        st.runtime.list_pod_sandboxes(Some(api::PodSandboxFilter { state: Some(ready), ..Default::default() }));
    let containers =
        st.runtime.list_containers(Some(api::ContainerFilter { state: Some(running), ..Default::default() }));
    let (sandboxes, containers) = match tokio::try_join!(sandboxes, containers) {
        Ok(v) => v,
        Err(e) => return err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let mut by_uid: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for s in &sandboxes {
        let Some(uid) = s.labels.get(POD_UID) else { continue };
        let l = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
        by_uid.insert(
            uid.clone(),
            serde_json::json!({
                "metadata": {"name": l(POD_NAME), "namespace": l(POD_NAMESPACE), "uid": uid, "creationTimestamp": null},
                "spec": {"containers": []},
                "status": {},
            }),
        );
    }
    for c in &containers {
        let Some(pod) = c.labels.get(POD_UID).and_then(|u| by_uid.get_mut(u)) else { continue };
        let image = c.image.as_ref().map(|i| i.image.clone()).unwrap_or_default();
        let name = c.labels.get(CONTAINER_NAME).cloned().unwrap_or_default();
        if let Some(list) = pod["spec"]["containers"].as_array_mut() {
            list.push(serde_json::json!({"name": name, "image": image, "resources": {}}));
        }
    }
    axum::Json(serde_json::json!({
        "kind": "PodList", "apiVersion": "v1", "metadata": {},
        "items": by_uid.into_values().collect::<Vec<_>>(),
    }))
    .into_response()
}

async fn configz(State(st): State<ApiState>) -> impl IntoResponse {
    axum::Json(serde_json::json!({ "kubeletconfig": st.configz.as_ref() }))
}

/// Path parameters of exec/attach/run: `{ns}/{pod}/{container}` or `{ns}/{pod}/{uid}/{container}`.
fn split_target(parts: &[String]) -> Option<(&str, &str, Option<&str>, &str)> {
    match parts {
        [ns, pod, c] => Some((ns, pod, None, c)),
        [ns, pod, uid, c] => Some((ns, pod, Some(uid.as_str()), c)),
        _ => None,
    }
}

struct StreamOpts {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
    command: Vec<String>,
}

/// Stream options from the query, checked as upstream (at least one stream; tty drops stderr).
fn stream_opts(q: Option<&str>, need_command: bool) -> Result<StreamOpts, HttpError> {
    let pairs = query_pairs(q);
    let stdin = flag(&pairs, &["input", "stdin"]);
    let stdout = flag(&pairs, &["output", "stdout"]);
    let tty = flag(&pairs, &["tty"]);
    let stderr = flag(&pairs, &["error", "stderr"]) && !tty;
    let command: Vec<String> = pairs.into_iter().filter(|(k, _)| k == "command").map(|(_, v)| v).collect();
    if !stdin && !stdout && !stderr {
        return Err(HttpError(StatusCode::BAD_REQUEST, "you must specify at least 1 of stdin, stdout, stderr".into()));
    }
    if need_command && command.is_empty() {
        return Err(HttpError(StatusCode::BAD_REQUEST, "you must specify a command (command=...)".into()));
    }
    Ok(StreamOpts { stdin, stdout, stderr, tty, command })
}

async fn exec_or_attach(st: ApiState, parts: Vec<String>, req: Request, exec: bool) -> Response {
    let Some((ns, name, uid, container)) = split_target(&parts) else {
        return err(StatusCode::NOT_FOUND, "expected /{namespace}/{pod}/[{uid}/]{container}");
    };
    let opts = match stream_opts(req.uri().query(), exec) {
        Ok(o) => o,
        Err(r) => return r.into_response(),
    };
    let id = match find_pod(&st, ns, name, uid).and_then(|p| container_id(&p, container)) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let url = if exec {
        st.runtime
            .exec(api::ExecRequest {
                container_id: id,
                cmd: opts.command,
                tty: opts.tty,
                stdin: opts.stdin,
                stdout: opts.stdout,
                stderr: opts.stderr,
            })
            .await
    } else {
        st.runtime
            .attach(api::AttachRequest {
                container_id: id,
                stdin: opts.stdin,
                tty: opts.tty,
                stdout: opts.stdout,
                stderr: opts.stderr,
            })
            .await
    };
    match url {
        Ok(url) => streaming::proxy(req, &url).await,
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn port_forward(st: ApiState, parts: Vec<String>, req: Request) -> Response {
    let (ns, name, uid) = match parts.as_slice() {
        [ns, pod] => (ns, pod, None),
        [ns, pod, uid] => (ns, pod, Some(uid.as_str())),
        _ => return err(StatusCode::NOT_FOUND, "expected /{namespace}/{pod}[/{uid}]"),
    };
    let pod = match find_pod(&st, ns, name, uid) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let pod_uid = pod.metadata.uid.clone().unwrap_or_default();
    let ready = api::PodSandboxStateValue { state: api::PodSandboxState::SandboxReady as i32 };
    let filter = api::PodSandboxFilter {
        state: Some(ready),
        label_selector: [(POD_UID.to_string(), pod_uid)].into(),
        ..Default::default()
    };
    let sandbox = match st.runtime.list_pod_sandboxes(Some(filter)).await {
        Ok(list) => list.into_iter().max_by_key(|s| s.created_at),
        Err(e) => return err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let Some(sandbox) = sandbox else {
        return err(StatusCode::NOT_FOUND, format!("pod {name:?} has no running sandbox\n"));
    };
    let ports: Vec<i32> = query_pairs(req.uri().query())
        .into_iter()
        .filter(|(k, _)| k == "port")
        .filter_map(|(_, v)| v.parse().ok())
        .collect();
    match st.runtime.port_forward(api::PortForwardRequest { pod_sandbox_id: sandbox.id, port: ports }).await {
        Ok(url) => streaming::proxy(req, &url).await,
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `POST /run/{ns}/{pod}/[{uid}/]{container}?cmd=...`: runs a command, answers its output.
async fn run(st: ApiState, parts: Vec<String>, q: Option<String>) -> Response {
    let Some((ns, name, uid, container)) = split_target(&parts) else {
        return err(StatusCode::NOT_FOUND, "expected /{namespace}/{pod}/[{uid}/]{container}");
    };
    let cmd: Vec<String> = query_pairs(q.as_deref())
        .into_iter()
        .find(|(k, _)| k == "cmd")
        .map(|(_, v)| v.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    if cmd.is_empty() {
        return err(StatusCode::BAD_REQUEST, "you must specify a command (cmd=...)");
    }
    let id = match find_pod(&st, ns, name, uid).and_then(|p| container_id(&p, container)) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    match st.runtime.exec_sync(&id, cmd, st.exec_timeout).await {
        Ok(out) => {
            let mut data = out.stdout;
            data.extend_from_slice(&out.stderr);
            (StatusCode::OK, data).into_response()
        }
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `/logs/...`: files and directory listings under the node's log directory.
async fn node_logs(State(st): State<ApiState>, path: Option<Path<String>>) -> Response {
    let rel = path.map(|Path(p)| p).unwrap_or_default();
    if rel.split('/').any(|c| c == "..") {
        return err(StatusCode::BAD_REQUEST, "invalid path");
    }
    let root = match std::fs::canonicalize(&st.node_log_dir) {
        Ok(r) => r,
        Err(e) => return err(StatusCode::NOT_FOUND, e.to_string()),
    };
    let full = match std::fs::canonicalize(root.join(&rel)) {
        Ok(p) if p.starts_with(&root) => p,
        Ok(_) => return err(StatusCode::FORBIDDEN, "path leaves the log directory"),
        Err(_) => return err(StatusCode::NOT_FOUND, "404 page not found\n"),
    };
    if full.is_dir() {
        let mut names: Vec<String> = match std::fs::read_dir(&full) {
            Ok(rd) => rd
                .flatten()
                .map(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    if e.file_type().is_ok_and(|t| t.is_dir()) { format!("{n}/") } else { n }
                })
                .collect(),
            Err(e) => return err(StatusCode::FORBIDDEN, e.to_string()),
        };
        names.sort();
        let mut html = String::from("<pre>\n");
        for n in names {
            let esc = n.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
            html.push_str(&format!("<a href=\"{esc}\">{esc}</a>\n"));
        }
        html.push_str("</pre>\n");
        return ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
    }
    match tokio::fs::File::open(&full).await {
        Ok(f) => {
            let stream = tokio_util_stream(f);
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], Body::from_stream(stream)).into_response()
        }
        Err(e) => err(StatusCode::FORBIDDEN, e.to_string()),
    }
}

/// A file as a stream of chunks (no whole-file buffering for large logs).
fn tokio_util_stream(f: tokio::fs::File) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> {
    use tokio::io::AsyncReadExt;
    futures::stream::unfold(Some(f), |f| async move {
        let mut f = f?;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), Some(f)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

/// `/containerLogs/{ns}/{pod}/{container}`: the container's CRI log, decoded, with upstream's
/// PodLogOptions (follow, tailLines, limitBytes, sinceSeconds, sinceTime, timestamps, previous),
/// across rotated files.
async fn container_logs(
    State(st): State<ApiState>,
    Path((ns, name, container)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    let query: crate::logs::PodLogQuery = match log_query(q.as_deref()) {
        Ok(q) => q,
        Err(e) => return err(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let opts = match query.to_options(std::time::SystemTime::now()) {
        Ok(o) => o,
        Err(e) => return err(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let pod = match find_pod(&st, &ns, &name, None) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let id = match container_id(&pod, &container) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    let cs = status_named(&pod, &container);
    let restart_count = cs.as_ref().map_or(0, |c| c.restart_count);
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let pod_log_dir = st.pod_logs_dir.join(format!("{ns}_{name}_{uid}"));
    // The runtime knows each instance's log path; the computed path is the fallback.
    let cri_path = |id: String| {
        let rt = st.runtime.clone();
        async move { rt.container_status(&id).await.ok().map(|s| s.log_path).filter(|p| !p.is_empty()) }
    };
    let (path, reader_id) = if query.previous {
        let last = cs
            .as_ref()
            .and_then(|c| c.last_state.as_ref()?.terminated.as_ref()?.container_id.clone())
            .map(|id| id.split_once("://").map_or(id.clone(), |(_, i)| i.to_string()));
        let from_cri = match last.clone() {
            Some(id) => cri_path(id).await,
            None => None,
        };
        match from_cri
            .map(PathBuf::from)
            .or_else(|| crate::logs::previous_log_path(&pod_log_dir, &container, restart_count))
        {
            Some(p) => (p, last.unwrap_or_default()),
            None => {
                return err(
                    StatusCode::BAD_REQUEST,
                    format!("previous terminated container {container:?} in pod {name:?} not found"),
                );
            }
        }
    } else {
        let p = cri_path(id.clone())
            .await
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::logs::container_log_path(&pod_log_dir, &container, restart_count));
        (p, id)
    };
    let running = crate::logs::container_running(st.runtime.clone(), reader_id);
    match crate::logs::read_logs(path, opts, running).await {
        Ok(stream) => ([(header::CONTENT_TYPE, "text/plain")], Body::from_stream(stream)).into_response(),
        Err(e) if e.is_not_found() => err(StatusCode::NOT_FOUND, e.to_string()),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The status of the container (init, regular or ephemeral) named `name`.
fn status_named(pod: &Pod, name: &str) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    let st = pod.status.as_ref()?;
    let all = st
        .container_statuses
        .iter()
        .flatten()
        .chain(st.init_container_statuses.iter().flatten())
        .chain(st.ephemeral_container_statuses.iter().flatten());
    all.into_iter().find(|c| c.name == name).cloned()
}

/// A query parameter of the wrong type (`kind` is "an integer" or "a boolean").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {value:?} is not {kind}")]
pub struct BadParam {
    key: String,
    value: String,
    kind: &'static str,
}

/// The query string as a [`crate::logs::PodLogQuery`] (upstream parameter names).
fn log_query(q: Option<&str>) -> Result<crate::logs::PodLogQuery, BadParam> {
    let mut out = crate::logs::PodLogQuery::default();
    let bad = |k: &str, v: &str, kind| BadParam { key: k.to_string(), value: v.to_string(), kind };
    let int = |k: &str, v: &str| v.parse::<i64>().map_err(|_| bad(k, v, "an integer"));
    let boolean = |k: &str, v: &str| match v {
        "" | "1" | "true" | "True" | "TRUE" => Ok(true),
        "0" | "false" | "False" | "FALSE" => Ok(false),
        _ => Err(bad(k, v, "a boolean")),
    };
    for (k, v) in query_pairs(q) {
        match k.as_str() {
            "follow" => out.follow = boolean(&k, &v)?,
            "previous" => out.previous = boolean(&k, &v)?,
            "timestamps" => out.timestamps = boolean(&k, &v)?,
            "tailLines" => out.tail_lines = Some(int(&k, &v)?),
            "limitBytes" => out.limit_bytes = Some(int(&k, &v)?),
            "sinceSeconds" => out.since_seconds = Some(int(&k, &v)?),
            "sinceTime" => out.since_time = Some(v),
            _ => {}
        }
    }
    Ok(out)
}

async fn disabled() -> Response {
    err(StatusCode::METHOD_NOT_ALLOWED, "Debug endpoints are disabled.")
}

/// The 10250 routes (healthz and the metrics/stats routes are merged in by the caller).
pub fn router(st: ApiState, debugging: bool, system_logs: bool) -> Router {
    let base = Router::new().route("/pods", get(pods)).route("/pods/", get(pods));
    let dbg = if debugging {
        let mut r = Router::new()
            .route("/runningpods/", get(running_pods))
            .route("/configz", get(configz))
            .route("/exec/{*rest}", any(exec_path))
            .route("/attach/{*rest}", any(attach_path))
            .route("/portForward/{*rest}", any(port_forward_path))
            .route("/run/{*rest}", post(run_path))
            .route("/containerLogs/{ns}/{pod}/{container}", get(container_logs));
        if system_logs {
            r = r.route("/logs/", get(node_logs_root)).route("/logs/{*path}", get(node_logs));
        }
        r
    } else {
        Router::new()
            .route("/runningpods/", any(disabled))
            .route("/exec/{*rest}", any(disabled))
            .route("/attach/{*rest}", any(disabled))
            .route("/portForward/{*rest}", any(disabled))
            .route("/run/{*rest}", any(disabled))
            .route("/containerLogs/{*rest}", any(disabled))
            .route("/logs/", any(disabled))
            .route("/logs/{*path}", any(disabled))
            .route("/configz", get(configz))
    };
    base.merge(dbg).with_state(st)
}

fn segments(rest: &str) -> Vec<String> {
    rest.split('/').filter(|s| !s.is_empty()).map(str::to_string).collect()
}

async fn exec_path(State(st): State<ApiState>, Path(rest): Path<String>, req: Request) -> Response {
    exec_or_attach(st, segments(&rest), req, true).await
}

async fn attach_path(State(st): State<ApiState>, Path(rest): Path<String>, req: Request) -> Response {
    exec_or_attach(st, segments(&rest), req, false).await
}

async fn port_forward_path(State(st): State<ApiState>, Path(rest): Path<String>, req: Request) -> Response {
    port_forward(st, segments(&rest), req).await
}

async fn run_path(State(st): State<ApiState>, Path(rest): Path<String>, RawQuery(q): RawQuery) -> Response {
    run(st, segments(&rest), q).await
}

async fn node_logs_root(st: State<ApiState>) -> Response {
    node_logs(st, None).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::fake::FakeRuntime;
    use tower::ServiceExt;

    fn state(log_dir: &std::path::Path) -> ApiState {
        ApiState {
            statuses: Statuses::new(),
            runtime: Arc::new(FakeRuntime::new()),
            configz: Arc::new(serde_json::json!({"port": 10250})),
            exec_timeout: Duration::from_secs(5),
            node_log_dir: log_dir.to_path_buf(),
            pod_logs_dir: log_dir.join("pods"),
        }
    }

    async fn get(r: &Router, method: &str, path: &str) -> (u16, String) {
        let req = axum::http::Request::builder().method(method).uri(path).body(Body::empty()).unwrap();
        let resp = r.clone().oneshot(req).await.unwrap();
        let code = resp.status().as_u16();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (code, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn debugging_handlers_can_be_disabled() {
        let dir = tempfile::tempdir().unwrap();
        let off = router(state(dir.path()), false, true);
        for (m, p) in
            [("POST", "/exec/ns/p/c"), ("GET", "/containerLogs/ns/p/c"), ("GET", "/logs/"), ("GET", "/runningpods/")]
        {
            assert_eq!(get(&off, m, p).await, (405, "Debug endpoints are disabled.".into()), "{m} {p}");
        }
        assert_eq!(get(&off, "GET", "/pods").await.0, 200);
        let on = router(state(dir.path()), true, true);
        let (code, body) = get(&on, "GET", "/configz").await;
        assert_eq!((code, body.as_str()), (200, r#"{"kubeletconfig":{"port":10250}}"#));
        // Unknown pods and containers are 404s naming them.
        let (code, body) = get(&on, "GET", "/containerLogs/default/nope/c").await;
        assert_eq!((code, body.as_str()), (404, "pod \"nope\" does not exist\n"));
        let (code, body) = get(&on, "POST", "/exec/default/nope/c?command=ls&output=1").await;
        assert_eq!((code, body.as_str()), (404, "pod \"nope\" does not exist\n"));
        let (code, _) = get(&on, "POST", "/exec/default/nope/c?command=ls").await;
        assert_eq!(code, 400, "no stream selected");
    }

    #[tokio::test]
    async fn node_logs_serve_files_and_listings_inside_the_log_dir_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("syslog"), "hello log\n").unwrap();
        std::fs::write(dir.path().join("sub/<x>.log"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("escape")).unwrap();
        let r = router(state(dir.path()), true, true);
        let (code, body) = get(&r, "GET", "/logs/").await;
        assert_eq!(code, 200);
        assert!(
            body.contains(r#"<a href="syslog">syslog</a>"#) && body.contains(r#"<a href="sub/">sub/</a>"#),
            "{body}"
        );
        assert_eq!(get(&r, "GET", "/logs/syslog").await, (200, "hello log\n".into()));
        let (_, listing) = get(&r, "GET", "/logs/sub/").await;
        assert!(listing.contains("&lt;x&gt;.log"), "names are escaped: {listing}");
        assert_eq!(get(&r, "GET", "/logs/escape/passwd").await.0, 403, "symlink out of the log dir");
        assert_eq!(get(&r, "GET", "/logs/../etc/passwd").await.0, 400);
        assert_eq!(get(&r, "GET", "/logs/missing").await.0, 404);
        let no_system_logs = router(state(dir.path()), true, false);
        assert_eq!(get(&no_system_logs, "GET", "/logs/syslog").await.0, 404);
    }

    #[test]
    fn query_decoding_keeps_repeats_in_order() {
        let p = query_pairs(Some("command=sh&command=-c&command=echo%20hi%3B+ls&output=1&tty=true"));
        let cmd: Vec<&str> = p.iter().filter(|(k, _)| k == "command").map(|(_, v)| v.as_str()).collect();
        assert_eq!(cmd, vec!["sh", "-c", "echo hi; ls"]);
        assert!(flag(&p, &["output"]));
        assert!(flag(&p, &["tty"]));
        assert!(!flag(&p, &["input"]));
        assert_eq!(query_pairs(Some("a=100%&b=%zz")), [("a".into(), "100%".into()), ("b".into(), "%zz".into())]);
    }

    #[test]
    fn stream_options_follow_upstream_rules() {
        assert!(stream_opts(Some("command=ls"), true).is_err(), "no stream selected");
        assert!(stream_opts(Some("output=1"), true).is_err(), "exec needs a command");
        let o = stream_opts(Some("output=1&error=1&tty=1&command=ls"), true).ok().unwrap();
        assert!(o.stdout && o.tty && !o.stderr, "tty drops stderr");
        let o = stream_opts(Some("input=1&output=1"), false).ok().unwrap();
        assert!(o.stdin && o.stdout && o.command.is_empty());
    }

    #[test]
    fn log_queries_use_upstream_names() {
        let q = log_query(Some("follow=true&tailLines=5&previous=1&timestamps=false&sinceSeconds=10&limitBytes=7"))
            .unwrap();
        assert!(q.follow && q.previous && !q.timestamps);
        assert_eq!((q.tail_lines, q.since_seconds, q.limit_bytes), (Some(5), Some(10), Some(7)));
        assert_eq!(log_query(Some("tailLines=x")).unwrap_err().to_string(), "tailLines: \"x\" is not an integer");
        assert_eq!(log_query(Some("follow=maybe")).unwrap_err().to_string(), "follow: \"maybe\" is not a boolean");
    }

    #[test]
    fn targets_with_and_without_uid() {
        let p = segments("ns/pod/c");
        assert_eq!(split_target(&p), Some(("ns", "pod", None, "c")));
        let p = segments("ns/pod/uid-1/c");
        assert_eq!(split_target(&p), Some(("ns", "pod", Some("uid-1"), "c")));
        assert_eq!(split_target(&segments("ns/pod")), None);
    }
}
