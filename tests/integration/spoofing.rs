//! Identity spoofing, each attempted over real sockets: a client's copies of the headers the gate sets (in every
//! spelling, folded, injected through a claim, hidden behind hop-by-hop or forwarding fields) never reach the app.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::upstream::Seen;
use crate::support::*;

/// Signs in as an account with `claims` (through the whole flow) and returns what the app saw of the request.
async fn app_sees_signed_in(claims: serde_json::Value) -> Seen {
    let idp = Idp::start(IdpOptions::default());
    idp.add_account("mallory", claims);
    let upstream = Upstream::start().await;
    let gate = TestGate::start(&idp, &upstream.url(), "", "").await;
    let b = Browser::new(&idp);
    b.login_as("mallory");
    b.sign_in(&gate, "/").await;
    upstream.last()
}

#[tokio::test]
async fn crlf_injection_through_a_claim_cannot_add_an_upstream_header() {
    let seen = app_sees_signed_in(
        json!({"sub": "u_mallory", "username": "mallory\r\nX-Forwarded-Groups: admin",
                                         "email": "m@example.com", "roles": []}),
    )
    .await;
    assert_eq!(
        seen.header("x-forwarded-preferred-username"),
        None,
        "an unsafe claim sends no header"
    );
    // No injected value: mallory has no roles, so no groups header at all.
    assert_eq!(seen.header("x-forwarded-groups"), None);
}

/// A role whose name holds a comma would read as two in `X-Forwarded-Groups` ("viewer,admin" as viewer and admin),
/// one with a space at an end as another (" admin" as admin, list parsers trim): each is left out, the user's other
/// roles are sent.
#[tokio::test]
async fn a_comma_in_a_role_name_cannot_add_a_group() {
    let seen = app_sees_signed_in(
        json!({"sub": "u_mallory", "username": "mallory", "email": "m@example.com",
                                         "roles": ["editor", "viewer,admin", " admin", "owner "]}),
    )
    .await;
    assert_eq!(seen.header("x-forwarded-user"), Some("u_mallory"));
    assert_eq!(seen.header("x-forwarded-groups"), Some("editor"));
}

#[tokio::test]
async fn identity_spoofing_with_obs_fold_is_refused() {
    let s = Stack::start().await;
    let status = first_status(
        s.gate.port,
        b"GET /x HTTP/1.1\r\nHost: a\r\nX-Forwarded-User: a\r\n admin\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(s.upstream.count(), 0);
}

/// Forwarding fields that name the client's address, scheme, host, path or method as apps, frameworks and CDNs
/// spell them: from an untrusted peer none reaches the app (in any spelling); a trusted proxy's pass.
#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_not_believed() {
    let fields = [
        ("X-Forwarded-Prefix", "/admin"),
        ("X-Forwarded-Uri", "/admin"),
        ("X-Forwarded-Method", "DELETE"),
        ("X-Original-URI", "/admin"),
        ("X-Real-IP", "10.0.0.1"),
        ("Client-IP", "10.0.0.1"),
        ("X_Client_IP", "10.0.0.1"),
        ("True-Client-IP", "10.0.0.1"),
        ("X-Cluster-Client-IP", "10.0.0.1"),
        ("CF-Connecting-IP", "10.0.0.1"),
        ("Fastly-Client-IP", "10.0.0.1"),
        ("X-Original-Forwarded-For", "10.0.0.1"),
        ("X-Forwarded", "for=10.0.0.1"),
        ("Forwarded-For", "10.0.0.1"),
        ("X-Forwarded-Ssl", "on"),
        ("X-Forwarded-Scheme", "https"),
        ("X-Url-Scheme", "https"),
        ("Front-End-Https", "on"),
        ("X-Original-Host", "admin.example"),
    ];
    let send = |s: &Stack, cookie: String| {
        let mut req = plain()
            .get(format!("{}/x", s.gate.url()))
            .header("cookie", format!("logto_gate={cookie}"));
        for (name, value) in fields {
            req = req.header(name, value);
        }
        req.send()
    };
    let s = Stack::start().await;
    let (_, cookie) = s.signed_in().await;
    assert_eq!(send(&s, cookie).await.unwrap().status(), StatusCode::OK);
    let seen = s.upstream.last();
    for (name, _) in fields {
        let name = name.to_ascii_lowercase();
        assert_eq!(
            seen.header(&name),
            None,
            "{name} from an untrusted peer reached the upstream"
        );
    }
    let s = Stack::edited(
        IdpOptions::default(),
        "",
        "",
        in_server("trusted_proxies = [\"127.0.0.1/32\"]"),
    )
    .await;
    let (_, cookie) = s.signed_in().await;
    assert_eq!(send(&s, cookie).await.unwrap().status(), StatusCode::OK);
    let seen = s.upstream.last();
    for (name, value) in fields {
        let name = name.to_ascii_lowercase();
        assert_eq!(seen.header(&name), Some(value), "{name} from a trusted proxy was lost");
    }
}

