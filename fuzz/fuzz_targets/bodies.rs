//! The fuzzed code paths, shared by the cargo-fuzz targets and the stable smoke test. Each function takes
//! arbitrary bytes, must never panic, and checks the invariants its parser promises.
#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::Duration;

use http::header::{HeaderMap, HeaderValue, COOKIE};
use logto_gate::config::{Config, Secret, SessionConfig, StoreKind};
use logto_gate::oidc::jwt::{TokenKind, UnverifiedJwt};
use logto_gate::policy::path::normalise;
use logto_gate::proxy::OwnAddress;
use logto_gate::return_path::ReturnPath;
use logto_gate::session::{CookieCodec, Session};

fn codec() -> &'static CookieCodec {
    static C: OnceLock<CookieCodec> = OnceLock::new();
    C.get_or_init(|| {
        CookieCodec::new(&SessionConfig {
            secrets: vec![Secret::new("fuzzing-secret-fuzzing-secret-0123456789".into())],
            secret_files: Vec::new(),
            cookie_name: "logto_gate".into(),
            lifetime: Duration::from_secs(3600),
            idle_timeout: None,
            tunnel_check_interval: std::time::Duration::from_secs(15),
            tunnel_grant_check_interval: std::time::Duration::from_secs(3600),
            secure_cookies: true,
            store: StoreKind::Cookie,
            redis_url: None,
            redis_key_prefix: "f:".into(),
            redis_mode: logto_gate::config::RedisMode::Standalone,
            redis_urls: Vec::new(),
            redis_sentinel_master: None,
            cookie_domain: None,
            revocation_file: None,
            sign_out_clear_site_data: None,
            keep_url_fragment: false,
        })
    })
}

/// The Cookie header: parsing, opening (chunks included), the session JSON, and stripping for the upstream.
pub fn session_cookie(data: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(COOKIE, value);
    if let Some(opened) = codec().read_session_cookie(&headers) {
        // Only the gate can seal a cookie: random bytes must never open.
        let _ = serde_json::from_str::<Session>(&opened.copies[0].plaintext);
        panic!("random bytes opened as a session cookie");
    }
    assert!(
        codec().read_attempt(&headers, &"a".repeat(43), 0).is_none(),
        "random bytes opened as a sign-in attempt"
    );
    codec().strip_gate_cookies(&mut headers);
    for v in headers.get_all(COOKIE) {
        let text = v.to_str().unwrap_or("");
        for pair in text.split(';') {
            let name = pair.trim().split('=').next().unwrap_or("");
            assert!(
                !codec().is_gate_cookie(name),
                "a gate cookie survived stripping: {name}"
            );
        }
    }
}

