//! Forward-auth behind a real Caddy (Debian's 2.6) running deploy/examples/Caddyfile: its `forward_auth` asks the
//! gate's `/_logto/auth`, and what reaches the app, the browser and an API client is what the gate would have sent.

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::forward_auth::{
    chooses_no_request_id, claims_no_other_address, gate_behind_a_proxy, get_authorized, renewed_twice,
    the_session_token_reaches_the_app, ADDRESS_RULES, BASIC, RULES,
};
use crate::support::caddy::{self, Caddy};
use crate::support::*;

/// Debian's Caddy running deploy/examples/Caddyfile in front of a gate and the test app, with an IdP started with
/// `options` and `logto_extra`, `extra` in the gate's TOML, which `edit` then changes (`None`, after saying what to
/// install, without Caddy).
async fn behind_the_shipped_caddy(
    options: IdpOptions,
    logto_extra: &str,
    extra: &str,
    edit: impl FnOnce(String) -> String,
) -> Option<(Idp, Upstream, TestGate, Caddy)> {
    if !have_tool("caddy", &caddy::PATHS, "caddy") {
        return None;
    }
    let port = free_port();
    let (idp, upstream, gate) = gate_behind_a_proxy(port, options, logto_extra, extra, edit).await;
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples/Caddyfile")).unwrap();
    let site = example
        .replace("127.0.0.1:4180", &format!("127.0.0.1:{}", gate.port))
        .replace("127.0.0.1:8080", &upstream.addr.to_string())
        .replace("app.example.com {", &format!("http://127.0.0.1:{port} {{"));
    assert!(
        site.contains(&format!("http://127.0.0.1:{port} {{")),
        "the example names its site"
    );
    let caddy = Caddy::start(port, &site).await;
    Some((idp, upstream, gate, caddy))
}

