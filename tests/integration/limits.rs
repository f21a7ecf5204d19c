//! The server's limits over real sockets: oversized heads and cookies get 431, slow and idle clients are cut off.

use std::time::Duration;

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// A head too large to read is answered as the gate answers any request it refuses: a page, a request id the person
/// can quote, `[response_headers]`, and a count in the requests metric (its access line: the JSON log test).
#[tokio::test]
async fn oversized_cookies_are_refused_with_431() {
    let metrics_port = free_port();
    let line: &'static str = Box::leak(format!("metrics_listen = \"127.0.0.1:{metrics_port}\"").into_boxed_str());
    let s = Stack::edited(IdpOptions::default(), "", "", |t| {
        format!(
            "{}\n[response_headers]\nStrict-Transport-Security = \"max-age=60\"\n",
            in_server(line)(t)
        )
    })
    .await;
    let huge = format!("logto_gate={}", "A".repeat(70_000));
    let resp = plain()
        .get(format!("{}/x", s.gate.url()))
        .header("cookie", &huge)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // A page that says what to do (a browser otherwise shows only the number), hardened as the gate's pages are.
    assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    assert_eq!(resp.headers()["connection"], "close");
    assert!(resp.headers().contains_key("date"));
    assert_eq!(resp.headers()["strict-transport-security"], "max-age=60");
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    let page = resp.text().await.unwrap();
    assert!(
        page.contains("Clear this site&#39;s cookies, then try again."),
        "{page}"
    );
    assert!(page.contains(&id), "the request id on the page: {page}");
    assert_eq!(s.upstream.count(), 0);
    // Two more: by length and by field count, each with an id of its own; the front's answers are counted.
    let many: String = (0..120).map(|i| format!("X-F{i}: v\r\n")).collect();
    let mut ids = vec![id];
    for head in [
        format!("GET /x HTTP/1.1\r\nHost: x\r\nCookie: {huge}\r\n\r\n"),
        format!("GET /x HTTP/1.1\r\nHost: x\r\n{many}\r\n"),
    ] {
        let answer = exchange_until_closed(s.gate.port, head.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
        let id = raw_request_id(&answer);
        assert!(!ids.contains(&id), "{id}");
        ids.push(id);
    }
    metrics_until(
        metrics_port,
        "logto_gate_requests_total{route=\"app\",status=\"431\"} 3\n",
    )
    .await;
}

#[tokio::test]
async fn oversized_headers_slow_clients_and_idle_connections_are_cut_off() {
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let gate = TestGate::start_edited(&idp, &upstream.url(), "", "", |t| {
        in_server("header_read_timeout = \"1s\"\nidle_timeout = \"1s\"\nmax_header_bytes = 16384")(t)
    })
    .await;
    // Oversized headers: 431, nothing reaches the upstream.
    let big = "x".repeat(20_000);
    let resp = reqwest::Client::new()
        .get(format!("{}/api", gate.url()))
        .header("x-big", big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(upstream.count(), 0);

    // A client that connects and sends nothing is disconnected.
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", gate.port)).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the silent connection was not cut off");
    assert!(buf.is_empty());

    // A client that never finishes its headers is disconnected (slowloris).
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", gate.port)).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the half-sent request was not cut off");

    // A body that stops coming, to an endpoint that waits for all of it, is cut off once nothing moved for the
    // idle timeout (slowloris on the body), unanswered.
    let mut stalled = tokio::net::TcpStream::connect(("127.0.0.1", gate.port)).await.unwrap();
    stalled
        .write_all(b"POST /_logto/backchannel-logout HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nlogout_token=")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the stalled body was not cut off");
    assert!(buf.is_empty(), "{}", String::from_utf8_lossy(&buf));

    // The same with a chunked body, read by the front, and by hyper's server after a hand-over (whose answer is
    // all that comes), also after a chunk has come: cut off, unanswered.
    for before in [&b""[..], TO_HYPER] {
        for sent in ["", "d\r\nlogout_token=\r\n"] {
            let mut stalled = tokio::net::TcpStream::connect(("127.0.0.1", gate.port)).await.unwrap();
            let head = "POST /_logto/backchannel-logout HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
            stalled.write_all(before).await.unwrap();
            stalled.write_all(format!("{head}{sent}").as_bytes()).await.unwrap();
            let mut buf = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut buf)).await;
            let what = format!("after {:?}, {sent:?} sent", String::from_utf8_lossy(before));
            assert!(read.is_ok(), "the stalled chunked body ({what}) was not cut off");
            let text = String::from_utf8_lossy(&buf);
            let answers = text.matches("HTTP/1.1 ").count();
            assert_eq!(answers, usize::from(!before.is_empty()), "{what}: {text}");
            assert!(answers == 0 || text.starts_with("HTTP/1.1 200"), "{what}: {text}");
        }
    }

    // An idle keep-alive connection is closed.
    let mut idle = tokio::net::TcpStream::connect(("127.0.0.1", gate.port)).await.unwrap();
    idle.write_all(b"GET /_logto/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the idle connection stayed open");
}

