//! A container's Linux security context as upstream's kuberuntime builds it
//! (pkg/kubelet/kuberuntime/security_context.go determineEffectiveSecurityContext,
//! security_context_others.go verifyRunAsNonRoot, helpers.go getSeccompProfile /
//! getAppArmorProfile, pkg/securitycontext): the container's fields over the pod's, the image's
//! user when none is set, runAsNonRoot checked before the container is created, seccomp and
//! AppArmor profiles, supplemental groups (fsGroup first), no_new_privs, masked and read-only
//! paths. Pure: the executor looks up the image's user, `runtime_config` adds the namespaces.

use crate::cri::api;
use crate::cri::api::security_profile::ProfileType;
use k8s_openapi::api::core::v1::{Container, Pod, PodSecurityContext, SeccompProfile, SecurityContext};
use std::path::Path;

/// Why a container's security context cannot be built or is refused (CreateContainerConfigError,
/// with upstream's texts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("container's runAsUser breaks non-root policy (pod: {pod}, container: {container})")]
    RunAsUserIsRoot { pod: String, container: String },
    #[error("container has runAsNonRoot and image will run as root (pod: {pod}, container: {container})")]
    ImageRunsAsRoot { pod: String, container: String },
    #[error(
        "container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root (pod: {pod}, container: {container})"
    )]
    ImageUserNotNumeric { user: String, pod: String, container: String },
    #[error(
        "container has runAsNonRoot and image has an invalid user id ({uid}). (Must be 1-({max})): must be between 0 and {max}, inclusive (pod: {pod}, container: {container})",
        max = i32::MAX
    )]
    ImageUserInvalid { uid: i64, pod: String, container: String },
    #[error("localhostProfile must be set if seccompProfile type is Localhost.")]
    SeccompLocalhostWithoutProfile,
    #[error("missing localhost apparmor profile name")]
    AppArmorLocalhostWithoutProfile,
    #[error("unknown apparmor profile type: {0:?}")]
    AppArmorUnknownType(String),
    #[error("unsupported supplementalGroupsPolicy: {0}")]
    SupplementalGroupsPolicy(String),
}

/// The user an image runs as, from CRI ImageStatus (upstream's getImageUser): its numeric uid,
/// else its user name; an image that says neither runs as root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageUser {
    Uid(i64),
    Name(String),
}

impl ImageUser {
    pub fn of(image: Option<&api::Image>) -> Self {
        match image {
            Some(i) if i.uid.is_some() => Self::Uid(i.uid.as_ref().map(|u| u.value).unwrap_or(0)),
            Some(i) if !i.username.is_empty() => Self::Name(i.username.clone()),
            _ => Self::Uid(0),
        }
    }
}

/// The node's seccomp settings: `seccompDefault` and the profile root (`<root-dir>/seccomp`).
#[derive(Debug, Clone, Copy)]
pub struct Seccomp<'a> {
    pub default_runtime_default: bool,
    pub profile_root: &'a Path,
}

/// Upstream's DetermineEffectiveSecurityContext: the pod's seLinuxOptions, windowsOptions,
/// runAsUser, runAsGroup and runAsNonRoot, each overridden by the container's when set, plus the
/// container-only fields. Seccomp and AppArmor are resolved on their own (their fallback order
/// differs).
pub fn effective(pod: &Pod, c: &Container) -> SecurityContext {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let mut e = SecurityContext {
        se_linux_options: psc.and_then(|p| p.se_linux_options.clone()),
        windows_options: psc.and_then(|p| p.windows_options.clone()),
        run_as_user: psc.and_then(|p| p.run_as_user),
        run_as_group: psc.and_then(|p| p.run_as_group),
        run_as_non_root: psc.and_then(|p| p.run_as_non_root),
        ..Default::default()
    };
    let Some(csc) = c.security_context.as_ref() else { return e };
    fn over<T: Clone>(field: &mut Option<T>, container: &Option<T>) {
        if container.is_some() {
            field.clone_from(container);
        }
    }
    over(&mut e.se_linux_options, &csc.se_linux_options);
    if let Some(w) = &csc.windows_options {
        let ew = e.windows_options.get_or_insert_with(Default::default);
        if w.gmsa_credential_spec_name.is_some() || w.gmsa_credential_spec.is_some() {
            ew.gmsa_credential_spec_name.clone_from(&w.gmsa_credential_spec_name);
            ew.gmsa_credential_spec.clone_from(&w.gmsa_credential_spec);
        }
        over(&mut ew.run_as_user_name, &w.run_as_user_name);
        over(&mut ew.host_process, &w.host_process);
    }
    over(&mut e.capabilities, &csc.capabilities);
    over(&mut e.privileged, &csc.privileged);
    over(&mut e.run_as_user, &csc.run_as_user);
    over(&mut e.run_as_group, &csc.run_as_group);
    over(&mut e.run_as_non_root, &csc.run_as_non_root);
    over(&mut e.read_only_root_filesystem, &csc.read_only_root_filesystem);
    over(&mut e.allow_privilege_escalation, &csc.allow_privilege_escalation);
    over(&mut e.proc_mount, &csc.proc_mount);
    e
}