#[tokio::test]
async fn caddy_forward_auth_with_the_shipped_example() {
    let Some((idp, upstream, _gate, caddy)) = behind_the_shipped_caddy(IdpOptions::default(), "", RULES, |t| t).await
    else {
        return;
    };

    // An API client without a session keeps the gate's 401, its challenge and its body; the app never sees it.
    let api = plain().get(format!("{}/api/items", caddy.url())).send().await.unwrap();
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED, "{}", caddy.log());
    assert_eq!(api.headers()["www-authenticate"], "Bearer realm=\"logto-gate\"");
    let body: serde_json::Value = api.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");
    assert!(upstream.seen().iter().all(|s| !s.path.starts_with("/api/")));

    // A public route with a spoofed identity passes, and no identity reaches the app: the gate's answer names
    // none, and the example removes a client's copies before it sets the answer's fields.
    const SPOOFED: [&str; 20] = [
        "X-Forwarded-User",
        "X-Forwarded-Email",
        "X-Forwarded-Preferred-Username",
        "X-Forwarded-Groups",
        "X-Forwarded-Machine",
        "X-Forwarded-Actor",
        "X-Logto-Gate-Assertion",
        "X-Auth-Request-User",
        "X-Auth-Request-Email",
        "X-Auth-Request-Preferred-Username",
        "X-Auth-Request-Groups",
        "X-Auth-Request-Access-Token",
        "Remote-User",
        "X-Remote-User",
        "X-Webauth-User",
        "X-Original-URL",
        "X-Rewrite-URL",
        "X-HTTP-Method-Override",
        "X-HTTP-Method",
        "X-Method-Override",
    ];
    let spoofed: Vec<_> = SPOOFED.iter().map(|name| (*name, "mallory")).collect();
    let public = get_authorized(&plain(), &format!("{}/public/x", caddy.url()), BASIC, &spoofed).await;
    assert_eq!(public.status(), StatusCode::OK, "{}", caddy.log());
    let seen = upstream.last();
    assert_eq!(seen.path, "/public/x");
    for name in SPOOFED {
        assert_eq!(seen.header(name), None, "{name}");
    }
    // A client's X-Original-URI next to the X-Forwarded-Uri Caddy sets names another request: the gate refuses
    // to rule on either, and the app is not reached.
    let count = upstream.count();
    let spoofed = plain()
        .get(format!("{}/admin/secret", caddy.url()))
        .header("X-Original-URI", "/public/x")
        .header("X-Forwarded-Method", "OPTIONS")
        .send()
        .await
        .unwrap();
    assert_eq!(spoofed.status(), StatusCode::BAD_REQUEST);
    assert_eq!(upstream.count(), count, "the app was not reached");
    chooses_no_request_id(&caddy.url(), &upstream).await;
    // The client's own credentials reach the app as they would through the gate itself (the gate's answer repeats
    // them, and the example passes the answer's Authorization on).
    assert_eq!(seen.header("authorization"), Some(BASIC));

    // A browser signs in through Caddy and comes back to the exact URL, query and all.
    let b = Browser::new(&idp);
    let target = format!("{}/reports?year=2026&q=a%26b&r=x", caddy.url());
    let (hops, resp) = b.navigate(&target).await;
    assert_eq!(resp.status(), StatusCode::OK, "{hops:#?}\n{}", caddy.log());
    assert_eq!(hops.last().unwrap().url, target);
    let seen = upstream.last();
    assert_eq!(seen.path, "/reports?year=2026&q=a%26b&r=x");
    assert_eq!(seen.header("x-forwarded-user"), Some("u_alice0001"));
    assert_eq!(seen.header("x-forwarded-groups"), Some("admin,editor"));
    assert_eq!(seen.header("x-auth-request-user"), Some("u_alice0001"));
    // A person's request says no machine and no one acting for them, whatever the client sends, and the app's
    // answer reaches the browser marked private for any shared cache in front.
    let spoofed = b
        .client
        .get(format!("{}/cacheable", caddy.url()))
        .header("X-Forwarded-Machine", "m2m-reporter")
        .header("X-Forwarded-Actor", "u_mallory")
        .header("X-Forwarded-User", "u_mallory")
        .header("X-Auth-Request-User", "u_mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(spoofed.status(), StatusCode::OK);
    let cache_control: Vec<_> = spoofed.headers().get_all("cache-control").iter().collect();
    assert_eq!(cache_control, ["public, max-age=600, s-maxage=3600", "private"]);
    // No renewal here: no cookie is set, and the literal placeholders of the example's matchers never leak.
    assert!(spoofed.headers().get("set-cookie").is_none(), "{:?}", spoofed.headers());
    let seen = upstream.last();
    assert_eq!(seen.header("x-forwarded-user"), Some("u_alice0001"));
    assert_eq!(seen.header_count("x-forwarded-user"), 1);
    assert_eq!(seen.header("x-auth-request-user"), Some("u_alice0001"));
    assert_eq!(seen.header("x-forwarded-machine"), None);
    assert_eq!(seen.header("x-forwarded-actor"), None);
    assert_eq!(seen.header("authorization"), None);
    let cdn = b
        .client
        .get(format!("{}/cdn-cacheable", caddy.url()))
        .send()
        .await
        .unwrap();
    for targeted in CACHE_TARGETED_FIELDS {
        assert!(cdn.headers().get(targeted).is_none(), "{targeted}");
    }
    // A form POST passes with its body (forward_auth asks with a GET and leaves the body to the app).
    let posted = b
        .client
        .post(format!("{}/upload", caddy.url()))
        .body(vec![7u8; 100_000])
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), StatusCode::OK);
    let counted: serde_json::Value = posted.json().await.unwrap();
    assert_eq!(counted["bytes"], 100_000);

    // A WebSocket with the session's cookies is asked about like any request, and tunnels.
    let mut request = format!("ws://127.0.0.1:{}/ws", caddy.port)
        .into_client_request()
        .unwrap();
    let cookies = b.gate_cookies(&caddy.url());
    request.headers_mut().insert("cookie", cookies.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("a tunnel through Caddy");
    ws.send(Message::text("through caddy")).await.unwrap();
    let echoed = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next()).await;
    assert!(matches!(echoed, Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "through caddy"));
    assert_eq!(upstream.last().header("x-forwarded-user"), Some("u_alice0001"));
    // Without the cookies, the handshake is refused before the app.
    let request = format!("ws://127.0.0.1:{}/ws", caddy.port)
        .into_client_request()
        .unwrap();
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 401),
        other => panic!("a tunnel without a session: {:?}", other.map(|(_, r)| r.status())),
    }

    // Bob is signed in but not an admin: 403 through Caddy.
    let bob = Browser::new(&idp);
    bob.login_as("bob");
    let (_, resp) = bob.navigate(&format!("{}/", caddy.url())).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let admin = bob.client.get(format!("{}/admin", caddy.url())).send().await.unwrap();
    assert_eq!(admin.status(), StatusCode::FORBIDDEN);

    // Alice signs out through Caddy: the copy of her session cookie another client kept opens nothing after.
    let kept = b.gate_cookies(&caddy.url());
    assert_eq!(
        b.get(format!("{}/_logto/sign-out", caddy.url())).await.status(),
        StatusCode::FOUND
    );
    let replayed = plain()
        .get(format!("{}/reports", caddy.url()))
        .header("cookie", kept)
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), StatusCode::UNAUTHORIZED);
    drop(caddy);
}