#[tokio::test]
async fn a_head_trickled_in_byte_by_byte_is_cut_off_at_the_header_read_timeout() {
    // Bytes keep moving, so the idle timeout never fires: only the header read timeout ends this (slowloris that
    // keeps the connection busy). Then a keep-alive connection waiting for its next head is closed by it too.
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let gate = TestGate::start_edited(&idp, &upstream.url(), "", "", |t| {
        in_server("header_read_timeout = \"1s\"\nidle_timeout = \"60s\"")(t)
    })
    .await;
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", gate.port)).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let started = std::time::Instant::now();
    let trickle = async {
        writer
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        loop {
            // The pace of the attack, not a synchronisation: one byte every 100 ms.
            tokio::time::sleep(Duration::from_millis(100)).await;
            if writer.write_all(b"a").await.is_err() {
                return; // closed by the gate
            }
        }
    };
    let mut answer = Vec::new();
    tokio::select! {
        _ = trickle => {}
        read = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut answer)) => {
            assert!(read.is_ok(), "the trickled head was not cut off");
        }
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "cut off too early: {took:?}");
    assert!(took < Duration::from_secs(5), "cut off late: {took:?}");
    assert_eq!(upstream.count(), 0);

    let mut waiting = tokio::net::TcpStream::connect(("127.0.0.1", gate.port)).await.unwrap();
    waiting
        .write_all(b"GET /_logto/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    waiting.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let answered = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), waiting.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the keep-alive connection outlived the header read timeout"
    );
    assert!(answered.elapsed() < Duration::from_secs(5), "{:?}", answered.elapsed());
}

/// The heads of every answer on `stream` until it ends.
async fn answers_until_closed(stream: &mut tokio::net::TcpStream) -> Vec<String> {
    let mut pending = Vec::new();
    let mut heads = Vec::new();
    while let Some(head) = read_answer(stream, &mut pending).await {
        heads.push(head);
    }
    heads
}

/// A request the front hands to hyper's server (an expectation with no body to send), which hyper answers as any
/// other: every request after it on the connection is hyper's.
const TO_HYPER: &[u8] = b"GET /_logto/healthz HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n";

/// A gate with `line` in its `[server]` section, and the IdP and upstream it needs.
async fn gate_with(line: &'static str) -> (Idp, Upstream, TestGate) {
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let gate = TestGate::start_edited(&idp, &upstream.url(), "", "", in_server(line)).await;
    (idp, upstream, gate)
}

fn says_close(head: &str) -> bool {
    head.lines().any(|l| l.eq_ignore_ascii_case("connection: close"))
}

