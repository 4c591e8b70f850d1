//! Pods: from desired spec and observed runtime state to actions and status.

pub mod admission;
pub mod backoff;
pub mod defaults;
pub mod dispatcher;
pub mod env;
pub mod error;
pub mod executor;
pub mod observe;
pub mod plan;
pub mod qos;
pub mod runtime_config;
pub mod status;
pub mod worker;
