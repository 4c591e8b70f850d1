//! Decoding one line of a container log file: the CRI format the runtime writes
//! (`<RFC3339Nano> <stdout|stderr> <P|F>[:tags] <content>`) and, as upstream also accepts, the
//! Docker JSON format (`{"log":..,"stream":..,"time":..}`).

use chrono::{DateTime, FixedOffset};
use std::borrow::Cow;

/// Which output of the container a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One decoded log line. `content` keeps its trailing newline, except for a partial (`P`) line,
/// whose content continues in the next line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// The time as the runtime wrote it (its offset is kept, as upstream prints it back).
    pub timestamp: DateTime<FixedOffset>,
    pub stream: LogStream,
    pub partial: bool,
    pub content: Cow<'a, [u8]>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("timestamp is not found")]
    NoTimestamp,
    #[error("unexpected timestamp {0:?}")]
    BadTimestamp(String),
    #[error("stream type is not found")]
    NoStream,
    #[error("unexpected stream type {0:?}")]
    BadStream(String),
    #[error("log tag is not found")]
    NoTag,
    #[error("failed to decode docker json log line: {0}")]
    Json(String),
}

/// The two log formats a line may be in; chosen once per read from the first line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Cri,
    DockerJson,
}

impl Format {
    /// The format that decodes `line`, CRI first (as upstream tries them).
    pub fn detect(line: &[u8]) -> Option<Format> {
        [Format::Cri, Format::DockerJson].into_iter().find(|f| f.parse(line).is_ok())
    }

    pub fn parse(self, line: &[u8]) -> Result<Message<'_>, ParseError> {
        match self {
            Format::Cri => parse_cri(line),
            Format::DockerJson => parse_docker_json(line),
        }
    }
}

fn split_space(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = s.iter().position(|b| *b == b' ')?;
    Some((&s[..i], &s[i + 1..]))
}

fn parse_time(s: &str) -> Result<DateTime<FixedOffset>, ParseError> {
    DateTime::parse_from_rfc3339(s).map_err(|_| ParseError::BadTimestamp(s.to_string()))
}

fn parse_stream(s: &[u8]) -> Result<LogStream, ParseError> {
    match s {
        b"stdout" => Ok(LogStream::Stdout),
        b"stderr" => Ok(LogStream::Stderr),
        other => Err(ParseError::BadStream(String::from_utf8_lossy(other).into_owned())),
    }
}

/// `2016-10-06T00:17:09.669794202Z stdout P log content 1\n`
pub fn parse_cri(line: &[u8]) -> Result<Message<'_>, ParseError> {
    let (ts, rest) = split_space(line).ok_or(ParseError::NoTimestamp)?;
    let timestamp = parse_time(&String::from_utf8_lossy(ts))?;
    let (stream, rest) = split_space(rest).ok_or(ParseError::NoStream)?;
    let stream = parse_stream(stream)?;
    let (tags, mut content) = split_space(rest).ok_or(ParseError::NoTag)?;
    // Tags are `P` or `F`, possibly followed by more `:`-separated tags (forward compatible).
    let partial = tags.split(|b| *b == b':').next() == Some(b"P");
    if partial && content.last() == Some(&b'\n') {
        content = &content[..content.len() - 1];
    }
    Ok(Message { timestamp, stream, partial, content: Cow::Borrowed(content) })
}

#[derive(serde::Deserialize)]
struct JsonLine {
    #[serde(default)]
    log: String,
    #[serde(default)]
    stream: String,
    time: String,
}

/// `{"log":"content 1\n","stream":"stdout","time":"2016-10-20T18:39:20.57606443Z"}`
pub fn parse_docker_json(line: &[u8]) -> Result<Message<'static>, ParseError> {
    let l: JsonLine = serde_json::from_slice(line).map_err(|e| ParseError::Json(e.to_string()))?;
    Ok(Message {
        timestamp: parse_time(&l.time)?,
        stream: parse_stream(l.stream.as_bytes())?,
        partial: !l.log.ends_with('\n'),
        content: Cow::Owned(l.log.into_bytes()),
    })
}

