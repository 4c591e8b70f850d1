use super::*;
use crate::cri::labels::container_hash;
use crate::pod::observe::SandboxObs;
use serde_json::json;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Fixtures. Time is fixed: `at(s)` is T0 + s seconds, `nanos(s)` the same instant as CRI nanos.
// ---------------------------------------------------------------------------------------------

const T0: u64 = 1_700_000_000;
const SB: &str = "sb-0";
const HOST_IP: &str = "192.168.1.10";

fn at(s: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + s)
}

fn nanos(s: u64) -> i64 {
    ((T0 + s) * 1_000_000_000) as i64
}

fn pod_with(policy: &str, inits: &[&str], containers: &[&str], extra_spec: serde_json::Value) -> Pod {
    let c = |n: &&str| json!({"name": n, "image": format!("registry.local/{n}:1.0")});
    let mut spec = json!({
        "nodeName": "node-1",
        "restartPolicy": policy,
        "containers": containers.iter().map(c).collect::<Vec<_>>(),
    });
    if !inits.is_empty() {
        spec["initContainers"] = inits.iter().map(c).collect::<Vec<_>>().into();
    }
    for (k, v) in extra_spec.as_object().into_iter().flatten() {
        spec[k] = v.clone();
    }
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "uid-1"},
        "spec": spec,
    }))
    .unwrap()
}

fn pod(policy: &str, inits: &[&str], containers: &[&str]) -> Pod {
    pod_with(policy, inits, containers, json!({}))
}

fn sandbox(id: &str, ready: bool, created: u64) -> SandboxObs {
    SandboxObs {
        id: id.into(),
        attempt: 0,
        ready,
        created_at: nanos(created),
        ip: ready.then(|| "10.244.0.7".into()),
        additional_ips: if ready { vec!["fd00::7".into()] } else { vec![] },
    }
}

fn ctr(name: &str, id: &str, state: CState, restart_count: i32, created: u64) -> ContainerObs {
    ContainerObs {
        id: id.into(),
        name: name.into(),
        sandbox_id: SB.into(),
        state,
        hash: 0,
        restart_count,
        init: name.starts_with("init"),
        created_at: nanos(created),
        started_at: if state == CState::Created { 0 } else { nanos(created) },
        finished_at: 0,
        exit_code: 0,
        reason: String::new(),
        message: String::new(),
        image: format!("registry.local/{name}:1.0"),
        image_ref: format!("sha256:{name}"),
    }
}

fn running(name: &str, id: &str, restart_count: i32, created: u64) -> ContainerObs {
    ctr(name, id, CState::Running, restart_count, created)
}

/// Exited with the runtime's reason left empty (the kubelet fills in Completed / Error).
fn exited(name: &str, id: &str, restart_count: i32, code: i32, created: u64, finished: u64) -> ContainerObs {
    ContainerObs {
        finished_at: nanos(finished),
        exit_code: code,
        ..ctr(name, id, CState::Exited, restart_count, created)
    }
}

fn in_sandbox(mut c: ContainerObs, sandbox: &str) -> ContainerObs {
    c.sandbox_id = sandbox.into();
    c
}

/// Sorted newest first, as `observe` returns them.
fn obs(mut sandboxes: Vec<SandboxObs>, mut containers: Vec<ContainerObs>) -> PodObs {
    sandboxes.sort_by_key(|s| std::cmp::Reverse(s.created_at));
    containers.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    PodObs { sandboxes, containers }
}

fn ready() -> Vec<SandboxObs> {
    vec![sandbox(SB, true, 0)]
}

fn no_waiting() -> WaitingReasons {
    WaitingReasons::new()
}

fn waiting_for(name: &str, reason: &str, message: &str) -> WaitingReasons {
    WaitingReasons::from([(name.to_string(), (reason.to_string(), message.to_string()))])
}

fn compute_at(pod: &Pod, obs: &PodObs, waiting: &WaitingReasons, previous: Option<&PodStatus>, now: u64) -> PodStatus {
    let ctx = Context {
        waiting,
        previous,
        host_ip: Some(HOST_IP),
        runtime_name: "containerd",
        now: at(now),
        probes: &HashMap::new(),
        pod_is_terminal: false,
        conditions: &[],
    };
    compute(pod, obs, &ctx)
}

fn status(pod: &Pod, obs: &PodObs) -> PodStatus {
    compute_at(pod, obs, &no_waiting(), None, 100)
}

fn container<'a>(st: &'a PodStatus, name: &str) -> &'a ContainerStatus {
    st.container_statuses
        .iter()
        .flatten()
        .chain(st.init_container_statuses.iter().flatten())
        .find(|c| c.name == name)
        .unwrap()
}

fn state_of(c: &ContainerStatus) -> &ContainerState {
    c.state.as_ref().unwrap()
}

fn waiting_reason(c: &ContainerStatus) -> Option<&str> {
    state_of(c).waiting.as_ref().and_then(|w| w.reason.as_deref())
}

fn cond<'a>(st: &'a PodStatus, type_: &str) -> &'a PodCondition {
    st.conditions.iter().flatten().find(|c| c.type_ == type_).unwrap_or_else(|| panic!("no {type_} condition"))
}

/// (type, status, reason, message) of every condition, in order.
fn conds(st: &PodStatus) -> Vec<(String, String, Option<String>, Option<String>)> {
    st.conditions
        .iter()
        .flatten()
        .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone(), c.message.clone()))
        .collect()
}

fn c(
    type_: &str,
    status: &str,
    reason: Option<&str>,
    message: Option<&str>,
) -> (String, String, Option<String>, Option<String>) {
    (type_.into(), status.into(), reason.map(str::to_string), message.map(str::to_string))
}

fn phase_of(st: &PodStatus) -> &str {
    st.phase.as_deref().unwrap()
}

// ContainerStatus values for `phase` directly.

fn s_running() -> ContainerStatus {
    ContainerStatus {
        state: Some(ContainerState { running: Some(ContainerStateRunning::default()), ..Default::default() }),
        ..Default::default()
    }
}

