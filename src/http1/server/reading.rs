//! A request body read off the connection while its request is handled (see the parent module's docs): by
//! `Content-Length` or chunked (RFC 9112 §6.3, §7.1, with the own client's decoder, [`crate::http1::body`]), a
//! piece at a time into its slot ([`crate::http1::request_body`]), never past its end; `100 Continue` when its
//! reader first asks for it; the stall bound; and what becomes of the rest of a body the answer came before.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::Conn;
use crate::deadlines::Deadline;
use crate::http1::at_most;
use crate::http1::body::{Decoded, Framing};
use crate::http1::request_body::{Feeder, Room, BODY_READ};

/// The most request body bytes still to come after an early answer that are read and dropped to keep the
/// connection; after an answer that leaves more unread (or an unknown amount: a chunked body), the connection
/// closes.
pub(super) const MAX_DISCARD: u64 = 64 * 1024;

/// The interim answer a client that sent `Expect: 100-continue` waits for before sending its body (RFC 9110
/// §15.2.1).
pub(super) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A request body being read here: the front's half of its slot, where the body stands, and how long the client
/// may send none of it. Boxed in the head, so that a request without a body (most) carries and moves none of it.
pub(super) struct Reading {
    pub(super) feeder: Feeder,
    /// The length still to come, or the chunked decoder's step; `Done` once the body is read to its end.
    framing: Framing,
    /// The chunked framing was malformed: nothing more can be read on this connection.
    broken: bool,
    /// `server.idle_timeout`.
    within: Duration,
    /// Armed while the client is awaited; when it passes, the body fails as stalled ([`Cut::Stalled`]).
    stalled: Option<Deadline>,
    /// `Expect: 100-continue` and [`CONTINUE`] not sent yet: how much of it is written.
    pub(super) continue_at: Option<usize>,
}

/// What is left of a request body after its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rest {
    /// Nothing: it was read to its end.
    None,
    /// This many bytes, by its length.
    Length(u64),
    /// An unknown amount: chunks, up to the last.
    Chunked,
    /// Its framing was malformed: the connection cannot be read on.
    Broken,
}

/// Why the front stopped reading a request body before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cut {
    /// The client ended or broke the connection: its request is dropped.
    Gone,
    /// The client sent nothing of it for `server.idle_timeout`: its reader sees the body fail as stalled, which the
    /// pipeline answers 408 (logged and counted), and that answer is not sent (nginx's `client_body_timeout`).
    Stalled,
}

impl Rest {
    /// Whether the connection can serve another request after reading and dropping this rest.
    pub(super) fn keeps_connection(self) -> bool {
        match self {
            Rest::None => true,
            Rest::Length(n) => n <= MAX_DISCARD,
            Rest::Chunked | Rest::Broken => false,
        }
    }
}

impl Reading {
    /// The reading of a body framed by `framing` (not `Done`), through `feeder`; `expect_continue` when the client
    /// waits for `100 Continue`.
    pub(super) fn new(feeder: Feeder, framing: Framing, within: Duration, expect_continue: bool) -> Self {
        Reading {
            feeder,
            framing,
            broken: false,
            within,
            stalled: None,
            continue_at: expect_continue.then_some(0),
        }
    }

    /// Where the body stands.
    #[cfg(test)]
    pub(super) fn framing(&self) -> Framing {
        self.framing
    }

    /// Whether nothing more is to be read for the body: it is read to its end, or its framing was malformed.
    pub(super) fn is_over(&self) -> bool {
        self.framing == Framing::Done || self.broken
    }
}

