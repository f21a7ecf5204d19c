//! The accept loop: HTTP/1.1 and HTTP/2 on one listener (prior knowledge, or ALPN over TLS: [`crate::sniff`]),
//! HTTP/1 served by the front ([`crate::http1::server`]) until a request needs hyper's server, protocol upgrades for
//! HTTP/1.1, limits on slow and idle clients, the request-smuggling check ([`crate::http1::framing`]) on what hyper reads,
//! and graceful shutdown.
//!
//! Threads: `server.workers` worker threads, each running a single-threaded tokio runtime, all accepting from the
//! same listening socket. A connection lives on the worker that accepted it, together with its requests, the
//! upstream connections they use ([`crate::worker`] selects that worker's pool) and every task and wakeup between
//! them. The caller's runtime only waits for the shutdown signal and runs the drain.
//!
//! Shutdown (SIGTERM/SIGINT): the gate is marked draining (`/_logto/readyz` answers 503 from then on), the
//! listener is closed so new connections are refused, every open connection is asked to finish its current request
//! and close, and the process waits for those requests and for upgraded connections (WebSocket) to end, at most
//! `server.shutdown_timeout`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_rustls::TlsAcceptor;

use crate::activity::{ActivityIo, Waiting};
use crate::body::paced::{NotAnswered, PacedBody, Unanswered};
use crate::config::ServerConfig;
use crate::connections::{self, Connections, OpenCount, Place, Registration};
use crate::deadlines::{self, CoarseTimer};
use crate::gate::{Gate, WorkerGate};
use crate::http1::framing::{framing_io, AmbiguousFraming, Watch};
use crate::http1::server::{self as front, Ended, Front};
use crate::http2::Arrivals;
use crate::listener::{Accepted, Handed as HandedStream, Listener, WorkerListener};
use crate::logging::Throttled;
use crate::observed::Observed;
use crate::placement::{self, Busy, Kind};
use crate::sniff::{self, Prefixed, Protocol};

/// Limits applied to every client connection.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_read_timeout: Duration,
    /// `server.max_requests_per_connection` (HTTP/1 requests served by the front; 0: no limit).
    pub max_requests_per_connection: u32,
    pub max_header_bytes: usize,
    pub idle_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// `server.max_connections`, or what the open-file limit allows when unset.
    pub max_connections: usize,
}

impl Limits {
    /// The largest request head hyper reads (its buffer has a floor of 8 KiB); the framing check uses the same.
    fn largest_head(&self) -> usize {
        self.max_header_bytes.max(8192)
    }
}

impl From<&ServerConfig> for Limits {
    fn from(c: &ServerConfig) -> Self {
        Limits {
            header_read_timeout: c.header_read_timeout,
            max_requests_per_connection: c.max_requests_per_connection,
            max_header_bytes: c.max_header_bytes,
            idle_timeout: c.idle_timeout,
            shutdown_timeout: c.shutdown_timeout,
            max_connections: c
                .max_connections
                .unwrap_or_else(|| connections::default_max(connections::open_files())),
        }
    }
}

