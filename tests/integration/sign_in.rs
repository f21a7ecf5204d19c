//! The sign-in dance end to end: redirect to Logto, callback, session, identity headers, sign-out.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

#[tokio::test]
async fn browser_navigation_signs_in_and_returns_to_the_exact_url_with_query() {
    let s = Stack::start().await;
    let b = s.browser();
    let (hops, resp) = b
        .navigate(&format!("{}/reports/2026?year=2026&q=a%20b#top", s.gate.url()))
        .await;
    assert_eq!(resp.status(), StatusCode::OK, "{hops:#?}");
    // gate -> Logto authorize -> interaction -> ... -> gate callback -> back to the exact URL
    assert!(
        hops[0]
            .location
            .as_deref()
            .unwrap_or("")
            .starts_with(&format!("{}/auth?", s.idp.issuer())),
        "{hops:#?}"
    );
    let callback = hops
        .iter()
        .find(|h| h.url.starts_with(&format!("{}/_logto/callback", s.gate.url())))
        .expect("callback hop");
    assert_eq!(callback.status, 302);
    assert_eq!(
        callback.location.as_deref(),
        Some(format!("{}/reports/2026?year=2026&q=a%20b", s.gate.url()).as_str())
    );
    let seen = s.upstream.last();
    assert_eq!(seen.path, "/reports/2026?year=2026&q=a%20b");
    assert_eq!(seen.header("x-forwarded-user"), Some("u_alice0001"));
}