impl Conn {
    /// Reads the request body off `io` into its slot, a piece at a time, starting with the body bytes already read;
    /// `Ready(Ok)` once the body is read whole, its reader has let it go, or its chunked framing turned out
    /// malformed (the body fails: its reader answers), `Ready(Err)` when the client ended or broke the connection
    /// before the body's end, or sent none of it for `server.idle_timeout` (the body fails; see [`Cut`]), `Pending`
    /// while the slot is full or the client sends nothing. Never reads past the end of a body by length; of a chunked body,
    /// what follows its end stays in the buffer for the next request. For `Expect: 100-continue`, [`CONTINUE`] goes
    /// out once the body's reader asks for it, unless the client has sent body bytes anyway (RFC 9110 §10.1.1 lets
    /// the server omit it then); until then the client's silence is no stall.
    pub(super) fn feed<I: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut I,
        reading: &mut Reading,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Cut>> {
        let Reading {
            feeder,
            framing,
            broken,
            within,
            stalled,
            continue_at,
        } = reading;
        while *framing != Framing::Done && !*broken {
            if std::task::ready!(feeder.poll_room(cx)) == Room::Unread {
                return Poll::Ready(Ok(()));
            }
            if !self.buf.is_empty() {
                // The client did not wait to be told (and nothing of `100 Continue` went out, which only begins
                // while no body byte has come).
                if *continue_at == Some(0) {
                    *continue_at = None;
                }
            } else if let Some(written) = continue_at {
                match feeder.poll_wanted(cx) {
                    Poll::Ready(Room::Unread) => return Poll::Ready(Ok(())),
                    Poll::Ready(Room::Free) => match poll_continue(io, written, cx) {
                        Poll::Ready(Ok(())) => *continue_at = None,
                        Poll::Ready(Err(e)) => {
                            tracing::debug!(error = %e, "writing 100 Continue failed");
                            feeder.fail("the client's connection failed before the request body");
                            return Poll::Ready(Err(Cut::Gone));
                        }
                        Poll::Pending => return Poll::Pending,
                    },
                    // Not wanted yet: only what the client sends without waiting is read.
                    Poll::Pending => {}
                }
            }
            match framing.decode(&mut self.buf) {
                Ok(Decoded::Data(piece)) => {
                    feeder.put(piece);
                    if *framing == Framing::Done {
                        feeder.finish();
                    }
                    continue;
                }
                Ok(Decoded::End) => {
                    feeder.finish();
                    continue;
                }
                Ok(Decoded::NeedMore) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "a chunked request body is malformed");
                    feeder.fail("the request body's chunked framing is malformed (RFC 9112 §7.1)");
                    *broken = true;
                    return Poll::Ready(Ok(()));
                }
            }
            let read = match self.poll_read_body(io, left(framing), BODY_READ, cx) {
                Poll::Ready(read) => read,
                // A client told to wait for `100 Continue` is not stalling.
                Poll::Pending if continue_at.is_some() => return Poll::Pending,
                Poll::Pending => {
                    if stalled.is_none() {
                        // A timeout too long to be a time (centuries) waits for ever.
                        let Some(at) = Instant::now().checked_add(*within) else {
                            return Poll::Pending;
                        };
                        *stalled = Some(Deadline::at(at));
                    }
                    if let Some(deadline) = stalled.as_mut() {
                        std::task::ready!(Pin::new(deadline).poll(cx));
                    }
                    tracing::debug!(?within, "a request body stopped coming; failing it");
                    feeder.stall();
                    return Poll::Ready(Err(Cut::Stalled));
                }
            };
            *stalled = None;
            match read {
                Ok(0) => {
                    tracing::debug!("the client ended its connection in the middle of a request body");
                    feeder.fail("the client ended its connection in the middle of the request body");
                    return Poll::Ready(Err(Cut::Gone));
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "the client's connection failed in the middle of a request body");
                    feeder.fail("the client's connection failed in the middle of the request body");
                    return Poll::Ready(Err(Cut::Gone));
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// After an answer: passes over the body bytes already read and not taken, and says what the client is still
    /// to send; when any, the body fails (its reader, if it still reads, sees an error: the answer came first, and
    /// the rest is not passed on, as Go's HTTP/1 server and nginx's buffering do).
    pub(super) fn give_up_body(&mut self, reading: &mut Reading) -> Rest {
        if reading.broken {
            return Rest::Broken;
        }
        if reading.framing == Framing::Done {
            return Rest::None;
        }
        reading
            .feeder
            .fail("the answer came before the end of the request body");
        if let Err(e) = drop_buffered(&mut reading.framing, &mut self.buf) {
            tracing::debug!(error = %e, "a chunked request body is malformed");
            reading.broken = true;
            return Rest::Broken;
        }
        match reading.framing {
            Framing::Done => Rest::None,
            Framing::Length(n) => Rest::Length(n),
            _ => Rest::Chunked,
        }
    }

    /// Reads and drops the rest of a request body nobody wants, within `within`; `true` when all of it came. What
    /// the client sends after it stays for the next request. A rest whose chunked framing turns out malformed is
    /// lingered over instead ([`Conn::linger`]), within the same `within`.
    pub(super) async fn discard<I: AsyncRead + Unpin>(
        &mut self,
        io: &mut I,
        reading: &mut Reading,
        within: Duration,
    ) -> bool {
        self.drain(io, Some(&mut reading.framing), within).await
    }

    /// Nginx's lingering close, for a connection closing after an answer while its client may still be sending a
    /// body whose end cannot be found (its chunked framing was malformed): reads and drops whatever comes until the
    /// client closes, for at most `within`. Closing with those bytes unread would reset the connection, and a
    /// client still writing its body would fail on a reset instead of reading the answer.
    pub(super) async fn linger<I: AsyncRead + Unpin>(&mut self, io: &mut I, within: Duration) {
        self.drain(io, None, within).await;
    }

    /// Reads and drops body bytes as `framing` delimits them (`true` once its end came), or, without one, all bytes
    /// until the client's end of the stream (`false` then), for at most `within`.
    async fn drain<I: AsyncRead + Unpin>(
        &mut self,
        io: &mut I,
        mut framing: Option<&mut Framing>,
        within: Duration,
    ) -> bool {
        let draining = poll_fn(|cx| loop {
            match framing
                .as_deref_mut()
                .map(|framing| drop_buffered(framing, &mut self.buf))
            {
                Some(Ok(true)) => return Poll::Ready(true),
                Some(Ok(false)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "an unwanted chunked request body is malformed");
                    framing = None;
                    self.buf.clear();
                }
                // Nothing the client sends now can be read as a request.
                None => self.buf.clear(),
            }
            let limit = framing.as_deref().and_then(left);
            match std::task::ready!(self.poll_read_body(io, limit, DISCARD_READ, cx)) {
                Ok(0) => return Poll::Ready(false),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "the client's connection failed while its unwanted body was read");
                    return Poll::Ready(false);
                }
            }
        });
        match crate::deadlines::timeout_at(Instant::now() + within, || draining).await {
            Ok(whole) => whole,
            Err(_) => {
                tracing::debug!(
                    ?within,
                    "the client was still sending a request body nobody wants; closing"
                );
                false
            }
        }
    }
}

