//! API clients with Logto access tokens (`Authorization: Bearer <JWT>`), and access tokens passed upstream.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

const RESOURCE: &str = "https://api.example.com";

fn options() -> IdpOptions {
    IdpOptions {
        resources: Some(json!({ RESOURCE: { "scopes": ["read:reports", "write:reports"] } })),
        ..Default::default()
    }
}

const RULES: &str = r#"
[[rules]]
prefix = "/api/reports"
scopes = ["read:reports"]
"#;

fn unsigned(header: Value, payload: Value) -> String {
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    )
}

async fn call(s: &Stack, path: &str, token: &str) -> reqwest::Response {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}{path}", s.gate.url()))
        .header("authorization", format!("Bearer {token}"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn bearer_tokens_are_verified_like_logto_access_tokens() {
    let s = Stack::edited(options(), &format!("resources = [\"{RESOURCE}\"]"), RULES, |t| t).await;
    let claims = |aud: &str, scope: &str, exp: u64| {
        json!({"iss": s.idp.issuer(), "aud": aud, "sub": "u_service01", "client_id": "m2m", "scope": scope,
               "iat": now(), "exp": exp})
    };
    // Valid: identity headers from its claims, no redirect, the token itself passes on.
    let good = s.idp.sign(claims(RESOURCE, "read:reports", now() + 300), json!({}));
    let resp = call(&s, "/api/reports/1", &good).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = s.upstream.last();
    assert_eq!(seen.header("x-forwarded-user"), Some("u_service01"));
    assert_eq!(seen.header("authorization"), Some(format!("Bearer {good}").as_str()));

    // Valid but without the scope the rule needs: 403.
    let narrow = s.idp.sign(claims(RESOURCE, "write:reports", now() + 300), json!({}));
    assert_eq!(
        call(&s, "/api/reports/1", &narrow).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(call(&s, "/api/other", &narrow).await.status(), StatusCode::OK);

    let hs256 = {
        let input = unsigned(
            json!({"alg": "HS256", "typ": "JWT"}),
            claims(RESOURCE, "read:reports", now() + 300),
        );
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, APP_SECRET.as_bytes());
        let sig = ring::hmac::sign(&key, input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    };
    let none = format!(
        "{}.",
        unsigned(json!({"alg": "none"}), claims(RESOURCE, "read:reports", now() + 300))
    );
    let cases = [
        (
            "wrong audience",
            s.idp.sign(
                claims("https://other.example.com", "read:reports", now() + 300),
                json!({}),
            ),
        ),
        (
            "an ID token's audience (the app id)",
            s.idp.sign(claims(APP_ID, "read:reports", now() + 300), json!({})),
        ),
        (
            "expired",
            s.idp.sign(claims(RESOURCE, "read:reports", now() - 120), json!({})),
        ),
        (
            "issued in the future",
            s.idp.sign(
                json!({"iss": s.idp.issuer(), "aud": RESOURCE, "sub": "x", "iat": now() + 3600, "exp": now() + 7200}),
                json!({}),
            ),
        ),
        (
            "wrong issuer",
            s.idp.sign(
                json!({"iss": "https://evil.example/oidc", "aud": RESOURCE, "sub": "x", "exp": now() + 300}),
                json!({}),
            ),
        ),
        (
            "unknown kid",
            s.idp.sign(
                claims(RESOURCE, "read:reports", now() + 300),
                json!({"kid": "not-a-logto-key"}),
            ),
        ),
        (
            "typed as an ID token (no typ), RFC 9068 §4",
            s.idp
                .sign(claims(RESOURCE, "read:reports", now() + 300), json!({"typ": null})),
        ),
        (
            "typed JWT",
            s.idp
                .sign(claims(RESOURCE, "read:reports", now() + 300), json!({"typ": "JWT"})),
        ),
        (
            "typed as a logout token",
            s.idp.sign(
                claims(RESOURCE, "read:reports", now() + 300),
                json!({"typ": "logout+jwt"}),
            ),
        ),
        (
            "act that names no actor (RFC 8693 §4.1)",
            s.idp.sign(
                json!({"iss": s.idp.issuer(), "aud": RESOURCE, "sub": "u_alice0001", "act": "u_bob000002",
                       "scope": "read:reports", "iat": now(), "exp": now() + 300}),
                json!({}),
            ),
        ),
        (
            "act whose sub would split a header",
            s.idp.sign(
                json!({"iss": s.idp.issuer(), "aud": RESOURCE, "sub": "u_alice0001",
                       "act": {"sub": "u_bob\r\nx-forwarded-user: root"}, "scope": "read:reports",
                       "iat": now(), "exp": now() + 300}),
                json!({}),
            ),
        ),
        (
            "bound to a DPoP key (cnf.jkt), RFC 9449 §7.2",
            s.idp.sign(
                json!({"iss": s.idp.issuer(), "aud": RESOURCE, "sub": "u_alice0001", "scope": "read:reports",
                       "cnf": {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}, "iat": now(), "exp": now() + 300}),
                json!({}),
            ),
        ),
        (
            "organization_id that names no organization",
            s.idp.sign(
                json!({"iss": s.idp.issuer(), "aud": RESOURCE, "sub": "u_alice0001", "scope": "read:reports",
                       "organization_id": 7, "iat": now(), "exp": now() + 300}),
                json!({}),
            ),
        ),
        ("alg none", none),
        ("HS256 keyed with the client secret", hs256),
        ("garbage", "not.a.jwt".to_owned()),
        ("tampered payload", {
            let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
            parts[1] = URL_SAFE_NO_PAD.encode(claims(RESOURCE, "read:reports write:reports", now() + 300).to_string());
            parts.join(".")
        }),
    ];
    let before = s.upstream.count();
    for (what, token) in cases {
        let resp = call(&s, "/api/other", &token).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{what}");
        let www = resp.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(www.contains("error=\"invalid_token\""), "{what}: {www}");
    }
    assert_eq!(s.upstream.count(), before, "no refused token reached the upstream");
}

#[tokio::test]
async fn sessions_get_a_jwt_access_token_for_the_resource_and_can_pass_it_upstream() {
    let s = Stack::edited(
        options(),
        &format!("resources = [\"{RESOURCE}\"]\nscopes = [\"email\", \"roles\", \"read:reports\"]"),
        RULES,
        in_upstream("pass_access_token = true"),
    )
    .await;
    let b = s.browser();
    b.sign_in(&s.gate, "/api/reports/7").await;
    let seen = s.upstream.last();
    let auth = seen
        .header("authorization")
        .expect("the access token is passed upstream")
        .to_owned();
    let token = auth.strip_prefix("Bearer ").unwrap().to_owned();
    let payload = jwt_claims(&token);
    assert_eq!(
        payload["aud"], RESOURCE,
        "Logto gives a JWT for the resource because `resource` was sent"
    );
    assert_eq!(payload["sub"], "u_alice0001");
    // The same token works as a bearer token for an API client.
    let resp = call(&s, "/api/reports/8", &token).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(s.upstream.last().header("x-forwarded-user"), Some("u_alice0001"));
}

/// A gate that takes tokens for `RESOURCE`, and a valid one of a machine's allowed to read reports.
async fn with_a_readers_token() -> (Stack, String) {
    let s = Stack::edited(options(), &format!("resources = [\"{RESOURCE}\"]"), RULES, |t| t).await;
    let good = s.idp.sign(
        json!({"iss": s.idp.issuer(), "aud": RESOURCE, "sub": "u_service01", "client_id": "m2m",
               "scope": "read:reports", "iat": now(), "exp": now() + 300}),
        json!({}),
    );
    (s, good)
}

/// A request with two `Authorization` fields is refused (400, as nginx answers), over HTTP/1 and HTTP/2, whatever
/// it also carries: the gate would verify one token and the app might read the other (the last, or both joined).
#[tokio::test]
async fn a_second_authorization_field_is_refused_not_passed_on() {
    let (s, good) = with_a_readers_token().await;
    let (_, cookie) = s.signed_in().await;
    let before = s.upstream.count();
    let h1 = plain();
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    for (client, version) in [(&h1, "HTTP/1.1"), (&h2, "HTTP/2")] {
        let cases = [
            (
                "a valid token, then a forged one",
                None,
                format!("Bearer {good}"),
                "Bearer forged.not.verified",
            ),
            (
                "Basic beside a session, then a forged token",
                Some(&cookie),
                "Basic dXNlcjpwdw==".to_owned(),
                "Bearer x",
            ),
        ];
        for (what, session, first, second) in cases {
            let mut req = client
                .get(format!("{}/api/other", s.gate.url()))
                .header("authorization", first)
                .header("authorization", second);
            if let Some(c) = session {
                req = req.header("cookie", format!("logto_gate={c}"));
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{version}, {what}");
            let text = resp.text().await.unwrap();
            assert!(
                text.contains("Authorization is given more than once"),
                "{version}, {what}: {text}"
            );
        }
        // One field is served as before.
        let one = client
            .get(format!("{}/api/other", s.gate.url()))
            .header("authorization", format!("Bearer {good}"))
            .send()
            .await
            .unwrap();
        assert_eq!(one.status(), StatusCode::OK, "{version}");
    }
    assert_eq!(
        s.upstream.count(),
        before + 2,
        "only the single-field requests reached the app"
    );
}

/// Every `Authorization` field an app might read as a bearer token is verified: one whose scheme and token a tab or
/// a no-break space separates (RFC 6750 §2.1 asks for a space; lenient parsers split on any whitespace) is a bearer
/// token here too, and one whose token is not ASCII text is refused as invalid. Neither reaches the app unverified
/// beside a session, over HTTP/1.1 (both servers) and HTTP/2; a valid token after a tab is served as the token's.
/// (A public path authenticates nothing, and passes `Authorization` on as it came.)
#[tokio::test]
async fn a_bearer_token_after_a_tab_or_not_ascii_is_verified_not_passed_on() {
    let (s, good) = with_a_readers_token().await;
    let forged = unsigned(
        json!({"alg": "ES384", "typ": "at+jwt"}),
        json!({"iss": s.idp.issuer(), "aud": RESOURCE, "sub": "u_admin", "scope": "read:reports", "exp": now() + 300}),
    ) + ".c2ln";
    let (_, cookie) = s.signed_in().await;
    let before = s.upstream.count();
    let hand_over = "GET /_logto/healthz HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n";
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    for value in [
        format!("Bearer\t{forged}"),
        format!("bearer \t{forged}"),
        format!("Bearer\u{a0}{forged}"),
        "Bearer caf\u{e9}".to_owned(),
    ] {
        for before in ["", hand_over] {
            let request = format!(
                "{before}GET /api/other HTTP/1.1\r\nHost: x\r\nAuthorization: {value}\r\n\
                 Cookie: logto_gate={cookie}\r\nConnection: close\r\n\r\n"
            );
            let answer = exchange_until_closed(s.gate.port, request.as_bytes()).await;
            let last = answer.rfind("HTTP/1.1 ").map_or("", |i| &answer[i..]);
            assert!(last.starts_with("HTTP/1.1 401"), "{value:?} {before:?}: {answer}");
            assert!(last.contains("invalid_token"), "{value:?}: {answer}");
        }
        let resp = h2
            .get(format!("{}/api/other", s.gate.url()))
            .header(
                "authorization",
                http::HeaderValue::from_bytes(value.as_bytes()).unwrap(),
            )
            .header("cookie", format!("logto_gate={cookie}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "HTTP/2 {value:?}");
    }
    assert_eq!(s.upstream.count(), before, "no unverified token reached the app");
    // A valid token after a tab is the token's request.
    let request =
        format!("GET /api/reports/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer\t{good}\r\nConnection: close\r\n\r\n");
    let answer = exchange_until_closed(s.gate.port, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(s.upstream.last().header("x-forwarded-user"), Some("u_service01"));
}

/// RFC 8693's token exchange, as Logto's user impersonation runs it.
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const CONSOLE: &str = "support-console";
const CONSOLE_SECRET: &str = "console-secret-0123456789";

/// Logto's user impersonation: a support console holds a subject token for a user (from Logto's Management API)
/// and exchanges it, with its support agent's own access token as the actor token, for an access token of the user
/// whose `act` names the agent. Behind the gate the app is told who the user is and who acts for them
/// (`X-Forwarded-Actor`, which no client can set), and so are the assertion, the access log and the 403 page; a
/// forward-auth answer carries it too. A token whose `act` does not say who acts is refused with the other invalid
/// tokens (`bearer_tokens_are_verified_like_logto_access_tokens`).
#[tokio::test]
async fn a_token_someone_acts_with_names_the_actor_to_the_app() {
    let idp = Idp::start(options());
    let upstream = Upstream::start().await;
    let mut gate = logging_json(&idp, &upstream, "info", |t| {
        t.replacen("[logto]\n", &format!("[logto]\nresources = [\"{RESOURCE}\"]\n"), 1)
            + "[assertion]\nenabled = true\naudience = \"sample-app\"\n"
            + RULES
    })
    .await;
    let url = gate.url();

    // Bob, the support agent, signs in to the console (a Logto web app of its own): an opaque access token.
    idp.register_client(CONSOLE, CONSOLE_SECRET, &upstream.url());
    let signed_in = sign_in_at_idp(&idp, (CONSOLE, CONSOLE_SECRET), &upstream.url(), "bob", "openid", &[]).await;
    let agent_token = signed_in["access_token"]
        .as_str()
        .expect("the agent's access token")
        .to_owned();

    // The console acts for alice.
    let exchange = |scope: &'static str, actor: Option<String>| {
        let subject = idp.subject_token("u_alice0001");
        let idp = &idp;
        async move {
            let mut form = vec![
                ("grant_type", TOKEN_EXCHANGE.to_owned()),
                ("subject_token", subject),
                ("subject_token_type", ACCESS_TOKEN_TYPE.to_owned()),
                ("resource", RESOURCE.to_owned()),
                ("scope", scope.to_owned()),
            ];
            if let Some(actor) = actor {
                form.push(("actor_token", actor));
                form.push(("actor_token_type", ACCESS_TOKEN_TYPE.to_owned()));
            }
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let answer = token_endpoint(idp, (CONSOLE, CONSOLE_SECRET), &form).await;
            answer["access_token"]
                .as_str()
                .unwrap_or_else(|| panic!("no token from the exchange: {answer}"))
                .to_owned()
        }
    };
    let acted = exchange("read:reports", Some(agent_token.clone())).await;
    assert_eq!(jwt_claims(&acted)["sub"], "u_alice0001");
    assert_eq!(
        jwt_claims(&acted)["act"],
        json!({"sub": "u_bob000002"}),
        "as Logto's exchange"
    );

    let call = |path: &str, token: &str| {
        plain()
            .get(format!("{url}{path}"))
            .header("authorization", format!("Bearer {token}"))
            .header("x-forwarded-actor", "u_mallory")
            .header("X_Forwarded_Actor", "u_mallory2")
            .header("accept", "text/html")
            .send()
    };
    let resp = call("/api/reports/1", &acted).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = upstream.last();
    assert_eq!(seen.header("x-forwarded-user"), Some("u_alice0001"));
    assert_eq!(
        seen.header_count("x-forwarded-actor"),
        1,
        "the client's copies are gone"
    );
    assert_eq!(seen.header("x-forwarded-actor"), Some("u_bob000002"));
    let assertion = jwt_claims(seen.header("x-logto-gate-assertion").expect("an assertion"));
    assert_eq!(assertion["sub"], "u_alice0001");
    assert_eq!(assertion["act"], json!({"sub": "u_bob000002"}));

    // The same for another proxy asking the gate.
    let resp = call("/_logto/auth", &acted).await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(resp.headers()["x-forwarded-actor"], "u_bob000002");
    assert_eq!(resp.headers()["x-forwarded-user"], "u_alice0001");

    // A rule the token does not meet: the 403 page says who is refused and who acts for them.
    let narrow = exchange("", Some(agent_token)).await;
    let resp = call("/api/reports/2", &narrow).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let page = resp.text().await.unwrap();
    assert!(page.contains("u_alice0001, acted for by u_bob000002"), "{page}");

    // Without an actor token nothing in the token says someone acts, and no client can say it instead.
    let unacted = exchange("read:reports", None).await;
    assert!(jwt_claims(&unacted).get("act").is_none());
    let resp = call("/api/reports/3", &unacted).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = upstream.last();
    assert_eq!(seen.header("x-forwarded-user"), Some("u_alice0001"));
    assert_eq!(seen.header("x-forwarded-actor"), None);
    assert!(jwt_claims(seen.header("x-logto-gate-assertion").unwrap())
        .get("act")
        .is_none());

    // The access log names the actor on the requests someone acted on, and on no other.
    let (_, lines) = stopped_log(&mut gate).await;
    let access = |path: &str| {
        lines
            .iter()
            .find(|l| l["target"] == "logto_gate::access" && l["path"] == path)
            .unwrap_or_else(|| panic!("no access line for {path}: {lines:#?}"))
            .clone()
    };
    for (path, actor) in [
        ("/api/reports/1", Some("u_bob000002")),
        ("/api/reports/2", Some("u_bob000002")),
        ("/api/reports/3", None),
    ] {
        let line = access(path);
        assert_eq!(line["user"], "u_alice0001", "{line}");
        assert_eq!(line["actor"].as_str(), actor, "{line}");
    }
}

/// Two APIs behind one gate, each a Logto API resource with a scope of the same name: where a rule names its
/// resource, a token Logto issued for the other API is refused (403), so a token a client holds for one API is no
/// key to the other (RFC 9068 §4). Elsewhere any accepted resource's token passes, and a signed-in session is not
/// refused by a rule's `resources` alone (its `scopes` there are what those APIs granted it: `logto.rs`).
#[tokio::test]
async fn a_token_for_one_api_is_no_key_to_another() {
    const BILLING: &str = "https://billing.example.com";
    let options = IdpOptions {
        resources: Some(json!({
            RESOURCE: { "scopes": ["write:reports"] },
            BILLING: { "scopes": ["write:reports"] },
        })),
        ..Default::default()
    };
    let rules = format!(
        "[[rules]]\nprefix = \"/billing\"\nresources = [\"{BILLING}\"]\nscopes = [\"write:reports\"]\n\
         [[rules]]\nprefix = \"/invoices\"\nresources = [\"{BILLING}\"]\n"
    );
    let s = Stack::edited(
        options,
        &format!("resources = [\"{RESOURCE}\", \"{BILLING}\"]"),
        &rules,
        |t| t,
    )
    .await;
    let token_for = |aud: Value| {
        s.idp.sign(
            json!({"iss": s.idp.issuer(), "aud": aud, "sub": "u_alice0001", "client_id": "reports-cli",
                   "scope": "write:reports", "iat": now(), "exp": now() + 300}),
            json!({}),
        )
    };
    let reports = token_for(json!(RESOURCE));
    let billing = token_for(json!(BILLING));
    let both = token_for(json!([RESOURCE, BILLING]));

    let refused = call(&s, "/billing/invoices", &reports).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let page = refused.text().await.unwrap();
    assert!(
        page.contains(&format!("an access token issued for the API {BILLING}")),
        "{page}"
    );
    assert_eq!(call(&s, "/billing/invoices", &billing).await.status(), StatusCode::OK);
    assert_eq!(call(&s, "/billing/invoices", &both).await.status(), StatusCode::OK);
    assert_eq!(call(&s, "/reports/7", &reports).await.status(), StatusCode::OK);
    assert_eq!(call(&s, "/reports/7", &billing).await.status(), StatusCode::OK);
    // A person signed in with the browser is no token for any API.
    let (b, _) = s.signed_in().await;
    let resp = b.get(format!("{}/invoices/3", s.gate.url())).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(s.upstream.last().header("x-forwarded-user"), Some("u_alice0001"));
    assert_eq!(call(&s, "/invoices/3", &reports).await.status(), StatusCode::FORBIDDEN);
}
