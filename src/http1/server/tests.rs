use super::*;
use super::answer::hex;
use http_body_util::{BodyExt, StreamBody};

const MAX: usize = 16 * 1024;

fn conn(bytes: &[u8]) -> Conn {
    Conn {
        buf: BytesMut::from(bytes),
        ..Conn::default()
    }
}

fn head(conn: &mut Conn) -> Head {
    match conn.parse(MAX) {
        Parse::Head(head) => head,
        Parse::Partial => panic!("partial"),
        Parse::HandOff => panic!("handed off"),
    }
}

#[test]
fn the_usual_head_is_read_and_taken_out_of_the_buffer() {
    let mut c = conn(
        b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nCookie: c=1\r\nX-Long-Custom-Field-Name-Over-32-Bytes: v\r\n\r\nGET /next",
    );
    let h = head(&mut c);
    assert_eq!(h.request.method(), Method::GET);
    assert_eq!(h.request.uri(), "/a?b=1");
    assert_eq!(h.request.version(), Version::HTTP_11);
    assert!(h.keep_alive);
    let fields: Vec<_> = h
        .request
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    assert_eq!(
        fields,
        [
            ("host", &b"x"[..]),
            ("cookie", b"c=1"),
            ("x-long-custom-field-name-over-32-bytes", b"v")
        ]
    );
    assert!(h.request.body().is_end_stream());
    assert_eq!(&c.buf[..], b"GET /next", "the next (pipelined) head stays");
    assert!(matches!(c.parse(MAX), Parse::Partial));
}

#[test]
fn close_in_any_connection_field_ends_the_connection_after_the_answer() {
    for close in [
        "Connection: close",
        "Connection: keep-alive, Close",
        "Connection: a\r\nConnection: CLOSE",
    ] {
        let text = format!("GET / HTTP/1.1\r\nHost: x\r\n{close}\r\n\r\n");
        assert!(!head(&mut conn(text.as_bytes())).keep_alive, "{close}");
    }
    assert!(head(&mut conn(b"GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n")).keep_alive);
}

#[test]
fn every_other_head_is_handed_over_with_every_byte_in_place() {
    let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_TARGET));
    let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X: 1\r\n".repeat(MAX_HEADERS + 1));
    let over_limit = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX));
    let cases: Vec<&[u8]> = vec![
        b"POST /u HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /u HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
        b"POST /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost a\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: \x01\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
        b"G(T / HTTP/1.1\r\n\r\n",
        b"GET /a b HTTP/1.1\r\n\r\n",
        b"GET http://[::1 HTTP/1.1\r\n\r\n",
        long_target.as_bytes(),
        many.as_bytes(),
        over_limit.as_bytes(),
    ];
    for bytes in cases {
        let mut c = conn(bytes);
        assert!(
            matches!(c.parse(MAX), Parse::HandOff),
            "{:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
        );
        assert_eq!(&c.buf[..], bytes, "every byte stays for hyper");
    }
}

#[test]
fn a_head_not_yet_whole_waits_for_more() {
    for partial in [
        &b"GET / HT"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r",
    ] {
        let mut c = conn(partial);
        assert!(matches!(c.parse(MAX), Parse::Partial));
        assert_eq!(&c.buf[..], partial);
    }
}

