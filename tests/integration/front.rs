//! The HTTP/1.1 front (`src/http1/server.rs`) over real sockets: the requests it answers itself (bodies by
//! `Content-Length` or chunked included), the connection handed to hyper in the middle when a request needs it (a
//! body in another coding, HTTP/1.0, a malformed head), and what the client sees either way: answers in order, framed by the gate, dated,
//! closed when asked, a request dropped when its client goes, and a body the answer came before never served.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// The status codes of every answer in `text`, in order.
fn statuses(text: &str) -> Vec<&str> {
    text.match_indices("HTTP/1.")
        .map(|(i, _)| &text[i + 9..i + 12])
        .collect()
}

fn get(path: &str, cookie: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: a\r\nCookie: logto_gate={cookie}\r\nAccept: application/json\r\n{extra}\r\n")
}

/// The paths the upstream saw after its first `skip` requests.
fn paths_after(s: &Stack, skip: usize) -> Vec<String> {
    s.upstream.seen().into_iter().skip(skip).map(|seen| seen.path).collect()
}

#[tokio::test]
async fn pipelined_requests_and_bodies_are_answered_in_order_on_either_server() {
    let s = Stack::start().await;
    let (_, cookie) = s.signed_in().await;
    let before = s.upstream.count();
    let post = |path: &str, framing: &str, body: &str| {
        format!("POST {path} HTTP/1.1\r\nHost: a\r\nCookie: logto_gate={cookie}\r\n{framing}\r\n\r\n{body}")
    };
    // All in one write: two requests for the front, a body by length and a chunked one (read by the front, the
    // next head right behind each), one the front does not serve (an expectation with no body, handed to hyper
    // with what follows it), a chunked body hyper then reads, and one more that hyper serves, asking to close.
    let all = get("/a", &cookie, "")
        + &get("/b", &cookie, "")
        + &post("/upload", "Content-Length: 5", "hello")
        + &post("/upload", "Transfer-Encoding: chunked", "4\r\nabcd\r\n0\r\n\r\n")
        + &get("/h", &cookie, "Expect: 100-continue\r\n")
        + &post("/upload", "Transfer-Encoding: chunked", "3\r\nabc\r\n0\r\n\r\n")
        + &get("/c", &cookie, "Connection: close\r\n");
    let text = exchange_until_closed(s.gate.port, all.as_bytes()).await;
    assert_eq!(statuses(&text), ["200"; 7], "{text}");
    assert!(
        text.contains("\"bytes\":5") && text.contains("\"bytes\":4") && text.contains("\"bytes\":3"),
        "every body reached the upstream whole: {text}"
    );
    assert_eq!(
        paths_after(&s, before),
        ["/a", "/b", "/upload", "/upload", "/h", "/upload", "/c"]
    );
}

#[tokio::test]
async fn a_body_the_answer_came_before_is_never_served_as_requests() {
    // A POST the gate answers without reading its body (no session: 401): whatever the body says, even signed-in
    // requests, is dropped as the body it is, and the connection goes on after the body's end.
    let s = Stack::start().await;
    let (_, cookie) = s.signed_in().await;
    let before = s.upstream.count();
    let smuggled = get("/admin", &cookie, "").repeat(40);
    let mut stream = TcpStream::connect(("127.0.0.1", s.gate.port)).await.unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: a\r\nAccept: application/json\r\nContent-Length: {}\r\n\r\n",
        smuggled.len()
    );
    // The head and the body's first 100 bytes, then the rest once the answer is read.
    stream.write_all((head + &smuggled[..100]).as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let (first, _) = read_answer(&mut stream, &mut buf, false).await;
    assert!(first.starts_with("http/1.1 401"), "{first}");
    assert!(!first.contains("connection: close"), "the connection is kept: {first}");
    let rest = smuggled[100..].to_owned() + &get("/after", &cookie, "Connection: close\r\n");
    stream.write_all(rest.as_bytes()).await.unwrap();
    let (second, _) = read_answer(&mut stream, &mut buf, false).await;
    assert!(second.starts_with("http/1.1 200"), "{second}");
    let mut tail = Vec::new();
    stream.read_to_end(&mut tail).await.unwrap();
    assert!(buf.is_empty() && tail.is_empty(), "nothing more is answered");
    assert_eq!(paths_after(&s, before), ["/after"]);
}

