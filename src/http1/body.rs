//! Upstream response bodies as the own client reads them (RFC 9112 §6.3, §7.1): how a body is delimited, the
//! chunked decoder, and [`ResponseBody`], which streams the body from its pooled connection and gives the
//! connection back when the body is complete.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header;
use http::StatusCode;
use http_body::{Frame, SizeHint};
use tokio::time::Instant;

use super::fields::Fields;
use super::pool::{Conn, Pool};
use super::{at_most, hex, parse_decimal};

/// The longest chunk-size line (with extensions) and the most trailer bytes accepted.
pub(crate) const MAX_CHUNK_LINE: usize = 4096;
pub(crate) const MAX_TRAILERS: usize = 16 * 1024;

/// The `Transfer-Encoding` fields of a response head.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Codings {
    /// How many there were.
    pub(crate) fields: usize,
    /// Whether the last one said `chunked` and nothing else.
    pub(crate) chunked: bool,
}

/// How a response body is delimited (RFC 9112 §6.3).
pub(crate) fn framing(
    fields: &Fields,
    codings: Codings,
    status: StatusCode,
    head_only: bool,
) -> Result<Framing, String> {
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
            match (parse_decimal(member.trim_ascii()), length) {
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
pub(crate) enum Framing {
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
pub(crate) enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The body is complete.
    End,
    /// More bytes must be read first.
    NeedMore,
}

impl Framing {
    /// Takes the next piece of body from the front of `buf`, leaving whatever follows the body there.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, String> {
        loop {
            match self {
                Framing::Done => return Ok(Decoded::End),
                Framing::Length(_) | Framing::Close if buf.is_empty() => return Ok(Decoded::NeedMore),
                Framing::Length(left) => {
                    let take = at_most(*left, buf.len());
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
    pub(crate) fn at_eof(&mut self) -> Result<(), String> {
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
pub(crate) enum Chunk {
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
pub(crate) enum Step {
    /// Data to pass on.
    Data(Bytes),
    /// Moved to another state; go on.
    Next,
    /// More bytes are needed.
    NeedMore,
}

/// Decodes from the front of `buf` in `state`.
pub(crate) fn chunk_step(state: &mut Chunk, buf: &mut BytesMut) -> Result<Step, String> {
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
            let take = at_most(left, buf.len());
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
                return Err("chunk data longer than its size".into());
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
        Some(0) => Err(format!("the {what} has a bare LF")),
        Some(lf) if window[lf - 1] == b'\r' => Ok(Some(lf - 1)),
        Some(_) => Err(format!("the {what} has a bare LF")),
        None if window.len() >= limit.saturating_add(2) => Err(format!("the {what} is too long")),
        None => Ok(None),
    }
}

/// `chunk-size [ BWS ";" chunk-ext ]` (RFC 9112 §7.1): hexadecimal digits, then nothing or extensions.
fn parse_chunk_size(line: &[u8]) -> Result<u64, String> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err("invalid chunk size".into());
    }
    let rest = line[digits..].trim_ascii_start();
    if !(rest.is_empty() || rest[0] == b';') || rest.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err("invalid chunk-size line".into());
    }
    // At most 16 digits: no overflow.
    Ok(line[..digits].iter().fold(0u64, |n, &d| (n << 4) | hex(d)))
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
    /// The body of a response whose head was read from `conn`, delimited by `framing`; the connection goes back to
    /// `pool` (if any) once the body is complete.
    pub(super) fn new(
        conn: Box<Conn>,
        framing: Framing,
        pool: Option<Arc<Pool>>,
        started: Instant,
        fields: Fields,
    ) -> Self {
        let mut body = ResponseBody {
            conn: Some(conn),
            framing,
            pool,
            started,
            fields,
        };
        if body.framing == Framing::Done {
            body.finish();
        }
        body
    }

    /// The response's fields (the map of a response from this client is empty until they are put in it).
    pub(crate) fn take_fields(&mut self) -> Fields {
        std::mem::take(&mut self.fields)
    }

    /// The response's fields where they still are (empty once taken).
    pub(crate) fn fields_mut(&mut self) -> &mut Fields {
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

    fn error(&mut self, text: String) -> Poll<Option<Result<Frame<Bytes>, super::BoxError>>> {
        self.framing = Framing::Done;
        self.conn = None;
        Poll::Ready(Some(Err(text.into())))
    }
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = super::BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.framing.decode(&mut conn.buf) {
                Err(e) => return this.error(format!("the upstream's chunked body: {e}")),
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
