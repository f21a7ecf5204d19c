use super::*;
use crate::config::{Secret, StoreKind};
use std::time::Duration;

fn codec_with(secrets: &[&str]) -> CookieCodec {
    codec_named(secrets, "logto_gate")
}

fn codec_named(secrets: &[&str], cookie_name: &str) -> CookieCodec {
    CookieCodec::new(&session_config(secrets, cookie_name))
}

fn session_config(secrets: &[&str], cookie_name: &str) -> SessionConfig {
    SessionConfig {
        secrets: secrets.iter().map(|s| Secret::new((*s).to_owned())).collect(),
        secret_files: Vec::new(),
        cookie_name: cookie_name.to_owned(),
        lifetime: Duration::from_secs(3600),
        idle_timeout: None,
        tunnel_check_interval: Duration::from_secs(15),
        tunnel_grant_check_interval: Duration::from_secs(3600),
        secure_cookies: true,
        store: StoreKind::Cookie,
        redis_url: None,
        redis_key_prefix: "t:".into(),
        redis_mode: crate::config::RedisMode::Standalone,
        redis_urls: Vec::new(),
        redis_sentinel_master: None,
        cookie_domain: None,
        revocation_file: None,
        sign_out_clear_site_data: None,
        keep_url_fragment: false,
    }
}

fn codec(secret: &str) -> CookieCodec {
    codec_with(&[secret])
}

fn request_with(cookie: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(COOKIE, HeaderValue::from_str(cookie).unwrap());
    h
}

/// The `name=value` part of each Set-Cookie.
fn pairs_of(set: &[HeaderValue]) -> Vec<String> {
    set.iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .collect()
}

/// A sign-in attempt of `c`, started at time 100.
fn an_attempt(c: &CookieCodec) -> SignInAttempt {
    c.new_attempt("/reports?x=1".into(), 100).unwrap()
}

/// The value a Set-Cookie sets.
fn value_of(set_cookie: &HeaderValue) -> String {
    let pair = set_cookie.to_str().unwrap().split(';').next().unwrap();
    pair.split_once('=').unwrap().1.to_owned()
}

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const NEW_SECRET: &str = "fedcba9876543210fedcba9876543210-new";

#[test]
fn session_cookie_round_trips_and_is_httponly_lax_secure() {
    let c = codec(SECRET);
    let set = c.session_cookies("hello".into(), 9800, &[]).unwrap();
    assert_eq!(set.len(), 1);
    let text = set[0].to_str().unwrap();
    assert!(text.contains("HttpOnly") && text.contains("SameSite=Lax") && text.contains("Secure"));
    assert!(text.contains("Max-Age=9800"));
    let opened = c
        .read_session_cookie(&request_with(&format!("a=b; {}", pairs_of(&set)[0])))
        .unwrap();
    assert_eq!(opened.copies.len(), 1);
    assert_eq!(opened.copies[0].plaintext, "hello");
    assert!(!opened.copies[0].opened_with_old_key);
}

#[test]
fn tampered_truncated_or_foreign_cookies_do_not_open() {
    let c = codec(SECRET);
    let pair = pairs_of(&c.session_cookies("hello".into(), 60, &[]).unwrap())[0].clone();
    let v = pair.split_once('=').unwrap().1.to_owned();
    let mut flipped = v.clone().into_bytes();
    flipped[20] = if flipped[20] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    for bad in [flipped.as_str(), &v[..v.len() - 4], "", "garbage", "%%%"] {
        assert!(c
            .read_session_cookie(&request_with(&format!("logto_gate={bad}")))
            .is_none());
    }
    let other = codec("another-secret-another-secret-another");
    assert!(other.read_session_cookie(&request_with(&pair)).is_none());
}

