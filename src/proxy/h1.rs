//! A lean HTTP/1.1 client (RFC 9112) for the commonest signed-in request: a `GET` or `HEAD` without a body, to a
//! plain-HTTP upstream. The request head is written, and the response read and streamed back, by the client
//! connection's own task, over a per-worker pool of upstream connections.
//!
//! Everything else (request bodies, other methods, protocol upgrades, HTTPS upstreams) goes through hyper's pooled
//! client ([`super::Forwarder`]), which drives each upstream connection in a task of its own and passes every
//! request and response across channels between the two tasks; for a small `GET` that costs more than the proxying.
//!
//! What this client accepts from the upstream is deliberately narrow, so that no response can be framed two ways:
//! - a response head of at most [`MAX_HEAD`] bytes and [`MAX_HEADERS`] fields, as httparse (hyper's parser) reads
//!   it; the head is re-encoded by the server side, so no second reader ever sees the upstream's bytes;
//! - a body framed by one `Content-Length` (repeated copies must agree), by `Transfer-Encoding: chunked` alone, or
//!   by the connection's end (RFC 9112 §6.3); `Transfer-Encoding` next to `Content-Length`, or any other transfer
//!   coding, is refused with a 502 (§6.3 ¶3: "ought to be handled as an error");
//! - no body after `HEAD`, 204 or 304, whatever the head says (§6.3 ¶1);
//! - 1xx interim responses are skipped; a 101 nobody asked for is an error.
//!
//! A body that ends early (the connection closes before `Content-Length` bytes or before the last chunk) ends the
//! stream with an error, so the client sees a broken response, never a short one passed off as whole. Chunk
//! extensions and trailer fields are read and dropped.
//!
//! A connection returns to its worker's pool only after a complete response with nothing left over, from an
//! HTTP/1.1 upstream that did not say `Connection: close`. Before reuse each pooled connection is asked of the kernel
//! (a non-blocking `MSG_PEEK`) whether anything arrived: a close that has already arrived drops it, and bytes sent
//! unasked (as bytes left over after a response) make the worker distrust its upstream and open a new connection for
//! every request for [`DISTRUST_FOR`], since such bytes landing during the next request would be taken for its
//! answer. A close that arrives later shows as the request failing before any response byte: then, `GET` and `HEAD`
//! being idempotent (RFC 9110 §9.2.2), the request is sent once more on a new connection.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body::{Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::error::UpstreamError;

/// The largest response head accepted (hyper's client allows about as much).
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields a response head may have (as hyper's client).
pub const MAX_HEADERS: usize = 100;
/// The longest chunk-size line (with extensions) and the most trailer bytes accepted.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;
/// Reads start at this size and double, while each read fills its buffer, up to [`MAX_READ`].
const FIRST_READ: usize = 8 * 1024;
const MAX_READ: usize = 64 * 1024;
/// Idle connections kept per worker.
const MAX_IDLE: usize = 1024;
/// How often a worker's idle connections are checked for having been closed or having expired.
const REAP_EVERY: Duration = Duration::from_secs(1);

/// The fast client: one connection pool per worker ([`crate::worker`]).
pub struct Client {
    /// `host:port` of the upstream, resolved at each new connection.
    target: String,
    connect_timeout: Duration,
    pools: Box<[Arc<Pool>]>,
}

/// One worker's idle upstream connections, most recently used last. Aligned so that no other worker's data shares
/// a cache line with its lock, taken on every request.
#[repr(align(128))]
pub struct Pool {
    idle_timeout: Duration,
    inner: Mutex<PoolInner>,
}

#[derive(Default)]
struct PoolInner {
    idle: Vec<Idle>,
    reaping: bool,
    /// Until when no connection is reused: the upstream was caught sending bytes nobody asked for.
    distrusted_until: Option<Instant>,
}

/// How long a worker opens a new connection for every request after its upstream sent bytes unasked on a
/// connection between responses (a buggy app appending to a response). Such bytes that land while the next request
/// is under way cannot be told from its answer; without reuse there is no next request on that connection.
const DISTRUST_FOR: Duration = Duration::from_secs(60);

/// What a pooled connection shows between responses.
#[derive(Debug, PartialEq, Eq)]
enum Probe {
    /// Nothing to read: reusable.
    Quiet,
    /// The upstream closed it (or it failed).
    Closed,
    /// Bytes nobody asked for.
    Unasked,
}

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

/// An upstream connection and its read buffer (empty between responses).
struct Conn {
    io: TcpStream,
    buf: BytesMut,
    read_size: usize,
    /// Kept between the connection's responses, so that reading a head allocates and clears nothing.
    scratch: HeadScratch,
}

/// What [`parse_response`] keeps from one response head of a connection to the next.
#[derive(Default)]
struct HeadScratch {
    spans: Vec<crate::names::Span>,
    names: crate::names::Names,
}

impl Client {
    /// A client for `host:port`, with pools for `workers` workers; idle connections are closed after `idle_timeout`.
    pub fn new(target: String, connect_timeout: Duration, idle_timeout: Duration, workers: usize) -> Self {
        Client {
            target,
            connect_timeout,
            pools: (0..workers.max(1))
                .map(|_| {
                    Arc::new(Pool {
                        idle_timeout,
                        inner: Mutex::default(),
                    })
                })
                .collect(),
        }
    }

    /// Whether this client can send `method` with a body that `has_body`: bodiless `GET` and `HEAD` only.
    pub fn handles(method: &Method, has_body: bool) -> bool {
        !has_body && (method == Method::GET || method == Method::HEAD)
    }

    /// Sends a bodiless `GET` or `HEAD` (the caller checked [`Client::handles`]) for `base_path` + `path_and_query`
    /// with `headers` (hop-by-hop fields already removed, `Host` set) and then `added` (whose names are not in
    /// `headers`), and returns the response once its head has arrived, without hop-by-hop fields; the body streams
    /// from the connection as it is read. `now` is when the request started (the pool counts idle time from the
    /// start of a connection's last request, which errs on the side of closing early).
    pub async fn send(
        &self,
        method: &Method,
        base_path: &str,
        path_and_query: &str,
        headers: &HeaderMap,
        added: &super::Added<'_>,
        now: Instant,
    ) -> Result<Response<ResponseBody>, UpstreamError> {
        let pool = &self.pools[crate::worker::index() % self.pools.len()];
        let head_only = method == Method::HEAD;
        let mut pooled = pool.take(now);
        loop {
            let reused = pooled.is_some();
            let mut conn = match pooled.take() {
                Some(conn) => conn,
                // Boxed: opening a connection is rare, and its future (address resolution included) would
                // otherwise enlarge every request's.
                None => Box::pin(self.connect()).await?,
            };
            let request = Request {
                method,
                base_path,
                path_and_query,
                headers,
                added,
            };
            match exchange(&mut conn, &request, head_only).await {
                Ok(head) => return Ok(head.into_response(conn, pool, now)),
                // A pooled connection the upstream closed while it sat idle: once more on a new one. The idle ones
                // older than it have most likely been closed as well.
                Err(Failure::Closed(e)) if reused => {
                    tracing::debug!(error = %e, "a pooled upstream connection was closed; sending again on a new one");
                    pool.clear();
                }
                Err(Failure::Closed(e) | Failure::Other(e)) => return Err(e),
            }
        }
    }

    /// Boxed once per connection: a response body holds its connection, and hyper moves the response (and the
    /// request's future around it) several times per request.
    async fn connect(&self) -> Result<Box<Conn>, UpstreamError> {
        let connect = TcpStream::connect(self.target.as_str());
        let io = match tokio::time::timeout(self.connect_timeout, connect).await {
            Err(_) => {
                return Err(UpstreamError::Unreachable(format!(
                    "connecting to {} timed out after {:?}",
                    self.target, self.connect_timeout
                )))
            }
            Ok(Err(e)) => {
                return Err(UpstreamError::Unreachable(format!(
                    "cannot connect to {}: {e}",
                    self.target
                )))
            }
            Ok(Ok(io)) => io,
        };
        // Heads are written whole, at once: Nagle would only hold them back.
        io.set_nodelay(true)
            .map_err(|e| UpstreamError::Unreachable(format!("cannot set TCP_NODELAY: {e}")))?;
        Ok(Box::new(Conn {
            io,
            buf: BytesMut::new(),
            read_size: FIRST_READ,
            scratch: HeadScratch::default(),
        }))
    }
}

/// Why an exchange failed.
enum Failure {
    /// The connection was closed or reset before any byte of a response arrived: the request may be sent again.
    Closed(UpstreamError),
    Other(UpstreamError),
}

/// What the lean client sends: a bodiless request head.
struct Request<'a> {
    method: &'a Method,
    base_path: &'a str,
    path_and_query: &'a str,
    headers: &'a HeaderMap,
    /// Written after `headers`.
    added: &'a super::Added<'a>,
}

