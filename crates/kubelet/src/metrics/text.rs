//! Families of samples computed at scrape time, written in the Prometheus text format 0.0.4.
//!
//! `prometheus-client` encodes the kubelet's long-lived counters and histograms, but it has no
//! per-sample timestamps (upstream's `/metrics/resource` and `/metrics/cadvisor` carry the time
//! each figure was sampled) and it always appends `_total` to counters (upstream's
//! `kubelet_evictions` has none). Those families are written here.

use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
    /// Milliseconds since the epoch, when the figure was sampled.
    pub timestamp_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

impl Family {
    pub fn new(name: &'static str, help: &'static str, kind: Kind) -> Self {
        Self { name, help, kind, samples: Vec::new() }
    }

    pub fn push(&mut self, labels: Vec<(&'static str, String)>, value: f64, timestamp_ms: Option<i64>) {
        self.samples.push(Sample { labels, value, timestamp_ms });
    }
}

fn escape_label(out: &mut String, v: &str) {
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(out: &mut String, v: &str) {
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Appends the families to `out`. A family with no samples is left out, as upstream's
/// registered-but-empty vectors are.
pub fn encode(out: &mut String, families: &[Family]) {
    for f in families.iter().filter(|f| !f.samples.is_empty()) {
        out.push_str("# HELP ");
        out.push_str(f.name);
        out.push(' ');
        escape_help(out, f.help);
        out.push('\n');
        let _ = writeln!(out, "# TYPE {} {}", f.name, if f.kind == Kind::Counter { "counter" } else { "gauge" });
        for s in &f.samples {
            out.push_str(f.name);
            if !s.labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(k);
                    out.push_str("=\"");
                    escape_label(out, v);
                    out.push('"');
                }
                out.push('}');
            }
            out.push(' ');
            write_value(out, s.value);
            if let Some(ts) = s.timestamp_ms {
                let _ = write!(out, " {ts}");
            }
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_with_labels_and_timestamps_parse_back() {
        let mut f = Family::new("container_cpu_usage_seconds_total", "Cumulative cpu time", Kind::Counter);
        f.push(vec![("container", "app".into()), ("pod", "we\"ird\\pod\nx".into())], 1.5, Some(1_700_000_000_123));
        let empty = Family::new("kubelet_evictions", "none yet", Kind::Counter);
        let mut g = Family::new("scrape_error", "errors", Kind::Gauge);
        g.push(vec![], 0.0, None);
        let mut out = String::new();
        encode(&mut out, &[f, empty, g]);
        assert!(!out.contains("kubelet_evictions"), "{out}");
        let lines = out.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
        assert_eq!(scrape.samples.len(), 2);
        let s = &scrape.samples[0];
        assert_eq!(s.metric, "container_cpu_usage_seconds_total");
        // The parser keeps escapes as written: quote, backslash and newline were escaped.
        assert_eq!(s.labels.get("pod"), Some(r#"we\"ird\\pod\nx"#));
        assert_eq!(s.value, prometheus_parse::Value::Counter(1.5));
        assert_eq!(s.timestamp.timestamp_millis(), 1_700_000_000_123);
        assert_eq!(scrape.samples[1].value, prometheus_parse::Value::Gauge(0.0));
    }
}