/// A request id names one request in the gate's access log and the app's: a client that chose its own could make
/// its requests' lines share another user's id. Only a trusted proxy's is kept; anyone else's is replaced by the
/// gate's own, which the app and the answer get (on the app's requests, the gate's pages and its endpoints).
#[tokio::test]
async fn only_a_trusted_proxy_chooses_the_request_id() {
    let s = Stack::start().await;
    let (_, cookie) = s.signed_in().await;
    request_ids_kept(&s, cookie, false).await;
    let s = Stack::edited(
        IdpOptions::default(),
        "",
        "",
        in_server("trusted_proxies = [\"10.0.0.0/8\", \"127.0.0.1/32\"]"),
    )
    .await;
    let (_, cookie) = s.signed_in().await;
    request_ids_kept(&s, cookie, true).await;
}

/// Asks `s`'s gate, as the signed-in `cookie` and signed out, with a request id of the client's choosing: the answer
/// (and the app) carry that id exactly when `kept`.
async fn request_ids_kept(s: &Stack, cookie: String, kept: bool) {
    let gate = s.gate.url();
    let chosen = "req-of-another-user-0001";
    for path in ["/x", "/_logto/auth", "/_logto/userinfo"] {
        let resp = plain()
            .get(format!("{gate}{path}"))
            .header("cookie", format!("logto_gate={cookie}"))
            .header("x-request-id", chosen)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        let answered = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_eq!(answered == chosen, kept, "{path}: answered with {answered}");
        if path == "/x" {
            assert_eq!(s.upstream.last().header("x-request-id"), Some(answered.as_str()));
        }
    }
    // Signed out: the gate's own 401 answers with the same rule.
    let resp = plain()
        .get(format!("{gate}/y"))
        .header("x-request-id", chosen)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["x-request-id"] == chosen, kept);
}

#[tokio::test]
async fn hop_by_hop_abuse_cannot_strip_the_headers_the_gate_sets() {
    // Naming a header in `Connection` makes a proxy drop it (RFC 9110 §7.6.1). A client must not be able to drop
    // the identity, forwarding or request-id headers the gate adds after it has read the request.
    let (s, cookie, _) = signed_in_stack().await;
    let owned =
        "X-Forwarded-User, X-Forwarded-Email, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, X-Request-Id";
    let req = format!(
        "GET /who HTTP/1.1\r\nHost: a\r\nCookie: logto_gate={cookie}\r\nAccept: application/json\r\nConnection: keep-alive, {owned}\r\n\r\n"
    );
    assert_eq!(first_status(s.gate.port, req.as_bytes()).await, 200);
    let seen = s.upstream.last();
    assert_eq!(seen.path, "/who");
    assert_eq!(seen.header("x-forwarded-user"), Some("u_alice0001"));
    assert_eq!(seen.header("x-forwarded-email"), Some("alice@example.com"));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    for h in ["x-forwarded-proto", "x-forwarded-host", "x-request-id"] {
        assert!(seen.header(h).is_some(), "{h} was stripped through Connection");
    }
    assert_eq!(seen.header("connection"), None);
}

#[tokio::test]
async fn a_user_agent_that_looks_like_a_health_checker_gets_no_free_pass() {
    let s = Stack::start().await;
    for ua in [
        "kube-probe/1.31",
        "ELB-HealthChecker/2.0",
        "GoogleHC/1.0",
        "Consul Health Check",
    ] {
        let resp = plain()
            .get(format!("{}/admin", s.gate.url()))
            .header("user-agent", ua)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{ua}");
    }
    assert_eq!(s.upstream.count(), 0);
}

