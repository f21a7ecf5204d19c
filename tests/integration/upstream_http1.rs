//! The lean HTTP/1.1 upstream client (bodiless GET and HEAD): against a scripted upstream on a raw socket, so each
//! test can send exactly the bytes a misbehaving or hostile upstream would: connection reuse, a pooled connection
//! closed by the upstream, framing the gate must refuse, bodies cut short, bytes smuggled after a response.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::*;

/// What the scripted upstream does with one request.
enum Reply {
    /// Writes these bytes and waits for the next request on the connection.
    Send(Vec<u8>),
    /// Writes these bytes and closes the connection.
    SendThenClose(Vec<u8>),
    /// Closes the connection without answering (as when a keep-alive timeout fires just as a request arrives).
    Close,
}

/// A scripted upstream: `answer(path, nth request on this connection)` decides each reply.
struct Scripted {
    port: u16,
    accepted: Arc<AtomicUsize>,
    /// The request path of every request received, in order.
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Scripted {
    async fn start(answer: fn(&str, usize) -> Reply) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind scripted upstream");
        let port = listener.local_addr().expect("addr").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (a, s) = (Arc::clone(&accepted), Arc::clone(&seen));
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                let seen = Arc::clone(&s);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut nth = 0;
                    loop {
                        // Requests here have no body: a head ends at the first empty line.
                        let end = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            let mut chunk = [0u8; 4096];
                            match socket.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end);
                        let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                        seen.lock().unwrap().push(path.clone());
                        match answer(&path, nth) {
                            Reply::Send(bytes) => {
                                if socket.write_all(&bytes).await.is_err() {
                                    return;
                                }
                            }
                            Reply::SendThenClose(bytes) => {
                                let _ = socket.write_all(&bytes).await;
                                return;
                            }
                            Reply::Close => return,
                        }
                        nth += 1;
                    }
                });
            }
        });
        Scripted {
            port,
            accepted,
            seen,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Upstream: scripted\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A signed-in session (from a stack's own gate; every test gate shares the session keys) and a gate in front of
/// `upstream`.
async fn gate_in_front_of(upstream: &Scripted) -> (Stack, TestGate, String) {
    let s = Stack::start().await;
    let (_, cookie) = s.signed_in().await;
    let gate = TestGate::start(&s.idp, &upstream.url(), "", "").await;
    (s, gate, format!("logto_gate={cookie}"))
}

/// One keep-alive client connection, so the gate serves every request on one worker and its pool.
fn one_connection() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .http1_only()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn get(client: &reqwest::Client, gate: &TestGate, cookie: &str, path: &str) -> reqwest::Response {
    client
        .get(format!("{}{path}", gate.url()))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn gets_and_heads_reuse_one_upstream_connection() {
    let upstream = Scripted::start(|path, _| match path {
        // The HEAD: the head a GET would get, without its body.
        "/d" => Reply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n".to_vec()),
        _ => Reply::Send(ok(&format!("body of {path}"))),
    })
    .await;
    let (_s, gate, cookie) = gate_in_front_of(&upstream).await;
    let client = one_connection();
    for path in ["/a", "/b?x=1", "/c"] {
        let resp = get(&client, &gate, &cookie, path).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["x-upstream"], "scripted");
        assert_eq!(resp.text().await.unwrap(), format!("body of {path}"));
    }
    let head = client
        .head(format!("{}/d", gate.url()))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(
        head.headers()["content-length"],
        "10",
        "HEAD keeps the length of what GET would send"
    );
    assert_eq!(head.bytes().await.unwrap().len(), 0);
    // The connection carried on after the HEAD response, which has no body whatever its Content-Length says.
    assert_eq!(
        get(&client, &gate, &cookie, "/e").await.text().await.unwrap(),
        "body of /e"
    );
    assert_eq!(upstream.seen(), ["/a", "/b?x=1", "/c", "/d", "/e"]);
    assert_eq!(
        upstream.accepted(),
        1,
        "one pooled upstream connection for five requests"
    );
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closes_is_retried_once_on_a_new_one() {
    // Every connection answers its first request and closes on the second without a word: the race between an
    // upstream's keep-alive timeout and a request the gate sends on the pooled connection.
    let upstream = Scripted::start(|path, nth| if nth == 0 { Reply::Send(ok(path)) } else { Reply::Close }).await;
    let (s, gate, cookie) = gate_in_front_of(&upstream).await;
    let client = one_connection();
    assert_eq!(
        get(&client, &gate, &cookie, "/first").await.text().await.unwrap(),
        "/first"
    );
    let second = get(&client, &gate, &cookie, "/second").await;
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(second.text().await.unwrap(), "/second");
    assert_eq!(
        upstream.seen(),
        ["/first", "/second", "/second"],
        "sent again once, on a new connection"
    );
    assert_eq!(upstream.accepted(), 2);

    // An upstream that closes after every response (without saying so): each request still succeeds.
    let closing = Scripted::start(|path, _| Reply::SendThenClose(ok(path))).await;
    let gate = TestGate::start(&s.idp, &closing.url(), "", "").await;
    for path in ["/1", "/2", "/3"] {
        assert_eq!(get(&client, &gate, &cookie, path).await.text().await.unwrap(), path);
    }
}

#[tokio::test]
async fn an_upstream_that_never_answers_a_fresh_connection_is_a_502_and_is_not_retried() {
    let upstream = Scripted::start(|_, _| Reply::Close).await;
    let (_s, gate, cookie) = gate_in_front_of(&upstream).await;
    let resp = get(&one_connection(), &gate, &cookie, "/x").await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(
        upstream.seen(),
        ["/x"],
        "a new connection's failure is not a stale pooled one: no second try"
    );
}

#[tokio::test]
async fn bytes_after_a_complete_response_are_never_served_as_the_next_one() {
    // A response splitting attempt: a second, unasked response right behind the first (by Content-Length and by
    // the last chunk). The connection must be dropped, not pooled with the smuggled bytes waiting in it.
    let upstream = Scripted::start(|path, _| {
        let smuggled = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled";
        match path {
            "/by-length" => Reply::Send(format!("{}{smuggled}", String::from_utf8_lossy(&ok("hello"))).into()),
            "/by-chunks" => Reply::Send(
                format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n{smuggled}")
                    .into(),
            ),
            _ => Reply::Send(ok("fresh")),
        }
    })
    .await;
    let (_s, gate, cookie) = gate_in_front_of(&upstream).await;
    let client = one_connection();
    for first in ["/by-length", "/by-chunks"] {
        assert_eq!(get(&client, &gate, &cookie, first).await.text().await.unwrap(), "hello");
        let next = get(&client, &gate, &cookie, "/next").await.text().await.unwrap();
        assert_eq!(next, "fresh", "after {first}");
    }
    // Each connection with bytes left over was closed, and after the first the upstream is distrusted: no
    // connection is reused, so each of the four requests had its own.
    assert_eq!(
        upstream.accepted(),
        4,
        "each connection with bytes left over was closed, and none reused after"
    );
}

#[tokio::test]
async fn ambiguous_or_unsupported_framing_is_a_502_and_its_body_never_reaches_the_client() {
    let upstream = Scripted::start(|path, _| {
        let head = match path {
            "/cl-and-te" => "Content-Length: 6\r\nTransfer-Encoding: chunked",
            "/two-lengths" => "Content-Length: 6\r\nContent-Length: 7",
            "/gzip-chunked" => "Transfer-Encoding: gzip, chunked",
            "/bad-length" => "Content-Length: 6x",
            "/unasked-101" => "Upgrade: websocket\r\nConnection: upgrade",
            _ => return Reply::Send(ok("fine")),
        };
        let status = if path == "/unasked-101" {
            "101 Switching Protocols"
        } else {
            "200 OK"
        };
        Reply::Send(format!("HTTP/1.1 {status}\r\n{head}\r\n\r\n1\r\nA\r\n0\r\n\r\nSECRET").into())
    })
    .await;
    let (_s, gate, cookie) = gate_in_front_of(&upstream).await;
    let client = one_connection();
    for path in [
        "/cl-and-te",
        "/two-lengths",
        "/gzip-chunked",
        "/bad-length",
        "/unasked-101",
    ] {
        let resp = get(&client, &gate, &cookie, path).await;
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY, "{path}");
        let body = resp.text().await.unwrap();
        assert!(!body.contains("SECRET"), "{path}: {body}");
        assert!(body.contains("upstream_bad_response"), "{path}: {body}");
        // The gate is fine afterwards.
        assert_eq!(get(&client, &gate, &cookie, "/ok").await.text().await.unwrap(), "fine");
    }
}

#[tokio::test]
async fn a_body_cut_short_is_an_error_at_the_client_never_a_shorter_complete_response() {
    let upstream = Scripted::start(|path, _| match path {
        "/short-length" => Reply::SendThenClose(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..".to_vec()),
        "/no-last-chunk" => {
            Reply::SendThenClose(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec())
        }
        "/bad-chunk" => Reply::Send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello!!\r\n".to_vec()),
        _ => Reply::Send(ok("fine")),
    })
    .await;
    let (_s, gate, cookie) = gate_in_front_of(&upstream).await;
    for path in ["/short-length", "/no-last-chunk", "/bad-chunk"] {
        // A new client connection each time: the gate must break the one a broken body was on. Whether the head
        // got out before the body failed depends on timing; either way the client must see a failure.
        let sent = one_connection()
            .get(format!("{}{path}", gate.url()))
            .header("cookie", &cookie)
            .send()
            .await;
        if let Ok(resp) = sent {
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            assert!(resp.bytes().await.is_err(), "{path}: the client must see the body fail");
        }
    }
    assert_eq!(
        get(&one_connection(), &gate, &cookie, "/ok")
            .await
            .text()
            .await
            .unwrap(),
        "fine"
    );
}

#[tokio::test]
async fn chunked_close_delimited_and_interim_responses_pass_whole() {
    let upstream = Scripted::start(|path, _| match path {
        "/chunked" => Reply::Send(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
                .to_vec(),
        ),
        "/until-close" => Reply::SendThenClose(b"HTTP/1.0 200 OK\r\n\r\nall of it".to_vec()),
        "/early-hints" => Reply::Send(
            format!("HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n{}", String::from_utf8_lossy(&ok("final"))).into(),
        ),
        "/no-content" => Reply::Send(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()),
        _ => Reply::Send(ok("fine")),
    })
    .await;
    let (_s, gate, cookie) = gate_in_front_of(&upstream).await;
    let client = one_connection();
    let expect = [
        ("/chunked", 200, "hello world"),
        ("/until-close", 200, "all of it"),
        ("/early-hints", 200, "final"),
    ];
    for (path, status, body) in expect {
        let resp = get(&client, &gate, &cookie, path).await;
        assert_eq!(resp.status().as_u16(), status, "{path}");
        assert_eq!(resp.text().await.unwrap(), body, "{path}");
    }
    let resp = get(&client, &gate, &cookie, "/no-content").await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        get(&client, &gate, &cookie, "/after").await.text().await.unwrap(),
        "fine"
    );
    // The chunked, interim and 204 connections were kept; only the close-delimited one ended.
    assert_eq!(upstream.accepted(), 2);
}

/// Sockets in CLOSE_WAIT (the peer closed, this side has not) with an end on `port`, from /proc/net/tcp{,6}.
fn close_wait_on(port: u16) -> usize {
    let mut n = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let port_of = |addr: &str| addr.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if cols.get(3) == Some(&"08") && cols[1..3].iter().any(|a| port_of(a) == Some(port)) {
                n += 1;
            }
        }
    }
    n
}