#[tokio::test]
async fn a_client_expecting_100_continue_is_told_only_when_its_body_is_wanted() {
    let s = Stack::start().await;
    let (_, cookie) = s.signed_in().await;
    let expecting = |cookie: &str| {
        format!(
            "POST /upload HTTP/1.1\r\nHost: a\r\nAccept: application/json\r\nCookie: logto_gate={cookie}\r\n\
             Content-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
    };
    // Signed in: the head alone, then the body once told to send it (RFC 9110 §10.1.1), and the answer.
    let mut stream = TcpStream::connect(("127.0.0.1", s.gate.port)).await.unwrap();
    stream.write_all(expecting(&cookie).as_bytes()).await.unwrap();
    let mut interim = [0u8; 25];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut interim))
        .await
        .expect("told to continue")
        .unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"hello").await.unwrap();
    let mut buf = Vec::new();
    let (head, body) = read_answer(&mut stream, &mut buf, false).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("\"bytes\":5"), "{head}");

    // Without a session: refused at once, never told to continue, and closed (the client may never send the body).
    let text = exchange_until_closed(s.gate.port, expecting("none").as_bytes()).await;
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    assert!(text.to_ascii_lowercase().contains("connection: close"), "{text}");
    assert!(!text.contains("100 Continue"), "{text}");
}

#[tokio::test]
async fn curl_uploading_two_megabytes_is_told_to_continue_and_served() {
    // curl itself: over 1 MiB, or of a size it does not know (from a pipe, which it sends chunked), it sends
    // `Expect: 100-continue` and waits for the interim answer (up to a second) before the body.
    if !have_tool("curl", &["/usr/bin/curl"], "curl") {
        return;
    }
    let s = Stack::start().await;
    let (_, cookie) = s.signed_in().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("upload.bin");
    std::fs::write(&file, vec![7u8; 2 << 20]).unwrap();
    for chunked in [false, true] {
        let mut curl = tokio::process::Command::new("/usr/bin/curl");
        curl.args(["-sS", "-v", "--max-time", "20"]);
        if chunked {
            curl.args(["-X", "POST", "-T", "-"])
                .stdin(std::fs::File::open(&file).unwrap());
        } else {
            curl.arg("--data-binary").arg(format!("@{}", file.display()));
        }
        let out = curl
            .args([
                "-H",
                &format!("Cookie: logto_gate={cookie}"),
                "-H",
                "Accept: application/json",
            ])
            .arg(format!("{}/upload", s.gate.url()))
            .output()
            .await
            .unwrap();
        let (body, trace) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{trace}");
        assert_eq!(trace.contains("Transfer-Encoding: chunked"), chunked, "{trace}");
        assert!(trace.contains("Expect: 100-continue"), "curl asked: {trace}");
        assert!(
            trace.contains("HTTP/1.1 100 Continue"),
            "the gate told it to continue: {trace}"
        );
        assert!(body.contains(&format!("\"bytes\":{}", 2 << 20)), "{body}");
    }
}

