//! Open redirects, each attempted over real sockets: every return path that could leave the gate's origins (in
//! any encoding, through sign-in, sign-out or a header) falls back to `/`.

use reqwest::StatusCode;

use crate::support::*;

async fn return_path_falls_back_to_root(candidate: &str) {
    let s = Stack::start().await;
    let b = s.browser();
    let enc: String = url::form_urlencoded::byte_serialize(candidate.as_bytes()).collect();
    let (hops, resp) = b
        .navigate(&format!("{}/_logto/sign-in?redirect={enc}", s.gate.url()))
        .await;
    assert_eq!(resp.status(), StatusCode::OK, "{candidate:?}: {hops:#?}");
    assert_eq!(
        hops.last().unwrap().url,
        format!("{}/", s.gate.url()),
        "{candidate:?} left the origin"
    );
    for h in &hops {
        if let Some(loc) = &h.location {
            assert!(!names_evil(loc), "a redirect pointed at evil: {loc}");
        }
    }
}

macro_rules! open_redirect {
    ($($name:ident => $candidate:expr),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            return_path_falls_back_to_root($candidate).await;
        }
    )*};
}

open_redirect! {
    open_redirect_scheme_relative_double_slash => "//evil.example/",
    open_redirect_slash_backslash => "/\\evil.example/",
    open_redirect_encoded_backslash => "/%5Cevil.example/",
    open_redirect_encoded_double_slash => "%2F%2Fevil.example/",
    open_redirect_tab_inside => "/\t/evil.example/",
    open_redirect_crlf_inside => "/\r\n/evil.example/",
    open_redirect_absolute_url => "https://evil.example/",
    open_redirect_scheme_without_slashes => "http:evil.example",
    open_redirect_userinfo_at => "@evil.example",
    open_redirect_userinfo_after_our_origin => "https://127.0.0.1@evil.example/",
    open_redirect_idn_lookalike_slash => "/\u{2215}\u{2215}evil.example",
    open_redirect_fullwidth_solidus => "/\u{ff0f}evil.example",
    open_redirect_encoded_fullwidth_solidus => "/%EF%BC%8F%EF%BC%8Fevil.example",
    open_redirect_double_encoded => "/%252F%252Fevil.example",
    open_redirect_javascript_url => "javascript:alert('evil')",
}

