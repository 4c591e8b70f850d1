//! The order in which a pod with sidecars stops (upstream's terminationOrdering): every app
//! container at once; each sidecar once every app container and every sidecar after it in the
//! spec has stopped — the sidecars in reverse order. A container waits for its turn no longer
//! than its grace period; what it waited is taken off that grace period.

use crate::meta::is_sidecar;
use k8s_openapi::api::core::v1::Pod;
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Who waits for whom while a pod stops (see the module's doc).
#[derive(Debug, Default)]
pub struct Order {
    /// Cancelled once the container of that name has stopped (at once when it was not running).
    stopped: HashMap<String, CancellationToken>,
    /// What each container waits for before it is stopped.
    waits_for: HashMap<String, Vec<CancellationToken>>,
}

impl Order {
    /// The order for `pod`, of which the containers named in `running` run now.
    pub fn new(pod: &Pod, running: &[&str]) -> Self {
        let mut order = Order::default();
        let Some(spec) = pod.spec.as_ref() else { return order };
        let mut signal = |name: &str| {
            let token = CancellationToken::new();
            if !running.contains(&name) {
                token.cancel();
            }
            order.stopped.insert(name.to_string(), token.clone());
            token
        };
        let apps: Vec<CancellationToken> = spec.containers.iter().map(|c| signal(&c.name)).collect();
        let mut later_sidecar: Option<CancellationToken> = None;
        let mut waits_for = HashMap::new();
        for c in spec.init_containers.iter().flatten().rev() {
            let token = signal(&c.name);
            if !is_sidecar(c) {
                continue;
            }
            let mut waits = apps.clone();
            waits.extend(later_sidecar.replace(token));
            waits_for.insert(c.name.clone(), waits);
        }
        order.waits_for = waits_for;
        order
    }

    /// Waits until `name` may be stopped, at most `within`; returns how long it waited.
    pub async fn wait_turn(&self, name: &str, within: Duration) -> Duration {
        let Some(waits) = self.waits_for.get(name) else { return Duration::ZERO };
        let started = tokio::time::Instant::now();
        let all = futures::future::join_all(waits.iter().map(|t| t.cancelled()));
        let _ = tokio::time::timeout(within, all).await;
        started.elapsed()
    }

    /// The container named `name` has stopped: those waiting for it may go.
    pub fn stopped(&self, name: &str) {
        if let Some(t) = self.stopped.get(name) {
            t.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u"},
            "spec": {
                "initContainers": [
                    {"name": "side-a", "restartPolicy": "Always"},
                    {"name": "init", "restartPolicy": null},
                    {"name": "side-b", "restartPolicy": "Always"},
                ],
                "containers": [{"name": "app"}, {"name": "web"}],
            },
        }))
        .unwrap()
    }

    async fn turn_taken(order: &Order, name: &str) -> bool {
        tokio::time::timeout(Duration::from_millis(1), order.wait_turn(name, Duration::from_secs(30))).await.is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn sidecars_wait_for_the_app_containers_then_stop_in_reverse_order() {
        let order = Order::new(&pod(), &["side-a", "side-b", "app", "web"]);
        assert!(turn_taken(&order, "app").await && turn_taken(&order, "web").await, "apps go at once");
        assert!(!turn_taken(&order, "side-b").await, "side-b waits for the apps");
        order.stopped("app");
        assert!(!turn_taken(&order, "side-b").await, "and for every one of them");
        order.stopped("web");
        assert!(turn_taken(&order, "side-b").await);
        assert!(!turn_taken(&order, "side-a").await, "side-a waits for side-b, the later sidecar");
        order.stopped("side-b");
        assert!(turn_taken(&order, "side-a").await);
    }

    #[tokio::test(start_paused = true)]
    async fn containers_not_running_are_not_waited_for() {
        let order = Order::new(&pod(), &["side-a", "app"]);
        assert!(!turn_taken(&order, "side-a").await);
        order.stopped("app");
        // web and side-b do not run: side-a goes once app has stopped.
        assert!(turn_taken(&order, "side-a").await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_turn_is_waited_for_at_most_the_grace_period() {
        let order = Order::new(&pod(), &["side-a", "app"]);
        let waited = order.wait_turn("side-a", Duration::from_secs(5)).await;
        assert_eq!(waited, Duration::from_secs(5));
    }
}
