//! Container logs: reading them for `/containerLogs` ([`read_logs`]) and rotating them
//! ([`rotate::run`]).
//!
//! A container instance logs to `<podLogsDir>/<ns>_<name>_<uid>/<container>/<restartCount>.log`
//! in the CRI format. Rotation renames a full file to `<log>.<YYYYMMDD-HHMMSS>` and gzips older
//! rotated files to `.gz`; the reader reads across the whole set, oldest first.
//!
//! Serving a log from an axum handler:
//! ```ignore
//! let opts = query.to_options(SystemTime::now())?;              // PodLogQuery: the query string
//! let path = if query.previous {
//!     logs::previous_log_path(&pod_log_dir, &container, restart_count).ok_or(NotFound)?
//! } else {
//!     logs::container_log_path(&pod_log_dir, &container, restart_count)
//! };
//! let stream = logs::read_logs(path, opts, logs::container_running(runtime, container_id)).await?;
//! Ok(axum::body::Body::from_stream(stream))
//! ```

pub mod files;
pub mod options;
pub mod parse;
pub mod read;
pub mod rotate;

pub use files::{container_log_path, previous_log_path};
pub use options::{InvalidQuery, LogOptions, PodLogQuery};
pub use read::{Error, LogStream, container_running, read_logs};