/// The return path after sign-in: whatever comes in, what goes out is a same-origin path, no longer than the
/// limit, and (from a path) either the whole of it, its path without the query, or `/`. An app's `Location` or
/// `Refresh` rewritten from its own address is a path under the route's prefix that no browser reads as another
/// host, ending as the app's did.
pub fn return_path(data: &[u8]) {
    own_address(data);
    let Ok(text) = std::str::from_utf8(data) else { return };
    let kept = ReturnPath::parse_or_root(text);
    let kept = kept.as_str();
    // Kept whole, or its path, with only what is outside ASCII percent-encoded.
    let encoded: String = text
        .bytes()
        .map(|b| {
            if b.is_ascii() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    assert!(
        kept == "/" || kept == encoded || encoded.split_once('?').is_some_and(|(path, _)| path == kept),
        "{text:?} became {kept:?}"
    );
    for p in [
        ReturnPath::parse_or_root(text),
        ReturnPath::parse_same_origin_or_root(text, "https://app.example.com"),
    ] {
        let s = p.as_str();
        assert!(s.len() <= logto_gate::return_path::MAX_LEN, "{} bytes", s.len());
        assert!(s.starts_with('/'), "{s:?}");
        assert!(!s.starts_with("//") && !s.starts_with("/\\"), "{s:?}");
        assert!(s.bytes().all(|b| b.is_ascii_graphic()), "{s:?}");
        // The path holds no encoded slash or backslash; nothing after it (query, fragment) an encoded line break.
        let lower = s.to_ascii_lowercase();
        let (before, fragment) = lower.split_once('#').unwrap_or((&lower, ""));
        let (path, query) = before.split_once('?').unwrap_or((before, ""));
        assert!(!path.contains("%2f") && !path.contains("%5c"), "{s:?}");
        for after in [query, fragment] {
            assert!(!after.contains("%0a") && !after.contains("%0d"), "{s:?}");
        }
    }
}

fn config() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(|| {
        let toml = r#"
            [server]
            public_url = "https://app.example.com"
            [upstream]
            url = "http://127.0.0.1:9"
            [logto]
            endpoint = "https://t.logto.app"
            app_id = "a"
            app_secret = "s"
            [session]
            secret = "0123456789abcdef0123456789abcdef"
            [[rules]]
            prefix = "/public"
            allow = "public"
            [[rules]]
            path = "/api/(v1|v2)/"
            methods = ["GET"]
            roles = ["reader"]
            [[rules]]
            prefix = "/admin"
            allow = "deny"
            [[rules]]
            prefix = "/reports/"
            methods = ["GET"]
            roles = ["auditor"]
        "#;
        match Config::from_toml_str(toml, Vec::new()) {
            Ok(c) => c,
            Err(e) => panic!("fuzz config: {e}"),
        }
    })
}

/// Path normalisation and rule matching: normalising is idempotent, a normal path has no dot segments or double
/// slashes, a path's rule form is a fixed point of configured prefixes, and no path that normalises under /admin
/// is ever public.
pub fn path_and_rules(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let raw = if text.starts_with('/') {
        text.to_owned()
    } else {
        format!("/{text}")
    };
    let Ok(once) = normalise(&raw, false) else { return };
    let twice = normalise(&once, false).map(|c| c.into_owned());
    assert_eq!(
        twice.as_deref(),
        Ok(once.as_ref()),
        "normalising is not idempotent for {raw:?}"
    );
    assert!(
        !once.contains("//") && !once.contains("/./") && !once.contains("/../"),
        "{once:?}"
    );
    let access = config().policy.route("GET", Some("app.example.com"), None, &once);
    if once == "/admin" || once.starts_with("/admin/") {
        assert!(
            matches!(access, logto_gate::policy::Access::Deny),
            "{raw:?} slipped past the /admin rule"
        );
    }
    // The decision (with the path's slash twin, and HEAD as GET) is never looser than the path's own rule.
    use logto_gate::policy::{Access, Decision};
    let policy = &config().policy;
    if let Ok(rule_path) = logto_gate::policy::path::rule_path(&once, policy.case_insensitive) {
        // A prefix written as a rule sees a path is that path to the rules: paths and configured prefixes are
        // compared in one form, however either was spelled. (A request's path never holds a raw `?` or `#`.)
        if !rule_path.contains(['?', '#']) {
            assert_eq!(
                logto_gate::policy::path::rule_prefix(&rule_path, false, policy.case_insensitive).as_deref(),
                Ok(rule_path.as_ref()),
                "{raw:?}"
            );
        }
        for method in ["GET", "HEAD"] {
            let decided = policy.decide(method, &[], Some("app.example.com"), None, &rule_path);
            match policy.route(method, Some("app.example.com"), None, &rule_path) {
                Access::Deny => assert!(matches!(decided, Decision::Deny), "{raw:?}"),
                Access::Require(_) => assert!(!matches!(decided, Decision::Public), "{raw:?}"),
                Access::Public => {}
            }
        }
        if rule_path == "/reports" {
            // `/reports/` is the twin, and HEAD is GET: the auditor rule holds.
            let decided = policy.decide("HEAD", &[], None, None, &rule_path);
            assert!(
                decided
                    .requirements()
                    .any(|r| r.roles.iter().any(|role| role == "auditor")),
                "{raw:?}"
            );
        }
    }
    // Whatever the bytes, the host check answers.
    let _ = logto_gate::policy::is_host(data);
}

/// The configuration loader: TOML and environment values, never a panic.
pub fn config_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (toml, env) = text.split_once("\n---\n").unwrap_or((text, ""));
    let env: Vec<(String, String)> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (format!("LOGTO_GATE_{k}"), v.to_owned()))
        .collect();
    let _ = Config::from_toml_str(toml, env);
}

