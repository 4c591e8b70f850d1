//! Server-side printing (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`) for pods, nodes and
//! events; other resources get NAME and AGE, like the API server's default table.

use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("not a table request")]
    NotRequested,
}

/// How rows carry their object: `includeObject=None|Metadata|Object` (default Metadata).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

impl Include {
    pub fn parse(s: Option<&str>) -> Include {
        match s {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

/// True when the client's first acceptable type is a meta.k8s.io Table.
pub fn wants_table(accept: &str) -> Result<(), TableError> {
    let first = accept.split(',').next().unwrap_or("");
    let params: Vec<&str> = first.split(';').map(str::trim).collect();
    if params.contains(&"as=Table") && params.contains(&"v=v1") { Ok(()) } else { Err(TableError::NotRequested) }
}

fn col(name: &str, ty: &str, priority: u8) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": ty, "format": format, "description": "", "priority": priority})
}

/// Human duration like kubectl's (e.g. 45s, 3m10s, 25m, 5h2m, 12h, 3d).
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60).replace("m0s", "m"),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 8 * 3600 => format!("{}h{}m", s / 3600, (s % 3600) / 60).replace("h0m", "h"),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s if s < 8 * 86400 => format!("{}d{}h", s / 86400, (s % 86400) / 3600).replace("d0h", "d"),
        s => format!("{}d", s / 86400),
    }
}

fn age(ts: Option<&str>) -> String {
    match ts.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) {
        Some(t) => human_duration((chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds()),
        None => "<unknown>".into(),
    }
}

fn s<'a>(o: &'a Value, path: &str) -> &'a str {
    o.pointer(path).and_then(Value::as_str).unwrap_or("")
}

fn or_none(v: &str) -> String {
    if v.is_empty() { "<none>".into() } else { v.into() }
}

fn columns(kind: &str) -> Vec<Value> {
    match kind {
        "Pod" => vec![
            col("Name", "string", 0),
            col("Ready", "string", 0),
            col("Status", "string", 0),
            col("Restarts", "string", 0),
            col("Age", "string", 0),
            col("IP", "string", 1),
            col("Node", "string", 1),
        ],
        "Node" => vec![
            col("Name", "string", 0),
            col("Status", "string", 0),
            col("Roles", "string", 0),
            col("Age", "string", 0),
            col("Version", "string", 0),
            col("Internal-IP", "string", 1),
            col("OS-Image", "string", 1),
            col("Kernel-Version", "string", 1),
            col("Container-Runtime", "string", 1),
        ],
        "Event" => vec![
            col("Last Seen", "string", 0),
            col("Type", "string", 0),
            col("Reason", "string", 0),
            col("Object", "string", 0),
            col("Message", "string", 0),
        ],
        _ => vec![col("Name", "string", 0), col("Age", "string", 0)],
    }
}

fn pod_status(p: &Value) -> String {
    if p.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating".into();
    }
    let mut reason = match s(p, "/status/reason") {
        "" => s(p, "/status/phase").to_string(),
        r => r.to_string(),
    };
    for c in p.pointer("/status/containerStatuses").and_then(Value::as_array).into_iter().flatten() {
        if let Some(w) = c.pointer("/state/waiting/reason").and_then(Value::as_str) {
            reason = w.into();
        } else if let Some(t) = c.pointer("/state/terminated/reason").and_then(Value::as_str) {
            reason = t.into();
        }
    }
    if reason.is_empty() { "Pending".into() } else { reason }
}

