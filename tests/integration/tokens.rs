//! Forged and replayed credentials over real sockets: ID tokens forged every known way, tampered or foreign
//! session cookies, forged state, replayed codes, another issuer's callback (RFC 9207). Each leaves no session.

use reqwest::{StatusCode, Url};
use serde_json::{json, Value};

use crate::support::*;

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
    id_token_typed_as_an_access_token => ("typed-at+jwt", json!({})),
}

/// Walks a sign-in up to (not including) the gate's callback; returns the callback URL and the attempt cookie.
async fn until_callback(s: &Stack, b: &Browser, path: &str) -> (String, String) {
    let start = b
        .client
        .get(format!("{}{path}", s.gate.url()))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), StatusCode::FOUND);
    let attempt = start.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let mut url: Url = start.headers()["location"].to_str().unwrap().parse().unwrap();
    for _ in 0..20 {
        if url.as_str().starts_with(&format!("{}/_logto/callback", s.gate.url())) {
            return (url.to_string(), attempt);
        }
        let r = b
            .client
            .get(url.clone())
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        let loc = r.headers()["location"].to_str().unwrap().to_owned();
        url = url.join(&loc).unwrap();
    }
    panic!("never reached the callback");
}

/// Opened sessions are cached per worker by their exact cookie value, hashed by its last 32 bytes only. Forged
/// cookies that share a cached cookie's tail (so its hash) must miss the cache and fail to open.
#[tokio::test]
async fn cookies_sharing_a_cached_cookies_tail_are_not_served_from_the_cache() {
    // One worker: the forged cookies meet the very cache the good one is in.
    let s = Stack::edited(IdpOptions::default(), "", "", in_server("workers = 1")).await;
    let (_, good) = s.signed_in().await;
    let get = |cookie: String| {
        plain()
            .get(format!("{}/api", s.gate.url()))
            .header("cookie", format!("logto_gate={cookie}"))
            .send()
    };
    assert_eq!(
        get(good.clone()).await.unwrap().status(),
        StatusCode::OK,
        "the good cookie is cached"
    );
    let flip = |at: usize| {
        let mut bytes = good.clone().into_bytes();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        String::from_utf8(bytes).unwrap()
    };
    let before = s.upstream.count();
    for forged in [flip(0), flip(good.len() / 2), format!("A{good}"), good[1..].to_owned()] {
        assert_eq!(forged[forged.len() - 32..], good[good.len() - 32..]);
        let status = get(forged.clone()).await.unwrap().status();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "forged cookie {:.12}...", forged);
    }
    assert_eq!(s.upstream.count(), before, "no forged cookie reached the app");
    assert_eq!(get(good).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn tampered_truncated_or_foreign_cookies_are_treated_as_signed_out() {
    let s = Stack::start().await;
    let (_, good) = s.signed_in().await;
    let mut flipped = good.clone().into_bytes();
    let i = flipped.len() / 2;
    flipped[i] = if flipped[i] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    // A cookie sealed by another gate (another secret) for the same name.
    let other = TestGate::start_edited(&s.idp, &s.upstream.url(), "", "", |t| {
        t.replace(SESSION_SECRET, "another-gate-with-another-session-secret-0123")
    })
    .await;
    let ob = s.browser();
    ob.sign_in(&other, "/").await;
    let foreign = ob.cookie(&other.url(), "logto_gate").unwrap();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let before = s.upstream.count();
    for bad in [
        flipped.as_str(),
        &good[..good.len() - 10],
        "",
        "x",
        "%00",
        foreign.as_str(),
        &"A".repeat(5000),
    ] {
        let api = client
            .get(format!("{}/api", s.gate.url()))
            .header("cookie", format!("logto_gate={bad}"))
            .send()
            .await
            .unwrap();
        assert_eq!(api.status(), StatusCode::UNAUTHORIZED, "cookie {bad:.20}");
        let nav = client
            .get(format!("{}/page", s.gate.url()))
            .header("cookie", format!("logto_gate={bad}"))
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(
            nav.status(),
            StatusCode::FOUND,
            "a browser is sent to sign in, never a 500"
        );
    }
    assert_eq!(s.upstream.count(), before);
    // The session value moved into another cookie name does not open either.
    let moved = client
        .get(format!("{}/_logto/userinfo", s.gate.url()))
        .header(
            "cookie",
            format!("other={good}; logto_gate_signin_xxxxxxxxxxxxxxxx={good}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn forged_or_unknown_state_is_refused_without_calling_logto() {
    let s = Stack::start().await;
    let b = s.browser();
    let forged = "A".repeat(43);
    for query in [
        format!("code=abc&state={forged}&iss={}", s.idp.issuer()),
        "code=abc".to_owned(),
        "code=abc&state=short".to_owned(),
        format!("code=abc&state={forged}&state={forged}"),
        format!("error=access_denied&error_description=%3Cscript%3Ealert(1)%3C%2Fscript%3E&state={forged}"),
    ] {
        let resp = b
            .client
            .get(format!("{}/_logto/callback?{query}", s.gate.url()))
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{query}");
        let body = resp.text().await.unwrap();
        assert!(!body.contains("<script>"), "nothing from the query is echoed: {body}");
    }
    assert!(
        s.idp.stats()["grants"].as_object().unwrap().is_empty(),
        "the token endpoint was never called"
    );
    // A real attempt's state from one browser is useless in another browser (no attempt cookie there).
    let (callback, _) = until_callback(&s, &b, "/").await;
    let thief = s.browser();
    let resp = thief.client.get(&callback).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(s.upstream.count(), 0);
}

/// A signed-in browser that comes back to a callback whose attempt is gone (Back into a finished sign-in, a second
/// tab finishing after the first) lands on the app rather than on "Sign-in expired", and its code is not used; a
/// browser without a session still gets the error page.
#[tokio::test]
async fn a_stale_callback_in_a_signed_in_browser_goes_to_the_app() {
    let s = Stack::start().await;
    let b = s.browser();
    let (callback, _) = until_callback(&s, &b, "/first").await;
    let done = b.client.get(&callback).send().await.unwrap();
    assert_eq!(done.status(), StatusCode::FOUND);
    assert_eq!(done.headers()["location"], format!("{}/first", s.gate.url()));
    let exchanges = || s.idp.stats()["token_requests"].as_array().map(Vec::len);
    let before = exchanges();
    assert!(before.is_some_and(|n| n > 0));

    let back_to = |client: &reqwest::Client| client.get(&callback).header("accept", "text/html").send();
    let again = back_to(&b.client).await.unwrap();
    assert_eq!(again.status(), StatusCode::FOUND);
    assert_eq!(again.headers()["location"], format!("{}/", s.gate.url()));
    assert_eq!(exchanges(), before, "the code was not exchanged again");

    let refused = back_to(&s.browser().client).await.unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert!(refused.text().await.unwrap().contains("Sign-in expired"));
}

#[tokio::test]
async fn a_replayed_authorization_code_is_refused() {
    let s = Stack::start().await;
    let b = s.browser();
    let (callback, attempt) = until_callback(&s, &b, "/").await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let first = client.get(&callback).header("cookie", &attempt).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::FOUND);
    // The attempt cookie is cleared by the first callback; replay it anyway, as an attacker holding it would.
    let cleared = first
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|v| v.to_str().unwrap().contains("Max-Age=0"));
    assert!(cleared, "the attempt cookie is cleared after use");
    let replay = client
        .get(&callback)
        .header("cookie", &attempt)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    let v: Value = replay.json().await.unwrap();
    assert_eq!(v["error"], "invalid_grant");
    assert_eq!(
        s.idp.stats()["grants"]["authorization_code_error"],
        1,
        "Logto refused the second use"
    );
}

#[tokio::test]
async fn a_callback_naming_another_issuer_is_refused_rfc9207() {
    let s = Stack::start().await;
    let b = s.browser();
    let (callback, attempt) = until_callback(&s, &b, "/").await;
    let url: Url = callback.parse().unwrap();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for iss in [Some("https://evil.example/oidc"), None] {
        let mut bad = url.clone();
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().filter(|(k, _)| k != "iss").collect();
        {
            let mut q = bad.query_pairs_mut();
            q.clear();
            for (k, v) in &pairs {
                q.append_pair(k, v);
            }
            if let Some(i) = iss {
                q.append_pair("iss", i);
            }
        }
        let resp = client
            .get(bad.as_str())
            .header("cookie", &attempt)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "iss={iss:?}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"], "issuer_mismatch");
    }
    assert!(
        s.idp.stats()["grants"].as_object().unwrap().is_empty(),
        "the code was never sent anywhere"
    );
}