/// Serves `gate` on `listener` with `workers` threads until `shutdown` resolves, then drains as described in the
/// module docs. Each worker runs a single-threaded runtime and accepts from the same listening socket; a connection
/// goes to the worker [`crate::placement`] chooses (handed over once, when it is accepted), and from then on it, its
/// requests, their upstream connections and every wakeup between them stay on that thread; nothing is handed
/// between threads on the request path.
pub async fn serve(
    listener: Listener,
    gate: Arc<Gate>,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    workers: usize,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let open = OpenCount::new(limits.max_connections);
    gate.metrics().set_max_connections(limits.max_connections);
    // Every worker's runtime, connections and the channel on which the others hand it new ones, made before any
    // accepts. A runtime is made here, so a failure stops the start with an error instead of leaving a worker that
    // never accepts.
    let mut peers = Vec::new();
    let mut started = Vec::new();
    for index in 0..workers.max(1) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the runtime of worker {index}: {e}"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let load = gate.metrics().worker_connections(index);
        peers.push(WorkerPeer {
            connections: Connections::new(limits.idle_timeout, limits.header_read_timeout, load),
            busy: Busy::new(runtime.metrics()),
            handed: tx,
        });
        started.push((runtime, rx));
    }
    let shared = Arc::new(Shared {
        refusal: gate.refusal(),
        protocols: Protocols::new(&limits),
        open,
        gate: Arc::clone(&gate),
        limits: limits.clone(),
        tls,
        workers: peers,
    });
    // The socket file of a Unix listener goes when this returns, after the workers have stopped accepting.
    let (listener, _socket_file) = listener
        .into_shareable()
        .map_err(|e| format!("cannot hand the listener to the workers: {e}"))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut running = Vec::new();
    for (index, (runtime, handed)) in started.into_iter().enumerate() {
        // Its listener too, for the same reason.
        let socket = {
            let _in_runtime = runtime.enter();
            listener
                .register()
                .map_err(|e| format!("cannot share the listener with worker {index}: {e}"))?
        };
        let (exit_tx, exit_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let (shared, stop) = (Arc::clone(&shared), stop_rx.clone());
        std::thread::Builder::new()
            .name(format!("logto-gate-{index}"))
            .spawn(move || worker(index, runtime, socket, handed, shared, stop, exit_rx, done_tx))
            .map_err(|e| format!("cannot start worker thread {index}: {e}"))?;
        running.push((exit_tx, done_rx));
    }
    drop(listener);
    shutdown.await;

    gate.begin_draining();
    let _ = stop_tx.send(true);
    tracing::info!("shutting down: new connections refused, waiting for in-flight requests");
    let deadline = tokio::time::Instant::now() + limits.shutdown_timeout;
    let open = &shared.open;
    let drained = async {
        open.all_closed().await;
        // Upgraded connections outlive their HTTP connection, and token refreshes their request; wait for them too.
        gate.wait_for_background_work().await;
    };
    match tokio::time::timeout_at(deadline, drained).await {
        Ok(()) => tracing::info!("all connections finished"),
        Err(_) => tracing::warn!(open = open.get(), "shutdown timeout reached; closing what is left"),
    }
    // Workers end their runtimes now, dropping whatever is left; each says when it has.
    let mut done = Vec::new();
    for (exit, finished) in running {
        let _ = exit.send(());
        done.push(finished);
    }
    for finished in done {
        let _ = tokio::time::timeout(Duration::from_secs(5), finished).await;
    }
    Ok(())
}

/// What every worker shares.
struct Shared {
    /// The HTTP/1 front's answers to heads it cannot read.
    refusal: front::Refusal,
    protocols: Protocols,
    /// Every worker's connections, counted for the drain and against `server.max_connections`.
    open: Arc<OpenCount>,
    gate: Arc<Gate>,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    /// Every worker, by index.
    workers: Vec<WorkerPeer>,
}

/// A connection accepted by one worker and handed to another, with its place in the open count.
type Handed = (HandedStream, std::net::SocketAddr, Place);

/// What the workers know of each other: its connections (their number), how busy it has been, and where to hand
/// it a new one.
struct WorkerPeer {
    connections: Arc<Connections>,
    busy: Busy,
    handed: mpsc::UnboundedSender<Handed>,
}

/// hyper's servers for each protocol, with the limits applied.
struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Protocols {
    fn new(limits: &Limits) -> Self {
        let mut http1 = http1::Builder::new();
        http1
            // The header read timeout is armed for every request: a coarse per-worker deadline, not a tokio timer.
            .timer(CoarseTimer)
            .header_read_timeout(limits.header_read_timeout)
            // hyper answers 431 to a longer request head, whether it arrives in one read or many ...
            .max_header_size(limits.max_header_bytes)
            // ... and never buffers more than that while reading one.
            .max_buf_size(limits.largest_head())
            .keep_alive(true);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        // No keep-alive pings: every client answers them, and the answers would count as traffic, so an idle
        // connection would never reach `server.idle_timeout` (the sweeper's measure of an idle connection, as for
        // HTTP/1). A peer that is gone moves no bytes either and is closed by the same timeout.
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(limits.max_header_bytes as u32);
        Protocols { http1, http2 }
    }
}

