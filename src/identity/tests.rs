use super::*;
use serde_json::json;

#[test]
fn the_block_is_what_insert_into_leaves() {
    let c = claims();
    let mapping: Vec<(HeaderName, ClaimPath)> = [
        ("x-user", "sub"),
        ("x-email", "email"),
        ("x-roles", "roles"),
        ("x-picture", "picture"),
        ("x-user", "email"),
        ("X_User", "n"),
        ("x-evil", "evil"),
    ]
    .iter()
    .map(|(h, p)| {
        (
            HeaderName::from_bytes(h.as_bytes()).unwrap(),
            ClaimPath::parse(p).unwrap(),
        )
    })
    .collect();
    let rendered = IdentityHeaders::render(&mapping, &c);
    let mut inserted = HeaderMap::new();
    rendered.insert_into(&mut inserted);
    let mut from_block = HeaderMap::new();
    let text = std::str::from_utf8(rendered.block()).unwrap();
    assert!(text.ends_with("\r\n") && !text.contains("\r\n\r\n"));
    for line in text.split_terminator("\r\n") {
        let (n, v) = line.split_once(": ").unwrap();
        from_block.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    assert_eq!(from_block, inserted);
    assert_eq!(inserted["x-user"], "a@example.com", "the last mapping of a name wins");
    assert_eq!(inserted.get_all("x-user").iter().count(), 1);
    assert!(!inserted.contains_key("x-picture"));
    assert!(
        !inserted.contains_key("x-evil"),
        "a value with CR LF is no header at all"
    );
}

fn claims() -> Map<String, Value> {
    match json!({
        "sub": "u1", "email": "a@example.com", "roles": ["admin", "editor"], "picture": null,
        "n": 42, "evil": "x\r\nX-Injected: 1",
        "identities": {"github": {"userId": "99", "details": {"rawData": {"userInfo": {"login": "Al"}}}}}
    }) {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The header value the claim at `path` renders as, if any.
fn rendered(claims: &Map<String, Value>, path: &str) -> Option<HeaderValue> {
    ClaimPath::parse(path)
        .ok()
        .and_then(|p| p.lookup(claims).and_then(header_value))
}

#[test]
fn claim_values_render_as_header_values() {
    let c = claims();
    let get = |p: &str| rendered(&c, p);
    assert_eq!(get("sub").unwrap(), "u1");
    assert_eq!(get("roles").unwrap(), "admin,editor");
    assert_eq!(get("n").unwrap(), "42");
    assert_eq!(get("identities.github.userId").unwrap(), "99");
    assert_eq!(get("identities.github.details.rawData.userInfo.login").unwrap(), "Al");
    assert!(get("picture").is_none(), "null claims send no header");
    assert!(get("missing").is_none());
    assert!(get("evil").is_none(), "CR/LF can never reach a header");
    assert!(get("identities").is_none(), "objects are not flattened");
}

#[test]
fn a_list_element_that_would_read_as_two_is_left_out() {
    let c = match json!({"groups": ["dev", "ops,admin", "", " admin", "admin\t", "q a"], "only": ["a,b"]}) {
        Value::Object(m) => m,
        _ => unreachable!(),
    };
    let get = |p: &str| rendered(&c, p);
    assert_eq!(get("groups").unwrap(), "dev,q a");
    assert!(get("only").is_none(), "no element left: no header");
}

#[test]
fn other_auth_proxies_fields_are_managed_whatever_the_mapping() {
    let only_grafana = [(
        HeaderName::from_static("x-webauth-user"),
        ClaimPath::parse("username").unwrap(),
    )];
    let managed = ManagedHeaders::new(&only_grafana, &["x-request-id"], &[]);
    for name in [
        "x-webauth-user",
        "x-request-id",
        "x_forwarded_user",
        "X-Forwarded-Groups",
        "remote-user",
        "x-remote-group",
        "x-remote-extra-scopes",
        "X_Pomerium_Claim_Email",
        "x-authentik-username",
        "x-ms-token-aad-access-token",
        "x-vouch-idp-claims-groups",
    ] {
        assert!(managed.contains(name), "{name}");
    }
    for name in [
        "x-app-header",
        "remote-users",
        "x-remote-extra-",
        "x-authentik",
        "accept",
        "user-agent",
        "x-pomerium-claim",
        "",
        &"x".repeat(300),
    ] {
        assert!(!managed.contains(name), "{name}");
    }
    let long = format!("x-{}", "a".repeat(200));
    let managed = ManagedHeaders::new(&[], &[long.as_str()], &[]);
    assert!(managed.contains(&long.to_ascii_uppercase()));
    assert!(!managed.contains(&format!("x-{}", "a".repeat(199))));
}

#[test]
fn kept_fields_pass_only_as_spelled() {
    let kept = [
        HeaderName::from_static("cf-access-authenticated-user-email"),
        HeaderName::from_static("x-pomerium-claim-email"),
    ];
    let managed = ManagedHeaders::new(&default_headers(), &[], &kept);
    for name in ["cf-access-authenticated-user-email", "x-pomerium-claim-email"] {
        assert!(!managed.contains(name), "{name}");
    }
    for name in [
        "cf_access_authenticated_user_email",
        "x-pomerium-claim_email",
        "x-pomerium-claim-groups",
        "cf-access-jwt-assertion",
        "remote-user",
        "x-forwarded-user",
    ] {
        assert!(managed.contains(name), "{name}");
    }
    assert!(is_foreign_identity_name("remote-user"));
    assert!(is_foreign_identity_name("x-pomerium-claim-email"));
    for name in [
        "x-pomerium-claim-",
        "x-request-id",
        "x-logto-gate-assertion",
        "remote_user",
    ] {
        assert!(!is_foreign_identity_name(name), "{name}");
    }
}

#[test]
fn spoofed_identity_headers_are_stripped_in_every_spelling() {
    let managed = ManagedHeaders::new(&default_headers(), &[], &[]);
    let mut h = HeaderMap::new();
    for (name, value) in [
        ("x-forwarded-user", "mallory"),
        ("X_Forwarded_User", "mallory"),
        ("x-forwarded_email", "m@evil"),
        ("X-FORWARDED-GROUPS", "admin"),
        ("x-app-header", "kept"),
    ] {
        h.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_static("x"),
        );
        let _ = value;
    }
    h.append("x-forwarded-user", HeaderValue::from_static("second"));
    strip_spoofed_identity(&mut h, &managed);
    assert_eq!(h.len(), 1, "{h:?}");
    assert!(h.contains_key("x-app-header"));
}

#[test]
fn prune_keeps_only_the_paths_asked_for() {
    let c = claims();
    let paths: Vec<ClaimPath> = [
        "sub",
        "picture",
        "identities.github.details.rawData.userInfo.login",
        "nope",
    ]
    .iter()
    .map(|p| ClaimPath::parse(p).unwrap())
    .collect();
    let kept = prune(&c, &paths);
    assert_eq!(
        Value::Object(kept),
        serde_json::json!({"sub": "u1",
            "identities": {"github": {"details": {"rawData": {"userInfo": {"login": "Al"}}}}}})
    );
}

#[test]
fn bad_claim_paths_are_refused() {
    assert!(ClaimPath::parse("").is_err());
    assert!(ClaimPath::parse("a..b").is_err());
    assert!(ClaimPath::parse(".a").is_err());
}

#[test]
fn an_unverified_email_renders_no_header_and_a_verified_or_unmarked_one_does() {
    let mapping = vec![
        (HeaderName::from_static("x-email"), ClaimPath::parse("email").unwrap()),
        (HeaderName::from_static("x-user"), ClaimPath::parse("sub").unwrap()),
    ];
    for (verified, sent) in [(json!(false), false), (json!(true), true), (Value::Null, true)] {
        let Value::Object(c) = json!({"sub": "u1", "email": "a@example.com", "email_verified": verified}) else {
            unreachable!()
        };
        let mut headers = HeaderMap::new();
        IdentityHeaders::render(&mapping, &c).insert_into(&mut headers);
        assert_eq!(headers.contains_key("x-email"), sent, "{verified}");
        assert_eq!(headers["x-user"], "u1");
    }
}