/// With `session.keep_url_fragment`, a navigation that needs a sign-in gets a page whose one script (allowed by its
/// hash alone) brings the address's fragment to the sign-in link, and the sign-in comes back to the page with it: a
/// hash router's `#/reports/42` survives. Run here as the script would run (the browser test runs it in Chromium).
/// No attempt is started by the page; HEAD, frames and the default are unchanged.
#[tokio::test]
async fn a_navigation_keeps_its_url_fragment_through_sign_in_when_configured() {
    let s = Stack::edited(IdpOptions::default(), "", "", |t| {
        t.replace("[session]\n", "[session]\nkeep_url_fragment = true\n")
    })
    .await;
    let gate = s.gate.url();
    let navigate = |method: reqwest::Method, dest: &'static str| {
        navigation(method, format!("{gate}/deep/page?x=1"))
            .header("sec-fetch-dest", dest)
            .send()
    };
    let resp = navigate(reqwest::Method::GET, "document").await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(
        resp.headers().get("set-cookie").is_none(),
        "no attempt started by the page"
    );
    assert!(resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer "));
    let csp = resp.headers()["content-security-policy"].to_str().unwrap().to_owned();
    let page = resp.text().await.unwrap();
    let script = page
        .split_once("<script>")
        .and_then(|(_, rest)| rest.split_once("</script>"))
        .map(|(script, _)| script)
        .unwrap_or_else(|| panic!("{page}"));
    assert_eq!(page.matches("<script").count(), 1, "{page}");
    let hash = {
        use base64::Engine;
        let digest = ring::digest::digest(&ring::digest::SHA256, script.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    };
    assert!(
        csp.contains(&format!("script-src 'sha256-{hash}'")) && csp.starts_with("default-src 'none'"),
        "{csp}"
    );
    assert!(
        script.contains("location.hash") && script.contains("encodeURIComponent"),
        "{script}"
    );
    let link = format!("{gate}/_logto/sign-in?redirect=%2Fdeep%2Fpage%3Fx%3D1");
    assert!(page.contains(&format!("<a id=\"continue\" href=\"{link}\">")), "{page}");
    assert!(page.contains(&format!(
        "<noscript><meta http-equiv=\"refresh\" content=\"0; url={link}\">"
    )));
    // What the script does with `#/reports/42?tab=1`: the link, the fragment form-encoded onto `redirect`.
    let b = s.browser();
    let (hops, resp) = b.navigate(&format!("{link}%23%2Freports%2F42%3Ftab%3D1")).await;
    assert_eq!(resp.status(), StatusCode::OK, "{hops:#?}");
    let callback = hops
        .iter()
        .find(|h| h.url.starts_with(&format!("{gate}/_logto/callback")))
        .expect("callback hop");
    assert_eq!(
        callback.location.as_deref(),
        Some(format!("{gate}/deep/page?x=1#/reports/42?tab=1").as_str())
    );
    assert_eq!(s.upstream.last().path, "/deep/page?x=1");
    // A HEAD navigation and a frame's are answered as before: the sign-in link, the frame's page.
    let head = navigate(reqwest::Method::HEAD, "document").await.unwrap();
    assert_eq!(head.status(), StatusCode::FOUND);
    let frame = navigate(reqwest::Method::GET, "iframe").await.unwrap();
    assert_eq!(frame.status(), StatusCode::UNAUTHORIZED);
    assert!(!frame.text().await.unwrap().contains("<script"));
    // Without the key: straight to Logto, as always.
    let plain_stack = Stack::start().await;
    let resp = navigation(reqwest::Method::GET, format!("{}/deep/page", plain_stack.gate.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
}

#[tokio::test]
async fn default_identity_headers_follow_oauth2_proxy() {
    let s = Stack::start().await;
    let b = s.browser();
    b.sign_in(&s.gate, "/").await;
    let seen = s.upstream.last();
    assert_eq!(seen.header("x-forwarded-user"), Some("u_alice0001"));
    assert_eq!(seen.header("x-forwarded-email"), Some("alice@example.com"));
    assert_eq!(seen.header("x-forwarded-preferred-username"), Some("alice"));
    assert_eq!(seen.header("x-forwarded-groups"), Some("admin,editor"));
    // Bob has no roles and a null name: absent headers, not empty or "null".
    let b2 = s.browser();
    b2.login_as("bob");
    b2.sign_in(&s.gate, "/").await;
    let seen = s.upstream.last();
    assert_eq!(seen.header("x-forwarded-user"), Some("u_bob000002"));
    assert_eq!(
        seen.header("x-forwarded-groups"),
        None,
        "no roles: no header, not an empty one"
    );
    // Logto's default ID token carries the roles: no userinfo request.
    assert_eq!(s.idp.stats()["userinfo"], 0);
}

/// A tenant whose ID tokens carry `custom_data` (enabled in its ID token settings) spares the gate the userinfo
/// request for a header that reads it.
#[tokio::test]
async fn an_extended_claim_the_id_token_carries_needs_no_userinfo_request() {
    let tenant = IdpOptions {
        id_token_extended_claims: Some(vec!["roles", "organizations", "organization_roles", "custom_data"]),
        ..Default::default()
    };
    let s = Stack::edited(tenant, "", "[headers]\n\"X-Team\" = \"custom_data.team\"\n", |t| t).await;
    s.browser().sign_in(&s.gate, "/").await;
    assert_eq!(s.upstream.last().header("x-team"), Some("platform"));
    assert_eq!(s.idp.stats()["userinfo"], 0);
}

/// The identity and forwarding headers reach the app once each and the same on both upstream paths: the lean client (a bodiless
/// GET, which writes them as one pre-rendered block) and hyper's client (a POST with a body, through the map). A
/// mapping onto a header the gate may set (here `Authorization`, which it sends with `upstream.pass_access_token`,
/// refused then) goes through the map on both.
#[tokio::test]
async fn identity_headers_are_sent_once_each_on_every_upstream_path() {
    let mapped = "[headers]\n\"X-User\" = \"sub\"\n\"x-user\" = \"email\"\n\"X-Groups\" = \"roles\"\n";
    let colliding = "[headers]\n\"Authorization\" = \"sub\"\n\"X-User\" = \"email\"\n";
    for (headers, pass_token, expected) in [
        (
            mapped,
            "",
            vec![("x-user", "alice@example.com"), ("x-groups", "admin,editor")],
        ),
        (
            colliding,
            "",
            vec![("authorization", "u_alice"), ("x-user", "alice@example.com")],
        ),
    ] {
        let s = Stack::edited(IdpOptions::default(), "", headers, in_upstream(pass_token)).await;
        let b = s.browser();
        b.sign_in(&s.gate, "/").await;
        let get = b.get(format!("{}/lean", s.gate.url())).await;
        assert_eq!(get.status(), reqwest::StatusCode::OK);
        let seen_get = s.upstream.last();
        let post = b
            .client
            .post(format!("{}/pooled", s.gate.url()))
            .header("x-user", "spoofed")
            .header("X_Groups", "spoofed")
            .header("X-Forwarded-For", "6.6.6.6")
            .header("x-forwarded-host", "evil.example")
            .body("a body")
            .send()
            .await
            .unwrap();
        assert_eq!(post.status(), reqwest::StatusCode::OK);
        let seen_post = s.upstream.last();
        assert_eq!((seen_get.method.as_str(), seen_post.method.as_str()), ("GET", "POST"));
        for seen in [&seen_get, &seen_post] {
            for (name, value) in &expected {
                assert_eq!(
                    seen.header_count(name),
                    1,
                    "{name} on {}: {:?}",
                    seen.method,
                    seen.headers
                );
                let got = seen.header(name).unwrap_or_default();
                assert!(got.starts_with(value), "{name} on {}: {got}", seen.method);
            }
            if headers == mapped {
                assert_eq!(seen.header_count("x_groups"), 0, "a spoofed spelling reached the app");
            }
            // The forwarding headers, also added outside the map on the lean path: once each, the gate's values.
            for (name, value) in [
                ("x-forwarded-for", "127.0.0.1".to_owned()),
                ("x-forwarded-proto", "http".to_owned()),
                ("x-forwarded-host", format!("127.0.0.1:{}", s.gate.port)),
            ] {
                assert_eq!(
                    seen.header_count(name),
                    1,
                    "{name} on {}: {:?}",
                    seen.method,
                    seen.headers
                );
                assert_eq!(seen.header(name), Some(value.as_str()), "{name} on {}", seen.method);
            }
        }
    }
}

#[tokio::test]
async fn the_headers_table_replaces_the_mapping_and_reads_userinfo_only_claims() {
    let extra = r#"
[headers]
"X-User-Id" = "sub"
"X-GitHub-Login" = "identities.github.details.rawData.userInfo.login"
"X-GitHub-Id" = "identities.github.userId"
"X-Team" = "custom_data.team"
"X-Picture" = "picture"
"#;
    let s = Stack::with(r#"scopes = ["email", "roles", "identities", "custom_data"]"#, extra).await;
    s.browser().sign_in(&s.gate, "/").await;
    let seen = s.upstream.last();
    assert_eq!(seen.header("x-user-id"), Some("u_alice0001"));
    assert_eq!(seen.header("x-github-login"), Some("Alice-GH"));
    assert_eq!(seen.header("x-github-id"), Some("1234567"));
    assert_eq!(seen.header("x-team"), Some("platform"));
    assert_eq!(seen.header("x-picture"), None, "a null claim sends no header");
    assert_eq!(seen.header("x-forwarded-user"), None, "the table replaces the defaults");
    assert!(s.idp.stats()["userinfo"].as_u64().unwrap_or(0) >= 1);
}

/// Logto's enterprise SSO identities (`sso_identities`, with the `identities` scope) come from userinfo only: a
/// header that reads them alone still makes the gate ask for them.
#[tokio::test]
async fn enterprise_sso_identities_are_read_from_userinfo() {
    let extra = r#"
[headers]
"X-SSO-Issuer" = "sso_identities.0.issuer"
"X-SSO-Id" = "sso_identities.0.identityId"
"#;
    let s = Stack::with(r#"scopes = ["identities"]"#, extra).await;
    s.browser().sign_in(&s.gate, "/").await;
    let seen = s.upstream.last();
    assert_eq!(seen.header("x-sso-issuer"), Some("https://sso.acme.example"));
    assert_eq!(seen.header("x-sso-id"), Some("alice@acme"));
    assert_eq!(s.idp.stats()["userinfo"], 1);
    let bob = s.browser();
    bob.login_as("bob");
    bob.sign_in(&s.gate, "/").await;
    assert_eq!(
        s.upstream.last().header("x-sso-issuer"),
        None,
        "bob has no SSO identity"
    );
}

#[tokio::test]
async fn api_request_without_session_gets_401_json_never_a_redirect() {
    let s = Stack::start().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // (A browser's POST that accepts HTML gets the same 401 as a page: see requests_without_a_session_get_a_way_back.)
    for (method, accept) in [("GET", "application/json"), ("GET", "*/*"), ("DELETE", "")] {
        let resp = client
            .request(method.parse().unwrap(), format!("{}/api/items", s.gate.url()))
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{method} {accept}");
        assert!(resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized");
    }
    assert_eq!(s.upstream.count(), 0, "nothing reached the upstream");
}

/// Only a navigation starts a sign-in. A script's request that accepts HTML (htmx, Turbo), which the browser marks
/// with `Sec-Fetch-Mode` other than `navigate`, gets the 401 page with its link and no sign-in attempt cookie: a
/// redirect to Logto would fail its cross-origin fetch, and an app polling every few seconds would pile up attempt
/// cookies. A navigation, marked or (older clients) not, is still sent to sign in.
#[tokio::test]
async fn a_scripts_request_for_html_gets_401_and_no_sign_in_attempt() {
    let s = Stack::start().await;
    let html = "text/html, */*";
    for (mode, accept, sends_to_sign_in) in [
        (Some("cors"), html, false),
        (Some("same-origin"), html, false),
        (Some("no-cors"), html, false),
        (Some("navigate"), html, true),
        (Some("Navigate"), "*/*", true),
        (None, html, true),
    ] {
        let mut req = plain()
            .get(format!("{}/partials/inbox", s.gate.url()))
            .header("accept", accept);
        if let Some(mode) = mode {
            req = req.header("sec-fetch-mode", mode);
        }
        let resp = req.send().await.unwrap();
        let attempt = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("logto_gate_signin_"));
        if sends_to_sign_in {
            assert_eq!(resp.status(), StatusCode::FOUND, "{mode:?}");
            assert!(attempt, "{mode:?}: a navigation starts an attempt");
        } else {
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{mode:?}");
            assert!(!attempt, "{mode:?}: no attempt cookie for a script's request");
            let page = resp.text().await.unwrap();
            assert!(page.contains("/_logto/sign-in?redirect="), "{page}");
        }
    }
    assert_eq!(s.upstream.count(), 0, "nothing reached the upstream");
}

/// A frame's navigation cannot sign in where it is: Logto's sign-in pages may be framed by Logto's own origins only,
/// GitHub's by none. It gets a 401 page the gate's own origin may frame, whose link signs in in the whole window
/// and returns to the page holding the frame (its same-origin `Referer`), and starts no attempt. The whole window's
/// navigation is still sent to sign in. (The browser test signs in from such a frame in Chromium.)
#[tokio::test]
async fn a_frames_navigation_gets_a_page_that_signs_in_in_the_whole_window() {
    let s = Stack::start().await;
    let holder = format!("{}/reports/overview?week=3", s.gate.url());
    for (dest, referer, back) in [
        ("iframe", holder.as_str(), "%2Freports%2Foverview%3Fweek%3D3"),
        ("frame", holder.as_str(), "%2Freports%2Foverview%3Fweek%3D3"),
        ("IFrame", "https://evil.example/reports", "%2F"),
        ("iframe", "", "%2F"),
    ] {
        let mut req =
            navigation(reqwest::Method::GET, format!("{}/panels/7", s.gate.url())).header("sec-fetch-dest", dest);
        if !referer.is_empty() {
            req = req.header("referer", referer);
        }
        let resp = req.send().await.unwrap();
        let what = format!("{dest}, referer {referer:?}");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{what}");
        let field = |name: &str| resp.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(field("x-frame-options").as_deref(), Some("SAMEORIGIN"), "{what}");
        let csp = field("content-security-policy").unwrap();
        assert!(
            csp.contains("frame-ancestors 'self'") && csp.contains("default-src 'none'"),
            "{what}: {csp}"
        );
        assert!(field("set-cookie").is_none(), "{what}: no sign-in attempt");
        let page = resp.text().await.unwrap();
        let link = format!(
            "<a href=\"{}/_logto/sign-in?redirect={back}\" target=\"_top\">",
            s.gate.url()
        );
        assert!(page.contains(&link), "{what}: {page}");
    }
    for dest in [Some("document"), None] {
        let mut req = navigation(reqwest::Method::GET, format!("{}/panels/7", s.gate.url()));
        if let Some(dest) = dest {
            req = req.header("sec-fetch-dest", dest);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::FOUND, "{dest:?}: the whole window signs in");
    }
    assert_eq!(s.upstream.count(), 0, "nothing reached the upstream");
}

#[tokio::test]
async fn userinfo_shows_the_signed_in_identity_and_401_without_session() {
    let s = Stack::start().await;
    let b = s.browser();
    let anon = b.get(format!("{}/_logto/userinfo", s.gate.url())).await;
    assert_eq!(anon.status(), StatusCode::UNAUTHORIZED);
    b.sign_in(&s.gate, "/").await;
    let me: Value = b.get_json(format!("{}/_logto/userinfo", s.gate.url())).await;
    assert_eq!(me["sub"], "u_alice0001");
    assert_eq!(me["email"], "alice@example.com");
    assert_eq!(me["roles"], json!(["admin", "editor"]));
    assert!(me.get("picture").is_none());
}

#[tokio::test]
async fn the_authorization_request_carries_pkce_nonce_state_prompt_and_logto_extras() {
    let s = Stack::with(
        r#"first_screen = "register"
direct_sign_in = "social:github""#,
        "",
    )
    .await;
    s.browser().sign_in(&s.gate, "/").await;
    let auth = s.idp.last_authorization_request();
    assert_eq!(auth["response_type"], "code");
    assert_eq!(auth["client_id"], APP_ID);
    assert_eq!(auth["redirect_uri"], format!("{}/_logto/callback", s.gate.url()));
    assert_eq!(auth["scope"], "openid profile offline_access email roles");
    assert_eq!(auth["prompt"], "consent");
    assert_eq!(auth["code_challenge_method"], "S256");
    assert_eq!(auth["code_challenge"].as_str().unwrap().len(), 43);
    assert_eq!(auth["state"].as_str().unwrap().len(), 43);
    assert!(auth["nonce"].as_str().unwrap().len() >= 32);
    assert_eq!(auth["first_screen"], "register");
    assert_eq!(auth["direct_sign_in"], "social:github");
    // client_secret_basic at the token endpoint, and a refresh token came back (offline_access + consent).
    let stats = s.idp.stats();
    assert_eq!(stats["grants"]["authorization_code"], 1);
}

/// A link may choose Logto's page for one sign-in, as Logto's SDKs let an app: a "Create account" link
/// (`first_screen=register`), a button for one connector (`direct_sign_in`), the identifier to start with
/// (`login_hint`), each in place of `[logto]`'s; the next sign-in is back to the configured page. A bad value is a
/// 400 naming its parameter, and starts no attempt.
#[tokio::test]
async fn a_sign_in_link_chooses_logtos_page_for_that_sign_in() {
    let s = Stack::with(r#"first_screen = "sign_in""#, "").await;
    let link = format!(
        "{}/_logto/sign-in?redirect=%2Freports&first_screen=register&direct_sign_in=social%3Agithub\
         &login_hint=alice%2Btest%40example.com",
        s.gate.url()
    );
    let (hops, resp) = s.browser().navigate(&link).await;
    assert_eq!(resp.status(), StatusCode::OK, "{hops:#?}");
    assert_eq!(hops.last().unwrap().url, format!("{}/reports", s.gate.url()));
    let auth = s.idp.last_authorization_request();
    assert_eq!(auth["first_screen"], "register", "{auth}");
    assert_eq!(auth["direct_sign_in"], "social:github", "{auth}");
    assert_eq!(auth["login_hint"], "alice+test@example.com", "{auth}");

    // A hint cannot carry another parameter of the authorization request (`&prompt=none` inside it stays text).
    let smuggling = format!(
        "{}/_logto/sign-in?login_hint=bob%40example.com%26prompt%3Dnone%26first_screen%3Dregister",
        s.gate.url()
    );
    let (hops, _) = s.browser().navigate(&smuggling).await;
    let auth = s.idp.last_authorization_request();
    assert_eq!(
        auth["login_hint"], "bob@example.com&prompt=none&first_screen=register",
        "{hops:#?}"
    );
    assert_eq!(
        (auth["prompt"].as_str(), auth["first_screen"].as_str()),
        (Some("consent"), Some("sign_in"))
    );

    s.browser().sign_in(&s.gate, "/plain").await;
    let auth = s.idp.last_authorization_request();
    assert_eq!(auth["first_screen"], "sign_in", "{auth}");
    assert!(auth.get("direct_sign_in").is_none_or(Value::is_null), "{auth}");
    assert!(auth.get("login_hint").is_none_or(Value::is_null), "{auth}");

    for (query, named) in [
        ("first_screen=signUp", "first_screen"),
        ("direct_sign_in=github", "direct_sign_in"),
        ("login_hint=a%0D%0Ab", "login_hint"),
    ] {
        let refused = plain()
            .get(format!("{}/_logto/sign-in?{query}", s.gate.url()))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{query}");
        assert!(refused.headers().get("set-cookie").is_none(), "{query}: no attempt");
        let body = refused.text().await.unwrap();
        assert!(body.contains(&format!("the parameter `{named}`")), "{query}: {body}");
    }
}

#[tokio::test]
async fn several_tabs_signing_in_at_once_all_succeed() {
    let s = Stack::start().await;
    let b = s.browser();
    // Start three attempts before finishing any: each has its own attempt cookie.
    let mut starts = Vec::new();
    for path in ["/tab-one", "/tab-two", "/tab-three"] {
        let resp = b
            .client
            .get(format!("{}{path}", s.gate.url()))
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FOUND);
        starts.push((path, resp.headers()["location"].to_str().unwrap().to_owned()));
    }
    for (path, logto_url) in starts.into_iter().rev() {
        let (hops, resp) = b.navigate(&logto_url).await;
        assert_eq!(resp.status(), StatusCode::OK, "{hops:#?}");
        assert_eq!(hops.last().unwrap().url, format!("{}{path}", s.gate.url()));
    }
}

#[tokio::test]
async fn sign_out_clears_the_session_and_ends_logtos_session() {
    let s = Stack::start().await;
    let b = s.browser();
    b.sign_in(&s.gate, "/").await;
    // Only GET, HEAD and POST sign out (RFC 9110 §15.5.6: a 405 says which methods the page takes).
    let put = b
        .client
        .put(format!("{}/_logto/sign-out", s.gate.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(put.headers()["allow"], "GET, HEAD, POST");
    let resp = b.get(format!("{}/_logto/sign-out", s.gate.url())).await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    let cleared = resp.headers().get_all("set-cookie").iter().any(|v| {
        let v = v.to_str().unwrap();
        v.starts_with("logto_gate=;") && v.contains("Max-Age=0")
    });
    assert!(cleared, "{:?}", resp.headers());
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let end = reqwest::Url::parse(&location).unwrap();
    assert_eq!(
        format!("{}{}", end.origin().ascii_serialization(), end.path()),
        format!("{}/session/end", s.idp.issuer())
    );
    let q: std::collections::HashMap<_, _> = end.query_pairs().into_owned().collect();
    assert_eq!(q["client_id"], APP_ID);
    let signed_out = format!("{}/_logto/signed-out", s.gate.url());
    assert_eq!(q["post_logout_redirect_uri"], signed_out);
    // Signed out at the gate: the API answers 401 again.
    let api = b.client.get(format!("{}/api", s.gate.url())).send().await.unwrap();
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
    // Logto ends its own session and sends the browser to the gate's signed-out page (not the app's root, which
    // would start a new sign-in at once), which offers to sign in again.
    let hops = b.follow_submitting_forms(&location).await;
    assert_eq!(
        hops.last().unwrap().location.as_deref(),
        Some(signed_out.as_str()),
        "{hops:#?}"
    );
    assert_eq!(s.idp.stats()["end_sessions"], 1);
    let (_, page) = b.navigate(&signed_out).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("You are signed out") && html.contains("/_logto/sign-in"),
        "{html}"
    );
}

/// `/_logto/sign-out?redirect=/path` lands the browser on `/path` after Logto's end-session, in place of the
/// signed-out page (oauth2-proxy's `rd`): the target travels sealed in the end-session `state`, which Logto hands
/// back. A target the sign-in rules refuse signs out all the same and lands on the signed-out page; a `state` the
/// gate did not seal redirects nowhere; the cross-site confirmation keeps the target; an operator's own
/// `post_logout_redirect_uri` wins.
#[tokio::test]
async fn a_sign_out_can_return_to_a_page_of_the_app() {
    let s = Stack::start().await;
    let gate = s.gate.url();
    let signed_out = format!("{gate}/_logto/signed-out");
    let b = s.browser();
    b.sign_in(&s.gate, "/").await;
    let out = b
        .get(format!(
            "{gate}/_logto/sign-out?redirect=%2Fgoodbye%3Flang%3Dde%26x%3D%C3%A4"
        ))
        .await;
    assert_eq!(out.status(), StatusCode::FOUND);
    let location = out.headers()["location"].to_str().unwrap().to_owned();
    let q: std::collections::HashMap<_, _> = reqwest::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!(q["post_logout_redirect_uri"], signed_out);
    assert!(!q["state"].contains("goodbye"), "sealed, not readable: {}", q["state"]);
    // Signed out at once, before Logto is even asked.
    let api = b.client.get(format!("{gate}/api")).send().await.unwrap();
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
    let hops = b.follow_submitting_forms(&location).await;
    let back = hops.last().unwrap().location.clone().unwrap();
    assert!(back.starts_with(&format!("{signed_out}?state=")), "{hops:#?}");
    assert_eq!(s.idp.stats()["end_sessions"], 1);
    let (hops, page) = b.navigate(&back).await;
    let wanted = format!("{gate}/goodbye?lang=de&x=%C3%A4");
    assert_eq!(
        hops.first().and_then(|h| h.location.as_deref()),
        Some(wanted.as_str()),
        "{hops:#?}"
    );
    // The app's page is behind the gate: signed out, the browser went through a new sign-in to reach it.
    assert!(hops.iter().any(|h| h.url.starts_with(&s.idp.issuer())), "{hops:#?}");
    assert_eq!(page.url().as_str(), wanted);

    // A state made by anyone else, or a bare path, is no redirect: the page.
    for forged in ["/evil", "%2F%2Fevil.example", "AAAA"] {
        let r = plain()
            .get(format!("{signed_out}?state={forged}"))
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{forged}");
        assert!(r.text().await.unwrap().contains("You are signed out"));
    }

    // A target the return rules refuse (another site, spelled as browsers would still follow it; a CR LF to add a
    // field; the parameter twice): signed out all the same, and no state to follow.
    for refused in [
        "redirect=https%3A%2F%2Fevil.example%2F",
        "redirect=%2F%2Fevil.example",
        "redirect=%2F%5Cevil.example",
        "redirect=%2F%09%2Fevil.example",
        "redirect=%2Fa%0D%0ASet-Cookie%3A%20evil%3D1",
        "redirect=%2Fa&redirect=https%3A%2F%2Fevil.example%2F",
    ] {
        let (b, _) = s.signed_in().await;
        let out = b.get(format!("{gate}/_logto/sign-out?{refused}")).await;
        assert_eq!(out.status(), StatusCode::FOUND, "{refused}");
        let location = out.headers()["location"].to_str().unwrap();
        assert!(
            !location.contains("state=") && !names_evil(location),
            "{refused}: {location}"
        );
        assert!(
            out.headers()
                .get_all("set-cookie")
                .iter()
                .all(|c| !names_evil(c.to_str().unwrap())),
            "{refused}"
        );
        let api = b.client.get(format!("{gate}/api")).send().await.unwrap();
        assert_eq!(api.status(), StatusCode::UNAUTHORIZED, "{refused}");
    }

    // Asked by another site: the confirmation's button keeps the target.
    let (b, _) = s.signed_in().await;
    let page = b
        .client
        .get(format!("{gate}/_logto/sign-out?redirect=%2Fgoodbye"))
        .header("sec-fetch-site", "cross-site")
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("<form method=\"post\" action=\"/_logto/sign-out?redirect=%2Fgoodbye\">"),
        "{html}"
    );
    let confirmed = b
        .client
        .post(format!("{gate}/_logto/sign-out?redirect=%2Fgoodbye"))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(confirmed.status(), StatusCode::SEE_OTHER);
    let location = confirmed.headers()["location"].to_str().unwrap().to_owned();
    let hops = b.follow_submitting_forms(&location).await;
    let back = hops.last().unwrap().location.clone().unwrap();
    let r = plain().get(&back).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(r.headers()["location"], format!("{gate}/goodbye").as_str());

    // The operator's own post-logout page wins: the redirect is not followed (and the sign-out still happens).
    let own = Stack::with("post_logout_redirect_uri = \"https://www.example.com/bye\"", "").await;
    let (b, _) = own.signed_in().await;
    let out = b
        .get(format!("{}/_logto/sign-out?redirect=%2Fgoodbye", own.gate.url()))
        .await;
    assert_eq!(out.status(), StatusCode::FOUND);
    let location = out.headers()["location"].to_str().unwrap();
    assert!(
        location.contains("post_logout_redirect_uri=https%3A%2F%2Fwww.example.com%2Fbye")
            && !location.contains("state="),
        "{location}"
    );
}

/// Nothing a browser fetches on its own before anyone clicks signs out: a sign-out link prefetched or prerendered
/// (speculation rules on hover, `<link rel=prefetch>`, the address bar) is refused with a status that makes the
/// browser drop the speculative load, and a HEAD (a link checker) gets the GET's head without its effects. Neither
/// clears the cookie, revokes the session (a replay of the cookie still works) or revokes the refresh token.
#[tokio::test]
async fn a_prefetched_or_head_sign_out_signs_nobody_out() {
    let s = Stack::start().await;
    let b = s.browser();
    b.sign_in(&s.gate, "/").await;
    let cookie = b.gate_cookies(&s.gate.url());
    let sign_out = format!("{}/_logto/sign-out", s.gate.url());
    for (name, value) in [
        ("sec-purpose", "prefetch"),
        ("sec-purpose", "prefetch;prerender"),
        ("Sec-Purpose", "Prefetch; anonymous-client-ip"),
        ("purpose", "prefetch"),
        ("x-purpose", "preview"),
        ("x-moz", "prefetch"),
    ] {
        let r = b
            .client
            .get(&sign_out)
            .header(name, value)
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{name}: {value}");
        assert!(r.headers().get("set-cookie").is_none(), "{name}: {value}");
        assert_eq!(r.headers()["cache-control"], "no-store");
    }
    let head = b.client.head(&sign_out).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::FOUND);
    assert!(head.headers()["location"].to_str().unwrap().contains("/session/end"));
    assert!(head.headers().get("set-cookie").is_none());
    // Still signed in, in this browser and for a copy of its cookie (nothing went on the revocation list).
    let api = b.client.get(format!("{}/api", s.gate.url())).send().await.unwrap();
    assert_eq!(api.status(), StatusCode::OK);
    let copy_status = || async {
        let r = plain()
            .get(format!("{}/api", s.gate.url()))
            .header("cookie", &cookie)
            .send();
        r.await.unwrap().status()
    };
    assert_eq!(copy_status().await, StatusCode::OK);
    assert_eq!(s.idp.stats()["revocations"], 0, "the refresh token is not revoked");
    // Following the link signs out.
    let out = b.get(&sign_out).await;
    assert_eq!(out.status(), StatusCode::FOUND);
    assert_eq!(copy_status().await, StatusCode::UNAUTHORIZED);
}

/// A page prefetched or prerendered without a session (speculation rules prefetch as a navigation would), or asked
/// for with HEAD, starts no sign-in: no attempt cookie piles up per hover or per check, no authorization request goes
/// to Logto; the navigation itself still does.
#[tokio::test]
async fn a_prefetch_without_a_session_starts_no_sign_in() {
    let s = Stack::start().await;
    let navigate = |purpose: Option<&str>| {
        let mut req =
            navigation(reqwest::Method::GET, format!("{}/reports", s.gate.url())).header("sec-fetch-dest", "document");
        if let Some(p) = purpose {
            req = req.header("sec-purpose", p);
        }
        req.send()
    };
    for purpose in ["prefetch", "prefetch;prerender"] {
        let r = navigate(Some(purpose)).await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{purpose}");
        assert!(r.headers().get("set-cookie").is_none(), "{purpose}");
        assert!(r.headers().get("location").is_none(), "{purpose}");
    }
    // A HEAD navigation (a link checker, a monitor, `curl -I`) is sent to the sign-in link instead: no attempt
    // cookie, no redirect to Logto; following the link with GET starts the sign-in.
    let head = navigation(reqwest::Method::HEAD, format!("{}/reports?q=1", s.gate.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::FOUND);
    assert!(head.headers().get("set-cookie").is_none());
    assert_eq!(head.headers()["cache-control"], "no-store");
    let link = head.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(
        link,
        format!("{}/_logto/sign-in?redirect=%2Freports%3Fq%3D1", s.gate.url())
    );
    let followed = plain().get(&link).send().await.unwrap();
    assert_eq!(followed.status(), StatusCode::FOUND);
    assert!(followed.headers()["set-cookie"].to_str().unwrap().contains("_signin_"));
    assert!(followed.headers()["location"].to_str().unwrap().contains("/oidc/auth"));
    let r = navigate(None).await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert!(r.headers()["set-cookie"].to_str().unwrap().contains("_signin_"));
}

#[tokio::test]
async fn session_cookie_is_httponly_lax_and_small() {
    let s = Stack::start().await;
    // Walk the dance hop by hop to read the Set-Cookie headers of the start and of the callback.
    let b2 = s.browser();
    let start = b2
        .client
        .get(format!("{}/", s.gate.url()))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    let attempt_cookie = start.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(attempt_cookie.contains("Path=/_logto/callback") && attempt_cookie.contains("HttpOnly"));
    assert!(attempt_cookie.contains("SameSite=Lax") && attempt_cookie.contains("Max-Age=3600"));
    let mut url = start.headers()["location"].to_str().unwrap().to_owned();
    let callback = loop {
        let r = b2.client.get(&url).header("accept", "text/html").send().await.unwrap();
        let loc = r.headers()["location"].to_str().unwrap().to_owned();
        if url.starts_with(&s.gate.url()) {
            break r;
        }
        url = reqwest::Url::parse(&url).unwrap().join(&loc).unwrap().to_string();
    };
    let session = callback
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("logto_gate="))
        .expect("session cookie");
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Lax") && session.contains("Path=/"));
    assert!(!session.contains("Secure"), "http public_url: no Secure attribute");
    assert!(session.len() < 2048, "session cookie is {} bytes", session.len());
}

/// Without a session: an API client's 401 names a sign-in URL that comes back to what it asked for; a browser's
/// form post (not a navigation) gets an HTML page whose "Sign in again" returns to the page the form was on.
#[tokio::test]
async fn requests_without_a_session_get_a_way_back() {
    let s = Stack::start().await;
    let api = plain()
        .get(format!("{}/api/items?page=2", s.gate.url()))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
    let v: Value = api.json().await.unwrap();
    assert_eq!(
        v["sign_in_url"],
        format!("{}/_logto/sign-in?redirect=%2Fapi%2Fitems%3Fpage%3D2", s.gate.url())
    );
    let form = plain()
        .post(format!("{}/orders/submit", s.gate.url()))
        .header("accept", "text/html,application/xhtml+xml")
        .header("referer", format!("{}/orders/new?draft=1", s.gate.url()))
        .form(&[("item", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::UNAUTHORIZED);
    assert!(form.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = form.text().await.unwrap();
    assert!(
        html.contains("/_logto/sign-in?redirect=%2Forders%2Fnew%3Fdraft%3D1"),
        "{html}"
    );
    // A referer from elsewhere is no way back: the link returns to the root.
    let foreign = plain()
        .post(format!("{}/orders/submit", s.gate.url()))
        .header("accept", "text/html")
        .header("referer", "https://evil.example/orders")
        .send()
        .await
        .unwrap();
    assert!(foreign.text().await.unwrap().contains("/_logto/sign-in?redirect=%2F\""));
    assert_eq!(s.upstream.count(), 0);
}

/// Traefik's errors middleware fetches `/_logto/sign-in` itself and shows the browser that answer's body (a
/// redirect's body, which a browser never sees otherwise): it is a small page that starts the sign-in in the
/// browser, by a meta refresh and a link, back to the page asked for.
#[tokio::test]
async fn the_sign_in_redirect_has_a_body_for_error_page_integrations() {
    let s = Stack::start().await;
    let url = format!(
        "{}/_logto/sign-in?redirect={}",
        s.gate.url(),
        url::form_urlencoded::byte_serialize(format!("{}/reports?y=1", s.gate.url()).as_bytes()).collect::<String>()
    );
    let r = plain().get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = r.text().await.unwrap();
    let again = format!("{}/_logto/sign-in?redirect=%2Freports%3Fy%3D1", s.gate.url());
    assert!(html.contains(&format!("content=\"0; url={again}\"")), "{html}");
    assert!(html.contains(&format!("href=\"{again}\"")), "{html}");
}

/// "Sign in again" on an error page comes back to the page the person wanted (here Logto is unreachable when the
/// sign-in starts), not to the root.
#[tokio::test]
async fn sign_in_again_links_keep_the_page_asked_for() {
    let upstream = Upstream::start().await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let gate = TestGate::start_unready(&dead, &upstream.url(), "", "", |t| t, |_| {}).await;
    let r = plain()
        .get(format!("{}/reports/2026?q=1", gate.url()))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let html = r.text().await.unwrap();
    assert!(
        html.contains(&format!(
            "href=\"{}/_logto/sign-in?redirect=%2Freports%2F2026%3Fq%3D1\"",
            gate.url()
        )),
        "{html}"
    );
    let via_sign_in = plain()
        .get(format!("{}/_logto/sign-in?redirect=%2Fdocs", gate.url()))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert!(via_sign_in
        .text()
        .await
        .unwrap()
        .contains("/_logto/sign-in?redirect=%2Fdocs\""));
}

/// Logto keeps a sign-in open for an hour (its interaction's lifetime): a person who comes back to Logto's page
/// after a while (fetching a code, a break) finishes signing in, back on the page asked for. Past that hour the
/// gate no longer takes the callback either. The attempt's age is set by resealing its cookie with the gate's key.
#[tokio::test]
async fn a_sign_in_finished_within_logtos_hour_completes() {
    let s = Stack::start().await;
    let toml = gate_toml(&s.gate.url(), &s.upstream.url(), &s.idp.endpoint(), "", "");
    let config = logto_gate::Config::from_toml_str(&toml, Vec::new()).unwrap();
    let codec = logto_gate::session::CookieCodec::new(&config.session);
    for (minutes, finishes) in [(50, true), (61, false)] {
        let b = s.browser();
        let started = b
            .client
            .get(format!("{}/reports/late", s.gate.url()))
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(started.status(), StatusCode::FOUND);
        let logto_url = started.headers()["location"].to_str().unwrap().to_owned();
        let state = reqwest::Url::parse(&logto_url)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.into_owned())
            .unwrap();
        let aged = logto_gate::session::attempt::SignInAttempt {
            state,
            nonce: String::new(),
            pkce_verifier: String::new(),
            return_to: "/reports/late".to_owned(),
            created: logto_gate::session::now() - minutes * 60,
            max_age: None,
        };
        let cookie = codec.attempt_cookie(&aged).unwrap();
        b.jar
            .add_cookie_str(cookie.to_str().unwrap(), &s.gate.url().parse().unwrap());

        let (hops, resp) = b.navigate(&logto_url).await;
        if finishes {
            assert_eq!(resp.status(), StatusCode::OK, "{minutes} minutes: {hops:#?}");
            assert_eq!(hops.last().unwrap().url, format!("{}/reports/late", s.gate.url()));
        } else {
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{minutes} minutes: {hops:#?}");
            assert!(resp.text().await.unwrap().contains("Sign-in expired"));
        }
    }
}
