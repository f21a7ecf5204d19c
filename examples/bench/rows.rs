//! The benchmark's other rows: HTTP/1.1 and HTTP/2 inside TLS and a large download (h2load, from Debian's
//! `nghttp2-client`), and the memory each idle connection costs (HTTP/1.1 keep-alive, plain and inside TLS, HTTP/2,
//! WebSocket tunnels).

use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What one h2load run measured.
#[derive(Clone, Copy, Default)]
pub struct Load {
    pub rps: f64,
    /// Response bytes (with their heads) per second, in MB (10^6 bytes).
    pub mb_per_s: f64,
    /// Runs cut off after a minute before this one: anything measured around the call covers them too.
    pub cut_off: u32,
}

/// Runs h2load with `args` against `url` (TLS certificates are not verified), with the session cookie if any.
pub fn h2load(args: &[&str], url: &str, cookie: Option<&str>) -> Load {
    h2load_wrapped(args, url, cookie, |cmd| cmd)
}

/// As [`h2load`], with each attempt's command passed through `wrap` first (to run it under `perf stat`).
pub fn h2load_wrapped(args: &[&str], url: &str, cookie: Option<&str>, wrap: impl Fn(Command) -> Command) -> Load {
    // h2load's duration mode (-D) now and then never ends after a server closed a connection it was reusing (both
    // proxies close HTTP/1.1 connections after 1000 requests): it keeps one connection busy past the duration. Such
    // a run is cut off after a minute and run again, at most twice.
    for cut_off in 0..3 {
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", "60", "h2load", "-t1"]).args(args);
        if let Some(c) = cookie {
            cmd.args(["-H", &format!("cookie: {c}")]);
        }
        cmd.arg(url);
        let out = wrap(cmd).output().expect("h2load (apt-get install nghttp2-client)");
        if out.status.code() == Some(124) || out.status.code() == Some(137) {
            eprintln!("warning: {url}: h2load did not end within a minute; running it again");
            continue;
        }
        return Load {
            cut_off,
            ..h2load_report(&String::from_utf8_lossy(&out.stdout), url)
        };
    }
    Load {
        cut_off: 3,
        ..Load::default()
    }
}

/// The rates in an h2load report; warns about failed requests and other statuses than 2xx.
fn h2load_report(text: &str, url: &str) -> Load {
    let mut load = Load::default();
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("finished in ") {
            // "finished in 5.00s, 12345.67 req/s, 1.23MB/s"
            let parts: Vec<&str> = rest.split(", ").collect();
            load.rps = parts
                .get(1)
                .and_then(|p| p.strip_suffix(" req/s"))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0.0);
            load.mb_per_s = parts.get(2).map_or(0.0, |p| rate_mb(p));
        } else if let Some(rest) = t.strip_prefix("status codes: ") {
            if !rest.starts_with("0 2xx") && rest.split(", ").skip(1).any(|c| !c.starts_with("0 ")) {
                eprintln!("warning: {url}: {t}");
            }
        } else if t.starts_with("requests: ") && !t.contains(" 0 failed") {
            eprintln!("warning: {url}: {t}");
        }
    }
    load
}

/// h2load's rate ("208.00MB/s", "980.5KB/s", "1.02GB/s") in MB per second.
fn rate_mb(text: &str) -> f64 {
    let number = |suffix: &str| text.strip_suffix(suffix).and_then(|n| n.parse::<f64>().ok());
    number("GB/s")
        .map(|n| n * 1000.0)
        .or_else(|| number("MB/s"))
        .or_else(|| number("KB/s").map(|n| n / 1000.0))
        .or_else(|| number("B/s").map(|n| n / 1e6))
        .unwrap_or(0.0)
}

/// A WebSocket echo server for the tunnels, in a process of its own (this benchmark run with `--websocket-echo`),
/// so that its descriptors do not count against the clients' limit; its port, and the process.
pub fn websocket_echo_process() -> (u16, std::process::Child) {
    use std::io::BufRead;
    let mut child = Command::new(std::env::current_exe().expect("the benchmark's path"))
        .arg("--websocket-echo")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the WebSocket echo process");
    let mut line = String::new();
    let stdout = child.stdout.take().expect("stdout");
    std::io::BufReader::new(stdout).read_line(&mut line).expect("its port");
    (line.trim().parse().expect("a port"), child)
}

/// Serves WebSocket echo on a free port, printing the port, until killed.
pub async fn serve_websocket_echo() {
    let port = websocket_echo().await;
    println!("{port}");
    std::future::pending::<()>().await;
}

/// A WebSocket echo server on a free port.
async fn websocket_echo() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                use futures_util::{SinkExt, StreamExt};
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_text() && ws.send(message).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// The resident memory of processes, in KiB.
pub fn rss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse::<u64>().ok()))
        })
        .sum()
}

