use super::*;
use crate::backoff::Keyed;
use crate::cri::api;
use crate::cri::labels::container_hash;
use crate::pod::observe::SandboxObs;
use crate::pod::plan::plan as plan_pod;
use crate::pod::status::{self, WaitingReasons};
use k8s_openapi::api::core::v1::PodStatus;
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

// ---------------------------------------------------------------------------------------------
// Fixtures: a pod with an app container (and optionally an init container) and the given
// ephemeral containers, the app debugged by `debugger` (target `app`) and `shell` (no target).
// ---------------------------------------------------------------------------------------------

const T0: u64 = 1_700_000_000;
const SB: &str = "sb-0";

fn nanos(s: u64) -> i64 {
    ((T0 + s) * 1_000_000_000) as i64
}

fn at(s: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + s)
}

fn pod_with(policy: &str, inits: &[&str], ephemeral: &[&str]) -> Pod {
    let eph: Vec<_> = ephemeral
        .iter()
        .map(|n| {
            let mut ec = json!({"name": n, "image": "registry.local/busybox:1.36", "command": ["sh"]});
            if *n == "debugger" {
                ec["targetContainerName"] = json!("app");
            }
            ec
        })
        .collect();
    let inits: Vec<_> = inits.iter().map(|n| json!({"name": n, "image": "registry.local/init:1"})).collect();
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "uid-1"},
        "spec": {
            "restartPolicy": policy,
            "initContainers": inits,
            "containers": [{"name": "app", "image": "registry.local/app:1"}],
            "ephemeralContainers": eph,
        },
    }))
    .unwrap()
}

fn pod(ephemeral: &[&str]) -> Pod {
    pod_with("Always", &[], ephemeral)
}

fn sandbox(ready: bool) -> SandboxObs {
    SandboxObs {
        id: SB.into(),
        attempt: 0,
        ready,
        created_at: nanos(0),
        ip: ready.then(|| "10.244.0.7".into()),
        additional_ips: vec![],
    }
}

fn ctr(pod: &Pod, name: &str, id: &str, state: CState, created: u64) -> ContainerObs {
    let spec = pod.spec.as_ref().unwrap();
    let hash = spec.containers.iter().find(|c| c.name == name).map(container_hash).unwrap_or(0);
    ContainerObs {
        id: id.into(),
        name: name.into(),
        sandbox_id: SB.into(),
        state,
        hash,
        restart_count: 0,
        init: false,
        created_at: nanos(created),
        started_at: nanos(created),
        finished_at: if state == CState::Exited { nanos(created + 1) } else { 0 },
        exit_code: 0,
        reason: if state == CState::Exited { "Completed".into() } else { String::new() },
        message: String::new(),
        image: String::new(),
        image_ref: format!("sha256:{name}"),
    }
}

fn exited(pod: &Pod, name: &str, id: &str, code: i32, created: u64) -> ContainerObs {
    ContainerObs {
        exit_code: code,
        reason: if code == 0 { "Completed".into() } else { "Error".into() },
        ..ctr(pod, name, id, CState::Exited, created)
    }
}

/// Newest first, as `observe` returns them.
fn obs(ready: bool, mut containers: Vec<ContainerObs>) -> PodObs {
    containers.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    PodObs { sandboxes: vec![sandbox(ready)], containers }
}

fn plan(pod: &Pod, obs: &PodObs) -> Plan {
    plan_pod(pod, obs, &Keyed::container_restart(), at(100))
}

fn ephemeral_starts(p: &Plan) -> Vec<&str> {
    p.start_ephemeral.iter().map(|s| s.name.as_str()).collect()
}

struct Ctx {
    probes: HashMap<String, status::ProbeView>,
    waiting: WaitingReasons,
    previous: Option<PodStatus>,
}

impl Ctx {
    fn new() -> Self {
        Self { probes: HashMap::new(), waiting: HashMap::new(), previous: None }
    }

    fn get(&self) -> Context<'_> {
        Context {
            probes: &self.probes,
            waiting: &self.waiting,
            previous: self.previous.as_ref(),
            host_ip: Some("192.168.1.10"),
            runtime_name: "containerd",
            now: at(100),
            pod_is_terminal: false,
            conditions: &[],
        }
    }
}

fn eph_status<'a>(st: &'a PodStatus, name: &str) -> &'a ContainerStatus {
    st.ephemeral_container_statuses.iter().flatten().find(|s| s.name == name).expect("ephemeral status")
}

fn state_of(s: &ContainerStatus) -> &ContainerState {
    s.state.as_ref().unwrap()
}

