//! Config sources: where desired pods come from. Each source sends full snapshots of its pods;
//! the pod dispatcher merges them (see `pod::dispatcher`).

pub mod api;
pub mod defaults;
pub mod file;
pub mod http;
pub mod manifest;
pub mod validation;

use k8s_openapi::api::core::v1::Pod;

/// Which source a pod came from (`kubernetes.io/config.source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    File,
    Http,
    Api,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Http => "http",
            Self::Api => "api",
        }
    }
}

/// Every pod a source currently wants, replacing its previous snapshot.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub source: SourceKind,
    pub pods: Vec<Pod>,
}

impl SourceKind {
    /// Static pods (file and URL) are mirrored into the API; API pods are the API's own.
    pub fn is_static(self) -> bool {
        self != Self::Api
    }
}
