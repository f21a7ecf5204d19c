//! The answers to request heads the HTTP/1 front cannot read ([`Unreadable`]: malformed, 400; a target too long,
//! 414; too large, 431 (RFC 6585 §5)), each with a page saying what was wrong and what to do, answered as the gate
//! answers any request: a request id on the page and in `X-Request-Id`, `[response_headers]`, an access line and the
//! request's count in the requests metric. Only the request line is read of the head, and only to log its method and
//! path.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, Response};

use super::access::{self, AccessLine};
use super::{response_headers, Decided, Gate, REQUEST_ID};
use crate::body::Body;
use crate::http1::framing::is_token_byte;
use crate::http1::server::Unreadable;
use crate::pages::Page;
use crate::routes::{classify, Route};

/// Logged for a method or a path the request line does not give sanely (as nginx's `-`).
const UNKNOWN: &str = "-";

impl Gate {
    /// The HTTP/1 front's answers to request heads it cannot read.
    pub(crate) fn refusal(self: &Arc<Self>) -> crate::http1::server::Refusal {
        let gate = Arc::clone(self);
        crate::http1::server::Refusal::new(move |peer, why, head| answer(&gate, peer, why, head))
    }
}

/// The answer to the head whose first bytes are `head`, from `peer`, unreadable for `why`.
fn answer(gate: &Gate, peer: SocketAddr, why: Unreadable, head: &[u8]) -> Response<Body> {
    let (method, mut path) = request_line(head).unwrap_or((UNKNOWN, UNKNOWN));
    if why == Unreadable::TargetTooLong {
        // The path is what was refused: tens of kilobytes the client chose, not put in the log.
        path = UNKNOWN;
    }
    // The head's fields are not read (they may be what is wrong): a proxy's request id is not taken either.
    let request_id = gate.request_id(&HeaderMap::new(), peer);
    let route = if path.starts_with('/') {
        classify(path)
    } else {
        Route::App
    };
    let mut line = AccessLine {
        gate,
        route,
        method,
        request_id: &request_id,
        path,
        peer,
        started: None,
        decided: Decided::new(access::wanted(route)),
        pending: true,
        // Not read, as the other fields.
        trace_id: None,
    };
    let page = match why {
        Unreadable::Malformed(malformed) => Page::new(
            why.status(),
            "bad_request",
            "Bad request",
            format!(
                "This site cannot read the request your browser or program sent: {malformed}. Try again; if this \
                 keeps happening, the program sending it needs mending."
            ),
        ),
        Unreadable::TargetTooLong => Page::new(
            why.status(),
            "uri_too_long",
            "Address too long",
            format!(
                "The address of this request is longer than this site accepts ({} bytes). Follow a shorter link.",
                crate::http1::server::MAX_TARGET
            ),
        ),
        Unreadable::TooLarge => Page::new(
            why.status(),
            "request_header_fields_too_large",
            "Request too large",
            "Your browser sent more header data than this site accepts, most often too many or too large cookies. \
             Clear this site's cookies, then try again.",
        ),
    };
    let mut resp = page
        .with_request_id(request_id.to_str().unwrap_or(""))
        .render(true, &gate.config.pages.look);
    // The app that would have served it is not known (the `Host` field was not read): the gate's own fields.
    if !gate.config.response_headers.is_empty() {
        response_headers::apply(&mut resp, &gate.config.response_headers);
    }
    resp.headers_mut().insert(REQUEST_ID, request_id.clone());
    line.write(resp.status().as_u16());
    resp
}

/// The method and the target's path of `head`'s request line (`method SP request-target SP HTTP-version`, RFC 9112
/// §3, after the empty lines §2.2 allows before it), when they are sane to log: a method of token characters, a
/// target of visible ASCII. `None` for anything else: a request line not read whole, a stray space, control bytes.
fn request_line(head: &[u8]) -> Option<(&str, &str)> {
    let start = head.iter().position(|b| !matches!(b, b'\r' | b'\n'))?;
    let head = &head[start..];
    let end = head.iter().position(|b| *b == b'\n')?;
    let line = &head[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|b| *b == b' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with(b"HTTP/") {
        return None;
    }
    if method.is_empty() || !method.iter().all(|b| is_token_byte(*b)) {
        return None;
    }
    if target.is_empty() || !target.iter().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let path = match target.iter().position(|b| *b == b'?') {
        Some(query) => &target[..query],
        None => target,
    };
    Some((std::str::from_utf8(method).ok()?, std::str::from_utf8(path).ok()?))
}

#[cfg(test)]
mod tests {
    use super::request_line;

    #[test]
    fn only_a_sane_request_line_is_read_and_never_its_query() {
        assert_eq!(
            request_line(b"GET /a/b?code=secret HTTP/1.1\r\nCookie: x"),
            Some(("GET", "/a/b"))
        );
        assert_eq!(
            request_line(b"\r\n\r\nPOST /up HTTP/1.1\nHost: x"),
            Some(("POST", "/up"))
        );
        assert_eq!(request_line(b"OPTIONS * HTTP/1.1\r\n"), Some(("OPTIONS", "*")));
        assert_eq!(request_line(b"GET ?only HTTP/1.1\r\n"), Some(("GET", "")));
        for bad in [
            &b"GET /not/whole"[..],
            b"GET /a HTTP/1.1",
            b"GET  /a HTTP/1.1\r\n",
            b"GET /a b HTTP/1.1\r\n",
            b"GET /a\x01 HTTP/1.1\r\n",
            b"G(T /a HTTP/1.1\r\n",
            b"GET /caf\xc3\xa9 HTTP/1.1\r\n",
            b"GET /a SPDY/3\r\n",
            b" /a HTTP/1.1\r\n",
            b"",
            b"\r\n\r\n",
        ] {
            assert_eq!(request_line(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
