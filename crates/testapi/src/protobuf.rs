//! Decoding of the few protobuf request bodies kubectl's typed clients send (`kubectl create
//! namespace|configmap|secret|serviceaccount`): the `k8s\0` + runtime.Unknown envelope and hand-written
//! field tables for those kinds. Responses are always JSON (kubectl accepts them).

use serde_json::{Map, Value, json};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProtoError {
    #[error("not a Kubernetes protobuf envelope")]
    Envelope,
    #[error("truncated or malformed protobuf")]
    Malformed,
    #[error("protobuf bodies are not supported for kind {0:?}; send JSON")]
    Unsupported(String),
}

#[derive(Clone, Copy)]
enum F {
    Str(&'static str),
    Bool(&'static str),
    Int(&'static str),
    RepStr(&'static str),
    MapStr(&'static str),
    MapBytes(&'static str),
    Msg(&'static str, &'static [(u64, F)]),
    /// `bytes`, as base64 in JSON.
    Bytes(&'static str),
    RepMsg(&'static str, &'static [(u64, F)]),
}

const META: &[(u64, F)] = &[
    (1, F::Str("name")),
    (2, F::Str("generateName")),
    (3, F::Str("namespace")),
    (5, F::Str("uid")),
    (6, F::Str("resourceVersion")),
    (7, F::Int("generation")),
    (11, F::MapStr("labels")),
    (12, F::MapStr("annotations")),
    (14, F::RepStr("finalizers")),
];
const NAMESPACE: &[(u64, F)] = &[
    (1, F::Msg("metadata", META)),
    (2, F::Msg("spec", &[(1, F::RepStr("finalizers"))])),
    (3, F::Msg("status", &[(1, F::Str("phase"))])),
];
const CONFIGMAP: &[(u64, F)] =
    &[(1, F::Msg("metadata", META)), (2, F::MapStr("data")), (3, F::MapBytes("binaryData")), (4, F::Bool("immutable"))];
const SECRET: &[(u64, F)] = &[
    (1, F::Msg("metadata", META)),
    (2, F::MapBytes("data")),
    (3, F::Str("type")),
    (4, F::MapStr("stringData")),
    (5, F::Bool("immutable")),
];
const SERVICEACCOUNT: &[(u64, F)] = &[(1, F::Msg("metadata", META)), (4, F::Bool("automountServiceAccountToken"))];

const RESOURCE_ATTRIBUTES: &[(u64, F)] = &[
    (1, F::Str("namespace")),
    (2, F::Str("verb")),
    (3, F::Str("group")),
    (4, F::Str("version")),
    (5, F::Str("resource")),
    (6, F::Str("subresource")),
    (7, F::Str("name")),
];
const SELF_SUBJECT_ACCESS_REVIEW: &[(u64, F)] = &[
    (1, F::Msg("metadata", META)),
    (
        2,
        F::Msg(
            "spec",
            &[
                (1, F::Msg("resourceAttributes", RESOURCE_ATTRIBUTES)),
                (2, F::Msg("nonResourceAttributes", &[(1, F::Str("path")), (2, F::Str("verb"))])),
            ],
        ),
    ),
];

// k8s.io/api/certificates/v1 generated.proto (times are left out: the server stamps them).
const CSR_CONDITION: &[(u64, F)] =
    &[(1, F::Str("type")), (6, F::Str("status")), (2, F::Str("reason")), (3, F::Str("message"))];
const CSR: &[(u64, F)] = &[
    (1, F::Msg("metadata", META)),
    (
        2,
        F::Msg(
            "spec",
            &[
                (1, F::Bytes("request")),
                (7, F::Str("signerName")),
                (8, F::Int("expirationSeconds")),
                (5, F::RepStr("usages")),
                (2, F::Str("username")),
                (3, F::Str("uid")),
                (4, F::RepStr("groups")),
            ],
        ),
    ),
    (3, F::Msg("status", &[(1, F::RepMsg("conditions", CSR_CONDITION)), (2, F::Bytes("certificate"))])),
];

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.i).ok_or(ProtoError::Malformed)?;
            self.i += 1;
            v |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ProtoError::Malformed)
    }
    fn bytes(&mut self) -> Result<&'a [u8], ProtoError> {
        let n = self.varint()? as usize;
        let s = self.b.get(self.i..self.i + n).ok_or(ProtoError::Malformed)?;
        self.i += n;
        Ok(s)
    }
    /// Next (field number, wire type); payload read by the caller.
    fn next(&mut self) -> Result<Option<(u64, u64)>, ProtoError> {
        if self.i >= self.b.len() {
            return Ok(None);
        }
        let tag = self.varint()?;
        Ok(Some((tag >> 3, tag & 7)))
    }
    fn skip(&mut self, wire: u64) -> Result<(), ProtoError> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => {
                self.i += 8;
                Ok(())
            }
            2 => self.bytes().map(|_| ()),
            5 => {
                self.i += 4;
                Ok(())
            }
            _ => Err(ProtoError::Malformed),
        }
    }
}