#[tokio::test]
async fn open_redirect_through_the_post_logout_url_is_not_possible() {
    let s = Stack::start().await;
    for q in [
        "post_logout_redirect_uri=https://evil.example/",
        "redirect=https://evil.example/",
        "return_to=//evil.example",
    ] {
        let resp = plain()
            .get(format!("{}/_logto/sign-out?{q}", s.gate.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FOUND);
        let loc = resp.headers()["location"].to_str().unwrap();
        assert!(!names_evil(loc), "{q}: {loc}");
        assert!(loc.contains(
            &url::form_urlencoded::byte_serialize(format!("{}/", s.gate.url()).as_bytes()).collect::<String>()
        ));
    }
}

#[tokio::test]
async fn crlf_injection_through_the_return_path_cannot_add_a_header() {
    let s = Stack::start().await;
    let resp = plain()
        .get(format!(
            "{}/_logto/sign-in?redirect=/a%0d%0aSet-Cookie:%20evil=1",
            s.gate.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert!(resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .all(|v| !v.to_str().unwrap().starts_with("evil")));
    assert_eq!(
        first_status(
            s.gate.port,
            b"GET /x HTTP/1.1\r\nHost: a\r\nX-Request-Id: a\rSet-Cookie: evil=1\r\n\r\n"
        )
        .await,
        400
    );
}

#[tokio::test]
async fn open_redirects_through_the_return_path_fall_back_to_root() {
    let s = Stack::start().await;
    let attempts = [
        "//evil.example",
        "/\\evil.example",
        "/%5Cevil.example",
        "%2F%2Fevil.example",
        "/%2F%2Fevil.example",
        "https://evil.example/",
        "http:evil.example",
        "/\t/evil.example",
        "/\r\n/evil.example",
        "@evil.example",
        "/\u{ff0f}evil.example",
        "javascript:alert(1)",
    ];
    for bad in attempts {
        let b = s.browser();
        let enc: String = url::form_urlencoded::byte_serialize(bad.as_bytes()).collect();
        let (hops, resp) = b
            .navigate(&format!("{}/_logto/sign-in?redirect={enc}", s.gate.url()))
            .await;
        assert_eq!(resp.status(), StatusCode::OK, "{bad:?}: {hops:#?}");
        let landing = hops.last().unwrap().url.clone();
        assert_eq!(
            landing,
            format!("{}/", s.gate.url()),
            "{bad:?} must land on the app's root"
        );
    }
    // And a good one is honoured.
    let b = s.browser();
    let (hops, _) = b
        .navigate(&format!("{}/_logto/sign-in?redirect=%2Fdocs%3Fpage%3D2", s.gate.url()))
        .await;
    assert_eq!(hops.last().unwrap().url, format!("{}/docs?page=2", s.gate.url()));
}

/// A deep link whose query holds an encoded slash, backslash or percent (an app's own `?next=%2Fadmin%2F`, a search
/// for `a/b` or `100%`) comes back whole after the sign-in it started: those encodings are refused only in the path,
/// where an app that decodes them could read `//host`. The query of such a link also survives the trip through
/// `/_logto/sign-in?redirect=`.
#[tokio::test]
async fn a_deep_link_with_encoded_characters_in_its_query_comes_back_whole() {
    let s = Stack::start().await;
    for target in ["/admin/login/?next=%2Fadmin%2F", "/search?q=a%2Fb%5Cc&rate=100%25"] {
        let b = s.browser();
        let (hops, resp) = b.navigate(&format!("{}{target}", s.gate.url())).await;
        assert_eq!(resp.status(), StatusCode::OK, "{target}: {hops:#?}");
        assert_eq!(
            hops.last().unwrap().url,
            format!("{}{target}", s.gate.url()),
            "{target}"
        );
        assert_eq!(s.upstream.last().path, target);

        let b = s.browser();
        let enc: String = url::form_urlencoded::byte_serialize(target.as_bytes()).collect();
        let (hops, _) = b
            .navigate(&format!("{}/_logto/sign-in?redirect={enc}", s.gate.url()))
            .await;
        assert_eq!(
            hops.last().unwrap().url,
            format!("{}{target}", s.gate.url()),
            "{target}"
        );
    }
}

/// A deep link too long to keep whole (a dashboard whose query holds its panes and filters) comes back to its path
/// after sign-in, without the query, rather than to the app's root; so does the same link given to
/// `/_logto/sign-in?redirect=`.
#[tokio::test]
async fn an_overlong_deep_link_comes_back_to_its_path() {
    let s = Stack::start().await;
    let query = format!("orgId=1&panes={}", "%7B%22expr%22%3A%22rate%28x%29%22%7D".repeat(80));
    let target = format!("/explore?{query}");
    assert!(target.len() > 2048);
    let b = s.browser();
    let (hops, resp) = b.navigate(&format!("{}{target}", s.gate.url())).await;
    assert_eq!(resp.status(), StatusCode::OK, "{hops:#?}");
    assert_eq!(hops.last().unwrap().url, format!("{}/explore", s.gate.url()));
    assert_eq!(s.upstream.last().path, "/explore");

    let b = s.browser();
    let enc: String = url::form_urlencoded::byte_serialize(target.as_bytes()).collect();
    let (hops, _) = b
        .navigate(&format!("{}/_logto/sign-in?redirect={enc}", s.gate.url()))
        .await;
    assert_eq!(hops.last().unwrap().url, format!("{}/explore", s.gate.url()));
}

/// A sign-in link to a page whose path or query holds letters outside ASCII (`redirect=/gesch%C3%A4ft`, which
/// arrives decoded) returns to that page, not to `/`; so does a navigation to it without a session.
#[tokio::test]
async fn a_link_to_a_page_named_outside_ascii_returns_to_it() {
    let s = Stack::start().await;
    let b = s.browser();
    let (hops, resp) = b
        .navigate(&format!(
            "{}/_logto/sign-in?redirect=%2Fgesch%C3%A4ft%3Fq%3D%C3%A4",
            s.gate.url()
        ))
        .await;
    assert_eq!(resp.status(), StatusCode::OK, "{hops:#?}");
    assert_eq!(
        hops.last().unwrap().url,
        format!("{}/gesch%C3%A4ft?q=%C3%A4", s.gate.url())
    );
    assert_eq!(s.upstream.last().path, "/gesch%C3%A4ft?q=%C3%A4");
    let b = s.browser();
    b.sign_in(&s.gate, "/stra%C3%9Fe/plan").await;
    assert_eq!(s.upstream.last().path, "/stra%C3%9Fe/plan");
}

#[test]
fn names_evil_tells_the_attacker_from_a_random_id() {
    for named in [
        "https://evil.example/",
        "/%2F%2Fevil.example",
        "javascript:alert('evil')",
        "alert(%27evil%27)",
        "Set-Cookie: evil=1",
        "evil",
        "a/evil",
    ] {
        assert!(names_evil(named), "{named}");
    }
    for random in [
        "/interaction/gXomYAWevil3qBbuYSmg3JHwhKxEOUFYMyId5Q6sdrj",
        "eyJhbGciOi-evil_x",
        "",
    ] {
        assert!(!names_evil(random), "{random}");
    }
}
