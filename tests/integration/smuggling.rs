//! Request smuggling over real sockets: a head whose framing two readers could take two ways is refused with 400,
//! the connection closed, the upstream untouched, wherever on a keep-alive connection it comes.

use crate::support::*;

#[tokio::test]
async fn request_smuggling_with_content_length_and_transfer_encoding_is_refused() {
    // A front proxy that frames by Content-Length would read `GET /admin` as part of the body; one that frames by
    // Transfer-Encoding as a second request. The gate takes neither reading: 400, connection closed, upstream
    // untouched. Both header orders, and with the session of a signed-in user.
    let (s, cookie, before) = signed_in_stack().await;
    for framing in [
        "Content-Length: 40\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 40",
        "Transfer-Encoding: chunked\r\nContent-Length: 0",
    ] {
        let req = format!(
            "POST /upload HTTP/1.1\r\nHost: a\r\nCookie: logto_gate={cookie}\r\nAccept: application/json\r\n{framing}\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n"
        );
        let text = exchange_until_closed(s.gate.port, req.as_bytes()).await;
        assert!(text.starts_with("HTTP/1.1 400 "), "{framing}: {text}");
        assert!(text.contains("both Content-Length and Transfer-Encoding"), "{text}");
        assert_eq!(
            text.matches("HTTP/1.1 ").count(),
            1,
            "nothing after it was read: {text}"
        );
        assert!(text.to_ascii_lowercase().contains("connection: close"), "{text}");
    }
    assert_eq!(s.upstream.count(), before, "nothing reached the upstream");
}

#[tokio::test]
async fn transfer_codings_other_than_chunked_alone_are_refused_with_501() {
    // hyper's server takes any list of codings that ends in chunked, and the gate decodes chunked alone: a body in
    // another coding would reach the upstream still coded but no longer labelled. 501 (RFC 9112 §6.1, as nginx
    // answers), the connection closed, nothing after it read, the upstream untouched.
    let (s, cookie, before) = signed_in_stack().await;
    for coding in [
        "gzip, chunked",
        "x-custom, chunked",
        "chunked, chunked",
        "chunked\r\nTransfer-Encoding: chunked",
        "gzip\r\nTransfer-Encoding: chunked",
    ] {
        let req = format!(
            "POST /upload HTTP/1.1\r\nHost: a\r\nCookie: logto_gate={cookie}\r\nAccept: application/json\r\n\
             Transfer-Encoding: {coding}\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n"
        );
        let text = exchange_until_closed(s.gate.port, req.as_bytes()).await;
        assert!(text.starts_with("HTTP/1.1 501 "), "{coding}: {text}");
        assert!(text.contains("unsupported_transfer_coding"), "{coding}: {text}");
        assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{coding}: {text}");
        assert!(
            text.to_ascii_lowercase().contains("connection: close"),
            "{coding}: {text}"
        );
    }
    assert_eq!(s.upstream.count(), before, "nothing reached the upstream");
}

#[tokio::test]
async fn request_smuggling_with_repeated_equal_content_lengths_is_refused() {
    let (s, cookie, before) = signed_in_stack().await;
    let req = format!(
        "POST /upload HTTP/1.1\r\nHost: a\r\nCookie: logto_gate={cookie}\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nabcdeGET /admin HTTP/1.1\r\nHost: a\r\n\r\n"
    );
    let text = exchange_until_closed(s.gate.port, req.as_bytes()).await;
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    assert!(text.contains("more than one Content-Length"), "{text}");
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    assert_eq!(s.upstream.count(), before);
}

#[tokio::test]
async fn request_smuggling_deep_in_a_keep_alive_connection_is_refused() {
    // The gate follows framing through earlier bodies (one by length, one chunked with extensions and trailers,
    // whose data looks like a smuggled head), so the ambiguous third request is caught where hyper delivers it and
    // the honest ones before it are served.
    let (s, cookie, before) = signed_in_stack().await;
    let decoy = "GET /admin HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let req = format!(
        "POST /upload HTTP/1.1\r\nHost: a\r\nCookie: logto_gate={cookie}\r\nContent-Length: 5\r\n\r\nhello\
POST /upload HTTP/1.1\r\nHost: a\r\nCookie: logto_gate={cookie}\r\nTransfer-Encoding: chunked\r\n\r\n\
{:x};note=1\r\n{decoy}\r\n0\r\nX-Trailer: 1\r\n\r\n\
POST /upload HTTP/1.1\r\nHost: a\r\nCookie: logto_gate={cookie}\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        decoy.len()
    );
    let text = exchange_until_closed(s.gate.port, req.as_bytes()).await;
    let statuses: Vec<&str> = text
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &text[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "200", "400"], "{text}");
    assert!(
        text.contains(&format!("\"bytes\":{}", decoy.len())),
        "the decoy was body data: {text}"
    );
    assert_eq!(
        s.upstream.count(),
        before + 2,
        "only the two honest uploads reached the upstream"
    );
}

#[tokio::test]
async fn request_smuggling_with_conflicting_content_lengths_is_refused() {
    let s = Stack::start().await;
    let req = "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde";
    assert_eq!(first_status(s.gate.port, req.as_bytes()).await, 400);
    assert_eq!(s.upstream.count(), 0);
}
