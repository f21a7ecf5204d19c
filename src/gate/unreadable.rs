//! The answers to request heads the HTTP/1 front cannot read ([`Unreadable`]: malformed, 400; a target too long,
//! 414; too large, 431 (RFC 6585 §5)), each with a page saying what was wrong and what to do, answered as the gate
//! answers any request: a request id on the page and in `X-Request-Id`, `[response_headers]`, an access line and the
//! request's count in the requests metric. Only the request line is read of the head, and only to log its method and
//! path. The heads hyper's server refused on connections the front handed to it get their line and count here too
//! ([`WorkerGate::log_http1_refusal`]). Each line says why the head was refused (`refused`).

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Response, StatusCode};

use super::access::{self, AccessLine};
use super::{response_headers, Decided, Gate, WorkerGate, REQUEST_ID};
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
    let mut line = refused_line(gate, peer, method, path, &request_id);
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
    let reason = match why {
        Unreadable::Malformed(malformed) => malformed.to_string(),
        Unreadable::TargetTooLong => format!(
            "the request target is longer than {} bytes",
            crate::http1::server::MAX_TARGET
        ),
        Unreadable::TooLarge => {
            "the request head is larger than server.max_header_bytes, or has too many fields".into()
        }
    };
    line.write_refused(resp.status().as_u16(), &reason);
    resp
}

/// The access line of a head that could not be read: `method` and `path` as far as they could be, no trace.
fn refused_line<'a>(
    gate: &'a Gate,
    peer: SocketAddr,
    method: &'a str,
    path: &'a str,
    request_id: &'a HeaderValue,
) -> AccessLine<'a> {
    let route = if path.starts_with('/') {
        classify(path)
    } else {
        Route::App
    };
    AccessLine {
        gate,
        route,
        method,
        request_id,
        path,
        peer,
        started: None,
        decided: Decided::new(access::wanted(route)),
        pending: true,
        // Not read, as the other fields.
        trace_id: None,
    }
}

impl WorkerGate {
    /// Logs and counts a request head hyper's server refused on a connection the front handed to it (for its
    /// framing fields, `Content-Length: abc` or `Transfer-Encoding: gzip`, or a malformed head of a later request on
    /// such a connection): hyper answered it itself, with its status and no body, and `error` ended the connection.
    /// The access line (its method and path unknown: `-`) says why, as hyper did, and the requests metric counts it,
    /// as every answer of the gate's. Other ends of a connection are no request and are not logged here.
    pub(crate) fn log_http1_refusal(&self, peer: SocketAddr, error: &hyper::Error) {
        let Some(status) = hyper_refusal(error) else {
            return;
        };
        let request_id = self.0.request_id(&HeaderMap::new(), peer);
        let mut line = refused_line(&self.0, peer, UNKNOWN, UNKNOWN, &request_id);
        line.write_refused(status.as_u16(), &error.to_string());
    }
}

/// The status hyper's HTTP/1 server answered the head that ended its connection with `error`, if it answered one
/// (hyper's `Server::on_error`): 431 for a head too large, 414 for a target too long, 400 for a method, target,
/// version or header field it refuses. An HTTP/2 preface, an I/O error, a timeout or a hang-up got no answer.
fn hyper_refusal(error: &hyper::Error) -> Option<StatusCode> {
    if error.is_parse_too_large() {
        // hyper's two "too large" errors, told apart by what they say ("URI too long", "message head is too large").
        return Some(if error.to_string().contains("URI") {
            StatusCode::URI_TOO_LONG
        } else {
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        });
    }
    let said = error.to_string();
    (error.is_parse() && !said.contains("HTTP2") && !said.starts_with("internal error"))
        .then_some(StatusCode::BAD_REQUEST)
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
    use super::{hyper_refusal, request_line};

    /// hyper's own errors, from its server reading each head over an in-memory connection: the status read from the
    /// error is the one hyper wrote, and an error after which hyper wrote nothing gives none.
    #[tokio::test]
    async fn a_hyper_refusal_is_read_as_the_status_hyper_wrote() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(70_000));
        // Still coming when it outgrows the buffer.
        let large_head = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(200_000));
        let cases: [(&[u8], Option<u16>); 8] = [
            (b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", Some(400)),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", Some(400)),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", Some(400)),
            (b"GET / HTTP/1.1\r\nX Bad: 1\r\n\r\n", Some(400)),
            (long_target.as_bytes(), Some(414)),
            (large_head.as_bytes(), Some(431)),
            // A hang-up in the middle of a head, an HTTP/2 preface: no answer.
            (b"GET / HTTP/1.1\r\nHost: a\r\n", None),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", None),
        ];
        for (head, expected) in cases {
            let (mut client, server) = tokio::io::duplex(1 << 20);
            let service = hyper::service::service_fn(|_| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
            });
            // As the gate's hyper server, whose buffer holds its largest head.
            let conn = hyper::server::conn::http1::Builder::new()
                .max_buf_size(131_072)
                .serve_connection(hyper_util::rt::TokioIo::new(server), service);
            client.write_all(head).await.expect("write");
            // The client hangs up after its bytes when hyper would wait for more.
            if head.ends_with(b"Host: a\r\n") {
                client.shutdown().await.expect("shutdown");
            }
            let error = conn.await.expect_err("refused");
            let mut written = Vec::new();
            client.read_to_end(&mut written).await.expect("read");
            let written = String::from_utf8_lossy(&written);
            let status = hyper_refusal(&error).map(|s| s.as_u16());
            assert_eq!(status, expected, "{error}: {written}");
            match expected {
                Some(code) => assert!(written.contains(&format!(" {code} ")), "{written}"),
                None => assert!(written.is_empty(), "{written}"),
            }
        }
    }

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