/// A claim rendered as an identity header (`identity::header_value`): the bytes, split at `|`, are a list claim's
/// elements (and, whole, a string claim). Never a control character (no header injection), and the list reads back,
/// as an app's list parser (split at `,`, whitespace trimmed) reads it, as exactly the elements it kept: each one
/// of the claim's, in order, so no element can read as two or as another.
pub fn claim_header(data: &[u8]) {
    use logto_gate::identity::header_value;
    use serde_json::Value;
    let text = String::from_utf8_lossy(data);
    let elements: Vec<&str> = text.split('|').collect();
    let list = Value::Array(elements.iter().map(|e| Value::String((*e).to_owned())).collect());
    for claim in [list, Value::String(text.clone().into_owned())] {
        let Some(value) = header_value(&claim) else { continue };
        let bytes = value.as_bytes();
        assert!(!bytes.is_empty(), "an empty header for {claim:?}");
        assert!(
            !bytes.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f),
            "a control character from {claim:?}"
        );
        if let Value::Array(_) = claim {
            let Ok(sent) = value.to_str() else { continue };
            let read: Vec<&str> = sent.split(',').map(|e| e.trim_matches([' ', '\t'])).collect();
            let mut from = elements.iter();
            for r in &read {
                assert!(
                    from.any(|e| e == r),
                    "`{r}` read from {sent:?} is not one of the claim's elements, in order: {elements:?}"
                );
            }
        }
    }
}

/// Token parsing and verification: never a panic, and nothing verifies against an empty key set.
pub fn jwt(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(t) = UnverifiedJwt::parse(text) {
        let empty: openidconnect::core::CoreJsonWebKeySet =
            serde_json::from_str(r#"{"keys":[]}"#).unwrap_or_else(|_| panic!("empty key set"));
        assert!(t.verify(&empty).is_err(), "a token verified against no keys");
        for kind in [TokenKind::Id, TokenKind::Access, TokenKind::Logout] {
            let _ = t.check_kind(kind);
        }
    }
}

/// Request framing as the smuggling check reads it: a stream built from HTTP fragments (so the fuzzer reaches deep
/// into heads, lengths and chunks) must give the same answer however it is split into reads. So must the HTTP/2
/// frame follower (`src/http2.rs`), on the raw bytes after a connection preface.
pub fn framing(data: &[u8]) {
    const FRAGMENTS: &[&[u8]] = &[
        b"POST / HTTP/1.1\r\n",
        b"GET /a HTTP/1.1\r\n",
        b"GET / HTTP/1.0\r\n",
        b"PRI * HTTP/2.0\r\n",
        b"Content-Length: 3\r\n",
        b"Content-Length: 0\r\n",
        b"content-length: 3, 3\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: gzip\r\n",
        b"Upgrade: websocket\r\n",
        b"X: y\r\n",
        b"\r\n",
        b"\n",
        b"0\r\n",
        b"3\r\n",
        b"3;x=y\r\n",
        b"ffffffffffffffffff\r\n",
        b"abc",
        b"Trailer: t\r\n",
    ];
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let h2 = [&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..], rest].concat();
    let h2_size = usize::from(split % 32).max(1);
    assert_eq!(
        logto_gate::testing::http2_arriving_after([h2.as_slice()]),
        logto_gate::testing::http2_arriving_after(h2.chunks(h2_size)),
        "HTTP/2 frames read whole vs in pieces of {h2_size}"
    );
    let stream = expand(FRAGMENTS, rest);
    let max_head = 256;
    let whole = logto_gate::testing::first_ambiguous([stream.as_slice()], max_head);
    let size = usize::from(split).max(1);
    let pieces = logto_gate::testing::first_ambiguous(stream.chunks(size), max_head);
    assert_eq!(whole, pieces, "read whole vs in pieces of {size}");
    let bytewise = logto_gate::testing::first_ambiguous(stream.chunks(1), max_head);
    assert_eq!(whole, bytewise, "read whole vs byte by byte");
    // Wherever a head may start, the quick reading of a head agrees with the full parse.
    let after_newlines = stream
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .map(|(i, _)| i + 1);
    let line_starts = std::iter::once(0).chain(after_newlines);
    for start in line_starts {
        assert!(
            logto_gate::testing::quick_reading_agrees(&stream[start..]),
            "quick reading disagrees at {start}"
        );
    }
}