fn cells(kind: &str, o: &Value) -> Vec<Value> {
    let name = s(o, "/metadata/name");
    let created = age(o.pointer("/metadata/creationTimestamp").and_then(Value::as_str));
    match kind {
        "Pod" => {
            let statuses =
                o.pointer("/status/containerStatuses").and_then(Value::as_array).cloned().unwrap_or_default();
            let total = o.pointer("/spec/containers").and_then(Value::as_array).map_or(0, Vec::len);
            let ready = statuses.iter().filter(|c| c.get("ready") == Some(&json!(true))).count();
            let restarts: i64 = statuses.iter().filter_map(|c| c.get("restartCount")?.as_i64()).sum();
            json!([
                name,
                format!("{ready}/{total}"),
                pod_status(o),
                restarts.to_string(),
                created,
                or_none(s(o, "/status/podIP")),
                or_none(s(o, "/spec/nodeName"))
            ])
            .as_array()
            .cloned()
            .unwrap_or_default()
        }
        "Node" => {
            let conds = o.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
            let ready = conds.iter().find(|c| c.get("type") == Some(&json!("Ready")));
            let mut status = match ready.and_then(|c| c.get("status")?.as_str()) {
                Some("True") => "Ready".to_string(),
                Some(_) => "NotReady".to_string(),
                None => "Unknown".to_string(),
            };
            if o.pointer("/spec/unschedulable") == Some(&json!(true)) {
                status.push_str(",SchedulingDisabled");
            }
            let ip = o
                .pointer("/status/addresses")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().find(|x| x.get("type") == Some(&json!("InternalIP"))))
                .and_then(|a| a.get("address")?.as_str())
                .unwrap_or("");
            vec![
                json!(name),
                json!(status),
                json!("<none>"),
                json!(created),
                json!(s(o, "/status/nodeInfo/kubeletVersion")),
                json!(or_none(ip)),
                json!(or_none(s(o, "/status/nodeInfo/osImage"))),
                json!(or_none(s(o, "/status/nodeInfo/kernelVersion"))),
                json!(or_none(s(o, "/status/nodeInfo/containerRuntimeVersion"))),
            ]
        }
        "Event" => {
            let last = ["/lastTimestamp", "/eventTime", "/series/lastObservedTime", "/metadata/creationTimestamp"]
                .iter()
                .find_map(|p| o.pointer(p).and_then(Value::as_str).filter(|v| !v.is_empty()));
            let (okind, oname) = match o.get("involvedObject").or_else(|| o.get("regarding")) {
                Some(r) => (s(r, "/kind").to_lowercase(), s(r, "/name").to_string()),
                None => (String::new(), String::new()),
            };
            let message = match o.get("message").or_else(|| o.get("note")) {
                Some(Value::String(m)) => m.trim().to_string(),
                _ => String::new(),
            };
            vec![
                json!(age(last)),
                json!(s(o, "/type")),
                json!(s(o, "/reason")),
                json!(format!("{okind}/{oname}")),
                json!(message),
            ]
        }
        _ => vec![json!(name), json!(created)],
    }
}

fn row(kind: &str, o: &Value, include: Include) -> Value {
    let mut r = json!({"cells": cells(kind, o)});
    match include {
        Include::None => {}
        Include::Object => r["object"] = o.clone(),
        Include::Metadata => {
            r["object"] = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                 "metadata": o.get("metadata").cloned().unwrap_or(json!({}))})
        }
    }
    r
}

/// A meta.k8s.io/v1 Table of `items`; `headers` false leaves columnDefinitions empty (later watch events).
pub fn table(kind: &str, items: &[Value], rv: &str, include: Include, headers: bool) -> Value {
    let cols = if headers { columns(kind) } else { Vec::new() };
    let rows: Vec<Value> = items.iter().map(|o| row(kind, o, include)).collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv},
           "columnDefinitions": cols, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert!(wants_table(kubectl).is_ok());
        assert!(wants_table("application/json").is_err());
        assert!(wants_table("application/json;as=Table;v=v1beta1;g=meta.k8s.io").is_err());
    }

    #[test]
    fn pod_rows() {
        let p = json!({"metadata": {"name": "web", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"nodeName": "n1", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.2", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 1},
                {"name": "b", "ready": false, "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let t = table("Pod", &[p], "5", Include::Metadata, true);
        assert_eq!(t["columnDefinitions"].as_array().unwrap().len(), 7);
        let c = &t["rows"][0]["cells"];
        assert_eq!(c[0], "web");
        assert_eq!(c[1], "1/2");
        assert_eq!(c[2], "CrashLoopBackOff");
        assert_eq!(c[3], "3");
        assert!(c[4].as_str().unwrap().ends_with('d'));
        assert_eq!(t["rows"][0]["object"]["metadata"]["name"], "web");
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(190), "3m10s");
        assert_eq!(human_duration(1500), "25m");
        assert_eq!(human_duration(5 * 3600 + 120), "5h2m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86400), "3d");
    }
}