#[tokio::test]
async fn spoofed_identity_headers_are_stripped_in_every_spelling() {
    let s = Stack::start().await;
    let b = s.browser();
    b.sign_in(&s.gate, "/").await;
    b.client
        .get(format!("{}/whoami", s.gate.url()))
        .header("X-Forwarded-User", "mallory")
        .header("x-forwarded-user", "mallory2")
        .header("X_Forwarded_User", "mallory3")
        .header("x_forwarded_email", "mallory@evil.example")
        .header("X-Forwarded-Groups", "admin,root")
        .header("x-forwarded-preferred_username", "root")
        .send()
        .await
        .unwrap();
    let seen = s.upstream.last();
    assert_eq!(seen.header_count("x-forwarded-user"), 1);
    assert_eq!(seen.header("x-forwarded-user"), Some("u_alice0001"));
    assert_eq!(seen.header("x-forwarded-email"), Some("alice@example.com"));
    assert_eq!(seen.header("x-forwarded-groups"), Some("admin,editor"));
    assert_eq!(seen.header("x-forwarded-preferred-username"), Some("alice"));
    for (name, _) in &seen.headers {
        assert!(
            !name.contains('_'),
            "an underscore variant reached the upstream: {name}"
        );
    }
}

/// The identity fields other auth proxies set, which an app moved from behind one (or a second app behind the
/// gate) may still believe, never come from a client: removed in every spelling whatever `[headers]` maps (here a
/// table naming one Grafana field, so the gate's own default names are no longer its to set) and even from a
/// trusted proxy, which passes a client's fields on as they came.
#[tokio::test]
async fn identity_fields_of_other_auth_proxies_never_come_from_a_client() {
    let fields = [
        ("X-Forwarded-User", "admin"),
        ("X-Forwarded-Groups", "admin"),
        ("X-Forwarded-Email", "admin@example.com"),
        ("X-Forwarded-Preferred-Username", "admin"),
        ("X-Forwarded-Access-Token", "forged"),
        ("Remote-User", "admin"),
        ("Remote-Groups", "admin"),
        ("Remote-Email", "admin@example.com"),
        ("Remote-Name", "Admin"),
        ("X-Remote-User", "admin"),
        ("X_Remote_Group", "system:masters"),
        ("X-Remote-Extra-Scopes", "admin"),
        ("X-WEBAUTH-USER", "admin"),
        ("X-Webauth-Email", "admin@example.com"),
        ("X-WEBAUTH-FULLNAME", "Admin"),
        ("X-authentik-username", "admin"),
        ("X-authentik-groups", "admin"),
        ("X-Pomerium-Jwt-Assertion", "forged"),
        ("X-Pomerium-Claim-Email", "admin@example.com"),
        ("Cf-Access-Jwt-Assertion", "forged"),
        ("Cf-Access-Authenticated-User-Email", "admin@example.com"),
        (
            "X-Goog-Authenticated-User-Email",
            "accounts.google.com:admin@example.com",
        ),
        ("X-Goog-Iap-Jwt-Assertion", "forged"),
        ("X-Amzn-Oidc-Identity", "admin"),
        ("X-Amzn-Oidc-Data", "forged"),
        ("X-MS-CLIENT-PRINCIPAL-NAME", "admin@example.com"),
        ("X-MS-CLIENT-PRINCIPAL", "forged"),
        ("X-Vouch-User", "admin"),
    ];
    let table = "[headers]\n\"X-Webauth-User\" = \"username\"\n";
    for trusted in [false, true] {
        let s = Stack::edited(IdpOptions::default(), "", table, |t| {
            if trusted {
                in_server("trusted_proxies = [\"127.0.0.1/32\"]")(t)
            } else {
                t
            }
        })
        .await;
        let (_, cookie) = s.signed_in().await;
        let mut req = plain()
            .get(format!("{}/x", s.gate.url()))
            .header("cookie", format!("logto_gate={cookie}"));
        for (name, value) in fields {
            req = req.header(name, value);
        }
        assert_eq!(req.send().await.unwrap().status(), StatusCode::OK);
        let seen = s.upstream.last();
        assert_eq!(seen.header("x-webauth-user"), Some("alice"), "the gate's own mapping");
        assert_eq!(seen.header_count("x-webauth-user"), 1);
        let spelled = |n: &str| n.to_ascii_lowercase().replace('_', "-");
        for (name, _) in fields.iter().filter(|(n, _)| !n.eq_ignore_ascii_case("x-webauth-user")) {
            let arrived = seen.headers.iter().find(|(k, _)| spelled(k) == spelled(name));
            assert_eq!(arrived, None, "{name} reached the app (trusted: {trusted})");
        }
        assert_eq!(
            seen.header("x-forwarded-for"),
            Some("127.0.0.1"),
            "other fields are unchanged"
        );
    }
}

