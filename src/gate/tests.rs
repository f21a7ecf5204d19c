use super::*;

/// A gate on a minimal configuration, with `upstream` and `logto` lines added to those sections.
fn gate_of(upstream: &str, logto: &str) -> std::sync::Arc<Gate> {
    let toml = format!(
        "[server]\npublic_url = \"https://app.example.com\"\n\
         [upstream]\nurl = \"http://127.0.0.1:9\"\n{upstream}\n\
         [logto]\nendpoint = \"http://127.0.0.1:9\"\napp_id = \"a\"\napp_secret = \"s\"\n{logto}\n\
         [session]\nsecret = \"0123456789abcdef0123456789abcdef\"\n"
    );
    Gate::new(Config::from_toml_str(&toml, Vec::new()).unwrap()).unwrap()
}

#[test]
fn duplicated_query_parameters_are_refused() {
    assert!(single_valued_query(Some("state=a&state=b")).is_err());
    let ok = single_valued_query(Some("code=x&state=y")).unwrap();
    assert_eq!(ok.len(), 2);
}

#[tokio::test]
async fn readiness_fails_as_soon_as_draining_starts() {
    let gate = gate_of("", "");
    gate.begin_draining();
    assert_eq!(gate.readiness().await, Err("shutting down".to_owned()));
}

#[test]
fn a_target_and_a_host_agree_up_to_case_and_the_default_port() {
    for (target, host, scheme, same) in [
        ("a", "a", Some("http"), true),
        ("A.example", "a.EXAMPLE", Some("http"), true),
        ("a:80", "a", Some("http"), true),
        ("a", "a:80", Some("http"), true),
        ("a:443", "a", Some("https"), true),
        ("a:", "a", Some("http"), true),
        ("[::1]:80", "[::1]", Some("http"), true),
        ("a:8080", "a:8080", None, true),
        ("a:80", "a", Some("https"), false),
        ("a:8080", "a", Some("http"), false),
        ("b", "a", Some("http"), false),
        ("u@a", "a", Some("http"), false),
        ("[::1]:80", "[::2]", Some("http"), false),
        ("a:99999", "a", Some("http"), false),
    ] {
        assert_eq!(
            same_authority(target.as_bytes(), host.as_bytes(), scheme),
            same,
            "{target} {host}"
        );
    }
}

#[test]
fn an_answer_with_the_session_cookie_is_kept_from_shared_caches() {
    for (app, sent) in [
        (&[][..], "private"),
        (&["public, max-age=600, s-maxage=3600"][..], "private, max-age=600"),
        (&["Public,MAX-AGE=60"][..], "private, MAX-AGE=60"),
        (&["no-cache, must-revalidate"][..], "private, no-cache, must-revalidate"),
        (&["private=\"set-cookie\", max-age=5"][..], "private, max-age=5"),
        (&["private, max-age=5"][..], "private, max-age=5"),
        (&["no-store"][..], "no-store"),
        (&["public", "max-age=9"][..], "private, max-age=9"),
    ] {
        let mut resp = Response::new(Body::Empty);
        for v in app {
            resp.headers_mut()
                .append(header::CACHE_CONTROL, HeaderValue::from_static(v));
        }
        crate::proxy::caching::keep_from_shared_caches(&mut resp);
        let sent_fields: Vec<_> = resp.headers().get_all(header::CACHE_CONTROL).iter().collect();
        assert_eq!(sent_fields, [sent], "{app:?}");
    }
}

#[test]
fn fields_caches_read_before_cache_control_are_known() {
    use crate::proxy::caching::overrides_cache_control;
    for name in [
        "x-accel-expires",
        "surrogate-control",
        "cdn-cache-control",
        "cloudflare-cdn-cache-control",
        "edge-control",
    ] {
        assert!(overrides_cache_control(&http::HeaderName::from_static(name)), "{name}");
    }
    for name in [
        "cache-control",
        "expires",
        "content-type",
        "x-cdn-cache-controls",
        "-cdn-cache-control",
    ] {
        assert!(!overrides_cache_control(&http::HeaderName::from_static(name)), "{name}");
    }
}

#[test]
fn a_stripped_prefix_follows_a_trusted_proxys_own() {
    let with = |sent: Option<&str>, trusted: bool| {
        let mut h = http::HeaderMap::new();
        if let Some(v) = sent {
            h.insert("x-forwarded-prefix", http::HeaderValue::from_str(v).unwrap());
        }
        super::app::forwarded_prefix(&mut h, "/grafana", trusted);
        h["x-forwarded-prefix"].to_str().unwrap().to_owned()
    };
    assert_eq!(with(None, false), "/grafana");
    assert_eq!(with(None, true), "/grafana");
    assert_eq!(with(Some("/team/"), true), "/team/grafana");
    assert_eq!(with(Some("/team"), false), "/grafana", "only a trusted proxy's");
    for odd in ["team", "/a,/b", "//evil.example"] {
        assert_eq!(with(Some(odd), true), "/grafana", "{odd}");
    }
}