#[tokio::test]
async fn idle_pooled_connections_the_upstream_closes_are_closed_by_the_gate_too() {
    let upstream = Scripted::start(|path, _| Reply::SendThenClose(ok(path))).await;
    let (_s, gate, cookie) = gate_in_front_of(&upstream).await;
    for _ in 0..3 {
        // Separate client connections, so both workers' pools may hold one.
        assert_eq!(
            get(&one_connection(), &gate, &cookie, "/x").await.text().await.unwrap(),
            "/x"
        );
    }
    // Each pooled connection was closed by the upstream right after its response; the gate's pool lets go of it
    // within its reaping interval instead of holding a half-closed socket until it would be reused.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while close_wait_on(upstream.port) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "half-closed upstream connections are held"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An upstream that answers each request with its own path as the body, then `gap` later appends a stray response
/// on the same connection (a buggy app). `answered` counts the requests answered; each stray write is reported on
/// the channel, so a test can wait until every answered request's stray bytes are out.
struct StrayUpstream {
    port: u16,
    answered: Arc<AtomicUsize>,
    strays: tokio::sync::mpsc::UnboundedReceiver<()>,
    written: usize,
    task: tokio::task::JoinHandle<()>,
}

impl StrayUpstream {
    /// Waits (bounded) until the stray bytes of every request answered so far have been written.
    async fn all_strays_written(&mut self) {
        while self.written < self.answered.load(Ordering::SeqCst) {
            tokio::time::timeout(Duration::from_secs(5), self.strays.recv())
                .await
                .expect("the upstream writes its stray bytes");
            self.written += 1;
        }
    }
}

async fn stray_upstream(gap: Duration) -> StrayUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let answered = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&answered);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else { return };
            let (tx, counter) = (tx.clone(), Arc::clone(&counter));
            // Each write goes out at once: with Nagle's algorithm a stray write waits in the upstream's send buffer
            // for the gate's delayed ACK, which only the next request brings, so it can never arrive before it.
            let _ = conn.set_nodelay(true);
            tokio::spawn(async move {
                let (mut read, write) = conn.into_split();
                let write = Arc::new(tokio::sync::Mutex::new(write));
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match read.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{path}", path.len());
                    if write.lock().await.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    let (write, tx) = (Arc::clone(&write), tx.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(gap).await;
                        let stray = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSTRAY";
                        let _ = write.lock().await.write_all(stray).await;
                        let _ = tx.send(());
                    });
                }
            });
        }
    });
    StrayUpstream {
        port,
        answered,
        strays: rx,
        written: 0,
        task,
    }
}

