use super::*;
use crate::pod::observe::SandboxObs;
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// Fixtures. Time is fixed: `at(s)` is T0 + s seconds, `nanos(s)` the same instant as CRI nanos.
// ---------------------------------------------------------------------------------------------

const T0: u64 = 1_700_000_000;
const SB: &str = "sb-0";

fn at(s: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + s)
}

fn nanos(s: u64) -> i64 {
    ((T0 + s) * 1_000_000_000) as i64
}

fn pod(policy: &str, inits: &[&str], containers: &[&str]) -> Pod {
    let c = |n: &&str| json!({"name": n, "image": format!("registry.local/{n}:1.0")});
    let mut spec = json!({
        "restartPolicy": policy,
        "containers": containers.iter().map(c).collect::<Vec<_>>(),
    });
    if !inits.is_empty() {
        spec["initContainers"] = inits.iter().map(c).collect::<Vec<_>>().into();
    }
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "uid-1"},
        "spec": spec,
    }))
    .unwrap()
}

fn spec_of<'a>(pod: &'a Pod, name: &str) -> (&'a Container, bool) {
    let spec = pod.spec.as_ref().unwrap();
    if let Some(c) = spec.init_containers.iter().flatten().find(|c| c.name == name) {
        return (c, true);
    }
    (spec.containers.iter().find(|c| c.name == name).expect("container in spec"), false)
}

fn key(pod: &Pod, name: &str) -> String {
    backoff_key(pod, spec_of(pod, name).0)
}

fn sandbox(id: &str, attempt: u32, ready: bool, created: u64) -> SandboxObs {
    SandboxObs {
        id: id.into(),
        attempt,
        ready,
        created_at: nanos(created),
        ip: ready.then(|| "10.244.0.7".into()),
        additional_ips: vec![],
    }
}

/// A container instance in sandbox `SB`, created at `created`, with the spec's hash.
fn ctr(pod: &Pod, name: &str, id: &str, state: CState, restart_count: i32, created: u64) -> ContainerObs {
    let (spec, init) = spec_of(pod, name);
    ContainerObs {
        id: id.into(),
        name: name.into(),
        sandbox_id: SB.into(),
        state,
        hash: container_hash(spec),
        restart_count,
        init,
        created_at: nanos(created),
        started_at: if state == CState::Created { 0 } else { nanos(created) },
        finished_at: 0,
        exit_code: 0,
        reason: String::new(),
        message: String::new(),
        image: spec.image.clone().unwrap_or_default(),
        image_ref: format!("sha256:{name}"),
    }
}

fn running(pod: &Pod, name: &str, id: &str, restart_count: i32, created: u64) -> ContainerObs {
    ctr(pod, name, id, CState::Running, restart_count, created)
}

fn exited(pod: &Pod, name: &str, id: &str, restart_count: i32, code: i32, created: u64, finished: u64) -> ContainerObs {
    ContainerObs {
        finished_at: nanos(finished),
        exit_code: code,
        reason: if code == 0 { "Completed".into() } else { "Error".into() },
        ..ctr(pod, name, id, CState::Exited, restart_count, created)
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

fn ready_sandbox() -> Vec<SandboxObs> {
    vec![sandbox(SB, 0, true, 0)]
}

fn start(name: &str, init: bool, restart_count: i32) -> Start {
    Start { name: name.into(), init, restart_count, arm_backoff: None }
}

fn started(p: &Plan) -> Vec<(&str, bool, i32)> {
    p.start.iter().map(|s| (s.name.as_str(), s.init, s.restart_count)).collect()
}

fn no_backoff() -> Keyed {
    Keyed::container_restart()
}

fn crash_loop_message(delay: &str, container: &str) -> String {
    format!("back-off {delay} restarting failed container={container} pod=web_default(uid-1)")
}

// ---------------------------------------------------------------------------------------------
// A new pod.
// ---------------------------------------------------------------------------------------------

#[test]
fn new_pod_without_sandbox_creates_sandbox_attempt_zero_and_starts_every_app_container() {
    for policy in ["Always", "OnFailure", "Never"] {
        let pod = pod(policy, &[], &["app", "sidecar"]);
        let p = plan(&pod, &PodObs::default(), &no_backoff(), at(0));
        assert_eq!(
            p,
            Plan {
                create_sandbox: Some(0),
                start: vec![start("app", false, 0), start("sidecar", false, 0)],
                ..Default::default()
            },
            "policy {policy}"
        );
    }
}

#[test]
fn new_pod_with_init_containers_starts_only_the_first_init_container() {
    for policy in ["Always", "OnFailure", "Never"] {
        let pod = pod(policy, &["init-a", "init-b"], &["app", "sidecar"]);
        let p = plan(&pod, &PodObs::default(), &no_backoff(), at(0));
        assert_eq!(
            p,
            Plan { create_sandbox: Some(0), start: vec![start("init-a", true, 0)], ..Default::default() },
            "policy {policy}"
        );
    }
}

#[test]
fn pod_without_spec_gets_an_empty_plan() {
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "web", "uid": "u"}})).unwrap();
    assert_eq!(plan(&pod, &PodObs::default(), &no_backoff(), at(0)), Plan::default());
}

#[test]
fn ready_sandbox_without_containers_starts_every_app_container() {
    let pod = pod("Always", &[], &["app", "sidecar"]);
    let p = plan(&pod, &obs(ready_sandbox(), vec![]), &no_backoff(), at(0));
    assert_eq!(p, Plan { start: vec![start("app", false, 0), start("sidecar", false, 0)], ..Default::default() });
}

// ---------------------------------------------------------------------------------------------
// Init containers: strictly one at a time, in order.
// ---------------------------------------------------------------------------------------------

