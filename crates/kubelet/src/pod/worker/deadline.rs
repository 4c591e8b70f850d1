//! The active deadline (upstream's activeDeadlineHandler): a pod active on the node longer than
//! `spec.activeDeadlineSeconds`, counted from its status `startTime`, is killed with its own grace
//! period and ends Failed, reason DeadlineExceeded, with a Normal event of the same reason. The
//! deadline is read at every sync, so one lowered on a running pod (a spec update, which syncs at
//! once) applies from then on.

use super::{Kill, Worker};
use crate::event_recorder::Type;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const REASON: &str = "DeadlineExceeded";
const MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

/// When the pod's active deadline falls: its start time plus activeDeadlineSeconds. None without
/// a deadline or before the pod has a start time (upstream's pastActiveDeadline).
fn deadline(pod: &Pod, status: Option<&PodStatus>) -> Option<SystemTime> {
    let secs = pod.spec.as_ref()?.active_deadline_seconds?;
    let start = status?.start_time.as_ref()?;
    let start = UNIX_EPOCH + Duration::from_nanos(u64::try_from(start.0.as_nanosecond()).ok()?);
    Some(start + Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
}

impl Worker {
    /// Kills the pod once it has been active for its whole deadline (upstream: elapsed >= allowed);
    /// before that, returns when the deadline falls, for the worker to sync then.
    pub(super) fn check_deadline(&mut self) -> Option<SystemTime> {
        // The kubelet's own status first, else the API's copy (upstream's podStatusProvider).
        let at = deadline(&self.pod, self.status.as_ref().or(self.pod.status.as_ref()))?;
        if self.cfg.deps.clock.now() < at {
            return Some(at);
        }
        let kill = Kill { reason: REASON, message: MESSAGE.into(), grace_secs: None, disruption: false, done: None };
        // After a kubelet restart a pod the deadline ended keeps its reason and message.
        let ended_by_it = self.status.as_ref().is_some_and(|s| {
            s.phase.as_deref() == Some("Failed") && s.reason.as_deref() == Some(REASON) && self.killed.is_none()
        });
        if ended_by_it {
            self.killed = Some(kill);
        } else if self.kill(kill) {
            self.cfg.deps.events.pod(&self.pod, None, Type::Normal, REASON, MESSAGE);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::time;
    use serde_json::json;

    fn pod(deadline: Option<i64>) -> Pod {
        serde_json::from_value(json!({"spec": {"containers": [], "activeDeadlineSeconds": deadline}})).unwrap()
    }

    fn started(at: SystemTime) -> PodStatus {
        PodStatus { start_time: Some(time(at)), ..Default::default() }
    }

    #[test]
    fn the_deadline_counts_from_the_start_time() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(deadline(&pod(Some(5)), Some(&started(t0))), Some(t0 + Duration::from_secs(5)));
        assert_eq!(deadline(&pod(Some(0)), Some(&started(t0))), Some(t0));
    }

    #[test]
    fn no_deadline_without_the_field_or_a_start_time() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(deadline(&pod(None), Some(&started(t0))), None);
        assert_eq!(deadline(&pod(Some(5)), Some(&PodStatus::default())), None);
        assert_eq!(deadline(&pod(Some(5)), None), None);
    }
}