/// Upstream's format.Pod, `%q`-quoted as verifyRunAsNonRoot prints it: `"name_namespace(uid)"`.
fn pod_desc(pod: &Pod) -> String {
    let m = &pod.metadata;
    crate::downward::go_quote(&format!(
        "{}_{}({})",
        m.name.as_deref().unwrap_or_default(),
        m.namespace.as_deref().unwrap_or_default(),
        m.uid.as_deref().unwrap_or_default()
    ))
}

/// Upstream's verifyRunAsNonRoot: with runAsNonRoot true, an effective runAsUser of 0 is refused;
/// without a runAsUser the image's user must be numeric, non-zero and a valid user id.
pub fn verify_run_as_non_root(pod: &Pod, c: &Container, image: &ImageUser) -> Result<(), Error> {
    let e = effective(pod, c);
    if e.run_as_non_root != Some(true) {
        return Ok(());
    }
    let (pod, container) = (pod_desc(pod), c.name.clone());
    if let Some(uid) = e.run_as_user {
        return if uid == 0 { Err(Error::RunAsUserIsRoot { pod, container }) } else { Ok(()) };
    }
    match image {
        ImageUser::Name(user) if !user.is_empty() => {
            Err(Error::ImageUserNotNumeric { user: user.clone(), pod, container })
        }
        ImageUser::Name(_) => Ok(()),
        ImageUser::Uid(0) => Err(Error::ImageRunsAsRoot { pod, container }),
        // validation.IsValidUserID: 0 ≤ uid ≤ MaxInt32.
        ImageUser::Uid(uid) if !(0..=i32::MAX as i64).contains(uid) => {
            Err(Error::ImageUserInvalid { uid: *uid, pod, container })
        }
        ImageUser::Uid(_) => Ok(()),
    }
}

fn profile(t: ProfileType, localhost_ref: String) -> api::SecurityProfile {
    api::SecurityProfile { profile_type: t as i32, localhost_ref }
}

/// Upstream's fieldSeccompProfile: a profile field to the CRI profile; Localhost names a file
/// under the node's profile root (the runtime loads it, and fails CreateContainer naming the
/// file when it is missing); an unknown type is Unconfined.
fn field_seccomp(p: &SeccompProfile, root: &Path) -> Result<api::SecurityProfile, Error> {
    match p.type_.as_str() {
        "RuntimeDefault" => Ok(profile(ProfileType::RuntimeDefault, String::new())),
        "Localhost" => match p.localhost_profile.as_deref().filter(|l| !l.is_empty()) {
            Some(l) => Ok(profile(ProfileType::Localhost, clean_join(root, l))),
            None => Err(Error::SeccompLocalhostWithoutProfile),
        },
        _ => Ok(profile(ProfileType::Unconfined, String::new())),
    }
}

/// Go's filepath.Join: `root/rel`, lexically cleaned.
fn clean_join(root: &Path, rel: &str) -> String {
    let joined = format!("{}/{rel}", root.display());
    let absolute = joined.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." if parts.last().is_some_and(|p| *p != "..") => {
                parts.pop();
            }
            ".." if absolute => {}
            p => parts.push(p),
        }
    }
    let body = parts.join("/");
    if absolute { format!("/{body}") } else { body }
}

/// Upstream's getSeccompProfile: the container's field, else the pod's, else RuntimeDefault with
/// `seccompDefault`, else Unconfined. (A privileged container runs unconfined: the runtime
/// ignores the profile for it.)
pub fn seccomp_profile(
    psc: Option<&PodSecurityContext>,
    csc: Option<&SecurityContext>,
    node: Seccomp,
) -> Result<api::SecurityProfile, Error> {
    if let Some(p) = csc.and_then(|c| c.seccomp_profile.as_ref()) {
        return field_seccomp(p, node.profile_root);
    }
    if let Some(p) = psc.and_then(|p| p.seccomp_profile.as_ref()) {
        return field_seccomp(p, node.profile_root);
    }
    let t = if node.default_runtime_default { ProfileType::RuntimeDefault } else { ProfileType::Unconfined };
    Ok(profile(t, String::new()))
}