#[test]
fn init_containers_run_strictly_one_at_a_time_in_order() {
    let pod = pod("Always", &["init-a", "init-b"], &["app", "sidecar"]);
    let a_done = || exited(&pod, "init-a", "ia", 0, 0, 1, 2);
    let b_done = || exited(&pod, "init-b", "ib", 0, 0, 3, 4);
    type Case<'a> = (&'a str, Vec<ContainerObs>, Vec<(&'a str, bool, i32)>);
    let cases: Vec<Case> = vec![
        ("nothing yet: first init container", vec![], vec![("init-a", true, 0)]),
        ("first init running: nothing else", vec![running(&pod, "init-a", "ia", 0, 1)], vec![]),
        ("first init done: second init", vec![a_done()], vec![("init-b", true, 0)]),
        ("second init running: nothing else", vec![a_done(), running(&pod, "init-b", "ib", 0, 3)], vec![]),
        ("all init done: app containers", vec![a_done(), b_done()], vec![("app", false, 0), ("sidecar", false, 0)]),
    ];
    for (what, containers, want) in cases {
        let p = plan(&pod, &obs(ready_sandbox(), containers), &no_backoff(), at(10));
        assert_eq!(started(&p), want, "{what}");
        assert!(!p.kill_pod && p.create_sandbox.is_none() && p.kill.is_empty(), "{what}: {p:?}");
        assert!(p.start.iter().all(|s| s.arm_backoff.is_none()), "{what}");
        assert!(p.start.iter().filter(|s| s.init).count() <= 1, "{what}: at most one init container at a time");
    }
}

#[test]
fn the_last_init_container_that_ran_decides_what_comes_next() {
    // Upstream walks back from the last init container (completed ones may have been removed
    // from the runtime): init-b done means the pod is initialized, whatever init-a's instance
    // says; init-a done with init-b never run means init-b is next.
    let pod = pod("Always", &["init-a", "init-b"], &["app"]);
    let o = obs(ready_sandbox(), vec![running(&pod, "init-a", "ia2", 1, 5), exited(&pod, "init-b", "ib", 0, 0, 3, 4)]);
    let p = plan(&pod, &o, &no_backoff(), at(10));
    assert_eq!(started(&p), vec![("app", false, 0)]);
    assert!(p.kill.is_empty() && !p.kill_pod, "{p:?}");

    let o = obs(ready_sandbox(), vec![exited(&pod, "init-b", "ib", 0, 0, 3, 4)]);
    assert_eq!(started(&plan(&pod, &o, &no_backoff(), at(10))), vec![("app", false, 0)], "init-a removed");

    // An app container created or running: initialized before, no init container runs again.
    let o = obs(ready_sandbox(), vec![running(&pod, "app", "a", 0, 5)]);
    assert_eq!(plan(&pod, &o, &no_backoff(), at(10)), Plan::default());
}

#[test]
fn failed_init_container_under_never_kills_the_pod_and_starts_nothing() {
    let pod = pod("Never", &["init-a", "init-b"], &["app"]);
    let o = obs(ready_sandbox(), vec![exited(&pod, "init-a", "ia", 0, 1, 1, 2)]);
    let p = plan(&pod, &o, &no_backoff(), at(10));
    assert_eq!(p, Plan { kill_pod: true, ..Default::default() });
}

#[test]
fn failed_init_container_restarts_under_always_and_on_failure_and_arms_backoff() {
    for policy in ["Always", "OnFailure"] {
        let pod = pod(policy, &["init-a", "init-b"], &["app"]);
        let o = obs(ready_sandbox(), vec![exited(&pod, "init-a", "ia", 0, 1, 1, 2)]);
        let p = plan(&pod, &o, &no_backoff(), at(10));
        assert_eq!(
            p.start,
            vec![Start {
                name: "init-a".into(),
                init: true,
                restart_count: 1,
                arm_backoff: Some((key(&pod, "init-a"), at(2))),
            }],
            "policy {policy}"
        );
        assert!(!p.kill_pod && p.create_sandbox.is_none() && p.waiting.is_empty(), "policy {policy}: {p:?}");
    }
}

#[test]
fn failed_init_container_within_backoff_waits_in_crash_loop_back_off() {
    let pod = pod("OnFailure", &["init-a"], &["app"]);
    let mut backoff = no_backoff();
    backoff.next(&key(&pod, "init-a"), at(2), at(2));
    let o =
        obs(ready_sandbox(), vec![exited(&pod, "init-a", "ia2", 1, 1, 3, 4), exited(&pod, "init-a", "ia", 0, 1, 1, 2)]);
    let p = plan(&pod, &o, &backoff, at(5));
    assert!(p.start.is_empty(), "{p:?}");
    assert_eq!(
        p.waiting,
        vec![Waiting {
            name: "init-a".into(),
            reason: "CrashLoopBackOff".into(),
            message: crash_loop_message("10s", "init-a"),
        }]
    );
    assert_eq!(p.retry_at, Some(at(14)));
}

#[test]
fn created_init_container_is_removed_and_started_again() {
    let pod = pod("Always", &["init-a"], &["app"]);
    let o = obs(ready_sandbox(), vec![ctr(&pod, "init-a", "ia", CState::Created, 0, 1)]);
    let p = plan(&pod, &o, &no_backoff(), at(10));
    assert_eq!(p.remove_containers, vec!["ia".to_string()]);
    assert!(p.kill.is_empty());
    assert_eq!(started(&p), vec![("init-a", true, 1)]);
}

#[test]
fn unknown_init_container_is_killed_and_started_again() {
    let pod = pod("Always", &["init-a"], &["app"]);
    let o = obs(ready_sandbox(), vec![ctr(&pod, "init-a", "ia", CState::Unknown, 0, 1)]);
    let p = plan(&pod, &o, &no_backoff(), at(10));
    assert_eq!(p.kill.iter().map(|k| (k.id.as_str(), k.name.as_str())).collect::<Vec<_>>(), vec![("ia", "init-a")]);
    assert_eq!(started(&p), vec![("init-a", true, 1)]);
}

#[test]
fn init_containers_of_an_older_sandbox_do_not_count_in_a_new_one() {
    // Upstream purges init containers when it recreates the sandbox: they all run again.
    let pod = pod("Always", &["init-a"], &["app"]);
    let o = obs(
        vec![sandbox("sb-1", 1, true, 20), sandbox(SB, 0, false, 0)],
        vec![exited(&pod, "init-a", "ia", 0, 0, 1, 2), exited(&pod, "app", "a", 0, 137, 3, 15)],
    );
    let p = plan(&pod, &o, &no_backoff(), at(21));
    assert_eq!(started(&p), vec![("init-a", true, 1)]);
}

// ---------------------------------------------------------------------------------------------
// App containers: restart policy, restart count, backoff.
// ---------------------------------------------------------------------------------------------

#[test]
fn exited_app_container_restarts_according_to_restart_policy() {
    let cases = [
        ("Always", 0, true),
        ("Always", 1, true),
        ("OnFailure", 0, false),
        ("OnFailure", 1, true),
        ("Never", 0, false),
        ("Never", 1, false),
    ];
    for (policy, code, restarts) in cases {
        let pod = pod(policy, &[], &["app", "sidecar"]);
        let o =
            obs(ready_sandbox(), vec![exited(&pod, "app", "a", 0, code, 1, 5), running(&pod, "sidecar", "s", 0, 1)]);
        let p = plan(&pod, &o, &no_backoff(), at(6));
        let want = if restarts {
            vec![Start {
                name: "app".into(),
                init: false,
                restart_count: 1,
                arm_backoff: Some((key(&pod, "app"), at(5))),
            }]
        } else {
            vec![]
        };
        assert_eq!(p.start, want, "policy {policy} exit {code}");
        assert!(!p.kill_pod && p.kill.is_empty() && p.create_sandbox.is_none(), "policy {policy} exit {code}: {p:?}");
        assert!(p.waiting.is_empty() && p.retry_at.is_none(), "policy {policy} exit {code}: {p:?}");
    }
}

#[test]
fn restart_count_is_one_more_than_the_highest_previous_instance() {
    let pod = pod("Always", &[], &["app"]);
    let o = obs(
        ready_sandbox(),
        vec![
            exited(&pod, "app", "a3", 3, 1, 30, 31),
            exited(&pod, "app", "a2", 2, 1, 20, 21),
            exited(&pod, "app", "a1", 1, 1, 10, 11),
        ],
    );
    let p = plan(&pod, &o, &no_backoff(), at(1000));
    assert_eq!(started(&p), vec![("app", false, 4)]);
}

#[test]
fn crashed_container_waits_out_backoff_then_restarts() {
    let pod = pod("Always", &[], &["app"]);
    let k = key(&pod, "app");
    let mut backoff = no_backoff();
    // The executor's side of a start: arm the backoff it was asked to.
    let execute = |p: &Plan, backoff: &mut Keyed| {
        for s in &p.start {
            if let Some((key, t)) = &s.arm_backoff {
                backoff.next(key, *t, *t);
            }
        }
    };

    // First crash: restart at once, arming the backoff from the crash's finishedAt.
    let first = exited(&pod, "app", "a0", 0, 1, 1, 10);
    let p = plan(&pod, &obs(ready_sandbox(), vec![first.clone()]), &backoff, at(11));
    assert_eq!(
        p.start,
        vec![Start { name: "app".into(), init: false, restart_count: 1, arm_backoff: Some((k.clone(), at(10))) }]
    );
    assert!(p.waiting.is_empty() && p.retry_at.is_none());
    execute(&p, &mut backoff);

    // Second crash 5 s later, within the armed 10 s: wait, with upstream's message.
    let second = exited(&pod, "app", "a1", 1, 1, 11, 15);
    let o = obs(ready_sandbox(), vec![second.clone(), first.clone()]);
    for now in [16, 20, 24] {
        let p = plan(&pod, &o, &backoff, at(now));
        assert!(p.start.is_empty(), "t={now}: {p:?}");
        assert_eq!(
            p.waiting,
            vec![Waiting {
                name: "app".into(),
                reason: "CrashLoopBackOff".into(),
                message: crash_loop_message("10s", "app"),
            }],
            "t={now}"
        );
        assert_eq!(p.retry_at, Some(at(25)), "t={now}: retry at finishedAt + delay");
        assert!(p.is_noop(), "t={now}: waiting alone takes no runtime action");
    }

    // Once the delay has passed: restart, arming the next (doubled) delay.
    let p = plan(&pod, &o, &backoff, at(25));
    assert_eq!(
        p.start,
        vec![Start { name: "app".into(), init: false, restart_count: 2, arm_backoff: Some((k.clone(), at(15))) }]
    );
    assert!(p.waiting.is_empty() && p.retry_at.is_none());
    execute(&p, &mut backoff);

    // Third crash: the delay has doubled.
    let third = exited(&pod, "app", "a2", 2, 1, 25, 30);
    let o = obs(ready_sandbox(), vec![third, second, first]);
    let p = plan(&pod, &o, &backoff, at(31));
    assert!(p.start.is_empty());
    assert_eq!(p.waiting[0].message, crash_loop_message("20s", "app"));
    assert_eq!(p.retry_at, Some(at(50)));
    assert_eq!(started(&plan(&pod, &o, &backoff, at(50))), vec![("app", false, 3)]);
}

#[test]
fn crash_long_after_the_last_one_restarts_at_once() {
    // An entry idle for more than 2 × 300 s is forgotten: the next failure is a "first" one.
    let pod = pod("Always", &[], &["app"]);
    let mut backoff = no_backoff();
    backoff.next(&key(&pod, "app"), at(10), at(10));
    let o = obs(ready_sandbox(), vec![exited(&pod, "app", "a1", 1, 1, 11, 700)]);
    let p = plan(&pod, &o, &backoff, at(701));
    assert_eq!(started(&p), vec![("app", false, 2)]);
    assert!(p.waiting.is_empty());
}

#[test]
fn crash_loop_message_shows_the_capped_delay_in_go_format() {
    let pod = pod("Always", &[], &["app"]);
    let mut backoff = no_backoff();
    let k = key(&pod, "app");
    let mut t = 0;
    for _ in 0..6 {
        backoff.next(&k, at(t), at(t));
        t += 30;
    }
    assert_eq!(backoff.current(&k), Some(Duration::from_secs(300)));
    let o = obs(ready_sandbox(), vec![exited(&pod, "app", "a", 6, 1, t, t + 1)]);
    let p = plan(&pod, &o, &backoff, at(t + 2));
    assert_eq!(p.waiting[0].message, crash_loop_message("5m0s", "app"));
    assert_eq!(p.retry_at, Some(at(t + 1 + 300)));
}

#[test]
fn retry_at_is_the_earliest_end_of_several_backoffs() {
    let pod = pod("Always", &[], &["a", "b", "c"]);
    let mut backoff = no_backoff();
    backoff.next(&key(&pod, "a"), at(0), at(0));
    backoff.next(&key(&pod, "b"), at(0), at(0));
    backoff.next(&key(&pod, "b"), at(1), at(1)); // b: 20 s
    let o = obs(
        ready_sandbox(),
        vec![exited(&pod, "a", "a1", 1, 1, 2, 8), exited(&pod, "b", "b1", 1, 1, 2, 3), running(&pod, "c", "c0", 0, 1)],
    );
    let p = plan(&pod, &o, &backoff, at(9));
    assert!(p.start.is_empty(), "{p:?}");
    let waiting: Vec<_> = p.waiting.iter().map(|w| (w.name.as_str(), w.message.as_str())).collect();
    let (ma, mb) = (crash_loop_message("10s", "a"), crash_loop_message("20s", "b"));
    assert_eq!(waiting, vec![("a", ma.as_str()), ("b", mb.as_str())]);
    // a may retry at 8 + 10 = 18, b at 3 + 20 = 23.
    assert_eq!(p.retry_at, Some(at(18)));
}

#[test]
fn container_in_backoff_does_not_hold_back_the_others() {
    let pod = pod("Always", &[], &["a", "b"]);
    let mut backoff = no_backoff();
    backoff.next(&key(&pod, "a"), at(0), at(0));
    let o = obs(ready_sandbox(), vec![exited(&pod, "a", "a1", 1, 1, 2, 5), exited(&pod, "b", "b0", 0, 1, 1, 4)]);
    let p = plan(&pod, &o, &backoff, at(6));
    assert_eq!(p.waiting.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(), vec!["a"]);
    assert_eq!(
        p.start,
        vec![Start { name: "b".into(), init: false, restart_count: 1, arm_backoff: Some((key(&pod, "b"), at(4))) }]
    );
}

#[test]
fn backoff_key_has_upstream_format() {
    let pod = pod("Always", &[], &["app"]);
    let c = spec_of(&pod, "app").0;
    assert_eq!(backoff_key(&pod, c), format!("web_default_uid-1_app_{:x}", container_hash(c)));
}

#[test]
fn changed_spec_gets_a_fresh_backoff_key() {
    let a = pod("Always", &[], &["app"]);
    let mut b = a.clone();
    b.spec.as_mut().unwrap().containers[0].image = Some("registry.local/app:2.0".into());
    assert_ne!(key(&a, "app"), key(&b, "app"));
}

#[test]
fn go_duration_formats_like_go() {
    let cases = [(0, "0s"), (10, "10s"), (59, "59s"), (60, "1m0s"), (80, "1m20s"), (300, "5m0s"), (3661, "1h1m1s")];
    for (secs, want) in cases {
        assert_eq!(go_duration(Duration::from_secs(secs)), want);
    }
}

// ---------------------------------------------------------------------------------------------
// Running containers.
// ---------------------------------------------------------------------------------------------

#[test]
fn running_container_whose_spec_changed_is_killed_and_started_again_under_every_policy() {
    for policy in ["Always", "OnFailure", "Never"] {
        let pod = pod(policy, &[], &["app", "sidecar"]);
        let mut old = running(&pod, "app", "a0", 2, 1);
        old.hash ^= 1;
        let o = obs(ready_sandbox(), vec![old, running(&pod, "sidecar", "s0", 0, 1)]);
        let p = plan(&pod, &o, &no_backoff(), at(10));
        assert_eq!(p.kill.iter().map(|k| (k.id.as_str(), k.name.as_str())).collect::<Vec<_>>(), vec![("a0", "app")]);
        assert_eq!(p.start, vec![start("app", false, 3)], "policy {policy}");
        assert!(!p.kill_pod && p.create_sandbox.is_none(), "policy {policy}");
    }
}

#[test]
fn created_app_container_is_removed_and_started_again() {
    let pod = pod("Always", &[], &["app"]);
    let o = obs(ready_sandbox(), vec![ctr(&pod, "app", "a0", CState::Created, 0, 1)]);
    let p = plan(&pod, &o, &no_backoff(), at(10));
    assert_eq!(p.remove_containers, vec!["a0".to_string()]);
    assert!(p.kill.is_empty());
    assert_eq!(p.start, vec![start("app", false, 1)]);
}

#[test]
fn unknown_app_container_is_killed_and_started_again() {
    let pod = pod("Never", &[], &["app"]);
    let o = obs(ready_sandbox(), vec![ctr(&pod, "app", "a0", CState::Unknown, 0, 1)]);
    let p = plan(&pod, &o, &no_backoff(), at(10));
    assert_eq!(p.kill.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), vec!["a0"]);
    assert_eq!(p.start, vec![start("app", false, 1)]);
}