/// One worker thread: a single-threaded runtime accepting and serving connections until `stop`, then serving what
/// is open until `exit` (or until the server is gone), then dropping the rest.
#[allow(clippy::too_many_arguments)]
fn worker(
    index: usize,
    runtime: tokio::runtime::Runtime,
    listener: WorkerListener,
    handed: mpsc::UnboundedReceiver<Handed>,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    exit: oneshot::Receiver<()>,
    done: oneshot::Sender<()>,
) {
    crate::worker::set_index(index);
    runtime.block_on(async move {
        let connections = Arc::clone(&shared.workers[index].connections);
        tokio::spawn(Arc::clone(&connections).sweep(stop.clone()));
        tokio::spawn(crate::deadlines::run());
        let gate = WorkerGate::new(&shared.gate);
        accept_until_stopped(index, listener, handed, &shared, &gate, &connections, stop).await;
        // Stopped accepting (the listener is closed): open connections drain until the server says exit.
        let _ = exit.await;
    });
    drop(runtime);
    let _ = done.send(());
}

/// How long a worker that cannot accept (out of descriptors) waits before it tries again.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// How long a worker holding a connection at `server.max_connections` waits for another to close before it makes
/// room again (a WebSocket tunnel that ends, counted apart, wakes no one).
const ROOM_RETRY: Duration = Duration::from_millis(250);

/// Accepts connections until `stop` turns true or its sender is gone, each served in a task of the worker
/// [`crate::placement`] chooses: this one (worker `index`), or another, to which it is handed. The workers share one
/// listening socket, and whichever wakes first accepts. Connections other workers hand to this one arrive on
/// `handed`.
///
/// An accepted connection takes a place in the open count. At `server.max_connections` there is none: the worker
/// holds the connection unserved, accepts no other (clients wait in the listen queue) and makes room until a place
/// frees. So it does when the process is out of descriptors (see [`crate::connections`]).
async fn accept_until_stopped(
    index: usize,
    listener: WorkerListener,
    mut handed: mpsc::UnboundedReceiver<Handed>,
    shared: &Arc<Shared>,
    gate: &Arc<WorkerGate>,
    connections: &Arc<Connections>,
    mut stop: watch::Receiver<bool>,
) {
    let serve = |stream: Accepted, peer, registration| {
        let (shared, gate) = (Arc::clone(shared), Arc::clone(gate));
        match stream {
            Accepted::Tcp(tcp) => tokio::spawn(connection(tcp, peer, shared, gate, registration)),
            Accepted::Unix(unix) => tokio::spawn(connection(unix, peer, shared, gate, registration)),
        };
    };
    // Accepted, and held until there is a place for it.
    let mut held: Option<(Accepted, std::net::SocketAddr)> = None;
    let mut full = Throttled::default();
    let mut failing = Throttled::default();
    loop {
        // Made before looking for a place, so that a connection closing in between still wakes this worker.
        let freed = shared.open.one_closed();
        if let Some((stream, peer)) = held.take() {
            let tunnels = usize::try_from(shared.gate.metrics().active_upgrades()).unwrap_or(0);
            match shared.open.reserve(tunnels) {
                Some(place) => {
                    stream.ready();
                    if let Some((stream, place)) = hand_over(shared, index, stream, peer, place) {
                        serve(stream, peer, connections.register(place));
                    }
                }
                None => {
                    let asked = make_room(shared);
                    if full.due().is_some() {
                        tracing::warn!(
                            max_connections = shared.open.max(),
                            asked_to_close = asked,
                            "server.max_connections reached: new connections wait while idle ones are closed"
                        );
                    }
                    held = Some((stream, peer));
                }
            }
        }
        let full_now = held.is_some();
        tokio::select! {
            accepted = listener.accept(), if !full_now => match accepted {
                Ok(pair) => held = Some(pair),
                Err(e) => {
                    // Out of descriptors (used by connections to the app, Redis, files as well): idle client
                    // connections make room, as at the maximum. Then back off briefly instead of spinning.
                    let asked = if out_of_descriptors(&e) { make_room(shared) } else { 0 };
                    if let Some(times) = failing.due() {
                        tracing::warn!(error = %e, asked_to_close = asked, times, "accept failed");
                    }
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            },
            () = room_or_retry(freed), if full_now => {}
            Some((stream, peer, place)) = handed.recv() => match stream.register() {
                Ok(stream) => serve(stream, peer, connections.register_handed(place)),
                Err(e) => {
                    connections.cancel_handed();
                    drop(place);
                    tracing::warn!(error = %e, "a connection handed over could not be served");
                }
            },
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return;
                }
            }
        }
    }
}

