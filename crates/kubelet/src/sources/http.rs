//! `staticPodURL`: a Pod or PodList fetched every `httpCheckFrequency`.

use super::manifest::{self, ManifestError, Origin};
use super::{Snapshot, SourceKind};
use k8s_openapi::api::core::v1::Pod;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Debug, Clone)]
pub struct Config {
    pub url: String,
    pub headers: HashMap<String, Vec<String>>,
    pub node_name: String,
    pub period: Duration,
}

pub async fn run(cfg: Config, tx: mpsc::Sender<Snapshot>) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
    let origin = Origin { kind: SourceKind::Http, location: cfg.url.clone() };
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut last: Option<Vec<Pod>> = None;
    let mut last_error = String::new();
    loop {
        match fetch(&client, &cfg, &origin, &mut seen).await {
            Ok(pods) => {
                last_error.clear();
                if last.as_ref() != Some(&pods) {
                    last = Some(pods.clone());
                    if tx.send(Snapshot { source: SourceKind::Http, pods }).await.is_err() {
                        return;
                    }
                }
            }
            // As upstream: a failed fetch keeps the pods we have.
            Err(e) => {
                let e = e.to_string();
                if e != last_error {
                    tracing::error!(url = %cfg.url, "static pod URL: {e}");
                    last_error = e;
                }
            }
        }
        tokio::time::sleep(cfg.period).await;
    }
}

async fn fetch(
    client: &reqwest::Client,
    cfg: &Config,
    origin: &Origin,
    seen: &mut HashMap<String, String>,
) -> Result<Vec<Pod>, ManifestError> {
    let mut req = client.get(&cfg.url);
    for (k, vs) in &cfg.headers {
        for v in vs {
            req = req.header(k, v);
        }
    }
    let fetch_err = |source| ManifestError::Fetch { origin: origin.to_string(), source };
    let resp = req.send().await.map_err(fetch_err)?;
    if !resp.status().is_success() {
        return Err(ManifestError::Status { origin: origin.to_string(), status: resp.status() });
    }
    let body = resp.bytes().await.map_err(fetch_err)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for pod in manifest::decode(&body, origin)? {
        let uid = manifest::manifest_uid(&pod, origin, &cfg.node_name);
        let first_seen = seen.entry(uid).or_insert_with(super::file::now_rfc3339).clone();
        out.push(manifest::prepare(pod, origin, &cfg.node_name, &first_seen)?);
    }
    Ok(out)
}
