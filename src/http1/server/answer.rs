//! Answers as the front writes them (RFC 9112 §6): the status line and fields with this side's framing and
//! connection fields, and the body behind them, by length or in chunks, never passed off as whole when it was not.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::Poll;

use http::header::{self, HeaderName};
use http::StatusCode;
use http_body::Body as _;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::COALESCE;
use crate::body::Body;
use crate::http1::parse_decimal;

/// Whether an answer with `status` to a request that was `head_only` (HEAD) has no body (RFC 9112 §6.3 ¶1).
pub(super) fn bodyless(head_only: bool, status: StatusCode) -> bool {
    head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED
}

/// The status line and fields of an answer, with its framing (`length`, or chunked when `None` and it has a body),
/// `Connection: close` unless `keep_alive`, and a `Date` when it has none.
pub(super) fn encode_head<'a>(
    out: &mut Vec<u8>,
    status: StatusCode,
    fields: impl Iterator<Item = (&'a HeaderName, &'a [u8])>,
    head_only: bool,
    length: Option<u64>,
    keep_alive: bool,
    body: &Body,
) {
    if status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        // A reason must be written: many parsers expect one.
        out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let bodyless = bodyless(head_only, status);
    // A HEAD or 304 answer's Content-Length describes the body it would have had (RFC 9110 §8.6), and is kept.
    let keep_length = bodyless && status != StatusCode::NO_CONTENT;
    let mut dated = false;
    let mut length_kept = false;
    for (name, value) in fields {
        if name == header::CONTENT_LENGTH {
            if !keep_length {
                continue;
            }
            length_kept = true;
        } else if name == header::TRANSFER_ENCODING || name == header::CONNECTION {
            // Framing and connection handling are this side's.
            continue;
        } else if name == header::DATE {
            dated = true;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    let write_length = |out: &mut Vec<u8>, length: u64| {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    if let Some(length) = length {
        write_length(out, length);
    } else if !bodyless {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    } else if head_only && !length_kept && status != StatusCode::NO_CONTENT && status != StatusCode::NOT_MODIFIED {
        // A HEAD answer the gate made itself says how long the GET answer would be, as hyper does.
        if let Some(length) = body.size_hint().exact().filter(|&n| n > 0) {
            write_length(out, length);
        }
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        crate::http1::date::extend(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The length a single, valid `Content-Length` field declares (repeated fields must agree), for a body that does
/// not know its own.
pub(super) fn declared_length<V: AsRef<[u8]>>(values: impl IntoIterator<Item = V>) -> Option<u64> {
    let mut declared = None;
    for value in values {
        let n = parse_decimal(value.as_ref())?;
        if declared.is_some_and(|d| d != n) {
            return None;
        }
        declared = Some(n);
    }
    declared
}

/// Sends `body` behind the head in `out`, framed by `length` (or chunked), writing and flushing whenever the body
/// has nothing ready (so a streamed answer's parts reach the client as they come) and leaving the last part in
/// `out`; `false` when the body failed, or did not match its length.
pub(super) async fn send_body<I: AsyncWrite + Unpin>(
    io: &mut I,
    out: &mut Vec<u8>,
    body: &mut Body,
    length: Option<u64>,
) -> io::Result<bool> {
    let mut sent: u64 = 0;
    loop {
        // What the body has ready now; when it has nothing, what is waiting goes out before waiting for more.
        let polled = poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await;
        let frame = match polled {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if !out.is_empty() {
                    io.write_all(out).await?;
                    out.clear();
                }
                // Out before the wait: a TLS stream keeps what the socket did not take until it is flushed.
                io.flush().await?;
                poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
            }
        };
        let data = match frame {
            None => break,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "an answer's body failed; closing the connection");
                return Ok(false);
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                // Trailers are not passed on.
                Err(_) => continue,
            },
        };
        if data.is_empty() {
            continue;
        }
        sent += data.len() as u64;
        match length {
            Some(length) if sent > length => {
                tracing::debug!(length, "an answer's body ran past its length; closing the connection");
                return Ok(false);
            }
            Some(_) => {}
            None => {
                let mut size = [0u8; 16];
                out.extend_from_slice(hex(data.len(), &mut size));
                out.extend_from_slice(b"\r\n");
            }
        }
        if data.len() > COALESCE {
            io.write_all(out).await?;
            out.clear();
            io.write_all(&data).await?;
        } else {
            out.extend_from_slice(&data);
        }
        if length.is_none() {
            out.extend_from_slice(b"\r\n");
        }
    }
    match length {
        None => {
            out.extend_from_slice(b"0\r\n\r\n");
            Ok(true)
        }
        Some(length) if sent < length => {
            tracing::debug!(
                length,
                sent,
                "an answer's body ended short of its length; closing the connection"
            );
            Ok(false)
        }
        Some(_) => Ok(true),
    }
}

/// `n` in lowercase hexadecimal, written into `buf`.
pub(super) fn hex(mut n: usize, buf: &mut [u8; 16]) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            return &buf[start..];
        }
    }
}