fn s_waiting() -> ContainerStatus {
    ContainerStatus {
        state: Some(ContainerState {
            waiting: Some(ContainerStateWaiting { reason: Some("ContainerCreating".into()), message: None }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn terminated_state(code: i32) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated { exit_code: code, ..Default::default() }),
        ..Default::default()
    }
}

fn s_terminated(code: i32) -> ContainerStatus {
    ContainerStatus { state: Some(terminated_state(code)), ..Default::default() }
}

/// Waiting to restart (CrashLoopBackOff, image errors) after an exit with `code`.
fn s_restarting(code: i32) -> ContainerStatus {
    ContainerStatus { last_state: Some(terminated_state(code)), ..s_waiting() }
}

// ---------------------------------------------------------------------------------------------
// Phase.
// ---------------------------------------------------------------------------------------------

#[test]
fn phase_table_for_every_restart_policy() {
    use ContainerStatus as S;
    type Row = (&'static str, Vec<S>, Vec<S>, [&'static str; 3]);
    //                                                       Always      OnFailure    Never
    let rows: Vec<Row> = vec![
        ("nothing started", vec![], vec![s_waiting()], ["Pending", "Pending", "Pending"]),
        ("no containers at all", vec![], vec![], ["Pending", "Pending", "Pending"]),
        ("one running", vec![], vec![s_running()], ["Running", "Running", "Running"]),
        ("running + waiting", vec![], vec![s_running(), s_waiting()], ["Pending", "Pending", "Pending"]),
        ("running + succeeded", vec![], vec![s_running(), s_terminated(0)], ["Running", "Running", "Running"]),
        ("running + failed", vec![], vec![s_running(), s_terminated(1)], ["Running", "Running", "Running"]),
        ("all succeeded", vec![], vec![s_terminated(0), s_terminated(0)], ["Running", "Succeeded", "Succeeded"]),
        ("succeeded + failed", vec![], vec![s_terminated(0), s_terminated(1)], ["Running", "Running", "Failed"]),
        ("all failed", vec![], vec![s_terminated(2)], ["Running", "Running", "Failed"]),
        ("restarting after failure", vec![], vec![s_restarting(1)], ["Running", "Running", "Failed"]),
        ("restarting + running", vec![], vec![s_restarting(1), s_running()], ["Running", "Running", "Running"]),
        ("init waiting", vec![s_waiting()], vec![s_waiting()], ["Pending", "Pending", "Pending"]),
        ("init running", vec![s_running()], vec![s_waiting()], ["Pending", "Pending", "Pending"]),
        ("init done, next init running", vec![s_terminated(0), s_running()], vec![s_waiting()], ["Pending"; 3]),
        ("init failed", vec![s_terminated(1)], vec![s_waiting()], ["Pending", "Pending", "Failed"]),
        ("init restarting after failure", vec![s_restarting(1)], vec![s_waiting()], ["Pending", "Pending", "Failed"]),
        ("init done, app waiting", vec![s_terminated(0)], vec![s_waiting()], ["Pending", "Pending", "Pending"]),
        ("init done, app running", vec![s_terminated(0)], vec![s_running()], ["Running", "Running", "Running"]),
        (
            "init done, app succeeded",
            vec![s_terminated(0)],
            vec![s_terminated(0)],
            ["Running", "Succeeded", "Succeeded"],
        ),
        ("init done, app failed", vec![s_terminated(0)], vec![s_terminated(1)], ["Running", "Running", "Failed"]),
    ];
    for (what, init, regular, want) in rows {
        for (policy, want) in ["Always", "OnFailure", "Never"].into_iter().zip(want) {
            assert_eq!(phase(policy, &init, &regular, false), want, "{what} under {policy}");
        }
    }
}

#[test]
fn new_pod_is_pending_with_containers_creating() {
    for policy in ["Always", "OnFailure", "Never"] {
        let pod = pod(policy, &[], &["app", "sidecar"]);
        let st = status(&pod, &PodObs::default());
        assert_eq!(phase_of(&st), "Pending", "{policy}");
        for name in ["app", "sidecar"] {
            let cs = container(&st, name);
            assert_eq!(waiting_reason(cs), Some("ContainerCreating"), "{policy} {name}");
            assert_eq!(cs.started, Some(false));
            assert!(!cs.ready);
            assert_eq!(cs.container_id, None);
            assert_eq!(cs.image, format!("registry.local/{name}:1.0"));
        }
        assert_eq!(st.init_container_statuses, None);
    }
}

#[test]
fn phase_follows_the_runtime_for_every_restart_policy() {
    type Row = (&'static str, Vec<ContainerObs>, [&'static str; 3]);
    let rows: Vec<Row> = vec![
        ("running", vec![running("app", "a", 0, 1), running("sidecar", "s", 0, 1)], ["Running"; 3]),
        ("one not created yet", vec![running("app", "a", 0, 1)], ["Pending"; 3]),
        (
            "all succeeded",
            vec![exited("app", "a", 0, 0, 1, 5), exited("sidecar", "s", 0, 0, 1, 6)],
            ["Running", "Succeeded", "Succeeded"],
        ),
        (
            "one failed",
            vec![exited("app", "a", 0, 0, 1, 5), exited("sidecar", "s", 0, 1, 1, 6)],
            ["Running", "Running", "Failed"],
        ),
        (
            "one failed, one running",
            vec![exited("app", "a", 0, 1, 1, 5), running("sidecar", "s", 0, 1)],
            ["Running"; 3],
        ),
    ];
    for (what, containers, want) in rows {
        for (policy, want) in ["Always", "OnFailure", "Never"].into_iter().zip(want) {
            let pod = pod(policy, &[], &["app", "sidecar"]);
            let st = status(&pod, &obs(ready(), containers.clone()));
            assert_eq!(phase_of(&st), want, "{what} under {policy}");
        }
    }
}

#[test]
fn terminal_previous_phase_never_changes() {
    let pod = pod("Always", &[], &["app"]);
    let o = obs(ready(), vec![running("app", "a", 1, 50)]);
    for terminal in ["Succeeded", "Failed"] {
        let previous = PodStatus { phase: Some(terminal.into()), ..Default::default() };
        let st = compute_at(&pod, &o, &no_waiting(), Some(&previous), 100);
        assert_eq!(phase_of(&st), terminal);
    }
    // A non-terminal previous phase is recomputed.
    let previous = PodStatus { phase: Some("Pending".into()), ..Default::default() };
    assert_eq!(phase_of(&compute_at(&pod, &o, &no_waiting(), Some(&previous), 100)), "Running");
}

