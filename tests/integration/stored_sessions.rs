//! Sessions kept in Redis (`session.store = "redis"`) are sealed with the session secret, as the cookie is, and bound
//! to the key they are stored under: whoever reads Redis (a dump, a backup, a shared instance, the app's container,
//! which the Kubernetes example's NetworkPolicy lets reach it) learns no token or claim, and whoever can write it
//! cannot give one browser's session to another.

use reqwest::StatusCode;

use crate::support::idp::{Idp, IdpOptions};
use crate::support::redis::Redis;
use crate::support::upstream::Upstream;
use crate::support::*;

/// The session lines of a gate keeping its sessions in `redis` under the prefix `t:`, sealing with the first of
/// `secrets` (a TOML array).
fn in_redis(redis: &Redis, secrets: &'static str) -> impl FnOnce(String) -> String + Clone {
    let lines = format!(
        "[session]\nstore = \"redis\"\nredis_url = \"{}\"\nredis_key_prefix = \"t:\"\n",
        redis.url()
    );
    move |t: String| {
        t.replacen("[session]\n", &lines, 1).replace(
            &format!("secret = \"{SESSION_SECRET}\""),
            &format!("secrets = {secrets}"),
        )
    }
}

/// A gate keeping its sessions in `redis`, sealing with the first of `secrets`, ready; the one registered at the IdP
/// (whose callback the sign-ins use) when `register`.
async fn gate_on(redis: &Redis, idp: &Idp, upstream: &Upstream, secrets: &'static str, register: bool) -> TestGate {
    let gate = TestGate::start_unready(
        &idp.endpoint(),
        &upstream.url(),
        "",
        "",
        in_redis(redis, secrets),
        |public| {
            if register {
                idp.register_client(APP_ID, APP_SECRET, public);
            }
        },
    )
    .await;
    gate.wait_ready().await;
    gate
}

/// A fresh Redis, IdP and app; `None` (the test says what to install) without redis-server.
async fn redis_idp_and_app() -> Option<(Redis, Idp, Upstream)> {
    if !have_redis() {
        return None;
    }
    Some((
        Redis::start().await,
        Idp::start(IdpOptions::default()),
        Upstream::start().await,
    ))
}

/// The session keys in `redis`, sorted.
fn session_keys(redis: &Redis) -> Vec<String> {
    let mut keys: Vec<String> = redis
        .cli(&["--raw", "keys", "t:session:*"])
        .lines()
        .map(str::to_owned)
        .filter(|k| !k.is_empty())
        .collect();
    keys.sort();
    keys
}

fn stored(redis: &Redis, key: &str) -> String {
    redis.cli(&["--raw", "get", key]).trim_end().to_owned()
}

/// The only session key `redis` holds besides `known`.
fn new_session_key(redis: &Redis, known: &[String]) -> String {
    let fresh: Vec<String> = session_keys(redis).into_iter().filter(|k| !known.contains(k)).collect();
    assert_eq!(fresh.len(), 1, "one new session in Redis: {fresh:?}");
    fresh[0].clone()
}

const ONLY_OLD: &str = r#"["an-example-session-secret-of-at-least-32-bytes"]"#;
const ROTATED: &str =
    r#"["the-new-session-secret-after-rotation-0123456789", "an-example-session-secret-of-at-least-32-bytes"]"#;
const ONLY_NEW: &str = r#"["the-new-session-secret-after-rotation-0123456789"]"#;

