//! `<root-dir>/graceful_node_shutdown_state` (upstream's localStorage): the last graceful
//! shutdown's start and end as JSON (`startTime`, `endTime`, RFC 3339; Go's zero time when not
//! set), written atomically, and the metrics `kubelet_graceful_shutdown_start_time_seconds` /
//! `…_end_time_seconds` set from it at start and while a shutdown is handled.

use crate::metrics::Metrics;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Go's zero `time.Time` as JSON.
const ZERO: &str = "0001-01-01T00:00:00Z";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct State {
    start_time: String,
    end_time: String,
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Seconds since the epoch, 0 for a zero time (upstream's timestamp()).
fn seconds(s: &str) -> f64 {
    if s == ZERO {
        return 0.0;
    }
    chrono::DateTime::parse_from_rfc3339(s).map(|t| t.timestamp() as f64).unwrap_or(0.0)
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as f64).unwrap_or(0.0)
}

/// Records a shutdown's start (and, once done, its end) in the file and the metrics.
pub fn store(path: &Path, metrics: &Metrics, start: SystemTime, end: Option<SystemTime>) {
    let state = State { start_time: rfc3339(start), end_time: end.map_or_else(|| ZERO.to_string(), rfc3339) };
    let body = serde_json::to_vec(&state).unwrap_or_default();
    let tmp = path.with_file_name(format!(".tmp-{}", path.file_name().and_then(|n| n.to_str()).unwrap_or("state")));
    let written = std::fs::write(&tmp, body).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        tracing::error!(path = %path.display(), error = %e, "failed to store graceful shutdown state");
    }
    metrics.graceful_shutdown(Some(unix(start)), Some(end.map_or(0.0, unix)));
}

/// At start: the metrics from the last shutdown the file remembers (upstream's setMetrics).
pub fn set_metrics(path: &Path, metrics: &Metrics) {
    let Ok(body) = std::fs::read(path) else { return };
    match serde_json::from_slice::<State>(&body) {
        Ok(s) => {
            let nonzero = |v: f64| (v != 0.0).then_some(v);
            metrics.graceful_shutdown(nonzero(seconds(&s.start_time)), nonzero(seconds(&s.end_time)));
        }
        Err(e) => tracing::error!(path = %path.display(), error = %e, "failed to load graceful shutdown state"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_state_file_has_upstreams_fields_and_zero_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("graceful_node_shutdown_state");
        let m = Metrics::new();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        store(&path, &m, t0, None);
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["startTime"], "2023-11-14T22:13:20.000000000Z");
        assert_eq!(v["endTime"], ZERO);
        store(&path, &m, t0, Some(t0 + Duration::from_secs(7)));
        let fresh = Metrics::new();
        set_metrics(&path, &fresh);
        let text = fresh.encode_kubelet(&[]);
        assert!(text.contains("kubelet_graceful_shutdown_start_time_seconds 1700000000"), "{text}");
        assert!(text.contains("kubelet_graceful_shutdown_end_time_seconds 1700000007"), "{text}");
    }
}
