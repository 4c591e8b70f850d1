//! The node Lease in kube-node-lease: created with an owner reference to the Node, renewed every
//! quarter of `nodeLeaseDurationSeconds` (10 s for the default 40 s).

use crate::api::{ApiError, DynApi, LEASE_NAMESPACE};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    pub duration_secs: i32,
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

async fn renew(cfg: &Config, api: &DynApi) -> Result<(), ApiError> {
    let owner = match api.get_node(&cfg.node_name).await? {
        Some(n) => Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: cfg.node_name.clone(),
            uid: n.metadata.uid.unwrap_or_default(),
            ..Default::default()
        }]),
        None => None,
    };
    match api.get_lease(&cfg.node_name).await? {
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            spec.renew_time = Some(now());
            spec.holder_identity = Some(cfg.node_name.clone());
            spec.lease_duration_seconds = Some(cfg.duration_secs);
            if lease.metadata.owner_references.is_none() {
                lease.metadata.owner_references = owner;
            }
            api.replace_lease(&lease).await.map(drop)
        }
        None => {
            let mut lease = Lease::default();
            lease.metadata.name = Some(cfg.node_name.clone());
            lease.metadata.namespace = Some(LEASE_NAMESPACE.into());
            lease.metadata.owner_references = owner;
            lease.spec = Some(LeaseSpec {
                holder_identity: Some(cfg.node_name.clone()),
                lease_duration_seconds: Some(cfg.duration_secs),
                renew_time: Some(now()),
                ..Default::default()
            });
            api.create_lease(&lease).await.map(drop)
        }
    }
}

/// Renews the lease until `token` is cancelled (a renewal in flight completes).
pub async fn run(cfg: Config, api: DynApi, token: CancellationToken) {
    let interval = Duration::from_secs_f64(f64::from(cfg.duration_secs.max(1)) * 0.25);
    let mut failures = 0u32;
    loop {
        match renew(&cfg, &api).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                tracing::warn!(node = %cfg.node_name, error = %e, "lease renewal failed");
            }
        }
        // After a failure retry sooner (as upstream: 200 ms doubling up to the interval).
        let wait = if failures == 0 {
            interval
        } else {
            (Duration::from_millis(200) * 2u32.pow(failures.min(6))).min(interval)
        };
        if token.run_until_cancelled(tokio::time::sleep(wait)).await.is_none() {
            return;
        }
    }
}
