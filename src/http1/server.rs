//! The HTTP/1.1 front (RFC 9112): the usual request is read and answered here, and the connection is handed to
//! hyper's server for anything else.
//!
//! hyper's server is general (its dispatcher, its encoder, and the second reading of every head that the
//! request-smuggling check needs on top of it) in ways the usual request does not use; `bench/README.md` says what
//! serving it here bought. Every HTTP/1 connection therefore starts here, and a request head is served here only when
//! - httparse (hyper's parser, with hyper's settings) reads it whole, within `server.max_header_bytes` and
//!   [`MAX_HEADERS`] fields, with a valid method and a request target of at most [`MAX_TARGET`] bytes that parses
//!   as a URI;
//! - it is HTTP/1.1 and its method is not `CONNECT`;
//! - it has no `Upgrade` field (no protocol switch), and either at most one `Content-Length` field, of plain digits
//!   (RFC 9112 §6.3 item 6), or one `Transfer-Encoding` field saying `chunked` and nothing else and no
//!   `Content-Length` (§6.3 item 4); and no `Expect` field but one `100-continue` on a request with a body.
//!
//! A head that cannot be read is answered here ([`Refusal`]) as hyper would answer it, but with a page saying what was
//! wrong, then the connection closes: 431 for one longer than `server.max_header_bytes` or with more than
//! [`MAX_HEADERS`] fields (most often a site's cookies grown too large), 414 for a target over [`MAX_TARGET`] bytes,
//! 400 for one httparse refuses, or one to be served here whose target is not a URI ([`Malformed`]). Any other head
//! hands the connection over ([`Ended::HandOff`]) with all the bytes not yet answered, from that head's first byte:
//! hyper reads them as a new connection's first request, answers its errors itself (400 for a framing field it refuses)
//! and serves the connection from then on, and the request-smuggling check ([`crate::http1::framing`]) follows its
//! bytes from the same point. A body served here is delimited one way alone, so no request here can be framed two ways:
//! a repeated or listed `Content-Length`, a list of codings, or a length next to `Transfer-Encoding`, goes to hyper and
//! is refused there.
//!
//! A body ([`crate::http1::request_body`], [`reading`]) is read while its request is handled, a piece at a time as its
//! reader (an endpoint, or the upstream request) takes it, never past its end: what follows it is the next request. A
//! chunked body is decoded here with the own client's strict decoder ([`crate::http1::body`]: CRLF line ends only, at
//! most 16 hexadecimal digits of size, bounded extensions and trailers, which are dropped); a malformed one fails for
//! its reader, whose answer (400) goes out, and the connection closes after it, once the client has closed its side or
//! `server.header_read_timeout` has passed, whatever it sends meanwhile read and dropped (nginx's lingering close: a
//! client still writing its body would otherwise fail on a reset). When the answer comes before the body's end (the
//! gate refused the request, or the upstream answered early), the rest is not passed on (the reader sees the body fail,
//! as with Go's HTTP/1 server), and the front reads and drops it: up to [`reading::MAX_DISCARD`] bytes still to come
//! keep the connection, more (or an unknown amount: chunks still to come) close it after the answer, and either way the
//! client's bytes are read (at most `server.header_read_timeout`) before a close, so that closing does not reset the
//! connection under an answer still on its way. A client that hangs up in the middle of a body drops its request
//! (logged as 499), as before an answer. One that sends none of it for `server.idle_timeout` while its reader waits
//! gets no answer either, but its body fails as stalled and the pipeline's answer to that (408) is logged and counted
//! before the connection closes. A client that sent `Expect: 100-continue` is told to send its body (`100 Continue`,
//! RFC 9110 §10.1.1) when the body's reader first asks for it, as hyper does; when the answer comes first it is never
//! told, may never send the body, and the connection closes after the answer.
//!
//! What hyper's server did and this module keeps:
//! - `server.header_read_timeout` runs from the moment the connection waits for a head (so it also bounds the
//!   keep-alive wait); when it passes, the connection is closed;
//! - a request whose client closes the connection (or fails, or shuts only its sending side: that cannot be told
//!   apart without writing) before the answer is dropped, which cancels its upstream exchange; but while requests
//!   the client sent after it are waiting to be read, the end of the stream is not taken for a hang-up yet. Bytes
//!   the client sends meanwhile are the next requests (pipelining), answered in order;
//! - `Connection: close` from either side ends the connection after the answer; so does being told to finish (idle,
//!   shutdown), which closes a connection at once between requests;
//! - a `Date` field on every answer that has none (RFC 9110 §6.6.1).
//!
//! And one limit of its own: the answer to the `server.max_requests_per_connection`-th request served here says
//! `Connection: close` and ends the connection (as nginx's `keepalive_requests`), so that a client which keeps its
//! connections open (a load balancer's pool) reconnects now and then and its connections are placed anew
//! ([`crate::placement`]). A connection handed to hyper goes on counting there (`crate::server`), from the requests
//! answered here ([`Ended::HandOff`]).
//!
//! Answers are framed here, whatever framing fields the gate or the upstream set (RFC 9112 §6.3): no body after
//! `HEAD`, 204 or 304 (a 1xx answer is replaced by a 500, as hyper does); otherwise `Content-Length` when the body's
//! length is known, chunked when it is not. A body that fails, ends short of its length or runs past it closes the
//! connection after what was sent, so the client sees a broken answer, never a short or long one passed off as whole.

