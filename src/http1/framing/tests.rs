use super::*;

/// Feeds `stream` in pieces of `size` bytes; returns what the scanner found and how many heads it saw.
fn scan(stream: &[u8], size: usize) -> (Option<(u64, Ambiguity)>, u64, State) {
    let mut s = Scanner::new(64 * 1024);
    let mut found = None;
    for piece in stream.chunks(size) {
        if s.is_done() {
            break;
        }
        if let Some(f) = s.feed(piece) {
            found = Some(f);
        }
    }
    (found, s.heads, s.state)
}

/// Every split of the stream gives the same answer as reading it whole.
fn scan_all_splits(stream: &[u8]) -> (Option<(u64, Ambiguity)>, u64, State) {
    let whole = scan(stream, stream.len());
    for size in 1..stream.len() {
        assert_eq!(scan(stream, size), whole, "read in pieces of {size}");
    }
    whole
}

#[test]
fn follows_keep_alive_requests_with_length_and_chunked_bodies() {
    let stream = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
GET /b HTTP/1.1\r\nHost: x\r\n\r\n\
POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
5;ext=1\r\nhello\r\n3 \r\nabc\r\n0\r\nTrailer: yes\r\n\r\n\
\r\nGET /d HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(scan_all_splits(stream), (None, 4, State::Head));
}

#[test]
fn flags_length_and_transfer_encoding_in_either_order() {
    for head in [
        "POST / HTTP/1.1\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\ncontent-length: 40\r\n\r\n",
        "POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\nContent-Length: 40\r\n\r\n",
    ] {
        let stream = format!("GET /first HTTP/1.1\r\n\r\n{head}0\r\n\r\nGET /admin HTTP/1.1\r\n\r\n");
        let (found, _, state) = scan_all_splits(stream.as_bytes());
        assert_eq!(found, Some((2, Ambiguity::LengthAndTransferEncoding)), "{head}");
        assert_eq!(state, State::Done);
    }
}

#[test]
fn flags_repeated_content_length_even_when_equal() {
    let head = "GET / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc";
    assert_eq!(
        scan_all_splits(head.as_bytes()).0,
        Some((2, Ambiguity::RepeatedContentLength))
    );
}

#[test]
fn a_chunked_body_hides_no_head_from_the_scanner() {
    // The smuggled-looking text is chunk data, not a head; the real second head comes after the body.
    let data = "GET /admin HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let stream = format!(
        "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{data}\r\n0\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
        data.len()
    );
    assert_eq!(scan_all_splits(stream.as_bytes()), (None, 2, State::Head));
}

#[test]
fn stops_on_what_hyper_refuses_or_does_not_speak() {
    for stream in [
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        let (found, _, state) = scan_all_splits(stream);
        assert_eq!(
            (found, state),
            (None, State::Done),
            "{}",
            String::from_utf8_lossy(stream)
        );
    }
}

#[test]
fn an_oversized_head_stops_the_scanner_without_holding_it() {
    let mut s = Scanner::new(1024);
    assert_eq!(s.feed(b"GET / HTTP/1.1\r\nX: "), None);
    for _ in 0..100 {
        let _ = s.feed(&[b'a'; 64]);
    }
    assert!(s.is_done());
    assert_eq!(s.pending.capacity(), 0);
}

#[test]
fn the_usual_head_is_read_quickly_and_framing_lines_are_parsed_in_full() {
    let cookie = format!("Cookie: logto_gate={}\r\n", "a".repeat(3000));
    let usual = format!("\r\nGET /x?y=1 HTTP/1.1\r\nHost: x\r\n{cookie}Accept: */*\r\n\r\nGET /next");
    assert_eq!(
        quick_head(usual.as_bytes()),
        Quick::Bodiless(usual.len() - "GET /next".len())
    );
    assert_eq!(quick_head(b"GET / HTTP/1.0\nX-Y: z\n\n"), Quick::Bodiless(23));
    for incomplete in [
        "GET / HT",
        "GET / HTTP/1.1\r\nHost: x\r\n",
        "\r\nGET / HTTP/1.1\r\nX-Bad: \x01",
    ] {
        assert_eq!(quick_head(incomplete.as_bytes()), Quick::Incomplete, "{incomplete:?}");
    }
    for head in [
        "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        "POST / HTTP/1.1\r\nX: y\r\nTRANSFER-encoding: chunked\r\n\r\n",
        "GET / HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: 0\r\nHost: x\r\n", // not complete yet
        "\u{1}\u{2}",                                         // no method
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "GET / HTTP/1.1\r\n Host: x\r\n\r\n", // obs-fold
        "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        "\rGET / HTTP/1.1\r\n\r\n",
    ] {
        assert_eq!(quick_head(head.as_bytes()), Quick::Full, "{head:?}");
    }
}

#[test]
fn a_head_with_an_invalid_value_reads_the_same_however_it_arrives() {
    // hyper refuses the first head (and closes); whatever the scanner makes of it, reads must not change it.
    let stream = b"GET / HTTP/1.1\r\nX: \x0b\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na";
    scan_all_splits(stream);
}

#[test]
fn the_quick_reading_agrees_with_the_full_parse_from_every_line_start() {
    let streams: &[&[u8]] = &[
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\r\n\nGET / HTTP/1.1\nX: \x80\xff obs-text\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: \x00\r\n\r\n",
        b"GET / HTTP/1.1\r\r\nX: y\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: y\r\r\n\r\n",
        b"GET  HTTP/1.1\r\n\r\n",
        b"G\x01T / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\n:x\r\n\r\n",
        b"GET / HTTP/1.1\r\nX:\r\n\n",
        b"\r\r\nGET / HTTP/1.1\r\n\r\n",
        b"\n\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    ];
    let many_fields = format!("GET / HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(MAX_HEADERS + 1));
    for stream in streams.iter().copied().chain([many_fields.as_bytes()]) {
        for start in 0..stream.len() {
            for end in start..=stream.len() {
                let bytes = &stream[start..end];
                assert!(quick_reading_agrees(bytes), "{:?}", String::from_utf8_lossy(bytes));
            }
        }
    }
}

#[test]
fn the_watch_matches_the_flagged_position_only() {
    let watch = Watch::default();
    watch.0.flagged.store(2 * 4 + 1, Ordering::Release);
    assert_eq!(watch.next_request(), None);
    assert_eq!(watch.next_request(), Some(Ambiguity::LengthAndTransferEncoding));
    assert_eq!(watch.next_request(), None);
}
