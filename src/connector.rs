//! The outbound connector shared by the upstream client and the Logto client: plain HTTP or HTTPS (rustls with
//! the Mozilla root set, so the image needs no system CA bundle), with a connect timeout and TCP_NODELAY.
//!
//! Connections are reported to the client without hyper-util's `HttpInfo` (the addresses of the connection), which
//! it would otherwise copy into the extensions of every response: a map allocated per request that the gate never
//! reads.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::{MapOk, TryFutureExt};
use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use tower_service::Service;

/// The connector type both clients use.
pub type Connector = Bare<HttpsConnector<HttpConnector>>;

pub fn https_or_http(connect_timeout: Duration) -> Result<Connector, String> {
    https_or_http_trusting(connect_timeout, &[])
}

/// Like [`https_or_http`], also trusting `extra_roots` (an upstream's `tls_ca_file`: a private CA, or the
/// upstream's own self-signed certificate) next to the Mozilla root set.
pub fn https_or_http_trusting(
    connect_timeout: Duration,
    extra_roots: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<Connector, String> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in extra_roots {
        roots
            .add(cert.clone())
            .map_err(|e| format!("a certificate of tls_ca_file cannot be trusted: {e}"))?;
    }
    let tls =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Bare(
        hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http),
    ))
}

/// A connector whose connections carry no per-response extras (see the module docs).
#[derive(Clone, Debug)]
pub struct Bare<C>(C);

impl<C> Service<Uri> for Bare<C>
where
    C: Service<Uri>,
{
    type Response = BareIo<C::Response>;
    type Error = C::Error;
    type Future = MapOk<C::Future, fn(C::Response) -> BareIo<C::Response>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        self.0
            .call(uri)
            .map_ok(BareIo as fn(C::Response) -> BareIo<C::Response>)
    }
}

/// A connection as the inner connector made it, reported without extras.
#[derive(Debug)]
pub struct BareIo<T>(T);

impl<T: Connection> Connection for BareIo<T> {
    fn connected(&self) -> Connected {
        let inner = self.0.connected();
        let bare = Connected::new().proxy(inner.is_proxied());
        if inner.is_negotiated_h2() {
            bare.negotiated_h2()
        } else {
            bare
        }
    }
}

impl<T: Read + Unpin> Read for BareIo<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for BareIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
}