#[test]
fn a_stripped_prefix_is_counted_in_the_segments_the_rules_saw() {
    use super::app::strip_segments;
    for (path, segments, want) in [
        ("/grafana/d/1", 1, "/d/1"),
        ("/grafana", 1, "/"),
        ("/grafana/", 1, "/"),
        ("/grafana;jsessionid=1/d", 1, "/d"),
        ("/;x/grafana/d", 1, "/d"),
        ("/;x/;y/a/b/c", 2, "/c"),
        ("/a/;x/b/c", 2, "/c"),
        ("/a/b;x/c", 2, "/c"),
        ("/a", 2, "/"),
    ] {
        assert_eq!(strip_segments(path, segments), want, "{path} less {segments}");
    }
}

/// The names `identity::GATE_OWNED_HEADERS` lists are the ones the gate sets, and every header the gate sets or
/// removes for its own reasons is refused as a claim's header in `[headers]`.
#[test]
fn no_claim_can_be_mapped_onto_a_header_the_gate_owns() {
    use super::app::{PROTECTED_APP_HOST, PROTECTED_APP_ID_TOKEN};
    use super::authn::{ACTOR_HEADER, MACHINE_HEADER};
    for name in [
        crate::assertion::HEADER,
        MACHINE_HEADER,
        ACTOR_HEADER,
        PROTECTED_APP_ID_TOKEN,
        PROTECTED_APP_HOST,
    ] {
        assert!(crate::identity::GATE_OWNED_HEADERS.contains(&name), "{name}");
    }
    let request_id = super::REQUEST_ID;
    let mut owned: Vec<&str> = crate::identity::GATE_OWNED_HEADERS.to_vec();
    owned.extend(crate::identity::CLIENT_FORWARDING_HEADERS);
    owned.extend(crate::policy::METHOD_OVERRIDE_HEADERS);
    owned.extend([request_id.as_str(), "cookie", "host"]);
    for name in owned {
        let header = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        assert!(crate::identity::reserved_header(&header).is_some(), "{name}");
    }
    assert_eq!(
        crate::identity::reserved_header(&http::HeaderName::from_static("x-forwarded-user")),
        None
    );
}

/// With `logto.organization_id`, a person's bearer token passes only when Logto issued it for that organization; a
/// machine listed in `m2m_apps` is admitted by the rules as before, unless its token is for another organization.
#[test]
fn only_tokens_for_the_gates_organization_are_admitted() {
    use super::authn::{admit_to_organization, Principal};
    let bearer = |claims: serde_json::Value| match claims {
        serde_json::Value::Object(map) => Principal::Bearer(map),
        _ => unreachable!(),
    };
    let person = |org: Option<&str>| {
        let mut c = serde_json::json!({"sub": "u1", "client_id": "cli"});
        if let Some(o) = org {
            c["organization_id"] = o.into();
        }
        bearer(c)
    };
    assert!(admit_to_organization(&person(Some("org_acme")), "org_acme").is_ok());
    for (who, why) in [
        (person(None), "is for no organization"),
        (person(Some("org_other")), "is for org_other"),
    ] {
        let err = admit_to_organization(&who, "org_acme").unwrap_err().to_string();
        assert!(err.contains(why), "{err}");
    }
    let machine = bearer(serde_json::json!({"sub": "m2m", "client_id": "m2m"}));
    assert!(admit_to_organization(&machine, "org_acme").is_ok());
    let foreign_machine = bearer(serde_json::json!({"sub": "m2m", "client_id": "m2m", "organization_id": "org_x"}));
    assert!(admit_to_organization(&foreign_machine, "org_acme").is_err());
}

/// `upstream.pass_access_token` with several APIs: the token of the API the rule names, else the first API's; a
/// session from before per-API tokens (its first API's token in `at`) keeps sending that one where it applies, and
/// nothing is sent where another API's token is wanted and the session has none.
#[tokio::test]
async fn the_access_token_sent_is_the_one_for_the_api_the_rule_names() {
    let gate = gate_of(
        "pass_access_token = true",
        "resources = [\"https://a.example.com\", \"https://b.example.com\"]",
    );
    let mut session = crate::session::Session {
        at: Some("token-of-a-from-an-older-gate".into()),
        ..crate::session::Session::of_claims(serde_json::Map::new())
    };
    let (a, b) = (Some("https://a.example.com"), Some("https://b.example.com"));
    assert_eq!(
        gate.access_token_for(&session, None),
        Some("token-of-a-from-an-older-gate")
    );
    assert_eq!(
        gate.access_token_for(&session, a),
        Some("token-of-a-from-an-older-gate")
    );
    assert_eq!(gate.access_token_for(&session, b), None);
    for (api, token) in [("https://a.example.com", "ta"), ("https://b.example.com", "tb")] {
        let grant = crate::session::ApiGrant {
            scope: String::new(),
            at: Some(token.into()),
        };
        session.apis.insert(api.into(), grant);
    }
    session.at = None;
    assert_eq!(gate.access_token_for(&session, None), Some("ta"));
    assert_eq!(gate.access_token_for(&session, a), Some("ta"));
    assert_eq!(gate.access_token_for(&session, b), Some("tb"));
}