fn encoded(status: u16, fields: &[(&str, &str)], head_only: bool, length: Option<u64>, keep_alive: bool) -> String {
    let mut map = HeaderMap::new();
    for (name, value) in fields {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    let mut out = Vec::new();
    let status = StatusCode::from_u16(status).unwrap();
    let fields = map.iter().map(|(name, value)| (name, value.as_bytes()));
    encode_head(&mut out, status, fields, head_only, length, keep_alive, &Body::Empty);
    String::from_utf8(out).unwrap()
}

#[test]
fn the_head_carries_this_sides_framing_and_connection_fields_only() {
    let fields = [
        ("content-length", "99"),
        ("transfer-encoding", "gzip"),
        ("connection", "keep-alive"),
        ("x-app", "1"),
    ];
    let text = encoded(200, &fields, false, Some(5), true);
    assert!(
        text.starts_with("HTTP/1.1 200 OK\r\nx-app: 1\r\ncontent-length: 5\r\ndate: "),
        "{text}"
    );
    assert!(text.ends_with(" GMT\r\n\r\n"), "{text}");
    let text = encoded(404, &fields, false, None, false);
    assert!(
        text.starts_with(
            "HTTP/1.1 404 Not Found\r\nx-app: 1\r\ntransfer-encoding: chunked\r\nconnection: close\r\ndate: "
        ),
        "{text}"
    );
}

#[test]
fn bodiless_answers_keep_or_drop_their_length_as_rfc_9110_says() {
    let fields = [("content-length", "42"), ("date", "Sun, 06 Nov 1994 08:49:37 GMT")];
    // HEAD and 304: the length of the body they stand for; 204: none.
    assert_eq!(
        encoded(200, &fields, true, None, true),
        "HTTP/1.1 200 OK\r\ncontent-length: 42\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n"
    );
    assert_eq!(
        encoded(304, &fields, false, None, true),
        "HTTP/1.1 304 Not Modified\r\ncontent-length: 42\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n"
    );
    assert_eq!(
        encoded(204, &fields, false, None, true),
        "HTTP/1.1 204 No Content\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n"
    );
}

#[test]
fn declared_lengths_must_be_plain_digits_and_agree() {
    let declared = |values: &[&str]| declared_length(values.iter().map(|v| v.as_bytes()));
    assert_eq!(declared(&["12"]), Some(12));
    assert_eq!(declared(&["12", "12"]), Some(12));
    assert_eq!(declared(&["12", "13"]), None);
    assert_eq!(declared(&["+12"]), None);
    assert_eq!(declared(&["1 2"]), None);
    assert_eq!(declared(&[""]), None);
    assert_eq!(declared(&["99999999999999999999999"]), None);
    assert_eq!(declared(&[]), None);
}

/// A body of these frames (an `Err` frame fails it), with no length of its own.
fn streamed(frames: Vec<Result<&'static [u8], &'static str>>) -> Body {
    let frames = frames.into_iter().map(|f| {
        f.map(|d| http_body::Frame::data(Bytes::from_static(d)))
            .map_err(|e| -> crate::body::BoxError { e.into() })
    });
    Body::Boxed(StreamBody::new(futures_util::stream::iter(frames)).boxed())
}

async fn sent(mut body: Body, length: Option<u64>) -> (bool, Vec<u8>) {
    let (mut io, mut out) = (Vec::new(), b"HEAD\r\n\r\n".to_vec());
    let whole = send_body(&mut io, &mut out, &mut body, length).await.unwrap();
    io.extend_from_slice(&out);
    (whole, io)
}

#[tokio::test]
async fn bodies_are_sent_by_length_or_in_chunks_and_a_wrong_length_is_never_whole() {
    let (whole, bytes) = sent(streamed(vec![Ok(b"hel"), Ok(b""), Ok(b"lo")]), Some(5)).await;
    assert!(whole);
    assert_eq!(bytes, b"HEAD\r\n\r\nhello");
    let big = vec![b'x'; COALESCE + 1].leak();
    let (whole, bytes) = sent(streamed(vec![Ok(b"hello"), Ok(big)]), None).await;
    assert!(whole);
    let expected = [&b"HEAD\r\n\r\n5\r\nhello\r\n4001\r\n"[..], big, b"\r\n0\r\n\r\n"].concat();
    assert_eq!(bytes, expected);
    // Short, long or failed: sent as far as it went, and the connection is not reused.
    assert!(!sent(streamed(vec![Ok(b"hel")]), Some(5)).await.0);
    assert!(!sent(streamed(vec![Ok(b"hello!")]), Some(5)).await.0);
    let (whole, bytes) = sent(streamed(vec![Ok(b"hel"), Err("upstream gone")]), None).await;
    assert!(!whole);
    assert!(!bytes.ends_with(b"0\r\n\r\n"), "no last chunk after a failure");
}

#[test]
fn chunk_sizes_are_lowercase_hex() {
    let mut buf = [0u8; 16];
    assert_eq!(hex(0, &mut buf), b"0");
    assert_eq!(hex(255, &mut buf), b"ff");
    assert_eq!(hex(0x4001, &mut buf), b"4001");
    assert_eq!(hex(usize::MAX, &mut buf), b"ffffffffffffffff");
}
