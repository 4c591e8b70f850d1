//! Pod lifetime rules the kubelet enforces from the API pod, end to end (testapi + kubectl +
//! containerd): activeDeadlineSeconds (set at creation, and set later on a running pod) and
//! readinessGates (conditions other actors write into the pod's status).

use crate::api::{eventually, start};
use crate::harness::image;
use serde_json::Value;

const DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

fn pod(name: &str, spec_extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 2\n{spec_extra}  containers:\n  - name: app\n    image: {}\n    command: [\"sleep\", \"3600\"]\n",
        image("busybox:1.36")
    )
}

fn condition(p: &Value, type_: &str) -> Option<Value> {
    p["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_deadlines_fail_pods_and_readiness_gates_hold_ready() {
    let Some((api, mut k)) = start("deadline").await else { return };
    api.apply(&pod("timed", "  activeDeadlineSeconds: 5\n"));
    api.apply(&pod("open", ""));
    api.apply(&pod("gated", "  readinessGates:\n  - conditionType: example.com/lb-registered\n"));

    // The gated pod runs with its container ready, but is not Ready while its gate's condition
    // is absent (upstream's GeneratePodReadyCondition).
    let gated = eventually("gated Running, container ready, Ready False", || {
        let p = api.get_json(&["pod", "gated"])?;
        let ready = condition(&p, "Ready")?;
        (p["status"]["phase"] == "Running"
            && p["status"]["containerStatuses"][0]["ready"] == true
            && ready["reason"] == "ReadinessGatesNotReady")
            .then_some(p)
    })
    .await;
    let ready = condition(&gated, "Ready").unwrap();
    assert_eq!(ready["status"], "False");
    assert_eq!(
        ready["message"],
        "corresponding condition of pod readiness gate \"example.com/lb-registered\" does not exist."
    );
    assert_eq!(condition(&gated, "ContainersReady").unwrap()["status"], "True");

    // A pod without a deadline, given one once it runs: the kubelet kills it too.
    eventually("open Running", || (api.get_json(&["pod", "open"])?["status"]["phase"] == "Running").then_some(()))
        .await;
    api.kubectl(&["patch", "pod", "open", "--type=merge", "-p", r#"{"spec":{"activeDeadlineSeconds":5}}"#]);

    for name in ["timed", "open"] {
        let p = eventually("Failed past the active deadline, container stopped", || {
            let p = api.get_json(&["pod", name])?;
            (p["status"]["phase"] == "Failed" && p["status"]["containerStatuses"][0]["state"]["terminated"].is_object())
                .then_some(p)
        })
        .await;
        assert_eq!(p["status"]["reason"], "DeadlineExceeded", "{name}: {}", p["status"]);
        assert_eq!(p["status"]["message"], DEADLINE_MESSAGE, "{name}");
        assert_eq!(condition(&p, "Ready").unwrap()["reason"], "PodFailed", "{name}");
        let event = eventually("the DeadlineExceeded event", || {
            let events = api.get_json(&["events"])?;
            events["items"]
                .as_array()?
                .iter()
                .find(|e| e["involvedObject"]["name"] == name && e["reason"] == "DeadlineExceeded")
                .cloned()
        })
        .await;
        assert_eq!((&event["type"], &event["message"]), (&"Normal".into(), &DEADLINE_MESSAGE.into()), "{event}");
    }
    // Not restarted and not deleted: the pods stay Failed.
    for name in ["timed", "open"] {
        let p = api.get_json(&["pod", name]).expect("the pod is kept");
        assert_eq!(p["status"]["phase"], "Failed");
        assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0);
    }

    // Another actor sets the gate's condition True: the pod becomes Ready.
    api.kubectl(&[
        "patch",
        "pod",
        "gated",
        "--subresource=status",
        "--type=strategic",
        "-p",
        r#"{"status":{"conditions":[{"type":"example.com/lb-registered","status":"True"}]}}"#,
    ]);
    let p = eventually("gated Ready", || {
        let p = api.get_json(&["pod", "gated"])?;
        (condition(&p, "Ready")?["status"] == "True").then_some(p)
    })
    .await;
    assert_eq!(condition(&p, "example.com/lb-registered").unwrap()["status"], "True", "the gate condition kept");
    api.kubectl(&["delete", "pod", "--all", "--timeout=90s"]);
    k.cleanup().await;
}
