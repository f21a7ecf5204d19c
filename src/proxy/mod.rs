//! Forwarding to the upstream app: a pooled HTTP/1.1 client (HTTP/2 with prior knowledge for an `h2c://` app,
//! RFC 9113 §3.3), streaming bodies both ways (the app's trailers too; a client's never), protocol upgrades
//! (WebSocket) spliced byte for byte, and bounded waits that end in 502/504 instead of a hang.
//!
//! Bodiless `GET` and `HEAD` requests to a plain-HTTP upstream (most of what a browser asks for) take the lean
//! client in `crate::http1::client`, which works inside the client connection's task; everything else takes
//! hyper's pooled client.

pub(crate) mod caching;
pub(crate) mod forwarded;
pub mod own_address;
pub mod trusted;
mod tunnel;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::upgrade::OnUpgrade;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::activity::{Activity, ActivityIo, IdleCheck};
use crate::body::paced::{BodyStalled, ClientGone};
use crate::body::{self, Body};
use crate::config::{UpstreamConfig, UpstreamRoute};
use crate::connector::UpstreamConnector;
use crate::error::error_chain;
use crate::error::{ClientError, GateError, UpstreamError};
use crate::http1::client::{self, ExtraFields};
use crate::http1::hop;
use crate::http1::stream::Dial;
use crate::identity::IdentityHeaders;
use crate::metrics::Metrics;
pub use own_address::OwnAddress;

/// Headers the gate adds to a request for the app that are not in its header map yet (none of their names is):
/// hyper's path inserts them, the lean client writes them straight into the request head, pre-rendered where they
/// can be, instead of hashing each name into the map and growing it on every request.
#[derive(Default)]
pub struct Added<'a> {
    /// `X-Forwarded-*` for a request from an untrusted peer.
    pub forwarded: Option<forwarded::Forwarded>,
    /// The identity headers.
    pub identity: Option<&'a IdentityHeaders>,
}

impl Added<'_> {
    fn insert_into(&self, headers: &mut http::HeaderMap) {
        if let Some(f) = &self.forwarded {
            f.insert_into(headers);
        }
        if let Some(identity) = self.identity {
            identity.insert_into(headers);
        }
    }
}

impl ExtraFields for Added<'_> {
    fn written_len(&self) -> usize {
        self.forwarded.as_ref().map_or(0, forwarded::Forwarded::written_len)
            + self.identity.map_or(0, |i| i.block().len())
    }

    fn write(&self, buf: &mut bytes::BytesMut) {
        if let Some(f) = &self.forwarded {
            f.write(buf);
        }
        if let Some(identity) = self.identity {
            buf.extend_from_slice(identity.block());
        }
    }
}

/// The keys an upstream's client certificate comes from, for messages (the start already checked the files under
/// the exact key, `[upstream]`'s or an entry's).
const CLIENT_CERT_KEYS: crate::tls::PairKeys = crate::tls::PairKeys {
    cert: "tls_client_cert_file",
    key: "tls_client_key_file",
};

/// How hyper's client reaches `config`'s app: TCP (TLS with its CA file, client certificate and server name) or its
/// socket file.
fn upstream_connector(config: &UpstreamConfig) -> Result<UpstreamConnector, String> {
    if let Some(path) = &config.unix_socket {
        return Ok(UpstreamConnector::Unix {
            path: path.as_path().into(),
            connect_timeout: config.connect_timeout,
        });
    }
    let client_cert = match &config.tls_client_cert {
        Some((cert, key)) => {
            let pair = crate::tls::ReloadingCert::new_named(cert, key, CLIENT_CERT_KEYS)?;
            pair.watch_while_held();
            Some(pair)
        }
        None => None,
    };
    let tls = crate::connector::UpstreamTls {
        extra_roots: &config.tls_roots,
        client_cert,
        server_name: config.tls_server_name.clone(),
    };
    Ok(UpstreamConnector::Net(crate::connector::https_or_http_trusting(
        config.connect_timeout,
        &tls,
    )?))
}

/// hyper's pooled client for `config`'s app over `connector`: HTTP/1.1, or for an `h2c://` app HTTP/2 with prior
/// knowledge, one connection carrying every request (RFC 9113 §3.3).
fn upstream_client(config: &UpstreamConfig, connector: UpstreamConnector) -> Client<UpstreamConnector, Body> {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(1024);
    if config.http2 {
        builder.http2_only(true).timer(hyper_util::rt::TokioTimer::new());
    }
    builder.build(connector)
}