#[tokio::test]
async fn an_expectation_is_met_by_the_gate_and_never_reaches_the_upstream() {
    // An upstream that knows no expectations may refuse a request carrying one (417); the gate meets it itself.
    let s = Stack::start().await;
    let (_, cookie) = s.signed_in().await;
    let before = s.upstream.count();
    let post = |framing: &str, body: &str| {
        format!(
            "POST /upload HTTP/1.1\r\nHost: a\r\nCookie: logto_gate={cookie}\r\nAccept: application/json\r\n\
             Expect: 100-continue\r\n{framing}\r\n\r\n{body}"
        )
    };
    // On the front, a body by length and a chunked one (their clients did not wait to be told); handed to hyper's
    // server, a bodiless request with an expectation, then a body hyper reads.
    let all = post("Content-Length: 5", "hello")
        + &post("Transfer-Encoding: chunked", "4\r\nabcd\r\n0\r\n\r\n")
        + &get("/h", &cookie, "Expect: 100-continue\r\n")
        + &post("Content-Length: 3\r\nConnection: close", "abc");
    let text = exchange_until_closed(s.gate.port, all.as_bytes()).await;
    assert_eq!(
        statuses(&text).into_iter().filter(|s| *s != "100").collect::<Vec<_>>(),
        ["200"; 4],
        "{text}"
    );
    assert!(
        text.contains("100 Continue"),
        "the clients were told to continue: {text}"
    );
    // HTTP/2 (prior knowledge): hyper's server, and a body through hyper's client.
    let tcp = TcpStream::connect(("127.0.0.1", s.gate.port)).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("an HTTP/2 handshake");
    tokio::spawn(conn);
    let request = hyper::Request::post(format!("http://127.0.0.1:{}/upload", s.gate.port))
        .header("cookie", format!("logto_gate={cookie}"))
        .header("accept", "application/json")
        .header("expect", "100-continue")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"hi")))
        .unwrap();
    let answer = sender.send_request(request).await.expect("an answer");
    assert_eq!(answer.status(), 200);

    let seen: Vec<_> = s.upstream.seen().into_iter().skip(before).collect();
    assert_eq!(seen.len(), 5, "{seen:?}");
    for request in &seen {
        assert_eq!(request.header("expect"), None, "{request:?}");
    }
}

#[tokio::test]
async fn a_large_body_the_answer_came_before_is_read_to_its_end_before_closing() {
    // A client that sends its whole 8 MiB body before reading (as curl without `Expect` does) gets the early answer
    // whole: the gate reads and drops the body's rest, then closes, instead of resetting a connection with unread
    // bytes (which can destroy the answer on its way).
    let s = Stack::start().await;
    let body = vec![b'x'; 8 << 20];
    let mut stream = TcpStream::connect(("127.0.0.1", s.gate.port)).await.unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: a\r\nAccept: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), stream.write_all(&body))
        .await
        .expect("the gate reads the body it does not want")
        .expect("the connection is not reset under the client");
    let text = tokio::time::timeout(Duration::from_secs(10), async {
        let mut all = Vec::new();
        stream.read_to_end(&mut all).await.map(|_| all)
    })
    .await
    .expect("the gate answers and closes")
    .expect("the answer arrives whole, not reset");
    let text = String::from_utf8_lossy(&text).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 401"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
}

#[tokio::test]
async fn smuggling_after_requests_the_front_answered_is_still_refused() {
    // The request-smuggling check starts where the front hands over: the ambiguous head is the third on the
    // connection but the first hyper reads, and is caught there.
    let s = Stack::start().await;
    let (_, cookie) = s.signed_in().await;
    let before = s.upstream.count();
    let all = get("/a", &cookie, "")
        + &get("/b", &cookie, "")
        + &format!(
            "POST /upload HTTP/1.1\r\nHost: a\r\nCookie: logto_gate={cookie}\r\nContent-Length: 40\r\n\
             Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        + &get("/admin", &cookie, "");
    let text = exchange_until_closed(s.gate.port, all.as_bytes()).await;
    assert_eq!(statuses(&text), ["200", "200", "400"], "{text}");
    assert!(text.contains("both Content-Length and Transfer-Encoding"), "{text}");
    assert_eq!(
        paths_after(&s, before),
        ["/a", "/b"],
        "nothing after the ambiguous head was served"
    );
}

/// One answer read off `stream`: its head (lowercased) and body, framed as the head says; `head_only` for a HEAD.
pub(crate) async fn read_answer(stream: &mut TcpStream, buf: &mut Vec<u8>, head_only: bool) -> (String, Vec<u8>) {
    async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) {
        let mut chunk = [0u8; 16384];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        assert!(
            n > 0,
            "the gate closed in the middle of an answer: {}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        fill(stream, buf).await;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    buf.drain(..end);
    let field = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
    };
    let mut body = Vec::new();
    if head_only {
        return (head, body);
    }
    if let Some(length) = field("content-length") {
        let length: usize = length.parse().unwrap();
        while buf.len() < length {
            fill(stream, buf).await;
        }
        body.extend(buf.drain(..length));
    } else {
        assert_eq!(field("transfer-encoding").as_deref(), Some("chunked"), "{head}");
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                fill(stream, buf).await;
            };
            let size = usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).unwrap(), 16).unwrap();
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                fill(stream, buf).await;
            }
            body.extend(buf.drain(..size));
            assert_eq!(buf.drain(..2).collect::<Vec<_>>(), b"\r\n");
            if size == 0 {
                break;
            }
        }
    }
    (head, body)
}

