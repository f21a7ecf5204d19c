//! Running it for real: graceful shutdown, metrics, JSON logs without secrets, request ids, TLS with certificate
//! reload and HTTP/2 by ALPN, and the server's limits.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

async fn wait_exit(p: &mut GateProcess) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            return s;
        }
        assert!(std::time::Instant::now() < deadline, "the gate did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn connections_are_served_by_the_configured_number_of_worker_threads() {
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let register = |public: &str| idp.register_client(APP_ID, APP_SECRET, public);
    let gate = BinaryGate::start(
        &idp.endpoint(),
        &upstream.url(),
        "",
        in_server("workers = 3"),
        register,
        &[],
    )
    .await;
    let pid = gate.process.child.id();
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .filter(|n| n.starts_with("logto-gate-"))
        .collect();
    names.sort();
    assert_eq!(names, ["logto-gate-0", "logto-gate-1", "logto-gate-2"]);

    // Many signed-in keep-alive connections at once, whichever workers they land on: every request is served,
    // each worker using its own upstream connections.
    let b = Browser::new(&idp);
    let (_, resp) = b.navigate(&format!("{}/", gate.url())).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = b.cookie(&gate.url(), "logto_gate").unwrap();
    let before = upstream.count();
    let clients: Vec<_> = (0..24)
        .map(|i| {
            let (url, cookie) = (gate.url(), cookie.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::builder().pool_max_idle_per_host(1).build().unwrap();
                for j in 0..5 {
                    let r = client
                        .get(format!("{url}/w/{i}/{j}"))
                        .header("cookie", format!("logto_gate={cookie}"))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), StatusCode::OK);
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(upstream.count(), before + 120);
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_websockets_then_exits_0() {
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let register = |public: &str| idp.register_client(APP_ID, APP_SECRET, public);
    let mut gate = BinaryGate::start(
        &idp.endpoint(),
        &upstream.url(),
        "",
        // Several workers, whatever this machine's CPU count: every one of them must drain.
        in_server("shutdown_timeout = \"20s\"\nworkers = 3"),
        register,
        &[],
    )
    .await;
    let (port, url) = (gate.port, gate.url());
    let b = Browser::new(&idp);
    let (_, resp) = b.navigate(&format!("{url}/")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = b.cookie(&url, "logto_gate").unwrap();

    // A WebSocket and a slow request are in flight when SIGTERM arrives.
    let mut ws_req = format!("ws://127.0.0.1:{port}/ws").into_client_request().unwrap();
    ws_req
        .headers_mut()
        .insert("cookie", format!("logto_gate={cookie}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_req).await.unwrap();
    let slow = {
        let client = b.client.clone();
        let u = format!("{url}/slow?ms=1500");
        tokio::spawn(async move { client.get(u).send().await.map(|r| r.status().as_u16()) })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !upstream.seen().iter().any(|s| s.path.starts_with("/slow")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow request never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A client that connected but has not sent a byte yet.
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    gate.sigterm();
    // It is closed at once rather than waited for (the header read timeout is the default 30 s).
    let mut nothing = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut nothing)).await;
    assert!(closed.is_ok(), "a connection without a request held the drain");

    // New connections are refused once the listener closes.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the gate kept accepting connections after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The in-flight request completes.
    assert_eq!(slow.await.unwrap().unwrap(), 200);
    // The WebSocket still works until it is closed, and the gate waits for it.
    ws.send(Message::text("still here")).await.unwrap();
    let echo = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echo.into_text().unwrap().as_str(), "still here");
    assert!(
        gate.process.child.try_wait().unwrap().is_none(),
        "the gate waits for the upgraded connection"
    );
    // The close handshake as a browser does it: send Close, read until the server ends the connection.
    ws.close(None).await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), async { while ws.next().await.is_some() {} }).await;
    drop(ws);
    let started = std::time::Instant::now();
    assert_eq!(wait_exit(&mut gate.process).await.code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the gate exited only at its shutdown timeout: something did not drain"
    );
}

/// Prometheus text: `name{labels} value` lines; every value a number.
fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {l}"));
            (
                name.to_owned(),
                value.parse::<f64>().unwrap_or_else(|_| panic!("bad value in {l}")),
            )
        })
        .collect()
}

