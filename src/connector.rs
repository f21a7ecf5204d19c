//! The outbound connector shared by the upstream client and the Logto client: plain HTTP or HTTPS (rustls with
//! the Mozilla root set, so the image needs no system CA bundle), with a connect timeout and TCP_NODELAY; and, for
//! the upstream client only, a Unix domain socket ([`UpstreamConnector`]).
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
use hyper_util::rt::TokioIo;
use tower_service::Service;

/// The connector type both clients use.
pub type Connector = Bare<HttpsConnector<HttpConnector>>;

pub fn https_or_http(connect_timeout: Duration) -> Result<Connector, String> {
    https_or_http_trusting(connect_timeout, &UpstreamTls::default())
}

/// How an upstream's TLS connections differ from a browser's: the settings of `tls_ca_file`, `tls_client_cert_file`
/// and `tls_server_name`.
#[derive(Default)]
pub struct UpstreamTls<'a> {
    /// Trusted next to the Mozilla root set (an upstream's `tls_ca_file`: a private CA, or the upstream's own
    /// self-signed certificate).
    pub extra_roots: &'a [rustls::pki_types::CertificateDer<'static>],
    /// Presented to a server that asks for a certificate (an upstream's `tls_client_cert_file`; without it, none).
    pub client_cert: Option<std::sync::Arc<crate::tls::ReloadingCert>>,
    /// Sent in SNI and verified in the server's certificate in place of the URI's host (`tls_server_name`).
    pub server_name: Option<rustls::pki_types::ServerName<'static>>,
}

/// Like [`https_or_http`], with an upstream's own TLS settings.
pub fn https_or_http_trusting(connect_timeout: Duration, upstream: &UpstreamTls<'_>) -> Result<Connector, String> {
    let UpstreamTls {
        extra_roots,
        client_cert,
        server_name,
    } = upstream;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in extra_roots.iter() {
        roots
            .add(cert.clone())
            .map_err(|e| format!("a certificate of tls_ca_file cannot be trusted: {e}"))?;
    }
    let builder =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .with_root_certificates(roots);
    let tls = match client_cert {
        Some(pair) => {
            let mut tls = builder.with_client_cert_resolver(std::sync::Arc::<crate::tls::ReloadingCert>::clone(pair));
            // A resumed TLS 1.3 session presents no certificate (RFC 8446 §2.2): the server takes the client to be
            // whom the first handshake proved, and every resumed connection brings new tickets of that identity.
            // With resumption, connections would go on standing for a certificate renewed (or revoked) on disk for
            // as long as traffic keeps the chain of tickets alive. So every connection does a full handshake and
            // shows the certificate in use; the pool keeps connections, so handshakes stay rare.
            tls.resumption = rustls::client::Resumption::disabled();
            tls
        }
        None => builder.with_no_client_auth(),
    };
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let builder = match server_name {
        Some(name) => builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name.clone())),
        None => builder,
    };
    Ok(Bare(builder.enable_http1().wrap_connector(http)))
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

/// What a connection of the network connector is.
type NetIo = <Connector as Service<Uri>>::Response;

/// The connector of hyper's upstream client: the network one ([`https_or_http_trusting`]), or, for an app on a
/// Unix domain socket (`upstream.url = "unix:/path"`), one that opens that socket file whatever the URI names.
#[derive(Clone, Debug)]
pub(crate) enum UpstreamConnector {
    Net(Connector),
    Unix {
        path: std::sync::Arc<std::path::Path>,
        connect_timeout: Duration,
    },
}

/// How a connection attempt of [`UpstreamConnector`] failed (hyper reports it as the request's cause).
type ConnectError = Box<dyn std::error::Error + Send + Sync>;

impl Service<Uri> for UpstreamConnector {
    type Response = UpstreamIo;
    type Error = ConnectError;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<UpstreamIo, ConnectError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self {
            UpstreamConnector::Net(net) => net.poll_ready(cx),
            UpstreamConnector::Unix { .. } => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        match self {
            UpstreamConnector::Net(net) => Box::pin(net.call(uri).map_ok(UpstreamIo::Net)),
            UpstreamConnector::Unix { path, connect_timeout } => {
                let (path, timeout) = (std::sync::Arc::clone(path), *connect_timeout);
                Box::pin(async move {
                    let stream = crate::http1::stream::connect_unix(&path, timeout).await?;
                    Ok(UpstreamIo::Unix(TokioIo::new(stream)))
                })
            }
        }
    }
}

/// A connection of [`UpstreamConnector`].
#[derive(Debug)]
// As large as a TLS connection either way: boxing it would add an allocation and an indirection to every read and
// write of the common kind, to save memory on connections to a socket file.
#[allow(clippy::large_enum_variant)]
pub(crate) enum UpstreamIo {
    Net(NetIo),
    Unix(TokioIo<tokio::net::UnixStream>),
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        match self {
            UpstreamIo::Net(io) => io.connected(),
            UpstreamIo::Unix(_) => Connected::new(),
        }
    }
}

impl Read for UpstreamIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Net(io) => Pin::new(io).poll_read(cx, buf),
            UpstreamIo::Unix(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl Write for UpstreamIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Net(io) => Pin::new(io).poll_write(cx, buf),
            UpstreamIo::Unix(io) => Pin::new(io).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Net(io) => Pin::new(io).poll_flush(cx),
            UpstreamIo::Unix(io) => Pin::new(io).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Net(io) => Pin::new(io).poll_shutdown(cx),
            UpstreamIo::Unix(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Net(io) => io.is_write_vectored(),
            UpstreamIo::Unix(io) => io.is_write_vectored(),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Net(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            UpstreamIo::Unix(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }
}
