//! The bypass classes auth proxies are known for, each attacked over real sockets: rules deciding on one path or
//! method while the app serves another (path parameters, letter case, method overrides, URL-override fields),
//! tunnels the gate cannot see into (h2c), fields a CGI-style app frames by, and an app setting the gate's cookies.

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::nginx::Nginx;
use crate::support::*;

/// Bob (no roles) signed in to a gate whose `/admin` needs the `admin` role; `extra` adds sections or rules.
async fn bob_behind(extra: &str, edit: impl FnOnce(String) -> String) -> (Stack, Browser) {
    let rules = format!("{extra}\n[[rules]]\nprefix = \"/admin\"\nroles = [\"admin\"]\n");
    let s = Stack::edited(IdpOptions::default(), "", &rules, edit).await;
    let bob = s.browser();
    bob.login_as("bob");
    bob.sign_in(&s.gate, "/home").await;
    (s, bob)
}

/// A legacy Java app's `;jsessionid=` URLs keep working: the rule sees `/home`, the app gets the path as sent.
#[tokio::test]
async fn a_plain_path_parameter_still_reaches_the_app() {
    let (s, bob) = bob_behind("", |t| t).await;
    let r = bob.get(format!("{}/home;jsessionid=ABC123?x=1", s.gate.url())).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(s.upstream.last().path, "/home;jsessionid=ABC123?x=1");
}

/// With `server.case_insensitive_paths`, `/ADMIN` and `/admin.` are `/admin` to the rules (IIS serves them); without
/// it, rules compare the path as sent (an app that tells cases apart serves another resource at `/ADMIN`).
#[tokio::test]
async fn rule_bypass_through_letter_case_is_refused_when_paths_are_case_insensitive() {
    let (s, bob) = bob_behind("", in_server("case_insensitive_paths = true")).await;
    let before = s.upstream.count();
    // Windows drops a name's trailing dots and spaces (IIS serves `admin.\x` from `admin\x`): so do the rules.
    for path in [
        "/ADMIN",
        "/Admin/x",
        "/aDmIn;jsessionid=1",
        "/%41dmin",
        "/admin./x",
        "/Admin%20/x",
        "/admin.%20./x",
        "/admin..;x=1/y",
        "/admin.",
    ] {
        let r = bob.get(format!("{}{path}", s.gate.url())).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
    }
    // A name of dots and spaces alone has no meaning the rules could share with Windows: refused.
    for path in ["/.../admin/x", "/x/.%20./admin"] {
        let r = bob.get(format!("{}{path}", s.gate.url())).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
    }
    assert_eq!(s.upstream.count(), before, "nothing reached the app");
    let r = bob.get(format!("{}/home./x", s.gate.url())).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(s.upstream.last().path, "/home./x", "the app gets the path as sent");
    // A regular expression rule ignores case too.
    let (s, bob) = bob_behind(
        "[[rules]]\npath = \"/Reports/[0-9]+$\"\nallow = \"deny\"\n",
        in_server("case_insensitive_paths = true"),
    )
    .await;
    let r = bob.get(format!("{}/reports/42", s.gate.url())).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = bob.get(format!("{}/home", s.gate.url())).await;
    assert_eq!(r.status(), StatusCode::OK);
}

const DELETE_NEEDS_ADMIN: &str = "[[rules]]\nprefix = \"/items\"\nmethods = [\"DELETE\"]\nroles = [\"admin\"]\n";

const OVERRIDES: [&str; 4] = [
    "X-HTTP-Method-Override",
    "X-HTTP-Method",
    "X-Method-Override",
    "x_http_method_override",
];

/// By default the method-override fields never reach the app, so a GET the rules allowed stays a GET there.
#[tokio::test]
async fn method_override_fields_are_removed_by_default() {
    let (s, bob) = bob_behind(DELETE_NEEDS_ADMIN, |t| t).await;
    for name in OVERRIDES {
        let r = bob
            .client
            .get(format!("{}/items/1", s.gate.url()))
            .header(name, "DELETE")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{name}");
        let seen = s.upstream.last();
        for o in OVERRIDES {
            assert_eq!(seen.header(o), None, "{name}: {o} reached the app");
        }
    }
    // Through hyper's client too (a request with a body).
    let r = bob
        .client
        .post(format!("{}/items/1", s.gate.url()))
        .header("x-http-method-override", "DELETE")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(s.upstream.last().header("x-http-method-override"), None);
}

/// With `upstream.pass_method_override`, the fields reach the app and the rules decide on the method they name.
#[tokio::test]
async fn a_kept_method_override_is_decided_by_the_rules() {
    let (s, bob) = bob_behind(DELETE_NEEDS_ADMIN, in_upstream("pass_method_override = true")).await;
    let before = s.upstream.count();
    for name in OVERRIDES {
        for method in ["DELETE", "delete"] {
            let r = bob
                .client
                .post(format!("{}/items/1", s.gate.url()))
                .header(name, method)
                .body("x")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{name}: {method}");
        }
    }
    assert_eq!(s.upstream.count(), before, "nothing reached the app");
    let bad = bob
        .client
        .get(format!("{}/items/1", s.gate.url()))
        .header("x-http-method-override", "DEL ETE")
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert!(bad.text().await.unwrap().contains("x-http-method-override"));
    let ok = bob
        .client
        .post(format!("{}/items/1", s.gate.url()))
        .header("x-http-method-override", "PUT")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(s.upstream.last().header("x-http-method-override"), Some("PUT"));
}

