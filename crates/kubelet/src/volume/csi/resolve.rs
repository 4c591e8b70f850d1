//! From a pod's volume to what the CSI calls need: PVC → PV → `spec.csi` (or the inline `csi`
//! source), the CSIDriver object's `attachRequired` / `podInfoOnMount` / lifecycle modes, the
//! VolumeAttachment's publish context, secrets, and the volume capability.

use super::client::VolumeRequest;
use super::paths::{self, LIFECYCLE_EPHEMERAL, LIFECYCLE_PERSISTENT};
use super::proto::csi;
use super::{Error, Result};
use crate::api::DynApi;
use csi::volume_capability::access_mode::Mode;
use k8s_openapi::api::core::v1::{Pod, Volume};
use k8s_openapi::api::storage::v1::CSIDriver;
use std::collections::{BTreeMap, HashMap};

/// A volume ready for the CSI calls.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub driver: String,
    /// PV name (claims) or the pod's volume name (inline).
    pub spec_name: String,
    pub lifecycle: &'static str,
    pub readonly: bool,
    pub attachment_id: String,
    pub request: VolumeRequest,
    /// For messages: `PVC default/data (PV pv1, CSI driver d)`.
    pub what: String,
    /// What decides whether the kubelet applies the pod's fsGroup (see `super::fs_group`).
    pub fs_group: FsGroupFacts,
}

/// The facts upstream's supportsFSGroup / getFSGroupPolicy read.
#[derive(Debug, Clone, Default)]
pub struct FsGroupFacts {
    /// The CSIDriver's `fsGroupPolicy`: None without a CSIDriver object, Some("") when the
    /// object has none.
    pub policy: Option<String>,
    pub fs_type: String,
    /// The PV's access modes (None for inline volumes, which are always ReadWriteOnce).
    pub access_modes: Option<Vec<String>>,
}

fn policy_of(obj: Option<&CSIDriver>) -> Option<String> {
    obj.map(|d| d.spec.fs_group_policy.clone().unwrap_or_default())
}

const POD_NAME: &str = "csi.storage.k8s.io/pod.name";
const POD_NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";
const POD_UID: &str = "csi.storage.k8s.io/pod.uid";
const SERVICE_ACCOUNT: &str = "csi.storage.k8s.io/serviceAccount.name";
const EPHEMERAL: &str = "csi.storage.k8s.io/ephemeral";

/// Kubernetes access mode → CSI access mode (ReadWriteOnce when none is given).
pub fn access_mode(k8s: Option<&str>) -> Mode {
    match k8s {
        Some("ReadOnlyMany") => Mode::MultiNodeReaderOnly,
        Some("ReadWriteMany") => Mode::MultiNodeMultiWriter,
        _ => Mode::SingleNodeWriter,
    }
}

fn capability(mode: Mode, fs_type: &str, mount_flags: Vec<String>) -> csi::VolumeCapability {
    csi::VolumeCapability {
        access_mode: Some(csi::volume_capability::AccessMode { mode: mode as i32 }),
        access_type: Some(csi::volume_capability::AccessType::Mount(csi::volume_capability::MountVolume {
            fs_type: fs_type.to_string(),
            mount_flags,
            volume_mount_group: String::new(),
        })),
    }
}

/// The pod attributes drivers with `podInfoOnMount` get in the volume context.
pub fn pod_info(pod: &Pod, ephemeral: bool) -> HashMap<String, String> {
    let m = &pod.metadata;
    let sa = pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_default();
    HashMap::from([
        (POD_NAME.to_string(), m.name.clone().unwrap_or_default()),
        (POD_NAMESPACE.to_string(), m.namespace.clone().unwrap_or_default()),
        (POD_UID.to_string(), m.uid.clone().unwrap_or_default()),
        (SERVICE_ACCOUNT.to_string(), sa),
        (EPHEMERAL.to_string(), ephemeral.to_string()),
    ])
}

fn to_hash(m: Option<&BTreeMap<String, String>>) -> HashMap<String, String> {
    m.map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default()
}

async fn secret_data(api: &DynApi, ns: &str, name: &str, what: &str) -> Result<HashMap<String, String>> {
    let s = api
        .get_secret(ns, name)
        .await
        .map_err(|source| Error::Api { what: format!("{what}: getting secret {ns}/{name}"), source })?
        .ok_or_else(|| Error::Resolve(format!("{what}: secret {ns}/{name} not found")))?;
    let mut out: HashMap<String, String> = to_hash(s.string_data.as_ref());
    for (k, v) in s.data.unwrap_or_default() {
        out.insert(k, String::from_utf8_lossy(&v.0).into_owned());
    }
    Ok(out)
}

