//! Request-smuggling defence: a second reading of every HTTP/1 request head hyper reads, to refuse messages whose
//! framing is ambiguous. (Heads the HTTP/1 front, [`crate::http1::server`], serves have one plain `Content-Length` at
//! most and no `Transfer-Encoding`, or one `Transfer-Encoding: chunked` and no `Content-Length`; a connection reaches
//! hyper, and this check, from the first head the front does not serve.)
//!
//! hyper follows RFC 9112 §6.3 for a request with both `Content-Length` and `Transfer-Encoding`: it drops the
//! `Content-Length`, reads the body as chunked and closes the connection afterwards, so the gate and the upstream
//! never disagree about where the message ends. But the request hyper hands over no longer shows that it *was*
//! ambiguous, and a front proxy that framed it by `Content-Length` has by then read a different message. RFC 9112
//! §6.1 lets a server reject such a request instead, and so does the gate, together with repeated `Content-Length`
//! lines that hyper would merge when they agree (RFC 9112 §6.3 item 5 allows either).
//!
//! [`FramingIo`] wraps the connection's (decrypted) byte stream from there and follows it with the same parser hyper uses
//! (`httparse`) and the same body framing rules (length, or chunks with extensions and trailers), so it knows where
//! every request head starts. The first head with ambiguous framing is recorded by its position on the connection
//! (1st, 2nd, ... request); [`Watch::next_request`], called once per request hyper delivers, says whether this is
//! that request. hyper closes the connection after a request with both headers, and the gate closes it after any
//! refused one, so later heads need no tracking.
//!
//! The usual head (no `Content-Length` or `Transfer-Encoding` line) is only delimited, its field names read but its
//! values not validated (`quick_head`); every other head is parsed in full.
//!
//! The scanner fails open to hyper's own (safe) behaviour: bytes it cannot parse stop it for the rest of the
//! connection, and hyper answers malformed input itself (and closes the connection). After a protocol upgrade (WebSocket) or on an HTTP/2
//! connection it may misread the bytes or stop, which is harmless because hyper delivers no further HTTP/1
//! requests there. It never buffers more than one incomplete request head, bounded by `max_head_bytes`.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{hex, parse_decimal, MAX_HEADERS};
use crate::observed::{Observed, Observer};

/// Marks a request whose head had ambiguous framing; the gate answers it with 400 and closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmbiguousFraming(pub Ambiguity);

/// What made a request's framing ambiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ambiguity {
    /// Both `Content-Length` and `Transfer-Encoding` (RFC 9112 §6.1: "ought to be handled as an error").
    LengthAndTransferEncoding,
    /// More than one `Content-Length` line or list member, even with equal values.
    RepeatedContentLength,
}

impl Ambiguity {
    /// The client-facing explanation.
    pub fn message(self) -> &'static str {
        match self {
            Ambiguity::LengthAndTransferEncoding => "the request has both Content-Length and Transfer-Encoding",
            Ambiguity::RepeatedContentLength => "the request has more than one Content-Length",
        }
    }

    fn code(self) -> u64 {
        match self {
            Ambiguity::LengthAndTransferEncoding => 1,
            Ambiguity::RepeatedContentLength => 2,
        }
    }

    fn from_code(code: u64) -> Option<Self> {
        match code {
            1 => Some(Ambiguity::LengthAndTransferEncoding),
            2 => Some(Ambiguity::RepeatedContentLength),
            _ => None,
        }
    }
}

/// Shared between a connection's [`FramingIo`] (which records) and its service (which asks).
#[derive(Debug, Default)]
struct Shared {
    /// 0, or `position * 4 + ambiguity code` of the first ambiguous head (positions count from 1).
    flagged: AtomicU64,
    /// How many requests hyper has delivered on this connection.
    delivered: AtomicU64,
}

/// The service's side: one per connection.
#[derive(Debug, Clone, Default)]
pub struct Watch(Arc<Shared>);

impl Watch {
    /// Counts one delivered request and says whether its head was ambiguous. Call exactly once per request, in the
    /// order hyper delivers them (HTTP/1 delivers them one at a time).
    pub fn next_request(&self) -> Option<Ambiguity> {
        let position = self.0.delivered.fetch_add(1, Ordering::Relaxed) + 1;
        let flagged = self.0.flagged.load(Ordering::Acquire);
        (flagged != 0 && flagged >> 2 == position)
            .then(|| Ambiguity::from_code(flagged & 3))
            .flatten()
    }
}

/// A stream that reads HTTP/1 request framing alongside hyper; see the module docs.
pub type FramingIo<T> = Observed<T, HeadReader>;