#[tokio::test]
async fn answers_are_framed_dated_and_closed_as_http_1_1_says() {
    let s = Stack::start().await;
    let (_, cookie) = s.signed_in().await;
    let mut stream = TcpStream::connect(("127.0.0.1", s.gate.port)).await.unwrap();
    let mut buf = Vec::new();

    // A known length is sent as Content-Length, and every answer is dated.
    stream.write_all(get("/x", &cookie, "").as_bytes()).await.unwrap();
    let (head, body) = read_answer(&mut stream, &mut buf, false).await;
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert!(head.contains("\r\ndate: "), "{head}");
    assert!(head.contains("\r\ncontent-length: "), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("\"path\":\"/x\""));

    // HEAD: the length the GET would have, and no body (the next answer starts right after the head).
    let head_request = get("/x", &cookie, "").replacen("GET", "HEAD", 1);
    stream.write_all(head_request.as_bytes()).await.unwrap();
    let (head, _) = read_answer(&mut stream, &mut buf, true).await;
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert!(head.contains("\r\ncontent-length: "), "{head}");

    // A body of unknown length (the upstream streams it) goes out chunked, whole.
    stream
        .write_all(get("/download?bytes=200000", &cookie, "").as_bytes())
        .await
        .unwrap();
    let (head, body) = read_answer(&mut stream, &mut buf, false).await;
    assert!(head.contains("\r\ntransfer-encoding: chunked\r\n"), "{head}");
    assert_eq!(body.len(), 200_000);

    // An error page from the gate itself, on the same connection.
    stream
        .write_all(b"GET /_logto/nothing-here HTTP/1.1\r\nHost: a\r\nAccept: application/json\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_answer(&mut stream, &mut buf, false).await;
    assert!(head.starts_with("http/1.1 404 not found\r\n"), "{head}");

    // `Connection: close` is answered with the same, and the connection ends.
    stream
        .write_all(get("/y", &cookie, "Connection: close\r\n").as_bytes())
        .await
        .unwrap();
    let (head, _) = read_answer(&mut stream, &mut buf, false).await;
    assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
        .await
        .expect("the gate closes after an answer to Connection: close")
        .unwrap();
    assert!(buf.is_empty() && rest.is_empty(), "nothing after the last answer");
}

/// After requests the front served, an HTTP/1.0 head is hyper's to answer, and a malformed one or one too large to
/// read is answered with the front's page (400, 431); either way the connection closes after it.
#[tokio::test]
async fn http_1_0_malformed_and_oversized_heads_after_served_requests_are_answered_and_close() {
    let s = Stack::start().await;
    let (_, cookie) = s.signed_in().await;
    let first = get("/a", &cookie, "");
    let cases = [
        // HTTP/1.0: answered as HTTP/1.0, and the connection closes.
        (
            format!("GET /b HTTP/1.0\r\nCookie: logto_gate={cookie}\r\nAccept: application/json\r\n\r\n"),
            "200",
        ),
        ("GET /b HTTP/1.1\r\nHost a\r\n\r\n".to_owned(), "400"),
        ("GET /b HTTP/1.1\r\nHost: a\r\nX: \u{1}\r\n\r\n".to_owned(), "400"),
        ("GET\t/b HTTP/1.1\r\nHost: a\r\n\r\n".to_owned(), "400"),
        // Longer than `server.max_header_bytes`, whether in the target or in the fields, or with too many fields:
        // the front's 431.
        (
            format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(70_000)),
            "431",
        ),
        (
            format!("GET /b HTTP/1.1\r\nHost: a\r\n{}\r\n", "X-Many: 1\r\n".repeat(101)),
            "431",
        ),
    ];
    for (second, status) in cases {
        let text = exchange_until_closed(s.gate.port, (first.clone() + &second).as_bytes()).await;
        assert_eq!(statuses(&text), ["200", status], "{second:.80}: {text:.400}");
        if status == "200" {
            assert!(
                text.contains("\r\n\r\n") && text.matches("HTTP/1.0 200").count() == 1,
                "{text:.400}"
            );
        }
    }
}

