//! Fidelity to a real Logto (core 1.42) on the points where the gate once failed against one: API resources with
//! userinfo-only claims, a tenant's default API resource, organization permissions, and Logto's exact refusal for
//! a non-member. The test IdP behaves as Logto does on each (see tests/idp/server.mjs).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::*;

const RESOURCE: &str = "https://api.example.com";
const TTL: u64 = 6;

fn with_resource(ttl: Option<u64>) -> IdpOptions {
    IdpOptions {
        resources: Some(json!({ RESOURCE: { "scopes": ["read:reports", "write:reports"] } })),
        access_token_ttl: ttl,
        ..Default::default()
    }
}

const LOGTO: &str =
    "resources = [\"https://api.example.com\"]\nscopes = [\"email\", \"roles\", \"custom_data\", \"read:reports\"]";
const HEADERS: &str = "[headers]\n\"X-Forwarded-User\" = \"sub\"\n\"X-Team\" = \"custom_data.team\"\n";

/// The bearer token a request reached the app with (`upstream.pass_access_token`), or "".
fn bearer_of(seen: &upstream::Seen) -> String {
    let field = seen.header("authorization").unwrap_or("");
    field.trim_start_matches("Bearer ").to_owned()
}

/// Which token requests named a resource, in order.
fn token_requests(idp: &Idp) -> Vec<(String, Option<String>)> {
    idp.stats()["token_requests"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            (
                r["grant_type"].as_str().unwrap_or("").to_owned(),
                r["resource"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

/// `logto.resources` plus a claim only userinfo releases (`custom_data`): the code is exchanged without `resource`
/// (an opaque token, which Logto's userinfo accepts), the resource's JWT comes from the refresh grant with
/// `resource`, and refreshes do the same. The app gets both the userinfo claim and the JWT; the session's scopes
/// are those the tokens really carry.
#[tokio::test]
async fn api_resources_and_userinfo_claims_work_together_through_refresh() {
    let s = Stack::edited(
        with_resource(Some(TTL)),
        LOGTO,
        HEADERS,
        in_upstream("pass_access_token = true"),
    )
    .await;
    let b = s.browser();
    let signed_in = now();
    b.sign_in(&s.gate, "/reports").await;
    let seen = s.upstream.last();
    assert_eq!(seen.header("x-team"), Some("platform"), "{:?}", seen.headers);
    let bearer = bearer_of(&seen);
    let at = jwt_claims(&bearer);
    assert_eq!(at["aud"], RESOURCE, "{at}");
    assert_eq!(
        token_requests(&s.idp),
        [
            ("authorization_code".to_owned(), None),
            ("refresh_token".to_owned(), Some(RESOURCE.to_owned()))
        ]
    );
    assert_eq!(s.idp.stats()["userinfo"], 1);
    // Logto answers the request for the resource's token with `scope: ""`: the scopes are read from the JWT.
    assert_eq!(s.idp.stats()["token_requests"][1]["answered_scope"], "");
    let me = b.get_json(format!("{}/_logto/userinfo", s.gate.url())).await;
    let scope = me["scope"].as_str().unwrap_or("");
    assert!(scope.split(' ').any(|p| p == "read:reports"), "{me}");
    assert!(scope.split(' ').any(|p| p == "openid"), "{me}");

    // After the access token expires: a refresh without resource (userinfo again), then one with it.
    tokio::time::sleep(Duration::from_millis((signed_in + TTL + 1 - now()) * 1000 + 50)).await;
    let r = b.get(format!("{}/again", s.gate.url())).await;
    assert_eq!(r.status(), StatusCode::OK);
    let seen = s.upstream.last();
    assert_eq!(seen.header("x-team"), Some("platform"));
    let renewed = bearer_of(&seen);
    assert_ne!(renewed, bearer, "a new access token");
    assert_eq!(jwt_claims(&renewed)["aud"], RESOURCE);
    let requests = token_requests(&s.idp);
    assert_eq!(
        requests[2..],
        [
            ("refresh_token".to_owned(), None),
            ("refresh_token".to_owned(), Some(RESOURCE.to_owned()))
        ],
        "{requests:?}"
    );
    assert_eq!(s.idp.stats()["userinfo"], 2);
}

/// Several APIs behind one gate (two `logto.resources`, whose permission names overlap): a browser session gets each
/// API's token with the refresh grant, at sign-in and at every refresh. A rule naming an API (`resources`) reads
/// the permissions that API granted, never another's of the same name; a rule naming none reads them all; and
/// `upstream.pass_access_token` sends the token of the API the rule names, else the first API's.
#[tokio::test]
async fn a_session_holds_each_apis_token_and_a_rule_naming_an_api_reads_its_permissions() {
    const BILLING: &str = "https://billing.example.com";
    let options = IdpOptions {
        resources: Some(json!({
            RESOURCE: { "scopes": ["read:reports", "approve"] },
            BILLING: { "scopes": ["read:invoices"] },
        })),
        access_token_ttl: Some(TTL),
        ..Default::default()
    };
    let logto = format!(
        "resources = [\"{RESOURCE}\", \"{BILLING}\"]\nscopes = [\"email\", \"roles\", \"read:reports\", \"approve\", \
         \"read:invoices\"]"
    );
    let rules = format!(
        "[[rules]]\nprefix = \"/billing/approve\"\nresources = [\"{BILLING}\"]\nscopes = [\"approve\"]\n\
         [[rules]]\nprefix = \"/billing\"\nresources = [\"{BILLING}\"]\nscopes = [\"read:invoices\"]\n\
         [[rules]]\nprefix = \"/reports/approve\"\nscopes = [\"approve\"]\n\
         [[rules]]\nprefix = \"/reports/invoices\"\nscopes = [\"read:invoices\"]\n"
    );
    let s = Stack::edited(options, &logto, &rules, in_upstream("pass_access_token = true")).await;
    let b = s.browser();
    let signed_in = now();
    b.sign_in(&s.gate, "/billing/1").await;
    let audience = |s: &Stack| jwt_claims(&bearer_of(&s.upstream.last()))["aud"].clone();
    assert_eq!(audience(&s), BILLING, "the token of the API the rule names");
    assert_eq!(
        token_requests(&s.idp),
        [
            ("authorization_code".to_owned(), None),
            ("refresh_token".to_owned(), Some(RESOURCE.to_owned())),
            ("refresh_token".to_owned(), Some(BILLING.to_owned())),
        ]
    );
    let status = |path: &'static str| {
        let b = &b;
        let url = format!("{}{path}", s.gate.url());
        async move { b.get(url).await.status() }
    };
    let check = |expected: [(&'static str, StatusCode); 4]| {
        let status = &status;
        let s = &s;
        async move {
            for (path, want) in expected {
                assert_eq!(status(path).await, want, "{path}");
                if want == StatusCode::OK {
                    let aud = if path.starts_with("/billing") {
                        BILLING
                    } else {
                        RESOURCE
                    };
                    assert_eq!(audience(s), aud, "{path}");
                }
            }
        }
    };
    let expected = [
        ("/billing/approve/9", StatusCode::FORBIDDEN),
        ("/billing/2", StatusCode::OK),
        ("/reports/approve/9", StatusCode::OK),
        ("/reports/invoices/3", StatusCode::OK),
    ];
    check(expected).await;
    let page = b
        .get(format!("{}/billing/approve/9", s.gate.url()))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&format!("the scopes approve granted for the API {BILLING}")),
        "{page}"
    );
    let me = b.get_json(format!("{}/_logto/userinfo", s.gate.url())).await;
    assert_eq!(me["api_scopes"][BILLING], "read:invoices", "{me}");
    assert_eq!(me["api_scopes"][RESOURCE], "read:reports approve", "{me}");
    assert!(!me.to_string().contains("eyJ"), "no token in userinfo: {me}");

    // After the tokens expire: the refresh without resource, then one per API, and the same decisions.
    tokio::time::sleep(Duration::from_millis((signed_in + TTL + 1 - now()) * 1000 + 50)).await;
    assert_eq!(status("/billing/3").await, StatusCode::OK);
    let requests = token_requests(&s.idp);
    assert_eq!(
        requests[3..],
        [
            ("refresh_token".to_owned(), None),
            ("refresh_token".to_owned(), Some(RESOURCE.to_owned())),
            ("refresh_token".to_owned(), Some(BILLING.to_owned())),
        ],
        "{requests:?}"
    );
    check(expected).await;
}

/// An API resource deleted in Logto while people are signed in: at the next refresh Logto refuses its token
/// (`invalid_target`) and the session goes on without what that API granted (rules naming it refuse, its token is
/// no longer sent), while the other API's token and the organization token are still renewed: a member taken out
/// of the organization afterwards loses access at the next refresh, as without the deleted API.
#[tokio::test]
async fn an_api_deleted_in_logto_takes_its_permissions_out_of_the_session() {
    const BILLING: &str = "https://billing.example.com";
    let options = IdpOptions {
        resources: Some(json!({
            RESOURCE: { "scopes": ["read:reports"] },
            BILLING: { "scopes": ["read:invoices"] },
        })),
        access_token_ttl: Some(TTL),
        ..Default::default()
    };
    let logto = format!(
        "resources = [\"{RESOURCE}\", \"{BILLING}\"]\norganization_id = \"org_acme\"\n\
         scopes = [\"email\", \"roles\", \"read:reports\", \"read:invoices\"]"
    );
    let rules = format!(
        "[[rules]]\nprefix = \"/billing\"\nresources = [\"{BILLING}\"]\nscopes = [\"read:invoices\"]\n\
         [[rules]]\nprefix = \"/reports\"\nresources = [\"{RESOURCE}\"]\nscopes = [\"read:reports\"]\n\
         [[rules]]\nprefix = \"/invoices\"\nresources = [\"{BILLING}\"]\n"
    );
    let s = Stack::edited(options, &logto, &rules, in_upstream("pass_access_token = true")).await;
    let b = s.browser();
    let signed_in = now();
    b.sign_in(&s.gate, "/billing/1").await;
    let token = |s: &Stack| bearer_of(&s.upstream.last());
    let billing_token = token(&s);
    assert_eq!(jwt_claims(&billing_token)["aud"], BILLING);
    assert_eq!(
        b.get(format!("{}/reports/1", s.gate.url())).await.status(),
        StatusCode::OK
    );
    let reports_token = token(&s);

    s.idp.delete_resource(BILLING);
    tokio::time::sleep(Duration::from_millis((signed_in + TTL + 1 - now()) * 1000 + 50)).await;
    let refreshed_at = now();
    assert_eq!(
        b.get(format!("{}/reports/2", s.gate.url())).await.status(),
        StatusCode::OK
    );
    let renewed = token(&s);
    assert_ne!(renewed, reports_token, "the other API's token is renewed");
    assert_eq!(jwt_claims(&renewed)["aud"], RESOURCE);
    let refused = b.get(format!("{}/billing/2", s.gate.url())).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let page = refused.text().await.unwrap();
    assert!(
        page.contains(&format!("the scopes read:invoices granted for the API {BILLING}")),
        "{page}"
    );
    let me = b.get_json(format!("{}/_logto/userinfo", s.gate.url())).await;
    assert_eq!(me["api_scopes"], json!({ RESOURCE: "read:reports" }), "{me}");
    // Where the session has no token for the API a route names, the app gets none, and none a client made up: with
    // pass_access_token, Authorization is the gate's field.
    let basic = b
        .client
        .get(format!("{}/invoices/1", s.gate.url()))
        .header("authorization", "Basic bWFsbG9yeTphZG1pbg==")
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::OK);
    let seen = s.upstream.last();
    assert_eq!(seen.header("x-forwarded-user"), Some("u_alice0001"));
    assert_eq!(seen.header("authorization"), None, "{:?}", seen.headers);
    assert_eq!(
        s.idp.stats()["grants"]["organization_token"],
        2,
        "renewed at the refresh"
    );

    // Alice leaves the organization: the next refresh ends her session.
    s.idp.update_account("u_alice0001", json!({ "organizations": [] }));
    tokio::time::sleep(Duration::from_millis((refreshed_at + TTL + 1 - now()) * 1000 + 50)).await;
    let resp = b.get(format!("{}/reports/3", s.gate.url())).await;
    assert_ne!(resp.status(), StatusCode::OK, "a former member is let in");
    assert_eq!(s.idp.stats()["grants"]["organization_token_error"], 1, "Logto asked");
}

/// A tenant with a default API resource gives even the exchange without `resource` a JWT, which Logto's userinfo
/// refuses: the sign-in is refused with a page naming the cause and the fix, not a bare 502.
#[tokio::test]
async fn a_default_api_resource_is_named_as_the_cause_when_userinfo_refuses() {
    let options = IdpOptions {
        default_resource: Some(RESOURCE.to_owned()),
        ..with_resource(None)
    };
    let s = Stack::edited(options, LOGTO, HEADERS, |t| t).await;
    let (hops, resp) = s.browser().navigate(&format!("{}/", s.gate.url())).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY, "{hops:#?}");
    let page = resp.text().await.unwrap();
    assert!(page.contains("default API resource"), "{page}");
    assert!(page.contains(RESOURCE), "{page}");
    assert_eq!(s.upstream.count(), 0);
}