/// `inner`, with its request heads read a second time; what is found goes to `watch`.
pub fn framing_io<T>(inner: T, watch: Watch, max_head_bytes: usize) -> FramingIo<T> {
    Observed::new(
        inner,
        HeadReader {
            scanner: Scanner::new(max_head_bytes),
            watch,
        },
    )
}

/// The reading side of the check: follows what the connection reads, records the first ambiguous head.
pub struct HeadReader {
    scanner: Scanner,
    watch: Watch,
}

impl Observer for HeadReader {
    fn read(&mut self, bytes: &[u8]) {
        if self.scanner.is_done() {
            return;
        }
        if let Some((position, ambiguity)) = self.scanner.feed(bytes) {
            self.watch
                .0
                .flagged
                .store(position * 4 + ambiguity.code(), Ordering::Release);
        }
    }
}

/// What `FramingIo` records for a connection whose reads return `reads` in turn: the position (from 1) and kind of
/// the first request head with ambiguous framing. For tests and fuzzing; the answer never depends on how the same
/// bytes are split into reads.
pub fn first_ambiguous<'a>(
    reads: impl IntoIterator<Item = &'a [u8]>,
    max_head_bytes: usize,
) -> Option<(u64, Ambiguity)> {
    let mut scanner = Scanner::new(max_head_bytes);
    for read in reads {
        if scanner.is_done() {
            break;
        }
        if let Some(found) = scanner.feed(read) {
            return Some(found);
        }
    }
    None
}

/// Where the scanner is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting (the rest of) a request head.
    Head,
    /// Inside a body of known length: this many bytes remain.
    Length(u64),
    /// Inside a chunked body.
    Chunked(Chunk),
    /// Stopped: the rest of the connection is not followed.
    Done,
}

/// The chunked-body states, mirroring hyper's decoder (RFC 9112 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Start,
    Size(u64),
    SizeLws(u64),
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    Trailer,
    TrailerLf,
    EndCr,
    EndLf,
}

/// The framing of one parsed head.
struct Head {
    /// Bytes the head occupied, leading empty lines included.
    len: usize,
    body: State,
    ambiguity: Option<Ambiguity>,
}

/// Follows request framing through the bytes of one connection.
struct Scanner {
    state: State,
    /// The beginning of a request head that has not fully arrived yet.
    pending: Vec<u8>,
    max_head_bytes: usize,
    /// Heads parsed so far.
    heads: u64,
}

impl Scanner {
    fn new(max_head_bytes: usize) -> Self {
        Scanner {
            state: State::Head,
            pending: Vec::new(),
            max_head_bytes,
            heads: 0,
        }
    }

    fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Follows `data`, the next bytes read from the connection. Returns the position and kind of an ambiguous head
    /// found in them, after which the scanner stops.
    fn feed(&mut self, data: &[u8]) -> Option<(u64, Ambiguity)> {
        if self.pending.is_empty() {
            return self.follow(data);
        }
        // A head that began in an earlier read: complete it in place (no copy of what is already held).
        self.pending.extend_from_slice(data);
        if !data.contains(&b'\n') {
            // A head ends with an empty line, so it cannot be complete yet.
            if self.pending.len() > self.max_head_bytes {
                self.stop(); // hyper refuses a head this large (431).
            }
            return None;
        }
        let pending = std::mem::take(&mut self.pending);
        match parse_head(&pending) {
            Parsed::Complete(head) => {
                let len = head.len;
                self.begin(head).or_else(|| self.follow(&pending[len..]))
            }
            Parsed::Partial if pending.len() <= self.max_head_bytes => {
                self.pending = pending;
                None
            }
            Parsed::Partial | Parsed::Invalid => {
                self.stop();
                None
            }
        }
    }

    /// Follows bytes when no partial head is held.
    fn follow(&mut self, mut data: &[u8]) -> Option<(u64, Ambiguity)> {
        while !data.is_empty() {
            match self.state {
                State::Done => return None,
                State::Head => match parse_head(data) {
                    Parsed::Complete(head) => {
                        let len = head.len;
                        if let Some(found) = self.begin(head) {
                            return Some(found);
                        }
                        data = &data[len..];
                    }
                    Parsed::Partial => {
                        if data.len() > self.max_head_bytes {
                            self.stop();
                        } else {
                            self.pending.extend_from_slice(data);
                        }
                        return None;
                    }
                    Parsed::Invalid => {
                        self.stop();
                        return None;
                    }
                },
                State::Length(remaining) => {
                    let n = remaining.min(data.len() as u64);
                    data = &data[n as usize..];
                    self.state = if remaining == n {
                        State::Head
                    } else {
                        State::Length(remaining - n)
                    };
                }
                State::Chunked(chunk) => {
                    let (next, used) = step_chunked(chunk, data);
                    data = &data[used..];
                    self.state = match next {
                        Some(Some(chunk)) => State::Chunked(chunk),
                        Some(None) => State::Head,
                        None => State::Done,
                    };
                }
            }
        }
        None
    }