/// Writes the request head on `conn` and reads the response head.
async fn exchange(conn: &mut Conn, request: &Request<'_>, head_only: bool) -> Result<Head, Failure> {
    encode_request(&mut conn.buf, request);
    let written = conn.io.write_all(&conn.buf).await;
    conn.buf.clear();
    if let Err(e) = written {
        return Err(Failure::Closed(UpstreamError::Unreachable(format!(
            "writing the request failed: {e}"
        ))));
    }
    let mut received = false;
    loop {
        match next_head(&mut conn.buf, &mut conn.scratch, head_only) {
            Ok(Some(head)) => return Ok(head),
            Ok(None) => {}
            Err(e) => return Err(Failure::Other(UpstreamError::BadResponse(e))),
        }
        let read = poll_fn(|cx| conn.poll_fill(cx)).await;
        let failure = |text: String| {
            let e = UpstreamError::Unreachable(text);
            if received {
                Failure::Other(e)
            } else {
                Failure::Closed(e)
            }
        };
        match read {
            Ok(0) => {
                return Err(failure(
                    "the upstream closed the connection before a complete response head".into(),
                ))
            }
            Ok(_) => received = true,
            Err(e) => return Err(failure(format!("reading the response failed: {e}"))),
        }
    }
}

/// The final response head at the front of `buf`, once it is all there (interim responses are skipped).
fn next_head(buf: &mut BytesMut, scratch: &mut HeadScratch, head_only: bool) -> Result<Option<Head>, String> {
    loop {
        match parse_response(buf, scratch, head_only)? {
            Parsed::Head(head) => return Ok(Some(head)),
            Parsed::Interim => {}
            Parsed::Partial if buf.len() >= MAX_HEAD => return Err(too_large()),
            Parsed::Partial => return Ok(None),
        }
    }
}

fn too_large() -> String {
    format!("the upstream's response head is larger than {MAX_HEAD} bytes")
}

/// The request head, as RFC 9112 §3: request line, one field per line, empty line. Every name and value here is
/// already a valid `HeaderName` / `HeaderValue` (no CR, LF or NUL can be in them) and the path was parsed by hyper
/// or validated at configuration, so writing them out cannot split the head.
fn encode_request(buf: &mut BytesMut, request: &Request<'_>) {
    let Request {
        method,
        base_path,
        path_and_query,
        headers,
        added,
    } = *request;
    let fields: usize = headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    buf.reserve(method.as_str().len() + base_path.len() + path_and_query.len() + 13 + fields + added.written_len() + 2);
    buf.put_slice(method.as_str().as_bytes());
    buf.put_u8(b' ');
    buf.put_slice(base_path.as_bytes());
    buf.put_slice(path_and_query.as_bytes());
    buf.put_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        buf.put_slice(name.as_str().as_bytes());
        buf.put_slice(b": ");
        buf.put_slice(value.as_bytes());
        buf.put_slice(b"\r\n");
    }
    added.write(buf);
    buf.put_slice(b"\r\n");
}

/// What [`parse_response`] found at the start of the buffer.
enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// A 1xx interim response, removed from the buffer.
    Interim,
    /// A final response head, removed from the buffer; its body (if any) follows.
    Head(Head),
}

