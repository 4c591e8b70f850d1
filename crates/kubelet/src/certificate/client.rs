//! The API client whose TLS client certificate follows the certificate manager.
//!
//! Why this shape: every subsystem holds clones of one `kube::Client` (and long-lived watches
//! hold theirs for good), so swapping clients on rotation would leave the watches on the old
//! identity until it expires. Instead the one client's rustls config gets a client-certificate
//! resolver that reads the manager's current pair at each handshake, and every connection is
//! made through a connector that can close them all — what upstream does (client-go's
//! `GetClientCertificate` callback plus pkg/kubelet/certificate/transport.go's updateTransport,
//! which closes every connection when the certificate changes, so no connection keeps
//! authenticating with the old one). Watches then reconnect, with the new certificate.

use super::rotation::Current;
use super::{Error, Result};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// The manager's current pair, offered to the API server at each handshake.
#[derive(Debug)]
struct CurrentCert(Current);

impl ResolvesClientCert for CurrentCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.borrow().as_ref().map(|p| p.key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Every connection the client made, closable at once (client-go's connrotation dialer).
#[derive(Debug, Default)]
pub struct Connections(Mutex<CancellationToken>);

impl Connections {
    fn token(&self) -> CancellationToken {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Closes every open connection (idle or busy); new ones are made as needed.
    pub fn close_all(&self) {
        let old = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        old.cancel();
    }
}

#[derive(Clone)]
struct ClosingConnector {
    inner: HttpConnector,
    connections: Arc<Connections>,
}

impl tower::Service<http::Uri> for ClosingConnector {
    type Response = Closable<<HttpConnector as tower::Service<http::Uri>>::Response>;
    type Error = <HttpConnector as tower::Service<http::Uri>>::Error;
    type Future = Pin<Box<dyn Future<Output = std::result::Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let token = self.connections.token();
        let connecting = self.inner.call(uri);
        Box::pin(async move { Ok(Closable { io: connecting.await?, closed: Box::pin(token.cancelled_owned()) }) })
    }
}

/// A connection that fails its next read or write once its token is cancelled.
struct Closable<T> {
    io: T,
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<T> Closable<T> {
    fn check(&mut self, cx: &mut Context<'_>) -> std::io::Result<()> {
        match self.closed.as_mut().poll(cx) {
            Poll::Ready(()) => Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "connection closed: the client certificate was rotated",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for Closable<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for Closable<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.check(cx)?;
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<T: Connection> Connection for Closable<T> {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

/// A client for `config`'s cluster (its server, CA, TLS server name and headers; its own user
/// is dropped) that authenticates with `current`'s certificate, and the handle that closes its
/// connections.
pub fn rotating_client(mut config: kube::Config, current: Current) -> Result<(kube::Client, Arc<Connections>)> {
    let err = |e: kube::Error| Error::Api(e.to_string());
    config.auth_info = Default::default();
    let mut tls = config.rustls_client_config().map_err(err)?;
    tls.client_auth_cert_resolver = Arc::new(CurrentCert(current));
    let connections = Arc::new(Connections::default());
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let connector = ClosingConnector { inner: http, connections: connections.clone() };
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    let http_client: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https);
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .layer(config.extra_headers_layer().map_err(err)?)
        .service(http_client);
    Ok((kube::Client::new(service, config.default_namespace.clone()), connections))
}

/// updateTransport: closes the client's connections whenever the pair changes, until `token`.
pub async fn close_on_rotation(mut current: Current, connections: Arc<Connections>, token: CancellationToken) {
    current.borrow_and_update();
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            changed = current.changed() => {
                if changed.is_err() {
                    return;
                }
                tracing::info!("client certificate rotated: closing the API connections");
                connections.close_all();
            }
        }
    }
}
