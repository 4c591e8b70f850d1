//! A Kubernetes kubelet over CRI. See ARCHITECTURE.md for the map of subsystems.

// No unwrap/expect on anything that comes from outside the process: bad input is an error that
// names the object and field (tests may unwrap; see clippy.toml).
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod admission;
pub mod allocation;
pub mod api;
pub mod backoff;
pub mod certificate;
pub mod clock;
pub mod cm;
pub mod composition;
pub mod credential_provider;
pub mod cri;
pub mod downward;
pub mod event_recorder;
pub mod eviction;
pub mod gc;
pub mod hollow;
pub mod images;
pub mod lease;
pub mod lock_file;
pub mod logging;
pub mod logs;
pub mod meta;
pub mod metrics;
pub mod node_ips;
pub mod node_status;
pub mod nodeshutdown;
pub mod pleg;
pub mod pod;
pub mod podresources;
pub mod prober;
pub mod pull_secrets;
pub mod runtime_class;
pub mod server;
pub mod sources;
pub mod stats;
pub mod status_manager;
pub mod volume;