#[test]
fn running_pod_with_everything_up_is_a_noop() {
    let pod = pod("Always", &["init-a"], &["app", "sidecar"]);
    let o = obs(
        ready_sandbox(),
        vec![
            exited(&pod, "init-a", "ia", 0, 0, 1, 2),
            running(&pod, "app", "a", 0, 3),
            running(&pod, "sidecar", "s", 0, 3),
        ],
    );
    let p = plan(&pod, &o, &no_backoff(), at(100));
    assert_eq!(p, Plan::default());
    assert!(p.is_noop());
}

#[test]
fn finished_never_pod_with_live_sandbox_starts_nothing() {
    let pod = pod("Never", &[], &["app", "sidecar"]);
    let o = obs(ready_sandbox(), vec![exited(&pod, "app", "a", 0, 0, 1, 5), exited(&pod, "sidecar", "s", 0, 1, 1, 6)]);
    let p = plan(&pod, &o, &no_backoff(), at(10));
    assert!(p.start.is_empty() && p.kill.is_empty() && p.create_sandbox.is_none(), "{p:?}");
}

// ---------------------------------------------------------------------------------------------
// Sandbox changes.
// ---------------------------------------------------------------------------------------------

#[test]
fn dead_sandbox_under_never_with_containers_gets_no_new_sandbox() {
    let pod = pod("Never", &[], &["app"]);
    let o = obs(vec![sandbox(SB, 0, false, 0)], vec![exited(&pod, "app", "a", 0, 137, 1, 5)]);
    let p = plan(&pod, &o, &no_backoff(), at(10));
    assert_eq!(p, Plan::default());

    // A container still running in it is stopped, but nothing is created.
    let o = obs(vec![sandbox(SB, 0, false, 0)], vec![running(&pod, "app", "a", 0, 1)]);
    let p = plan(&pod, &o, &no_backoff(), at(10));
    assert_eq!(p, Plan { kill_pod: true, ..Default::default() });
}

