//! Clients that stall on purpose, over real sockets: one that stops reading its answer, an HTTP/2 one that never
//! answers the PING of a GOAWAY, and HTTP/2 header blocks trickled in. Each would hold its connection (and, for an
//! answer, the app's) for good; each is closed, and clients that are slow but keep going are not.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// Far more than the kernel's socket buffers and the gate's hold between the app and a client that reads nothing.
const LARGE: usize = 64 << 20;

/// A gate with `server_lines` in `[server]` in front of the test upstream, `/download` and `/slow` public.
async fn gate_with(server_lines: &'static str) -> (Idp, Upstream, TestGate) {
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let rules =
        "[[rules]]\nprefix = \"/download\"\nallow = \"public\"\n[[rules]]\nprefix = \"/slow\"\nallow = \"public\"\n";
    let gate = TestGate::start_edited(&idp, &upstream.url(), "", rules, in_server(server_lines)).await;
    (idp, upstream, gate)
}

/// A connection to the gate that takes in little at a time (a small receive buffer).
async fn narrow_connection(port: u16) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(([127, 0, 0, 1], port).into()).await.unwrap()
}

/// Everything the connection still delivers until the gate closes it; `None` if it stays open for `within`.
async fn rest_until_closed(stream: &mut TcpStream, within: Duration) -> Option<usize> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    let reading = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    };
    tokio::time::timeout(within, reading).await.ok()
}

#[tokio::test]
async fn a_client_that_stops_reading_its_answer_is_closed() {
    let (_idp, _upstream, gate) = gate_with("idle_timeout = \"1s\"").await;
    // On the HTTP/1.1 front, and on hyper's server (HTTP/1.0 is handed over to it).
    for version in ["1.1", "1.0"] {
        let mut stalled = narrow_connection(gate.port).await;
        let head = format!("GET /download?bytes={LARGE} HTTP/{version}\r\nHost: x\r\n\r\n");
        stalled.write_all(head.as_bytes()).await.unwrap();
        // Reads nothing for four idle timeouts: told to finish after one, closed after the next.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let got = rest_until_closed(&mut stalled, Duration::from_secs(30)).await;
        let got = got.unwrap_or_else(|| panic!("HTTP/{version}: the connection stayed open"));
        assert!(
            got < LARGE / 2,
            "HTTP/{version}: the whole answer came ({got} bytes): never cut off"
        );
    }

    // A client that reads slowly but keeps reading gets its whole answer, over several idle timeouts. (It must take
    // in enough for the gate to write again within each: the kernel wakes a writer only once a third of its socket's
    // send buffer is free, as nginx's `send_timeout` also counts.)
    let mut slow = TcpStream::connect(("127.0.0.1", gate.port)).await.unwrap();
    let size = 12 << 20;
    let head = format!("GET /download?bytes={size} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    slow.write_all(head.as_bytes()).await.unwrap();
    let mut got = 0;
    let mut buf = vec![0u8; 256 << 10];
    let started = tokio::time::Instant::now();
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut buf))
            .await
            .expect("the slow reader's answer stopped coming")
            .unwrap();
        if n == 0 {
            break;
        }
        got += n;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(got > size, "the slow reader got {got} bytes of a {size}-byte body");
    assert!(
        started.elapsed() > Duration::from_secs(2),
        "not slow enough to test anything"
    );
}

/// A request waiting for its answer keeps its connection, however quiet: the app's `response_timeout` is its bound.
#[tokio::test]
async fn an_app_slower_than_twice_the_idle_timeout_is_still_waited_for() {
    let (_idp, upstream, gate) = gate_with("idle_timeout = \"1s\"").await;
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    for (client, what) in [(plain(), "HTTP/1.1"), (h2, "HTTP/2")] {
        let resp = client
            .get(format!("{}/slow?ms=4000", gate.url()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(resp.status(), reqwest::StatusCode::OK, "{what}");
    }
    assert_eq!(upstream.count(), 2);
}

/// An HTTP/2 frame (RFC 9113 §4.1).
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SETTINGS: u8 = 0x4;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

/// A request's header block in HPACK (RFC 7541): `GET`, `http`, `path`, `:authority` and `extra` more literal
/// fields, none indexed.
fn request_block(path: &str, extra: usize) -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x04, u8::try_from(path.len()).unwrap()];
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x01, 1, b'x']);
    for _ in 0..extra {
        block.extend_from_slice(&[0x00, 3, b'x', b'-', b'a', 1, b'b']);
    }
    block
}