/// A `logto.resources` entry the tenant has no API resource for: Logto's authorization endpoint sends the browser
/// back with `invalid_target` (RFC 8707). The sign-in is refused with a page naming the resource and the key as the
/// cause (502), not as a sign-in the person may simply try again.
#[tokio::test]
async fn an_api_resource_logto_does_not_know_is_named_on_the_error_page() {
    let unknown = "https://unknown-api.example.com";
    let logto = format!("resources = [\"{unknown}\"]\nscopes = [\"email\", \"roles\"]");
    let s = Stack::edited(with_resource(None), &logto, "", |t| t).await;
    let (hops, resp) = s.browser().navigate(&format!("{}/", s.gate.url())).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY, "{hops:#?}");
    let page = resp.text().await.unwrap();
    assert!(page.contains("invalid_target"), "{page}");
    assert!(page.contains(unknown) && page.contains("logto.resources"), "{page}");
    assert_eq!(s.idp.last_authorization_request()["resources"][0], unknown);
    assert_eq!(
        s.idp.stats()["token_requests"],
        json!([]),
        "Logto refused at its authorization endpoint"
    );
    assert_eq!(s.upstream.count(), 0);
}

/// Logto issues a refresh token without `prompt=consent` when the app's "Always issue Refresh Token" setting is on.
/// A gate configured with an API resource and a prompt without consent then works; with the setting off, the
/// sign-in stops at the callback on a page naming both ways out (the start only warns: the gate cannot see the
/// setting).
#[tokio::test]
async fn a_prompt_without_consent_works_when_logto_always_issues_refresh_tokens() {
    let logto = format!("{LOGTO}\nprompt = \"login\"");
    let always = IdpOptions {
        always_issue_refresh_token: true,
        ..with_resource(None)
    };
    let s = Stack::edited(always, &logto, HEADERS, |t| t).await;
    let b = s.browser();
    b.sign_in(&s.gate, "/reports").await;
    assert_eq!(s.idp.last_authorization_request()["prompt"], "login");
    assert_eq!(
        token_requests(&s.idp),
        [
            ("authorization_code".to_owned(), None),
            ("refresh_token".to_owned(), Some(RESOURCE.to_owned()))
        ]
    );
    let me = b.get_json(format!("{}/_logto/userinfo", s.gate.url())).await;
    let scope = me["scope"].as_str().unwrap_or("");
    assert!(scope.split(' ').any(|p| p == "read:reports"), "{me}");

    let s = Stack::edited(with_resource(None), &logto, HEADERS, |t| t).await;
    let (hops, resp) = s.browser().navigate(&format!("{}/reports", s.gate.url())).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY, "{hops:#?}");
    let page = resp.text().await.unwrap();
    assert!(page.contains("Logto issued no refresh token"), "{page}");
    assert!(page.contains("Always issue Refresh Token"), "{page}");
    assert_eq!(s.upstream.count(), 0);
}