/// A head that cannot be read is answered as the gate answers any request it refuses, not with hyper's bare status:
/// a page naming what was wrong, a request id the person can quote, `[response_headers]`, a count in the requests
/// metric (its access line: the JSON log test), and the connection closed after it, whether it came first or after
/// requests the front served. Nothing reaches the upstream.
#[tokio::test]
async fn malformed_heads_and_overlong_targets_get_the_gates_page_id_and_count() {
    let metrics_port = free_port();
    let line: &'static str =
        Box::leak(format!("metrics_listen = \"127.0.0.1:{metrics_port}\"\nmax_header_bytes = 131072").into_boxed_str());
    let s = Stack::edited(IdpOptions::default(), "", "", |t| {
        format!(
            "{}\n[response_headers]\nStrict-Transport-Security = \"max-age=60\"\n",
            in_server(line)(t)
        )
    })
    .await;
    let (_, cookie) = s.signed_in().await;
    let seen = s.upstream.count();
    let served = get("/a", &cookie, "");
    let cases = [
        (
            "GET /b HTTP/1.1\r\nHost a\r\n\r\n".to_owned(),
            "400",
            "a header field&#39;s name",
        ),
        (
            "GET /b HTTP/1.1\r\nHost: a\r\nX: \u{1}\r\n\r\n".to_owned(),
            "400",
            "a header field&#39;s value",
        ),
        (
            "GET\t/b HTTP/1.1\r\nHost: a\r\n\r\n".to_owned(),
            "400",
            "the request method",
        ),
        (
            "GET /b HTTP/1.1\r\nHost: a\r\nX: a\r\n folded\r\n\r\n".to_owned(),
            "400",
            "starts with white space",
        ),
        (
            "GET /b c HTTP/1.1\r\nHost: a\r\n\r\n".to_owned(),
            "400",
            "one space apart",
        ),
        (
            "GET http://[::1 HTTP/1.1\r\nHost: a\r\n\r\n".to_owned(),
            "400",
            "the address (request target)",
        ),
        (
            format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(70_000)),
            "414",
            "longer than this site accepts (65534 bytes)",
        ),
    ];
    let mut ids = Vec::new();
    for (after, (head, status, says)) in [false, true]
        .into_iter()
        .flat_map(|a| cases.iter().map(move |c| (a, c)))
    {
        let sent = if after { served.clone() + head } else { head.clone() };
        let text = exchange_until_closed(s.gate.port, sent.as_bytes()).await;
        let expected: &[&str] = if after { &["200", status] } else { &[status] };
        // Status lines only: a page may name the version.
        let starts: Vec<usize> = text
            .match_indices("HTTP/1.1 ")
            .map(|(i, _)| i)
            .filter(|&i| text.as_bytes().get(i + 9).is_some_and(u8::is_ascii_digit))
            .collect();
        let found: Vec<&str> = starts.iter().map(|&i| &text[i + 9..i + 12]).collect();
        assert_eq!(found, expected, "{head:.80}: {text:.600}");
        let answer = &text[starts[starts.len() - 1]..];
        for field in [
            "content-type: text/html; charset=utf-8",
            "connection: close",
            "strict-transport-security: max-age=60",
            "x-frame-options: DENY",
        ] {
            assert!(answer.contains(field), "{field}: {head:.80}: {answer:.600}");
        }
        let id = raw_request_id(answer);
        let page = answer.split_once("\r\n\r\n").map_or("", |(_, page)| page);
        assert!(page.contains(says), "{head:.80}: {answer}");
        assert!(page.contains(&id), "the request id on the page: {answer}");
        assert!(!ids.contains(&id), "{id}");
        ids.push(id);
    }
    assert_eq!(
        s.upstream.count(),
        seen + cases.len(),
        "only the served requests reach the app"
    );
    metrics_until(
        metrics_port,
        "logto_gate_requests_total{route=\"app\",status=\"400\"} 12\n",
    )
    .await;
    metrics_until(
        metrics_port,
        "logto_gate_requests_total{route=\"app\",status=\"414\"} 2\n",
    )
    .await;
    // A head handed to hyper for its framing field, which hyper refuses (its bare 400): counted as well (its access
    // line: the JSON log test).
    for head in [
        "POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n",
        "POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
    ] {
        let text = exchange_until_closed(s.gate.port, head.as_bytes()).await;
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
    }
    metrics_until(
        metrics_port,
        "logto_gate_requests_total{route=\"app\",status=\"400\"} 14\n",
    )
    .await;
    assert_eq!(s.upstream.count(), seen + cases.len());
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_its_request_upstream() {
    let s = Stack::start().await;
    let (_, cookie) = s.signed_in().await;
    // Waiting for its answer, or in the middle of sending its body.
    let half_sent = format!(
        "POST /wait HTTP/1.1\r\nHost: a\r\nCookie: logto_gate={cookie}\r\nContent-Length: 100000\r\n\r\n{}",
        "x".repeat(50_000)
    );
    for request in [get("/wait", &cookie, ""), half_sent] {
        cancelled_upstream(&s, &request, Client::GoesAway).await;
    }
}

