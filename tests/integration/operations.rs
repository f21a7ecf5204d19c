//! Running it for real: worker threads, graceful shutdown, metrics, JSON logs without secrets, request ids.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

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
    eventually("the slow request's arrival at the upstream", || {
        upstream.seen().iter().any(|s| s.path.starts_with("/slow"))
    })
    .await;
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
    // Two more apps: the same server under /grafana, and one that is down: each counted apart.
    let entry = format!(
        "[[upstreams]]\nprefix = \"/grafana\"\nurl = \"{}\"\n[[upstreams]]\nprefix = \"/dead\"\n\
         url = \"http://127.0.0.1:{}\"\n",
        upstream.url(),
        free_port()
    );
    let gate = TestGate::start_edited(&idp, &upstream.url(), "", &entry, in_server(line)).await;
    let b = Browser::new(&idp);
    b.sign_in(&gate, "/").await;
    b.client.get(format!("{}/again", gate.url())).send().await.unwrap();
    reqwest::get(format!("{}/api", gate.url())).await.unwrap();
    for path in ["/grafana/a", "/grafana/b", "/dead/x"] {
        b.client.get(format!("{}{path}", gate.url())).send().await.unwrap();
    }
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
        4.0,
        "{metrics:?}"
    );
    assert_eq!(get("logto_gate_requests_total{route=\"app\",status=\"302\"}"), 1.0);
    assert_eq!(get("logto_gate_requests_total{route=\"app\",status=\"401\"}"), 1.0);
    assert_eq!(get("logto_gate_requests_total{route=\"callback\",status=\"302\"}"), 1.0);
    assert_eq!(get("logto_gate_sign_ins_total{outcome=\"started\"}"), 1.0);
    assert_eq!(get("logto_gate_sign_ins_total{outcome=\"completed\"}"), 1.0);
    assert_eq!(get("logto_gate_sign_ins_total{outcome=\"failed\"}"), 0.0);
    assert_eq!(get("logto_gate_upstream_response_seconds_count"), 4.0);
    assert_eq!(get("logto_gate_upstream_response_seconds_bucket{le=\"+Inf\"}"), 4.0);
    // Per app: the default one's sign-in redirect, two answers and one 401; the second app's two answers; the
    // third's 502 (no answer to time).
    for (series, want) in [
        ("logto_gate_app_requests_total{upstream=\"*/\",code=\"2xx\"}", 2.0),
        ("logto_gate_app_requests_total{upstream=\"*/\",code=\"3xx\"}", 1.0),
        ("logto_gate_app_requests_total{upstream=\"*/\",code=\"4xx\"}", 1.0),
        ("logto_gate_app_requests_total{upstream=\"*/\",code=\"5xx\"}", 0.0),
        (
            "logto_gate_app_requests_total{upstream=\"*/grafana\",code=\"2xx\"}",
            2.0,
        ),
        (
            "logto_gate_app_requests_total{upstream=\"*/grafana\",code=\"5xx\"}",
            0.0,
        ),
        ("logto_gate_app_requests_total{upstream=\"*/dead\",code=\"5xx\"}", 1.0),
        ("logto_gate_app_response_seconds_count{upstream=\"*/\"}", 2.0),
        ("logto_gate_app_response_seconds_count{upstream=\"*/grafana\"}", 2.0),
        ("logto_gate_app_response_seconds_count{upstream=\"*/dead\"}", 0.0),
    ] {
        assert_eq!(get(series), want, "{series}: {metrics:?}");
    }
    assert!(get("logto_gate_app_response_seconds_sum{upstream=\"*/grafana\"}") > 0.0);
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

