//! `upstream.protected_app`: the gate speaks Logto Cloud's Protected App contract, so an origin written for it runs
//! unchanged behind a self-hosted gate. The origin (tests/idp/protected-origin.mjs) checks the Basic credentials on
//! every request and verifies `Logto-ID-Token` with jose against the IdP's key set (signature, issuer, expiry).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::protected_origin::ProtectedOrigin;
use crate::support::*;

const ID_TOKEN_TTL: u64 = 4;

#[tokio::test]
async fn an_origin_written_for_logtos_protected_app_runs_behind_the_gate() {
    let idp = Idp::start(IdpOptions {
        id_token_ttl: Some(ID_TOKEN_TTL),
        ..Default::default()
    });
    let origin = ProtectedOrigin::start(&idp.issuer(), APP_ID, APP_SECRET);
    let gate = TestGate::start_edited(
        &idp,
        &origin.url(),
        "",
        "[[rules]]\nprefix = \"/public\"\nallow = \"public\"\n",
        in_upstream("protected_app = true"),
    )
    .await;
    let host = format!("127.0.0.1:{}", gate.port);

    // The origin refuses anything that does not come through the gate.
    let direct = plain().get(origin.url()).send().await.unwrap();
    assert_eq!(direct.status(), StatusCode::UNAUTHORIZED);

    // Anonymous on a public route: the Basic credentials and the host, no ID token.
    let anon: Value = plain()
        .get(format!("{}/public/page", gate.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(anon["signed_in"], false, "{anon}");
    assert_eq!(anon["host"], host.as_str());

    // Signed in: the ID token verifies at the origin, whatever the client sent under the contract's names.
    let b = Browser::new(&idp);
    b.sign_in(&gate, "/first").await;
    let call = |path: &'static str| {
        let req = b
            .client
            .get(format!("{}{path}", gate.url()))
            .header("logto-id-token", "forged.token.value")
            .header("Logto_Host", "evil.example")
            .header("logto-host", "evil.example")
            .header("authorization", "Basic ZXZpbDpldmls");
        async move {
            let r = req.send().await.unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, first) = call("/second").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["signed_in"], true, "{first}");
    assert_eq!(first["sub"], "u_alice0001");
    assert!(
        first["sid"].as_str().is_some_and(|sid| !sid.is_empty()),
        "Logto's ID tokens carry sid: {first}"
    );
    assert_eq!(first["host"], host.as_str());
    let first_exp = first["exp"].as_u64().unwrap();

    // Past the first ID token's expiry: the gate renewed it with the refresh token before it lapsed, so the
    // origin still verifies it (an expired token is never sent).
    tokio::time::sleep(Duration::from_secs(ID_TOKEN_TTL + 1)).await;
    let (status, later) = call("/third").await;
    assert_eq!(status, StatusCode::OK, "{later}");
    assert_eq!(later["signed_in"], true, "{later}");
    assert!(
        later["exp"].as_u64().unwrap() > first_exp,
        "a renewed ID token: {later} after {first}"
    );
}

/// The contract's `Authorization: Basic` and the session's access token cannot both be the app's `Authorization`.
#[test]
fn protected_app_and_pass_access_token_are_refused_together() {
    let toml = gate_toml(
        "https://a.example.com",
        "http://127.0.0.1:1",
        "https://t.logto.app",
        "",
        "",
    )
    .replace(
        "[upstream]\n",
        "[upstream]\nprotected_app = true\npass_access_token = true\n",
    );
    let err = logto_gate::Config::from_toml_str(&toml, Vec::new()).expect_err("refused");
    assert!(err.0.iter().any(|l| l.starts_with("upstream.protected_app:")), "{err}");
}