/// An upstream's response as the lean HTTP/1.1 client reads it (`logto_gate::testing::read_response`): built from HTTP fragments
/// like [`framing`], and read whole, in pieces and byte by byte, it must give the same answer every time; and a body
/// framed by `Content-Length` is never longer or shorter than it says.
/// The HTTP/1 front's reading of a request head (src/http1/server.rs): a head it serves itself has no body and no protocol
/// switch, is the head httparse (hyper's parser) reads, and is one the request-smuggling check finds unambiguous.
pub fn front_head(data: &[u8]) {
    const FRAGMENTS: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\n",
        b"HEAD /a?b HTTP/1.1\r\n",
        b"POST / HTTP/1.1\r\n",
        b"GET / HTTP/1.0\r\n",
        b"CONNECT a:1 HTTP/1.1\r\n",
        b"GET http://a/ HTTP/1.1\r\n",
        b"Content-Length: 3\r\n",
        b"Content-Length: 0\r\n",
        b"Content-Length: 3, 3\r\n",
        b"Content-Length: +3\r\n",
        b"Content-Length: 003 \r\n",
        b"Content-Length: 18446744073709551616\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"transfer-encoding: CHUNKED\r\n",
        b"Transfer-Encoding: gzip, chunked\r\n",
        b"Transfer-Encoding: chunked, chunked\r\n",
        b"Transfer-Encoding: chunked \r\n",
        b"Connection: close\r\n",
        b"Connection: upgrade\r\n",
        b"Upgrade: websocket\r\n",
        b"Expect: 100-continue\r\n",
        b"Expect: 100-Continue, x\r\n",
        b"Cookie: logto_gate=abc\r\n",
        b"X: y\r\n",
        b" folded\r\n",
        b"\r\n",
        b"\n",
        b"abc",
    ];
    let stream = expand(FRAGMENTS, data);
    let max = 512;
    let Some((len, request)) = logto_gate::testing::read_head(&stream, max) else {
        return;
    };
    assert!(len <= max);
    assert_eq!(request.version(), http::Version::HTTP_11);
    assert_ne!(request.method(), http::Method::CONNECT);
    assert!(
        !request.headers().contains_key("upgrade"),
        "upgrade in a head the front served"
    );
    // A body only by one Content-Length of plain digits, and exactly that long; or by one Transfer-Encoding that
    // says chunked alone, with no length.
    let lengths: Vec<_> = request.headers().get_all("content-length").iter().collect();
    let codings: Vec<_> = request.headers().get_all("transfer-encoding").iter().collect();
    assert!(lengths.len() <= 1, "{lengths:?} in a head the front served");
    assert!(codings.len() <= 1, "{codings:?} in a head the front served");
    let declared = if let Some(coding) = codings.first() {
        assert!(coding.as_bytes().eq_ignore_ascii_case(b"chunked"), "{coding:?}");
        assert!(lengths.is_empty(), "{lengths:?} next to {coding:?}");
        assert_eq!(http_body::Body::size_hint(request.body()).exact(), None);
        assert!(!http_body::Body::is_end_stream(request.body()));
        None
    } else {
        let declared = lengths.first().map_or(0, |value| {
            let digits = value.as_bytes();
            assert!(!digits.is_empty() && digits.iter().all(u8::is_ascii_digit), "{value:?}");
            std::str::from_utf8(digits)
                .ok()
                .and_then(|d| d.parse::<u64>().ok())
                .expect("a length that fits")
        });
        assert_eq!(http_body::Body::size_hint(request.body()).exact(), Some(declared));
        Some(declared)
    };
    // An expectation only as one `100-continue`, and only with a body to send.
    let expectations: Vec<_> = request.headers().get_all("expect").iter().collect();
    assert!(expectations.len() <= 1, "{expectations:?}");
    if let Some(expectation) = expectations.first() {
        assert!(
            expectation.as_bytes().eq_ignore_ascii_case(b"100-continue"),
            "{expectation:?}"
        );
        assert!(declared != Some(0), "an expectation without a body");
    }
    let mut slots = [httparse::EMPTY_HEADER; 100];
    let mut parsed = httparse::Request::new(&mut slots);
    assert_eq!(parsed.parse(&stream).ok(), Some(httparse::Status::Complete(len)));
    assert_eq!(parsed.headers.len(), request.headers().len());
    assert_eq!(logto_gate::testing::first_ambiguous([&stream[..len]], max), None);
}