/// A final response head and how its body is framed.
#[derive(Debug)]
struct Head {
    status: StatusCode,
    /// The end-to-end fields: never a hop-by-hop one or one that `Connection` names (RFC 9110 §7.6.1).
    fields: Fields,
    framing: Framing,
    /// Whether the connection may carry another request once the body is read.
    keep_alive: bool,
}

impl Head {
    fn into_response(self, conn: Box<Conn>, pool: &Arc<Pool>, started: Instant) -> Response<ResponseBody> {
        let mut body = ResponseBody {
            conn: Some(conn),
            framing: self.framing,
            pool: self.keep_alive.then(|| Arc::clone(pool)),
            started,
            fields: self.fields,
        };
        if body.framing == Framing::Done {
            body.finish();
        }
        let mut response = Response::new(body);
        // The gate's response to its client is its own HTTP/1.1 (or HTTP/2) message, whatever the upstream spoke.
        *response.status_mut() = self.status;
        response
    }
}

/// Parses a response head at the start of `buf` (RFC 9112 §4, §6.3). Header values are slices of the one buffer
/// the head was read into, not copies. `scratch` is the connection's: its span list is reused so that nothing is
/// allocated or zeroed per head (an initialised array for the most fields a head may have would be cleared each
/// time: 3 KiB), and its names are those of the connection's last head.
fn parse_response(buf: &mut BytesMut, scratch: &mut HeadScratch, head_only: bool) -> Result<Parsed, String> {
    let HeadScratch { spans, names } = scratch;
    // Where each field's name and value lie in `buf`, so the parse's borrow of it can end before it is split.
    spans.clear();
    let (len, code, minor) = {
        let mut slots = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed =
            httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut response, buf, &mut slots);
        let len = match parsed {
            // However the head arrived (in one read or many), the same limit.
            Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => return Err(too_large()),
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(format!(
                    "the upstream's response has more than {MAX_HEADERS} header fields"
                ))
            }
            Err(e) => return Err(format!("the upstream sent a malformed response head ({e})")),
        };
        spans.extend(crate::names::spans(buf, response.headers));
        (len, response.code.unwrap_or(0), response.version.unwrap_or(0))
    };
    let head = buf.split_to(len).freeze();
    let status =
        StatusCode::from_u16(code).map_err(|_| format!("the upstream answered with an invalid status code {code}"))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err("the upstream switched protocols unasked".into());
    }
    if status.is_informational() {
        return Ok(Parsed::Interim);
    }
    // Hop-by-hop fields (RFC 9110 §7.6.1) describe the upstream connection: they are read here, for framing and
    // reuse, and never enter the response's fields.
    let mut fields = Fields {
        list: Vec::with_capacity(spans.len()),
        head: head.clone(),
    };
    let mut codings = Codings::default();
    // `Connection` values other than the usual `keep-alive` (allocated for only when there is one).
    let mut connection = Vec::new();
    for (position, &(name_start, name_end, value_start, value_end)) in spans.iter().enumerate() {
        let name = names
            .get(position, &head[name_start..name_end])
            .map_err(|_| "the upstream sent an invalid header name".to_owned())?;
        let value = &head[value_start..value_end];
        // httparse reads a value as RFC 9110 §5.5 allows it (no CR, LF or other controls but tab); `HeaderValue`
        // allows the same, which `Fields::into_map` relies on.
        if !super::hop::is_hop_by_hop(&name) {
            // The gate sets its own request id on every answer (`Gate::handle`), replacing the upstream's.
            if name != crate::gate::REQUEST_ID {
                // A head is at most MAX_HEAD (64 KiB) long.
                fields.list.push(Field {
                    name,
                    value: (value_start as u32, value_end as u32),
                });
            }
        } else if name == header::TRANSFER_ENCODING {
            codings.fields += 1;
            codings.chunked = value.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if name == header::CONNECTION {
            // The usual value names nothing to remove and does not close: no need to read it as a list.
            if !value.eq_ignore_ascii_case(b"keep-alive") {
                connection.push(
                    HeaderValue::from_maybe_shared(head.slice(value_start..value_end))
                        .map_err(|_| "the upstream sent an invalid Connection value".to_owned())?,
                );
            }
        }
    }
    // Framing first, from the fields as they came: a `Connection` option cannot make a length disappear.
    let framing = framing(&fields, codings, status, head_only)?;
    if framing == Framing::Chunked(Chunk::Size) {
        // Forwarded re-framed by the server side.
        fields.list.retain(|f| f.name != header::CONTENT_LENGTH);
    }
    // What `Connection` names is connection-specific too; `close` also ends the connection after this response.
    let close = fields.remove_connection_options(&connection);
    // HTTP/1.0 connections are not kept alive (its `Keep-Alive` extension is not spoken here).
    let keep_alive = minor == 1 && framing != Framing::Close && !close;
    Ok(Parsed::Head(Head {
        status,
        fields,
        framing,
        keep_alive,
    }))
}

/// An upstream response's end-to-end fields, as slices of the head it sent: the HTTP/1 front writes them out as they
/// are ([`crate::front`]), and hyper's servers get them as a `HeaderMap` ([`Fields::into_map`]), so the usual answer
/// is never copied into a map and out again. Hop-by-hop fields, fields `Connection` names and the upstream's
/// `X-Request-Id` (the gate sets its own) are already left out; every name and value was read by httparse.
#[derive(Debug, Default)]
pub struct Fields {
    head: Bytes,
    list: Vec<Field>,
}

/// One field: its name, and where its value lies in the head (start and end).
#[derive(Debug)]
struct Field {
    name: HeaderName,
    value: (u32, u32),
}