/// Resolves once `freed` does (a connection closed) or after [`ROOM_RETRY`].
async fn room_or_retry(freed: impl Future<Output = ()>) {
    let _ = tokio::time::timeout(ROOM_RETRY, freed).await;
}

/// Asks idle connections to finish, on every worker ([`Connections::make_room`]): the connections taking the places
/// may live on any of them. Counts them, and returns how many it asked.
fn make_room(shared: &Shared) -> usize {
    let asked = shared.workers.iter().map(|peer| peer.connections.make_room()).sum();
    shared.gate.metrics().closed_for_room(asked);
    asked
}

/// Whether an accept failed for want of descriptors (the process's, or the system's) or of kernel memory.
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Hands `stream` (in its `place`) to the worker [`placement::choose`] picks if that is not this one (worker
/// `index`), and returns `None`; returns the stream and its place when this worker is to serve it (its pick, or
/// the hand-off failed).
fn hand_over(
    shared: &Shared,
    index: usize,
    stream: Accepted,
    peer: std::net::SocketAddr,
    place: Place,
) -> Option<(Accepted, Place)> {
    let kind = if shared.tls.is_some() { Kind::Tls } else { Kind::Plain };
    let now = std::time::Instant::now();
    let workers = &shared.workers;
    let chosen = placement::choose(
        workers.len(),
        index,
        kind,
        |i| workers[i].connections.load(),
        |i| workers[i].busy.recent(now),
    );
    let target = match workers.get(chosen) {
        Some(target) if chosen != index => target,
        _ => return Some((stream, place)),
    };
    let stream = match stream.into_handed() {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(error = %e, "an accepted connection could not be handed over");
            return None;
        }
    };
    // Counted at once, so that the next connection of a burst already sees this one.
    target.connections.expect_handed();
    match target.handed.send((stream, peer, place)) {
        Ok(()) => None,
        // The other worker has stopped (shutdown): served here after all.
        Err(mpsc::error::SendError((stream, _, place))) => {
            target.connections.cancel_handed();
            stream.register().ok().map(|stream| (stream, place))
        }
    }
}

/// Serves one accepted connection (TLS first when configured). Nothing is allocated for hyper until the client
/// has sent its first bytes, and the wait for them is bounded by `server.header_read_timeout` like a request head.
/// An `async move` block rather than an `async fn`, which would keep a second copy of the arguments in the
/// connection's state for its whole life.
#[allow(clippy::manual_async_fn)] // deliberately, see above
fn connection<S: ClientSocket>(
    stream: S,
    peer: std::net::SocketAddr,
    shared: Arc<Shared>,
    gate: Arc<WorkerGate>,
    registration: Registration,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        let limits = &shared.limits;
        let peeked = match &shared.tls {
            None => match before_first_request(|| stream.peek_protocol(), limits, &registration, peer).await {
                Some(peeked) => peeked,
                None => return,
            },
            Some(_) => None,
        };
        let tcp = ActivityIo::new(stream, Arc::clone(registration.activity()));
        let client = Client {
            gate: &gate,
            peer: &peer,
            registration: &registration,
            shared: &shared,
        };
        match &shared.tls {
            None => client.serve(peeked, Prefixed::new(tcp)).await,
            // Boxed: the TLS state is large, and held inline it would enlarge every plain connection's task too.
            Some(acceptor) => {
                Box::pin(async {
                    // The handshake is waited for as a plain connection's first bytes are.
                    // The stream is borrowed for its ALPN, so its binding ends in this block: one the task still
                    // held while serving would be a second copy of the TLS state (1.2 KiB) in every connection.
                    let (alpn, io) = {
                        let Some(tls_stream) =
                            before_first_request(|| acceptor.accept(tcp), limits, &registration, peer).await
                        else {
                            return;
                        };
                        let alpn = sniff::alpn_protocol(tls_stream.get_ref().1.alpn_protocol());
                        (alpn, Prefixed::new(tls_stream))
                    };
                    client.serve(alpn, io).await
                })
                .await
            }
        }
    }
}

