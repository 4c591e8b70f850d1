//! Upstream CSI names and on-disk records: the staging (global mount) path, the pod's target
//! path, the VolumeAttachment name, the ephemeral volume handle, and `vol_data.json`, the record a
//! restarted kubelet tears a volume down from.

use super::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The in-tree name of the CSI volume plugin.
pub const PLUGIN_NAME: &str = "kubernetes.io/csi";
/// Its directory under `pods/<uid>/volumes/` ("/" → "~").
pub const POD_PLUGIN_DIR: &str = "kubernetes.io~csi";
/// The record beside a pod volume's `mount/` and beside a staging `globalmount/`.
pub const VOL_DATA_FILE: &str = "vol_data.json";
/// The published directory inside a pod volume's directory.
pub const MOUNT_DIR: &str = "mount";
/// The staged directory inside a volume's global directory.
pub const GLOBAL_MOUNT_DIR: &str = "globalmount";

pub const LIFECYCLE_PERSISTENT: &str = "Persistent";
pub const LIFECYCLE_EPHEMERAL: &str = "Ephemeral";

/// Lowercase hex of the SHA-256 of `s`.
pub fn sha256_hex(s: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The VolumeAttachment the attach/detach controller creates for a volume on a node:
/// `csi-<sha256(volumeHandle + driver + nodeName)>`.
pub fn attachment_name(volume_handle: &str, driver: &str, node_name: &str) -> String {
    format!("csi-{}", sha256_hex(&format!("{volume_handle}{driver}{node_name}")))
}

/// The volume handle of an inline (ephemeral) CSI volume: `csi-<sha256(podUID + volumeName)>`.
pub fn ephemeral_volume_handle(pod_uid: &str, volume_name: &str) -> String {
    format!("csi-{}", sha256_hex(&format!("{pod_uid}{volume_name}")))
}

/// `<root>/plugins/kubernetes.io/csi`.
pub fn plugin_dir(root_dir: &Path) -> PathBuf {
    root_dir.join("plugins").join(PLUGIN_NAME)
}

/// The volume's global directory `<root>/plugins/kubernetes.io/csi/<driver>/<sha256(handle)>`;
/// it holds `globalmount/` (the staging target) and a `vol_data.json`.
pub fn global_dir(root_dir: &Path, driver: &str, volume_handle: &str) -> PathBuf {
    plugin_dir(root_dir).join(driver).join(sha256_hex(volume_handle))
}

/// The staging target path NodeStageVolume gets.
pub fn staging_path(root_dir: &Path, driver: &str, volume_handle: &str) -> PathBuf {
    global_dir(root_dir, driver, volume_handle).join(GLOBAL_MOUNT_DIR)
}

/// A pod volume's directory `<root>/pods/<uid>/volumes/kubernetes.io~csi/<specName>`, where the
/// spec name is the PV name for a claim and the pod's volume name for an inline volume.
pub fn pod_volume_dir(root_dir: &Path, pod_uid: &str, spec_name: &str) -> PathBuf {
    root_dir.join("pods").join(pod_uid).join("volumes").join(POD_PLUGIN_DIR).join(spec_name)
}

/// The target path NodePublishVolume gets (`<pod volume dir>/mount`).
pub fn target_path(root_dir: &Path, pod_uid: &str, spec_name: &str) -> PathBuf {
    pod_volume_dir(root_dir, pod_uid, spec_name).join(MOUNT_DIR)
}

/// `vol_data.json` (upstream's keys; every value a string). In a pod volume's directory all
/// fields are set; in a global directory only the driver and the handle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolData {
    #[serde(rename = "driverName")]
    pub driver_name: String,
    #[serde(rename = "volumeHandle")]
    pub volume_handle: String,
    #[serde(rename = "specVolID", default, skip_serializing_if = "String::is_empty")]
    pub spec_vol_id: String,
    #[serde(rename = "nodeName", default, skip_serializing_if = "String::is_empty")]
    pub node_name: String,
    #[serde(rename = "attachmentID", default, skip_serializing_if = "String::is_empty")]
    pub attachment_id: String,
    #[serde(rename = "volumeLifecycleMode", default, skip_serializing_if = "String::is_empty")]
    pub lifecycle_mode: String,
}

impl VolData {
    pub fn is_ephemeral(&self) -> bool {
        self.lifecycle_mode == LIFECYCLE_EPHEMERAL
    }