pub fn upstream_response(data: &[u8]) {
    const FRAGMENTS: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.0 200 OK\r\n",
        b"HTTP/1.1 103 Early Hints\r\n",
        b"HTTP/1.1 204 No Content\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n",
        b"Content-Length: 3\r\n",
        b"Content-Length: 0\r\n",
        b"content-length: 3, 3\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: gzip\r\n",
        b"Connection: close\r\n",
        b"X: y\r\n",
        b"\r\n",
        b"\n",
        b"0\r\n",
        b"3\r\n",
        b"3;x=y\r\n",
        b"ffffffffffffffffff\r\n",
        b"abc",
        b"Trailer: t\r\n",
    ];
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let stream = expand(FRAGMENTS, rest);
    let head_only = flags & 1 == 1;
    let size = usize::from(flags >> 1).max(1);
    let read = |size: usize| logto_gate::testing::read_response(stream.chunks(size), head_only);
    let whole = read(stream.len().max(1));
    assert_eq!(whole, read(size), "read whole vs in pieces of {size}");
    assert_eq!(whole, read(1), "read whole vs byte by byte");
    if let Ok(response) = &whole {
        let lengths: Vec<&Vec<u8>> = response
            .headers
            .iter()
            .filter(|(n, _)| n == "content-length")
            .map(|(_, v)| v)
            .collect();
        if let (false, Some(first)) = (head_only || response.status == 204, lengths.first()) {
            let said: usize = std::str::from_utf8(first)
                .ok()
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("an accepted Content-Length did not parse: {first:?}"));
            assert_eq!(response.body.len(), said, "the body does not match its Content-Length");
        }
        assert!(!response.chunked || lengths.is_empty(), "both framings were accepted");
        for (name, value) in &response.headers {
            assert!(
                !["connection", "transfer-encoding", "keep-alive", "trailer", "upgrade"].contains(&name.as_str()),
                "a hop-by-hop field was passed on: {name}"
            );
            // Passed on as read: it must be a value no writer could split a head with.
            assert!(HeaderValue::from_bytes(value).is_ok(), "{name}: {value:?} passed on");
        }
    }
}

/// A byte stream from fuzz input: a byte below `fragments.len()` stands for that fragment, any other for itself.
fn expand(fragments: &[&[u8]], input: &[u8]) -> Vec<u8> {
    let mut stream = Vec::new();
    for &b in input {
        match fragments.get(usize::from(b)) {
            Some(f) => stream.extend_from_slice(f),
            None => stream.push(b),
        }
    }
    stream
}