fn text(b: &[u8]) -> Value {
    Value::String(String::from_utf8_lossy(b).into_owned())
}

fn map_entry(b: &[u8], as_bytes: bool) -> Result<(String, Value), ProtoError> {
    let mut r = Reader { b, i: 0 };
    let (mut k, mut v) = (String::new(), json!(""));
    while let Some((field, wire)) = r.next()? {
        match (field, wire) {
            (1, 2) => k = String::from_utf8_lossy(r.bytes()?).into_owned(),
            (2, 2) => {
                let raw = r.bytes()?;
                v = if as_bytes { json!(crate::tls::b64(raw)) } else { text(raw) };
            }
            _ => r.skip(wire)?,
        }
    }
    Ok((k, v))
}

fn message(b: &[u8], schema: &[(u64, F)]) -> Result<Value, ProtoError> {
    let mut r = Reader { b, i: 0 };
    let mut out = Map::new();
    while let Some((field, wire)) = r.next()? {
        let Some((_, f)) = schema.iter().find(|(n, _)| *n == field) else {
            r.skip(wire)?;
            continue;
        };
        match (*f, wire) {
            (F::Str(n), 2) => {
                out.insert(n.into(), text(r.bytes()?));
            }
            (F::Bool(n), 0) => {
                out.insert(n.into(), json!(r.varint()? != 0));
            }
            (F::Int(n), 0) => {
                out.insert(n.into(), json!(r.varint()? as i64));
            }
            (F::RepStr(n), 2) => {
                let v = text(r.bytes()?);
                out.entry(n).or_insert_with(|| json!([])).as_array_mut().ok_or(ProtoError::Malformed)?.push(v);
            }
            (F::MapStr(n) | F::MapBytes(n), 2) => {
                let (k, v) = map_entry(r.bytes()?, matches!(f, F::MapBytes(_)))?;
                out.entry(n).or_insert_with(|| json!({})).as_object_mut().ok_or(ProtoError::Malformed)?.insert(k, v);
            }
            (F::Msg(n, sub), 2) => {
                out.insert(n.into(), message(r.bytes()?, sub)?);
            }
            (F::Bytes(n), 2) => {
                out.insert(n.into(), json!(crate::tls::b64(r.bytes()?)));
            }
            (F::RepMsg(n, sub), 2) => {
                let v = message(r.bytes()?, sub)?;
                out.entry(n).or_insert_with(|| json!([])).as_array_mut().ok_or(ProtoError::Malformed)?.push(v);
            }
            _ => r.skip(wire)?,
        }
    }
    Ok(Value::Object(out))
}

/// Decodes a `k8s\0`-prefixed runtime.Unknown into the JSON object it carries.
pub fn decode(body: &[u8]) -> Result<Value, ProtoError> {
    let rest = body.strip_prefix(b"k8s\0").ok_or(ProtoError::Envelope)?;
    let mut r = Reader { b: rest, i: 0 };
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    while let Some((field, wire)) = r.next()? {
        match (field, wire) {
            (1, 2) => {
                let tm = message(r.bytes()?, &[(1, F::Str("apiVersion")), (2, F::Str("kind"))])?;
                api_version = tm["apiVersion"].as_str().unwrap_or("").into();
                kind = tm["kind"].as_str().unwrap_or("").into();
            }
            (2, 2) => raw = r.bytes()?,
            _ => r.skip(wire)?,
        }
    }
    let schema = match kind.as_str() {
        "Namespace" => NAMESPACE,
        "ConfigMap" => CONFIGMAP,
        "Secret" => SECRET,
        "ServiceAccount" => SERVICEACCOUNT,
        "SelfSubjectAccessReview" => SELF_SUBJECT_ACCESS_REVIEW,
        "SelfSubjectReview" => &[(1, F::Msg("metadata", META))],
        "CertificateSigningRequest" => CSR,
        _ => return Err(ProtoError::Unsupported(kind)),
    };
    let mut obj = message(raw, schema)?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![((n << 3) | 2) as u8, payload.len() as u8];
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decodes_a_configmap() {
        let meta = [field(1, b"cfg"), field(11, &[field(1, b"app"), field(2, b"web")].concat())].concat();
        let obj = [field(1, &meta), field(2, &[field(1, b"k"), field(2, b"v")].concat()), vec![4 << 3, 1]].concat();
        let tm = [field(1, b"v1"), field(2, b"ConfigMap")].concat();
        let body = [b"k8s\0".to_vec(), field(1, &tm), field(2, &obj)].concat();
        let v = decode(&body).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "labels": {"app": "web"}},
                   "data": {"k": "v"}, "immutable": true})
        );
        let tm = [field(1, b"v1"), field(2, b"Pod")].concat();
        assert_eq!(
            decode(&[b"k8s\0".to_vec(), field(1, &tm)].concat()).unwrap_err(),
            ProtoError::Unsupported("Pod".into())
        );
        assert_eq!(decode(b"{}").unwrap_err(), ProtoError::Envelope);
    }
}
