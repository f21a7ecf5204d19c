//! TLS termination over real sockets: HTTP/2 by ALPN, and certificates reloaded without a restart.

use std::time::Duration;

use reqwest::StatusCode;

use crate::support::*;

/// A TLS connection to the gate on `port` (HTTP/1.1 by ALPN), trusting `root_der`.
async fn tls_connect(port: u16, root_der: &[u8]) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    client_trusting(root_der).connect(name, tcp).await.unwrap()
}

/// Writes `request` over TLS (HTTP/1.1 by ALPN) and reads until the gate closes the connection (bounded).
async fn tls_exchange_until_closed(port: u16, root_der: &[u8], request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = tls_connect(port, root_der).await;
    tls.write_all(request).await.unwrap();
    let mut bytes = Vec::new();
    // A peer that closes without close_notify is fine here: what arrived is what counts.
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut bytes))
        .await
        .expect("the gate closes the connection");
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `/_logto/healthz` over TLS (HTTP/1.1 by ALPN, trusting the certificate at `cert`), expecting 200.
async fn healthz_over_tls(port: u16, cert: &std::path::Path) {
    let request = b"GET /_logto/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let answer = tls_exchange_until_closed(port, &der_of(cert), request).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// A gate serving over TLS only (a throwaway certificate; `server_lines` added to `[server]`, `extra` to the end of
/// the configuration), with its IdP and upstream. Not waited for over plain HTTP: connections wait in the listener's
/// backlog until the workers take them.
struct TlsGate {
    gate: TestGate,
    cert: std::path::PathBuf,
    _idp: Idp,
    _upstream: Upstream,
    _dir: tempfile::TempDir,
}

impl TlsGate {
    async fn start(server_lines: &str, extra: &str) -> TlsGate {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = make_cert(dir.path(), "gate");
        let idp = Idp::start(IdpOptions::default());
        let upstream = Upstream::start().await;
        let line: &'static str = Box::leak(
            format!(
                "{server_lines}\ntls_cert_file = {:?}\ntls_key_file = {:?}",
                cert.display().to_string(),
                key.display().to_string()
            )
            .into_boxed_str(),
        );
        let gate = TestGate::start_unready(
            idp.endpoint().as_str(),
            &upstream.url(),
            "",
            extra,
            |t| in_server(line)(t).replace("public_url = \"http://", "public_url = \"https://"),
            |public| idp.register_client(APP_ID, APP_SECRET, &public.replace("http://", "https://")),
        )
        .await;
        TlsGate {
            gate,
            cert,
            _idp: idp,
            _upstream: upstream,
            _dir: dir,
        }
    }
}

