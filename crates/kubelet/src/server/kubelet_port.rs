//! The authenticated HTTPS server on `address:port` (10250), assembled from the
//! KubeletConfiguration: TLS settings, authentication (x509, bearer tokens, anonymous),
//! authorization (AlwaysAllow or Webhook) and the router of [`handlers`], health and the
//! metrics/stats handlers.

use super::auth::{self, Auth, Authorizer, TokenWebhook};
use super::{Health, handlers, tls};
use crate::api::DynApi;
use crate::cri::DynRuntime;
use crate::status_manager::Statuses;
use axum::Router;
use kubelet_config::KubeletConfiguration;
use std::net::{AddrParseError, IpAddr, SocketAddr};
use std::num::TryFromIntError;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: must not be negative")]
    Negative(&'static str),
    #[error("authorization.mode: {0:?} is not supported (AlwaysAllow, Webhook)")]
    AuthorizationMode(String),
    #[error("address: {value:?}")]
    Address { value: String, source: AddrParseError },
    #[error("port: {value}")]
    Port { value: i32, source: TryFromIntError },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// How requests are authorized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    AlwaysAllow,
    /// SubjectAccessReview, answers cached for these TTLs.
    Webhook {
        authorized_ttl: Duration,
        unauthorized_ttl: Duration,
    },
}

/// The 10250 server's settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub node_name: String,
    pub tls: tls::Settings,
    pub anonymous: bool,
    /// Bearer tokens through TokenReview, answers cached this long (None: tokens refused).
    pub token_webhook: Option<Duration>,
    pub authorization: Authorization,
    /// `/configz`.
    pub configz: Arc<serde_json::Value>,
    pub enable_debugging_handlers: bool,
    pub enable_system_log_handler: bool,
    pub pod_logs_dir: PathBuf,
    /// `/run` commands are bounded by this (runtimeRequestTimeout).
    pub exec_timeout: Duration,
}

impl Config {
    /// From address, port, the tls* fields, authentication, authorization,
    /// enableDebuggingHandlers, enableSystemLogHandler, podLogsDir and runtimeRequestTimeout;
    /// `cert_dir` is `--cert-dir`. The self-signed certificate is valid for the node name and IP.
    pub fn from_kubelet_config(
        cfg: &KubeletConfiguration,
        cert_dir: PathBuf,
        node_name: &str,
        node_ip: Option<&str>,
    ) -> Result<Self, Error> {
        let duration =
            |d: kubelet_config::duration::Duration, field: &'static str| d.to_std().ok_or(Error::Negative(field));
        let mut host_names = vec![node_name.to_string()];
        host_names.extend(node_ip.map(str::to_string));
        let token_webhook = match cfg.authentication.webhook.enabled {
            true => Some(duration(cfg.authentication.webhook.cache_ttl, "authentication.webhook.cacheTTL")?),
            false => None,
        };
        let authorization = match cfg.authorization.mode.as_str() {
            "AlwaysAllow" => Authorization::AlwaysAllow,
            "Webhook" => Authorization::Webhook {
                authorized_ttl: duration(
                    cfg.authorization.webhook.cache_authorized_ttl,
                    "authorization.webhook.cacheAuthorizedTTL",
                )?,
                unauthorized_ttl: duration(
                    cfg.authorization.webhook.cache_unauthorized_ttl,
                    "authorization.webhook.cacheUnauthorizedTTL",
                )?,
            },
            other => return Err(Error::AuthorizationMode(other.to_string())),
        };
        let ip: IpAddr = cfg.address.parse().map_err(|source| Error::Address { value: cfg.address.clone(), source })?;
        let port = u16::try_from(cfg.port).map_err(|source| Error::Port { value: cfg.port, source })?;
        Ok(Self {
            addr: SocketAddr::new(ip, port),
            node_name: node_name.to_string(),
            tls: tls::Settings {
                cert_file: cfg.tls_cert_file.clone(),
                key_file: cfg.tls_private_key_file.clone(),
                cert_dir,
                min_version: cfg.tls_min_version.clone(),
                cipher_suites: cfg.tls_cipher_suites.clone(),
                client_ca_file: cfg.authentication.x509.client_ca_file.clone(),
                host_names,
                cert_resolver: None,
            },
            anonymous: cfg.authentication.anonymous.enabled,
            token_webhook,
            authorization,
            configz: Arc::new(serde_json::to_value(cfg).unwrap_or_default()),
            enable_debugging_handlers: cfg.enable_debugging_handlers,
            enable_system_log_handler: cfg.enable_system_log_handler,
            pod_logs_dir: PathBuf::from(&cfg.pod_logs_dir),
            exec_timeout: duration(cfg.runtime_request_timeout, "runtimeRequestTimeout")?,
        })
    }
}