#[tokio::test]
async fn a_body_that_stops_coming_drops_its_request_upstream_unanswered() {
    // By length and chunked (the front), and in a coding the front does not serve (hyper's server): once nothing
    // of the body came for the idle timeout, the upstream exchange is dropped and the client's connection closed
    // without an answer, though the client stays.
    let s = Stack::start().await;
    let (_, cookie) = s.signed_in().await;
    let by_length = format!(
        "POST /wait HTTP/1.1\r\nHost: a\r\nCookie: logto_gate={cookie}\r\nContent-Length: 100\r\n\r\n{}",
        "x".repeat(50)
    );
    let chunked = format!(
        "POST /wait HTTP/1.1\r\nHost: a\r\nCookie: logto_gate={cookie}\r\nTransfer-Encoding: chunked\r\n\r\n\
         32\r\n{}\r\n",
        "x".repeat(50)
    );
    // hyper's: after a request the front hands over (an expectation with no body; the gate's own endpoint answers
    // it, the upstream never sees it).
    let handed_over = format!("GET /_logto/healthz HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n{chunked}");
    for (request, answered) in [(by_length, 0), (chunked, 0), (handed_over, 1)] {
        cancelled_upstream(&s, &request, Client::Stays { answered }).await;
    }
}

#[tokio::test]
async fn a_body_that_comes_slowly_but_steadily_is_not_cut_off() {
    // The idle timeout bounds the wait for each piece of a body, not the whole body: ten pieces 300 ms apart under
    // an idle timeout of 1 s, by length and chunked (the front), and chunked after a hand-over (hyper's server).
    let s = Stack::edited(IdpOptions::default(), "", "", in_server("idle_timeout = \"1s\"")).await;
    let (_, cookie) = s.signed_in().await;
    for (framing, handed_over) in [
        ("Content-Length: 100", false),
        ("Transfer-Encoding: chunked", false),
        ("Transfer-Encoding: chunked", true),
    ] {
        let chunked = framing.ends_with("chunked");
        let mut client = TcpStream::connect(("127.0.0.1", s.gate.port)).await.unwrap();
        let mut buf = Vec::new();
        if handed_over {
            client
                .write_all(b"GET /_logto/healthz HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n")
                .await
                .unwrap();
            let (head, _) = read_answer(&mut client, &mut buf, false).await;
            assert!(head.starts_with("http/1.1 200"), "{head}");
        }
        let head = format!("POST /upload HTTP/1.1\r\nHost: a\r\nCookie: logto_gate={cookie}\r\n{framing}\r\n\r\n");
        client.write_all(head.as_bytes()).await.unwrap();
        for _ in 0..10 {
            // The pace of a slow client, not a synchronisation.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let piece = if chunked { "a\r\n0123456789\r\n" } else { "0123456789" };
            client.write_all(piece.as_bytes()).await.unwrap();
        }
        if chunked {
            client.write_all(b"0\r\n\r\n").await.unwrap();
        }
        let (head, body) = tokio::time::timeout(Duration::from_secs(10), read_answer(&mut client, &mut buf, false))
            .await
            .expect("an answer");
        assert!(head.starts_with("http/1.1 200"), "{framing}, {handed_over}: {head}");
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("\"bytes\":100"), "{framing}, {handed_over}: {body}");
    }
}