impl Fields {
    /// Each field's name and value.
    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &[u8])> {
        self.list
            .iter()
            .map(|f| (&f.name, &self.head[f.value.0 as usize..f.value.1 as usize]))
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Keeps only the fields for which `keep(name, value)` says so.
    pub fn retain(&mut self, mut keep: impl FnMut(&HeaderName, &[u8]) -> bool) {
        let head = &self.head;
        self.list
            .retain(|f| keep(&f.name, &head[f.value.0 as usize..f.value.1 as usize]));
    }

    /// The values of the fields named `name`.
    fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter().filter(move |(n, _)| *n == name).map(|(_, v)| v)
    }

    /// These fields, then those of `map` after them, in one map.
    pub fn into_map(self, map: HeaderMap) -> HeaderMap {
        let mut merged = HeaderMap::with_capacity(self.list.len() + map.len());
        for f in self.list {
            match HeaderValue::from_maybe_shared(self.head.slice(f.value.0 as usize..f.value.1 as usize)) {
                Ok(value) => {
                    merged.append(f.name, value);
                }
                // httparse accepts no value that `HeaderValue` refuses; were it to, the field is left out.
                Err(_) => tracing::debug!(name = %f.name, "left out an upstream field with an invalid value"),
            }
        }
        let mut last = None;
        for (name, value) in map {
            // `None`: another value of the last name.
            if let Some(name) = name {
                last = Some(name);
            }
            if let Some(name) = &last {
                merged.append(name.clone(), value);
            }
        }
        merged
    }

    /// `resp` with its upstream fields, if a body of this client still holds them, moved into its map (before the
    /// fields already there), for hyper's servers.
    pub fn into_response_map(mut resp: Response<crate::body::Body>) -> Response<crate::body::Body> {
        if let crate::body::Body::Upstream(body) = resp.body_mut() {
            let fields = body.take_fields();
            if !fields.is_empty() {
                let map = std::mem::take(resp.headers_mut());
                *resp.headers_mut() = fields.into_map(map);
            }
        }
        resp
    }

    /// Removes every field the `Connection` values `connection` name, as [`super::hop::remove_connection_options`]
    /// does for a map (options read by the same [`super::hop::connection_options`]); returns whether `close` was
    /// among them.
    fn remove_connection_options(&mut self, connection: &[HeaderValue]) -> bool {
        let mut close = false;
        for option in connection.iter().flat_map(super::hop::connection_options) {
            close |= option.eq_ignore_ascii_case("close");
            self.list.retain(|f| !f.name.as_str().eq_ignore_ascii_case(option));
        }
        close
    }
}

/// The `Transfer-Encoding` fields of a response head.
#[derive(Debug, Clone, Copy, Default)]
struct Codings {
    /// How many there were.
    fields: usize,
    /// Whether the last one said `chunked` and nothing else.
    chunked: bool,
}

/// How a response body is delimited (RFC 9112 §6.3).
fn framing(fields: &Fields, codings: Codings, status: StatusCode, head_only: bool) -> Result<Framing, String> {
    let has_te = codings.fields > 0;
    let length = content_length(fields)?;
    // Refused even where no body follows: a head framed two ways says something is wrong upstream.
    if has_te && length.is_some() {
        return Err("the upstream's response has both Transfer-Encoding and Content-Length".into());
    }
    if head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Done);
    }
    if has_te {
        if codings.fields != 1 || !codings.chunked {
            return Err("the upstream used a transfer coding other than chunked alone".into());
        }
        return Ok(Framing::Chunked(Chunk::Size));
    }
    Ok(match length {
        Some(0) => Framing::Done,
        Some(n) => Framing::Length(n),
        None => Framing::Close,
    })
}

/// The response's `Content-Length`, if any: every copy and list member must be the same decimal number.
fn content_length(fields: &Fields) -> Result<Option<u64>, String> {
    let mut length = None;
    for value in fields.values(&header::CONTENT_LENGTH) {
        for member in value.split(|&b| b == b',') {
            match (crate::framing::parse_decimal(member.trim_ascii()), length) {
                (None, _) => return Err("the upstream sent an invalid Content-Length".into()),
                (Some(n), Some(seen)) if n != seen => {
                    return Err("the upstream sent conflicting Content-Length values".into())
                }
                (Some(n), _) => length = Some(n),
            }
        }
    }
    Ok(length)
}

/// Where a response body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are still to come.
    Length(u64),
    /// Chunked (RFC 9112 §7.1), at this step.
    Chunked(Chunk),
    /// Everything until the upstream closes the connection.
    Close,
    /// Complete.
    Done,
}

/// What [`Framing::decode`] found at the front of the buffer.
enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The body is complete.
    End,
    /// More bytes must be read first.
    NeedMore,
}

impl Framing {
    /// Takes the next piece of body from the front of `buf`, leaving whatever follows the body there.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, String> {
        loop {
            match self {
                Framing::Done => return Ok(Decoded::End),
                Framing::Length(_) | Framing::Close if buf.is_empty() => return Ok(Decoded::NeedMore),
                Framing::Length(left) => {
                    let take = usize::try_from(*left).map_or(buf.len(), |left| left.min(buf.len()));
                    *left -= take as u64;
                    if *left == 0 {
                        *self = Framing::Done;
                    }
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                Framing::Close => return Ok(Decoded::Data(buf.split().freeze())),
                Framing::Chunked(Chunk::End) => *self = Framing::Done,
                Framing::Chunked(state) => match chunk_step(state, buf)? {
                    Step::Data(data) => return Ok(Decoded::Data(data)),
                    Step::Next => {}
                    Step::NeedMore => return Ok(Decoded::NeedMore),
                },
            }
        }
    }

