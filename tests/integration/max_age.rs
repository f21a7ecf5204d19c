//! `max_age` on a rule: a sensitive path needs a sign-in at Logto no older than it (Cloudflare Access's per-app
//! session duration, OIDC's `max_age`, RFC 9470's step-up). An older session is sent to sign in again with
//! `max_age`, which Logto (here oidc-provider, Logto's engine) honours by asking the person again when its own
//! sign-in is older, and says when it happened (`auth_time`).

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

const RULES: &str = r#"
[[rules]]
prefix = "/admin"
max_age = "10m"
"#;

#[tokio::test]
async fn a_sign_in_older_than_a_rules_max_age_is_sent_to_sign_in_again() {
    let s = Stack::with("", RULES).await;
    let alice = s.browser();
    alice.sign_in(&s.gate, "/").await;
    // The first sign-in asked for no max_age, so Logto did not say when it happened: fine for the rest of the app,
    // not for /admin.
    assert_eq!(
        alice.get(format!("{}/page", s.gate.url())).await.status(),
        StatusCode::OK
    );
    let userinfo = alice.get_json(format!("{}/_logto/userinfo", s.gate.url())).await;
    assert!(userinfo.get("auth_time").is_none(), "{userinfo}");
    let before = s.upstream.count();
    let api = alice.get(format!("{}/admin/users", s.gate.url())).await;
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
    let challenge = api.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(
        challenge.contains("error=\"insufficient_user_authentication\"") && challenge.ends_with("max_age=600"),
        "{challenge}"
    );
    let body: Value = api.json().await.unwrap();
    assert_eq!(body["error"], "insufficient_user_authentication");
    assert_eq!(body["max_age"], 600);
    assert!(
        body["sign_in_url"]
            .as_str()
            .unwrap()
            .ends_with("/_logto/sign-in?redirect=%2Fadmin%2Fusers&max_age=600"),
        "{body}"
    );
    assert_eq!(s.upstream.count(), before, "nothing reached the app");

    // A navigation signs in again asking Logto for max_age, and comes back to the page; Logto's own sign-in is
    // recent enough, so it answers without asking the person.
    let logins = || s.idp.stats()["logins"].as_u64().unwrap();
    let before = logins();
    let (hops, resp) = alice.navigate(&format!("{}/admin/users", s.gate.url())).await;
    assert_eq!(resp.status(), StatusCode::OK, "{hops:#?}");
    assert_eq!(s.upstream.last().path, "/admin/users");
    assert_eq!(s.idp.last_authorization_request()["max_age"], "600", "{hops:#?}");
    assert_eq!(logins(), before, "{hops:#?}");
    // The session now says when the person signed in: /admin is served as it is, and a page can read it.
    let again = alice.get(format!("{}/admin/users", s.gate.url())).await;
    assert_eq!(again.status(), StatusCode::OK);
    let userinfo = alice.get_json(format!("{}/_logto/userinfo", s.gate.url())).await;
    let auth_time = userinfo["auth_time"].as_u64().expect("auth_time");
    assert!((now() - 60..=now()).contains(&auth_time), "{userinfo}");

    // A sign-in link to such a page asks for max_age itself (a proxy's after forward-auth, a bookmark).
    let link = plain()
        .get(format!("{}/_logto/sign-in?redirect=/admin", s.gate.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(link.status(), StatusCode::FOUND);
    let location = link.headers()["location"].to_str().unwrap();
    assert!(location.contains("max_age=600"), "{location}");
    // A link asking for a sign-in right now (`max_age=0`, as before showing a secret) has Logto ask again; its ID
    // token comes some seconds after the sign-in (the redirect back, the code exchange: 5 s here), which is allowed.
    s.idp.tamper_next_id_token("resign", json!({ "auth_time": now() - 5 }));
    let (hops, resp) = alice
        .navigate(&format!("{}/_logto/sign-in?redirect=/page&max_age=0", s.gate.url()))
        .await;
    assert_eq!(resp.status(), StatusCode::OK, "{hops:#?}");
    assert_eq!(s.idp.last_authorization_request()["max_age"], "0");
    assert_eq!(logins(), before + 1, "{hops:#?}");
    let elsewhere = plain()
        .get(format!("{}/_logto/sign-in?redirect=/page", s.gate.url()))
        .send()
        .await
        .unwrap();
    assert!(!elsewhere.headers()["location"].to_str().unwrap().contains("max_age"));
}

#[tokio::test]
async fn a_sign_in_logto_says_is_older_than_asked_is_refused_instead_of_looping() {
    let s = Stack::with("", RULES).await;
    let bob = s.browser();
    bob.login_as("bob");
    // Logto says the person signed in two hours before this sign-in: the session may not use /admin ...
    s.idp
        .tamper_next_id_token("resign", json!({ "auth_time": now() - 7200 }));
    bob.sign_in(&s.gate, "/").await;
    let api = bob.get(format!("{}/admin", s.gate.url())).await;
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
    // ... and a Logto that answered the step-up with the same old sign-in would send the person round for ever:
    // the gate refuses that answer with a page that says so.
    s.idp
        .tamper_next_id_token("resign", json!({ "auth_time": now() - 7200 }));
    let (hops, resp) = bob.navigate(&format!("{}/admin", s.gate.url())).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY, "{hops:#?}");
    let page = resp.text().await.unwrap();
    assert!(
        page.contains("asked for a sign-in at most 10 minutes old (max_age), Logto&#39;s ID token signed in ")
            && page.contains("2 hours ago"),
        "{page}"
    );
    // Without the forgery, Logto's own answer passes.
    let (hops, resp) = bob.navigate(&format!("{}/admin", s.gate.url())).await;
    assert_eq!(resp.status(), StatusCode::OK, "{hops:#?}");
}
