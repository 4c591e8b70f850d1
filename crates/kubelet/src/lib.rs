//! A Kubernetes kubelet over CRI. See ARCHITECTURE.md for the map of subsystems.

pub mod clock;
pub mod cri;
pub mod images;
pub mod pleg;
pub mod pod;
pub mod prober;
pub mod server;
pub mod sources;
pub mod status_manager;