    /// The connection ended (after [`Framing::decode`] asked for more): fine only for a body delimited by it.
    fn at_eof(&mut self) -> Result<(), String> {
        match *self {
            Framing::Close | Framing::Done => {
                *self = Framing::Done;
                Ok(())
            }
            Framing::Length(left) => Err(format!(
                "the upstream closed the connection {left} bytes before the end of the body"
            )),
            Framing::Chunked(_) => Err("the upstream closed the connection before the last chunk".into()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes still to come.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one; this many trailer bytes read so far.
    Trailers(usize),
    /// The empty line after the trailers has been read: the message is complete.
    End,
}

/// One step of chunked decoding over what is buffered.
enum Step {
    /// Data to pass on.
    Data(Bytes),
    /// Moved to another state; go on.
    Next,
    /// More bytes are needed.
    NeedMore,
}

/// Decodes from the front of `buf` in `state`.
fn chunk_step(state: &mut Chunk, buf: &mut BytesMut) -> Result<Step, String> {
    match *state {
        Chunk::Size => {
            let Some(end) = line_end(buf, MAX_CHUNK_LINE, "chunk-size line")? else {
                return Ok(Step::NeedMore);
            };
            let line = buf.split_to(end + 2);
            *state = match parse_chunk_size(&line[..end])? {
                0 => Chunk::Trailers(0),
                n => Chunk::Data(n),
            };
            Ok(Step::Next)
        }
        Chunk::Data(left) => {
            if buf.is_empty() {
                return Ok(Step::NeedMore);
            }
            let take = usize::try_from(left).map_or(buf.len(), |left| left.min(buf.len()));
            let data = buf.split_to(take).freeze();
            let left = left - take as u64;
            *state = if left == 0 { Chunk::DataEnd } else { Chunk::Data(left) };
            Ok(Step::Data(data))
        }
        Chunk::DataEnd => {
            if buf.len() < 2 {
                return Ok(Step::NeedMore);
            }
            if &buf[..2] != b"\r\n" {
                return Err("the upstream's chunk data is longer than its size".into());
            }
            let _ = buf.split_to(2);
            *state = Chunk::Size;
            Ok(Step::Next)
        }
        Chunk::Trailers(seen) => {
            let Some(end) = line_end(buf, MAX_TRAILERS.saturating_sub(seen), "trailer section")? else {
                return Ok(Step::NeedMore);
            };
            let _ = buf.split_to(end + 2);
            // The empty line ends the message; a trailer field is read and dropped.
            *state = if end == 0 {
                Chunk::End
            } else {
                Chunk::Trailers(seen + end + 2)
            };
            Ok(Step::Next)
        }
        Chunk::End => Ok(Step::Next),
    }
}

/// The position of the CRLF ending the first line of `buf`, `None` while it has not arrived; an error if the line
/// is longer than `limit` or ends in a bare LF (only CRLF ends a line here, so no two readers can disagree).
fn line_end(buf: &[u8], limit: usize, what: &str) -> Result<Option<usize>, String> {
    let window = &buf[..buf.len().min(limit.saturating_add(2))];
    match window.iter().position(|&b| b == b'\n') {
        Some(0) => Err(format!("the upstream's {what} has a bare LF")),
        Some(lf) if window[lf - 1] == b'\r' => Ok(Some(lf - 1)),
        Some(_) => Err(format!("the upstream's {what} has a bare LF")),
        None if window.len() >= limit.saturating_add(2) => Err(format!("the upstream's {what} is too long")),
        None => Ok(None),
    }
}

/// `chunk-size [ BWS ";" chunk-ext ]` (RFC 9112 §7.1): hexadecimal digits, then nothing or extensions.
fn parse_chunk_size(line: &[u8]) -> Result<u64, String> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err("the upstream sent an invalid chunk size".into());
    }
    let rest = line[digits..].trim_ascii_start();
    if !(rest.is_empty() || rest[0] == b';') || rest.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err("the upstream sent an invalid chunk size line".into());
    }
    // At most 16 digits: no overflow.
    Ok(line[..digits]
        .iter()
        .fold(0u64, |n, &d| (n << 4) | crate::framing::hex(d)))
}

/// A response as [`read_response`] read it.
#[derive(Debug, PartialEq, Eq)]
pub struct ReadResponse {
    pub status: u16,
    /// Whether the body was chunked.
    pub chunked: bool,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// Whether the connection could have carried another request afterwards.
    pub reusable: bool,
}

/// Reads a response the way the client does, from `reads` (what successive reads of the socket return; the end of
/// the iterator is the end of the stream), with the same head parser and body decoder: for the fuzz target and
/// tests, which check that however the bytes are split into reads, the answer is the same.
#[doc(hidden)]
pub fn read_response<'a>(reads: impl IntoIterator<Item = &'a [u8]>, head_only: bool) -> Result<ReadResponse, String> {
    let mut reads = reads.into_iter().filter(|r| !r.is_empty());
    let mut buf = BytesMut::new();
    let mut scratch = HeadScratch::default();
    let head = loop {
        if let Some(head) = next_head(&mut buf, &mut scratch, head_only)? {
            break head;
        }
        let read = reads
            .next()
            .ok_or("the upstream closed the connection before a complete response head")?;
        buf.extend_from_slice(read);
    };
    let mut framing = head.framing;
    let chunked = matches!(framing, Framing::Chunked(_));
    let mut body = Vec::new();
    let mut delimited = true;
    loop {
        match framing.decode(&mut buf)? {
            Decoded::Data(data) => body.extend_from_slice(&data),
            Decoded::End => break,
            Decoded::NeedMore => match reads.next() {
                Some(read) => buf.extend_from_slice(read),
                None => {
                    framing.at_eof()?;
                    delimited = false;
                    break;
                }
            },
        }
    }
    Ok(ReadResponse {
        status: head.status.as_u16(),
        chunked,
        headers: head.fields.iter().map(|(n, v)| (n.to_string(), v.to_vec())).collect(),
        body,
        reusable: head.keep_alive && delimited && buf.is_empty() && reads.next().is_none(),
    })
}

/// A response body read straight from its upstream connection. The connection goes back to its worker's pool
/// when the body is complete and the connection may be reused; dropped before that, the connection is closed.
pub struct ResponseBody {
    conn: Option<Box<Conn>>,
    framing: Framing,
    /// Where the connection goes once the body is complete; `None` when it may not be reused.
    pool: Option<Arc<Pool>>,
    /// When the request started: the pool counts the connection's idle time from here.
    started: Instant,
    /// The response's fields, until someone takes them ([`ResponseBody::take_fields`]).
    fields: Fields,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody").field("framing", &self.framing).finish()
    }
}

impl ResponseBody {
    /// The response's fields (the map of a response from this client is empty until they are put in it).
    pub fn take_fields(&mut self) -> Fields {
        std::mem::take(&mut self.fields)
    }