// ---------------------------------------------------------------------------------------------
// The plan.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_new_ephemeral_container_starts_in_the_running_pod_and_nothing_else_changes() {
    let before = pod(&[]);
    let after = pod(&["debugger"]);
    // The app runs with the hash its spec had before the ephemeral container was added.
    let running = obs(true, vec![ctr(&before, "app", "a1", CState::Running, 1)]);
    assert!(plan(&before, &running).is_noop());
    let p = plan(&after, &running);
    assert_eq!(ephemeral_starts(&p), ["debugger"]);
    assert_eq!(
        p.start_ephemeral[0],
        Start { name: "debugger".into(), init: false, restart_count: 0, arm_backoff: None }
    );
    assert!(!p.kill_pod && p.create_sandbox.is_none() && p.kill.is_empty() && p.start.is_empty(), "{p:?}");
    assert!(!p.is_noop());
}

#[test]
fn an_ephemeral_container_that_ran_is_never_started_again() {
    for policy in ["Always", "OnFailure", "Never"] {
        let pod = pod_with(policy, &[], &["debugger", "shell"]);
        let app = ctr(&pod, "app", "a1", CState::Running, 1);
        for (what, debugger) in [
            ("running", ctr(&pod, "debugger", "d1", CState::Running, 2)),
            ("succeeded", exited(&pod, "debugger", "d1", 0, 2)),
            ("failed", exited(&pod, "debugger", "d1", 1, 2)),
            ("created, never started", ctr(&pod, "debugger", "d1", CState::Created, 2)),
        ] {
            let p = plan(&pod, &obs(true, vec![app.clone(), debugger]));
            assert_eq!(ephemeral_starts(&p), ["shell"], "{policy}: debugger {what}");
            assert!(
                p.kill.is_empty() && p.start.is_empty() && p.remove_containers.is_empty(),
                "{policy} {what}: {p:?}"
            );
        }
    }
}

#[test]
fn an_ephemeral_container_from_an_earlier_sandbox_is_not_started_in_the_new_one() {
    let pod = pod(&["debugger"]);
    let mut old = exited(&pod, "debugger", "d1", 137, 2);
    old.sandbox_id = "sb-old".into();
    let p = plan(&pod, &obs(true, vec![ctr(&pod, "app", "a1", CState::Running, 5), old]));
    assert!(p.start_ephemeral.is_empty(), "{p:?}");
}

#[test]
fn ephemeral_containers_wait_for_a_running_sandbox() {
    let pod = pod(&["debugger"]);
    // A new pod: the sandbox is made first; ephemeral containers come at a later sync.
    let p = plan(&pod, &PodObs::default());
    assert_eq!(p.create_sandbox, Some(0));
    assert!(p.start_ephemeral.is_empty());
    // A dead sandbox being replaced.
    let p = plan(&pod, &obs(false, vec![exited(&pod, "app", "a1", 1, 1)]));
    assert!(p.create_sandbox.is_some() && p.start_ephemeral.is_empty(), "{p:?}");
    // A pod that must not restart and whose sandbox is gone.
    let never = pod_with("Never", &[], &["debugger"]);
    let p = plan(&never, &obs(false, vec![exited(&never, "app", "a1", 1, 1)]));
    assert!(p.start_ephemeral.is_empty(), "{p:?}");
}

#[test]
fn ephemeral_containers_start_while_init_containers_run_or_fail() {
    let pod = pod_with("Always", &["init"], &["debugger"]);
    let init_running = ContainerObs { init: true, ..ctr(&pod, "init", "i1", CState::Running, 1) };
    let p = plan(&pod, &obs(true, vec![init_running]));
    assert_eq!(ephemeral_starts(&p), ["debugger"]);
    assert!(p.start.is_empty());
    // A crash-looping init container: the debugger still starts (upstream starts ephemeral
    // containers before init containers, so a stuck pod can be debugged).
    let init_failed = ContainerObs { init: true, ..exited(&pod, "init", "i1", 1, 1) };
    let mut backoff = Keyed::container_restart();
    backoff.next(
        &crate::pod::plan::backoff_key(&pod, &pod.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0]),
        at(2),
        at(2),
    );
    let p = plan_pod(&pod, &obs(true, vec![init_failed]), &backoff, at(3));
    assert_eq!(ephemeral_starts(&p), ["debugger"]);
}