#[test]
fn rotated_secrets_open_old_cookies_and_seal_with_the_first() {
    let old = codec(SECRET);
    let pair = pairs_of(&old.session_cookies("s".into(), 60, &[]).unwrap())[0].clone();
    let rotated = codec_with(&[NEW_SECRET, SECRET]);
    let opened = rotated.read_session_cookie(&request_with(&pair)).unwrap();
    assert!(opened.copies[0].opened_with_old_key);
    let resealed = pairs_of(&rotated.session_cookies("s".into(), 60, &[]).unwrap())[0].clone();
    assert!(!rotated.read_session_cookie(&request_with(&resealed)).unwrap().copies[0].opened_with_old_key);
    assert!(
        codec(NEW_SECRET).read_session_cookie(&request_with(&pair)).is_none(),
        "a removed secret no longer opens"
    );
}

#[test]
fn large_sessions_are_chunked_and_stale_chunks_cleared() {
    let c = codec(SECRET);
    let big = "x".repeat(9000);
    let set = c.session_cookies(big.clone(), 60, &[]).unwrap();
    let pairs = pairs_of(&set);
    assert_eq!(pairs.len(), 4, "{pairs:?}");
    assert!(pairs
        .iter()
        .enumerate()
        .all(|(i, p)| p.starts_with(&format!("logto_gate.{i}="))));
    assert!(set.iter().all(|v| v.len() <= MAX_COOKIE_BYTES));
    let header = pairs.join("; ");
    let opened = c.read_session_cookie(&request_with(&header)).unwrap();
    assert_eq!(opened.copies[0].plaintext, big);
    // Reordered chunks do not open.
    let swapped = format!(
        "{}; {}",
        pairs[1].replace("logto_gate.1", "logto_gate.0"),
        pairs[0].replace("logto_gate.0", "logto_gate.1")
    );
    assert!(c
        .read_session_cookie(&request_with(&format!("{swapped}; {}; {}", pairs[2], pairs[3])))
        .is_none());
    // Back to a small session: one cookie, and every chunk the browser still has is cleared.
    let small = c.session_cookies("small".into(), 60, &opened.names_sent).unwrap();
    let texts: Vec<&str> = small.iter().map(|v| v.to_str().unwrap()).collect();
    assert!(texts[0].starts_with("logto_gate="));
    for i in 0..4 {
        assert!(
            texts
                .iter()
                .any(|t| t.starts_with(&format!("logto_gate.{i}=;")) && t.contains("Max-Age=0")),
            "{texts:?}"
        );
    }
}

#[test]
fn a_value_moved_to_another_cookie_name_does_not_open() {
    let c = codec(SECRET);
    let attempt = an_attempt(&c);
    let state = attempt.state.clone();
    let attempt_value = value_of(&c.attempt_cookie(&attempt).unwrap());
    assert!(c
        .read_session_cookie(&request_with(&format!("logto_gate={attempt_value}")))
        .is_none());
    let name = c.attempt_cookie_name(&state);
    assert_eq!(
        c.read_attempt(&request_with(&format!("{name}={attempt_value}")), &state, 200),
        Some(attempt)
    );
    // Another state sharing the first 16 characters does not match the attempt inside.
    let forged = format!("{}{}", &state[..16], "x".repeat(27));
    assert!(c
        .read_attempt(&request_with(&format!("{name}={attempt_value}")), &forged, 200)
        .is_none());
    // Good until it expires, as long as Logto keeps a sign-in open.
    assert!(c
        .read_attempt(&request_with(&format!("{name}={attempt_value}")), &state, 100 + 3599)
        .is_some());
    assert!(c
        .read_attempt(&request_with(&format!("{name}={attempt_value}")), &state, 100 + 3600)
        .is_none());
}

