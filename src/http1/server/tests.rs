use super::answer::hex;
use super::*;
use http_body_util::{BodyExt, StreamBody};

const MAX: usize = 16 * 1024;
const IDLE: Duration = Duration::from_secs(5);

fn conn(bytes: &[u8]) -> Conn {
    Conn {
        buf: BytesMut::from(bytes),
        ..Conn::default()
    }
}

fn head(conn: &mut Conn) -> Head {
    match conn.parse(MAX, IDLE) {
        Parse::Head(head) => head,
        Parse::Partial => panic!("partial"),
        Parse::HandOff => panic!("handed off"),
        Parse::Refuse(why) => panic!("refused: {why:?}"),
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
    assert!(matches!(c.parse(MAX, IDLE), Parse::Partial));
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
fn every_other_head_is_handed_over_or_refused_as_hyper_would_with_every_byte_in_place() {
    let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_TARGET));
    let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X: 1\r\n".repeat(MAX_HEADERS + 1));
    let over_limit = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX));
    let cases: Vec<&[u8]> = vec![
        // A body framed any other way than by one plain Content-Length or one chunked coding alone.
        b"POST /u HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /u HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello",
        b"POST /u HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello",
        b"POST /u HTTP/1.1\r\nContent-Length: 0x5\r\n\r\nhello",
        b"POST /u HTTP/1.1\r\nContent-Length: \r\n\r\n",
        b"POST /u HTTP/1.1\r\nContent-Length: 18446744073709551616\r\n\r\n",
        b"POST /u HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        b"POST /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n",
        b"POST /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /u HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        b"POST /u HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"POST /u HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /u HTTP/1.1\r\nTransfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n",
        b"POST /u HTTP/1.1\r\nTransfer-Encoding: \"chunked\"\r\n\r\n0\r\n\r\n",
        b"POST /u HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n",
        b"POST /u HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /u HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue, x\r\n\r\n",
        b"POST /u HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\nExpect: 100-continue\r\n\r\n",
        b"POST /u HTTP/1.1\r\nContent-Length: 5\r\nExpect: 200-ok\r\n\r\n",
        b"POST /u HTTP/1.1\r\nContent-Length: 0\r\nExpect: 100-continue\r\n\r\n",
        b"POST /u HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello",
        b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        // A target that is no URI, in a head hyper takes for its fields: hyper's 400.
        b"GET http://[::1 HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
    ];
    for bytes in cases {
        let mut c = conn(bytes);
        assert!(
            matches!(c.parse(MAX, IDLE), Parse::HandOff),
            "{:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
        );
        assert_eq!(&c.buf[..], bytes, "every byte stays for hyper");
    }
    // Malformed (hyper's 400): answered here, what is wrong named as hyper reads it, nothing served.
    for (bytes, what) in [
        (&b"GET / HTTP/1.1\r\nHost a\r\n\r\n"[..], Malformed::FieldName),
        (b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", Malformed::FieldName),
        (b"GET / HTTP/1.1\r\nX: \x01\r\n\r\n", Malformed::FieldValue),
        (b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", Malformed::FieldValue),
        (
            b"POST /u HTTP/1.1\r\nTransfer-Encoding: chunked\x0b\r\n\r\n0\r\n\r\n",
            Malformed::FieldValue,
        ),
        (b"GET / HTTP/1.1\rX: a\r\n\r\n", Malformed::LineEnd),
        (b"G(T / HTTP/1.1\r\n\r\n", Malformed::Method),
        (b"GET /a\x7f HTTP/1.1\r\n\r\n", Malformed::Target),
        (b"GET /a b HTTP/1.1\r\n\r\n", Malformed::Version),
        (b"GET / HTTP/2.0\r\n\r\n", Malformed::Version),
        (b"GET http://[::1 HTTP/1.1\r\n\r\n", Malformed::Target),
        (
            b"GET http://[::1 HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
            Malformed::Target,
        ),
    ] {
        let mut c = conn(bytes);
        let found = c.parse(MAX, IDLE);
        assert!(
            matches!(found, Parse::Refuse(Unreadable::Malformed(m)) if m == what),
            "{:?}: {:?}",
            String::from_utf8_lossy(bytes),
            match found {
                Parse::Refuse(why) => Some(why),
                _ => None,
            }
        );
        assert_eq!(&c.buf[..], bytes, "{:?}", String::from_utf8_lossy(bytes));
    }
    // A target longer than hyper takes, in a head the limit allows: 414, as hyper's, whatever the version.
    for version in ["1.1", "1.0"] {
        let text = long_target.replace("HTTP/1.1", &format!("HTTP/{version}"));
        let mut c = conn(text.as_bytes());
        assert!(matches!(
            c.parse(2 * MAX_TARGET, IDLE),
            Parse::Refuse(Unreadable::TargetTooLong)
        ));
        assert_eq!(&c.buf[..], text.as_bytes());
    }
    // Too long, or too many fields: 431, nothing served.
    for bytes in [many.as_bytes(), over_limit.as_bytes(), long_target.as_bytes()] {
        let mut c = conn(bytes);
        assert!(matches!(c.parse(MAX, IDLE), Parse::Refuse(Unreadable::TooLarge)));
        assert_eq!(&c.buf[..], bytes);
    }
}

#[test]
fn a_body_by_one_plain_content_length_is_served_here_and_stays_in_the_buffer() {
    for (text, length) in [
        (&b"POST /u HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"[..], 5),
        (b"PUT /u HTTP/1.1\r\ncontent-length: 0005\r\n\r\nhello", 5),
        (
            b"GET /u HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\nhello",
            u64::MAX,
        ),
    ] {
        let mut c = conn(text);
        let h = head(&mut c);
        assert_eq!(h.request.body().size_hint().exact(), Some(length));
        assert_eq!(
            h.body.as_ref().map(|reading| reading.framing()),
            Some(Framing::Length(length))
        );
        assert_eq!(&c.buf[..], b"hello", "the body is left for the front to read");
    }
    // A zero length is no body at all, the field kept as the client sent it.
    let mut c = conn(b"POST /u HTTP/1.1\r\nContent-Length: 0\r\n\r\nGET");
    let h = head(&mut c);
    assert!(h.body.is_none() && h.request.body().is_end_stream());
    assert_eq!(h.request.headers()["content-length"], "0");
    assert_eq!(&c.buf[..], b"GET");
}

#[test]
fn a_chunked_body_by_one_chunked_coding_alone_is_served_here_and_stays_in_the_buffer() {
    for text in [
        &b"POST /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"[..],
        b"PUT /u HTTP/1.1\r\ntransfer-encoding: CHUNKED\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"POST /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ] {
        let mut c = conn(text);
        let h = head(&mut c);
        assert_eq!(h.request.body().size_hint().exact(), None);
        assert!(!h.request.body().is_end_stream());
        assert_eq!(
            h.body.as_ref().map(|reading| reading.framing()),
            Some(Framing::Chunked(Chunk::Size))
        );
        assert_eq!(
            &c.buf[..],
            b"5\r\nhello\r\n0\r\n\r\n",
            "the body is left for the front to read"
        );
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
        assert!(matches!(c.parse(MAX, IDLE), Parse::Partial));
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

/// What the test handler saw of one request: its method and path, and its body (or why the body failed).
type Seen = std::sync::Mutex<Vec<(String, Result<Vec<u8>, String>)>>;

/// Runs the front on one end of an in-memory connection with a handler that reads the body when `read_body` and
/// answers `"<path> <bytes read>"` (401, after a yield and without reading, otherwise), and `client` on the other
/// end; what the client returned, and what the handler saw. Every exchange here stays with the front: none is
/// handed to hyper.
async fn front_with<C, CF>(read_body: bool, client: C) -> (CF::Output, Vec<(String, Result<Vec<u8>, String>)>)
where
    C: FnOnce(tokio::io::DuplexStream) -> CF,
    CF: Future,
{
    let seen = Seen::default();
    let handle = |req: Request<Body>, _peer| {
        let seen = &seen;
        async move {
            let path = req.uri().path().to_owned();
            let request = format!("{} {path}", req.method());
            if !read_body {
                // Not at once: the front runs meanwhile, as it does while a real handler looks at a request.
                tokio::task::yield_now().await;
                seen.lock().unwrap().push((request, Ok(Vec::new())));
                return Response::builder().status(401).body(crate::body::full(path)).unwrap();
            }
            let body = req.into_body().collect().await.map(|b| b.to_bytes().to_vec());
            let answer = format!("{path} {}", body.as_ref().map_or(0, Vec::len));
            seen.lock().unwrap().push((request, body.map_err(|e| e.to_string())));
            Response::new(crate::body::full(answer))
        }
    };
    let connections =
        crate::connections::Connections::new(Duration::from_secs(60), Duration::from_secs(30), Arc::default());
    let registration = connections.register(crate::connections::Place::unbounded());
    let (mut server, client_end) = tokio::io::duplex(16 * 1024);
    let front = Front {
        handle: &handle,
        peer: SocketAddr::from(([127, 0, 0, 1], 1)),
        registration: &registration,
        header_read_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_millis(300),
        max_header_bytes: MAX,
        largest_head: MAX,
        max_requests: 0,
        refusal: &Refusal::default(),
    };
    let serving = async move {
        let ended = serve(&mut server, front).await;
        drop(server);
        ended
    };
    let (ended, out) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(serving, client(client_end))
    })
    .await
    .expect("the exchange ends");
    assert!(matches!(ended, Ended::Closed), "the connection stayed with the front");
    (out, seen.into_inner().unwrap())
}

use std::sync::Arc;
use tokio::io::{AsyncReadExt, DuplexStream};

/// Reads until the front closes the connection.
async fn rest(mut io: DuplexStream) -> String {
    let mut all = Vec::new();
    io.read_to_end(&mut all).await.unwrap();
    String::from_utf8_lossy(&all).into_owned()
}

/// Reads one answer (head and a Content-Length body) off `io`.
async fn one_answer(io: &mut DuplexStream) -> String {
    let mut text = Vec::new();
    let mut byte = [0u8; 1];
    while !text.ends_with(b"\r\n\r\n") {
        assert_eq!(
            io.read(&mut byte).await.unwrap(),
            1,
            "{}",
            String::from_utf8_lossy(&text)
        );
        text.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&text).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |n| n.parse().unwrap());
    let mut body = vec![0u8; length];
    io.read_exact(&mut body).await.unwrap();
    head + &String::from_utf8_lossy(&body)
}