use std::future::{poll_fn, Future};
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

mod answer;
mod reading;
mod refusal;

use self::answer::{bodyless, declared_length, encode_head, send_body};
use self::reading::{Cut, Reading, Rest, CONTINUE};
pub use self::refusal::{Malformed, Refusal, Unreadable};
use super::body::{Chunk, Framing};
use super::fields::Fields;
use super::names::{self, Names};
use super::request_body;
use super::{hop, parse_decimal, MAX_HEADERS};
use crate::activity::Waiting;
use crate::body::Body;
use crate::connections::{Registration, UntilClosing};
use crate::deadlines::Deadline;

/// The longest request target served here (hyper's limit; longer is answered 414 by hyper).
pub const MAX_TARGET: usize = u16::MAX as usize - 1;
/// The read buffer's first size, as hyper's.
const FIRST_BUFFER: usize = 8 * 1024;
/// Body data up to this size is copied behind what is waiting to be written, so that a small answer leaves in one
/// write; larger data is written as it is.
const COALESCE: usize = 16 * 1024;
/// The most that is kept between answers for writing the next (a larger buffer is let go).
const KEEP_OUT: usize = 64 * 1024;

/// What a connection's front needs. `handle` answers a request from `peer` (the gate's pipeline).
pub struct Front<'a, H> {
    pub handle: &'a H,
    pub peer: SocketAddr,
    pub registration: &'a Registration,
    pub header_read_timeout: Duration,
    /// `server.idle_timeout`: how long a request body may stop coming before its request is dropped.
    pub idle_timeout: Duration,
    /// `server.max_header_bytes`: the longest head served here.
    pub max_header_bytes: usize,
    /// The most bytes buffered while waiting for a head, as hyper's buffer limit.
    pub largest_head: usize,
    /// `server.max_requests_per_connection`: the connection closes after answering this many requests; 0: never.
    pub max_requests: u32,
    /// The answers to heads that cannot be read ([`Refusal`]).
    pub refusal: &'a Refusal,
}

/// How a connection left the front.
pub enum Ended {
    /// Closed (by either side, a timeout or a finish); nothing more to do.
    Closed,
    /// For hyper, which takes over the lent connection.
    HandOff {
        /// The bytes read from it but not answered, from the start of a request head.
        unanswered: Bytes,
        /// The requests answered here before, which count towards `server.max_requests_per_connection`.
        served: u32,
    },
}

