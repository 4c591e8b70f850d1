//! Pod admission: the admit handlers (upstream's `lifecycle.PodAdmitHandler`) a new pod must pass
//! before its worker starts. The dispatcher runs the node's [`Handlers`] in order, the first
//! refusal wins; the composition builds the list: node pressure (`eviction::Handle`), sysctls
//! ([`sysctl::Allowlist`]: SysctlForbidden), the node predicates here ([`NodeInfo`]: pod OS,
//! node name, nodeSelector and required node affinity, NoExecute taints, host ports), resource
//! fit (`cm::admission::ResourceFit`: OutOfpods / OutOfcpu / OutOfmemory), AppArmor
//! ([`apparmor::Host`]: profiles on a host that cannot enforce them).

pub mod apparmor;
pub mod runtime;
pub mod sysctl;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, Pod, Taint, Toleration};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// One admit handler: refuses `pod` or lets it through, next to the pods already admitted (not
/// including `pod`).
pub trait Handler: Send + Sync {
    fn admit(&self, pod: &Pod, admitted: &[&Pod]) -> Result<(), Rejection>;
}

/// The node's admit handlers, run in order.
#[derive(Clone, Default)]
pub struct Handlers(Vec<Arc<dyn Handler>>);

impl Handlers {
    pub fn new(handlers: Vec<Arc<dyn Handler>>) -> Self {
        Self(handlers)
    }

    /// The first handler's refusal, if any refuses.
    pub fn admit(&self, pod: &Pod, admitted: &[&Pod]) -> Result<(), Rejection> {
        self.0.iter().try_for_each(|h| h.admit(pod, admitted))
    }
}

/// This node, for the node predicates.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    /// The runtime honours `supplementalGroupsPolicy: Strict` (node status
    /// `features.supplementalGroupsPolicy`).
    pub supplemental_groups_policy: bool,
}

impl Handler for NodeInfo {
    fn admit(&self, pod: &Pod, admitted: &[&Pod]) -> Result<(), Rejection> {
        admit(pod, self, admitted)
    }
}

/// Why a pod was refused (upstream's PodAdmitResult): the dispatcher records it as a Warning event
/// and sets the pod Failed with this reason and `Pod was rejected: <message>` (upstream's
/// rejectPod).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: String,
    pub message: String,
}

fn reject(predicate: &str, why: &str) -> Rejection {
    Rejection { reason: predicate.into(), message: format!("Predicate {predicate} failed: {why}") }
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) =
                (value.and_then(|v| v.parse::<i64>().ok()), values.first().and_then(|b| b.parse::<i64>().ok()))
            else {
                return false;
            };
            if r.operator == "Gt" { v > bound } else { v < bound }
        }
        _ => false,
    }
}

/// nodeSelector and requiredDuringSchedulingIgnoredDuringExecution (terms ORed, requirements ANDed).
pub fn matches_node(pod: &Pod, node: &NodeInfo) -> bool {
    let Some(spec) = pod.spec.as_ref() else { return true };
    if let Some(sel) = &spec.node_selector
        && !sel.iter().all(|(k, v)| node.labels.get(k) == Some(v))
    {
        return false;
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref());
    let Some(required) = required else { return true };
    required.node_selector_terms.iter().any(|term| {
        let exprs = term
            .match_expressions
            .iter()
            .flatten()
            .all(|r| requirement_matches(r, node.labels.get(&r.key).map(String::as_str)));
        let fields = term
            .match_fields
            .iter()
            .flatten()
            .all(|r| requirement_matches(r, (r.key == "metadata.name").then_some(node.name.as_str())));
        let empty = term.match_expressions.as_ref().is_none_or(Vec::is_empty)
            && term.match_fields.as_ref().is_none_or(Vec::is_empty);
        !empty && exprs && fields
    })
}

/// Whether `t` tolerates `taint` (upstream's ToleratesTaint).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect.as_deref().is_some_and(|e| !e.is_empty() && e != taint.effect) {
        return false;
    }
    if t.key.as_deref().is_some_and(|k| !k.is_empty() && k != taint.key) {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

fn host_ports(p: &Pod) -> impl Iterator<Item = (i32, String)> + '_ {
    p.spec.iter().flat_map(|s| s.containers.iter()).flat_map(|c| c.ports.iter().flatten()).filter_map(|port| {
        port.host_port.filter(|h| *h > 0).map(|h| (h, port.protocol.clone().unwrap_or_else(|| "TCP".into())))
    })
}