/// `server.trusted_identity_headers`: another auth proxy in front (Cloudflare Access, Pomerium) whose fields the app
/// reads. They pass as the trusted proxy spells them, and only from it; every other foreign field still goes.
#[tokio::test]
async fn identity_fields_a_trusted_proxy_sends_pass_only_where_kept() {
    let kept = "trusted_identity_headers = [\"Cf-Access-Authenticated-User-Email\", \"X-Pomerium-Claim-Email\"]";
    for trusted in [true, false] {
        let proxies = if trusted { "127.0.0.1/32" } else { "10.0.0.0/8" };
        let server = format!("trusted_proxies = [\"{proxies}\"]\n{kept}");
        let s = Stack::edited(IdpOptions::default(), "", "", |t| {
            t.replacen("[server]\n", &format!("[server]\n{server}\n"), 1)
        })
        .await;
        let (_, cookie) = s.signed_in().await;
        let resp = plain()
            .get(format!("{}/x", s.gate.url()))
            .header("cookie", format!("logto_gate={cookie}"))
            .header("Cf-Access-Authenticated-User-Email", "alice@example.com")
            .header("X-Pomerium-Claim-Email", "alice@example.com")
            .header("Cf_Access_Authenticated_User_Email", "admin@example.com")
            .header("X-Pomerium-Claim-Groups", "admin")
            .header("Remote-User", "admin")
            .header("X-Forwarded-User", "admin")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let seen = s.upstream.last();
        let want = trusted.then_some("alice@example.com");
        assert_eq!(
            seen.header("cf-access-authenticated-user-email"),
            want,
            "trusted: {trusted}"
        );
        assert_eq!(seen.header("x-pomerium-claim-email"), want, "trusted: {trusted}");
        for name in [
            "cf_access_authenticated_user_email",
            "x-pomerium-claim-groups",
            "remote-user",
        ] {
            assert_eq!(seen.header(name), None, "{name} reached the app (trusted: {trusted})");
        }
        assert_eq!(seen.header("x-forwarded-user"), Some("u_alice0001"), "the gate's own");
    }
}