/// Writes `bytes`, then reads until the front closes the connection.
async fn send_then_rest(mut io: DuplexStream, bytes: &'static [u8]) -> String {
    io.write_all(bytes).await.unwrap();
    rest(io).await
}

#[tokio::test]
async fn a_body_by_length_or_chunked_is_read_here_and_the_connection_stays_here() {
    // In two writes: a body and the next requests right behind it; none of them is handed to hyper. Chunked: with
    // an extension and a trailer field, which the reader never sees.
    // The two writes, the first body as its reader sees it, and the first answer.
    type Case = (&'static [u8], &'static [u8], &'static [u8], &'static str);
    let cases: [Case; 2] = [
        (
            b"POST /u HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\n\r\n",
            b"PUT /c HTTP/1.1\r\nContent-Length: 3\r\nConnection: close\r\n\r\nxyz",
            b"hello",
            "/u 5",
        ),
        (
            b"POST /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;name=\"v\"\r\n world\r\n\
              0\r\nX-Trailer: dropped\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
            b"PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nxyz\r\n0\r\n\r\n",
            b"hello world",
            "/u 11",
        ),
    ];
    for (first, second, body, answer) in cases {
        let (text, seen) = front_with(true, |mut io| async move {
            io.write_all(first).await.unwrap();
            io.write_all(second).await.unwrap();
            rest(io).await
        })
        .await;
        assert_eq!(
            seen,
            [
                ("POST /u".into(), Ok(body.to_vec())),
                ("GET /b".into(), Ok(Vec::new())),
                ("PUT /c".into(), Ok(b"xyz".to_vec()))
            ]
        );
        assert!(
            text.contains(&format!("\r\n\r\n{answer}"))
                && text.contains("\r\n\r\n/b 0")
                && text.ends_with("\r\n\r\n/c 3"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn a_body_trickling_in_reaches_its_reader_whole_and_in_order() {
    // 300 KiB in writes of 700 bytes, through a 16 KiB pipe: many reads, each a piece the reader takes; chunked, in
    // chunks of 1 to 4000 bytes, so that chunk lines are split across reads.
    let body: Vec<u8> = (0..300 * 1024).map(|i| (i % 251) as u8).collect();
    for chunked in [false, true] {
        let mut encoded = b"POST /big HTTP/1.1\r\nConnection: close\r\n".to_vec();
        if chunked {
            encoded.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            let (mut at, mut size) = (0, 1);
            while at < body.len() {
                let chunk = &body[at..(at + size).min(body.len())];
                encoded.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                encoded.extend_from_slice(chunk);
                encoded.extend_from_slice(b"\r\n");
                at += chunk.len();
                size = size * 7 % 4001 + 1;
            }
            encoded.extend_from_slice(b"0\r\n\r\n");
        } else {
            encoded.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            encoded.extend_from_slice(&body);
        }
        let (text, seen) = front_with(true, |mut io| async move {
            for piece in encoded.chunks(700) {
                io.write_all(piece).await.unwrap();
            }
            rest(io).await
        })
        .await;
        assert!(text.ends_with("/big 307200"), "chunked {chunked}: {text}");
        assert_eq!(seen, [("POST /big".into(), Ok(body.clone()))], "chunked {chunked}");
    }
}

#[tokio::test]
async fn an_early_answer_drops_a_small_rest_of_the_body_and_keeps_the_connection() {
    // The gate answers before reading the body (401); the client sends the rest after reading the answer. What the
    // rest says (a request, here) is never served: only the bytes after the body's end are the next request.
    let smuggled = b"GET /smuggled HTTP/1.1\r\n\r\n".repeat(700);
    let length = 100 + smuggled.len();
    let (answers, seen) = front_with(false, |mut io| async move {
        // The head and the body's start in one write: read together, the start is dropped from the buffer.
        let head = format!(
            "POST /u HTTP/1.1\r\nContent-Length: {length}\r\n\r\n{}",
            "x".repeat(100)
        );
        io.write_all(head.as_bytes()).await.unwrap();
        let first = one_answer(&mut io).await;
        io.write_all(&smuggled).await.unwrap();
        io.write_all(b"GET /next HTTP/1.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        (first, rest(io).await)
    })
    .await;
    let (first, second) = answers;
    assert!(
        first.starts_with("http/1.1 401") && !first.contains("connection: close"),
        "{first}"
    );
    assert!(
        second.starts_with("HTTP/1.1 401") && second.ends_with("/next"),
        "{second}"
    );
    let paths: Vec<_> = seen.iter().map(|(path, _)| path.as_str()).collect();
    assert_eq!(paths, ["POST /u", "GET /next"]);
}

#[tokio::test]
async fn an_early_answer_to_a_large_body_closes_after_reading_what_the_client_sends() {
    // More than the front drops to keep a connection (or chunks still to come, however many): the answer says
    // close, and the front reads the body's rest (requests inside never served) before closing, so the client's
    // writes do not fail and it reads the whole answer.
    let smuggled = b"GET /smuggled HTTP/1.1\r\n\r\n".repeat(150);
    for chunked in [false, true] {
        let smuggled = &smuggled;
        let (text, seen) = front_with(false, |mut io| async move {
            let framing = match chunked {
                true => "Transfer-Encoding: chunked".to_owned(),
                false => format!("Content-Length: {}", smuggled.len() * 256),
            };
            io.write_all(format!("POST /u HTTP/1.1\r\n{framing}\r\n\r\n").as_bytes())
                .await
                .unwrap();
            for _ in 0..256 {
                if chunked {
                    io.write_all(format!("{:x}\r\n", smuggled.len()).as_bytes())
                        .await
                        .unwrap();
                }
                io.write_all(smuggled).await.unwrap();
                if chunked {
                    io.write_all(b"\r\n").await.unwrap();
                }
            }
            if chunked {
                io.write_all(b"0\r\n\r\n").await.unwrap();
            }
            rest(io).await
        })
        .await;
        assert!(
            text.starts_with("HTTP/1.1 401") && text.contains("connection: close") && text.ends_with("/u"),
            "chunked {chunked}: {text}"
        );
        assert_eq!(seen.len(), 1, "chunked {chunked}");
    }
}

#[tokio::test]
async fn a_client_gone_in_the_middle_of_a_body_drops_its_request() {
    for partial in [
        &b"POST /u HTTP/1.1\r\nContent-Length: 10\r\n\r\nhel"[..],
        b"POST /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ] {
        let (text, seen) = front_with(true, |mut io| async move {
            io.write_all(partial).await.unwrap();
            io.shutdown().await.unwrap();
            rest(io).await
        })
        .await;
        assert_eq!(text, "", "nothing is answered");
        assert!(seen.is_empty(), "the request was dropped before it finished: {seen:?}");
    }
}

#[tokio::test]
async fn a_body_that_stops_coming_fails_as_stalled_and_its_answer_is_not_sent() {
    // Three bytes of ten (or of a chunk), then nothing, the connection left open: after `server.idle_timeout` (300
    // ms here) the body fails for its reader as stalled (which the gate answers 408 and logs), that answer is not
    // sent, and the connection is closed, as a head's trickle is cut off by the header read timeout.
    for partial in [
        &b"POST /u HTTP/1.1\r\nContent-Length: 10\r\n\r\nhel"[..],
        b"POST /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    ] {
        let started = std::time::Instant::now();
        let (text, seen) = front_with(true, |io| send_then_rest(io, partial)).await;
        assert_eq!(text, "");
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(
            matches!(&seen[0].1, Err(e) if e == "the client stopped sending the request body"),
            "{seen:?}"
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
}

#[tokio::test]
async fn a_malformed_chunked_body_fails_for_its_reader_and_closes_after_the_answer() {
    // Each malformed the way the own client's decoder refuses; what follows is never served.
    for malformed in [
        &b"5\r\nhello\r\nZZ\r\nxx\r\n0\r\n\r\n"[..],
        b"5\r\nhello\r\nFFFFFFFFFFFFFFFFF\r\nxx\r\n0\r\n\r\n",
        b"5\r\nhello\r\n3\r\nhello\r\n0\r\n\r\n",
        b"5\nhello\n0\n\n",
        b"-1\r\nx\r\n0\r\n\r\n",
    ] {
        let (text, seen) = front_with(true, |io| async move {
            let mut bytes = b"POST /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            bytes.extend_from_slice(malformed);
            bytes.extend_from_slice(b"GET /smuggled HTTP/1.1\r\n\r\n");
            let mut io = io;
            io.write_all(&bytes).await.unwrap();
            rest(io).await
        })
        .await;
        let shown = String::from_utf8_lossy(malformed);
        assert_eq!(seen.len(), 1, "{shown}: {seen:?}");
        assert!(
            matches!(&seen[0].1, Err(e) if e.contains("chunked framing is malformed")),
            "{shown}: {seen:?}"
        );
        assert!(
            text.contains("connection: close") && !text.contains("smuggled"),
            "{shown}: {text}"
        );
    }
}

#[tokio::test]
async fn a_client_still_sending_after_a_malformed_chunked_body_can_finish_and_read_the_answer() {
    // Lingering close: the front reads and drops what follows a malformed body until the client closes, so a client
    // still writing (here 1 MiB, far more than the 16 KiB pipe holds) finishes instead of failing on a closed
    // connection, and then reads its answer. Found malformed by the body's reader, and (the answer first, the body
    // unread) when the front drops what is buffered of it.
    for read_body in [true, false] {
        let (text, seen) = front_with(read_body, |mut io| async move {
            io.write_all(b"POST /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n")
                .await
                .unwrap();
            let junk = vec![b'x'; 1024 * 1024];
            io.write_all(&junk)
                .await
                .expect("the front reads what the client still sends");
            io.shutdown().await.unwrap();
            rest(io).await
        })
        .await;
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(text.contains("connection: close"), "{read_body}: {text}");
    }
    // Malformed only in what comes after the answer, while the front reads the unwanted rest to its end: it then
    // drops bytes until the client closes.
    let (text, seen) = front_with(false, |mut io| async move {
        io.write_all(b"POST /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            .await
            .unwrap();
        let answer = one_answer(&mut io).await;
        io.write_all(b"ZZ\r\n").await.unwrap();
        let junk = vec![b'x'; 1024 * 1024];
        io.write_all(&junk)
            .await
            .expect("the front reads what the client still sends");
        io.shutdown().await.unwrap();
        answer + &rest(io).await
    })
    .await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(text.contains("connection: close"), "{text}");
}

#[tokio::test]
async fn an_early_answer_to_a_chunked_body_whose_end_is_already_here_keeps_the_connection() {
    // The whole body came with the head: dropped from the buffer, and the next request served (chunks still to
    // come close the connection: `an_early_answer_to_a_large_body_closes_after_reading_what_the_client_sends`).
    let (text, seen) = front_with(false, |io| {
        send_then_rest(
            io,
            b"POST /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
              GET /next HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
    })
    .await;
    assert!(
        text.starts_with("HTTP/1.1 401") && text.ends_with("/next") && text.matches("connection: close").count() == 1,
        "{text}"
    );
    assert_eq!(seen.len(), 2);
}

/// A stream that takes every write and passes it on only when flushed, as a TLS stream does with what the socket
/// cannot take yet (tokio-rustls keeps it in the session until the next write or a flush).
struct HeldUntilFlushed {
    inner: DuplexStream,
    held: Vec<u8>,
}

impl AsyncRead for HeldUntilFlushed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for HeldUntilFlushed {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut std::task::Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.held.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while !this.held.is_empty() {
            let n = std::task::ready!(Pin::new(&mut this.inner).poll_write(cx, &this.held))?;
            this.held.drain(..n);
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn answers_and_the_parts_of_a_streamed_one_are_flushed_before_the_front_waits() {
    // The first answer is whole; the second streams a part, then waits until the client has read that part. Over a
    // stream that holds writes until flushed, the client sees neither unless the front flushes before it waits (for
    // the next request, for the body's next part).
    let (part_read, wait_for_read) = tokio::sync::oneshot::channel::<()>();
    let wait_for_read = std::sync::Mutex::new(Some(wait_for_read));
    let handle = |req: Request<Body>, _peer| {
        let streamed = (req.uri().path() == "/stream")
            .then(|| wait_for_read.lock().unwrap().take())
            .flatten();
        async move {
            let Some(read) = streamed else {
                return Response::new(crate::body::full("whole"));
            };
            let parts = futures_util::stream::unfold((0, Some(read)), |(n, read)| async move {
                match n {
                    0 => Some((
                        Ok::<_, crate::body::BoxError>(http_body::Frame::data(Bytes::from_static(b"first"))),
                        (1, read),
                    )),
                    1 => {
                        let _ = read?.await;
                        Some((Ok(http_body::Frame::data(Bytes::from_static(b"second"))), (2, None)))
                    }
                    _ => None,
                }
            });
            Response::new(Body::Boxed(StreamBody::new(Box::pin(parts)).boxed()))
        }
    };
    let connections =
        crate::connections::Connections::new(Duration::from_secs(60), Duration::from_secs(30), Arc::default());
    let registration = connections.register(crate::connections::Place::unbounded());
    let (server, mut client) = tokio::io::duplex(64 * 1024);
    let mut server = HeldUntilFlushed {
        inner: server,
        held: Vec::new(),
    };
    let front = Front {
        handle: &handle,
        peer: SocketAddr::from(([127, 0, 0, 1], 1)),
        registration: &registration,
        header_read_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        max_header_bytes: MAX,
        largest_head: MAX,
        max_requests: 0,
        refusal: &Refusal::default(),
    };
    let serving = async move { serve(&mut server, front).await };
    let talking = async move {
        client.write_all(b"GET /whole HTTP/1.1\r\n\r\n").await.unwrap();
        let whole = one_answer(&mut client).await;
        assert!(whole.ends_with("whole"), "{whole}");
        client
            .write_all(b"GET /stream HTTP/1.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains("first") {
            let mut chunk = [0u8; 1024];
            let n = client.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            seen.extend_from_slice(&chunk[..n]);
        }
        part_read.send(()).unwrap();
        seen.extend(rest(client).await.into_bytes());
        String::from_utf8_lossy(&seen).into_owned()
    };
    let (_, streamed) = tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(serving, talking) })
        .await
        .expect("every answer reached the client without the client asking again");
    assert!(streamed.contains("first") && streamed.contains("second"), "{streamed}");
}

#[tokio::test]
async fn a_client_that_expects_100_continue_is_told_once_the_body_is_wanted() {
    // RFC 9110 §10.1.1: the client sends the head alone and waits; the front says `100 Continue` when the handler
    // asks for the body, reads it, answers, and the connection goes on.
    let (text, seen) = front_with(true, |mut io| async move {
        io.write_all(b"POST /u HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
            .await
            .unwrap();
        let mut interim = [0u8; CONTINUE.len()];
        io.read_exact(&mut interim).await.unwrap();
        assert_eq!(&interim[..], CONTINUE);
        io.write_all(b"hello").await.unwrap();
        let first = one_answer(&mut io).await;
        io.write_all(b"GET /b HTTP/1.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        first + &rest(io).await
    })
    .await;
    assert!(
        text.starts_with("http/1.1 200") && text.contains("/u 5") && text.ends_with("/b 0"),
        "{text}"
    );
    assert_eq!(seen[0], ("POST /u".into(), Ok(b"hello".to_vec())));
}

#[tokio::test]
async fn a_request_refused_before_its_body_is_wanted_is_never_told_to_continue() {
    // The handler answers without reading: no `100 Continue`, and since the client may then never send its body,
    // the connection closes after the answer.
    let (text, _) = front_with(false, |mut io| async move {
        io.write_all(b"POST /u HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
            .await
            .unwrap();
        let answer = one_answer(&mut io).await;
        io.shutdown().await.unwrap();
        answer + &rest(io).await
    })
    .await;
    assert!(
        text.starts_with("http/1.1 401") && text.contains("connection: close"),
        "{text}"
    );
    assert!(!text.contains(" 100 "), "{text}");
}

#[tokio::test]
async fn a_client_that_sends_its_body_without_waiting_is_not_told_to_continue() {
    let (text, seen) = front_with(true, |io| {
        send_then_rest(
            io,
            b"POST /u HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\nhello",
        )
    })
    .await;
    assert!(text.starts_with("HTTP/1.1 200") && text.ends_with("/u 5"), "{text}");
    assert_eq!(seen, [("POST /u".into(), Ok(b"hello".to_vec()))]);
}
