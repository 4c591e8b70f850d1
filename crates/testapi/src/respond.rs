//! Response helpers: JSON bodies and Kubernetes `Status` errors.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::{Response, StatusCode};
use serde_json::{Value, json};

use crate::store::StoreError;

pub type Body = BoxBody<Bytes, std::io::Error>;

pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into()).map_err(|never| match never {}).boxed()
}

pub fn json_response(code: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(full(serde_json::to_vec(v).unwrap_or_default()));
    *r.status_mut() = code;
    r.headers_mut().insert("content-type", "application/json".parse().unwrap());
    r
}

pub fn ok(v: &Value) -> Response<Body> {
    json_response(StatusCode::OK, v)
}

/// A `Status` failure object, as the API server sends it.
pub fn status_object(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut s = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    if let Some(d) = details {
        s["details"] = d;
    }
    s
}

pub fn error(code: u16, reason: &str, message: &str) -> Response<Body> {
    let sc = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(sc, &status_object(code, reason, message, None))
}

pub fn store_error_status(e: &StoreError) -> Value {
    let msg = e.to_string();
    match e {
        StoreError::NotFound { resource, name } => {
            status_object(404, "NotFound", &msg, Some(json!({"name": name, "kind": resource})))
        }
        StoreError::AlreadyExists { resource, name } => {
            status_object(409, "AlreadyExists", &msg, Some(json!({"name": name, "kind": resource})))
        }
        StoreError::Conflict { resource, name } => {
            status_object(409, "Conflict", &msg, Some(json!({"name": name, "kind": resource})))
        }
        StoreError::Expired { .. } => status_object(410, "Expired", &msg, None),
        StoreError::Invalid(_) => status_object(422, "Invalid", &msg, None),
    }
}

pub fn store_error(e: &StoreError) -> Response<Body> {
    let s = store_error_status(e);
    let code = s["code"].as_u64().unwrap_or(500) as u16;
    json_response(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), &s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_objects_look_like_kubernetes() {
        let s = store_error_status(&StoreError::NotFound { resource: "pods".into(), name: "x".into() });
        assert_eq!(s["kind"], "Status");
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["code"], 404);
        assert_eq!(s["message"], "pods \"x\" not found");
        assert_eq!(s["details"]["kind"], "pods");
        let s = store_error_status(&StoreError::Conflict { resource: "pods".into(), name: "x".into() });
        assert_eq!((s["reason"].as_str(), s["code"].as_u64()), (Some("Conflict"), Some(409)));
        let s = store_error_status(&StoreError::Expired { requested: 1, oldest: 5 });
        assert_eq!(s["code"], 410);
    }
}