/// Upstream's getAppArmorProfile: the CRI profile and the deprecated profile string.
fn apparmor_profile(pod: &Pod, c: &Container) -> Result<(Option<api::SecurityProfile>, String), Error> {
    let Some(p) = crate::admission::apparmor::profile_of(pod, c) else { return Ok((None, String::new())) };
    match p.type_.as_str() {
        "RuntimeDefault" => Ok((Some(profile(ProfileType::RuntimeDefault, String::new())), "runtime/default".into())),
        "Unconfined" => Ok((Some(profile(ProfileType::Unconfined, String::new())), "unconfined".into())),
        "Localhost" => {
            let name = p.localhost_profile.ok_or(Error::AppArmorLocalhostWithoutProfile)?;
            Ok((Some(profile(ProfileType::Localhost, name.clone())), format!("localhost/{name}")))
        }
        other => Err(Error::AppArmorUnknownType(other.to_string())),
    }
}

/// The CRI value of `supplementalGroupsPolicy` (Merge when unset).
pub fn supplemental_groups_policy(psc: Option<&PodSecurityContext>) -> Result<i32, Error> {
    match psc.and_then(|p| p.supplemental_groups_policy.as_deref()) {
        None | Some("Merge") => Ok(api::SupplementalGroupsPolicy::Merge as i32),
        Some("Strict") => Ok(api::SupplementalGroupsPolicy::Strict as i32),
        Some(other) => Err(Error::SupplementalGroupsPolicy(other.to_string())),
    }
}

// pkg/securitycontext's defaults (moby's), for containers whose procMount is not Unmasked.
const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READONLY_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// ConvertToRuntimeMaskedPaths / ReadonlyPaths: none for an Unmasked /proc, else the defaults.
/// (A privileged container gets them too; the runtime clears them for it.)
fn proc_paths(proc_mount: Option<&str>, paths: &[&str]) -> Vec<String> {
    if proc_mount == Some("Unmasked") { Vec::new() } else { paths.iter().map(|s| s.to_string()).collect() }
}