/// An attempt's cookie holds the return path and start time only: its nonce and PKCE verifier are derived from
/// the state with the key (43 characters, unreserved, the same again at the callback, different for another state
/// or another secret), so many attempts fit in one `Cookie` field.
#[test]
fn attempts_derive_their_secrets_and_keep_small_cookies() {
    let c = codec(SECRET);
    let one = an_attempt(&c);
    let two = an_attempt(&c);
    assert_ne!(one.state, two.state);
    assert!(is_well_formed_state(&one.state), "{}", one.state);
    for a in [&one, &two] {
        for secret in [&a.nonce, &a.pkce_verifier, &a.state] {
            assert_eq!(secret.len(), 43, "{secret}");
            assert!(secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        }
        assert_ne!(a.nonce, a.pkce_verifier);
    }
    assert_ne!(one.nonce, two.nonce);
    assert_ne!(one.pkce_verifier, two.pkce_verifier);
    let other = codec(NEW_SECRET);
    let set = c.attempt_cookie(&one).unwrap();
    let name = c.attempt_cookie_name(&one.state);
    let pair = format!("{name}={}", value_of(&set));
    assert!(pair.len() < 160, "{} bytes: {pair}", pair.len());
    assert!(other.read_attempt(&request_with(&pair), &one.state, 200).is_none());

    // After a secret rotation the attempt opens with the older key and derives with it too.
    let rotated = codec_with(&[NEW_SECRET, SECRET]);
    assert_eq!(rotated.read_attempt(&request_with(&pair), &one.state, 200), Some(one));
}

/// An attempt cookie written before secrets were derived (the whole attempt inside, sealed for its name) still
/// finishes its sign-in, with its own nonce and verifier, and only for its whole state.
#[test]
fn an_attempt_cookie_of_the_earlier_format_still_finishes() {
    let c = codec(SECRET);
    let state = "s".repeat(43);
    let whole = SignInAttempt {
        state: state.clone(),
        nonce: "n".into(),
        pkce_verifier: "v".into(),
        return_to: "/".into(),
        created: 100,
        max_age: None,
    };
    let name = c.attempt_cookie_name(&state);
    let value = c.seal(&name, serde_json::to_string(&whole).unwrap()).unwrap();
    let request = request_with(&format!("{name}={value}"));
    assert_eq!(c.read_attempt(&request, &state, 200), Some(whole));
    let forged = format!("{}{}", &state[..16], "x".repeat(27));
    assert!(c.read_attempt(&request, &forged, 200).is_none());
}

#[test]
fn gate_cookies_are_stripped_and_app_cookies_kept() {
    let c = codec(SECRET);
    let mut h =
        request_with("app=1; logto_gate=secret; logto_gate.0=c0; logto_gate_signin_abc=x; logto_gate.x=app; other=2");
    h.append(COOKIE, HeaderValue::from_static("third=3"));
    c.strip_gate_cookies(&mut h);
    assert_eq!(h.get(COOKIE).unwrap(), "app=1; logto_gate.x=app; other=2; third=3");
    let mut only_gate = request_with("logto_gate=secret");
    c.strip_gate_cookies(&mut only_gate);
    assert!(only_gate.get(COOKIE).is_none());
    // Only the gate's cookies, however spaced, and whatever their values hold: the field goes whole.
    for field in [
        b" logto_gate=a ; logto_gate_signin_x=b;".as_slice(),
        b"logto_gate=\xff\xfe",
        b"logto_gate.0=a;logto_gate.1",
    ] {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_bytes(field).unwrap());
        c.strip_gate_cookies(&mut h);
        assert!(h.get(COOKIE).is_none(), "{field:?}");
    }
    // An app cookie next to them, or a field that is only separators: the full path decides.
    for (field, left) in [
        ("logto_gate=a; app=1", Some("app=1")),
        ("logto_gate.x=app", Some("logto_gate.x=app")),
        (" ; ", Some(" ; ")),
    ] {
        let mut h = request_with(field);
        c.strip_gate_cookies(&mut h);
        assert_eq!(h.get(COOKIE).map(|v| v.to_str().unwrap()), left, "{field}");
    }
    // A field that is not all ASCII: the gate's cookies never reach the upstream, the app's go on as they came
    // (UTF-8, or any byte a field value may hold), a name that is not UTF-8 but begins as an attempt cookie's too.
    for (field, left) in [
        (b"app=\xff; logto_gate=a".as_slice(), Some(b"app=\xff".as_slice())),
        (
            "lang=espa\u{f1}ol;logto_gate.0=a; logto_gate.1=b ;who=Jos\u{e9}".as_bytes(),
            Some("lang=espa\u{f1}ol; who=Jos\u{e9}".as_bytes()),
        ),
        (b"logto_gate_signin_\xff=x; \xfe=1", Some(b"\xfe=1")),
        (b"logto_gate=\xff; logto_gate_signin_\xe9\xff", None),
    ] {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, HeaderValue::from_bytes(field).unwrap());
        c.strip_gate_cookies(&mut h);
        assert_eq!(h.get(COOKIE).map(HeaderValue::as_bytes), left, "{field:?}");
    }
}