/// Organization tokens carry the member's organization permissions only when the sign-in asked for Logto's
/// organizations resource, which the gate now always does with `logto.organization_id`. Exactly Logto's answer for
/// a non-member (403 `access_denied`, "user is not a member of the organization") is a 403 page; any other refusal
/// is Logto failing (503), not a verdict on membership.
#[tokio::test]
async fn organization_permissions_reach_scope_rules_and_only_logtos_non_member_answer_is_a_403() {
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let rules = "[[rules]]\nprefix = \"/members\"\nscopes = [\"read:members\"]\n";
    let gate = TestGate::start(&idp, &upstream.url(), "organization_id = \"org_acme\"", rules).await;
    let alice = Browser::new(&idp);
    alice.sign_in(&gate, "/members/list").await;
    let auth = idp.last_authorization_request();
    assert!(
        auth["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "urn:logto:resource:organizations"),
        "{auth}"
    );

    for (status, body) in [
        (
            400,
            json!({"error": "invalid_target", "error_description": "resource indicator is missing", "code": "oidc.invalid_target"}),
        ),
        (
            403,
            json!({"error": "access_denied", "error_description": "some other reason"}),
        ),
        (500, json!({"error": "internal", "message": "oops"})),
    ] {
        idp.refuse_next_organization_token(status, body.clone());
        let b = Browser::new(&idp);
        let (hops, resp) = b.navigate(&format!("{}/", gate.url())).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE, "{body}: {hops:#?}");
    }
    let bob = Browser::new(&idp);
    bob.login_as("bob");
    let (hops, resp) = bob.navigate(&format!("{}/", gate.url())).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{hops:#?}");
}

/// Sign-out kills a copy of the cookie taken before it (malware, a shared computer, a proxy log): the session is
/// revoked at the gate, and its refresh token at Logto (RFC 7009), which otherwise keeps the grant through
/// end-session.
#[tokio::test]
async fn sign_out_ends_a_copied_cookie_and_revokes_the_refresh_token() {
    let s = Stack::start().await;
    let (b, _) = s.signed_in().await;
    let copy = b.gate_cookies(&s.gate.url());
    let url = format!("{}/private", s.gate.url());
    assert_eq!(status_with_cookie(&url, &copy).await, StatusCode::OK);
    assert_eq!(s.idp.live_grants(), 1);

    let out = b.get(format!("{}/_logto/sign-out", s.gate.url())).await;
    assert_eq!(out.status(), StatusCode::FOUND);
    assert_eq!(status_with_cookie(&url, &copy).await, StatusCode::UNAUTHORIZED);
    eventually("the refresh token's revocation", || {
        s.idp.stats()["revocations"] == 1 && s.idp.live_grants() == 0
    })
    .await;
    // Signing in again works as before.
    b.sign_in(&s.gate, "/back").await;
}

/// A page of another site cannot sign a person out (logout CSRF): a request it makes the browser send to the
/// sign-out (`Sec-Fetch-Site: cross-site`, by link or by form) gets a page whose button POSTs the sign-out from the
/// gate's own origin, and the session lives on until then. A browser's own, a sibling host's or a typed request
/// signs out at once.
#[tokio::test]
async fn a_sign_out_another_site_asks_for_is_confirmed_first() {
    let s = Stack::start().await;
    let (b, _) = s.signed_in().await;
    let cookie = b.gate_cookies(&s.gate.url());
    let private = format!("{}/private", s.gate.url());
    let out = format!("{}/_logto/sign-out", s.gate.url());
    let idp_origin = s.idp.issuer().trim_end_matches("/oidc").to_owned();
    let send = |method: reqwest::Method, site: &str, accept: &str| {
        plain()
            .request(method, &out)
            .header("cookie", &cookie)
            .header("sec-fetch-site", site)
            .header("accept", accept)
            .send()
    };
    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let page = send(method.clone(), "cross-site", "text/html").await.unwrap();
        assert_eq!(page.status(), StatusCode::OK, "{method}");
        assert!(page.headers().get("set-cookie").is_none(), "{method}");
        let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(csp.contains(&format!("form-action 'self' {idp_origin}")), "{csp}");
        let html = page.text().await.unwrap();
        assert!(
            html.contains("<form method=\"post\" action=\"/_logto/sign-out\">"),
            "{html}"
        );
        let api = send(method.clone(), "Cross-Site", "application/json").await.unwrap();
        assert_eq!(api.status(), StatusCode::FORBIDDEN, "{method}");
        assert_eq!(status_with_cookie(&private, &cookie).await, StatusCode::OK, "{method}");
    }

    // The page's button: a POST from the gate's origin.
    let confirmed = send(reqwest::Method::POST, "same-origin", "text/html").await.unwrap();
    assert_eq!(confirmed.status(), StatusCode::SEE_OTHER);
    assert!(confirmed.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with(&idp_origin));
    assert_eq!(status_with_cookie(&private, &cookie).await, StatusCode::UNAUTHORIZED);

    for site in ["same-site", "none"] {
        let (b, _) = s.signed_in().await;
        let cookie = b.gate_cookies(&s.gate.url());
        let resp = plain()
            .get(&out)
            .header("cookie", &cookie)
            .header("sec-fetch-site", site)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FOUND, "{site}");
        assert_eq!(
            status_with_cookie(&private, &cookie).await,
            StatusCode::UNAUTHORIZED,
            "{site}"
        );
    }
}