#[test]
fn dead_sandbox_under_never_before_any_container_existed_is_created_again() {
    let pod = pod("Never", &[], &["app"]);
    let o = obs(vec![sandbox(SB, 0, false, 0)], vec![]);
    let p = plan(&pod, &o, &no_backoff(), at(10));
    assert_eq!(p, Plan { create_sandbox: Some(1), start: vec![start("app", false, 0)], ..Default::default() });
}

#[test]
fn dead_sandbox_under_on_failure_with_all_containers_succeeded_gets_no_new_sandbox() {
    let pod = pod("OnFailure", &[], &["app", "sidecar"]);
    let o = obs(
        vec![sandbox(SB, 0, false, 0)],
        vec![exited(&pod, "app", "a", 0, 0, 1, 5), exited(&pod, "sidecar", "s", 0, 0, 1, 6)],
    );
    let p = plan(&pod, &o, &no_backoff(), at(10));
    assert_eq!(p, Plan::default());
}

#[test]
fn dead_sandbox_under_on_failure_restarts_only_the_containers_that_did_not_succeed() {
    let pod = pod("OnFailure", &[], &["app", "sidecar"]);
    let o = obs(
        vec![sandbox(SB, 3, false, 0)],
        vec![exited(&pod, "app", "a", 0, 0, 1, 5), exited(&pod, "sidecar", "s", 2, 1, 1, 6)],
    );
    let p = plan(&pod, &o, &no_backoff(), at(10));
    assert_eq!(p.create_sandbox, Some(4));
    assert_eq!(started(&p), vec![("sidecar", false, 3)]);
}