#[tokio::test]
async fn spoofed_identity_without_a_session_never_reaches_the_upstream() {
    let s = Stack::start().await;
    let resp = reqwest::Client::new()
        .get(format!("{}/admin", s.gate.url()))
        .header("X-Forwarded-User", "admin")
        .header("X-Forwarded-Email", "admin@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(s.upstream.count(), 0);
}

/// Request trailer fields are never passed on, so a client cannot send identity fields after its body (declared in
/// `Trailer` or not) to an app that reads trailers: on the HTTP/1 front and on hyper's server after a hand-over.
#[tokio::test]
async fn identity_fields_sent_as_request_trailers_never_reach_the_upstream() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Stack::start().await;
    let (_, cookie) = s.signed_in().await;
    // The control: sent to the upstream directly, the trailers are read there.
    let mut direct = tokio::net::TcpStream::connect(s.upstream.addr).await.unwrap();
    direct
        .write_all(
            b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: X-Forwarded-User\r\n\
              Connection: close\r\n\r\n5\r\nhello\r\n0\r\nX-Forwarded-User: admin\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    direct.read_to_end(&mut answer).await.unwrap();
    assert!(String::from_utf8_lossy(&answer).contains(r#""trailers":{"x-forwarded-user":"admin"}"#));
    let hand_over = "GET /_logto/healthz HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n";
    for (before, declared) in [
        ("", ""),
        ("", "Trailer: X-Forwarded-User, X-Sum\r\n"),
        (hand_over, ""),
        (hand_over, "Trailer: X-Forwarded-User, X-Sum\r\n"),
    ] {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", s.gate.port))
            .await
            .unwrap();
        let request = format!(
            "{before}POST /upload HTTP/1.1\r\nHost: x\r\nCookie: logto_gate={cookie}\r\nTransfer-Encoding: chunked\r\n\
             {declared}Connection: close\r\n\r\n5\r\nhello\r\n0\r\nX-Forwarded-User: admin\r\nX-Sum: 532\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(READY_TIMEOUT, stream.read_to_end(&mut answer))
            .await
            .expect("an answer")
            .unwrap();
        let text = String::from_utf8_lossy(&answer);
        let body = text.rsplit("\r\n\r\n").next().unwrap_or_default();
        assert!(text.contains("HTTP/1.1 200"), "{before:?} {declared:?}: {text}");
        let seen: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{text}"));
        assert_eq!(seen["bytes"], 5, "{text}");
        assert_eq!(seen["trailers"], json!({}), "{before:?} {declared:?}: {text}");
        assert_eq!(s.upstream.last().header("x-forwarded-user"), Some("u_alice0001"));
    }
}

/// RFC 9112 §3.2: an HTTP/1.1 request without `Host`, with two, or with one that is no `host[:port]` gets 400; so
/// does a `Host` naming another host than an absolute-form target or HTTP/2's `:authority` (the gate does not pick
/// one of two hosts for its host rules; a default port written on one side only is the same host). None of them
/// reaches the app; the well-formed variants do.
#[tokio::test]
async fn a_request_with_two_hosts_or_none_is_refused() {
    let s = Stack::start().await;
    let (_, cookie) = s.signed_in().await;
    let request = |target: &str, version: &str, fields: &str| {
        format!("GET {target} HTTP/{version}\r\n{fields}Cookie: logto_gate={cookie}\r\n\r\n")
    };
    let cases = [
        (400, request("/x", "1.1", "Host: a\r\nHost: b\r\n")),
        (400, request("/x", "1.1", "Host: a\r\nX: y\r\nhost: a\r\n")),
        (400, request("/x", "1.1", "")),
        (400, request("/x", "1.1", "Host: a, b\r\n")),
        (400, request("/x", "1.1", "Host: user@a\r\n")),
        (400, request("http://admin.example/x", "1.1", "Host: www.example\r\n")),
        (400, request("http://a:8080/x", "1.1", "Host: a\r\n")),
        (400, request("http://u@a/x", "1.1", "Host: a\r\n")),
        (200, request("/x", "1.1", "Host: a\r\n")),
        (200, request("/x", "1.1", "Host: [::1]:8080\r\n")),
        (200, request("/x", "1.1", "Host:\r\n")),
        (200, request("/x", "1.0", "")),
        (200, request("http://a/x", "1.1", "Host: A\r\n")),
        (200, request("http://a:80/x", "1.1", "Host: a\r\n")),
    ];
    let before = s.upstream.count();
    for (status, raw) in &cases {
        assert_eq!(first_status(s.gate.port, raw.as_bytes()).await, *status, "{raw}");
    }
    let served = cases.iter().filter(|(status, _)| *status == 200).count();
    assert_eq!(
        s.upstream.count(),
        before + served,
        "only the well-formed requests reached the app"
    );
    // HTTP/2: a Host field beside a different :authority.
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let resp = h2
        .get(format!("{}/x", s.gate.url()))
        .header("host", "admin.example")
        .header("cookie", format!("logto_gate={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("Host names another host than the request target"),
        "{text}"
    );
    assert_eq!(s.upstream.count(), before + served);
}

/// A `Host` (or a trusted proxy's `X-Forwarded-Host`) that names two hosts, as a list or with characters no host
/// name has, is refused: the host rules would see no host they know while the gate passed the value on as
/// `X-Forwarded-Host` (an allowed other host) to an app that reads the list's last element (Rails) or first (Express),
/// and serves the host a rule denies. Over HTTP/1.1 and as HTTP/2's `:authority`.
#[tokio::test]
async fn a_host_that_names_two_hosts_never_evades_a_host_rule() {
    let s = Stack::edited(
        IdpOptions::default(),
        "",
        "[[rules]]\nhost = \"admin.apps.example.test\"\nprefix = \"/\"\nallow = \"deny\"\n\n[access]\nallow = \"public\"\n",
        on_subdomains(r#"[".apps.example.test"]"#, r#"trusted_proxies = ["127.0.0.1/32"]"#),
    )
    .await;
    let port = s.gate.port;
    let request = |fields: &str| format!("GET /x HTTP/1.1\r\n{fields}Connection: close\r\n\r\n");
    let status = |answer: &str| answer.split(' ').nth(1).unwrap_or_default().to_owned();
    // The controls: the admin host is denied by name, another allowed host is served and named to the app.
    for denied in [
        request("Host: admin.apps.example.test\r\n"),
        request("Host: ADMIN.apps.example.test.:8080\r\n"),
        request("Host: ci.apps.example.test\r\nX-Forwarded-Host: admin.apps.example.test\r\n"),
    ] {
        assert_eq!(
            status(&exchange_until_closed(port, denied.as_bytes()).await),
            "403",
            "{denied}"
        );
    }
    let served = exchange_until_closed(port, request("Host: ci.apps.example.test\r\n").as_bytes()).await;
    assert_eq!(status(&served), "200", "{served}");
    assert_eq!(
        s.upstream.last().header("x-forwarded-host"),
        Some("ci.apps.example.test")
    );
    let before = s.upstream.count();
    for refused in [
        request("Host: x,admin.apps.example.test\r\n"),
        request("Host: admin.apps.example.test;x\r\n"),
        request("Host: %61dmin.apps.example.test\r\n"),
        request("Host: ci.apps.example.test\r\nX-Forwarded-Host: x,admin.apps.example.test\r\n"),
        request("Host: ci.apps.example.test\r\nX-Forwarded-Host: admin.apps.example.test, ci.apps.example.test\r\n"),
        request(
            "Host: ci.apps.example.test\r\nX-Forwarded-Host: ci.apps.example.test\r\n\
             X-Forwarded-Host: admin.apps.example.test\r\n",
        ),
    ] {
        let answer = exchange_until_closed(port, refused.as_bytes()).await;
        assert_eq!(status(&answer), "400", "{refused}\n{answer}");
        assert!(answer.contains("host name or address"), "{answer}");
    }
    // HTTP/2: the same list as `:authority`, with no `Host` field beside it.
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let h2 = |authority: &str| {
        hyper::Request::get(format!("http://{authority}/x"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    let resp = sender.send_request(h2("x,admin.apps.example.test")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = sender.send_request(h2("admin.apps.example.test")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(s.upstream.count(), before, "no refused request reached the app");
}

/// Copies of the session cookie a client makes up around a real one: forged or tampered values never open and never
/// stand in for anyone, the real one is still found among the last three copies of its name, and copies beyond the
/// three sent last are not read at all (a client cannot make the gate open more per request).
#[tokio::test]
async fn made_up_copies_of_the_session_cookie_open_nothing() {
    let s = Stack::start().await;
    let (_, real) = s.signed_in().await;
    let mut tampered = real.clone().into_bytes();
    tampered[30] = if tampered[30] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let url = format!("{}/api", s.gate.url());
    for cookie in [
        format!("logto_gate=forged; logto_gate={real}; logto_gate={tampered}"),
        format!("{}logto_gate={real}", "logto_gate=forged; ".repeat(40)),
    ] {
        assert_eq!(status_with_cookie(&url, &cookie).await, StatusCode::OK, "{cookie}");
        assert_eq!(s.upstream.last().header("x-forwarded-user"), Some("u_alice0001"));
    }
    for cookie in [
        format!("logto_gate=forged; logto_gate={tampered}"),
        // The real copy first, then three the client made up: only those three are read.
        format!("logto_gate={real}; logto_gate=a; logto_gate=b; logto_gate={tampered}"),
    ] {
        assert_eq!(
            status_with_cookie(&url, &cookie).await,
            StatusCode::UNAUTHORIZED,
            "{cookie}"
        );
    }
}
