use super::*;
use crate::http1::body::{chunk_step, Step, MAX_CHUNK_LINE, MAX_TRAILERS};
use crate::proxy::Added;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn parse(text: &str, head_only: bool) -> Result<Head, String> {
    let mut buf = BytesMut::from(text);
    match parse_response(&mut buf, &mut Scratch::default(), head_only, &[REQUEST_ID])? {
        Parsed::Head(head) => Ok(head),
        Parsed::Interim => Err("interim".into()),
        Parsed::Partial => Err("partial".into()),
    }
}

#[test]
fn fields_go_into_a_map_before_the_gates_own_and_the_upstreams_request_id_is_left_out() {
    let h = parse(
        "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-Request-Id: upstream\r\nVary: x\r\nSet-Cookie: b=2\r\n\
         Content-Length: 0\r\n\r\n",
        false,
    )
    .unwrap();
    let mut gate = HeaderMap::new();
    gate.append(header::SET_COOKIE, HeaderValue::from_static("session=s"));
    gate.insert(REQUEST_ID, HeaderValue::from_static("gate"));
    let map = h.fields.into_map(gate);
    let cookies: Vec<_> = map.get_all(header::SET_COOKIE).iter().collect();
    assert_eq!(cookies, ["a=1", "b=2", "session=s"]);
    assert_eq!(map.get_all(REQUEST_ID).iter().collect::<Vec<_>>(), ["gate"]);
    assert_eq!(map["vary"], "x");
    assert_eq!(map["content-length"], "0");
    assert_eq!(map.len(), 6);
    // What is passed on as read can hold nothing `HeaderValue` refuses: controls, DEL and lone CRs are refused.
    for value in ["a\u{1}b", "a\u{7f}b", "a\rb", "a\u{0}b"] {
        assert!(
            parse(&format!("HTTP/1.1 200 OK\r\nX: {value}\r\n\r\n"), false).is_err(),
            "{value:?}"
        );
    }
    let h = parse("HTTP/1.1 200 OK\r\nX: tab\there, obs-text \u{e9}\r\n\r\n", false).unwrap();
    assert_eq!(
        h.fields.into_map(HeaderMap::new()).len(),
        1,
        "every value read converts"
    );
}

/// Decodes a whole chunked body from `wire`, returning the data and what is left over.
fn dechunk(wire: &[u8]) -> Result<(Vec<u8>, usize), String> {
    let mut buf = BytesMut::from(wire);
    let mut state = Chunk::Size;
    let mut out = Vec::new();
    loop {
        if state == Chunk::End {
            return Ok((out, buf.len()));
        }
        match chunk_step(&mut state, &mut buf)? {
            Step::Data(d) => out.extend_from_slice(&d),
            Step::Next => {}
            Step::NeedMore => return Err("needs more".into()),
        }
    }
}

#[test]
fn a_connections_field_names_are_reused_only_when_sent_the_same() {
    let mut scratch = Scratch::default();
    let mut read = |text: &str| {
        let mut buf = BytesMut::from(text);
        match parse_response(&mut buf, &mut scratch, false, &[REQUEST_ID]) {
            Ok(Parsed::Head(head)) => Ok(head
                .fields
                .iter()
                .map(|(n, _)| n.as_str().to_owned())
                .collect::<Vec<_>>()),
            Ok(_) => Err("not a final head".to_owned()),
            Err(e) => Err(e),
        }
    };
    let long = "x-".to_owned() + &"a".repeat(40);
    let first = format!("HTTP/1.1 200 OK\r\nContent-Type: a\r\nX-Custom: b\r\n{long}: c\r\nContent-Length: 0\r\n\r\n");
    let expected = ["content-type", "x-custom", long.as_str(), "content-length"];
    // The same head twice: the second is read from the kept names.
    assert_eq!(read(&first).unwrap(), expected);
    assert_eq!(read(&first).unwrap(), expected);
    // Other names (or the same in other letters, or shorter) at the same places are read afresh.
    let other = "HTTP/1.1 200 OK\r\ncontent-TYPE: a\r\nX-Custon: b\r\nX: c\r\nContent-Length: 0\r\nVary: d\r\n\r\n";
    assert_eq!(
        read(other).unwrap(),
        ["content-type", "x-custon", "x", "content-length", "vary"]
    );
    // An invalid name is refused wherever it stands, and is not kept.
    assert!(read("HTTP/1.1 200 OK\r\nContent-Type: a\r\nX\u{7f}: b\r\n\r\n").is_err());
    assert_eq!(
        read(other).unwrap(),
        ["content-type", "x-custon", "x", "content-length", "vary"]
    );
}