/// The most read at once while dropping an unwanted body.
const DISCARD_READ: usize = 4096;

impl Conn {
    /// Reads at most `most` more bytes of a body into the buffer, never past `left`, what is left of a body by length
    /// (what follows a chunked body's end stays in the buffer for the next request).
    fn poll_read_body<I: AsyncRead + Unpin>(
        &mut self,
        io: &mut I,
        left: Option<u64>,
        most: usize,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        let want = left.map_or(most, |left| at_most(left, most));
        self.buf.reserve(want);
        let mut limited = (&mut self.buf).limit(want);
        tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, &mut limited)
    }
}

/// What is left of a body by length; `None` for other framings.
fn left(framing: &Framing) -> Option<u64> {
    match *framing {
        Framing::Length(left) => Some(left),
        _ => None,
    }
}

/// Decodes and drops the body bytes at the front of `buf`; `Ok(true)` once the body has ended there.
fn drop_buffered(framing: &mut Framing, buf: &mut BytesMut) -> Result<bool, String> {
    loop {
        match framing.decode(buf)? {
            Decoded::Data(_) => {}
            Decoded::End => return Ok(true),
            Decoded::NeedMore => return Ok(false),
        }
    }
}

/// Writes what is left of [`CONTINUE`] after its first `written` bytes, and flushes it.
fn poll_continue<I: AsyncWrite + Unpin>(io: &mut I, written: &mut usize, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    while let Some(rest) = CONTINUE.get(*written..).filter(|rest| !rest.is_empty()) {
        match std::task::ready!(Pin::new(&mut *io).poll_write(cx, rest))? {
            0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            n => *written += n,
        }
    }
    Pin::new(&mut *io).poll_flush(cx)
}