/// A forward-auth answer's `Authorization` is the one the app is to get: the client's own where the gate would pass
/// it on, its verified bearer token also bare under oauth2-proxy's name with `pass_access_token`, and none with
/// `protected_app`, whose credentials are the app's own and never go into an answer anyone may ask for.
#[test]
fn a_forward_auth_answer_carries_the_authorization_the_app_is_to_get() {
    use super::authn::Principal;
    let answer = |gate: &Gate, sent: &'static str, principal: Option<&Principal>| {
        let mut request = http::HeaderMap::new();
        request.insert(header::AUTHORIZATION, HeaderValue::from_static(sent));
        let mut answer = http::HeaderMap::new();
        gate.answer_credentials(&mut answer, &request, principal);
        let field = |name: &str| answer.get(name).map(|v| v.to_str().unwrap_or("?").to_owned());
        (field("authorization"), field("x-auth-request-access-token"))
    };
    let api_client = Principal::Bearer(serde_json::Map::new());
    let plain = gate_of("", "");
    assert_eq!(answer(&plain, "Basic dTpw", None), (Some("Basic dTpw".into()), None));
    assert_eq!(
        answer(&plain, "Bearer t0k", Some(&api_client)),
        (Some("Bearer t0k".into()), None)
    );
    let passing = gate_of("pass_access_token = true", "");
    assert_eq!(
        answer(&passing, "bearer t0k", Some(&api_client)),
        (Some("bearer t0k".into()), Some("t0k".into()))
    );
    assert_eq!(answer(&passing, "Basic dTpw", None), (Some("Basic dTpw".into()), None));
    let protected = gate_of("protected_app = true", "");
    assert_eq!(answer(&protected, "Basic dTpw", None), (None, None));
}

#[test]
fn a_bearer_tokens_sign_in_is_recent_only_by_its_auth_time_in_seconds() {
    use super::authn::Principal;
    let now = 1_800_000_000;
    let token = |auth_time: Option<u64>| {
        let mut claims = serde_json::Map::new();
        claims.insert("sub".into(), "u1".into());
        if let Some(at) = auth_time {
            claims.insert("auth_time".into(), at.into());
        }
        Principal::Bearer(claims)
    };
    assert!(token(Some(now - 600)).signed_in_within(600, now));
    assert!(!token(Some(now - 601)).signed_in_within(600, now));
    // None at all (a machine's token, Logto's usual access token), or one in milliseconds.
    assert!(!token(None).signed_in_within(600, now));
    assert!(!token(Some(now * 1000)).signed_in_within(600, now));
}

#[test]
fn a_sign_in_time_is_read_on_logtos_clock_and_said_as_people_say_it() {
    let claims = |pairs: &[(&str, u64)]| pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).into())).collect();
    // Logto's clock 50 s behind the gate's: the sign-in 120 s before issuing counts as 120 s ago.
    let now = 1_800_000_000;
    let issued = claims(&[("iat", now - 50), ("auth_time", now - 170)]);
    assert_eq!(crate::session::signed_in_at(&issued, now), Some(now - 120));
    assert_eq!(crate::session::signed_in_at(&claims(&[("iat", now)]), now), None);
    let millis = claims(&[("iat", now), ("auth_time", now * 1000)]);
    assert_eq!(crate::session::signed_in_at(&millis, now), None);
    for (secs, said) in [
        (600, "10 minutes"),
        (3600, "1 hour"),
        (86_400, "1 day"),
        (90, "90 seconds"),
        (5400, "90 minutes"),
        (7201, "about 2 hours"),
        (1, "1 second"),
    ] {
        assert_eq!(super::authn::for_people(secs), said);
    }
}

#[test]
fn every_field_an_app_might_read_as_a_bearer_token_is_one() {
    let read = |value: &[u8]| {
        let mut headers = http::HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_bytes(value).unwrap());
        authn::bearer_token(&headers)
            .map(|t| t.map(str::to_owned))
            .map_err(|e| e.to_string())
    };
    for (value, token) in [
        (b"Bearer abc".as_slice(), Some("abc")),
        (b"bEaReR  abc ", Some("abc")),
        (b"Bearer\tabc", Some("abc")),
        (b"Bearer \t abc", Some("abc")),
        (b"Bearer", None),
        (b"Bearer \t", None),
        (b"Basic dXNlcjpwdw==", None),
        (b"Bearerabc", None),
        (b"Bearer-x abc", None),
        (b"Bearer,abc", Some(",abc")),
    ] {
        assert_eq!(read(value), Ok(token.map(str::to_owned)), "{value:?}");
    }
    for value in [
        b"Bearer caf\xc3\xa9".as_slice(),
        b"Bearer \xff",
        b"Bearer\xc2\xa0abc",
        b"Bearer\xe9 abc",
    ] {
        assert!(read(value).is_err_and(|e| e.contains("not ASCII")), "{value:?}");
    }
}