/// Express's `method-override('_method')`, Symfony and Laravel take a `POST` with `_method=DELETE` in its query for
/// a `DELETE` (PHP reads ` _method`, `.method` and `[method` as `_method` too). The gate cannot take a parameter out
/// of the query without changing what the app reads, so the rules decide on every method such a `POST` may be taken
/// as, whatever `upstream.pass_method_override` says, and so does forward-auth. Other methods, and other names, are
/// not overrides to those frameworks.
#[tokio::test]
async fn a_method_override_in_the_query_is_decided_by_the_rules() {
    // Loopback is trusted, as the proxy asking forward-auth is.
    let (s, bob) = bob_behind(DELETE_NEEDS_ADMIN, in_server("trusted_proxies = [\"127.0.0.1\"]")).await;
    let before = s.upstream.count();
    for query in [
        "_method=DELETE",
        "_method=delete",
        "x=1&_method=DELETE",
        "%5Fmethod=DELETE",
        "_%6Dethod=DELETE",
        "_method=PUT&_method=DELETE",
        "%20_method=DELETE",
        ".method=DELETE",
        "%5Bmethod=DELETE",
    ] {
        let r = bob
            .client
            .post(format!("{}/items/1?{query}", s.gate.url()))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{query}");
    }
    assert_eq!(s.upstream.count(), before, "nothing reached the app");
    let bad = bob
        .client
        .post(format!("{}/items/1?_method=DEL%20ETE", s.gate.url()))
        .header("accept", "application/json")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert!(bad.text().await.unwrap().contains("_method"));
    for (method, query) in [
        ("POST", "_method=PUT"),
        ("POST", "method=DELETE"),
        ("GET", "_method=DELETE"),
    ] {
        let r = bob
            .client
            .request(method.parse().unwrap(), format!("{}/items/1?{query}", s.gate.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{method} {query}");
        assert_eq!(
            s.upstream.last().path,
            format!("/items/1?{query}"),
            "the query reaches the app as sent"
        );
    }
    // Forward-auth decides on it too, in nginx's form and in Envoy's. (The body's type is one no framework reads a
    // `_method` from: forward-auth is sent no body, and a form's could name DELETE, see
    // `frameworks::behind_nginx_no_refused_method_reaches_rails`.)
    let cookie = bob.cookie(&s.gate.url(), "logto_gate").unwrap();
    let auth = |method: &str, uri: &str, envoy: bool| {
        let (target, fields) = if envoy {
            (format!("/_logto/auth{uri}"), String::new())
        } else {
            (
                "/_logto/auth".to_owned(),
                format!("X-Forwarded-Method: {method}\r\nX-Forwarded-Uri: {uri}\r\n"),
            )
        };
        let method = if envoy { method } else { "GET" };
        format!(
            "{method} {target} HTTP/1.1\r\nHost: x\r\n{fields}Content-Type: text/plain\r\nCookie: logto_gate={cookie}\r\n\
             Connection: close\r\n\r\n"
        )
    };
    for envoy in [false, true] {
        let status = |answer: String| answer.split(' ').nth(1).unwrap_or_default().to_owned();
        // Allowed: 202, and 200 to Envoy, whose `ext_authz` takes only 200 for it.
        let allowed = if envoy { "200" } else { "202" };
        for (query, want) in [("_method=DELETE", "403"), ("_method=PUT", allowed)] {
            let request = auth("POST", &format!("/items/1?{query}"), envoy);
            let answer = exchange_until_closed(s.gate.port, request.as_bytes()).await;
            assert_eq!(status(answer), want, "envoy: {envoy}, {query}");
        }
    }
}

/// Forward-auth is sent no body, so a `POST` whose body a framework reads a `_method` from (by its `Content-Type`,
/// none included: Rack reads such a body) is answered as the strictest method it could name where the client would
/// be refused that: no one signed in is sent to sign in (401) on a path public for `POST`s, Bob gets 403, an admin
/// 202; a body of a type no framework reads passes as the `POST` it is.
#[tokio::test]
async fn forward_auth_answers_a_form_post_as_the_method_it_could_name() {
    let rules = "[[rules]]\nprefix = \"/comments\"\nmethods = [\"GET\", \"POST\"]\nallow = \"public\"\n\
                 [[rules]]\nprefix = \"/comments\"\nmethods = [\"DELETE\"]\nroles = [\"admin\"]\n";
    let (s, bob) = bob_behind(rules, in_server("trusted_proxies = [\"127.0.0.1\"]")).await;
    let alice = s.browser();
    alice.sign_in(&s.gate, "/home").await;
    let asked = |cookie: Option<String>, content_type: Option<&str>| {
        let cookie = cookie
            .map(|c| format!("Cookie: logto_gate={c}\r\n"))
            .unwrap_or_default();
        let content_type = content_type
            .map(|t| format!("Content-Type: {t}\r\n"))
            .unwrap_or_default();
        format!(
            "GET /_logto/auth HTTP/1.1\r\nHost: x\r\nX-Forwarded-Method: POST\r\nX-Forwarded-Uri: /comments/1\r\n\
             Accept: application/json\r\n{content_type}{cookie}Connection: close\r\n\r\n"
        )
    };
    let status = |answer: String| answer.split(' ').nth(1).unwrap_or_default().to_owned();
    let bobs = bob.cookie(&s.gate.url(), "logto_gate");
    let alices = alice.cookie(&s.gate.url(), "logto_gate");
    for (who, cookie, form, plain) in [
        ("no one", None, "401", "202"),
        ("bob", bobs, "403", "202"),
        ("alice", alices, "202", "202"),
    ] {
        for (content_type, want) in [
            (Some("application/x-www-form-urlencoded"), form),
            (Some("multipart/form-data; boundary=x"), form),
            (Some("application/json"), form),
            (None, form),
            (Some("text/plain"), plain),
        ] {
            let answer = exchange_until_closed(s.gate.port, asked(cookie.clone(), content_type).as_bytes()).await;
            assert_eq!(status(answer), want, "{who}, {content_type:?}");
        }
    }
    // With `read_form_method = false` the operator says the app reads no `_method` from a body.
    let (s, bob) = bob_behind(rules, |t| {
        in_upstream("read_form_method = false")(in_server("trusted_proxies = [\"127.0.0.1\"]")(t))
    })
    .await;
    let bobs = bob.cookie(&s.gate.url(), "logto_gate");
    let answer = exchange_until_closed(
        s.gate.port,
        asked(bobs, Some("application/x-www-form-urlencoded")).as_bytes(),
    )
    .await;
    assert_eq!(status(answer), "202");
    // Where the method it could name needs a recent sign-in, an admin whose session does not say when she signed in
    // is asked to sign in again, as that method would be.
    let recent = rules.replace("roles = [\"admin\"]", "roles = [\"admin\"]\nmax_age = \"10m\"");
    let (s, _bob) = bob_behind(&recent, in_server("trusted_proxies = [\"127.0.0.1\"]")).await;
    let alice = s.browser();
    alice.sign_in(&s.gate, "/home").await;
    let alices = alice.cookie(&s.gate.url(), "logto_gate");
    let answer = exchange_until_closed(s.gate.port, asked(alices, None).as_bytes()).await;
    assert_eq!(status(answer.clone()), "401");
    assert!(answer.contains("insufficient_user_authentication"), "{answer}");
}

/// Rails (`Rack::MethodOverride`), Laravel and Symfony take a `POST` whose form holds `_method=DELETE` for a `DELETE`
/// (Laravel a JSON body's too, Rack a body without `Content-Type`). Where a rule decides that method more strictly
/// and the client would be refused it, the gate reads the body (up to `upstream.max_form_method_bytes`) and decides
/// on it; the app gets the body byte for byte. A client who meets every rule, or a body no framework reads a
/// `_method` from, streams through unread, over the limit too.
#[tokio::test]
async fn a_method_override_in_a_form_body_is_decided_by_the_rules() {
    let rules = "[[rules]]\nprefix = \"/upload\"\nmethods = [\"DELETE\", \"PATCH\"]\nroles = [\"admin\"]\n\
                 [[rules]]\nprefix = \"/open\"\nmethods = [\"GET\", \"POST\"]\nallow = \"public\"\n";
    let (s, bob) = bob_behind(rules, in_upstream("max_form_method_bytes = 65536")).await;
    let url = format!("{}/upload", s.gate.url());
    let post = |client: &reqwest::Client, content_type: Option<&str>, body: Vec<u8>| {
        let mut req = client.post(&url).header("accept", "application/json").body(body);
        if let Some(t) = content_type {
            req = req.header("content-type", t);
        }
        req.send()
    };
    let form = Some("application/x-www-form-urlencoded");
    let multipart = Some("multipart/form-data; boundary=----gate");
    let file = "x".repeat(1000);
    let multipart_body = format!(
        "------gate\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhello\r\n\
         ------gate\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\n{file}\r\n\
         ------gate\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\ndelete\r\n------gate--\r\n"
    );
    let before = s.upstream.count();
    for (content_type, body) in [
        (form, "a=1&_method=DELETE".to_owned()),
        (form, "a=1&%5Fmethod=patch".to_owned()),
        (None, "_method=DELETE".to_owned()),
        (multipart, multipart_body.clone()),
        (
            Some("application/json"),
            r#"{"title":"x","_method":"delete"}"#.to_owned(),
        ),
    ] {
        let r = post(&bob.client, content_type, body.clone().into_bytes())
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{content_type:?} {body}");
    }
    let r = post(&bob.client, form, b"_method=DEL%0AETE".to_vec()).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("_method"));
    assert_eq!(s.upstream.count(), before, "nothing reached the app");

    // A method the rules do not tell from POST: the app gets the body as sent.
    let body = format!("a={}&_method=PUT", "y".repeat(5000)).into_bytes();
    let sum = body.iter().map(|b| u64::from(*b)).sum::<u64>();
    let r = post(&bob.client, form, body.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let seen: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (seen["bytes"].as_u64(), seen["sum"].as_u64()),
        (Some(body.len() as u64), Some(sum))
    );
    // Over the limit: 413, told by its length or found while reading a chunked body.
    let big = format!("a={}&_method=PUT", "y".repeat(70_000)).into_bytes();
    let r = post(&bob.client, form, big.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("form_too_large") && text.contains("65536 bytes"),
        "{text}"
    );
    let chunks = big
        .chunks(16_384)
        .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
        .collect::<Vec<_>>();
    let r = bob
        .client
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // A body no framework reads `_method` from streams through unread, whatever its size.
    let r = post(&bob.client, Some("text/plain"), big.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["bytes"].as_u64(),
        Some(big.len() as u64)
    );

    // Over HTTP/2 as well (its bodies come through hyper's server).
    let cookie = bob.cookie(&s.gate.url(), "logto_gate").unwrap();
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    for (body, want) in [
        ("_method=DELETE", StatusCode::FORBIDDEN),
        ("_method=PUT", StatusCode::OK),
    ] {
        let r = h2
            .post(&url)
            .header("cookie", format!("logto_gate={cookie}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!((r.version(), r.status()), (reqwest::Version::HTTP_2, want), "{body}");
    }
    assert_eq!(s.upstream.last().method, "POST");

    // Alice meets every rule: nothing to read, her large form with `_method=DELETE` passes.
    let alice = s.browser();
    alice.login_as("alice");
    alice.sign_in(&s.gate, "/home").await;
    let mut large = b"_method=DELETE&a=".to_vec();
    large.extend(std::iter::repeat_n(b'z', 100_000));
    let r = post(&alice.client, form, large.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["bytes"].as_u64(),
        Some(large.len() as u64)
    );

    // A POST public where the DELETE it names needs a session: no one signed in is challenged.
    let anonymous = reqwest::Client::new();
    let open = format!("{}/open/x", s.gate.url());
    let r = anonymous
        .post(&open)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("_method=DELETE");
    assert_eq!(r.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let r = anonymous
        .post(&open)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("a=1");
    assert_eq!(r.send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(s.upstream.last().header("x-forwarded-user"), None);
    // Bob is signed in: he passes as the DELETE asks, his identity sent.
    let r = bob
        .client
        .post(&open)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("_method=DELETE");
    assert_eq!(r.send().await.unwrap().status(), StatusCode::OK);
    assert!(s.upstream.last().header("x-forwarded-user").is_some());

    // `upstream.read_form_method = false`: bodies go unread (a caveat at start says what that leaves open).
    let (s, bob) = bob_behind(rules, in_upstream("read_form_method = false")).await;
    let r = bob
        .client
        .post(format!("{}/upload", s.gate.url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("_method=DELETE")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// Express's body-parser decodes a body's content coding (gzip, deflate, br) and a JSON body's `utf-` charset, and
/// drops a UTF-8 byte order mark: a `_method` invisible in the bytes as sent. Where the gate would read a body it
/// refuses one in a coding (415 with `Accept-Encoding: identity`) or a form or JSON body in a charset other than
/// UTF-8, US-ASCII or ISO-8859-1 (415), and reads past the mark; a body it does not read passes as sent.
#[tokio::test]
async fn a_form_in_a_content_coding_or_a_foreign_charset_is_refused_where_it_is_read() {
    let rules = "[[rules]]\nprefix = \"/upload\"\nmethods = [\"DELETE\", \"PATCH\"]\nroles = [\"admin\"]\n";
    let (s, bob) = bob_behind(rules, |t| t).await;
    let url = format!("{}/upload", s.gate.url());
    let post = |client: &reqwest::Client, fields: &[(&str, &str)], body: &[u8]| {
        let mut req = client.post(&url).body(body.to_vec());
        for (name, value) in fields {
            req = req.header(*name, *value);
        }
        req.send()
    };
    let form = ("content-type", "application/x-www-form-urlencoded");
    // `_method=DELETE`, gzip'ed.
    let gzip: &[u8] = &[
        0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0x03, 0x8b, 0xcf, 0x4d, 0x2d, 0xc9, 0xc8, 0x4f, 0xb1, 0x75, 0x71, 0xf5,
        0x71, 0x0d, 0x71, 0x05, 0x00, 0x65, 0xfc, 0x26, 0xb0, 0x0e, 0, 0, 0,
    ];
    let before = s.upstream.count();
    for coding in ["gzip", "x-gzip", "identity, br"] {
        let r = post(&bob.client, &[form, ("content-encoding", coding)], gzip)
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{coding}");
        assert_eq!(r.headers()["accept-encoding"], "identity");
        let text = r.text().await.unwrap();
        assert!(text.contains("form_encoded") && !text.contains(coding), "{text}");
    }
    let utf16: Vec<u8> = r#"{"_method":"DELETE"}"#.encode_utf16().flat_map(u16::to_le_bytes).collect();
    for charset in ["utf-16le", "\"UTF-7\"", "utf-8; charset=utf-32"] {
        let t = format!("application/json; charset={charset}");
        let r = post(&bob.client, &[("content-type", &t)], &utf16).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{t}");
        assert!(r.headers().get("accept-encoding").is_none());
        assert!(r.text().await.unwrap().contains("form_charset"));
    }
    for (t, body) in [
        ("application/x-www-form-urlencoded", &b"\xef\xbb\xbf_method=DELETE"[..]),
        ("application/json", &b"\xef\xbb\xbf{\"_method\":\"patch\"}"[..]),
    ] {
        let r = post(&bob.client, &[("content-type", t)], body).await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{t}");
    }
    assert_eq!(s.upstream.count(), before, "nothing reached the app");

    // Plain bodies in the charsets the gate reads, and bodies it does not read, pass as sent.
    for fields in [
        vec![form, ("content-encoding", "identity")],
        vec![("content-type", "application/x-www-form-urlencoded; charset=ISO-8859-1")],
        vec![("content-type", "application/json; charset=utf-8")],
    ] {
        let r = post(&bob.client, &fields, b"a=1").await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{fields:?}");
    }
    let r = post(
        &bob.client,
        &[("content-type", "text/plain"), ("content-encoding", "gzip")],
        gzip,
    );
    assert_eq!(r.await.unwrap().status(), StatusCode::OK);
    assert_eq!(s.upstream.last().header("content-encoding"), Some("gzip"));
    // Alice meets every rule: her compressed form is not read, and reaches the app as sent.
    let alice = s.browser();
    alice.login_as("alice");
    alice.sign_in(&s.gate, "/home").await;
    let r = post(&alice.client, &[form, ("content-encoding", "gzip")], gzip)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let seen: serde_json::Value = r.json().await.unwrap();
    assert_eq!(seen["bytes"].as_u64(), Some(gzip.len() as u64));
}

/// IIS's URL Rewrite and old Symfony route on `X-Original-URL` / `X-Rewrite-URL`: never from the client.
#[tokio::test]
async fn url_override_fields_are_removed() {
    let (s, bob) = bob_behind("", |t| t).await;
    for (name, post) in [
        ("X-Original-URL", false),
        ("X-Rewrite-URL", false),
        ("x_original_url", false),
        ("X-Original-URL", true),
    ] {
        let req = if post {
            bob.client.post(format!("{}/home", s.gate.url())).body("x")
        } else {
            bob.client.get(format!("{}/home", s.gate.url()))
        };
        let r = req.header(name, "/admin").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{name}");
        let seen = s.upstream.last();
        for n in ["x-original-url", "x-rewrite-url", "x_original_url"] {
            assert_eq!(seen.header(n), None, "{name}: {n} reached the app");
        }
    }
}

/// Reads one response head (and whatever follows in the same reads) from a raw connection, bounded.
async fn read_head(stream: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("an answer in time")
            .expect("read");
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// `Upgrade: h2c` is never forwarded: the request is served as the plain HTTP/1.1 request it also is, and the
/// connection stays HTTP/1.1 under the gate's eyes (a forged request after it is read and ruled on as any other).
#[tokio::test]
async fn h2c_upgrades_are_never_forwarded() {
    let (s, bob) = bob_behind("", |t| t).await;
    let cookie = bob.cookie(&s.gate.url(), "logto_gate").unwrap();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", s.gate.port))
        .await
        .unwrap();
    let req = format!(
        "GET /home HTTP/1.1\r\nHost: a\r\nCookie: logto_gate={cookie}\r\nConnection: Upgrade, HTTP2-Settings\r\n\
         Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nAccept: application/json\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let seen = s.upstream.last();
    for name in ["upgrade", "http2-settings"] {
        assert_eq!(seen.header(name), None, "{name} reached the app: {:?}", seen.headers);
    }
    // Other protocols than `upstream.upgrade_protocols` (websocket by default) are not offered either.
    let r = bob
        .client
        .get(format!("{}/home", s.gate.url()))
        .header("connection", "Upgrade")
        .header("upgrade", "custom-tunnel")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(s.upstream.last().header("upgrade"), None);
}

/// An upstream that answers a WebSocket handshake with a 101 to another protocol (h2c here) gets no tunnel: 502.
#[tokio::test]
async fn a_switch_to_a_protocol_the_client_did_not_ask_for_is_not_spliced() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let upstream_task = tokio::spawn(async move {
        let Ok((mut conn, _)) = listener.accept().await else {
            return;
        };
        let _ = read_head(&mut conn).await;
        let _ = conn
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n")
            .await;
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn.read_to_end(&mut rest)).await;
    });
    let idp = Idp::start(IdpOptions::default());
    let gate = TestGate::start(
        &idp,
        &format!("http://127.0.0.1:{port}"),
        "",
        "[[rules]]\nprefix = \"/\"\nallow = \"public\"\n",
    )
    .await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", gate.port)).await.unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAccept: application/json\r\n\r\n",
        )
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 502 "), "{head}");
    upstream_task.abort();
}

/// `Transfer_Encoding` and `Content_Length` (and other framing or forwarding names with `_`) never reach the app:
/// a CGI, WSGI or PHP server reads them as the real fields.
#[tokio::test]
async fn underscore_framing_fields_are_dropped() {
    let (s, bob) = bob_behind("", |t| t).await;
    for post in [false, true] {
        let req = if post {
            bob.client.post(format!("{}/home", s.gate.url())).body("abc")
        } else {
            bob.client.get(format!("{}/home", s.gate.url()))
        };
        let r = req
            .header("Transfer_Encoding", "chunked")
            .header("Content_Length", "99")
            .header("X_Forwarded_For", "6.6.6.6")
            .header("Keep_Alive", "1")
            .header("X_App", "kept")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let seen = s.upstream.last();
        for name in ["transfer_encoding", "content_length", "x_forwarded_for", "keep_alive"] {
            assert_eq!(seen.header(name), None, "{name} reached the app (post: {post})");
        }
        assert_eq!(seen.header("x_app"), Some("kept"));
    }
}

/// The app cannot set or clear the gate's cookies: those `Set-Cookie` fields are dropped, the app's own pass, on
/// both client paths (a bodiless GET through the lean client, a POST through hyper's).
#[tokio::test]
async fn the_app_cannot_set_the_gates_cookies() {
    let (s, bob) = bob_behind("", |t| t).await;
    let session = bob.cookie(&s.gate.url(), "logto_gate").unwrap();
    for post in [false, true] {
        let req = if post {
            bob.client.post(format!("{}/set-gate-cookies", s.gate.url())).body("x")
        } else {
            bob.client.get(format!("{}/set-gate-cookies", s.gate.url()))
        };
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let set: Vec<String> = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(set, ["app_session=abc; Path=/"], "post: {post}");
        assert_eq!(
            bob.cookie(&s.gate.url(), "logto_gate").as_deref(),
            Some(session.as_str())
        );
    }
    // Still signed in.
    let r = bob.get(format!("{}/home", s.gate.url())).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(s.upstream.last().header("x-forwarded-user").is_some());
}

/// Malformed chunked request bodies (bad sizes, an overflow, data longer than its chunk, bare LF) are the
/// client's fault: 400, the upstream request aborted, and counted as a 400 in the metrics, never a 502.
#[tokio::test]
async fn malformed_chunked_request_bodies_are_refused_as_client_errors() {
    let metrics_port = free_port();
    let line: &'static str = Box::leak(format!("metrics_listen = \"127.0.0.1:{metrics_port}\"").into_boxed_str());
    let (s, bob) = bob_behind("", in_server(line)).await;
    let cookie = bob.cookie(&s.gate.url(), "logto_gate").unwrap();
    let cases: [&[u8]; 5] = [
        b"5\r\nhello\r\nZZ\r\nxx\r\n0\r\n\r\n",
        b"5\r\nhello\r\nFFFFFFFFFFFFFFFFFFFF\r\nxx\r\n0\r\n\r\n",
        b"5\r\nhello\r\n3\r\nhello\r\n0\r\n\r\n",
        b"5\r\nhello\r\n5\nworld\n0\n\n",
        b"5\r\nhello\r\n-1\r\nx\r\n0\r\n\r\n",
    ];
    for body in cases {
        let mut req = format!(
            "POST /upload HTTP/1.1\r\nHost: a\r\nCookie: logto_gate={cookie}\r\nAccept: application/json\r\n\
             Transfer-Encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        req.extend_from_slice(body);
        let text = exchange_until_closed(s.gate.port, &req).await;
        assert!(
            text.starts_with("HTTP/1.1 400 "),
            "{:?}: {text}",
            String::from_utf8_lossy(body)
        );
        assert!(text.contains("request body"), "{text}");
    }
    let metrics = metrics_text(metrics_port).await;
    assert!(
        metrics.contains("logto_gate_requests_total{route=\"app\",status=\"400\"} 5\n"),
        "{metrics}"
    );
    assert!(!metrics.contains("status=\"502\""), "{metrics}");
}

/// A client still uploading when its chunked body turns out malformed can finish writing and read its 400: the
/// gate reads and drops what follows until the client closes (nginx's lingering close), instead of closing with
/// bytes unread, which resets the connection under a client that is still writing.
#[tokio::test]
async fn a_client_still_sending_a_malformed_chunked_body_gets_its_400_not_a_reset() {
    let (s, bob) = bob_behind("", |t| t).await;
    let cookie = bob.cookie(&s.gate.url(), "logto_gate").unwrap();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", s.gate.port))
        .await
        .unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: a\r\nCookie: logto_gate={cookie}\r\nAccept: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // 16 MiB: more than the kernel's socket buffers hold between client and gate.
    let junk = vec![b'x'; 1024 * 1024];
    for _ in 0..16 {
        stream
            .write_all(&junk)
            .await
            .expect("the gate reads what the client still sends after a malformed body");
    }
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(READY_TIMEOUT, stream.read_to_end(&mut answer))
        .await
        .expect("the gate closes once the client has")
        .expect("no reset");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
}

async fn rule_bypass_is_refused(path: &str, expected: u16) {
    let s = Stack::with(
        "",
        "[[rules]]\nprefix = \"/public\"\nallow = \"public\"\n[[rules]]\nprefix = \"/admin\"\nroles = [\"admin\"]\n",
    )
    .await;
    let bob = s.browser();
    bob.login_as("bob");
    bob.sign_in(&s.gate, "/home").await;
    let cookie = bob.cookie(&s.gate.url(), "logto_gate").unwrap();
    let before = s.upstream.count();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: logto_gate={cookie}\r\nAccept: application/json\r\n\r\n"
    );
    assert_eq!(first_status(s.gate.port, req.as_bytes()).await, expected, "{path}");
    assert_eq!(s.upstream.count(), before, "{path} reached the upstream");
}

macro_rules! rule_bypass {
    ($($name:ident => ($path:expr, $status:expr)),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            rule_bypass_is_refused($path, $status).await;
        }
    )*};
}

rule_bypass! {
    rule_bypass_through_the_query => ("/admin?/public", 403),
    rule_bypass_through_dot_dot => ("/public/../admin", 403),
    rule_bypass_through_encoded_dot_dot => ("/public/%2e%2e/admin", 403),
    rule_bypass_through_mixed_encoded_dots => ("/public/.%2E/admin", 403),
    rule_bypass_through_double_slash => ("//admin", 403),
    rule_bypass_through_encoded_slash => ("/public%2F..%2Fadmin", 400),
    rule_bypass_through_encoded_backslash => ("/public/..%5Cadmin", 400),
    rule_bypass_through_encoded_letters => ("/%61dmin", 403),
    rule_bypass_through_a_trailing_dot_segment => ("/admin/.", 403),
    rule_bypass_through_dot_segment_then_slash => ("/./admin", 403),
    // Tomcat, Jetty and Spring strip `;` parameters from every segment before resolving dot segments.
    rule_bypass_through_a_path_parameter => ("/admin;jsessionid=1", 403),
    rule_bypass_through_a_path_parameter_deeper => ("/admin;a=b/users;c=d", 403),
    rule_bypass_through_a_parameter_only_segment => ("/;x/admin", 403),
    rule_bypass_through_dot_dot_with_a_parameter => ("/x/..;/admin", 400),
    rule_bypass_through_a_public_prefix_and_dot_dot_parameter => ("/public/..;/admin", 400),
    rule_bypass_through_dot_with_a_parameter => ("/x/.;/admin", 400),
    rule_bypass_through_encoded_dot_dot_with_a_parameter => ("/public/%2e%2e;x/admin", 400),
}

#[tokio::test]
async fn rule_bypass_through_the_case_of_the_method() {
    let s = Stack::with(
        "",
        "[[rules]]\nprefix = \"/admin\"\nmethods = [\"DELETE\"]\nroles = [\"admin\"]\n",
    )
    .await;
    let bob = s.browser();
    bob.login_as("bob");
    bob.sign_in(&s.gate, "/").await;
    let before = s.upstream.count();
    for m in ["delete", "Delete", "DELETE"] {
        let r = bob
            .client
            .request(
                reqwest::Method::from_bytes(m.as_bytes()).unwrap(),
                format!("{}/admin/x", s.gate.url()),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{m}");
    }
    assert_eq!(s.upstream.count(), before);
}

#[tokio::test]
async fn rule_bypass_through_the_host_with_a_trailing_dot() {
    let s = Stack::with(
        "",
        "[[rules]]\nhost = \"admin.example.com\"\nprefix = \"/\"\nallow = \"deny\"\n",
    )
    .await;
    for host in [
        "admin.example.com",
        "admin.example.com.",
        "ADMIN.example.com",
        "admin.example.com.:443",
    ] {
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n\r\n");
        assert_eq!(first_status(s.gate.port, req.as_bytes()).await, 403, "{host}");
    }
}

/// Rules name paths as people write them (`/geschäft`, `/@admin`); browsers send them percent-encoded, other clients
/// raw or with escapes a browser would not use, and the app decodes every spelling to the same resource before it
/// routes. Each spelling meets the rule, and a path the rules let through reaches the app in one spelling.
#[tokio::test]
async fn rule_bypass_through_another_spelling_of_the_same_path() {
    let rules = "[[rules]]\nprefix = \"/gesch\u{e4}ft\"\nallow = \"deny\"\n\
                 [[rules]]\nprefix = \"/%40admin\"\nroles = [\"admin\"]\n\
                 [[rules]]\npath = \"/berichte/\u{e4}lter\"\nallow = \"deny\"\n\
                 [[rules]]\nprefix = \"/My Docs\"\nallow = \"deny\"\n";
    let (s, bob) = bob_behind(rules, |t| t).await;
    let cookie = bob.cookie(&s.gate.url(), "logto_gate").unwrap();
    let get = |path: &[u8]| {
        let mut req = b"GET ".to_vec();
        req.extend_from_slice(path);
        req.extend_from_slice(
            format!(" HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: logto_gate={cookie}\r\nAccept: application/json\r\n\r\n")
                .as_bytes(),
        );
        req
    };
    let before = s.upstream.count();
    for path in [
        "/gesch\u{e4}ft".as_bytes(),
        b"/gesch%C3%A4ft",
        b"/gesch%c3%a4ft/x",
        b"/gesch%C3%A4ft;jsessionid=1",
        b"/@admin",
        b"/%40admin",
        b"/%40admin/users",
        b"/berichte/%C3%A4lter",
        "/berichte/\u{e4}lter".as_bytes(),
        b"/My%20Docs/plan",
    ] {
        let text = String::from_utf8_lossy(path).into_owned();
        assert_eq!(first_status(s.gate.port, &get(path)).await, 403, "{text}");
    }
    assert_eq!(s.upstream.count(), before, "a spelling reached the app");
    // Other paths with such characters pass, and the app receives the spelling a browser sends.
    for (path, seen) in [
        ("/caf\u{e9}".as_bytes(), "/caf%C3%A9"),
        (b"/caf%c3%a9", "/caf%C3%A9"),
        (b"/a%40b/{x}", "/a%40b/%7Bx%7D"),
    ] {
        let text = String::from_utf8_lossy(path).into_owned();
        assert_eq!(first_status(s.gate.port, &get(path)).await, 200, "{text}");
        assert_eq!(s.upstream.last().path, seen, "{text}");
    }
    // With case-insensitive paths, letters outside ASCII fold too (IIS serves /GESCHÄFT as /geschäft).
    let (s, bob) = bob_behind(rules, in_server("case_insensitive_paths = true")).await;
    let r = bob.get(format!("{}/GESCH%C3%84FT/x", s.gate.url())).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

/// A host written with letters outside ASCII meets its requests, which browsers send in the ASCII form (IDNA):
/// a rule for `bücher.example.com` covers `Host: xn--bcher-kva.example.com`.
#[tokio::test]
async fn rule_bypass_through_the_ascii_form_of_an_international_host() {
    let s = Stack::with(
        "",
        "[[rules]]\nhost = \"B\u{fc}cher.example.com\"\nprefix = \"/\"\nallow = \"deny\"\n\
         [[rules]]\nprefix = \"/\"\nallow = \"public\"\n",
    )
    .await;
    for host in [
        "xn--bcher-kva.example.com",
        "XN--BCHER-KVA.example.com.",
        "xn--bcher-kva.example.com:443",
    ] {
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n\r\n");
        assert_eq!(first_status(s.gate.port, req.as_bytes()).await, 403, "{host}");
    }
    let req = "GET / HTTP/1.1\r\nHost: other.example.com\r\nAccept: application/json\r\n\r\n";
    assert_eq!(first_status(s.gate.port, req.as_bytes()).await, 200);
}

/// A shared cache in front of the gate (a CDN, nginx's `proxy_cache`) keys its entries by URL, not by who asked:
/// an answer it keeps for a signed-in person it serves to anyone who asks next, without a sign-in. So every answer
/// to a request the gate let through on an identity is `Cache-Control: private` (the app's `public` and `s-maxage`
/// dropped, its other directives kept for the browser's own cache), on both client paths; what a `public` rule
/// serves keeps the app's caching. Attacked through Debian's nginx caching as a CDN does by default (answers
/// without `Cache-Control` kept too).
#[tokio::test]
async fn a_shared_cache_in_front_never_hands_a_signed_in_answer_to_anyone() {
    if !have_tool("nginx", &["/usr/sbin/nginx", "/usr/bin/nginx"], "nginx") {
        return;
    }
    let (s, bob) = bob_behind("[[rules]]\nprefix = \"/assets\"\nallow = \"public\"\n", |t| t).await;
    let cookie = bob.gate_cookies(&s.gate.url());
    let cache = tempfile::tempdir().unwrap();
    let port = free_port();
    let nginx = Nginx::start(
        port,
        &format!(
            "proxy_cache_path {} keys_zone=shared:1m;\n\
             server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://127.0.0.1:{}; proxy_cache shared; \
             proxy_cache_valid 200 10m; add_header X-Cache $upstream_cache_status always; }} }}",
            cache.path().display(),
            s.gate.port
        ),
    )
    .await;
    let get = |path: &str, cookie: Option<&str>| {
        let mut req = plain().get(format!("{}{path}", nginx.url()));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        req.send()
    };
    for path in ["/cacheable", "/report.pdf", "/cdn-cacheable"] {
        let signed_in = get(path, Some(&cookie)).await.unwrap();
        assert_eq!(signed_in.status(), StatusCode::OK, "{path}");
        let cache_control = signed_in
            .headers()
            .get("cache-control")
            .map(|v| v.to_str().unwrap().to_owned());
        let expected = if path == "/report.pdf" {
            "private"
        } else {
            "private, max-age=600"
        };
        assert_eq!(cache_control.as_deref(), Some(expected), "{path}");
        // Fields a CDN or nginx reads instead of `Cache-Control` do not reach it.
        for targeted in CACHE_TARGETED_FIELDS {
            assert!(signed_in.headers().get(targeted).is_none(), "{path}: {targeted}");
        }
        let anyone = get(path, None).await.unwrap();
        assert_eq!(
            anyone.status(),
            StatusCode::UNAUTHORIZED,
            "{path}: served from the cache to anyone"
        );
    }
    // The other client path (a request with a body) marks its answers the same.
    let posted = bob
        .client
        .post(format!("{}/cacheable", s.gate.url()))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(posted.headers()["cache-control"], "private, max-age=600");
    // What anyone may see stays cacheable as the app says.
    let before = s.upstream.count();
    for _ in 0..2 {
        let r = get("/assets/app.css", None).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers().get("cache-control").is_none());
    }
    assert_eq!(s.upstream.count(), before + 1, "the second came from nginx's cache");
}