/// The timestamp as upstream prints it with `timestamps=true` (Go's RFC3339NanoFixed: always
/// nine fractional digits, `Z` for UTC, the runtime's offset otherwise).
pub fn format_timestamp(ts: &DateTime<FixedOffset>) -> String {
    let offset = ts.offset().local_minus_utc();
    let zone = if offset == 0 {
        "Z".to_string()
    } else {
        let sign = if offset < 0 { '-' } else { '+' };
        let abs = offset.unsigned_abs();
        format!("{sign}{:02}:{:02}", abs / 3600, (abs % 3600) / 60)
    };
    format!("{}{zone}", ts.format("%Y-%m-%dT%H:%M:%S%.9f"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_full_line_keeps_its_newline() {
        let m = parse_cri(b"2016-10-06T00:17:09.669794202Z stdout F log content 1\n").unwrap();
        assert_eq!(m.stream, LogStream::Stdout);
        assert!(!m.partial);
        assert_eq!(&*m.content, b"log content 1\n");
        assert_eq!(format_timestamp(&m.timestamp), "2016-10-06T00:17:09.669794202Z");
    }

    #[test]
    fn cri_partial_line_loses_its_newline() {
        let m = parse_cri(b"2016-10-06T00:17:09.669794202Z stderr P part one\n").unwrap();
        assert_eq!(m.stream, LogStream::Stderr);
        assert!(m.partial);
        assert_eq!(&*m.content, b"part one");
    }

    #[test]
    fn cri_tags_after_colon_are_ignored_and_empty_content_is_allowed() {
        let m = parse_cri(b"2016-10-06T00:17:09Z stdout F:x \n").unwrap();
        assert!(!m.partial);
        assert_eq!(&*m.content, b"\n");
    }

    #[test]
    fn cri_errors_name_the_missing_part() {
        assert_eq!(parse_cri(b"garbage"), Err(ParseError::NoTimestamp));
        assert!(matches!(parse_cri(b"nottime stdout F x\n"), Err(ParseError::BadTimestamp(_))));
        assert_eq!(parse_cri(b"2016-10-06T00:17:09Z stdin F x\n"), Err(ParseError::BadStream("stdin".into())));
        assert_eq!(parse_cri(b"2016-10-06T00:17:09Z stdout"), Err(ParseError::NoStream));
        assert_eq!(parse_cri(b"2016-10-06T00:17:09Z stdout F"), Err(ParseError::NoTag));
    }

    #[test]
    fn timestamps_keep_the_runtime_offset_and_pad_nanoseconds() {
        let m = parse_cri(b"2024-01-02T03:04:05.5+02:00 stdout F x\n").unwrap();
        assert_eq!(format_timestamp(&m.timestamp), "2024-01-02T03:04:05.500000000+02:00");
        let m = parse_cri(b"2024-01-02T03:04:05-05:30 stdout F x\n").unwrap();
        assert_eq!(format_timestamp(&m.timestamp), "2024-01-02T03:04:05.000000000-05:30");
    }

    #[test]
    fn docker_json_lines_are_detected_when_cri_does_not_parse() {
        let line = br#"{"log":"content 1\n","stream":"stderr","time":"2016-10-20T18:39:20.57606443Z"}"#;
        assert_eq!(Format::detect(line), Some(Format::DockerJson));
        let m = parse_docker_json(line).unwrap();
        assert_eq!((m.stream, &*m.content), (LogStream::Stderr, &b"content 1\n"[..]));
        assert_eq!(Format::detect(b"2016-10-06T00:17:09Z stdout F x\n"), Some(Format::Cri));
        assert_eq!(Format::detect(b"plain text\n"), None);
    }
}