#[test]
fn dead_sandbox_under_always_gets_a_new_sandbox_with_the_next_attempt() {
    let pod = pod("Always", &[], &["app", "sidecar"]);
    let o = obs(
        vec![sandbox(SB, 2, false, 0)],
        vec![exited(&pod, "app", "a", 4, 0, 1, 5), exited(&pod, "sidecar", "s", 0, 137, 1, 6)],
    );
    let p = plan(&pod, &o, &no_backoff(), at(10));
    assert_eq!(p.create_sandbox, Some(3));
    assert!(!p.kill_pod, "nothing left running");
    assert_eq!(started(&p), vec![("app", false, 5), ("sidecar", false, 1)]);
}

#[test]
fn dead_sandbox_with_running_containers_kills_the_pod_before_recreating_it() {
    let pod = pod("Always", &[], &["app"]);
    let o = obs(vec![sandbox(SB, 0, false, 0)], vec![running(&pod, "app", "a", 0, 1)]);
    let p = plan(&pod, &o, &no_backoff(), at(10));
    assert!(p.kill_pod);
    assert_eq!(p.create_sandbox, Some(1));
    assert_eq!(started(&p), vec![("app", false, 1)]);
}

#[test]
fn dead_sandbox_with_init_containers_starts_again_from_the_first_init_container() {
    for policy in ["Always", "OnFailure"] {
        let pod = pod(policy, &["init-a", "init-b"], &["app"]);
        let o = obs(
            vec![sandbox(SB, 0, false, 0)],
            vec![
                exited(&pod, "init-a", "ia", 0, 0, 1, 2),
                exited(&pod, "init-b", "ib", 0, 0, 3, 4),
                exited(&pod, "app", "a", 0, 1, 5, 9),
            ],
        );
        let p = plan(&pod, &o, &no_backoff(), at(10));
        assert_eq!(p.create_sandbox, Some(1), "policy {policy}");
        assert_eq!(started(&p), vec![("init-a", true, 1)], "policy {policy}");
    }
}

#[test]
fn two_ready_sandboxes_are_replaced_by_a_new_one() {
    let pod = pod("Always", &[], &["app"]);
    let o = obs(
        vec![sandbox("sb-1", 1, true, 10), sandbox(SB, 0, true, 0)],
        vec![in_sandbox(running(&pod, "app", "a1", 1, 11), "sb-1")],
    );
    let p = plan(&pod, &o, &no_backoff(), at(20));
    assert!(p.kill_pod);
    assert_eq!(p.create_sandbox, Some(2));
    assert_eq!(started(&p), vec![("app", false, 2)]);
}

// ---------------------------------------------------------------------------------------------
// Garbage collection of dead instances.
// ---------------------------------------------------------------------------------------------

