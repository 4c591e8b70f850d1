//! fieldSelector and labelSelector parsing and matching.

use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SelectorError {
    #[error("invalid selector: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
}

#[derive(Debug, Clone, PartialEq)]
struct Requirement {
    key: String,
    op: Op,
}

/// A parsed label or field selector (requirements are ANDed).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector {
    reqs: Vec<Requirement>,
}

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn set_values(s: &str) -> Result<Vec<String>, SelectorError> {
    let s = s.trim();
    let inner = s
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError::Invalid(format!("expected (values) in {s:?}")))?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect())
}

impl Selector {
    /// Parses a label selector: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`.
    pub fn parse_labels(s: &str) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        for part in split_top(s).into_iter().map(str::trim).filter(|p| !p.is_empty()) {
            let req = if let Some((k, v)) = part.split_once("!=") {
                Requirement { key: k.trim().into(), op: Op::NotEq(v.trim().into()) }
            } else if let Some((k, v)) = part.split_once("==") {
                Requirement { key: k.trim().into(), op: Op::Eq(v.trim().into()) }
            } else if let Some((k, v)) = part.split_once('=') {
                Requirement { key: k.trim().into(), op: Op::Eq(v.trim().into()) }
            } else if let Some((k, v)) = part.split_once(" notin ") {
                Requirement { key: k.trim().into(), op: Op::NotIn(set_values(v)?) }
            } else if let Some((k, v)) = part.split_once(" in ") {
                Requirement { key: k.trim().into(), op: Op::In(set_values(v)?) }
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement { key: k.trim().into(), op: Op::NotExists }
            } else if part.contains(|c: char| c.is_whitespace() || c == '(' || c == ')') {
                return Err(SelectorError::Invalid(part.into()));
            } else {
                Requirement { key: part.into(), op: Op::Exists }
            };
            if req.key.is_empty() {
                return Err(SelectorError::Invalid(part.into()));
            }
            reqs.push(req);
        }
        Ok(Selector { reqs })
    }

    /// Parses a field selector: `path=v`, `path==v`, `path!=v`, comma-ANDed.
    pub fn parse_fields(s: &str) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let req = if let Some((k, v)) = part.split_once("!=") {
                Requirement { key: k.into(), op: Op::NotEq(v.into()) }
            } else if let Some((k, v)) = part.split_once("==") {
                Requirement { key: k.into(), op: Op::Eq(v.into()) }
            } else if let Some((k, v)) = part.split_once('=') {
                Requirement { key: k.into(), op: Op::Eq(v.into()) }
            } else {
                return Err(SelectorError::Invalid(part.into()));
            };
            reqs.push(req);
        }
        Ok(Selector { reqs })
    }

    /// Label match against metadata.labels.
    pub fn matches_labels(&self, obj: &Value) -> bool {
        let labels = obj.get("metadata").and_then(|m| m.get("labels"));
        self.reqs.iter().all(|r| {
            let v = labels.and_then(|l| l.get(&r.key)).and_then(Value::as_str);
            match &r.op {
                Op::Eq(x) => v == Some(x.as_str()),
                Op::NotEq(x) => v != Some(x.as_str()),
                Op::In(xs) => v.is_some_and(|v| xs.iter().any(|x| x == v)),
                Op::NotIn(xs) => v.is_none_or(|v| !xs.iter().any(|x| x == v)),
                Op::Exists => v.is_some(),
                Op::NotExists => v.is_none(),
            }
        })
    }

    /// Field match: any dotted path into the object (missing fields compare as "").
    pub fn matches_fields(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|r| {
            let v = field_value(obj, &r.key);
            match &r.op {
                Op::Eq(x) => v == *x,
                Op::NotEq(x) => v != *x,
                _ => false,
            }
        })
    }
}

/// The string value of a dotted field path ("" when absent; numbers and bools as text).
pub fn field_value(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for seg in path.split('.') {
        match cur.get(seg) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({"metadata": {"name": "p", "namespace": "default", "labels": {"app": "web", "tier": "fe"}},
               "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
    }

    #[test]
    fn labels() {
        let p = pod();
        let ok = [
            "app=web",
            "app==web",
            "app!=db",
            "app in (web, db)",
            "app notin (db)",
            "tier",
            "!missing",
            "app=web,tier=fe",
            "",
        ];
        for s in ok {
            assert!(Selector::parse_labels(s).unwrap().matches_labels(&p), "{s}");
        }
        let no = [
            "app=db",
            "app!=web",
            "app in (db)",
            "app notin (web,x)",
            "missing",
            "!tier",
            "app=web,tier=be",
            "missing in (a)",
        ];
        for s in no {
            assert!(!Selector::parse_labels(s).unwrap().matches_labels(&p), "{s}");
        }
        assert!(Selector::parse_labels("missing notin (a)").unwrap().matches_labels(&p));
        assert!(Selector::parse_labels("a b").is_err());
    }

    #[test]
    fn fields() {
        let p = pod();
        let ok = [
            "metadata.name=p",
            "metadata.namespace==default",
            "spec.nodeName=n1",
            "status.phase!=Pending",
            "spec.nodeName!=",
            "metadata.name=p,status.phase=Running",
        ];
        for s in ok {
            assert!(Selector::parse_fields(s).unwrap().matches_fields(&p), "{s}");
        }
        let no = ["metadata.name=q", "spec.nodeName=", "status.phase=Running,metadata.namespace=kube-system"];
        for s in no {
            assert!(!Selector::parse_fields(s).unwrap().matches_fields(&p), "{s}");
        }
        assert!(Selector::parse_fields("nonsense").is_err());
    }
}