/// The OS checks upstream's predicate handler runs first (rejectPodAdmissionBasedOnOSSelector,
/// then rejectPodAdmissionBasedOnOSField). Upstream compares the pod's own `kubernetes.io/os`
/// *label* (not its nodeSelector, which the NodeAffinity predicate covers) with the node's OS,
/// always its GOOS whatever the node's label says; and `spec.os.name`, when set, with the same.
fn admit_os(pod: &Pod) -> Result<(), Rejection> {
    const NODE_OS: &str = "linux";
    if pod.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/os")).is_some_and(|os| os != NODE_OS) {
        return Err(Rejection {
            reason: "PodOSSelectorNodeLabelDoesNotMatch".into(),
            message: "Failed to admit pod as the `kubernetes.io/os` label doesn't match node label".into(),
        });
    }
    if pod.spec.as_ref().and_then(|s| s.os.as_ref()).is_some_and(|os| os.name != NODE_OS) {
        return Err(Rejection {
            reason: "PodOSNotSupported".into(),
            message: "Failed to admit pod as the OS field doesn't match node OS".into(),
        });
    }
    Ok(())
}

/// Upstream's rejectPodAdmissionBasedOnSupplementalGroupsPolicy (after the OS checks): Strict
/// on a node whose runtime cannot honour it is refused rather than run merged.
fn admit_supplemental_groups_policy(pod: &Pod, node: &NodeInfo) -> Result<(), Rejection> {
    let policy = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.supplemental_groups_policy.as_deref());
    if policy == Some("Strict") && !node.supplemental_groups_policy {
        return Err(Rejection {
            reason: "SupplementalGroupsPolicyNotSupported".into(),
            message: "SupplementalGroupsPolicy=Strict is not supported in this node".into(),
        });
    }
    Ok(())
}