/// The longest `reach` waits for an answer after connecting.
const REACH_ANSWER_WAIT: Duration = Duration::from_secs(10);

/// Asks `config`'s app once for `HEAD <base path>/` (a safe method, RFC 9110 §9.2.1) the way the gate reaches it:
/// the same connection (TCP or its socket file; TLS with its CA file and client certificate) and `Host`. For
/// `logto-gate check`: the status the app answered, or why it could not be reached (refused, no socket file, no
/// permission, a certificate either side refused, no answer in time).
pub async fn reach(config: &UpstreamConfig) -> Result<StatusCode, String> {
    let client = upstream_client(config, upstream_connector(config)?);
    let uri = format!("{}{}/", config.url.to_string().trim_end_matches('/'), config.base_path);
    let req = Request::head(uri.as_str())
        .header(
            header::USER_AGENT,
            concat!("logto-gate/", env!("CARGO_PKG_VERSION"), " check"),
        )
        .body(Body::Empty)
        .map_err(|e| format!("cannot ask {uri}: {e}"))?;
    match tokio::time::timeout(config.connect_timeout + REACH_ANSWER_WAIT, client.request(req)).await {
        Err(_) => Err(format!(
            "no answer within {:?}",
            config.connect_timeout + REACH_ANSWER_WAIT
        )),
        Ok(Err(e)) => Err(error_chain(&e)),
        Ok(Ok(resp)) => Ok(resp.status()),
    }
}

/// How long an upstream connection may sit idle in a pool before it is closed.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Forwards requests to the configured upstream.
pub struct Forwarder {
    /// One pooled client per connection worker ([`crate::worker`]): an upstream connection is driven by a task on
    /// the worker that opened it, so requests only ever use connections of their own thread.
    clients: Box<[Client<UpstreamConnector, Body>]>,
    /// The lean client for bodiless `GET`/`HEAD`; `None` for an HTTPS or HTTP/2 (`h2c://`) upstream.
    lean: Option<client::Client>,
    /// `h2c://`: requests go to the app over HTTP/2.
    http2: bool,
    scheme: Scheme,
    authority: Authority,
    host_header: HeaderValue,
    base_path: String,
    preserve_host: bool,
    response_timeout: Duration,
    /// A spliced upgrade (WebSocket tunnel) moving no bytes either way for this long is closed.
    tunnel_idle_timeout: Duration,
    metrics: Arc<Metrics>,
    /// Its route's index in `config.routes`, which the metrics label the app by.
    app: usize,
    own_address: OwnAddress,
}

