//! The signed identity assertion, verified the way an upstream would: with the gate's published key set.

use logto_gate::oidc::jwt::{check_common, UnverifiedJwt};
use openidconnect::core::CoreJsonWebKeySet;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::*;

const ASSERTION: &str = "[assertion]\nenabled = true\naudience = \"sample-app\"\nlifetime = \"2m\"\n";

async fn jwks(gate: &TestGate) -> CoreJsonWebKeySet {
    let resp = reqwest::get(format!("{}/_logto/jwks.json", gate.url())).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/jwk-set+json");
    resp.json().await.unwrap()
}

#[tokio::test]
async fn upstream_verifies_the_assertion_with_the_published_keys() {
    let s = Stack::with(
        "",
        &format!("{ASSERTION}\n[[rules]]\nprefix = \"/public\"\nallow = \"public\"\n"),
    )
    .await;
    let b = s.browser();
    b.sign_in(&s.gate, "/").await;
    b.client
        .get(format!("{}/private", s.gate.url()))
        .header("X-Logto-Gate-Assertion", "forged.by.client")
        .send()
        .await
        .unwrap();
    let seen = s.upstream.last();
    assert_eq!(seen.header_count("x-logto-gate-assertion"), 1);
    let token = seen.header("x-logto-gate-assertion").unwrap().to_owned();
    // What an upstream does: fetch the key set, check signature, issuer, audience, expiry.
    let keys = jwks(&s.gate).await;
    let claims = UnverifiedJwt::parse(&token)
        .unwrap()
        .verify(&keys)
        .expect("signature verifies");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    check_common(&claims, &s.gate.url(), now).expect("iss and exp hold");
    assert_eq!(claims["aud"], "sample-app");
    assert_eq!(claims["sub"], "u_alice0001");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["username"], "alice");
    assert_eq!(claims["roles"], json!(["admin", "editor"]));
    assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 120);
    // The sign-in asked no max_age, so Logto did not say when it happened; after one that did, the app is told.
    assert!(claims.get("auth_time").is_none(), "{claims:?}");
    let again = format!("{}/_logto/sign-in?redirect=/private&max_age=0", s.gate.url());
    let (hops, resp) = b.navigate(&again).await;
    assert_eq!(resp.status(), StatusCode::OK, "{hops:#?}");
    let fresh = s.upstream.last().header("x-logto-gate-assertion").unwrap().to_owned();
    let fresh = UnverifiedJwt::parse(&fresh).unwrap().verify(&keys).unwrap();
    let auth_time = fresh["auth_time"].as_u64().expect("auth_time");
    assert!((now - 5..=now + 60).contains(&auth_time), "{auth_time} vs {now}");
    // A tampered assertion does not verify.
    let mut parts: Vec<&str> = token.split('.').collect();
    let forged_payload = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        json!({"sub": "u_bob000002", "aud": "sample-app"}).to_string(),
    );
    parts[1] = &forged_payload;
    assert!(UnverifiedJwt::parse(&parts.join(".")).unwrap().verify(&keys).is_err());
    // Public routes carry none, and a client's copy is removed.
    reqwest::Client::new()
        .get(format!("{}/public/x", s.gate.url()))
        .header("X-Logto-Gate-Assertion", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(s.upstream.last().header("x-logto-gate-assertion"), None);
}

#[tokio::test]
async fn replicas_sharing_a_key_file_publish_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 =
        ring::signature::EcdsaKeyPair::generate_pkcs8(&ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pkcs8.as_ref());
    let pem = format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n");
    let file = dir.path().join("assertion.pem");
    std::fs::write(&file, pem).unwrap();
    let config = format!("{ASSERTION}signing_key_file = {:?}\n", file.display().to_string());
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let one = TestGate::start(&idp, &upstream.url(), "", &config).await;
    let two = TestGate::start(&idp, &upstream.url(), "", &config).await;
    let (k1, k2): (Value, Value) = (
        serde_json::to_value(jwks(&one).await).unwrap(),
        serde_json::to_value(jwks(&two).await).unwrap(),
    );
    assert_eq!(k1, k2);
    // Without the assertion enabled there is no key set to fetch.
    let plain = TestGate::start(&idp, &upstream.url(), "", "").await;
    assert_eq!(
        reqwest::get(format!("{}/_logto/jwks.json", plain.url()))
            .await
            .unwrap()
            .status(),
        404
    );
}

/// An email Logto marks unverified (`email_verified: false`) is never passed on: not as `X-Forwarded-Email`, not in
/// the forward-auth answer's `X-Auth-Request-Email`, not in the assertion. An app that keys its accounts by email
/// (Grafana's auth proxy with `header_property = email`, many legacy apps) would otherwise take the word of anyone
/// who typed someone else's address. A verified email passes as before.
#[tokio::test]
async fn an_unverified_email_is_never_passed_on() {
    let s = Stack::with("", ASSERTION).await;
    let keys = jwks(&s.gate).await;
    for (user, email) in [("alice", Some("alice@example.com")), ("bob", None)] {
        let b = s.browser();
        b.login_as(user);
        b.sign_in(&s.gate, "/").await;
        b.get(format!("{}/whoami", s.gate.url())).await;
        let seen = s.upstream.last();
        assert!(seen.header("x-forwarded-user").is_some(), "{user} is signed in");
        assert_eq!(seen.header("x-forwarded-email"), email, "{user}");
        let token = seen.header("x-logto-gate-assertion").unwrap().to_owned();
        let claims = UnverifiedJwt::parse(&token).unwrap().verify(&keys).unwrap();
        assert_eq!(claims.get("email").and_then(Value::as_str), email, "{user}");

        let auth = b.get(format!("{}/_logto/auth", s.gate.url())).await;
        assert_eq!(auth.status(), StatusCode::ACCEPTED);
        let header = |name: &str| auth.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
        assert!(header("x-auth-request-user").is_some());
        assert_eq!(header("x-auth-request-email").as_deref(), email, "{user}");
        assert_eq!(header("x-forwarded-email").as_deref(), email, "{user}");
    }
}