/// `session.sign_out_clear_site_data`: the sign-out's answer asks the browser to clear what the app left in it (W3C
/// Clear Site Data: its cached pages, its storage), which a shared computer's next user would otherwise read. Only
/// the sign-out itself: neither the page confirming one another site asked for (that site could clear the app's
/// data at will) nor a HEAD, which signs nobody out; nothing without the key. The browser's side: the browser tests.
#[tokio::test]
async fn a_sign_out_asks_the_browser_to_clear_the_sites_data_when_configured() {
    let s = Stack::edited(IdpOptions::default(), "", "", |t| {
        t.replace(
            "[session]\n",
            "[session]\nsign_out_clear_site_data = [\"cache\", \"storage\"]\n",
        )
    })
    .await;
    let out = format!("{}/_logto/sign-out", s.gate.url());
    let private = format!("{}/private", s.gate.url());
    let (b, _) = s.signed_in().await;
    let cookie = b.gate_cookies(&s.gate.url());
    let send = |method: reqwest::Method, site: &str| {
        plain()
            .request(method, &out)
            .header("cookie", &cookie)
            .header("sec-fetch-site", site)
            .header("accept", "text/html")
            .send()
    };
    let head = send(reqwest::Method::HEAD, "same-origin").await.unwrap();
    assert_eq!(head.status(), StatusCode::FOUND);
    assert!(head.headers().get("clear-site-data").is_none());
    let asked = send(reqwest::Method::GET, "cross-site").await.unwrap();
    assert_eq!(asked.status(), StatusCode::OK);
    assert!(asked.headers().get("clear-site-data").is_none());
    assert_eq!(status_with_cookie(&private, &cookie).await, StatusCode::OK);

    let signed_out = send(reqwest::Method::POST, "same-origin").await.unwrap();
    assert_eq!(signed_out.status(), StatusCode::SEE_OTHER);
    assert_eq!(signed_out.headers()["clear-site-data"], "\"cache\", \"storage\"");
    assert_eq!(status_with_cookie(&private, &cookie).await, StatusCode::UNAUTHORIZED);

    // Without the key: nothing to clear.
    let plain_stack = Stack::start().await;
    let (b, _) = plain_stack.signed_in().await;
    let resp = plain()
        .get(format!("{}/_logto/sign-out", plain_stack.gate.url()))
        .header("cookie", b.gate_cookies(&plain_stack.gate.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert!(resp.headers().get("clear-site-data").is_none());
}

/// A new sign-in in the same browser ends the session it had: a copy of the old cookie is refused afterwards (the
/// cookie store's revocation list), while the grant at Logto, which the new session continues, is not revoked.
#[tokio::test]
async fn signing_in_again_ends_the_previous_session() {
    let s = Stack::start().await;
    let (b, _) = s.signed_in().await;
    let old = b.gate_cookies(&s.gate.url());
    let url = format!("{}/private", s.gate.url());
    assert_eq!(status_with_cookie(&url, &old).await, StatusCode::OK);

    let (hops, resp) = b
        .navigate(&format!("{}/_logto/sign-in?redirect=/again", s.gate.url()))
        .await;
    assert_eq!(resp.status(), StatusCode::OK, "{hops:#?}");
    let new = b.gate_cookies(&s.gate.url());
    assert_ne!(new, old);
    assert_eq!(status_with_cookie(&url, &new).await, StatusCode::OK);
    assert_eq!(status_with_cookie(&url, &old).await, StatusCode::UNAUTHORIZED);
    assert_eq!(s.idp.stats()["revocations"], 0, "no refresh token was revoked");
    assert!(s.idp.live_grants() >= 1);
}

/// The same with the Redis store: the old session is deleted from Redis, on every replica.
#[tokio::test]
async fn signing_in_again_deletes_the_previous_redis_session() {
    let Some((_redis, idp, _upstream, one, two)) =
        replicas_on_redis(|url| format!("store = \"redis\"\nredis_url = \"{url}\"\nredis_key_prefix = \"t:\"")).await
    else {
        return;
    };
    let b = Browser::new(&idp);
    b.sign_in(&one, "/").await;
    let old = b.gate_cookies(&one.url());
    let (hops, resp) = b
        .navigate(&format!("{}/_logto/sign-in?redirect=/again", one.url()))
        .await;
    assert_eq!(resp.status(), StatusCode::OK, "{hops:#?}");
    let new = b.gate_cookies(&one.url());
    assert_ne!(new, old);
    for gate in [&one, &two] {
        let url = format!("{}/x", gate.url());
        assert_eq!(status_with_cookie(&url, &new).await, StatusCode::OK, "{url}");
        assert_eq!(status_with_cookie(&url, &old).await, StatusCode::UNAUTHORIZED, "{url}");
    }
}

/// With the cookie store and `session.redis_url`, the revocation is shared: a copied cookie is refused on every
/// replica, not only the one that saw the sign-out, and by a gate process started after it (a restart, a rollout),
/// which a list kept in memory would have forgotten.
#[tokio::test]
async fn a_copied_cookie_is_refused_on_every_replica_after_sign_out() {
    let shared = |url: &str| format!("redis_url = \"{url}\"\nredis_key_prefix = \"t:\"");
    let Some((redis, idp, upstream, one, two)) = replicas_on_redis(shared).await else {
        return;
    };
    let b = Browser::new(&idp);
    b.sign_in(&one, "/").await;
    let copy = b.gate_cookies(&one.url());
    assert_eq!(
        status_with_cookie(&format!("{}/x", two.url()), &copy).await,
        StatusCode::OK
    );
    let out = b.get(format!("{}/_logto/sign-out", one.url())).await;
    assert_eq!(out.status(), StatusCode::FOUND);
    drop(two);
    let section = format!("[session]\n{}\n", shared(&redis.url()));
    let restarted = BinaryGate::start(
        &idp.endpoint(),
        &upstream.url(),
        "",
        move |t: String| t.replacen("[session]\n", &section, 1),
        |_| {},
        &[],
    )
    .await;
    for gate in [&one, &restarted] {
        assert_eq!(
            status_with_cookie(&format!("{}/x", gate.url()), &copy).await,
            StatusCode::UNAUTHORIZED,
            "{}",
            gate.url()
        );
    }
}

/// Bearer tokens (and every other token the gate verifies) get `logto.clock_leeway` of clock skew, 30 s unless set:
/// a token that expired 45 s ago is refused by default and accepted with 60 s; more than 5 minutes is refused.
#[tokio::test]
async fn the_clock_leeway_is_one_key_and_30_seconds_by_default() {
    let token_for = |s: &Stack, exp: u64| {
        s.idp.sign(
            json!({"iss": s.idp.issuer(), "aud": RESOURCE, "sub": "u_service01", "client_id": "m2m",
                   "scope": "read:reports", "iat": exp - 300, "exp": exp}),
            json!({}),
        )
    };
    let call = |s: &Stack, token: String| {
        let url = format!("{}/api/x", s.gate.url());
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
    let resources = "resources = [\"https://api.example.com\"]";
    let s = Stack::edited(with_resource(None), resources, "", |t| t).await;
    assert_eq!(call(&s, token_for(&s, now() - 45)).await, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&s, token_for(&s, now() - 20)).await, StatusCode::OK);
    let s = Stack::edited(
        with_resource(None),
        &format!("{resources}\nclock_leeway = \"60s\""),
        "",
        |t| t,
    )
    .await;
    assert_eq!(call(&s, token_for(&s, now() - 45)).await, StatusCode::OK);
    let toml = gate_toml(
        "http://127.0.0.1:1",
        "http://127.0.0.1:2",
        "http://127.0.0.1:3",
        "clock_leeway = \"10m\"",
        "",
    );
    let err = logto_gate::Config::from_toml_str(&toml, Vec::new()).expect_err("too long");
    assert!(err.0.iter().any(|l| l.starts_with("logto.clock_leeway:")), "{err}");
}

/// A machine-to-machine access token (Logto's: `sub` is the app's own `client_id`, confirmed with the test IdP's
/// client-credentials grant) is not a user: refused wherever a rule does not list the app in `m2m_apps`, and when
/// admitted the app sees `X-Forwarded-Machine: <app id>`, which a client can never send itself.
#[tokio::test]
async fn machine_tokens_are_refused_unless_a_rule_admits_the_app() {
    let rules = "[[rules]]\nprefix = \"/api/jobs\"\nm2m_apps = [\"m2m-reporter\"]\nscopes = [\"read:reports\"]\n";
    let s = Stack::edited(with_resource(None), LOGTO, rules, |t| t).await;
    s.idp.register_m2m_app("m2m-reporter", "m2m-secret-0123456789");
    s.idp.register_m2m_app("m2m-other", "m2m-secret-0123456789");
    let token_of = |app: &'static str| {
        let idp = &s.idp;
        async move {
            let v = token_endpoint(
                idp,
                (app, "m2m-secret-0123456789"),
                &[
                    ("grant_type", "client_credentials"),
                    ("resource", RESOURCE),
                    ("scope", "read:reports"),
                ],
            )
            .await;
            v["access_token"].as_str().expect("an access token").to_owned()
        }
    };
    let reporter = token_of("m2m-reporter").await;
    let claims = jwt_claims(&reporter);
    assert_eq!(
        claims["sub"], claims["client_id"],
        "Logto's M2M tokens: sub = client_id: {claims}"
    );
    let call = |path: &str, token: &str| {
        plain()
            .get(format!("{}{path}", s.gate.url()))
            .header("authorization", format!("Bearer {token}"))
            .header("x-forwarded-machine", "spoofed")
            .send()
    };
    // Anywhere else (the default: any signed-in user) a machine is refused.
    assert_eq!(
        call("/reports", &reporter).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    // Another app is refused where only the reporter is admitted.
    let other = token_of("m2m-other").await;
    assert_eq!(
        call("/api/jobs/1", &other).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(s.upstream.count(), 0);
    // Admitted: the app knows it is a machine.
    assert_eq!(call("/api/jobs/1", &reporter).await.unwrap().status(), StatusCode::OK);
    let seen = s.upstream.last();
    assert_eq!(seen.header("x-forwarded-machine"), Some("m2m-reporter"));
    assert_eq!(seen.header("x-forwarded-user"), Some("m2m-reporter"));
    // A person's session never carries the header, whatever the client sends.
    let b = s.browser();
    b.sign_in(&s.gate, "/api/jobs/2").await;
    let r = b
        .client
        .get(format!("{}/api/jobs/3", s.gate.url()))
        .header("x-forwarded-machine", "spoofed")
        .header("X_Forwarded_Machine", "spoofed")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let seen = s.upstream.last();
    assert_eq!(seen.header("x-forwarded-machine"), None);
    assert_eq!(seen.header("x_forwarded_machine"), None);
}

/// An access token for [`RESOURCE`] from the refresh grant of the web app `client`, issued for `organization` when
/// one is named (Logto's organization-level API resources); keeps the refresh token Logto answers with.
async fn refreshed_for(
    idp: &Idp,
    client: (&str, &str),
    refresh_token: &mut String,
    organization: Option<&str>,
) -> String {
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token.as_str()),
        ("resource", RESOURCE),
    ];
    form.extend(organization.map(|o| ("organization_id", o)));
    let answer = token_endpoint(idp, client, &form).await;
    if let Some(next) = answer["refresh_token"].as_str() {
        *refresh_token = next.to_owned();
    }
    answer["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access token: {answer}"))
        .to_owned()
}

