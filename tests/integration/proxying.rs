//! Forwarding: streaming bodies, upgrades, hop-by-hop and forwarding headers, cookies, HTTP/2, upstream faults.

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

const TEN_MIB: usize = 10 * 1024 * 1024;

type Tunnel = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket through the gate at `/ws` with the session `cookie`, and the handshake's answer.
async fn open_tunnel(port: u16, cookie: &str) -> (Tunnel, tokio_tungstenite::tungstenite::handshake::client::Response) {
    open_tunnel_with(port, "cookie", &format!("logto_gate={cookie}")).await
}

/// A WebSocket through the gate at `/ws` whose handshake carries `name: value`.
async fn open_tunnel_with(
    port: u16,
    name: &'static str,
    value: &str,
) -> (Tunnel, tokio_tungstenite::tungstenite::handshake::client::Response) {
    let mut request = format!("ws://127.0.0.1:{port}/ws").into_client_request().unwrap();
    request.headers_mut().insert(name, value.parse().unwrap());
    tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket through the gate")
}

/// The status with which the gate answers a WebSocket handshake at `/ws`, with the session `cookie` if any.
async fn upgrade_status(port: u16, cookie: Option<&str>) -> u16 {
    let mut request = format!("ws://127.0.0.1:{port}/ws").into_client_request().unwrap();
    if let Some(cookie) = cookie {
        request
            .headers_mut()
            .insert("cookie", format!("logto_gate={cookie}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, resp)) => resp.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("no answer to the handshake: {e}"),
    }
}

/// Sends `text` and expects it back within `within`.
async fn echo(ws: &mut Tunnel, text: &str, within: std::time::Duration) {
    ws.send(Message::text(text)).await.unwrap();
    let echo = tokio::time::timeout(within, ws.next())
        .await
        .expect("an echo")
        .expect("the tunnel is still open")
        .expect("no error");
    assert_eq!(echo.into_text().unwrap().as_str(), text);
}

#[tokio::test]
async fn a_10_mib_body_streams_both_ways() {
    let s = Stack::start().await;
    let b = s.browser();
    b.sign_in(&s.gate, "/").await;
    // Download: 10 MiB streamed from the upstream.
    let resp = b.get(format!("{}/download?bytes={TEN_MIB}", s.gate.url())).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut stream = resp.bytes_stream();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        total += chunk.unwrap().len();
    }
    assert_eq!(total, TEN_MIB);
    // Upload: 10 MiB streamed to the upstream in chunks, without a Content-Length.
    let chunks =
        futures_util::stream::iter((0..160).map(|i| Ok::<_, std::io::Error>(vec![(i % 251) as u8; 64 * 1024])));
    let resp = b
        .client
        .post(format!("{}/upload", s.gate.url()))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    let expected_sum: u64 = (0..160u64).map(|i| (i % 251) * 64 * 1024).sum();
    assert_eq!(v["bytes"], TEN_MIB as u64);
    assert_eq!(v["sum"], expected_sum);
    // And with a Content-Length, which the gate's HTTP/1 front reads itself.
    let sized: Vec<u8> = (0..TEN_MIB).map(|i| (i % 251) as u8).collect();
    let expected_sum: u64 = sized.iter().map(|&b| u64::from(b)).sum();
    let resp = b
        .client
        .post(format!("{}/upload", s.gate.url()))
        .body(sized)
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["bytes"], TEN_MIB as u64);
    assert_eq!(v["sum"], expected_sum);
}

#[tokio::test]
async fn websocket_echo_works_through_the_gate_for_signed_in_users_only() {
    let s = Stack::start().await;
    let b = s.browser();
    // Without a session the handshake is refused with 401.
    assert_eq!(upgrade_status(s.gate.port, None).await, 401);
    b.sign_in(&s.gate, "/").await;
    let cookie = b.cookie(&s.gate.url(), "logto_gate").expect("session cookie");
    let (mut ws, resp) = open_tunnel(s.gate.port, &cookie).await;
    assert_eq!(resp.status().as_u16(), 101);
    for text in ["hello", "through", "the gate"] {
        echo(&mut ws, text, std::time::Duration::from_secs(10)).await;
    }
    ws.close(None).await.unwrap();
    let seen = s.upstream.last();
    assert_eq!(seen.path, "/ws");
    assert_eq!(seen.header("x-forwarded-user"), Some("u_alice0001"));
}

