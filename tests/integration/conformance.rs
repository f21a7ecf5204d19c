//! OpenID Connect relying-party conformance against a misbehaving provider (`tests/idp/rogue.mjs`): the cases of
//! the OpenID RP certification test plan that apply to a confidential code-flow client (Basic and Config
//! profiles), plus RFC 9207. Every test runs the real sign-in flow: browser navigation → gate → provider →
//! callback → a session (the request reaches the app as the provider's user) or a refusal (no session, nothing
//! reaches the app). Tests are named after the certification test they mirror where there is one.

use std::io::Read;

use reqwest::StatusCode;

use crate::support::rogue::{RogueIdp, ROGUE_SUBJECT};
use crate::support::*;

/// The gate in front of the provider. Every case also reads a claim only userinfo has (`custom_data`), so the
/// userinfo request and its `sub` check run in every sign-in.
async fn gate_for(rogue: &RogueIdp, upstream: &Upstream) -> TestGate {
    TestGate::start_unready(
        &rogue.endpoint(),
        &upstream.url(),
        "",
        "[headers]\n\"X-Forwarded-User\" = \"sub\"\n\"X-Team\" = \"custom_data.team\"\n",
        |t| t,
        |_| {},
    )
    .await
}

/// Signs in through the gate with `case` and says whether the gate accepted it: on acceptance the request reached
/// the app as the provider's user with its userinfo claim; on refusal the browser got `refused_with` and neither a
/// session nor a forwarded request.
async fn sign_in_with(case: &str, refused_with: Option<StatusCode>) -> RogueIdp {
    let rogue = RogueIdp::start(case);
    let upstream = Upstream::start().await;
    let gate = gate_for(&rogue, &upstream).await;
    gate.wait_ready().await;
    sign_in_through(&rogue, &upstream, &gate, case, refused_with).await;
    rogue
}

async fn sign_in_through(
    rogue: &RogueIdp,
    upstream: &Upstream,
    gate: &TestGate,
    case: &str,
    refused_with: Option<StatusCode>,
) {
    let browser = Browser::for_endpoint(rogue.endpoint());
    let (hops, resp) = browser.navigate(&format!("{}/private", gate.url())).await;
    assert!(
        hops.iter()
            .any(|h| h.url.starts_with(&format!("{}/_logto/callback", gate.url()))),
        "{case}: the flow did not come back to the callback: {hops:#?}"
    );
    match refused_with {
        None => {
            assert_eq!(resp.status(), StatusCode::OK, "{case}: refused: {hops:#?}");
            let seen = upstream.last();
            assert_eq!(seen.path, "/private", "{case}");
            assert_eq!(seen.header("x-forwarded-user"), Some(ROGUE_SUBJECT), "{case}");
            assert_eq!(seen.header("x-team"), Some("rogues"), "{case}: userinfo claims");
            assert!(browser.cookie(&gate.url(), "logto_gate").is_some(), "{case}");
        }
        Some(status) => {
            assert_eq!(resp.status(), status, "{case}: {hops:#?}");
            assert_eq!(upstream.count(), 0, "{case}: a request reached the app");
            assert!(
                browser.cookie(&gate.url(), "logto_gate").is_none(),
                "{case}: a session cookie was set"
            );
        }
    }
}

const REFUSED: Option<StatusCode> = Some(StatusCode::UNAUTHORIZED);
const ACCEPTED: Option<StatusCode> = None;

// ---- Signatures and keys ----

#[tokio::test]
async fn rp_id_token_sig_none() {
    sign_in_with("sig_none", REFUSED).await;
}

#[tokio::test]
async fn rp_id_token_sig_hs256() {
    sign_in_with("sig_hs256", REFUSED).await;
}

#[tokio::test]
async fn rp_id_token_bad_sig_es384() {
    sign_in_with("bad_sig_es384", REFUSED).await;
}

#[tokio::test]
async fn rp_id_token_bad_sig_rs256() {
    sign_in_with("bad_sig_rs256", REFUSED).await;
}

#[tokio::test]
async fn rp_id_token_sig_es384() {
    sign_in_with("valid_es384", ACCEPTED).await;
}

#[tokio::test]
async fn rp_id_token_sig_rs256() {
    sign_in_with("valid_rs256", ACCEPTED).await;
}

#[tokio::test]
async fn rp_id_token_kid_absent_single_jwks() {
    sign_in_with("kid_absent_single", ACCEPTED).await;
}

#[tokio::test]
async fn rp_id_token_kid_absent_multiple_jwks() {
    sign_in_with("kid_absent_multiple", ACCEPTED).await;
}

/// The provider rotates to a new signing key after the gate loaded its key set: the first token signed with it
/// makes the gate fetch the key set again, and the sign-in succeeds.
#[tokio::test]
async fn rp_key_rotation_op_sign_key() {
    let rogue = RogueIdp::start("key_rotation");
    let upstream = Upstream::start().await;
    let gate = gate_for(&rogue, &upstream).await;
    gate.wait_ready().await;
    let fetched = rogue.stats()["jwks"].as_u64().unwrap_or(0);
    assert!(fetched >= 1, "the gate loaded the key set at start");
    rogue.rotate();
    sign_in_through(&rogue, &upstream, &gate, "key_rotation", ACCEPTED).await;
    assert_eq!(rogue.stats()["jwks"].as_u64().unwrap_or(0), fetched + 1);
}