#[test]
fn an_app_cookie_that_is_not_ascii_hides_no_other_pair() {
    let mut h = HeaderMap::new();
    h.insert(
        COOKIE,
        HeaderValue::from_bytes("lang=espa\u{f1}ol; logto_gate=abc; x=\u{e9}; y=\"2\"".as_bytes()).unwrap(),
    );
    h.append(COOKIE, HeaderValue::from_bytes(b"z=\xff; w=1").unwrap());
    assert_eq!(
        cookie_pairs(&h).collect::<Vec<_>>(),
        [("logto_gate", "abc"), ("y", "2"), ("w", "1")]
    );
}

#[test]
fn raw_pairs_are_the_text_pairs_as_bytes() {
    for field in [
        "a=1; b=2",
        " a = 1 ;b=\"2\";;c",
        "x=\"\"q\"\"; y==3; =4; z=",
        "logto_gate=v; logto_gate.0=w",
        "",
        ";;;",
    ] {
        let h = request_with(field);
        let text: Vec<(&[u8], &[u8])> = cookie_pairs(&h).map(|(n, v)| (n.as_bytes(), v.as_bytes())).collect();
        let raw: Vec<(&[u8], &[u8])> = raw_cookie_pairs(&h).collect();
        assert_eq!(raw, text, "{field}");
    }
}

/// RFC 6265bis §4.1.3: browsers drop a `__Secure-` cookie that is not `Secure`, and a `__Host-` one that is not
/// `Secure`, has a `Domain` or a `Path` other than `/`. Every cookie a `__Host-` named gate sets or clears keeps
/// the promise of its name, the attempt cookies (scoped to the callback) by being `__Secure-` ones.
#[test]
fn cookies_keep_the_promise_of_a_host_prefix() {
    let c = codec_named(&[SECRET], "__Host-gate");
    let attempt = an_attempt(&c);
    let state = attempt.state.clone();
    let mut set = vec![c.attempt_cookie(&attempt).unwrap()];
    set.extend(c.clear_attempt_cookie(&state));
    set.extend(c.session_cookies("small".into(), 60, &[]).unwrap());
    let large = c.session_cookies("x".repeat(9000), 60, &[]).unwrap();
    assert!(large.len() > 1, "chunked");
    set.extend(large);
    set.extend(c.clear_session_cookies(&request_with("__Host-gate=a; __Host-gate.0=b")));
    for header in &set {
        let text = header.to_str().unwrap();
        let name = text.split('=').next().unwrap();
        let attributes: Vec<&str> = text.split(';').skip(1).map(str::trim).collect();
        assert!(attributes.contains(&"Secure"), "{text}");
        if name.starts_with("__Host-") {
            assert!(attributes.contains(&"Path=/"), "{text}");
            assert!(!attributes.iter().any(|a| a.starts_with("Domain")), "{text}");
        } else {
            assert!(name.starts_with("__Secure-gate_signin_"), "{text}");
        }
        assert!(c.is_gate_cookie(name), "{name}");
    }
    let name = c.attempt_cookie_name(&state);
    let value = value_of(&set[0]);
    assert_eq!(
        c.read_attempt(&request_with(&format!("{name}={value}")), &state, 200),
        Some(attempt)
    );
}