/// A client connection's socket (see [`crate::listener`]).
trait ClientSocket: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static {
    /// The protocol the client's first bytes say, read without taking them ([`sniff::peek_protocol`]); `None` when
    /// they do not say yet, or cannot be looked at so: the connection then reads them ([`Prefixed`]).
    fn peek_protocol(&self) -> impl Future<Output = io::Result<Option<Protocol>>> + Send;
}

impl ClientSocket for tokio::net::TcpStream {
    fn peek_protocol(&self) -> impl Future<Output = io::Result<Option<Protocol>>> + Send {
        sniff::peek_protocol(self)
    }
}

/// tokio cannot peek at a Unix stream: its connections read their first bytes into their buffer (a proxy on the same
/// host holds few connections, so the larger buffer of each costs little).
impl ClientSocket for tokio::net::UnixStream {
    fn peek_protocol(&self) -> impl Future<Output = io::Result<Option<Protocol>>> + Send {
        std::future::ready(Ok(None))
    }
}

/// The wait `start` makes (for the first bytes of `peer`, or its TLS handshake), bounded by the header read timeout
/// and cut short when the connection is told to finish (shutdown, or to make room); `None` when either ends it first
/// or it fails, and the connection is to be closed.
///
/// Every connection's task is as large as its largest state, and this wait is a state of every connection: it is
/// a [`deadlines::timeout_at`], which builds the wait in place from `start` (an argument future would be held twice)
/// on a coarse deadline rather than tokio's timer entry (`tokio::time::timeout` and `select!` made the state 768
/// bytes, more than serving a request takes). An `async move` block rather than an `async fn`, which would keep a
/// second copy of the arguments.
#[allow(clippy::manual_async_fn)] // deliberately, see above
fn before_first_request<'a, T, F: Future<Output = io::Result<T>> + 'a>(
    start: impl FnOnce() -> F + 'a,
    limits: &'a Limits,
    registration: &'a Registration,
    peer: std::net::SocketAddr,
) -> impl Future<Output = Option<T>> + 'a {
    async move {
        let deadline = tokio::time::Instant::now() + limits.header_read_timeout;
        let mut waiting = std::pin::pin!(deadlines::timeout_at(deadline, start));
        let waited = std::future::poll_fn(|cx| {
            if let Poll::Ready(waited) = waiting.as_mut().poll(cx) {
                return Poll::Ready(Some(waited));
            }
            registration.poll_finish(cx).map(|()| None)
        })
        .await?;
        match waited {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, %peer, "connection failed before its first request");
                None
            }
            Err(deadlines::Elapsed) => {
                tracing::debug!(%peer, "no request within the header read timeout; closing");
                None
            }
        }
    }
}

/// One accepted connection, for serving it.
struct Client<'a> {
    gate: &'a Arc<WorkerGate>,
    /// Lent, as the rest: a copy would enlarge every connection's task.
    peer: &'a std::net::SocketAddr,
    registration: &'a Registration,
    shared: &'a Shared,
}