/// What the 10250 server serves from.
pub struct Parts {
    pub health: Health,
    pub statuses: Statuses,
    pub runtime: DynRuntime,
    pub api: Option<DynApi>,
    /// Served here too (behind authentication): metrics and stats.
    pub default_handlers: Router,
}

/// The server's TLS configuration (reading or making the serving certificate) and its router
/// with authentication and authorization in front. Binds nothing.
pub fn assemble(cfg: &Config, parts: Parts) -> Result<(Arc<rustls::ServerConfig>, Router), Error> {
    let tls = tls::server_config(&cfg.tls)?;
    let tokens = match (&parts.api, cfg.token_webhook) {
        (Some(api), Some(ttl)) => Some(TokenWebhook::new(api.clone(), ttl)),
        (None, Some(_)) => {
            tracing::warn!("authentication.webhook.enabled needs --kubeconfig: bearer tokens will be refused");
            None
        }
        _ => None,
    };
    let authorizer = match (&cfg.authorization, &parts.api) {
        (Authorization::AlwaysAllow, _) => Authorizer::AlwaysAllow,
        (Authorization::Webhook { authorized_ttl, unauthorized_ttl }, Some(api)) => {
            Authorizer::webhook(api.clone(), *authorized_ttl, *unauthorized_ttl)
        }
        (Authorization::Webhook { .. }, None) => {
            let why = "authorization.mode Webhook needs --kubeconfig: every request to the kubelet server is refused \
                       (set authorization.mode: AlwaysAllow for a standalone kubelet)";
            tracing::warn!("{why}");
            Authorizer::DenyAll(why.into())
        }
    };
    let auth = Arc::new(Auth {
        node_name: cfg.node_name.clone(),
        anonymous: cfg.anonymous,
        x509: !cfg.tls.client_ca_file.is_empty(),
        tokens,
        authorizer,
    });
    let state = handlers::ApiState {
        statuses: parts.statuses,
        runtime: parts.runtime,
        configz: cfg.configz.clone(),
        exec_timeout: cfg.exec_timeout,
        node_log_dir: PathBuf::from("/var/log"),
        pod_logs_dir: cfg.pod_logs_dir.clone(),
    };
    let router = handlers::router(state, cfg.enable_debugging_handlers, cfg.enable_system_log_handler)
        .merge(super::health_routes(parts.health))
        .merge(parts.default_handlers)
        .layer(axum::middleware::from_fn_with_state(auth, auth::middleware));
    Ok((tls, router))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(kc: &KubeletConfiguration) -> Result<Config, Error> {
        Config::from_kubelet_config(kc, "/pki".into(), "n1", Some("192.0.2.1"))
    }

    #[test]
    fn the_defaults_listen_on_10250_with_webhook_authorization() {
        let c = config(&KubeletConfiguration::default()).unwrap();
        assert_eq!(c.addr.port(), 10250);
        assert_eq!(c.tls.host_names, ["n1", "192.0.2.1"]);
        assert!(matches!(c.authorization, Authorization::Webhook { .. }));
    }

    #[test]
    fn an_unknown_authorization_mode_is_named() {
        let kc = KubeletConfiguration {
            authorization: kubelet_config::KubeletAuthorization { mode: "RBAC".into(), ..Default::default() },
            ..Default::default()
        };
        let e = config(&kc).unwrap_err();
        assert_eq!(e.to_string(), "authorization.mode: \"RBAC\" is not supported (AlwaysAllow, Webhook)");
    }
}