impl Forwarder {
    /// A forwarder to `route`'s upstream (the `app`-th of `config.routes`) for `workers` connection workers;
    /// tunnels idle for `tunnel_idle_timeout` are closed.
    pub fn new(
        route: &UpstreamRoute,
        app: usize,
        metrics: Arc<Metrics>,
        workers: usize,
        tunnel_idle_timeout: Duration,
        replaced_response_fields: &[http::HeaderName],
    ) -> Result<Self, String> {
        let config = &route.upstream;
        let connector = upstream_connector(config)?;
        let clients = (0..workers.max(1))
            .map(|_| upstream_client(config, connector.clone()))
            .collect();
        let scheme = config.url.scheme().cloned().unwrap_or(Scheme::HTTP);
        let authority = config.url.authority().cloned().ok_or("upstream.url has no host")?;
        let host_header = HeaderValue::from_str(authority.as_str()).map_err(|e| e.to_string())?;
        let lean = (scheme == Scheme::HTTP && !config.http2).then(|| {
            let target = match &config.unix_socket {
                Some(path) => Dial::Unix(path.clone()),
                None => Dial::Tcp(format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80))),
            };
            client::Client::new(
                target,
                config.connect_timeout,
                POOL_IDLE_TIMEOUT,
                workers,
                replaced_response_fields,
            )
        });
        Ok(Forwarder {
            clients,
            lean,
            http2: config.http2,
            scheme,
            authority,
            host_header,
            base_path: config.base_path.clone(),
            preserve_host: config.preserve_host,
            response_timeout: config.response_timeout,
            tunnel_idle_timeout,
            metrics,
            app,
            own_address: OwnAddress::new(&config.url, &config.base_path, &route.prefix, route.strip_prefix),
        })
    }

    /// How the upstream names itself, and where that is on the gate ([`own_address`]).
    pub fn own_address(&self) -> &OwnAddress {
        &self.own_address
    }

    /// The current worker's client.
    fn client(&self) -> &Client<UpstreamConnector, Body> {
        &self.clients[crate::worker::index() % self.clients.len()]
    }

    /// The upstream URI for a request path: the upstream origin, its base path, then the path and query asked for.
    fn upstream_uri(&self, path_and_query: Option<&PathAndQuery>) -> Result<Uri, GateError> {
        let pq: PathAndQuery = match (self.base_path.is_empty(), path_and_query) {
            // The common case: the path as it is (a cheap clone of shared bytes).
            (true, Some(pq)) => pq.clone(),
            (true, None) => PathAndQuery::from_static("/"),
            (false, pq) => format!("{}{}", self.base_path, pq.map_or("/", PathAndQuery::as_str))
                .parse()
                .map_err(|e| GateError::Internal(format!("cannot build the upstream path: {e}")))?,
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(pq);
        Uri::from_parts(parts).map_err(|e| GateError::Internal(format!("cannot build the upstream URI: {e}")))
    }

    /// Sends a request upstream and returns its response, streaming. The caller has already removed the client's
    /// hop-by-hop headers and then added the gate's own (see `Gate::app`): stripping here, after the gate's
    /// headers are in, would let a client name them in `Connection` and have them dropped.
    /// `client_upgrade` is the client side of a protocol switch; when the upstream answers 101 the two
    /// connections are spliced together in a task of their own. `added` holds headers none of which is in
    /// `req` yet; they go into the request too.
    ///
    /// The request is lent, not given: it stays where the caller holds it (the one copy in a request's future),
    /// and only the path through hyper's client, which needs it whole, takes it out (leaving an empty request).
    /// Not an `async fn`: one keeps a moved copy of each argument next to the original for its whole life.
    #[allow(clippy::manual_async_fn)] // deliberately not an async fn, see above
    pub fn forward<'a>(
        &'a self,
        req: &'a mut Request<Body>,
        client_upgrade: Option<ClientUpgrade>,
        added: Added<'a>,
    ) -> impl std::future::Future<Output = Result<Response<Body>, GateError>> + Send + 'a {
        async move {
            let original_host = req.headers().get(header::HOST).cloned().or_else(|| {
                req.uri()
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            });
            // The upstream connection is HTTP/1.1 whatever the client spoke (but for an `h2c://` app, where
            // `forward_pooled` moves the host to :authority), and HTTP/2 has no Host field: set one.
            let host = match (self.preserve_host, original_host) {
                (true, Some(h)) => h,
                _ => self.host_header.clone(),
            };
            req.headers_mut().insert(header::HOST, host);
            // An expectation is met here, not passed on, as nginx and Envoy do. RFC 9110 §10.1.1 asks a proxy to
            // answer or forward the request head at once, which this does; it says nothing of keeping the field.
            // Over HTTP/1.1 the front and hyper's server send `100 Continue` when the body is first asked for, which
            // the upstream request does as soon as its head is sent (hyper's HTTP/2 server sends none, and the
            // client sends its body after its own wait). The upstream's interim answer would be dropped either way,
            // and an upstream that knows no expectations may refuse the request (417, §15.5.18).
            req.headers_mut().remove(header::EXPECT);

            match &self.lean {
                Some(lean)
                    if client_upgrade.is_none()
                        && client::Client::handles(req.method(), !req.body().is_end_stream()) =>
                {
                    self.forward_lean(lean, req, &added).await
                }
                // Less common, and larger: boxed, so the usual request's future (which hyper moves about) stays small.
                _ => {
                    added.insert_into(req.headers_mut());
                    let (parts, body) = std::mem::replace(req, Request::new(Body::Empty)).into_parts();
                    Box::pin(self.forward_pooled(parts, body, client_upgrade)).await
                }
            }
        }
    }

    /// A bodiless `GET` or `HEAD` through the lean client ([`client`]), with the `added` headers written after the rest.
    async fn forward_lean(
        &self,
        lean: &client::Client,
        req: &Request<Body>,
        added: &Added<'_>,
    ) -> Result<Response<Body>, GateError> {
        let pq = req.uri().path_and_query().map_or("/", PathAndQuery::as_str);
        // One reading of the clock for the latency metric, the deadline and the pool's idle bookkeeping.
        let sent = tokio::time::Instant::now();
        let send = || lean.send(req.method(), &self.base_path, pq, req.headers(), added, sent);
        let resp = match crate::deadlines::timeout_at(sent + self.response_timeout, send).await {
            Err(_) => return Err(UpstreamError::Timeout(self.response_timeout).into()),
            Ok(result) => result.map_err(UpstreamError::from)?,
        };
        self.metrics.upstream_latency(self.app, sent.elapsed());
        // The lean client's responses carry no hop-by-hop fields: it reads them and leaves them out.
        let (parts, body) = resp.into_parts();
        Ok(Response::from_parts(parts, Body::Upstream(body)))
    }

    /// Everything else through hyper's pooled client: request bodies, other methods, upgrades, HTTPS upstreams.
    async fn forward_pooled(
        &self,
        mut parts: http::request::Parts,
        body: Body,
        client_upgrade: Option<ClientUpgrade>,
    ) -> Result<Response<Body>, GateError> {
        parts.uri = self.upstream_uri(parts.uri.path_and_query())?;
        if self.http2 {
            // HTTP/2 has no protocol switch (RFC 9113 §8.6): a WebSocket cannot be opened to this app.
            if client_upgrade.is_some() {
                return Err(UpstreamError::BadResponse(
                    "the app speaks HTTP/2 (h2c://), which has no protocol upgrade for a WebSocket".into(),
                )
                .into());
            }
            // A client speaking HTTP/2 receives trailers (gRPC's status comes in them): say so, as gRPC requires
            // (`te: trailers`, the one TE value HTTP/2 allows, RFC 9113 §8.2.2). The host goes in :authority.
            if parts.version == Version::HTTP_2 {
                parts.headers.insert(header::TE, HeaderValue::from_static("trailers"));
            }
            parts.headers.remove(header::HOST);
            parts.version = Version::HTTP_2;
        } else {
            parts.version = Version::HTTP_11;
        }
        // A request body that fails on the client's side (malformed chunking, a hang-up mid-body) makes hyper's
        // client abort the upstream request; the failure is the client's, and is answered as such.
        let client_failure: Arc<std::sync::OnceLock<BodyFailure>> = Arc::default();
        let body = match body {
            body @ (Body::Paced(_) | Body::Received(_)) => Body::Boxed(http_body_util::BodyExt::boxed(ClientBody {
                inner: body,
                failed: Arc::clone(&client_failure),
            })),
            other => other,
        };
        // The protocols offered, to hold a 101 to them.
        let mut offered = http::HeaderMap::new();
        if client_upgrade.is_some() {
            for v in parts.headers.get_all(header::UPGRADE) {
                offered.append(header::UPGRADE, v.clone());
            }
        }
        let upstream_req = Request::from_parts(parts, body);
        let sent = Instant::now();
        let mut resp = match tokio::time::timeout(self.response_timeout, self.client().request(upstream_req)).await {
            Err(_) => return Err(UpstreamError::Timeout(self.response_timeout).into()),
            Ok(Err(e)) => {
                return Err(match client_failure.get() {
                    Some(BodyFailure::Stalled) => ClientError::BodyStalled.into(),
                    Some(BodyFailure::Gone) => ClientError::WentAway.into(),
                    Some(BodyFailure::Unreadable(why)) => {
                        ClientError::BadRequest(format!("the request body could not be read: {why}")).into()
                    }
                    None => UpstreamError::Unreachable(error_chain(&e)).into(),
                })
            }
            Ok(Ok(r)) => r,
        };
        self.metrics.upstream_latency(self.app, sent.elapsed());

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if client_upgrade.is_some() && !hop::upgrade_matches(&offered, resp.headers()) {
                // RFC 9110 §15.2.2: the server switches to a protocol the client asked for, and only that is spliced.
                return Err(UpstreamError::BadResponse(
                    "the upstream switched to a protocol the client did not ask for".into(),
                )
                .into());
            }
            if let Some(client_side) = client_upgrade {
                let upstream_side = hyper::upgrade::on(&mut resp);
                // Counted before the task starts, so a shutdown that begins now already waits for it.
                self.metrics.upgrade_started();
                tokio::spawn(splice(
                    client_side.on,
                    upstream_side,
                    self.tunnel_idle_timeout,
                    client_side.until_signed_out,
                    Arc::clone(&self.metrics),
                ));
                let (mut parts, _) = resp.into_parts();
                hop::remove_hop_by_hop(&mut parts.headers, true);
                return Ok(Response::from_parts(parts, body::empty()));
            }
            // A 101 the client did not ask for cannot be honoured.
            return Err(UpstreamError::Unreachable("the upstream switched protocols unasked".into()).into());
        }

        let (mut parts, incoming) = resp.into_parts();
        hop::remove_hop_by_hop(&mut parts.headers, false);
        Ok(Response::from_parts(parts, body::incoming(incoming)))
    }
}