impl Client<'_> {
    /// Serves `io` with the protocol its client speaks: `known` (by ALPN or a peek), or else read from its first
    /// bytes. HTTP/1 starts in the front ([`crate::http1::server`]) and goes to hyper's server when the front hands it over.
    /// An `async move` block taking `io` as it is (no `let mut io = io;`, which would be a second copy of the stream
    /// in the connection's state: 1.2 KiB under TLS), and lending it to the HTTP/1 front, which would otherwise keep
    /// a third.
    fn serve<I>(&self, known: Option<Protocol>, mut io: Prefixed<I>) -> impl Future<Output = ()> + '_
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        async move {
            let limits = &self.shared.limits;
            let protocol = match known {
                Some(protocol) => protocol,
                None => {
                    match before_first_request(|| io.read_protocol(), limits, self.registration, *self.peer).await {
                        Some(protocol) => protocol,
                        None => return,
                    }
                }
            };
            match protocol {
                Protocol::Http1 => {
                    let gate = self.gate;
                    let handle = |req, peer| Gate::handle(Arc::clone(gate), req, peer);
                    let front = Front {
                        handle: &handle,
                        peer: *self.peer,
                        registration: self.registration,
                        header_read_timeout: limits.header_read_timeout,
                        idle_timeout: limits.idle_timeout,
                        max_header_bytes: limits.max_header_bytes,
                        largest_head: limits.largest_head(),
                        max_requests: limits.max_requests_per_connection,
                        refusal: &self.shared.refusal,
                    };
                    let (unanswered, served) = match front::serve(&mut io, front).await {
                        Ended::Closed => return,
                        Ended::HandOff { unanswered, served } => (unanswered, served),
                    };
                    // `server.max_requests_per_connection` goes on counting where the front stopped.
                    let quota = Quota::of(limits.max_requests_per_connection, served);
                    // The smuggling check follows the connection from the head handed over on.
                    let framing = Watch::default();
                    let io = framing_io(
                        Prefixed::replaying(io, unanswered),
                        framing.clone(),
                        limits.largest_head(),
                    );
                    let conn = self
                        .shared
                        .protocols
                        .http1
                        .serve_connection(TokioIo::new(io), self.service(Some(framing), quota))
                        .with_upgrades();
                    // Boxed: only connections handed over need hyper's state.
                    let ended = Box::pin(drive(
                        conn,
                        http1::UpgradeableConnection::graceful_shutdown,
                        self.registration,
                        None,
                    ))
                    .await;
                    // A head hyper refused (and answered) is logged and counted as the gate's own answers are.
                    if let Some(error) = ended {
                        self.gate.log_http1_refusal(*self.peer, &error);
                    }
                }
                // Boxed: HTTP/2's state would otherwise enlarge every HTTP/1 connection's task.
                // `server.max_requests_per_connection` counts streams here: once it is spent the connection is
                // ended gracefully (GOAWAY, RFC 9113 §6.8), the streams under way answered, as nginx's
                // `keepalive_requests` does for HTTP/2.
                Protocol::Http2 => {
                    let quota = Quota::of(limits.max_requests_per_connection, 0);
                    // The header blocks it sends are timed (`crate::http2`).
                    let io = Observed::new(io, Arrivals::new(Arc::clone(self.registration.activity())));
                    let conn = self
                        .shared
                        .protocols
                        .http2
                        .serve_connection(TokioIo::new(io), self.service(None, quota.clone()));
                    // HTTP/2's refusals are the stream's or the connection's, not a request's.
                    let _ = Box::pin(drive(
                        conn,
                        http2::Connection::graceful_shutdown,
                        self.registration,
                        quota.as_ref(),
                    ))
                    .await;
                }
            }
        }
    }

    /// The gate as hyper's service; `framing` (HTTP/1 only) says which request heads were ambiguous
    /// ([`crate::http1::framing`]). Every request spends one of `quota`: on HTTP/1 the answer to the last one says
    /// `Connection: close`, which makes hyper's server end the connection after it (hyper answers an HTTP/1
    /// connection's requests one at a time, in order), except a `101 Switching Protocols`, after which the
    /// connection carries no more requests; on HTTP/2 [`drive`] ends the connection once the quota is spent.
    ///
    /// A request whose body stopped coming for `server.idle_timeout`, or whose client went away in the middle of
    /// it, gets no answer ([`crate::body::paced`]). Each request counts as waiting until its answer begins
    /// ([`Waiting`]), which keeps the sweeper from closing a quiet connection under it.
    fn service(
        &self,
        framing: Option<Watch>,
        quota: Option<Quota>,
    ) -> impl hyper::service::Service<
        hyper::Request<hyper::body::Incoming>,
        Response = hyper::Response<crate::body::Body>,
        Error = NotAnswered,
        Future = impl Future<Output = Result<hyper::Response<crate::body::Body>, NotAnswered>> + Send + 'static,
    > + Send
           + 'static {
        let (gate, peer) = (Arc::clone(self.gate), *self.peer);
        let idle_timeout = self.shared.limits.idle_timeout;
        let activity = Arc::clone(self.registration.activity());
        service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let waiting = Waiting::new(Arc::clone(&activity));
            let (parts, body) = req.into_parts();
            let (body, unanswered) = PacedBody::new(body, idle_timeout);
            let mut req = hyper::Request::from_parts(parts, crate::body::Body::Paced(body));
            if let Some(ambiguity) = framing.as_ref().and_then(Watch::next_request) {
                req.extensions_mut().insert(AmbiguousFraming(ambiguity));
            }
            let last = quota.as_ref().is_some_and(Quota::spend) && framing.is_some();
            // Mapped rather than wrapped in an `async` block, which would keep its own copy of the request.
            futures_util::FutureExt::map(Gate::handle(Arc::clone(&gate), req, peer), move |resp| {
                drop(waiting);
                if unanswered.as_ref().is_some_and(Unanswered::get) {
                    return Err(NotAnswered::new());
                }
                let mut resp = crate::body::into_response_map(resp);
                if last && resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
                    resp.headers_mut()
                        .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
                }
                Ok(resp)
            })
        })
    }
}

