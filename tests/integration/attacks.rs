//! Replays of the attacks published against well-known auth proxies, one test per attack, each over real
//! sockets. Every one is refused with a 4xx and a clear message (a return path falls back to `/`), never a 5xx, and
//! never reaches the upstream.

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Sends raw bytes and returns the status code of the first response.
async fn raw(port: u16, request: &[u8]) -> u16 {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n])
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

// --- Open redirect through the return path -------------------------------------------------------------------

async fn return_path_falls_back_to_root(candidate: &str) {
    let s = Stack::start().await;
    let b = s.browser();
    let enc: String = url::form_urlencoded::byte_serialize(candidate.as_bytes()).collect();
    let (hops, resp) = b
        .navigate(&format!("{}/_logto/sign-in?redirect={enc}", s.gate.url()))
        .await;
    assert_eq!(resp.status(), StatusCode::OK, "{candidate:?}: {hops:#?}");
    assert_eq!(
        hops.last().unwrap().url,
        format!("{}/", s.gate.url()),
        "{candidate:?} left the origin"
    );
    for h in &hops {
        if let Some(loc) = &h.location {
            assert!(!loc.contains("evil"), "a redirect pointed at evil: {loc}");
        }
    }
}

macro_rules! open_redirect {
    ($($name:ident => $candidate:expr),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            return_path_falls_back_to_root($candidate).await;
        }
    )*};
}

open_redirect! {
    open_redirect_scheme_relative_double_slash => "//evil.example/",
    open_redirect_slash_backslash => "/\\evil.example/",
    open_redirect_encoded_backslash => "/%5Cevil.example/",
    open_redirect_encoded_double_slash => "%2F%2Fevil.example/",
    open_redirect_tab_inside => "/\t/evil.example/",
    open_redirect_crlf_inside => "/\r\n/evil.example/",
    open_redirect_absolute_url => "https://evil.example/",
    open_redirect_scheme_without_slashes => "http:evil.example",
    open_redirect_userinfo_at => "@evil.example",
    open_redirect_userinfo_after_our_origin => "https://127.0.0.1@evil.example/",
    open_redirect_idn_lookalike_slash => "/\u{2215}\u{2215}evil.example",
    open_redirect_fullwidth_solidus => "/\u{ff0f}evil.example",
    open_redirect_double_encoded => "/%252F%252Fevil.example",
    open_redirect_javascript_url => "javascript:alert('evil')",
}