#[test]
fn terminal_api_phase_after_a_restart_keeps_its_reason_message_and_disruption_condition() {
    // A kubelet restarted after an eviction: no status of its own, the API's says Failed/Evicted.
    let mut pod = pod("Always", &[], &["app"]);
    let disruption = PodCondition {
        type_: "DisruptionTarget".into(),
        status: "True".into(),
        reason: Some("TerminationByKubelet".into()),
        message: Some("evicted".into()),
        last_transition_time: Some(time(at(10))),
        ..Default::default()
    };
    pod.status = Some(PodStatus {
        phase: Some("Failed".into()),
        reason: Some("Evicted".into()),
        message: Some("The node was low on resource: memory. ".into()),
        conditions: Some(vec![disruption.clone()]),
        ..Default::default()
    });
    let o = obs(vec![sandbox(SB, false, 0)], vec![exited("app", "a", 0, 137, 1, 20)]);
    let st = compute_at(&pod, &o, &no_waiting(), None, 100);
    assert_eq!(phase_of(&st), "Failed");
    assert_eq!(st.reason.as_deref(), Some("Evicted"));
    assert_eq!(st.message.as_deref(), Some("The node was low on resource: memory. "));
    assert_eq!(cond(&st, "DisruptionTarget"), &disruption);
    // The kubelet's own terminal status comes first; the API's fills what it leaves empty.
    let own = PodStatus { phase: Some("Failed".into()), reason: Some("DeadlineExceeded".into()), ..Default::default() };
    let st = compute_at(&pod, &o, &no_waiting(), Some(&own), 100);
    assert_eq!(st.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(st.message.as_deref(), Some("The node was low on resource: memory. "));
    // A running pod's API status carries no reason over.
    let mut running_pod = pod.clone();
    running_pod.status =
        Some(PodStatus { phase: Some("Running".into()), reason: Some("Old".into()), ..Default::default() });
    let st = compute_at(&running_pod, &obs(ready(), vec![running("app", "a", 0, 50)]), &no_waiting(), None, 100);
    assert_eq!((phase_of(&st), st.reason.as_deref()), ("Running", None));
}

// ---------------------------------------------------------------------------------------------
// Conditions.
// ---------------------------------------------------------------------------------------------

#[test]
fn conditions_come_in_upstream_order() {
    let pod = pod("Always", &["init-a"], &["app"]);
    let st = status(&pod, &PodObs::default());
    let types: Vec<_> = st.conditions.iter().flatten().map(|c| c.type_.as_str()).collect();
    assert_eq!(types, ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]);
}

#[test]
fn running_pod_has_every_condition_true() {
    let pod = pod("Always", &["init-a"], &["app", "sidecar"]);
    let o = obs(
        ready(),
        vec![exited("init-a", "ia", 0, 0, 1, 2), running("app", "a", 0, 3), running("sidecar", "s", 0, 3)],
    );
    let st = status(&pod, &o);
    assert_eq!(phase_of(&st), "Running");
    assert_eq!(
        conds(&st),
        vec![
            c("PodReadyToStartContainers", "True", None, None),
            c("Initialized", "True", None, None),
            c("Ready", "True", None, None),
            c("ContainersReady", "True", None, None),
            c("PodScheduled", "True", None, None),
        ]
    );
}

#[test]
fn new_pod_has_no_sandbox_and_unready_containers() {
    let pod = pod("Always", &[], &["app", "sidecar"]);
    let st = status(&pod, &PodObs::default());
    let unready = Some("containers with unready status: [app sidecar]");
    assert_eq!(
        conds(&st),
        vec![
            c("PodReadyToStartContainers", "False", None, None),
            c("Initialized", "True", None, None),
            c("Ready", "False", Some("ContainersNotReady"), unready),
            c("ContainersReady", "False", Some("ContainersNotReady"), unready),
            c("PodScheduled", "True", None, None),
        ]
    );
}

#[test]
fn unready_message_lists_only_the_unready_containers_in_spec_order() {
    let pod = pod("Always", &[], &["a", "b", "c"]);
    let o = obs(ready(), vec![running("b", "b0", 0, 1)]);
    let st = status(&pod, &o);
    assert_eq!(cond(&st, "Ready").message.as_deref(), Some("containers with unready status: [a c]"));
    assert_eq!(cond(&st, "ContainersReady").message.as_deref(), Some("containers with unready status: [a c]"));
}

#[test]
fn initializing_pod_lists_incomplete_init_containers() {
    let pod = pod("Always", &["init-a", "init-b", "init-c"], &["app"]);
    let o = obs(ready(), vec![exited("init-a", "ia", 0, 0, 1, 2), running("init-b", "ib", 0, 3)]);
    let st = status(&pod, &o);
    assert_eq!(phase_of(&st), "Pending");
    assert_eq!(
        conds(&st),
        vec![
            c("PodReadyToStartContainers", "True", None, None),
            c(
                "Initialized",
                "False",
                Some("ContainersNotInitialized"),
                Some("containers with incomplete status: [init-b init-c]")
            ),
            c("Ready", "False", Some("ContainersNotReady"), Some("containers with unready status: [app]")),
            c("ContainersReady", "False", Some("ContainersNotReady"), Some("containers with unready status: [app]")),
            c("PodScheduled", "True", None, None),
        ]
    );
}

#[test]
fn failed_init_container_is_incomplete() {
    let pod = pod("OnFailure", &["init-a"], &["app"]);
    let o = obs(ready(), vec![exited("init-a", "ia", 0, 1, 1, 2)]);
    let st = status(&pod, &o);
    assert_eq!(phase_of(&st), "Pending");
    let init = cond(&st, "Initialized");
    assert_eq!(init.status, "False");
    assert_eq!(init.message.as_deref(), Some("containers with incomplete status: [init-a]"));
    let never = pod_with("Never", &["init-a"], &["app"], json!({}));
    assert_eq!(phase_of(&status(&never, &o)), "Failed");
}

#[test]
fn succeeded_pod_is_not_ready_with_pod_completed() {
    let pod = pod("OnFailure", &["init-a"], &["app", "sidecar"]);
    let o = obs(
        ready(),
        vec![exited("init-a", "ia", 0, 0, 1, 2), exited("app", "a", 0, 0, 3, 9), exited("sidecar", "s", 0, 0, 3, 8)],
    );
    let st = status(&pod, &o);
    assert_eq!(phase_of(&st), "Succeeded");
    for t in ["Ready", "ContainersReady"] {
        let cd = cond(&st, t);
        assert_eq!(
            (cd.status.as_str(), cd.reason.as_deref(), cd.message.as_deref()),
            ("False", Some("PodCompleted"), None)
        );
    }
    assert_eq!(cond(&st, "Initialized").status, "True");
}