#[test]
fn a_pod_killed_by_its_plan_starts_no_ephemeral_container() {
    // restartPolicy Never and a failed init container: the pod is killed.
    let pod = pod_with("Never", &["init"], &["debugger"]);
    let init_failed = ContainerObs { init: true, ..exited(&pod, "init", "i1", 1, 1) };
    let p = plan(&pod, &obs(true, vec![init_failed]));
    assert!(p.kill_pod);
    assert!(p.start_ephemeral.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Target container and the shared process namespace.
// ---------------------------------------------------------------------------------------------

#[test]
fn the_target_is_the_newest_instance_of_the_target_container() {
    let pod = pod(&["debugger", "shell"]);
    let app_old = exited(&pod, "app", "a1", 1, 1);
    let app_new = ctr(&pod, "app", "a2", CState::Running, 5);
    let o = obs(true, vec![app_old, app_new]);
    assert_eq!(target_id(&pod, "debugger", &o), Ok(Some("a2".into())));
    assert_eq!(target_id(&pod, "shell", &o), Ok(None));
    assert_eq!(target_id(&pod, "debugger", &obs(true, vec![])), Err("unable to find target container app".into()));
}

fn config_with_pid(mode: api::NamespaceMode) -> api::ContainerConfig {
    api::ContainerConfig {
        linux: Some(api::LinuxContainerConfig {
            security_context: Some(api::LinuxContainerSecurityContext {
                namespace_options: Some(api::NamespaceOption { pid: mode as i32, ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pid_of(c: &api::ContainerConfig) -> (i32, &str) {
    let ns = c.linux.as_ref().unwrap().security_context.as_ref().unwrap().namespace_options.as_ref().unwrap();
    (ns.pid, ns.target_id.as_str())
}

#[test]
fn a_target_shares_its_pid_namespace_only_where_containers_have_their_own() {
    let mut own = config_with_pid(api::NamespaceMode::Container);
    crate::pod::runtime_config::share_target_pid(&mut own, "a2");
    assert_eq!(pid_of(&own), (api::NamespaceMode::Target as i32, "a2"));
    // shareProcessNamespace (POD) and hostPID (NODE): already shared, left as they are.
    for mode in [api::NamespaceMode::Pod, api::NamespaceMode::Node] {
        let mut c = config_with_pid(mode);
        crate::pod::runtime_config::share_target_pid(&mut c, "a2");
        assert_eq!(pid_of(&c), (mode as i32, ""));
    }
}

#[test]
fn an_ephemeral_container_runs_as_its_common_part_without_the_forbidden_fields() {
    let ec: EphemeralContainer = serde_json::from_value(json!({
        "name": "debugger", "image": "busybox", "command": ["sh"], "args": ["-c", "ps"], "stdin": true, "tty": true,
        "targetContainerName": "app", "env": [{"name": "A", "value": "1"}],
        "ports": [{"containerPort": 80}], "readinessProbe": {"exec": {"command": ["true"]}},
        "lifecycle": {"postStart": {"exec": {"command": ["true"]}}}, "resources": {"limits": {"cpu": "1"}},
    }))
    .unwrap();
    let c = as_container(&ec);
    assert_eq!((c.name.as_str(), c.image.as_deref()), ("debugger", Some("busybox")));
    assert_eq!(c.args, Some(vec!["-c".to_string(), "ps".to_string()]));
    assert_eq!((c.stdin, c.tty), (Some(true), Some(true)));
    assert_eq!(c.env.as_ref().map(Vec::len), Some(1));
    assert!(c.ports.is_none() && c.readiness_probe.is_none() && c.lifecycle.is_none() && c.resources.is_none());
}

// ---------------------------------------------------------------------------------------------
// ephemeralContainerStatuses.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_pod_without_ephemeral_containers_has_no_ephemeral_statuses() {
    let pod = pod(&[]);
    let c = Ctx::new();
    let st = status::compute(&pod, &obs(true, vec![ctr(&pod, "app", "a1", CState::Running, 1)]), &c.get());
    assert!(st.ephemeral_container_statuses.is_none());
}

#[test]
fn ephemeral_statuses_follow_the_instances_sorted_by_name_never_ready() {
    let pod = pod(&["shell", "debugger", "later"]);
    let c = Ctx::new();
    let o = obs(
        true,
        vec![
            ctr(&pod, "app", "a1", CState::Running, 1),
            exited(&pod, "debugger", "d1", 0, 2),
            ctr(&pod, "shell", "s1", CState::Running, 3),
        ],
    );
    let st = status::compute(&pod, &o, &c.get());
    let names: Vec<&str> = st.ephemeral_container_statuses.iter().flatten().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["debugger", "later", "shell"]);

    let d = eph_status(&st, "debugger");
    let t = state_of(d).terminated.as_ref().expect("terminated");
    assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
    assert_eq!(t.container_id.as_deref(), Some("containerd://d1"));
    assert_eq!(d.container_id.as_deref(), Some("containerd://d1"));
    assert_eq!((d.image.as_str(), d.image_id.as_str()), ("registry.local/busybox:1.36", "sha256:debugger"));
    assert_eq!((d.ready, d.started, d.restart_count), (false, None, 0));
    assert!(d.last_state.is_none());

    let s = eph_status(&st, "shell");
    assert!(state_of(s).running.as_ref().is_some_and(|r| r.started_at.is_some()));
    assert_eq!((s.ready, s.started), (false, None), "ephemeral containers are never ready");

    let l = eph_status(&st, "later");
    assert_eq!(state_of(l).waiting.as_ref().unwrap().reason.as_deref(), Some("ContainerCreating"));
    assert!(l.container_id.is_none());

    // Not counted in phase or readiness: the pod is Running and Ready with its app alone.
    assert_eq!(st.phase.as_deref(), Some("Running"));
    let ready = st.conditions.iter().flatten().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "True");
    assert_eq!(st.container_statuses.as_ref().map(Vec::len), Some(1));
}

#[test]
fn ephemeral_containers_do_not_change_a_pods_phase() {
    // A Never pod whose app succeeded is Succeeded even with a failed or running debugger.
    let never = pod_with("Never", &[], &["debugger", "shell"]);
    let c = Ctx::new();
    let o = obs(
        true,
        vec![
            exited(&never, "app", "a1", 0, 1),
            exited(&never, "debugger", "d1", 1, 2),
            ctr(&never, "shell", "s1", CState::Running, 3),
        ],
    );
    assert_eq!(status::compute(&never, &o, &c.get()).phase.as_deref(), Some("Succeeded"));
    // An ephemeral container waiting to start does not make a running pod Pending.
    let pod = pod(&["debugger"]);
    let o = obs(true, vec![ctr(&pod, "app", "a1", CState::Running, 1)]);
    assert_eq!(status::compute(&pod, &o, &c.get()).phase.as_deref(), Some("Running"));
}

#[test]
fn a_pod_with_init_containers_defaults_ephemeral_containers_to_pod_initializing() {
    let pod = pod_with("Always", &["init"], &["debugger"]);
    let c = Ctx::new();
    let st = status::compute(&pod, &obs(true, vec![]), &c.get());
    let d = eph_status(&st, "debugger");
    assert_eq!(state_of(d).waiting.as_ref().unwrap().reason.as_deref(), Some("PodInitializing"));
}

#[test]
fn a_failed_start_waits_with_its_reason() {
    let pod = pod(&["debugger"]);
    let mut c = Ctx::new();
    c.waiting.insert("debugger".into(), ("ErrImagePull".into(), "no such image".into()));
    let st = status::compute(&pod, &obs(true, vec![ctr(&pod, "app", "a1", CState::Running, 1)]), &c.get());
    let w = state_of(eph_status(&st, "debugger")).waiting.clone().unwrap();
    assert_eq!((w.reason.as_deref(), w.message.as_deref()), (Some("ErrImagePull"), Some("no such image")));
    // Once it ran (Never: not started again), the reason no longer shows.
    let never = pod_with("Never", &[], &["debugger"]);
    let o = obs(true, vec![ctr(&never, "app", "a1", CState::Running, 1), exited(&never, "debugger", "d1", 2, 2)]);
    let st = status::compute(&never, &o, &c.get());
    assert_eq!(state_of(eph_status(&st, "debugger")).terminated.as_ref().unwrap().exit_code, 2);
}

#[test]
fn a_terminated_status_stays_when_the_runtime_no_longer_has_the_container() {
    let pod = pod(&["debugger"]);
    let mut c = Ctx::new();
    let o = obs(true, vec![ctr(&pod, "app", "a1", CState::Running, 1), exited(&pod, "debugger", "d1", 0, 2)]);
    c.previous = Some(status::compute(&pod, &o, &c.get()));
    let gone = obs(true, vec![ctr(&pod, "app", "a1", CState::Running, 1)]);
    let st = status::compute(&pod, &gone, &c.get());
    let d = eph_status(&st, "debugger");
    assert_eq!(state_of(d).terminated.as_ref().unwrap().container_id.as_deref(), Some("containerd://d1"));
    assert_eq!(d.container_id.as_deref(), Some("containerd://d1"));
}

#[test]
fn a_running_ephemeral_container_that_cannot_be_found_ended_unknown() {
    let pod = pod(&["debugger"]);
    let mut c = Ctx::new();
    let o =
        obs(true, vec![ctr(&pod, "app", "a1", CState::Running, 1), ctr(&pod, "debugger", "d1", CState::Running, 2)]);
    c.previous = Some(status::compute(&pod, &o, &c.get()));
    let unknown =
        obs(true, vec![ctr(&pod, "app", "a1", CState::Running, 1), ctr(&pod, "debugger", "d1", CState::Unknown, 2)]);
    let st = status::compute(&pod, &unknown, &c.get());
    let d = eph_status(&st, "debugger");
    let t = state_of(d).terminated.as_ref().unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (137, Some("ContainerStatusUnknown")));
    assert_eq!(d.restart_count, 1);
}
