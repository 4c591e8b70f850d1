//! What to read: upstream's PodLogOptions (the `/containerLogs` query) turned into the reader's
//! options, as pkg/kubelet/kuberuntime/logs NewLogOptions does.

use chrono::{DateTime, Utc};
use std::time::SystemTime;

/// The reader's options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep reading as the container writes, until it stops or the stream is dropped.
    pub follow: bool,
    /// Start this many lines before the end (None: from the beginning).
    pub tail_lines: Option<u64>,
    /// Stop after this many bytes of output (a line is cut).
    pub limit_bytes: Option<u64>,
    /// Skip lines the runtime timestamped before this.
    pub since: Option<DateTime<Utc>>,
    /// Prefix each line with its RFC3339Nano timestamp and a space.
    pub timestamps: bool,
}

/// The `/containerLogs/{ns}/{pod}/{container}` query parameters (upstream names), e.g. for
/// axum's `Query` extractor.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodLogQuery {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<i64>,
    pub limit_bytes: Option<i64>,
    pub since_seconds: Option<i64>,
    /// RFC3339.
    pub since_time: Option<String>,
}

/// A query value the API server would have rejected; the message names the parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidQuery {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> InvalidQuery {
    InvalidQuery { field, message: message.into() }
}

impl PodLogQuery {
    /// The reader's options at `now`: `since` is the later of now − sinceSeconds and sinceTime.
    pub fn to_options(&self, now: SystemTime) -> Result<LogOptions, InvalidQuery> {
        let tail_lines = match self.tail_lines {
            Some(n) if n < 0 => return Err(invalid("tailLines", "must be greater than or equal to 0")),
            n => n.map(|n| n as u64),
        };
        let limit_bytes = match self.limit_bytes {
            Some(n) if n < 1 => return Err(invalid("limitBytes", "must be greater than 0")),
            n => n.map(|n| n as u64),
        };
        let since_time = match &self.since_time {
            Some(s) => Some(
                DateTime::parse_from_rfc3339(s)
                    .map_err(|e| invalid("sinceTime", format!("{s:?} is not an RFC3339 time: {e}")))?
                    .with_timezone(&Utc),
            ),
            None => None,
        };
        let since_seconds = match self.since_seconds {
            Some(n) if n < 1 => return Err(invalid("sinceSeconds", "must be greater than 0")),
            Some(n) => Some(DateTime::<Utc>::from(now) - chrono::Duration::seconds(n)),
            None => None,
        };
        if since_seconds.is_some() && since_time.is_some() {
            return Err(invalid("sinceSeconds", "at most one of sinceTime or sinceSeconds may be specified"));
        }
        Ok(LogOptions {
            follow: self.follow,
            tail_lines,
            limit_bytes,
            since: since_seconds.or(since_time),
            timestamps: self.timestamps,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn query_becomes_options_with_since_from_seconds_or_time() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let q = PodLogQuery { follow: true, tail_lines: Some(10), since_seconds: Some(60), ..Default::default() };
        let o = q.to_options(now).unwrap();
        assert!(o.follow && !o.timestamps);
        assert_eq!(o.tail_lines, Some(10));
        assert_eq!(o.since.map(|t| t.timestamp()), Some(1_000_000 - 60));
        let q = PodLogQuery { since_time: Some("1970-01-12T13:46:40Z".into()), ..Default::default() };
        assert_eq!(q.to_options(now).unwrap().since.map(|t| t.timestamp()), Some(1_000_000));
    }

    #[test]
    fn bad_query_values_name_the_parameter() {
        let now = SystemTime::now();
        let err = |q: PodLogQuery| q.to_options(now).unwrap_err().field;
        assert_eq!(err(PodLogQuery { tail_lines: Some(-1), ..Default::default() }), "tailLines");
        assert_eq!(err(PodLogQuery { limit_bytes: Some(0), ..Default::default() }), "limitBytes");
        assert_eq!(err(PodLogQuery { since_time: Some("yesterday".into()), ..Default::default() }), "sinceTime");
        assert_eq!(err(PodLogQuery { since_seconds: Some(0), ..Default::default() }), "sinceSeconds");
    }

    #[test]
    fn query_parameters_use_upstream_names() {
        let q: PodLogQuery =
            serde_json::from_str(r#"{"tailLines":5,"limitBytes":7,"sinceSeconds":3,"previous":true}"#).unwrap();
        assert_eq!((q.tail_lines, q.limit_bytes, q.since_seconds, q.previous), (Some(5), Some(7), Some(3), true));
    }
}