/// Opens an HTTP/2 connection by prior knowledge, settings sent and acknowledged.
async fn h2_raw(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let hello = [PREFACE, &frame(SETTINGS, 0, 0, &[]), &frame(SETTINGS, ACK, 0, &[])].concat();
    stream.write_all(&hello).await.unwrap();
    stream
}

/// Reads frames until one of `kind` has come; the frame types seen on the way. `None` if the connection ends first.
async fn frames_until(stream: &mut TcpStream, kind: u8) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    loop {
        let mut header = [0u8; 9];
        stream.read_exact(&mut header).await.ok()?;
        let len = usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await.ok()?;
        seen.push(header[3]);
        if header[3] == kind {
            return Some(seen);
        }
    }
}

#[tokio::test]
async fn an_http2_client_that_never_answers_the_goaway_ping_is_closed() {
    let (_idp, _upstream, gate) = gate_with("idle_timeout = \"1s\"").await;
    // Idle: told to finish with a GOAWAY and a PING it never answers.
    let mut silent = h2_raw(gate.port).await;
    let seen = tokio::time::timeout(Duration::from_secs(10), frames_until(&mut silent, GOAWAY))
        .await
        .expect("no GOAWAY after the idle timeout")
        .expect("closed before its GOAWAY");
    assert!(seen.contains(&SETTINGS), "{seen:?}");
    let rest = rest_until_closed(&mut silent, Duration::from_secs(10)).await;
    assert!(rest.is_some(), "the connection stayed open after its unanswered GOAWAY");

    // The same with a stream whose answer it stopped taking (it never opens its flow-control window).
    let mut stalled = h2_raw(gate.port).await;
    let block = request_block(&format!("/download?bytes={LARGE}"), 0);
    stalled
        .write_all(&frame(HEADERS, END_STREAM | END_HEADERS, 1, &block))
        .await
        .unwrap();
    let rest = rest_until_closed(&mut stalled, Duration::from_secs(15)).await;
    let rest = rest.expect("the connection with a stalled stream stayed open");
    assert!(rest < LARGE / 2, "{rest} bytes came");
}

#[tokio::test]
async fn an_http2_header_block_that_does_not_arrive_in_time_closes_its_connection() {
    // The idle timeout is far off: only the header read timeout can end these.
    let (_idp, upstream, gate) = gate_with("header_read_timeout = \"1s\"\nidle_timeout = \"60s\"").await;

    // A HEADERS frame without END_HEADERS, and no CONTINUATION ever.
    let mut open = h2_raw(gate.port).await;
    open.write_all(&frame(HEADERS, END_STREAM, 1, &request_block("/slow", 0)))
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    assert!(
        rest_until_closed(&mut open, Duration::from_secs(20)).await.is_some(),
        "an unfinished header block kept its connection open"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());

    // A whole header block trickled in a byte every 100 ms (bytes keep moving): closed before it is complete.
    let mut trickled = h2_raw(gate.port).await;
    let block = frame(HEADERS, END_STREAM | END_HEADERS, 1, &request_block("/slow", 40));
    let started = tokio::time::Instant::now();
    let mut sent = 0;
    for byte in &block {
        if trickled.write_all(&[*byte]).await.is_err() {
            break;
        }
        sent += 1;
        let mut probe = [0u8; 1024];
        // Waits 100 ms between bytes, and sees the close when it comes (the server's SETTINGS come first).
        match tokio::time::timeout(Duration::from_millis(100), trickled.read(&mut probe)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            _ => {}
        }
    }
    assert!(sent < block.len(), "the whole trickled block was taken ({sent} bytes)");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert_eq!(upstream.count(), 0);

    // A block that comes whole, and one split over frames sent together, are served as ever.
    let mut ok = h2_raw(gate.port).await;
    let block = request_block("/slow?ms=0", 3);
    let (first, second) = block.split_at(5);
    let split = [
        frame(HEADERS, END_STREAM, 1, first),
        frame(CONTINUATION, END_HEADERS, 1, second),
    ]
    .concat();
    ok.write_all(&split).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), frames_until(&mut ok, HEADERS))
        .await
        .expect("no answer")
        .expect("closed before its answer");
    assert!(!seen.contains(&GOAWAY), "{seen:?}");
    assert_eq!(upstream.count(), 1);
}