#[tokio::test]
async fn a_connection_closes_after_max_requests_per_connection() {
    // The limit's answer says `Connection: close` and the connection ends: a pipelined request past it is not
    // answered (the client sends it again on a new connection, as after nginx's `keepalive_requests`).
    let (_idp, _upstream, gate) = gate_with("max_requests_per_connection = 3").await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", gate.port)).await.unwrap();
    stream
        .write_all(&b"GET /_logto/healthz HTTP/1.1\r\nHost: x\r\n\r\n".repeat(5))
        .await
        .unwrap();
    let heads = answers_until_closed(&mut stream).await;
    assert_eq!(heads.len(), 3, "{heads:?}");
    assert!(heads.iter().all(|h| h.starts_with("HTTP/1.1 200")), "{heads:?}");
    assert!(!says_close(&heads[0]) && !says_close(&heads[1]), "{heads:?}");
    assert!(says_close(&heads[2]), "{heads:?}");

    // One at a time, the same: two kept alive, the third closes.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", gate.port)).await.unwrap();
    let mut pending = Vec::new();
    for n in 1..=3 {
        stream
            .write_all(b"GET /_logto/healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let head = read_answer(&mut stream, &mut pending).await.expect("an answer");
        assert_eq!(says_close(&head), n == 3, "answer {n}: {head}");
    }
    assert_eq!(read_answer(&mut stream, &mut pending).await, None);
}

#[tokio::test]
async fn max_requests_per_connection_counts_on_after_a_hand_off_to_hyper() {
    // A request the front does not serve goes to hyper's server with the rest of the connection; the limit counts
    // the requests answered before it (with or without a body) and goes on counting there.
    let (_idp, _upstream, gate) = gate_with("max_requests_per_connection = 3").await;
    let get: &[u8] = b"GET /_logto/healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let sized: &[u8] = b"POST /_logto/healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi";
    let post: &[u8] =
        b"POST /_logto/healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n";
    for (case, first) in [
        ("handed over at once", TO_HYPER),
        ("one request in the front first", get),
        ("one request with a body in the front first", sized),
    ] {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", gate.port)).await.unwrap();
        let mut requests = first.to_vec();
        requests.extend_from_slice(TO_HYPER);
        requests.extend(post.repeat(3));
        stream.write_all(&requests).await.unwrap();
        let heads = answers_until_closed(&mut stream).await;
        assert_eq!(heads.len(), 3, "{case}: {heads:?}");
        assert!(!says_close(&heads[0]) && !says_close(&heads[1]), "{case}: {heads:?}");
        assert!(says_close(&heads[2]), "{case}: {heads:?}");
    }

    // One at a time, the same.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", gate.port)).await.unwrap();
    let mut pending = Vec::new();
    for (n, request) in [TO_HYPER, post, post].into_iter().enumerate() {
        stream.write_all(request).await.unwrap();
        let head = read_answer(&mut stream, &mut pending).await.expect("an answer");
        assert_eq!(says_close(&head), n == 2, "answer {n}: {head}");
    }
    assert_eq!(read_answer(&mut stream, &mut pending).await, None);
}

#[tokio::test]
async fn an_http2_connection_ends_gracefully_after_max_requests_per_connection() {
    // As nginx's `keepalive_requests` for HTTP/2: the streams up to the limit are answered, then GOAWAY and the end
    // of the connection; the client opens a new one for what follows.
    let (_idp, _upstream, gate) = gate_with("max_requests_per_connection = 3").await;
    let (mut sender, conn) = h2_connection(gate.port).await;
    for n in 1..=3 {
        healthz_over_h2(&mut sender, gate.port, n).await;
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
    assert!(
        ended.is_ok(),
        "the HTTP/2 connection outlived max_requests_per_connection"
    );
    assert!(
        sender.send_request(healthz(gate.port)).await.is_err(),
        "a fourth request was taken"
    );

    // Streams sent together: the ones up to the limit are all answered before the connection ends.
    let (mut sender, conn) = h2_connection(gate.port).await;
    let answers: Vec<_> = (0..3).map(|_| sender.send_request(healthz(gate.port))).collect();
    for (n, answer) in answers.into_iter().enumerate() {
        let resp = answer.await.unwrap_or_else(|e| panic!("stream {n}: {e}"));
        assert_eq!(resp.status(), StatusCode::OK, "stream {n}");
    }
    assert!(tokio::time::timeout(Duration::from_secs(10), conn).await.is_ok());
}

#[tokio::test]
async fn zero_max_requests_per_connection_keeps_connections_open() {
    let (_idp, _upstream, gate) = gate_with("max_requests_per_connection = 0").await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", gate.port)).await.unwrap();
    let mut pending = Vec::new();
    // Past the default limit (1000), in pipelined batches: served by the front (bodiless, then with a body by
    // length, then chunked), then (handed over) by hyper's server.
    let get: &[u8] = b"GET /_logto/healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let sized: &[u8] = b"POST /_logto/healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi";
    let post: &[u8] =
        b"POST /_logto/healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n";
    for (request, batches, each) in [
        (get, 21, 50),
        (sized, 7, 50),
        (post, 7, 50),
        (TO_HYPER, 1, 1),
        (post, 21, 50),
    ] {
        for batch in 0..batches {
            stream.write_all(&request.repeat(each)).await.unwrap();
            for n in 0..each {
                let head = read_answer(&mut stream, &mut pending).await.expect("an answer");
                assert!(
                    head.starts_with("HTTP/1.1 200") && !says_close(&head),
                    "batch {batch}, answer {n}: {head}"
                );
            }
        }
    }
    // And on an HTTP/2 one.
    let (mut sender, conn) = h2_connection(gate.port).await;
    for n in 0..1005 {
        healthz_over_h2(&mut sender, gate.port, n).await;
    }
    assert!(!conn.is_finished());
}

/// A request body sent piece by piece over HTTP/2.
type Streamed = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, std::convert::Infallible>;
type Pieces = tokio::sync::mpsc::Sender<Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible>>;

/// An HTTP/2 connection (prior knowledge) to the gate on `port` for requests with [`Streamed`] bodies.
async fn h2_streaming(port: u16) -> hyper::client::conn::http2::SendRequest<Streamed> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("an HTTP/2 handshake");
    tokio::spawn(conn);
    sender
}

/// A body that sends what is put into its sender, and ends when the sender is dropped.
fn streamed_body() -> (Pieces, Streamed) {
    let (pieces, rx) = tokio::sync::mpsc::channel(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    (
        pieces,
        http_body_util::BodyExt::boxed_unsync(http_body_util::StreamBody::new(stream)),
    )
}

#[tokio::test]
async fn an_http2_stream_whose_body_stops_coming_is_reset() {
    // hyper's HTTP/2 server reads every body; one that stops coming for the idle timeout ends its stream with a
    // reset instead of holding it (and the back-channel endpoint waiting for it) for ever.
    let (_idp, _upstream, gate) = gate_with("idle_timeout = \"1s\"").await;
    let mut sender = h2_streaming(gate.port).await;
    let (pieces, body) = streamed_body();
    let req = hyper::Request::post(format!("http://127.0.0.1:{}/_logto/backchannel-logout", gate.port))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .unwrap();
    pieces
        .send(Ok(http_body::Frame::data(bytes::Bytes::from_static(b"logout_token="))))
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("the stalled stream was not ended");
    let err = answer.expect_err("a stalled stream was answered");
    assert!(format!("{err:?}").contains("CANCEL"), "{err:?}");
    drop(pieces);
    // Only that stream ended: the connection serves the next one.
    sender.ready().await.expect("the connection outlives the reset stream");
    let next = hyper::Request::get(format!("http://127.0.0.1:{}/_logto/healthz", gate.port))
        .body(streamed_body().1)
        .unwrap();
    let resp = sender.send_request(next).await.expect("the next stream is answered");
    assert_eq!(resp.status(), StatusCode::OK);
}

/// A request whose body stops coming is logged and counted as 408 (RFC 9110 §15.5.9), as nginx's
/// `client_body_timeout` is, and nothing is sent: proxied or to the gate's own back-channel endpoint, by length or
/// chunked on the HTTP/1 front, chunked on hyper's server after a hand-over, and on HTTP/2.
#[tokio::test]
async fn a_request_body_that_stops_coming_is_counted_as_408_and_unanswered() {
    let metrics_port = free_port();
    let line: &'static str =
        Box::leak(format!("idle_timeout = \"1s\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\"").into_boxed_str());
    let s = Stack::edited(IdpOptions::default(), "", "", in_server(line)).await;
    let (_, cookie) = s.signed_in().await;
    let upload = format!("POST /upload HTTP/1.1\r\nHost: x\r\nCookie: logto_gate={cookie}\r\n");
    let logout = "POST /_logto/backchannel-logout HTTP/1.1\r\nHost: x\r\n".to_owned();
    let mut cases = Vec::new();
    for head in [&upload, &logout] {
        cases.push((
            "by length",
            &b""[..],
            format!("{head}Content-Length: 100\r\n\r\nlogout_token="),
        ));
        cases.push((
            "chunked",
            &b""[..],
            format!("{head}Transfer-Encoding: chunked\r\n\r\nd\r\nlogout_token=\r\n"),
        ));
        cases.push((
            "chunked, hyper",
            TO_HYPER,
            format!("{head}Transfer-Encoding: chunked\r\n\r\nd\r\nlogout_token=\r\n"),
        ));
    }
    for (what, before, request) in &cases {
        let mut stalled = tokio::net::TcpStream::connect(("127.0.0.1", s.gate.port))
            .await
            .unwrap();
        stalled.write_all(before).await.unwrap();
        stalled.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "{what}: {request}: not cut off");
        let text = String::from_utf8_lossy(&buf);
        assert_eq!(
            text.matches("HTTP/1.1 ").count(),
            usize::from(!before.is_empty()),
            "{what}: {text}"
        );
        assert!(!text.contains("408"), "{what}: {text}");
    }
    // On HTTP/2 (hyper's server), proxied.
    let mut sender = h2_streaming(s.gate.port).await;
    let (pieces, body) = streamed_body();
    let req = hyper::Request::post(format!("http://127.0.0.1:{}/upload", s.gate.port))
        .header("cookie", format!("logto_gate={cookie}"))
        .body(body)
        .unwrap();
    pieces
        .send(Ok(http_body::Frame::data(bytes::Bytes::from_static(b"some"))))
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("the stalled stream was not ended");
    assert!(answer.is_err(), "a stalled stream was answered: {answer:?}");
    drop(pieces);
    let metrics = metrics_text(metrics_port).await;
    for expected in [
        "logto_gate_requests_total{route=\"app\",status=\"408\"} 4\n",
        "logto_gate_requests_total{route=\"backchannel_logout\",status=\"408\"} 3\n",
    ] {
        assert!(metrics.contains(expected), "{expected} in {metrics}");
    }
    assert!(!metrics.contains("status=\"400\""), "{metrics}");
}

/// `server.idle_timeout` closes an HTTP/2 connection that moves no bytes, as it does an HTTP/1 one, after its streams:
/// one waiting longer than the timeout for a slow app is still answered. The gate sends no keep-alive pings, whose
/// answers (every client sends them) would count as traffic and keep an idle connection open for good.
#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_its_streams() {
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    // `/slow` public, so that its request reaches the app without a session.
    let gate = TestGate::start_edited(
        &idp,
        &upstream.url(),
        "",
        "[[rules]]\nprefix = \"/slow\"\nallow = \"public\"\n",
        in_server("idle_timeout = \"1s\""),
    )
    .await;
    let (mut sender, conn) = h2_connection(gate.port).await;
    healthz_over_h2(&mut sender, gate.port, 1).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
    assert!(ended.is_ok(), "the idle HTTP/2 connection stayed open");

    let (mut sender, conn) = h2_connection(gate.port).await;
    let slow = hyper::Request::get(format!("http://127.0.0.1:{}/slow?ms=2500", gate.port))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(slow).await.expect("the slow answer");
    assert_eq!(resp.status(), StatusCode::OK);
    let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
    assert!(ended.is_ok(), "the HTTP/2 connection stayed open after its stream");
}