/// Logto's organization-level API resources: the refresh grant with `organization_id` and `resource` gives a token
/// for the resource that names the organization and carries what the member's roles in it grant. Such a token
/// proves membership (`organizations` rules), but its scopes are the organization's: behind a gate for no
/// organization they never pass for the API's own (an administrator of some organization is not an administrator
/// of the API), and behind a gate for one (`logto.organization_id`) an API client must present a token issued for
/// it, as sessions are members only.
#[tokio::test]
async fn organization_scoped_api_tokens_never_pass_for_the_apis_own() {
    const CLI: (&str, &str) = ("reports-cli", "reports-cli-secret-0123456789");
    let idp = Idp::start(with_resource(None));
    let upstream = Upstream::start().await;
    idp.update_account(
        "u_alice0001",
        json!({"organizations": ["org_acme", "org_other"], "organization_resource_scopes": {
            "org_acme": { RESOURCE: ["read:reports", "write:reports"] },
            "org_other": { RESOURCE: ["write:reports"] },
        }}),
    );
    let rules = "[[rules]]\nprefix = \"/api/admin\"\nscopes = [\"write:reports\"]\n\
                 [[rules]]\nprefix = \"/api/acme\"\norganizations = [\"org_acme\"]\n";
    let resources = format!("resources = [\"{RESOURCE}\"]");
    let any_organization = TestGate::start(&idp, &upstream.url(), &resources, rules).await;
    let members_only = TestGate::start(
        &idp,
        &upstream.url(),
        &format!("{resources}\norganization_id = \"org_acme\""),
        rules,
    )
    .await;

    // A command-line client of the API signs alice in (consent, so Logto issues a refresh token) and asks for
    // tokens: one for the API itself, and one for the API in each of her organizations.
    idp.register_client(CLI.0, CLI.1, &upstream.url());
    let signed_in = sign_in_at_idp(
        &idp,
        CLI,
        &upstream.url(),
        "alice",
        "openid offline_access urn:logto:scope:organizations read:reports write:reports",
        &[("prompt", "consent"), ("resource", RESOURCE)],
    )
    .await;
    let mut refresh_token = signed_in["refresh_token"].as_str().expect("a refresh token").to_owned();
    let api = refreshed_for(&idp, CLI, &mut refresh_token, None).await;
    let acme = refreshed_for(&idp, CLI, &mut refresh_token, Some("org_acme")).await;
    let other = refreshed_for(&idp, CLI, &mut refresh_token, Some("org_other")).await;
    assert_eq!(jwt_claims(&acme)["organization_id"], "org_acme", "as Logto's");
    assert_eq!(jwt_claims(&acme)["aud"], RESOURCE);
    assert_eq!(jwt_claims(&other)["scope"], "write:reports");
    assert!(jwt_claims(&api).get("organization_id").is_none());

    let call = |gate: &TestGate, path: &str, token: &str| {
        plain()
            .get(format!("{}{path}", gate.url()))
            .header("authorization", format!("Bearer {token}"))
            .send()
    };
    let status = |resp: reqwest::Response| resp.status();
    // A gate for no organization: only the API's own scopes open /api/admin.
    let g = &any_organization;
    assert_eq!(status(call(g, "/api/admin", &api).await.unwrap()), StatusCode::OK);
    let refused = call(g, "/api/admin", &other).await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let page = refused.text().await.unwrap();
    assert!(page.contains("org_other"), "{page}");
    assert_eq!(
        status(call(g, "/api/admin", &acme).await.unwrap()),
        StatusCode::FORBIDDEN
    );
    // A token issued for an organization is a member's: an organizations rule lets it through.
    assert_eq!(status(call(g, "/api/acme", &acme).await.unwrap()), StatusCode::OK);
    assert_eq!(
        status(call(g, "/api/acme", &other).await.unwrap()),
        StatusCode::FORBIDDEN
    );
    assert_eq!(status(call(g, "/api/acme", &api).await.unwrap()), StatusCode::FORBIDDEN);
    assert_eq!(status(call(g, "/api/reports", &other).await.unwrap()), StatusCode::OK);

    // A gate for org_acme: members only, API clients too; the organization's scopes are the gate's.
    let g = &members_only;
    for (token, what) in [(&api, "for no organization"), (&other, "for another organization")] {
        let resp = call(g, "/api/reports", token).await.unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "a token {what}");
        let page = resp.text().await.unwrap();
        assert!(page.contains("issued for the organization org_acme"), "{what}: {page}");
    }
    assert_eq!(status(call(g, "/api/reports", &acme).await.unwrap()), StatusCode::OK);
    assert_eq!(status(call(g, "/api/admin", &acme).await.unwrap()), StatusCode::OK);
    assert_eq!(upstream.last().header("x-forwarded-user"), Some("u_alice0001"));
}