/// The kinds of idle connection whose memory is measured.
#[derive(Clone, Copy, Debug)]
pub enum Idle {
    /// HTTP/1.1 kept alive after one request.
    Http1,
    /// HTTP/1.1 inside TLS (by ALPN), kept alive after one request.
    Http1Tls,
    /// HTTP/1.1 kept alive after one `POST` with a small body (the static upstream answers 405; what counts is that
    /// a request with a body went through).
    Http1Post,
    /// The same with the body sent chunked.
    Http1Chunked,
    /// HTTP/2 (prior knowledge, no TLS) after one request.
    Http2,
    /// A WebSocket tunnel after one message each way.
    WebSocket,
}

/// Something held open until dropped (its contents are never read, only kept).
#[allow(dead_code)]
pub enum Held {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    H2(hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>),
    Ws(Box<tokio_tungstenite::WebSocketStream<TcpStream>>),
}

/// Opens one idle connection of `kind` to `port` (the WebSocket path `/ws/`, any other `/index.html`), after its
/// one exchange; `tls` connects [`Idle::Http1Tls`].
pub async fn open(kind: Idle, port: u16, cookie: Option<&str>, tls: &tokio_rustls::TlsConnector) -> Held {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    match kind {
        Idle::Http1 | Idle::Http1Post | Idle::Http1Chunked => {
            let mut stream = stream;
            http1_exchange(&mut stream, cookie, kind).await;
            Held::Tcp(stream)
        }
        Idle::Http1Tls => {
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
            let mut stream = tls.connect(name, stream).await.expect("TLS handshake");
            http1_exchange(&mut stream, cookie, Idle::Http1).await;
            Held::Tls(Box::new(stream))
        }
        Idle::Http2 => {
            use http_body_util::BodyExt;
            let (mut sender, conn) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(stream),
            )
            .await
            .expect("h2 handshake");
            tokio::spawn(conn);
            let mut request = http::Request::get(format!("http://127.0.0.1:{port}/index.html"));
            if let Some(c) = cookie {
                request = request.header("cookie", c);
            }
            let resp = sender
                .send_request(request.body(http_body_util::Empty::new()).expect("request"))
                .await
                .expect("h2 request");
            assert!(resp.status().is_success(), "h2: {}", resp.status());
            let _ = resp.into_body().collect().await;
            Held::H2(sender)
        }
        Idle::WebSocket => {
            use futures_util::{SinkExt, StreamExt};
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let mut request = format!("ws://127.0.0.1:{port}/ws/")
                .into_client_request()
                .expect("request");
            if let Some(c) = cookie {
                request.headers_mut().insert("cookie", c.parse().expect("cookie"));
            }
            let (mut ws, _) = tokio_tungstenite::client_async(request, stream)
                .await
                .expect("websocket");
            ws.send("ping".into()).await.expect("send");
            let _ = ws.next().await;
            Held::Ws(Box::new(ws))
        }
    }
}

/// Sends one keep-alive request for the small page (a `GET`, or with `post` a `POST` with an 11-byte body) and reads
/// its answer.
async fn http1_exchange(stream: &mut (impl AsyncRead + AsyncWrite + Unpin), cookie: Option<&str>, kind: Idle) {
    let cookie = cookie.map(|c| format!("Cookie: {c}\r\n")).unwrap_or_default();
    let request = match kind {
        Idle::Http1Post => {
            format!("POST /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\n{cookie}Content-Length: 11\r\n\r\nhello=world")
        }
        Idle::Http1Chunked => format!(
            "POST /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\n{cookie}Transfer-Encoding: chunked\r\n\r\n\
             b\r\nhello=world\r\n0\r\n\r\n"
        ),
        _ => format!("GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\n{cookie}\r\n"),
    };
    stream.write_all(request.as_bytes()).await.expect("write");
    let expected = match kind {
        Idle::Http1Post | Idle::Http1Chunked => "http/1.1 405",
        _ => "http/1.1 200",
    };
    read_http1_answer(stream, expected).await;
}

/// Reads one HTTP/1.1 answer framed by `Content-Length`, whose head starts with `expected` (lowercase).
async fn read_http1_answer(stream: &mut (impl AsyncRead + Unpin), expected: &str) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed before an answer");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            assert!(head.starts_with(expected), "{head}");
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return;
            }
        }
    }
}

/// How much more memory `pids` hold with `n` idle connections of `kind` open to `port`, per connection, in KiB.
/// Measured once the connections have sat idle for two seconds.
pub async fn per_idle_connection(
    kind: Idle,
    pids: &[u32],
    port: u16,
    cookie: Option<&str>,
    n: usize,
    tls: &tokio_rustls::TlsConnector,
) -> f64 {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pids);
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(open(kind, port, cookie, tls).await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pids);
    drop(held);
    after.saturating_sub(before) as f64 / n as f64
}