    /// Enters the body of a freshly parsed head; returns the head's position if its framing is ambiguous.
    fn begin(&mut self, head: Head) -> Option<(u64, Ambiguity)> {
        if head.len > self.max_head_bytes {
            self.stop(); // hyper refuses a head this large (431).
            return None;
        }
        self.heads += 1;
        if let Some(ambiguity) = head.ambiguity {
            self.stop();
            return Some((self.heads, ambiguity));
        }
        self.state = head.body;
        None
    }

    fn stop(&mut self) {
        self.state = State::Done;
        self.pending = Vec::new();
    }
}

enum Parsed {
    Complete(Head),
    Partial,
    Invalid,
}

/// Parses a request head the way hyper does and works out its body framing (RFC 9112 §6.3).
fn parse_head(bytes: &[u8]) -> Parsed {
    match quick_head(bytes) {
        Quick::Bodiless(len) => Parsed::Complete(Head {
            len,
            body: State::Head,
            ambiguity: None,
        }),
        Quick::Incomplete => Parsed::Partial,
        Quick::Full => full_head(bytes),
    }
}

/// What the quick reading of a head says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quick {
    /// A complete head of this length, without a body and unambiguous.
    Bodiless(usize),
    /// Not complete yet, and nothing so far needs the full parse.
    Incomplete,
    /// The full parse decides.
    Full,
}

/// The quick reading of a request head, which answers for the usual head: HTTP/1.x, and without a
/// `Content-Length` or `Transfer-Encoding` line, so no body follows and nothing is ambiguous. Any other head, and
/// anything unusual in the request line or a field name, is left to [`full_head`].
///
/// It delimits lines and reads the request line's version and every field name, but not the field values (a
/// session cookie is kilobytes; the full parse validating it was the larger part of this check's cost). That is
/// enough: in a head `httparse` accepts, every `\n` ends a line and a field's name is the token before its colon,
/// so the first empty line after the request line ends the head, as `httparse` finds it. A head whose values
/// `httparse` would refuse is refused by hyper too (400, connection closed), so no later head on the connection is
/// delivered and what the scanner makes of the rest is never asked. [`quick_reading_agrees`] checks this.
///
/// The answer for a head does not depend on how its bytes arrived: a line is judged only once it is complete, and an
/// incomplete head is `Incomplete` exactly when its complete lines would not send it to the full parse either.
fn quick_head(bytes: &[u8]) -> Quick {
    // Empty lines before the request line, which httparse skips (RFC 9112 §2.2); httparse judges anything odd there.
    let Some(i) = bytes.iter().position(|&b| b != b'\r' && b != b'\n') else {
        return Quick::Full;
    };
    let leading = &bytes[..i];
    if !leading.is_empty()
        && (leading.last() != Some(&b'\n') || leading.split(|&b| b == b'\n').any(|piece| piece.len() > 1))
    {
        return Quick::Full; // a CR not followed by LF
    }
    // Not a method (a TLS record, a WebSocket frame): httparse refuses it at once.
    if !is_token_byte(bytes[i]) {
        return Quick::Full;
    }
    let mut lines = Lines { bytes, next: i };
    let Some(request_line) = lines.next() else {
        return Quick::Incomplete;
    };
    if !(request_line.ends_with(b" HTTP/1.1") || request_line.ends_with(b" HTTP/1.0")) {
        return Quick::Full;
    }
    while let Some(line) = lines.next() {
        if line.is_empty() {
            return Quick::Bodiless(lines.next);
        }
        let name_len = line.iter().position(|&b| !is_token_byte(b)).unwrap_or(line.len());
        let name = &line[..name_len];
        if name.is_empty()
            || line.get(name_len) != Some(&b':')
            || name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"transfer-encoding")
        {
            return Quick::Full;
        }
    }
    Quick::Incomplete
}

/// The complete lines of `bytes` from `next` on, without their line endings (CRLF or a bare LF); `next` is where
/// the line after the last one returned starts.
struct Lines<'a> {
    bytes: &'a [u8],
    next: usize,
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let start = self.next;
        let end = start + memchr::memchr(b'\n', &self.bytes[start..])?;
        self.next = end + 1;
        let line = &self.bytes[start..end];
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }
}