#[test]
fn pod_scheduled_is_true_for_a_pod_bound_to_the_node() {
    let st = status(&pod("Always", &[], &["app"]), &PodObs::default());
    let cd = cond(&st, "PodScheduled");
    assert_eq!((cd.status.as_str(), cd.reason.as_deref()), ("True", None));
}

#[test]
fn ready_to_start_containers_follows_the_newest_sandbox() {
    let pod = pod("Always", &[], &["app"]);
    let cases = [
        ("no sandbox", vec![], "False"),
        ("ready sandbox", vec![sandbox(SB, true, 0)], "True"),
        ("dead sandbox", vec![sandbox(SB, false, 0)], "False"),
        ("new sandbox over a dead one", vec![sandbox("sb-1", true, 10), sandbox(SB, false, 0)], "True"),
        ("dead sandbox over an older ready one", vec![sandbox("sb-1", false, 10), sandbox(SB, true, 0)], "False"),
    ];
    for (what, sandboxes, want) in cases {
        let st = status(&pod, &obs(sandboxes, vec![]));
        assert_eq!(cond(&st, "PodReadyToStartContainers").status, want, "{what}");
    }
}

#[test]
fn last_transition_time_is_kept_while_a_condition_keeps_its_status() {
    let pod = pod("Always", &[], &["app"]);
    let starting = obs(ready(), vec![]);
    let up = obs(ready(), vec![running("app", "a", 0, 20)]);
    let first = compute_at(&pod, &starting, &no_waiting(), None, 10);
    for cd in first.conditions.iter().flatten() {
        assert_eq!(cd.last_transition_time, Some(time(at(10))), "{} starts at now", cd.type_);
    }
    let second = compute_at(&pod, &up, &no_waiting(), Some(&first), 30);
    let when = |st: &PodStatus, t: &str| cond(st, t).last_transition_time.clone().unwrap();
    // Unchanged: kept.
    for t in ["PodReadyToStartContainers", "Initialized", "PodScheduled"] {
        assert_eq!(when(&second, t), time(at(10)), "{t}");
    }
    // Flipped to True: now.
    for t in ["Ready", "ContainersReady"] {
        assert_eq!(cond(&second, t).status, "True");
        assert_eq!(when(&second, t), time(at(30)), "{t}");
    }
    // Still True later: kept from when it flipped.
    let third = compute_at(&pod, &up, &no_waiting(), Some(&second), 60);
    assert_eq!(when(&third, "Ready"), time(at(30)));
    assert_eq!(when(&third, "Initialized"), time(at(10)));
}

// ---------------------------------------------------------------------------------------------
// Container statuses.
// ---------------------------------------------------------------------------------------------

#[test]
fn running_container_status_has_id_image_id_restart_count_and_start_time() {
    let pod = pod("Always", &[], &["app"]);
    let mut c = running("app", "abc123", 2, 40);
    c.image_ref = "registry.local/app@sha256:feed".into();
    let st = status(&pod, &obs(ready(), vec![c]));
    let cs = container(&st, "app");
    assert_eq!(cs.container_id.as_deref(), Some("containerd://abc123"));
    assert_eq!(cs.image_id, "registry.local/app@sha256:feed");
    assert_eq!(cs.image, "registry.local/app:1.0");
    assert_eq!(cs.restart_count, 2);
    assert_eq!(cs.started, Some(true));
    assert!(cs.ready);
    assert_eq!(state_of(cs).running.as_ref().unwrap().started_at, Some(time(at(40))));
    assert_eq!(cs.last_state, None);
}

#[test]
fn terminated_container_reasons_follow_exit_code_unless_the_runtime_gives_one() {
    let cases = [(0, "", "Completed"), (1, "", "Error"), (137, "OOMKilled", "OOMKilled"), (2, "Error", "Error")];
    for (code, runtime_reason, want) in cases {
        let pod = pod("Never", &[], &["app"]);
        let mut c = exited("app", "a1", 0, code, 10, 20);
        c.reason = runtime_reason.into();
        c.message = "bye".into();
        let st = status(&pod, &obs(ready(), vec![c]));
        let cs = container(&st, "app");
        let t = state_of(cs).terminated.as_ref().unwrap();
        assert_eq!(t.exit_code, code);
        assert_eq!(t.reason.as_deref(), Some(want), "exit {code}");
        assert_eq!(t.message.as_deref(), Some("bye"));
        assert_eq!(t.started_at, Some(time(at(10))));
        assert_eq!(t.finished_at, Some(time(at(20))));
        assert_eq!(t.container_id.as_deref(), Some("containerd://a1"));
        assert_eq!(cs.started, Some(false));
        assert!(!cs.ready);
    }
}

#[test]
fn empty_termination_message_is_left_out() {
    let pod = pod("Never", &[], &["app"]);
    let st = status(&pod, &obs(ready(), vec![exited("app", "a1", 0, 0, 10, 20)]));
    assert_eq!(state_of(container(&st, "app")).terminated.as_ref().unwrap().message, None);
}

#[test]
fn termination_messages_reach_state_and_last_state() {
    let pod = pod("Always", &[], &["app"]);
    let mut newest = exited("app", "a1", 1, 0, 10, 15);
    newest.message = "DONE".into();
    let mut older = exited("app", "a0", 0, 1, 1, 5);
    older.message = "first".into();
    let cs_of = |o: &PodObs| {
        let st = status(&pod, o);
        container(&st, "app").clone()
    };
    let cs = cs_of(&obs(ready(), vec![newest.clone(), older]));
    assert_eq!(state_of(&cs).terminated.as_ref().unwrap().message.as_deref(), Some("DONE"));
    let last = cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(last.message.as_deref(), Some("first"));
    let cs = cs_of(&obs(ready(), vec![running("app", "a2", 2, 20), newest]));
    let last = cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(last.message.as_deref(), Some("DONE"));
}