async fn csi_driver(api: Option<&DynApi>, driver: &str) -> Result<Option<CSIDriver>> {
    match api {
        Some(api) => api
            .get_csi_driver(driver)
            .await
            .map_err(|source| Error::Api { what: format!("getting CSIDriver {driver}"), source }),
        None => Ok(None),
    }
}

pub async fn resolve(api: Option<&DynApi>, node_name: &str, pod: &Pod, volume: &Volume) -> Result<Resolved> {
    if let Some(src) = &volume.persistent_volume_claim {
        let api = api.ok_or_else(|| {
            Error::Resolve(format!(
                "persistentVolumeClaim {:?}: claims need the API server (--kubeconfig)",
                src.claim_name
            ))
        })?;
        return claim(api, node_name, pod, &src.claim_name, src.read_only.unwrap_or(false)).await;
    }
    if let Some(src) = &volume.csi {
        return inline(api, pod, volume, src).await;
    }
    Err(Error::Resolve(format!("volume {:?} is neither a persistentVolumeClaim nor a csi volume", volume.name)))
}

async fn claim(api: &DynApi, node_name: &str, pod: &Pod, claim: &str, read_only: bool) -> Result<Resolved> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let pvc = api
        .get_persistent_volume_claim(ns, claim)
        .await
        .map_err(|source| Error::Api { what: format!("getting PVC {ns}/{claim}"), source })?
        .ok_or_else(|| Error::Resolve(format!("persistentvolumeclaim {claim:?} not found")))?;
    let phase = pvc.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
    let pv_name = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()).unwrap_or_default();
    if phase != "Bound" || pv_name.is_empty() {
        return Err(Error::Resolve(format!(
            "PVC {ns}/{claim} has non-bound phase ({phase:?}) or empty pvc.Spec.VolumeName ({pv_name:?})"
        )));
    }
    let pv = api
        .get_persistent_volume(&pv_name)
        .await
        .map_err(|source| Error::Api { what: format!("getting PV {pv_name} (PVC {ns}/{claim})"), source })?
        .ok_or_else(|| Error::Resolve(format!("persistentvolume {pv_name:?} (bound to PVC {ns}/{claim}) not found")))?;
    let spec = pv.spec.unwrap_or_default();
    match &spec.claim_ref {
        None => {
            return Err(Error::Resolve(format!(
                "PV {pv_name} has no spec.claimRef: it is not bound to PVC {ns}/{claim}"
            )));
        }
        Some(r) => {
            let names_claim = r.name.as_deref() == Some(claim) && r.namespace.as_deref().unwrap_or(ns) == ns;
            let uid_ok = match (&r.uid, &pvc.metadata.uid) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            };
            if !names_claim || !uid_ok {
                return Err(Error::Resolve(format!("PV {pv_name}: spec.claimRef does not point to PVC {ns}/{claim}")));
            }
        }
    }
    if spec.volume_mode.as_deref() == Some("Block") {
        return Err(Error::Resolve(format!(
            "PV {pv_name} (PVC {ns}/{claim}): raw block volumes (volumeMode Block) are not supported"
        )));
    }
    let src = spec.csi.ok_or_else(|| Error::Resolve(format!("PV {pv_name} (PVC {ns}/{claim}) is not a CSI volume")))?;
    let driver = src.driver.clone();
    let handle = src.volume_handle.clone();
    let what = format!("PVC {ns}/{claim} (PV {pv_name}, CSI driver {driver})");
    let obj = csi_driver(Some(api), &driver).await.map_err(|e| e.context(&what))?;
    // A driver without a CSIDriver object needs attaching (upstream's default).
    let attach_required = obj.as_ref().and_then(|d| d.spec.attach_required).unwrap_or(true);
    let pod_info_on_mount = obj.as_ref().and_then(|d| d.spec.pod_info_on_mount).unwrap_or(false);
    let attachment_id = paths::attachment_name(&handle, &driver, node_name);
    let publish_context = if attach_required {
        attached(api, &attachment_id, &handle, &driver, node_name).await?
    } else {
        HashMap::new()
    };
    let mut request = VolumeRequest {
        volume_id: handle,
        publish_context,
        capability: capability(
            access_mode(spec.access_modes.as_ref().and_then(|m| m.first()).map(String::as_str)),
            src.fs_type.as_deref().unwrap_or_default(),
            spec.mount_options.clone().unwrap_or_default(),
        ),
        secrets: HashMap::new(),
        volume_context: to_hash(src.volume_attributes.as_ref()),
    };
    if let Some(r) = &src.node_stage_secret_ref {
        request.secrets =
            secret_data(api, r.namespace.as_deref().unwrap_or(ns), r.name.as_deref().unwrap_or_default(), &what)
                .await?;
    }
    if let Some(r) = &src.node_publish_secret_ref {
        let publish =
            secret_data(api, r.namespace.as_deref().unwrap_or(ns), r.name.as_deref().unwrap_or_default(), &what)
                .await?;
        request.secrets.extend(publish);
    }
    if pod_info_on_mount {
        request.volume_context.extend(pod_info(pod, false));
    }
    Ok(Resolved {
        driver,
        spec_name: pv_name,
        lifecycle: LIFECYCLE_PERSISTENT,
        readonly: read_only || src.read_only.unwrap_or(false),
        attachment_id,
        request,
        what,
        fs_group: FsGroupFacts {
            policy: policy_of(obj.as_ref()),
            fs_type: src.fs_type.clone().unwrap_or_default(),
            access_modes: spec.access_modes.clone(),
        },
    })
}