/// Whether the quick reading of `bytes` (a request head first) agrees with the full parse: a head it reads is one the
/// full parse refuses (as hyper then does) or reads with the same length, no body and nothing ambiguous; a head it
/// calls incomplete is incomplete or refused by the full parse too. For tests and fuzzing.
#[doc(hidden)]
pub fn quick_reading_agrees(bytes: &[u8]) -> bool {
    match (quick_head(bytes), full_head(bytes)) {
        (Quick::Full, _) | (_, Parsed::Invalid) | (Quick::Incomplete, Parsed::Partial) => true,
        (Quick::Bodiless(len), Parsed::Complete(head)) => {
            head.len == len && head.body == State::Head && head.ambiguity.is_none()
        }
        (Quick::Bodiless(_), Parsed::Partial) | (Quick::Incomplete, Parsed::Complete(_)) => false,
    }
}

/// A `tchar` (RFC 9110 §5.6.2): what a field name is made of.
pub(crate) fn is_token_byte(b: u8) -> bool {
    TOKEN_BYTES[usize::from(b)]
}

/// [`is_token_byte`] as a table.
const TOKEN_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
            );
        b += 1;
    }
    table
};

/// The full parse: `httparse`, as hyper uses it, and the body framing it implies (RFC 9112 §6.3).
fn full_head(bytes: &[u8]) -> Parsed {
    let mut headers = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut req, bytes, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Invalid,
    };
    let mut lengths = 0usize;
    let mut length: Option<u64> = None;
    let mut length_valid = true;
    let mut transfer_encoding = false;
    let mut chunked = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            // hyper takes each line whole: a list such as `3, 3` is invalid, and so are differing lines.
            lengths += 1;
            match parse_decimal(h.value) {
                Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                _ => length_valid = false,
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
            // The final coding decides (hyper: the last line's last member).
            chunked = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        }
    }
    let ambiguity = if transfer_encoding && lengths > 0 {
        Some(Ambiguity::LengthAndTransferEncoding)
    } else if lengths > 1 && length_valid {
        Some(Ambiguity::RepeatedContentLength)
    } else {
        None
    };
    let body = match (transfer_encoding, length) {
        // hyper refuses these itself (400) and closes the connection.
        (true, _) if !chunked || req.version != Some(1) => State::Done,
        (true, _) => State::Chunked(Chunk::Start),
        (false, _) if !length_valid => State::Done,
        (false, Some(0) | None) => State::Head,
        (false, Some(n)) => State::Length(n),
    };
    Parsed::Complete(Head { len, body, ambiguity })
}

/// Advances a chunked body over `data`. Returns the next state (`Some(None)`: the body ended; `None`: the bytes are
/// not valid chunked framing, which hyper refuses too) and how many bytes were used.
fn step_chunked(mut chunk: Chunk, data: &[u8]) -> (Option<Option<Chunk>>, usize) {
    let mut i = 0;
    while i < data.len() {
        if let Chunk::Data(remaining) = chunk {
            let n = remaining.min((data.len() - i) as u64);
            i += n as usize;
            chunk = if remaining == n {
                Chunk::DataCr
            } else {
                Chunk::Data(remaining - n)
            };
            continue;
        }
        let b = data[i];
        i += 1;
        let next = match (chunk, b) {
            (Chunk::Start, b) if b.is_ascii_hexdigit() => Some(Chunk::Size(hex(b))),
            (Chunk::Size(n), b) if b.is_ascii_hexdigit() => {
                n.checked_mul(16).and_then(|n| n.checked_add(hex(b))).map(Chunk::Size)
            }
            (Chunk::Size(n) | Chunk::SizeLws(n), b'\t' | b' ') => Some(Chunk::SizeLws(n)),
            (Chunk::Size(n) | Chunk::SizeLws(n) | Chunk::Extension(n), b';') => Some(Chunk::Extension(n)),
            (Chunk::Size(n) | Chunk::SizeLws(n) | Chunk::Extension(n), b'\r') => Some(Chunk::SizeLf(n)),
            (Chunk::Extension(_), b'\n') => None,
            (Chunk::Extension(n), _) => Some(Chunk::Extension(n)),
            (Chunk::SizeLf(0), b'\n') => Some(Chunk::EndCr),
            (Chunk::SizeLf(n), b'\n') => Some(Chunk::Data(n)),
            (Chunk::DataCr, b'\r') => Some(Chunk::DataLf),
            (Chunk::DataLf, b'\n') => Some(Chunk::Start),
            (Chunk::Trailer, b'\r') => Some(Chunk::TrailerLf),
            (Chunk::Trailer, _) => Some(Chunk::Trailer),
            (Chunk::TrailerLf, b'\n') => Some(Chunk::EndCr),
            (Chunk::EndCr, b'\r') => Some(Chunk::EndLf),
            (Chunk::EndCr, _) => Some(Chunk::Trailer),
            (Chunk::EndLf, b'\n') => return (Some(None), i),
            _ => None,
        };
        match next {
            Some(c) => chunk = c,
            None => return (None, i),
        }
    }
    (Some(Some(chunk)), i)
}

#[cfg(test)]
mod tests;