/// A gate with its metrics listener on a free port and `server_line` in `[server]`: (gate, metrics port).
async fn gate_with_metrics(idp: &Idp, upstream: &Upstream, server_line: &str) -> (TestGate, u16) {
    let port = free_port();
    let line: &'static str =
        Box::leak(format!("metrics_listen = \"127.0.0.1:{port}\"\n{server_line}").into_boxed_str());
    let gate = TestGate::start_edited(idp, &upstream.url(), "", "", in_server(line)).await;
    (gate, port)
}

/// Whether the peer closes `stream` within `within` (reading and dropping what it sends).
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut rest = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut rest))
        .await
        .is_ok()
}

/// The metrics listener often listens where every pod of a cluster reaches it, in the process that serves the
/// gate: clients there cannot hold it open without bound. A head that never ends is closed at the header read
/// timeout; past 64 connections at once the next is closed on arrival (not queued, not served), and once they
/// go, scrapes are served again.
#[tokio::test]
async fn the_metrics_listener_cannot_be_held_open_by_slow_clients() {
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;

    let (_quick, port) = gate_with_metrics(&idp, &upstream, "header_read_timeout = \"1s\"").await;
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    assert!(
        closed_within(&mut slow, Duration::from_secs(10)).await,
        "an unfinished head kept its connection"
    );
    // A kept-alive scraper's wait for its next request is bounded the same way.
    let mut kept = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    kept.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    kept.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    assert!(
        closed_within(&mut kept, Duration::from_secs(10)).await,
        "an idle kept-alive connection stayed"
    );

    // The default header read timeout (30 s) holds these: the cap is what closes the next.
    let (_gate, port) = gate_with_metrics(&idp, &upstream, "").await;
    let mut held = Vec::new();
    for _ in 0..64 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
        held.push(s);
    }
    // Each of them is accepted and held before the next connection's turn: a scrape that is not accepted yet waits.
    let mut over = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let _ = over.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        closed_within(&mut over, Duration::from_secs(10)).await,
        "the connection past the cap was kept"
    );
    for s in &mut held[..3] {
        assert!(
            !closed_within(s, Duration::from_millis(1)).await,
            "a held connection was closed"
        );
    }
    drop(held);
    // Their tasks end as they see the hang-ups; until then a scrape may still be turned away.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let served = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await;
        if served.is_ok_and(|r| r.status() == StatusCode::OK) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no scrape served after the held connections closed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Forms read for their `_method` are held within one budget for the whole gate: sixteen of the largest form
