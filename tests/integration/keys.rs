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

#[tokio::test]
async fn unknown_kid_refetches_are_rate_limited() {
    let s = Stack::start().await;
    s.idp.rotate_keys_to_rsa();
    s.browser().sign_in(&s.gate, "/").await; // first unknown kid: re-fetch allowed
    let fetches = s.idp.stats()["jwks"].as_u64().unwrap();
    s.idp.rotate_keys_to_rsa();
    // A second unknown kid within the cooldown does not make the gate fetch again; the sign-in is refused.
    let b = s.browser();
    let (hops, resp) = b.navigate(&format!("{}/", s.gate.url())).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{hops:#?}");
    assert!(resp.text().await.unwrap().contains("could not be verified"));
    assert_eq!(
        s.idp.stats()["jwks"].as_u64().unwrap(),
        fetches,
        "no second re-fetch within the cooldown"
    );
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
