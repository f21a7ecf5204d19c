use super::*;
use serde_json::json;

fn enc(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[test]
fn none_and_hmac_algorithms_are_refused_before_any_key_is_looked_at() {
    for alg in ["none", "HS256", "HS384", "HS512", "RS384", "EdDSA", ""] {
        let token = format!("{}.{}.c2ln", enc(&json!({"alg": alg})), enc(&json!({"sub": "x"})));
        assert!(
            matches!(UnverifiedJwt::parse(&token), Err(JwtError::AlgorithmNotAllowed(_))),
            "{alg}"
        );
    }
    let unsigned = format!("{}.{}.", enc(&json!({"alg": "none"})), enc(&json!({"sub": "x"})));
    assert!(UnverifiedJwt::parse(&unsigned).is_err());
}

#[test]
fn malformed_tokens_are_refused() {
    for bad in ["", "a", "a.b", "a.b.c.d", "!!.!!.!!", &"a".repeat(MAX_TOKEN_BYTES + 1)] {
        assert!(UnverifiedJwt::parse(bad).is_err(), "{bad}");
    }
    let crit = format!(
        "{}.{}.c2ln",
        enc(&json!({"alg": "ES384", "crit": ["exp"]})),
        enc(&json!({}))
    );
    assert!(UnverifiedJwt::parse(&crit).is_err());
}

#[test]
fn an_unknown_kid_is_reported_so_the_key_set_can_be_refreshed() {
    let token = format!(
        "{}.{}.c2ln",
        enc(&json!({"alg": "ES384", "kid": "new"})),
        enc(&json!({}))
    );
    let jwt = UnverifiedJwt::parse(&token).unwrap();
    let empty: CoreJsonWebKeySet = serde_json::from_value(json!({"keys": []})).unwrap();
    assert_eq!(jwt.verify(&empty), Err(JwtError::UnknownKey("new".into())));
}

fn claims(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[test]
fn id_token_claims_are_checked_with_leeway() {
    let want = IdTokenExpectations {
        issuer: "https://t/oidc",
        client_id: "app",
        nonce: Some("n1"),
        now: 1000,
        leeway: 60,
    };
    let good = json!({"iss": "https://t/oidc", "aud": "app", "exp": 1001, "iat": 1000, "nonce": "n1",
                      "sub": "u", "picture": null, "updated_at": 1795696045393u64});
    assert!(check_id_token_claims(&claims(good.clone()), &want).is_ok());
    let within_leeway = json!({"exp": 950, "iat": 1050});
    let mut g = claims(good.clone());
    g.extend(claims(within_leeway));
    assert!(check_id_token_claims(&g, &want).is_ok());
    for (field, value) in [
        ("iss", json!("https://evil/oidc")),
        ("aud", json!("other")),
        ("aud", json!(["other", "app"])),
        ("exp", json!(939)),
        ("exp", json!("soon")),
        ("iat", json!(1061)),
        ("nonce", json!("n2")),
        ("nonce", Value::Null),
        ("azp", json!("other-app")),
        ("sub", json!("")),
    ] {
        let mut c = claims(good.clone());
        c.insert(field.into(), value.clone());
        assert!(check_id_token_claims(&c, &want).is_err(), "{field}={value}");
    }
    // Every REQUIRED claim (OIDC Core §2), absent or null, is refused with its name in the error.
    for required in ["iss", "sub", "aud", "exp", "iat"] {
        for absent in [None, Some(Value::Null)] {
            let mut c = claims(good.clone());
            match &absent {
                None => c.remove(required),
                Some(v) => c.insert(required.into(), v.clone()),
            };
            let err = check_id_token_claims(&c, &want).expect_err(required);
            assert_eq!(err, JwtError::Claim(format!("{required} is missing")), "{absent:?}");
        }
    }
}

#[test]
fn logout_tokens_are_checked_as_the_spec_says() {
    let event = json!({"http://schemas.openid.net/event/backchannel-logout": {}});
    let good = json!({"iss": "https://t/oidc", "aud": "app", "iat": 1000, "jti": "j1", "sid": "s1", "events": event});
    let check = |v: &Value| check_logout_token_claims(&claims(v.clone()), "https://t/oidc", "app", 1000, 300, 60);
    assert!(check(&good).is_ok());
    for (field, value) in [
        ("iss", json!("https://evil/oidc")),
        ("aud", json!("other")),
        ("iat", json!(100)),
        ("iat", json!(2000)),
        ("jti", json!("")),
        ("events", json!({})),
        (
            "events",
            json!({"http://schemas.openid.net/event/backchannel-logout": "yes"}),
        ),
        ("nonce", json!("n")),
        ("sid", Value::Null),
    ] {
        let mut c = good.clone();
        c[field] = value.clone();
        assert!(check(&c).is_err(), "{field}={value}");
    }
    let mut only_sub = good.clone();
    only_sub.as_object_mut().unwrap().remove("sid");
    only_sub["sub"] = json!("u1");
    assert!(check(&only_sub).is_ok());
}

#[test]
fn the_typ_header_must_fit_the_kind_of_token() {
    let typed = |typ: Value| {
        let mut header = json!({"alg": "ES384"});
        if !typ.is_null() {
            header["typ"] = typ;
        }
        format!("{}.{}.c2ln", enc(&header), enc(&json!({})))
    };
    let kind_ok = |typ: Value, kind: TokenKind| {
        let token = typed(typ);
        UnverifiedJwt::parse(&token).and_then(|j| j.check_kind(kind)).is_ok()
    };
    // As Logto types them: ID tokens not at all, access tokens at+jwt, logout tokens logout+jwt.
    assert!(kind_ok(Value::Null, TokenKind::Id));
    assert!(kind_ok(json!("JWT"), TokenKind::Id));
    assert!(kind_ok(json!("at+jwt"), TokenKind::Access));
    assert!(kind_ok(json!("application/AT+JWT"), TokenKind::Access));
    assert!(kind_ok(json!("logout+jwt"), TokenKind::Logout));
    assert!(kind_ok(Value::Null, TokenKind::Logout));
    assert!(kind_ok(json!("JWT"), TokenKind::Logout));
    // Another kind's type, or none where RFC 9068 requires one.
    for (typ, kind) in [
        (json!("at+jwt"), TokenKind::Id),
        (json!("logout+jwt"), TokenKind::Id),
        (json!("application/at+jwt"), TokenKind::Logout),
        (json!("token-introspection+jwt"), TokenKind::Logout),
        (Value::Null, TokenKind::Access),
        (json!("JWT"), TokenKind::Access),
        (json!("logout+jwt"), TokenKind::Access),
        (json!("at+jwt "), TokenKind::Access),
    ] {
        let token = typed(typ.clone());
        let err = UnverifiedJwt::parse(&token).and_then(|j| j.check_kind(kind));
        assert!(matches!(err, Err(JwtError::Type(_))), "{typ} as {kind:?}: {err:?}");
    }
    let message = UnverifiedJwt::parse(&typed(json!("JWT")))
        .and_then(|j| j.check_kind(TokenKind::Access))
        .unwrap_err()
        .to_string();
    assert!(message.contains("at+jwt") && message.contains("\"JWT\""), "{message}");
    // A typ that is not a string is malformed.
    assert!(matches!(
        UnverifiedJwt::parse(&typed(json!(7))),
        Err(JwtError::Malformed(_))
    ));
}

#[test]
fn extreme_timestamps_are_compared_without_overflow() {
    let far = claims(json!({"iss": "https://t/oidc", "exp": u64::MAX, "iat": 1000, "nbf": u64::MAX}));
    assert!(check_common_with(&far, "https://t/oidc", 1000, 300).is_err());
    let far = claims(json!({"iss": "https://t/oidc", "exp": 1e300, "iat": 1000}));
    assert_eq!(check_common_with(&far, "https://t/oidc", 1000, 300), Ok(()));
    let logout = claims(
        json!({"iss": "i", "aud": "app", "iat": 1000, "exp": u64::MAX, "jti": "j", "sub": "u",
                               "events": {"http://schemas.openid.net/event/backchannel-logout": {}}}),
    );
    assert_eq!(
        check_logout_token_claims(&logout, "i", "app", 1000, u64::MAX, 300),
        Ok(())
    );
}

/// RFC 8693 §4.1: the actor is the outer `act`'s `sub`; an `act` that does not say who acts refuses the token.
#[test]
fn the_actor_is_the_outer_act_claims_sub() {
    assert_eq!(actor(&claims(json!({"sub": "u1"}))).unwrap(), None);
    let acted = claims(json!({"sub": "u1", "act": {"sub": "u_agent"}}));
    assert_eq!(actor(&acted).unwrap(), Some("u_agent"));
    let chain = claims(json!({"sub": "u1", "act": {"sub": "u_now", "act": {"sub": "u_before"}}}));
    assert_eq!(actor(&chain).unwrap(), Some("u_now"));
    let long = "a".repeat(256);
    for (act, why) in [
        (json!("u_agent"), "not an object"),
        (json!(null), "not an object"),
        (json!({}), "no sub"),
        (json!({"sub": 7}), "no sub"),
        (json!({"sub": ""}), "identifier"),
        (json!({"sub": "u agent"}), "identifier"),
        (json!({"sub": "u_\u{e9}"}), "identifier"),
        (json!({"sub": "u\r\nx-forwarded-user: admin"}), "identifier"),
        (json!({"sub": long}), "identifier"),
    ] {
        let err = actor(&claims(json!({"sub": "u1", "act": act}))).unwrap_err();
        assert!(err.to_string().contains(why), "{act}: {err}");
    }
}