/// Upstream's determineEffectiveSecurityContext without the namespaces (the caller sets them).
pub fn container_context(
    pod: &Pod,
    c: &Container,
    image: &ImageUser,
    seccomp: Seccomp,
) -> Result<api::LinuxContainerSecurityContext, Error> {
    let e = effective(pod, c);
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let (apparmor, deprecated_apparmor) = apparmor_profile(pod, c)?;
    let mut sc = api::LinuxContainerSecurityContext {
        capabilities: e.capabilities.as_ref().map(|caps| api::Capability {
            add_capabilities: caps.add.clone().unwrap_or_default(),
            drop_capabilities: caps.drop.clone().unwrap_or_default(),
            ..Default::default()
        }),
        selinux_options: e.se_linux_options.as_ref().map(|o| api::SeLinuxOption {
            user: o.user.clone().unwrap_or_default(),
            role: o.role.clone().unwrap_or_default(),
            r#type: o.type_.clone().unwrap_or_default(),
            level: o.level.clone().unwrap_or_default(),
        }),
        run_as_user: e.run_as_user.map(|value| api::Int64Value { value }),
        run_as_group: e.run_as_group.map(|value| api::Int64Value { value }),
        privileged: e.privileged.unwrap_or(false),
        readonly_rootfs: e.read_only_root_filesystem.unwrap_or(false),
        seccomp: Some(seccomp_profile(psc, c.security_context.as_ref(), seccomp)?),
        apparmor,
        // AddNoNewPrivileges: only an explicit allowPrivilegeEscalation: false.
        no_new_privs: e.allow_privilege_escalation == Some(false),
        masked_paths: proc_paths(e.proc_mount.as_deref(), MASKED_PATHS),
        readonly_paths: proc_paths(e.proc_mount.as_deref(), READONLY_PATHS),
        ..Default::default()
    };
    // The deprecated string too, as upstream sends it for older runtimes.
    #[allow(deprecated)]
    {
        sc.apparmor_profile = deprecated_apparmor;
    }
    // Without a runAsUser the image's user: its uid, or its name for the runtime to resolve.
    if sc.run_as_user.is_none() {
        match image {
            ImageUser::Uid(value) => sc.run_as_user = Some(api::Int64Value { value: *value }),
            ImageUser::Name(name) => sc.run_as_username = name.clone(),
        }
    }
    if let Some(p) = psc {
        // fsGroup first, then supplementalGroups (upstream's order for containers).
        sc.supplemental_groups.extend(p.fs_group);
        sc.supplemental_groups.extend(p.supplemental_groups.iter().flatten());
        sc.supplemental_groups_policy = supplemental_groups_policy(Some(p))?;
    }
    Ok(sc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "annotations": json["annotations"]},
            "spec": {"securityContext": json["pod"], "containers": [{"name": "c", "image": "i", "securityContext": json["container"]}]}
        }))
        .unwrap()
    }

    fn node() -> Seccomp<'static> {
        Seccomp { default_runtime_default: false, profile_root: Path::new("/var/lib/kubelet/seccomp") }
    }

    fn ctx(p: &Pod, image: ImageUser) -> api::LinuxContainerSecurityContext {
        container_context(p, &p.spec.as_ref().unwrap().containers[0], &image, node()).unwrap()
    }

    fn verify(p: &Pod, image: ImageUser) -> Result<(), String> {
        verify_run_as_non_root(p, &p.spec.as_ref().unwrap().containers[0], &image).map_err(|e| e.to_string())
    }

    #[test]
    fn container_fields_override_the_pods() {
        let p = pod(serde_json::json!({
            "pod": {"runAsUser": 1000, "runAsGroup": 2000, "runAsNonRoot": true, "fsGroup": 3000, "supplementalGroups": [4000, 4001]},
            "container": {"runAsUser": 1001, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
                          "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}}
        }));
        let sc = ctx(&p, ImageUser::Uid(0));
        assert_eq!(sc.run_as_user, Some(api::Int64Value { value: 1001 }));
        assert_eq!(sc.run_as_group, Some(api::Int64Value { value: 2000 }));
        assert!(sc.readonly_rootfs && sc.no_new_privs && !sc.privileged);
        assert_eq!(sc.supplemental_groups, [3000, 4000, 4001]);
        let caps = sc.capabilities.unwrap();
        assert_eq!((caps.add_capabilities, caps.drop_capabilities), (vec!["NET_ADMIN".into()], vec!["ALL".into()]));
        assert_eq!(sc.masked_paths.len(), MASKED_PATHS.len());
        assert_eq!(sc.readonly_paths.len(), READONLY_PATHS.len());
    }

    #[test]
    fn without_run_as_user_the_image_user_is_used() {
        let p = pod(serde_json::json!({}));
        assert_eq!(ctx(&p, ImageUser::Uid(1000)).run_as_user, Some(api::Int64Value { value: 1000 }));
        let named = ctx(&p, ImageUser::Name("nobody".into()));
        assert_eq!((named.run_as_user, named.run_as_username.as_str()), (None, "nobody"));
        // Nothing set: no capabilities message, no no_new_privs, Unconfined seccomp, no AppArmor.
        let sc = ctx(&p, ImageUser::Uid(0));
        assert!(sc.capabilities.is_none() && !sc.no_new_privs && sc.apparmor.is_none());
        assert_eq!(sc.seccomp.unwrap().profile_type, ProfileType::Unconfined as i32);
        assert_eq!(ImageUser::of(None), ImageUser::Uid(0));
        let img = |uid: Option<i64>, name: &str| api::Image {
            uid: uid.map(|value| api::Int64Value { value }),
            username: name.into(),
            ..Default::default()
        };
        assert_eq!(ImageUser::of(Some(&img(Some(7), "x"))), ImageUser::Uid(7));
        assert_eq!(ImageUser::of(Some(&img(None, "nobody"))), ImageUser::Name("nobody".into()));
        assert_eq!(ImageUser::of(Some(&img(None, ""))), ImageUser::Uid(0));
    }

    #[test]
    fn run_as_non_root_is_verified_with_upstreams_messages() {
        let root = pod(serde_json::json!({"pod": {"runAsNonRoot": true, "runAsUser": 0}}));
        assert_eq!(
            verify(&root, ImageUser::Uid(1000)).unwrap_err(),
            r#"container's runAsUser breaks non-root policy (pod: "p_ns(u1)", container: c)"#
        );
        let image = pod(serde_json::json!({"container": {"runAsNonRoot": true}}));
        assert_eq!(
            verify(&image, ImageUser::Uid(0)).unwrap_err(),
            r#"container has runAsNonRoot and image will run as root (pod: "p_ns(u1)", container: c)"#
        );
        assert_eq!(
            verify(&image, ImageUser::Name("nobody".into())).unwrap_err(),
            r#"container has runAsNonRoot and image has non-numeric user (nobody), cannot verify user is non-root (pod: "p_ns(u1)", container: c)"#
        );
        assert!(verify(&image, ImageUser::Uid(3_000_000_000)).unwrap_err().contains("invalid user id (3000000000)"));
        assert!(verify(&image, ImageUser::Uid(1000)).is_ok());
        // The container's runAsUser decides over the image; false or unset checks nothing.
        let set = pod(serde_json::json!({"pod": {"runAsNonRoot": true}, "container": {"runAsUser": 5}}));
        assert!(verify(&set, ImageUser::Uid(0)).is_ok());
        let off = pod(serde_json::json!({"pod": {"runAsNonRoot": true}, "container": {"runAsNonRoot": false}}));
        assert!(verify(&off, ImageUser::Uid(0)).is_ok());
    }

    #[test]
    fn seccomp_container_over_pod_over_the_node_default() {
        let root = Path::new("/var/lib/kubelet/seccomp");
        let on = Seccomp { default_runtime_default: true, profile_root: root };
        let t = |p: &Pod, n: Seccomp| {
            let s = seccomp_profile(
                p.spec.as_ref().unwrap().security_context.as_ref(),
                p.spec.as_ref().unwrap().containers[0].security_context.as_ref(),
                n,
            );
            s.map(|s| (ProfileType::try_from(s.profile_type).unwrap(), s.localhost_ref))
        };
        let none = pod(serde_json::json!({}));
        assert_eq!(t(&none, node()).unwrap(), (ProfileType::Unconfined, String::new()));
        assert_eq!(t(&none, on).unwrap(), (ProfileType::RuntimeDefault, String::new()));
        let both = pod(serde_json::json!({
            "pod": {"seccompProfile": {"type": "RuntimeDefault"}},
            "container": {"seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/./audit.json"}}
        }));
        assert_eq!(
            t(&both, node()).unwrap(),
            (ProfileType::Localhost, "/var/lib/kubelet/seccomp/profiles/audit.json".into())
        );
        let pod_only = pod(serde_json::json!({"pod": {"seccompProfile": {"type": "RuntimeDefault"}}}));
        assert_eq!(t(&pod_only, node()).unwrap().0, ProfileType::RuntimeDefault);
        let unconfined = pod(serde_json::json!({"container": {"seccompProfile": {"type": "Unconfined"}}}));
        assert_eq!(t(&unconfined, on).unwrap().0, ProfileType::Unconfined);
        let missing = pod(serde_json::json!({"container": {"seccompProfile": {"type": "Localhost"}}}));
        assert_eq!(t(&missing, node()).unwrap_err(), Error::SeccompLocalhostWithoutProfile);
    }

    #[test]
    fn apparmor_container_field_then_annotation_then_pod_field() {
        let p = pod(serde_json::json!({
            "annotations": {"container.apparmor.security.beta.kubernetes.io/c": "localhost/k8s-deny-write"},
            "pod": {"appArmorProfile": {"type": "RuntimeDefault"}}
        }));
        let sc = ctx(&p, ImageUser::Uid(0));
        let a = sc.apparmor.unwrap();
        assert_eq!((a.profile_type, a.localhost_ref.as_str()), (ProfileType::Localhost as i32, "k8s-deny-write"));
        #[allow(deprecated)]
        let deprecated = sc.apparmor_profile.clone();
        assert_eq!(deprecated, "localhost/k8s-deny-write");
        let field = pod(serde_json::json!({
            "annotations": {"container.apparmor.security.beta.kubernetes.io/c": "localhost/x"},
            "container": {"appArmorProfile": {"type": "Unconfined"}}
        }));
        let t = |p: &Pod| ctx(p, ImageUser::Uid(0)).apparmor.map(|a| a.profile_type);
        assert_eq!(t(&field), Some(ProfileType::Unconfined as i32));
        let pod_level = pod(serde_json::json!({"pod": {"appArmorProfile": {"type": "RuntimeDefault"}}}));
        assert_eq!(t(&pod_level), Some(ProfileType::RuntimeDefault as i32));
    }

    #[test]
    fn unmasked_proc_has_no_masked_or_readonly_paths_and_policies_map() {
        let p = pod(
            serde_json::json!({"container": {"procMount": "Unmasked"}, "pod": {"supplementalGroupsPolicy": "Strict"}}),
        );
        let sc = ctx(&p, ImageUser::Uid(0));
        assert!(sc.masked_paths.is_empty() && sc.readonly_paths.is_empty());
        assert_eq!(sc.supplemental_groups_policy, api::SupplementalGroupsPolicy::Strict as i32);
        let bad = pod(serde_json::json!({"pod": {"supplementalGroupsPolicy": "Loose"}}));
        let err = container_context(&bad, &bad.spec.as_ref().unwrap().containers[0], &ImageUser::Uid(0), node());
        assert_eq!(err.unwrap_err().to_string(), "unsupported supplementalGroupsPolicy: Loose");
    }
}