/// A W3C Trace Context field (the specification's example).
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// One access line per request, never a secret in any line; a request's trace (`traceparent`) is on its line and
/// reaches the app as it came.
#[tokio::test]
async fn json_logs_have_one_access_line_per_request_and_never_a_secret() {
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    // The test's requests come as from a proxy in front, so the request id it sends is kept.
    // An entry for /other serves from the same app: access lines name the entry that served them.
    let entry = format!("[[upstreams]]\nprefix = \"/other\"\nurl = \"{}\"\n", upstream.url());
    let mut gate = logging_json(&idp, &upstream, "info", |t| {
        format!("{}\n{entry}", in_server("trusted_proxies = [\"127.0.0.1/32\"]")(t))
    })
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
        .header("traceparent", TRACEPARENT)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-abc-123");
    assert_eq!(upstream.last().header("traceparent"), Some(TRACEPARENT), "passed on");
    assert_eq!(
        upstream.last().header("x-request-id"),
        Some("trace-abc-123"),
        "propagated upstream"
    );
    // A malformed trace context names no trace in the line (upper-case hexadecimal).
    let odd_trace = b
        .client
        .get(format!("{url}/odd-trace"))
        .header("traceparent", TRACEPARENT.to_uppercase())
        .send()
        .await
        .unwrap();
    assert_eq!(odd_trace.status(), 200);
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
    let other = b.client.get(format!("{url}/other/x")).send().await.unwrap();
    assert_eq!(other.status(), 200);
    // A client that goes away before its answer: its line says 499.
    let before = upstream.count();
    let mut gone = TcpStream::connect(url.trim_start_matches("http://")).await.unwrap();
    gone.write_all(format!("GET /slow?ms=20000 HTTP/1.1\r\nHost: x\r\nCookie: logto_gate={cookie}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    eventually("the request's arrival at the upstream", || {
        upstream.count() == before + 1
    })
    .await;
    drop(gone);
    // A head too large to read, answered by the front itself: logged as any answer, with its id, and with the
    // request line's method and path only.
    let too_large = plain()
        .get(format!("{url}/too/large?token=query-secret"))
        .header("cookie", format!("logto_gate={}", "A".repeat(70_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(too_large.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let too_large_id = too_large.headers()["x-request-id"].to_str().unwrap().to_owned();
    // A malformed head too (a field name with a space): logged as the front's answer, with its id.
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let malformed = exchange_until_closed(port, b"PUT /bad/head?token=query-secret HTTP/1.1\r\nX Bad: 1\r\n\r\n").await;
    assert!(malformed.starts_with("HTTP/1.1 400 "), "{malformed}");
    let malformed_id = raw_request_id(&malformed);
    // Heads the front hands to hyper for their framing fields, which hyper refuses with a bare 400 (and a malformed
    // head after a request hyper served on such a connection): logged and counted too, with hyper's reason.
    let framing: [&[u8]; 4] = [
        b"POST /cl HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n",
        b"POST /te HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST /te10 HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /public/page HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\nGET /x HTTP/1.1\r\nX Bad: 1\r\n\r\n",
    ];
    for head in framing {
        let answer = exchange_until_closed(port, head).await;
        assert!(answer.contains(" 400 Bad Request\r\n"), "{answer}");
    }
    let (lines, parsed) = stopped_log(&mut gate).await;
    let access: Vec<&Value> = parsed.iter().filter(|v| v["target"] == "logto_gate::access").collect();
    assert!(access.len() >= 6, "{lines:#?}");
    for a in &access {
        for field in ["request_id", "method", "path", "status", "duration_ms"] {
            assert!(a.get(field).is_some(), "access line without {field}: {a}");
        }
    }
    assert!(access.iter().any(|a| a["request_id"] == "trace-abc-123"
        && a["path"] == "/with-id"
        && a["upstream"] == "*/"
        && a["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"));
    // Only that request named a trace.
    assert_eq!(
        access.iter().filter(|a| a.get("trace_id").is_some()).count(),
        1,
        "{lines:#?}"
    );
    assert!(access.iter().any(|a| a["path"] == "/odd-trace"), "{lines:#?}");
    assert!(
        access
            .iter()
            .any(|a| a["path"] == "/other/x" && a["upstream"] == "*/other" && a["status"] == 200),
        "{lines:#?}"
    );
    // The gate's own endpoints name no app.
    assert!(access
        .iter()
        .filter(|a| a["path"].as_str().is_some_and(|p| p.starts_with("/_logto/")))
        .all(|a| a.get("upstream").is_none()));
    assert!(
        access
            .iter()
            .any(|a| a["path"] == "/slow" && a["status"] == 499 && a["user"] == "u_alice0001"),
        "{lines:#?}"
    );
    assert!(
        access.iter().any(|a| a["path"] == "/too/large"
            && a["method"] == "GET"
            && a["status"] == 431
            && a["request_id"] == too_large_id.as_str()),
        "{lines:#?}"
    );
    assert!(
        access.iter().any(|a| a["path"] == "/bad/head"
            && a["method"] == "PUT"
            && a["status"] == 400
            && a["request_id"] == malformed_id.as_str()
            && a["refused"]
                .as_str()
                .is_some_and(|r| r.starts_with("a header field's name"))),
        "{lines:#?}"
    );
    assert!(
        access
            .iter()
            .any(|a| a["status"] == 431 && a["refused"].as_str().is_some_and(|r| r.contains("too many fields"))),
        "{lines:#?}"
    );
    // hyper's refusals: no method or path read, the reason hyper gives.
    let refused_by_hyper: Vec<&str> = access
        .iter()
        .filter(|a| a["status"] == 400 && a["method"] == "-" && a["path"] == "-")
        .filter_map(|a| a["refused"].as_str())
        .collect();
    assert_eq!(
        refused_by_hyper,
        [
            "invalid content-length parsed",
            "invalid transfer-encoding parsed",
            "unexpected transfer-encoding parsed",
            "invalid HTTP header parsed"
        ],
        "{lines:#?}"
    );
    // Only such heads say why: a served request's line has no reason.
    assert!(access
        .iter()
        .filter(|a| a["status"] == 200)
        .all(|a| a.get("refused").is_none()));
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

#[tokio::test]
async fn health_probe_lines_have_a_target_a_filter_can_silence() {
    // A prober asks every few seconds; its lines log under `logto_gate::access::probes`, which `log.level` can turn
    // off while every other request keeps its line. Without the filter they are logged like any request. Only the
    // two exact paths are probes: a request dressed like one (a client hiding from the log) keeps its line.
    let look_alikes = [
        "/_logto/healthz/",
        "/_logto/HEALTHZ",
        "//_logto/healthz",
        "/_logto/%68ealthz",
        "/_logto/healthz/../../api",
        "/_logto/readyz;x",
        "/api/_logto/healthz",
    ];
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    for (level, probes_logged) in [("info", true), ("info,logto_gate::access::probes=off", false)] {
        let mut gate = logging_json(&idp, &upstream, level, |t| t).await;
        let url = gate.url();
        let client = reqwest::Client::new();
        for path in ["/_logto/healthz", "/_logto/readyz", "/api/after-the-probes"] {
            client.get(format!("{url}{path}")).send().await.unwrap();
        }
        for path in look_alikes {
            // As sent, with no client normalising the path first.
            let mut stream = TcpStream::connect(("127.0.0.1", gate.port)).await.unwrap();
            let head = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
            stream.write_all(head.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await.unwrap();
            assert!(answer.starts_with(b"HTTP/1.1 "), "{path}");
        }
        let (_, lines) = stopped_log(&mut gate).await;
        // The last line for a path: the harness's own readiness polls, some of them 503 while the gate loads
        // Logto's keys, come before the test's probes.
        let line = |path: &str| {
            lines
                .iter()
                .rev()
                .find(|v| v["path"] == path && v.get("status").is_some())
        };
        let app = line("/api/after-the-probes").unwrap_or_else(|| panic!("no line for the app's request: {lines:#?}"));
        assert_eq!(app["target"], "logto_gate::access");
        assert_eq!(app["status"], 401);
        for probe in ["/_logto/healthz", "/_logto/readyz"] {
            match line(probe) {
                Some(l) => {
                    assert!(probes_logged, "{level}: {probe} logged: {l}");
                    assert_eq!(l["target"], "logto_gate::access::probes", "{l}");
                    assert_eq!(l["status"], 200, "{l}");
                }
                None => assert!(!probes_logged, "{level}: no line for {probe}: {lines:#?}"),
            }
        }
        for path in look_alikes {
            let l = line(path).unwrap_or_else(|| panic!("{level}: no line for {path}: {lines:#?}"));
            assert_eq!(l["target"], "logto_gate::access", "{l}");
        }
    }
}

#[tokio::test]
async fn a_burst_of_plain_connections_fills_the_first_worker_with_room() {
    // Every worker accepts from one socket; a plain connection goes to the first worker that has not been busy
    // lately (`placement`), which the per-worker gauge shows: on an idle gate, the whole burst on worker 0, whichever
    // worker accepted each connection.
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let metrics_port = free_port();
    let line: &'static str =
        Box::leak(format!("workers = 2\nmetrics_listen = \"127.0.0.1:{metrics_port}\"").into_boxed_str());
    let gate = TestGate::start_edited(&idp, &upstream.url(), "", "", in_server(line)).await;
    let burst = (0..12).map(|_| TcpStream::connect(("127.0.0.1", gate.port)));
    let mut held = Vec::new();
    for stream in futures_util::future::join_all(burst).await {
        let mut stream = stream.unwrap();
        stream
            .write_all(b"GET /_logto/healthz HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut answer = [0u8; 512];
        let n = stream.read(&mut answer).await.unwrap();
        assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
        held.push(stream);
    }
    let per_worker = worker_connections(metrics_port, 2).await;
    assert_eq!(per_worker, vec![12.0, 0.0], "an idle gate packs plain connections");
    drop(held);
}

/// The `logto_gate_worker_connections` gauge of each of `workers` workers, from the metrics endpoint.
pub(crate) async fn worker_connections(metrics_port: u16, workers: usize) -> Vec<f64> {
    let text = metrics_text(metrics_port).await;
    let metrics = parse_metrics(&text);
    (0..workers)
        .map(|w| {
            let name = format!("logto_gate_worker_connections{{worker=\"{w}\"}}");
            metrics.iter().find(|(n, _)| *n == name).map_or(-1.0, |(_, v)| *v)
        })
        .collect()
}

/// A request whose client goes away before its answer is logged and counted as 499 (nginx's "client closed
/// request"), on the HTTP/1 front and on HTTP/2 (hyper's server): before, such requests left no trace in the access
/// log or the metrics, though a slow upstream that makes clients give up is what an operator looks for there.
#[tokio::test]
async fn a_request_whose_client_goes_away_before_its_answer_is_counted_as_499() {
    let (s, metrics_port, cookie) = signed_in_with_metrics().await;
    let before = s.upstream.count();
    let mut client = TcpStream::connect(("127.0.0.1", s.gate.port)).await.unwrap();
    client
        .write_all(format!("GET /slow?ms=20000 HTTP/1.1\r\nHost: x\r\nCookie: logto_gate={cookie}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    eventually("the request's arrival at the upstream", || {
        s.upstream.count() == before + 1
    })
    .await;
    drop(client);
    // The same over HTTP/2, the connection closed under the stream.
    let tcp = TcpStream::connect(("127.0.0.1", s.gate.port)).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake::<_, _, http_body_util::Empty<bytes::Bytes>>(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("an HTTP/2 handshake");
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get(format!("http://127.0.0.1:{}/slow?ms=20000", s.gate.port))
        .header("cookie", format!("logto_gate={cookie}"))
        .body(http_body_util::Empty::new())
        .unwrap();
    let answer = tokio::spawn(sender.send_request(req));
    eventually("the HTTP/2 request's arrival at the upstream", || {
        s.upstream.count() == before + 2
    })
    .await;
    conn.abort();
    answer.abort();
    metrics_until(
        metrics_port,
        "logto_gate_requests_total{route=\"app\",status=\"499\"} 2\n",
    )
    .await;
}

/// A client that hangs up in the middle of its request body is logged and counted as 499 (it went away before its
/// answer) on every path: the HTTP/1 front, hyper's HTTP/1 server (an HTTP/1.0 request, which the front hands over)
/// and HTTP/2. On hyper's HTTP/1 server the body's failure used to reach the upstream exchange first and be logged
/// as a 400 that no client saw, where the front said 499.
#[tokio::test]
async fn a_client_hanging_up_mid_body_is_counted_as_499_on_every_path() {
    let (s, metrics_port, cookie) = signed_in_with_metrics().await;
    let before = s.upstream.count();
    // HTTP/1: 1 MiB announced, 64 KiB sent, then the connection closes.
    let mut client = TcpStream::connect(("127.0.0.1", s.gate.port)).await.unwrap();
    let head =
        format!("POST /upload HTTP/1.1\r\nHost: x\r\nCookie: logto_gate={cookie}\r\nContent-Length: 1048576\r\n\r\n");
    client.write_all(head.as_bytes()).await.unwrap();
    client.write_all(&[b'a'; 64 * 1024]).await.unwrap();
    eventually("the HTTP/1 upload's arrival at the upstream", || {
        s.upstream.count() == before + 1
    })
    .await;
    drop(client);
    // HTTP/1.0 (hyper's HTTP/1 server: the front hands such heads over): the same.
    let mut client = TcpStream::connect(("127.0.0.1", s.gate.port)).await.unwrap();
    client
        .write_all(head.replacen("HTTP/1.1", "HTTP/1.0", 1).as_bytes())
        .await
        .unwrap();
    client.write_all(&[b'a'; 64 * 1024]).await.unwrap();
    eventually("the HTTP/1.0 upload's arrival at the upstream", || {
        s.upstream.count() == before + 2
    })
    .await;
    drop(client);
    // HTTP/2: the same, the connection closed under the stream while its body is still coming.
    let tcp = TcpStream::connect(("127.0.0.1", s.gate.port)).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("an HTTP/2 handshake");
    let conn = tokio::spawn(conn);
    type Piece = Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>;
    let (body_tx, rx) = tokio::sync::mpsc::channel::<Piece>(4);
    let body_rx = Box::pin(futures_util::stream::unfold(rx, |mut rx| async {
        rx.recv().await.map(|piece| (piece, rx))
    }));
    let req = hyper::Request::post(format!("http://127.0.0.1:{}/upload", s.gate.port))
        .header("cookie", format!("logto_gate={cookie}"))
        .header("content-length", "1048576")
        .body(http_body_util::StreamBody::new(body_rx))
        .unwrap();
    let answer = tokio::spawn(sender.send_request(req));
    body_tx
        .send(Ok(hyper::body::Frame::data(bytes::Bytes::from(vec![b'a'; 16 * 1024]))))
        .await
        .expect("the body's first piece taken");
    eventually("the HTTP/2 upload's arrival at the upstream", || {
        s.upstream.count() == before + 3
    })
    .await;
    conn.abort();
    answer.abort();
    metrics_until(
        metrics_port,
        "logto_gate_requests_total{route=\"app\",status=\"499\"} 3\n",
    )
    .await;
    drop(body_tx);
    // The back-channel logout endpoint reads its body itself (no upstream): the same, over hyper's HTTP/1 server.
    let mut client = TcpStream::connect(("127.0.0.1", s.gate.port)).await.unwrap();
    let head = "POST /_logto/backchannel-logout HTTP/1.0\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                Content-Length: 4096\r\n\r\nlogout_token=";
    client.write_all(head.as_bytes()).await.unwrap();
    // The endpoint waits for the rest of its body: the gate holds the connection without answering.
    let mut byte = [0u8; 1];
    let waited = tokio::time::timeout(Duration::from_millis(300), client.read(&mut byte)).await;
    assert!(
        waited.is_err(),
        "the gate answered a body it had not got whole: {waited:?}"
    );
    drop(client);
    let metrics = metrics_until(
        metrics_port,
        "logto_gate_requests_total{route=\"backchannel_logout\",status=\"499\"} 1\n",
    )
    .await;
    assert!(
        !metrics.contains("status=\"400\""),
        "no 400 for a client that went away: {metrics}"
    );
}

/// A stack whose gate serves metrics, and a signed-in session's cookie.
async fn signed_in_with_metrics() -> (Stack, u16, String) {
    let metrics_port = free_port();
    let line: &'static str = Box::leak(format!("metrics_listen = \"127.0.0.1:{metrics_port}\"").into_boxed_str());
    let s = Stack::edited(IdpOptions::default(), "", "", in_server(line)).await;
    let (_, cookie) = s.signed_in().await;
    (s, metrics_port, cookie)
}
