//! The front's own answers to request heads it cannot read: malformed (400), with a target too long (414), or too
//! large (431). hyper answers the same heads with the same statuses and no body; the gate makes these
//! ([`Refusal::new`]), so that each carries a request id and a page saying what was wrong, and is logged and counted
//! as its other answers. The connection closes after one: where the next request would start is not known.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use http::header;
use http::StatusCode;

use crate::body::Body;

/// Why a head cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    /// Not HTTP/1 syntax (RFC 9112 §2 to §5): 400 (RFC 9110 §15.5.1).
    Malformed(Malformed),
    /// A request target longer than [`super::MAX_TARGET`] bytes: 414 (RFC 9110 §15.5.15), as hyper's.
    TargetTooLong,
    /// Longer than `server.max_header_bytes`, or with more than [`crate::http1::MAX_HEADERS`] fields: 431 (RFC 6585
    /// §5); most often a site's cookies grown too large.
    TooLarge,
}

impl Unreadable {
    /// The status hyper answers such a head with, which the gate's answer carries too.
    pub fn status(self) -> StatusCode {
        match self {
            Unreadable::Malformed(_) => StatusCode::BAD_REQUEST,
            Unreadable::TargetTooLong => StatusCode::URI_TOO_LONG,
            Unreadable::TooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        }
    }
}

/// What part of a head breaks HTTP/1's syntax, the first the parser met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// The method is not a token (RFC 9110 §9.1).
    Method,
    /// The request target has a byte no target may have, or does not parse as one (RFC 9112 §3.2).
    Target,
    /// The request line does not end in one space and `HTTP/1.0` or `HTTP/1.1` after the target (RFC 9112 §2.3, §3):
    /// another version, or a space in the target.
    Version,
    /// A field name is not a token, or a line starts with white space (obsolete line folding, RFC 9112 §5.2).
    FieldName,
    /// A field value has a control character (RFC 9110 §5.5).
    FieldValue,
    /// A line ends in a bare CR (RFC 9112 §2.2).
    LineEnd,
}

impl Malformed {
    /// What httparse's `error` says, as hyper reads it: an invalid token is the method's when no method was read
    /// (`method_read`), else the target's.
    pub(super) fn from_httparse(error: httparse::Error, method_read: bool) -> Malformed {
        match error {
            httparse::Error::Token if !method_read => Malformed::Method,
            httparse::Error::Token => Malformed::Target,
            httparse::Error::HeaderName => Malformed::FieldName,
            httparse::Error::HeaderValue => Malformed::FieldValue,
            httparse::Error::NewLine => Malformed::LineEnd,
            // `Version`, and two a request cannot give here (`Status`; `TooManyHeaders` is a 431).
            _ => Malformed::Version,
        }
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Malformed::Method => "the request method has a character a method cannot have",
            Malformed::Target => "the address (request target) has a character an address cannot have, or is not one",
            Malformed::Version => "the request line is not a method, an address and HTTP/1.1, one space apart",
            Malformed::FieldName => {
                "a header field's name has a character a name cannot have, or a line starts with white space"
            }
            Malformed::FieldValue => "a header field's value has a control character",
            Malformed::LineEnd => "a line does not end with CRLF or LF",
        })
    }
}

/// Makes the answer to a head the front cannot read, from a peer; the head's first bytes (all that was read, the
/// request line first) are given for logging.
type Answer = dyn Fn(SocketAddr, Unreadable, &[u8]) -> http::Response<Body> + Send + Sync;

/// The answers to heads the front cannot read ([`Unreadable`]); see the module docs.
#[derive(Clone)]
pub struct Refusal {
    answer: Arc<Answer>,
}

impl Refusal {
    /// `answer` makes the response; its status and fields are sent as they are, but for `Content-Length`,
    /// `Connection: close` and `Date`, which the front sets. Its body must be ready at once (a page), else none is
    /// sent.
    pub fn new(
        answer: impl Fn(SocketAddr, Unreadable, &[u8]) -> http::Response<Body> + Send + Sync + 'static,
    ) -> Refusal {
        Refusal {
            answer: Arc::new(answer),
        }
    }

    /// The whole answer to `head` from `peer`, unreadable for `why`, dated now.
    pub(super) fn bytes(&self, peer: SocketAddr, why: Unreadable, head: &[u8]) -> Vec<u8> {
        let (parts, body) = (self.answer)(peer, why, head).into_parts();
        let body = futures_util::FutureExt::now_or_never(http_body_util::BodyExt::collect(body))
            .and_then(Result::ok)
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut out = Vec::with_capacity(512 + body.len());
        let reason = parts.status.canonical_reason().unwrap_or("");
        out.extend_from_slice(format!("HTTP/1.1 {} {reason}\r\n", parts.status.as_str()).as_bytes());
        for (name, value) in &parts.headers {
            if matches!(*name, header::CONTENT_LENGTH | header::CONNECTION | header::DATE) {
                continue;
            }
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("content-length: {}\r\nconnection: close\r\ndate: ", body.len()).as_bytes());
        crate::http1::date::extend(&mut out);
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(&body);
        out
    }
}

impl Default for Refusal {
    /// A bare answer with the status alone (the front's own tests).
    fn default() -> Refusal {
        Refusal::new(|_, why, _| {
            let mut resp = http::Response::new(crate::body::empty());
            *resp.status_mut() = why.status();
            resp
        })
    }
}