/// Serves `io` until it closes or a request needs hyper; see the module docs. The connection is lent: the caller
/// holds it once in its state and gives it to hyper after a hand-off.
///
/// An `async move` block rather than an `async fn`, which would keep a second copy of `front` in every connection's
/// state for as long as the connection lives.
#[allow(clippy::manual_async_fn)] // deliberately, see above
pub fn serve<'a, I, H, F>(io: &'a mut I, front: Front<'a, H>) -> impl Future<Output = Ended> + 'a
where
    I: AsyncRead + AsyncWrite + Unpin + 'a,
    H: Fn(Request<Body>, SocketAddr) -> F,
    F: Future<Output = Response<Body>>,
{
    async move {
        // `None` while the connection waits for a request: its buffers are in the worker's spare list.
        let mut slot: Option<Box<Conn>> = None;
        let mut served: u32 = 0;
        let unreadable = loop {
            let (head, conn) = match next_head(&mut slot, io, &front).await {
                Next::Head(head, conn) => (head, conn),
                Next::HandOff(conn) => {
                    return Ended::HandOff {
                        unanswered: std::mem::take(&mut conn.buf).freeze(),
                        served,
                    }
                }
                // Answered after the loop: awaited here, the matched `Next` (a whole `Head` in size) would stay in
                // every connection's state for as long as it waits for a request.
                Next::Refuse(why) => break why,
                Next::Close => return Ended::Closed,
            };
            // Boxed, once per request: the pipeline's state and the writing are most of a connection's state, and
            // held inline they would stay allocated for as long as the connection waits for its next request.
            served = served.saturating_add(1);
            let last = front.max_requests != 0 && served >= front.max_requests;
            if !Box::pin(answer(conn, io, head, &front, last)).await {
                return Ended::Closed;
            }
        };
        // Only a head that cannot be read leaves the loop; its buffers are in `slot`. Boxed, as `answer` is.
        if let Some(conn) = slot.as_deref_mut() {
            Box::pin(refuse(conn, io, &front, unreadable)).await;
        }
        Ended::Closed
    }
}

/// Answers the request of `head`, with `Connection: close` when it is the `last` the connection serves; `false`
/// when the connection is to be closed (and has been shut down, if the answer said so).
/// An `async move` block, as [`serve`]: every request moves this future into its box, so it keeps one copy of its
/// arguments, and the pipeline's future in one place (pinned here, lent to [`Conn::await_answer`]).
#[allow(clippy::manual_async_fn)] // deliberately, see above
fn answer<'a, I, H, F>(
    conn: &'a mut Conn,
    io: &'a mut I,
    head: Head,
    front: &'a Front<'_, H>,
    last: bool,
) -> impl Future<Output = bool> + 'a
where
    I: AsyncRead + AsyncWrite + Unpin,
    H: Fn(Request<Body>, SocketAddr) -> F,
    F: Future<Output = Response<Body>> + 'a,
{
    async move {
        let head_only = head.request.method() == Method::HEAD;
        let keep_alive = head.keep_alive;
        let mut reading = head.body;
        // The pipeline's future lives only in this block: once it has answered, its place in this future's state
        // is free for the writing's. The request moves from the head straight into it (a copy less).
        let answered = {
            let _waiting = Waiting::new(&**front.registration.activity());
            let handling = pin!((front.handle)(head.request, front.peer));
            conn.await_answer(io, handling, reading.as_deref_mut(), front).await
        };
        let Some(resp) = answered else {
            return false;
        };
        // What of the body the client is still to send after an answer that came first; nobody reads it.
        let rest = reading
            .as_deref_mut()
            .map_or(Rest::None, |reading| conn.give_up_body(reading));
        // A `100 Continue` begun goes out whole before the answer; one never begun leaves the client free not to
        // send the body at all (RFC 9110 §10.1.1), so where its next request starts is unknown: the connection
        // closes after the answer.
        let mut told_to_wait = false;
        if let Some(written) = reading.as_mut().and_then(|reading| reading.continue_at.take()) {
            if written == 0 {
                told_to_wait = rest != Rest::None;
            } else if io.write_all(&CONTINUE[written..]).await.is_err() {
                return false;
            }
        }
        let keep_alive =
            keep_alive && !last && !front.registration.finishing() && rest.keeps_connection() && !told_to_wait;
        let written = {
            let mut io = UntilClosing::new(io, front.registration);
            conn.write_answer(&mut io, resp, head_only, keep_alive).await
        };
        let within = front.header_read_timeout;
        // Reading the rest of the body (at most `MAX_DISCARD` bytes to keep the connection).
        let unread = reading.filter(|_| matches!(rest, Rest::Length(_) | Rest::Chunked));
        match written {
            Ok(true) => match unread {
                None => true,
                Some(mut reading) => conn.discard(io, &mut reading, within).await,
            },
            Ok(false) => {
                let _ = crate::deadlines::timeout_at(Instant::now() + within, || io.shutdown()).await;
                // Read what the client still sends of the body before closing: closing with it unread would reset
                // the connection, and the client could lose the answer with it (nginx's lingering close).
                if let Some(mut reading) = unread {
                    conn.discard(io, &mut reading, within).await;
                } else if rest == Rest::Broken {
                    conn.linger(io, within).await;
                }
                false
            }
            Err(e) => {
                tracing::debug!(error = %e, "writing an answer failed");
                false
            }
        }
    }
}