/// A browser holding the session cookie for the host and for a domain sends both copies under one name; each that
/// opens is returned, single or chunked, whatever the order and however many chunks each copy has.
#[test]
fn every_copy_of_a_session_cookie_held_twice_opens() {
    let c = codec(SECRET);
    let one = |plaintext: &str| pairs_of(&c.session_cookies(plaintext.to_owned(), 60, &[]).unwrap()).join("; ");
    let plaintexts = |header: &str| -> Vec<String> {
        let opened = c.read_session_cookie(&request_with(header)).unwrap();
        opened.copies.into_iter().map(|o| o.plaintext).collect()
    };
    assert_eq!(plaintexts(&format!("{}; {}", one("old"), one("new"))), ["old", "new"]);
    let opened = c
        .read_session_cookie(&request_with(&format!("logto_gate=junk; {}", one("new"))))
        .unwrap();
    assert_eq!(opened.copies.len(), 1);
    assert_eq!(opened.names_sent, ["logto_gate"]);
    assert!(
        !opened.stale_copy,
        "without session.cookie_domain no copy is the gate's to remove"
    );

    let (short, long) = ("s".repeat(9000), "l".repeat(14000));
    assert!(one(&short).matches("logto_gate.").count() < one(&long).matches("logto_gate.").count());
    for (first, second) in [(&short, &long), (&long, &short)] {
        let found = plaintexts(&format!("{}; {}", one(first), one(second)));
        assert!(found.contains(first) && found.contains(second), "{}", found.len());
    }
    // A single copy beside a chunked one.
    let found = plaintexts(&format!("{}; {}", one(&short), one("small")));
    assert!(found.contains(&short) && found.contains(&"small".to_owned()));

    // More copies than a browser could hold cost no more than three decryptions, of the newest (sent last).
    let many = (0..6).map(|i| one(&format!("copy {i}"))).collect::<Vec<_>>().join("; ");
    assert_eq!(plaintexts(&many), ["copy 3", "copy 4", "copy 5"]);
}

/// With `session.cookie_domain`, a name sent twice means a copy for the host alone is among them, which the gate
/// no longer writes: it is marked for removal, and sign-out removes the host's copies too.
#[test]
fn with_a_cookie_domain_the_hosts_copy_is_removed() {
    let mut config = SessionConfig {
        cookie_domain: Some("example.com".into()),
        ..session_config(&[SECRET], "logto_gate")
    };
    let c = CookieCodec::new(&config);
    let one = pairs_of(&c.session_cookies("x".into(), 60, &[]).unwrap()).join("; ");
    let opened = c.read_session_cookie(&request_with(&one)).unwrap();
    assert!(!opened.stale_copy);
    let twice = c.read_session_cookie(&request_with(&format!("{one}; {one}"))).unwrap();
    assert!(twice.stale_copy);
    let clear = c.clear_host_copies(&twice.names_sent);
    assert_eq!(clear.len(), 1);
    let text = clear[0].to_str().unwrap();
    assert!(text.starts_with("logto_gate=;") && text.contains("Max-Age=0") && !text.contains("Domain"));
    let out = c.clear_session_cookies(&request_with(&one));
    let domains: Vec<bool> = out
        .iter()
        .map(|v| v.to_str().unwrap().contains("; Domain=example.com"))
        .collect();
    assert_eq!(domains, [true, false]);

    config.cookie_domain = None;
    let host_only = CookieCodec::new(&config);
    assert!(host_only.clear_host_copies(&twice.names_sent).is_empty());
    assert_eq!(host_only.clear_session_cookies(&request_with(&one)).len(), 1);
}