// ---- Required claims (OpenID Connect Core 1.0 §2) ----

#[tokio::test]
async fn rp_id_token_iat() {
    sign_in_with("missing_iat", REFUSED).await;
}

#[tokio::test]
async fn rp_id_token_sub() {
    sign_in_with("missing_sub", REFUSED).await;
}

#[tokio::test]
async fn rp_id_token_iss_missing() {
    sign_in_with("missing_iss", REFUSED).await;
}

#[tokio::test]
async fn rp_id_token_aud_missing() {
    sign_in_with("missing_aud", REFUSED).await;
}

#[tokio::test]
async fn rp_id_token_exp_missing() {
    sign_in_with("missing_exp", REFUSED).await;
}

/// Each refused claim is named in the gate's log line, so an operator can tell which one the provider got wrong.
#[tokio::test]
async fn a_missing_required_claim_is_named_in_the_log() {
    for (case, claim) in [
        ("missing_iat", "iat"),
        ("missing_iss", "iss"),
        ("missing_sub", "sub"),
        ("missing_aud", "aud"),
        ("missing_exp", "exp"),
    ] {
        let rogue = RogueIdp::start(case);
        let upstream = Upstream::start().await;
        let mut gate = BinaryGate::start(
            &rogue.endpoint(),
            &upstream.url(),
            "[headers]\n\"X-Forwarded-User\" = \"sub\"\n",
            |t| t.replace("level = \"warn\"", "level = \"info\"\nformat = \"json\""),
            |_| {},
            &[],
        )
        .await;
        let browser = Browser::for_endpoint(rogue.endpoint());
        let (hops, resp) = browser.navigate(&format!("{}/", gate.url())).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{case}: {hops:#?}");
        let mut log = gate.stop_and_read_log();
        let mut out = String::new();
        if let Some(mut o) = gate.process.child.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        log.push_str(&out);
        let wanted = format!("{claim} is missing");
        assert!(
            log.lines()
                .any(|l| l.contains("ID token was refused") && l.contains(&wanted)),
            "{case}: no log line naming {claim}:\n{log}"
        );
    }
}

// ---- Audience and authorized party ----

#[tokio::test]
async fn rp_id_token_aud() {
    sign_in_with("aud_foreign", REFUSED).await;
}

#[tokio::test]
async fn rp_id_token_azp_foreign() {
    sign_in_with("azp_foreign", REFUSED).await;
}

#[tokio::test]
async fn rp_id_token_aud_multiple_without_azp() {
    sign_in_with("aud_multiple_no_azp", REFUSED).await;
}

#[tokio::test]
async fn rp_id_token_aud_multiple_with_azp() {
    sign_in_with("aud_multiple_with_azp", ACCEPTED).await;
}

// ---- Issuer, nonce, time ----

#[tokio::test]
async fn rp_id_token_issuer_mismatch() {
    sign_in_with("iss_foreign", REFUSED).await;
}

#[tokio::test]
async fn rp_nonce_invalid() {
    sign_in_with("nonce_invalid", REFUSED).await;
}

#[tokio::test]
async fn rp_nonce_missing() {
    sign_in_with("nonce_missing", REFUSED).await;
}

#[tokio::test]
async fn rp_id_token_exp_past() {
    sign_in_with("exp_past", REFUSED).await;
}

#[tokio::test]
async fn rp_id_token_iat_future() {
    sign_in_with("iat_future", REFUSED).await;
}

// ---- Userinfo ----

/// Userinfo answers for another subject: the gate refuses the sign-in (OIDC Core §5.3.4) as a provider fault.
#[tokio::test]
async fn rp_userinfo_bad_sub_claim() {
    let rogue = sign_in_with("userinfo_bad_sub", Some(StatusCode::BAD_GATEWAY)).await;
    assert_eq!(rogue.stats()["userinfo"].as_u64(), Some(1));
}

// ---- RFC 9207: the issuer on the authorization response ----

#[tokio::test]
async fn rfc9207_iss_missing_when_advertised() {
    let rogue = sign_in_with("callback_iss_missing", Some(StatusCode::BAD_REQUEST)).await;
    assert_eq!(rogue.stats()["token"].as_u64(), Some(0), "no code exchange");
}

#[tokio::test]
async fn rfc9207_iss_foreign() {
    let rogue = sign_in_with("callback_iss_foreign", Some(StatusCode::BAD_REQUEST)).await;
    assert_eq!(rogue.stats()["token"].as_u64(), Some(0), "no code exchange");
}

// ---- Discovery ----

/// The discovery document names another issuer: the gate never becomes ready and sends nobody to that provider.
#[tokio::test]
async fn rp_discovery_issuer_not_matching_config() {
    let rogue = RogueIdp::start("discovery_issuer_mismatch");
    let upstream = Upstream::start().await;
    let gate = gate_for(&rogue, &upstream).await;
    let client = plain();
    let ready = client
        .get(format!("{}/_logto/readyz", gate.url()))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let browser = Browser::for_endpoint(rogue.endpoint());
    let (hops, resp) = browser.navigate(&format!("{}/", gate.url())).await;
    assert!(resp.status().is_server_error(), "{hops:#?}");
    assert_eq!(hops.len(), 1, "not sent to the provider: {hops:#?}");
    assert_eq!(rogue.stats()["auth"].as_u64(), Some(0));
    assert_eq!(upstream.count(), 0);
}