fn own_address(data: &[u8]) {
    static OWN: OnceLock<[(OwnAddress, &str); 2]> = OnceLock::new();
    let routes = OWN.get_or_init(|| {
        let url = match "http://127.0.0.1:8080".parse() {
            Ok(u) => u,
            Err(e) => panic!("fuzz upstream: {e}"),
        };
        [
            (OwnAddress::new(&url, "/base", "/app", true), "/app"),
            (OwnAddress::new(&url, "", "/", false), ""),
        ]
    });
    let not_another_host = |v: &[u8]| v.starts_with(b"/") && !matches!(v.get(1), Some(b'/' | b'\\'));
    for (own, prefix) in routes {
        if let Some(v) = own.location(data) {
            let v = v.as_bytes();
            assert!(not_another_host(v) && v.starts_with(prefix.as_bytes()), "{v:?}");
            let text = String::from_utf8_lossy(data).trim().to_ascii_lowercase();
            assert!(text.starts_with("http://127.0.0.1:8080"), "{text:?}");
            // Its end is the app's, after a `/` the gate puts in front of an empty rest, `?` or `#`.
            let tail = String::from_utf8_lossy(&v[prefix.len()..]).to_ascii_lowercase();
            assert!(text.ends_with(&tail) || text.ends_with(&tail[1..]), "{text:?}");
        }
        if let Some(v) = own.refresh(data) {
            let v = v.as_bytes();
            let lower = v.to_ascii_lowercase();
            let at = lower.windows(4).position(|w| w == b"url=").map_or(0, |i| i + 4);
            let url = &v[at..];
            let url = url.strip_prefix(b"\"").or(url.strip_prefix(b"'")).unwrap_or(url);
            assert!(not_another_host(url) && url.starts_with(prefix.as_bytes()), "{v:?}");
        }
    }
}

/// A `POST` body read for its `_method` ([`logto_gate::policy::form`]): the first byte picks the `Content-Type`
/// (a form, none, multipart with boundary `B`, JSON, or the rest of the line as written), the rest is the body.
/// Never panics; whatever is found is a method name (upper-case letters); a `_method=PUT` part or field added to a
/// body is always found.
pub fn form_method(data: &[u8]) {
    use logto_gate::policy::form::BodyReadings;
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (content_type, body): (Option<Vec<u8>>, &[u8]) = match pick % 5 {
        0 => (Some(b"application/x-www-form-urlencoded".to_vec()), rest),
        1 => (None, rest),
        2 => (Some(b"multipart/form-data; boundary=B".to_vec()), rest),
        3 => (Some(b"application/json".to_vec()), rest),
        _ => {
            let end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
            (Some(rest[..end].to_vec()), rest.get(end + 1..).unwrap_or_default())
        }
    };
    let mut headers = HeaderMap::new();
    if let Some(t) = content_type {
        let Ok(value) = HeaderValue::from_bytes(&t) else { return };
        headers.insert(http::header::CONTENT_TYPE, value);
    }
    let Ok(Some(readings)) = BodyReadings::of(&headers) else {
        return;
    };
    let mut found = Vec::new();
    if readings.method_overrides(body, &mut found).is_ok() {
        for m in &found {
            assert!(!m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()), "{m:?}");
        }
    }
    // Added where each reading takes it from, a `_method` is found whatever came before it.
    let mut more = body.to_vec();
    if readings.urlencoded {
        more.extend_from_slice(b"&_method=PUT");
    } else if readings.multipart.as_deref() == Some(&b"B"[..]) {
        more.extend_from_slice(b"\r\n--B\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nPUT\r\n--B--");
    } else {
        return;
    }
    let mut found = Vec::new();
    if readings.method_overrides(&more, &mut found).is_ok() {
        assert!(
            found.iter().any(|m| m == "PUT"),
            "{:?} missed the added _method",
            String::from_utf8_lossy(&more)
        );
    }
}