#[test]
fn gc_keeps_the_two_newest_instances_per_container_and_removes_older_exited_ones() {
    let pod = pod("Always", &[], &["app", "sidecar"]);
    let o = obs(
        ready_sandbox(),
        vec![
            running(&pod, "app", "a4", 4, 40),
            exited(&pod, "app", "a3", 3, 1, 30, 31),
            exited(&pod, "app", "a2", 2, 1, 20, 21),
            exited(&pod, "app", "a1", 1, 1, 10, 11),
            running(&pod, "sidecar", "s1", 1, 12),
            exited(&pod, "sidecar", "s0", 0, 1, 1, 2),
        ],
    );
    let p = plan(&pod, &o, &no_backoff(), at(100));
    assert!(p.start.is_empty() && p.kill.is_empty());
    assert_eq!(p.remove_containers, vec!["a2".to_string(), "a1".to_string()]);

    // All exited: the two newest stay (status and lastState), the rest go.
    let o = obs(
        ready_sandbox(),
        vec![
            exited(&pod, "app", "a3", 3, 0, 30, 31),
            exited(&pod, "app", "a2", 2, 1, 20, 21),
            exited(&pod, "app", "a1", 1, 1, 10, 11),
            exited(&pod, "app", "a0", 0, 1, 1, 2),
            running(&pod, "sidecar", "s0", 0, 1),
        ],
    );
    let mut backoff = no_backoff();
    backoff.next(&key(&pod, "app"), at(30), at(30));
    let p = plan(&pod, &o, &backoff, at(32));
    assert_eq!(p.remove_containers, vec!["a1".to_string(), "a0".to_string()]);
}

#[test]
fn gc_removes_dead_sandboxes_that_hold_no_kept_container() {
    let pod = pod("Always", &[], &["app"]);
    let o = obs(
        vec![sandbox("sb-2", 2, true, 200), sandbox("sb-1", 1, false, 100), sandbox(SB, 0, false, 0)],
        vec![
            in_sandbox(running(&pod, "app", "a2", 2, 201), "sb-2"),
            in_sandbox(exited(&pod, "app", "a1", 1, 137, 101, 150), "sb-1"),
            in_sandbox(exited(&pod, "app", "a0", 0, 137, 1, 50), SB),
        ],
    );
    let p = plan(&pod, &o, &no_backoff(), at(300));
    assert_eq!(p.remove_containers, vec!["a0".to_string()]);
    assert_eq!(p.remove_sandboxes, vec![SB.to_string()]);
}

// ---------------------------------------------------------------------------------------------
// Divergences from upstream found while writing these tests.
// ---------------------------------------------------------------------------------------------

#[test]
fn on_failure_container_that_succeeded_in_an_earlier_sandbox_is_not_run_again() {
    let pod = pod("OnFailure", &[], &["app", "sidecar"]);
    // Sandbox 0 died after app had succeeded and sidecar had failed; sandbox 1 restarted sidecar only.
    let o = obs(
        vec![sandbox("sb-1", 1, true, 20), sandbox(SB, 0, false, 0)],
        vec![
            in_sandbox(running(&pod, "sidecar", "s1", 1, 21), "sb-1"),
            exited(&pod, "sidecar", "s0", 0, 1, 1, 10),
            exited(&pod, "app", "a0", 0, 0, 1, 5),
        ],
    );
    let p = plan(&pod, &o, &no_backoff(), at(30));
    assert!(p.start.is_empty(), "app already succeeded and must not run again: {p:?}");
}

#[test]
fn containers_started_in_a_new_sandbox_honour_crash_backoff() {
    let pod = pod("Always", &[], &["app"]);
    let mut backoff = no_backoff();
    backoff.next(&key(&pod, "app"), at(0), at(0));
    let crashed = exited(&pod, "app", "a1", 1, 1, 1, 5);
    let want_waiting = vec![Waiting {
        name: "app".into(),
        reason: "CrashLoopBackOff".into(),
        message: crash_loop_message("10s", "app"),
    }];

    // The sandbox died with the container: a new sandbox, but the container waits out its backoff.
    let o = obs(vec![sandbox(SB, 0, false, 0)], vec![crashed.clone()]);
    let p = plan(&pod, &o, &backoff, at(6));
    assert_eq!(p.create_sandbox, Some(1));
    assert!(p.start.is_empty(), "{p:?}");
    assert_eq!(p.waiting, want_waiting);
    assert_eq!(p.retry_at, Some(at(15)));

    // Next sync, new sandbox ready, the only instance in the old one: still backing off.
    let o = obs(vec![sandbox("sb-1", 1, true, 6), sandbox(SB, 0, false, 0)], vec![crashed.clone()]);
    let p = plan(&pod, &o, &backoff, at(7));
    assert!(p.start.is_empty(), "{p:?}");
    assert_eq!(p.waiting, want_waiting);

    // And a restart after the delay arms the next delay.
    let p = plan(&pod, &o, &backoff, at(15));
    assert_eq!(
        p.start,
        vec![Start { name: "app".into(), init: false, restart_count: 2, arm_backoff: Some((key(&pod, "app"), at(5))) }]
    );
}

// ---------------------------------------------------------------------------------------------
// Sidecars: init containers with restartPolicy Always.
// ---------------------------------------------------------------------------------------------

/// `pod` with the named init containers made sidecars.
fn with_sidecars(mut pod: Pod, names: &[&str]) -> Pod {
    for c in pod.spec.as_mut().unwrap().init_containers.iter_mut().flatten() {
        if names.contains(&c.name.as_str()) {
            c.restart_policy = Some("Always".into());
        }
    }
    pod
}