#[test]
fn a_sign_out_return_opens_only_as_sealed_by_this_gate_and_only_for_a_while() {
    let c = codec("0123456789abcdef0123456789abcdef-one");
    let now = 1_000_000;
    let sealed = c.seal_sign_out_return("/goodbye?x=1", now).expect("sealed");
    assert_eq!(c.open_sign_out_return(&sealed, now).as_deref(), Some("/goodbye?x=1"));
    assert_eq!(
        c.open_sign_out_return(&sealed, now + SIGN_OUT_RETURN_TTL_SECS - 1)
            .as_deref(),
        Some("/goodbye?x=1")
    );
    assert_eq!(
        c.open_sign_out_return(&sealed, now + SIGN_OUT_RETURN_TTL_SECS),
        None,
        "expired"
    );
    // Another gate's key, a changed byte, a plain path, an overlong value: nothing.
    let other = codec("0123456789abcdef0123456789abcdef-two");
    assert_eq!(other.open_sign_out_return(&sealed, now), None);
    let mut flipped = sealed.clone().into_bytes();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    assert_eq!(c.open_sign_out_return(&String::from_utf8(flipped).unwrap(), now), None);
    assert_eq!(c.open_sign_out_return("/goodbye", now), None);
    assert_eq!(c.open_sign_out_return(&"A".repeat(5000), now), None);
    // A sealed session or attempt value is not a sign-out return, nor the other way round.
    let session_value = c.seal("logto_gate", format!("{} /x", now + 60)).unwrap();
    assert_eq!(c.open_sign_out_return(&session_value, now), None);
    assert!(c.open("logto_gate", &sealed).is_none());
    // After a secret rotation the old gate's return still opens (`secrets = ["new", "old"]`).
    let rotated = codec_with(&[
        "0123456789abcdef0123456789abcdef-two",
        "0123456789abcdef0123456789abcdef-one",
    ]);
    assert_eq!(
        rotated.open_sign_out_return(&sealed, now).as_deref(),
        Some("/goodbye?x=1")
    );
}

/// A session stored outside the cookie opens under the label it was sealed under, with any configured key (saying
/// which), and nowhere else: not under another session's label, not as a cookie, not once its key is gone; and a
/// cookie value or plain text does not open as a stored session.
#[test]
fn stored_sessions_open_only_under_their_label() {
    const OLD: &str = "an-old-session-secret-of-at-least-32-bytes";
    const NEW: &str = "a-new-session-secret-of-at-least-32-bytes!";
    let old = codec(OLD);
    let sealed = old.seal_stored("t:session:a", "{\"sub\":\"alice\"}".into()).unwrap();
    assert!(!sealed.contains("alice"));
    assert_eq!(
        old.open_stored("t:session:a", &sealed),
        Some(("{\"sub\":\"alice\"}".into(), false))
    );
    assert_eq!(old.open_stored("t:session:b", &sealed), None, "moved to another key");
    assert_eq!(old.open("logto_gate", &sealed), None, "taken for a cookie");
    let cookie = old.seal("logto_gate", "{\"sub\":\"alice\"}".into()).unwrap();
    assert_eq!(
        old.open_stored("t:session:a", &cookie),
        None,
        "a cookie taken for a stored session"
    );
    assert_eq!(
        old.open_stored("t:session:a", "{\"sub\":\"alice\"}"),
        None,
        "plain text"
    );

    let rotated = codec_with(&[NEW, OLD]);
    assert_eq!(
        rotated.open_stored("t:session:a", &sealed),
        Some(("{\"sub\":\"alice\"}".into(), true))
    );
    let resealed = rotated
        .seal_stored("t:session:a", "{\"sub\":\"alice\"}".into())
        .unwrap();
    assert_eq!(
        codec(NEW).open_stored("t:session:a", &resealed).map(|o| o.1),
        Some(false)
    );
    assert_eq!(codec(NEW).open_stored("t:session:a", &sealed), None, "the old key gone");
}