#[tokio::test]
async fn tls_termination_with_h2_by_alpn_and_certificates_reloaded_without_restart() {
    if !have_tool("openssl", &["/usr/bin/openssl"], "openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert_a, key_a) = make_cert(dir.path(), "first");
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::copy(&cert_a, &cert_path).unwrap();
    std::fs::copy(&key_a, &key_path).unwrap();
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let public = format!("https://127.0.0.1:{port}");
    idp.register_client(APP_ID, APP_SECRET, &public);
    let toml = gate_toml(&public, &upstream.url(), &idp.endpoint(), "", "").replacen(
        "[server]\n",
        &format!(
            "[server]\ntls_cert_file = {:?}\ntls_key_file = {:?}\n",
            cert_path.display().to_string(),
            key_path.display().to_string()
        ),
        1,
    );
    let config = logto_gate::Config::from_toml_str(&toml, Vec::new()).unwrap();
    let task = tokio::spawn(logto_gate::run_with_listener(config, listener, std::future::pending()));

    let client = |cert: &std::path::Path| {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(cert).unwrap()).unwrap())
            .tls_info(true)
            .build()
            .unwrap()
    };
    let peer_cert = |r: &reqwest::Response| {
        r.extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|t| t.peer_certificate().map(<[u8]>::to_vec))
    };
    let first = client(&cert_a);
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    let resp = loop {
        match first.get(format!("{public}/_logto/healthz")).send().await {
            Ok(r) => break r,
            Err(e) => eprintln!("TLS not up yet: {e}"),
        }
        assert!(std::time::Instant::now() < deadline, "TLS listener not up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2, "h2 negotiated by ALPN");
    assert_eq!(peer_cert(&resp), Some(der_of(&cert_a)));

    // Request smuggling is checked on the decrypted stream too.
    let smuggled = tls_exchange_until_closed(
        port,
        &der_of(&cert_a),
        b"POST /upload HTTP/1.1\r\nHost: a\r\nAccept: application/json\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert!(smuggled.starts_with("HTTP/1.1 400 "), "{smuggled}");
    assert!(
        smuggled.contains("both Content-Length and Transfer-Encoding"),
        "{smuggled}"
    );

    // A body by length is read by the front inside TLS too: dropped after the early answer (the health check
    // reads none), and the next request answered on the same connection.
    let kept = tls_exchange_until_closed(
        port,
        &der_of(&cert_a),
        b"POST /_logto/healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
          GET /_logto/healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(kept.matches("HTTP/1.1 200 ").count(), 2, "{kept}");

    // cert-manager replaces the files: new handshakes get the new certificate, no restart.
    let (cert_b, key_b) = make_cert(dir.path(), "second");
    std::fs::copy(&key_b, &key_path).unwrap();
    std::fs::copy(&cert_b, &cert_path).unwrap();
    let second = client(&cert_b);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(r) = second.get(format!("{public}/_logto/healthz")).send().await {
            assert_eq!(peer_cert(&r), Some(der_of(&cert_b)));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The connection made before the swap keeps working.
    assert_eq!(
        first
            .get(format!("{public}/_logto/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    task.abort();
}

#[tokio::test]
async fn a_burst_of_tls_connections_is_spread_over_the_workers() {
    // Handshakes and encryption cost CPU: a burst of TLS connections (a load balancer's pool) goes to the workers
    // serving the fewest, never to one alone (`placement`), which the per-worker gauge shows.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if !have_tool("openssl", &["/usr/bin/openssl"], "openssl") {
        return;
    }
    let metrics_port = free_port();
    let tls = TlsGate::start(
        &format!("workers = 2\nmetrics_listen = \"127.0.0.1:{metrics_port}\""),
        "",
    )
    .await;
    let (gate, cert) = (&tls.gate, &tls.cert);
    let root = der_of(cert);
    let burst = (0..12).map(|_| tls_connect(gate.port, &root));
    let mut held = Vec::new();
    for mut tls in futures_util::future::join_all(burst).await {
        tls.write_all(b"GET /_logto/healthz HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut answer = [0u8; 512];
        let n = tls.read(&mut answer).await.unwrap();
        assert!(
            answer[..n].starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&answer[..n])
        );
        held.push(tls);
    }
    wait_for_status(&format!("http://127.0.0.1:{metrics_port}/metrics"), 200).await;
    let per_worker = crate::operations::worker_connections(metrics_port, 2).await;
    assert_eq!(per_worker.iter().sum::<f64>(), 12.0, "{per_worker:?}");
    assert!(per_worker.iter().all(|&n| n >= 5.0), "unbalanced: {per_worker:?}");
    drop(held);
}

#[tokio::test]
async fn a_websocket_inside_tls_echoes_both_ways_and_ends() {
    // The tunnel's client side is a TLS stream here (src/proxy/tunnel.rs writes into rustls, which may keep records
    // back while the socket is full). Short messages, then sixteen 1 MiB messages sent without waiting for their
    // echoes; every echo must come back whole.
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    if !have_tool("openssl", &["/usr/bin/openssl"], "openssl") {
        return;
    }
    // The tunnel's route is public, so no sign-in is needed to reach it.
    let tls_gate = TlsGate::start("", "[[rules]]\nprefix = \"/ws\"\nallow = \"public\"\n").await;
    let (gate, cert) = (&tls_gate.gate, &tls_gate.cert);
    let tls = tls_connect(gate.port, &der_of(cert)).await;
    let request = format!("ws://127.0.0.1:{}/ws", gate.port)
        .into_client_request()
        .unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(request, tls)
        .await
        .expect("a WebSocket inside TLS");
    assert_eq!(resp.status().as_u16(), 101);
    let long = "x".repeat(100_000);
    for text in ["one", "two", long.as_str()] {
        ws.send(Message::text(text)).await.unwrap();
        let echo = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an echo")
            .expect("the tunnel is still open")
            .expect("no error");
        assert!(echo.into_text().unwrap().as_str() == text, "the echo differs");
    }
    echo_sixteen_megabytes(ws).await;
}

#[tokio::test]
async fn an_http2_header_block_left_unfinished_inside_tls_closes_its_connection() {
    // The frames are followed in the decrypted stream (`src/http2.rs`): a HEADERS frame without END_HEADERS over
    // HTTP/2 by ALPN, and nothing after it, is cut off at the header read timeout, long before the idle timeout.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if !have_tool("openssl", &["/usr/bin/openssl"], "openssl") {
        return;
    }
    let tls_gate = TlsGate::start("header_read_timeout = \"1s\"\nidle_timeout = \"60s\"", "").await;
    let (gate, cert) = (&tls_gate.gate, &tls_gate.cert);
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(der_of(cert)))
        .unwrap();
    let mut config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", gate.port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // The preface, empty SETTINGS and their acknowledgement, then HEADERS (GET, https, /, :authority) unfinished.
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    hello.extend_from_slice(&[0, 0, 0, 4, 1, 0, 0, 0, 0]);
    hello.extend_from_slice(&[0, 0, 6, 1, 1, 0, 0, 0, 1, 0x82, 0x87, 0x84, 0x01, 1, b'x']);
    tls.write_all(&hello).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut bytes = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), tls.read_to_end(&mut bytes))
        .await
        .expect("an unfinished header block inside TLS kept its connection open");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_connection_that_sends_no_handshake_makes_room_at_max_connections() {
    // Before its handshake a TLS connection waits like one before its first request: idle, it is closed to make
    // room rather than held for the header read timeout (30 s).
    use tokio::io::AsyncReadExt;
    if !have_tool("openssl", &["/usr/bin/openssl"], "openssl") {
        return;
    }
    let tls_gate = TlsGate::start("max_connections = 1", "").await;
    let (gate, cert) = (&tls_gate.gate, &tls_gate.cert);
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", gate.port)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), healthz_over_tls(gate.port, cert))
        .await
        .expect("the new client was served within 10 s");
    let mut nothing = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut nothing)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "the silent connection was closed: {closed:?}"
    );
}

#[tokio::test]
async fn a_connection_that_sends_no_handshake_does_not_hold_the_shutdown() {
    if !have_tool("openssl", &["/usr/bin/openssl"], "openssl") {
        return;
    }
    let tls_gate = TlsGate::start("", "").await;
    let _silent = tokio::net::TcpStream::connect(("127.0.0.1", tls_gate.gate.port))
        .await
        .unwrap();
    // Taken by a worker (its handshake waits), which the served request shows.
    healthz_over_tls(tls_gate.gate.port, &tls_gate.cert).await;
    let started = std::time::Instant::now();
    tls_gate.gate.stop().await;
    // The drain would otherwise wait for the handshake's header read timeout (30 s), past the shutdown timeout.
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

/// The head of `answer` (an HTTP/1.1 response as text): its status and its `Location`.
fn status_and_location(answer: &str) -> (u16, Option<String>) {
    let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let head = answer.split("\r\n\r\n").next().unwrap_or("");
    let location = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case("location")))
        .map(|(_, v)| v.trim().to_owned());
    (status, location)
}