/// (`upstream.max_form_method_bytes`) at once, each taking its share as its bytes arrive, counted in
/// `logto_gate_form_method_bytes_held`. A form beyond it gets 503; a form whose client went away gives its share
/// back. Here the `POST` is public and a `DELETE` needs an administrator, so strangers' forms are read; they come
/// from sixteen addresses (through a trusted proxy), each within its own part.
#[tokio::test]
async fn forms_read_for_their_method_are_held_within_one_budget() {
    let (s, metrics) = forms_from_strangers().await;
    // Sixteen clients send all but the last byte of a form of the largest size and stop.
    let mut stalled = Vec::new();
    for n in 0..16 {
        stalled.push(stalled_form(s.gate.port, &format!("10.0.0.{n}")).await);
    }
    // Once the gate holds their bytes, a small form finds no room; one of them going away makes room.
    let text = metrics_until(metrics, &format!("logto_gate_form_method_bytes_held {}\n", 16 * 4095)).await;
    assert!(text.contains("logto_gate_form_method_bytes_budget 65536\n"), "{text}");
    let busy = exchange_until_closed(s.gate.port, small_form("10.0.1.1").as_bytes()).await;
    assert!(busy.starts_with("HTTP/1.1 503") && busy.contains("busy"), "{busy}");
    drop(stalled.pop());
    metrics_until(metrics, &format!("logto_gate_form_method_bytes_held {}\n", 15 * 4095)).await;
    let passed = exchange_until_closed(s.gate.port, small_form("10.0.1.1").as_bytes()).await;
    assert!(passed.starts_with("HTTP/1.1 200"), "{passed:.600}");
    // Requests whose body is not read never wait on it.
    let r = plain().get(format!("{}/items/1", s.gate.url())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// One client holds at most a quarter of that budget: a signed-in person wherever they send from, anyone else by
/// their address. A fifth form from either gets 429 while others' forms are read; one of theirs ending makes room.
#[tokio::test]
async fn one_client_holds_at_most_a_quarter_of_the_forms_budget() {
    // By address: four forms from 10.0.0.1 take its part; a fifth is refused, 10.0.0.2's passes.
    let (s, metrics) = forms_from_strangers().await;
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(stalled_form(s.gate.port, "10.0.0.1").await);
    }
    metrics_until(metrics, &format!("logto_gate_form_method_bytes_held {}\n", 4 * 4095)).await;
    let refused = exchange_until_closed(s.gate.port, small_form("10.0.0.1").as_bytes()).await;
    assert!(
        refused.starts_with("HTTP/1.1 429") && refused.contains("too_many_forms"),
        "{refused}"
    );
    let other = exchange_until_closed(s.gate.port, small_form("10.0.0.2").as_bytes()).await;
    assert!(other.starts_with("HTTP/1.1 200"), "{other:.600}");
    drop(stalled.pop());
    metrics_until(metrics, &format!("logto_gate_form_method_bytes_held {}\n", 3 * 4095)).await;
    let passed = exchange_until_closed(s.gate.port, small_form("10.0.0.1").as_bytes()).await;
    assert!(passed.starts_with("HTTP/1.1 200"), "{passed:.600}");
    drop(stalled);
    // By person: Bob, signed in on a path where a `POST` needs a session, from four addresses and then a fifth.
    let rules = "[[rules]]\nprefix = \"/items\"\nmethods = [\"DELETE\"]\nroles = [\"admin\"]\n";
    let (s, metrics) = forms_gate(rules).await;
    let bob = s.browser();
    bob.login_as("bob");
    bob.sign_in(&s.gate, "/home").await;
    let cookie = bob.cookie(&s.gate.url(), "logto_gate").expect("a session");
    let with_cookie = |request: String| request.replacen("\r\n", &format!("\r\nCookie: logto_gate={cookie}\r\n"), 1);
    let mut stalled = Vec::new();
    for n in 0..4 {
        let head = with_cookie(form_head(&format!("10.0.0.{n}"), 4096));
        stalled.push(stalled_after(s.gate.port, format!("{head}{}", "a".repeat(4095))).await);
    }
    metrics_until(metrics, &format!("logto_gate_form_method_bytes_held {}\n", 4 * 4095)).await;
    let refused = exchange_until_closed(s.gate.port, with_cookie(small_form("10.0.0.9")).as_bytes()).await;
    assert!(
        refused.starts_with("HTTP/1.1 429") && refused.contains("too_many_forms"),
        "{refused}"
    );
    // A stranger's form there is not Bob's: it is challenged, not refused for room.
    let stranger = exchange_until_closed(s.gate.port, small_form("10.0.0.9").as_bytes()).await;
    assert!(!stranger.starts_with("HTTP/1.1 429"), "{stranger:.600}");
    drop(stalled.pop());
    metrics_until(metrics, &format!("logto_gate_form_method_bytes_held {}\n", 3 * 4095)).await;
    let passed = exchange_until_closed(s.gate.port, with_cookie(small_form("10.0.0.9")).as_bytes()).await;
    assert!(passed.starts_with("HTTP/1.1 200"), "{passed:.600}");
}

/// A gate whose `POST`s to `/items` are public and whose `DELETE`s there need an administrator ([`forms_gate`]).
async fn forms_from_strangers() -> (Stack, u16) {
    forms_gate(
        "[[rules]]\nprefix = \"/items\"\nmethods = [\"DELETE\"]\nroles = [\"admin\"]\n\n\
         [[rules]]\nprefix = \"/items\"\nallow = \"public\"\n",
    )
    .await
}

/// A gate with `rules`, believing `X-Forwarded-For` from 127.0.0.1, reading forms of at most 4 KiB (a 64 KiB budget,
/// 16 KiB for one client), and the port of its metrics listener.
async fn forms_gate(rules: &str) -> (Stack, u16) {
    let metrics = free_port();
    let server: &'static str = Box::leak(
        format!("trusted_proxies = [\"127.0.0.1\"]\nmetrics_listen = \"127.0.0.1:{metrics}\"").into_boxed_str(),
    );
    let s = Stack::edited(IdpOptions::default(), "", rules, |t| {
        in_server(server)(in_upstream("max_form_method_bytes = 4096")(t))
    })
    .await;
    (s, metrics)
}