#[tokio::test]
async fn metrics_are_served_on_their_own_listener() {
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let metrics_port = free_port();
    let line: &'static str = Box::leak(format!("metrics_listen = \"127.0.0.1:{metrics_port}\"").into_boxed_str());
    let gate = TestGate::start_edited(&idp, &upstream.url(), "", "", in_server(line)).await;
    let b = Browser::new(&idp);
    b.sign_in(&gate, "/").await;
    b.client.get(format!("{}/again", gate.url())).send().await.unwrap();
    reqwest::get(format!("{}/api", gate.url())).await.unwrap();
    let resp = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = resp.text().await.unwrap();
    let metrics = parse_metrics(&text);
    let get = |name: &str| metrics.iter().find(|(n, _)| n == name).map(|(_, v)| *v).unwrap_or(-1.0);
    assert_eq!(
        get("logto_gate_requests_total{route=\"app\",status=\"200\"}"),
        2.0,
        "{metrics:?}"
    );
    assert_eq!(get("logto_gate_requests_total{route=\"app\",status=\"302\"}"), 1.0);
    assert_eq!(get("logto_gate_requests_total{route=\"app\",status=\"401\"}"), 1.0);
    assert_eq!(get("logto_gate_requests_total{route=\"callback\",status=\"302\"}"), 1.0);
    assert_eq!(get("logto_gate_sign_ins_total{outcome=\"started\"}"), 1.0);
    assert_eq!(get("logto_gate_sign_ins_total{outcome=\"completed\"}"), 1.0);
    assert_eq!(get("logto_gate_sign_ins_total{outcome=\"failed\"}"), 0.0);
    assert_eq!(get("logto_gate_upstream_response_seconds_count"), 2.0);
    assert_eq!(get("logto_gate_upstream_response_seconds_bucket{le=\"+Inf\"}"), 2.0);
    assert_eq!(get("logto_gate_active_upgrades"), 0.0);
    assert_eq!(
        reqwest::get(format!("http://127.0.0.1:{metrics_port}/other"))
            .await
            .unwrap()
            .status(),
        404
    );
    // The app's own port does not serve them.
    let on_app = reqwest::Client::new()
        .get(format!("{}/metrics", gate.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(on_app.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn json_logs_have_one_access_line_per_request_and_never_a_secret() {
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let json_logs = |t: String| t.replace("[log]\nlevel = \"warn\"", "[log]\nlevel = \"info\"\nformat = \"json\"");
    let register = |public: &str| idp.register_client(APP_ID, APP_SECRET, public);
    let mut gate = BinaryGate::start(
        &idp.endpoint(),
        &upstream.url(),
        "",
        json_logs,
        register,
        &[("RUST_LOG", "")],
    )
    .await;
    let url = gate.url();
    let b = Browser::new(&idp);
    let (hops, _) = b.navigate(&format!("{url}/private?token=query-secret")).await;
    let callback = hops
        .iter()
        .find(|h| h.url.contains("/_logto/callback"))
        .unwrap()
        .url
        .clone();
    let code: String = url::Url::parse(&callback)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let cookie = b.cookie(&url, "logto_gate").unwrap();
    let resp = b
        .client
        .get(format!("{url}/with-id"))
        .header("x-request-id", "trace-abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-abc-123");
    assert_eq!(
        upstream.last().header("x-request-id"),
        Some("trace-abc-123"),
        "propagated upstream"
    );
    let odd = b
        .client
        .get(format!("{url}/odd"))
        .header("x-request-id", "has spaces and {braces}")
        .send()
        .await
        .unwrap();
    let fresh = odd.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(
        fresh.len() == 24 && fresh.bytes().all(|c| c.is_ascii_hexdigit()),
        "{fresh}"
    );
    reqwest::Client::new()
        .get(format!("{url}/api"))
        .header("authorization", "Bearer some.bearer.token-secret")
        .header("cookie", "logto_gate=forged-cookie-secret")
        .send()
        .await
        .unwrap();
    gate.sigterm();
    wait_exit(&mut gate.process).await;
    let mut lines = Vec::new();
    for line in BufReader::new(gate.process.child.stderr.take().unwrap()).lines() {
        lines.push(line.unwrap());
    }
    let parsed: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not a JSON log line: {l}")))
        .collect();
    let access: Vec<&Value> = parsed.iter().filter(|v| v["target"] == "logto_gate::access").collect();
    assert!(access.len() >= 6, "{lines:#?}");
    for a in &access {
        for field in ["request_id", "method", "path", "status", "duration_ms"] {
            assert!(a.get(field).is_some(), "access line without {field}: {a}");
        }
    }
    assert!(access
        .iter()
        .any(|a| a["request_id"] == "trace-abc-123" && a["path"] == "/with-id"));
    let all = lines.join("\n");
    for secret in [
        APP_SECRET,
        SESSION_SECRET,
        cookie.as_str(),
        code.as_str(),
        "query-secret",
        "token-secret",
        "forged-cookie-secret",
    ] {
        assert!(
            !all.contains(secret),
            "a log line contains a secret ({secret:.12}...):\n{all}"
        );
    }
}

fn der_of(pem_path: &std::path::Path) -> Vec<u8> {
    use base64::Engine;
    let pem = std::fs::read_to_string(pem_path).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(body).unwrap()
}

/// Writes `request` over TLS (HTTP/1.1 by ALPN) and reads until the gate closes the connection (bounded).
async fn tls_exchange_until_closed(port: u16, root_der: &[u8], request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(root_der.to_vec()))
        .unwrap();
    let mut config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.write_all(request).await.unwrap();
    let mut bytes = Vec::new();
    // A peer that closes without close_notify is fine here: what arrived is what counts.
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut bytes))
        .await
        .expect("the gate closes the connection");
    String::from_utf8_lossy(&bytes).into_owned()
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
