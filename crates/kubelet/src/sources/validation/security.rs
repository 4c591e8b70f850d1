//! The security-context checks of upstream's ValidatePodSpec (pkg/apis/core/validation:
//! ValidatePodSecurityContext, ValidateSecurityContext, validateSeccompProfileField,
//! validateAppArmorProfileField, the procMount / hostUsers rule), with upstream's texts.

use super::Errors;
use k8s_openapi::api::core::v1::{AppArmorProfile, Container, PodSpec, SeccompProfile};

const ID_RANGE: &str = "must be between 0 and 2147483647, inclusive";

fn check_id(errs: &mut Errors, field: String, id: Option<i64>) {
    if let Some(id) = id.filter(|id| !(0..=i32::MAX as i64).contains(id)) {
        errs.add(field, id, ID_RANGE);
    }
}

/// validateLocalDescendingPath: relative, without `..`.
fn check_descending(errs: &mut Errors, field: &str, p: &str) {
    if p.starts_with('/') {
        errs.add(field, p, "must be a relative path");
    }
    if p.split('/').any(|s| s == "..") {
        errs.add(field, p, "must not contain '..'");
    }
}

fn check_seccomp(errs: &mut Errors, path: &str, sp: Option<&SeccompProfile>) {
    let Some(sp) = sp else { return };
    if !["Localhost", "RuntimeDefault", "Unconfined"].contains(&sp.type_.as_str()) {
        errs.add(
            format!("{path}.type"),
            &sp.type_,
            "supported values: \"Localhost\", \"RuntimeDefault\", \"Unconfined\"",
        );
    }
    let field = format!("{path}.localhostProfile");
    match (sp.type_ == "Localhost", sp.localhost_profile.as_deref()) {
        (true, None) => errs.add(field, "", "must be set when seccomp type is Localhost"),
        (true, Some(p)) => check_descending(errs, &field, p),
        (false, Some(p)) => errs.add(field, p, "can only be set when seccomp type is Localhost"),
        (false, None) => {}
    }
}

fn check_apparmor(errs: &mut Errors, path: &str, ap: Option<&AppArmorProfile>) {
    let Some(ap) = ap else { return };
    if !["Localhost", "RuntimeDefault", "Unconfined"].contains(&ap.type_.as_str()) {
        errs.add(
            format!("{path}.type"),
            &ap.type_,
            "supported values: \"Localhost\", \"RuntimeDefault\", \"Unconfined\"",
        );
    }
    let field = format!("{path}.localhostProfile");
    match (ap.type_ == "Localhost", ap.localhost_profile.as_deref()) {
        (true, None) => errs.add(field, "", "must be set when AppArmor type is Localhost"),
        (true, Some(p)) if p.trim().is_empty() => errs.add(field, p, "must be non-empty"),
        (true, Some(p)) if p.len() > 4095 => errs.add(field, p.len(), "must be no more than 4095 characters"),
        (false, Some(p)) => errs.add(field, p, "can only be set when AppArmor type is Localhost"),
        _ => {}
    }
}

/// The pod's securityContext.
pub(super) fn validate_pod(errs: &mut Errors, spec: &PodSpec) {
    let Some(psc) = spec.security_context.as_ref() else { return };
    let path = "spec.securityContext";
    check_id(errs, format!("{path}.runAsUser"), psc.run_as_user);
    check_id(errs, format!("{path}.runAsGroup"), psc.run_as_group);
    check_id(errs, format!("{path}.fsGroup"), psc.fs_group);
    for (i, g) in psc.supplemental_groups.iter().flatten().enumerate() {
        check_id(errs, format!("{path}.supplementalGroups[{i}]"), Some(*g));
    }
    if let Some(p) = psc.supplemental_groups_policy.as_deref()
        && !["Merge", "Strict"].contains(&p)
    {
        errs.add(format!("{path}.supplementalGroupsPolicy"), p, "supported values: \"Merge\", \"Strict\"");
    }
    check_seccomp(errs, &format!("{path}.seccompProfile"), psc.seccomp_profile.as_ref());
    check_apparmor(errs, &format!("{path}.appArmorProfile"), psc.app_armor_profile.as_ref());
}

/// A container's securityContext; `path` is `spec.containers[i]`.
pub(super) fn validate_container(errs: &mut Errors, path: &str, c: &Container, spec: &PodSpec) {
    let Some(sc) = c.security_context.as_ref() else { return };
    let path = format!("{path}.securityContext");
    check_id(errs, format!("{path}.runAsUser"), sc.run_as_user);
    check_id(errs, format!("{path}.runAsGroup"), sc.run_as_group);
    if let Some(pm) = sc.proc_mount.as_deref() {
        if !["Default", "Unmasked"].contains(&pm) {
            errs.add(format!("{path}.procMount"), pm, "supported values: \"Default\", \"Unmasked\"");
        } else if pm == "Unmasked" && spec.host_users != Some(false) {
            // An unmasked /proc only inside the pod's own user namespace.
            errs.add(format!("{path}.procMount"), pm, "`hostUsers` must be false to use `Unmasked`");
        }
    }
    check_seccomp(errs, &format!("{path}.seccompProfile"), sc.seccomp_profile.as_ref());
    check_apparmor(errs, &format!("{path}.appArmorProfile"), sc.app_armor_profile.as_ref());
    if sc.allow_privilege_escalation == Some(false) {
        if sc.privileged == Some(true) {
            errs.add(&path, "", "cannot set `allowPrivilegeEscalation` to false and `privileged` to true");
        }
        if sc.capabilities.as_ref().and_then(|c| c.add.as_ref()).is_some_and(|a| a.iter().any(|c| c == "CAP_SYS_ADMIN"))
        {
            errs.add(&path, "", "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> PodSpec {
        serde_json::from_value(json).unwrap()
    }

    fn errors(s: &PodSpec) -> Vec<String> {
        let mut errs = Errors::default();
        validate_pod(&mut errs, s);
        for (i, c) in s.containers.iter().enumerate() {
            validate_container(&mut errs, &format!("spec.containers[{i}]"), c, s);
        }
        errs.0.iter().map(|e| format!("{}: {}", e.field, e.reason)).collect()
    }

    #[test]
    fn bad_security_fields_are_named() {
        let s = spec(serde_json::json!({
            "securityContext": {"runAsUser": -1, "supplementalGroupsPolicy": "Loose",
                                "seccompProfile": {"type": "Localhost", "localhostProfile": "../x.json"}},
            "containers": [{"name": "c", "image": "i", "securityContext": {
                "procMount": "Unmasked", "allowPrivilegeEscalation": false, "privileged": true,
                "appArmorProfile": {"type": "RuntimeDefault", "localhostProfile": "p"}}}]
        }));
        assert_eq!(
            errors(&s),
            [
                "spec.securityContext.runAsUser: must be between 0 and 2147483647, inclusive",
                "spec.securityContext.supplementalGroupsPolicy: supported values: \"Merge\", \"Strict\"",
                "spec.securityContext.seccompProfile.localhostProfile: must not contain '..'",
                "spec.containers[0].securityContext.procMount: `hostUsers` must be false to use `Unmasked`",
                "spec.containers[0].securityContext.appArmorProfile.localhostProfile: can only be set when AppArmor type is Localhost",
                "spec.containers[0].securityContext: cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
            ]
        );
        let fine = spec(serde_json::json!({"hostUsers": false, "containers": [{"name": "c", "image": "i",
            "securityContext": {"procMount": "Unmasked", "seccompProfile": {"type": "Localhost", "localhostProfile": "a/b.json"}}}]}));
        assert!(errors(&fine).is_empty());
    }
}