/// What the client does once its request reached the upstream.
#[derive(Clone, Copy, PartialEq)]
enum Client {
    /// Closes its connection.
    GoesAway,
    /// Keeps its connection and sends nothing more, to a gate with an idle timeout of 1 s; `answered` requests it
    /// sent before the last are answered (200).
    Stays { answered: usize },
}

/// Sends `request` through a gate to an upstream that reads one request head and never answers, then the client
/// goes away or stays silent; asserts that the gate closes the upstream connection (and, when the client stays,
/// closes the client's without an answer to that request).
async fn cancelled_upstream(s: &Stack, request: &str, then: Client) {
    // An upstream that reads one request head, never answers, and reports when the gate closes the connection.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    let silent = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut chunk = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            head.extend_from_slice(&chunk[..n]);
        }
        let _ = seen_tx.send(());
        // Nothing more comes but the body's part the client sent: the read ends when the gate closes its side.
        while socket.read(&mut chunk).await.is_ok_and(|n| n > 0) {}
        let _ = closed_tx.send(());
    });
    // A long response timeout, so only the client can end the upstream exchange within the test.
    let gate = TestGate::start_edited(&s.idp, &upstream, "", "", |t| {
        let t = t.replace("response_timeout = \"5s\"", "response_timeout = \"60s\"");
        match then {
            Client::GoesAway => t,
            Client::Stays { .. } => in_server("idle_timeout = \"1s\"")(t),
        }
    })
    .await;
    let mut client = TcpStream::connect(("127.0.0.1", gate.port)).await.unwrap();
    client.write_all(request.as_bytes()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), seen_rx)
        .await
        .expect("the request reached the upstream")
        .unwrap();
    match then {
        Client::GoesAway => drop(client),
        Client::Stays { answered } => {
            let mut answer = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut answer)).await;
            assert!(read.is_ok(), "the stalled request was not cut off");
            let answer = String::from_utf8_lossy(&answer);
            assert_eq!(statuses(&answer), vec!["200"; answered], "{answer}");
        }
    }
    tokio::time::timeout(Duration::from_secs(5), closed_rx)
        .await
        .expect("the gate dropped the upstream exchange")
        .unwrap();
    silent.abort();
}

#[tokio::test]
async fn a_client_ending_its_stream_hangs_up_only_once_nothing_it_sent_is_waiting() {
    // A client that sends two requests and shuts its sending side while the first is in flight (as `printf | nc`
    // does). A server cannot tell that from a hang-up without writing, and (like hyper and nginx) the gate takes it
    // for one, but only once nothing the client sent is waiting: the first request is answered, since the second
    // was waiting behind it; the second, in flight when the end of the stream is read, is dropped.
    let s = Stack::start().await;
    let (_, cookie) = s.signed_in().await;
    let before = s.upstream.count();
    let mut stream = TcpStream::connect(("127.0.0.1", s.gate.port)).await.unwrap();
    let all = get("/slow?ms=300", &cookie, "") + &get("/slow?ms=300", &cookie, "");
    stream.write_all(all.as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut bytes))
        .await
        .expect("the gate answers and closes")
        .unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert_eq!(statuses(&text), ["200"], "{text}");
    assert!(s.upstream.count() > before, "the first reached the upstream");
}
