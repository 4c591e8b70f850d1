//! Authentication (client certificates, bearer tokens) and the authorization policy used to answer
//! SubjectAccessReviews; TokenReview and SubjectAccessReview bodies.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}: {1}")]
    Read(String, std::io::Error),
    #[error("token {0:?}: expected TOKEN,USER[,UID[,\"GROUP1,GROUP2\"]] or TOKEN:USER[:GROUP1,GROUP2]")]
    BadToken(String),
    #[error("policy: {0}")]
    Policy(#[from] serde_yaml::Error),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub user: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl Identity {
    pub fn new(user: &str, groups: Vec<String>) -> Self {
        let mut groups = groups;
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        Identity { user: user.into(), uid: String::new(), groups }
    }
}

/// Static bearer tokens.
#[derive(Debug, Default, Clone)]
pub struct Tokens(HashMap<String, Identity>);

impl Tokens {
    /// `TOKEN:USER[:GROUP1,GROUP2]` (the --token flag).
    pub fn add_flag(&mut self, spec: &str) -> Result<(), AuthError> {
        let mut parts = spec.splitn(3, ':');
        let (Some(token), Some(user)) = (parts.next(), parts.next()) else {
            return Err(AuthError::BadToken(spec.into()));
        };
        if token.is_empty() || user.is_empty() {
            return Err(AuthError::BadToken(spec.into()));
        }
        let groups = parts.next().map(|g| g.split(',').map(str::to_string).collect()).unwrap_or_default();
        self.0.insert(token.into(), Identity::new(user, groups));
        Ok(())
    }

    /// Kubernetes static token file: `token,user,uid[,"group1,group2"]` per line.
    pub fn load_csv(&mut self, path: &Path) -> Result<(), AuthError> {
        let text = std::fs::read_to_string(path).map_err(|e| AuthError::Read(path.display().to_string(), e))?;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let mut parts = line.splitn(4, ',');
            let (Some(token), Some(user)) = (parts.next(), parts.next()) else {
                return Err(AuthError::BadToken(line.into()));
            };
            let uid = parts.next().unwrap_or("").trim().to_string();
            let groups = parts
                .next()
                .map(|g| {
                    g.trim()
                        .trim_matches('"')
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            let mut id = Identity::new(user.trim(), groups);
            id.uid = uid;
            self.0.insert(token.trim().into(), id);
        }
        Ok(())
    }

    pub fn lookup(&self, token: &str) -> Option<&Identity> {
        self.0.get(token)
    }
}

/// One allow rule of the --policy file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct Rule {
    pub user: Option<String>,
    pub group: Option<String>,
    /// Verbs; "*" or empty matches any.
    pub verbs: Vec<String>,
    /// Resources; "*" or empty matches any (also non-resource requests).
    pub resources: Vec<String>,
    /// Subresources; "*" or empty matches any.
    pub subresources: Vec<String>,
    pub namespaces: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub rules: Vec<Rule>,
}

fn any_or(list: &[String], v: &str) -> bool {
    list.is_empty() || list.iter().any(|x| x == "*" || x == v)
}

impl Policy {
    pub fn load(path: &Path) -> Result<Policy, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|e| AuthError::Read(path.display().to_string(), e))?;
        Ok(Policy { rules: serde_yaml::from_str(&text)? })
    }

    /// (allowed, reason)
    pub fn decide(&self, user: &str, groups: &[String], attrs: &Value) -> (bool, String) {
        if groups.iter().any(|g| g == "system:masters") {
            return (true, "system:masters is allowed everything".into());
        }
        let s = |f: &str| attrs.get(f).and_then(Value::as_str).unwrap_or("").to_string();
        let (verb, resource, sub, ns) = (s("verb"), s("resource"), s("subresource"), s("namespace"));
        for (i, r) in self.rules.iter().enumerate() {
            let who = r.user.as_deref() == Some(user) || r.group.as_ref().is_some_and(|g| groups.contains(g));
            let who = who || (r.user.as_deref() == Some("*"));
            if who
                && any_or(&r.verbs, &verb)
                && any_or(&r.resources, &resource)
                && (sub.is_empty() || any_or(&r.subresources, &sub))
                && (ns.is_empty() || any_or(&r.namespaces, &ns))
            {
                return (true, format!("allowed by policy rule {i}"));
            }
        }
        (
            false,
            format!(
                "no policy rule allows user {user:?} to {verb} {resource}{}",
                if sub.is_empty() { String::new() } else { format!("/{sub}") }
            ),
        )
    }
}