/// `server.http_redirect_listen`: every plain-HTTP request (any method, any target form) is answered 308 to the same
/// path and query over https, on a host the gate serves or else `public_url`'s (never the client's choice), and the
/// connection closes; the https URL reaches the gate; nothing reaches the app; a head that never ends is cut off at
/// the header read timeout and an oversized one refused.
#[tokio::test]
async fn plain_http_is_sent_to_the_same_url_over_https() {
    if !have_tool("openssl", &["/usr/bin/openssl"], "openssl") {
        return;
    }
    let port = free_port();
    let lines: &'static str = Box::leak(
        format!("http_redirect_listen = \"127.0.0.1:{port}\"\nheader_read_timeout = \"1s\"\nmax_header_bytes = 16384")
            .into_boxed_str(),
    );
    let g = TlsGate::start(
        lines,
        "[[upstreams]]\nhost = \"ci.example.test\"\nurl = \"http://127.0.0.1:9\"\n\
         [[upstreams]]\nhost = \"grafana.example.test\"\nurl = \"http://127.0.0.1:9\"\n",
    )
    .await;
    eventually("the redirect listener", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    let public = format!("https://127.0.0.1:{}", g.gate.port);
    for (request, want) in [
        (
            format!("GET /private/x?y=1&z=%2F HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"),
            format!("{public}/private/x?y=1&z=%2F"),
        ),
        (
            "POST /form HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n\r\na=1".to_owned(),
            format!("{public}/form"),
        ),
        (
            "GET /d/ HTTP/1.1\r\nHost: Grafana.Example.Test.\r\n\r\n".to_owned(),
            format!("https://grafana.example.test:{}/d/", g.gate.port),
        ),
        (
            "GET /build HTTP/1.1\r\nHost: ci.example.test:80\r\n\r\n".to_owned(),
            format!("https://ci.example.test:{}/build", g.gate.port),
        ),
        // Hosts the gate does not serve, and the target's own authority: public_url's origin.
        (
            "GET //evil.example/x HTTP/1.1\r\nHost: evil.example\r\n\r\n".to_owned(),
            format!("{public}//evil.example/x"),
        ),
        (
            "GET /x HTTP/1.1\r\nHost: ci.example.test.evil.example\r\n\r\n".to_owned(),
            format!("{public}/x"),
        ),
        (
            "GET http://evil.example/x HTTP/1.1\r\nHost: evil.example\r\n\r\n".to_owned(),
            format!("{public}/x"),
        ),
        (
            "OPTIONS * HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_owned(),
            format!("{public}/"),
        ),
        ("GET /old HTTP/1.0\r\n\r\n".to_owned(), format!("{public}/old")),
    ] {
        // One request per connection: the gate closes it after the answer (read until then, bounded).
        let answer = exchange_until_closed(port, request.as_bytes()).await;
        assert_eq!(status_and_location(&answer), (308, Some(want)), "{request:?}\n{answer}");
        // HTTP/1.0 closes without saying so.
        let says_close = answer.to_ascii_lowercase().contains("\r\nconnection: close\r\n");
        assert_eq!(says_close, !request.contains("HTTP/1.0"), "{answer}");
    }
    // The https URL is the gate's: an API client without a session gets its 401 there.
    let answer = tls_exchange_until_closed(
        g.gate.port,
        &der_of(&g.cert),
        b"GET /private/x?y=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert_eq!(g._upstream.count(), 0, "a redirected request reached the app");

    // A head that never ends: closed at the header read timeout (1 s here), not held.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "a head that never ended kept its connection");
    // An oversized head is refused, not redirected.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    let answer = exchange_until_closed(port, big.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
}