#[test]
fn hop_by_hop_fields_are_read_but_not_passed_on() {
    let h = parse(
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\n\
         X-Hop: 1\r\nUpgrade: h2c\r\nTrailer: x\r\nProxy-Authenticate: Basic\r\nX-End: 2\r\n\r\n",
        false,
    )
    .unwrap();
    assert_eq!(h.framing, Framing::Length(5));
    assert!(h.keep_alive);
    let names: Vec<&str> = h.fields.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["content-length", "x-end"]);
    let h = parse(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: Close\r\n\r\n",
        false,
    )
    .unwrap();
    assert_eq!(h.framing, Framing::Chunked(Chunk::Size));
    assert!(!h.keep_alive, "close in any case");
    assert!(h.fields.is_empty(), "{:?}", h.fields);
    // A Connection option naming the length does not unframe the body: the length is read first, then the
    // field is left out of what is passed on (and the client side frames the body itself).
    let h = parse(
        "HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 3\r\n\r\n",
        false,
    )
    .unwrap();
    assert_eq!(h.framing, Framing::Length(3));
    assert!(h.keep_alive);
    assert!(h.fields.is_empty());
    // Two Transfer-Encoding fields, even both chunked, are not "chunked alone".
    assert!(parse(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        false
    )
    .is_err());
    assert!(parse(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
        false
    )
    .is_err());
}

#[test]
fn heads_are_framed_as_rfc_9112_section_6_3_says() {
    let h = parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello", false).unwrap();
    assert_eq!(h.framing, Framing::Length(5));
    assert!(h.keep_alive);
    assert_eq!(
        h.fields.iter().collect::<Vec<_>>(),
        [
            (&header::CONTENT_LENGTH, &b"5"[..]),
            (&HeaderName::from_static("x-a"), &b"1"[..])
        ]
    );
    let h = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false).unwrap();
    assert_eq!(h.framing, Framing::Chunked(Chunk::Size));
    let h = parse("HTTP/1.1 200 OK\r\n\r\n", false).unwrap();
    assert_eq!(h.framing, Framing::Close);
    assert!(!h.keep_alive, "a close-delimited body ends the connection");
    let h = parse(
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
        false,
    )
    .unwrap();
    assert!(!h.keep_alive);
    let h = parse("HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n", false).unwrap();
    assert!(!h.keep_alive, "HTTP/1.0");
    // No body after HEAD, 204 and 304 whatever the head says.
    assert_eq!(
        parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)
            .unwrap()
            .framing,
        Framing::Done
    );
    assert_eq!(
        parse("HTTP/1.1 204 No Content\r\n\r\n", false).unwrap().framing,
        Framing::Done
    );
    assert_eq!(
        parse("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", false)
            .unwrap()
            .framing,
        Framing::Done
    );
    // Repeated copies of one length are one length.
    let h = parse(
        "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n",
        false,
    )
    .unwrap();
    assert_eq!(h.framing, Framing::Length(5));
    assert_eq!(
        parse("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false)
            .unwrap()
            .framing,
        Framing::Done
    );
}

#[test]
fn ambiguous_or_unsupported_framing_is_refused() {
    for head in [
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\n\r\n",
        "HTTP/1.1 999999 OK\r\n\r\n",
        "HTTP/2 200 OK\r\n\r\n",
    ] {
        let result = parse(head, false);
        assert!(
            result.is_err() && result.as_ref().err().map(String::as_str) != Some("partial"),
            "{head:?}"
        );
    }
}

