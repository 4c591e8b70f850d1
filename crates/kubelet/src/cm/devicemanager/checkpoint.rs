//! `<root-dir>/device-plugins/kubelet_internal_checkpoint` in upstream's format (devicemanager
//! checkpoint v2, `checkpoint.Data`): `{"Data": {"PodDeviceEntries": [...], "RegisteredDevices":
//! {...}}, "Checksum": N}`. Each entry is one container's devices of one resource, by NUMA node
//! (`-1`: no topology), with the plugin's AllocateResponse as protobuf bytes (base64 in JSON).
//!
//! The checksum is upstream's `checksum.New(data)`: FNV-32a over the text Go's
//! `hashutil.DeepHashObject` prints for the data (go-spew with `%#v`, sorted map keys), which
//! [`spew`] reproduces for this one type, so a Go kubelet's file verifies here and ours there.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// The checkpoint file's name in the device-plugins directory (kubeletDeviceManagerCheckpoint).
pub const FILE_NAME: &str = "kubelet_internal_checkpoint";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the device manager checkpoint {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("writing the device manager checkpoint {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("decoding the device manager checkpoint {path}: {source}")]
    Decode { path: String, source: serde_json::Error },
    /// Upstream's ErrCorruptCheckpoint.
    #[error("checkpoint is corrupted")]
    Corrupt,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One container's devices of one resource (upstream's PodDevicesEntry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(rename = "PodUID")]
    pub pod_uid: String,
    #[serde(rename = "ContainerName")]
    pub container_name: String,
    #[serde(rename = "ResourceName")]
    pub resource_name: String,
    /// NUMA node → device IDs (`-1` for devices without topology).
    #[serde(rename = "DeviceIDs")]
    pub device_ids: BTreeMap<i64, Vec<String>>,
    /// The plugin's ContainerAllocateResponse, protobuf-encoded.
    #[serde(rename = "AllocResp", with = "base64_bytes")]
    pub alloc_resp: Option<Vec<u8>>,
}

/// What is checksummed (upstream's checkpointData).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Data {
    /// None is Go's nil slice (`null`), what a Go kubelet writes with no allocations.
    #[serde(rename = "PodDeviceEntries")]
    pub entries: Option<Vec<Entry>>,
    /// Resource → its healthy device IDs when written.
    #[serde(rename = "RegisteredDevices")]
    pub registered: Option<BTreeMap<String, Vec<String>>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct File {
    #[serde(rename = "Data")]
    data: Data,
    #[serde(rename = "Checksum")]
    checksum: u64,
}

mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            None => s.serialize_none(),
            Some(b) => s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b)),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| base64::engine::general_purpose::STANDARD.decode(t.as_bytes()).map_err(serde::de::Error::custom))
            .transpose()
    }
}

fn spew_strings(out: &mut String, v: &[String]) {
    out.push('[');
    out.push_str(&v.join(" "));
    out.push(']');
}

/// The text go-spew prints for `checkpointData` with `%#v` (types on the outer value and on
/// struct fields, not on slice elements or map keys and values; nil as `<nil>`; map keys sorted).
pub fn spew(data: &Data) -> String {
    let mut out = String::from("(checkpoint.checkpointData){PodDeviceEntries:([]checkpoint.PodDevicesEntry)");
    match &data.entries {
        None => out.push_str("<nil>"),
        Some(entries) => {
            out.push('[');
            for (i, e) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                let _ = write!(
                    out,
                    "{{PodUID:(string){} ContainerName:(string){} ResourceName:(string){} DeviceIDs:(checkpoint.DevicesPerNUMA)map[",
                    e.pod_uid, e.container_name, e.resource_name
                );
                for (j, (node, ids)) in e.device_ids.iter().enumerate() {
                    if j > 0 {
                        out.push(' ');
                    }
                    let _ = write!(out, "{node}:");
                    spew_strings(&mut out, ids);
                }
                out.push_str("] AllocResp:([]uint8)");
                match &e.alloc_resp {
                    None => out.push_str("<nil>"),
                    Some(b) => {
                        let bytes: Vec<String> = b.iter().map(u8::to_string).collect();
                        spew_strings(&mut out, &bytes);
                    }
                }
                out.push('}');
            }
            out.push(']');
        }
    }
    out.push_str(" RegisteredDevices:(map[string][]string)");
    match &data.registered {
        None => out.push_str("<nil>"),
        Some(map) => {
            out.push_str("map[");
            for (i, (res, ids)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                let _ = write!(out, "{res}:");
                spew_strings(&mut out, ids);
            }
            out.push(']');
        }
    }
    out.push('}');
    out
}

/// FNV-32a of `text` (upstream's checksum hasher).
fn fnv32a(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// Upstream's checksum of the data.
pub fn checksum(data: &Data) -> u64 {
    u64::from(fnv32a(&spew(data)))
}

/// The file's bytes: the data and its checksum.
pub fn encode(data: &Data) -> Vec<u8> {
    let file = File { data: data.clone(), checksum: checksum(data) };
    serde_json::to_vec(&file).unwrap_or_default()
}

/// Parses a checkpoint and verifies its checksum.
pub fn decode(bytes: &[u8], path: &Path) -> Result<Data> {
    let file: File =
        serde_json::from_slice(bytes).map_err(|source| Error::Decode { path: path.display().to_string(), source })?;
    if checksum(&file.data) != file.checksum {
        return Err(Error::Corrupt);
    }
    Ok(file.data)
}

/// Reads the checkpoint in `dir`; None when there is none.
pub fn read(dir: &Path) -> Result<Option<Data>> {
    let path = dir.join(FILE_NAME);
    match std::fs::read(&path) {
        Ok(bytes) => decode(&bytes, &path).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Read { path: path.display().to_string(), source }),
    }
}