#[test]
fn a_started_sidecar_lets_the_next_init_container_start_and_keeps_running() {
    let pod = with_sidecars(pod("Always", &["side", "init-b"], &["app"]), &["side"]);
    let side = || running(&pod, "side", "s", 0, 1);
    let b_done = || exited(&pod, "init-b", "ib", 0, 0, 3, 4);
    type Case<'a> = (&'a str, Vec<ContainerObs>, Vec<(&'a str, bool, i32)>);
    let cases: Vec<Case> = vec![
        ("nothing yet: the sidecar", vec![], vec![("side", true, 0)]),
        ("sidecar running: the next init container", vec![side()], vec![("init-b", true, 0)]),
        ("init-b running beside it: nothing", vec![side(), running(&pod, "init-b", "ib", 0, 3)], vec![]),
        ("init-b done: the app", vec![side(), b_done()], vec![("app", false, 0)]),
        ("everything up: nothing", vec![side(), b_done(), running(&pod, "app", "a", 0, 5)], vec![]),
    ];
    for (what, containers, want) in cases {
        let p = plan(&pod, &obs(ready_sandbox(), containers), &no_backoff(), at(10));
        assert_eq!(started(&p), want, "{what}");
        assert!(!p.kill_pod && p.kill.is_empty() && p.create_sandbox.is_none(), "{what}: {p:?}");
    }
}

#[test]
fn a_sidecar_as_the_last_init_container_is_enough_for_the_app_to_start() {
    let pod = with_sidecars(pod("Never", &["init-a", "side"], &["app"]), &["side"]);
    let o = obs(ready_sandbox(), vec![exited(&pod, "init-a", "ia", 0, 0, 1, 2), running(&pod, "side", "s", 0, 3)]);
    assert_eq!(started(&plan(&pod, &o, &no_backoff(), at(10))), vec![("app", false, 0)]);
}

#[test]
fn a_sidecar_with_a_startup_probe_holds_the_next_init_container_until_it_passes() {
    let mut pod = with_sidecars(pod("Always", &["side", "init-b"], &["app"]), &["side"]);
    let probe = serde_json::from_value(json!({"exec": {"command": ["true"]}})).unwrap();
    pod.spec.as_mut().unwrap().init_containers.as_mut().unwrap()[0].startup_probe = Some(probe);
    let o = obs(ready_sandbox(), vec![running(&pod, "side", "s", 0, 1)]);
    // No result yet (or a failing one): wait.
    let p = plan_probed(&pod, &o, &no_backoff(), at(10), &|_| false);
    assert!(p.is_noop() && p.start.is_empty(), "{p:?}");
    // Started: the next one goes, asked about that very instance.
    let p = plan_probed(&pod, &o, &no_backoff(), at(10), &|id| id == "s");
    assert_eq!(started(&p), vec![("init-b", true, 0)]);
}

#[test]
fn an_exited_sidecar_restarts_with_backoff_under_every_policy_while_the_app_runs() {
    for policy in ["Always", "OnFailure", "Never"] {
        for code in [0, 1] {
            let pod = with_sidecars(pod(policy, &["side"], &["app"]), &["side"]);
            let o =
                obs(ready_sandbox(), vec![exited(&pod, "side", "s", 0, code, 1, 20), running(&pod, "app", "a", 0, 2)]);
            let p = plan(&pod, &o, &no_backoff(), at(21));
            assert_eq!(
                p.start,
                vec![Start {
                    name: "side".into(),
                    init: true,
                    restart_count: 1,
                    arm_backoff: Some((key(&pod, "side"), at(20))),
                }],
                "{policy} exit {code}"
            );
            assert!(!p.kill_pod && p.kill.is_empty(), "{policy} exit {code}: the app keeps running: {p:?}");

            // Crashed again within the backoff: it waits, the app still runs.
            let mut backoff = no_backoff();
            backoff.next(&key(&pod, "side"), at(20), at(21));
            let o = obs(
                ready_sandbox(),
                vec![
                    exited(&pod, "side", "s2", 1, code, 22, 25),
                    exited(&pod, "side", "s", 0, code, 1, 20),
                    running(&pod, "app", "a", 0, 2),
                ],
            );
            let p = plan(&pod, &o, &backoff, at(26));
            assert!(p.start.is_empty() && !p.kill_pod, "{policy}: {p:?}");
            assert_eq!(p.waiting[0].reason, "CrashLoopBackOff");
            assert_eq!(p.waiting[0].message, crash_loop_message("10s", "side"));
            assert_eq!(p.retry_at, Some(at(35)));
        }
    }
}

#[test]
fn sidecars_are_restarted_in_spec_order_and_a_removed_one_is_started_again() {
    let pod = with_sidecars(pod("Always", &["side-a", "init", "side-b"], &["app"]), &["side-a", "side-b"]);
    let o = obs(
        ready_sandbox(),
        vec![
            exited(&pod, "side-a", "sa", 0, 1, 1, 20),
            exited(&pod, "init", "i", 0, 0, 2, 3),
            running(&pod, "app", "a", 0, 5),
        ],
    );
    let p = plan(&pod, &o, &no_backoff(), at(21));
    // side-b's instance is gone (removed): started again; the regular init container is not.
    assert_eq!(started(&p), vec![("side-a", true, 1), ("side-b", true, 0)]);
}

#[test]
fn a_sidecar_whose_spec_changed_is_killed_and_started_again() {
    let pod = with_sidecars(pod("Always", &["side"], &["app"]), &["side"]);
    let mut side = running(&pod, "side", "s", 0, 1);
    side.hash ^= 1;
    let o = obs(ready_sandbox(), vec![side, running(&pod, "app", "a", 0, 2)]);
    let p = plan(&pod, &o, &no_backoff(), at(10));
    assert_eq!(p.kill.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), vec!["s"]);
    assert_eq!(started(&p), vec![("side", true, 1)]);
}