/// The client's request body as hyper's client sends it upstream, remembering why it failed when it fails on the
/// client's side (RFC 9112 §7.1: an invalid chunk size, data longer than its chunk, a bare LF, an overflow; or the
/// client hanging up mid-body), so the gate answers 400 and logs a client error instead of blaming the upstream.
///
/// The body ends at its data: a client's trailer fields (RFC 9110 §6.5) are never passed on. HTTP/2 would carry
/// them to an `h2c://` app as they came, where an app that reads trailers would take a client's
/// `X-Forwarded-User` sent after the body for the gate's; hyper's HTTP/1.1 client sends only the trailers a
/// `Trailer` field declares, and the gate drops that field, so an HTTP/1.1 app got none already.
struct ClientBody {
    /// The client's body, as hyper's server or the HTTP/1 front reads it.
    inner: Body,
    failed: Arc<std::sync::OnceLock<BodyFailure>>,
}

/// Why a client's request body failed.
enum BodyFailure {
    /// The client stopped sending it ([`crate::body::paced::BodyStalled`]).
    Stalled,
    /// The client went away in the middle of it ([`crate::body::paced::ClientGone`]).
    Gone,
    /// Anything else, as its error chain reads.
    Unreadable(String),
}

impl http_body::Body for ClientBody {
    type Data = bytes::Bytes;
    type Error = body::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, body::BoxError>>> {
        match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            std::task::Poll::Ready(Some(Err(e))) => {
                let failure = if BodyStalled::is_in(&*e) {
                    BodyFailure::Stalled
                } else if ClientGone::is_in(&*e) {
                    BodyFailure::Gone
                } else {
                    BodyFailure::Unreadable(error_chain(&*e))
                };
                let _ = self.failed.set(failure);
                std::task::Poll::Ready(Some(Err(e)))
            }
            // Trailers are a body's last frame: the body ends without them.
            std::task::Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => std::task::Poll::Ready(None),
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Completes once the sign-in that let a tunnel open no longer stands.
pub type SignedOut = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// The client side of a protocol switch (see [`Forwarder::forward`]).
pub struct ClientUpgrade {
    pub on: OnUpgrade,
    /// Completes once the sign-in that let the tunnel open no longer stands (a session signed out, logged out or
    /// past its lifetime; a bearer token expired); the tunnel is closed then. `None`: a public route's tunnel.
    pub until_signed_out: Option<SignedOut>,
}

/// Copies bytes both ways between the upgraded client and upstream connections until both sides close, until no
/// byte has moved either way for `idle_timeout` (a peer that vanished, or a half-closed tunnel nobody finishes; as
/// nginx's `proxy_read_timeout` does for WebSockets), or until `until_signed_out` completes. Counted in
/// `logto_gate_active_upgrades`, which shutdown waits for.
async fn splice(
    client: OnUpgrade,
    upstream: OnUpgrade,
    idle_timeout: Duration,
    until_signed_out: Option<SignedOut>,
    metrics: Arc<Metrics>,
) {
    struct Counted(Arc<Metrics>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.upgrade_ended();
        }
    }
    let _counted = Counted(metrics);
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "protocol upgrade did not complete");
            return;
        }
    };
    let activity = Arc::new(Activity::new());
    let mut client = ActivityIo::new(TokioIo::new(client), Arc::clone(&activity));
    let mut upstream = TokioIo::new(upstream);
    let copy = tunnel::copy_both_ways(&mut client, &mut upstream);
    tokio::pin!(copy);
    let mut idle = IdleCheck::new(&activity, idle_timeout);
    let mut tick = tokio::time::interval(idle.interval());
    let signed_out = async move {
        match until_signed_out {
            Some(ended) => ended.await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(signed_out);
    loop {
        tokio::select! {
            result = &mut copy => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "upgraded connection ended with an error");
                }
                return;
            }
            () = &mut signed_out => {
                tracing::info!("closing an upgraded connection: the sign-in that opened it has ended");
                return;
            }
            _ = tick.tick() => {
                // Every byte of the tunnel passes the client side, in one direction or the other.
                if idle.is_idle(&activity) {
                    tracing::debug!(after = ?idle_timeout, "closing an idle upgraded connection");
                    return;
                }
            }
        }
    }
}