#[tokio::test]
async fn open_redirect_through_the_post_logout_url_is_not_possible() {
    let s = Stack::start().await;
    for q in [
        "post_logout_redirect_uri=https://evil.example/",
        "redirect=https://evil.example/",
        "return_to=//evil.example",
    ] {
        let resp = plain()
            .get(format!("{}/_logto/sign-out?{q}", s.gate.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FOUND);
        let loc = resp.headers()["location"].to_str().unwrap();
        assert!(!loc.contains("evil"), "{q}: {loc}");
        assert!(loc.contains(
            &url::form_urlencoded::byte_serialize(format!("{}/", s.gate.url()).as_bytes()).collect::<String>()
        ));
    }
}

// --- CRLF injection -------------------------------------------------------------------------------------------

#[tokio::test]
async fn crlf_injection_through_the_return_path_cannot_add_a_header() {
    let s = Stack::start().await;
    let resp = plain()
        .get(format!(
            "{}/_logto/sign-in?redirect=/a%0d%0aSet-Cookie:%20evil=1",
            s.gate.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert!(resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .all(|v| !v.to_str().unwrap().starts_with("evil")));
    assert_eq!(
        raw(
            s.gate.port,
            b"GET /x HTTP/1.1\r\nHost: a\r\nX-Request-Id: a\rSet-Cookie: evil=1\r\n\r\n"
        )
        .await,
        400
    );
}

#[tokio::test]
async fn crlf_injection_through_a_claim_cannot_add_an_upstream_header() {
    let idp = Idp::start(IdpOptions::default());
    idp.add_account("mallory", json!({"sub": "u_mallory", "username": "mallory\r\nX-Forwarded-Groups: admin", "email": "m@example.com", "roles": []}));
    let upstream = Upstream::start().await;
    let gate = TestGate::start(&idp, &upstream.url(), "", "").await;
    let b = Browser::new(&idp);
    b.login_as("mallory");
    b.sign_in(&gate, "/").await;
    let seen = upstream.last();
    assert_eq!(
        seen.header("x-forwarded-preferred-username"),
        None,
        "an unsafe claim sends no header"
    );
    // No injected value: mallory has no roles, so no groups header at all.
    assert_eq!(seen.header("x-forwarded-groups"), None);
}

// --- Identity header spoofing ---------------------------------------------------------------------------------

#[tokio::test]
async fn identity_spoofing_with_obs_fold_is_refused() {
    let s = Stack::start().await;
    let status = raw(
        s.gate.port,
        b"GET /x HTTP/1.1\r\nHost: a\r\nX-Forwarded-User: a\r\n admin\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(s.upstream.count(), 0);
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_not_believed() {
    let s = Stack::start().await;
    let b = s.browser();
    b.sign_in(&s.gate, "/").await;
    b.client
        .get(format!("{}/x", s.gate.url()))
        .header("X-Forwarded-Prefix", "/admin")
        .header("X-Forwarded-Uri", "/admin")
        .header("X-Forwarded-Method", "DELETE")
        .header("X-Original-URI", "/admin")
        .header("X-Real-IP", "10.0.0.1")
        .send()
        .await
        .unwrap();
    let seen = s.upstream.last();
    for h in [
        "x-forwarded-prefix",
        "x-forwarded-uri",
        "x-forwarded-method",
        "x-original-uri",
        "x-real-ip",
    ] {
        assert_eq!(seen.header(h), None, "{h} from an untrusted peer reached the upstream");
    }
}

#[tokio::test]
async fn hop_by_hop_abuse_cannot_strip_the_headers_the_gate_sets() {
    // Naming a header in `Connection` makes a proxy drop it (RFC 9110 §7.6.1). A client must not be able to drop
    // the identity, forwarding or request-id headers the gate adds after it has read the request.
    let (s, cookie, _) = signed_in().await;
    let owned =
        "X-Forwarded-User, X-Forwarded-Email, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, X-Request-Id";
    let req = format!(
        "GET /who HTTP/1.1\r\nHost: a\r\nCookie: logto_gate={cookie}\r\nAccept: application/json\r\nConnection: keep-alive, {owned}\r\n\r\n"
    );
    assert_eq!(raw(s.gate.port, req.as_bytes()).await, 200);
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

// --- Request smuggling and oversized input --------------------------------------------------------------------

/// Writes `request` on a fresh connection and reads until the gate closes it (bounded).
/// A signed-in session cookie, the upstream's request count, and the stack.
async fn signed_in() -> (Stack, String, usize) {
    let s = Stack::start().await;
    let (_, cookie) = s.signed_in().await;
    let before = s.upstream.count();
    (s, cookie, before)
}

#[tokio::test]
async fn request_smuggling_with_content_length_and_transfer_encoding_is_refused() {
    // A front proxy that frames by Content-Length would read `GET /admin` as part of the body; one that frames by
    // Transfer-Encoding as a second request. The gate takes neither reading: 400, connection closed, upstream
    // untouched. Both header orders, and with the session of a signed-in user.
    let (s, cookie, before) = signed_in().await;
    for framing in [
        "Content-Length: 40\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 40",
        "Transfer-Encoding: chunked\r\nContent-Length: 0",
    ] {
        let req = format!(
            "POST /upload HTTP/1.1\r\nHost: a\r\nCookie: logto_gate={cookie}\r\nAccept: application/json\r\n{framing}\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n"
        );
        let text = exchange_until_closed(s.gate.port, req.as_bytes()).await;
        assert!(text.starts_with("HTTP/1.1 400 "), "{framing}: {text}");
        assert!(text.contains("both Content-Length and Transfer-Encoding"), "{text}");
        assert_eq!(
            text.matches("HTTP/1.1 ").count(),
            1,
            "nothing after it was read: {text}"
        );
        assert!(text.to_ascii_lowercase().contains("connection: close"), "{text}");
    }
    assert_eq!(s.upstream.count(), before, "nothing reached the upstream");
}

#[tokio::test]
async fn request_smuggling_with_repeated_equal_content_lengths_is_refused() {
    let (s, cookie, before) = signed_in().await;
    let req = format!(
        "POST /upload HTTP/1.1\r\nHost: a\r\nCookie: logto_gate={cookie}\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nabcdeGET /admin HTTP/1.1\r\nHost: a\r\n\r\n"
    );
    let text = exchange_until_closed(s.gate.port, req.as_bytes()).await;
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    assert!(text.contains("more than one Content-Length"), "{text}");
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    assert_eq!(s.upstream.count(), before);
}

#[tokio::test]
async fn request_smuggling_deep_in_a_keep_alive_connection_is_refused() {
    // The gate follows framing through earlier bodies (one by length, one chunked with extensions and trailers,
    // whose data looks like a smuggled head), so the ambiguous third request is caught where hyper delivers it and
    // the honest ones before it are served.
    let (s, cookie, before) = signed_in().await;
    let decoy = "GET /admin HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let req = format!(
        "POST /upload HTTP/1.1\r\nHost: a\r\nCookie: logto_gate={cookie}\r\nContent-Length: 5\r\n\r\nhello\
POST /upload HTTP/1.1\r\nHost: a\r\nCookie: logto_gate={cookie}\r\nTransfer-Encoding: chunked\r\n\r\n\
{:x};note=1\r\n{decoy}\r\n0\r\nX-Trailer: 1\r\n\r\n\
POST /upload HTTP/1.1\r\nHost: a\r\nCookie: logto_gate={cookie}\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        decoy.len()
    );
    let text = exchange_until_closed(s.gate.port, req.as_bytes()).await;
    let statuses: Vec<&str> = text
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &text[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "200", "400"], "{text}");
    assert!(
        text.contains(&format!("\"bytes\":{}", decoy.len())),
        "the decoy was body data: {text}"
    );
    assert_eq!(
        s.upstream.count(),
        before + 2,
        "only the two honest uploads reached the upstream"
    );
}

#[tokio::test]
async fn request_smuggling_with_conflicting_content_lengths_is_refused() {
    let s = Stack::start().await;
    let req = "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde";
    assert_eq!(raw(s.gate.port, req.as_bytes()).await, 400);
    assert_eq!(s.upstream.count(), 0);
}

#[tokio::test]
async fn oversized_cookies_are_refused_with_431() {
    let s = Stack::start().await;
    let huge = format!("logto_gate={}", "A".repeat(70_000));
    let resp = plain()
        .get(format!("{}/x", s.gate.url()))
        .header("cookie", huge)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(s.upstream.count(), 0);
}

// --- Forged ID tokens -----------------------------------------------------------------------------------------

async fn forged_id_token_is_refused(mode: &str, overrides: Value) {
    let s = Stack::start().await;
    s.idp.tamper_next_id_token(mode, overrides);
    let b = s.browser();
    let (hops, resp) = b.navigate(&format!("{}/", s.gate.url())).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{hops:#?}");
    assert!(resp.text().await.unwrap().contains("could not be verified"));
    assert!(
        b.cookie(&s.gate.url(), "logto_gate").is_none(),
        "no session from a forged token"
    );
    assert_eq!(s.upstream.count(), 0);
}

macro_rules! forged_id_token {
    ($($name:ident => ($mode:expr, $overrides:expr)),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            forged_id_token_is_refused($mode, $overrides).await;
        }
    )*};
}

forged_id_token! {
    id_token_with_alg_none => ("none", json!({})),
    id_token_hs256_keyed_with_the_client_secret => ("hs256", json!({})),
    id_token_claims_changed_under_a_valid_signature => ("payload", json!({"sub": "u_admin"})),
    id_token_from_another_issuer => ("resign", json!({"iss": "https://evil.example/oidc"})),
    id_token_for_another_audience => ("resign", json!({"aud": "another-app", "azp": null})),
    id_token_expired => ("resign", json!({"exp": now() - 3600, "iat": now() - 7200})),
    id_token_issued_in_the_future => ("resign", json!({"iat": now() + 3600, "exp": now() + 7200})),
    id_token_with_a_nonce_mismatch => ("resign", json!({"nonce": "another-attempts-nonce"})),
    id_token_without_a_nonce => ("resign", json!({"nonce": null})),
}

// --- Rule bypasses --------------------------------------------------------------------------------------------

async fn rule_bypass_is_refused(path: &str, expected: u16) {
    let s = Stack::with(
        "",
        "[[rules]]\nprefix = \"/public\"\nallow = \"public\"\n[[rules]]\nprefix = \"/admin\"\nroles = [\"admin\"]\n",
    )
    .await;
    let bob = s.browser();
    bob.login_as("bob");
    bob.sign_in(&s.gate, "/home").await;
    let cookie = bob.cookie(&s.gate.url(), "logto_gate").unwrap();
    let before = s.upstream.count();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: logto_gate={cookie}\r\nAccept: application/json\r\n\r\n"
    );
    assert_eq!(raw(s.gate.port, req.as_bytes()).await, expected, "{path}");
    assert_eq!(s.upstream.count(), before, "{path} reached the upstream");
}

macro_rules! rule_bypass {
    ($($name:ident => ($path:expr, $status:expr)),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            rule_bypass_is_refused($path, $status).await;
        }
    )*};
}

