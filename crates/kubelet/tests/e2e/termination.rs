//! Termination messages end to end, upstream's "Container Runtime blackbox test ... on
//! terminated container" scenarios (test/e2e/common/node/runtime.go) with their expected phases
//! and messages, plus a restarted container's message in lastState.

use crate::api::{TestApi, eventually, start};
use crate::harness::*;

/// One restartPolicy: Never pod with one busybox container running `args` under `/bin/sh -c`.
fn pod(name: &str, args: &str, path: &str, policy: &str, run_as_user: u32) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  restartPolicy: Never
  containers:
  - name: termination-message-container
    image: {img}
    command: ["/bin/sh", "-c"]
    args: [{args:?}]
    terminationMessagePath: {path}
    terminationMessagePolicy: {policy}
    securityContext: {{runAsUser: {run_as_user}}}
"#,
        img = image("busybox:1.36")
    )
}

/// The pod's phase once terminal, and its container's `state.terminated.message` ("" when unset).
async fn final_message(api: &TestApi, name: &str) -> (String, String) {
    let p = eventually(&format!("{name} terminal with a terminated container"), || {
        let p = api.get_json(&["pod", name])?;
        let terminal = p["status"]["phase"] == "Succeeded" || p["status"]["phase"] == "Failed";
        (terminal && p["status"]["containerStatuses"][0]["state"]["terminated"].is_object()).then_some(p)
    })
    .await;
    let phase = p["status"]["phase"].as_str().unwrap_or_default().to_string();
    let message = p["status"]["containerStatuses"][0]["state"]["terminated"]["message"].as_str().unwrap_or_default();
    (phase, message.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn termination_messages_come_from_the_file_or_the_log_tail_as_upstream() {
    let Some((api, mut k)) = start("termmsg").await else { return };
    let log = "/dev/termination-log";
    // (name, args, path, policy, user, expected phase, expected message), as upstream's cases.
    let cases = [
        ("tm-root", "/bin/echo -n DONE > /dev/termination-log", log, "File", 0, "Succeeded", "DONE"),
        (
            "tm-nonroot-custom-path",
            "/bin/echo -n DONE > /dev/termination-custom-log",
            "/dev/termination-custom-log",
            "File",
            10000,
            "Succeeded",
            "DONE",
        ),
        ("tm-from-log", "/bin/echo -n DONE; /bin/false", log, "FallbackToLogsOnError", 0, "Failed", "DONE"),
        ("tm-empty-on-success", "/bin/echo -n DONE; /bin/true", log, "FallbackToLogsOnError", 0, "Succeeded", ""),
        (
            "tm-file-on-success",
            "/bin/echo -n OK > /dev/termination-log; /bin/echo DONE; /bin/true",
            log,
            "FallbackToLogsOnError",
            0,
            "Succeeded",
            "OK",
        ),
    ];
    for (name, args, path, policy, user, ..) in &cases {
        api.apply(&pod(name, args, path, policy, *user));
    }
    // A container that failed once: its first message moves to lastState.
    api.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: tm-restarted
spec:
  restartPolicy: OnFailure
  volumes: [{{name: work, emptyDir: {{}}}}]
  containers:
  - name: app
    image: {img}
    command: ["/bin/sh", "-c", "if [ -e /work/ran ]; then echo -n second > /dev/termination-log; else touch /work/ran; echo -n first > /dev/termination-log; exit 3; fi"]
    volumeMounts: [{{name: work, mountPath: /work}}]
"#,
        img = image("busybox:1.36")
    ));
    for (name, .., phase, message) in &cases {
        let got = final_message(&api, name).await;
        assert_eq!((got.0.as_str(), got.1.as_str()), (*phase, *message), "pod {name}");
    }
    // As kubectl shows it.
    let jsonpath = "jsonpath={.status.containerStatuses[0].state.terminated.message}";
    assert_eq!(api.kubectl(&["get", "pod", "tm-nonroot-custom-path", "-o", jsonpath]), "DONE");

    let (phase, message) = final_message(&api, "tm-restarted").await;
    assert_eq!((phase.as_str(), message.as_str()), ("Succeeded", "second"));
    let p = api.get_json(&["pod", "tm-restarted"]).unwrap();
    let last = &p["status"]["containerStatuses"][0]["lastState"]["terminated"];
    assert_eq!((last["exitCode"].as_i64(), last["message"].as_str()), (Some(3), Some("first")), "{}", p["status"]);
    k.cleanup().await;
}