/// Behind Caddy's `forward_auth` the gate renews a cookie session in its answer, and the shipped Caddyfile hands
/// every new cookie to the browser (Caddy passes none of an allowing answer's fields to the client on its own): with
/// refresh tokens Logto rotates at every use, the browser must hold the new ones, or its next refresh sends the
/// consumed one and Logto ends the grant. A session large enough to be cut into several cookies.
#[tokio::test]
async fn a_session_of_several_cookies_renewed_behind_caddy_reaches_the_browser() {
    let options = IdpOptions {
        access_token_ttl: Some(4),
        refresh_tokens_aged: true,
        ..Default::default()
    };
    // A member of 400 organizations, which a rule reads: their ids make a session of several cookies.
    let extra = format!("{RULES}\n[[rules]]\nprefix = \"/team\"\norganizations = [\"org_team\"]\n");
    let Some((idp, upstream, _gate, caddy)) = behind_the_shipped_caddy(options, "", &extra, |t| t).await else {
        return;
    };
    let b = Browser::new(&idp);
    idp.add_member_of_400_organizations();
    b.login_as("carol");
    let (hops, resp) = b.navigate(&format!("{}/", caddy.url())).await;
    assert_eq!(resp.status(), StatusCode::OK, "{hops:#?}\n{}", caddy.log());
    assert!(b.gate_cookies(&caddy.url()).contains("logto_gate.2="));
    renewed_twice(&idp, &b, &upstream, &caddy.url()).await;
}

/// The app behind the shipped Caddyfile gets the `Authorization` the gate would send, even where that is none:
/// with `upstream.pass_access_token` a session's access token in place of the browser's `Basic`; with
/// `upstream.protected_app` (whose credentials never go into an answer) no client's field at all, where Caddy's
/// `copy_headers` would have left the client's own.
#[tokio::test]
async fn the_shipped_caddyfile_passes_on_the_authorization_the_gate_would_send() {
    let Some((idp, upstream, _gate, caddy)) = behind_the_shipped_caddy(
        IdpOptions::default(),
        "",
        RULES,
        in_upstream("pass_access_token = true"),
    )
    .await
    else {
        return;
    };
    the_session_token_reaches_the_app(&idp, &upstream, &caddy.url(), || caddy.log()).await;
    drop((idp, upstream, caddy));

    let Some((_idp, upstream, _gate, caddy)) =
        behind_the_shipped_caddy(IdpOptions::default(), "", RULES, in_upstream("protected_app = true")).await
    else {
        return;
    };
    let public = get_authorized(&plain(), &format!("{}/public/x", caddy.url()), BASIC, &[]).await;
    assert_eq!(public.status(), StatusCode::OK, "{}", caddy.log());
    let seen = upstream.last();
    assert_eq!(seen.path, "/public/x");
    assert_eq!(seen.header("authorization"), None);
}

/// Rules on the client's address (`client_ips`) through the shipped Caddyfile: Caddy replaces a client's
/// `X-Forwarded-For` with the address it sees (the client is no proxy Caddy trusts), so the gate rules on that one.
#[tokio::test]
async fn a_client_claims_no_other_address_through_the_shipped_caddyfile() {
    let rules = format!("{RULES}{ADDRESS_RULES}");
    let Some((_idp, upstream, _gate, caddy)) = behind_the_shipped_caddy(IdpOptions::default(), "", &rules, |t| t).await
    else {
        return;
    };
    claims_no_other_address(&caddy.url(), &upstream).await;
}