/// Writes the checkpoint in `dir` atomically (a temporary file renamed over it).
pub fn write(dir: &Path, data: &Data) -> Result<()> {
    let path = dir.join(FILE_NAME);
    let tmp = dir.join(format!(".{FILE_NAME}.tmp"));
    let err = |source| Error::Write { path: path.display().to_string(), source };
    std::fs::create_dir_all(dir).map_err(err)?;
    std::fs::write(&tmp, encode(data)).map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Data {
        Data {
            entries: Some(vec![Entry {
                pod_uid: "pod1".into(),
                container_name: "con1".into(),
                resource_name: "example.com/widget".into(),
                device_ids: BTreeMap::from([(-1, vec!["dev1".into(), "dev2".into()]), (0, vec!["dev3".into()])]),
                alloc_resp: Some(vec![10, 4, 8, 1]),
            }]),
            registered: Some(BTreeMap::from([("example.com/widget".into(), vec!["dev1".into(), "dev2".into()])])),
        }
    }

    #[test]
    fn spew_text_follows_go_spew_percent_hash_v() {
        assert_eq!(
            spew(&sample()),
            "(checkpoint.checkpointData){PodDeviceEntries:([]checkpoint.PodDevicesEntry)[{PodUID:(string)pod1 \
             ContainerName:(string)con1 ResourceName:(string)example.com/widget \
             DeviceIDs:(checkpoint.DevicesPerNUMA)map[-1:[dev1 dev2] 0:[dev3]] AllocResp:([]uint8)[10 4 8 1]}] \
             RegisteredDevices:(map[string][]string)map[example.com/widget:[dev1 dev2]]}"
        );
        let empty = Data { entries: None, registered: Some(BTreeMap::new()) };
        assert_eq!(
            spew(&empty),
            "(checkpoint.checkpointData){PodDeviceEntries:([]checkpoint.PodDevicesEntry)<nil> \
             RegisteredDevices:(map[string][]string)map[]}"
        );
    }

    #[test]
    fn fnv32a_matches_the_reference_vectors() {
        assert_eq!(fnv32a(""), 0x811c9dc5);
        assert_eq!(fnv32a("a"), 0xe40c292c);
        assert_eq!(fnv32a("foobar"), 0xbf9cf968);
    }

    #[test]
    fn a_checkpoint_round_trips_in_upstreams_json_shape() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &sample()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let e = &v["Data"]["PodDeviceEntries"][0];
        assert_eq!(e["PodUID"], "pod1");
        assert_eq!(e["DeviceIDs"]["-1"], serde_json::json!(["dev1", "dev2"]));
        assert_eq!(e["AllocResp"], "CgQIAQ==");
        assert_eq!(v["Data"]["RegisteredDevices"]["example.com/widget"], serde_json::json!(["dev1", "dev2"]));
        assert_eq!(v["Checksum"], checksum(&sample()));
        assert_eq!(read(dir.path()).unwrap(), Some(sample()));
    }

    /// Files written by Go kubelets (an NVIDIA GPU node before any allocation; a node with one
    /// allocated device and its AllocateResponse), checksums as they wrote them.
    const GO_IDLE: &str = r#"{"Data":{"PodDeviceEntries":null,"RegisteredDevices":{"nvidia.com/gpu":["GPU-0650a168-e770-3ea8-8ac3-8a1d419763e0"]}},"Checksum":3952659280}"#;
    const GO_ALLOCATED: &str = r#"{"Data":{"PodDeviceEntries":[{"PodUID":"bf52b2cd-b611-4e79-86b1-280b283185c3","ContainerName":"check","ResourceName":"nvidia.com/gpu","DeviceIDs":{"-1":["tegra"]},"AllocResp":"Ch8KFk5WSURJQV9WSVNJQkxFX0RFVklDRVMSBXRlZ3Jh"}],"RegisteredDevices":{"nvidia.com/gpu":["tegra"]}},"Checksum":3660592824}"#;

    #[test]
    fn go_kubelets_checkpoints_verify_and_are_written_back_identically() {
        for go in [GO_IDLE, GO_ALLOCATED] {
            let data = decode(go.as_bytes(), Path::new("x")).unwrap_or_else(|e| panic!("{e}: {go}"));
            assert_eq!(String::from_utf8(encode(&data)).unwrap(), go);
        }
        let data = decode(GO_ALLOCATED.as_bytes(), Path::new("x")).unwrap();
        let entry = &data.entries.as_ref().unwrap()[0];
        assert_eq!(entry.device_ids, BTreeMap::from([(-1, vec!["tegra".to_string()])]));
        let resp: super::super::proto::ContainerAllocateResponse =
            prost::Message::decode(entry.alloc_resp.as_deref().unwrap()).unwrap();
        assert_eq!(resp.envs.get("NVIDIA_VISIBLE_DEVICES").map(String::as_str), Some("tegra"));
    }

    #[test]
    fn a_go_kubelets_empty_checkpoint_is_read_and_a_tampered_one_refused() {
        // What a Go kubelet writes before any allocation: nil entries, an empty registry map.
        let data = Data { entries: None, registered: Some(BTreeMap::new()) };
        let go = format!(
            r#"{{"Data":{{"PodDeviceEntries":null,"RegisteredDevices":{{}}}},"Checksum":{}}}"#,
            checksum(&data)
        );
        assert_eq!(decode(go.as_bytes(), Path::new("x")).unwrap(), data);
        let tampered = go.replace("{}}", r#"{"r":["d"]}}"#);
        assert!(matches!(decode(tampered.as_bytes(), Path::new("x")), Err(Error::Corrupt)));
    }
}