/// Bytes a buggy upstream appends after a complete response: a pooled connection is checked with a real
/// non-blocking read of its socket before reuse, and once an upstream is caught sending bytes unasked (there, or
/// left over after a response) its worker reuses none of its connections for a while. Two clients alternate over
/// one gate (one worker, one pool) at gaps of 1, 5 and 20 ms.
/// - Back to back, stray bytes can land while the next request is under way, where nothing can tell them from its
///   answer: the first such answer (and the one or two behind it while the upstream's real answers lag) cannot be
///   helped, but after it the upstream is caught and no later answer is another's. The counts are printed.
/// - Each request sent once the upstream has written its stray bytes: none may be served as an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_bytes_on_a_pooled_connection_are_not_served_to_the_next_request() {
    let idp = Idp::start(IdpOptions::default());
    for gap_ms in [1u64, 5, 20] {
        let mut upstream = stray_upstream(Duration::from_millis(gap_ms)).await;
        let port = upstream.port;
        let gate = TestGate::start_edited(
            &idp,
            &format!("http://127.0.0.1:{port}"),
            "",
            "[[rules]]\nprefix = \"/\"\nallow = \"public\"\n",
            in_server("workers = 1"),
        )
        .await;
        let clients = [plain(), plain()];
        let get = |i: usize, path: String| {
            let client = clients[i % 2].clone();
            let url = format!("{}{path}", gate.url());
            async move {
                match client.get(url).send().await {
                    Ok(r) => r.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                }
            }
        };

        let mut wrong_at = Vec::new();
        for i in 0..120 {
            let path = format!("/fast{}/{i}", i % 2);
            if get(i, path.clone()).await != path {
                wrong_at.push(i);
            }
        }
        eprintln!(
            "stray bytes, gap {gap_ms} ms, back to back: {} of 120 answers were not their own (at {wrong_at:?})",
            wrong_at.len()
        );
        if let Some(first) = wrong_at.first() {
            assert!(
                wrong_at.iter().all(|i| *i <= first + 3),
                "gap {gap_ms} ms: answers went astray again after the upstream was caught: {wrong_at:?}"
            );
        }

        upstream.all_strays_written().await;
        let mut wrong = Vec::new();
        for i in 0..40 {
            let path = format!("/user{}/{i}", i % 2);
            let body = get(i, path.clone()).await;
            if body != path {
                wrong.push((path, body));
            }
            upstream.all_strays_written().await;
        }
        assert!(
            wrong.is_empty(),
            "gap {gap_ms} ms: answers that were not the request's own: {wrong:?}"
        );
        gate.stop().await;
        upstream.task.abort();
    }
}