#[test]
fn interim_responses_are_skipped_and_partial_heads_wait() {
    let mut buf =
        BytesMut::from("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert!(matches!(
        parse_response(&mut buf, &mut Scratch::default(), false, &[REQUEST_ID]),
        Ok(Parsed::Interim)
    ));
    assert!(matches!(
        parse_response(&mut buf, &mut Scratch::default(), false, &[REQUEST_ID]),
        Ok(Parsed::Head(_))
    ));
    assert!(buf.is_empty());
    let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Len");
    assert!(matches!(
        parse_response(&mut buf, &mut Scratch::default(), false, &[REQUEST_ID]),
        Ok(Parsed::Partial)
    ));
    let mut many = String::from("HTTP/1.1 200 OK\r\n");
    for i in 0..=MAX_HEADERS {
        many.push_str(&format!("x-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert!(parse(&many, false).unwrap_err().contains("more than 100"));
}

#[test]
fn chunked_bodies_decode_with_extensions_and_trailers_dropped() {
    let (data, left) = dechunk(b"5\r\nhello\r\n6;name=\"v\"\r\n world\r\n0\r\n\r\n").unwrap();
    assert_eq!(data, b"hello world");
    assert_eq!(left, 0);
    let (data, _) = dechunk(b"A \t;x\r\n0123456789\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n").unwrap();
    assert_eq!(data, b"0123456789");
    // Bytes after the message stay in the buffer (and keep the connection out of the pool).
    let (_, left) = dechunk(b"0\r\n\r\nHTTP/1.1").unwrap();
    assert_eq!(left, 8);
    assert_eq!(dechunk(b"fffffffffffffffe\r\n").unwrap_err(), "needs more");
}

#[test]
fn malformed_chunking_is_an_error_not_a_guess() {
    for wire in [
        &b"5\nhello\r\n0\r\n\r\n"[..],
        b"5\r\nhelloX\r\n0\r\n\r\n",
        b"-5\r\nhello\r\n0\r\n\r\n",
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b"5 6\r\nhello\r\n0\r\n\r\n",
        b"\r\n",
        b"10000000000000000\r\n",
        b"5\r\nhello\r\n0\r\nX: 1\n\r\n",
        b"5;a\0b\r\nhello\r\n0\r\n\r\n",
    ] {
        assert!(
            dechunk(wire).is_err_and(|e| e != "needs more"),
            "{:?}",
            String::from_utf8_lossy(wire)
        );
    }
    let long = format!("5;{}\r\n", "x".repeat(MAX_CHUNK_LINE));
    assert!(dechunk(long.as_bytes()).unwrap_err().contains("too long"));
    let trailers = format!("0\r\n{}", "x: y\r\n".repeat(MAX_TRAILERS / 6 + 2));
    assert!(dechunk(trailers.as_bytes()).unwrap_err().contains("too long"));
}

#[test]
fn request_heads_are_written_as_rfc_9112_section_3() {
    let mut headers = HeaderMap::new();
    headers.insert(header::HOST, HeaderValue::from_static("app:8080"));
    headers.append("x-a", HeaderValue::from_static("1"));
    headers.append("x-a", HeaderValue::from_static("2"));
    let mut buf = BytesMut::new();
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), "alice".into());
    let mapping = [(
        http::HeaderName::from_static("x-user"),
        crate::identity::ClaimPath::parse("sub").unwrap(),
    )];
    let identity = crate::identity::IdentityHeaders::render(&mapping, &claims);
    let added = Added {
        forwarded: None,
        identity: Some(&identity),
    };
    let request = Request {
        method: &Method::GET,
        base_path: "/base",
        path_and_query: "/p?q=1",
        headers: &headers,
        added: &added,
    };
    encode_request(&mut buf, &request);
    assert_eq!(
        &buf[..],
        b"GET /base/p?q=1 HTTP/1.1\r\nhost: app:8080\r\nx-a: 1\r\nx-a: 2\r\nx-user: alice\r\n\r\n"
    );
}

#[tokio::test]
async fn pooled_connections_expire_and_closed_ones_are_not_handed_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = Client::new(
        Dial::Tcp(listener.local_addr().unwrap().to_string()),
        Duration::from_secs(1),
        Duration::from_secs(90),
        1,
        &[REQUEST_ID],
    );
    let pool = Arc::clone(&client.pools[0]);
    let start = Instant::now();
    let conn = client.connect().await.unwrap();
    let _server_side = listener.accept().await.unwrap();
    Arc::clone(&pool).put(conn, start);
    assert!(pool.take(start + Duration::from_secs(89)).is_some(), "still fresh");
    let conn = client.connect().await.unwrap();
    let _accepted = listener.accept().await.unwrap();
    Arc::clone(&pool).put(conn, start);
    assert!(
        pool.take(start + Duration::from_secs(90)).is_none(),
        "idle for the whole timeout"
    );
    assert!(pool.idle_len() == 0, "and closed, not kept");
    // One the upstream has closed is not handed out, once its end has arrived.
    let conn = client.connect().await.unwrap();
    let (closing, _) = listener.accept().await.unwrap();
    drop(closing);
    conn.io.readable().await.unwrap();
    Arc::clone(&pool).put(conn, start);
    assert!(pool.take(start).is_none());
}

#[test]
fn only_bodiless_gets_and_heads_take_this_client() {
    assert!(Client::handles(&Method::GET, false));
    assert!(Client::handles(&Method::HEAD, false));
    assert!(!Client::handles(&Method::GET, true));
    assert!(!Client::handles(&Method::POST, false));
    assert!(!Client::handles(&Method::DELETE, false));
}