    /// The response's fields where they still are (empty once taken).
    pub fn fields_mut(&mut self) -> &mut Fields {
        &mut self.fields
    }

    /// The body is complete: the connection goes back to the pool if nothing is left over on it.
    fn finish(&mut self) {
        self.framing = Framing::Done;
        if let (Some(conn), Some(pool)) = (self.conn.take(), self.pool.take()) {
            if conn.buf.is_empty() {
                pool.put(conn, self.started);
            } else {
                pool.leftover_seen();
            }
        }
    }

    fn error(&mut self, text: String) -> Poll<Option<Result<Frame<Bytes>, crate::body::BoxError>>> {
        self.framing = Framing::Done;
        self.conn = None;
        Poll::Ready(Some(Err(text.into())))
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.framing.decode(&mut conn.buf) {
                Err(e) => return this.error(e),
                Ok(Decoded::Data(data)) => {
                    // The last bytes: the connection is free before the client has even been sent them.
                    if this.framing == Framing::Done {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Decoded::NeedMore) => match ready!(conn.poll_fill(cx)) {
                    Ok(0) => match this.framing.at_eof() {
                        Ok(()) => {
                            this.finish();
                            return Poll::Ready(None);
                        }
                        Err(e) => return this.error(e),
                    },
                    Ok(_) => {}
                    Err(e) => return this.error(format!("reading the upstream's body failed: {e}")),
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl Conn {
    /// Reads what the socket has into the buffer: `Ok(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < self.read_size / 2 {
            self.buf.reserve(self.read_size);
        }
        let room = self.buf.capacity() - self.buf.len();
        let n = ready!(tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf))?;
        // A read that filled the room suggests a large body: read more at once next time.
        if n == room && self.read_size < MAX_READ {
            self.read_size *= 2;
        }
        Poll::Ready(Ok(n))
    }

    /// What the connection shows between responses: nothing to read (reusable), its close or a reset, or bytes
    /// sent unasked (the upstream sends nothing between responses; a buggy one that appends bytes after a complete
    /// response would have them read as the next request's answer, someone else's).
    /// Asked of the kernel with a non-blocking `MSG_PEEK` on every check, not of the runtime's record of readiness,
    /// which is only as fresh as the last time the worker polled its event loop. Bytes that arrive after this
    /// check, while the next request is under way, cannot be told from its answer.
    fn probe(&self) -> Probe {
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        match socket2::SockRef::from(&self.io).peek(&mut probe) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Probe::Quiet,
            Ok(0) | Err(_) => Probe::Closed,
            Ok(_) => Probe::Unasked,
        }
    }
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, PoolInner> {
        // Nothing under this lock can panic halfway; a poisoned pool is still a consistent list.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The newest idle connection that is neither expired nor closed; none while the upstream is distrusted.
    fn take(&self, now: Instant) -> Option<Box<Conn>> {
        let mut inner = self.lock();
        if inner.distrusted_until.is_some_and(|until| now < until) {
            inner.idle.clear();
            return None;
        }
        // Expired or closed ones met on the way are dropped (closed); the reaper sees to the rest.
        while let Some(idle) = inner.idle.pop() {
            if now.saturating_duration_since(idle.since) >= self.idle_timeout {
                continue;
            }
            match idle.conn.probe() {
                Probe::Quiet => return Some(idle.conn),
                Probe::Closed => {}
                Probe::Unasked => {
                    Self::distrust(&mut inner, now);
                    return None;
                }
            }
        }
        None
    }

    /// The upstream sent bytes unasked: no connection is reused for [`DISTRUST_FOR`].
    fn distrust(inner: &mut PoolInner, now: Instant) {
        if inner.distrusted_until.is_none_or(|until| until <= now) {
            tracing::warn!(
                for_ = ?DISTRUST_FOR,
                "the upstream sent bytes nobody asked for on a kept-alive connection; not reusing its connections"
            );
        }
        inner.distrusted_until = Some(now + DISTRUST_FOR);
        inner.idle.clear();
    }

    /// Called when a complete response left bytes over on its connection (which is then closed).
    fn leftover_seen(&self) {
        Self::distrust(&mut self.lock(), Instant::now());
    }

    fn put(self: Arc<Self>, mut conn: Box<Conn>, since: Instant) {
        // A large body grew the buffer: an idle connection keeps only a small one.
        if conn.buf.capacity() > 2 * FIRST_READ {
            conn.buf = BytesMut::new();
        }
        conn.read_size = FIRST_READ;
        let mut inner = self.lock();
        if inner.idle.len() >= MAX_IDLE || inner.distrusted_until.is_some_and(|until| Instant::now() < until) {
            return;
        }
        inner.idle.push(Idle { conn, since });
        if !inner.reaping {
            inner.reaping = true;
            drop(inner);
            tokio::spawn(reap(Arc::downgrade(&self)));
        }
    }

    fn clear(&self) {
        self.lock().idle.clear();
    }
}

/// Closes a worker's idle connections that the upstream has closed or that have been idle too long, every
/// [`REAP_EVERY`], until none is left (the next one pooled starts it again). Runs on the pool's worker, so its
/// connections are only ever touched from their own thread.
async fn reap(pool: std::sync::Weak<Pool>) {
    loop {
        tokio::time::sleep(REAP_EVERY).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let mut inner = pool.lock();
        let mut unasked = false;
        inner.idle.retain(|idle| {
            let probe = idle.conn.probe();
            unasked |= probe == Probe::Unasked;
            idle.since.elapsed() < pool.idle_timeout && probe == Probe::Quiet
        });
        if unasked {
            Pool::distrust(&mut inner, Instant::now());
        }
        if inner.idle.is_empty() {
            inner.reaping = false;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, head_only: bool) -> Result<Head, String> {
        let mut buf = BytesMut::from(text);
        match parse_response(&mut buf, &mut HeadScratch::default(), head_only)? {
            Parsed::Head(head) => Ok(head),
            Parsed::Interim => Err("interim".into()),
            Parsed::Partial => Err("partial".into()),
        }
    }

    #[test]
    fn fields_go_into_a_map_before_the_gates_own_and_the_upstreams_request_id_is_left_out() {
        let h = parse(
            "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-Request-Id: upstream\r\nVary: x\r\nSet-Cookie: b=2\r\n\
             Content-Length: 0\r\n\r\n",
            false,
        )
        .unwrap();
        let mut gate = HeaderMap::new();
        gate.append(header::SET_COOKIE, HeaderValue::from_static("session=s"));
        gate.insert(crate::gate::REQUEST_ID, HeaderValue::from_static("gate"));
        let map = h.fields.into_map(gate);
        let cookies: Vec<_> = map.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(cookies, ["a=1", "b=2", "session=s"]);
        assert_eq!(
            map.get_all(crate::gate::REQUEST_ID).iter().collect::<Vec<_>>(),
            ["gate"]
        );
        assert_eq!(map["vary"], "x");
        assert_eq!(map["content-length"], "0");
        assert_eq!(map.len(), 6);
        // What is passed on as read can hold nothing `HeaderValue` refuses: controls, DEL and lone CRs are refused.
        for value in ["a\u{1}b", "a\u{7f}b", "a\rb", "a\u{0}b"] {
            assert!(
                parse(&format!("HTTP/1.1 200 OK\r\nX: {value}\r\n\r\n"), false).is_err(),
                "{value:?}"
            );
        }
        let h = parse("HTTP/1.1 200 OK\r\nX: tab\there, obs-text \u{e9}\r\n\r\n", false).unwrap();
        assert_eq!(
            h.fields.into_map(HeaderMap::new()).len(),
            1,
            "every value read converts"
        );
    }

    /// Decodes a whole chunked body from `wire`, returning the data and what is left over.
    fn dechunk(wire: &[u8]) -> Result<(Vec<u8>, usize), String> {
        let mut buf = BytesMut::from(wire);
        let mut state = Chunk::Size;
        let mut out = Vec::new();
        loop {
            if state == Chunk::End {
                return Ok((out, buf.len()));
            }
            match chunk_step(&mut state, &mut buf)? {
                Step::Data(d) => out.extend_from_slice(&d),
                Step::Next => {}
                Step::NeedMore => return Err("needs more".into()),
            }
        }
    }

    #[test]
    fn a_connections_field_names_are_reused_only_when_sent_the_same() {
        let mut scratch = HeadScratch::default();
        let mut read = |text: &str| {
            let mut buf = BytesMut::from(text);
            match parse_response(&mut buf, &mut scratch, false) {
                Ok(Parsed::Head(head)) => Ok(head
                    .fields
                    .iter()
                    .map(|(n, _)| n.as_str().to_owned())
                    .collect::<Vec<_>>()),
                Ok(_) => Err("not a final head".to_owned()),
                Err(e) => Err(e),
            }
        };
        let long = "x-".to_owned() + &"a".repeat(40);
        let first =
            format!("HTTP/1.1 200 OK\r\nContent-Type: a\r\nX-Custom: b\r\n{long}: c\r\nContent-Length: 0\r\n\r\n");
        let expected = ["content-type", "x-custom", long.as_str(), "content-length"];
        // The same head twice: the second is read from the kept names.
        assert_eq!(read(&first).unwrap(), expected);
        assert_eq!(read(&first).unwrap(), expected);
        // Other names (or the same in other letters, or shorter) at the same places are read afresh.
        let other = "HTTP/1.1 200 OK\r\ncontent-TYPE: a\r\nX-Custon: b\r\nX: c\r\nContent-Length: 0\r\nVary: d\r\n\r\n";
        assert_eq!(
            read(other).unwrap(),
            ["content-type", "x-custon", "x", "content-length", "vary"]
        );
        // An invalid name is refused wherever it stands, and is not kept.
        assert!(read("HTTP/1.1 200 OK\r\nContent-Type: a\r\nX\u{7f}: b\r\n\r\n").is_err());
        assert_eq!(
            read(other).unwrap(),
            ["content-type", "x-custon", "x", "content-length", "vary"]
        );
    }

    #[test]
    fn hop_by_hop_fields_are_read_but_not_passed_on() {
        let h = parse(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\n\
             X-Hop: 1\r\nUpgrade: h2c\r\nTrailer: x\r\nProxy-Authenticate: Basic\r\nX-End: 2\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.keep_alive);
        let names: Vec<&str> = h.fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["content-length", "x-end"]);
        let h = parse(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: Close\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(h.framing, Framing::Chunked(Chunk::Size));
        assert!(!h.keep_alive, "close in any case");
        assert!(h.fields.is_empty(), "{:?}", h.fields);
        // A Connection option naming the length does not unframe the body: the length is read first, then the
        // field is left out of what is passed on (and the client side frames the body itself).
        let h = parse(
            "HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 3\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(h.framing, Framing::Length(3));
        assert!(h.keep_alive);
        assert!(h.fields.is_empty());
        // Two Transfer-Encoding fields, even both chunked, are not "chunked alone".
        assert!(parse(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            false
        )
        .is_err());
        assert!(parse(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
            false
        )
        .is_err());
    }

    #[test]
    fn heads_are_framed_as_rfc_9112_section_6_3_says() {
        let h = parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello", false).unwrap();
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.keep_alive);
        assert_eq!(
            h.fields.iter().collect::<Vec<_>>(),
            [
                (&header::CONTENT_LENGTH, &b"5"[..]),
                (&HeaderName::from_static("x-a"), &b"1"[..])
            ]
        );
        let h = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false).unwrap();
        assert_eq!(h.framing, Framing::Chunked(Chunk::Size));
        let h = parse("HTTP/1.1 200 OK\r\n\r\n", false).unwrap();
        assert_eq!(h.framing, Framing::Close);
        assert!(!h.keep_alive, "a close-delimited body ends the connection");
        let h = parse(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(!h.keep_alive);
        let h = parse("HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n", false).unwrap();
        assert!(!h.keep_alive, "HTTP/1.0");
        // No body after HEAD, 204 and 304 whatever the head says.
        assert_eq!(
            parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)
                .unwrap()
                .framing,
            Framing::Done
        );
        assert_eq!(
            parse("HTTP/1.1 204 No Content\r\n\r\n", false).unwrap().framing,
            Framing::Done
        );
        assert_eq!(
            parse("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", false)
                .unwrap()
                .framing,
            Framing::Done
        );
        // Repeated copies of one length are one length.
        let h = parse(
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(h.framing, Framing::Length(5));
        assert_eq!(
            parse("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false)
                .unwrap()
                .framing,
            Framing::Done
        );
    }

    #[test]
    fn ambiguous_or_unsupported_framing_is_refused() {
        for head in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\n\r\n",
            "HTTP/1.1 999999 OK\r\n\r\n",
            "HTTP/2 200 OK\r\n\r\n",
        ] {
            let result = parse(head, false);
            assert!(
                result.is_err() && result.as_ref().err().map(String::as_str) != Some("partial"),
                "{head:?}"
            );
        }
    }

    #[test]
    fn interim_responses_are_skipped_and_partial_heads_wait() {
        let mut buf = BytesMut::from(
            "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(matches!(
            parse_response(&mut buf, &mut HeadScratch::default(), false),
            Ok(Parsed::Interim)
        ));
        assert!(matches!(
            parse_response(&mut buf, &mut HeadScratch::default(), false),
            Ok(Parsed::Head(_))
        ));
        assert!(buf.is_empty());
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Len");
        assert!(matches!(
            parse_response(&mut buf, &mut HeadScratch::default(), false),
            Ok(Parsed::Partial)
        ));
        let mut many = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..=MAX_HEADERS {
            many.push_str(&format!("x-{i}: v\r\n"));
        }
        many.push_str("\r\n");
        assert!(parse(&many, false).unwrap_err().contains("more than 100"));
    }

    #[test]
    fn chunked_bodies_decode_with_extensions_and_trailers_dropped() {
        let (data, left) = dechunk(b"5\r\nhello\r\n6;name=\"v\"\r\n world\r\n0\r\n\r\n").unwrap();
        assert_eq!(data, b"hello world");
        assert_eq!(left, 0);
        let (data, _) = dechunk(b"A \t;x\r\n0123456789\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n").unwrap();
        assert_eq!(data, b"0123456789");
        // Bytes after the message stay in the buffer (and keep the connection out of the pool).
        let (_, left) = dechunk(b"0\r\n\r\nHTTP/1.1").unwrap();
        assert_eq!(left, 8);
        assert_eq!(dechunk(b"fffffffffffffffe\r\n").unwrap_err(), "needs more");
    }

    #[test]
    fn malformed_chunking_is_an_error_not_a_guess() {
        for wire in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"5 6\r\nhello\r\n0\r\n\r\n",
            b"\r\n",
            b"10000000000000000\r\n",
            b"5\r\nhello\r\n0\r\nX: 1\n\r\n",
            b"5;a\0b\r\nhello\r\n0\r\n\r\n",
        ] {
            assert!(
                dechunk(wire).is_err_and(|e| e != "needs more"),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let long = format!("5;{}\r\n", "x".repeat(MAX_CHUNK_LINE));
        assert!(dechunk(long.as_bytes()).unwrap_err().contains("too long"));
        let trailers = format!("0\r\n{}", "x: y\r\n".repeat(MAX_TRAILERS / 6 + 2));
        assert!(dechunk(trailers.as_bytes()).unwrap_err().contains("too long"));
    }

    #[test]
    fn request_heads_are_written_as_rfc_9112_section_3() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("app:8080"));
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        let mut buf = BytesMut::new();
        let mut claims = serde_json::Map::new();
        claims.insert("sub".into(), "alice".into());
        let mapping = [(
            http::HeaderName::from_static("x-user"),
            crate::identity::ClaimPath::parse("sub").unwrap(),
        )];
        let identity = crate::identity::IdentityHeaders::render(&mapping, &claims);
        let added = super::super::Added {
            forwarded: None,
            identity: Some(&identity),
        };
        let request = Request {
            method: &Method::GET,
            base_path: "/base",
            path_and_query: "/p?q=1",
            headers: &headers,
            added: &added,
        };
        encode_request(&mut buf, &request);
        assert_eq!(
            &buf[..],
            b"GET /base/p?q=1 HTTP/1.1\r\nhost: app:8080\r\nx-a: 1\r\nx-a: 2\r\nx-user: alice\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn pooled_connections_expire_and_closed_ones_are_not_handed_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = Client::new(
            listener.local_addr().unwrap().to_string(),
            Duration::from_secs(1),
            Duration::from_secs(90),
            1,
        );
        let pool = Arc::clone(&client.pools[0]);
        let start = Instant::now();
        let conn = client.connect().await.unwrap();
        let _server_side = listener.accept().await.unwrap();
        Arc::clone(&pool).put(conn, start);
        assert!(pool.take(start + Duration::from_secs(89)).is_some(), "still fresh");
        let conn = client.connect().await.unwrap();
        let _accepted = listener.accept().await.unwrap();
        Arc::clone(&pool).put(conn, start);
        assert!(
            pool.take(start + Duration::from_secs(90)).is_none(),
            "idle for the whole timeout"
        );
        assert!(pool.lock().idle.is_empty(), "and closed, not kept");
        // One the upstream has closed is not handed out, once its end has arrived.
        let conn = client.connect().await.unwrap();
        let (closing, _) = listener.accept().await.unwrap();
        drop(closing);
        conn.io.readable().await.unwrap();
        Arc::clone(&pool).put(conn, start);
        assert!(pool.take(start).is_none());
    }

    #[test]
    fn only_bodiless_gets_and_heads_take_this_client() {
        assert!(Client::handles(&Method::GET, false));
        assert!(Client::handles(&Method::HEAD, false));
        assert!(!Client::handles(&Method::GET, true));
        assert!(!Client::handles(&Method::POST, false));
        assert!(!Client::handles(&Method::DELETE, false));
    }
}
