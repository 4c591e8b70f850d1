//! Probes (liveness, readiness, startup): handlers, threshold counting, and the per-container
//! probe tasks the pod workers start. Results flow back to the pod worker as [`Update`]s.

pub mod counter;
pub mod handlers;
pub mod worker;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Liveness,
    Readiness,
    Startup,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Liveness => "liveness",
            Self::Readiness => "readiness",
            Self::Startup => "startup",
        }
    }
}

/// A probe's thresholded result changed (or, for a failing readiness probe, its reason did).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub container_id: String,
    pub container: String,
    pub kind: Kind,
    pub ok: bool,
    pub message: String,
}
