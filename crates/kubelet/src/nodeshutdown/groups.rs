//! The pure part of the node shutdown manager: the priority groups from the configuration
//! (upstream's migrateConfig and the sort in NewManager), the pods in each group
//! (groupByPriority), each pod's grace period and the total delay the manager asks logind for
//! (periodRequested).

use k8s_openapi::api::core::v1::Pod;
use std::sync::Arc;
use std::time::Duration;

/// Priority of pods without a PriorityClass when no default class exists
/// (scheduling.DefaultPriorityWhenNoDefaultClassExists).
pub const DEFAULT_PRIORITY: i32 = 0;
/// The lowest priority of the system-critical classes (scheduling.SystemCriticalPriority:
/// system-cluster-critical; system-node-critical is 1000 above it).
pub const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// One range of priorities and the seconds its pods have to stop (an entry of
/// `shutdownGracePeriodByPodPriority`): pods with a priority from this one up to the next
/// group's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub priority: i32,
    pub grace_secs: i64,
}

/// The groups, sorted by priority from low to high: the by-priority list when given, else
/// upstream's migration of `shutdownGracePeriod` / `shutdownGracePeriodCriticalPods` into two
/// groups (priority 0 gets the difference, system-critical priority the critical part). Empty
/// means the manager is off (`shutdownGracePeriod: 0` and no list).
pub fn periods(total: Duration, critical: Duration, by_priority: &[Period]) -> Vec<Period> {
    let mut out = if by_priority.is_empty() { migrate(total, critical) } else { by_priority.to_vec() };
    out.sort_by_key(|p| p.priority);
    out
}

/// Upstream's migrateConfig (whole seconds, as it divides durations by a second).
fn migrate(total: Duration, critical: Duration) -> Vec<Period> {
    if total.is_zero() || critical > total {
        return Vec::new();
    }
    let regular = total - critical;
    vec![
        Period { priority: DEFAULT_PRIORITY, grace_secs: regular.as_secs() as i64 },
        Period { priority: SYSTEM_CRITICAL_PRIORITY, grace_secs: (total - regular).as_secs() as i64 },
    ]
}

/// What the manager asks logind to wait: the sum of every group's budget (periodRequested).
pub fn requested(periods: &[Period]) -> Duration {
    Duration::from_secs(periods.iter().map(|p| p.grace_secs.max(0) as u64).sum())
}

/// A group and its pods, in the order the manager stops them.
#[derive(Debug, Clone)]
pub struct Group {
    pub period: Period,
    pub pods: Vec<Arc<Pod>>,
}

fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// Upstream's groupByPriority: each pod goes to the group with the highest priority not above
/// its own; pods below the lowest group go to the lowest, pods above the highest to the highest.
/// `periods` must be sorted (see [`periods`]) and not empty.
pub fn group(periods: &[Period], pods: impl IntoIterator<Item = Arc<Pod>>) -> Vec<Group> {
    let mut groups: Vec<Group> = periods.iter().map(|p| Group { period: *p, pods: Vec::new() }).collect();
    if groups.is_empty() {
        return groups;
    }
    for pod in pods {
        let p = priority(&pod);
        // The first group whose priority is not below the pod's; past the end, or above the
        // pod's (with a lower group to take it), the one before.
        let mut i = groups.partition_point(|g| g.period.priority < p);
        if i == groups.len() || (i > 0 && groups[i].period.priority > p) {
            i -= 1;
        }
        groups[i].pods.push(pod);
    }
    groups
}

/// The grace period a pod is killed with: the group's, or the pod's own
/// terminationGracePeriodSeconds when that is not longer (upstream's gracePeriodOverride).
pub fn pod_grace(pod: &Pod, group_secs: i64) -> i64 {
    match pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds) {
        Some(own) if own <= group_secs => own,
        _ => group_secs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, priority: Option<i32>, grace: Option<i64>) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"containers": [], "priority": priority, "terminationGracePeriodSeconds": grace}
            }))
            .unwrap(),
        )
    }

    fn names(g: &Group) -> Vec<&str> {
        g.pods.iter().map(|p| p.metadata.name.as_deref().unwrap()).collect()
    }

    const fn p(priority: i32, grace_secs: i64) -> Period {
        Period { priority, grace_secs }
    }

    #[test]
    fn the_two_durations_become_a_regular_and_a_critical_group() {
        let s = Duration::from_secs;
        assert_eq!(periods(s(30), s(10), &[]), vec![p(0, 20), p(SYSTEM_CRITICAL_PRIORITY, 10)]);
        assert_eq!(periods(s(30), s(0), &[]), vec![p(0, 30), p(SYSTEM_CRITICAL_PRIORITY, 0)]);
        assert_eq!(periods(s(10), s(10), &[]), vec![p(0, 0), p(SYSTEM_CRITICAL_PRIORITY, 10)]);
    }

    #[test]
    fn no_grace_period_and_no_list_keeps_the_manager_off() {
        assert!(periods(Duration::ZERO, Duration::ZERO, &[]).is_empty());
        // Invalid (rejected by validation), but never a negative budget.
        assert!(periods(Duration::from_secs(5), Duration::from_secs(10), &[]).is_empty());
    }

    #[test]
    fn the_list_wins_and_is_sorted_by_priority() {
        let list = [p(100000, 5), p(0, 10), p(2_000_000_000, 3)];
        let got = periods(Duration::ZERO, Duration::ZERO, &list);
        assert_eq!(got, vec![p(0, 10), p(100000, 5), p(2_000_000_000, 3)]);
        assert_eq!(requested(&got), Duration::from_secs(18));
    }

    #[test]
    fn pods_go_to_the_highest_group_not_above_their_priority() {
        let periods = [p(1, 10), p(100, 5), p(1000, 3)];
        let pods = [
            pod("below-lowest", Some(0), None),
            pod("no-priority", None, None),
            pod("at-lowest", Some(1), None),
            pod("between", Some(50), None),
            pod("at-boundary", Some(100), None),
            pod("just-under", Some(999), None),
            pod("at-highest", Some(1000), None),
            pod("above-highest", Some(2_000_001_000), None),
        ];
        let g = group(&periods, pods);
        assert_eq!(names(&g[0]), ["below-lowest", "no-priority", "at-lowest", "between"]);
        assert_eq!(names(&g[1]), ["at-boundary", "just-under"]);
        assert_eq!(names(&g[2]), ["at-highest", "above-highest"]);
    }

    #[test]
    fn critical_pods_land_in_the_critical_group_of_the_migrated_config() {
        let periods = periods(Duration::from_secs(30), Duration::from_secs(10), &[]);
        let g = group(
            &periods,
            [
                pod("regular", None, None),
                pod("cluster-critical", Some(2_000_000_000), None),
                pod("node-critical", Some(2_000_001_000), None),
            ],
        );
        assert_eq!(names(&g[0]), ["regular"]);
        assert_eq!(names(&g[1]), ["cluster-critical", "node-critical"]);
    }

    #[test]
    fn a_pod_keeps_its_own_grace_period_when_it_is_not_longer() {
        assert_eq!(pod_grace(&pod("a", None, Some(2)), 5), 2);
        assert_eq!(pod_grace(&pod("a", None, Some(5)), 5), 5);
        assert_eq!(pod_grace(&pod("a", None, Some(30)), 5), 5);
        assert_eq!(pod_grace(&pod("a", None, None), 5), 5);
    }
}