/// Logto's app-secret rotation (an app holds several secrets, each with an expiry): an operator adds a secret in
/// Logto, puts it in `logto.app_secret_file` (a Kubernetes secret volume's link swap), then deletes the old one;
/// the gate signs people in with the new secret without a restart, and hands it to a Protected App. A secret past
/// its expiry is named at the callback and in the log; writing a current one in place mends it. No secret is
/// ever logged.
#[tokio::test]
async fn a_rotated_app_secret_file_is_used_without_a_restart() {
    use base64::Engine;
    let idp = Idp::start(IdpOptions::default());
    let upstream = Upstream::start().await;
    let mut volume = SecretVolume::new(&[("app_secret", &format!("{APP_SECRET}\n"))]);
    let mut gate = logging_json(&idp, &upstream, "info", |t| {
        let t = t.replace(
            &format!("app_secret = \"{APP_SECRET}\""),
            &format!("app_secret_file = {}", volume.toml_path("app_secret")),
        );
        assert!(t.contains("app_secret_file"), "{t}");
        let t = t.replace("[upstream]\n", "[upstream]\nprotected_app = true\n");
        format!("{t}\n[[rules]]\nprefix = \"/public\"\nallow = \"public\"\n")
    })
    .await;
    let url = gate.url();
    // The secret the app was handed with the last request (Protected App's Basic credentials).
    let handed = || {
        let basic = upstream.last().header("authorization").unwrap_or("").to_owned();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim_start_matches("Basic "))
            .unwrap_or_default();
        let pair = String::from_utf8(decoded).unwrap_or_default();
        pair.strip_prefix(&format!("{APP_ID}:")).unwrap_or("").to_owned()
    };
    let signs_in = |path: &'static str| {
        let b = Browser::new(&idp);
        let url = url.clone();
        async move {
            let (hops, resp) = b.navigate(&format!("{url}{path}")).await;
            (resp.status(), hops)
        }
    };
    let (status, hops) = signs_in("/before").await;
    assert_eq!(status, StatusCode::OK, "{hops:#?}");
    assert_eq!(handed(), APP_SECRET);

    // Rotation: a second secret added in Logto, swapped into the volume; the app sees it within 10 s (the file is
    // checked every 2 s).
    const ROTATED: &str = "rotated-secret-0123456789";
    idp.set_app_secrets(APP_ID, json!([{ "name": "rotated", "value": ROTATED }]), false);
    volume.update(&[("app_secret", &format!("{ROTATED}\n"))]);
    let public = plain();
    let until_handed = |secret: &'static str| {
        let (public, url, handed) = (&public, &url, &handed);
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                // A public request to the app, which carries the Protected App credentials.
                let r = public.get(format!("{url}/public/x")).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                if handed() == secret {
                    return;
                }
                assert!(tokio::time::Instant::now() < deadline, "still {}", handed());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    until_handed(ROTATED).await;
    // The old secret deleted in Logto: signing in works with the new one alone.
    idp.set_app_secrets(APP_ID, json!([{ "name": "rotated", "value": ROTATED }]), true);
    // Signs in at `path`, the app authenticated at Logto with the added secret `name`.
    let signs_in_with = |path: &'static str, name: &'static str| {
        let (signs_in, idp) = (&signs_in, &idp);
        async move {
            let (status, hops) = signs_in(path).await;
            assert_eq!(status, StatusCode::OK, "{hops:#?}");
            let stats = idp.stats();
            assert!(stats["app_secrets"][name].as_u64().unwrap_or(0) >= 1, "{stats}");
        }
    };
    signs_in_with("/after", "rotated").await;

    // The secret's expiry passes in Logto: the callback says so (the exchange is refused), and the log names it.
    let an_hour_ago = (now() - 3600) * 1000;
    let secrets = json!([{ "name": "rotated", "value": ROTATED, "expires_at": an_hour_ago }]);
    idp.set_app_secrets(APP_ID, secrets, false);
    let (status, hops) = signs_in("/expired").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{hops:#?}");
    // A current secret, written in place: signing in works again.
    const CURRENT: &str = "current-secret-0123456789";
    let secrets = json!([
        { "name": "rotated", "value": ROTATED, "expires_at": an_hour_ago },
        { "name": "current", "value": CURRENT },
    ]);
    idp.set_app_secrets(APP_ID, secrets, false);
    volume.write_in_place("app_secret", CURRENT);
    until_handed(CURRENT).await;
    signs_in_with("/mended", "current").await;

    let log = stopped_log(&mut gate).await;
    assert_reloads_and_no_secret(&log, "app secret reloaded", 2, &[APP_SECRET, ROTATED, CURRENT]);
    let (lines, parsed) = log;
    assert!(
        parsed
            .iter()
            .any(|l| matches!(l["level"].as_str(), Some("ERROR" | "WARN"))
                && l.to_string().contains("the app secret has expired in Logto")),
        "{lines:#?}"
    );
}