    /// Writes `<dir>/vol_data.json` (through a temporary file, so a crash leaves the old or the
    /// new record, never half of one).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let data = serde_json::to_vec(self).map_err(Error::Encode)?;
        let tmp = dir.join(format!(".{VOL_DATA_FILE}.tmp"));
        let path = dir.join(VOL_DATA_FILE);
        std::fs::write(&tmp, data).and_then(|()| std::fs::rename(&tmp, &path)).map_err(|source| Error::Io {
            what: "writing",
            path,
            source,
        })
    }

    /// Reads `<dir>/vol_data.json`: `Ok(None)` when there is none.
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(VOL_DATA_FILE);
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(Error::Io { what: "reading", path, source }),
        };
        let v: Self = match serde_json::from_slice(&data) {
            Ok(v) => v,
            Err(source) => return Err(Error::Decode { path, source }),
        };
        if v.driver_name.is_empty() || v.volume_handle.is_empty() {
            return Err(Error::IncompleteRecord(path));
        }
        Ok(Some(v))
    }
}

/// Whether `path` is a mount point in this mount namespace (/proc/self/mountinfo, which lists
/// resolved paths: a root dir behind a symlink is resolved first).
pub fn is_mount_point(path: &Path) -> bool {
    mount_count(path) > 0
}

/// The mount points listed in a mountinfo text (field 5, octal escapes decoded).
pub fn mount_points(mountinfo: &str) -> impl Iterator<Item = PathBuf> + '_ {
    mountinfo.lines().filter_map(|l| l.split(' ').nth(4)).map(|p| PathBuf::from(unescape_octal(p)))
}

/// How often `path` is mounted (a bind mount stacked twice counts two).
pub fn mount_count(path: &Path) -> usize {
    let real = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo").map_or(0, |m| mount_points(&m).filter(|p| *p == real).count())
}

fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_upstream() {
        // sha256("") and sha256("abc") are well known.
        assert_eq!(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(attachment_name("a", "b", "c"), format!("csi-{}", sha256_hex("abc")));
        assert_eq!(
            attachment_name("a", "b", "c"),
            "csi-ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(ephemeral_volume_handle("uid", "vol"), format!("csi-{}", sha256_hex("uidvol")));
        let root = Path::new("/var/lib/kubelet");
        assert_eq!(
            staging_path(root, "hostpath.test.csi", "abc"),
            PathBuf::from(
                "/var/lib/kubelet/plugins/kubernetes.io/csi/hostpath.test.csi/\
                 ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad/globalmount"
            )
        );
        assert_eq!(
            target_path(root, "u-1", "pv-a"),
            PathBuf::from("/var/lib/kubelet/pods/u-1/volumes/kubernetes.io~csi/pv-a/mount")
        );
    }

    #[test]
    fn vol_data_round_trips_with_upstream_keys() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(VolData::load(dir.path()).unwrap(), None);
        let d = VolData {
            driver_name: "d".into(),
            volume_handle: "h".into(),
            spec_vol_id: "pv".into(),
            node_name: "n".into(),
            attachment_id: attachment_name("h", "d", "n"),
            lifecycle_mode: LIFECYCLE_PERSISTENT.into(),
        };
        d.save(dir.path()).unwrap();
        let raw: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(VOL_DATA_FILE)).unwrap()).unwrap();
        for k in ["driverName", "volumeHandle", "specVolID", "nodeName", "attachmentID", "volumeLifecycleMode"] {
            assert!(raw[k].is_string(), "{k} in {raw}");
        }
        assert_eq!(VolData::load(dir.path()).unwrap(), Some(d));
        // A global record has only the driver and the handle.
        std::fs::write(dir.path().join(VOL_DATA_FILE), r#"{"driverName":"d","volumeHandle":"h"}"#).unwrap();
        assert!(!VolData::load(dir.path()).unwrap().unwrap().is_ephemeral());
        std::fs::write(dir.path().join(VOL_DATA_FILE), r#"{"driverName":"d"}"#).unwrap();
        assert!(VolData::load(dir.path()).is_err());
    }

    #[test]
    fn mountinfo_paths_are_unescaped() {
        let mi = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n\
                  37 35 98:0 / /var/lib/kubelet/pods/x/volumes/kubernetes.io~csi/pv/mount rw - ext4 /dev/sda rw\n";
        let v: Vec<PathBuf> = mount_points(mi).collect();
        assert_eq!(v[0], PathBuf::from("/mnt/with space"));
        assert_eq!(v[1], PathBuf::from("/var/lib/kubelet/pods/x/volumes/kubernetes.io~csi/pv/mount"));
        assert!(is_mount_point(Path::new("/proc")));
        assert!(is_mount_point(Path::new("/proc/../proc")));
        assert!(!is_mount_point(Path::new("/proc/self")));
    }
}
