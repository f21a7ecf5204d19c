//! Access rules over real sockets: every rule kind, and every known way to slip past a rule.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::support::*;

const RULES: &str = r#"
[[rules]]
prefix = "/public"
allow = "public"

[[rules]]
path = "/assets/[a-z]+\\.css"
methods = ["GET", "HEAD"]
allow = "public"

[[rules]]
prefix = "/closed"
allow = "deny"

[[rules]]
prefix = "/admin"
methods = ["DELETE"]
roles = ["superadmin"]

[[rules]]
prefix = "/admin"
roles = ["admin"]

[[rules]]
prefix = "/billing"
all_roles = ["admin", "billing"]

[[rules]]
prefix = "/acme"
organizations = ["org_acme"]

[[rules]]
prefix = "/acme-members"
organization_roles = ["org_acme:member"]

[[rules]]
prefix = "/staff"
email_domains = ["example.com"]

[[rules]]
prefix = "/bob-only"
emails = ["bob@contractor.example.net"]

[[rules]]
prefix = "/gh"
github_logins = ["alice-gh"]

[[rules]]
prefix = "/docs"
host = "docs.example.com"
allow = "public"
"#;

async fn stack() -> Stack {
    Stack::with("", RULES).await
}

#[tokio::test]
async fn public_routes_need_no_session_and_carry_no_identity() {
    let s = stack().await;
    let resp = plain()
        .get(format!("{}/public/page?x=1", s.gate.url()))
        .header("X-Forwarded-User", "mallory")
        .header("X_Forwarded_Email", "mallory@evil.example")
        .header("X-Logto-Gate-Assertion", "forged")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = s.upstream.last();
    assert_eq!(seen.path, "/public/page?x=1");
    for h in [
        "x-forwarded-user",
        "x_forwarded_email",
        "x-forwarded-email",
        "x-logto-gate-assertion",
    ] {
        assert_eq!(seen.header(h), None, "{h} reached the upstream on a public route");
    }
    // Even a signed-in user's identity is not sent on a public route.
    let b = s.browser();
    b.sign_in(&s.gate, "/").await;
    b.client.get(format!("{}/public/x", s.gate.url())).send().await.unwrap();
    assert_eq!(s.upstream.last().header("x-forwarded-user"), None);
    // The regex rule is anchored at the start and limited to its methods.
    assert_eq!(
        plain()
            .get(format!("{}/assets/site.css", s.gate.url()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        plain()
            .post(format!("{}/assets/site.css", s.gate.url()))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        plain()
            .get(format!("{}/x/assets/site.css", s.gate.url()))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test]
async fn rule_bypass_attempts_never_reach_the_upstream_unauthenticated() {
    let s = stack().await;
    let before = s.upstream.count();
    for (path, status) in [
        ("/admin?/public", 401),
        ("/public/../admin", 401),
        ("/public/%2e%2e/admin", 401),
        ("/public/%2E%2E/admin", 401),
        ("/public/.%2e/admin", 401),
        ("//admin", 401),
        ("/public//../admin", 401),
        ("/PUBLIC/x", 401),
        ("/publicity", 401),
        ("/public%2F..%2Fadmin", 400),
        ("/public/..%2fadmin", 400),
        ("/public/..%5Cadmin", 400),
        ("/public/%00", 400),
        ("/%70ublic/../admin", 401),
    ] {
        let resp = raw_get(s.gate.port, path, &[]).await;
        assert_eq!(resp, status, "{path}");
    }
    assert_eq!(s.upstream.count(), before, "nothing reached the upstream");
    // A signed-in request is forwarded with the normalised path: rules and upstream see the same thing.
    let b = s.browser();
    b.sign_in(&s.gate, "/").await;
    b.client
        .get(format!("{}/public/../admin/./users//list?q=%2F", s.gate.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(s.upstream.last().path, "/admin/users/list?q=%2F");
}

/// Sends a request with a path exactly as given (no client-side normalisation) and returns the status.
async fn raw_get(port: u16, path: &str, headers: &[(&str, &str)]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        extra.push_str(&format!("Host: 127.0.0.1:{port}\r\n"));
    }
    let req = format!("GET {path} HTTP/1.1\r\nAccept: application/json\r\n{extra}Connection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf);
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn every_rule_kind_decides_for_alice_and_bob() {
    let s = stack().await;
    let alice = s.browser();
    alice.sign_in(&s.gate, "/").await;
    let bob = s.browser();
    bob.login_as("bob");
    bob.sign_in(&s.gate, "/").await;
    for (path, alice_status, bob_status) in [
        ("/admin/users", 200, 403),
        ("/billing", 403, 403),
        ("/acme", 200, 403),
        ("/acme-members", 200, 403),
        ("/staff", 200, 403),
        // Bob's address matches, but it is not verified: unverified emails never count.
        ("/bob-only", 403, 403),
        ("/gh/repo", 200, 403),
        ("/closed", 403, 403),
        ("/anything-else", 200, 200),
    ] {
        for (who, client, want) in [("alice", &alice, alice_status), ("bob", &bob, bob_status)] {
            let resp = client.get(format!("{}{path}", s.gate.url())).await;
            assert_eq!(resp.status().as_u16(), want, "{who} {path}");
        }
    }
}

#[tokio::test]
async fn a_denied_user_gets_a_page_saying_who_they_are_and_what_is_required() {
    let s = stack().await;
    let bob = s.browser();
    bob.login_as("bob");
    bob.sign_in(&s.gate, "/").await;
    let html = bob.get_html(format!("{}/admin", s.gate.url())).await;
    assert_eq!(html.status(), StatusCode::FORBIDDEN);
    let body = html.text().await.unwrap();
    assert!(body.contains("signed in as bob (bob@contractor.example.net)"), "{body}");
    assert!(body.contains("one of the roles admin"), "{body}");
    assert!(body.contains("href=\"/_logto/sign-out\""), "{body}");
    let json: Value = bob.get_json(format!("{}/admin", s.gate.url())).await;
    assert_eq!(json["error"], "forbidden");
}

#[tokio::test]
async fn method_rules_match_whatever_the_case_of_the_method() {
    let s = stack().await;
    let alice = s.browser();
    alice.sign_in(&s.gate, "/").await;
    // DELETE on /admin needs superadmin; alice (admin) must not get through with a lower-case method.
    for m in ["DELETE", "delete", "Delete"] {
        let resp = alice
            .client
            .request(
                Method::from_bytes(m.as_bytes()).unwrap(),
                format!("{}/admin/x", s.gate.url()),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{m}");
    }
    let get = alice.get(format!("{}/admin/x", s.gate.url())).await;
    assert_eq!(get.status(), StatusCode::OK);
}

#[tokio::test]
async fn host_rules_use_the_normalised_host() {
    let s = stack().await;
    for host in ["docs.example.com", "DOCS.Example.com.", "docs.example.com:8443"] {
        assert_eq!(
            raw_get(s.gate.port, "/docs/intro", &[("Host", host)]).await,
            200,
            "{host}"
        );
    }
    assert_eq!(raw_get(s.gate.port, "/docs/intro", &[]).await, 401);
}

#[tokio::test]
async fn encoded_slashes_pass_when_allowed() {
    let s = Stack::edited(IdpOptions::default(), "", "", in_server("allow_encoded_slashes = true")).await;
    let b = s.browser();
    b.sign_in(&s.gate, "/").await;
    let resp = b.get(format!("{}/files/a%2Fb", s.gate.url())).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(s.upstream.last().path, "/files/a%2Fb");
}

/// `server.skip_auth_preflight`: a real CORS preflight (OPTIONS with Origin and Access-Control-Request-Method)
/// passes without a session and without identity; anything short of one still needs a session; denied routes
/// stay denied; and without the key preflights need a session like everything else.
#[tokio::test]
async fn cors_preflights_pass_unauthenticated_only_when_asked_and_only_real_ones() {
    let rules = "[[rules]]\nprefix = \"/closed\"\nallow = \"deny\"\n";
    let s = Stack::edited(
        IdpOptions::default(),
        "",
        rules,
        in_server("skip_auth_preflight = true"),
    )
    .await;
    let send = |method: &str, path: &str, headers: &[(&str, &str)]| {
        let mut req = plain().request(method.parse().unwrap(), format!("{}{path}", s.gate.url()));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        async move { req.send().await.unwrap().status() }
    };
    let preflight = [
        ("origin", "https://web.example.com"),
        ("access-control-request-method", "PUT"),
        ("x-forwarded-user", "spoofed"),
    ];
    assert_eq!(send("OPTIONS", "/api/items", &preflight).await, StatusCode::OK);
    let seen = s.upstream.last();
    assert_eq!(seen.method, "OPTIONS");
    // A preflight let through without a session gets the app's status and fields, never its body: many handlers
    // (Go's `http.HandleFunc`, say) answer any method as they answer GET, which would hand anyone the page.
    for path in ["/branded", "/api/items"] {
        let mut req = plain().request(reqwest::Method::OPTIONS, format!("{}{path}", s.gate.url()));
        for (k, v) in preflight {
            req = req.header(k, v);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(
            resp.headers().get("content-length").map(|v| v.to_str().unwrap()),
            Some("0"),
            "{path}"
        );
        if path == "/branded" {
            assert_eq!(
                resp.headers()["x-app-version"],
                "7",
                "the app's fields reach the browser"
            );
        }
        assert_eq!(
            resp.text().await.unwrap(),
            "",
            "{path}: the app's body reached an anonymous preflight"
        );
    }
    assert_eq!(
        seen.header("x-forwarded-user"),
        None,
        "no identity, and the spoofed one removed"
    );
    let before = s.upstream.count();
    assert_eq!(
        send("OPTIONS", "/api/items", &[("origin", "https://web.example.com")]).await,
        StatusCode::UNAUTHORIZED,
        "OPTIONS without Access-Control-Request-Method is no preflight"
    );
    assert_eq!(send("GET", "/api/items", &preflight).await, StatusCode::UNAUTHORIZED);
    assert_eq!(send("OPTIONS", "/closed", &preflight).await, StatusCode::FORBIDDEN);
    assert_eq!(s.upstream.count(), before);

    let strict = Stack::start().await;
    let r = plain()
        .request(reqwest::Method::OPTIONS, format!("{}/api/items", strict.gate.url()))
        .header("origin", "https://web.example.com")
        .header("access-control-request-method", "PUT")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "off by default");
}

/// A rule decides a path's slash twin too (`/admin` and `/admin/`, which most frameworks serve alike): a prefix
/// written with a trailing slash covers the path without it, and an anchored expression the path with one. The twin
/// never brings in the default: an anchored public path stays public.
#[tokio::test]
async fn a_rule_covers_the_path_with_and_without_its_trailing_slash() {
    let rules = "[[rules]]\nprefix = \"/admin/\"\nallow = \"deny\"\n\n\
                 [[rules]]\npath = \"/reports$\"\nroles = [\"auditor\"]\n\n\
                 [[rules]]\npath = \"/api/items$\"\nallow = \"public\"\n";
    let s = Stack::with("", rules).await;
    let (_, cookie) = s.signed_in().await;
    let cookie = format!("logto_gate={cookie}");
    let before = s.upstream.count();
    for path in ["/admin", "/admin/", "/admin/x", "/reports", "/reports/"] {
        let status = status_with_cookie(&format!("{}{path}", s.gate.url()), &cookie).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(s.upstream.count(), before, "no denied request reached the app");
    for path in ["/administrator", "/reports-archive"] {
        let status = status_with_cookie(&format!("{}{path}", s.gate.url()), &cookie).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    assert_eq!(raw_get(s.gate.port, "/api/items", &[]).await, 200);
    assert_eq!(raw_get(s.gate.port, "/api/items/", &[]).await, 401);
}

/// A rule that names only `GET` covers `HEAD` too, as nginx's `limit_except GET` does: apps run their `GET` handler
/// for a `HEAD` request and send its header fields, so the rule's requirement or denial holds for both.
#[tokio::test]
async fn a_rule_for_get_covers_head() {
    let rules = "[[rules]]\nprefix = \"/export\"\nmethods = [\"GET\"]\nroles = [\"auditor\"]\n\n\
                 [[rules]]\nprefix = \"/secret\"\nmethods = [\"GET\"]\nallow = \"deny\"\n";
    let s = Stack::with("", rules).await;
    let (_, cookie) = s.signed_in().await;
    let before = s.upstream.count();
    for method in [Method::GET, Method::HEAD] {
        for path in ["/export", "/secret"] {
            let resp = plain()
                .request(method.clone(), format!("{}{path}", s.gate.url()))
                .header("cookie", format!("logto_gate={cookie}"))
                .header("accept", "application/json")
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{method} {path}");
        }
    }
    assert_eq!(s.upstream.count(), before, "no refused request reached the app");
    let post = plain()
        .post(format!("{}/secret", s.gate.url()))
        .header("cookie", format!("logto_gate={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        post.status(),
        StatusCode::OK,
        "other methods are the rule's business only when named"
    );
}

/// An admin taking a role away in Logto reaches the gate at the session's next refresh: Logto's refreshed ID token
/// carries the roles as they are now, and the session (here the cookie) keeps those. Until then the session's
/// claims are those of the sign-in; from then on the role's paths are refused, the rest stays open.
#[tokio::test]
async fn a_role_taken_away_in_logto_is_refused_from_the_next_refresh_on() {
    let s = Stack::edited(two_second_tokens(), "", RULES, |t| t).await;
    let alice = s.browser();
    alice.sign_in(&s.gate, "/").await;
    let admin = format!("{}/admin/users", s.gate.url());
    assert_eq!(alice.get(&admin).await.status(), StatusCode::OK);
    s.idp
        .update_account("u_alice0001", serde_json::json!({ "roles": ["editor"] }));
    let refreshes = || s.idp.stats()["grants"]["refresh_token"].as_u64().unwrap_or(0);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = alice.get(&admin).await.status();
        if status == StatusCode::FORBIDDEN {
            break;
        }
        assert_eq!(status, StatusCode::OK, "until the refresh the sign-in's roles hold");
        assert!(tokio::time::Instant::now() < deadline, "still admitted after 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(refreshes() >= 1, "the refresh brought the new roles");
    let resp = alice.get(format!("{}/anything-else", s.gate.url())).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

/// `client_ips` on a rule: it matches only requests from those addresses (a monitoring network let through to a
/// status page, a range denied). The address is the peer's, or, from a trusted proxy, the right-most address in
/// `X-Forwarded-For` that is no trusted proxy's; a client cannot claim another one (a spoofed `X-Forwarded-For`
/// from an untrusted peer, entries written to the left of the real one), and an address the gate cannot tell
/// (no `X-Forwarded-For` from the proxy, garbage in its place) matches no range. Forward-auth decides the same way.
#[tokio::test]
async fn client_ips_rules_judge_the_real_client_address() {
    const IP_RULES: &str = r#"
[[rules]]
prefix = "/"
allow = "deny"
client_ips = ["198.51.100.0/24"]

[[rules]]
prefix = "/status"
allow = "public"
client_ips = ["127.0.0.1/32", "192.0.2.0/24"]
"#;
    let get = |url: String, xff: Option<&'static str>| async move {
        let mut req = plain().get(url);
        if let Some(xff) = xff {
            req = req.header("x-forwarded-for", xff);
        }
        req.send().await.unwrap().status()
    };

    // Direct: the peer (127.0.0.1) is the client, whatever it writes.
    let s = Stack::edited(IdpOptions::default(), "", IP_RULES, |t| t).await;
    let count = s.upstream.count();
    assert_eq!(get(format!("{}/status", s.gate.url()), None).await, StatusCode::OK);
    assert_eq!(s.upstream.count(), count + 1, "the public status page reached the app");
    assert_eq!(
        get(format!("{}/other", s.gate.url()), None).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(format!("{}/other", s.gate.url()), Some("198.51.100.9")).await,
        StatusCode::UNAUTHORIZED,
        "a spoofed X-Forwarded-For from an untrusted peer is not the client"
    );

    // Behind a trusted proxy: its X-Forwarded-For, read from the right.
    let t = Stack::edited(
        IdpOptions::default(),
        "",
        IP_RULES,
        in_server("trusted_proxies = [\"127.0.0.1/32\", \"10.0.0.0/8\"]"),
    )
    .await;
    let status = format!("{}/status", t.gate.url());
    for (xff, want) in [
        (Some("192.0.2.5"), StatusCode::OK),
        (Some("192.0.2.5, 10.1.2.3"), StatusCode::OK),
        // A client writing the allowed address before its own.
        (Some("192.0.2.5, 203.0.113.7"), StatusCode::UNAUTHORIZED),
        (Some("203.0.113.7"), StatusCode::UNAUTHORIZED),
        (Some("garbage"), StatusCode::UNAUTHORIZED),
        (Some("192.0.2.5, garbage"), StatusCode::UNAUTHORIZED),
        // The proxy said nothing: not taken for the proxy's own (allowed) address.
        (None, StatusCode::UNAUTHORIZED),
    ] {
        assert_eq!(get(status.clone(), xff).await, want, "{xff:?}");
    }
    // A denied range, on any path, signed in or not.
    assert_eq!(
        get(format!("{}/status", t.gate.url()), Some("198.51.100.9")).await,
        StatusCode::FORBIDDEN
    );
    let (_, cookie) = t.signed_in().await;
    let denied = plain()
        .get(format!("{}/anything", t.gate.url()))
        .header("cookie", format!("logto_gate={cookie}"))
        .header("x-forwarded-for", "198.51.100.9")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);

    // Forward-auth: the asking proxy's X-Forwarded-For names the original client.
    let auth = format!("{}/_logto/auth", t.gate.url());
    for (xff, want) in [
        ("192.0.2.5", StatusCode::ACCEPTED),
        ("203.0.113.7", StatusCode::UNAUTHORIZED),
        ("198.51.100.9", StatusCode::FORBIDDEN),
    ] {
        let r = plain()
            .get(&auth)
            .header("x-forwarded-uri", "/status")
            .header("x-forwarded-for", xff)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "{xff}");
    }
}

#[tokio::test]
async fn error_pages_carry_the_operators_name_help_stylesheet_and_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let css = dir.path().join("pages.css");
    std::fs::write(&css, "h1 { color: #036 }\n").unwrap();
    let pages = format!(
        "{RULES}\n[pages]\nname = \"Acme & Co\"\nhelp = \"Ask #it-help <now>\"\n\
         help_url = \"https://wiki.example.com/access?x=1&y=2\"\nstylesheet_file = \"{}\"\n",
        css.display()
    );
    let s = Stack::with("", &pages).await;
    let bob = s.browser();
    bob.login_as("bob");
    bob.sign_in(&s.gate, "/").await;
    let denied = bob.get_html(format!("{}/admin", s.gate.url())).await;
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    let id = denied.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body = denied.text().await.unwrap();
    // Everything the operator wrote is escaped as text; the stylesheet goes inside the page's own style element.
    assert!(body.contains("<title>Access denied · Acme &amp; Co</title>"), "{body}");
    assert!(
        body.contains(
            "<p class=\"help\"><a href=\"https://wiki.example.com/access?x=1&amp;y=2\">Ask #it-help &lt;now&gt;</a></p>"
        ),
        "{body}"
    );
    assert!(body.contains("h1 { color: #036 }\n</style>"), "{body}");
    assert!(
        body.contains(&format!(
            "403 · Acme &amp; Co · request <span class=\"request-id\">{id}</span>"
        )),
        "{body}"
    );
    assert!(!body.contains("logto-gate"), "{body}");
    // An API client gets the same in JSON, with the id the answer's X-Request-Id carries.
    let json = bob.get(format!("{}/admin", s.gate.url())).await;
    let id = json.headers()["x-request-id"].to_str().unwrap().to_owned();
    let json: Value = json.json().await.unwrap();
    assert_eq!(json["error"], "forbidden");
    assert_eq!(json["help"], "Ask #it-help <now>");
    assert_eq!(json["help_url"], "https://wiki.example.com/access?x=1&y=2");
    assert_eq!(json["request_id"], id.as_str());
    // A page that is no error (signed out) has the name but no help.
    let signed_out = plain()
        .get(format!("{}/_logto/signed-out", s.gate.url()))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(signed_out.status(), StatusCode::OK);
    let body = signed_out.text().await.unwrap();
    assert!(body.contains("200 · Acme &amp; Co</p>"), "{body}");
    assert!(
        !body.contains("class=\"help\"") && !body.contains("request-id"),
        "{body}"
    );
    // The session-ended page a script's request gets names the operator's help as well.
    let ended = plain()
        .get(format!("{}/admin", s.gate.url()))
        .header("accept", "text/html")
        .header("sec-fetch-mode", "cors")
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), StatusCode::UNAUTHORIZED);
    let body = ended.text().await.unwrap();
    assert!(body.contains("Ask #it-help &lt;now&gt;</a>"), "{body}");
}
