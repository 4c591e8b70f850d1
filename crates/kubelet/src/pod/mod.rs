//! Pods: from desired spec and observed runtime state to actions and status.

pub(crate) mod dispatcher;
mod ephemeral;
// Public for the bench, which builds container configs by hand.
pub mod env;
pub(crate) mod error;
pub(crate) mod executor;
pub mod hosts;
mod observe;
mod plan;
mod resize;
pub mod runtime_config;
pub mod security_context;
mod status;
pub(crate) mod termination_message;
mod termination_order;
pub(crate) mod userns;
pub(crate) mod worker;

/// What a pod worker is told by the eviction manager or the node shutdown manager (through the
/// dispatcher): kill with this grace period and end Failed with this reason (`Evicted`,
/// `Terminated`) and message, with the DisruptionTarget condition. `done` fires once the pod's
/// containers are stopped.
#[derive(Debug)]
pub struct Eviction {
    pub reason: &'static str,
    pub grace_secs: i64,
    pub message: String,
    pub done: Option<tokio::sync::oneshot::Sender<()>>,
}

/// An eviction for the dispatcher to hand to the pod's worker.
#[derive(Debug)]
pub struct EvictionRequest {
    pub uid: String,
    pub eviction: Eviction,
}