/// At most this many connections' buffers wait in a worker's spare list ([`park`]).
const MAX_SPARE: usize = 64;

thread_local! {
    /// Buffers of connections that wait for a request, for the next connection of this worker that has one. Boxed:
    /// a connection holds its set by the box, which moves in and out of here without copying or allocating.
    #[allow(clippy::vec_box)]
    static SPARE: std::cell::RefCell<Vec<Box<Conn>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A connection's buffers, kept from one request to the next while requests keep coming; a connection that waits
/// for its next request parks them in its worker's spare list and holds none ([`park`]).
#[derive(Default)]
struct Conn {
    /// Read from the client and not yet served: a head, its beginning, or pipelined heads.
    buf: BytesMut,
    /// Where each field of the head being read lies.
    spans: Vec<names::Span>,
    names: Names,
    /// The names of the head being read, in order.
    field_names: Vec<http::HeaderName>,
    /// The last answer's field map, cleared: the next request's fields go into it.
    fields: Option<HeaderMap>,
    /// An answer's head (and small body data) on its way out.
    out: Vec<u8>,
}

/// A request head read and accepted.
struct Head {
    request: Request<Body>,
    keep_alive: bool,
    /// The reading of the request's body, when it has one; its bytes follow the head.
    body: Option<Box<Reading>>,
}

// The request is the point: boxing it would allocate for every request.
#[allow(clippy::large_enum_variant)]
enum Next<'c> {
    /// A head to answer, and the connection's buffers (the rest of what it read).
    Head(Head, &'c mut Conn),
    HandOff(&'c mut Conn),
    /// A head that cannot be read: answered with [`Refusal`], then closed. The connection's buffers stay in its slot.
    Refuse(Unreadable),
    Close,
}

/// What one look at the buffer found.
#[allow(clippy::large_enum_variant)] // as `Next`
enum Parse {
    Head(Head),
    /// Not a whole head yet.
    Partial,
    HandOff,
    /// Not to be read, nor handed over: hyper would answer it with the same status.
    Refuse(Unreadable),
}

/// What ended a wait for a client's bytes.
enum Wait {
    Read(io::Result<usize>),
    Finish,
    Timeout,
}

/// The next request head, reading as needed; see the module docs for the timeout and finishing. `slot` holds the
/// connection's buffers, taken from the worker's spare list when bytes are to be read and parked there again while
/// nothing is.
async fn next_head<'c, I: AsyncRead + Unpin, H>(
    slot: &'c mut Option<Box<Conn>>,
    io: &mut I,
    front: &Front<'_, H>,
) -> Next<'c> {
    // Armed on the first wait, so a head already here costs no timer.
    let mut deadline: Option<Deadline> = None;
    loop {
        if let Some(conn) = slot.as_deref_mut().filter(|conn| !conn.buf.is_empty()) {
            match conn.parse(front.max_header_bytes, front.idle_timeout) {
                Parse::Head(head) => return Next::Head(head, slot.get_or_insert_with(unpark)),
                Parse::HandOff => return Next::HandOff(slot.get_or_insert_with(unpark)),
                Parse::Refuse(why) => return Next::Refuse(why),
                Parse::Partial if conn.buf.len() >= front.largest_head => return Next::Refuse(Unreadable::TooLarge),
                Parse::Partial => {}
            }
        }
        let waited = poll_fn(|cx| {
            let conn = slot.get_or_insert_with(unpark);
            let room = front.largest_head - conn.buf.len();
            // Takes the whole buffer back once the last request's fields (which share it) are gone.
            conn.buf.reserve(room.min(FIRST_BUFFER));
            let mut limited = (&mut conn.buf).limit(room);
            if let Poll::Ready(read) = tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, &mut limited) {
                return Poll::Ready(Wait::Read(read));
            }
            // Nothing of a request yet: the connection waits without buffers, as nginx's do.
            if conn.buf.is_empty() {
                park(slot);
            }
            if front.registration.poll_finish(cx).is_ready() {
                return Poll::Ready(Wait::Finish);
            }
            let deadline = deadline.get_or_insert_with(|| Deadline::at(Instant::now() + front.header_read_timeout));
            Pin::new(deadline).poll(cx).map(|()| Wait::Timeout)
        })
        .await;
        let empty = slot.as_ref().is_none_or(|conn| conn.buf.is_empty());
        match waited {
            Wait::Read(Ok(0)) if empty => return Next::Close,
            // The client ended in the middle of a head: hyper answers that as it always has.
            Wait::Read(Ok(0)) => return Next::HandOff(slot.get_or_insert_with(unpark)),
            Wait::Read(Ok(_)) => {}
            Wait::Read(Err(e)) => {
                tracing::debug!(error = %e, "reading a request head failed");
                return Next::Close;
            }
            Wait::Finish => return Next::Close,
            Wait::Timeout => {
                tracing::debug!("no complete request head within the header read timeout; closing");
                return Next::Close;
            }
        }
    }
}