#[test]
fn app_containers_done_under_never_or_on_failure_kill_the_pod_with_its_sidecars() {
    for policy in ["Never", "OnFailure"] {
        let pod = with_sidecars(pod(policy, &["side"], &["app"]), &["side"]);
        let o = obs(ready_sandbox(), vec![running(&pod, "side", "s", 0, 1), exited(&pod, "app", "a", 0, 0, 2, 9)]);
        let p = plan(&pod, &o, &no_backoff(), at(10));
        assert_eq!(p, Plan { kill_pod: true, ..Default::default() }, "{policy}");
        // (With the sidecar stopped as well the pod's phase is terminal: no plan is made.)
    }
    // Under OnFailure a failed app container restarts, and the sidecar keeps running.
    let pod = with_sidecars(pod("OnFailure", &["side"], &["app"]), &["side"]);
    let o = obs(ready_sandbox(), vec![running(&pod, "side", "s", 0, 1), exited(&pod, "app", "a", 0, 1, 2, 9)]);
    let p = plan(&pod, &o, &no_backoff(), at(10));
    assert!(!p.kill_pod, "{p:?}");
    assert_eq!(started(&p), vec![("app", false, 1)]);
}

#[test]
fn a_regular_init_container_failing_under_never_kills_the_pod_with_its_sidecar() {
    let pod = with_sidecars(pod("Never", &["side", "init-b"], &["app"]), &["side"]);
    let o = obs(ready_sandbox(), vec![running(&pod, "side", "s", 0, 1), exited(&pod, "init-b", "ib", 0, 2, 2, 3)]);
    let p = plan(&pod, &o, &no_backoff(), at(10));
    assert_eq!(p, Plan { kill_pod: true, ..Default::default() });
}

// ---------------------------------------------------------------------------------------------
// Sandbox changes (upstream's PodSandboxChanged and the createPodSandbox branch).
// ---------------------------------------------------------------------------------------------

#[test]
fn a_new_sandbox_purges_every_old_init_container_instance() {
    let pod = with_sidecars(pod("Always", &["init-a", "side"], &["app"]), &["side"]);
    let o = obs(
        vec![sandbox(SB, 0, false, 0)],
        vec![
            exited(&pod, "init-a", "ia0", 0, 1, 1, 2),
            exited(&pod, "init-a", "ia1", 1, 0, 3, 4),
            exited(&pod, "side", "s", 0, 137, 5, 20),
            exited(&pod, "app", "a", 0, 137, 6, 20),
        ],
    );
    let p = plan(&pod, &o, &no_backoff(), at(30));
    assert_eq!(p.create_sandbox, Some(1));
    let mut purged = p.remove_containers.clone();
    purged.sort();
    assert_eq!(purged, vec!["ia0", "ia1", "s"], "every init container instance, the app's kept");
    assert_eq!(started(&p), vec![("init-a", true, 2)]);
}

#[test]
fn dead_sandbox_under_on_failure_with_init_containers_and_every_app_container_succeeded_gets_no_new_sandbox() {
    let pod = pod("OnFailure", &["init-a"], &["app", "web"]);
    let o = obs(
        vec![sandbox(SB, 0, false, 0)],
        vec![
            exited(&pod, "init-a", "ia", 0, 0, 1, 2),
            exited(&pod, "app", "a", 0, 0, 3, 5),
            exited(&pod, "web", "w", 0, 0, 3, 6),
        ],
    );
    let p = plan(&pod, &o, &no_backoff(), at(10));
    assert_eq!(p, Plan::default());
    // One of them failed: a new sandbox, init first.
    let o = obs(
        vec![sandbox(SB, 0, false, 0)],
        vec![
            exited(&pod, "init-a", "ia", 0, 0, 1, 2),
            exited(&pod, "app", "a", 0, 0, 3, 5),
            exited(&pod, "web", "w", 0, 1, 3, 6),
        ],
    );
    let p = plan(&pod, &o, &no_backoff(), at(10));
    assert_eq!((p.create_sandbox, started(&p)), (Some(1), vec![("init-a", true, 1)]));
}

#[test]
fn a_ready_sandbox_without_an_ip_is_replaced_unless_the_pod_uses_the_host_network() {
    let pod = pod("Always", &[], &["app"]);
    let mut sb = sandbox(SB, 0, true, 0);
    sb.ip = None;
    let o = obs(vec![sb.clone()], vec![running(&pod, "app", "a", 0, 1)]);
    assert!(sandbox_changed(&pod, &o));
    let p = plan(&pod, &o, &no_backoff(), at(10));
    assert!(p.kill_pod);
    assert_eq!(p.create_sandbox, Some(1));
    assert_eq!(started(&p), vec![("app", false, 1)]);

    let mut host = pod.clone();
    host.spec.as_mut().unwrap().host_network = Some(true);
    assert!(!sandbox_changed(&host, &o));
    assert_eq!(plan(&host, &o, &no_backoff(), at(10)), Plan::default());
}

#[test]
fn the_new_attempt_is_one_more_than_the_highest_of_every_sandbox() {
    let pod = pod("Always", &[], &["app"]);
    let o = obs(vec![sandbox("sb-new", 1, false, 10), sandbox(SB, 4, false, 0)], vec![]);
    assert_eq!(plan(&pod, &o, &no_backoff(), at(20)).create_sandbox, Some(5));
}

#[test]
fn backoff_is_not_reset_by_a_crash_within_ten_minutes_of_the_restart() {
    // Crashed at 0 and 100; the second restart came late, at 400 (the entry's last update); the
    // crash at 900 is 800 s after the crash before it but 500 s after that restart: it backs off
    // the armed 20 s instead of restarting at once (upstream's lastUpdate).
    let pod = pod("Always", &[], &["app"]);
    let k = key(&pod, "app");
    let mut backoff = no_backoff();
    backoff.next(&k, at(0), at(0));
    backoff.next(&k, at(100), at(400));
    let o = obs(ready_sandbox(), vec![exited(&pod, "app", "a2", 2, 1, 400, 900)]);
    let p = plan(&pod, &o, &backoff, at(901));
    assert!(p.start.is_empty(), "{p:?}");
    assert_eq!(p.waiting[0].message, crash_loop_message("20s", "app"));
    assert_eq!(p.retry_at, Some(at(920)));
}