/// The node predicates: admits `pod` on `node` next to the pods already admitted.
pub fn admit(pod: &Pod, node: &NodeInfo, admitted: &[&Pod]) -> Result<(), Rejection> {
    admit_os(pod)?;
    admit_supplemental_groups_policy(pod, node)?;
    let spec = pod.spec.as_ref();
    if let Some(name) = spec.and_then(|s| s.node_name.as_deref())
        && name != node.name
    {
        return Err(reject("NodeName", "node(s) didn't match the requested node name"));
    }
    if !matches_node(pod, node) {
        return Err(reject("NodeAffinity", "node(s) didn't match Pod's node affinity/selector"));
    }
    let tolerations = spec.and_then(|s| s.tolerations.as_deref()).unwrap_or_default();
    if let Some(t) = node
        .taints
        .iter()
        .filter(|t| t.effect == "NoExecute")
        .find(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
    {
        return Err(reject(
            "TaintToleration",
            &format!("node(s) had untolerated taint {{{}: {}}}", t.key, t.value.as_deref().unwrap_or("")),
        ));
    }
    let used: HashSet<(i32, String)> = admitted.iter().flat_map(|p| host_ports(p)).collect();
    if host_ports(pod).any(|hp| used.contains(&hp)) {
        return Err(reject("NodePorts", "node(s) didn't have free ports for the requested pod ports"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeInfo {
        NodeInfo {
            name: "n1".into(),
            labels: BTreeMap::from([
                ("disk".into(), "ssd".into()),
                ("zone".into(), "a".into()),
                ("cores".into(), "8".into()),
            ]),
            taints: vec![Taint {
                key: "dedicated".into(),
                value: Some("db".into()),
                effect: "NoExecute".into(),
                time_added: None,
            }],
            supplemental_groups_policy: false,
        }
    }

    fn pod(spec: serde_json::Value) -> Pod {
        let mut spec = spec;
        spec["containers"] = serde_json::json!([{"name": "c", "image": "i"}]);
        spec["tolerations"] =
            spec.get("tolerations").cloned().unwrap_or(serde_json::json!([{"key": "dedicated", "operator": "Exists"}]));
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    #[test]
    fn node_selector_and_affinity_decide() {
        let n = node();
        assert!(admit(&pod(serde_json::json!({"nodeSelector": {"disk": "ssd"}})), &n, &[]).is_ok());
        let r = admit(&pod(serde_json::json!({"nodeSelector": {"disk": "hdd"}})), &n, &[]).unwrap_err();
        assert_eq!(r.reason, "NodeAffinity");
        assert_eq!(r.message, "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector");
        let aff = |op: &str, values: serde_json::Value| {
            pod(serde_json::json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "cores", "operator": op, "values": values}]}]}}}}))
        };
        assert!(admit(&aff("Gt", serde_json::json!(["4"])), &n, &[]).is_ok());
        assert!(admit(&aff("Lt", serde_json::json!(["4"])), &n, &[]).is_err());
        assert!(admit(&aff("In", serde_json::json!(["8", "16"])), &n, &[]).is_ok());
        assert!(admit(&aff("NotIn", serde_json::json!(["8"])), &n, &[]).is_err());
        assert!(admit(&aff("Exists", serde_json::json!([])), &n, &[]).is_ok());
    }

    #[test]
    fn untolerated_no_execute_taints_and_wrong_node_are_refused() {
        let n = node();
        let r = admit(&pod(serde_json::json!({"tolerations": []})), &n, &[]).unwrap_err();
        assert_eq!(r.reason, "TaintToleration");
        assert!(
            admit(
                &pod(serde_json::json!({"tolerations": [{"key": "dedicated", "value": "db", "effect": "NoExecute"}]})),
                &n,
                &[]
            )
            .is_ok()
        );
        assert!(
            admit(&pod(serde_json::json!({"tolerations": [{"key": "dedicated", "value": "web"}]})), &n, &[]).is_err()
        );
        assert_eq!(admit(&pod(serde_json::json!({"nodeName": "n2"})), &n, &[]).unwrap_err().reason, "NodeName");
    }

    #[test]
    fn handlers_run_in_order_and_the_first_refusal_wins() {
        struct Refuse(&'static str);
        impl Handler for Refuse {
            fn admit(&self, _: &Pod, _: &[&Pod]) -> Result<(), Rejection> {
                Err(Rejection { reason: self.0.into(), message: String::new() })
            }
        }
        let p = pod(serde_json::json!({"tolerations": []}));
        assert!(Handlers::default().admit(&p, &[]).is_ok());
        let node_first = Handlers::new(vec![Arc::new(node()), Arc::new(Refuse("Other"))]);
        assert_eq!(node_first.admit(&p, &[]).unwrap_err().reason, "TaintToleration");
        let other_first = Handlers::new(vec![Arc::new(Refuse("Other")), Arc::new(node())]);
        assert_eq!(other_first.admit(&p, &[]).unwrap_err().reason, "Other");
    }

    #[test]
    fn a_pod_for_another_os_is_refused_before_the_other_predicates() {
        let n = node();
        let windows = pod(serde_json::json!({"os": {"name": "windows"}, "nodeName": "n2"}));
        let r = admit(&windows, &n, &[]).unwrap_err();
        assert_eq!(r.reason, "PodOSNotSupported");
        assert_eq!(r.message, "Failed to admit pod as the OS field doesn't match node OS");
        assert!(admit(&pod(serde_json::json!({"os": {"name": "linux"}})), &n, &[]).is_ok());
        let mut labelled = pod(serde_json::json!({"os": {"name": "windows"}}));
        labelled.metadata.labels = Some(BTreeMap::from([("kubernetes.io/os".into(), "windows".into())]));
        let r = admit(&labelled, &n, &[]).unwrap_err();
        assert_eq!(r.reason, "PodOSSelectorNodeLabelDoesNotMatch");
        assert_eq!(r.message, "Failed to admit pod as the `kubernetes.io/os` label doesn't match node label");
        labelled.metadata.labels = Some(BTreeMap::from([("kubernetes.io/os".into(), "linux".into())]));
        labelled.spec.as_mut().unwrap().os = None;
        assert!(admit(&labelled, &n, &[]).is_ok());
        // A nodeSelector on the OS label is the NodeAffinity predicate's (the node is labelled
        // kubernetes.io/os=linux).
        let mut linux = node();
        linux.labels.insert("kubernetes.io/os".into(), "linux".into());
        let selector = pod(serde_json::json!({"nodeSelector": {"kubernetes.io/os": "windows"}}));
        assert_eq!(admit(&selector, &linux, &[]).unwrap_err().reason, "NodeAffinity");
    }

    #[test]
    fn strict_supplemental_groups_need_a_runtime_that_honours_them() {
        let mut strict = pod(serde_json::json!({}));
        strict.spec.as_mut().unwrap().security_context =
            Some(serde_json::from_value(serde_json::json!({"supplementalGroupsPolicy": "Strict"})).unwrap());
        let r = admit(&strict, &node(), &[]).unwrap_err();
        assert_eq!(r.reason, "SupplementalGroupsPolicyNotSupported");
        assert_eq!(r.message, "SupplementalGroupsPolicy=Strict is not supported in this node");
        assert!(admit(&strict, &NodeInfo { supplemental_groups_policy: true, ..node() }, &[]).is_ok());
        let mut merge = strict.clone();
        merge.spec.as_mut().unwrap().security_context.as_mut().unwrap().supplemental_groups_policy =
            Some("Merge".into());
        assert!(admit(&merge, &node(), &[]).is_ok());
    }

    #[test]
    fn host_port_conflicts_are_refused() {
        let with_port = |hp: i32| {
            let mut p = pod(serde_json::json!({}));
            p.spec.as_mut().unwrap().containers[0].ports = Some(vec![k8s_openapi::api::core::v1::ContainerPort {
                container_port: 80,
                host_port: Some(hp),
                ..Default::default()
            }]);
            p
        };
        let a = with_port(8080);
        assert_eq!(admit(&with_port(8080), &node(), &[&a]).unwrap_err().reason, "NodePorts");
        assert!(admit(&with_port(8081), &node(), &[&a]).is_ok());
    }
}
