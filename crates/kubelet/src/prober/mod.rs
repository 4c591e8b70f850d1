//! Probes (liveness, readiness, startup): handlers, threshold counting, the per-container probe
//! tasks, and [`PodProbes`], the per-pod handle a pod worker holds (its probe set, reconciled
//! with the running instances, their results as [`Update`]s, and the probe checkpoint).

pub mod checkpoint;
pub mod counter;
pub mod handlers;
pub mod pod;
pub mod worker;

pub use pod::{Instance, PodProbes, ProbeView};

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

    /// Capitalised, as in events ("Liveness probe failed: …") and the metrics' `probe_type`.
    pub fn title(self) -> &'static str {
        match self {
            Self::Liveness => "Liveness",
            Self::Readiness => "Readiness",
            Self::Startup => "Startup",
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