#[test]
fn waiting_reason_is_container_creating_without_init_containers_and_pod_initializing_with() {
    let plain = pod("Always", &[], &["app"]);
    let st = status(&plain, &obs(ready(), vec![]));
    assert_eq!(waiting_reason(container(&st, "app")), Some("ContainerCreating"));

    let with_init = pod("Always", &["init-a", "init-b"], &["app"]);
    let st = status(&with_init, &obs(ready(), vec![running("init-a", "ia", 0, 1)]));
    assert_eq!(waiting_reason(container(&st, "app")), Some("PodInitializing"));
    assert_eq!(waiting_reason(container(&st, "init-b")), Some("PodInitializing"));
    let ia = container(&st, "init-a");
    assert!(state_of(ia).running.is_some());
    assert!(!ia.ready, "a running init container is not ready");
}

#[test]
fn created_but_not_started_container_is_waiting_with_the_default_reason() {
    let pod = pod("Always", &[], &["app"]);
    let st = status(&pod, &obs(ready(), vec![ctr("app", "a0", CState::Created, 0, 1)]));
    let cs = container(&st, "app");
    assert_eq!(waiting_reason(cs), Some("ContainerCreating"));
    assert_eq!(cs.container_id.as_deref(), Some("containerd://a0"));
    assert_eq!(phase_of(&st), "Pending");
}

#[test]
fn init_container_statuses_report_success_as_ready() {
    let pod = pod("Always", &["init-a", "init-b"], &["app"]);
    let o = obs(ready(), vec![exited("init-a", "ia", 0, 0, 1, 2), exited("init-b", "ib", 0, 1, 3, 4)]);
    let st = status(&pod, &o);
    let names: Vec<_> = st.init_container_statuses.iter().flatten().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["init-a", "init-b"]);
    let ia = container(&st, "init-a");
    assert!(ia.ready);
    assert_eq!(state_of(ia).terminated.as_ref().unwrap().reason.as_deref(), Some("Completed"));
    let ib = container(&st, "init-b");
    assert!(!ib.ready);
    assert_eq!(state_of(ib).terminated.as_ref().unwrap().reason.as_deref(), Some("Error"));
}

#[test]
fn crash_looping_container_is_waiting_with_the_last_termination() {
    let pod = pod("Always", &[], &["app"]);
    let msg = "back-off 10s restarting failed container=app pod=web_default(uid-1)";
    let o = obs(ready(), vec![exited("app", "a1", 1, 1, 10, 15), exited("app", "a0", 0, 1, 1, 5)]);
    let st = compute_at(&pod, &o, &waiting_for("app", "CrashLoopBackOff", msg), None, 16);
    let cs = container(&st, "app");
    let w = state_of(cs).waiting.as_ref().unwrap();
    assert_eq!((w.reason.as_deref(), w.message.as_deref()), (Some("CrashLoopBackOff"), Some(msg)));
    let last = cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));
    assert_eq!(last.finished_at, Some(time(at(15))), "lastState is the newest instance, not the one before");
    assert_eq!(last.container_id.as_deref(), Some("containerd://a1"));
    assert_eq!(cs.restart_count, 1);
    assert_eq!(cs.started, Some(false));
    assert!(!cs.ready);
    assert_eq!(phase_of(&st), "Running");
    assert_eq!(cond(&st, "Ready").message.as_deref(), Some("containers with unready status: [app]"));
}

#[test]
fn restarted_container_reports_the_previous_exit_as_last_state() {
    let pod = pod("Always", &[], &["app"]);
    let o = obs(ready(), vec![running("app", "a1", 1, 10), exited("app", "a0", 0, 2, 1, 5)]);
    let st = status(&pod, &o);
    let cs = container(&st, "app");
    assert!(state_of(cs).running.is_some());
    let last = cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!((last.exit_code, last.reason.as_deref()), (2, Some("Error")));
    assert_eq!(last.container_id.as_deref(), Some("containerd://a0"));
    assert_eq!(cs.container_id.as_deref(), Some("containerd://a1"));
}

#[test]
fn image_pull_error_reason_is_passed_through() {
    let pod = pod("Always", &[], &["app"]);
    for (reason, message) in [
        ("ErrImagePull", "failed to pull image \"registry.local/app:1.0\": not found"),
        ("ImagePullBackOff", "Back-off pulling image \"registry.local/app:1.0\""),
        ("CreateContainerConfigError", "secret \"x\" not found"),
    ] {
        let st = compute_at(&pod, &obs(ready(), vec![]), &waiting_for("app", reason, message), None, 10);
        let cs = container(&st, "app");
        let w = state_of(cs).waiting.as_ref().unwrap();
        assert_eq!((w.reason.as_deref(), w.message.as_deref()), (Some(reason), Some(message)));
        assert_eq!(cs.last_state, None);
        assert_eq!(phase_of(&st), "Pending", "{reason}");
    }
}

#[test]
fn unknown_container_is_terminated_with_container_status_unknown() {
    let pod = pod("Always", &[], &["app"]);
    let st = status(&pod, &obs(ready(), vec![ctr("app", "a0", CState::Unknown, 0, 1)]));
    let t = state_of(container(&st, "app")).terminated.clone().unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (137, Some("ContainerStatusUnknown")));
}

// ---------------------------------------------------------------------------------------------
// Pod-level fields.
// ---------------------------------------------------------------------------------------------

#[test]
fn start_time_is_kept_from_the_previous_status() {
    let pod = pod("Always", &[], &["app"]);
    let first = compute_at(&pod, &PodObs::default(), &no_waiting(), None, 5);
    assert_eq!(first.start_time, Some(time(at(5))));
    let later = compute_at(&pod, &obs(ready(), vec![running("app", "a", 0, 6)]), &no_waiting(), Some(&first), 50);
    assert_eq!(later.start_time, Some(time(at(5))));
}

#[test]
fn pod_ips_come_from_the_ready_sandbox_and_host_ip_from_the_context() {
    let pod = pod("Always", &[], &["app"]);
    let st = status(&pod, &obs(vec![sandbox("sb-1", true, 10), sandbox(SB, false, 0)], vec![]));
    assert_eq!(st.pod_ip.as_deref(), Some("10.244.0.7"));
    let ips: Vec<_> = st.pod_ips.iter().flatten().map(|p| p.ip.as_str()).collect();
    assert_eq!(ips, ["10.244.0.7", "fd00::7"]);
    assert_eq!(st.host_ip.as_deref(), Some(HOST_IP));
    assert_eq!(st.host_ips, Some(vec![HostIP { ip: HOST_IP.into() }]));

    // No ready sandbox and nothing known before: no pod IP.
    let st = status(&pod, &obs(vec![sandbox(SB, false, 0)], vec![]));
    assert_eq!((st.pod_ip, st.pod_ips), (None, None));
}