/// Hands a connection's buffers (empty of requests) to its worker's spare list, for a connection that has a
/// request to read; an idle keep-alive connection then holds no buffer at all. Dropped when the list is full.
fn park(slot: &mut Option<Box<Conn>>) {
    let Some(mut conn) = slot.take() else {
        return;
    };
    if conn.out.capacity() > COALESCE {
        conn.out = Vec::new();
    }
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < MAX_SPARE {
            spare.push(conn);
        }
    });
}

/// Buffers from the worker's spare list, or new empty ones.
fn unpark() -> Box<Conn> {
    SPARE.with(|spare| spare.borrow_mut().pop()).unwrap_or_default()
}

impl Conn {
    /// Reads the head at the start of the buffer, if it is whole, and takes it out of the buffer when it is served
    /// here.
    fn parse(&mut self, max_header_bytes: usize, body_idle: Duration) -> Parse {
        self.spans.clear();
        let (len, method, target) = {
            let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut []);
            let len = match httparse::ParserConfig::default()
                .parse_request_with_uninit_headers(&mut req, &self.buf, &mut slots)
            {
                Ok(httparse::Status::Complete(len)) if len <= max_header_bytes => len,
                Ok(httparse::Status::Partial) => return Parse::Partial,
                Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
                    return Parse::Refuse(Unreadable::TooLarge)
                }
                Err(e) => {
                    return Parse::Refuse(Unreadable::Malformed(Malformed::from_httparse(e, req.method.is_some())))
                }
            };
            // As hyper reads a whole head: the target's length first, whatever the version.
            if req.path.is_some_and(|target| target.len() > MAX_TARGET) {
                return Parse::Refuse(Unreadable::TargetTooLong);
            }
            let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
                return Parse::HandOff;
            };
            let method = match Method::from_bytes(method.as_bytes()) {
                Ok(method) if method != Method::CONNECT => method,
                Ok(_) => return Parse::HandOff,
                Err(_) => return Parse::Refuse(Unreadable::Malformed(Malformed::Method)),
            };
            let start = names::offset(&self.buf, target.as_bytes());
            self.spans.extend(names::spans(&self.buf, req.headers));
            (len, method, start..start + target.len())
        };
        // Every check that can hand the connection over reads the bytes still in place.
        self.field_names.clear();
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut expect_continue = false;
        for (position, &(name_start, name_end, value_start, value_end)) in self.spans.iter().enumerate() {
            let name = match self.names.get(position, &self.buf[name_start..name_end]) {
                Ok(name) => name,
                Err(_) => return Parse::HandOff,
            };
            if name == header::CONTENT_LENGTH {
                // One field of plain digits (RFC 9112 §6.3 item 6); a list, a repeat or anything else is hyper's,
                // and the smuggling check's.
                match (length, parse_decimal(&self.buf[value_start..value_end])) {
                    (None, Some(n)) => length = Some(n),
                    _ => return Parse::HandOff,
                }
            } else if name == header::EXPECT {
                // One `100-continue` (RFC 9110 §10.1.1), the only expectation defined; any other is hyper's.
                if expect_continue || !self.buf[value_start..value_end].eq_ignore_ascii_case(b"100-continue") {
                    return Parse::HandOff;
                }
                expect_continue = true;
            } else if name == header::TRANSFER_ENCODING {
                // One field saying `chunked` and nothing else (RFC 9112 §6.1, §7.1); a list, another coding or a
                // repeat is hyper's, and the smuggling check's.
                if chunked || !self.buf[value_start..value_end].eq_ignore_ascii_case(b"chunked") {
                    return Parse::HandOff;
                }
                chunked = true;
            } else if name == header::UPGRADE {
                return Parse::HandOff;
            }
            self.field_names.push(name);
        }
        // Framed two ways (RFC 9112 §6.3 item 3): hyper's, and the smuggling check's, to refuse.
        if chunked && length.is_some() {
            return Parse::HandOff;
        }
        let framing = match length {
            _ if chunked => Framing::Chunked(Chunk::Size),
            None | Some(0) => Framing::Done,
            Some(n) => Framing::Length(n),
        };
        // An expectation without a body to send is hyper's to answer, as before.
        if expect_continue && framing == Framing::Done {
            return Parse::HandOff;
        }
        let head = self.buf.split_to(len).freeze();
        let Ok(uri) = Uri::from_maybe_shared(head.slice(target)) else {
            put_back(&mut self.buf, head);
            return Parse::Refuse(Unreadable::Malformed(Malformed::Target));
        };
        let mut fields = self.fields.take().unwrap_or_default();
        fields.reserve(self.spans.len());
        let mut keep_alive = true;
        for (name, &(_, _, value_start, value_end)) in self.field_names.drain(..).zip(&self.spans) {
            let Ok(value) = HeaderValue::from_maybe_shared(head.slice(value_start..value_end)) else {
                fields.clear();
                self.fields = Some(fields);
                put_back(&mut self.buf, head);
                return Parse::HandOff;
            };
            if name == header::CONNECTION && hop::connection_options(&value).any(|o| o.eq_ignore_ascii_case("close")) {
                keep_alive = false;
            }
            fields.append(name, value);
        }
        let (body, reading) = match framing {
            Framing::Done => (Body::Empty, None),
            framing => {
                let (feeder, body) = request_body::channel(length);
                let reading = Reading::new(feeder, framing, body_idle, expect_continue);
                (Body::Received(body), Some(Box::new(reading)))
            }
        };
        let mut request = Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = fields;
        Parse::Head(Head {
            request,
            keep_alive,
            body: reading,
        })
    }

    /// The gate's answer to a request, or `None` when the client closed the connection (or it failed) first, which
    /// drops the request. The request's body, if it has one, is read meanwhile ([`Conn::feed`]); bytes the client
    /// sends after it are kept for the next requests, up to `front.largest_head`. A body that stalls ([`Cut`]) also
    /// gives `None`, once the pipeline has answered its failure (and logged it) or `server.header_read_timeout`
    /// has passed: that answer is not sent.
    async fn await_answer<I, F, H>(
        &mut self,
        io: &mut I,
        mut handling: Pin<&mut F>,
        mut reading: Option<&mut Reading>,
        front: &Front<'_, H>,
    ) -> Option<Response<Body>>
    where
        I: AsyncRead + AsyncWrite + Unpin,
        F: Future<Output = Response<Body>>,
    {
        let limit = front.largest_head;
        // The client's end of the stream after requests still to answer: those are answered first (as hyper does).
        let mut ended = false;
        // Once the body stalled: how long the pipeline has left to answer its failure.
        let mut stalled: Option<Deadline> = None;
        poll_fn(|cx| {
            if let Poll::Ready(resp) = handling.as_mut().poll(cx) {
                return Poll::Ready(stalled.is_none().then_some(resp));
            }
            if let Some(deadline) = stalled.as_mut() {
                std::task::ready!(Pin::new(deadline).poll(cx));
                tracing::debug!("the pipeline did not answer a stalled request body in time; dropping the request");
                return Poll::Ready(None);
            }
            if let Some(reading) = reading.as_deref_mut().filter(|reading| !reading.is_over()) {
                match self.feed(io, reading, cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(Cut::Gone)) => return Poll::Ready(None),
                    Poll::Ready(Err(Cut::Stalled)) => {
                        let mut deadline = Deadline::at(Instant::now() + front.header_read_timeout);
                        // Registers the wakeup; the body's failure wakes the pipeline.
                        if Pin::new(&mut deadline).poll(cx).is_ready() {
                            return Poll::Ready(None);
                        }
                        stalled = Some(deadline);
                        return Poll::Pending;
                    }
                    // Unread: nothing more is read until the answer (which reads or drops the rest).
                    Poll::Ready(Ok(())) if !reading.is_over() => return Poll::Pending,
                    Poll::Ready(Ok(())) => {}
                }
            }
            // Read into a small buffer of its own: the request's fields still share `buf`, which a read into it
            // would have to give up (and allocate anew).
            while !ended && self.buf.len() < limit {
                let mut scratch = [MaybeUninit::<u8>::uninit(); 1024];
                let mut read = ReadBuf::uninit(&mut scratch);
                match Pin::new(&mut *io).poll_read(cx, &mut read) {
                    Poll::Pending => break,
                    Poll::Ready(Ok(())) if read.filled().is_empty() && self.buf.is_empty() => return Poll::Ready(None),
                    Poll::Ready(Ok(())) if read.filled().is_empty() => ended = true,
                    Poll::Ready(Ok(())) => self.buf.put_slice(read.filled()),
                    Poll::Ready(Err(e)) => {
                        tracing::debug!(error = %e, "the client's connection failed during a request");
                        return Poll::Ready(None);
                    }
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Writes `resp`, framed as the module docs say, and flushes it; `true` when the connection can serve another
    /// request.
    async fn write_answer<I: AsyncWrite + Unpin>(
        &mut self,
        io: &mut I,
        resp: Response<Body>,
        head_only: bool,
        mut keep_alive: bool,
    ) -> io::Result<bool> {
        let (parts, mut body) = resp.into_parts();
        let (mut status, mut fields) = (parts.status, parts.headers);
        if status.is_informational() {
            tracing::warn!(%status, "an interim status cannot be a final answer; answering 500");
            (status, body) = (StatusCode::INTERNAL_SERVER_ERROR, Body::Empty);
            fields.clear();
        }
        if hop::connection_has_token(&fields, "close") {
            keep_alive = false;
        }
        let bodyless = bodyless(head_only, status);
        let length = match bodyless {
            true => None,
            false => body
                .size_hint()
                .exact()
                .or_else(|| declared_length(fields.get_all(header::CONTENT_LENGTH))),
        };
        // A lean client's answer still holds the upstream's fields: they go out as they came, before the map's.
        let upstream = match &mut body {
            Body::Upstream(upstream) => upstream.take_fields(),
            _ => Fields::default(),
        };
        let out = &mut self.out;
        out.clear();
        let all = upstream.iter();
        let all = all.chain(fields.iter().map(|(name, value)| (name, value.as_bytes())));
        encode_head(out, status, all, head_only, length, keep_alive, &body);
        fields.clear();
        self.fields = Some(fields);
        let whole = if bodyless {
            true
        } else {
            send_body(io, out, &mut body, length).await?
        };
        io.write_all(out).await?;
        // A TLS stream takes bytes the socket cannot take yet and sends them only when written to again or flushed:
        // without this, the end of an answer could wait in it while the client waits for it.
        io.flush().await?;
        if out.capacity() > KEEP_OUT {
            *out = Vec::new();
        }
        Ok(keep_alive && whole)
    }
}

/// For fuzzing and tests: reads `bytes` as the front does. `Some` (the head's length and the request) when the
/// front would serve the head at their start, `None` when it would wait for more or hand the connection over; it
/// checks that what it leaves for the next reader is exactly the bytes after the head (or all of them).
#[doc(hidden)]
pub fn read_head(bytes: &[u8], max_header_bytes: usize) -> Option<(usize, Request<Body>)> {
    let mut conn = Conn {
        buf: BytesMut::from(bytes),
        ..Conn::default()
    };
    match conn.parse(max_header_bytes, Duration::MAX) {
        Parse::Head(head) => {
            let len = bytes.len() - conn.buf.len();
            assert_eq!(&conn.buf[..], &bytes[len..], "the bytes after a served head stay");
            Some((len, head.request))
        }
        Parse::Partial | Parse::HandOff | Parse::Refuse(_) => {
            assert_eq!(&conn.buf[..], bytes, "every byte stays for hyper");
            None
        }
    }
}

/// Answers a head that cannot be read with `front.refusal`, then closes the connection once the client has read it
/// (whatever it still sends read and dropped for at most `server.header_read_timeout`, as after any answer that
/// closes: closing with its bytes unread would reset the connection under the answer).
async fn refuse<I: AsyncRead + AsyncWrite + Unpin, H>(
    conn: &mut Conn,
    io: &mut I,
    front: &Front<'_, H>,
    why: Unreadable,
) {
    let within = front.header_read_timeout;
    let answer = front.refusal.bytes(front.peer, why, &conn.buf);
    let written = crate::deadlines::timeout_at(Instant::now() + within, || async {
        io.write_all(&answer).await?;
        io.flush().await?;
        io.shutdown().await
    })
    .await;
    if matches!(written, Ok(Ok(()))) {
        conn.linger(io, within).await;
    }
}

/// Puts a head taken out of `buf` back in front of it, for hyper (a copy, on this rare path only).
fn put_back(buf: &mut BytesMut, head: Bytes) {
    let mut whole = BytesMut::with_capacity(head.len() + buf.len());
    whole.put_slice(&head);
    whole.put_slice(buf);
    *buf = whole;
}

#[cfg(test)]
mod tests;