/// What is left of `server.max_requests_per_connection` on a connection hyper serves; shared by its service, which
/// spends it, and [`drive`], which watches it.
#[derive(Clone)]
struct Quota(Arc<AtomicU32>);

impl Quota {
    /// The quota of a connection that has already answered `served` requests; none when `max` is 0 (no limit).
    fn of(max: u32, served: u32) -> Option<Quota> {
        (max != 0).then(|| Quota(Arc::new(AtomicU32::new(max.saturating_sub(served)))))
    }

    /// Counts a request; `true` for the last one the connection may carry.
    fn spend(&self) -> bool {
        let before = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(1));
        before == Ok(1)
    }

    fn is_spent(&self) -> bool {
        self.0.load(Ordering::Relaxed) == 0
    }
}

/// Runs one served connection until it ends, asking it to `finish` gracefully once its worker's sweeper says so
/// (idle too long, or the server shuts down; [`crate::connections`]) or once its `quota` is spent, and dropping it
/// unfinished when the sweeper closes it (stuck: a client that takes nothing, an HTTP/2 header block too slow).
async fn drive<C>(
    conn: C,
    finish: fn(Pin<&mut C>),
    registration: &Registration,
    quota: Option<&Quota>,
) -> Option<hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(conn);
    let mut finishing = false;
    let result = std::future::poll_fn(|cx| loop {
        // Closed outright (stuck; see `crate::connections`): dropping the connection closes it.
        if registration.closing() {
            return Poll::Ready(None);
        }
        if !finishing && registration.poll_finish(cx).is_ready() {
            finishing = true;
            finish(conn.as_mut());
        }
        let polled = conn.as_mut().poll(cx);
        // The service spends the quota while the connection is polled: finish then, and poll again so that the
        // connection acts on it (nothing would wake this task for it).
        if polled.is_pending() && !finishing && quota.is_some_and(Quota::is_spent) {
            finishing = true;
            finish(conn.as_mut());
            continue;
        }
        return polled.map(Some);
    })
    .await;
    match result {
        Some(Err(e)) => {
            tracing::debug!(error = %e, "connection ended with an error");
            Some(e)
        }
        _ => None,
    }
}