#[tokio::test]
async fn a_websocket_opened_by_a_connections_last_request_stays_open() {
    // With `max_requests_per_connection = 1` the handshake is the connection's last request: its 101 must not say
    // `Connection: close`, which would end the tunnel it opens.
    let s = Stack::edited(
        IdpOptions::default(),
        "",
        "",
        in_server("max_requests_per_connection = 1"),
    )
    .await;
    let (_b, cookie) = s.signed_in().await;
    let (mut ws, resp) = open_tunnel(s.gate.port, &cookie).await;
    assert_eq!(resp.status().as_u16(), 101);
    assert!(resp
        .headers()
        .get("connection")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"upgrade")));
    for text in ["one", "two"] {
        echo(&mut ws, text, std::time::Duration::from_secs(10)).await;
    }
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn an_idle_websocket_tunnel_is_closed_after_the_idle_timeout_and_a_busy_one_is_not() {
    let s = Stack::edited(IdpOptions::default(), "", "", in_server("idle_timeout = \"1s\"")).await;
    let (_, cookie) = s.signed_in().await;
    let (mut ws, _) = open_tunnel(s.gate.port, &cookie).await;
    // Busy for three idle timeouts: a message every 300 ms keeps the tunnel open.
    let busy_until = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let mut n = 0;
    let mut last_byte = std::time::Instant::now();
    while std::time::Instant::now() < busy_until {
        echo(&mut ws, &format!("ping {n}"), std::time::Duration::from_secs(5)).await;
        last_byte = std::time::Instant::now();
        n += 1;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    // Then quiet: the gate closes the tunnel (without a close frame: it is a byte splice), well within bounds, and
    // never before a full idle timeout after the last byte.
    let end = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
        .await
        .expect("the idle tunnel was closed");
    assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
    assert!(
        last_byte.elapsed() >= std::time::Duration::from_millis(950),
        "closed {:?} after the last byte",
        last_byte.elapsed()
    );
}

#[tokio::test]
async fn a_tunnel_carries_megabytes_both_ways_intact_while_its_reader_lags() {
    // The tunnel holds bytes only while the side they go to has not taken them (src/proxy/tunnel.rs): sixteen
    // 1 MiB messages sent without waiting for their echoes fill every buffer on the way, so the gate's writes are
    // held back over and over; each echo must still come back whole and in order.
    let s = Stack::start().await;
    let (_, cookie) = s.signed_in().await;
    let (ws, _) = open_tunnel(s.gate.port, &cookie).await;
    echo_sixteen_megabytes(ws).await;
}

#[tokio::test]
async fn hop_by_hop_and_client_forwarding_headers_never_reach_the_upstream() {
    let s = Stack::start().await;
    let b = s.browser();
    b.sign_in(&s.gate, "/").await;
    b.client
        .get(format!("{}/headers", s.gate.url()))
        .header("connection", "x-secret-hop")
        .header("x-secret-hop", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-proto", "gopher")
        .header("forwarded", "for=6.6.6.6;host=evil.example")
        .header("x-app-header", "kept")
        .send()
        .await
        .unwrap();
    let seen = s.upstream.last();
    for gone in ["x-secret-hop", "keep-alive", "proxy-authorization", "forwarded"] {
        assert_eq!(seen.header(gone), None, "{gone} reached the upstream");
    }
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(
        seen.header("x-forwarded-host"),
        Some(format!("127.0.0.1:{}", s.gate.port).as_str())
    );
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-app-header"), Some("kept"));
    assert_eq!(
        seen.header("host"),
        Some(s.upstream.addr.to_string().as_str()),
        "Host is the upstream's by default"
    );
}

#[tokio::test]
async fn gate_cookies_are_removed_and_app_cookies_pass_both_ways() {
    let s = Stack::start().await;
    let b = s.browser();
    b.sign_in(&s.gate, "/").await;
    let resp = b.get(format!("{}/set-cookie", s.gate.url())).await;
    assert_eq!(
        resp.headers()["set-cookie"],
        "app_session=abc; Path=/",
        "the app's Set-Cookie reaches the browser"
    );
    b.client.get(format!("{}/after", s.gate.url())).send().await.unwrap();
    let seen = s.upstream.last();
    let cookie = seen.header("cookie").unwrap_or("");
    assert!(cookie.contains("app_session=abc"), "{cookie}");
    assert!(
        !cookie.contains("logto_gate"),
        "the gate's session cookie leaked upstream: {cookie}"
    );
}

/// An app cookie whose value is UTF-8 (a browser sends what `document.cookie = "name=José"` stored as it is, RFC
/// 6265bis allows it) next to the session cookie: the session is read, and the app gets its cookies without the
/// gate's, over HTTP/1.1 (the HTTP/1 front, and hyper's server after a hand-over) and HTTP/2 (cookie crumbs).
#[tokio::test]
async fn an_app_cookie_with_utf8_in_its_value_keeps_the_session_and_reaches_the_app() {
    let s = Stack::start().await;
    let (_, cookie) = s.signed_in().await;
    let field = format!("lang=espa\u{f1}ol; logto_gate={cookie}; who=Jos\u{e9}; theme=dark");
    // A second gate with the same secret has not opened the session yet: its first reading is of this field.
    let fresh = TestGate::start(&s.idp, &s.upstream.url(), "", "").await;
    let hand_over = "GET /_logto/healthz HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n";
    for (gate, before) in [(&fresh, ""), (&s.gate, ""), (&s.gate, hand_over)] {
        let request = format!("{before}GET /utf8 HTTP/1.1\r\nHost: x\r\nCookie: {field}\r\nConnection: close\r\n\r\n");
        let answer = exchange_until_closed(gate.port, request.as_bytes()).await;
        let last = answer.rfind("HTTP/1.1 ").map_or("", |i| &answer[i..]);
        assert!(last.starts_with("HTTP/1.1 200"), "{before:?}: {answer}");
        let seen = s.upstream.last();
        assert_eq!(seen.path, "/utf8");
        assert_eq!(seen.header("x-forwarded-user"), Some("u_alice0001"), "{before:?}");
        assert_eq!(
            seen.header("cookie"),
            Some("lang=espa\u{f1}ol; who=Jos\u{e9}; theme=dark"),
            "{before:?}"
        );
    }
    let (mut send, _) = h2_connection(s.gate.port).await;
    let mut req = hyper::Request::get(format!("http://127.0.0.1:{}/utf8-h2", s.gate.port))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    for crumb in field.split("; ") {
        req.headers_mut()
            .append("cookie", http::HeaderValue::from_bytes(crumb.as_bytes()).unwrap());
    }
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = s.upstream.last();
    assert_eq!(seen.path, "/utf8-h2");
    assert_eq!(seen.header("x-forwarded-user"), Some("u_alice0001"));
    assert_eq!(
        seen.header("cookie"),
        Some("lang=espa\u{f1}ol; who=Jos\u{e9}; theme=dark")
    );
}

/// The gate tells HTTP/1 from HTTP/2 prior knowledge by the first bytes: a request whose first segment is only
/// "P" (the start of the HTTP/2 preface, but also of POST) is waited for, not answered or dropped, and reaches the
/// app whole.
#[tokio::test]
async fn a_request_split_where_the_http2_preface_could_begin_is_served_whole() {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Stack::start().await;
    let (_, cookie) = s.signed_in().await;
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", s.gate.port))
        .await
        .unwrap();
    tcp.set_nodelay(true).unwrap();
    tcp.write_all(b"P").await.unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), tcp.read(&mut byte)).await;
    assert!(early.is_err(), "the gate answered or closed after one byte: {early:?}");
    let rest = format!(
        "OST /split HTTP/1.1\r\nHost: x\r\nCookie: logto_gate={cookie}\r\nContent-Length: 5\r\n\
         Connection: close\r\n\r\nhello"
    );
    tcp.write_all(rest.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = s.upstream.last();
    assert_eq!((seen.method.as_str(), seen.path.as_str()), ("POST", "/split"));
    assert_eq!(seen.header("content-length"), Some("5"));
}

#[tokio::test]
async fn http2_clients_are_served_over_an_http1_upstream() {
    let s = Stack::start().await;
    let (_, cookie) = s.signed_in().await;
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let resp = h2
        .get(format!("{}/over-h2?x=1", s.gate.url()))
        .header("cookie", format!("logto_gate={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = s.upstream.last();
    assert_eq!(seen.path, "/over-h2?x=1");
    assert_eq!(seen.header("x-forwarded-user"), Some("u_alice0001"));
    assert_eq!(seen.header("host"), Some(s.upstream.addr.to_string().as_str()));
}

#[tokio::test]
async fn upstream_down_is_a_502_page_and_slow_upstream_a_504() {
    let idp = Idp::start(IdpOptions::default());
    // A port with nothing listening.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let gate = TestGate::start(&idp, &dead, "", "").await;
    let b = Browser::new(&idp);
    let (hops, resp) = b.navigate(&format!("{}/", gate.url())).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY, "{hops:#?}");
    assert!(resp.text().await.unwrap().contains("The application is unreachable"));
    let api = b.client.get(format!("{}/api", gate.url())).send().await.unwrap();
    assert_eq!(api.status(), StatusCode::BAD_GATEWAY);
    let v: Value = api.json().await.unwrap();
    assert_eq!(v["error"], "upstream_unreachable");

    let upstream = Upstream::start().await;
    let slow_gate = TestGate::start(&idp, &upstream.url(), "", "").await;
    // response_timeout is 5s in the test config; this upstream answers after 60s.
    let b = Browser::new(&idp);
    b.sign_in(&slow_gate, "/").await;
    let resp = b.get(format!("{}/slow?ms=60000", slow_gate.url())).await;
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test]
async fn preserve_host_passes_the_clients_host() {
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let gate = TestGate::start_edited(&idp, &upstream.url(), "", "", |t| {
        t.replace(
            "response_timeout = \"5s\"",
            "response_timeout = \"5s\"\npreserve_host = true",
        )
    })
    .await;
    Browser::new(&idp).sign_in(&gate, "/").await;
    assert_eq!(
        upstream.last().header("host"),
        Some(format!("127.0.0.1:{}", gate.port).as_str())
    );
}

/// TRACE is refused before the app sees it, as nginx does: an app that echoes it (Apache's default) would hand the
/// client every field the gate adds, here `upstream.protected_app`'s Basic credentials, the Logto app secret
/// (RFC 9110 §9.3.8). On a public route without a session, signed in, and over HTTP/2.
#[tokio::test]
async fn trace_is_refused_so_the_app_cannot_echo_what_the_gate_adds() {
    let s = Stack::edited(
        IdpOptions::default(),
        "",
        "[[rules]]\nprefix = \"/public\"\nallow = \"public\"\n",
        in_upstream("protected_app = true"),
    )
    .await;
    let (b, _) = s.signed_in().await;
    let before = s.upstream.count();
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let trace = reqwest::Method::TRACE;
    for (client, path) in [(&plain(), "/public/x"), (&b.client, "/private"), (&h2, "/public/y")] {
        let resp = client
            .request(trace.clone(), format!("{}{path}", s.gate.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert!(
            resp.headers().get("allow").is_none(),
            "the app's methods are not the gate's to list"
        );
        let body = resp.text().await.unwrap();
        assert!(!body.to_ascii_lowercase().contains("basic"), "{body}");
    }
    assert_eq!(s.upstream.count(), before, "the app saw no TRACE");
    // Other methods still reach the app with the credentials.
    let get = plain().get(format!("{}/public/z", s.gate.url())).send().await.unwrap();
    assert_eq!(get.status(), StatusCode::OK);
    assert!(s
        .upstream
        .last()
        .header("authorization")
        .is_some_and(|v| v.starts_with("Basic ")));
}

/// Waits (bounded) for the gate to close `ws`: its stream ends, with or without a close frame.
async fn closed_by_the_gate(ws: &mut Tunnel, within: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("the tunnel is still open after {within:?}"),
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return,
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// A WebSocket tunnel lives no longer than the session that opened it: signed out in another tab, its tunnels close
/// at the next check (`session.tunnel_check_interval`), while another session's tunnel goes on through the same
/// checks, until Logto's back-channel logs its user out. Without this, a live dashboard kept streaming to a shared
/// computer after its user signed out.
#[tokio::test]
async fn a_websocket_closes_when_its_session_is_signed_out() {
    let s = Stack::edited(
        IdpOptions::default(),
        "",
        "",
        in_session("tunnel_check_interval = \"1s\""),
    )
    .await;
    let (_alice, cookie) = s.signed_in().await;
    let (_other, other_cookie) = s.signed_in().await;
    let (mut ws, _) = open_tunnel(s.gate.port, &cookie).await;
    let (mut stays, _) = open_tunnel(s.gate.port, &other_cookie).await;
    echo(&mut ws, "before", std::time::Duration::from_secs(10)).await;

    let out = plain()
        .get(format!("{}/_logto/sign-out", s.gate.url()))
        .header("cookie", format!("logto_gate={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::FOUND);
    closed_by_the_gate(&mut ws, std::time::Duration::from_secs(10)).await;
    echo(&mut stays, "still here", std::time::Duration::from_secs(10)).await;

    // Logto's back-channel logout of the user (by subject) ends her other session's tunnel the same way.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = s.idp.sign(
        serde_json::json!({"iss": s.idp.issuer(), "aud": APP_ID, "iat": now, "jti": "tunnel-logout",
            "sub": "u_alice0001", "events": {"http://schemas.openid.net/event/backchannel-logout": {}}}),
        serde_json::json!({"typ": "logout+jwt"}),
    );
    let logout = plain()
        .post(format!("{}/_logto/backchannel-logout", s.gate.url()))
        .form(&[("logout_token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::OK);
    closed_by_the_gate(&mut stays, std::time::Duration::from_secs(10)).await;
}

/// A rule's `max_age` holds for a WebSocket's whole life: once the session's sign-in at Logto is older, its tunnel
/// closes at the next check, while a tunnel of a more recent sign-in goes on.
#[tokio::test]
async fn a_websocket_closes_once_its_sign_in_is_older_than_the_rules_max_age() {
    let s = Stack::edited(
        IdpOptions::default(),
        "",
        "[[rules]]\nprefix = \"/ws\"\nmax_age = \"1m\"\n",
        in_session("tunnel_check_interval = \"1s\""),
    )
    .await;
    // Logto says one person signed in 52 s before this sign-in (8 s to go), the other just now.
    s.idp
        .tamper_next_id_token("resign", serde_json::json!({ "auth_time": now() - 52 }));
    let (_old, old_cookie) = s.signed_in().await;
    s.idp
        .tamper_next_id_token("resign", serde_json::json!({ "auth_time": now() }));
    let (_recent, recent_cookie) = s.signed_in().await;
    let (mut ws, _) = open_tunnel(s.gate.port, &old_cookie).await;
    let (mut stays, _) = open_tunnel(s.gate.port, &recent_cookie).await;
    echo(&mut ws, "before", std::time::Duration::from_secs(10)).await;
    closed_by_the_gate(&mut ws, std::time::Duration::from_secs(30)).await;
    echo(&mut stays, "still here", std::time::Duration::from_secs(10)).await;
    // The old session may not open another.
    assert_eq!(upgrade_status(s.gate.port, Some(&old_cookie)).await, 401);
}

/// Waits (bounded) until the IdP has answered `at_least` introspection requests, all naming a refresh token.
async fn introspected(idp: &Idp, at_least: usize) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let asked = idp.stats()["introspections"].as_array().cloned().unwrap_or_default();
        if asked.len() >= at_least {
            assert!(
                asked.iter().all(|a| a["token_type_hint"] == "refresh_token"),
                "{asked:?}"
            );
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} introspections, expected {at_least}",
            asked.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Logto calls no back channel when an admin suspends a user: it deletes the user's refresh tokens, and a request
/// learns of it at its session's next refresh. A WebSocket tunnel makes no requests, so once its session is past
/// its refresh point it asks Logto instead (token introspection, which spends nothing): the suspended user's tunnel
/// closes, another user's, asked the same, goes on. Without this a suspended user kept a live stream until the
/// session's lifetime ended.
#[tokio::test]
async fn a_websocket_closes_when_logto_suspends_its_user() {
    only_the_cut_off_users_tunnel_closes(|idp| assert!(idp.suspend("u_alice0001") >= 1)).await;
}

/// Logto 1.42 deletes a user's tokens before the user (`signOutUser`, then the row), so a cookie-store tunnel's
/// introspection of the deleted user's refresh token answers inactive and the tunnel closes, as a suspended user's
/// does; another user's, asked the same, goes on. (Before 1.42 the tokens outlived the user and introspection,
/// which does not look the user up, kept answering active.)
#[tokio::test]
async fn a_websocket_closes_when_logto_deletes_its_user() {
    only_the_cut_off_users_tunnel_closes(|idp| assert_eq!(idp.delete_user("u_alice0001"), 1)).await;
}

/// Alice's and Bob's cookie-store tunnels, both past their refresh point, asked about and standing; then
/// `cut_off` does to Alice in Logto what an admin would: her tunnel closes, Bob's, asked again, stays.
async fn only_the_cut_off_users_tunnel_closes(cut_off: impl FnOnce(&Idp)) {
    let s = Stack::edited(
        two_second_tokens(),
        "",
        "",
        in_session("tunnel_check_interval = \"1s\"\ntunnel_grant_check_interval = \"1s\""),
    )
    .await;
    let (_alice, alice) = s.signed_in().await;
    let bob_browser = s.browser();
    bob_browser.login_as("bob");
    bob_browser.sign_in(&s.gate, "/").await;
    let bob = bob_browser.cookie(&s.gate.url(), "logto_gate").expect("bob's session");
    let (mut alice_ws, _) = open_tunnel(s.gate.port, &alice).await;
    let (mut bob_ws, _) = open_tunnel(s.gate.port, &bob).await;
    // Both sessions pass their refresh point with no request: both tunnels ask, and both grants stand.
    introspected(&s.idp, 2).await;
    echo(&mut alice_ws, "asked and standing", std::time::Duration::from_secs(10)).await;
    echo(&mut bob_ws, "asked and standing", std::time::Duration::from_secs(10)).await;

    cut_off(&s.idp);
    closed_by_the_gate(&mut alice_ws, std::time::Duration::from_secs(10)).await;
    let before = s.idp.stats()["introspections"].as_array().map_or(0, Vec::len);
    introspected(&s.idp, before + 2).await;
    echo(&mut bob_ws, "still here", std::time::Duration::from_secs(10)).await;
}

/// Two replicas on Redis whose tunnels check their session every second, a session signed in on the first, and its
/// tunnel on the second.
struct RedisTunnel {
    _redis: crate::support::redis::Redis,
    idp: Idp,
    _upstream: Upstream,
    one: BinaryGate,
    _two: BinaryGate,
    browser: Browser,
    ws: Tunnel,
}

/// A [`RedisTunnel`] with the IdP started with `options` and `extra` in the replicas' configuration, once the
/// tunnel's watch refreshed its session the first time; `None` without redis-server.
async fn redis_tunnel(options: IdpOptions, extra: &str) -> Option<RedisTunnel> {
    let (redis, idp, upstream, one, two) = replicas_on_redis_with(
        options,
        |url| {
            format!(
                "store = \"redis\"\nredis_url = \"{url}\"\nredis_key_prefix = \"t:\"\ntunnel_check_interval = \"1s\"\n\
                 tunnel_grant_check_interval = \"1s\""
            )
        },
        extra,
    )
    .await?;
    let browser = Browser::new(&idp);
    browser.sign_in(&one, "/").await;
    let cookie = browser.cookie(&one.url(), "logto_gate").expect("session cookie");
    let (ws, _) = open_tunnel(two.port, &cookie).await;
    refreshed(&idp, 1).await;
    Some(RedisTunnel {
        _redis: redis,
        idp,
        _upstream: upstream,
        one,
        _two: two,
        browser,
        ws,
    })
}

/// The status of an API client's request (JSON, no redirect) to `gate` with the session `cookie` alone.
async fn api_status(gate: &BinaryGate, cookie: &str) -> StatusCode {
    reqwest::Client::new()
        .get(format!("{}/api", gate.url()))
        .header("cookie", format!("logto_gate={cookie}"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .status()
}

/// How many refresh-token grants the IdP answered.
fn refreshes(idp: &Idp) -> u64 {
    idp.stats()["grants"]["refresh_token"].as_u64().unwrap_or(0)
}

/// Waits (bounded) until the IdP answered at least `at_least` refresh-token grants.
async fn refreshed(idp: &Idp, at_least: u64) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    while refreshes(idp) < at_least {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} refreshes, expected {at_least}",
            refreshes(idp)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// With sessions in Redis the tunnel's watch refreshes the stored session at its refresh point, as a request
/// would, on a replica other than the one the person signed in on; Logto refuses the refresh of a suspended user,
/// and the tunnel closes.
#[tokio::test]
async fn a_websocket_on_redis_closes_when_logto_suspends_its_user() {
    let Some(mut t) = redis_tunnel(two_second_tokens(), "").await else {
        return;
    };
    echo(&mut t.ws, "refreshed and standing", std::time::Duration::from_secs(10)).await;
    assert!(t.idp.suspend("u_alice0001") >= 1);
    closed_by_the_gate(&mut t.ws, std::time::Duration::from_secs(10)).await;
    let asked = t.idp.stats()["introspections"].as_array().map_or(0, Vec::len);
    assert_eq!(asked, 0, "with Redis the watch refreshes, it does not introspect");
}

/// Logto's Management API deletes a user's row and nothing else: their refresh tokens stay, introspection still
/// answers active (it does not look the user up), and no back channel is called; only a refresh is refused ("user
/// not found"). With Redis the tunnel's watch refreshes, so the deleted user's tunnel closes, and the session it
/// ended is gone for the user's requests on every replica.
#[tokio::test]
async fn a_websocket_on_redis_closes_when_logto_deletes_its_user() {
    let Some(mut t) = redis_tunnel(two_second_tokens(), "").await else {
        return;
    };
    echo(&mut t.ws, "refreshed and standing", std::time::Duration::from_secs(10)).await;
    let cookie = t.browser.cookie(&t.one.url(), "logto_gate").expect("session cookie");
    assert_eq!(t.idp.delete_user("u_alice0001"), 1);
    closed_by_the_gate(&mut t.ws, std::time::Duration::from_secs(10)).await;
    assert_eq!(
        api_status(&t.one, &cookie).await,
        StatusCode::UNAUTHORIZED,
        "the ended session is gone"
    );
}

/// With Redis a tunnel is held to the rule that admitted it as its session's claims change: Logto's refreshed ID
/// token carries the user's roles as they are now, so an admin taking away the role the route requires closes the
/// tunnel at the session's next refresh, as it refuses the user's requests there from then on. A change that still
/// meets the rule (another role taken away) leaves it open.
#[tokio::test]
async fn a_websocket_on_redis_closes_when_its_user_loses_the_role_its_route_requires() {
    let rule = "[[rules]]\nprefix = \"/ws\"\nroles = [\"admin\"]\n";
    let Some(mut t) = redis_tunnel(two_second_tokens(), rule).await else {
        return;
    };
    t.idp
        .update_account("u_alice0001", serde_json::json!({ "roles": ["admin"] }));
    let seen = refreshes(&t.idp);
    refreshed(&t.idp, seen + 2).await;
    echo(&mut t.ws, "still an admin", std::time::Duration::from_secs(10)).await;

    t.idp
        .update_account("u_alice0001", serde_json::json!({ "roles": ["editor"] }));
    closed_by_the_gate(&mut t.ws, std::time::Duration::from_secs(10)).await;
    let cookie = t.browser.cookie(&t.one.url(), "logto_gate").expect("session cookie");
    assert_eq!(
        upgrade_status(t.one.port, Some(&cookie)).await,
        403,
        "a new tunnel is refused as well"
    );
}

/// `session.idle_timeout` counts requests only: a tunnel's watch refreshing the Redis session keeps its last request
/// as it was, so a session without requests ends when it has been idle that long (Redis lets it expire then), and
/// its tunnel with it, however often the watch refreshed it meanwhile.
#[tokio::test]
async fn a_tunnels_refreshes_do_not_keep_an_idle_redis_session_alive() {
    let Some((_redis, idp, _upstream, one, two)) = replicas_on_redis_with(
        two_second_tokens(),
        |url| {
            format!(
                "store = \"redis\"\nredis_url = \"{url}\"\nredis_key_prefix = \"t:\"\ntunnel_check_interval = \"1s\"\n\
                 idle_timeout = \"4s\""
            )
        },
        "",
    )
    .await
    else {
        return;
    };
    let browser = Browser::new(&idp);
    browser.sign_in(&one, "/").await;
    let cookie = browser.cookie(&one.url(), "logto_gate").expect("session cookie");
    let (mut ws, _) = open_tunnel(two.port, &cookie).await;
    let idle_since = std::time::Instant::now();
    refreshed(&idp, 2).await;
    echo(&mut ws, "refreshed, not idle yet", std::time::Duration::from_secs(10)).await;
    closed_by_the_gate(&mut ws, std::time::Duration::from_secs(10)).await;
    assert!(
        idle_since.elapsed() >= std::time::Duration::from_secs(3),
        "closed after {:?}, before the session was idle",
        idle_since.elapsed()
    );
    assert_eq!(
        api_status(&one, &cookie).await,
        StatusCode::UNAUTHORIZED,
        "idle too long"
    );
}

/// Logto rotates a refresh token on every refresh here (as past 70 % of its life). With Redis the tunnel's watch
/// and the user's requests refresh the one stored session, once per refresh point across replicas, so the token
/// chain stays whole: the tunnel stays open and the requests go on. With the cookie store the tunnel only knows the
/// cookie it was opened with, whose token a request's refresh rotated away: introspected, it reads as inactive
/// (Logto cannot tell it from a revoked one) and the tunnel closes, as `session.tunnel_grant_check_interval`
/// documents.
#[tokio::test]
async fn a_refresh_token_rotated_by_a_request_closes_a_tunnel_only_in_the_cookie_store() {
    let aged = IdpOptions {
        refresh_tokens_aged: true,
        ..two_second_tokens()
    };
    if let Some(mut t) = redis_tunnel(aged.clone(), "").await {
        for round in 0..3 {
            let before = refreshes(&t.idp);
            let r = t.browser.get(format!("{}/refresh-me", t.one.url())).await;
            assert_eq!(r.status(), StatusCode::OK, "round {round}");
            refreshed(&t.idp, before + 2).await;
            echo(&mut t.ws, "the token rotated", std::time::Duration::from_secs(10)).await;
        }
        assert_eq!(t.idp.live_grants(), 1, "no rotated-away token was sent again");
        let r = t.browser.get(format!("{}/after", t.one.url())).await;
        assert_eq!(r.status(), StatusCode::OK);
    }

    let s = Stack::edited(
        aged,
        "",
        "",
        in_session("tunnel_check_interval = \"1s\"\ntunnel_grant_check_interval = \"1s\""),
    )
    .await;
    let (b, cookie) = s.signed_in().await;
    let (mut ws, _) = open_tunnel(s.gate.port, &cookie).await;
    introspected(&s.idp, 1).await;
    let before = refreshes(&s.idp);
    let r = b.get(format!("{}/refresh-me", s.gate.url())).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(refreshes(&s.idp), before + 1);
    closed_by_the_gate(&mut ws, std::time::Duration::from_secs(10)).await;
}

/// Waits (bounded) until the gate's `/metrics` counts at least `at_least` grant checks that ended in `outcome`, and
/// returns the count.
async fn grant_checks(metrics_port: u16, outcome: &str, at_least: f64) -> f64 {
    let name = format!("logto_gate_tunnel_grant_checks_total{{outcome=\"{outcome}\"}} ");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let text = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let count = text
            .lines()
            .find_map(|l| l.strip_prefix(name.as_str()))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"));
        if count >= at_least {
            return count;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}{count}, expected {at_least}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A grant check Logto cannot answer closes nothing: an outage at Logto must not cut every tunnel at once. The
/// tunnel stays open through failed checks and is asked about again.
#[tokio::test]
async fn a_websocket_stays_open_while_logto_cannot_answer_its_grant_check() {
    let metrics_port = free_port();
    let line: &'static str = Box::leak(format!("metrics_listen = \"127.0.0.1:{metrics_port}\"").into_boxed_str());
    let Stack {
        idp,
        upstream: _upstream,
        gate,
    } = Stack::edited(two_second_tokens(), "", "", |t| {
        in_server(line)(in_session(
            "tunnel_check_interval = \"1s\"\ntunnel_grant_check_interval = \"1s\"",
        )(t))
    })
    .await;
    let b = Browser::new(&idp);
    b.sign_in(&gate, "/").await;
    let cookie = b.cookie(&gate.url(), "logto_gate").expect("session cookie");
    let (mut ws, _) = open_tunnel(gate.port, &cookie).await;
    grant_checks(metrics_port, "standing", 1.0).await;
    drop(idp);
    grant_checks(metrics_port, "failed", 2.0).await;
    echo(&mut ws, "still here", std::time::Duration::from_secs(10)).await;
    assert_eq!(grant_checks(metrics_port, "ended", 0.0).await, 0.0);
}

/// Two replicas on Redis whose tunnels check their session every second, and a browser signed in on the first.
struct SignedInOnReplicas {
    redis: crate::support::redis::Redis,
    _idp: Idp,
    _upstream: Upstream,
    one: BinaryGate,
    two: BinaryGate,
    _browser: Browser,
    /// The session cookie's value.
    cookie: String,
}

/// A [`SignedInOnReplicas`]; `None` without redis-server.
async fn signed_in_on_replicas() -> Option<SignedInOnReplicas> {
    let (redis, idp, upstream, one, two) = replicas_on_redis(|url| {
        format!("store = \"redis\"\nredis_url = \"{url}\"\nredis_key_prefix = \"t:\"\ntunnel_check_interval = \"1s\"")
    })
    .await?;
    let b = Browser::new(&idp);
    b.sign_in(&one, "/").await;
    let cookie = b.cookie(&one.url(), "logto_gate").expect("session cookie");
    Some(SignedInOnReplicas {
        redis,
        _idp: idp,
        _upstream: upstream,
        one,
        two,
        _browser: b,
        cookie,
    })
}

/// Redis going away fails every tunnel's check at once. The tunnels stay open, and the gate says so in one warning
/// line per 10 s for all of them (with how many checks failed), not one per tunnel per check: ten thousand tunnels
/// would otherwise write ten thousand lines every `session.tunnel_check_interval`.
#[tokio::test]
async fn a_redis_outage_keeps_tunnels_open_with_one_warning_for_all() {
    let Some(mut r) = signed_in_on_replicas().await else {
        return;
    };
    let mut tunnels = Vec::new();
    for _ in 0..6 {
        tunnels.push(open_tunnel(r.two.port, &r.cookie).await.0);
    }
    r.redis.stop().await;
    // Three check intervals: some eighteen failed checks, well within one warning period.
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    for ws in &mut tunnels {
        echo(ws, "still open", std::time::Duration::from_secs(10)).await;
    }
    let log = r.two.stop_and_read_log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("could not check whether") && l.contains("still stand"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("failed_checks=1"), "{}", warnings[0]);
}

/// A WebSocket tunnel an API client opened with a Logto access token lives no longer than the token: it closes once
/// the token expires (its `exp` plus `logto.clock_leeway`), while a tunnel whose token is still valid goes on. A
/// JWT cannot be revoked, so without this a token stolen or meant to last minutes kept a stream open for good.
#[tokio::test]
async fn a_websocket_opened_with_a_bearer_token_closes_when_the_token_expires() {
    const RESOURCE: &str = "https://api.example.com";
    let s = Stack::edited(
        IdpOptions {
            resources: Some(serde_json::json!({ RESOURCE: { "scopes": ["read"] } })),
            ..Default::default()
        },
        &format!("resources = [\"{RESOURCE}\"]\nclock_leeway = \"1s\""),
        "",
        |t| t,
    )
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = |exp: u64| {
        s.idp.sign(
            serde_json::json!({"iss": s.idp.issuer(), "aud": RESOURCE, "sub": "u_service01", "client_id": "m2m",
                "scope": "read", "iat": now, "exp": exp}),
            serde_json::json!({}),
        )
    };
    let bearer = |t: String| format!("Bearer {t}");
    let (mut short, _) = open_tunnel_with(s.gate.port, "authorization", &bearer(token(now + 2))).await;
    let (mut long, _) = open_tunnel_with(s.gate.port, "authorization", &bearer(token(now + 300))).await;
    echo(&mut short, "before", std::time::Duration::from_secs(10)).await;
    closed_by_the_gate(&mut short, std::time::Duration::from_secs(10)).await;
    echo(&mut long, "still here", std::time::Duration::from_secs(10)).await;
}

/// With sessions in Redis, a sign-out on one replica closes the session's tunnels on another.
#[tokio::test]
async fn a_websocket_closes_on_every_replica_when_its_redis_session_ends() {
    let Some(r) = signed_in_on_replicas().await else {
        return;
    };
    let (mut ws, _) = open_tunnel(r.one.port, &r.cookie).await;
    echo(&mut ws, "before", std::time::Duration::from_secs(10)).await;
    let out = plain()
        .get(format!("{}/_logto/sign-out", r.two.url()))
        .header("cookie", format!("logto_gate={}", r.cookie))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::FOUND);
    closed_by_the_gate(&mut ws, std::time::Duration::from_secs(10)).await;
}

/// `[response_headers]`: the operator's fields on every answer to a client, replacing the app's of the same name (an
/// empty value removes the app's), on both client paths (a bodiless GET on the gate's own, a POST on hyper's) and
/// over HTTP/2; the gate's own redirects and pages get those it does not set itself (its pages keep their stricter
/// `Content-Security-Policy` and `X-Frame-Options`); the forward-auth answer, which goes to the proxy asking, gets
/// none.
#[tokio::test]
async fn response_headers_are_set_on_every_answer_and_replace_the_apps() {
    const HSTS: &str = "max-age=63072000; includeSubDomains";
    const CSP: &str = "frame-ancestors 'self'";
    let s = Stack::with(
        "",
        &format!(
            "[response_headers]\n\"Strict-Transport-Security\" = \"{HSTS}\"\n\"x-powered-by\" = \"\"\n\
             \"Server\" = \"\"\n\"Content-Security-Policy\" = \"{CSP}\"\n\"X-Frame-Options\" = \"\"\n"
        ),
    )
    .await;
    let (_, cookie) = s.signed_in().await;
    let session = format!("logto_gate={cookie}");
    let url = format!("{}/branded", s.gate.url());
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let answers = [
        (
            "GET",
            plain().get(&url).header("cookie", &session).send().await.unwrap(),
        ),
        (
            "POST",
            plain()
                .post(&url)
                .header("cookie", &session)
                .body("x")
                .send()
                .await
                .unwrap(),
        ),
        (
            "GET over HTTP/2",
            h2.get(&url).header("cookie", &session).send().await.unwrap(),
        ),
    ];
    for (what, answer) in answers {
        assert_eq!(answer.status(), StatusCode::OK, "{what}");
        let h = answer.headers();
        let all = |name: &str| {
            h.get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap_or("?"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            all("strict-transport-security"),
            [HSTS],
            "{what}: the operator's replaces the app's"
        );
        assert_eq!(all("content-security-policy"), [CSP], "{what}");
        assert_eq!(all("x-powered-by"), Vec::<&str>::new(), "{what}: removed");
        assert_eq!(all("server"), Vec::<&str>::new(), "{what}: removed");
        assert_eq!(all("x-frame-options"), Vec::<&str>::new(), "{what}: removed");
        assert_eq!(all("x-app-version"), ["7"], "{what}: the app's other fields stay");
        assert_eq!(answer.text().await.unwrap(), "branded", "{what}");
    }

    // The gate's own answers (a sign-in redirect, a 401 to an API client, its health): the operator's fields where
    // the gate sets none, its own stricter ones kept.
    let navigation = plain()
        .get(format!("{}/somewhere", s.gate.url()))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(navigation.status(), StatusCode::FOUND);
    let api = plain().get(format!("{}/somewhere", s.gate.url())).send().await.unwrap();
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
    let health = plain()
        .get(format!("{}/_logto/healthz", s.gate.url()))
        .send()
        .await
        .unwrap();
    let page = plain()
        .get(format!("{}/_logto/signed-out", s.gate.url()))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    for answer in [&navigation, &api, &health, &page] {
        let h = answer.headers();
        assert_eq!(h["strict-transport-security"], HSTS, "{}", answer.url());
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{}: {csp}", answer.url());
        assert_eq!(
            h.get_all("content-security-policy").iter().count(),
            1,
            "{}",
            answer.url()
        );
        assert_eq!(h["x-frame-options"], "DENY", "{}", answer.url());
    }
    let asked = plain()
        .get(format!("{}/_logto/auth", s.gate.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status(), StatusCode::UNAUTHORIZED);
    assert!(asked.headers().get("strict-transport-security").is_none());
}
