//! Logto's signing keys: ES384 by default, RS256 after a rotation to RSA, picked up without a restart.

use reqwest::StatusCode;

use crate::support::*;

#[tokio::test]
async fn default_es384_id_tokens_are_accepted() {
    let s = Stack::start().await;
    let jwks = s.idp.jwks();
    assert_eq!(jwks["keys"][0]["kty"], "EC");
    assert_eq!(jwks["keys"][0]["crv"], "P-384");
    s.browser().sign_in(&s.gate, "/").await;
    assert_eq!(s.upstream.last().header("x-forwarded-user"), Some("u_alice0001"));
}

#[tokio::test]
async fn key_rotation_to_rsa_needs_no_restart() {
    let s = Stack::start().await;
    s.browser().sign_in(&s.gate, "/").await;
    let fetches_before = s.idp.stats()["jwks"].as_u64().unwrap();

    s.idp.rotate_keys_to_rsa();
    let jwks = s.idp.jwks();
    assert_eq!(jwks["keys"][0]["kty"], "RSA", "{jwks}");
    assert!(
        jwks["keys"][0].get("alg").is_none(),
        "Logto's rotated RSA key has no alg member"
    );
    assert_eq!(jwks["keys"][1]["kty"], "EC", "the old EC key stays published");

    // The next ID token is RS256 with a kid the gate has not seen: it re-fetches the key set once.
    let b = s.browser();
    b.login_as("bob");
    b.sign_in(&s.gate, "/").await;
    assert_eq!(s.upstream.last().header("x-forwarded-user"), Some("u_bob000002"));
    assert_eq!(
        s.idp.stats()["jwks"].as_u64().unwrap(),
        fetches_before + 2,
        "our fetch and the test's own"
    );

    // Sessions made before the rotation keep working: the hot path needs no key at all.
    let c = s.browser();
    c.sign_in(&s.gate, "/again").await;
}

/// Tokens anyone can send with an unknown `kid` (bearer tokens, logout tokens) spend a re-fetch budget of their own:
/// one fetch per cooldown, however many arrive. They can never hold back a sign-in: an ID token from the token
/// endpoint signed with a key Logto just rotated to always gets the key set fetched again.
#[tokio::test]
async fn forged_unknown_kids_cannot_block_sign_ins_after_a_key_rotation() {
    let resource = "https://api.example.com";
    let options = IdpOptions {
        resources: Some(serde_json::json!({ resource: { "scopes": ["read"] } })),
        ..Default::default()
    };
    let s = Stack::edited(options, &format!("resources = [\"{resource}\"]"), "", |t| t).await;
    let fetches = || s.idp.stats()["jwks"].as_u64().unwrap();
    let start = fetches();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let forged = |kid: &str| {
        s.idp.sign(
            serde_json::json!({"iss": s.idp.issuer(), "aud": resource, "sub": "x", "iat": now, "exp": now + 300}),
            serde_json::json!({"kid": kid}),
        )
    };
    let attack = |token: String| {
        let url = format!("{}/api", s.gate.url());
        async move {
            plain()
                .get(url)
                .header("authorization", format!("Bearer {token}"))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // The attacker spends the untrusted budget: one re-fetch, then none for the cooldown.
    assert_eq!(attack(forged("attacker-1")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(fetches(), start + 1, "the first unknown kid re-fetches once");
    let logout = s.idp.sign(
        serde_json::json!({"iss": s.idp.issuer(), "aud": APP_ID, "iat": now, "jti": "j", "sub": "u",
                           "events": {"http://schemas.openid.net/event/backchannel-logout": {}}}),
        serde_json::json!({"kid": "attacker-2", "typ": "logout+jwt"}),
    );
    let posted = plain()
        .post(format!("{}/_logto/backchannel-logout", s.gate.url()))
        .form(&[("logout_token", logout)])
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), StatusCode::BAD_REQUEST);
    assert_eq!(attack(forged("attacker-3")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(fetches(), start + 1, "no further re-fetch within the cooldown");

    // Logto rotates its keys now: the next sign-in's ID token has a kid the gate has not seen, and succeeds.
    s.idp.rotate_keys_to_rsa();
    let b = s.browser();
    b.sign_in(&s.gate, "/").await;
    assert_eq!(fetches(), start + 2, "the sign-in re-fetched the key set");
    // And again, within the untrusted cooldown: sign-ins are never refused for a key Logto has.
    s.idp.rotate_keys("ec256");
    let b = s.browser();
    b.login_as("bob");
    b.sign_in(&s.gate, "/").await;
    assert_eq!(s.upstream.last().header("x-forwarded-user"), Some("u_bob000002"));
}

#[tokio::test]
async fn es256_and_ps256_id_tokens_are_accepted_too() {
    for (kind, kty) in [("ec256", "EC"), ("ps256", "RSA")] {
        let idp = Idp::start(IdpOptions::default());
        idp.rotate_keys(kind);
        assert_eq!(idp.jwks()["keys"][0]["kty"], kty);
        let upstream = Upstream::start().await;
        // The gate starts after the rotation: the new key is known from the start.
        let gate = TestGate::start(&idp, &upstream.url(), "", "").await;
        Browser::new(&idp).sign_in(&gate, "/").await;
        assert_eq!(
            upstream.last().header("x-forwarded-user"),
            Some("u_alice0001"),
            "{kind}"
        );
        let want = if kind == "ec256" { "ES256" } else { "PS256" };
        assert_eq!(idp.stats()["last_id_token_header"]["alg"], want);
    }
}

/// The key set is fetched again on its own schedule, as Logto's `Cache-Control: max-age` says (bounded below by
/// 10 s): a rotation is picked up before any token needs the new key.
#[tokio::test]
async fn the_key_set_is_refreshed_on_the_schedule_logto_gives() {
    let options = IdpOptions {
        jwks_max_age: Some(2),
        ..Default::default()
    };
    let s = Stack::edited(options, "", "", |t| t).await;
    let fetches = || s.idp.stats()["jwks"].as_u64().unwrap();
    s.idp.rotate_keys_to_rsa();
    // Counted after the rotation, so the fetch waited for is one that saw the new key.
    let rotated = fetches();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(25);
    while fetches() == rotated {
        assert!(tokio::time::Instant::now() < deadline, "no scheduled fetch within 25 s");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // The new key is known now: the sign-in needs no fetch of its own.
    let before = fetches();
    s.browser().sign_in(&s.gate, "/").await;
    assert_eq!(fetches(), before, "the rotation was picked up before the sign-in");
}