#[test]
fn host_network_pod_uses_the_host_ip() {
    let pod = pod_with("Always", &[], &["app"], json!({"hostNetwork": true}));
    let st = status(&pod, &obs(ready(), vec![]));
    assert_eq!(st.pod_ip.as_deref(), Some(HOST_IP));
    assert_eq!(st.pod_ips, Some(vec![PodIP { ip: HOST_IP.into() }]));
}

#[test]
fn pod_ips_are_kept_when_the_sandbox_is_gone() {
    let pod = pod("Always", &[], &["app"]);
    let first = status(&pod, &obs(ready(), vec![]));
    let st = compute_at(&pod, &obs(vec![sandbox(SB, false, 0)], vec![]), &no_waiting(), Some(&first), 200);
    assert_eq!(st.pod_ip.as_deref(), Some("10.244.0.7"));
    assert_eq!(st.pod_ips.as_ref().map(Vec::len), Some(2));
}

#[test]
fn qos_class_is_reported() {
    let cases = [
        (json!({}), "BestEffort"),
        (json!({"requests": {"cpu": "100m"}}), "Burstable"),
        (json!({"limits": {"cpu": "1", "memory": "1Gi"}}), "Guaranteed"),
    ];
    for (resources, want) in cases {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "uid-1"},
            "spec": {"containers": [{"name": "app", "image": "x", "resources": resources}]},
        }))
        .unwrap();
        assert_eq!(status(&pod, &PodObs::default()).qos_class.as_deref(), Some(want));
    }
}

#[test]
fn container_hash_does_not_affect_status() {
    // Status reads state, not spec identity: a container of an older spec still reports.
    let pod = pod("Always", &[], &["app"]);
    let mut c = running("app", "a", 0, 1);
    c.hash = container_hash(&pod.spec.as_ref().unwrap().containers[0]) ^ 1;
    assert!(state_of(container(&status(&pod, &obs(ready(), vec![c])), "app")).running.is_some());
}

// ---------------------------------------------------------------------------------------------
// Divergences from upstream found while writing these tests.
// ---------------------------------------------------------------------------------------------

#[test]
fn failed_pod_ready_conditions_have_reason_pod_failed() {
    let pod = pod("Never", &[], &["app", "sidecar"]);
    let o = obs(ready(), vec![exited("app", "a", 0, 0, 1, 5), exited("sidecar", "s", 0, 1, 1, 6)]);
    let st = status(&pod, &o);
    assert_eq!(phase_of(&st), "Failed");
    for t in ["Ready", "ContainersReady"] {
        let cd = cond(&st, t);
        assert_eq!(
            (cd.status.as_str(), cd.reason.as_deref(), cd.message.as_deref()),
            ("False", Some("PodFailed"), None)
        );
    }
}

#[test]
fn succeeded_pod_initialized_condition_has_reason_pod_completed() {
    let pod = pod("OnFailure", &["init-a"], &["app"]);
    let o = obs(ready(), vec![exited("init-a", "ia", 0, 0, 1, 2), exited("app", "a", 0, 0, 3, 9)]);
    let st = status(&pod, &o);
    assert_eq!(phase_of(&st), "Succeeded");
    let cd = cond(&st, "Initialized");
    assert_eq!((cd.status.as_str(), cd.reason.as_deref()), ("True", Some("PodCompleted")));
}

#[test]
fn init_containers_rerunning_in_a_new_sandbox_keep_the_pod_running_and_initialized() {
    let pod = pod("Always", &["init-a"], &["app"]);
    // Sandbox 0 died (node reboot); sandbox 1 runs init-a again; app's newest instance is the old one.
    let o = obs(
        vec![sandbox("sb-1", true, 20), sandbox(SB, false, 0)],
        vec![
            in_sandbox(running("init-a", "ia1", 1, 21), "sb-1"),
            exited("app", "a0", 0, 137, 3, 15),
            exited("init-a", "ia0", 0, 0, 1, 2),
        ],
    );
    let st = status(&pod, &o);
    assert_eq!(phase_of(&st), "Running");
    assert_eq!(cond(&st, "Initialized").status, "True");

    // The same, straight through phase(): pending / failed init after app containers have run.
    assert_eq!(phase("Always", &[s_running()], &[s_terminated(137)], false), "Running");
    assert_eq!(phase("OnFailure", &[s_terminated(1)], &[s_terminated(1)], false), "Running");
}

#[test]
fn init_container_waiting_after_success_is_not_pending() {
    assert_eq!(phase("Always", &[s_restarting(0)], &[s_running()], false), "Running");
    // A deleted pod whose containers are all stopped is terminal (upstream's podIsTerminal):
    // Succeeded when every container succeeded, else Failed, whatever the restart policy.
    assert_eq!(phase("Always", &[], &[s_terminated(0)], true), "Succeeded");
    assert_eq!(phase("Always", &[], &[s_terminated(0), s_terminated(137)], true), "Failed");
    assert_eq!(phase("OnFailure", &[], &[s_terminated(1)], true), "Failed");
    assert_eq!(phase("Always", &[], &[s_terminated(0), s_running()], true), "Running");
}

// ---------------------------------------------------------------------------------------------
// The pod's blocker message ("why is it not running").
// ---------------------------------------------------------------------------------------------

#[test]
fn blocker_names_the_init_container_being_waited_for() {
    let p = pod("Always", &["init-a", "init-b", "init-c"], &["app"]);
    let o = obs(ready(), vec![exited("init-a", "i1", 0, 0, 1, 2), running("init-b", "i2", 0, 3)]);
    assert_eq!(status(&p, &o).message.as_deref(), Some("waiting for init container init-b (2/3)"));
}

#[test]
fn blocker_reports_crash_loop_backoff_delay() {
    let p = pod("Always", &[], &["app"]);
    let o = obs(ready(), vec![exited("app", "c1", 3, 1, 1, 2)]);
    let w =
        waiting_for("app", "CrashLoopBackOff", "back-off 40s restarting failed container=app pod=web_default(uid-1)");
    let st = compute_at(&p, &o, &w, None, 5);
    assert_eq!(st.message.as_deref(), Some("back-off 40s restarting failed container app"));
}