/// A form `POST`'s head for `/items/1` from client `from`, with a body of `length` bytes.
fn form_head(from: &str, length: usize) -> String {
    format!(
        "POST /items/1 HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: {from}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {length}\r\n\r\n"
    )
}

/// A small form naming a `PUT` (which the rules leave to the `POST`'s decision), on a connection closed after it.
fn small_form(from: &str) -> String {
    let body = "_method=PUT&x=123456789";
    format!("{}{body}", form_head(from, body.len())).replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n")
}

/// A connection that sent all but the last byte of a form of the largest size from `from`, and stopped.
async fn stalled_form(port: u16, from: &str) -> tokio::net::TcpStream {
    stalled_after(port, format!("{}{}", form_head(from, 4096), "a".repeat(4095))).await
}

/// A connection that sent `bytes` and stopped.
async fn stalled_after(port: u16, bytes: String) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(bytes.as_bytes()).await.unwrap();
    stream
}

/// A form read for its `_method` holds its share of the budget only until its deadline
/// (`server.header_read_timeout` and a second per 32 KiB of `upstream.max_form_method_bytes`: 1.125 s here), however
/// steadily its bytes trickle in (each well within `server.idle_timeout`): else sixteen such clients would hold the
/// whole budget for ever. A form that arrives in time is read and passed on as before.
#[tokio::test]
async fn a_form_trickled_in_is_cut_off_at_its_deadline() {
    let rules = "[[rules]]\nprefix = \"/items\"\nmethods = [\"DELETE\"]\nroles = [\"admin\"]\n";
    let s = Stack::edited(IdpOptions::default(), "", rules, |t| {
        in_server("header_read_timeout = \"1s\"\nidle_timeout = \"10s\"")(in_upstream("max_form_method_bytes = 4096")(
            t,
        ))
    })
    .await;
    let bob = s.browser();
    bob.login_as("bob");
    bob.sign_in(&s.gate, "/home").await;
    let cookie = bob.cookie(&s.gate.url(), "logto_gate").expect("a session");
    let form = "_method=PUT&x=0123456789";
    let head = format!(
        "POST /items/1 HTTP/1.1\r\nHost: x\r\nCookie: logto_gate={cookie}\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        form.len()
    );
    // Sent a byte every 250 ms, the form would take 6 s to arrive.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", s.gate.port))
        .await
        .unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        for byte in form.bytes() {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let started = tokio::time::Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut answer))
        .await
        .expect("the gate answers and closes")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:.600}");
    assert!(answer.contains("did not arrive within"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    trickle.abort();
    // Sent at once, the same form is read, decided on as the `PUT` it names, and reaches the app.
    let whole = exchange_until_closed(s.gate.port, format!("{head}{form}").as_bytes()).await;
    assert!(whole.starts_with("HTTP/1.1 200"), "{whole:.600}");
    assert!(whole.contains("\"method\":\"POST\""), "{whole}");
}
