use super::*;

#[test]
fn query_parameters_are_encoded() {
    assert_eq!(
        append_query("https://t/oidc/auth", &[("scope", "openid profile"), ("x", "a&b=c")]),
        "https://t/oidc/auth?scope=openid+profile&x=a%26b%3Dc"
    );
    assert_eq!(append_query("https://t/a?b=1", &[("c", "2")]), "https://t/a?b=1&c=2");
}

/// One ES384 public key (no token is verified here; discovery needs a usable key set).
const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-384","kid":"k1","alg":"ES384","use":"sig",
    "x":"FguD_02djkkNu3YTBMus-u-YXNg6DA6u2GwDVlveR5DhTR-E09UU5LJgXuhetKKD",
    "y":"sEbUCb4c1NKBuc8oUiOiPpIJ2ua6IhjViGHOgiGvM6zhr_GAL4W-XH2YG6qPOCiz"}]}"#;

/// A Logto stand-in on a loopback port: discovery, a key set, and `introspection` as the introspection
/// endpoint's answer (status, body); the requests it read go to the returned list.
async fn fake_logto(introspection: Option<(u16, &'static str)>) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    fake_logto_with(introspection, (404, "")).await
}

/// [`fake_logto`] whose token endpoint answers `token` (status, body).
async fn fake_logto_with(
    introspection: Option<(u16, &'static str)>,
    token: (u16, &'static str),
) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (issuer, log) = (format!("{origin}/oidc"), Arc::clone(&seen));
    tokio::spawn(async move {
        while let Ok((mut io, _)) = listener.accept().await {
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // One request per connection: its head, then as many body bytes as it announced.
            while let Ok(n) = io.read(&mut buf).await {
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_lowercase();
                let whole = text.find("\r\n\r\n").is_some_and(|end| {
                    let length = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    request.len() >= end + 4 + length
                });
                if n == 0 || whole {
                    break;
                }
            }
            let text = String::from_utf8_lossy(&request).into_owned();
            let path = text.split(' ').nth(1).unwrap_or("").to_owned();
            log.lock().unwrap().push(text);
            let (status, body) = match path.as_str() {
                "/oidc/.well-known/openid-configuration" => {
                    let mut doc = serde_json::json!({
                        "issuer": issuer, "authorization_endpoint": format!("{issuer}/auth"),
                        "token_endpoint": format!("{issuer}/token"), "jwks_uri": format!("{issuer}/jwks"),
                    });
                    if introspection.is_some() {
                        doc["introspection_endpoint"] = format!("{issuer}/token/introspection").into();
                    }
                    (200, doc.to_string())
                }
                "/oidc/jwks" => (200, JWKS.to_owned()),
                "/oidc/token" => (token.0, token.1.to_owned()),
                "/oidc/token/introspection" => introspection.map_or((404, String::new()), |(s, b)| (s, b.to_owned())),
                _ => (404, String::new()),
            };
            let answer = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = io.write_all(answer.as_bytes()).await;
        }
    });
    (origin, seen)
}

async fn oidc_at(endpoint: &str) -> Oidc {
    let toml = format!(
        "[server]\npublic_url = \"https://app.example.com\"\n[upstream]\nurl = \"http://127.0.0.1:9\"\n\
         [logto]\nendpoint = \"{endpoint}\"\napp_id = \"the-app\"\napp_secret = \"the-secret\"\n\
         [session]\nsecret = \"0123456789abcdef0123456789abcdef\"\n"
    );
    let config = crate::config::Config::from_toml_str(&toml, Vec::new()).unwrap();
    Oidc::new(config.logto, "https://app.example.com/callback".into()).unwrap()
}

/// RFC 7662 §2.2: only `active: true` for this app and this person keeps a grant standing; an answer without a
/// boolean `active`, not JSON, or not a success, is no answer at all (the tunnel stays open and asks again).
#[tokio::test]
async fn a_grant_stands_only_on_an_active_answer_for_this_app_and_person() {
    for (status, body, expected) in [
        (
            200,
            r#"{"active":true,"client_id":"the-app","sub":"u1","scope":"openid"}"#,
            Some(true),
        ),
        (200, r#"{"active":true}"#, Some(true)),
        (200, r#"{"active":false}"#, Some(false)),
        (
            200,
            r#"{"active":true,"client_id":"another-app","sub":"u1"}"#,
            Some(false),
        ),
        (200, r#"{"active":true,"client_id":"the-app","sub":"u2"}"#, Some(false)),
        (200, r#"{"active":true,"sub":7}"#, Some(false)),
        (200, r#"{"active":"true"}"#, None),
        (200, r#"{}"#, None),
        (200, "<html>", None),
        (500, r#"{"active":true}"#, None),
        (401, r#"{"error":"invalid_client"}"#, None),
    ] {
        let (endpoint, seen) = fake_logto(Some((status, body))).await;
        let oidc = oidc_at(&endpoint).await;
        let got = match oidc.grant_stands("the-refresh-token", "u1").await {
            Ok(stands) => Some(stands),
            Err(IntrospectionError::Failed(_)) => None,
            Err(IntrospectionError::Unsupported) => panic!("the endpoint is in discovery"),
        };
        assert_eq!(got, expected, "{status} {body}");
        let asked = seen.lock().unwrap().last().cloned().unwrap_or_default();
        assert!(asked.starts_with("POST /oidc/token/introspection "), "{asked}");
        // client_secret_basic, as at the token endpoint, and the token named as a refresh token.
        assert!(asked.to_lowercase().contains("authorization: basic dgh"), "{asked}");
        assert!(
            asked.ends_with("token=the-refresh-token&token_type_hint=refresh_token"),
            "{asked}"
        );
    }
}

#[tokio::test]
async fn without_an_introspection_endpoint_nobody_is_asked() {
    let (endpoint, seen) = fake_logto(None).await;
    let oidc = oidc_at(&endpoint).await;
    assert!(matches!(
        oidc.grant_stands("t", "u1").await,
        Err(IntrospectionError::Unsupported)
    ));
    assert!(seen.lock().unwrap().iter().all(|r| !r.contains("introspection")));
}

/// RFC 8707 §2: Logto answers `invalid_target` for a resource indicator no API resource of the tenant has. For
/// `logto.resources` that is the configuration's mistake, named with the resource and the key (a denial, not an
/// outage to retry); for an organization token it stays an unexpected answer. `invalid_grant` ends the grant for
/// both.
#[tokio::test]
async fn invalid_target_names_the_resource_and_the_key() {
    const TARGET: &str = r#"{"error":"invalid_target","error_description":"resource indicator is missing, or unknown","code":"oidc.invalid_target"}"#;
    let (endpoint, seen) = fake_logto_with(None, (400, TARGET)).await;
    let oidc = oidc_at(&endpoint).await;
    match oidc.resource_token("rt", "https://api.example.com", "u1", 0).await {
        Err(RefreshError::Denied(why)) => {
            assert!(
                why.contains("\"https://api.example.com\"") && why.contains("logto.resources"),
                "{why}"
            )
        }
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("a token for an unknown resource"),
    }
    let asked = seen.lock().unwrap().last().cloned().unwrap_or_default();
    assert!(asked.starts_with("POST /oidc/token "), "{asked}");
    assert!(asked.ends_with("&resource=https%3A%2F%2Fapi.example.com"), "{asked}");
    assert!(matches!(
        oidc.organization_token("rt", "org_acme", "u1", 0).await,
        Err(RefreshError::Unavailable(_))
    ));

    let (endpoint, _) = fake_logto_with(None, (400, r#"{"error":"invalid_grant"}"#)).await;
    let oidc = oidc_at(&endpoint).await;
    assert!(matches!(
        oidc.resource_token("rt", "https://api.example.com", "u1", 0).await,
        Err(RefreshError::Revoked(_))
    ));
    assert!(matches!(
        oidc.organization_token("rt", "org_acme", "u1", 0).await,
        Err(RefreshError::Revoked(_))
    ));
}

/// Logto refuses the app's own credentials two ways: `invalid_client` (wrong id or secret) and, for a secret past the
/// expiry set in the console, `invalid_request` "client secret has expired". Both are named as the app's
/// credentials, at the code exchange and in `logto-gate check`; another `invalid_request` is not.
#[tokio::test]
async fn refused_and_expired_app_secrets_are_named_at_the_code_exchange_and_in_check() {
    const EXPIRED: &str = r#"{"error":"invalid_request","error_description":"client secret has expired","code":"oidc.invalid_request","message":"client secret has expired"}"#;
    for (status, body, exchange, check, refresh) in [
        (
            401,
            r#"{"error":"invalid_client","error_description":"client authentication failed"}"#,
            "(invalid_client): check logto.app_id",
            "Logto refused the app's credentials (invalid_client: client authentication failed)",
            "(invalid_client): check logto.app_id",
        ),
        (
            400,
            EXPIRED,
            "the app secret has expired in Logto",
            "the app secret has expired in Logto (invalid_request: client secret has expired): put a current",
            "the app secret has expired in Logto",
        ),
        (
            400,
            r#"{"error":"invalid_request","error_description":"missing parameter"}"#,
            "unexpected answer",
            "the token endpoint gave an unexpected answer",
            "invalid_request missing parameter",
        ),
    ] {
        let (endpoint, _) = fake_logto_with(None, (status, body)).await;
        let oidc = oidc_at(&endpoint).await;
        let loaded = oidc.ensure_loaded().await.expect("discovery");
        let said = match oidc.exchange_code(&loaded, "code", "verifier").await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("tokens for a refused exchange"),
        };
        assert!(said.contains(exchange), "{body}: {said}");
        let said = oidc.check_credentials(&loaded).await.expect_err("refused");
        assert!(said.starts_with(check), "{body}: {said}");
        // A refresh keeps the session (not its fault) and says the same.
        match oidc.refresh("rt").await {
            Err(RefreshError::Unavailable(why)) => assert!(why.contains(refresh), "{body}: {why}"),
            Err(other) => panic!("{body}: {other:?}"),
            Ok(_) => panic!("{body}: tokens for a refused refresh"),
        }
    }
}

/// RP-Initiated Logout 1.0 §3: before Logto's discovery is loaded (Logto unreachable) the browser goes straight to
/// the post-logout URL, with the sign-out's `state` as Logto would have handed it back. (With Logto, the end-session
/// URL and the `state` that comes back: `sign_in::a_sign_out_can_return_to_a_page_of_the_app`.)
#[tokio::test]
async fn without_logto_a_sign_outs_state_goes_straight_to_the_post_logout_url() {
    let unreachable = oidc_at("http://127.0.0.1:9").await;
    assert_eq!(
        unreachable.end_session_url(None),
        "https://app.example.com/_logto/signed-out"
    );
    assert_eq!(
        unreachable.end_session_url(Some("a+b/c=")),
        "https://app.example.com/_logto/signed-out?state=a%2Bb%2Fc%3D"
    );
}
