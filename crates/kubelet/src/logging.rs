//! The binary's log output from the KubeletConfiguration's `logging` section (component-base
//! logs): `format` text or json, `verbosity` (`-v`) and `vmodule`.
//!
//! Verbosity maps onto tracing levels: 0–2 info, 3–5 debug, 6+ trace. `json` writes one JSON
//! object per line with upstream's keys (component-base/logs/json): `ts` (seconds since the
//! epoch, a float), `caller` (`file:line`), `msg`, `v` (the verbosity the entry needs: 0 for
//! info and warnings, 4 for debug, 6 for trace; left out of errors, which carry `err` when they
//! have an `error` field, as klog's ErrorS), then the event's own fields.
//!
//! `vmodule` (klog: per Go file) becomes EnvFilter directives on module paths: `pod=4` or `pod*=4`
//! turns on debug for `kubelet::pod` and everything below it, `pod/worker=6` trace for
//! `kubelet::pod::worker`. A pattern with other glob characters (`?`, `[`, or `*` before its
//! end) cannot be a module prefix and is skipped with a warning. `RUST_LOG`, when set, replaces
//! all of it.

use std::fmt;

use kubelet_config::LoggingConfiguration;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Chatty dependencies kept at info whatever the verbosity.
const QUIET: &str = "h2=info,hyper=info,tower=info,tonic=info";

/// The tracing level a klog verbosity turns on.
pub fn level(verbosity: u32) -> &'static str {
    match verbosity {
        0..=2 => "info",
        3..=5 => "debug",
        _ => "trace",
    }
}

/// The EnvFilter directives for a verbosity and vmodule list, and the vmodule patterns that
/// could not be mapped.
pub fn directives(cfg: &LoggingConfiguration) -> (String, Vec<String>) {
    let mut out = vec![level(cfg.verbosity).to_string(), QUIET.to_string()];
    let mut skipped = Vec::new();
    for item in &cfg.vmodule {
        let pattern = item.file_pattern.strip_suffix('*').unwrap_or(&item.file_pattern);
        let module_path = pattern.trim_matches('/').replace('/', "::");
        let valid =
            !module_path.is_empty() && module_path.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        if valid {
            out.push(format!("kubelet::{module_path}={}", level(item.verbosity)));
        } else {
            skipped.push(item.file_pattern.clone());
        }
    }
    (out.join(","), skipped)
}

/// Installs the global subscriber: `RUST_LOG` if set, else the configuration's verbosity and
/// vmodule; text or JSON lines on stderr.
pub fn init(cfg: &LoggingConfiguration) {
    let (wanted, skipped) = directives(cfg);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(wanted));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_writer(std::io::stderr);
    if cfg.format == "json" {
        builder.event_format(Json).init();
    } else {
        builder.with_target(false).init();
    }
    for pattern in skipped {
        tracing::warn!(pattern, "vmodule pattern does not name a module; ignored");
    }
}

/// upstream's JSON line format (see the module docs).
pub struct Json;

impl<S, N> FormatEvent<S, N> for Json
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        writeln!(writer, "{}", json_line(event, now.as_secs_f64()))
    }
}

/// One event as upstream's JSON log object.
fn json_line(event: &Event<'_>, ts: f64) -> serde_json::Value {
    let meta = event.metadata();
    let mut fields = Fields::default();
    event.record(&mut fields);
    let mut line = serde_json::Map::new();
    line.insert("ts".into(), ts.into());
    if let (Some(file), Some(n)) = (meta.file(), meta.line()) {
        let file = file.rsplit('/').next().unwrap_or(file);
        line.insert("caller".into(), format!("{file}:{n}").into());
    }
    line.insert("msg".into(), fields.message.unwrap_or_default().into());
    let level = *meta.level();
    if level == Level::ERROR {
        if let Some(err) = fields.values.remove("error") {
            line.insert("err".into(), err);
        }
    } else {
        let v = match level {
            Level::DEBUG => 4,
            Level::TRACE => 6,
            _ => 0,
        };
        line.insert("v".into(), v.into());
    }
    line.extend(fields.values);
    serde_json::Value::Object(line)
}

/// An event's message and other fields, as JSON values.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    values: serde_json::Map<String, serde_json::Value>,
}

impl Fields {
    fn put(&mut self, field: &tracing::field::Field, value: serde_json::Value) {
        if field.name() == "message" {
            self.message = Some(value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string()));
        } else {
            self.values.insert(field.name().to_string(), value);
        }
    }
}

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.put(field, value.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubelet_config::VModuleItem;
    use std::sync::{Arc, Mutex};

    #[test]
    fn vmodule_becomes_module_directives() {
        let cfg = LoggingConfiguration {
            verbosity: 2,
            vmodule: vec![
                VModuleItem { file_pattern: "pod*".into(), verbosity: 4 },
                VModuleItem { file_pattern: "pod/worker".into(), verbosity: 6 },
                VModuleItem { file_pattern: "*_test".into(), verbosity: 9 },
            ],
            ..Default::default()
        };
        let (d, skipped) = directives(&cfg);
        assert_eq!(d, format!("info,{QUIET},kubelet::pod=debug,kubelet::pod::worker=trace"));
        assert_eq!(skipped, vec!["*_test"]);
        EnvFilter::new(d);
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_have_upstream_keys() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::DEBUG)
            .event_format(Json)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(pod = "default/web", attempt = 2, "pod started");
            tracing::debug!("detail");
            tracing::error!(error = "boom", "sync failed");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0]["ts"].as_f64().unwrap() > 1.6e9);
        assert_eq!(lines[0]["msg"], "pod started");
        assert_eq!(lines[0]["v"], 0);
        assert_eq!(lines[0]["pod"], "default/web");
        assert_eq!(lines[0]["attempt"], 2);
        assert!(lines[0]["caller"].as_str().unwrap().starts_with("logging.rs:"));
        assert_eq!(lines[1]["v"], 4);
        assert_eq!(lines[2]["err"], "boom");
        assert!(lines[2].get("v").is_none());
    }
}
