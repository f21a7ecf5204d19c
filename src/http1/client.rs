//! A lean HTTP/1.1 client (RFC 9112) for the commonest signed-in request: a `GET` or `HEAD` without a body, to a
//! plain-HTTP upstream. The request head is written, and the response read and streamed back, by the client
//! connection's own task, over a per-worker pool of upstream connections.
//!
//! Everything else (request bodies, other methods, protocol upgrades, HTTPS upstreams) goes through hyper's pooled
//! client ([`crate::proxy::Forwarder`]), which drives each upstream connection in a task of its own and passes every
//! request and response across channels between the two tasks; for a small `GET` that costs more than the proxying.
//!
//! What this client accepts from the upstream is deliberately narrow, so that no response can be framed two ways:
//! - a response head of at most [`MAX_HEAD`](super::MAX_RESPONSE_HEAD) bytes and [`MAX_HEADERS`] fields, as httparse (hyper's parser) reads
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
//! every request for a while (`pool::DISTRUST_FOR`), since such bytes landing during the next request would be taken for its
//! answer. A close that arrives later shows as the request failing before any response byte: then, `GET` and `HEAD`
//! being idempotent (RFC 9110 §9.2.2), the request is sent once more on a new connection.

use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::body::{framing, Chunk, Codings, Decoded, Framing, ResponseBody};
use super::fields::{Field, Fields};
use super::names::{self, Scratch};
use super::pool::{Conn, Pool};
use super::stream::Dial;
use super::{hop, MAX_HEADERS, MAX_RESPONSE_HEAD as MAX_HEAD};

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// No connection, or it failed before a complete response head.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// A response the client will not pass on (ambiguous framing, a malformed head).
    #[error("invalid response: {0}")]
    BadResponse(String),
}

/// Field lines a caller adds to a request head after those of its map, already rendered (the gate's
/// `X-Forwarded-*` and identity fields, [`crate::proxy::Added`]).
pub(crate) trait ExtraFields {
    /// How many bytes [`ExtraFields::write`] writes.
    fn written_len(&self) -> usize;
    /// As HTTP/1.1 field lines, each ending in CRLF.
    fn write(&self, buf: &mut BytesMut);
}

/// The fast client: one connection pool per worker ([`crate::worker`]).
pub(crate) struct Client {
    /// The upstream's `host:port` (resolved at each new connection) or socket file.
    target: Dial,
    connect_timeout: Duration,
    pools: Box<[Arc<Pool>]>,
    /// Response fields the caller replaces with its own, left out of every response (the upstream's
    /// `X-Request-Id`).
    dropped: Box<[HeaderName]>,
}

impl Client {
    /// A client for `target`, with pools for `workers` workers; idle connections are closed after `idle_timeout`.
    /// Response fields named in `dropped` never reach the caller (it sets its own).
    pub(crate) fn new(
        target: Dial,
        connect_timeout: Duration,
        idle_timeout: Duration,
        workers: usize,
        dropped: &[HeaderName],
    ) -> Self {
        Client {
            target,
            connect_timeout,
            pools: (0..workers.max(1)).map(|_| Arc::new(Pool::new(idle_timeout))).collect(),
            dropped: dropped.into(),
        }
    }

    /// Whether this client can send `method` with a body that `has_body`: bodiless `GET` and `HEAD` only.
    pub(crate) fn handles(method: &Method, has_body: bool) -> bool {
        !has_body && (method == Method::GET || method == Method::HEAD)
    }

    /// Sends a bodiless `GET` or `HEAD` (the caller checked [`Client::handles`]) for `base_path` + `path_and_query`
    /// with `headers` (hop-by-hop fields already removed, `Host` set) and then `added` (whose names are not in
    /// `headers`), and returns the response once its head has arrived, without hop-by-hop fields; the body streams
    /// from the connection as it is read. `now` is when the request started (the pool counts idle time from the
    /// start of a connection's last request, which errs on the side of closing early).
    pub(crate) async fn send(
        &self,
        method: &Method,
        base_path: &str,
        path_and_query: &str,
        headers: &HeaderMap,
        added: &impl ExtraFields,
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
            match exchange(&mut conn, &request, head_only, &self.dropped).await {
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
        let io = self
            .target
            .connect(self.connect_timeout)
            .await
            .map_err(UpstreamError::Unreachable)?;
        Ok(Box::new(Conn::new(io)))
    }
}

/// Why an exchange failed.
enum Failure {
    /// The connection was closed or reset before any byte of a response arrived: the request may be sent again.
    Closed(UpstreamError),
    Other(UpstreamError),
}

/// What the lean client sends: a bodiless request head.
struct Request<'a, A> {
    method: &'a Method,
    base_path: &'a str,
    path_and_query: &'a str,
    headers: &'a HeaderMap,
    /// Written after `headers`.
    added: &'a A,
}

/// Writes the request head on `conn` and reads the response head.
async fn exchange(
    conn: &mut Conn,
    request: &Request<'_, impl ExtraFields>,
    head_only: bool,
    dropped: &[HeaderName],
) -> Result<Head, Failure> {
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
        match next_head(&mut conn.buf, &mut conn.scratch, head_only, dropped) {
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
fn next_head(
    buf: &mut BytesMut,
    scratch: &mut Scratch,
    head_only: bool,
    dropped: &[HeaderName],
) -> Result<Option<Head>, String> {
    loop {
        match parse_response(buf, scratch, head_only, dropped)? {
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
fn encode_request(buf: &mut BytesMut, request: &Request<'_, impl ExtraFields>) {
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
        let body = ResponseBody::new(
            conn,
            self.framing,
            self.keep_alive.then(|| Arc::clone(pool)),
            started,
            self.fields,
        );
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
fn parse_response(
    buf: &mut BytesMut,
    scratch: &mut Scratch,
    head_only: bool,
    dropped: &[HeaderName],
) -> Result<Parsed, String> {
    let Scratch { spans, names } = scratch;
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
        spans.extend(names::spans(buf, response.headers));
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
    let mut fields = Fields::with_capacity(head.clone(), spans.len());
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
        if !hop::is_hop_by_hop(&name) {
            // Fields the caller sets itself (the gate's request id on every answer, `Gate::handle`).
            if !dropped.contains(&name) {
                // A head is at most MAX_HEAD (64 KiB) long.
                fields.push(Field {
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
        fields.retain(|name, _| name != header::CONTENT_LENGTH);
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
pub fn read_response<'a>(reads: impl IntoIterator<Item = &'a [u8]>, head_only: bool) -> Result<ReadResponse, String> {
    let mut reads = reads.into_iter().filter(|r| !r.is_empty());
    let mut buf = BytesMut::new();
    let mut scratch = Scratch::default();
    let head = loop {
        if let Some(head) = next_head(&mut buf, &mut scratch, head_only, &[])? {
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

#[cfg(test)]
mod tests;