/// The VolumeAttachment's publish context once attached; an error (retried) until then.
async fn attached(api: &DynApi, name: &str, handle: &str, driver: &str, node: &str) -> Result<HashMap<String, String>> {
    let waiting = || {
        format!(
            "waiting for VolumeAttachment {name} (volume handle {handle:?}, CSI driver {driver}, node {node}) to be attached"
        )
    };
    let va = api
        .get_volume_attachment(name)
        .await
        .map_err(|source| Error::Api { what: format!("getting VolumeAttachment {name}"), source })?;
    let Some(va) = va else { return Err(Error::Resolve(waiting())) };
    if va.metadata.deletion_timestamp.is_some() {
        return Err(Error::Resolve(format!("VolumeAttachment {name} is being deleted")));
    }
    let status = va.status.unwrap_or_default();
    if status.attached {
        return Ok(to_hash(status.attachment_metadata.as_ref()));
    }
    match status.attach_error.and_then(|e| e.message) {
        Some(msg) => Err(Error::Resolve(format!("VolumeAttachment {name}: attach failed: {msg}"))),
        None => Err(Error::Resolve(waiting())),
    }
}

async fn inline(
    api: Option<&DynApi>,
    pod: &Pod,
    volume: &Volume,
    src: &k8s_openapi::api::core::v1::CSIVolumeSource,
) -> Result<Resolved> {
    let driver = src.driver.clone();
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let what = format!("inline CSI volume {:?} (CSI driver {driver})", volume.name);
    let obj = csi_driver(api, &driver).await.map_err(|e| e.context(&what))?;
    if api.is_some() {
        let modes = obj.as_ref().map(|d| d.spec.volume_lifecycle_modes.clone().unwrap_or_default());
        match modes {
            None => {
                return Err(Error::Resolve(format!(
                    "{what}: no CSIDriver object, so inline (Ephemeral) volumes are not allowed"
                )));
            }
            Some(m) if !m.iter().any(|x| x == LIFECYCLE_EPHEMERAL) => {
                return Err(Error::Resolve(format!(
                    "{what}: volume mode \"Ephemeral\" not supported by driver {driver} (only supports {m:?})"
                )));
            }
            _ => {}
        }
    }
    let mut request = VolumeRequest {
        volume_id: paths::ephemeral_volume_handle(&uid, &volume.name),
        publish_context: HashMap::new(),
        capability: capability(Mode::SingleNodeWriter, src.fs_type.as_deref().unwrap_or_default(), Vec::new()),
        secrets: HashMap::new(),
        volume_context: to_hash(src.volume_attributes.as_ref()),
    };
    if let (Some(api), Some(name)) =
        (api, src.node_publish_secret_ref.as_ref().map(|r| r.name.as_str()).filter(|n| !n.is_empty()))
    {
        request.secrets = secret_data(api, ns, name, &what).await?;
    }
    if obj.as_ref().and_then(|d| d.spec.pod_info_on_mount).unwrap_or(false) {
        request.volume_context.extend(pod_info(pod, true));
    }
    Ok(Resolved {
        driver,
        spec_name: volume.name.clone(),
        lifecycle: LIFECYCLE_EPHEMERAL,
        readonly: src.read_only.unwrap_or(false),
        attachment_id: String::new(),
        request,
        what,
        fs_group: FsGroupFacts {
            policy: policy_of(obj.as_ref()),
            fs_type: src.fs_type.clone().unwrap_or_default(),
            access_modes: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fake::FakeApi;
    use k8s_openapi::api::core::v1::{
        CSIPersistentVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec,
        PersistentVolumeClaimStatus, PersistentVolumeClaimVolumeSource, PersistentVolumeSpec, PodSpec,
    };
    use k8s_openapi::api::storage::v1::{
        CSIDriverSpec, VolumeAttachment, VolumeAttachmentSource, VolumeAttachmentSpec, VolumeAttachmentStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::sync::Arc;

    fn meta(ns: Option<&str>, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: ns.map(Into::into),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        }
    }

    fn pod() -> Pod {
        Pod {
            metadata: meta(Some("ns"), "web"),
            spec: Some(PodSpec { service_account_name: Some("sa".into()), ..Default::default() }),
            ..Default::default()
        }
    }

    fn claim_volume() -> Volume {
        Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: "claim".into(),
                read_only: None,
            }),
            ..Default::default()
        }
    }

    /// A PV bound to ns/claim, attribute `a=b`, ReadOnlyMany.
    fn fake(bound: bool, attach_required: Option<bool>) -> FakeApi {
        let f = FakeApi::new();
        f.put_persistent_volume_claim(PersistentVolumeClaim {
            metadata: meta(Some("ns"), "claim"),
            spec: Some(PersistentVolumeClaimSpec { volume_name: Some("pv1".into()), ..Default::default() }),
            status: Some(PersistentVolumeClaimStatus {
                phase: Some(if bound { "Bound" } else { "Pending" }.into()),
                ..Default::default()
            }),
        });
        f.put_persistent_volume(PersistentVolume {
            metadata: meta(None, "pv1"),
            spec: Some(PersistentVolumeSpec {
                access_modes: Some(vec!["ReadOnlyMany".into()]),
                mount_options: Some(vec!["noatime".into()]),
                claim_ref: Some(ObjectReference {
                    name: Some("claim".into()),
                    namespace: Some("ns".into()),
                    uid: Some("uid-claim".into()),
                    ..Default::default()
                }),
                csi: Some(CSIPersistentVolumeSource {
                    driver: "d.example.com".into(),
                    volume_handle: "vol-1".into(),
                    fs_type: Some("ext4".into()),
                    volume_attributes: Some(BTreeMap::from([("a".to_string(), "b".to_string())])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        if let Some(a) = attach_required {
            f.put_csi_driver(CSIDriver {
                metadata: meta(None, "d.example.com"),
                spec: CSIDriverSpec { attach_required: Some(a), pod_info_on_mount: Some(true), ..Default::default() },
            });
        }
        f
    }

    #[tokio::test]
    async fn a_bound_claim_resolves_to_its_csi_volume() {
        let api: DynApi = Arc::new(fake(true, Some(false)));
        let r = resolve(Some(&api), "node1", &pod(), &claim_volume()).await.unwrap();
        assert_eq!((r.driver.as_str(), r.spec_name.as_str(), r.lifecycle), ("d.example.com", "pv1", "Persistent"));
        assert_eq!(r.request.volume_id, "vol-1");
        assert_eq!(r.attachment_id, paths::attachment_name("vol-1", "d.example.com", "node1"));
        let cap = &r.request.capability;
        assert_eq!(cap.access_mode.unwrap().mode, Mode::MultiNodeReaderOnly as i32);
        let Some(csi::volume_capability::AccessType::Mount(m)) = &cap.access_type else { panic!("mount") };
        assert_eq!((m.fs_type.as_str(), m.mount_flags.clone()), ("ext4", vec!["noatime".to_string()]));
        let ctx = &r.request.volume_context;
        assert_eq!(ctx["a"], "b");
        assert_eq!(ctx[POD_NAME], "web");
        assert_eq!(ctx[POD_NAMESPACE], "ns");
        assert_eq!(ctx[POD_UID], "uid-web");
        assert_eq!(ctx[SERVICE_ACCOUNT], "sa");
        assert_eq!(ctx[EPHEMERAL], "false");
        assert!(!r.readonly);
    }

    #[tokio::test]
    async fn an_unbound_or_missing_claim_is_a_user_facing_error() {
        let api: DynApi = Arc::new(fake(false, Some(false)));
        let e = resolve(Some(&api), "n", &pod(), &claim_volume()).await.unwrap_err().to_string();
        assert!(e.contains("PVC ns/claim has non-bound phase (\"Pending\")"), "{e}");
        let api: DynApi = Arc::new(FakeApi::new());
        let e = resolve(Some(&api), "n", &pod(), &claim_volume()).await.unwrap_err().to_string();
        assert_eq!(e, "persistentvolumeclaim \"claim\" not found");
        let f = fake(true, Some(false));
        let mut pv = crate::api::Api::get_persistent_volume(&f, "pv1").await.unwrap().unwrap();
        pv.spec.as_mut().unwrap().volume_mode = Some("Block".into());
        f.put_persistent_volume(pv);
        let api: DynApi = Arc::new(f);
        let e = resolve(Some(&api), "n", &pod(), &claim_volume()).await.unwrap_err().to_string();
        assert!(e.contains("volumeMode Block"), "{e}");
        let e = resolve(None, "n", &pod(), &claim_volume()).await.unwrap_err().to_string();
        assert!(e.contains("need the API server"), "{e}");
    }

    #[tokio::test]
    async fn attach_required_waits_for_the_volume_attachment() {
        // No CSIDriver object: attach is required.
        for f in [fake(true, None), fake(true, Some(true))] {
            let api: DynApi = Arc::new(f.clone());
            let name = paths::attachment_name("vol-1", "d.example.com", "n");
            let e = resolve(Some(&api), "n", &pod(), &claim_volume()).await.unwrap_err().to_string();
            assert!(e.starts_with(&format!("waiting for VolumeAttachment {name}")), "{e}");
            let mut va = VolumeAttachment {
                metadata: meta(None, &name),
                spec: VolumeAttachmentSpec {
                    attacher: "d.example.com".into(),
                    node_name: "n".into(),
                    source: VolumeAttachmentSource { persistent_volume_name: Some("pv1".into()), ..Default::default() },
                },
                status: Some(VolumeAttachmentStatus { attached: false, ..Default::default() }),
            };
            f.put_volume_attachment(va.clone());
            assert!(
                resolve(Some(&api), "n", &pod(), &claim_volume())
                    .await
                    .unwrap_err()
                    .to_string()
                    .contains("waiting for")
            );
            va.status = Some(VolumeAttachmentStatus {
                attached: true,
                attachment_metadata: Some(BTreeMap::from([("dev".to_string(), "/dev/x".to_string())])),
                ..Default::default()
            });
            f.put_volume_attachment(va);
            let r = resolve(Some(&api), "n", &pod(), &claim_volume()).await.unwrap();
            assert_eq!(r.request.publish_context["dev"], "/dev/x");
        }
    }

    #[tokio::test]
    async fn inline_volumes_need_the_ephemeral_mode() {
        let vol = Volume {
            name: "scratch".into(),
            csi: Some(k8s_openapi::api::core::v1::CSIVolumeSource {
                driver: "d.example.com".into(),
                read_only: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let f = FakeApi::new();
        let api: DynApi = Arc::new(f.clone());
        assert!(resolve(Some(&api), "n", &pod(), &vol).await.unwrap_err().to_string().contains("no CSIDriver object"));
        f.put_csi_driver(CSIDriver {
            metadata: meta(None, "d.example.com"),
            spec: CSIDriverSpec {
                volume_lifecycle_modes: Some(vec!["Persistent".into(), "Ephemeral".into()]),
                pod_info_on_mount: Some(true),
                ..Default::default()
            },
        });
        let r = resolve(Some(&api), "n", &pod(), &vol).await.unwrap();
        assert_eq!(r.request.volume_id, paths::ephemeral_volume_handle("uid-web", "scratch"));
        assert_eq!((r.lifecycle, r.readonly, r.spec_name.as_str()), ("Ephemeral", true, "scratch"));
        assert_eq!(r.request.volume_context[EPHEMERAL], "true");
        // Standalone (no API server): allowed, no pod info.
        let r = resolve(None, "n", &pod(), &vol).await.unwrap();
        assert!(r.request.volume_context.is_empty());
    }
}