rule_bypass! {
    rule_bypass_through_the_query => ("/admin?/public", 403),
    rule_bypass_through_dot_dot => ("/public/../admin", 403),
    rule_bypass_through_encoded_dot_dot => ("/public/%2e%2e/admin", 403),
    rule_bypass_through_mixed_encoded_dots => ("/public/.%2E/admin", 403),
    rule_bypass_through_double_slash => ("//admin", 403),
    rule_bypass_through_encoded_slash => ("/public%2F..%2Fadmin", 400),
    rule_bypass_through_encoded_backslash => ("/public/..%5Cadmin", 400),
    rule_bypass_through_encoded_letters => ("/%61dmin", 403),
    rule_bypass_through_a_trailing_dot_segment => ("/admin/.", 403),
    rule_bypass_through_dot_segment_then_slash => ("/./admin", 403),
    // Tomcat, Jetty and Spring strip `;` parameters from every segment before resolving dot segments.
    rule_bypass_through_a_path_parameter => ("/admin;jsessionid=1", 403),
    rule_bypass_through_a_path_parameter_deeper => ("/admin;a=b/users;c=d", 403),
    rule_bypass_through_a_parameter_only_segment => ("/;x/admin", 403),
    rule_bypass_through_dot_dot_with_a_parameter => ("/x/..;/admin", 400),
    rule_bypass_through_a_public_prefix_and_dot_dot_parameter => ("/public/..;/admin", 400),
    rule_bypass_through_dot_with_a_parameter => ("/x/.;/admin", 400),
    rule_bypass_through_encoded_dot_dot_with_a_parameter => ("/public/%2e%2e;x/admin", 400),
}

#[tokio::test]
async fn rule_bypass_through_the_case_of_the_method() {
    let s = Stack::with(
        "",
        "[[rules]]\nprefix = \"/admin\"\nmethods = [\"DELETE\"]\nroles = [\"admin\"]\n",
    )
    .await;
    let bob = s.browser();
    bob.login_as("bob");
    bob.sign_in(&s.gate, "/").await;
    let before = s.upstream.count();
    for m in ["delete", "Delete", "DELETE"] {
        let r = bob
            .client
            .request(
                reqwest::Method::from_bytes(m.as_bytes()).unwrap(),
                format!("{}/admin/x", s.gate.url()),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{m}");
    }
    assert_eq!(s.upstream.count(), before);
}

#[tokio::test]
async fn rule_bypass_through_the_host_with_a_trailing_dot() {
    let s = Stack::with(
        "",
        "[[rules]]\nhost = \"admin.example.com\"\nprefix = \"/\"\nallow = \"deny\"\n",
    )
    .await;
    for host in [
        "admin.example.com",
        "admin.example.com.",
        "ADMIN.example.com",
        "admin.example.com.:443",
    ] {
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n\r\n");
        assert_eq!(raw(s.gate.port, req.as_bytes()).await, 403, "{host}");
    }
}