#[test]
fn blocker_reports_the_failing_readiness_probe() {
    let p = pod_with(
        "Always",
        &[],
        &["app"],
        json!({"containers": [{"name": "app", "image": "x", "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}}}]}),
    );
    let o = obs(ready(), vec![running("app", "c1", 0, 1)]);
    let probes = HashMap::from([(
        "c1".to_string(),
        ProbeView { ready: false, started: true, readiness_message: "HTTP 503 from :8080/ready".into() },
    )]);
    let ctx = Context {
        waiting: &no_waiting(),
        previous: None,
        host_ip: None,
        runtime_name: "containerd",
        now: at(5),
        probes: &probes,
        pod_is_terminal: false,
        conditions: &[],
    };
    let st = compute(&p, &o, &ctx);
    assert!(!container(&st, "app").ready);
    assert_eq!(st.message.as_deref(), Some("readiness probe failing: HTTP 503 from :8080/ready"));
    // Once the probe passes the container is ready and nothing blocks.
    let probes =
        HashMap::from([("c1".to_string(), ProbeView { ready: true, started: true, readiness_message: String::new() })]);
    let ctx = Context { probes: &probes, ..ctx };
    let st = compute(&p, &o, &ctx);
    assert!(container(&st, "app").ready);
    assert_eq!(st.message, None);
}

#[test]
fn startup_probe_gates_started_and_ready() {
    let p = pod_with(
        "Always",
        &[],
        &["app"],
        json!({"containers": [{"name": "app", "image": "x", "startupProbe": {"exec": {"command": ["true"]}}}]}),
    );
    let o = obs(ready(), vec![running("app", "c1", 0, 1)]);
    let st = status(&p, &o);
    let c = container(&st, "app");
    assert_eq!((c.started, c.ready), (Some(false), false));
    assert_eq!(st.message.as_deref(), Some("startup probe of container app not passing yet"));
}

#[test]
fn readiness_gates_hold_ready_until_every_gate_condition_is_true() {
    let p = pod_with(
        "Always",
        &[],
        &["app"],
        json!({"readinessGates": [{"conditionType": "a/x"}, {"conditionType": "b/y"}]}),
    );
    let gate = |t: &str, s: &str| PodCondition { type_: t.into(), status: s.into(), ..Default::default() };
    let with = |o: &PodObs, conditions: &[PodCondition]| {
        let (waiting, probes) = (no_waiting(), HashMap::new());
        let ctx = Context {
            waiting: &waiting,
            previous: None,
            host_ip: None,
            runtime_name: "containerd",
            now: at(5),
            probes: &probes,
            pod_is_terminal: false,
            conditions,
        };
        compute(&p, o, &ctx)
    };
    let o = obs(ready(), vec![running("app", "c1", 0, 1)]);
    // Containers ready, gates not: Ready is False with upstream's reason and messages;
    // ContainersReady is True.
    let st = with(&o, &[gate("b/y", "False")]);
    let r = cond(&st, "Ready");
    assert_eq!((r.status.as_str(), r.reason.as_deref()), ("False", Some("ReadinessGatesNotReady")));
    assert_eq!(
        r.message.as_deref(),
        Some(
            "corresponding condition of pod readiness gate \"a/x\" does not exist., the status of pod readiness gate \"b/y\" is not \"True\", but False"
        )
    );
    assert_eq!(cond(&st, "ContainersReady").status, "True");
    assert_eq!(phase_of(&st), "Running");
    // Every gate True: Ready.
    let st = with(&o, &[gate("a/x", "True"), gate("b/y", "True")]);
    assert_eq!((cond(&st, "Ready").status.as_str(), cond(&st, "Ready").reason.as_deref()), ("True", None));
    // Unready containers come first: the containers' reason, not the gates'.
    let st = with(&obs(ready(), vec![]), &[]);
    assert_eq!(cond(&st, "Ready").reason.as_deref(), Some("ContainersNotReady"));
}

// ---------------------------------------------------------------------------------------------
// Sidecars (init containers with restartPolicy Always).
// ---------------------------------------------------------------------------------------------

/// `pod` whose init container `side` is a sidecar with a readiness probe and, when
/// `startup`, a startup probe; the other init containers are regular ones.
fn sidecar_pod(policy: &str, inits: &[&str], startup: bool) -> Pod {
    let mut pod = pod(policy, inits, &["app"]);
    let probe: k8s_openapi::api::core::v1::Probe =
        serde_json::from_value(json!({"exec": {"command": ["true"]}})).unwrap();
    for c in pod.spec.as_mut().unwrap().init_containers.iter_mut().flatten() {
        if c.name == "side" {
            c.restart_policy = Some("Always".into());
            c.readiness_probe = Some(probe.clone());
            c.startup_probe = startup.then(|| probe.clone());
        }
    }
    pod
}

fn with_probes(pod: &Pod, obs: &PodObs, probes: &[(&str, bool, bool)], previous: Option<&PodStatus>) -> PodStatus {
    let views: HashMap<String, ProbeView> = probes
        .iter()
        .map(|(id, started, ready)| {
            (id.to_string(), ProbeView { ready: *ready, started: *started, readiness_message: String::new() })
        })
        .collect();
    let waiting = no_waiting();
    let ctx = Context {
        waiting: &waiting,
        previous,
        host_ip: None,
        runtime_name: "containerd",
        now: at(100),
        probes: &views,
        pod_is_terminal: false,
        conditions: &[],
    };
    compute(pod, obs, &ctx)
}

fn s_started(started: bool) -> ContainerStatus {
    ContainerStatus { started: Some(started), ..s_running() }
}

#[test]
fn phase_table_with_sidecars() {
    use ContainerStatus as S;
    type Row = (&'static str, Vec<S>, Vec<S>, [&'static str; 3]);
    //                                                                   Always     OnFailure    Never
    let rows: Vec<Row> = vec![
        ("sidecar not started yet", vec![s_started(false)], vec![s_waiting()], ["Pending"; 3]),
        ("sidecar started, app waiting", vec![s_started(true)], vec![s_waiting()], ["Pending"; 3]),
        ("sidecar and app running", vec![s_started(true)], vec![s_running()], ["Running"; 3]),
        ("sidecar restarting, app running", vec![s_restarting(1)], vec![s_running()], ["Running"; 3]),
        ("sidecar never ran, app running", vec![s_waiting()], vec![s_running()], ["Pending"; 3]),
        ("sidecar running, app succeeded", vec![s_started(true)], vec![s_terminated(0)], ["Running"; 3]),
        ("sidecar running, app failed", vec![s_started(true)], vec![s_terminated(1)], ["Running"; 3]),
        (
            "sidecar stopped, app succeeded",
            vec![s_terminated(137)],
            vec![s_terminated(0)],
            ["Running", "Succeeded", "Succeeded"],
        ),
        ("sidecar stopped, app failed", vec![s_terminated(0)], vec![s_terminated(1)], ["Running", "Running", "Failed"]),
        (
            "sidecar restarting, app succeeded",
            vec![s_restarting(1)],
            vec![s_terminated(0)],
            ["Running", "Succeeded", "Succeeded"],
        ),
    ];
    for (what, sidecars, regular, want) in rows {
        for (policy, want) in ["Always", "OnFailure", "Never"].into_iter().zip(want) {
            assert_eq!(phase_with_sidecars(policy, &[], &sidecars, &regular, false), want, "{what} under {policy}");
        }
    }
    // A sidecar not started yet keeps the pod Pending only until an app container started.
    assert_eq!(phase_with_sidecars("Always", &[], &[s_started(false)], &[s_running()], false), "Running");
    // Deleted and stopped: terminal by the app containers alone.
    assert_eq!(phase_with_sidecars("Always", &[], &[s_terminated(137)], &[s_terminated(0)], true), "Succeeded");
}

#[test]
fn a_running_sidecar_is_started_and_ready_in_init_container_statuses() {
    let pod = sidecar_pod("Always", &["side"], false);
    let o = obs(ready(), vec![running("side", "s", 0, 1), running("app", "a", 0, 2)]);
    // Readiness probe not passed yet: started, not ready; the pod is Running but not Ready,
    // the sidecar named first among the unready.
    let st = with_probes(&pod, &o, &[("s", true, false), ("a", true, true)], None);
    let side = &st.init_container_statuses.as_ref().unwrap()[0];
    assert_eq!((side.name.as_str(), side.started, side.ready), ("side", Some(true), false));
    assert!(side.state.as_ref().unwrap().running.is_some());
    assert_eq!(phase_of(&st), "Running");
    assert_eq!(cond(&st, "Initialized").status, "True");
    let containers_ready = cond(&st, "ContainersReady");
    assert_eq!(
        (containers_ready.status.as_str(), containers_ready.message.as_deref()),
        ("False", Some("containers with unready status: [side]"))
    );
    assert_eq!(cond(&st, "Ready").status, "False");

    // Ready once its readiness probe passes.
    let st = with_probes(&pod, &o, &[("s", true, true), ("a", true, true)], None);
    let side = &st.init_container_statuses.as_ref().unwrap()[0];
    assert_eq!((side.started, side.ready), (Some(true), true));
    assert_eq!((cond(&st, "Ready").status.as_str(), cond(&st, "ContainersReady").status.as_str()), ("True", "True"));

    // Unready app and sidecar: the sidecar first, as upstream lists them.
    let st = with_probes(&pod, &obs(ready(), vec![running("side", "s", 0, 1)]), &[("s", true, false)], None);
    assert_eq!(cond(&st, "Ready").message.as_deref(), Some("containers with unready status: [side app]"));
}

#[test]
fn a_sidecar_counts_as_initialized_once_started() {
    let pod = sidecar_pod("Always", &["side", "init-b"], true);
    let o = obs(ready(), vec![running("side", "s", 0, 1)]);
    // Startup probe not passed: pending, both incomplete.
    let st = with_probes(&pod, &o, &[("s", false, false)], None);
    assert_eq!(phase_of(&st), "Pending");
    assert_eq!(cond(&st, "Initialized").message.as_deref(), Some("containers with incomplete status: [side init-b]"));
    assert_eq!(st.message.as_deref(), Some("waiting for init container side (1/2)"));
    let side = container(&st, "side");
    assert_eq!((side.started, side.ready), (Some(false), false));

    // Started: only init-b left.
    let st = with_probes(&pod, &o, &[("s", true, false)], None);
    assert_eq!(cond(&st, "Initialized").message.as_deref(), Some("containers with incomplete status: [init-b]"));
    assert_eq!(st.message.as_deref(), Some("waiting for init container init-b (2/2)"));

    // init-b done: initialized, the app comes next.
    let o = obs(ready(), vec![running("side", "s", 0, 1), exited("init-b", "ib", 0, 0, 2, 3)]);
    let st = with_probes(&pod, &o, &[("s", true, true)], None);
    assert_eq!(cond(&st, "Initialized").status, "True");
    assert_eq!(phase_of(&st), "Pending");
    assert!(container(&st, "init-b").ready);
}

#[test]
fn a_stopped_sidecar_is_not_ready_and_the_pod_ends_by_its_app_containers() {
    let pod = sidecar_pod("Never", &["side"], false);
    let o = obs(ready(), vec![exited("side", "s", 0, 143, 1, 20), exited("app", "a", 0, 0, 2, 10)]);
    let st = with_probes(&pod, &o, &[], None);
    assert_eq!(phase_of(&st), "Succeeded");
    let side = container(&st, "side");
    assert_eq!((side.ready, side.started), (false, Some(false)));
    assert_eq!(cond(&st, "Initialized").reason.as_deref(), Some("PodCompleted"));
    assert_eq!(cond(&st, "Ready").reason.as_deref(), Some("PodCompleted"));

    let failed = obs(ready(), vec![exited("side", "s", 0, 0, 1, 20), exited("app", "a", 0, 1, 2, 10)]);
    assert_eq!(phase_of(&with_probes(&pod, &failed, &[], None)), "Failed");
}

#[test]
fn ready_to_start_containers_is_false_for_a_sandbox_without_an_ip() {
    let pod = pod("Always", &[], &["app"]);
    let mut sb = sandbox(SB, true, 0);
    sb.ip = None;
    let st = status(&pod, &obs(vec![sb], vec![running("app", "a", 0, 1)]));
    assert_eq!(cond(&st, "PodReadyToStartContainers").status, "False");
}