/// What Redis holds names no one and carries no token, and a session copied under another browser's key (an
/// attacker who can write Redis and has a session of their own) is no session there: bob is not served as alice.
#[tokio::test]
async fn a_session_in_redis_is_sealed_and_bound_to_its_key() {
    let Some((redis, idp, upstream)) = redis_idp_and_app().await else {
        return;
    };
    let gate = gate_on(&redis, &idp, &upstream, ONLY_OLD, true).await;

    let alice = Browser::new(&idp);
    alice.sign_in(&gate, "/").await;
    let alice_key = new_session_key(&redis, &[]);
    let bob = Browser::new(&idp);
    bob.login_as("bob");
    bob.sign_in(&gate, "/").await;
    let bob_key = new_session_key(&redis, std::slice::from_ref(&alice_key));
    assert_eq!(upstream.last().header("x-forwarded-user"), Some("u_bob000002"));

    for (key, sub) in [(&alice_key, "u_alice0001"), (&bob_key, "u_bob000002")] {
        let value = stored(&redis, key);
        assert!(value.len() > 100, "{key} holds the session: {value}");
        assert!(
            serde_json::from_str::<serde_json::Value>(&value).is_err(),
            "{key} is not readable JSON: {value}"
        );
        for secret in [
            sub,
            "alice@example.com",
            "bob@example.com",
            "access_token",
            "refresh_token",
            "\"rt\":",
        ] {
            assert!(!value.contains(secret), "{key} shows `{secret}`: {value}");
        }
    }

    // Bob, able to write Redis, puts alice's session under his own key.
    let alices = stored(&redis, &alice_key);
    assert_eq!(redis.cli(&["set", &bob_key, &alices, "KEEPTTL"]).trim(), "OK");
    let seen = upstream.count();
    let status = status_with_cookie(&format!("{}/as-alice", gate.url()), &bob.gate_cookies(&gate.url())).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "bob's cookie with alice's session is signed out"
    );
    assert_eq!(upstream.count(), seen, "nothing reached the app");
    // Or writes a session of his own making, as an earlier build stored them: an admin's roles, unsealed.
    let t = now();
    let forged = serde_json::json!({
        "claims": {"sub": "u_bob000002", "roles": ["admin"], "scope": "openid profile offline_access email roles"},
        "iat": t, "exp": t + 3600, "at_exp": t + 3600, "seen": t, "refresh_at": t + 3000, "serial": "forged0000000000",
    });
    assert_eq!(
        redis.cli(&["set", &bob_key, &forged.to_string(), "KEEPTTL"]).trim(),
        "OK"
    );
    let status = status_with_cookie(&format!("{}/as-admin", gate.url()), &bob.gate_cookies(&gate.url())).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a session written into Redis is no session"
    );
    assert_eq!(upstream.count(), seen, "nothing reached the app");
    // Alice's own session is untouched.
    let status = status_with_cookie(&format!("{}/mine", gate.url()), &alice.gate_cookies(&gate.url())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(upstream.last().header("x-forwarded-user"), Some("u_alice0001"));
}

/// A secret rotation (the new secret first, the old one second) reseals the session in Redis along with its cookie,
/// so that once the old secret is gone the session still opens: nobody is signed out by a rotation.
#[tokio::test]
async fn rotating_the_session_secret_reseals_the_sessions_in_redis() {
    let Some((redis, idp, upstream)) = redis_idp_and_app().await else {
        return;
    };
    let old = gate_on(&redis, &idp, &upstream, ONLY_OLD, true).await;
    let b = Browser::new(&idp);
    b.sign_in(&old, "/").await;
    let key = new_session_key(&redis, &[]);
    let sealed_by_old = stored(&redis, &key);
    let cookie = b.gate_cookies(&old.url());

    let rotated = gate_on(&redis, &idp, &upstream, ROTATED, false).await;
    let r = plain()
        .get(format!("{}/rotated", rotated.url()))
        .header("cookie", &cookie)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "what the old secret sealed still opens");
    let resealed = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .find(|v| v.starts_with("logto_gate="))
        .expect("the cookie is resealed with the new secret");
    assert_ne!(
        stored(&redis, &key),
        sealed_by_old,
        "the stored session is resealed too"
    );

    let new = gate_on(&redis, &idp, &upstream, ONLY_NEW, false).await;
    let status = status_with_cookie(&format!("{}/new", new.url()), &resealed).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the old secret gone, the resealed session opens"
    );
    assert_eq!(upstream.last().header("x-forwarded-user"), Some("u_alice0001"));
    let status = status_with_cookie(&format!("{}/new", new.url()), &cookie).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the cookie the old secret sealed does not"
    );
}