/// Fills the status of a TokenReview.
pub fn token_review(tokens: &Tokens, mut review: Value) -> Value {
    let token = review.pointer("/spec/token").and_then(Value::as_str).unwrap_or("");
    review["status"] = match tokens.lookup(token) {
        Some(id) => json!({"authenticated": true, "user": {"username": id.user, "uid": id.uid, "groups": id.groups}}),
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
    };
    review["apiVersion"] = json!("authentication.k8s.io/v1");
    review["kind"] = json!("TokenReview");
    review
}

/// Fills the status of a SubjectAccessReview.
pub fn subject_access_review(policy: &Policy, mut review: Value) -> Value {
    let spec = review.get("spec").cloned().unwrap_or(json!({}));
    let user = spec.get("user").and_then(Value::as_str).unwrap_or("");
    let groups: Vec<String> = spec
        .get("groups")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|g| g.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    let attrs = spec
        .get("resourceAttributes")
        .cloned()
        .or_else(|| spec.get("nonResourceAttributes").map(|n| json!({"verb": n["verb"], "resource": n["path"]})))
        .unwrap_or(json!({}));
    let (allowed, reason) = policy.decide(user, &groups, &attrs);
    review["status"] =
        if allowed { json!({"allowed": true, "reason": reason}) } else { json!({"allowed": false, "reason": reason}) };
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["kind"] = json!("SubjectAccessReview");
    review
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_from_flag_and_csv() {
        let mut t = Tokens::default();
        t.add_flag("abc:alice:dev,ops").unwrap();
        assert_eq!(t.lookup("abc").unwrap().groups, vec!["dev", "ops", "system:authenticated"]);
        assert!(t.add_flag("nouser").is_err());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens.csv");
        std::fs::write(&p, "tok1,bob,42,\"g1,g2\"\n# comment\ntok2,carol,7\n").unwrap();
        t.load_csv(&p).unwrap();
        assert_eq!(t.lookup("tok1").unwrap().uid, "42");
        assert_eq!(t.lookup("tok1").unwrap().groups[..2], ["g1".to_string(), "g2".to_string()]);
        assert_eq!(t.lookup("tok2").unwrap().user, "carol");
        let r = token_review(&t, json!({"spec": {"token": "tok2"}}));
        assert_eq!(r["status"]["authenticated"], true);
        assert_eq!(r["status"]["user"]["username"], "carol");
        assert_eq!(token_review(&t, json!({"spec": {"token": "x"}}))["status"]["authenticated"], false);
    }

    #[test]
    fn subject_access_reviews() {
        let rules: Vec<Rule> = serde_yaml::from_str(
            "- user: bob\n  verbs: [get, list]\n  resources: [pods]\n- group: readers\n  verbs: [get]\n  resources: [nodes]\n  subresources: [proxy]\n",
        )
        .unwrap();
        let p = Policy { rules };
        let sar = |user: &str, groups: &[&str], verb: &str, res: &str, sub: &str| {
            let r = subject_access_review(
                &p,
                json!({"spec": {"user": user, "groups": groups,
                    "resourceAttributes": {"verb": verb, "resource": res, "subresource": sub}}}),
            );
            r["status"]["allowed"].as_bool().unwrap()
        };
        assert!(sar("root", &["system:masters"], "delete", "nodes", ""));
        assert!(sar("bob", &[], "get", "pods", ""));
        assert!(!sar("bob", &[], "delete", "pods", ""));
        assert!(sar("x", &["readers"], "get", "nodes", "proxy"));
        assert!(!sar("x", &["readers"], "get", "nodes", "log"));
        assert!(!sar("eve", &[], "get", "pods", ""));
    }
}
